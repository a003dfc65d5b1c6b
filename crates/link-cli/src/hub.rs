//! `link-cli hub`: runs a [`HubServer`] until SIGINT or SIGTERM, then
//! shuts it down gracefully (every peer sees close 1001 `server shutdown`).
//!
//! ```text
//!   --secret | LINK_SECRET | --keys FILE | (none: random, printed once)
//!        └──► HubConfig (+ limits) ──► HubServer ──► stdout: LINK_SECRET=…, listening=ws://…
//!                                                   stderr: tracing logs
//! ```
//!
//! stdout carries only machine-readable `name=value` lines, printed once
//! the socket is bound: `LINK_SECRET=<hex>` when the secret was generated,
//! then `listening=ws://<addr><path>` (`wss://` with `--tls-cert`). Logs go to stderr, human-readable
//! or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! Exit status: 0 after a clean shutdown, 1 when the shutdown timed out,
//! 2 for unusable options or an address that cannot be bound.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use link_hub::{HubConfig, HubServer, PeerUpdates, Secret, TlsConfig};
use link_protocol::{ConfigError, HashAlgo};
use serde_json::Value;

use crate::exit::{Failure, Status};

mod access;
mod cluster;
mod rate;

/// Hub defaults (the reference's; docs/hub.md), shown in `--help`; a unit test keeps
/// them equal to `HubConfig`'s.
mod defaults {
    pub(super) const MAX_MESSAGE_BYTES: usize = 1_048_576;
    pub(super) const MAX_BUFFERED_BYTES: usize = 4_194_304;
    pub(super) const MAX_OUTBOX_BYTES: usize = 16_777_216;
    pub(super) const MAX_PENDING_SOCKETS: usize = 1024;
    pub(super) const MAX_CONCURRENT_RPC: usize = 256;
    pub(super) const HELLO_TIMEOUT_MS: u64 = 10_000;
    pub(super) const KEEPALIVE_MS: u64 = 15_000;
    pub(super) const REPLAY_WINDOW_MS: u64 = 300_000;
    pub(super) const MAX_RECENT_IDS: usize = 10_000;
}

/// Log line format on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

/// Arguments of `link-cli hub`.
#[derive(Args)]
pub(crate) struct HubArgs {
    /// Address to listen on: IP:PORT or HOST:PORT. Loopback by default;
    /// use 0.0.0.0:8080 to accept remote peers. Port 0 picks a free port
    /// (see `listening=`). A host name is resolved and the hub listens on
    /// one address: the first IPv4 one, else the first (`localhost:8080`
    /// is 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: String,

    /// Shared secret for every peer. Prefer setting LINK_SECRET: arguments
    /// are visible to other local users. Without --secret or --keys a
    /// random secret is generated and printed once as `LINK_SECRET=<hex>`.
    #[arg(
        long,
        env = "LINK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,

    /// Per-peer keys: a JSON object {"kind": "key", ...}. A peer whose kind
    /// is not listed cannot join. Excludes --secret and LINK_SECRET.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,

