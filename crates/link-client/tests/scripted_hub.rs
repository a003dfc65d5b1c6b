//! The client against a scripted hub that speaks as the reference hub does.
//!
//! The conversation tests replay the hub's side of the captured reference
//! conversation (`tests/data/conversation.json`, a verbatim copy of the
//! reference's capture; protocol §3.4.1): each hub→client frame is
//! re-stamped with the current time and re-signed with the key that signed
//! it, and each frame our client sends is verified and compared with the
//! captured client frame (type, `from`, `to`, `data`).
//!
//! Frames replayed (by number):
//! - as alpha: 1–5 (hello, ack, peers, snapshot, status push), 8 (beta
//!   joins), every alpha RPC with its answer (12/15, 16/17, 18/19, 20/21,
//!   22/23, 24/25, 26/29, 30/33, 34/37, 38/39, 40/41), 42 (publish), 44–45
//!   (directs), 48 (status push), 50/52 (call then `rpc.cancel`), 57 (beta
//!   replaced), 60 (beta gone);
//! - as beta: 6–11 (hello, ack, peers, snapshot, subscribe), every request
//!   relayed to beta with its answer (13/14, 27/28, 31/32, 35/36), 43
//!   (topic delivery), 46–47 (directs), 49 (status fan-out), 51/53 (request
//!   then cancel; no response), 54 (unsubscribe), 55–59 (a second beta
//!   displaces the first);
//! - per-peer keys: 61–73 (alpha with `key-alpha`, beta with `key-beta`).
//!
//! Skipped: the other direction of each relay (hub→beta copies of alpha's
//! frames are only meaningful to the hub, whose tests cover them), and the
//! request ids of our client's own calls, which are new; a response is
//! replayed under the id our client chose.
//!
//! The other tests script what the reference hub never sends but the
//! client must handle: a rejected hello, a response from the wrong peer, and
//! a hub without features.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use link_client::{
    CancellationToken, ClientConfig, HandlerError, LinkClient, LinkError, LinkEvent,
    NotReadyReason, RpcOptions, RpcOutcome,
};
use link_protocol::{DropReason, Envelope};
use link_test_support::{
    DEMO_SECRET, HubSide, ScriptedHub, WAIT, frame_at, key, next_event, started, wall_ms,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One captured frame of `tests/data/conversation.json`.
#[derive(Clone, Debug)]
struct Captured {
    n: u64,
    key: String,
    /// The frame as parsed JSON (with its original `sig`).
    raw: Value,
}

impl Captured {
    fn msg_type(&self) -> &str {
        self.raw["type"].as_str().unwrap()
    }

    fn data(&self) -> Option<&Value> {
        self.raw.get("data")
    }

    fn id(&self) -> &str {
        self.raw["id"].as_str().unwrap()
    }

    /// Re-stamped (`ts = now`) and re-signed with the frame's own key;
    /// `id` overrides the captured id (e.g. to answer our client's request).
    fn restamp(&self, id: Option<&str>) -> String {
        let r = &self.raw;
        frame_at(
            &key(&self.key),
            id.unwrap_or(self.id()),
            wall_ms(),
            self.msg_type(),
            r["from"].as_str(),
            r["to"].as_str(),
            self.data(),
        )
    }
}

/// All 73 captured frames, in order.
fn conversation() -> Vec<Captured> {
    let doc: Value = serde_json::from_str(include_str!("data/conversation.json")).unwrap();
    doc["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Captured {
            n: f["n"].as_u64().unwrap(),
            key: f["key"].as_str().unwrap().to_owned(),
            raw: serde_json::from_str(f["raw"].as_str().unwrap()).unwrap(),
        })
        .collect()
}

/// Frame number `n` (1-based, as the captured conversation numbers them
/// and protocol §3.4 and §6.2 cite them).
fn captured(frames: &[Captured], n: u64) -> &Captured {
    let f = &frames[(n - 1) as usize];
    assert_eq!(f.n, n);
    f
}

