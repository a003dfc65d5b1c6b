//! The hub's Prometheus metrics (docs/operations.md, *Metrics*), served as
//! OpenMetrics text at `GET /metrics` ([`Hub::metrics`](crate::Hub::metrics))
//! and encoded with the official `prometheus-client` crate.
//!
//! ```text
//!  connection.rs reader   bytes in, frames in by type      ─┐ this socket's own counters
//!  connection.rs writer   frames and bytes out by type     ─┘ (ConnMetrics: uncontended)
//!  shared.rs              drops seen before the table       ── a small map, error path only
//!  routing/stats.rs       backpressure, overflow, drops,   ── plain integers in the table
//!                         RPC latency, gauges
//!  scrape                 sum live sockets + retired ones, copy the table's stats, encode
//! ```
//!
//! Counting never touches a shared cache line on the hot path: each socket
//! counts into its own atomics (one writer each, relaxed), which a scrape
//! sums; a socket that closes folds its counts into the retired totals under
//! the same lock the scrape takes, so counters never go back. Metric names
//! start with `link_hub_`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, text::encode};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use link_protocol::{ProtocolError, msg_type};

use crate::ratelimit::{MessageClass, RateLimited};
use crate::routing::{Histogram, RPC_BUCKETS, TableStats};

/// The `Content-Type` of the exposition text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
const OTHER: usize = TYPES.len() - 1;

/// Index of a message type in [`TYPES`].
fn type_index(t: &str) -> usize {
    match t {
        msg_type::HELLO => 0,
        msg_type::HELLO_ACK => 1,
        msg_type::PEERS_UPDATE => 2,
        msg_type::STATUS_SNAPSHOT => 3,
        msg_type::STATUS_UPDATE => 4,
        msg_type::RPC_REQUEST => 5,
        msg_type::RPC_RESPONSE => 6,
        msg_type::RPC_CANCEL => 7,
        msg_type::TOPIC_SUBSCRIBE => 8,
        msg_type::TOPIC_UNSUBSCRIBE => 9,
        msg_type::TOPIC_MESSAGE => 10,
        msg_type::DIRECT => 11,
        _ => OTHER,
    }
}

/// One direction of a socket: frames by type and bytes.
#[derive(Debug, Default)]
struct Direction {
    frames: [AtomicU64; TYPES.len()],
    bytes: AtomicU64,
}

/// [`Direction`] alone on its cache lines, so the reader and the writer of
/// one socket (two tasks, maybe two cores) do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Direction);

/// Plain sums of [`Direction`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    frames_in: [u64; TYPES.len()],
    bytes_in: u64,
    frames_out: [u64; TYPES.len()],
    bytes_out: u64,
}

impl Totals {
    fn add(&mut self, c: &SocketCounters) {
        for (sum, n) in self.frames_in.iter_mut().zip(&c.input.0.frames) {
            *sum += n.load(Relaxed);
        }
        for (sum, n) in self.frames_out.iter_mut().zip(&c.output.0.frames) {
            *sum += n.load(Relaxed);
        }
        self.bytes_in += c.input.0.bytes.load(Relaxed);
        self.bytes_out += c.output.0.bytes.load(Relaxed);
    }
}

/// One socket's counters: written by its reader and its writer only.
#[derive(Debug, Default)]
struct SocketCounters {
    input: Padded,
    output: Padded,
}

/// Sockets that count now, and what closed ones counted.
#[derive(Debug, Default)]
struct Sockets {
    live: HashMap<u64, Arc<SocketCounters>>,
    retired: Totals,
    next: u64,
}

/// Every metric of one hub that is not the routing table's. Shared as an
/// `Arc` by the sockets, the table's driver and the HTTP routes.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    sockets: Mutex<Sockets>,
    /// Frames dropped before they reach the table (bad signatures, replays,
    /// oversize…), by reason: an error path, so a lock is fine.
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// The table's stats at the last scrape it answered (used while the hub
    /// stops and the table no longer answers).
    last_table: Mutex<TableStats>,
    /// The last [`RECENT_ERRORS`] drops, newest last, for the dashboard.
    recent: Mutex<VecDeque<RecentError>>,
}

