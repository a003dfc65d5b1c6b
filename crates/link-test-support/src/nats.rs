//! A real nats-server for cluster tests: Debian's `nats-server` (2.9),
//! started on `127.0.0.1` with `--port -1` (the server picks a free port,
//! read back from its log), JetStream on, its store in a temp dir. It can be
//! killed (`SIGKILL`) and started again on the same port with the same
//! store, as an operator's restart would.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::TempDir;

/// Where the binary is looked up: `$LINK_NATS_SERVER`, else the Debian path.
const NATS_ENV: &str = "LINK_NATS_SERVER";
const DEFAULT_NATS: &str = "/usr/sbin/nats-server";

/// How long the server may take to say it listens.
const START_WAIT: Duration = Duration::from_secs(20);

/// A running (or killed) nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: TempDir,
}

impl NatsServer {
    /// The nats-server binary: `$LINK_NATS_SERVER`, else `/usr/sbin/nats-server`.
    pub fn binary() -> PathBuf {
        std::env::var_os(NATS_ENV).map_or_else(|| DEFAULT_NATS.into(), PathBuf::from)
    }

    /// Starts a server on a port it picks. Panics, saying how to install
    /// it, when there is no nats-server.
    pub async fn start() -> Self {
        let store = TempDir::new("nats-js");
        let (child, port) = spawn(&store, None).await;
        Self {
            child: Some(child),
            port,
            store,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with `SIGKILL` and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and store (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        self.kill().await;
        let (child, port) = spawn(&self.store, Some(self.port)).await;
        assert_eq!(port, self.port);
        self.child = Some(child);
    }
}

async fn spawn(store: &TempDir, port: Option<u16>) -> (Child, u16) {
    let binary = NatsServer::binary();
    assert!(
        binary.exists(),
        "this test runs a real nats-server, and there is none at {}: install Debian's \
         (`apt-get install -y nats-server`, which `.ci/run` does) or set {NATS_ENV}",
        binary.display()
    );
    let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut command = Command::new(&binary);
    command
        .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
        .arg(store.path());
    let what = format!("nats-server ({})", binary.display());
    let (child, port) = crate::process::spawn_until(command, &what, START_WAIT, |line| {
        let (_, addr) = line.split_once("Listening for client connections on ")?;
        addr.trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
    })
    .await;
    (child, port)
}