/// Asserts that a frame our client sent has the captured frame's type,
/// `from`, `to` and `data`.
fn assert_like(env: &Envelope, f: &Captured) {
    assert_eq!(env.msg_type(), Some(f.msg_type()), "type of #{}", f.n);
    assert_eq!(
        env.body().get("from"),
        f.raw.get("from"),
        "from of #{}",
        f.n
    );
    assert_eq!(env.body().get("to"), f.raw.get("to"), "to of #{}", f.n);
    assert_eq!(env.data(), f.data(), "data of #{}", f.n);
}

/// Asserts the hello shape: `{kind, name, pid, startedAt}` with our pid,
/// plus the one extension field our client adds by default,
/// `features: ["peers.delta"]` (the reference hub ignores it; this
/// scripted hub answers as the reference does, so the conversation goes on
/// with full lists).
fn assert_hello(hello: &link_protocol::Envelope, f: &Captured) {
    assert_eq!(hello.msg_type(), Some("hello"));
    assert_eq!(hello.from(), f.raw["from"].as_str());
    assert_eq!(hello.body()["to"], Value::Null);
    let (ours, theirs) = (hello.data().unwrap(), f.data().unwrap());
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut ours_v1 = ours.clone();
    let features = ours_v1.as_object_mut().unwrap().remove("features");
    assert_eq!(features, Some(json!(["peers.delta"])));
    assert_eq!(keys(&ours_v1), keys(theirs));
    assert_eq!(ours["kind"], theirs["kind"]);
    assert_eq!(ours["name"], theirs["name"]);
    assert_eq!(ours["pid"], json!(std::process::id()));
    assert!(ours["startedAt"].as_u64().is_some());
}

/// Plays one of alpha's calls: the captured request must come out of our
/// client, and the captured answer (under our id) must settle the call.
async fn call(alpha: &LinkClient, conn: &mut HubSide, req: &Captured, resp: &Captured) {
    let (to, data) = (req.raw["to"].as_str().unwrap(), req.data().unwrap());
    let rpc_type = data["rpcType"].as_str().unwrap();
    let pending = tokio::spawn({
        let (alpha, to, rpc_type) = (alpha.clone(), to.to_owned(), rpc_type.to_owned());
        let rpc_data = data.get("rpcData").cloned();
        async move { alpha.rpc(&to, &rpc_type, rpc_data).await }
    });
    let sent = conn.expect("rpc.request").await;
    assert_like(&sent, req);
    conn.send_raw(resp.restamp(Some(sent.id()))).await;
    let got = pending.await.unwrap();
    let answer = resp.data().unwrap();
    if answer["ok"] == json!(true) {
        assert_eq!(got.unwrap(), answer["result"], "#{}", resp.n);
        return;
    }
    let Err(LinkError::RpcRemote(e)) = got else {
        panic!("#{}: {got:?}", resp.n)
    };
    assert_eq!(e.code, answer["code"].as_str().unwrap());
    assert_eq!(e.message, answer["error"].as_str().unwrap());
    assert_eq!(e.data.as_ref(), answer.get("data"));
    assert_eq!((e.to.as_str(), e.rpc_type.as_str()), (to, rpc_type));
}

