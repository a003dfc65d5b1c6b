//! protocol §5 (hello, hello.ack, key modes), the handshake rows of §4.1
//! (`bad-hello` with each detail and its 1008 close, `unknown-kind`,
//! `duplicate-hello`), §0.3 (frames pipelined behind a hello), and
//! displacement: close 4000, `peer.replaced` / `peer.connect{replaced}`,
//! frames from the stale socket dropped (§4.1 step 12, §13).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures_util::StreamExt;
use link_hub::{HubConfig, HubEvent, PeerUpdates, Secret};
use link_protocol::DropReason;
use link_test_support::{
    Raw, TestHub, WAIT, drain_events, frame, fresh_id, hello_frame, key, next_event, peer_kinds,
    protocol_error, wall_ms,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

const S: &str = "demo-secret";

fn hello_with(key: &link_protocol::Key, from: &str, data: Option<&Value>) -> String {
    frame(key, &fresh_id("hello"), "hello", Some(from), None, data)
}

#[tokio::test]
async fn hello_is_answered_with_ack_peers_update_and_snapshot_in_order() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut raw = hub.raw_peer().await;
    let before = wall_ms();
    let data = json!({"kind": "alpha", "name": "alpha-1", "pid": 15128, "startedAt": 1_795_424_111_499u64});
    raw.send_text(hello_with(&k, "alpha", Some(&data))).await;

    let mut frames = Vec::new();
    for _ in 0..3 {
        let text = raw.next_text().await;
        let r = link_protocol::envelope::parse_frame(text.as_bytes(), 1 << 20).unwrap();
        assert!(r.verify(&k));
        frames.push(r.envelope);
    }
    let types: Vec<_> = frames.iter().map(|e| e.msg_type().unwrap()).collect();
    assert_eq!(types, ["hello.ack", "peers.update", "status.snapshot"]);
    for f in &frames {
        assert_eq!(
            (f.from(), f.to().as_deref()),
            (Some("server"), Some("alpha"))
        );
    }
    let ack = frames[0].data().unwrap();
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["kind"], "alpha");
    assert_eq!(ack["features"], json!(["topics", "direct"]));
    assert!(ack["serverTime"].as_u64().unwrap() >= before);
    let peers = &frames[1].data().unwrap()["peers"];
    assert_eq!(peers[0]["hello"], data);
    assert_eq!(peers[0]["connected"], true);
    assert_eq!(peers[0]["kind"], "alpha");
    assert!(peers[0]["connectedAt"].as_u64().unwrap() >= before);
    assert_eq!(frames[2].data().unwrap(), &json!({}));

    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerConnect { .. })).await;
    let HubEvent::PeerConnect {
        kind,
        hello,
        replaced,
        connected_at,
    } = &*e
    else {
        unreachable!()
    };
    assert_eq!((kind.as_str(), *replaced), ("alpha", false));
    assert_eq!(hello.to_value(), data);
    assert_eq!(json!(connected_at), peers[0]["connectedAt"]);
}

#[tokio::test]
async fn bad_hello_closes_1008_with_each_detail_before_any_signature_check() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let long = "k".repeat(257);
    let cases: Vec<(Option<Value>, &str)> = vec![
        (None, "missing-kind"),
        (Some(json!({})), "missing-kind"),
        (Some(json!({"kind": ""})), "missing-kind"),
        (Some(json!({"kind": "  \t "})), "missing-kind"),
        (Some(json!({"kind": null})), "missing-kind"),
        (Some(json!({"kind": long})), "oversized-kind"),
        (Some(json!({"kind": "server"})), "reserved-kind"),
        (Some(json!({"kind": " server "})), "reserved-kind"),
        (Some(json!({"kind": "__proto__"})), "reserved-kind"),
        (Some(json!({"kind": "constructor"})), "reserved-kind"),
        (Some(json!({"kind": "prototype"})), "reserved-kind"),
        (Some(json!({"kind": "bad kind"})), "invalid-kind"),
        (Some(json!({"kind": "a/b"})), "invalid-kind"),
        (Some(json!({"kind": "ünï"})), "invalid-kind"),
        (Some(json!({"kind": {"a": 1}})), "invalid-kind"),
        (Some(json!({"kind": ["a", "b"]})), "invalid-kind"),
    ];
    for (i, (data, detail)) in cases.iter().enumerate() {
        let mut raw = hub.raw_peer().await;
        // Alternate a garbage key and the real one: the close comes first
        // either way (protocol §16: unauthenticated input picks the reason).
        let k = if i % 2 == 0 { key("garbage") } else { key(S) };
        raw.send_text(hello_with(&k, "x", data.as_ref())).await;
        let e = protocol_error(&mut rx, DropReason::BadHello).await;
        assert_eq!(e.detail, Some(*detail), "{data:?}");
        assert_eq!(e.msg_type.as_deref(), Some("hello"));
        assert_eq!(raw.closed().await, (1008, (*detail).to_owned()), "{data:?}");
    }
    assert_eq!(hub.hub.health().await.peer_count, 0);
}

