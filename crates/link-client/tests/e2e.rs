//! End-to-end tests: LinkClients against the in-process hub on 127.0.0.1:0.
//! Every wait is on an event or a result; timeouts only guard against hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use link_client::{
    CancellationToken, ClientConfig, HandlerError, LinkClient, LinkError, LinkEvent, RpcOptions,
};
use link_hub::{HubConfig, HubEvent, Secret};
use link_test_support::{ClosedPort, TestHub, WAIT, next_event, ready};
use serde_json::{Value, json};

const SECRET: &str = "s3cret";

/// The hub's `link.topic.list` answer for `topic`, asked by `client` (a
/// server RPC from a client is handled after everything it sent before).
async fn topic_list(client: &LinkClient, topic: &str) -> Value {
    client
        .rpc("server", "link.topic.list", Some(json!({ "topic": topic })))
        .await
        .unwrap()
}

#[tokio::test]
async fn rpc_round_trip_typed_and_server() {
    let hub = TestHub::shared(SECRET).await;
    let beta = ready(hub.client("beta").handler("echo", |call| async move {
        Ok(json!({"echoed": call.data, "from": call.from}))
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    // Our hub grants the `peers.delta` extension our client asks for by
    // default; a v1-mode client is told only the reference's features.
    assert_eq!(
        alpha.hub_features().unwrap(),
        ["topics", "direct", "peers.delta"]
    );
    let v1 = ready(hub.client("gamma").peer_deltas(false)).await;
    assert_eq!(v1.hub_features().unwrap(), ["topics", "direct"]);
    v1.stop().await;

    let r = alpha
        .rpc("beta", "echo", Some(json!({"x": [1, 2.5, "é"]})))
        .await
        .unwrap();
    assert_eq!(r, json!({"echoed": {"x": [1, 2.5, "é"]}, "from": "alpha"}));

    #[derive(serde::Serialize)]
    struct Req {
        n: u32,
    }
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Resp {
        from: String,
    }
    let typed: Resp = alpha
        .rpc_typed("beta", "echo", &Req { n: 1 })
        .await
        .unwrap();
    assert_eq!(
        typed,
        Resp {
            from: "alpha".into()
        }
    );

    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], 2);
    drop(beta);
}

#[tokio::test]
async fn remote_errors_carry_codes_and_data() {
    let hub = TestHub::shared(SECRET).await;
    let _beta = ready(
        hub.client("beta")
            .handler("lookup", |_| async {
                Err(HandlerError::new("ORDER_NOT_FOUND", "Order not found")
                    .with_data(json!({"orderId": 42})))
            })
            .handler("boom", |_| async {
                Err(std::io::Error::other("disk on fire").into())
            }),
    )
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let mut events = alpha.events();

    let e = alpha.rpc("beta", "lookup", None).await.unwrap_err();
    assert_eq!(e.code(), "ORDER_NOT_FOUND");
    let LinkError::RpcRemote(r) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (
            r.message.as_str(),
            r.data.clone(),
            r.to.as_str(),
            r.rpc_type.as_str()
        ),
        (
            "Order not found",
            Some(json!({"orderId": 42})),
            "beta",
            "lookup"
        )
    );

    let e = alpha.rpc("beta", "boom", None).await.unwrap_err();
    assert!(
        matches!(&e, LinkError::RpcRemote(r) if r.code == "RPC_HANDLER_ERROR" && r.message == "Internal handler error")
    );

    let e = alpha.rpc("beta", "nope", None).await.unwrap_err();
    assert!(
        matches!(&e, LinkError::RpcRemote(r) if r.code == "RPC_UNKNOWN_TYPE" && r.message == "Unknown rpcType: nope")
    );

    let e = alpha.rpc("ghost", "x", None).await.unwrap_err();
    assert_eq!(e.code(), "RPC_NO_TARGET");

    // The caller saw rpc.complete events with the outcome.
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.unwrap();
            if let LinkEvent::RpcComplete {
                rpc_type, outcome, ..
            } = &*ev
                && rpc_type == "nope"
            {
                return *outcome;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(done, link_client::RpcOutcome::RemoteError);
}

#[tokio::test]
async fn timeout_cancels_end_to_end_and_suppresses_the_response() {
    let hub = TestHub::shared(SECRET).await;
    let mut hub_events = hub.hub.events();
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (c2, r2) = (cancelled.clone(), release.clone());
    let _beta = ready(hub.client("beta").handler("slow", move |call| {
        let (cancelled, release) = (c2.clone(), r2.clone());
        async move {
            call.cancel.cancelled().await;
            cancelled.notify_one();
            release.notified().await;
            Ok(json!("too late"))
        }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let opts = RpcOptions {
        timeout: Some(Duration::from_millis(50)),
        cancel: None,
    };
    let e = alpha
        .rpc_with("beta", "slow", None, opts)
        .await
        .unwrap_err();
    assert!(matches!(e, LinkError::RpcTimeout { .. }), "{e:?}");
    // The handler's token fired because alpha sent rpc.cancel through the hub.
    tokio::time::timeout(WAIT, cancelled.notified())
        .await
        .unwrap();
    let ev = next_event(&mut hub_events, |e| {
        matches!(e, HubEvent::RpcCancelled { .. })
    })
    .await;
    assert!(matches!(
        &*ev,
        HubEvent::RpcCancelled {
            found: false,
            forwarded: true,
            ..
        }
    ));
    // Release the handler: its answer must never reach the wire.
    release.notify_one();
    let probe = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(probe["peerCount"], 2);
    while let Ok(e) = hub_events.try_recv() {
        assert!(
            !matches!(&*e, HubEvent::RpcResponseForwarded { from, .. } if from == "beta"),
            "suppressed response leaked"
        );
    }
}

#[tokio::test]
async fn cancel_token_and_dropped_future_both_send_rpc_cancel() {
    let hub = TestHub::shared(SECRET).await;
    let mut hub_events = hub.hub.events();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let _beta = ready(hub.client("beta").handler("hang", move |call| {
        let seen = s2.clone();
        async move {
            call.cancel.cancelled().await;
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;

    let token = CancellationToken::new();
    let call = alpha.rpc_with(
        "beta",
        "hang",
        None,
        RpcOptions {
            timeout: None,
            cancel: Some(token.clone()),
        },
    );
    let (r, ()) = tokio::join!(call, async {
        next_event(&mut hub_events, |e| {
            matches!(e, HubEvent::RpcForwarded { .. })
        })
        .await;
        token.cancel();
    });
    assert!(matches!(r, Err(LinkError::RpcAbort { .. })));
    next_event(&mut hub_events, |e| {
        matches!(e, HubEvent::RpcCancelled { .. })
    })
    .await;

    // Dropping the future mid-flight cancels too.
    let fut = alpha.rpc_with(
        "beta",
        "hang",
        None,
        RpcOptions {
            timeout: None,
            cancel: None,
        },
    );
    tokio::select! {
        _ = fut => panic!("must not complete"),
        _ = next_event(&mut hub_events, |e| matches!(e, HubEvent::RpcForwarded { .. })) => {}
    }
    next_event(&mut hub_events, |e| {
        matches!(e, HubEvent::RpcCancelled { .. })
    })
    .await;
    assert_eq!(alpha.health().pending_rpc_count, 0);
}

#[tokio::test]
async fn subscriptions_share_one_hub_subscription() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = ready(hub.client("alpha")).await;
    let beta = ready(hub.client("beta")).await;
    let mut s1 = beta.subscribe("news").unwrap();
    let mut s2 = beta.subscribe("news").unwrap();
    // A server RPC from the same client is processed after the subscribe.
    let list = topic_list(&beta, "news").await;
    assert_eq!(list, json!({"topic": "news", "subscribers": ["beta"]}));

    alpha.publish("news", json!({"h": 1})).unwrap();
    let (m1, m2) = (s1.next().await.unwrap(), s2.next().await.unwrap());
    assert_eq!(
        (m1.from.as_str(), m1.payload()),
        ("alpha", Some(&json!({"h": 1})))
    );
    // Read straight into a type, from the text as it arrived.
    let typed: std::collections::BTreeMap<String, u32> = m1.payload_as().unwrap();
    assert_eq!(typed.get("h"), Some(&1));
    assert!(m1.payload_as::<Vec<u32>>().is_err());
    assert_eq!(m1, m2);

    drop(s1);
    let list = topic_list(&beta, "news").await;
    assert_eq!(
        list["subscribers"],
        json!(["beta"]),
        "still one subscription left"
    );
    drop(s2);
    let list = topic_list(&beta, "news").await;
    assert_eq!(list["subscribers"], json!([]), "last drop unsubscribes");
}

#[tokio::test]
async fn topic_handlers_run_in_order_share_the_subscription_and_outlive_a_panic() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = ready(hub.client("alpha")).await;
    let beta = ready(hub.client("beta")).await;
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let first = {
        let (tx, client) = (tx.clone(), beta.clone());
        beta.subscribe_with("news", move |m| {
            // A handler may use its client: the link's lock is not held.
            let subscriptions = client.health().subscription_count;
            tx.send(("first", m.from.clone(), m.payload().cloned(), subscriptions))
                .unwrap();
        })
        .unwrap()
    };
    let boom = beta
        .subscribe_with("news", |m| {
            assert!(m.payload() != Some(&json!("boom")), "handler panics");
        })
        .unwrap();
    let second = beta
        .subscribe_with("news", move |m| {
            tx.send(("second", m.topic.clone(), m.payload().cloned(), 0))
                .unwrap();
        })
        .unwrap();
    let mut stream = beta.subscribe("news").unwrap();
    assert_eq!(first.topic(), "news");
    let list = topic_list(&beta, "news").await;
    assert_eq!(list, json!({"topic": "news", "subscribers": ["beta"]}));

    for p in [json!(1), json!("boom"), json!(2)] {
        alpha.publish("news", p).unwrap();
    }
    let mut calls = Vec::new();
    for _ in 0..6 {
        calls.push(
            tokio::time::timeout(WAIT, seen.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let expected = |n: Value| {
        [
            ("first", "alpha".to_owned(), Some(n.clone()), 1),
            ("second", "news".to_owned(), Some(n), 0),
        ]
    };
    let want: Vec<_> = [json!(1), json!("boom"), json!(2)]
        .into_iter()
        .flat_map(expected)
        .collect();
    assert_eq!(
        calls, want,
        "every handler, in registration order, each message in order"
    );
    for n in [json!(1), json!("boom"), json!(2)] {
        let m = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload(), Some(&n), "the stream after the handlers");
    }

    // Handlers and streams leave one by one; the last one unsubscribes.
    drop((boom, second));
    first.unsubscribe();
    let list = topic_list(&beta, "news").await;
    assert_eq!(list["subscribers"], json!(["beta"]), "the stream is left");
    drop(stream);
    let list = topic_list(&beta, "news").await;
    assert_eq!(list["subscribers"], json!([]), "last one out unsubscribes");
    assert!(matches!(
        beta.subscribe_with("bad topic!", |_| {}),
        Err(LinkError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn direct_messages_peers_and_status() {
    let hub = TestHub::shared(SECRET).await;
    let beta = ready(hub.client("beta")).await;
    let mut beta_events = beta.events();
    let mut directs = beta.directs();
    let alpha = ready(
        hub.client("alpha")
            .status(|| json!({"state": "idle", "load": 0.25})),
    )
    .await;

    let ev = tokio::time::timeout(WAIT, async {
        loop {
            let e = beta_events.recv().await.unwrap();
            if matches!(&*e, LinkEvent::PeerStatus { .. }) {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(&*ev, LinkEvent::PeerStatus { from, status, .. } if from == "alpha" && status == &Some(json!({"state":"idle","load":0.25})))
    );
    assert_eq!(
        beta.peer_status("alpha").unwrap().status,
        Some(json!({"state": "idle", "load": 0.25}))
    );
    assert_eq!(
        beta.peers()
            .iter()
            .map(|p| p.kind.as_str())
            .collect::<Vec<_>>(),
        ["beta", "alpha"]
    );

    alpha.send("beta", "ping", Some(json!({"n": 1}))).unwrap();
    let d = tokio::time::timeout(WAIT, directs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.from.as_str(), d.msg_type.as_str(), d.data()),
        ("alpha", "ping", Some(&json!({"n": 1})))
    );
    let typed: std::collections::BTreeMap<String, u32> = d.data_as().unwrap();
    assert_eq!(typed.get("n"), Some(&1));

    alpha.stop().await;
    let ev = tokio::time::timeout(WAIT, async {
        loop {
            let e = beta_events.recv().await.unwrap();
            if matches!(&*e, LinkEvent::PeerDisconnect(_)) {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(&*ev, LinkEvent::PeerDisconnect(p) if p.kind == "alpha"));
    assert!(beta.peer_status("alpha").is_none());
}

#[tokio::test]
async fn reconnect_after_hub_restart_replays_subscriptions_and_queued_publishes() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = ready(hub.client("alpha")).await;
    let beta = ready(hub.client("beta")).await;
    let mut sub = beta.subscribe("news").unwrap();
    beta.rpc("server", "link.topic.list", None).await.unwrap();
    let mut alpha_events = alpha.events();
    let port = hub.kill().await;
    // alpha notices the drop, then queues while reconnecting.
    tokio::time::timeout(WAIT, async {
        loop {
            let e = alpha_events.recv().await.unwrap();
            if matches!(
                &*e,
                LinkEvent::Disconnect {
                    will_reconnect: true,
                    ..
                }
            ) {
                return;
            }
        }
    })
    .await
    .unwrap();
    alpha.publish("news", json!({"queued": true})).unwrap();
    assert!(alpha.health().outbox_size >= 1);

    let (_hub2, mut hub_events) =
        TestHub::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
            .on(port)
            .start_with_events()
            .await;
    // On the new hub: alpha's queued publish is flushed once alpha is ready
    // again, and beta's subscription is replayed on its new ready.
    let (mut published, mut resubscribed) = (false, false);
    while !(published && resubscribed) {
        let e = next_event(&mut hub_events, |e| {
            matches!(
                e,
                HubEvent::TopicPublish { .. } | HubEvent::TopicSubscribe { .. }
            )
        })
        .await;
        match &*e {
            HubEvent::TopicPublish {
                from,
                payload: Some(p),
                ..
            } => {
                published |= from == "alpha" && p == &json!({"queued": true});
            }
            HubEvent::TopicSubscribe { kind, topic } => {
                resubscribed |= kind == "beta" && topic == "news";
            }
            _ => {}
        }
    }
    // Which of the two the hub saw first is a race between the two clients, so
    // delivery to beta is checked with a publish made after both are back.
    alpha.ready(Some(WAIT)).await.unwrap();
    alpha.publish("news", json!({"after": true})).unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&json!({"after": true})) {
        got.push(
            tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .unwrap()
                .payload()
                .cloned()
                .unwrap(),
        );
    }
    assert_eq!(
        alpha.health().outbox_size,
        0,
        "the queued publish was flushed"
    );
}

#[tokio::test]
async fn displacement_stops_the_old_client() {
    let hub = TestHub::shared(SECRET).await;
    let first = ready(hub.client("alpha")).await;
    let mut ev = first.events();
    let _second = ready(hub.client("alpha")).await;
    let e = tokio::time::timeout(WAIT, async {
        loop {
            let e = ev.recv().await.unwrap();
            if matches!(&*e, LinkEvent::Disconnect { .. }) {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(
        &*e,
        LinkEvent::Disconnect {
            code: Some(4000),
            displaced: true,
            will_reconnect: false,
            ..
        }
    ));
    assert!(matches!(
        first.rpc("server", "link.health", None).await,
        Err(LinkError::NotReady { .. })
    ));
    assert!(matches!(
        first.publish("news", json!(1)),
        Err(LinkError::NotReady { .. })
    ));
}

#[tokio::test]
async fn per_peer_keys() {
    let config = HubConfig::builder(Secret::per_kind([
        ("alpha", "key-alpha"),
        ("beta", "key-beta"),
    ]))
    .build()
    .unwrap();
    let hub = TestHub::start(config).await;
    let beta = ready(
        ClientConfig::builder()
            .url(&hub.url)
            .secret("key-beta")
            .kind("beta")
            .handler("who", |c| async move { Ok(json!(c.from)) }),
    )
    .await;
    let alpha = ready(
        ClientConfig::builder()
            .url(&hub.url)
            .secret("key-alpha")
            .kind("alpha"),
    )
    .await;
    assert_eq!(
        alpha.rpc("beta", "who", None).await.unwrap(),
        json!("alpha")
    );
    // A wrong key never becomes ready.
    let bad = LinkClient::new(
        ClientConfig::builder()
            .url(&hub.url)
            .secret("key-alpha")
            .kind("beta")
            .build()
            .unwrap(),
    );
    assert!(matches!(
        bad.ready(Some(Duration::from_millis(300))).await,
        Err(LinkError::ReadyTimeout(_))
    ));
    bad.stop().await;
    drop(beta);
}

#[tokio::test]
async fn outbox_overflow_while_disconnected_is_backpressure() {
    // Nothing listens on this port: the client queues while it retries.
    let port = ClosedPort::new();
    let client = LinkClient::new(
        ClientConfig::builder()
            .url(port.url())
            .secret("s")
            .kind("alpha")
            .max_outbox_bytes(2048)
            .stop_drain(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let mut events = client.events();
    client.start();
    let mut sent = 0;
    let err = loop {
        match client.publish("news", json!({"pad": "x".repeat(200)})) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert!(sent >= 1);
    assert_eq!(err.code(), "BACKPRESSURE");
    let mut saw = (false, false);
    while let Ok(e) = events.try_recv() {
        saw.0 |= matches!(&*e, LinkEvent::Backpressure { .. });
        saw.1 |= matches!(&*e, LinkEvent::OutboxOverflow { .. });
    }
    assert_eq!(saw, (true, true), "edge backpressure then overflow");
    client.stop().await;
}

#[tokio::test]
async fn disabled_mode_fails_every_operation_with_not_ready() {
    let client = LinkClient::new(ClientConfig::builder().kind("alpha").build().unwrap());
    assert!(client.is_disabled());
    client.start();
    assert!(matches!(
        client.ready(None).await,
        Err(LinkError::NotReady { .. })
    ));
    let e = client.rpc("beta", "x", None).await.unwrap_err();
    assert_eq!(e.code(), "LINK_NOT_READY");
    assert!(
        matches!(
            e,
            LinkError::NotReady {
                op: "rpc",
                reason: link_client::NotReadyReason::Disabled
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "link not ready for rpc: disabled");
    assert_eq!(
        client.send("beta", "x", None).unwrap_err().code(),
        "LINK_NOT_READY"
    );
    assert_eq!(
        client.publish("news", json!(1)).unwrap_err().code(),
        "LINK_NOT_READY"
    );
    client.stop().await;
}

#[tokio::test]
async fn graceful_stop_drains_pending_rpcs() {
    let hub = TestHub::shared(SECRET).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let r2 = release.clone();
    let _beta = ready(hub.client("beta").handler("wait", move |_| {
        let r = r2.clone();
        async move {
            r.notified().await;
            Ok(json!("done"))
        }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let mut hub_events = hub.hub.events();
    let a2 = alpha.clone();
    let call = tokio::spawn(async move { a2.rpc("beta", "wait", None).await });
    next_event(&mut hub_events, |e| {
        matches!(e, HubEvent::RpcForwarded { .. })
    })
    .await;
    let stopping = tokio::spawn({
        let a = alpha.clone();
        async move { a.stop().await }
    });
    release.notify_one();
    assert_eq!(
        call.await.unwrap().unwrap(),
        json!("done"),
        "stop waited for the pending RPC"
    );
    stopping.await.unwrap();
    let ev = next_event(&mut hub_events, |e| {
        matches!(e, HubEvent::PeerDisconnect { .. })
    })
    .await;
    assert!(
        matches!(&*ev, HubEvent::PeerDisconnect { kind, code: Some(1005), .. } if kind == "alpha")
    );
}