/// Drops kept for the dashboard's list.
pub(crate) const RECENT_ERRORS: usize = 50;

/// Longest kind or message type kept in [`RecentError`] (they come from
/// frames that failed checks, so they may be anything).
const MAX_LABEL_BYTES: usize = 64;

/// One dropped frame as the dashboard lists it: why, whose, when and from
/// where. Never the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecentError {
    /// Hub wall clock ms.
    pub(crate) at_ms: u64,
    /// The drop reason code (`bad-signature`, `invalid-topic`…).
    pub(crate) reason: &'static str,
    /// The sender kind, when known (cut to 64 bytes).
    pub(crate) kind: Option<String>,
    /// The frame's type, when known (cut to 64 bytes).
    pub(crate) msg_type: Option<String>,
    /// The sub-reason, when there is one.
    pub(crate) detail: Option<&'static str>,
    /// The socket's remote address, when known.
    pub(crate) remote: Option<SocketAddr>,
}

/// Frames in and out, one message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TypeCount {
    pub(crate) msg_type: &'static str,
    pub(crate) frames_in: u64,
    pub(crate) frames_out: u64,
}

/// What the dashboard reads of the socket counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Every message type (and `other`), in a fixed order.
    pub(crate) by_type: Vec<TypeCount>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Frames dropped before the table, by reason.
    pub(crate) dropped: BTreeMap<&'static str, u64>,
}

