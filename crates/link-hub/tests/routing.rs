//! protocol §6.1 (hub handling of each inbound type) and §7 (rewriting,
//! re-signing, trusted `from`, fresh vs preserved ids): status fan-out and
//! snapshots, peers.update, RPC request/response relay, topics, direct,
//! disconnect bookkeeping, per-recipient keys.
//!
//! The RPC relay, topic and direct scenarios run twice: on one hub, and
//! with their peers on different hubs of a cluster over a real
//! nats-server ([`TestBus`]; alpha, beta, gamma on hubs 0, 1, 2). The
//! frames peers get are the same; what differs is said where it is
//! asserted: a hub's events are about its own peers' frames (a
//! `topic.publish` event counts the publisher's hub's subscribers), and
//! `link.topic.list` lists the answering hub's subscribers first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures_util::SinkExt;
use link_hub::{HubConfig, HubEvent, Secret};
use link_protocol::DropReason;
use link_test_support::{
    Peer, TestBus, TestHub, assert_nothing_from, drain_events, key, next_event, parse, peer_kinds,
    protocol_error, topic_reaches, wall_ms,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const S: &str = "demo-secret";

/// A bus of `hubs` hubs with the shared secret.
async fn bus(hubs: usize) -> TestBus {
    TestBus::start(hubs, |_| HubConfig::builder(Secret::shared(S)), None).await
}

/// alpha, beta, gamma on hubs 0, 1, 2 (of the bus: on one hub, all on
/// it), each having seen the others join.
async fn three_on(bus: &mut TestBus) -> (Peer, Peer, Peer) {
    let mut a = bus.peer("alpha", S, 0).await;
    let mut b = bus.peer("beta", S, 1).await;
    let c = bus.peer("gamma", S, 2).await;
    a.peers_update_with("gamma").await;
    b.peers_update_with("gamma").await;
    (a, b, c)
}

/// alpha, beta, gamma, each having seen the others join.
async fn three(hub: &TestHub) -> (Peer, Peer, Peer) {
    let mut a = hub.peer("alpha", S).await;
    let mut b = hub.peer("beta", S).await;
    let c = hub.peer("gamma", S).await;
    a.peers_update_with("gamma").await;
    b.peers_update_with("gamma").await;
    (a, b, c)
}

fn events_named(events: &[std::sync::Arc<HubEvent>], name: &str) -> usize {
    events.iter().filter(|e| e.name() == name).count()
}

#[tokio::test]
async fn status_update_fans_out_to_every_other_peer_and_feeds_snapshots() {
    let hub = TestHub::shared(S).await;
    let (mut alpha, mut beta, mut gamma) = three(&hub).await;
    let status = json!({"state": "busy", "load": 0.9});
    let before = wall_ms();
    alpha
        .send("status.update", None, Some(status.clone()))
        .await;
    for p in [&mut beta, &mut gamma] {
        let e = p.recv("status.update").await;
        assert_eq!(e.from(), Some("server"));
        assert_eq!(e.to().as_deref(), Some(p.kind.as_str()));
        let d = e.data().unwrap();
        assert_eq!((&d["from"], &d["status"]), (&json!("alpha"), &status));
        assert!(d["at"].as_u64().unwrap() >= before);
    }
    alpha.assert_quiet().await; // never echoed to the sender

    // Stored verbatim, whatever it is; a newcomer gets every stored status.
    gamma
        .send("status.update", None, Some(json!([1, "two"])))
        .await;
    beta.recv("status.update").await;
    let delta = hub.peer("delta", S).await;
    let mut delta = delta;
    let snap = delta.recv("status.snapshot").await;
    let d = snap.data().unwrap().as_object().unwrap();
    let mut kinds: Vec<_> = d.keys().cloned().collect();
    kinds.sort();
    assert_eq!(kinds, ["alpha", "gamma"]);
    assert_eq!(d["alpha"]["status"], status);
    assert_eq!(d["gamma"]["status"], json!([1, "two"]));
    assert!(d["alpha"]["at"].as_u64().unwrap() >= before);
    let state = hub.hub.state().await;
    assert_eq!(state.last_status.len(), 2);
}

#[tokio::test]
async fn status_update_without_data_has_no_status_field() {
    // protocol §6.1 stores `{status: data, at}` and fans out `{from, status, at}`;
    // with no `data` the reference's status is `undefined`, which its
    // JSON.stringify omits (protocol §2, §3.2).
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    alpha.peers_update_with("beta").await;
    alpha.send("status.update", None, None).await;
    let e = beta.recv("status.update").await;
    let d = e.data().unwrap().as_object().unwrap();
    let mut keys: Vec<_> = d.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["at", "from"]);
    let mut gamma = hub.peer("gamma", S).await;
    let snap = gamma.recv("status.snapshot").await;
    assert!(snap.data().unwrap()["alpha"].get("status").is_none());
}

