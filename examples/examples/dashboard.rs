//! A live dashboard of a link: an EventRecorder streamed as Server-Sent
//! Events to a small HTML page.
//!
//! ```text
//! cargo run -p link-examples --example dashboard               # demo bus
//! cargo run -p link-examples --example dashboard -- --port 9000
//! LINK_URL=ws://127.0.0.1:8080 LINK_SECRET=… \
//!   cargo run -p link-examples --example dashboard             # a real bus
//! ```
//!
//! Then open http://127.0.0.1:8090/ (the page), or watch the stream with
//! `curl -N http://127.0.0.1:8090/events`. The dashboard binds 127.0.0.1
//! only; `--port 0` picks a free port.
//!
//! Without `LINK_URL` it starts a demo bus in the process: a hub on a free
//! port and two peers, "billing" and "inventory", that send statuses and
//! come and go every few seconds. With `LINK_URL` (and `LINK_SECRET`, and
//! the other `LINK_*` variables) it joins that bus as kind "dashboard"
//! (or `LINK_KIND`). Ctrl-C stops it.

use std::net::SocketAddr;
use std::time::Duration;

use link::helpers::env::{self, Env};
use link::helpers::logging::{self, LogOptions};
use link::hub::{HubConfig, HubServer, Secret};
use link::{ClientConfig, LinkClient};
use link_examples::{Result, dashboard};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    logging::init(LogOptions::new().context("dashboard").level("info"))?;
    let mut port = 8090_u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    let process = Env::process();
    let (client, demo) = if process.string("LINK_URL").is_some() {
        let mut config = env::client_config_from_env("")?;
        if process.string("LINK_KIND").is_none() {
            config = config.kind("dashboard");
        }
        (LinkClient::new(config.build()?), None)
    } else {
        let (client, server) = demo_bus().await?;
        (client, Some(server))
    };
    client.start();

    let (addr, handle) =
        dashboard::serve(SocketAddr::from(([127, 0, 0, 1], port)), &client).await?;
    println!("dashboard on http://{addr}/  (events: curl -N http://{addr}/events)");
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await?;
    client.stop().await;
    if let Some(server) = demo {
        server.stop().await?;
    }
    Ok(())
}

/// A hub on a free port, the dashboard's client on it, and two demo peers
/// that come and go.
async fn demo_bus() -> Result<(LinkClient, HubServer)> {
    let secret = link::hub::random_secret().ok_or("cannot generate a secret")?;
    let server = HubServer::builder(HubConfig::builder(Secret::shared(secret.as_str())).build()?)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .handle_signals(false)
        .build()?;
    server.start().await?;
    let url = server.url().ok_or("the hub has no address")?;
    let config = |kind: &str| {
        ClientConfig::builder()
            .url(url.as_str())
            .secret(secret.as_str())
            .kind(kind)
    };
    let client = LinkClient::new(config("dashboard").build()?);

    for (kind, period) in [("billing", 4_u64), ("inventory", 7)] {
        let started = std::time::Instant::now();
        let peer = config(kind)
            .status_interval(Duration::from_secs(2))
            .status(move || json!({ "uptimeSecs": started.elapsed().as_secs() }))
            .build()?;
        tokio::spawn(async move {
            // Joins for `period` seconds, leaves for `period / 2`, and so on.
            let mut online = true;
            let mut peer_client: Option<LinkClient> = None;
            loop {
                if online {
                    let c = LinkClient::new(peer.clone());
                    c.start();
                    // Queued until the link is ready; shows as `direct` on the page.
                    let _ = c.send("dashboard", "demo.hello", None);
                    peer_client = Some(c);
                } else if let Some(c) = peer_client.take() {
                    c.stop().await;
                }
                let secs = if online { period } else { period / 2 };
                tokio::time::sleep(Duration::from_secs(secs)).await;
                online = !online;
            }
        });
    }
    Ok((client, server))
}
