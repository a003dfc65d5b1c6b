//! The link hub under test: any hub at a URL (ours or a Node.js one), our
//! hub embedded in this process, our hub as a child process
//! (`link-cli hub --bind 127.0.0.1:0`, whose stdout announces
//! `LINK_SECRET=` and `listening=`), or a cluster of N such child hubs
//! joined over NATS (`--cluster URL`, one shared secret given through
//! `LINK_SECRET`, a cluster name of its own), with the nats-server we
//! start for it (JetStream on) or one at a URL. A hub we start serves
//! `wss://` when asked (`tls`, not for a cluster), with a CA and a
//! certificate for 127.0.0.1 made for the run; our peers trust that CA
//! alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use link_client::RootCertificates;
use link_hub::{HubConfig, HubServer, PeerUpdates, RateLimits, Secret, TlsConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::Connector;

use crate::error::BenchError;
use crate::nats_server::NatsTarget;
use crate::nats_spec::NatsSpec;
use crate::report::{ClusterInfo, TargetInfo};
use crate::scrape;

/// How long a child hub has to announce itself.
const CHILD_START: Duration = Duration::from_secs(30);

/// How long the hubs of a cluster have to see one another.
const CLUSTER_FORM: Duration = Duration::from_secs(30);

/// Between two looks at a forming cluster's `/metrics`.
const FORM_POLL: Duration = Duration::from_millis(20);

/// Where the hub comes from.
#[derive(Clone, Debug)]
pub enum HubSpec {
    /// A running hub at `url` with its shared secret (any protocol-v1 hub).
    Url {
        /// `ws://…`
        url: String,
        /// The shared secret.
        secret: String,
        /// The hub's process, when it runs on this machine (`--hub-pid`):
        /// its CPU time per message is then reported.
        pid: Option<u32>,
    },
    /// Our hub inside this process, on 127.0.0.1 and a free port.
    Embedded,
    /// Our hub as a child process: `program hub --bind 127.0.0.1:0`.
    Child {
        /// The `link-cli` executable.
        program: PathBuf,
    },
    /// `hubs` of our hubs as child processes, joined in a cluster over
    /// NATS (`program hub --bind 127.0.0.1:0 --cluster URL`); scenarios
    /// spread their peers over them so that traffic crosses hubs.
    Cluster {
        /// The `link-cli` executable.
        program: PathBuf,
        /// How many hubs (2 or more).
        hubs: usize,
        /// The nats-server: started for the run (JetStream on) or at a URL
        /// (JetStream must be on: the kind leases are a KV bucket).
        nats: NatsSpec,
    },
}

enum Running {
    External,
    Embedded(HubServer),
    Child(Box<ChildHub>),
    Cluster(Box<ClusterProcs>),
}

/// The processes of a cluster we started.
struct ClusterProcs {
    hubs: Vec<ChildHub>,
    nats: NatsTarget,
}

/// One hub of the target: where peers connect, and its process.
#[derive(Clone, Debug)]
struct Member {
    url: String,
    pid: Option<u32>,
}

/// A child hub process (killed when dropped).
pub(crate) struct ChildHub {
    child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
}

/// A hub ready for peers.
pub struct HubTarget {
    url: String,
    secret: String,
    mode: &'static str,
    pid: Option<u32>,
    running: Running,
    tls: Option<Tls>,
    peer_updates: PeerUpdates,
    /// Every hub: one, or the hubs of a cluster (the first is `url`).
    members: Vec<Member>,
    /// A cluster's NATS URL and name.
    cluster: Option<(String, String)>,
    /// A cluster's nats-server process, when known.
    nats_pid: Option<u32>,
}

impl std::fmt::Debug for HubTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTarget")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl HubTarget {
    /// Starts (or just names) the hub.
    /// `peer_updates` applies to a hub we start; a URL hub keeps its own.
    /// `tls` serves `wss://` from a hub we start (a URL hub is as it is).
    /// `flood_limit` gives a hub we start the `flood` scenario's flooder
    /// limit ([`FLOODER_KIND`]`:publish=N/s`); `None`: no limits.
    pub async fn start(
        spec: &HubSpec,
        peer_updates: PeerUpdates,
        tls: bool,
        flood_limit: Option<u32>,
    ) -> Result<Self, BenchError> {
        match spec {
            HubSpec::Url { url, secret, pid } => Ok(Self {
                url: url.clone(),
                secret: secret.clone(),
                mode: "url",
                pid: *pid,
                running: Running::External,
                tls: None,
                peer_updates,
                members: vec![Member {
                    url: url.clone(),
                    pid: *pid,
                }],
                cluster: None,
                nats_pid: None,
            }),
            HubSpec::Embedded => embedded(peer_updates, tls, flood_limit).await,
            HubSpec::Child { program } => {
                let (hub, url, secret, tls) = spawn_child(
                    program,
                    Placement::LOCAL,
                    peer_updates,
                    tls,
                    flood_limit,
                    None,
                )
                .await?;
                let pid = hub.child.id();
                Ok(HubTarget {
                    url: url.clone(),
                    secret,
                    mode: "child",
                    pid,
                    running: Running::Child(Box::new(hub)),
                    tls,
                    peer_updates,
                    members: vec![Member { url, pid }],
                    cluster: None,
                    nats_pid: None,
                })
            }
            HubSpec::Cluster {
                program,
                hubs,
                nats,
            } => {
                if tls {
                    return Err(BenchError::InvalidOption {
                        option: "tls",
                        reason: "not with a cluster (its hubs' /metrics are read over plain HTTP)"
                            .into(),
                    });
                }
                cluster(program, *hubs, nats, peer_updates, flood_limit).await
            }
        }
    }

    /// How many hubs peers are spread over (1 but for a cluster).
    pub fn hubs(&self) -> usize {
        self.members.len()
    }

    /// True for a cluster of hubs.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The URL of hub `i` (modulo the number of hubs).
    pub fn url_at(&self, i: usize) -> &str {
        &self.members[i % self.members.len()].url
    }

    /// Every hub's process whose CPU time is the hub's alone (none for an
    /// embedded hub: its process runs the load too).
    pub fn cpu_pids(&self) -> Vec<u32> {
        if self.mode == "embedded" {
            return Vec::new();
        }
        self.members.iter().filter_map(|m| m.pid).collect()
    }

    /// A cluster's nats-server process (started by the bench, or given
    /// with `--nats-pid`).
    pub fn nats_pid(&self) -> Option<u32> {
        self.nats_pid
    }

    /// Every hub's process, for memory (this process when embedded).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.pid).collect()
    }

    /// The sum over a cluster's hubs of `link_hub_cluster_published_total`
    /// (messages sealed and handed to NATS); `None` for a lone hub, or when
    /// a hub's `/metrics` cannot be read.
    pub async fn cluster_published(&self) -> Option<u64> {
        if !self.is_cluster() {
            return None;
        }
        let mut total = 0u64;
        for m in &self.members {
            let text = scrape::metrics(&m.url).await.ok()?;
            total += scrape::value(&text, "link_hub_cluster_published_total")? as u64;
        }
        Some(total)
    }

    /// The `peers.update` mode asked for (a URL hub's own mode is unknown:
    /// the one given is assumed).
    pub fn peer_updates(&self) -> PeerUpdates {
        self.peer_updates
    }

    /// The hub URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA of a TLS hub we started, for [`link_client`] peers.
    pub fn root_certificates(&self) -> Option<&RootCertificates> {
        self.tls.as_ref().map(|t| &t.roots)
    }

    /// The TLS connector of raw peers (`None`: the default one).
    pub(crate) fn connector(&self) -> Option<Connector> {
        self.tls
            .as_ref()
            .map(|t| Connector::Rustls(t.client.clone()))
    }

    /// The shared secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `embedded`, `child` or `url`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The process whose memory is the hub's (this process when embedded;
    /// a cluster's first hub: [`pids`](Self::pids) has them all).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// For reports.
    pub fn info(&self) -> TargetInfo {
        TargetInfo {
            mode: self.mode,
            url: self.url.clone(),
            cluster: self.cluster.as_ref().map(|(nats, name)| ClusterInfo {
                hubs: self.members.len(),
                urls: self.members.iter().map(|m| m.url.clone()).collect(),
                nats: nats.clone(),
                name: name.clone(),
            }),
        }
    }

    /// Stops what we started (a URL hub is left alone).
    pub async fn stop(self) {
        match self.running {
            Running::External => {}
            Running::Embedded(server) => {
                let _ = server.stop().await;
            }
            Running::Child(hub) => hub.stop().await,
            Running::Cluster(procs) => {
                let ClusterProcs { hubs, nats } = *procs;
                for hub in hubs {
                    hub.stop().await;
                }
                nats.stop().await;
            }
        }
    }
}

