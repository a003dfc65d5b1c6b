//! protocol §12 (and the matching §13 close codes): the hello timeout (1008
//! `hello timeout`), pending-socket cap eviction (1008 `pending cap`,
//! oldest first), and keepalive: a peer that never pongs is reaped (1006,
//! `keepalive timeout`), one that pongs is not, pending sockets are never
//! pinged.
//!
//! The connections are in-memory (`link_transport::memory`) and tokio time
//! is paused, so every timer runs at its default duration and a test takes
//! microseconds. Tokio advances a paused clock only when every task is
//! idle; with no kernel between hub and peer, a pong the peer wrote is in
//! the hub's queue before that can happen, so a peer that answers is never
//! reaped by mistake. "Never pongs" is a peer the test stops reading.
//! Durations are read off the virtual clock: exact, not timings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use link_hub::{Hub, HubConfig, HubEvent, Secret, TimeoutReason};
use link_test_support::{
    MemoryPeer, frame, fresh_id, hello_frame, key, next_event_within, peer_kinds,
};
use link_transport::Frame;
use tokio::sync::broadcast;
use tokio::time::Instant;

const S: &str = "demo-secret";
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The remote address the hub reports for peer `n` (a label: no socket
/// exists).
fn remote(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 40_000))
}

/// The first hub event matching `pred`. The hang guard is an hour of
/// paused time: longer than any hub timer (keepalive reaping takes two
/// intervals), free to wait out.
async fn event(
    rx: &mut broadcast::Receiver<std::sync::Arc<HubEvent>>,
    pred: impl FnMut(&HubEvent) -> bool,
) -> std::sync::Arc<HubEvent> {
    next_event_within(Duration::from_secs(3600), rx, pred).await
}

fn shared() -> HubConfig {
    HubConfig::builder(Secret::shared(S)).build().unwrap()
}

/// A connection the hub has attached and holds as pending.
async fn pending(hub: &Hub, n: u8) -> MemoryPeer {
    MemoryPeer::attach_pending(hub, remote(n), &format!("probe-{n}")).await
}

#[tokio::test(start_paused = true)]
async fn a_socket_without_a_valid_hello_is_closed_at_the_hello_timeout() {
    let hub = Hub::new(shared());
    let mut rx = hub.events();
    let start = Instant::now();
    let mut raw = MemoryPeer::attach(&hub, remote(1));
    // A bad hello does not stop the clock.
    raw.send_text(hello_frame(&key("wrong"), &fresh_id("h"), "beta"))
        .await;
    assert_eq!(raw.closed().await, (1008, "hello timeout".to_owned()));
    assert_eq!(start.elapsed(), HELLO_TIMEOUT, "the default hello timeout");
    let e = event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    let HubEvent::PeerTimeout {
        remote_addr,
        hello_timeout_ms,
        reason,
    } = &*e
    else {
        unreachable!()
    };
    assert_eq!(
        (*hello_timeout_ms, *reason, *remote_addr),
        (10_000, TimeoutReason::HelloTimeout, Some(remote(1)))
    );
}