#[tokio::test]
async fn peers_update_reaches_every_peer_including_the_newcomer() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    alpha.peers_update_with("beta").await;
    beta.peers_update_with("beta").await;
    let mut gamma = hub.peer("gamma", S).await;
    for p in [&mut alpha, &mut beta, &mut gamma] {
        let e = p.peers_update_with("gamma").await;
        assert_eq!(
            (e.from(), e.to().as_deref()),
            (Some("server"), Some(p.kind.as_str()))
        );
        assert_eq!(peer_kinds(&e), ["alpha", "beta", "gamma"]);
        for entry in e.data().unwrap()["peers"].as_array().unwrap() {
            assert_eq!(entry["connected"], true);
            assert_eq!(entry["hello"]["kind"], entry["kind"]);
            assert!(entry["connectedAt"].is_number());
        }
    }
}

#[tokio::test]
async fn rpc_relay_keeps_the_id_rebuilds_the_data_and_relays_responses_verbatim() {
    rpc_relay(1).await;
}

#[tokio::test]
async fn rpc_relay_across_hubs_keeps_the_id_rebuilds_the_data_and_relays_responses_verbatim() {
    rpc_relay(2).await;
}

/// alpha on hub 0, beta on hub 1: `rpc.forwarded` is alpha's hub's event,
/// `rpc.response.forwarded` beta's.
async fn rpc_relay(hubs: usize) {
    let mut bus = bus(hubs).await;
    let mut rx = bus.hub(0).hub.events();
    let mut beta_rx = bus.hub(1).hub.events();
    let mut alpha = bus.peer("alpha", S, 0).await;
    let mut beta = bus.peer("beta", S, 1).await;

    let id = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "echo", "rpcData": {"x": [1, null]}, "extra": "dropped"})),
        )
        .await;
    let req = beta.recv("rpc.request").await;
    assert_eq!(req.id(), id);
    assert_eq!(
        (req.from(), req.to().as_deref()),
        (Some("alpha"), Some("beta"))
    );
    assert_eq!(
        req.data().unwrap(),
        &json!({"rpcType": "echo", "rpcData": {"x": [1, null]}})
    );
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::RpcForwarded { .. })).await;
    assert_eq!(
        *e,
        HubEvent::RpcForwarded {
            id: id.clone(),
            from: "alpha".into(),
            to: "beta".into(),
            rpc_type: "echo".into()
        }
    );
    // Without rpcData, none is invented.
    let id2 = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "bare"})),
        )
        .await;
    let req = beta.recv("rpc.request").await;
    assert_eq!(
        (req.id(), req.data().unwrap()),
        (id2.as_str(), &json!({"rpcType": "bare"}))
    );

    // Responses: data verbatim (extra fields too), same id, trusted from.
    let cases = [
        (
            json!({"ok": true, "result": {"a": 1}, "extra": [true]}),
            true,
        ),
        (
            json!({"ok": false, "error": "Order not found", "code": "ORDER_NOT_FOUND", "data": {"orderId": 42}}),
            false,
        ),
        (json!({"ok": 1}), true),
        (json!({"weird": "shape"}), false),
    ];
    for (data, ok) in cases {
        beta.send_id(&id, "rpc.response", Some("alpha"), Some(data.clone()))
            .await;
        let r = alpha.recv("rpc.response").await;
        assert_eq!((r.id(), r.from()), (id.as_str(), Some("beta")));
        assert_eq!(r.data().unwrap(), &data);
        let e = next_event(&mut beta_rx, |e| {
            matches!(e, HubEvent::RpcResponseForwarded { .. })
        })
        .await;
        assert_eq!(
            *e,
            HubEvent::RpcResponseForwarded {
                id: id.clone(),
                from: "beta".into(),
                to: "alpha".into(),
                ok
            }
        );
    }
    // No data at all: relayed without data.
    beta.send_id(&id, "rpc.response", Some("alpha"), None).await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!(r.data(), None);
}

