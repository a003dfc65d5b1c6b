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