    /// HMAC hash algorithm; every peer must use the same.
    #[arg(
        long,
        value_name = "ALGO",
        default_value = "sha256",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["sha256", "sha384", "sha512"])
            .try_map(|name| name.parse::<HashAlgo>()),
    )]
    hash: HashAlgo,

    /// Accept WebSocket upgrades only on this path (default: any path).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,

    /// Serve GET /state (peers and their last statuses).
    #[arg(long)]
    state_route: bool,

    /// Serve the live dashboard at /ui (read-only; behind --allow-cidr and
    /// --bearer-token-file like /state: open /ui?token=TOKEN).
    #[arg(long)]
    ui: bool,

    /// Largest frame in bytes; larger frames close the socket with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,

    /// Per-socket write buffer before messages queue in the outbox.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_BUFFERED_BYTES)]
    max_buffered_bytes: usize,

    /// Per-socket outbox cap; messages beyond it are refused.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_OUTBOX_BYTES)]
    max_outbox_bytes: usize,

    /// Unauthenticated sockets at once; the oldest is closed beyond it.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_PENDING_SOCKETS)]
    max_pending_sockets: usize,

    /// Topics one peer may be subscribed to at once; a subscribe past it is
    /// not honoured (`protocol-error` `subscription-limit`).
    #[arg(
        long = "max-subscriptions",
        value_name = "N",
        default_value_t = link_hub::DEFAULT_MAX_SUBSCRIPTIONS_PER_PEER
    )]
    max_subscriptions_per_peer: usize,

    /// Frames of one socket the hub may drop (bad signature, parse error,
    /// replayed id…, or a message every recipient's outbox refused) in a
    /// second before it reads that socket no faster (0: never paced).
    #[arg(
        long = "max-dropped-frames",
        value_name = "N",
        default_value_t = link_hub::DEFAULT_MAX_DROPPED_FRAMES_PER_SEC
    )]
    max_dropped_frames_per_sec: u32,

    /// Server RPC handlers running at once (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONCURRENT_RPC)]
    max_concurrent_rpc: usize,

    /// Time a socket has to authenticate (0 disables).
    #[arg(long, value_name = "MS", default_value_t = defaults::HELLO_TIMEOUT_MS)]
    hello_timeout_ms: u64,

    /// Ping interval; a peer silent for a whole interval is dropped.
    #[arg(long, value_name = "MS", default_value_t = defaults::KEEPALIVE_MS)]
    keepalive_ms: u64,

    /// Accepted clock skew and replay memory (0 disables replay checks).
    #[arg(long, value_name = "MS", default_value_t = defaults::REPLAY_WINDOW_MS)]
    replay_window_ms: u64,

    /// Message ids remembered per sender for replay detection.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_RECENT_IDS)]
    max_recent_ids: usize,

    /// Whether every join and leave sends the whole peer list to every peer
    /// (`broadcast`, the reference behaviour) or nobody gets `peers.update`
    /// (`off`: for large fleets; peers ask `link.peer.list`).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "broadcast",
        value_parser = peer_updates_parser(),
    )]
    peer_updates: PeerUpdates,

    /// Access rule and connection limits.
    #[command(flatten)]
    access: access::AccessArgs,

    /// Per-peer rate limits.
    #[command(flatten)]
    rate: rate::RateLimitArgs,

    /// A cluster of hubs over NATS.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,

    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    /// Serve wss:// and https:// with this PEM certificate chain (leaf
    /// first). Needs --tls-key. SIGHUP re-reads both files.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Also reload --tls-cert and --tls-key when their contents change,
    /// checked every SECS seconds (default: on SIGHUP only).
    #[arg(
        long,
        value_name = "SECS",
        requires = "tls_cert",
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    tls_watch_secs: Option<u64>,
}

impl fmt::Debug for HubArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubArgs")
            .field("bind", &self.bind)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("keys", &self.keys)
            .field("hash", &self.hash)
            .field("path", &self.path)
            .field("tls_cert", &self.tls_cert)
            .finish_non_exhaustive()
    }
}

/// The key source and, when generated, the secret to print.
struct Keys {
    secret: Secret,
    generated: Option<String>,
}

impl HubArgs {
    fn keys(&self) -> Result<Keys, Failure> {
        match (&self.secret, &self.keys) {
            (Some(_), Some(_)) => Err(Failure::unusable(
                "--keys cannot be combined with --secret or LINK_SECRET",
            )),
            (Some(secret), None) => Ok(Keys {
                secret: Secret::shared(secret.clone()),
                generated: None,
            }),
            (None, Some(file)) => Ok(Keys {
                secret: Secret::per_kind(read_keys(file)?),
                generated: None,
            }),
            (None, None) => {
                let secret = link_hub::random_secret()
                    .ok_or_else(|| Failure::unusable("cannot generate a random secret"))?;
                Ok(Keys {
                    secret: Secret::shared(secret.clone()),
                    generated: Some(secret),
                })
            }
        }
    }