impl ChildHub {
    /// Its process id (none once it has been reaped).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, then reaps it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The kind of the `flood` scenario's flooder: the one kind a hub we start
/// limits (and only when `flood` runs).
pub const FLOODER_KIND: &str = "bench-flooder";

/// `bench-flooder:publish=N/s`, as `link-cli hub --rate-limit` takes it.
fn flood_setting(limit: u32) -> String {
    format!("{FLOODER_KIND}:publish={limit}/s")
}

async fn embedded(
    peer_updates: PeerUpdates,
    tls: bool,
    flood_limit: Option<u32>,
) -> Result<HubTarget, BenchError> {
    let secret = link_hub::random_secret()
        .ok_or_else(|| BenchError::Hub("cannot generate a random secret".into()))?;
    let mut limits = RateLimits::new();
    if let Some(limit) = flood_limit {
        limits = limits
            .apply_setting(&flood_setting(limit))
            .map_err(|e| BenchError::Hub(e.to_string()))?;
    }
    let config = HubConfig::builder(Secret::shared(secret.clone()))
        .peer_updates(peer_updates)
        .rate_limits(limits)
        .build()
        .map_err(|e| BenchError::Hub(e.to_string()))?;
    let mut builder = HubServer::builder(config)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        // Every peer of the load tool comes from 127.0.0.1.
        .max_connections_per_ip(1_000_000)
        .handle_signals(false);
    let tls = if tls {
        let pki = Pki::generate()?;
        let config = TlsConfig::from_pem(pki.cert.as_bytes(), pki.key.as_bytes())
            .map_err(|e| BenchError::Hub(e.to_string()))?;
        builder = builder.tls(config);
        Some(pki.client(None)?)
    } else {
        None
    };
    let server = builder
        .build()
        .map_err(|e| BenchError::Hub(e.to_string()))?;
    server
        .start()
        .await
        .map_err(|e| BenchError::Hub(e.to_string()))?;
    let url = server
        .url()
        .ok_or_else(|| BenchError::Hub("the embedded hub has no address".into()))?;
    Ok(HubTarget {
        url: url.clone(),
        secret,
        mode: "embedded",
        pid: Some(std::process::id()),
        running: Running::Embedded(server),
        tls,
        peer_updates,
        members: vec![Member {
            url: url.clone(),
            pid: Some(std::process::id()),
        }],
        cluster: None,
        nats_pid: None,
    })
}

/// The `RUST_LOG` of a child hub: `LINK_BENCH_HUB_LOG` (e.g.
/// `warn,link_hub::cluster=debug` to follow a cluster's leases), else `warn`.
fn hub_log() -> String {
    std::env::var("LINK_BENCH_HUB_LOG").unwrap_or_else(|_| "warn".to_owned())
}

/// A cluster to join: NATS, the cluster's name, the secret every hub shares.
pub(crate) struct Join<'a> {
    pub(crate) nats: &'a str,
    pub(crate) name: &'a str,
    pub(crate) secret: &'a str,
}