#[tokio::test]
async fn hello_is_sanitised_and_identity_comes_from_data_kind() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut raw = hub.raw_peer().await;
    let name = format!("  {}  ", "n".repeat(300));
    // Envelope `from` is ignored; kind is trimmed; name trimmed and cut to
    // 256; non-finite-number pid/startedAt become null.
    let data = json!({"kind": " alpha\t", "name": name, "pid": "x", "startedAt": 12});
    raw.send_text(hello_with(&k, "mallory", Some(&data))).await;
    let ack = raw.recv(&k, "hello.ack").await;
    assert_eq!(ack.to().as_deref(), Some("alpha"));
    assert_eq!(ack.data().unwrap()["kind"], "alpha");
    let peers = raw.recv(&k, "peers.update").await;
    let expected = json!({"kind": "alpha", "name": "n".repeat(256), "pid": null, "startedAt": 12});
    assert_eq!(peers.data().unwrap()["peers"][0]["hello"], expected);
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerConnect { .. })).await;
    let HubEvent::PeerConnect { kind, hello, .. } = &*e else {
        unreachable!()
    };
    assert_eq!(kind, "alpha");
    assert_eq!(hello.to_value(), expected);

    // A number is a kind once stringified, as String(5) in the reference.
    let mut raw5 = hub.raw_peer().await;
    raw5.send_text(hello_with(&k, "5", Some(&json!({"kind": 5}))))
        .await;
    let ack = raw5.recv(&k, "hello.ack").await;
    assert_eq!(ack.data().unwrap()["kind"], "5");
    let peers = raw5.recv(&k, "peers.update").await;
    assert_eq!(
        peers.data().unwrap()["peers"][1]["hello"],
        json!({"kind": "5", "name": "", "pid": null, "startedAt": null})
    );
}

#[tokio::test]
async fn unknown_kind_and_bad_signature_keep_the_socket_pending_for_a_retry() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::per_kind([
            ("alpha", "key-alpha"),
            ("beta", "key-beta"),
        ]))
        .build()
        .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut raw = hub.raw_peer().await;

    raw.send_text(hello_frame(&key("key-gamma"), &fresh_id("h"), "gamma"))
        .await;
    let e = protocol_error(&mut rx, DropReason::UnknownKind).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("gamma"), Some("hello"))
    );
    // Verified with the *claimed* kind's key: beta's key does not do for alpha.
    raw.send_text(hello_frame(&key("key-beta"), &fresh_id("h"), "alpha"))
        .await;
    let e = protocol_error(&mut rx, DropReason::BadSignature).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("hello"))
    );
    assert_eq!(hub.hub.health().await.pending_socket_count, 1);
    // Same socket, right key: accepted, and nothing was sent before.
    raw.send_text(hello_frame(&key("key-alpha"), &fresh_id("h"), "alpha"))
        .await;
    let first = raw.next_text().await;
    let r = link_protocol::envelope::parse_frame(first.as_bytes(), 1 << 20).unwrap();
    assert_eq!(r.envelope.msg_type(), Some("hello.ack"));
    assert!(r.verify(&key("key-alpha")));
}

#[tokio::test]
async fn resolver_keys_unknown_empty_and_panicking_lookups_are_unknown_kind() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::resolver(|kind: String| async move {
            match kind.as_str() {
                "alpha" => Some("ka".to_owned()),
                "empty" => Some(String::new()),
                "boom" => panic!("resolver bug"),
                _ => None,
            }
        }))
        .build()
        .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut raw = hub.raw_peer().await;
    for kind in ["nobody", "empty", "boom"] {
        raw.send_text(hello_frame(&key("ka"), &fresh_id("h"), kind))
            .await;
        let e = protocol_error(&mut rx, DropReason::UnknownKind).await;
        assert_eq!(e.kind.as_deref(), Some(kind));
    }
    let ack = raw.hello(&key("ka"), "alpha").await;
    assert_eq!(ack.data().unwrap()["kind"], "alpha");
}

