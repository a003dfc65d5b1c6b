//! Client configuration with the reference's options, defaults and
//! validation (docs/client.md, *Configuration*). Missing url, secret or kind gives a
//! *disabled* client: it starts with a warning and every operation fails
//! with `LINK_NOT_READY`, so a service can run without a bus.
//!
//! Several hub URLs make a failover list (docs/client.md, *Failover*):
//! `url(..)` sets one, `urls(..)` a list, `add_url(..)` appends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use link_protocol::conn::{BackoffConfig, UrlOrder};
use link_protocol::replay::{DEFAULT_MAX_RECENT_IDS, DEFAULT_REPLAY_WINDOW_MS};
use link_protocol::{ConfigError, HashAlgo, Key, validate};
use serde_json::Value;

use crate::handler::{HandlerResult, RpcCall, RpcHandler};
use crate::tls::{self, RootCertificates, TlsConfigError};

/// Produces the status pushed at ready and every status interval.
pub type StatusProvider = Arc<dyn Fn() -> Value + Send + Sync>;

/// Validated client settings. Build with [`ClientConfig::builder`].
#[derive(Clone)]
pub struct ClientConfig {
    /// Hub URLs in the configured order (empty: disabled).
    pub(crate) urls: Vec<String>,
    pub(crate) url_order: UrlOrder,
    /// Seed of the random order and the reconnect jitter (None: the OS's
    /// random numbers).
    pub(crate) random_seed: Option<u64>,
    pub(crate) key: Option<Key>,
    pub(crate) kind: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) status: Option<StatusProvider>,
    pub(crate) status_interval: Duration,
    pub(crate) handlers: HashMap<String, RpcHandler>,
    pub(crate) rpc_timeout: Option<Duration>,
    pub(crate) reconnect: BackoffConfig,
    pub(crate) reconnect_on_rejection: bool,
    pub(crate) peer_deltas: bool,
    pub(crate) hello_ack_diagnostic: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) replay_window: Duration,
    pub(crate) max_recent_ids: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) max_outbox_bytes: usize,
    pub(crate) max_concurrent_rpc: usize,
    pub(crate) expose_rpc_errors: bool,
    pub(crate) stop_drain: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) hash: HashAlgo,
    /// rustls settings for a `wss://` url (built once, in `build()`).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("urls", &self.urls)
            .field("url_order", &self.url_order)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secret", &self.key.as_ref().map(|_| "<redacted>"))
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A builder with every default.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }

    /// True when url, secret or kind is missing.
    pub fn is_disabled(&self) -> bool {
        self.urls.is_empty() || self.key.is_none() || self.kind.is_none()
    }

    /// The kind (None when disabled for lack of one).
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The hub URL: the first of the list.
    pub fn url(&self) -> Option<&str> {
        self.urls.first().map(String::as_str)
    }

    /// Every hub URL, in the configured order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The order the URLs are tried in.
    pub fn url_order(&self) -> UrlOrder {
        self.url_order
    }

    /// The HMAC hash algorithm.
    pub fn hash(&self) -> HashAlgo {
        self.hash
    }
}

/// Builder for [`ClientConfig`]; each setter documents its default.
#[must_use]
pub struct ClientConfigBuilder {
    urls: Vec<String>,
    url_order: UrlOrder,
    random_seed: Option<u64>,
    secret: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    status: Option<StatusProvider>,
    status_interval: Duration,
    handlers: HashMap<String, RpcHandler>,
    rpc_timeout: Duration,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    reconnect_growth: f64,
    reconnect_jitter: f64,
    max_reconnect_attempts: Option<u32>,
    reconnect_on_rejection: bool,
    peer_deltas: bool,
    hello_ack_diagnostic: Duration,
    keepalive: Duration,
    replay_window: Duration,
    max_recent_ids: usize,
    max_message_bytes: usize,
    max_buffered_bytes: usize,
    max_outbox_bytes: usize,
    max_concurrent_rpc: usize,
    expose_rpc_errors: bool,
    stop_drain: Duration,
    connect_timeout: Duration,
    hash: HashAlgo,
    per_message_deflate: bool,
    roots: RootCertificates,
}

