//! `connections`: K idle authenticated peers (raw WebSockets), opened with
//! a bounded number of hellos in flight. Reports the hello rate, the time
//! until every peer holds the complete final peer list (`converged s`),
//! the presence bytes each peer received, and the hub's resident memory
//! per connection at its peak (sampled while peers join and lists go out)
//! and once settled (`VmRSS` of the hub process: the child hub, or this
//! whole process when the hub is embedded).
//!
//! Peers are `v1` clients: they read full `peers.update` lists, as Node
//! peers are served. A peer counts as holding the final list when a list
//! names all K peers; the load tool counts the entries without checking
//! the MAC (that CPU is the hub's to use on a shared box).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;

use super::raw;
use crate::context::Ctx;
use crate::error::BenchError;
use crate::meter::{CROSSINGS_PER_PEER, HubMeter};
use crate::options::Scenario;
use crate::report::{CPU_PER_MSG, Metric, Outcome, System};
use crate::sys::total_rss_bytes;
use crate::target::HubTarget;

/// Pause before reading memory again, once every peer holds the final list.
const SETTLE: Duration = Duration::from_secs(1);

/// How often the hub's memory is sampled for its peak.
const SAMPLE: Duration = Duration::from_millis(50);

/// Counters the idle peers update.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Bytes of `peers.update` frames.
    presence_bytes: AtomicU64,
    /// Peers whose last list names every peer.
    complete: AtomicU64,
    /// The longest list any peer read.
    longest: AtomicU64,
    changed: Notify,
}

/// The hub's peak RSS (summed over a cluster's hubs), sampled until told
/// to stop.
fn sample_peak(pids: Vec<u32>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut stop = stop;
        let mut peak = 0;
        loop {
            if let Some(r) = total_rss_bytes(&pids) {
                peak = peak.max(r);
            }
            tokio::select! {
                _ = stop.changed() => return peak,
                _ = tokio::time::sleep(SAMPLE) => {}
            }
        }
    })
}

pub(super) async fn run(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Connections;
    let k = ctx.opts.connections;
    let pids = hub.pids();
    let before = total_rss_bytes(&pids);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sampled_tx, sampled_rx) = watch::channel(false);
    let peak = sample_peak(pids.clone(), sampled_rx);
    let counters = Arc::new(Counters::default());
    let bar = ctx.progress.bar("link connections", k as u64);
    let names: Vec<String> = (0..k).map(|i| ctx.name(&format!("c{i}"))).collect();
    // Round-robin over a cluster's hubs.
    let mut hellos = futures_util::stream::iter(names.iter().enumerate())
        .map(|(i, kind)| raw::hello(hub, i, kind))
        .buffer_unordered(ctx.opts.hello_concurrency);
    let meter = HubMeter::start(hub).await;
    let start = Instant::now();
    let (mut connected, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    let mut last = start;
    let mut stopped_early = None;
    let mut holders = Vec::with_capacity(k);
    loop {
        if start.elapsed() > ctx.opts.max_connect_time {
            stopped_early = Some(format!(
                "stopped opening after {:?} (--max-connect-time)",
                ctx.opts.max_connect_time
            ));
            break;
        }
        let next = tokio::time::timeout(ctx.opts.idle_timeout, hellos.next()).await;
        match next {
            Ok(Some(Ok(peer))) => {
                connected += 1;
                last = Instant::now();
                bar.set(connected);
                holders.push(tokio::spawn(hold(
                    peer.ws,
                    stop_rx.clone(),
                    counters.clone(),
                    k,
                )));
            }
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) => break,
            Err(_) => {
                stopped_early = Some(format!(
                    "no hello completed for {:?}: stopped opening",
                    ctx.opts.idle_timeout
                ));
                break;
            }
        }
    }
    drop(hellos);
    drop(bar);
    let opened = last.saturating_duration_since(start);
    // Converged: every peer's last list names all K (only when all K
    // joined; `off` sends no lists).
    let lists = hub.peer_updates() != link_hub::PeerUpdates::Off;
    let converged = if lists && connected == k as u64 {
        converge(&counters, connected, ctx.opts.idle_timeout)
            .await
            .map(|at| at.saturating_duration_since(start))
    } else {
        None
    };
    let cost = meter.stop(hub).await;
    tokio::time::sleep(SETTLE).await;
    let settled = total_rss_bytes(&pids);
    let _ = sampled_tx.send(true);
    let peak = peak.await.ok().filter(|p| *p > 0);
    let (frames, bytes, presence) = (
        counters.frames.load(Ordering::Relaxed),
        counters.bytes.load(Ordering::Relaxed),
        counters.presence_bytes.load(Ordering::Relaxed),
    );
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }

    let secs = opened.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut o = Outcome::new(sc.as_str(), System::Link, k as u64);
    o.completed = connected;
    o.elapsed_s = secs;
    o.metrics
        .push(Metric::higher("hellos/s", connected as f64 / secs));
    if let Some(c) = converged {
        o.metrics
            .push(Metric::lower("converged s", c.as_secs_f64()));
    }
    let per_conn =
        |rss: u64, base: u64| rss.saturating_sub(base) as f64 / connected.max(1) as f64 / 1024.0;
    if let (Some(b), Some(p)) = (before, peak) {
        o.metrics
            .push(Metric::lower("peak KiB/conn", per_conn(p, b)));
        o.metrics
            .push(Metric::lower("peak RSS MiB", p as f64 / (1024.0 * 1024.0)));
    }
    if let (Some(b), Some(a), true) = (before, settled, connected > 0) {
        o.metrics
            .push(Metric::lower("settled KiB/conn", per_conn(a, b)));
        o.metrics
            .push(Metric::lower("hub RSS MiB", a as f64 / (1024.0 * 1024.0)));
    }
    o.metrics.push(Metric::lower(
        "presence KiB/peer",
        presence as f64 / 1024.0 / connected.max(1) as f64,
    ));
    o.metrics.push(Metric::lower(
        "rx MiB/peer",
        bytes as f64 / (1024.0 * 1024.0) / connected.max(1) as f64,
    ));
    if hub.is_cluster() {
        // No hub CPU here (none per unit, as on a lone hub): only what
        // crossed NATS while peers joined and their lists converged.
        cost.push(&mut o, CPU_PER_MSG, 0, CROSSINGS_PER_PEER, connected);
        o.notes.extend(super::placement(
            hub,
            "idle peers round-robin over the hubs; memory is the sum over the hubs",
        ));
    }
    if lists && connected == k as u64 && converged.is_none() {
        o.notes.push(format!(
            "not converged: {} of {k} peers held a list of all {k} peers when nothing had \
             changed for {:?} (the longest list named {})",
            counters.complete.load(Ordering::Relaxed),
            ctx.opts.idle_timeout,
            counters.longest.load(Ordering::Relaxed)
        ));
    }
    o.notes.push(format!(
        "idle peers received {frames} frames ({:.1} MiB) while the others joined (peers.update)",
        bytes as f64 / (1024.0 * 1024.0)
    ));
    match hub.mode() {
        "embedded" => o.notes.push(
            "embedded: RSS is this whole process (hub plus the load generator's side of every \
             socket); use --child for the hub alone"
                .to_owned(),
        ),
        "url" => o
            .notes
            .push("hub memory unknown for a --url hub (no local process)".to_owned()),
        _ => {}
    }
    if failed > 0 {
        o.notes.push(format!(
            "{failed} hello(s) failed; first: {}",
            first_error.unwrap_or_default()
        ));
    }
    if let Some(why) = stopped_early {
        o.notes.push(format!("{connected} of {k} connected: {why}"));
    }
    Ok(o)
}

