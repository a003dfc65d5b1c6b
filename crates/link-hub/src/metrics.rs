//! The hub's Prometheus metrics (docs/operations.md, *Metrics*), kept with
//! the official `prometheus-client` crate and served as OpenMetrics text at
//! `GET /metrics` ([`Hub::metrics`](crate::Hub::metrics)).
//!
//! ```text
//!  connection.rs reader   bytes in, frames in by type, drops   ─┐ relaxed atomic adds
//!  connection.rs writer   frames and bytes out by type         ─┤ (no lock, no lookup:
//!  shared.rs              drops by reason                      ─┤  the per-type counters
//!  routing/ (the table)   backpressure, overflow, RPC latency  ─┘  are made up front)
//!  scrape                 gauges read from the table (sockets, peers, outbox bytes…)
//! ```
//!
//! Nothing here costs more than a relaxed atomic add per frame; the gauges
//! are read only when someone scrapes. Metric names start with `link_hub_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use link_protocol::msg_type;

/// The `Content-Type` of the exposition text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, 50 µs to 30 s: a relayed RPC between two
/// local peers takes tens of microseconds, a slow handler seconds.
pub(crate) const RPC_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `type` label values: the protocol's message types, then `other`
/// for any type the protocol does not define (peers may send them; the
/// hub ignores them), so the label's cardinality is fixed.
const TYPES: [&str; 13] = [
    msg_type::HELLO,
    msg_type::HELLO_ACK,
    msg_type::PEERS_UPDATE,
    msg_type::STATUS_SNAPSHOT,
    msg_type::STATUS_UPDATE,
    msg_type::RPC_REQUEST,
    msg_type::RPC_RESPONSE,
    msg_type::RPC_CANCEL,
    msg_type::TOPIC_SUBSCRIBE,
    msg_type::TOPIC_UNSUBSCRIBE,
    msg_type::TOPIC_MESSAGE,
    msg_type::DIRECT,
    "other",
];

/// Index of a message type in [`TYPES`].
fn type_index(t: &str) -> usize {
    TYPES[..TYPES.len() - 1]
        .iter()
        .position(|known| *known == t)
        .unwrap_or(TYPES.len() - 1)
}

type Label = [(&'static str, &'static str); 1];
type OwnedLabel = [(&'static str, String); 1];
type HistogramFamily = Family<OwnedLabel, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_BUCKETS)
}

/// What the routing table reports at scrape time.
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

