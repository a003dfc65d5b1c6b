//! The four-service deployment end to end in one process on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use link_examples::four_services::{self, COORDINATOR, STEPS, WORKER};
use link_test_support::ports::LOOPBACK_ANY_PORT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_with_progress_and_credentials_from_the_vault() {
    let jobs = 4;
    let bind = LOOPBACK_ANY_PORT;
    // Hang guard only: the run ends on its own results.
    let report = tokio::time::timeout(Duration::from_secs(30), four_services::run(bind, jobs))
        .await
        .expect("the deployment hung")
        .expect("the deployment failed");

    assert!(report.hub_url.starts_with("ws://127.0.0.1:"));
    assert!(!report.hub_url.ends_with(":0"));

    // Credentials: loaded from the vault, names only in the report.
    assert_eq!(report.secrets_loaded, ["API_TOKEN", "DB_PASSWORD"]);

    // Every job dispatched once and answered by the worker, authorized.
    let numbers: Vec<u64> = report.results.iter().map(|r| r.job).collect();
    assert_eq!(numbers, (1..=jobs).collect::<Vec<_>>());
    for r in &report.results {
        assert_eq!(r.result["job"], r.job);
        assert_eq!(r.result["output"], format!("PAYLOAD {}", r.job));
        assert_eq!(r.result["authorized"], true);
    }

    // Every step of every job reported to the coordinator by direct message.
    assert_eq!(
        report.progress.len(),
        usize::try_from(jobs * STEPS).unwrap()
    );
    let seen: BTreeSet<(u64, u64)> = report.progress.iter().map(|p| (p.job, p.step)).collect();
    let want: BTreeSet<(u64, u64)> = (1..=jobs)
        .flat_map(|j| (1..=STEPS).map(move |s| (j, s)))
        .collect();
    assert_eq!(seen, want);
    assert!(
        report
            .progress
            .iter()
            .all(|p| p.from == WORKER && p.of == STEPS)
    );
    // Per job, steps arrive in order (one sender, one hub, one socket).
    for job in 1..=jobs {
        let steps: Vec<u64> = report
            .progress
            .iter()
            .filter(|p| p.job == job)
            .map(|p| p.step)
            .collect();
        assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>(), "job {job}");
    }

    // The vault's rotation reached the worker through secs.changed.jobs.
    assert_eq!(report.rotated, ["API_TOKEN"]);
    assert_ne!(WORKER, COORDINATOR);
}

#[tokio::test]
async fn keys_are_per_peer() {
    let keys = four_services::generate_keys().unwrap();
    let kinds: Vec<&str> = keys.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["coordinator", "vault", "worker"]);
    let distinct: BTreeSet<&String> = keys.values().collect();
    assert_eq!(distinct.len(), 3, "every kind has its own key");
    assert!(keys.values().all(|k| k.len() == 64));
}
