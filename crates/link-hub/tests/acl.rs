//! protocol §10: the ACL hooks. Verdict shapes (allow, default denial, custom
//! code/error, a panicking hook failing closed), the `acl-denied` event,
//! RPC denials answered on the wire while publish/subscribe/send denials
//! are silent, the per-socket FIFO lane for publish/subscribe/send (a slow
//! verdict cannot be overtaken), concurrent RPC verdicts, and the types
//! that are never gated.
//!
//! With laned hooks a `link.topic.list` round trip is not a barrier for
//! laned frames (RPCs are not laned), so these tests wait on hub events or
//! on a later laned marker instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use link_hub::acl::{AclOp, RpcContext};
use link_hub::{Acl, HubConfig, HubEvent, Secret, Verdict};
use link_protocol::conn::ClientEvent;
use link_test_support::{TestHub, drain_events, next_event};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const S: &str = "demo-secret";

type Gate = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

fn gate() -> (oneshot::Sender<()>, Gate) {
    let (tx, rx) = oneshot::channel();
    (tx, Arc::new(Mutex::new(Some(rx))))
}

fn denied(e: &HubEvent) -> (AclOp, &str, &str, &str) {
    match e {
        HubEvent::AclDenied {
            op,
            from,
            code,
            error,
            ..
        } => (*op, from.as_str(), code.as_str(), error.as_str()),
        _ => panic!("not acl-denied: {e:?}"),
    }
}

#[tokio::test]
async fn rpc_verdict_shapes_and_denials_answered_on_the_wire() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .handler("allow", |_| async { Ok(json!({"ran": true})) })
            .acl(Acl::default().can_rpc(|ctx| async move {
                match ctx.rpc_type.as_str() {
                    "allow" => Verdict::Allow,
                    "true" => Verdict::from(true),
                    "false" => Verdict::from(false),
                    "deny" => Verdict::deny(),
                    "custom" => Verdict::deny_with("NOPE", "not today"),
                    "code-only" => Verdict::deny_with("ONLY_CODE", ""),
                    "empty" => Verdict::deny_with("", ""),
                    _ => panic!("hook bug (expected in this test)"),
                }
            }))
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.firehose();
    let mut alpha = hub.peer("alpha", S).await;

    let r = alpha.rpc("server", "allow", None).await;
    assert_eq!(
        r.data().unwrap(),
        &json!({"ok": true, "result": {"ran": true}})
    );
    let r = alpha.rpc("server", "true", None).await;
    // Allowed, then routed: no such server handler.
    assert_eq!(r.data().unwrap()["code"], "RPC_UNKNOWN_TYPE");
    let cases = [
        ("false", "RPC_FORBIDDEN", "Forbidden"),
        ("deny", "RPC_FORBIDDEN", "Forbidden"),
        ("custom", "NOPE", "not today"),
        ("code-only", "ONLY_CODE", "Forbidden"),
        ("empty", "RPC_FORBIDDEN", "Forbidden"),
        ("panics", "RPC_FORBIDDEN", "Forbidden"), // fail closed
    ];
    for (t, code, error) in cases {
        drain_events(&mut rx);
        let r = alpha.rpc("server", t, Some(json!({"arg": t}))).await;
        assert_eq!(
            r.data().unwrap(),
            &json!({"ok": false, "error": error, "code": code}),
            "{t}"
        );
        assert_eq!(
            (r.from(), r.to().as_deref()),
            (Some("server"), Some("alpha"))
        );
        let e = next_event(&mut rx, |e| matches!(e, HubEvent::AclDenied { .. })).await;
        assert_eq!(
            *e,
            HubEvent::AclDenied {
                op: AclOp::Rpc,
                from: "alpha".into(),
                code: code.into(),
                error: error.into(),
                to: Some("server".into()),
                rpc_type: Some(t.into()),
                topic: None,
                msg_type: None,
            }
        );
    }
}

#[tokio::test]
async fn can_rpc_runs_before_routing_with_the_trusted_context() {
    let seen: Arc<Mutex<Vec<RpcContext>>> = Arc::default();
    let s = seen.clone();
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .acl(Acl::default().can_rpc(move |ctx| {
                s.lock().unwrap().push(ctx.clone());
                async move { Verdict::from(ctx.rpc_type != "x") }
            }))
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;

    // No `to`: the hook still runs, so a denial wins over RPC_BAD_REQUEST...
    let id = alpha
        .send_as(
            "mallory",
            "rpc.request",
            None,
            Some(json!({"rpcType": "x", "rpcData": [1]})),
        )
        .await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!(
        (r.id(), &r.data().unwrap()["code"]),
        (id.as_str(), &json!("RPC_FORBIDDEN"))
    );
    // ...and an allowed one then gets RPC_BAD_REQUEST.
    let id = alpha
        .send("rpc.request", None, Some(json!({"rpcType": "y"})))
        .await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!(
        (r.id(), &r.data().unwrap()["code"]),
        (id.as_str(), &json!("RPC_BAD_REQUEST"))
    );
    // Peer RPCs are gated too.
    let id = alpha
        .send("rpc.request", Some("beta"), Some(json!({"rpcType": "x"})))
        .await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!((r.id(), r.from()), (id.as_str(), Some("server")));
    // An allowed one is relayed: the first request beta sees is this one.
    let ok_id = alpha
        .send("rpc.request", Some("beta"), Some(json!({"rpcType": "ok"})))
        .await;
    assert_eq!(beta.recv("rpc.request").await.id(), ok_id);
    beta.assert_quiet().await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        RpcContext {
            from: "alpha".into(),
            to: None,
            rpc_type: "x".into(),
            rpc_data: Some(json!([1]))
        }
    );
    assert_eq!(
        (seen[1].to.as_deref(), seen[1].rpc_data.as_ref()),
        (None, None)
    );
    assert_eq!(seen[2].to.as_deref(), Some("beta"));
}