#[tokio::test]
async fn frames_pipelined_behind_a_hello_are_processed_in_order() {
    // protocol §0.3: the reference drops these as pre-hello-message; we keep
    // them. The resolver is held until everything was sent.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let hub = TestHub::start(
        HubConfig::builder(Secret::resolver(move |kind: String| {
            let g = g.clone();
            async move {
                if kind == "alpha" {
                    g.notified().await;
                }
                Some(S.to_owned())
            }
        }))
        .build()
        .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut beta = hub.peer("beta", S).await;
    let k = key(S);
    let mut raw = hub.raw_peer().await;
    raw.send_text(hello_frame(&k, &fresh_id("h"), "alpha"))
        .await;
    raw.send_text(frame(
        &k,
        &fresh_id("d"),
        "direct",
        Some("alpha"),
        Some("beta"),
        Some(&json!({"directType": "first"})),
    ))
    .await;
    let rpc_id = fresh_id("rpc");
    raw.send_text(frame(
        &k,
        &rpc_id,
        "rpc.request",
        Some("alpha"),
        Some("server"),
        Some(&json!({"rpcType": "link.health"})),
    ))
    .await;
    // A second hello right behind: once the first wins, it is a duplicate.
    raw.send_text(hello_frame(&k, &fresh_id("h2"), "alpha"))
        .await;
    gate.notify_one();

    let ack = raw.recv(&k, "hello.ack").await;
    assert_eq!(ack.data().unwrap()["ok"], true);
    let resp = raw.recv(&k, "rpc.response").await;
    assert_eq!(resp.id(), rpc_id);
    assert_eq!(resp.data().unwrap()["result"]["peerCount"], 2);
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap()["directType"], "first");
    let e = protocol_error(&mut rx, DropReason::DuplicateHello).await;
    assert_eq!(e.kind.as_deref(), Some("alpha"));
    assert!(
        !drain_events(&mut rx).iter().any(|e| matches!(&**e,
            HubEvent::ProtocolError { error, .. } if error.reason == DropReason::PreHelloMessage)),
        "nothing behind the hello was dropped as pre-hello"
    );
}

#[tokio::test]
async fn duplicate_hello_on_an_authenticated_socket_is_dropped() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let data = json!({"kind": "alpha", "name": "again", "pid": 1, "startedAt": wall_ms()});
    alpha.send("hello", None, Some(data)).await;
    let e = protocol_error(&mut rx, DropReason::DuplicateHello).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("hello"))
    );
    alpha.assert_quiet().await;
    assert!(!drain_events(&mut rx).iter().any(|e| matches!(
        &**e,
        HubEvent::PeerConnect { .. } | HubEvent::PeerReplaced { .. }
    )));
    assert_eq!(
        hub.hub.state().await.peers[0].hello.as_ref().unwrap().name,
        "alpha"
    );
}