impl Default for ClientConfigBuilder {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            url_order: UrlOrder::Ordered,
            random_seed: None,
            secret: None,
            kind: None,
            name: None,
            status: None,
            status_interval: Duration::from_secs(10),
            handlers: HashMap::new(),
            rpc_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(10),
            reconnect_growth: 1.5,
            reconnect_jitter: 0.5,
            max_reconnect_attempts: None,
            reconnect_on_rejection: false,
            peer_deltas: true,
            hello_ack_diagnostic: Duration::from_secs(5),
            keepalive: Duration::from_secs(30),
            replay_window: Duration::from_millis(DEFAULT_REPLAY_WINDOW_MS),
            max_recent_ids: DEFAULT_MAX_RECENT_IDS,
            max_message_bytes: link_protocol::envelope::DEFAULT_MAX_MESSAGE_BYTES,
            max_buffered_bytes: 4 * 1024 * 1024,
            max_outbox_bytes: 16 * 1024 * 1024,
            max_concurrent_rpc: 256,
            expose_rpc_errors: false,
            stop_drain: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            hash: HashAlgo::Sha256,
            per_message_deflate: false,
            roots: RootCertificates::default(),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.$name = value; self } )*
    };
}

impl ClientConfigBuilder {
    /// Hub URL, e.g. `ws://127.0.0.1:8080` (none: disabled). Replaces any
    /// URL set before; [`add_url`](Self::add_url) adds a failover URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls = vec![url.into()];
        self
    }

    /// Hub URLs to fail over between, tried in `url_order` (docs/client.md,
    /// *Failover*). Replaces any URL set before; an empty list leaves the
    /// client disabled. `ws://` and `wss://` may be mixed.
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Appends a hub URL to the failover list.
    pub fn add_url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// The order several URLs are tried in (default [`UrlOrder::Ordered`]:
    /// every cycle starts from the first URL; [`UrlOrder::Random`]: a fresh
    /// shuffle every cycle).
    pub fn url_order(mut self, order: UrlOrder) -> Self {
        self.url_order = order;
        self
    }

    /// Seeds the random numbers of the random URL order and of the
    /// reconnect jitter, for a reproducible sequence, e.g. in a test
    /// (default: unseeded, from the operating system).
    pub fn random_seed(mut self, seed: u64) -> Self {
        self.random_seed = Some(seed);
        self
    }

    /// Trusts the CA certificates of a PEM file for `wss://`, besides the
    /// system's roots (default: system roots only). Reads and checks the
    /// file now; the error names it. Several calls add up.
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, TlsConfigError> {
        Ok(self.root_certificates(RootCertificates::from_pem_file(path)?))
    }

    /// Trusts these certificates for `wss://`, besides the system's roots
    /// (default: system roots only). Several calls add up.
    pub fn root_certificates(mut self, roots: RootCertificates) -> Self {
        self.roots.extend(roots);
        self
    }

    /// Shared secret or this peer's key (none: disabled).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// This service's kind (none: disabled).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Display name in the hello (default: the kind).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Status pushed at ready and every `status_interval` (default: none).
    pub fn status<F: Fn() -> Value + Send + Sync + 'static>(mut self, f: F) -> Self {
        self.status = Some(Arc::new(f));
        self
    }

    /// Registers an RPC handler (also possible at runtime with `handle`).
    pub fn handler<F, Fut>(mut self, rpc_type: impl Into<String>, f: F) -> Self
    where
        F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers.insert(rpc_type.into(), RpcHandler::new(f));
        self
    }

    setters! {
        /// Status push interval (default 10 s).
        status_interval: Duration,
        /// Default RPC timeout (default 5 s; zero means none).
        rpc_timeout: Duration,
        /// First reconnect delay (default 1 s).
        reconnect_initial: Duration,
        /// Largest reconnect base delay (default 10 s).
        reconnect_max: Duration,
        /// Reconnect growth factor, ≥ 1 (default 1.5).
        reconnect_growth: f64,
        /// Reconnect jitter in 0..=1 (default 0.5).
        reconnect_jitter: f64,
        /// Consecutive reconnect attempts before giving up (default unlimited).
        max_reconnect_attempts: Option<u32>,
        /// Reconnect after a rejected hello instead of stopping (default false).
        reconnect_on_rejection: bool,
        /// Ask the hub for the `peers.delta` extension (default true): the
        /// hello's data gets `features: ["peers.delta"]`, and a hub that
        /// grants it (a link hub, in `hello.ack` features) sends one
        /// snapshot and then deltas instead of a full `peers.update` per
        /// change. The reference hub ignores the field, and the client then
        /// diffs full lists. False is "v1 mode": the hello is the Node
        /// client's, byte for byte. The peer list and the `peer.*` events
        /// are the same either way.
        peer_deltas: bool,
        /// Delay before the no-ack diagnostic (default 5 s; zero disables).
        hello_ack_diagnostic: Duration,
        /// Keepalive ping interval (default 30 s; zero disables).
        keepalive: Duration,
        /// Replay window (default 300 s; zero disables replay protection).
        replay_window: Duration,
        /// Ids remembered per sender (default 10 000).
        max_recent_ids: usize,
        /// Largest inbound frame (default 1 MiB).
        max_message_bytes: usize,
        /// WebSocket write buffer before the outbox queues (default 4 MiB).
        max_buffered_bytes: usize,
        /// Outbox cap (default 16 MiB).
        max_outbox_bytes: usize,
        /// Inbound handlers in flight (default 256; zero means unlimited).
        max_concurrent_rpc: usize,
        /// Send every handler error as is (default false: sanitised).
        expose_rpc_errors: bool,
        /// Budget of a graceful stop (default 5 s).
        stop_drain: Duration,
        /// Bound on one connect attempt: TCP, TLS and the WebSocket upgrade
        /// (default 10 s; must be positive). A timed-out attempt is a
        /// failed connect: `connect-failed` with `CONNECT_TIMEOUT`, then
        /// the usual reconnect backoff.
        connect_timeout: Duration,
        /// HMAC hash (default sha256).
        hash: HashAlgo,
        /// permessage-deflate (default false; true is refused: unsupported).
        per_message_deflate: bool,
    }

    /// Validates and builds.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let bad = |option, reason| Err(ConfigError::InvalidOption { option, reason });
        if self.urls.iter().any(String::is_empty) {
            return bad("url", "must be a non-empty string");
        }
        if let Some(kind) = &self.kind {
            validate::check_own_kind(kind)?;
        }
        if self.name.as_deref().is_some_and(str::is_empty) {
            return bad("name", "must be a non-empty string");
        }
        for (option, ok) in [
            ("status_interval", !self.status_interval.is_zero()),
            ("connect_timeout", !self.connect_timeout.is_zero()),
            ("max_recent_ids", self.max_recent_ids > 0),
            ("max_message_bytes", self.max_message_bytes > 0),
            ("max_buffered_bytes", self.max_buffered_bytes > 0),
            ("max_outbox_bytes", self.max_outbox_bytes > 0),
        ] {
            if !ok {
                return bad(option, "must be positive");
            }
        }
        if self.max_reconnect_attempts == Some(0) {
            return bad(
                "max_reconnect_attempts",
                "must be positive (None: unlimited)",
            );
        }
        if self.per_message_deflate {
            return bad(
                "per_message_deflate",
                "is not supported by this client's WebSocket stack",
            );
        }
        let reconnect = BackoffConfig {
            initial: self.reconnect_initial,
            max: self.reconnect_max,
            growth: self.reconnect_growth,
            jitter: self.reconnect_jitter,
            max_attempts: self.max_reconnect_attempts,
        };
        reconnect.validate()?;
        let key = match &self.secret {
            Some(s) => Some(Key::new(s, self.hash)?),
            None => None,
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        // One TLS configuration shared by every `wss://` URL of the list.
        let tls = match self.urls.iter().find(|u| tls::is_wss(u)) {
            Some(url) => match tls::client_config(&self.roots) {
                Ok(tls) => Some(tls),
                // Unreachable with the ring provider and checked roots; a
                // connect then fails with `TLS_ERROR`.
                Err(e) => {
                    tracing::error!("TLS configuration for {url} failed: {e}");
                    None
                }
            },
            None => None,
        };
        Ok(ClientConfig {
            urls: self.urls,
            url_order: self.url_order,
            random_seed: self.random_seed,
            key,
            kind: self.kind,
            name: self.name,
            status: self.status,
            status_interval: self.status_interval,
            handlers: self.handlers,
            rpc_timeout: nonzero(self.rpc_timeout),
            reconnect,
            reconnect_on_rejection: self.reconnect_on_rejection,
            peer_deltas: self.peer_deltas,
            hello_ack_diagnostic: nonzero(self.hello_ack_diagnostic),
            keepalive: nonzero(self.keepalive),
            replay_window: self.replay_window,
            max_recent_ids: self.max_recent_ids,
            max_message_bytes: self.max_message_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            max_outbox_bytes: self.max_outbox_bytes,
            max_concurrent_rpc: self.max_concurrent_rpc,
            expose_rpc_errors: self.expose_rpc_errors,
            stop_drain: self.stop_drain,
            connect_timeout: self.connect_timeout,
            hash: self.hash,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_essentials_means_disabled() {
        let c = ClientConfig::builder()
            .url("ws://127.0.0.1:1")
            .kind("a")
            .build()
            .unwrap();
        assert!(c.is_disabled());
        let c = ClientConfig::builder()
            .url("ws://x")
            .kind("a")
            .secret("s")
            .build()
            .unwrap();
        assert!(!c.is_disabled());
        assert_eq!(c.rpc_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(c.max_concurrent_rpc, 256);
        assert_eq!(c.max_outbox_bytes, 16 << 20);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.tls.is_none(), "no TLS for ws://");
        let wss = ClientConfig::builder().url("WSS://hub.example:443").build();
        assert!(wss.unwrap().tls.is_some(), "TLS for wss://, any case");
    }

    #[test]
    fn several_urls_make_a_failover_list() {
        let c = ClientConfig::builder()
            .url("ws://a:1")
            .add_url("wss://b:2")
            .url_order(UrlOrder::Random)
            .build()
            .unwrap();
        assert_eq!(c.urls(), ["ws://a:1", "wss://b:2"]);
        assert_eq!(c.url(), Some("ws://a:1"), "url() is the first of the list");
        assert_eq!(c.url_order(), UrlOrder::Random);
        assert!(c.tls.is_some(), "one wss:// URL in the list needs TLS");
        // url() replaces the list, as it replaced the one URL before.
        let c = ClientConfig::builder()
            .urls(["ws://a:1", "ws://b:2"])
            .url("ws://c:3")
            .build()
            .unwrap();
        assert_eq!(c.urls(), ["ws://c:3"]);
        assert_eq!(c.url_order(), UrlOrder::Ordered);
        let c = ClientConfig::builder()
            .urls(Vec::<String>::new())
            .kind("a")
            .secret("s")
            .build()
            .unwrap();
        assert!(c.is_disabled(), "no URL at all: disabled");
        assert!(matches!(
            ClientConfig::builder().urls(["ws://a:1", ""]).build(),
            Err(ConfigError::InvalidOption { option: "url", .. })
        ));
    }

    #[test]
    fn validation_names_the_option() {
        assert!(matches!(
            ClientConfig::builder().kind(" a").build(),
            Err(ConfigError::InvalidKind(_))
        ));
        assert!(matches!(
            ClientConfig::builder().reconnect_jitter(2.0).build(),
            Err(ConfigError::InvalidOption {
                option: "reconnect_jitter",
                ..
            })
        ));
        assert!(matches!(
            ClientConfig::builder()
                .connect_timeout(Duration::ZERO)
                .build(),
            Err(ConfigError::InvalidOption {
                option: "connect_timeout",
                ..
            })
        ));
        assert!(matches!(
            ClientConfig::builder().per_message_deflate(true).build(),
            Err(ConfigError::InvalidOption {
                option: "per_message_deflate",
                ..
            })
        ));
        assert!(matches!(
            ClientConfig::builder().secret("").build(),
            Err(ConfigError::EmptySecret)
        ));
        let shown = format!(
            "{:?}",
            ClientConfig::builder().secret("hunter2").build().unwrap()
        );
        assert!(!shown.contains("hunter2"));
    }
}
