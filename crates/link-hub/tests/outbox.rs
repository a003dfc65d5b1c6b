//! protocol §11: per-socket outboxes. A peer that never reads (a tiny TCP
//! receive buffer, and the test simply stops polling its socket) fills its
//! outbox: overflow refuses messages for it alone, `backpressure` is
//! edge-triggered, queued `status.update`s are conflated per originating
//! peer, and the queue is discarded when the socket goes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_hub::{HubConfig, HubEvent, Secret};
use link_test_support::{Peer, TestHub, drain_events, next_event, stall};
use serde_json::{Value, json};

const S: &str = "demo-secret";
const CHUNK: usize = 64 * 1024;

/// Reads `p` until the direct `marker` arrives; returns what came before
/// it (fillers excluded).
async fn read_until_marker(p: &mut Peer, marker: &str) -> Vec<link_protocol::Envelope> {
    loop {
        let d = p.recv("direct").await;
        if d.data().unwrap()["directType"] == marker {
            return std::mem::take(&mut p.inbox);
        }
    }
}

#[tokio::test]
async fn overflow_refuses_messages_for_the_stalled_peer_only() {
    let max = 256 * 1024;
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_outbox_bytes(max)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut gamma = hub.peer("gamma", S).await;
    let mut beta = Peer::connect_stalling(&hub.url, "beta", S).await;
    beta.subscribe("news").await;
    gamma.subscribe("news").await;
    stall(&hub.hub, &mut alpha, "beta", CHUNK).await;
    let h = hub.hub.health().await;
    assert_eq!(h.queued_sockets, 1);
    assert!(h.outbox_bytes > 0 && h.outbox_bytes <= max);

    let payload = "p".repeat(CHUNK);
    let mut overflowed = false;
    let mut overflow = None;
    for n in 0..16 {
        alpha
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "news", "payload": [n, payload]})),
            )
            .await;
        // gamma is unaffected: it gets every publish.
        let m = gamma.recv("topic.message").await;
        assert_eq!(m.data().unwrap()["payload"][0], n);
        let e = next_event(&mut rx, |e| {
            if matches!(e, HubEvent::OutboxOverflow { .. }) {
                overflow = Some(e.clone());
            }
            matches!(e, HubEvent::TopicPublish { .. })
        })
        .await;
        let HubEvent::TopicPublish {
            subscriber_count,
            delivered,
            ..
        } = &*e
        else {
            unreachable!()
        };
        assert_eq!(*subscriber_count, 2);
        if *delivered == 1 {
            overflowed = true;
            break;
        }
        assert_eq!(*delivered, 2);
    }
    assert!(overflowed, "beta's outbox never overflowed");
    let Some(HubEvent::OutboxOverflow {
        kind,
        msg_type,
        to,
        outbox_bytes,
        max_outbox_bytes,
    }) = &overflow
    else {
        panic!("no outbox-overflow event")
    };
    assert_eq!(
        (kind.as_str(), msg_type.as_str(), to.as_str()),
        ("beta", "topic.message", "beta")
    );
    assert_eq!(*max_outbox_bytes, max);
    assert!(*outbox_bytes <= max && outbox_bytes + CHUNK > max);

    // Everyone else still talks.
    gamma
        .send("direct", Some("alpha"), Some(json!({"directType": "hi"})))
        .await;
    assert_eq!(alpha.recv("direct").await.from(), Some("gamma"));
    let h = alpha.rpc("server", "link.health", None).await;
    assert!(h.data().unwrap()["result"]["outboxBytes"].as_u64().unwrap() > 0);
    assert_eq!(h.data().unwrap()["result"]["queuedSockets"], 1);

    // The queue goes with its socket.
    drop(beta);
    next_event(
        &mut rx,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "beta"),
    )
    .await;
    let h = hub.hub.health().await;
    assert_eq!((h.outbox_bytes, h.queued_sockets), (0, 0));
}