    fn config(&self, secret: Secret) -> Result<HubConfig, Failure> {
        // A generated secret differs per hub: it cannot be the cluster's.
        let shared = match &secret {
            Secret::Shared(s) if self.secret.is_some() => Some(s.as_str()),
            _ => None,
        };
        let cluster = self.cluster.config(shared)?;
        let mut builder = HubConfig::builder(secret);
        if let Some(cluster) = cluster {
            builder = builder.cluster(cluster);
        }
        builder
            .hash(self.hash)
            .max_message_bytes(self.max_message_bytes)
            .max_buffered_bytes(self.max_buffered_bytes)
            .max_outbox_bytes(self.max_outbox_bytes)
            .max_pending_sockets(self.max_pending_sockets)
            .max_concurrent_rpc(self.max_concurrent_rpc)
            .max_subscriptions_per_peer(self.max_subscriptions_per_peer)
            .max_dropped_frames_per_sec(self.max_dropped_frames_per_sec)
            .hello_timeout(Duration::from_millis(self.hello_timeout_ms))
            .keepalive_interval(Duration::from_millis(self.keepalive_ms))
            .replay_window(Duration::from_millis(self.replay_window_ms))
            .max_recent_ids(self.max_recent_ids)
            .peer_updates(self.peer_updates)
            .rate_limits(self.rate.limits()?)
            .build()
            .map_err(|e| self.option_failure(&e))
    }

    /// A refused option, named as on the command line with its value.
    fn option_failure(&self, err: &ConfigError) -> Failure {
        let ConfigError::InvalidOption { option, reason } = err else {
            return Failure::unusable(format_args!("invalid hub option: {err}"));
        };
        let flag = |flag: &str, value: &dyn fmt::Display| {
            Failure::unusable(format_args!("{flag} {value}: {reason}"))
        };
        match *option {
            "keepalive_interval" => flag("--keepalive-ms", &self.keepalive_ms),
            "max_pending_sockets" => flag("--max-pending-sockets", &self.max_pending_sockets),
            "max_recent_ids" => flag("--max-recent-ids", &self.max_recent_ids),
            "max_message_bytes" => flag("--max-message-bytes", &self.max_message_bytes),
            "max_buffered_bytes" => flag("--max-buffered-bytes", &self.max_buffered_bytes),
            "max_outbox_bytes" => flag("--max-outbox-bytes", &self.max_outbox_bytes),
            "max_subscriptions_per_peer" => {
                flag("--max-subscriptions", &self.max_subscriptions_per_peer)
            }
            _ => Failure::unusable(format_args!("invalid hub option: {err}")),
        }
    }

    /// `--bind`: an IP:PORT as is, or a HOST:PORT resolved to its first
    /// IPv4 address (else its first address).
    fn bind_addr(&self) -> Result<SocketAddr, Failure> {
        if let Ok(addr) = self.bind.parse() {
            return Ok(addr);
        }
        let bad = |why: &dyn fmt::Display| {
            Failure::unusable(format_args!(
                "--bind {}: {why} (expected IP:PORT or HOST:PORT)",
                self.bind
            ))
        };
        let addrs: Vec<SocketAddr> = self.bind.to_socket_addrs().map_err(|e| bad(&e))?.collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| bad(&"the host has no address"))
    }
}

/// `--peer-updates MODE` (for `hub` and `bench`): the names of
/// [`PeerUpdates::as_str`].
pub(crate) fn peer_updates_parser() -> impl TypedValueParser<Value = PeerUpdates> {
    PossibleValuesParser::new(PeerUpdates::ALL.map(PeerUpdates::as_str))
        .try_map(|mode| mode.parse::<PeerUpdates>())
}

