//! `flood`: does one peer over its rate limit slow the others down?
//!
//! `flood_pairs` publisher → subscriber pairs (each on its own topic) run
//! at full speed twice: alone, then while [`FLOODER_KIND`] publishes to a
//! subscribed topic at 10 times its publish limit. The hub refuses the
//! flooder's excess where the frame enters (after parsing and verifying
//! it), so what the flood may cost the others is that, plus the flooder's
//! own sending on the same machine. Reported: the others' delivered rate
//! with the flooder, without it, and the change (`impact %`), plus the
//! flooder's offered and delivered rates. With a hub whose CPU time can be
//! read (`--child`, `--hub-pid`): the hub's CPU per message of the others,
//! both ways, and the share of the hub's CPU the flood took (`flood CPU
//! %`), which a busy shared machine disturbs far less than the rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use link_client::{LinkClient, LinkError};
use serde_json::Value;

use super::stream::produce;
use super::{PARTNER_HUB, Receivers, Window, peer, peer_at, placement, ready_to_publish};
use crate::context::Ctx;
use crate::error::BenchError;
use crate::meter::{CROSSINGS, CROSSINGS_PER_MSG, HubMeter};
use crate::options::Scenario;
use crate::report::{CPU_PER_MSG, Metric, Outcome, System};
use crate::target::{FLOODER_KIND, HubTarget};

/// The flooder offers this many times its limit.
const FACTOR: u32 = 10;
/// How often the flooder tops up to its offered rate.
const TICK: Duration = Duration::from_millis(2);
/// Time for the flooder to spend its burst before the others start.
const WARM_UP: Duration = Duration::from_millis(300);