#[tokio::test]
async fn conversation_as_alpha() {
    let frames = conversation();
    let f = |n| captured(&frames, n);
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let status = Arc::new(Mutex::new(f(5).data().cloned().unwrap()));
    let s2 = status.clone();
    let alpha = LinkClient::new(
        hub.client("alpha")
            .name("alpha-1")
            .status(move || s2.lock().unwrap().clone())
            .status_interval(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut ev = alpha.events();
    alpha.start();

    // 1-5: hello, then the hub's ack, peers and snapshot; a status push at ready.
    let mut conn = hub.accept().await;
    assert_hello(&conn.recv_hello().await, f(1));
    for n in [2, 3, 4] {
        conn.send_raw(f(n).restamp(None)).await;
    }
    let info = alpha.ready(Some(WAIT)).await.unwrap();
    assert_eq!(
        (info.kind.as_str(), info.features),
        ("alpha", vec!["topics".to_owned(), "direct".to_owned()])
    );
    let push = conn.recv().await;
    assert_like(&push, f(5));

    // 8: beta joins.
    conn.send_raw(f(8).restamp(None)).await;
    next_event(
        &mut ev,
        |e| matches!(e, LinkEvent::PeerConnect(p) if p.kind == "beta"),
    )
    .await;
    let kinds: Vec<String> = alpha.peers().into_iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["alpha", "beta"]);

    // 12-41: peer RPC, server RPCs, and every error shape.
    for (req, resp) in [
        (12, 15),
        (16, 17),
        (18, 19),
        (20, 21),
        (22, 23),
        (24, 25),
        (26, 29),
        (30, 33),
        (34, 37),
        (38, 39),
        (40, 41),
    ] {
        call(&alpha, &mut conn, f(req), f(resp)).await;
    }

    // 42: publish; 44-45: directs with and without data.
    let d42 = f(42).data().unwrap();
    alpha.publish("news", d42["payload"].clone()).unwrap();
    assert_like(&conn.expect("topic.message").await, f(42));
    alpha.send("beta", "ping", Some(json!({"n": 1}))).unwrap();
    alpha.send("beta", "no-data", None).unwrap();
    assert_like(&conn.expect("direct").await, f(44));
    assert_like(&conn.expect("direct").await, f(45));

    // 48: the next periodic push carries the new status.
    *status.lock().unwrap() = f(48).data().cloned().unwrap();
    loop {
        let push = conn.expect("status.update").await;
        if push.data() == f(48).data() {
            assert_like(&push, f(48));
            break;
        }
    }

    // 50/52: a call aborted by its token sends rpc.cancel {id} to the target.
    let token = CancellationToken::new();
    let pending = tokio::spawn({
        let (alpha, token) = (alpha.clone(), token.clone());
        let data = f(50).data().unwrap()["rpcData"].clone();
        let opts = RpcOptions {
            timeout: Some(Duration::ZERO),
            cancel: Some(token),
        };
        async move { alpha.rpc_with("beta", "slow", Some(data), opts).await }
    });
    let req = conn.expect("rpc.request").await;
    assert_like(&req, f(50));
    token.cancel();
    let cancel = conn.expect("rpc.cancel").await;
    assert_eq!(
        (cancel.from(), cancel.body()["to"].as_str()),
        (Some("alpha"), Some("beta"))
    );
    assert_eq!(cancel.data(), Some(&json!({"id": req.id()})));
    assert_ne!(cancel.id(), req.id(), "the cancel has its own id");
    assert!(matches!(
        pending.await.unwrap(),
        Err(LinkError::RpcAbort { .. })
    ));
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::RpcComplete { id, outcome: RpcOutcome::Abort, .. } if id == req.id())
    })
    .await;

    // 57: beta replaced (connectedAt changed); 60: beta gone.
    conn.send_raw(f(57).restamp(None)).await;
    next_event(
        &mut ev,
        |e| matches!(e, LinkEvent::PeerReplaced { kind, .. } if kind == "beta"),
    )
    .await;
    conn.send_raw(f(60).restamp(None)).await;
    next_event(
        &mut ev,
        |e| matches!(e, LinkEvent::PeerDisconnect(p) if p.kind == "beta"),
    )
    .await;
    assert_eq!(alpha.peers().len(), 1);

    // stop(): a close without a code (the hub sees 1005).
    let (_, close) = tokio::join!(alpha.stop(), async {
        let c = conn.recv_close().await;
        conn.drain_until_closed().await;
        c
    });
    assert_eq!(close, None);
    assert!(alpha.health().stopped);
}

