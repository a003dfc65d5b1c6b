//! A short soak against an embedded hub: with peers churning while
//! traffic runs, nothing that had to arrive is lost, duplicated or out of
//! order, every RPC has an outcome, and the peer lists settle. (The memory
//! verdict needs a longer run against a child hub: `cargo xtask soak`.)

use std::time::Duration;

use link_bench::soak::{SoakOptions, run};
use link_bench::{HubSpec, Progress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_with_churn_loses_nothing() {
    let opts = SoakOptions {
        duration: Duration::from_secs(6),
        warmup: Some(Duration::from_secs(1)),
        peers: 8,
        talkers: 3,
        churn: 1.0,
        rate: 20.0,
        drain: Duration::from_secs(2),
        downtime: Duration::from_millis(100),
        ..SoakOptions::default()
    };
    let report = run(&opts, &HubSpec::Embedded, &Progress::hidden())
        .await
        .unwrap();
    let d = report.delivery;
    // The run did what a soak is for: churn, and traffic that had to arrive.
    assert!(report.churns > 0, "{}", report.table());
    assert!(
        d.must_arrive > 0 && report.rpcs.calls > 0,
        "{}",
        report.table()
    );
    assert_eq!(
        (d.lost, d.duplicated, d.out_of_order),
        (0, 0, 0),
        "{}",
        report.table()
    );
    assert_eq!(report.rpcs.unanswered(), 0, "{}", report.table());
    assert_eq!(report.rpcs.wrong_answers, 0);
    assert_eq!(report.dropped, 0);
    assert!(!report.checkpoints.is_empty());
    assert_eq!(report.lists_wrong(), 0, "{:?}", report.checkpoints);
    assert!(report.samples.iter().all(|s| s.rss.is_some()));
    assert!(
        report
            .verdict()
            .contains(" lost=0 duplicated=0 unanswered=0 ")
    );
}