#[tokio::test(start_paused = true)]
async fn the_hello_timeout_fires_while_a_key_lookup_hangs() {
    let hub = Hub::new(
        HubConfig::builder(Secret::resolver(|_kind: String| async {
            std::future::pending::<()>().await;
            None
        }))
        .build()
        .unwrap(),
    );
    let start = Instant::now();
    let mut raw = MemoryPeer::attach(&hub, remote(1));
    raw.send_text(hello_frame(&key(S), &fresh_id("h"), "alpha"))
        .await;
    assert_eq!(raw.closed().await, (1008, "hello timeout".to_owned()));
    assert_eq!(start.elapsed(), HELLO_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn the_pending_cap_evicts_a_socket_whose_key_lookup_hangs() {
    let hub = Hub::new(
        HubConfig::builder(Secret::resolver(|_kind: String| async {
            std::future::pending::<()>().await;
            None
        }))
        .max_pending_sockets(1)
        .build()
        .unwrap(),
    );
    let mut rx = hub.events();
    let mut first = pending(&hub, 1).await;
    first
        .send_text(hello_frame(&key(S), &fresh_id("h"), "alpha"))
        .await;
    let start = Instant::now();
    let _second = MemoryPeer::attach(&hub, remote(2));
    event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    assert_eq!(first.closed().await, (1008, "pending cap".to_owned()));
    assert!(start.elapsed() < HELLO_TIMEOUT, "evicted, not timed out");
}

#[tokio::test(start_paused = true)]
async fn the_pending_cap_evicts_the_oldest_pending_socket() {
    let hub = Hub::new(
        HubConfig::builder(Secret::shared(S))
            .max_pending_sockets(2)
            .build()
            .unwrap(),
    );
    let mut rx = hub.events();
    let k = key(S);
    let mut p1 = pending(&hub, 1).await;
    let mut p2 = pending(&hub, 2).await;
    assert_eq!(hub.health().await.pending_socket_count, 2);
    let mut p3 = pending(&hub, 3).await;
    assert_eq!(p1.closed().await, (1008, "pending cap".to_owned()));
    let e = event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    assert!(matches!(
        &*e,
        HubEvent::PeerTimeout {
            reason: TimeoutReason::PendingCap,
            hello_timeout_ms: 10_000,
            remote_addr: Some(a),
        } if *a == remote(1)
    ));
    // Authenticating leaves the pending set: p2 is safe from now on.
    p2.hello(&k, "alpha").await;
    let mut p4 = pending(&hub, 4).await; // {p3, p4}: no eviction
    let _p5 = pending(&hub, 5).await; // evicts p3, now the oldest
    assert_eq!(p3.closed().await, (1008, "pending cap".to_owned()));
    p4.hello(&k, "beta").await;
    let d = frame(
        &k,
        &fresh_id("d"),
        "direct",
        Some("alpha"),
        Some("beta"),
        Some(&serde_json::json!({"directType": "still-here"})),
    );
    p2.send_text(d).await;
    assert_eq!(
        p4.recv(&k, "direct").await.data().unwrap()["directType"],
        "still-here"
    );
}

#[tokio::test(start_paused = true)]
async fn keepalive_reaps_a_peer_that_never_pongs() {
    let hub = Hub::new(shared());
    let mut rx = hub.events();
    let k = key(S);
    let mut alpha = MemoryPeer::attach(&hub, remote(1));
    alpha.hello(&k, "alpha").await;
    let mut gamma = MemoryPeer::attach(&hub, remote(2));
    gamma.hello(&k, "gamma").await;
    let start = Instant::now();
    // alpha is never read from now on; gamma is read (and so pongs) while
    // we wait for alpha to be reaped.
    let (e, up) = tokio::join!(
        event(
            &mut rx,
            |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "alpha")
        ),
        async {
            loop {
                let up = gamma.recv(&k, "peers.update").await;
                if !peer_kinds(&up).contains(&"alpha".to_owned()) {
                    return up;
                }
            }
        },
    );
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { code: Some(1006), reason, .. } if reason == "keepalive timeout"),
        "{e:?}"
    );
    // Pinged at one interval, reaped at the next.
    assert_eq!(start.elapsed(), 2 * KEEPALIVE);
    assert_eq!(peer_kinds(&up), ["gamma"]);
    // No close frame: the peer sees the connection end.
    assert_eq!(alpha.closed().await.0, 1006);
    assert_eq!(hub.health().await.peer_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_pongs_stays_and_pending_sockets_are_never_pinged() {
    let hub = Hub::new(
        HubConfig::builder(Secret::shared(S))
            .hello_timeout(Duration::ZERO)
            .build()
            .unwrap(),
    );
    let k = key(S);
    let mut probe = pending(&hub, 1).await;
    let mut observer = MemoryPeer::attach(&hub, remote(2));
    observer.hello(&k, "observer").await;
    // Answering each ping keeps it; without a pong it would be gone at the
    // second tick.
    let mut pings = 0;
    while pings < 3 {
        match observer.next_raw().await {
            Some(Ok(Frame::Ping)) => {
                pings += 1;
                observer.send(Frame::Pong).await;
            }
            Some(Ok(Frame::Close(c))) => panic!("observer closed: {c:?}"),
            None | Some(Err(_)) => panic!("observer reaped"),
            Some(Ok(_)) => {}
        }
    }
    assert_eq!(hub.health().await.peer_count, 1);
    // Three intervals later the pending socket is still open and was sent
    // nothing at all: its first frame is the hello.ack.
    probe
        .send_text(hello_frame(&k, &fresh_id("h"), "late"))
        .await;
    match probe.next_raw().await {
        Some(Ok(Frame::Text(t))) => assert_eq!(
            link_test_support::parse(t.as_str()).0.msg_type(),
            Some("hello.ack")
        ),
        other => panic!("expected the hello.ack first, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_frame_over_the_cap_closes_1009() {
    let hub = Hub::new(
        HubConfig::builder(Secret::shared(S))
            .max_message_bytes(1024)
            .build()
            .unwrap(),
    );
    let mut rx = hub.events();
    let k = key(S);
    let mut alpha = MemoryPeer::attach(&hub, remote(1));
    alpha.hello(&k, "alpha").await;
    alpha.send_text("x".repeat(1025)).await;
    assert_eq!(alpha.closed().await, (1009, String::new()));
    let e = event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(
            &*e,
            HubEvent::PeerDisconnect {
                code: Some(1009),
                ..
            }
        ),
        "{e:?}"
    );
}
