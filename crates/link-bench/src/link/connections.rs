//! `connections`: K idle authenticated peers (raw WebSockets), opened with
//! a bounded number of hellos in flight. Reports the hello rate, the time
//! until every peer holds the complete final peer list (`converged s`),
//! the presence bytes each peer received, and the hub's resident memory
//! per connection at its peak (sampled while peers join and lists go out)
//! and once settled, `--settle` after convergence (`VmRSS` of the hub process:
//! the child hub, or this whole process when the hub is embedded).
//!
//! Peers are `v1` clients by default (`--clients v1`): they read full
//! `peers.update` lists, as Node peers are served. A peer counts as holding
//! the final list when a list names all K peers; the load tool counts the
//! entries without checking the MAC (that CPU is the hub's to use on a
//! shared box). With `--clients delta` the peers ask for the `peers.delta`
//! extension: they count a snapshot's entries, then add each delta's
//! joined and subtract its left, following versions (a gap is answered
//! with `peers.resync`, as our client does); a peer holds the final list
//! when its count is K.

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
use crate::options::{Clients, Scenario};
use crate::report::{CPU_PER_MSG, Metric, Outcome, System};
use crate::sys::total_rss_bytes;
use crate::target::HubTarget;

/// The memory read 1 s after every peer holds the final list: the
/// `settled` figure until session 13, now reported in a note.
///
/// `settled` itself is read `--settle` after convergence (default 35 s:
/// past two of the hub's default keepalive rounds, 15 s apart). mimalloc
/// gives back pages freed in the storm only when the hub allocates again,
/// at least a second after they were freed, and an idle hub allocates when
/// it pings its peers: the VmRSS of a 10,000-delta run, read every 250 ms,
/// stepped down 5 and 20 s after convergence (99 -> 93 -> 89 MB) and stayed
/// flat to 40 s.
const FIRST_READ: Duration = Duration::from_secs(1);

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
    /// `peers.resync` requests sent (delta clients).
    resyncs: AtomicU64,
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
    let delta = ctx.opts.clients == Clients::Delta;
    // Round-robin over a cluster's hubs.
    let mut hellos = futures_util::stream::iter(names.iter().enumerate())
        .map(|(i, kind)| raw::hello_asking(hub, i, kind, delta))
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
                    peer,
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
    tokio::time::sleep(FIRST_READ).await;
    let first_read = total_rss_bytes(&pids);
    tokio::time::sleep(ctx.opts.settle.saturating_sub(FIRST_READ)).await;
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
        if let Some(first) = first_read {
            o.notes.push(format!(
                "settled read {:?} after {}; {:?} after it, {:.2} KiB/conn",
                ctx.opts.settle,
                if converged.is_some() {
                    "convergence"
                } else {
                    "the last hello"
                },
                FIRST_READ,
                per_conn(first, b)
            ));
        }
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
    let (clients, what) = match ctx.opts.clients {
        Clients::V1 => ("v1", "peers.update"),
        Clients::Delta => ("delta", "peers.snapshot and peers.delta"),
    };
    o.notes.push(format!(
        "{clients} clients: idle peers received {frames} frames ({:.1} MiB) while the others \
         joined ({what})",
        bytes as f64 / (1024.0 * 1024.0)
    ));
    let resyncs = counters.resyncs.load(Ordering::Relaxed);
    if resyncs > 0 {
        o.notes
            .push(format!("{resyncs} peers.resync sent after gaps"));
    }
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

/// The presence frames, entries left unread: `peers.update` (v1),
/// `peers.snapshot` and `peers.delta` (the extension).
#[derive(serde::Deserialize)]
struct PeersFrame<'a> {
    #[serde(rename = "type", borrow)]
    msg_type: std::borrow::Cow<'a, str>,
    data: Option<PeersData>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PeersData {
    peers: Vec<serde::de::IgnoredAny>,
    version: u64,
    part: u32,
    parts: u32,
    base: u64,
    joined: Vec<serde::de::IgnoredAny>,
    left: Vec<serde::de::IgnoredAny>,
}

/// What a presence frame says.
enum Presence {
    /// A full list of this many peers.
    List(usize),
    /// A snapshot part: version, part, parts, entries.
    Part(u64, u32, u32, usize),
    /// A delta: base, version, joined, left.
    Delta(u64, u64, usize, usize),
}

