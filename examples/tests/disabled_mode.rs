//! The disabled-mode service keeps working without a bus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use link_examples::disabled_mode;

#[tokio::test]
async fn a_disabled_client_fails_fast_and_the_service_works_on() {
    let client = disabled_mode::disabled_client().unwrap();
    assert!(client.is_disabled());
    let report = tokio::time::timeout(Duration::from_secs(5), disabled_mode::run(&client, 6))
        .await
        .expect("a disabled link never waits")
        .unwrap();
    assert!(report.disabled);
    assert_eq!(report.processed, 6);
    assert_eq!(
        report.local_prices, 6,
        "every price came from the local list"
    );
    assert_eq!((report.published, report.skipped), (0, 6));
    // Orders 1, 2, 3: 2 × 1250, 3 × 899, 1 × 499; orders 4..=6 the same.
    assert_eq!(report.total_cents, 2 * (2 * 1250 + 3 * 899 + 499));
    assert_eq!(
        report.codes.iter().map(String::as_str).collect::<Vec<_>>(),
        ["LINK_NOT_READY"]
    );
}

/// The example's header says to run it on a real bus too: without a
/// pricing peer (`RPC_NO_TARGET`) it uses the local prices and publishes.
#[tokio::test]
async fn on_a_bus_without_pricing_the_service_works_on() {
    let hub = link_test_support::TestHub::shared("orders-secret").await;
    let client = link_test_support::ready(hub.client(disabled_mode::KIND)).await;
    assert!(!client.is_disabled());
    let report = tokio::time::timeout(Duration::from_secs(30), disabled_mode::run(&client, 6))
        .await
        .expect("hang guard")
        .unwrap();
    assert!(!report.disabled);
    assert_eq!((report.processed, report.local_prices), (6, 6));
    assert_eq!((report.published, report.skipped), (6, 0));
    assert_eq!(report.total_cents, 2 * (2 * 1250 + 3 * 899 + 499));
    assert!(report.codes.contains("RPC_NO_TARGET"), "{:?}", report.codes);
}

/// With a pricing peer on the bus, its prices are used.
#[tokio::test]
async fn on_a_bus_with_pricing_its_prices_are_used() {
    let hub = link_test_support::TestHub::shared("orders-secret").await;
    let _pricing =
        link_test_support::ready(hub.client("pricing").handler("price.quote", |_| async {
            Ok(serde_json::json!({ "unitCents": 100 }))
        }))
        .await;
    let client = link_test_support::ready(hub.client(disabled_mode::KIND)).await;
    let report = tokio::time::timeout(Duration::from_secs(30), disabled_mode::run(&client, 6))
        .await
        .expect("hang guard")
        .unwrap();
    assert_eq!((report.processed, report.local_prices), (6, 0));
    // Quantities 2, 3, 1, 2, 3, 1 at 100 cents.
    assert_eq!(report.total_cents, 1200);
    assert!(report.codes.is_empty(), "{:?}", report.codes);
}