#[tokio::test]
async fn rpc_to_yourself_is_relayed() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let id = alpha
        .send(
            "rpc.request",
            Some("alpha"),
            Some(json!({"rpcType": "self"})),
        )
        .await;
    let req = alpha.recv("rpc.request").await;
    assert_eq!((req.id(), req.from()), (id.as_str(), Some("alpha")));
}

#[tokio::test]
async fn rpc_responses_to_nobody_are_dropped_and_responders_are_not_checked() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let (mut alpha, mut beta, mut gamma) = three(&hub).await;
    beta.send("rpc.response", None, Some(json!({"ok": true})))
        .await;
    beta.send("rpc.response", Some("ghost"), Some(json!({"ok": true})))
        .await;
    beta.assert_quiet().await;
    alpha.assert_quiet().await;
    assert_eq!(
        events_named(&drain_events(&mut rx), "rpc.response.forwarded"),
        0
    );
    // The hub does not check that the responder was the target: the
    // caller protects itself (protocol §6.1).
    let id = alpha
        .send("rpc.request", Some("beta"), Some(json!({"rpcType": "x"})))
        .await;
    gamma
        .send_id(
            &id,
            "rpc.response",
            Some("alpha"),
            Some(json!({"ok": true})),
        )
        .await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!((r.id(), r.from()), (id.as_str(), Some("gamma")));
}

#[tokio::test]
async fn topics_subscribe_publish_and_unsubscribe() {
    topics(1).await;
}

#[tokio::test]
async fn topics_across_three_hubs_subscribe_publish_and_unsubscribe() {
    topics(3).await;
}

