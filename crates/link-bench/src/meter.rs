//! What a scenario's measured phase cost the hubs: their CPU time (summed
//! over a cluster's hubs; none for an embedded hub) and, in a cluster,
//! the messages they handed to NATS (the increase of the sum over hubs of
//! `link_hub_cluster_published_total`) and the nats-server's CPU time.

use crate::report::{CPU_PER_CALL, CPU_PER_DELIVERY, Metric, Outcome};
use crate::sys::CpuMeter;
use crate::target::HubTarget;

/// Messages the hubs handed to NATS over the measured phase.
pub const CROSSINGS: &str = "NATS crossings";
/// The same per RPC (request and response).
pub const CROSSINGS_PER_CALL: &str = "crossings/call";
/// The same per message sent or published by the producer(s).
pub const CROSSINGS_PER_MSG: &str = "crossings/msg";
/// The same per peer opened (`connections`).
pub const CROSSINGS_PER_PEER: &str = "crossings/peer";

/// A cluster's nats-server CPU time per call, message or delivery (named
/// after the hubs' figure it goes with).
fn nats_cpu_name(hub_cpu: &str) -> &'static str {
    match hub_cpu {
        CPU_PER_CALL => "nats-server CPU µs/call",
        CPU_PER_DELIVERY => "nats-server CPU µs/delivery",
        _ => "nats-server CPU µs/msg",
    }
}

/// Started just before a measured phase.
pub(crate) struct HubMeter {
    cpu: Option<Vec<CpuMeter>>,
    nats_cpu: Option<CpuMeter>,
    published: Option<u64>,
}

/// What the phase cost.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HubCost {
    /// CPU time of every hub, µs (none when a hub's cannot be read).
    pub(crate) cpu_us: Option<f64>,
    /// Messages handed to NATS (a cluster only).
    pub(crate) crossings: Option<u64>,
    /// CPU time of a cluster's nats-server, µs.
    pub(crate) nats_cpu_us: Option<f64>,
}

impl HubMeter {
    /// Reads the counters (the scrape first: its CPU is not the phase's).
    pub(crate) async fn start(hub: &HubTarget) -> Self {
        let published = hub.cluster_published().await;
        let pids = hub.cpu_pids();
        let cpu = (!pids.is_empty())
            .then(|| pids.into_iter().map(|p| CpuMeter::start(Some(p))).collect())
            .flatten();
        let nats_cpu = CpuMeter::start(hub.nats_pid());
        Self {
            cpu,
            nats_cpu,
            published,
        }
    }

    /// Reads them again (CPU first) and takes the differences.
    pub(crate) async fn stop(self, hub: &HubTarget) -> HubCost {
        let cpu_us = self
            .cpu
            .and_then(|meters| meters.iter().map(CpuMeter::used_us).sum::<Option<f64>>());
        let nats_cpu_us = self.nats_cpu.as_ref().and_then(CpuMeter::used_us);
        let crossings = match self.published {
            Some(before) => hub
                .cluster_published()
                .await
                .map(|after| after.saturating_sub(before)),
            None => None,
        };
        HubCost {
            cpu_us,
            crossings,
            nats_cpu_us,
        }
    }
}

impl HubCost {
    /// CPU µs per unit.
    pub(crate) fn cpu_per(&self, units: u64) -> Option<f64> {
        self.cpu_us
            .filter(|_| units > 0)
            .map(|us| us / units as f64)
    }

    /// Adds the CPU per unit (named by `cpu`: per call, message or
    /// delivery) and the crossings, in total and per `messages` (named by
    /// `per`: per call, message or peer).
    pub(crate) fn push(
        &self,
        o: &mut Outcome,
        cpu: &'static str,
        cpu_units: u64,
        per: &'static str,
        messages: u64,
    ) {
        o.push_cpu(cpu, self.cpu_per(cpu_units));
        if let Some(us) = self.nats_cpu_us.filter(|_| cpu_units > 0) {
            o.metrics
                .push(Metric::lower(nats_cpu_name(cpu), us / cpu_units as f64));
        }
        if let Some(c) = self.crossings {
            o.metrics.push(Metric::lower(CROSSINGS, c as f64));
            if messages > 0 {
                o.metrics
                    .push(Metric::lower(per, c as f64 / messages as f64));
            }
        }
    }
}