#[tokio::test]
async fn conversation_as_beta() {
    let frames = conversation();
    let f = |n| captured(&frames, n);
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (cancelled_tx, mut cancelled) = mpsc::unbounded_channel();
    let beta = LinkClient::new(
        hub.client("beta")
            .handler("echo", |c| async move {
                Ok(json!({"echoed": c.data, "from": c.from}))
            })
            .handler("fail", |_| async {
                Err(std::io::Error::other("disk on fire").into())
            })
            .handler("failStructured", |_| async {
                Err(HandlerError::new("ORDER_NOT_FOUND", "Order not found")
                    .with_data(json!({"orderId": 42})))
            })
            .handler("slow", move |c| {
                let tx = cancelled_tx.clone();
                async move {
                    c.cancel.cancelled().await;
                    tx.send(c.id).unwrap();
                    Ok(json!("too late"))
                }
            })
            .build()
            .unwrap(),
    );
    let mut ev = beta.events();
    // Subscribed before start: sent once the link is ready (11).
    let mut news = beta.subscribe("news").unwrap();
    let mut directs = beta.directs();
    beta.start();

    // 6-11.
    let mut conn = hub.accept().await;
    assert_hello(&conn.recv_hello().await, f(6));
    for n in [7, 9, 10] {
        conn.send_raw(f(n).restamp(None)).await;
    }
    beta.ready(Some(WAIT)).await.unwrap();
    assert_like(&conn.expect("topic.subscribe").await, f(11));

    // 13/14, 27/28, 31/32, 35/36: requests relayed from alpha, answered
    // with the reference's shapes (same id, to = the caller).
    for (req, resp) in [(13, 14), (27, 28), (31, 32), (35, 36)] {
        conn.send_raw(f(req).restamp(None)).await;
        let answer = conn.expect("rpc.response").await;
        assert_eq!(answer.id(), f(req).id());
        assert_like(&answer, f(resp));
    }
    // The sanitised failure (32) was reported locally with the real text.
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::RpcHandlerError { rpc_type, error, from, .. }
            if rpc_type == "fail" && error == "disk on fire" && from == "alpha")
    })
    .await;
    // The snapshot (10) came before those requests.
    let alpha_status = beta.peer_status("alpha").unwrap();
    assert_eq!(
        (alpha_status.status, alpha_status.at),
        (
            Some(json!({"state": "idle", "load": 0.25})),
            1_795_424_111_510.0
        )
    );

    // 43: topic delivery; 46-47: directs.
    conn.send_raw(f(43).restamp(None)).await;
    let m = tokio::time::timeout(WAIT, news.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.topic.as_str(), m.from.as_str(), m.payload()),
        ("news", "alpha", Some(&json!({"headline": "hi", "at": 1})))
    );
    conn.send_raw(f(46).restamp(None)).await;
    conn.send_raw(f(47).restamp(None)).await;
    let d1 = tokio::time::timeout(WAIT, directs.recv())
        .await
        .unwrap()
        .unwrap();
    let d2 = tokio::time::timeout(WAIT, directs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d1.from.as_str(), d1.msg_type.as_str(), d1.data()),
        ("alpha", "ping", Some(&json!({"n": 1})))
    );
    assert_eq!((d2.msg_type.as_str(), d2.data()), ("no-data", None));
    assert_eq!(d2.data_as::<Option<u32>>().unwrap(), None);

    // 49: status fan-out.
    conn.send_raw(f(49).restamp(None)).await;
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::PeerStatus { from, status, .. }
            if from == "alpha" && status == &Some(json!({"state": "busy", "load": 0.9})))
    })
    .await;

    // 51/53: the caller cancels; the handler's token fires and its answer
    // never reaches the wire.
    conn.send_raw(f(51).restamp(None)).await;
    conn.send_raw(f(53).restamp(None)).await;
    let id = tokio::time::timeout(WAIT, cancelled.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, f(51).id());
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::RpcCancel { id, from, rpc_type }
            if id == f(51).id() && from == "alpha" && rpc_type == "slow")
    })
    .await;
    let probe = "probe-after-cancel";
    conn.send_raw(f(13).restamp(Some(probe))).await;
    assert_eq!(
        conn.expect("rpc.response").await.id(),
        probe,
        "no response for the cancelled call"
    );

    // 54: dropping the last subscription unsubscribes.
    drop(news);
    assert_like(&conn.expect("topic.unsubscribe").await, f(54));

    // 55-59: a second beta connects; the hub closes the first with 4000.
    let beta2 = started(hub.client("beta"));
    let mut conn2 = hub.accept().await;
    assert_hello(&conn2.recv_hello().await, f(55));
    conn.close(4000, "replaced by new connection").await;
    for n in [56, 58, 59] {
        conn2.send_raw(f(n).restamp(None)).await;
    }
    beta2.ready(Some(WAIT)).await.unwrap();
    let gone = next_event(&mut ev, |e| matches!(e, LinkEvent::Disconnect { .. })).await;
    assert!(
        matches!(
            &*gone,
            LinkEvent::Disconnect {
                code: Some(4000),
                displaced: true,
                will_reconnect: false,
                was_ready: true,
                ..
            }
        ),
        "{gone:?}"
    );
    assert!(matches!(
        beta.ready(Some(WAIT)).await,
        Err(LinkError::NotReady { .. })
    ));
    assert_eq!(
        beta.publish("news", json!(1)).unwrap_err().code(),
        "LINK_NOT_READY"
    );
}

