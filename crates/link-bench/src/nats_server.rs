//! A nats-server: one we start (127.0.0.1, `-p -1`: the server picks a free
//! port, read back from its log line `Listening for client connections
//! on`), with JetStream in a directory of its own when a cluster of hubs
//! needs it (their kind leases live in a JetStream KV bucket), or one
//! already running. Used by `--compare nats` and by `--cluster` (whose
//! server runs with `GOMAXPROCS=1` unless the environment sets it).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::BenchError;
use crate::nats_spec::NatsSpec;
use crate::target::TempDir;

/// How long a nats-server we start has to say it listens.
const START_WAIT: Duration = Duration::from_secs(20);

/// What nats-server logs once clients may connect.
const LISTENING: &str = "Listening for client connections on ";

/// A reachable nats-server.
#[derive(Debug)]
pub(crate) struct NatsTarget {
    pub(crate) url: String,
    pub(crate) pid: Option<u32>,
    child: Option<Child>,
    /// The JetStream store of a server we started.
    _store: Option<TempDir>,
}

impl NatsTarget {
    /// Starts (or just names) the server; `jetstream` turns JetStream on in
    /// a server we start (a URL server must have it on already).
    pub(crate) async fn start(spec: &NatsSpec, jetstream: bool) -> Result<Self, BenchError> {
        match spec {
            NatsSpec::Url { url, pid } => Ok(Self {
                url: url.clone(),
                pid: *pid,
                child: None,
                _store: None,
            }),
            NatsSpec::Spawn { program } => spawn(program, jetstream).await,
        }
    }

    pub(crate) async fn stop(self) {
        if let Some(mut child) = self.child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

async fn spawn(program: &Path, jetstream: bool) -> Result<NatsTarget, BenchError> {
    let store = if jetstream {
        Some(TempDir::new("nats-js")?)
    } else {
        None
    };
    let (child, port) = spawn_at(
        program,
        "127.0.0.1",
        None,
        store.as_ref().map(TempDir::path),
    )
    .await?;
    Ok(NatsTarget {
        url: format!("nats://127.0.0.1:{port}"),
        pid: child.id(),
        child: Some(child),
        _store: store,
    })
}

/// Starts `program -a ADDR -p PORT` (a free port when `None`), with
/// JetStream in `store` when given; returns the process once it listens,
/// and its port.
pub(crate) async fn spawn_at(
    program: &Path,
    addr: &str,
    port: Option<u16>,
    store: Option<&Path>,
) -> Result<(Child, u16), BenchError> {
    let mut command = Command::new(program);
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    command.args(["-a", addr, "-p", &port_arg]);
    if let Some(dir) = store {
        command.arg("-js").arg("-sd").arg(dir);
        // A cluster's server shares the cores with the hubs and the load
        // tool: with one Go scheduler thread (unless GOMAXPROCS is set
        // already), its idle threads do not spin on the other core between
        // messages (docs/perf.md, "Cluster": 0.6x its CPU per call and
        // 0.77x the cross-hub rpc-seq p50 on the 2-core box).
        if std::env::var_os("GOMAXPROCS").is_none() {
            command.env("GOMAXPROCS", "1");
        }
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            BenchError::io(
                format!(
                    "starting {} (install it: apt-get install nats-server)",
                    program.display()
                ),
                e,
            )
        })?;
    let Some(stderr) = child.stderr.take() else {
        return Err(BenchError::Nats("nats-server has no stderr".into()));
    };
    let mut lines = BufReader::new(stderr).lines();
    let listening = tokio::time::timeout(START_WAIT, async {
        let mut seen = Vec::new();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some((_, addr)) = line.split_once(LISTENING) {
                        return addr
                            .trim()
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                            .ok_or_else(|| format!("no port in {line:?}"));
                    }
                    seen.push(line);
                }
                Ok(None) => {
                    return Err(format!(
                        "nats-server exited before listening; its log:\n{}",
                        seen.join("\n")
                    ));
                }
                Err(e) => return Err(format!("reading nats-server's log: {e}")),
            }
        }
    })
    .await;
    let port = match listening {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => return Err(BenchError::Nats(e)),
        Err(_) => {
            return Err(BenchError::Nats(format!(
                "nats-server did not say it listens within {START_WAIT:?}"
            )));
        }
    };
    // Keep draining the log so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}