#[tokio::test]
async fn publish_subscribe_and_send_denials_are_silent() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .acl(
                Acl::default()
                    .can_subscribe(|ctx| async move { Verdict::from(ctx.topic != "secret") })
                    .can_publish(|ctx| async move {
                        match ctx.topic.as_str() {
                            "secret" => Verdict::deny_with("NO_PUB", "nope"),
                            "boom" => panic!("hook bug (expected in this test)"),
                            _ => Verdict::Allow,
                        }
                    })
                    .can_send(|ctx| async move { Verdict::from(ctx.msg_type != "forbidden") }),
            )
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.firehose();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;

    beta.send("topic.subscribe", None, Some(json!({"topic": "secret"})))
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::AclDenied { .. })).await;
    assert_eq!(
        *e,
        HubEvent::AclDenied {
            op: AclOp::Subscribe,
            from: "beta".into(),
            code: "SUBSCRIBE_FORBIDDEN".into(),
            error: "Forbidden".into(),
            to: None,
            rpc_type: None,
            topic: Some("secret".into()),
            msg_type: None,
        }
    );
    for t in ["open", "boom"] {
        beta.send("topic.subscribe", None, Some(json!({"topic": t})))
            .await;
        next_event(
            &mut rx,
            |e| matches!(e, HubEvent::TopicSubscribe { topic, .. } if topic == t),
        )
        .await;
    }
    assert_eq!(hub.hub.health().await.topic_count, 2);

    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "secret", "payload": 1})),
        )
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::AclDenied { .. })).await;
    assert_eq!(denied(&e), (AclOp::Publish, "alpha", "NO_PUB", "nope"));
    assert!(
        matches!(&*e, HubEvent::AclDenied { topic: Some(t), to: None, msg_type: None, .. } if t == "secret")
    );
    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "boom", "payload": 1})),
        )
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::AclDenied { .. })).await;
    assert_eq!(
        denied(&e),
        (AclOp::Publish, "alpha", "PUBLISH_FORBIDDEN", "Forbidden")
    );
    alpha
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "forbidden", "directData": 1})),
        )
        .await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::AclDenied { .. })).await;
    assert_eq!(
        *e,
        HubEvent::AclDenied {
            op: AclOp::Send,
            from: "alpha".into(),
            code: "SEND_FORBIDDEN".into(),
            error: "Forbidden".into(),
            to: Some("beta".into()),
            rpc_type: None,
            topic: None,
            msg_type: Some("forbidden".into()),
        }
    );
    // Allowed traffic behind the denials gets through, in order: beta's
    // first topic message and first direct are these.
    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "open", "payload": 2})),
        )
        .await;
    alpha
        .send("direct", Some("beta"), Some(json!({"directType": "fine"})))
        .await;
    assert_eq!(
        beta.recv("topic.message").await.data().unwrap()["payload"],
        2
    );
    assert_eq!(
        beta.recv("direct").await.data().unwrap()["directType"],
        "fine"
    );
    // Nobody was told anything on the wire.
    alpha.assert_quiet().await;
    beta.assert_quiet().await;
}