#[tokio::test]
async fn conversation_with_per_peer_keys() {
    let frames = conversation();
    let f = |n| captured(&frames, n);
    let hub = ScriptedHub::bind("key-alpha").await;
    // 61-64: alpha with its own key.
    let alpha = started(hub.client("alpha"));
    let mut a = hub.accept().await;
    assert_hello(&a.recv_hello().await, f(61));
    for n in [62, 63, 64] {
        a.send_raw(f(n).restamp(None)).await;
    }
    alpha.ready(Some(WAIT)).await.unwrap();

    // 65-69: beta with key-beta; every frame to it is signed with that key.
    let beta = started(
        hub.client("beta")
            .secret("key-beta")
            .handler("echo", |c| async move { Ok(c.data.unwrap_or_default()) }),
    );
    let mut b = hub.accept().await;
    b.key = key("key-beta");
    assert_hello(&b.recv_hello().await, f(65));
    for n in [66, 68, 69] {
        b.send_raw(f(n).restamp(None)).await;
    }
    beta.ready(Some(WAIT)).await.unwrap();
    a.send_raw(f(67).restamp(None)).await;

    // 70-73: alpha calls beta through the hub, each hop under its own key.
    let pending = tokio::spawn({
        let alpha = alpha.clone();
        async move { alpha.rpc("beta", "echo", Some(json!({"k": "v"}))).await }
    });
    let req = a.expect("rpc.request").await;
    assert_like(&req, f(70));
    b.send_raw(f(71).restamp(Some(req.id()))).await;
    let resp = b.expect("rpc.response").await;
    assert_like(&resp, f(72));
    assert_eq!(resp.id(), req.id());
    a.send_raw(f(73).restamp(Some(req.id()))).await;
    assert_eq!(pending.await.unwrap().unwrap(), json!({"k": "v"}));

    // A frame signed with the other peer's key is dropped as bad-signature.
    let mut ev = alpha.events();
    a.send_raw(f(66).restamp(None)).await;
    let e = next_event(&mut ev, |e| matches!(e, LinkEvent::ProtocolError(_))).await;
    assert!(
        matches!(&*e, LinkEvent::ProtocolError(p) if p.reason() == DropReason::BadSignature),
        "{e:?}"
    );
}

#[tokio::test]
async fn rejected_hello_stops_the_link() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = LinkClient::new(hub.client("alpha").build().unwrap());
    let mut ev = client.events();
    let waiting = tokio::spawn({
        let c = client.clone();
        async move { c.ready(Some(WAIT)).await }
    });
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    conn.send(
        "hello.ack",
        "server",
        Some(json!({"ok": false, "error": "nope"})),
    )
    .await;
    assert_eq!(
        waiting.await.unwrap(),
        Err(LinkError::HelloRejected {
            reason: Some("nope".into())
        })
    );
    let rejected = next_event(&mut ev, |e| matches!(e, LinkEvent::Rejected { .. })).await;
    // The reference's `{reason, error}`: the hub's text, and the error
    // `ready()` failed with.
    assert_eq!(
        *rejected,
        LinkEvent::Rejected {
            reason: Some("nope".into()),
            error: LinkError::HelloRejected {
                reason: Some("nope".into())
            },
        }
    );
    // The client closes without a code and does not come back.
    assert_eq!(conn.recv_close().await, None);
    conn.drain_until_closed().await;
    let d = next_event(&mut ev, |e| matches!(e, LinkEvent::Disconnect { .. })).await;
    assert!(
        matches!(
            &*d,
            LinkEvent::Disconnect {
                will_reconnect: false,
                was_ready: false,
                ..
            }
        ),
        "{d:?}"
    );
    let health = client.health();
    assert!(health.stopped && !health.connected && !health.ready);
    assert!(matches!(
        client.ready(Some(WAIT)).await,
        Err(LinkError::NotReady {
            reason: NotReadyReason::Stopped,
            ..
        })
    ));
}

