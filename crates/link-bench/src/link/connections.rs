//! `connections`: K idle authenticated peers (raw WebSockets), opened with
//! a bounded number of hellos in flight. Reports the hello rate and the
//! hub's resident memory per connection (`VmRSS` of the hub process: the
//! child hub, or this whole process when the hub is embedded).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;

use super::raw;
use crate::context::Ctx;
use crate::error::BenchError;
use crate::options::Scenario;
use crate::report::{Metric, Outcome, System};
use crate::sys::rss_bytes;
use crate::target::HubTarget;

/// Pause before reading memory again, once every hello is done.
const SETTLE: Duration = Duration::from_secs(1);

pub(super) async fn run(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Connections;
    let k = ctx.opts.connections;
    let before = hub.pid().and_then(rss_bytes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let rx_frames = Arc::new(AtomicU64::new(0));
    let rx_bytes = Arc::new(AtomicU64::new(0));
    let bar = ctx.progress.bar("link connections", k as u64);
    let names: Vec<String> = (0..k).map(|i| ctx.name(&format!("c{i}"))).collect();
    let mut hellos = futures_util::stream::iter(names.iter())
        .map(|kind| raw::hello(hub, kind))
        .buffer_unordered(ctx.opts.hello_concurrency);
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
                    rx_frames.clone(),
                    rx_bytes.clone(),
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
    let at_open = hub.pid().and_then(rss_bytes);
    tokio::time::sleep(SETTLE).await;
    let settled = hub.pid().and_then(rss_bytes);
    let (frames, bytes) = (
        rx_frames.load(Ordering::Relaxed),
        rx_bytes.load(Ordering::Relaxed),
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
    if let (Some(b), Some(a), true) = (before, settled.max(at_open), connected > 0) {
        let per = a.saturating_sub(b) as f64 / connected as f64 / 1024.0;
        o.metrics.push(Metric::lower("hub KiB/conn", per));
        o.metrics
            .push(Metric::lower("hub RSS MiB", a as f64 / (1024.0 * 1024.0)));
    }
    o.metrics.push(Metric::lower(
        "rx MiB/peer",
        bytes as f64 / (1024.0 * 1024.0) / connected.max(1) as f64,
    ));
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

/// Keeps an idle peer alive: reads (so pings get their pongs) and counts
/// what arrives, until told to stop; then closes.
async fn hold(
    mut ws: raw::Ws,
    mut stop: watch::Receiver<bool>,
    frames: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(m)) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                }
                _ => return,
            },
        }
    }
    let _ = ws.close(None).await;
    let _ = ws.flush().await;
}