pub(super) async fn run(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Flood;
    let base = others(ctx, hub, "base").await?;
    let flood_topic = ctx.name("flood-topic");
    let sink_kind = ctx.name("flood-sink");
    let sink = peer_at(hub, PARTNER_HUB, sc, &sink_kind, false).await?;
    let sunk = Arc::new(AtomicU64::new(0));
    let _sink_handler = {
        let sunk = sunk.clone();
        sink.subscribe_with(&flood_topic, move |_| {
            sunk.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(|e| BenchError::op(sc.as_str(), e))?
    };
    let flooder = peer(hub, sc, FLOODER_KIND, false).await?;
    ready_to_publish(
        hub,
        &flooder,
        sc,
        &flood_topic,
        std::slice::from_ref(&sink),
        &[sink_kind],
        &[],
        ctx.opts.idle_timeout,
    )
    .await?;
    let rate = f64::from(ctx.opts.flood_limit) * f64::from(FACTOR);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (flooder, stop, payload) = (flooder.clone(), stop.clone(), ctx.payload.clone());
        tokio::spawn(async move { flood(&flooder, &flood_topic, rate, &payload, &stop).await })
    };
    tokio::time::sleep(WARM_UP).await;
    let sunk_before = sunk.load(Ordering::Relaxed);
    let measured_from = Instant::now();
    let with = others(ctx, hub, "flooded").await;
    let measured = measured_from.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    let sunk_during = sunk.load(Ordering::Relaxed) - sunk_before;
    stop.store(true, Ordering::Relaxed);
    let offered = flooding.await.map_err(|e| BenchError::op(sc.as_str(), e))?;
    flooder.stop().await;
    sink.stop().await;
    let with = with?;
    let offered = offered.map_err(|e| BenchError::op(sc.as_str(), e))?;

    let mut o = Outcome::new(sc.as_str(), System::Link, with.expected);
    o.completed = with.got;
    o.elapsed_s = with.secs;
    let (b, w) = (base.rate(), with.rate());
    o.metrics.push(Metric::higher("msgs/s", w));
    o.metrics.push(Metric::higher("alone msgs/s", b));
    if b > 0.0 {
        o.metrics
            .push(Metric::lower("impact %", ((b - w) / b * 100.0).max(0.0)));
    }
    if let (Some(cb), Some(cw)) = (base.hub_cpu_us, with.hub_cpu_us) {
        o.metrics.push(Metric::lower(CPU_PER_MSG, cw));
        o.metrics.push(Metric::lower("alone hub CPU µs/msg", cb));
        if cw > 0.0 {
            o.metrics.push(Metric::lower(
                "flood CPU %",
                ((cw - cb) / cw * 100.0).max(0.0),
            ));
        }
    }
    if let Some(c) = with.crossings {
        o.metrics.push(Metric::lower(CROSSINGS, c as f64));
        o.metrics.push(Metric::lower(
            CROSSINGS_PER_MSG,
            c as f64 / with.expected.max(1) as f64,
        ));
    }
    o.metrics
        .push(Metric::higher("flooder offered/s", offered.rate()));
    let delivered = sunk_during as f64 / measured;
    o.metrics
        .push(Metric::higher("flooder delivered/s", delivered));
    o.notes.push(format!(
        "{} pair(s) publishing at full speed, alone and while {FLOODER_KIND} publishes at \
         {FACTOR}x its limit of {}/s",
        ctx.opts.flood_pairs, ctx.opts.flood_limit
    ));
    if delivered > f64::from(ctx.opts.flood_limit) * 1.5 {
        o.notes.push(format!(
            "the flooder was not held to its limit: give the hub \
             `--rate-limit {FLOODER_KIND}:publish={}/s`",
            ctx.opts.flood_limit
        ));
    }
    if offered.rate() < rate * 0.9 {
        o.notes.push(format!(
            "the flooder offered {:.0}/s, short of {rate:.0}/s (its own outbox or CPU)",
            offered.rate()
        ));
    }
    o.notes.extend(placement(
        hub,
        "each pair's publisher on hub 0 and subscriber on hub 1, the flooder on hub 0 and \
         its sink on hub 1; the crossings are the flooded phase's, the flood's included",
    ));
    for r in [&base, &with] {
        if r.got < r.expected {
            o.notes.push(format!(
                "{}: {} of {} messages never arrived",
                r.label,
                r.expected - r.got,
                r.expected
            ));
        }
    }
    Ok(o)
}

/// What the normal load delivered.
struct Delivered {
    label: &'static str,
    expected: u64,
    got: u64,
    secs: f64,
    /// The hub's CPU time per delivered message over the phase (flood
    /// included), when the hub's process can be read.
    hub_cpu_us: Option<f64>,
    /// Messages the hubs of a cluster handed to NATS over the phase.
    crossings: Option<u64>,
}

impl Delivered {
    fn rate(&self) -> f64 {
        self.got as f64 / self.secs
    }
}

/// The pairs, each publishing `n` messages to its own subscriber, all at
/// once; timed from the first message to the last delivery of any pair.
async fn others(
    ctx: &Ctx<'_>,
    hub: &HubTarget,
    label: &'static str,
) -> Result<Delivered, BenchError> {
    let sc = Scenario::Flood;
    let n = ctx.opts.count_for(sc);
    let pairs = ctx.opts.flood_pairs;
    let bar = Arc::new(
        ctx.progress
            .bar(&format!("link flood ({label})"), n * pairs as u64),
    );
    let mut setup = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let (p_kind, s_kind) = (
            ctx.name(&format!("{label}-pub{i}")),
            ctx.name(&format!("{label}-sub{i}")),
        );
        let topic = ctx.name(&format!("{label}-topic{i}"));
        let sub = peer_at(hub, PARTNER_HUB, sc, &s_kind, false).await?;
        let publisher = peer(hub, sc, &p_kind, false).await?;
        let window = Window::new(1, ctx.opts.window, ctx.opts.idle_timeout);
        let receivers = Receivers::subscribe(
            std::slice::from_ref(&sub),
            &topic,
            n,
            &window,
            &bar,
            ctx,
            sc,
        )?;
        ready_to_publish(
            hub,
            &publisher,
            sc,
            &topic,
            std::slice::from_ref(&sub),
            &[s_kind],
            &[],
            ctx.opts.idle_timeout,
        )
        .await?;
        setup.push((publisher, sub, topic, window, receivers));
    }
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    let producing = setup.iter().map(|(publisher, _, topic, window, _)| {
        produce(sc, n, window, || {
            publisher.publish(topic, ctx.payload.clone())
        })
    });
    futures_util::future::try_join_all(producing).await?;
    let (mut got, mut last) = (0, None);
    let mut clients = Vec::with_capacity(pairs * 2);
    for (publisher, sub, _, _, receivers) in setup {
        let (g, l) = receivers.join(sc, ctx.opts.idle_timeout).await?;
        got += g;
        last = last.max(l);
        clients.push(publisher);
        clients.push(sub);
    }
    let cost = meter.stop(hub).await;
    let hub_cpu_us = cost.cpu_per(got);
    drop(bar);
    for c in clients {
        c.stop().await;
    }
    let secs = last
        .map_or(Duration::ZERO, |l| l.saturating_duration_since(start))
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    Ok(Delivered {
        label,
        expected: n * pairs as u64,
        got,
        secs,
        hub_cpu_us,
        crossings: cost.crossings,
    })
}

/// What the flooder sent.
struct Offered {
    sent: u64,
    secs: f64,
}

impl Offered {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.secs.max(f64::MIN_POSITIVE)
    }
}

/// Publishes at `rate` per second until `stop`: every tick, what is due
/// since the start; a full outbox skips the rest of the tick.
async fn flood(
    flooder: &LinkClient,
    topic: &str,
    rate: f64,
    payload: &Value,
    stop: &AtomicBool,
) -> Result<Offered, LinkError> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            match flooder.publish(topic, payload.clone()) {
                Ok(()) => sent += 1,
                Err(LinkError::Backpressure { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Offered {
        sent,
        secs: start.elapsed().as_secs_f64(),
    })
}
