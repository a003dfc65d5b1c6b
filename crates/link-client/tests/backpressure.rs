//! Backpressure on both sides of the client (protocol §11, STYLE "a slow
//! consumer never blocks the connection"): a subscription nobody reads
//! loses messages with `SlowConsumer` events while every other stream keeps
//! receiving, and a hub that stops reading makes the outbox queue, then
//! overflow, while inbound traffic still flows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_client::{LinkError, LinkEvent, RpcOutcome};
use link_test_support::{DEMO_SECRET, ScriptedHub, WAIT, next_event, started};
use serde_json::json;
use tokio::sync::broadcast::error::TryRecvError;

/// Capacity of every subscription and direct stream.
const STREAM_CAPACITY: u64 = 1024;

#[tokio::test]
async fn unread_subscription_loses_messages_without_blocking_the_link() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("beta"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    let mut slow = client.subscribe("news").unwrap();
    let mut fast = client.subscribe("news").unwrap();
    let mut directs = client.directs();
    conn.expect("topic.subscribe").await;

    // Two batches, each smaller than a stream, so the fast reader can never
    // fall behind by a whole stream; the slow one never reads.
    let (first, second) = (600u64, 500u64);
    let total = first + second;
    let mut next = 0u64;
    for batch in [first, second] {
        for _ in 0..batch {
            conn.send(
                "topic.message",
                "alpha",
                Some(json!({"topic": "news", "payload": next})),
            )
            .await;
            next += 1;
        }
        let upto = next;
        tokio::time::timeout(WAIT, async {
            while let Some(m) = fast.recv().await {
                let n = m.payload().unwrap().as_u64().unwrap();
                if n + 1 == upto {
                    return;
                }
            }
            panic!("fast subscription ended");
        })
        .await
        .expect("fast subscription kept up");
    }

    // Other streams and the driver are unaffected.
    conn.send("direct", "alpha", Some(json!({"directType": "after"})))
        .await;
    let d = tokio::time::timeout(WAIT, directs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.msg_type, "after");

    // The slow stream kept the first 1024 messages in order and reported
    // each one it lost.
    let mut max_dropped = 0;
    loop {
        let e = match ev.try_recv() {
            Ok(e) => e,
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        if let LinkEvent::SlowConsumer { stream, dropped } = &*e {
            assert_eq!(stream, "topic:news");
            max_dropped = max_dropped.max(*dropped);
        }
    }
    assert_eq!(max_dropped, total - STREAM_CAPACITY);
    for n in 0..STREAM_CAPACITY {
        let m = slow.recv().await.unwrap();
        assert_eq!(m.payload(), Some(&json!(n)));
    }
    assert!(
        tokio::time::timeout(std::time::Duration::ZERO, slow.recv())
            .await
            .is_err(),
        "nothing after the first 1024"
    );
}

#[tokio::test]
async fn stalled_socket_queues_then_overflows_while_inbound_flows() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(
        hub.client("alpha")
            .max_buffered_bytes(64 * 1024)
            .max_outbox_bytes(256 * 1024),
    );
    let mut ev = client.events();
    let mut directs = client.directs();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();

    // The hub stops reading: the socket fills, then the outbox, then publish
    // is refused. Yielding lets the writer run between publishes.
    let payload = json!({"pad": "x".repeat(16 * 1024)});
    let mut published = 0u64;
    let err = tokio::time::timeout(WAIT, async {
        loop {
            match client.publish("news", payload.clone()) {
                Ok(()) => published += 1,
                Err(e) => return e,
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the outbox filled");
    assert_eq!(err.code(), "BACKPRESSURE");
    let mut saw = (false, false);
    while let Ok(e) = ev.try_recv() {
        saw.0 |= matches!(&*e, LinkEvent::Backpressure { .. });
        saw.1 |= matches!(&*e, LinkEvent::OutboxOverflow { .. });
    }
    assert_eq!(saw, (true, true), "backpressure edge, then overflow");
    assert!(client.health().outbox_size > 0);

    // Fill what is left with small messages; an RPC is then refused, and
    // its error names the call (the reference's `rpcType` and `id`).
    while client.publish("news", json!(1)).is_ok() {
        published += 1;
    }
    let mut rpc_events = client.events();
    let e = client.rpc("beta", "x", None).await.unwrap_err();
    let LinkError::Backpressure {
        msg_type,
        rpc_type,
        id,
        max_outbox_bytes,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (msg_type.as_str(), rpc_type.as_deref(), *max_outbox_bytes),
        ("rpc.request", Some("x"), 256 * 1024)
    );
    let done = next_event(&mut rpc_events, |e| {
        matches!(e, LinkEvent::RpcComplete { .. })
    })
    .await;
    assert!(
        matches!(&*done, LinkEvent::RpcComplete { id: done_id, outcome: RpcOutcome::Backpressure, .. }
            if Some(done_id) == id.as_ref()),
        "{done:?}"
    );
    assert_eq!(e.rpc_id(), id.as_deref());

    // Inbound frames are still read and dispatched while writes are stuck.
    conn.send("direct", "beta", Some(json!({"directType": "hello"})))
        .await;
    let d = tokio::time::timeout(WAIT, directs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.msg_type, "hello");

    // The hub reads again: every accepted publish arrives, the queue drains.
    let drained = client.wait_for(|e| matches!(e, LinkEvent::OutboxDrained), Some(WAIT));
    for _ in 0..published {
        conn.expect("topic.message").await;
    }
    assert!(drained.await.is_some());
    assert_eq!(client.health().outbox_size, 0);
}