/// Reads a `--keys` file: a JSON object of kind → non-empty key string.
/// Errors name the file and the kind, never a key.
fn read_keys(file: &Path) -> Result<HashMap<String, String>, Failure> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::unusable(format_args!("--keys {shown}: {e}")))?;
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) else {
        return Err(Failure::unusable(format_args!(
            "--keys {shown}: expected a JSON object {{\"kind\": \"key\", ...}}"
        )));
    };
    if map.is_empty() {
        return Err(Failure::unusable(format_args!("--keys {shown}: no kinds")));
    }
    let mut keys = HashMap::with_capacity(map.len());
    for (kind, key) in map {
        if let Err(e) = link_protocol::validate::check_kind(&kind) {
            return Err(Failure::unusable(format_args!(
                "--keys {shown}: kind {kind:?} is not a valid kind ({e}: 1 to 256 of \
                 a-z A-Z 0-9 . _ -, not `server`)"
            )));
        }
        match key {
            Value::String(key) if !key.is_empty() => {
                keys.insert(kind, key);
            }
            _ => {
                return Err(Failure::unusable(format_args!(
                    "--keys {shown}: the key of {kind:?} must be a non-empty string"
                )));
            }
        }
    }
    warn_if_readable_by_others(file, "the keys file");
    Ok(keys)
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(file = %file.display(), "{what} is readable by every local user");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &Path, _what: &str) {}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // The NATS client's own connection lines are noise beside the hub's
    // `cluster:` lines (RUST_LOG=async_nats=info brings them back).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    // Err only when a subscriber is already installed: keep that one.
    let _ = match format {
        LogFormat::Human => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the hub until a signal stops it.
pub(crate) fn run(args: &HubArgs) -> Result<Status, Failure> {
    init_logging(args.log_format);
    without_huge_pages();
    let keys = args.keys()?;
    let config = args.config(keys.secret)?;
    let bind = args.bind_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::unusable(format_args!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(args, bind, config, keys.generated))
}

/// Opts this process out of transparent huge pages (Linux).
///
/// With them (THP `always`, or `madvise` with an allocator that advises
/// its arena) a 2 MiB huge page backs a range of which the hub touched a
/// few KiB, and khugepaged folds such ranges into huge pages at times of
/// its own: the hub's RSS then steps up and down by whole 2 MiB pages,
/// unrelated to what it holds (issue 18's soak, docs/reliability.md
/// "Soak"). The flag covers mappings made before this call; it is
/// inherited by children and kept across `exec`. A kernel that refuses
/// (older than 3.15) leaves the hub as it was, with a warning.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!("cannot opt out of transparent huge pages: {e}");
    }
}