/// Where a child hub listens (`--bind`), and the network namespace it runs
/// in (`ip netns exec NS …`), if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement<'a> {
    pub(crate) bind: &'a str,
    pub(crate) netns: Option<&'a str>,
}

impl Placement<'static> {
    /// 127.0.0.1, a free port, this network namespace.
    pub(crate) const LOCAL: Self = Self {
        bind: "127.0.0.1:0",
        netns: None,
    };
}

/// Starts `program hub --bind ADDR …` (where `place` says) and waits for
/// its announcement; returns the process, its URL, its secret (the one it
/// generated and printed, or the cluster's) and the TLS setup of its peers.
pub(crate) async fn spawn_child(
    program: &Path,
    place: Placement<'_>,
    peer_updates: PeerUpdates,
    tls: bool,
    flood_limit: Option<u32>,
    join: Option<&Join<'_>>,
) -> Result<(ChildHub, String, String, Option<Tls>), BenchError> {
    // `ip netns exec` execs the program in place: the child's pid is the hub's.
    let mut command = match place.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.args([
        "hub",
        "--bind",
        place.bind,
        "--peer-updates",
        peer_updates.as_str(),
        // Every peer of the load tool comes from 127.0.0.1.
        "--max-connections-per-ip",
        "1000000",
    ]);
    if let Some(limit) = flood_limit {
        command.arg("--rate-limit").arg(flood_setting(limit));
    }
    let tls = if tls {
        let pki = Pki::generate()?;
        let files = TempDir::new("tls")?;
        let cert = files.write("hub.crt", &pki.cert)?;
        let key = files.write("hub.key", &pki.key)?;
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        Some(pki.client(Some(files))?)
    } else {
        None
    };
    match join {
        // The hubs of a cluster share one secret (their peers' and, by
        // default, the inter-hub one), given in the environment, not argv.
        Some(j) => {
            command
                .args(["--cluster", j.nats, "--cluster-name", j.name])
                .env("LINK_SECRET", j.secret)
                .env_remove("LINK_CLUSTER_SECRET")
                .env_remove("LINK_CLUSTER");
        }
        // The child generates its secret and prints it: never pass ours.
        None => {
            command.env_remove("LINK_SECRET").env_remove("LINK_CLUSTER");
        }
    }
    let mut child = command
        .env("RUST_LOG", hub_log())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if join.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::io(format!("starting {} hub", program.display()), e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(BenchError::Hub("the child hub has no stdout".into()));
    };
    // A cluster hub's log lines go to our stderr prefixed with its process
    // id (several hubs share it).
    if let Some(stderr) = child.stderr.take() {
        let pid = child.id().unwrap_or_default();
        let mut log = BufReader::new(stderr).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = log.next_line().await {
                eprintln!("[hub pid {pid}] {line}");
            }
        });
    }
    let mut lines = BufReader::new(stdout).lines();
    let given = join.map(|j| j.secret.to_owned());
    let announced = tokio::time::timeout(CHILD_START, async {
        let (mut secret, mut url) = (given, None);
        while secret.is_none() || url.is_none() {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(s) = line.strip_prefix("LINK_SECRET=") {
                        secret = Some(s.trim().to_owned());
                    } else if let Some(u) = line.strip_prefix("listening=") {
                        url = Some(u.trim().to_owned());
                    }
                }
                Ok(None) => return Err("the child hub exited before announcing itself".into()),
                Err(e) => return Err(format!("reading the child hub's stdout: {e}")),
            }
        }
        Ok((secret.unwrap_or_default(), url.unwrap_or_default()))
    })
    .await;
    let (secret, url) = match announced {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Err(BenchError::Hub(e)),
        Err(_) => {
            return Err(BenchError::Hub(format!(
                "the child hub did not print LINK_SECRET= and listening= within {CHILD_START:?}"
            )));
        }
    };
    Ok((
        ChildHub {
            child,
            _stdout: lines,
        },
        url,
        secret,
        tls,
    ))
}