fn cut(label: &str) -> String {
    let mut end = label.len().min(MAX_LABEL_BYTES);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    label[..end].to_owned()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// A socket starts counting; it stops when the last clone of the
    /// returned handle (its reader's and its writer's) is dropped.
    pub(crate) fn socket(self: &Arc<Self>) -> Arc<ConnMetrics> {
        let counters = Arc::new(SocketCounters::default());
        let mut s = lock(&self.sockets);
        s.next += 1;
        let id = s.next;
        s.live.insert(id, counters.clone());
        Arc::new(ConnMetrics {
            id,
            counters,
            metrics: self.clone(),
        })
    }

    /// One frame dropped for `reason` (a [`link_protocol::DropReason`]
    /// code) before it reached the routing table.
    pub(crate) fn dropped(&self, reason: &'static str) {
        *lock(&self.dropped).entry(reason).or_default() += 1;
    }

    /// Keeps `error` in the dashboard's list of recent drops (the oldest
    /// goes past [`RECENT_ERRORS`]); an error path only.
    pub(crate) fn recent_error(
        &self,
        error: &ProtocolError,
        remote: Option<SocketAddr>,
        at_ms: u64,
    ) {
        let entry = RecentError {
            at_ms,
            reason: error.reason.code(),
            kind: error.kind.as_deref().map(cut),
            msg_type: error.msg_type.as_deref().map(cut),
            detail: error.detail,
            remote,
        };
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The recent drops, oldest first.
    pub(crate) fn recent_errors(&self) -> Vec<RecentError> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// The socket counters summed now, for the dashboard.
    pub(crate) fn traffic(&self) -> Traffic {
        let t = self.totals();
        Traffic {
            by_type: TYPES
                .iter()
                .enumerate()
                .map(|(i, msg_type)| TypeCount {
                    msg_type,
                    frames_in: t.frames_in[i],
                    frames_out: t.frames_out[i],
                })
                .collect(),
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            dropped: lock(&self.dropped).clone(),
        }
    }

    fn totals(&self) -> Totals {
        let s = lock(&self.sockets);
        let mut t = s.retired;
        for c in s.live.values() {
            t.add(c);
        }
        t
    }

    /// The exposition text, with the table's stats copied at scrape time
    /// (`None`: the table did not answer; its last copy is used), and the
    /// rate limits' refusals.
    pub(crate) fn encode(&self, table: Option<TableStats>, limited: RateLimited) -> String {
        let table = match table {
            Some(t) => {
                *lock(&self.last_table) = t.clone();
                t
            }
            None => lock(&self.last_table).clone(),
        };
        let totals = self.totals();
        let mut dropped = lock(&self.dropped).clone();
        for (reason, n) in &table.dropped {
            *dropped.entry(reason).or_default() += n;
        }
        let mut registry = registry(&totals, &dropped, table);
        register_rate_limits(&mut registry, limited);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

/// The rate limits' refusals, by message class.
fn register_rate_limits(r: &mut Registry, limited: RateLimited) {
    let classes = [
        MessageClass::Rpc,
        MessageClass::Publish,
        MessageClass::Send,
        MessageClass::Status,
    ];
    r.register(
        "rate_limited",
        "Frames refused by per-peer rate limits, by message class (rpc: answered RPC_RATE_LIMITED; publish, send, status: dropped)",
        Counters {
            label: "class",
            values: classes.map(|c| (c.as_str(), limited.get(c))).to_vec(),
        },
    );
    r.register(
        "rate_limit_disconnects",
        "Sockets closed 1008 for staying over their rate limits",
        ConstCounter::new(limited.disconnects),
    );
}

/// A registry holding this scrape's values.
fn registry(totals: &Totals, dropped: &BTreeMap<&'static str, u64>, table: TableStats) -> Registry {
    let mut r = Registry::with_prefix("link_hub");
    let by_type = |values: &[u64; TYPES.len()]| Counters {
        label: "type",
        values: TYPES.iter().copied().zip(values.iter().copied()).collect(),
    };
    r.register(
        "frames_in",
        "Verified frames read from peers, by message type (hello included)",
        by_type(&totals.frames_in),
    );
    r.register(
        "frames_out",
        "Frames written to peers, by message type",
        by_type(&totals.frames_out),
    );
    r.register_with_unit(
        "received",
        "Bytes of data frames read from peers (dropped ones included)",
        Unit::Bytes,
        ConstCounter::new(totals.bytes_in),
    );
    r.register_with_unit(
        "sent",
        "Bytes of frames handed to peers' sockets",
        Unit::Bytes,
        ConstCounter::new(totals.bytes_out),
    );
    let drops = Counters {
        label: "reason",
        values: dropped.iter().map(|(r, n)| (*r, *n)).collect(),
    };
    r.register(
        "frames_dropped",
        "Frames dropped, by reason (the protocol-error reasons: bad-signature, replay-id…)",
        drops,
    );
    r.register(
        "sockets_attached",
        "Sockets accepted (authenticated or not)",
        ConstCounter::new(table.sockets_attached),
    );
    r.register(
        "backpressure",
        "Backpressure episodes: a message queued for a peer whose socket is full",
        ConstCounter::new(table.backpressure),
    );
    r.register(
        "outbox_overflow",
        "Messages refused because the recipient's outbox was full",
        ConstCounter::new(table.outbox_overflow),
    );
    r.register_with_unit(
        "rpc_relayed_duration",
        "Relayed RPCs, sampled one in 16: request forwarded -> response forwarded",
        Unit::Seconds,
        Histograms::one(table.rpc_relayed),
    );
    r.register(
        "rpc_relayed_untimed",
        "Sampled relayed RPCs whose timing was given up: the in-flight table was full (oldest first)",
        ConstCounter::new(table.rpc_untimed),
    );
    r.register_with_unit(
        "rpc_server_duration",
        "RPCs to the hub (`to: server`), by rpc_type: request read -> response queued",
        Unit::Seconds,
        Histograms::by_rpc_type(table.rpc_server),
    );
    let g = table.gauges;
    for (name, help, value) in [
        (
            "sockets",
            "Sockets attached (authenticated or not)",
            g.sockets,
        ),
        (
            "pending_sockets",
            "Sockets waiting for their hello",
            g.pending_sockets,
        ),
        ("peers", "Peers registered (one per kind)", g.peers),
        ("topics", "Topics with at least one subscriber", g.topics),
        (
            "outbox_bytes",
            "Bytes queued across every peer's outbox",
            g.outbox_bytes,
        ),
        (
            "queued_sockets",
            "Sockets with a non-empty outbox",
            g.queued_sockets,
        ),
        (
            "server_rpc_in_flight",
            "RPCs to the hub running",
            g.server_rpc_in_flight,
        ),
        (
            "rpc_relayed_in_flight",
            "Sampled relayed RPCs forwarded and not answered yet",
            g.relayed_rpc_in_flight,
        ),
    ] {
        r.register(
            name,
            help,
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }
    if let Some(c) = table.cluster {
        let gauge = |v: usize| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        r.register(
            "cluster_up",
            "1 while NATS is connected",
            gauge(usize::from(c.up)),
        );
        r.register(
            "cluster_hubs",
            "Other hubs of the cluster alive",
            gauge(c.hubs),
        );
        r.register(
            "cluster_remote_peers",
            "Kinds held on other hubs",
            gauge(c.remote_peers),
        );
        for (name, help, value) in [
            (
                "cluster_published",
                "Messages sealed and handed to NATS",
                c.published,
            ),
            (
                "cluster_rejected",
                "Messages from NATS dropped: bad MAC, stale, replayed or malformed",
                c.rejected,
            ),
            (
                "cluster_slow_consumers",
                "Slow-consumer events from the NATS client (messages from NATS it dropped)",
                c.slow_consumers,
            ),
            (
                "cluster_refused",
                "Messages for other hubs refused: NATS down or the outbound queue full",
                c.refused + table.cluster_refused,
            ),
        ] {
            r.register(name, help, ConstCounter::new(value));
        }
    }
    r
}

/// Counters by one label, in a fixed order (a `Family` would print them in
/// hash order, different at every scrape).
#[derive(Debug)]
struct Counters {
    label: &'static str,
    values: Vec<(&'static str, u64)>,
}

impl EncodeMetric for Counters {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        for (value, n) in &self.values {
            encoder
                .encode_family(&[(self.label, *value)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Plain [`Histogram`]s as one metric: unlabelled, or one per `rpc_type`.
#[derive(Debug)]
enum Histograms {
    One(Histogram),
    ByRpcType(BTreeMap<String, Histogram>),
}

impl Histograms {
    fn one(h: Histogram) -> Self {
        Self::One(h)
    }

    fn by_rpc_type(m: BTreeMap<String, Histogram>) -> Self {
        Self::ByRpcType(m)
    }
}

fn encode_histogram(h: &Histogram, mut encoder: MetricEncoder<'_>) -> fmt::Result {
    let bounds = RPC_BUCKETS.iter().copied().chain([f64::MAX]);
    let buckets: Vec<(f64, u64)> = bounds.zip(h.buckets.iter().copied()).collect();
    encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        match self {
            Self::One(h) => encode_histogram(h, encoder),
            Self::ByRpcType(m) => {
                for (rpc_type, h) in m {
                    let labels = [("rpc_type", rpc_type.as_str())];
                    encode_histogram(h, encoder.encode_family(&labels)?)?;
                }
                Ok(())
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One socket's handle on its counters (reader and writer hold a clone).
#[derive(Debug)]
pub(crate) struct ConnMetrics {
    id: u64,
    counters: Arc<SocketCounters>,
    metrics: Arc<Metrics>,
}

impl ConnMetrics {
    /// Bytes of one data frame read (before any check).
    pub(crate) fn bytes_in(&self, n: usize) {
        self.counters.input.0.bytes.fetch_add(n as u64, Relaxed);
    }

    /// One verified frame of type `t` read.
    pub(crate) fn frame_in(&self, t: Option<&str>) {
        let i = t.map_or(OTHER, type_index);
        self.counters.input.0.frames[i].fetch_add(1, Relaxed);
    }

    /// One frame of type `t`, `n` bytes, encoded for the socket.
    pub(crate) fn frame_out(&self, t: &str, n: usize) {
        let out = &self.counters.output.0;
        out.frames[type_index(t)].fetch_add(1, Relaxed);
        out.bytes.fetch_add(n as u64, Relaxed);
    }
}

impl Drop for ConnMetrics {
    /// The socket is done counting: its counts move to the retired totals
    /// under the lock a scrape takes, so no scrape sees them twice or not
    /// at all.
    fn drop(&mut self) {
        let mut s = lock(&self.metrics.sockets);
        if let Some(c) = s.live.remove(&self.id) {
            s.retired.add(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_recent_errors_keep_the_last_fifty_without_payload_and_cut_labels() {
        let m = Metrics::default();
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..(RECENT_ERRORS as u64 + 3) {
            let e = ProtocolError::new(link_protocol::DropReason::BadSignature)
                .with_kind("k".repeat(100))
                .with_type(Some("é".repeat(40).as_str()));
            m.recent_error(&e, Some(remote), i);
        }
        let recent = m.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].at_ms, 3, "the oldest three went");
        assert_eq!(recent[RECENT_ERRORS - 1].at_ms, RECENT_ERRORS as u64 + 2);
        let last = &recent[RECENT_ERRORS - 1];
        assert_eq!(last.reason, "bad-signature");
        assert_eq!(last.kind.as_deref(), Some("k".repeat(64).as_str()));
        assert_eq!(last.msg_type.as_deref(), Some("é".repeat(32).as_str()));
        assert_eq!(last.remote, Some(remote));
    }

    #[test]
    fn every_type_has_its_own_index_and_others_share_the_last() {
        for (i, t) in TYPES.iter().enumerate().take(OTHER) {
            assert_eq!(type_index(t), i, "{t}");
        }
        assert_eq!(type_index("custom.thing"), OTHER);
        assert_eq!(type_index("other"), OTHER);
        assert_eq!(type_index(""), OTHER);
    }

    #[test]
    fn the_text_names_every_metric_with_the_prefix() {
        let m = Arc::new(Metrics::default());
        let conn = m.socket();
        conn.frame_in(Some(msg_type::TOPIC_MESSAGE));
        conn.frame_out(msg_type::DIRECT, 10);
        m.dropped("bad-signature");
        let mut table = TableStats::default();
        table.dropped.insert("bad-signature", 2);
        table.dropped.insert("invalid-topic", 1);
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(1));
        table.rpc_server.insert("link.health".into(), h);
        table.gauges.peers = 3;
        let limited = RateLimited {
            publish: 4,
            disconnects: 1,
            ..RateLimited::default()
        };
        let text = m.encode(Some(table), limited);
        for line in [
            "link_hub_frames_in_total{type=\"topic.message\"} 1",
            "link_hub_frames_in_total{type=\"direct\"} 0",
            "link_hub_frames_out_total{type=\"direct\"} 1",
            "link_hub_sent_bytes_total 10",
            "link_hub_frames_dropped_total{reason=\"bad-signature\"} 3",
            "link_hub_frames_dropped_total{reason=\"invalid-topic\"} 1",
            "link_hub_rpc_server_duration_seconds_bucket{le=\"0.001\",rpc_type=\"link.health\"} 1",
            "link_hub_rpc_server_duration_seconds_count{rpc_type=\"link.health\"} 1",
            "link_hub_rpc_relayed_duration_seconds_count 0",
            "link_hub_peers 3",
            "link_hub_rate_limited_total{class=\"publish\"} 4",
            "link_hub_rate_limited_total{class=\"status\"} 0",
            "link_hub_rate_limit_disconnects_total 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn a_closed_socket_keeps_its_counts_and_the_last_table_copy_is_reused() {
        let m = Arc::new(Metrics::default());
        let reader = m.socket();
        let writer = reader.clone();
        reader.bytes_in(7);
        writer.frame_out(msg_type::HELLO_ACK, 5);
        let mut table = TableStats::default();
        table.gauges.peers = 2;
        let before = m.encode(Some(table), RateLimited::default());
        drop((reader, writer));
        assert!(lock(&m.sockets).live.is_empty());
        // The table no longer answers (the hub stops): the last copy stands.
        let after = m.encode(None, RateLimited::default());
        assert_eq!(before, after);
        assert!(
            after.contains("link_hub_received_bytes_total 7\n"),
            "{after}"
        );
        assert!(after.contains("link_hub_peers 2\n"), "{after}");
    }
}
