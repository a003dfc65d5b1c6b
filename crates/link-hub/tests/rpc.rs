//! protocol §7 (hub-made error replies, exact texts and codes), §8 (server
//! RPCs: built-ins, user handlers and their errors, the concurrency cap)
//! and §9 (cancellation: a queued request removed, or the cancel relayed).
//!
//! The scenarios where the caller's and the callee's hubs matter (hub-made
//! error replies, a full target outbox, a relayed cancel) run twice: on one
//! hub, and with the caller and the callee on two hubs of a cluster over a
//! real nats-server ([`TestBus`]). Across hubs the replies, codes and texts
//! are the same; a hub event is emitted by the hub that handled the frame
//! (the caller's for `rpc.cancelled`, the target's for `outbox-overflow`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use link_hub::{Acl, HandlerError, HubConfig, HubEvent, Secret, Verdict};
use link_test_support::{
    Peer, TestBus, TestHub, WAIT, drain_events, fresh_id, next_event, stall, wall_ms,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const S: &str = "demo-secret";

/// Sends an rpc.request with any `to` value and returns the response.
async fn call(p: &mut Peer, to: Value, data: Value) -> link_protocol::Envelope {
    let id = fresh_id("call");
    let kind = p.kind.clone();
    p.send_body(
        json!({"v": 1, "id": id, "ts": wall_ms(), "type": "rpc.request",
                       "from": kind, "to": to, "data": data}),
    )
    .await;
    loop {
        let r = p.recv("rpc.response").await;
        if r.id() == id {
            return r;
        }
    }
}

fn err(error: &str, code: &str) -> Value {
    json!({"ok": false, "error": error, "code": code})
}

#[tokio::test]
async fn hub_error_replies_have_the_reference_texts_and_codes() {
    hub_error_replies(1).await;
}

#[tokio::test]
async fn hub_error_replies_are_the_same_with_the_target_on_another_hub() {
    hub_error_replies(2).await;
}

/// alpha on hub 0, beta on hub 1 (the same hub when there is one): the
/// errors are made by alpha's hub, before any routing.
async fn hub_error_replies(hubs: usize) {
    let mut bus = TestBus::start(
        hubs,
        |_| {
            HubConfig::builder(Secret::shared(S)).acl(
                Acl::default()
                    .can_rpc(|ctx| async move { Verdict::from(ctx.rpc_type != "forbidden.op") }),
            )
        },
        None,
    )
    .await;
    let mut alpha = bus.peer("alpha", S, 0).await;
    let _beta = bus.peer("beta", S, 1).await;

    let missing_to = err("rpc.request missing \"to\"", "RPC_BAD_REQUEST");
    for to in [Value::Null, json!(""), json!(0), json!(false)] {
        let r = call(&mut alpha, to.clone(), json!({"rpcType": "x"})).await;
        assert_eq!(r.data().unwrap(), &missing_to, "to = {to}");
        assert_eq!(
            (r.from(), r.to().as_deref()),
            (Some("server"), Some("alpha"))
        );
    }
    let r = call(
        &mut alpha,
        json!("ghost"),
        json!({"rpcType": "x", "rpcData": {}}),
    )
    .await;
    assert_eq!(
        r.data().unwrap(),
        &err("Target not connected: ghost", "RPC_NO_TARGET")
    );
    let r = call(&mut alpha, json!(5), json!({"rpcType": "x"})).await;
    assert_eq!(
        r.data().unwrap(),
        &err("Target not connected: 5", "RPC_NO_TARGET")
    );
    let r = call(
        &mut alpha,
        json!("server"),
        json!({"rpcType": "nope", "rpcData": {}}),
    )
    .await;
    assert_eq!(
        r.data().unwrap(),
        &err("Unknown server rpcType: nope", "RPC_UNKNOWN_TYPE")
    );
    let r = call(
        &mut alpha,
        json!("beta"),
        json!({"rpcType": "forbidden.op", "rpcData": {}}),
    )
    .await;
    assert_eq!(r.data().unwrap(), &err("Forbidden", "RPC_FORBIDDEN"));
    assert_eq!(r.from(), Some("server"));
}

#[tokio::test]
async fn overloaded_when_max_concurrent_server_rpcs_are_running() {
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let r = release.clone();
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_concurrent_rpc(1)
            .handler("slow", move |req| {
                let (r, s) = (r.clone(), started_tx.clone());
                async move {
                    s.send(()).unwrap();
                    r.notified().await;
                    Ok(json!({"done": req.rpc_data}))
                }
            })
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let held = alpha
        .send(
            "rpc.request",
            Some("server"),
            Some(json!({"rpcType": "slow", "rpcData": 1})),
        )
        .await;
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    assert_eq!(hub.hub.health().await.server_rpc_in_flight, 1);

    let overloaded = err(
        "Server overloaded - too many concurrent RPCs",
        "RPC_OVERLOADED",
    );
    let r = alpha.rpc("server", "slow", None).await;
    assert_eq!(r.data().unwrap(), &overloaded);
    // Built-ins count against the cap too; the handler lookup comes first,
    // so an unknown type is still RPC_UNKNOWN_TYPE (protocol §8).
    let r = alpha.rpc("server", "link.health", None).await;
    assert_eq!(r.data().unwrap(), &overloaded);
    let r = alpha.rpc("server", "nope", None).await;
    assert_eq!(
        r.data().unwrap(),
        &err("Unknown server rpcType: nope", "RPC_UNKNOWN_TYPE")
    );

    release.notify_one();
    let r = alpha.recv("rpc.response").await;
    assert_eq!(
        (r.id(), r.data().unwrap()),
        (held.as_str(), &json!({"ok": true, "result": {"done": 1}}))
    );
    let e = next_event(
        &mut rx,
        |e| matches!(e, HubEvent::RpcServer { rpc_type, .. } if rpc_type == "slow"),
    )
    .await;
    assert!(
        matches!(&*e, HubEvent::RpcServer { id, ok: true, error: None, from, .. } if *id == held && from == "alpha")
    );
    // The slot is free again.
    release.notify_one();
    let r = alpha.rpc("server", "slow", Some(json!(2))).await;
    assert_eq!(r.data().unwrap()["result"], json!({"done": 2}));
}

fn error_handlers(b: link_hub::HubConfigBuilder) -> link_hub::HubConfigBuilder {
    b.handler("internal", |_| async {
        Err(HandlerError::internal("db password is hunter2"))
    })
    .handler("exposed", |_| async {
        Err(HandlerError::new("ORDER_NOT_FOUND", "Order not found")
            .with_data(json!({"orderId": 42})))
    })
    .handler("message", |_| async {
        Err(HandlerError::message("bad input"))
    })
    .handler("io", |_| async {
        Err(std::io::Error::other("disk on fire").into())
    })
    .handler("panics", |_| async {
        if std::hint::black_box(true) {
            panic!("handler bug (expected in this test)");
        }
        Ok(Value::Null)
    })
    .handler("null", |_| async { Ok(Value::Null) })
}

#[tokio::test]
async fn handler_errors_are_sanitised_unless_exposed() {
    let hub = TestHub::start(
        error_handlers(HubConfig::builder(Secret::shared(S)))
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let internal = err("Internal handler error", "RPC_HANDLER_ERROR");
    let cases = [
        ("internal", internal.clone()),
        ("io", internal.clone()),
        ("panics", internal.clone()),
        (
            "exposed",
            json!({"ok": false, "error": "Order not found", "code": "ORDER_NOT_FOUND", "data": {"orderId": 42}}),
        ),
        ("message", err("bad input", "RPC_HANDLER_ERROR")),
        ("null", json!({"ok": true, "result": null})),
    ];
    for (t, expected) in cases {
        let r = alpha.rpc("server", t, None).await;
        assert_eq!(r.data().unwrap(), &expected, "{t}");
        assert_eq!(r.from(), Some("server"));
    }
    // The real error stays local, on the rpc.server event.
    let e = next_event(
        &mut rx,
        |e| matches!(e, HubEvent::RpcServer { rpc_type, .. } if rpc_type == "internal"),
    )
    .await;
    assert!(
        matches!(&*e, HubEvent::RpcServer { ok: false, error: Some(text), .. } if text == "db password is hunter2")
    );
}

#[tokio::test]
async fn expose_rpc_errors_sends_every_error_as_is() {
    let hub = TestHub::start(
        error_handlers(HubConfig::builder(Secret::shared(S)))
            .expose_rpc_errors(true)
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let r = alpha.rpc("server", "internal", None).await;
    assert_eq!(
        r.data().unwrap(),
        &err("db password is hunter2", "RPC_HANDLER_ERROR")
    );
    let r = alpha.rpc("server", "io", None).await;
    assert_eq!(r.data().unwrap(), &err("disk on fire", "RPC_HANDLER_ERROR"));
    let r = alpha.rpc("server", "exposed", None).await;
    assert_eq!(r.data().unwrap()["code"], "ORDER_NOT_FOUND");
}

#[tokio::test]
async fn target_unavailable_when_the_targets_outbox_overflows() {
    target_unavailable(1).await;
}

#[tokio::test]
async fn target_unavailable_from_the_targets_hub_when_its_outbox_overflows() {
    target_unavailable(2).await;
}

/// beta (on hub 1, or the one hub) stops reading; its outbox is filled by
/// a peer of its own hub (alpha on one hub, gamma in a cluster: fillers
/// sent across hubs would not be ordered against beta's hub's counters);
/// then alpha's request is refused, by beta's hub.
async fn target_unavailable(hubs: usize) {
    let max = 256 * 1024;
    let mut bus = TestBus::start(
        hubs,
        |_| HubConfig::builder(Secret::shared(S)).max_outbox_bytes(max),
        None,
    )
    .await;
    let mut rx = bus.hub(1).hub.events();
    let mut alpha = bus.peer("alpha", S, 0).await;
    let _beta = Peer::connect_stalling(&bus.hub(1).url, "beta", S).await;
    bus.reachable("beta", 1).await;
    let mut gamma = if hubs > 1 {
        Some(bus.peer("gamma", S, 1).await)
    } else {
        None
    };
    let filling = gamma.as_mut().unwrap_or(&mut alpha);
    let chunk = 64 * 1024;
    stall(&bus.hub(1).hub, filling, "beta", chunk).await;
    // Fill beta's outbox until a filler is refused.
    let filler = "f".repeat(chunk);
    'fill: for _ in 0..16 {
        filling
            .send(
                "direct",
                Some("beta"),
                Some(json!({"directType": "filler", "directData": filler})),
            )
            .await;
        filling.barrier().await;
        for e in drain_events(&mut rx) {
            if let HubEvent::OutboxOverflow {
                kind,
                msg_type,
                to,
                outbox_bytes,
                max_outbox_bytes,
            } = &*e
            {
                assert_eq!(
                    (kind.as_str(), msg_type.as_str(), to.as_str()),
                    ("beta", "direct", "beta")
                );
                assert_eq!(*max_outbox_bytes, max);
                assert!(*outbox_bytes <= max);
                break 'fill;
            }
        }
    }
    // A request bigger than a refused filler cannot fit either.
    let r = alpha
        .rpc("beta", "echo", Some(json!("r".repeat(chunk + 1024))))
        .await;
    assert_eq!(
        r.data().unwrap(),
        &err(
            "Target backpressured or send failed: beta",
            "RPC_TARGET_UNAVAILABLE"
        )
    );
    assert_eq!(
        (r.from(), r.to().as_deref()),
        (Some("server"), Some("alpha"))
    );
    let id = r.id().to_owned();
    assert!(
        !drain_events(&mut rx)
            .iter()
            .any(|e| matches!(&**e, HubEvent::RpcForwarded { id: i, .. } if *i == id))
    );
}

#[tokio::test]
async fn builtin_topic_list_and_health() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    let mut gamma = hub.peer("gamma", S).await;
    beta.subscribe("news").await;
    gamma.subscribe("news").await;
    gamma.subscribe("sports").await;
    alpha
        .send("status.update", None, Some(json!({"up": true})))
        .await;
    beta.recv("status.update").await;
    let _pending = hub.pending("probe").await;

    let all = json!({"topics": [
        {"topic": "news", "subscribers": ["beta", "gamma"]},
        {"topic": "sports", "subscribers": ["gamma"]},
    ]});
    let cases: [(Option<Value>, Value); 7] = [
        (
            Some(json!({"topic": "news"})),
            json!({"topic": "news", "subscribers": ["beta", "gamma"]}),
        ),
        (
            Some(json!({"topic": "nobody"})),
            json!({"topic": "nobody", "subscribers": []}),
        ),
        (None, all.clone()),
        // protocol §0.4: null lists everything (the reference fails here).
        (Some(Value::Null), all.clone()),
        (Some(json!({})), all.clone()),
        (Some(json!({"topic": ""})), all.clone()),
        (Some(json!({"topic": 5})), all.clone()),
    ];
    for (data, expected) in cases {
        let r = alpha.rpc("server", "link.topic.list", data.clone()).await;
        assert_eq!(
            r.data().unwrap(),
            &json!({"ok": true, "result": expected}),
            "{data:?}"
        );
    }

    let r = alpha.rpc("server", "link.health", Some(json!({}))).await;
    let h = &r.data().unwrap()["result"];
    let mut keys: Vec<_> = h.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "outboxBytes",
            "peerCount",
            "pendingSocketCount",
            "queuedSockets",
            "recentIdsSize",
            "serverRpcInFlight",
            "statusCount",
            "topicCount",
            "totalSubscribers"
        ]
    );
    let fixed = json!({"outboxBytes": 0, "queuedSockets": 0, "totalSubscribers": 3,
        "serverRpcInFlight": 1, "peerCount": 3, "statusCount": 1, "topicCount": 2,
        "pendingSocketCount": 1});
    for (k, v) in fixed.as_object().unwrap() {
        assert_eq!(&h[k], v, "{k}");
    }
    assert!(h["recentIdsSize"].as_u64().unwrap() > 0);
    let e = next_event(
        &mut rx,
        |e| matches!(e, HubEvent::RpcServer { rpc_type, .. } if rpc_type == "link.health"),
    )
    .await;
    assert!(
        matches!(&*e, HubEvent::RpcServer { id, from, ok: true, error: None, .. } if id == r.id() && from == "alpha")
    );
}

