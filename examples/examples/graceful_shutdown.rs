//! Graceful shutdown of several resources: a hub server, a client, and a
//! background task, stopped in order under a watchdog when the process gets
//! SIGINT (Ctrl-C) or SIGTERM.
//!
//! ```text
//! cargo run -p link-examples --example graceful_shutdown      # then Ctrl-C
//! cargo run -p link-examples --example graceful_shutdown -- --after-secs 3
//! ```
//!
//! `--after-secs N` triggers the same shutdown by itself after N seconds.
//! The exit status is 0 for a clean shutdown, 1 otherwise (a step failed or
//! the 10 s watchdog fired).

use std::net::SocketAddr;
use std::time::Duration;

use link::helpers::lifecycle::install_process_handlers;
use link::helpers::logging::{self, LogOptions};
use link_examples::Result;
use link_examples::graceful_shutdown;

#[tokio::main]
async fn main() -> Result<()> {
    logging::init(LogOptions::new().context("shutdown-demo").level("info"))?;
    let mut after = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--after-secs" => {
                after = Some(args.next().ok_or("--after-secs needs a value")?.parse()?)
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    let secret = link::hub::random_secret().ok_or("cannot generate a secret")?;
    let service = graceful_shutdown::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &secret,
        Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .await?;
    // SIGINT, SIGTERM and panics trigger the shutdown (removed on drop).
    let _handlers = install_process_handlers(&service.shutdown)?;
    println!(
        "hub on {}, client {:?} publishing clock.tick; press Ctrl-C to stop",
        service.server.url().unwrap_or_default(),
        service.client.kind()
    );
    if let Some(secs) = after {
        let shutdown = service.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            shutdown.trigger(format!("--after-secs {secs}"));
        });
    }

    let outcome = service.shutdown.wait().await;
    println!(
        "shutdown ({}) after {} ticks:",
        outcome.reason,
        service.ticks()
    );
    for step in &outcome.steps {
        println!("  {:<18} {:?}", step.name, step.status);
    }
    std::process::exit(if outcome.is_clean() { 0 } else { 1 });
}