/// alpha, beta, gamma on hubs 0, 1, 2. Each hub's events are about its own
/// peers' frames; a `topic.publish` event counts the publisher's hub's
/// subscribers (on three hubs: none).
async fn topics(hubs: usize) {
    let mut bus = bus(hubs).await;
    let mut rx: Vec<_> = bus.hubs().iter().map(|h| h.hub.events()).collect();
    let n = rx.len();
    let (mut alpha, mut beta, mut gamma) = three_on(&mut bus).await;
    let subscribed = |rx: &mut broadcast::Receiver<Arc<HubEvent>>| -> Vec<(String, String)> {
        drain_events(rx)
            .into_iter()
            .filter_map(|e| match &*e {
                HubEvent::TopicSubscribe { kind, topic } => Some((kind.clone(), topic.clone())),
                _ => None,
            })
            .collect()
    };
    // An event only for a new subscription, in order.
    beta.subscribe("news").await;
    beta.subscribe("news").await;
    assert_eq!(subscribed(&mut rx[1 % n]), [("beta".into(), "news".into())]);
    gamma.subscribe("news").await;
    assert_eq!(
        subscribed(&mut rx[2 % n]),
        [("gamma".into(), "news".into())]
    );
    alpha.subscribe("news").await; // the publisher is a subscriber too
    assert_eq!(subscribed(&mut rx[0]), [("alpha".into(), "news".into())]);
    topic_reaches(&mut alpha, "news", &mut [&mut beta, &mut gamma]).await;

    let payload = json!({"headline": "hi", "at": 1});
    let pub_id = alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "news", "payload": payload, "extra": 1})),
        )
        .await;
    let b = beta.recv("topic.message").await;
    let g = gamma.recv("topic.message").await;
    for (m, to) in [(&b, "beta"), (&g, "gamma")] {
        assert_eq!((m.from(), m.to().as_deref()), (Some("alpha"), Some(to)));
        assert_eq!(
            m.data().unwrap(),
            &json!({"topic": "news", "payload": payload})
        );
    }
    // A new id per delivery.
    assert_ne!(b.id(), pub_id);
    assert_ne!(g.id(), pub_id);
    assert_ne!(b.id(), g.id());
    alpha.assert_quiet().await; // no self-delivery, no ack
    let e = next_event(
        &mut rx[0],
        |e| matches!(e, HubEvent::TopicPublish { payload: p, .. } if p.as_ref() == Some(&payload)),
    )
    .await;
    let local = if n == 1 { 2 } else { 0 };
    assert_eq!(
        *e,
        HubEvent::TopicPublish {
            from: "alpha".into(),
            topic: "news".into(),
            payload: Some(payload.clone()),
            subscriber_count: local,
            delivered: local
        }
    );
    // Without payload: none is invented.
    alpha
        .send("topic.message", None, Some(json!({"topic": "news"})))
        .await;
    assert_eq!(
        beta.recv("topic.message").await.data().unwrap(),
        &json!({"topic": "news"})
    );
    gamma.recv("topic.message").await;
    // Nobody listening.
    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "void", "payload": 1})),
        )
        .await;
    let e = next_event(
        &mut rx[0],
        |e| matches!(e, HubEvent::TopicPublish { topic, .. } if topic == "void"),
    )
    .await;
    assert!(matches!(
        &*e,
        HubEvent::TopicPublish {
            subscriber_count: 0,
            delivered: 0,
            ..
        }
    ));

    // Unsubscribe: an event when it was subscribed, none otherwise.
    beta.send("topic.unsubscribe", None, Some(json!({"topic": "news"})))
        .await;
    beta.send("topic.unsubscribe", None, Some(json!({"topic": "news"})))
        .await;
    beta.barrier().await;
    let unsubs = drain_events(&mut rx[1 % n])
        .into_iter()
        .filter(|e| matches!(&**e, HubEvent::TopicUnsubscribe { kind, topic } if kind == "beta" && topic == "news"))
        .count();
    assert_eq!(unsubs, 1);
    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "news", "payload": 2})),
        )
        .await;
    assert_eq!(
        gamma.recv("topic.message").await.data().unwrap()["payload"],
        2
    );
    // beta's hub dropped its subscription before alpha published (beta's
    // barrier): nothing can reach beta; the marker bounds the wait.
    assert_nothing_from(&mut alpha, &mut beta).await;
    // In subscription order on one hub; across hubs the answering hub's
    // subscribers come first (docs/cluster.md, What differs from one hub).
    let list = alpha
        .rpc("server", "link.topic.list", Some(json!({"topic": "news"})))
        .await;
    let subscribers = if n == 1 {
        ["gamma", "alpha"]
    } else {
        ["alpha", "gamma"]
    };
    assert_eq!(
        list.data().unwrap()["result"],
        json!({"topic": "news", "subscribers": subscribers})
    );
}

#[tokio::test]
async fn a_falsy_topic_unsubscribes_from_everything() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.peers_update_with("beta").await;
    let falsy: [Option<Value>; 6] = [
        Some(json!({"topic": ""})),
        Some(json!({"topic": null})),
        Some(json!({"topic": 0})),
        Some(json!({"topic": false})),
        Some(json!({})),
        None,
    ];
    for data in falsy {
        for t in ["news", "sports", "weather"] {
            beta.subscribe(t).await;
        }
        drain_events(&mut rx);
        beta.send("topic.unsubscribe", None, data.clone()).await;
        beta.barrier().await;
        let mut gone: Vec<String> = drain_events(&mut rx)
            .into_iter()
            .filter_map(|e| match &*e {
                HubEvent::TopicUnsubscribe { kind, topic } if kind == "beta" => Some(topic.clone()),
                _ => None,
            })
            .collect();
        gone.sort();
        assert_eq!(gone, ["news", "sports", "weather"], "{data:?}");
        let list = alpha.rpc("server", "link.topic.list", None).await;
        assert_eq!(
            list.data().unwrap()["result"],
            json!({"topics": []}),
            "{data:?}"
        );
    }
    beta.assert_quiet().await;
}