#[tokio::test]
async fn rejected_hello_with_retry_closes_1000_and_reconnects() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = LinkClient::new(
        hub.client("alpha")
            .reconnect_on_rejection(true)
            .build()
            .unwrap(),
    );
    let waiting = tokio::spawn({
        let c = client.clone();
        async move { c.ready(Some(WAIT)).await }
    });
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    conn.send(
        "hello.ack",
        "server",
        Some(json!({"ok": false, "error": "nope"})),
    )
    .await;
    // ready() fails with the rejection even though the link retries.
    assert_eq!(waiting.await.unwrap().unwrap_err().code(), "HELLO_REJECTED");
    let close = conn.recv_close().await.unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "hello rejected - will retry")
    );
    conn.drain_until_closed().await;
    // A second connection, which this time is accepted.
    let mut conn2 = hub.accept().await;
    conn2.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
}

#[tokio::test]
async fn response_from_the_wrong_peer_is_dropped() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let alpha = started(hub.client("alpha"));
    let mut ev = alpha.events();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    alpha.ready(Some(WAIT)).await.unwrap();

    let pending = tokio::spawn({
        let alpha = alpha.clone();
        async move { alpha.rpc("beta", "who", None).await }
    });
    let req = conn.expect("rpc.request").await;
    let ok = |who: &str| Some(json!({"ok": true, "result": who}));
    conn.send_with(
        req.id(),
        "rpc.response",
        Some("mallory"),
        Some("alpha"),
        ok("mallory"),
    )
    .await;
    let e = next_event(&mut ev, |e| matches!(e, LinkEvent::ProtocolError(_))).await;
    assert!(
        matches!(&*e, LinkEvent::ProtocolError(p) if p.reason() == DropReason::RpcResponseMismatch),
        "{e:?}"
    );
    assert!(!pending.is_finished());
    assert_eq!(alpha.health().pending_rpc_count, 1);
    conn.send_with(
        req.id(),
        "rpc.response",
        Some("beta"),
        Some("alpha"),
        ok("beta"),
    )
    .await;
    assert_eq!(pending.await.unwrap().unwrap(), json!("beta"));
}

#[tokio::test]
async fn hub_without_features_refuses_topics_and_directs() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    // Queued while connecting; purged at ready because the hub lacks the features.
    client.publish("news", json!({"queued": 1})).unwrap();
    client.send("beta", "ping", None).unwrap();
    let _sub = client.subscribe("news").unwrap();
    assert_eq!(client.health().outbox_size, 2);

    let mut conn = hub.accept().await;
    conn.handshake(&[]).await;
    let info = client.ready(Some(WAIT)).await.unwrap();
    assert!(info.features.is_empty());
    assert_eq!(client.hub_features(), Some(vec![]));
    assert_eq!(client.health().outbox_size, 0);

    for err in [
        client.publish("news", json!(1)).unwrap_err(),
        client.send("beta", "ping", None).unwrap_err(),
        client.subscribe("other").unwrap_err(),
    ] {
        assert_eq!(err.code(), "FEATURE_UNSUPPORTED", "{err:?}");
    }
    // Nothing was sent but this call: no publish, direct or subscribe.
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.rpc("server", "probe", None).await }
    });
    let req = conn.recv().await;
    assert_eq!(req.msg_type(), Some("rpc.request"));
    conn.send_with(
        req.id(),
        "rpc.response",
        Some("server"),
        Some("alpha"),
        Some(json!({"ok": true})),
    )
    .await;
    assert_eq!(pending.await.unwrap().unwrap(), Value::Null);
}