#[tokio::test]
async fn user_handlers_override_builtins() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .handler("link.health", |_| async { Ok(json!({"custom": true})) })
            .handler("link.topic.list", |req| async move {
                Ok(json!({"mine": req.rpc_data}))
            })
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let r = alpha.rpc("server", "link.health", None).await;
    assert_eq!(
        r.data().unwrap(),
        &json!({"ok": true, "result": {"custom": true}})
    );
    let r = alpha
        .rpc("server", "link.topic.list", Some(json!({"topic": "t"})))
        .await;
    assert_eq!(r.data().unwrap()["result"], json!({"mine": {"topic": "t"}}));
}

#[tokio::test]
async fn cancel_of_a_request_still_queued_removes_it() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut gamma = hub.peer("gamma", S).await;
    let mut beta = Peer::connect_stalling(&hub.url, "beta", S).await;
    stall(&hub.hub, &mut alpha, "beta", 64 * 1024).await;

    let rid = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "slow", "rpcData": {"job": 7}})),
        )
        .await;
    alpha.barrier().await;
    // Only the caller's own request is removed: gamma's cancel is relayed.
    gamma
        .send("rpc.cancel", Some("beta"), Some(json!({"id": rid})))
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::RpcCancelled { .. })).await;
    assert_eq!(
        *e,
        HubEvent::RpcCancelled {
            id: rid.clone(),
            from: "gamma".into(),
            to: "beta".into(),
            found: false,
            forwarded: true
        }
    );
    alpha
        .send("rpc.cancel", Some("beta"), Some(json!({"id": rid})))
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::RpcCancelled { .. })).await;
    assert_eq!(
        *e,
        HubEvent::RpcCancelled {
            id: rid.clone(),
            from: "alpha".into(),
            to: "beta".into(),
            found: true,
            forwarded: false
        }
    );
    alpha
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "marker"})),
        )
        .await;
    alpha.assert_quiet().await; // no wire reply to the canceller

    // beta resumes: everything arrives except the cancelled request.
    loop {
        let d = beta.recv("direct").await;
        if d.data().unwrap()["directType"] == "marker" {
            break;
        }
    }
    assert!(
        !beta
            .inbox
            .iter()
            .any(|e| e.msg_type() == Some("rpc.request")),
        "the cancelled request was delivered"
    );
    let c = beta.recv("rpc.cancel").await;
    assert_eq!(
        (c.from(), c.data().unwrap()),
        (Some("gamma"), &json!({"id": rid}))
    );
}

