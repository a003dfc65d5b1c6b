//! protocol §0.1 (and §16's first observation): replaying captured frames
//! after their sender disconnected. The reference forgets a kind's seen ids
//! when it disconnects, so a captured hello plus a captured `direct`,
//! resent on a fresh socket within the window, authenticate and deliver
//! again. We keep each sender's ids for the whole window: the hello is
//! `replay-id`, the direct is then `pre-hello-message`, nothing reaches
//! the target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::SinkExt;
use link_hub::HubEvent;
use link_protocol::DropReason;
use link_test_support::{
    TestHub, finish, frame, fresh_id, hello_frame, key, next_event, protocol_error,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const S: &str = "demo-secret";

#[tokio::test]
async fn captured_frames_replayed_after_the_sender_left_are_refused() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let k = key(S);
    let mut beta = hub.peer("beta", S).await;
    let mut gamma = hub.peer("gamma", S).await;

    // alpha is a socket we script, so we hold its exact frames.
    let hello = hello_frame(&k, &fresh_id("alpha-hello"), "alpha");
    let direct = frame(
        &k,
        &fresh_id("alpha-direct"),
        "direct",
        Some("alpha"),
        Some("beta"),
        Some(&json!({"directType": "pay", "directData": {"amount": 100}})),
    );
    let mut alpha = hub.raw_peer().await;
    alpha.send_text(hello.clone()).await;
    alpha.recv(&k, "hello.ack").await;
    alpha.send_text(direct.clone()).await;
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap()["directData"], json!({"amount": 100}));

    // While alpha is connected, a replayed hello is refused (as in the
    // reference).
    let mut early = hub.raw_peer().await;
    early.send_text(hello.clone()).await;
    let e = protocol_error(&mut rx, DropReason::ReplayId).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("hello"))
    );

    // alpha leaves.
    alpha.ws.send(Message::Close(None)).await.unwrap();
    finish(&mut alpha.ws).await;
    next_event(
        &mut rx,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind == "alpha"),
    )
    .await;

    // The captured frames, verbatim, on a fresh socket, well inside the
    // replay window.
    let mut attacker = hub.raw_peer().await;
    attacker.send_text(hello.clone()).await;
    let e = protocol_error(&mut rx, DropReason::ReplayId).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("hello"))
    );
    attacker.send_text(direct.clone()).await;
    let e = protocol_error(&mut rx, DropReason::PreHelloMessage).await;
    assert_eq!(e.msg_type.as_deref(), Some("direct"));

    // Nothing was delivered: beta's next direct is gamma's marker, and
    // alpha is not registered.
    gamma
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "marker"})),
        )
        .await;
    assert_eq!(
        beta.recv("direct").await.data().unwrap()["directType"],
        "marker"
    );
    let kinds: Vec<_> = hub
        .hub
        .state()
        .await
        .peers
        .into_iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(kinds, ["beta", "gamma"]);
    assert!(
        !link_test_support::drain_events(&mut rx)
            .iter()
            .any(|e| matches!(
                &**e,
                HubEvent::PeerConnect { kind, .. } if kind == "alpha"
            ))
    );

    // The socket merely stays pending (like any bad hello), and the ids
    // outlive the reconnect: once it authenticates with a fresh hello as
    // alpha, the captured direct is still a replay.
    attacker.hello(&k, "alpha").await;
    attacker.send_text(direct).await;
    let e = protocol_error(&mut rx, DropReason::ReplayId).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("direct"))
    );
    gamma
        .send(
            "direct",
            Some("beta"),
            Some(json!({"directType": "marker2"})),
        )
        .await;
    assert_eq!(
        beta.recv("direct").await.data().unwrap()["directType"],
        "marker2"
    );
}
