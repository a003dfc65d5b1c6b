//! protocol §13, the close codes not covered elsewhere: 1001 `server shutdown`
//! via `close_all`, `stop()` (1001 `hub stopped` for pending sockets, no
//! code — 1005 at the peer — for authenticated ones), and 1009 for a frame
//! over `max_message_bytes` at the WebSocket layer (§1, §4.1 step 0).
//! The others live with their features: 1008 bad kind and 4000 replaced in
//! `handshake.rs`, 1008 hello timeout / pending cap and 1006 keepalive in
//! `timers.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_hub::{HubConfig, HubEvent, Secret};
use link_test_support::{TestHub, drain_events, frame, fresh_id, key, next_event};
use serde_json::json;

const S: &str = "demo-secret";

#[tokio::test]
async fn close_all_sends_1001_server_shutdown_to_every_socket() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut pending = hub.pending("probe").await;
    assert_eq!(hub.hub.close_all(Some(1001), "server shutdown").await, 2);
    let expected = (1001, "server shutdown".to_owned());
    assert_eq!(alpha.closed().await, expected);
    assert_eq!(pending.closed().await, expected);
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1001), reason, .. }
            if kind == "alpha" && reason == "server shutdown"),
        "{e:?}"
    );
}

#[tokio::test]
async fn close_all_reports_each_peers_close_code() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    assert_eq!(hub.hub.close_all(Some(1001), "server shutdown").await, 2);
    let expected = (1001, "server shutdown".to_owned());
    // alpha finishes its close handshake first: the hub deregisters it and
    // broadcasts a peers.update, which finds beta's socket closing.
    assert_eq!(alpha.closed().await, expected);
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1001), .. } if kind == "alpha")
    );
    assert_eq!(beta.closed().await, expected);
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1001), reason, .. }
            if kind == "beta" && reason == "server shutdown"),
        "{e:?}"
    );
}

#[tokio::test]
async fn stop_closes_pending_sockets_1001_and_authenticated_ones_without_a_code() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut pending = hub.pending("probe").await;
    hub.hub.stop().await;
    assert_eq!(alpha.closed().await, (1005, String::new()));
    assert_eq!(pending.closed().await, (1001, "hub stopped".to_owned()));
    let h = hub.hub.health().await;
    assert_eq!(
        (h.peer_count, h.pending_socket_count, h.topic_count),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_the_socket_1009() {
    let hub = TestHub::start(
        HubConfig::builder(Secret::shared(S))
            .max_message_bytes(4096)
            .build()
            .unwrap(),
    )
    .await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut alpha = hub.peer("alpha", S).await;

    // Exactly at the cap is fine.
    let id = fresh_id("cap");
    let at = |n: usize| {
        let data = json!({"rpcType": "link.health", "rpcData": "x".repeat(n)});
        frame(
            &k,
            &id,
            "rpc.request",
            Some("alpha"),
            Some("server"),
            Some(&data),
        )
    };
    let f = at(4096 - at(0).len());
    assert_eq!(f.len(), 4096);
    alpha.send_raw(&f).await;
    assert_eq!(alpha.recv("rpc.response").await.id(), id);

    // One byte more, and the WebSocket layer closes with 1009.
    let f = at(4097 - at(0).len());
    alpha.send_raw(&f).await;
    assert_eq!(alpha.closed().await, (1009, String::new()));
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1009), .. } if kind == "alpha")
    );
    assert!(
        !drain_events(&mut rx)
            .iter()
            .any(|e| matches!(&**e, HubEvent::ProtocolError { .. })),
        "closed by the WebSocket layer, not dropped by the parser"
    );

    // Binary frames and pending sockets too.
    let mut raw = hub.raw_peer().await;
    raw.send_binary(vec![b' '; 5000]).await;
    assert_eq!(raw.closed().await, (1009, String::new()));
}

/// What the hub reports for a Rust client: the 1001 it sent when it closes
/// (not 1006 once its writer is gone), and 1005 when the client's `stop()`
/// closes without a status code (as the reference client does).
#[tokio::test]
async fn peer_disconnect_reports_the_close_that_was_made() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let alpha = link_test_support::ready(hub.client("alpha")).await;
    let beta = link_test_support::ready(hub.client("beta")).await;

    beta.stop().await;
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1005), .. } if kind == "beta"),
        "{e:?}"
    );

    assert_eq!(hub.hub.close_all(Some(1001), "server shutdown").await, 1);
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    assert!(
        matches!(&*e, HubEvent::PeerDisconnect { kind, code: Some(1001), reason, .. }
            if kind == "alpha" && reason == "server shutdown"),
        "{e:?}"
    );
    alpha.stop().await;
}