#[tokio::test]
async fn invalid_topics_are_protocol_errors() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let long = "t".repeat(257);
    let cases = [
        ("topic.subscribe", json!({"topic": "bad topic"})),
        ("topic.subscribe", json!({"topic": "news.*"})),
        ("topic.subscribe", json!({"topic": ""})),
        ("topic.subscribe", json!({"topic": long})),
        ("topic.subscribe", json!({})),
        ("topic.unsubscribe", json!({"topic": "a b"})),
        ("topic.unsubscribe", json!({"topic": "news/x"})),
        ("topic.message", json!({"topic": "a*b", "payload": 1})),
        ("topic.message", json!({"payload": 1})),
    ];
    for (t, data) in cases {
        alpha.send(t, None, Some(data.clone())).await;
        let e = protocol_error(&mut rx, DropReason::InvalidTopic).await;
        assert_eq!(
            (e.kind.as_deref(), e.msg_type.as_deref()),
            (Some("alpha"), Some(t)),
            "{data}"
        );
    }
    // 256 characters is still a topic.
    alpha.subscribe(&"t".repeat(256)).await;
    assert_eq!(hub.hub.health().await.topic_count, 1);
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn direct_is_relayed_with_a_new_id_or_dropped_silently() {
    direct(1).await;
}

#[tokio::test]
async fn direct_across_hubs_is_relayed_with_a_new_id_or_dropped_silently() {
    direct(2).await;
}

/// alpha on hub 0, beta on hub 1: the `direct` events are alpha's hub's.
async fn direct(hubs: usize) {
    let mut bus = bus(hubs).await;
    let mut rx = bus.hub(0).hub.events();
    let mut alpha = bus.peer("alpha", S, 0).await;
    let mut beta = bus.peer("beta", S, 1).await;

    let id = alpha
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "ping", "directData": {"n": 1}, "extra": 2})),
        )
        .await;
    let d = beta.recv("direct").await;
    assert_ne!(d.id(), id);
    assert_eq!((d.from(), d.to().as_deref()), (Some("alpha"), Some("beta")));
    assert_eq!(
        d.data().unwrap(),
        &json!({"directType": "ping", "directData": {"n": 1}})
    );
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::Direct { .. })).await;
    assert_eq!(
        *e,
        HubEvent::Direct {
            from: "alpha".into(),
            to: "beta".into(),
            msg_type: "ping".into(),
            data: Some(json!({"n": 1}))
        }
    );
    alpha
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "no-data"})),
        )
        .await;
    assert_eq!(
        beta.recv("direct").await.data().unwrap(),
        &json!({"directType": "no-data"})
    );

    drain_events(&mut rx);
    // Silent drops: offline target, no target, no usable directType.
    alpha
        .send("direct", Some("ghost"), Some(json!({"directType": "x"})))
        .await;
    alpha
        .send("direct", None, Some(json!({"directType": "x"})))
        .await;
    alpha
        .send("direct", Some("beta"), Some(json!({"directType": ""})))
        .await;
    alpha
        .send("direct", Some("beta"), Some(json!({"directType": 5})))
        .await;
    alpha.send("direct", Some("beta"), None).await;
    alpha.assert_quiet().await;
    let evs = drain_events(&mut rx);
    assert_eq!(events_named(&evs, "direct"), 0);
    assert_eq!(events_named(&evs, "protocol-error"), 0);
    assert_nothing_from(&mut alpha, &mut beta).await;
}

