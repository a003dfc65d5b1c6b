//! The graceful-shutdown example stops its resources in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use link::client::Phase;
use link::helpers::lifecycle::StepStatus;
use link::{ClientConfig, LinkClient, LinkEvent};
use link_examples::graceful_shutdown::{self, STEPS};
use link_test_support::ports::LOOPBACK_ANY_PORT;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_order_and_peers_see_1001() {
    let service = graceful_shutdown::start(
        LOOPBACK_ANY_PORT,
        "s3cret",
        Duration::from_millis(20),
        LIMIT,
    )
    .await
    .unwrap();

    // Another peer on the same hub hears the ticker.
    let listener = LinkClient::new(
        ClientConfig::builder()
            .url(service.server.url().unwrap())
            .secret("s3cret")
            .kind("listener")
            .build()
            .unwrap(),
    );
    let mut ticks = listener.subscribe("clock.tick").unwrap();
    listener.ready(Some(LIMIT)).await.unwrap();
    let tick = tokio::time::timeout(LIMIT, ticks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tick.from, "clock");
    assert!(service.ticks() >= 1);

    let closed = listener.wait_for(|e| matches!(e, LinkEvent::Disconnect { .. }), Some(LIMIT));
    let outcome = service.shutdown.shutdown("test").await;
    assert!(outcome.is_clean(), "{outcome:?}");
    assert_eq!(outcome.reason, "test");
    let names: Vec<&str> = outcome.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STEPS);
    assert!(outcome.steps.iter().all(|s| s.status == StepStatus::Ok));

    assert!(service.server.is_stopped());
    assert_eq!(service.client.phase(), Phase::Stopped);
    match closed.await.as_deref() {
        Some(LinkEvent::Disconnect { code, reason, .. }) => {
            assert_eq!(*code, Some(1001));
            assert_eq!(reason, "server shutdown");
        }
        other => panic!("no disconnect: {other:?}"),
    }

    // A second trigger is a no-op with the same outcome.
    assert_eq!(service.shutdown.shutdown("again").await, outcome);
    listener.stop().await;
}