#[tokio::test]
async fn cancel_of_a_delivered_request_is_relayed_with_a_new_id() {
    cancel_of_a_delivered_request(1).await;
}

#[tokio::test]
async fn cancel_of_a_request_delivered_on_another_hub_is_relayed_with_a_new_id() {
    cancel_of_a_delivered_request(2).await;
}

/// alpha on hub 0, beta on hub 1; the `rpc.cancelled` event is the
/// canceller's hub's.
async fn cancel_of_a_delivered_request(hubs: usize) {
    let mut bus = TestBus::start(hubs, |_| HubConfig::builder(Secret::shared(S)), None).await;
    let mut rx = bus.hub(0).hub.events();
    let mut alpha = bus.peer("alpha", S, 0).await;
    let mut beta = bus.peer("beta", S, 1).await;
    let rid = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "slow", "rpcData": {"job": 7}})),
        )
        .await;
    assert_eq!(beta.recv("rpc.request").await.id(), rid);
    let cid = alpha
        .send("rpc.cancel", Some("beta"), Some(json!({"id": rid})))
        .await;
    let c = beta.recv("rpc.cancel").await;
    assert_ne!(c.id(), cid);
    assert_ne!(c.id(), rid);
    assert_eq!((c.from(), c.to().as_deref()), (Some("alpha"), Some("beta")));
    assert_eq!(c.data().unwrap(), &json!({"id": rid}));
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::RpcCancelled { .. })).await;
    assert_eq!(
        *e,
        HubEvent::RpcCancelled {
            id: rid,
            from: "alpha".into(),
            to: "beta".into(),
            found: false,
            forwarded: true
        }
    );
}