#[tokio::test]
async fn disconnect_clears_status_and_subscriptions_and_tells_everyone() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    alpha.peers_update_with("beta").await;
    beta.subscribe("news").await;
    beta.subscribe("sports").await;
    beta.send("status.update", None, Some(json!({"s": 1})))
        .await;
    alpha.recv("status.update").await;
    let connected_at = hub.hub.state().await.peers[1].connected_at.unwrap();

    beta.ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    let HubEvent::PeerDisconnect {
        kind,
        hello,
        connected_at: at,
        code,
        reason,
    } = &*e
    else {
        unreachable!()
    };
    assert_eq!(
        (kind.as_str(), *code, reason.as_str()),
        ("beta", Some(1000), "bye")
    );
    assert_eq!(hello.kind, "beta");
    assert_eq!(*at as f64, connected_at);

    let up = alpha.peers_update_without("beta").await;
    assert_eq!(peer_kinds(&up), ["alpha"]);
    let list = alpha.rpc("server", "link.topic.list", None).await;
    assert_eq!(list.data().unwrap()["result"], json!({"topics": []}));
    let h = hub.hub.health().await;
    assert_eq!(
        (
            h.peer_count,
            h.status_count,
            h.topic_count,
            h.total_subscribers
        ),
        (1, 0, 0, 0)
    );
    let mut gamma = hub.peer("gamma", S).await;
    assert_eq!(
        gamma.recv("status.snapshot").await.data().unwrap(),
        &json!({})
    );

    // A close without a code is 1005; a dropped TCP connection is 1006.
    let mut c = hub.peer("c1005", S).await;
    c.ws.send(Message::Close(None)).await.unwrap();
    let e = next_event(
        &mut rx,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "c1005"),
    )
    .await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { code: Some(1005), reason, .. } if reason.is_empty())
    );
    let d = hub.peer("c1006", S).await;
    drop(d);
    let e = next_event(
        &mut rx,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "c1006"),
    )
    .await;
    assert!(matches!(
        &*e,
        HubEvent::PeerDisconnect {
            code: Some(1006),
            ..
        }
    ));
}

#[tokio::test]
async fn relayed_frames_are_resigned_with_each_recipients_key() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::per_kind([
            ("alpha", "key-alpha"),
            ("beta", "key-beta"),
        ]))
        .build()
        .unwrap(),
    )
    .await;
    let (ka, kb) = (key("key-alpha"), key("key-beta"));
    let mut alpha = hub.peer("alpha", "key-alpha").await;
    let mut beta = hub.peer("beta", "key-beta").await;
    beta.subscribe("news").await;

    let id = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "echo", "rpcData": {"k": "v"}})),
        )
        .await;
    alpha
        .send("direct", Some("beta"), Some(json!({"directType": "d"})))
        .await;
    alpha
        .send("topic.message", None, Some(json!({"topic": "news"})))
        .await;
    for t in ["rpc.request", "direct", "topic.message"] {
        let text = beta.recv_raw(t).await;
        let r = link_protocol::envelope::parse_frame(text.as_bytes(), 1 << 20).unwrap();
        assert!(r.verify(&kb), "{t} must verify under beta's key");
        assert!(!r.verify(&ka), "{t} must not verify under alpha's key");
        assert_eq!(r.envelope.from(), Some("alpha"));
        if t == "rpc.request" {
            assert_eq!(r.envelope.id(), id);
        }
    }
    beta.send_id(
        &id,
        "rpc.response",
        Some("alpha"),
        Some(json!({"ok": true, "result": {"k": "v"}})),
    )
    .await;
    let text = alpha.recv_raw("rpc.response").await;
    let r = link_protocol::envelope::parse_frame(text.as_bytes(), 1 << 20).unwrap();
    assert!(r.verify(&ka) && !r.verify(&kb));
    assert_eq!(
        (r.envelope.id(), r.envelope.from()),
        (id.as_str(), Some("beta"))
    );
    // Hub-made frames too: a newcomer's peers.update reaches each with its key.
    let mut raw = hub.raw_peer().await;
    raw.hello(&ka, "alpha").await; // displaces alpha: the new alpha socket
    let text = beta.recv_raw("peers.update").await;
    let (e, _) = parse(&text);
    assert_eq!(e.to().as_deref(), Some("beta"));
    let r = link_protocol::envelope::parse_frame(text.as_bytes(), 1 << 20).unwrap();
    assert!(r.verify(&kb) && !r.verify(&ka));
}

