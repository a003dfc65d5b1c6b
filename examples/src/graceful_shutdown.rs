//! Graceful shutdown of several resources, in order, under one watchdog.
//!
//! ```text
//!  SIGINT / SIGTERM (install_process_handlers) or shutdown("reason")
//!     └─► 1. stop the ticker task   (producers first: nothing new is sent)
//!         2. stop the link client   (drains its outbox, then closes)
//!         3. stop the hub server    (close 1001 to every peer, then stop)
//!     all under a watchdog; a failing step is logged and the next one runs
//! ```
//!
//! The hub server is built with `handle_signals(false)`: the process has
//! one owner of the signals, the [`GracefulShutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use link::helpers::lifecycle::GracefulShutdown;
use link::hub::{HubConfig, HubServer, Secret};
use link::{CancellationToken, ClientConfig, LinkClient};
use serde_json::json;

use crate::Result;

/// Names of the shutdown steps, in order.
pub const STEPS: [&str; 3] = ["stop ticker", "stop link client", "stop hub server"];

/// The running resources and the shutdown that stops them.
#[derive(Debug)]
pub struct Service {
    /// The hub server (port 0 resolved: see `server.url()`).
    pub server: HubServer,
    /// A client connected to it.
    pub client: LinkClient,
    /// Runs [`STEPS`] once, when triggered.
    pub shutdown: GracefulShutdown,
    ticks: Arc<AtomicU64>,
}

impl Service {
    /// `clock.tick` messages the ticker published so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// Starts a hub server on `bind` with the shared `secret`, a client on it,
/// and a ticker publishing `clock.tick` every `tick`; registers their
/// shutdown steps (bounded by `watchdog` together). Nothing is stopped
/// until the shutdown is triggered.
pub async fn start(
    bind: SocketAddr,
    secret: &str,
    tick: Duration,
    watchdog: Duration,
) -> Result<Service> {
    let server = HubServer::builder(HubConfig::builder(Secret::shared(secret)).build()?)
        .bind(bind)
        .handle_signals(false)
        .build()?;
    server.start().await?;
    let url = server.url().ok_or("the hub has no address")?;

    let client = LinkClient::new(
        ClientConfig::builder()
            .url(url)
            .secret(secret)
            .kind("clock")
            .build()?,
    );
    client.ready(Some(Duration::from_secs(10))).await?;

    let ticks = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let ticker = tokio::spawn(ticker(client.clone(), tick, cancel.clone(), ticks.clone()));

    let shutdown = GracefulShutdown::new(watchdog);
    let counted = ticks.clone();
    shutdown.step(STEPS[0], move || async move {
        cancel.cancel();
        ticker.await.map_err(|e| e.to_string())?;
        tracing::info!(ticks = counted.load(Ordering::Relaxed), "ticker stopped");
        Ok::<_, String>(())
    });
    let c = client.clone();
    shutdown.step(STEPS[1], move || async move {
        c.stop().await;
        Ok::<_, String>(())
    });
    let s = server.clone();
    shutdown.step(STEPS[2], move || async move { s.stop().await });
    Ok(Service {
        server,
        client,
        shutdown,
        ticks,
    })
}

/// Publishes `clock.tick` every `every` until `cancel` fires.
async fn ticker(
    client: LinkClient,
    every: Duration,
    cancel: CancellationToken,
    ticks: Arc<AtomicU64>,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {
                let n = ticks.fetch_add(1, Ordering::Relaxed) + 1;
                if let Err(e) = client.publish("clock.tick", json!({ "n": n })) {
                    tracing::warn!(code = e.code(), "tick not published: {e}");
                }
            }
        }
    }
}
