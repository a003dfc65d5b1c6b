//! Runs the chosen scenarios against the hub (and nats-server), each
//! `runs` times, link and NATS back to back, and folds the runs into
//! medians.

use crate::context::Ctx;
use crate::error::BenchError;
use crate::nats_spec::NatsSpec;
use crate::options::{BenchOptions, Scenario};
use crate::progress::Progress;
use crate::report::{BenchReport, Outcome, medians};
use crate::sys::{Machine, ensure_open_files};
use crate::target::{HubSpec, HubTarget};

/// Descriptors beyond the peers' sockets (listeners, files, the runtime).
const SPARE_FILES: u64 = 512;

/// Runs a benchmark: starts the hub (and nats-server) as asked, runs every
/// scenario `runs` times, stops what it started, and reports the medians.
pub async fn run(
    opts: &BenchOptions,
    hub: &HubSpec,
    nats: Option<&NatsSpec>,
    progress: &Progress,
) -> Result<BenchReport, BenchError> {
    opts.validate()?;
    if nats.is_some() && !cfg!(feature = "nats") {
        return Err(BenchError::Nats(
            "this build has no NATS support: rebuild with `--features nats`".into(),
        ));
    }
    ensure_open_files(files_needed(opts, hub))?;
    let target = HubTarget::start(hub, opts.peer_updates, opts.tls, opts.hub_flood_limit()).await?;
    let payload = crate::payload::payload(opts.payload_bytes);
    #[cfg(feature = "nats")]
    let nats_target = match nats {
        Some(spec) => match crate::nats::NatsTarget::start(spec, false).await {
            Ok(t) => Some(t),
            Err(e) => {
                target.stop().await;
                return Err(e);
            }
        },
        None => None,
    };
    let mut all: Vec<Outcome> = Vec::new();
    let mut failure = None;
    'scenarios: for &scenario in &opts.scenarios {
        for run in 0..opts.runs {
            let ctx = Ctx::new(opts, &payload, progress);
            // Memory per connection is only meaningful on a fresh hub: a
            // warm one reuses what the previous run freed. A child hub (or
            // a cluster) is restarted for every further `connections` run.
            let fresh = if run > 0
                && scenario == Scenario::Connections
                && matches!(hub, HubSpec::Child { .. } | HubSpec::Cluster { .. })
            {
                match HubTarget::start(hub, opts.peer_updates, opts.tls, opts.hub_flood_limit())
                    .await
                {
                    Ok(t) => Some(t),
                    Err(e) => {
                        failure = Some(e);
                        break 'scenarios;
                    }
                }
            } else {
                None
            };
            let outcome = crate::link::run(&ctx, fresh.as_ref().unwrap_or(&target), scenario).await;
            if let Some(t) = fresh {
                t.stop().await;
            }
            match outcome {
                Ok(o) => all.extend(o),
                Err(e) => {
                    failure = Some(e);
                    break 'scenarios;
                }
            }
            #[cfg(feature = "nats")]
            if let Some(n) = &nats_target {
                let ctx = Ctx::new(opts, &payload, progress);
                match crate::nats::run(&ctx, n, scenario).await {
                    Ok(o) => all.extend(o),
                    Err(e) => {
                        failure = Some(e);
                        break 'scenarios;
                    }
                }
            }
        }
    }
    let info = target.info();
    target.stop().await;
    #[cfg(feature = "nats")]
    let nats_url = match nats_target {
        Some(n) => {
            let url = n.url.clone();
            n.stop().await;
            Some(url)
        }
        None => None,
    };
    #[cfg(not(feature = "nats"))]
    let nats_url: Option<String> = None;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(BenchReport {
        hub: info,
        nats: nats_url,
        machine: Machine::current(),
        payload_bytes: opts.payload_bytes,
        receiver: opts.receiver.as_str(),
        clients: opts.clients.as_str(),
        runs: opts.runs,
        results: medians(&all),
    })
}

/// Open files the run may need: both ends of every socket when the hub is
/// in this process, one end otherwise.
fn files_needed(opts: &BenchOptions, hub: &HubSpec) -> u64 {
    let ends = if matches!(hub, HubSpec::Embedded) {
        2
    } else {
        1
    };
    let mut peers = (opts.subscribers + opts.slow + 2) as u64;
    if opts.scenarios.contains(&Scenario::Connections) {
        peers = peers.max(opts.connections as u64);
    }
    if opts.scenarios.contains(&Scenario::Flood) {
        // Each phase's pairs, plus the flooder and its subscriber.
        peers = peers.max(2 * opts.flood_pairs as u64 + 2);
    }
    if opts.scenarios.contains(&Scenario::Hostile) {
        peers = peers.max(crate::link::HOSTILE_SOCKETS);
    }
    peers * ends + SPARE_FILES
}