/// Every metric of one hub. Cheap to share (`Arc`); every field is a set
/// of atomics (the registry holds clones of the same counters).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    frames_in: [Counter; TYPES.len()],
    frames_out: [Counter; TYPES.len()],
    bytes_in: Counter,
    bytes_out: Counter,
    dropped: Family<Label, Counter>,
    pub(crate) sockets_attached: Counter,
    pub(crate) backpressure: Counter,
    pub(crate) outbox_overflow: Counter,
    pub(crate) rpc_relayed: Histogram,
    pub(crate) rpc_untimed: Counter,
    rpc_server: HistogramFamily,
    gauges: [Gauge; 8],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under `link_hub_`.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("link_hub");
        let frames_in_family = Family::<Label, Counter>::default();
        let frames_out_family = Family::<Label, Counter>::default();
        // Made up front, so that counting a frame is one atomic add and every
        // type shows (at 0) from the first scrape.
        let frames_in = TYPES.map(|t| frames_in_family.get_or_create_owned(&[("type", t)]));
        let frames_out = TYPES.map(|t| frames_out_family.get_or_create_owned(&[("type", t)]));
        registry.register(
            "frames_in",
            "Verified frames read from peers, by message type (hello included)",
            frames_in_family,
        );
        registry.register(
            "frames_out",
            "Frames written to peers, by message type",
            frames_out_family,
        );
        let bytes_in = Counter::default();
        registry.register_with_unit(
            "received",
            "Bytes of data frames read from peers (dropped ones included)",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register_with_unit(
            "sent",
            "Bytes of frames handed to peers' sockets",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let dropped = Family::<Label, Counter>::default();
        registry.register(
            "frames_dropped",
            "Frames dropped, by reason (the protocol-error reasons: bad-signature, replay-id…)",
            dropped.clone(),
        );
        let sockets_attached = Counter::default();
        registry.register(
            "sockets_attached",
            "Sockets accepted (authenticated or not)",
            sockets_attached.clone(),
        );
        let backpressure = Counter::default();
        registry.register(
            "backpressure",
            "Backpressure episodes: a message queued for a peer whose socket is full",
            backpressure.clone(),
        );
        let outbox_overflow = Counter::default();
        registry.register(
            "outbox_overflow",
            "Messages refused because the recipient's outbox was full",
            outbox_overflow.clone(),
        );
        let rpc_relayed = rpc_histogram();
        registry.register_with_unit(
            "rpc_relayed_duration",
            "Relayed RPCs: request forwarded to its target -> response forwarded to its caller",
            Unit::Seconds,
            rpc_relayed.clone(),
        );
        let rpc_untimed = Counter::default();
        registry.register(
            "rpc_relayed_untimed",
            "Relayed RPCs whose timing was given up: the in-flight table was full (oldest first)",
            rpc_untimed.clone(),
        );
        let rpc_server: HistogramFamily = Family::new_with_constructor(rpc_histogram);
        registry.register_with_unit(
            "rpc_server_duration",
            "RPCs to the hub (`to: server`), by rpc_type: request read -> response queued",
            Unit::Seconds,
            rpc_server.clone(),
        );
        let gauges: [Gauge; 8] = Default::default();
        let gauge_help = [
            ("sockets", "Sockets attached (authenticated or not)"),
            ("pending_sockets", "Sockets waiting for their hello"),
            ("peers", "Peers registered (one per kind)"),
            ("topics", "Topics with at least one subscriber"),
            ("outbox_bytes", "Bytes queued across every peer's outbox"),
            ("queued_sockets", "Sockets with a non-empty outbox"),
            ("server_rpc_in_flight", "RPCs to the hub running"),
            (
                "rpc_relayed_in_flight",
                "Relayed RPCs forwarded and not answered yet (timed ones)",
            ),
        ];
        for ((name, help), g) in gauge_help.into_iter().zip(&gauges) {
            registry.register(name, help, g.clone());
        }
        Self {
            registry,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            dropped,
            sockets_attached,
            backpressure,
            outbox_overflow,
            rpc_relayed,
            rpc_untimed,
            rpc_server,
            gauges,
        }
    }

    /// Bytes of one data frame read (before any check).
    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// One verified frame of type `t` read.
    pub(crate) fn frame_in(&self, t: Option<&str>) {
        self.frames_in[t.map_or(TYPES.len() - 1, type_index)].inc();
    }

    /// One frame of type `t`, `n` bytes, encoded for a socket.
    pub(crate) fn frame_out(&self, t: &str, n: usize) {
        self.frames_out[type_index(t)].inc();
        self.bytes_out.inc_by(n as u64);
    }

    /// One frame dropped for `reason` (a [`link_protocol::DropReason`] code).
    pub(crate) fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&[("reason", reason)]).inc();
    }

    /// A server RPC of `rpc_type` answered after `seconds`.
    pub(crate) fn rpc_server(&self, rpc_type: &str, seconds: f64) {
        self.rpc_server
            .get_or_create(&[("rpc_type", rpc_type.to_owned())])
            .observe(seconds);
    }

    /// The exposition text, with the gauges read at scrape time.
    pub(crate) fn encode(&self, gauges: Option<Gauges>) -> String {
        if let Some(g) = gauges {
            let values = [
                g.sockets,
                g.pending_sockets,
                g.peers,
                g.topics,
                g.outbox_bytes,
                g.queued_sockets,
                g.server_rpc_in_flight,
                g.relayed_rpc_in_flight,
            ];
            for (gauge, v) in self.gauges.iter().zip(values) {
                gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::with_capacity(8 * 1024);
        if let Err(e) = encode(&mut text, &self.registry) {
            // Writing into a String cannot fail; keep what was written.
            tracing::error!("metrics encoding failed: {e}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_type_has_its_own_slot_and_the_rest_share_other() {
        for (i, t) in TYPES.iter().enumerate() {
            assert_eq!(type_index(t), i, "{t}");
        }
        assert_eq!(type_index("custom.thing"), TYPES.len() - 1);
        assert_eq!(type_index(""), TYPES.len() - 1);
    }

    #[test]
    fn the_text_names_every_metric_with_the_prefix() {
        let m = Metrics::new();
        m.frame_in(Some(msg_type::TOPIC_MESSAGE));
        m.frame_out(msg_type::DIRECT, 10);
        m.dropped("bad-signature");
        m.rpc_server("link.health", 0.001);
        let text = m.encode(Some(Gauges {
            peers: 3,
            ..Gauges::default()
        }));
        for line in [
            "link_hub_frames_in_total{type=\"topic.message\"} 1",
            "link_hub_frames_in_total{type=\"direct\"} 0",
            "link_hub_frames_out_total{type=\"direct\"} 1",
            "link_hub_sent_bytes_total 10",
            "link_hub_frames_dropped_total{reason=\"bad-signature\"} 1",
            "link_hub_rpc_server_duration_seconds_count{rpc_type=\"link.health\"} 1",
            "link_hub_peers 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