#[tokio::test]
async fn laned_verdicts_keep_each_sockets_order() {
    let (release, held) = gate();
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .acl(
                Acl::default()
                    .can_publish(move |ctx| {
                        let wait = (ctx.payload == Some(json!(0)))
                            .then(|| held.lock().unwrap().take())
                            .flatten();
                        async move {
                            if let Some(w) = wait {
                                let _ = w.await;
                            }
                            Verdict::Allow
                        }
                    })
                    .can_send(|_| async { Verdict::Allow }),
            )
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.firehose();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.send("topic.subscribe", None, Some(json!({"topic": "news"})))
        .await;
    next_event(&mut rx, |e| matches!(e, HubEvent::TopicSubscribe { .. })).await;

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            alpha
                .send(
                    "topic.message",
                    None,
                    Some(json!({"topic": "news", "payload": n})),
                )
                .await,
        );
    }
    ids.push(
        alpha
            .send("direct", Some("beta"), Some(json!({"directType": "after"})))
            .await,
    );
    // Every frame has passed verification (the firehose fires before the
    // lane) while the first verdict is still pending.
    for id in &ids {
        next_event(
            &mut rx,
            |e| matches!(e, HubEvent::Message { envelope, .. } if envelope.id() == id),
        )
        .await;
    }
    release.send(()).unwrap();

    let mut order: Vec<Value> = Vec::new();
    beta.until(|e| match e {
        ClientEvent::Message { envelope, .. } => match envelope.msg_type() {
            Some("topic.message") => {
                order.push(envelope.data().unwrap()["payload"].clone());
                false
            }
            Some("direct") => {
                order.push(json!("direct"));
                true
            }
            _ => false,
        },
        _ => false,
    })
    .await;
    assert_eq!(
        order,
        [
            json!(0),
            json!(1),
            json!(2),
            json!(3),
            json!(4),
            json!("direct")
        ]
    );
}

#[tokio::test]
async fn rpc_verdicts_are_not_laned() {
    let (release, held) = gate();
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .handler("held", |_| async { Ok(json!("held")) })
            .handler("quick", |_| async { Ok(json!("quick")) })
            .acl(Acl::default().can_rpc(move |ctx| {
                let wait = (ctx.rpc_type == "held")
                    .then(|| held.lock().unwrap().take())
                    .flatten();
                async move {
                    if let Some(w) = wait {
                        let _ = w.await;
                    }
                    Verdict::Allow
                }
            }))
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let held_id = alpha
        .send(
            "rpc.request",
            Some("server"),
            Some(json!({"rpcType": "held"})),
        )
        .await;
    // Answered while the first verdict is still pending.
    let r = alpha.rpc("server", "quick", None).await;
    assert_eq!(r.data().unwrap()["result"], "quick");
    release.send(()).unwrap();
    let r = alpha.recv("rpc.response").await;
    assert_eq!(
        (r.id(), &r.data().unwrap()["result"]),
        (held_id.as_str(), &json!("held"))
    );
}

#[tokio::test]
async fn a_laned_message_of_a_replaced_socket_is_dropped() {
    let (release, held) = gate();
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .acl(Acl::default().can_publish(move |ctx| {
                let wait = (ctx.payload == Some(json!("held")))
                    .then(|| held.lock().unwrap().take())
                    .flatten();
                async move {
                    if let Some(w) = wait {
                        let _ = w.await;
                    }
                    Verdict::Allow
                }
            }))
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.firehose();
    let mut alpha1 = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.subscribe("news").await;
    let id = alpha1
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "news", "payload": "held"})),
        )
        .await;
    next_event(
        &mut rx,
        |e| matches!(e, HubEvent::Message { envelope, .. } if envelope.id() == id),
    )
    .await;
    let mut alpha2 = hub.peer("alpha", S).await;
    assert_eq!(alpha1.closed().await.0, 4000);
    release.send(()).unwrap();
    alpha2
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "news", "payload": "fresh"})),
        )
        .await;
    assert_eq!(
        beta.recv("topic.message").await.data().unwrap()["payload"],
        "fresh"
    );
}

#[tokio::test]
async fn unsubscribe_cancel_response_and_status_are_never_gated() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .acl(
                Acl::default()
                    .can_rpc(|_| async { Verdict::deny() })
                    .can_publish(|_| async { Verdict::deny() })
                    .can_send(|_| async { Verdict::deny() })
                    .can_subscribe(|_| async { Verdict::Allow }),
            )
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.firehose();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    alpha.peers_update_with("beta").await;

    beta.send("status.update", None, Some(json!({"s": 1})))
        .await;
    assert_eq!(
        alpha.recv("status.update").await.data().unwrap()["status"],
        json!({"s": 1})
    );
    beta.send("rpc.response", Some("alpha"), Some(json!({"ok": true})))
        .await;
    assert_eq!(alpha.recv("rpc.response").await.from(), Some("beta"));
    alpha
        .send("rpc.cancel", Some("beta"), Some(json!({"id": "r1"})))
        .await;
    assert_eq!(
        beta.recv("rpc.cancel").await.data().unwrap(),
        &json!({"id": "r1"})
    );
    beta.send("topic.subscribe", None, Some(json!({"topic": "news"})))
        .await;
    next_event(&mut rx, |e| matches!(e, HubEvent::TopicSubscribe { .. })).await;
    beta.send("topic.unsubscribe", None, Some(json!({"topic": "news"})))
        .await;
    next_event(&mut rx, |e| matches!(e, HubEvent::TopicUnsubscribe { .. })).await;
    assert!(
        !drain_events(&mut rx)
            .iter()
            .any(|e| matches!(&**e, HubEvent::AclDenied { .. }))
    );
}