#[tokio::test]
async fn a_spoofed_from_is_replaced_by_the_authenticated_kind() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .handler("whoami", |req| async move {
                Ok(json!({"from": req.from, "claimed": req.envelope.from()}))
            })
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.subscribe("news").await;
    drain_events(&mut rx);

    let rpc_id = alpha
        .send_as(
            "mallory",
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "x"})),
        )
        .await;
    alpha
        .send_as(
            "mallory",
            "direct",
            Some("beta"),
            Some(json!({"directType": "d"})),
        )
        .await;
    alpha
        .send_as(
            "mallory",
            "topic.message",
            None,
            Some(json!({"topic": "news"})),
        )
        .await;
    for t in ["rpc.request", "direct", "topic.message"] {
        assert_eq!(beta.recv(t).await.from(), Some("alpha"), "{t}");
    }
    // (Only once beta has the request: a cancel that finds it still queued
    // removes it instead of relaying.)
    alpha
        .send_as(
            "mallory",
            "rpc.cancel",
            Some("beta"),
            Some(json!({"id": rpc_id})),
        )
        .await;
    assert_eq!(beta.recv("rpc.cancel").await.from(), Some("alpha"));
    let resp_id = link_test_support::fresh_id("resp");
    let f = link_test_support::frame(
        &key(S),
        &resp_id,
        "rpc.response",
        Some("mallory"),
        Some("alpha"),
        Some(&json!({"ok": true})),
    );
    beta.send_raw(&f).await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!((r.id(), r.from()), (resp_id.as_str(), Some("beta")));
    // A server handler sees the trusted caller, and the envelope as sent.
    let id = alpha
        .send_as(
            "mallory",
            "rpc.request",
            Some("server"),
            Some(json!({"rpcType": "whoami"})),
        )
        .await;
    let r = alpha.recv("rpc.response").await;
    assert_eq!(r.id(), id);
    assert_eq!(
        r.data().unwrap()["result"],
        json!({"from": "alpha", "claimed": "mallory"})
    );
    let evs = drain_events(&mut rx);
    for e in &evs {
        match &**e {
            HubEvent::RpcForwarded { from, .. }
            | HubEvent::Direct { from, .. }
            | HubEvent::TopicPublish { from, .. }
            | HubEvent::RpcCancelled { from, .. }
            | HubEvent::RpcServer { from, .. } => assert_eq!(from, "alpha"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn quiet_event_listeners_see_no_per_message_events() {
    let hub = TestHub::shared(S).await;
    let mut quiet = hub.hub.quiet_events();
    let mut sub = hub.peer("sub", S).await;
    let mut publisher = hub.peer("publisher", S).await;
    sub.subscribe("t").await;
    publisher
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "t", "payload": 1})),
        )
        .await;
    sub.recv("topic.message").await;
    // An invalid topic: a protocol error, which quiet listeners do get. It
    // comes after the publish, so a topic.publish event would be seen first.
    publisher
        .send("topic.subscribe", None, Some(json!({"topic": ""})))
        .await;
    let mut seen = Vec::new();
    loop {
        let e = quiet.recv().await.expect("the hub is running");
        assert!(!e.is_traffic(), "{e:?}");
        seen.push(e.name());
        if matches!(&*e, HubEvent::ProtocolError { .. }) {
            break;
        }
    }
    assert!(seen.contains(&"peer.connect"), "{seen:?}");
    assert!(seen.contains(&"topic.subscribe"), "{seen:?}");
}
