//! protocol §12 (and the matching §13 close codes): the hello timeout (1008
//! `hello timeout`), pending-socket cap eviction (1008 `pending cap`,
//! oldest first), and keepalive: a peer that never pongs is reaped (1006,
//! `keepalive timeout`), one that pongs is not, pending sockets are never
//! pinged. A peer that "never pongs" is simply one whose socket the test
//! stops polling (tokio-tungstenite answers pings only while the stream is
//! read).
//!
//! These run on real time with short timers, awaiting the close or event
//! itself (never a sleep). Paused tokio time was tried and dropped: with
//! real loopback sockets the runtime can auto-advance the clock while a
//! pong is still inside the kernel (observed under a loaded 2-core
//! machine), reaping a peer that did answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use link_hub::{HubConfig, HubEvent, Secret, TimeoutReason};
use link_test_support::{Raw, TestHub, fresh_id, hello_frame, key, next_event};
use tokio_tungstenite::tungstenite::Message;

const S: &str = "demo-secret";
const HELLO_TIMEOUT: Duration = Duration::from_millis(200);
const KEEPALIVE: Duration = Duration::from_millis(250);

#[tokio::test]
async fn a_socket_without_a_valid_hello_is_closed_at_the_hello_timeout() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .hello_timeout(HELLO_TIMEOUT)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut raw = hub.raw_peer().await;
    // A bad hello does not stop the clock.
    raw.send_text(hello_frame(&key("wrong"), &fresh_id("h"), "beta"))
        .await;
    assert_eq!(raw.closed().await, (1008, "hello timeout".to_owned()));
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    let HubEvent::PeerTimeout {
        remote_addr,
        hello_timeout_ms,
        reason,
    } = &*e
    else {
        unreachable!()
    };
    assert_eq!(
        (*hello_timeout_ms, *reason),
        (200, TimeoutReason::HelloTimeout)
    );
    assert_eq!(*remote_addr, Some(raw.local_addr()));
}

#[tokio::test]
async fn the_hello_timeout_fires_while_a_key_lookup_hangs() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::resolver(|_kind: String| async {
            std::future::pending::<()>().await;
            None
        }))
        .hello_timeout(HELLO_TIMEOUT)
        .build()
        .unwrap(),
    )
    .await;
    let mut raw = hub.raw_peer().await;
    raw.send_text(hello_frame(&key(S), &fresh_id("h"), "alpha"))
        .await;
    assert_eq!(raw.closed().await, (1008, "hello timeout".to_owned()));
}

#[tokio::test]
async fn the_pending_cap_evicts_a_socket_whose_key_lookup_hangs() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::resolver(|_kind: String| async {
            std::future::pending::<()>().await;
            None
        }))
        .max_pending_sockets(1)
        .build()
        .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut first = hub.raw_peer().await;
    first
        .send_text(hello_frame(&key(S), &fresh_id("h"), "alpha"))
        .await;
    let _second = hub.raw_peer().await;
    next_event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    assert_eq!(first.closed().await, (1008, "pending cap".to_owned()));
}

#[tokio::test]
async fn the_pending_cap_evicts_the_oldest_pending_socket() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_pending_sockets(2)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut p1 = hub.pending("p1").await;
    let mut p2 = hub.pending("p2").await;
    assert_eq!(hub.hub.health().await.pending_socket_count, 2);
    let mut p3 = hub.raw_peer().await;
    assert_eq!(p1.closed().await, (1008, "pending cap".to_owned()));
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerTimeout { .. })).await;
    assert!(matches!(
        &*e,
        HubEvent::PeerTimeout {
            reason: TimeoutReason::PendingCap,
            hello_timeout_ms: 10_000,
            remote_addr: Some(_)
        }
    ));
    // Authenticating leaves the pending set: p2 is safe from now on.
    p2.hello(&k, "alpha").await;
    let mut p4 = hub.pending("p4").await; // {p3, p4}: no eviction
    let _p5 = hub.raw_peer().await; // evicts p3, now the oldest
    assert_eq!(p3.closed().await, (1008, "pending cap".to_owned()));
    p4.hello(&k, "beta").await;
    let d = link_test_support::frame(
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

#[tokio::test]
async fn keepalive_reaps_a_peer_that_never_pongs() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .keepalive_interval(KEEPALIVE)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut gamma = hub.peer("gamma", S).await;
    // alpha is never read from now on; gamma is read (and so pongs) while
    // we wait for alpha to be reaped.
    let (e, up) = tokio::join!(
        next_event(
            &mut rx,
            |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "alpha")
        ),
        gamma.peers_update_without("alpha"),
    );
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { code: Some(1006), reason, .. } if reason == "keepalive timeout"),
        "{e:?}"
    );
    assert_eq!(link_test_support::peer_kinds(&up), ["gamma"]);
    // No close frame: the peer sees an abnormal closure.
    assert_eq!(alpha.closed().await.0, 1006);
    assert_eq!(hub.hub.health().await.peer_count, 1);
}

#[tokio::test]
async fn a_peer_that_pongs_stays_and_pending_sockets_are_never_pinged() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .keepalive_interval(KEEPALIVE)
            .hello_timeout(Duration::ZERO)
            .build()
            .unwrap(),
    )
    .await;
    let k = key(S);
    let mut pending: Raw = hub.pending("probe").await;
    let mut observer = hub.raw_peer().await;
    observer.hello(&k, "observer").await;
    // Reading answers each ping; without a pong it would be gone at the
    // second tick.
    let mut pings = 0;
    while pings < 3 {
        match observer.next().await {
            Some(Message::Ping(_)) => pings += 1,
            Some(Message::Close(f)) => panic!("observer closed: {f:?}"),
            None => panic!("observer reaped"),
            Some(_) => {}
        }
    }
    // Three intervals later the pending socket is still open and was sent
    // nothing at all: its first message is the hello.ack.
    pending
        .send_text(hello_frame(&k, &fresh_id("h"), "late"))
        .await;
    match pending.next().await {
        Some(Message::Text(t)) => {
            assert_eq!(
                link_test_support::parse(t.as_str()).0.msg_type(),
                Some("hello.ack")
            );
        }
        other => panic!("expected the hello.ack first, got {other:?}"),
    }
}
