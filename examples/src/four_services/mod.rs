//! The four-service deployment: a hub with per-peer keys, a secrets vault,
//! a worker and a coordinator.
//!
//! ```text
//!                    ┌──────────── hub (per-peer keys) ───────────┐
//!   vault ──────────►│ secs.get ◄── worker      job.run ◄── coordinator
//!    │ publishes     │ secs.changed.jobs ──► worker               │
//!    └ rotations     │ worker ── direct job.progress ──► coordinator
//!                    └────────────────────────────────────────────┘
//! ```
//!
//! - [`Vault`] answers `secs.get` (`{"path"}` → `{"value"}`) from an
//!   in-memory store and publishes `secs.changed.<ns>` when a secret is
//!   rotated (the wire contract of `link::helpers::secrets`).
//! - [`Worker`] serves `job.run`. At boot it waits for the vault
//!   (`wait_for_peer`), loads its credentials with `load_secrets` (retried
//!   while the failure is transient), then follows rotations with
//!   `watch_secrets`. Jobs wait for the credentials and report each step
//!   to their caller with a `job.progress` direct message.
//! - [`Coordinator`] waits for the worker, dispatches jobs with
//!   `rpc_with_retry` and collects the progress messages.
//!
//! [`run`] starts all four in one process and returns a [`Report`]; the
//! `four_services` example also runs each one as its own process
//! (`--role hub|vault|worker|coordinator`).

mod coordinator;
mod vault;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use link::ClientConfig;
use link::hub::{HubConfig, HubServer, HubServerBuilder, Secret};
use serde::Serialize;

pub use self::coordinator::{Coordinator, JobResult, Progress};
pub use self::vault::Vault;
pub use self::worker::Worker;
use crate::{Result, guard};

/// The vault's kind.
pub const VAULT: &str = "vault";
/// The worker's kind.
pub const WORKER: &str = "worker";
/// The coordinator's kind.
pub const COORDINATOR: &str = "coordinator";
/// Every service kind; each gets its own key.
pub const KINDS: [&str; 3] = [VAULT, WORKER, COORDINATOR];

/// The worker's credentials: variable name → vault path.
pub const CREDENTIALS: [(&str, &str); 2] = [
    ("API_TOKEN", "sec/jobs/api-token"),
    ("DB_PASSWORD", "sec/jobs/db/password"),
];
/// The secret [`run`] rotates once the jobs are done.
pub const ROTATED_PATH: &str = "sec/jobs/api-token";

/// Progress messages each job sends.
pub const STEPS: u64 = 3;
/// The RPC the worker serves.
pub const JOB_RPC: &str = "job.run";
/// The direct message type of progress reports.
pub const PROGRESS: &str = "job.progress";

/// Bound on each phase of [`run`]: a hang guard, not a schedule.
const PHASE_LIMIT: Duration = Duration::from_secs(10);

/// What a one-process run did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The hub's WebSocket URL.
    pub hub_url: String,
    /// Credential names the worker loaded from the vault (values stay secret).
    pub secrets_loaded: Vec<String>,
    /// One result per job, in dispatch order.
    pub results: Vec<JobResult>,
    /// Progress messages the coordinator received, in arrival order.
    pub progress: Vec<Progress>,
    /// Credential names the worker refreshed after `secs.changed`.
    pub rotated: Vec<String>,
}

/// A fresh random key for every kind of [`KINDS`]: the content of a
/// `--keys` file (`{"kind": "key"}`), as `link-cli hub --keys` reads it.
pub fn generate_keys() -> Result<BTreeMap<String, String>> {
    KINDS
        .iter()
        .map(|kind| {
            let key = link::hub::random_secret().ok_or("cannot generate a random key")?;
            Ok(((*kind).to_owned(), key))
        })
        .collect()
}

/// A hub server that knows each kind by its own key: only the kinds of
/// `keys` can join, and each signs with its own key.
pub fn hub(bind: SocketAddr, keys: &BTreeMap<String, String>) -> Result<HubServerBuilder> {
    let config = HubConfig::builder(Secret::per_kind(keys.clone())).build()?;
    Ok(HubServer::builder(config).bind(bind))
}

/// Runs the whole deployment in one process: a hub on `bind` (port 0
/// picks one), the three services, `jobs` jobs, then one secret rotation;
/// stops everything and reports.
pub async fn run(bind: SocketAddr, jobs: u64) -> Result<Report> {
    let keys = generate_keys()?;
    let server = hub(bind, &keys)?.handle_signals(false).build()?;
    server.start().await?;
    let url = server.url().ok_or("the hub has no address")?;
    tracing::info!(%url, "hub started with per-peer keys");
    let base = |kind: &str| -> Result<_> {
        let key = keys.get(kind).ok_or("no key for kind")?;
        Ok(ClientConfig::builder()
            .url(url.as_str())
            .secret(key.as_str()))
    };

    // The worker starts first: it waits for the vault before loading its
    // credentials, and the coordinator waits for the worker.
    let worker = Worker::start(base(WORKER)?)?;
    let mut coordinator = Coordinator::start(base(COORDINATOR)?)?;
    let vault = Vault::start(base(VAULT)?, demo_secrets()?)?;

    let outcome = async {
        let results = guard("jobs", PHASE_LIMIT, coordinator.dispatch(jobs)).await?;
        let expected = usize::try_from(jobs * STEPS)?;
        let progress = guard(
            "progress",
            PHASE_LIMIT,
            coordinator.collect_progress(expected),
        )
        .await?;
        let secrets_loaded = guard("credentials", PHASE_LIMIT, worker.credentials()).await?;

        // Rotate a secret once the worker follows `secs.changed.jobs`.
        guard("watch", PHASE_LIMIT, worker.watching()).await?;
        vault.rotate(ROTATED_PATH, &new_value("tok")?)?;
        let rotated = guard("rotation", PHASE_LIMIT, worker.next_rotation()).await?;
        Ok::<_, crate::Error>(Report {
            hub_url: url.clone(),
            secrets_loaded,
            results,
            progress,
            rotated: vec![rotated],
        })
    }
    .await;

    // Producers first, the hub last.
    coordinator.stop().await;
    worker.stop().await;
    vault.stop().await;
    server.stop().await?;
    outcome
}

/// The vault's initial store: a random value for every credential path.
pub fn demo_secrets() -> Result<BTreeMap<String, String>> {
    CREDENTIALS
        .iter()
        .map(|(name, path)| Ok(((*path).to_owned(), new_value(&name.to_lowercase())?)))
        .collect()
}

/// `<prefix>-<16 random hex digits>`.
fn new_value(prefix: &str) -> Result<String> {
    let random = link::hub::random_secret().ok_or("cannot generate a random value")?;
    Ok(format!("{prefix}-{}", &random[..16]))
}
