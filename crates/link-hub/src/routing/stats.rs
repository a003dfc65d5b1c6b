//! What only the table sees, counted for `/metrics` in plain integers: the
//! table is one task's data, so counting costs an add, never an atomic or a
//! lock. A scrape copies it out ([`Routing::stats`](super::Routing::stats))
//! and `crate::metrics` turns the copy into exposition text.
//!
//! Relayed RPCs are timed by sampling: one in [`RPC_SAMPLE_EVERY`] is held
//! in `rpc_timer.rs` until its answer is forwarded, so the histogram's
//! quantiles are those of every call at a sixteenth of the bookkeeping
//! (its `_count` counts the sampled calls; the frame counters count all).

use std::collections::BTreeMap;
use std::time::Duration;

/// One relayed RPC in this many is timed.
pub(crate) const RPC_SAMPLE_EVERY: u32 = 16;

/// Latency bucket bounds in seconds, 50 µs to 30 s: a relayed RPC between
/// two local peers takes tens of microseconds, a slow handler seconds.
pub(crate) const RPC_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram over [`RPC_BUCKETS`] (plus `+Inf`), in plain
/// integers.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub(crate) buckets: [u64; RPC_BUCKETS.len() + 1],
    pub(crate) sum_seconds: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = RPC_BUCKETS.partition_point(|bound| *bound < s);
        self.buckets[i] += 1;
        self.sum_seconds += s;
        self.count += 1;
    }
}

/// The table's counters and histograms, and its gauges read at copy time.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableStats {
    /// Sockets accepted (authenticated or not).
    pub(crate) sockets_attached: u64,
    /// Messages queued for a peer whose socket was full.
    pub(crate) backpressure: u64,
    /// Messages refused because the recipient's outbox was full.
    pub(crate) outbox_overflow: u64,
    /// Frames the table dropped, by protocol-error reason.
    pub(crate) dropped: BTreeMap<&'static str, u64>,
    /// Sampled relayed RPCs: request forwarded -> answer forwarded.
    pub(crate) rpc_relayed: Histogram,
    /// Sampled relayed RPCs given up because the timer was full.
    pub(crate) rpc_untimed: u64,
    /// Topic messages and statuses not handed to the cluster (NATS down or
    /// its queue full).
    pub(crate) cluster_refused: u64,
    /// The cluster's figures (`None` on a lone hub), read at copy time.
    pub(crate) cluster: Option<ClusterStats>,
    /// RPCs to the hub, by rpc type (only types the hub serves: bounded).
    pub(crate) rpc_server: BTreeMap<String, Histogram>,
    pub(crate) gauges: Gauges,
}

/// Read from the table when a scrape copies the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub(crate) sockets: usize,
    pub(crate) pending_sockets: usize,
    pub(crate) peers: usize,
    pub(crate) topics: usize,
    pub(crate) outbox_bytes: usize,
    pub(crate) queued_sockets: usize,
    pub(crate) server_rpc_in_flight: usize,
    pub(crate) relayed_rpc_in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50)); // on the first bound: `le` is inclusive
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(31));
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[RPC_BUCKETS.len()], 1, "+Inf");
        assert_eq!(h.count, 3);
        assert!((h.sum_seconds - 31.000_101).abs() < 1e-9);
    }
}

/// A clustered hub's figures for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterStats {
    /// Other hubs alive.
    pub(crate) hubs: usize,
    /// Kinds held on other hubs (alive).
    pub(crate) remote_peers: usize,
    /// Messages sealed and handed to NATS.
    pub(crate) published: u64,
    /// Messages from NATS dropped (bad MAC, stale, replayed, malformed).
    pub(crate) rejected: u64,
    /// Slow-consumer events from async-nats.
    pub(crate) slow_consumers: u64,
    /// Deliveries refused at the link (NATS down or its queue full).
    pub(crate) refused: u64,
    /// NATS is connected.
    pub(crate) up: bool,
}