/// nats-server (JetStream on), then `n` child hubs in one cluster, ready
/// when every hub sees the `n - 1` others.
async fn cluster(
    program: &Path,
    n: usize,
    nats: &NatsSpec,
    peer_updates: PeerUpdates,
    flood_limit: Option<u32>,
) -> Result<HubTarget, BenchError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if n < 2 {
        return Err(BenchError::InvalidOption {
            option: "cluster",
            reason: "a cluster needs at least 2 hubs".into(),
        });
    }
    let nats = NatsTarget::start(nats, true).await?;
    let secret = link_hub::random_secret()
        .ok_or_else(|| BenchError::Hub("cannot generate a random secret".into()))?;
    // A name of its own: a shared nats-server may carry other clusters.
    let name = format!(
        "bench-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let join = Join {
        nats: &nats.url,
        name: &name,
        secret: &secret,
    };
    let mut hubs = Vec::with_capacity(n);
    let mut members = Vec::with_capacity(n);
    let mut failure = None;
    for _ in 0..n {
        match spawn_child(
            program,
            Placement::LOCAL,
            peer_updates,
            false,
            flood_limit,
            Some(&join),
        )
        .await
        {
            Ok((hub, url, _, _)) => {
                members.push(Member {
                    url,
                    pid: hub.child.id(),
                });
                hubs.push(hub);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none()
        && let Err(e) = formed(&members).await
    {
        failure = Some(e);
    }
    if let Some(e) = failure {
        for hub in hubs {
            hub.stop().await;
        }
        nats.stop().await;
        return Err(e);
    }
    let first = members[0].clone();
    let (nats_url, nats_pid) = (nats.url.clone(), nats.pid);
    Ok(HubTarget {
        url: first.url,
        secret,
        mode: "cluster",
        pid: first.pid,
        running: Running::Cluster(Box::new(ClusterProcs { hubs, nats })),
        tls: None,
        peer_updates,
        members,
        cluster: Some((nats_url, name)),
        nats_pid,
    })
}

/// Waits until every hub's `/metrics` says it sees all the others
/// (`link_hub_cluster_hubs`): hubs learn of one another from heartbeats,
/// and no line on stdout says so.
async fn formed(members: &[Member]) -> Result<(), BenchError> {
    let others = (members.len() - 1) as f64;
    let deadline = Instant::now() + CLUSTER_FORM;
    for m in members {
        loop {
            let seen = match scrape::metrics(&m.url).await {
                Ok(text) => scrape::value(&text, "link_hub_cluster_hubs"),
                Err(_) => None,
            };
            if seen.is_some_and(|s| s >= others) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Hub(format!(
                    "the cluster did not form within {CLUSTER_FORM:?}: hub {} sees {} of the \
                     {others} other hubs (link_hub_cluster_hubs)",
                    m.url,
                    seen.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                )));
            }
            tokio::time::sleep(FORM_POLL).await;
        }
    }
    Ok(())
}

