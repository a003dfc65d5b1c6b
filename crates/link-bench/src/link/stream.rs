//! `send`, `publish` and `fanout` (with its slow-subscriber variant):
//! fire-and-forget traffic timed from the first message sent until the
//! receivers counted them all, with at most `window` messages in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use link_client::LinkError;

use super::{
    PARTNER_HUB, Receivers, Window, count, paced, peer, peer_at, placement, raw, ready_to_publish,
    wait_listed,
};
use crate::context::Ctx;
use crate::error::BenchError;
use crate::meter::{CROSSINGS_PER_MSG, HubMeter};
use crate::options::Scenario;
use crate::report::{CPU_PER_DELIVERY, CPU_PER_MSG, Metric, Outcome, System};
use crate::target::HubTarget;

/// The producer yields this often even without backpressure.
const YIELD_EVERY: u64 = 256;

/// What a producer did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Produced {
    pub(crate) sent: u64,
    pub(crate) took: Duration,
    /// Outbox-full retries (link only).
    pub(crate) retries: u64,
    /// The window never reopened: the receivers stopped making progress.
    pub(crate) stalled: bool,
}

/// Sends `n` messages with `op`, within the window, pacing on backpressure.
pub(super) async fn produce(
    sc: Scenario,
    n: u64,
    window: &Window,
    mut op: impl FnMut() -> Result<(), LinkError>,
) -> Result<Produced, BenchError> {
    let start = Instant::now();
    let mut p = Produced::default();
    for i in 0..n {
        if !window.admit(i).await {
            p.stalled = true;
            break;
        }
        p.retries += paced(sc, &mut op).await?;
        p.sent += 1;
        if i % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }
    p.took = start.elapsed();
    Ok(p)
}

pub(super) async fn send(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Send;
    let n = ctx.opts.count_for(sc);
    let (a_kind, b_kind) = (ctx.name("a"), ctx.name("b"));
    let b = peer_at(hub, PARTNER_HUB, sc, &b_kind, false).await?;
    let a = peer(hub, sc, &a_kind, false).await?;
    wait_listed(hub, &a, sc, &[&b_kind], ctx.opts.idle_timeout).await?;
    wait_listed(hub, &b, sc, &[&a_kind], ctx.opts.idle_timeout).await?;
    let directs = b.directs();
    let window = Window::new(1, ctx.opts.window, ctx.opts.idle_timeout);
    let bar = Arc::new(ctx.progress.bar("link send", n));
    let counter = {
        let (bar, idle, delivered) = (bar.clone(), ctx.opts.idle_timeout, window.counter(0));
        tokio::spawn(async move {
            count(directs, n, idle, |i| {
                delivered.fetch_add(1, Ordering::Relaxed);
                bar.tick(i);
            })
            .await
        })
    };
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    let produced = produce(sc, n, &window, || {
        a.send(&b_kind, "bench", Some(ctx.payload.clone()))
    })
    .await?;
    let counted = counter.await.map_err(|e| BenchError::op(sc.as_str(), e))?;
    let cost = meter.stop(hub).await;
    drop(bar);
    a.stop().await;
    b.stop().await;
    let mut o = stream_outcome(
        sc,
        System::Link,
        n,
        counted.got,
        start,
        counted.last,
        produced,
    );
    cost.push(
        &mut o,
        CPU_PER_MSG,
        counted.got,
        CROSSINGS_PER_MSG,
        produced.sent,
    );
    o.notes
        .extend(placement(hub, "sender on hub 0, receiver on hub 1"));
    Ok(o)
}

pub(super) async fn publish(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Publish;
    let n = ctx.opts.count_for(sc);
    let (a_kind, b_kind, topic) = (ctx.name("pub"), ctx.name("sub"), ctx.name("topic"));
    let b = peer_at(hub, PARTNER_HUB, sc, &b_kind, false).await?;
    let a = peer(hub, sc, &a_kind, false).await?;
    let window = Window::new(1, ctx.opts.window, ctx.opts.idle_timeout);
    let bar = Arc::new(ctx.progress.bar("link publish", n));
    let subs = std::slice::from_ref(&b);
    let receivers = Receivers::subscribe(subs, &topic, n, &window, &bar, ctx, sc)?;
    ready_to_publish(
        hub,
        &a,
        sc,
        &topic,
        subs,
        &[b_kind],
        &[],
        ctx.opts.idle_timeout,
    )
    .await?;
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    let produced = produce(sc, n, &window, || a.publish(&topic, ctx.payload.clone())).await?;
    let (got, last) = receivers.join(sc, ctx.opts.idle_timeout).await?;
    let cost = meter.stop(hub).await;
    drop(bar);
    a.stop().await;
    b.stop().await;
    let mut o = stream_outcome(sc, System::Link, n, got, start, last, produced);
    cost.push(&mut o, CPU_PER_MSG, got, CROSSINGS_PER_MSG, produced.sent);
    o.notes
        .extend(placement(hub, "publisher on hub 0, subscriber on hub 1"));
    Ok(o)
}

