//! One dashboard snapshot as JSON: the routing table's view, the socket
//! counters and the recent drops, plus RPC latency quantiles estimated from
//! the histogram buckets. The page computes rates from the counters of
//! successive snapshots; every text in it comes from here and is set with
//! `textContent` (peer kinds and statuses come from the bus).

use serde_json::{Map, Value, json};

use crate::metrics::{RecentError, Traffic};
use crate::routing::{DashboardView, Histogram, PeerRow, RPC_BUCKETS, RPC_SAMPLE_EVERY, TopicRow};

/// The snapshot pushed to the page.
pub(super) fn snapshot(
    now_ms: u64,
    started_ms: u64,
    view: &DashboardView,
    traffic: &Traffic,
    errors: &[RecentError],
) -> Value {
    let stats = &view.stats;
    let g = &stats.gauges;
    let mut dropped = traffic.dropped.clone();
    for (reason, n) in &stats.dropped {
        *dropped.entry(reason).or_default() += n;
    }
    let server: Vec<Value> = stats
        .rpc_server
        .iter()
        .map(|(rpc_type, h)| {
            let mut v = histogram(h);
            if let Value::Object(map) = &mut v {
                map.insert("rpcType".into(), rpc_type.as_str().into());
            }
            v
        })
        .collect();
    json!({
        "now": now_ms,
        "startedAt": started_ms,
        "hub": {
            "peers": g.peers,
            "sockets": g.sockets,
            "pendingSockets": g.pending_sockets,
            "topics": g.topics,
            "outboxBytes": g.outbox_bytes,
            "queuedSockets": g.queued_sockets,
            "serverRpcInFlight": g.server_rpc_in_flight,
            "relayedRpcInFlight": g.relayed_rpc_in_flight,
            "socketsAttached": stats.sockets_attached,
            "backpressure": stats.backpressure,
            "outboxOverflow": stats.outbox_overflow,
        },
        "peerCount": view.peer_count,
        "peers": view.peers.iter().map(peer).collect::<Vec<_>>(),
        "topicCount": view.topic_count,
        "topics": view.topics.iter().map(topic).collect::<Vec<_>>(),
        "frames": traffic.by_type.iter().map(|t| json!({
            "type": t.msg_type,
            "in": t.frames_in,
            "out": t.frames_out,
        })).collect::<Vec<_>>(),
        "bytesIn": traffic.bytes_in,
        "bytesOut": traffic.bytes_out,
        "dropped": dropped.into_iter().map(|(r, n)| (r.to_owned(), Value::from(n))).collect::<Map<_, _>>(),
        "rpc": {
            "bounds": RPC_BUCKETS,
            "sampleEvery": RPC_SAMPLE_EVERY,
            "untimed": stats.rpc_untimed,
            "relayed": histogram(&stats.rpc_relayed),
            "server": server,
        },
        "errors": errors.iter().rev().map(error).collect::<Vec<_>>(),
    })
}

fn peer(p: &PeerRow) -> Value {
    json!({
        "kind": &*p.kind,
        "remote": p.remote.map(|a| a.to_string()),
        "connectedAt": p.connected_at,
        "status": p.status,
        "statusAt": p.status_at,
    })
}

fn topic(t: &TopicRow) -> Value {
    json!({
        "topic": t.topic,
        "subscribers": t.subscribers,
        "published": t.published,
        "delivered": t.delivered,
    })
}

fn error(e: &RecentError) -> Value {
    json!({
        "at": e.at_ms,
        "reason": e.reason,
        "kind": e.kind,
        "type": e.msg_type,
        "detail": e.detail,
        "remote": e.remote.map(|a| a.to_string()),
    })
}

/// Counts, buckets (not cumulative, the last one `+Inf`) and the p50 and
/// p99 estimates in seconds (`null` before the first observation).
fn histogram(h: &Histogram) -> Value {
    json!({
        "count": h.count,
        "sum": h.sum_seconds,
        "buckets": h.buckets,
        "p50": quantile(h, 0.5),
        "p99": quantile(h, 0.99),
    })
}

/// The `q` quantile estimated from the buckets as Prometheus'
/// `histogram_quantile` does: linear within the bucket that holds the rank
/// (the first bucket starts at 0; a rank in `+Inf` is the highest bound).
pub(super) fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let rank = q * h.count as f64;
    let mut below = 0u64;
    for (i, &n) in h.buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = RPC_BUCKETS.get(i) else {
                return RPC_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { RPC_BUCKETS[i - 1] };
            let into = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * into);
        }
        below += n;
    }
    RPC_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::routing::TableStats;

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_rank() {
        let mut h = Histogram::default();
        assert_eq!(quantile(&h, 0.5), None);
        // 100 observations in (0.5 ms, 1 ms]: p50 is halfway through it.
        for _ in 0..100 {
            h.observe(Duration::from_micros(800));
        }
        assert!(
            approx(quantile(&h, 0.5), 0.000_75),
            "{:?}",
            quantile(&h, 0.5)
        );
        assert!(approx(quantile(&h, 0.99), 0.000_995));
        // One slow call in (1 s, 2.5 s]: p99 stays in the fast bucket, the
        // maximum is in the slow one.
        h.observe(Duration::from_secs(2));
        assert!(quantile(&h, 0.99).is_some_and(|q| q <= 0.001));
        assert!(approx(quantile(&h, 1.0), 2.5));
        // A rank in +Inf reads as the highest finite bound.
        let mut slow = Histogram::default();
        slow.observe(Duration::from_secs(60));
        assert!(approx(quantile(&slow, 0.5), 30.0));
        // The first bucket starts at zero.
        let mut fast = Histogram::default();
        fast.observe(Duration::from_micros(10));
        fast.observe(Duration::from_micros(10));
        assert!(approx(quantile(&fast, 0.5), 0.000_025));
    }

    #[test]
    fn the_snapshot_merges_drops_and_lists_errors_newest_first() {
        let mut stats = TableStats::default();
        stats.dropped.insert("invalid-topic", 2);
        stats.dropped.insert("bad-signature", 1);
        let view = DashboardView {
            stats,
            ..DashboardView::default()
        };
        let mut traffic = Traffic::default();
        traffic.dropped.insert("bad-signature", 4);
        let errors = [1, 2].map(|at_ms| RecentError {
            at_ms,
            reason: "bad-signature",
            kind: None,
            msg_type: None,
            detail: None,
            remote: None,
        });
        let s = snapshot(10, 5, &view, &traffic, &errors);
        assert_eq!(
            s["dropped"],
            json!({"bad-signature": 5, "invalid-topic": 2})
        );
        assert_eq!(s["errors"][0]["at"], 2);
        assert_eq!(s["errors"][1]["at"], 1);
        assert_eq!(s["rpc"]["relayed"]["p50"], Value::Null);
        assert_eq!(s["rpc"]["bounds"].as_array().map(Vec::len), Some(18));
    }
}