#[tokio::test]
async fn backpressure_is_edge_triggered() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_buffered_bytes(1024)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = Peer::connect_stalling(&hub.url, "beta", S).await;
    let backpressure = |rx: &mut _| -> Vec<std::sync::Arc<HubEvent>> {
        drain_events(rx)
            .into_iter()
            .filter(|e| matches!(&**e, HubEvent::Backpressure { .. }))
            .collect()
    };
    for episode in 0..2 {
        drain_events(&mut rx);
        // One filler per round trip until beta's queue is non-empty and
        // stays so: by then it went from empty to non-empty (perhaps more
        // than once, if an earlier burst of congestion cleared).
        stall(&hub.hub, &mut alpha, "beta", CHUNK).await;
        let bp = backpressure(&mut rx);
        assert!(!bp.is_empty(), "episode {episode}: no backpressure event");
        let HubEvent::Backpressure {
            kind,
            msg_type,
            to,
            max_buffered_bytes,
            outbox_size,
            ..
        } = &**bp.last().unwrap()
        else {
            unreachable!()
        };
        assert_eq!(
            (kind.as_str(), msg_type.as_str(), to.as_str()),
            ("beta", "direct", "beta")
        );
        assert_eq!(*max_buffered_bytes, 1024);
        assert!(*outbox_size >= 1);
        // Edge-triggered: more messages into the non-empty queue, no event.
        for t in ["more", "more", "more", "marker"] {
            alpha
                .send("direct", Some("beta"), Some(json!({"directType": t})))
                .await;
        }
        alpha.barrier().await;
        assert!(
            backpressure(&mut rx).is_empty(),
            "episode {episode}: fired again while still queued"
        );
        // beta catches up: the queue drains, which re-arms the edge.
        read_until_marker(&mut beta, "marker").await;
        beta.barrier().await;
    }
}

#[tokio::test]
async fn queued_status_updates_are_conflated_per_originating_peer() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut gamma = hub.peer("gamma", S).await;
    let mut beta = Peer::connect_stalling(&hub.url, "beta", S).await;
    stall(&hub.hub, &mut alpha, "beta", CHUNK).await;

    for n in 1..=5 {
        gamma
            .send("status.update", None, Some(json!({"n": n})))
            .await;
        alpha
            .send("status.update", None, Some(json!({"a": n})))
            .await;
    }
    gamma.barrier().await;
    alpha.barrier().await;
    gamma
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "marker"})),
        )
        .await;
    gamma.barrier().await;

    let got = read_until_marker(&mut beta, "marker").await;
    let statuses: Vec<(Value, Value)> = got
        .iter()
        .filter(|e| e.msg_type() == Some("status.update"))
        .map(|e| {
            let d = e.data().unwrap();
            (d["from"].clone(), d["status"].clone())
        })
        .collect();
    let of = |k: &str| -> Vec<Value> {
        statuses
            .iter()
            .filter(|(f, _)| f == k)
            .map(|(_, s)| s.clone())
            .collect()
    };
    assert_eq!(of("gamma"), [json!({"n": 5})], "only gamma's latest status");
    assert_eq!(of("alpha"), [json!({"a": 5})], "only alpha's latest status");
    // The hub itself kept every update (the last one is stored).
    let state = hub.hub.state().await;
    let gamma_status = state
        .last_status
        .iter()
        .find(|(k, _)| k == "gamma")
        .unwrap();
    assert_eq!(gamma_status.1.status, Some(json!({"n": 5})));
}

#[tokio::test]
async fn an_idle_socket_takes_a_message_bigger_than_the_outbox_cap() {
    // protocol §11: a message is written immediately when the queue is empty,
    // the socket open and bufferedAmount <= maxBufferedBytes; only queued
    // items count against maxOutboxBytes.
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_outbox_bytes(4096)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    beta.barrier().await;
    alpha
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "big", "directData": "x".repeat(8192)})),
        )
        .await;
    alpha.barrier().await;
    assert!(
        !drain_events(&mut rx)
            .iter()
            .any(|e| matches!(&**e, HubEvent::OutboxOverflow { .. })),
        "refused as overflow"
    );
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap()["directType"], "big");
}
