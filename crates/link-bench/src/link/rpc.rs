//! `rpc-seq` and `rpc-conc`: a caller and an echo responder.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{ECHO, PARTNER_HUB, peer, peer_at, placement, wait_listed};
use crate::context::Ctx;
use crate::error::BenchError;
use crate::meter::{CROSSINGS_PER_CALL, HubMeter};
use crate::options::Scenario;
use crate::report::{CPU_PER_CALL, Metric, Outcome, System};
use crate::stats::Latencies;
use crate::target::HubTarget;

/// The echo responder on another hub than the caller's (on a cluster),
/// each hub knowing where the other peer is.
async fn pair(
    ctx: &Ctx<'_>,
    hub: &HubTarget,
    sc: Scenario,
    caller_kind: &str,
    echo_kind: &str,
) -> Result<(link_client::LinkClient, link_client::LinkClient), BenchError> {
    let echo = peer_at(hub, PARTNER_HUB, sc, echo_kind, true).await?;
    let caller = peer(hub, sc, caller_kind, false).await?;
    let idle = ctx.opts.idle_timeout;
    wait_listed(hub, &caller, sc, &[echo_kind], idle).await?;
    wait_listed(hub, &echo, sc, &[caller_kind], idle).await?;
    Ok((caller, echo))
}

/// Untimed calls before the measurement (connections warm, caches filled).
pub(crate) fn warmup_calls(n: u64) -> u64 {
    (n / 10).clamp(1, 200)
}

pub(super) async fn sequential(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::RpcSeq;
    let n = ctx.opts.count_for(sc);
    let (caller_kind, echo_kind) = (ctx.name("caller"), ctx.name("echo"));
    let (caller, echo) = pair(ctx, hub, sc, &caller_kind, &echo_kind).await?;
    let call = || caller.rpc(&echo_kind, ECHO, Some(ctx.payload.clone()));
    for _ in 0..warmup_calls(n) {
        call().await.map_err(|e| BenchError::op(sc.as_str(), e))?;
    }
    let bar = ctx.progress.bar("link rpc-seq", n);
    let mut lat = Latencies::new();
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        call().await.map_err(|e| BenchError::op(sc.as_str(), e))?;
        lat.record(t.elapsed());
        bar.tick(i + 1);
    }
    let elapsed = start.elapsed();
    let cost = meter.stop(hub).await;
    drop(bar);
    caller.stop().await;
    echo.stop().await;
    let mut o = rpc_outcome(sc, System::Link, n, elapsed, &lat, true);
    cost.push(&mut o, CPU_PER_CALL, n, CROSSINGS_PER_CALL, n);
    o.notes
        .extend(placement(hub, "caller on hub 0, echo on hub 1"));
    Ok(o)
}

pub(super) async fn concurrent(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::RpcConc;
    let n = ctx.opts.count_for(sc);
    let c = ctx.opts.concurrency;
    let (caller_kind, echo_kind) = (ctx.name("caller"), ctx.name("echo"));
    let (caller, echo) = pair(ctx, hub, sc, &caller_kind, &echo_kind).await?;
    let call = || async {
        let t = Instant::now();
        let r = caller
            .rpc(&echo_kind, ECHO, Some(ctx.payload.clone()))
            .await;
        (t.elapsed(), r)
    };
    for _ in 0..warmup_calls(n) {
        call().await.1.map_err(|e| BenchError::op(sc.as_str(), e))?;
    }
    let bar = ctx.progress.bar("link rpc-conc", n);
    let mut lat = Latencies::new();
    let mut in_flight = FuturesUnordered::new();
    let (mut issued, mut done) = (0u64, 0u64);
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    while done < n {
        while issued < n && in_flight.len() < c {
            in_flight.push(call());
            issued += 1;
        }
        let Some((took, result)) = in_flight.next().await else {
            break;
        };
        result.map_err(|e| BenchError::op(sc.as_str(), e))?;
        lat.record(took);
        done += 1;
        bar.tick(done);
    }
    let elapsed = start.elapsed();
    let cost = meter.stop(hub).await;
    drop(bar);
    drop(in_flight);
    caller.stop().await;
    echo.stop().await;
    let mut o = rpc_outcome(sc, System::Link, n, elapsed, &lat, false);
    cost.push(&mut o, CPU_PER_CALL, done, CROSSINGS_PER_CALL, done);
    o.notes.push(format!("{c} calls in flight"));
    o.notes
        .extend(placement(hub, "caller on hub 0, echo on hub 1"));
    o.notes.dedup();
    Ok(o)
}

/// The figures of an RPC scenario: the full distribution for `rpc-seq`,
/// rate, p50 and p99 for `rpc-conc`.
pub(crate) fn rpc_outcome(
    sc: Scenario,
    system: System,
    n: u64,
    elapsed: Duration,
    lat: &Latencies,
    full: bool,
) -> Outcome {
    let s = lat.summary();
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut o = Outcome::new(sc.as_str(), system, n);
    o.completed = lat.len();
    o.elapsed_s = secs;
    o.metrics
        .push(Metric::higher("calls/s", lat.len() as f64 / secs));
    if full {
        o.metrics.push(Metric::lower("mean µs", s.mean_us));
    }
    o.metrics.push(Metric::lower("p50 µs", s.p50_us));
    if full {
        o.metrics.push(Metric::lower("p90 µs", s.p90_us));
    }
    o.metrics.push(Metric::lower("p99 µs", s.p99_us));
    if full {
        o.metrics.push(Metric::lower("max µs", s.max_us));
    }
    o
}