/// Waits until every peer's last list is complete; the instant it
/// happened, or `None` after `idle` without progress.
async fn converge(counters: &Counters, peers: u64, idle: Duration) -> Option<Instant> {
    loop {
        let changed = counters.changed.notified();
        if counters.complete.load(Ordering::Relaxed) >= peers {
            return Some(Instant::now());
        }
        if tokio::time::timeout(idle, changed).await.is_err() {
            return None;
        }
    }
}

/// `data.peers` of a `peers.update` frame, entries left unread.
#[derive(serde::Deserialize)]
struct PeersFrame<'a> {
    #[serde(rename = "type", borrow)]
    msg_type: std::borrow::Cow<'a, str>,
    data: Option<PeersData>,
}

#[derive(serde::Deserialize)]
struct PeersData {
    peers: Vec<serde::de::IgnoredAny>,
}

/// The number of peers in `text` when it is a `peers.update`.
fn listed(text: &str) -> Option<usize> {
    let f: PeersFrame<'_> = serde_json::from_str(text).ok()?;
    (f.msg_type == link_protocol::msg_type::PEERS_UPDATE)
        .then(|| f.data.map_or(0, |d| d.peers.len()))
}

/// Keeps an idle peer alive: reads (so pings get their pongs) and counts
/// what arrives, until told to stop; then closes.
async fn hold(mut ws: raw::Ws, mut stop: watch::Receiver<bool>, c: Arc<Counters>, k: usize) {
    let mut complete = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(m)) => {
                    c.frames.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                    let Message::Text(t) = &m else { continue };
                    let Some(n) = listed(t.as_str()) else { continue };
                    c.presence_bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                    c.longest.fetch_max(n as u64, Ordering::Relaxed);
                    if (n >= k) != complete {
                        complete = n >= k;
                        if complete {
                            c.complete.fetch_add(1, Ordering::Relaxed);
                        } else {
                            c.complete.fetch_sub(1, Ordering::Relaxed);
                        }
                        c.changed.notify_waiters();
                    }
                }
                _ => return,
            },
        }
    }
    let _ = ws.close(None).await;
    let _ = ws.flush().await;
}