#[tokio::test]
async fn wait_for_matches_a_predicate() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();

    // Registered when called, so an event sent right after is not missed.
    let gamma = client.wait_for(
        |e| matches!(e, LinkEvent::PeerConnect(p) if p.kind == "gamma"),
        Some(WAIT),
    );
    let peer = |k: &str| json!({"kind": k, "hello": null, "connectedAt": 1, "connected": true});
    for peers in [
        json!([peer("alpha"), peer("beta")]),
        json!([peer("alpha"), peer("beta"), peer("gamma")]),
    ] {
        conn.send("peers.update", "server", Some(json!({ "peers": peers })))
            .await;
    }
    let e = gamma.await.expect("gamma joined");
    assert!(matches!(&*e, LinkEvent::PeerConnect(p) if p.kind == "gamma"));

    // Nothing matches: the timeout ends the wait with None.
    let never = client.wait_for(
        |e| matches!(e, LinkEvent::Rejected { .. }),
        Some(Duration::from_millis(20)),
    );
    assert!(never.await.is_none());
}

/// The `rpc.*` events of outgoing calls seen so far, as (name, id).
fn rpc_events(
    ev: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<LinkEvent>>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    while let Ok(e) = ev.try_recv() {
        match &*e {
            LinkEvent::RpcTimeout { id, .. }
            | LinkEvent::RpcAbort { id, .. }
            | LinkEvent::RpcDisconnect { id, .. }
            | LinkEvent::RpcComplete { id, .. } => out.push((e.name(), id.clone())),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn every_rpc_ending_emits_rpc_complete() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = LinkClient::new(hub.client("alpha").build().unwrap());
    let mut ev = client.events();
    let complete = |outcome: RpcOutcome| move |e: &LinkEvent| matches!(e, LinkEvent::RpcComplete { outcome: o, .. } if *o == outcome);

    // Not started yet: refused at once, without queueing.
    let e = client.rpc("beta", "x", None).await.unwrap_err();
    assert_eq!(e.code(), "LINK_NOT_READY");
    assert!(
        matches!(
            e,
            LinkError::NotReady {
                op: "rpc",
                reason: NotReadyReason::NotStarted
            }
        ),
        "{e:?}"
    );
    let done = next_event(&mut ev, complete(RpcOutcome::NotReady)).await;
    assert_eq!(done.name(), "rpc.complete");

    client.start();
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    // Connecting: not ready either, and the error says so.
    let e = client.rpc("beta", "x", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            LinkError::NotReady {
                reason: NotReadyReason::Connecting,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "link not ready for rpc: connecting");
    conn.ack(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    rpc_events(&mut ev);

    // A token cancelled before the call: nothing is sent; rpc.abort then
    // rpc.complete, both with the call's id.
    let token = CancellationToken::new();
    token.cancel();
    let opts = RpcOptions {
        timeout: None,
        cancel: Some(token),
    };
    let e = client.rpc_with("beta", "x", None, opts).await.unwrap_err();
    assert_eq!(e.code(), "RPC_ABORT");
    let id = e.rpc_id().unwrap().to_owned();
    assert_eq!(
        rpc_events(&mut ev),
        [("rpc.abort", id.clone()), ("rpc.complete", id)]
    );

    // A future dropped mid-flight: rpc.cancel, and an abort.
    let req = tokio::select! {
        r = client.rpc("beta", "x", None) => panic!("settled: {r:?}"),
        req = conn.recv() => req,
    };
    assert_eq!(
        req.msg_type(),
        Some("rpc.request"),
        "the pre-cancelled call was never sent"
    );
    let cancel = conn.expect("rpc.cancel").await;
    assert_eq!(cancel.data(), Some(&json!({"id": req.id()})));
    let id = req.id().to_owned();
    assert_eq!(
        rpc_events(&mut ev),
        [("rpc.abort", id.clone()), ("rpc.complete", id)]
    );

    // A success: rpc.complete alone.
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.rpc("beta", "x", None).await }
    });
    let req = conn.expect("rpc.request").await;
    conn.send_with(
        req.id(),
        "rpc.response",
        Some("beta"),
        Some("alpha"),
        Some(json!({"ok": true, "result": 1})),
    )
    .await;
    assert_eq!(call.await.unwrap().unwrap(), json!(1));
    let done = next_event(&mut ev, complete(RpcOutcome::Ok)).await;
    assert_eq!(done.name(), "rpc.complete");
    assert!(rpc_events(&mut ev).is_empty(), "nothing after rpc.complete");

    // The connection drops under a pending call.
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.rpc("beta", "x", None).await }
    });
    let req = conn.expect("rpc.request").await;
    conn.close(1001, "going away").await;
    let e = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, LinkError::RpcDisconnect { to, rpc_type, id, .. }
            if to == "beta" && rpc_type == "x" && id == req.id()),
        "{e:?}"
    );
    let id = req.id().to_owned();
    assert_eq!(
        rpc_events(&mut ev),
        [("rpc.disconnect", id.clone()), ("rpc.complete", id)]
    );
}

