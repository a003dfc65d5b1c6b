//! The four-service deployment: a hub with per-peer keys, a secrets vault,
//! a worker that loads its credentials from the vault, and a coordinator
//! that dispatches jobs and hears their progress on direct messages.
//!
//! All four in one process (a hub on a free port, 5 jobs, one rotation):
//!
//! ```text
//! cargo run -p link-examples --example four_services
//! cargo run -p link-examples --example four_services -- --jobs 20
//! ```
//!
//! Or one process each, in four terminals (start them in any order; the
//! worker waits for the vault and the coordinator for the worker):
//!
//! ```text
//! cargo run -p link-examples --example four_services -- --role hub --keys demo-keys.json
//! cargo run -p link-examples --example four_services -- --role vault --keys demo-keys.json
//! cargo run -p link-examples --example four_services -- --role worker --keys demo-keys.json
//! cargo run -p link-examples --example four_services -- --role coordinator --keys demo-keys.json --jobs 10
//! ```
//!
//! The hub role writes the keys file (`{"kind": "key"}`, mode 0600) when it
//! does not exist; `link-cli hub --keys demo-keys.json` reads the same file.
//! Each service reads its own key from it, unless `LINK_SECRET` is set;
//! the hub URL comes from `--url`, else `LINK_URL`, else
//! `ws://127.0.0.1:8080`. Other `LINK_*` variables (see docs/operations.md)
//! tune the clients. The vault rotates the API token every `--rotate-secs`
//! (default 20) seconds and the worker picks it up. Ctrl-C stops a role.
//! `LINK_LOG=debug` shows the traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use link::ClientConfigBuilder;
use link::helpers::env::{self, Env};
use link::helpers::lifecycle::{GracefulShutdown, install_process_handlers};
use link::helpers::logging::{self, LogOptions};
use link_examples::four_services::{self as fs, Coordinator, Vault, Worker};
use link_examples::{Result, guard};

#[derive(Debug)]
struct Args {
    role: Option<String>,
    bind: Option<SocketAddr>,
    url: Option<String>,
    keys: PathBuf,
    jobs: u64,
    rotate_secs: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        role: None,
        bind: None,
        url: None,
        keys: PathBuf::from("demo-keys.json"),
        jobs: 5,
        rotate_secs: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--role" => args.role = Some(value()?),
            "--bind" => args.bind = Some(value()?.parse()?),
            "--url" => args.url = Some(value()?),
            "--keys" => args.keys = PathBuf::from(value()?),
            "--jobs" => args.jobs = value()?.parse()?,
            "--rotate-secs" => args.rotate_secs = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: four_services [--role hub|vault|worker|coordinator] [--bind ADDR] \
                     [--url URL] [--keys FILE] [--jobs N] [--rotate-secs N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let context = args.role.as_deref().unwrap_or("four-services");
    logging::init(LogOptions::new().context(context).level("info"))?;
    match args.role.as_deref() {
        None => all_in_one(&args).await,
        Some("hub") => hub(&args).await,
        Some("vault") => vault(&args).await,
        Some("worker") => worker(&args).await,
        Some("coordinator") => coordinator(&args).await,
        Some(other) => Err(format!("unknown role {other:?}").into()),
    }
}

async fn all_in_one(args: &Args) -> Result<()> {
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let report = fs::run(bind, args.jobs).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!(
        "{} jobs done, {} progress messages, credentials {:?} loaded, {:?} rotated",
        report.results.len(),
        report.progress.len(),
        report.secrets_loaded,
        report.rotated
    );
    Ok(())
}

async fn hub(args: &Args) -> Result<()> {
    let keys = if args.keys.exists() {
        read_keys(&args.keys)?
    } else {
        let keys = fs::generate_keys()?;
        write_keys(&args.keys, &keys)?;
        println!("wrote per-peer keys to {}", args.keys.display());
        keys
    };
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    // The server handles SIGINT/SIGTERM itself: close 1001 to every peer.
    let server = fs::hub(bind, &keys)?.build()?;
    server.start().await?;
    println!("listening={}", server.url().unwrap_or_default());
    server.stopped().await?;
    Ok(())
}

/// A client configuration from `LINK_*` variables, with the URL and this
/// role's key filled in when the environment does not set them.
fn base(args: &Args, kind: &str) -> Result<ClientConfigBuilder> {
    let process = Env::process();
    let mut builder = env::client_config_from_env("")?;
    if let Some(url) = &args.url {
        builder = builder.url(url.as_str());
    } else if process.string("LINK_URL").is_none() {
        builder = builder.url("ws://127.0.0.1:8080");
    }
    if process.string("LINK_SECRET").is_none() {
        let keys = read_keys(&args.keys)?;
        let key = keys
            .get(kind)
            .ok_or_else(|| format!("no key for {kind} in {}", args.keys.display()))?;
        builder = builder.secret(key.as_str());
    }
    Ok(builder)
}

/// Runs until SIGINT/SIGTERM, then runs the shutdown's steps.
async fn until_signal(shutdown: &GracefulShutdown) -> Result<()> {
    let _handlers = install_process_handlers(shutdown)?;
    let outcome = shutdown.wait().await;
    if outcome.is_clean() {
        Ok(())
    } else {
        Err(format!("unclean shutdown: {outcome:?}").into())
    }
}

async fn vault(args: &Args) -> Result<()> {
    let vault = std::sync::Arc::new(Vault::start(base(args, fs::VAULT)?, fs::demo_secrets()?)?);
    let rotator = vault.clone();
    let every = Duration::from_secs(args.rotate_secs.max(1));
    let rotation = tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut n = 0_u64;
        loop {
            interval.tick().await;
            n += 1;
            if let Err(e) = rotator.rotate(fs::ROTATED_PATH, &format!("tok-rotated-{n}")) {
                tracing::warn!("rotation failed: {e}");
            }
        }
    });
    let shutdown = GracefulShutdown::new(Duration::from_secs(10));
    shutdown
        .step("stop rotations", move || async move {
            rotation.abort();
            Ok::<_, String>(())
        })
        .step("stop vault", move || async move {
            vault.stop().await;
            Ok::<_, String>(())
        });
    until_signal(&shutdown).await
}

async fn worker(args: &Args) -> Result<()> {
    let worker = std::sync::Arc::new(Worker::start(base(args, fs::WORKER)?)?);
    let w = worker.clone();
    let rotations = tokio::spawn(async move {
        while let Ok(name) = w.next_rotation().await {
            println!("credential {name} rotated");
        }
    });
    let shutdown = GracefulShutdown::new(Duration::from_secs(10));
    shutdown.step("stop worker", move || async move {
        rotations.abort();
        worker.stop().await;
        Ok::<_, String>(())
    });
    until_signal(&shutdown).await
}

async fn coordinator(args: &Args) -> Result<()> {
    let mut coordinator = Coordinator::start(base(args, fs::COORDINATOR)?)?;
    let outcome = async {
        let results = coordinator.dispatch(args.jobs).await?;
        let expected = usize::try_from(args.jobs * fs::STEPS)?;
        // Progress messages travel beside the responses; they are all in by now
        // or just behind.
        let progress = guard(
            "progress",
            Duration::from_secs(10),
            coordinator.collect_progress(expected),
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&results)?);
        println!(
            "{} jobs done, {} progress messages",
            results.len(),
            progress.len()
        );
        Ok::<_, link_examples::Error>(())
    }
    .await;
    coordinator.stop().await;
    outcome
}

fn read_keys(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn write_keys(path: &Path, keys: &BTreeMap<String, String>) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(serde_json::to_string_pretty(keys)?.as_bytes())?;
    Ok(())
}