async fn serve(
    args: &HubArgs,
    bind: SocketAddr,
    config: HubConfig,
    generated: Option<String>,
) -> Result<Status, Failure> {
    let mut builder = HubServer::builder(config)
        .bind(bind)
        .enable_state_route(args.state_route)
        .enable_dashboard(args.ui);
    if let Some(path) = &args.path {
        builder = builder.path(path.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        builder = builder.tls(TlsConfig::from_pem_files(cert, key).map_err(Failure::unusable)?);
    }
    if let Some(secs) = args.tls_watch_secs {
        builder = builder.tls_watch(Duration::from_secs(secs));
    }
    let server = args
        .access
        .apply(builder)?
        .build()
        .map_err(Failure::unusable)?;
    // Membership at info, security drops (bad-signature, unknown-kind, replay…)
    // at warn, the rest at debug.
    let _events = link_helpers::observability::spawn_hub_logger(
        server.hub(),
        link_helpers::observability::Classifier::default(),
    );
    server.start().await.map_err(Failure::unusable)?;
    if generated.is_some() {
        tracing::warn!(
            "no --secret, LINK_SECRET or --keys: using a generated secret, printed once on stdout"
        );
    }
    let url = server.url().unwrap_or_default();
    if args.ui
        && let Some(addr) = server.local_addr()
    {
        let scheme = if server.is_tls() { "https" } else { "http" };
        tracing::info!("live dashboard at {scheme}://{addr}/ui");
    }
    if let Err(e) = announce(generated.as_deref(), &url) {
        let _ = server.stop().await;
        return Err(Failure::write(&e));
    }
    match server.stopped().await {
        Ok(()) => Ok(Status::Ok),
        Err(e) => Err(Failure::rejected(e)),
    }
}

/// The machine-readable lines on stdout.
fn announce(secret: Option<&str>, url: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if let Some(secret) = secret {
        writeln!(out, "LINK_SECRET={secret}")?;
    }
    writeln!(out, "listening={url}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        hub: HubArgs,
    }

    fn parse(args: &[&str]) -> Result<HubArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("hub").chain(args.iter().copied())).map(|c| c.hub)
    }

    #[test]
    fn flag_defaults_are_the_hub_defaults() {
        let args = parse(&["--secret", "s"]).unwrap();
        assert_eq!(args.bind_addr().ok(), "127.0.0.1:8080".parse().ok());
        let ours = args.config(Secret::shared("s")).ok().unwrap();
        let hubs = HubConfig::builder(Secret::shared("s")).build().unwrap();
        assert_eq!(format!("{ours:?}"), format!("{hubs:?}"));
    }

    #[test]
    fn option_errors_name_the_flag_and_the_value() {
        for (flag, value) in [
            ("--keepalive-ms", "0"),
            ("--max-pending-sockets", "0"),
            ("--max-recent-ids", "0"),
            ("--max-message-bytes", "0"),
            ("--max-buffered-bytes", "0"),
            ("--max-outbox-bytes", "0"),
        ] {
            let args = parse(&["--secret", "s", flag, value]).unwrap();
            let Err(failure) = args.config(Secret::shared("s")) else {
                panic!("{flag} {value} is refused")
            };
            let text = format!("{failure:?}");
            assert!(
                text.contains(&format!("{flag} {value}: must be positive")),
                "{text}"
            );
        }
    }

    #[test]
    fn bind_takes_a_host_name() {
        let args = parse(&["--secret", "s", "--bind", "localhost:8081"]).unwrap();
        assert_eq!(args.bind_addr().ok(), "127.0.0.1:8081".parse().ok());
        let args = parse(&["--secret", "s", "--bind", "[::1]:0"]).unwrap();
        assert_eq!(args.bind_addr().ok(), "[::1]:0".parse().ok());
        for bad in ["localhost", ":80x"] {
            let args = parse(&["--secret", "s", "--bind", bad]).unwrap();
            let Err(failure) = args.bind_addr() else {
                panic!("--bind {bad} is refused")
            };
            assert!(format!("{failure:?}").contains(bad), "{failure:?}");
        }
    }

    #[test]
    fn keys_and_secret_are_exclusive() {
        let args = parse(&["--secret", "s", "--keys", "k.json"]).unwrap();
        assert!(args.keys().is_err());
    }

    #[test]
    fn no_secret_generates_one() {
        let mut args = parse(&["--secret", "x"]).unwrap();
        args.secret = None;
        let keys = args.keys().ok().unwrap();
        let secret = keys.generated.unwrap();
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let args = parse(&["--secret", "hunter2"]).unwrap();
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn keys_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("link-cli-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = write("good.json", r#"{"alpha": "ka", "beta": "kb"}"#);
        let keys = read_keys(&good).ok().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["alpha"], "ka");
        for (name, text) in [
            ("array.json", "[1]"),
            ("empty.json", "{}"),
            ("number.json", r#"{"alpha": 1}"#),
            ("blank.json", r#"{"alpha": ""}"#),
            ("broken.json", "{"),
        ] {
            assert!(read_keys(&write(name, text)).is_err(), "{name}");
        }
        assert!(read_keys(&dir.join("missing.json")).is_err());
        let bad_kind = write("kind.json", r#"{"ok": "k", "bad kind": "k"}"#);
        let Err(failure) = read_keys(&bad_kind) else {
            panic!("a bad kind is refused")
        };
        let text = format!("{failure:?}");
        assert!(
            text.contains("kind.json") && text.contains("bad kind"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        for args in [
            &["--tls-cert", "hub.crt"][..],
            &["--tls-key", "hub.key"][..],
        ] {
            let err = parse(args).err().unwrap();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
        assert!(
            parse(&["--tls-watch-secs", "5"]).is_err(),
            "needs --tls-cert"
        );
        let zero = ["--tls-cert", "c", "--tls-key", "k", "--tls-watch-secs", "0"];
        assert!(parse(&zero).is_err());
        let args = parse(&["--tls-cert", "hub.crt", "--tls-key", "hub.key"]).unwrap();
        assert_eq!(args.tls_cert.as_deref(), Some(Path::new("hub.crt")));
        assert_eq!(args.tls_key.as_deref(), Some(Path::new("hub.key")));
    }
}
