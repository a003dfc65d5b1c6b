//! The cluster a chaos run breaks: nats-server (JetStream, a store that
//! outlives its restarts) and N child hubs (`link-cli hub --cluster …`),
//! each of which can be killed and started again at the same address. With
//! a [`Netns`], the last hub runs inside it and nats-server listens on the
//! host end of the NATS veth (every hub connects there); without, all is on
//! 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Child;

use super::netns::Netns;
use crate::error::BenchError;
use crate::nats_server::spawn_at;
use crate::options::PeerUpdates;
use crate::target::{ChildHub, Join, Placement, TempDir, spawn_child};

/// One hub: where it listens (fixed after its first start) and its process
/// while it runs.
struct Hub {
    bind: String,
    url: String,
    netns: Option<String>,
    proc: Option<ChildHub>,
}

/// nats-server and the hubs.
pub(crate) struct ChaosCluster {
    program: PathBuf,
    nats_program: PathBuf,
    peer_updates: PeerUpdates,
    secret: String,
    name: String,
    nats_addr: String,
    nats_port: u16,
    nats_url: String,
    store: TempDir,
    nats: Option<Child>,
    hubs: Vec<Hub>,
}

impl ChaosCluster {
    /// Starts nats-server, then `n` hubs (the last in `netns` when given).
    pub(crate) async fn start(
        program: PathBuf,
        nats_program: PathBuf,
        n: usize,
        peer_updates: PeerUpdates,
        netns: Option<&Netns>,
    ) -> Result<Self, BenchError> {
        let secret = link_hub::random_secret()
            .ok_or_else(|| BenchError::Hub("cannot generate a random secret".into()))?;
        let nats_addr = netns.map_or_else(|| "127.0.0.1".to_owned(), |ns| ns.nats_addr.to_string());
        let store = TempDir::new("chaos-js")?;
        let (child, nats_port) =
            spawn_at(&nats_program, &nats_addr, None, Some(store.path())).await?;
        let mut cluster = Self {
            program,
            nats_program,
            peer_updates,
            secret,
            name: format!("chaos-{:x}", std::process::id()),
            nats_url: format!("nats://{nats_addr}:{nats_port}"),
            nats_addr,
            nats_port,
            store,
            nats: Some(child),
            hubs: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (bind, ns) = match netns {
                Some(ns) if i + 1 == n => (format!("{}:0", ns.hub_addr), Some(ns.name.clone())),
                _ => ("127.0.0.1:0".to_owned(), None),
            };
            cluster.hubs.push(Hub {
                bind,
                url: String::new(),
                netns: ns,
                proc: None,
            });
            if let Err(e) = cluster.start_hub(i).await {
                cluster.stop().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// Every hub's URL, in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.hubs.iter().map(|h| h.url.clone()).collect()
    }

    /// The secret the hubs share (their peers' too).
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// The NATS URL the hubs use.
    pub(crate) fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// Number of hubs.
    pub(crate) fn len(&self) -> usize {
        self.hubs.len()
    }

    /// Starts hub `i` (again) at its address; the first start picks the
    /// port, later ones reuse it.
    pub(crate) async fn start_hub(&mut self, i: usize) -> Result<(), BenchError> {
        let join = Join {
            nats: &self.nats_url,
            name: &self.name,
            secret: &self.secret,
        };
        let hub = &self.hubs[i];
        let place = Placement {
            bind: &hub.bind,
            netns: hub.netns.as_deref(),
        };
        let (child, url, _, _) = spawn_child(
            &self.program,
            place,
            self.peer_updates,
            false,
            None,
            Some(&join),
        )
        .await?;
        let hub = &mut self.hubs[i];
        if hub.bind.ends_with(":0") {
            // ws://HOST:PORT[/path] → HOST:PORT
            let authority = url
                .split_once("://")
                .map_or(url.as_str(), |(_, r)| r)
                .split('/')
                .next()
                .unwrap_or_default();
            hub.bind = authority.to_owned();
        }
        eprintln!(
            "chaos: hub {i} started: {url}, pid {}",
            child.pid().unwrap_or_default()
        );
        hub.url = url;
        hub.proc = Some(child);
        Ok(())
    }

    /// SIGKILLs hub `i` and reaps it.
    pub(crate) async fn kill_hub(&mut self, i: usize) {
        if let Some(p) = self.hubs[i].proc.take() {
            p.stop().await;
        }
    }

    /// SIGKILLs nats-server and reaps it.
    pub(crate) async fn kill_nats(&mut self) {
        if let Some(mut c) = self.nats.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Starts nats-server again: same address, port and store. The port can
    /// stay busy for a moment after the kill, so a few tries.
    pub(crate) async fn start_nats(&mut self) -> Result<(), BenchError> {
        let mut last = None;
        for _ in 0..10 {
            match spawn_at(
                &self.nats_program,
                &self.nats_addr,
                Some(self.nats_port),
                Some(self.store.path()),
            )
            .await
            {
                Ok((child, _)) => {
                    self.nats = Some(child);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last.unwrap_or_else(|| BenchError::Nats("nats-server did not start again".into())))
    }

    /// Kills every hub, then nats-server.
    pub(crate) async fn stop(&mut self) {
        for i in 0..self.hubs.len() {
            self.kill_hub(i).await;
        }
        self.kill_nats().await;
    }
}