#[tokio::test]
async fn cancel_edge_cases() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    // Dropped silently: no `to`, no usable id.
    alpha
        .send("rpc.cancel", None, Some(json!({"id": "x"})))
        .await;
    alpha
        .send("rpc.cancel", Some("beta"), Some(json!({})))
        .await;
    alpha
        .send("rpc.cancel", Some("beta"), Some(json!({"id": ""})))
        .await;
    alpha
        .send("rpc.cancel", Some("beta"), Some(json!({"id": 5})))
        .await;
    alpha.send("rpc.cancel", Some("beta"), None).await;
    // Server RPCs are not cancellable; offline targets get nothing.
    alpha
        .send("rpc.cancel", Some("server"), Some(json!({"id": "s1"})))
        .await;
    alpha
        .send("rpc.cancel", Some("ghost"), Some(json!({"id": "g1"})))
        .await;
    for (id, to) in [("s1", "server"), ("g1", "ghost")] {
        let e = next_event(&mut rx, |e| matches!(e, HubEvent::RpcCancelled { .. })).await;
        assert_eq!(
            *e,
            HubEvent::RpcCancelled {
                id: id.into(),
                from: "alpha".into(),
                to: to.into(),
                found: false,
                forwarded: false
            }
        );
    }
    alpha.assert_quiet().await;
    beta.assert_quiet().await;
}