/// What our peers need to reach a TLS hub we started.
pub(crate) struct Tls {
    roots: RootCertificates,
    client: Arc<rustls::ClientConfig>,
    /// A child hub's certificate and key files.
    _files: Option<TempDir>,
}

/// A CA made for the run and a certificate for 127.0.0.1 it signed (PEM).
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn generate() -> Result<Self, BenchError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let fail = |e: rcgen::Error| BenchError::Hub(format!("cannot make a certificate: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "link-bench CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(fail)?)
            .map_err(fail)?;
        let key = KeyPair::generate().map_err(fail)?;
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .map_err(fail)?
            .signed_by(&key, &ca)
            .map_err(fail)?;
        Ok(Self {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// The peers' side: trust this CA alone.
    fn client(&self, files: Option<TempDir>) -> Result<Tls, BenchError> {
        use rustls::pki_types::pem::PemObject;
        let fail = |e: &dyn std::fmt::Display| BenchError::Hub(format!("TLS client setup: {e}"));
        let roots = RootCertificates::from_pem(self.ca.as_bytes()).map_err(|e| fail(&e))?;
        let mut store = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            store
                .add(cert.map_err(|e| fail(&e))?)
                .map_err(|e| fail(&e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Tls {
            roots,
            client: Arc::new(client),
            _files: files,
        })
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// `link-bench-<what>-<pid>-<n>`.
    pub(crate) fn new(what: &str) -> Result<Self, BenchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("link-bench-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, BenchError> {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