/// `fanout`, then (with `--slow`) the same with subscribers that stop
/// reading, in one call so that the two are measured back to back.
pub(super) async fn fanout(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Vec<Outcome>, BenchError> {
    let base = fanout_once(ctx, hub, 0).await?;
    let mut out = vec![base.clone()];
    if ctx.opts.slow > 0 {
        let mut slow = fanout_once(ctx, hub, ctx.opts.slow).await?;
        add_impact(&mut slow, &base);
        out.push(slow);
    }
    Ok(out)
}

/// Adds `impact %`: how much lower the others' delivered rate was with
/// slow subscribers than without.
pub(crate) fn add_impact(slow: &mut Outcome, base: &Outcome) {
    if let (Some(b), Some(s)) = (base.metric("delivered/s"), slow.metric("delivered/s"))
        && b > 0.0
    {
        slow.metrics
            .push(Metric::lower("impact %", ((b - s) / b * 100.0).max(0.0)));
    }
}

async fn fanout_once(ctx: &Ctx<'_>, hub: &HubTarget, slow: usize) -> Result<Outcome, BenchError> {
    let sc = Scenario::Fanout;
    let n = ctx.opts.count_for(sc);
    let s = ctx.opts.subscribers;
    let suffix = if slow > 0 { "-slow" } else { "" };
    let topic = ctx.name(&format!("topic{suffix}"));
    let publisher_kind = ctx.name(&format!("pub{suffix}"));
    let kinds: Vec<String> = (0..s)
        .map(|i| ctx.name(&format!("sub{i}{suffix}")))
        .collect();
    // Round-robin over the hubs (the publisher's, hub 0, included).
    let subs = futures_util::future::try_join_all(
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| peer_at(hub, i, sc, k, false)),
    )
    .await?;
    let publisher = peer(hub, sc, &publisher_kind, false).await?;
    let total = n * s as u64;
    let label = format!("link fanout{suffix}");
    let bar = Arc::new(ctx.progress.bar(&label, total));
    let window = Window::new(s, ctx.opts.window, ctx.opts.idle_timeout);
    let receivers = Receivers::subscribe(&subs, &topic, n, &window, &bar, ctx, sc)?;
    let mut slow_peers = Vec::with_capacity(slow);
    let mut all_kinds = kinds.clone();
    for i in 0..slow {
        let kind = ctx.name(&format!("slow{i}"));
        slow_peers.push(
            raw::slow_subscriber(hub, &kind, &topic)
                .await
                .map_err(|reason| BenchError::Peer {
                    scenario: sc.as_str(),
                    kind: kind.clone(),
                    reason,
                })?,
        );
        all_kinds.push(kind);
    }
    ready_to_publish(
        hub,
        &publisher,
        sc,
        &topic,
        &subs,
        &kinds,
        &all_kinds[kinds.len()..],
        ctx.opts.idle_timeout,
    )
    .await?;

    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    let produced = produce(sc, n, &window, || {
        publisher.publish(&topic, ctx.payload.clone())
    })
    .await?;
    let (got, last) = receivers.join(sc, ctx.opts.idle_timeout).await?;
    let cost = meter.stop(hub).await;
    drop(bar);
    drop(slow_peers);
    publisher.stop().await;
    for c in &subs {
        c.stop().await;
    }
    let mut o = fanout_outcome(
        System::Link,
        s,
        slow,
        stream_outcome(sc, System::Link, total, got, start, last, produced),
    );
    cost.push(
        &mut o,
        CPU_PER_DELIVERY,
        got,
        CROSSINGS_PER_MSG,
        produced.sent,
    );
    o.notes.extend(placement(
        hub,
        &format!(
            "publisher on hub 0, the {s} subscribers round-robin over all {} hubs{}; \
             crossings/msg is per message published",
            hub.hubs(),
            if slow > 0 {
                ", the slow ones on hub 0"
            } else {
                ""
            }
        ),
    ));
    Ok(o)
}

/// Renames and completes a stream outcome for `fanout` / `fanout-slow`.
pub(crate) fn fanout_outcome(system: System, s: usize, slow: usize, mut o: Outcome) -> Outcome {
    o.system = system;
    if let Some(m) = o.metrics.first_mut() {
        m.name = "delivered/s";
    }
    let rate = o.metrics.first().map_or(0.0, |m| m.value);
    o.metrics
        .push(Metric::higher("per sub msgs/s", rate / s.max(1) as f64));
    if slow > 0 {
        o.scenario = "fanout-slow".into();
        o.notes.push(format!(
            "{slow} more subscriber(s) stopped reading; figures are the other {s}'s"
        ));
    }
    o
}

/// The figures of a stream scenario.
pub(crate) fn stream_outcome(
    sc: Scenario,
    system: System,
    expected: u64,
    got: u64,
    start: Instant,
    last: Option<Instant>,
    produced: Produced,
) -> Outcome {
    let elapsed = last.map_or(Duration::ZERO, |l| l.saturating_duration_since(start));
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut o = Outcome::new(sc.as_str(), system, expected);
    o.completed = got;
    o.elapsed_s = secs;
    o.metrics.push(Metric::higher("msgs/s", got as f64 / secs));
    if got < expected {
        o.notes.push(format!(
            "{} of {expected} messages never arrived (dropped, or still queued when the \
             {}idle timeout ended the wait)",
            expected - got,
            if produced.stalled {
                "producer stopped: no receiver progress; "
            } else {
                ""
            }
        ));
    }
    if produced.retries > 0 {
        o.notes.push(
            "the producer was paced by outbox backpressure (BACKPRESSURE, retried)".to_owned(),
        );
    }
    o
}