#[tokio::test]
async fn dropping_every_handle_and_stream_stops_the_link() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    let mut news = client.subscribe("news").unwrap();
    conn.expect("topic.subscribe").await;

    // A live stream keeps the link up without any client handle.
    drop(client);
    conn.send(
        "topic.message",
        "beta",
        Some(json!({"topic": "news", "payload": 1})),
    )
    .await;
    let m = tokio::time::timeout(WAIT, news.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload(), Some(&json!(1)));

    // The last one gone: the link closes (no code, like stop()).
    drop(news);
    assert_eq!(conn.recv_close().await, None);
    conn.drain_until_closed().await;
}

#[tokio::test]
async fn subscribe_works_disabled_and_stopped_and_applies_at_the_next_ready() {
    // Disabled: kept, harmlessly, as the reference never throws here.
    let disabled = LinkClient::new(ClientConfig::builder().kind("alpha").build().unwrap());
    let _sub = disabled.subscribe("news").unwrap();
    let _handler = disabled.subscribe_with("news", |_| {}).unwrap();
    assert_eq!(disabled.health().subscription_count, 1);

    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    client.stop().await;
    conn.recv_close().await;

    // Stopped: subscribing still works (publish does not: that is the
    // reference's rule too).
    let mut news = client.subscribe("news").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let _handler = client
        .subscribe_with("news", move |m| {
            s2.lock().unwrap().push(m.payload().cloned())
        })
        .unwrap();
    assert_eq!(
        client.publish("news", json!(0)).unwrap_err().code(),
        "LINK_NOT_READY"
    );

    // Started again: the hub gets the subscription at ready, once.
    client.start();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    let sub = conn.expect("topic.subscribe").await;
    assert_eq!(sub.data(), Some(&json!({"topic": "news"})));
    conn.send(
        "topic.message",
        "beta",
        Some(json!({"topic": "news", "payload": 7})),
    )
    .await;
    let m = tokio::time::timeout(WAIT, news.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload(), Some(&json!(7)));
    assert_eq!(*seen.lock().unwrap(), [Some(json!(7))]);
}

#[tokio::test]
async fn unsubscribe_removes_every_subscription_of_a_topic() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();

    let mut a = client.subscribe("news").unwrap();
    let mut b = client.subscribe("news").unwrap();
    let calls = Arc::new(Mutex::new(0));
    let c2 = calls.clone();
    let handler = client
        .subscribe_with("news", move |_| *c2.lock().unwrap() += 1)
        .unwrap();
    conn.expect("topic.subscribe").await;

    assert_eq!(client.unsubscribe("news"), Ok(true));
    let unsub = conn.expect("topic.unsubscribe").await;
    assert_eq!(unsub.data(), Some(&json!({"topic": "news"})));
    assert_eq!(client.health().subscription_count, 0);
    // The streams end.
    for s in [&mut a, &mut b] {
        assert!(
            tokio::time::timeout(WAIT, s.recv())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(client.unsubscribe("news"), Ok(false));
    assert_eq!(
        client.unsubscribe("bad topic").unwrap_err().code(),
        "INVALID_ARGUMENT"
    );

    // A new subscription is not undone by dropping the old handles.
    let mut fresh = client.subscribe("news").unwrap();
    conn.expect("topic.subscribe").await;
    drop((a, b, handler));
    conn.send(
        "topic.message",
        "beta",
        Some(json!({"topic": "news", "payload": 1})),
    )
    .await;
    let m = tokio::time::timeout(WAIT, fresh.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload(), Some(&json!(1)));
    assert_eq!(*calls.lock().unwrap(), 0, "the removed handler never ran");
    // The next frame is this publish: no topic.unsubscribe went out.
    client.publish("probe", json!(1)).unwrap();
    conn.expect("topic.message").await;
}