#[tokio::test]
async fn a_newer_socket_displaces_the_old_one_with_4000() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut alpha1 = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.peers_update_with("beta").await;
    let old_connected_at = hub.hub.state().await.peers[0].connected_at.unwrap();

    let mut alpha2 = hub.raw_peer().await;
    let data = json!({"kind": "alpha", "name": "alpha-2", "pid": 2, "startedAt": wall_ms()});
    alpha2.send_text(hello_with(&k, "alpha", Some(&data))).await;
    alpha2.recv(&k, "hello.ack").await;

    // peer.replaced, then peer.connect{replaced:true}.
    let e = next_event(&mut rx, |e| {
        matches!(
            e,
            HubEvent::PeerReplaced { .. } | HubEvent::PeerConnect { replaced: true, .. }
        )
    })
    .await;
    let HubEvent::PeerReplaced {
        kind,
        prev_hello,
        new_hello,
    } = &*e
    else {
        panic!("peer.replaced must come first, got {e:?}")
    };
    assert_eq!(kind, "alpha");
    assert_eq!(
        (prev_hello.name.as_str(), new_hello.name.as_str()),
        ("alpha", "alpha-2")
    );
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerConnect { .. })).await;
    assert!(matches!(&*e, HubEvent::PeerConnect { kind, replaced: true, .. } if kind == "alpha"));

    // The old socket's frames are dropped: this one reaches the hub after
    // the displacement was decided.
    alpha1
        .send("direct", Some("beta"), Some(json!({"directType": "stale"})))
        .await;
    assert_eq!(
        alpha1.closed().await,
        (4000, "replaced by new connection".to_owned())
    );
    alpha2
        .send_text(frame(
            &k,
            &fresh_id("d"),
            "direct",
            Some("alpha"),
            Some("beta"),
            Some(&json!({"directType": "fresh"})),
        ))
        .await;
    assert_eq!(
        beta.recv("direct").await.data().unwrap()["directType"],
        "fresh"
    );

    // Everyone's peers.update keeps alpha in its first slot, with the new hello.
    let up = alpha2.recv(&k, "peers.update").await;
    assert_eq!(peer_kinds(&up), ["alpha", "beta"]);
    assert_eq!(up.data().unwrap()["peers"][0]["hello"]["name"], "alpha-2");
    let up = beta.peers_update_with("alpha").await;
    assert_eq!(peer_kinds(&up), ["alpha", "beta"]);
    assert_eq!(up.data().unwrap()["peers"][0]["hello"]["name"], "alpha-2");
    assert!(
        up.data().unwrap()["peers"][0]["connectedAt"]
            .as_f64()
            .unwrap()
            >= old_connected_at
    );

    // Once the old socket is completely gone (the hub has reported it to
    // its router), alpha is still registered and nobody was told otherwise.
    tokio::time::timeout(WAIT, async { while alpha1.ws.next().await.is_some() {} })
        .await
        .unwrap();
    let state = hub.hub.state().await;
    let kinds: Vec<_> = state.peers.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["alpha", "beta"]);
    assert!(
        !drain_events(&mut rx)
            .iter()
            .any(|e| matches!(&**e, HubEvent::PeerDisconnect { .. })),
        "the displaced socket's close is not a disconnect of alpha"
    );
    for e in beta.settle().await {
        if e.msg_type() == Some("peers.update") {
            assert_eq!(peer_kinds(&e), ["alpha", "beta"]);
        }
    }
}

#[tokio::test]
async fn the_hub_sends_nothing_to_a_pending_socket() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut raw: Raw = hub.pending("probe").await;
    // Broadcasts happen while raw is pending: a new peer, a status.
    let _beta = hub.peer("beta", S).await;
    alpha
        .send("status.update", None, Some(json!({"s": 1})))
        .await;
    alpha.barrier().await;
    raw.send_text(hello_frame(&key(S), &fresh_id("h"), "gamma"))
        .await;
    let first = link_test_support::parse(&raw.next_text().await).0;
    assert_eq!(first.msg_type(), Some("hello.ack"));
    let snap = raw.recv(&key(S), "status.snapshot").await;
    assert_eq!(snap.data().unwrap()["alpha"]["status"], json!({"s": 1}));
}

#[tokio::test]
async fn peer_updates_off_sends_no_peer_lists_and_link_peer_list_answers() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .peer_updates(PeerUpdates::Off)
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    // beta's join, then beta's departure, would each be a peers.update to
    // alpha under the reference behaviour.
    let list = alpha.rpc("server", "link.peer.list", None).await;
    let result = &list.data().unwrap()["result"];
    let kinds: Vec<&str> = result["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["alpha", "beta"], "registration order: {result}");
    assert_eq!(result["peers"][1]["hello"]["kind"], "beta");
    assert_eq!(result["peers"][1]["connected"], true);
    let one = alpha
        .rpc("server", "link.peer.list", Some(json!({"kind": "beta"})))
        .await;
    assert_eq!(
        one.data().unwrap()["result"]["peers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut rx = hub.hub.events();
    beta.barrier().await;
    drop(beta);
    next_event(
        &mut rx,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "beta"),
    )
    .await;
    let gone = alpha.rpc("server", "link.peer.list", None).await;
    assert_eq!(gone.data().unwrap()["result"]["peers"][0]["kind"], "alpha");
    let seen: Vec<_> = std::mem::take(&mut alpha.inbox)
        .into_iter()
        .filter_map(|e| e.msg_type().map(str::to_owned))
        .collect();
    assert!(
        !seen.iter().any(|t| t == "peers.update"),
        "no peers.update with PeerUpdates::Off: {seen:?}"
    );
}