fn presence(text: &str) -> Option<Presence> {
    use link_protocol::msg_type;
    let f: PeersFrame<'_> = serde_json::from_str(text).ok()?;
    let d = f.data.unwrap_or_default();
    match &*f.msg_type {
        msg_type::PEERS_UPDATE => Some(Presence::List(d.peers.len())),
        msg_type::PEERS_SNAPSHOT => Some(Presence::Part(d.version, d.part, d.parts, d.peers.len())),
        msg_type::PEERS_DELTA => Some(Presence::Delta(
            d.base,
            d.version,
            d.joined.len(),
            d.left.len(),
        )),
        _ => None,
    }
}

/// A delta client's count of the peers it holds, following versions as
/// `link_protocol::presence::PeerSync` does (without reading entries).
#[derive(Default)]
struct Tracker {
    version: Option<u64>,
    /// A snapshot being gathered: version, next part, parts, entries.
    building: Option<(u64, u32, u32, usize)>,
    count: usize,
    asked: bool,
}

impl Tracker {
    /// Applies a frame; `Err(())` asks for a resync.
    fn apply(&mut self, p: Presence) -> Result<(), ()> {
        match p {
            Presence::List(n) => self.count = n,
            Presence::Part(v, part, parts, n) => {
                if part == 0 {
                    self.building = Some((v, 0, parts, 0));
                }
                match self.building.as_mut() {
                    Some((bv, next, bparts, acc))
                        if *bv == v && *next == part && *bparts == parts =>
                    {
                        *acc += n;
                        *next += 1;
                        if *next == *bparts {
                            self.count = *acc;
                            self.version = Some(v);
                            self.building = None;
                            self.asked = false;
                        }
                    }
                    _ => {
                        self.building = None;
                        return self.gap();
                    }
                }
            }
            Presence::Delta(base, v, joined, left) => match self.version {
                Some(held) if held == base && v > base => {
                    self.count = (self.count + joined).saturating_sub(left);
                    self.version = Some(v);
                }
                Some(held) if v <= held => {}
                _ if self.building.is_some() => {}
                _ => return self.gap(),
            },
        }
        Ok(())
    }

    fn gap(&mut self) -> Result<(), ()> {
        self.version = None;
        if std::mem::replace(&mut self.asked, true) {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// Keeps an idle peer alive: reads (so pings get their pongs) and counts
/// what arrives, until told to stop; then closes.
async fn hold(peer: raw::RawPeer, mut stop: watch::Receiver<bool>, c: Arc<Counters>, k: usize) {
    let raw::RawPeer { mut ws, mut conn } = peer;
    let mut complete = false;
    let mut tracker = Tracker::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(m)) => {
                    c.frames.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                    let Message::Text(t) = &m else { continue };
                    let Some(p) = presence(t.as_str()) else { continue };
                    c.presence_bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                    if tracker.apply(p).is_err() {
                        c.resyncs.fetch_add(1, Ordering::Relaxed);
                        let data = link_protocol::CanonicalData::new(&serde_json::json!({}));
                        let (_, frame) = conn.encode(
                            raw::now(),
                            link_protocol::msg_type::PEERS_RESYNC,
                            None,
                            Some(&data),
                        );
                        if ws.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                    let n = tracker.count;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_follows_parts_and_deltas_and_asks_once_per_gap() {
        let mut t = Tracker::default();
        assert!(t.apply(Presence::Part(3, 0, 2, 5)).is_ok());
        assert_eq!(t.count, 0, "nothing held until the last part");
        assert!(t.apply(Presence::Part(3, 1, 2, 4)).is_ok());
        assert_eq!((t.count, t.version), (9, Some(3)));
        assert!(t.apply(Presence::Delta(3, 5, 2, 1)).is_ok());
        assert_eq!((t.count, t.version), (10, Some(5)));
        assert!(t.apply(Presence::Delta(6, 7, 1, 0)).is_err(), "a gap asks");
        assert!(t.apply(Presence::Delta(7, 8, 1, 0)).is_ok(), "once");
        assert!(t.apply(Presence::Part(8, 0, 1, 12)).is_ok());
        assert_eq!((t.count, t.version), (12, Some(8)));
        let f = r#"{"type":"peers.delta","data":{"base":1,"changed":[],"joined":[["a",null,1,2,3]],"left":["b","c"],"version":2}}"#;
        assert!(matches!(presence(f), Some(Presence::Delta(1, 2, 1, 2))));
    }
}
