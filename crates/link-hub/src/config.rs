//! Hub configuration: the key source, limits and hooks, with the
//! reference's defaults (docs/hub.md), validated once by
//! [`HubConfigBuilder::build`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use link_protocol::replay::{
    DEFAULT_MAX_RECENT_IDS, DEFAULT_MAX_TOTAL_IDS, DEFAULT_REPLAY_WINDOW_MS,
};
use link_protocol::{ConfigError, HashAlgo, Key};

use crate::acl::Acl;
pub use crate::future::BoxFuture;
use crate::ratelimit::RateLimits;
use crate::server_rpc::{ServerRpcHandler, ServerRpcRequest};

type Resolver = Arc<dyn Fn(&str) -> BoxFuture<Option<String>> + Send + Sync>;

/// Where the hub finds the key for a claimed kind.
#[derive(Clone)]
pub enum KeySource {
    /// One shared secret for every kind.
    Shared(Key),
    /// A fixed key per kind; other kinds are `unknown-kind`.
    PerKind(Arc<HashMap<String, Key>>),
    /// An async lookup; `None` (or an empty key) means `unknown-kind`.
    Resolver(Resolver),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared(_) => f.write_str("KeySource::Shared(<redacted>)"),
            Self::PerKind(map) => {
                let mut kinds: Vec<&String> = map.keys().collect();
                kinds.sort();
                write!(f, "KeySource::PerKind({kinds:?})")
            }
            Self::Resolver(_) => f.write_str("KeySource::Resolver(..)"),
        }
    }
}

/// How to build a [`KeySource`]; keys are turned into [`Key`]s at build time
/// with the configured hash algorithm.
#[derive(Clone)]
pub enum Secret {
    /// One shared secret.
    Shared(String),
    /// kind → key.
    PerKind(HashMap<String, String>),
    /// Async lookup of a kind's key.
    Resolver(Resolver),
}

impl Secret {
    /// A shared secret.
    pub fn shared(secret: impl Into<String>) -> Self {
        Self::Shared(secret.into())
    }

    /// Per-kind keys.
    pub fn per_kind<K: Into<String>, V: Into<String>>(
        keys: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::PerKind(
            keys.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// An async resolver.
    pub fn resolver<F, Fut>(f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        Self::Resolver(Arc::new(move |kind: &str| Box::pin(f(kind.to_owned()))))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared(_) => f.write_str("Secret::Shared(<redacted>)"),
            Self::PerKind(m) => write!(f, "Secret::PerKind({} kinds)", m.len()),
            Self::Resolver(_) => f.write_str("Secret::Resolver(..)"),
        }
    }
}

/// Whether the hub broadcasts `peers.update` (protocol §5.2 step 5).
///
/// The reference sends the **whole** peer list to **every** peer on every
/// join and leave. Node clients expect lists of that shape, and they are
/// the default; our hub builds one list per membership version, paces them
/// in a join storm (every peer still ends with the final list) and caps
/// one at [`HubConfigBuilder::max_peer_list_bytes`] (docs/hub.md, *Large
/// fleets*). Fleets that need no list turn it off and discover peers on
/// demand with the built-in `link.peer.list` server RPC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerUpdates {
    /// The reference's lists: every peer gets the full list after changes
    /// (paced and coalesced, always ending with the final state).
    #[default]
    Broadcast,
    /// No `peers.update` at all. A client's peer list stays empty (and its
    /// per-sender replay caches are only trimmed by their own budget);
    /// `link.peer.list` answers who is connected.
    Off,
}

impl PeerUpdates {
    /// Every mode, in the order of [`PeerUpdates::as_str`] names.
    pub const ALL: [Self; 2] = [Self::Broadcast, Self::Off];

    /// The mode's name, as `link-cli hub --peer-updates` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::Off => "off",
        }
    }
}

impl std::str::FromStr for PeerUpdates {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::ALL.into_iter().find(|m| m.as_str() == s) {
            Some(mode) => Ok(mode),
            None => Err(ConfigError::InvalidOption {
                option: "peer_updates",
                reason: "expected \"broadcast\" or \"off\"",
            }),
        }
    }
}

/// Default [`HubConfigBuilder::max_peer_list_bytes`]: a list frame (data
/// plus the envelope around it) stays under the 1 MiB frame cap of Node
/// clients.
pub const DEFAULT_MAX_PEER_LIST_BYTES: usize = (1 << 20) - 4096;

/// Default [`HubConfigBuilder::max_subscriptions_per_peer`].
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_PEER: usize = 10_000;

/// Default [`HubConfigBuilder::max_dropped_frames_per_sec`].
pub const DEFAULT_MAX_DROPPED_FRAMES_PER_SEC: u32 = 100;

/// Validated hub settings. Build with [`HubConfig::builder`].
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub(crate) keys: KeySource,
    pub(crate) hash: HashAlgo,
    pub(crate) keepalive_interval: Duration,
    pub(crate) hello_timeout: Option<Duration>,
    pub(crate) max_pending_sockets: usize,
    pub(crate) replay_window: Duration,
    pub(crate) max_recent_ids: usize,
    pub(crate) max_total_replay_ids: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) max_outbox_bytes: usize,
    pub(crate) max_concurrent_rpc: usize,
    pub(crate) expose_rpc_errors: bool,
    pub(crate) peer_updates: PeerUpdates,
    pub(crate) max_peer_list_bytes: usize,
    pub(crate) max_subscriptions_per_peer: usize,
    /// The pace a socket is read at once its dropped frames are over
    /// `max_dropped_frames_per_sec` (one frame per this), `None`: never
    /// paced.
    pub(crate) drop_pace: Option<Duration>,
    pub(crate) handlers: HashMap<String, ServerRpcHandler>,
    pub(crate) acl: Acl,
    /// `None` when no kind has a limit: nothing is checked per frame.
    pub(crate) rate_limits: Option<Arc<RateLimits>>,
    /// Joins a cluster of hubs over NATS (`None`: a lone hub).
    #[cfg(feature = "cluster")]
    pub(crate) cluster: Option<crate::cluster::ClusterConfig>,
}

impl HubConfig {
    /// Starts a builder; the secret is the one mandatory input.
    pub fn builder(secret: Secret) -> HubConfigBuilder {
        HubConfigBuilder {
            secret,
            hash: HashAlgo::Sha256,
            keepalive_interval: Duration::from_millis(15_000),
            hello_timeout: Duration::from_millis(10_000),
            max_pending_sockets: 1024,
            replay_window: Duration::from_millis(DEFAULT_REPLAY_WINDOW_MS),
            max_recent_ids: DEFAULT_MAX_RECENT_IDS,
            max_total_replay_ids: DEFAULT_MAX_TOTAL_IDS,
            max_message_bytes: link_protocol::envelope::DEFAULT_MAX_MESSAGE_BYTES,
            max_buffered_bytes: 4 * 1024 * 1024,
            max_outbox_bytes: 16 * 1024 * 1024,
            max_concurrent_rpc: 256,
            expose_rpc_errors: false,
            peer_updates: PeerUpdates::Broadcast,
            max_peer_list_bytes: DEFAULT_MAX_PEER_LIST_BYTES,
            max_subscriptions_per_peer: DEFAULT_MAX_SUBSCRIPTIONS_PER_PEER,
            max_dropped_frames_per_sec: DEFAULT_MAX_DROPPED_FRAMES_PER_SEC,
            handlers: HashMap::new(),
            acl: Acl::default(),
            rate_limits: RateLimits::default(),
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }

    /// Per-peer rate limits (`None`: no limits, the default).
    pub fn rate_limits(&self) -> Option<&RateLimits> {
        self.rate_limits.as_deref()
    }

    /// Whether `peers.update` is broadcast.
    pub fn peer_updates(&self) -> PeerUpdates {
        self.peer_updates
    }

    /// Largest `peers.update` data.
    pub fn max_peer_list_bytes(&self) -> usize {
        self.max_peer_list_bytes
    }

    /// Topics one peer may be subscribed to at once.
    pub fn max_subscriptions_per_peer(&self) -> usize {
        self.max_subscriptions_per_peer
    }

    /// Frames of one socket dropped as protocol errors per second before
    /// the hub paces its reads (0: never paced).
    pub fn max_dropped_frames_per_sec(&self) -> u32 {
        self.drop_pace.map_or(0, |every| {
            (Duration::from_secs(1).as_nanos() / every.as_nanos().max(1)) as u32
        })
    }

    /// Frame cap; also the WebSocket max frame and message size.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Per-socket write buffer cap.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }

    /// Hash algorithm for every key.
    pub fn hash(&self) -> HashAlgo {
        self.hash
    }

    /// The key source.
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Keepalive ping interval.
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
    }

    /// Hello timeout (`None`: disabled).
    pub fn hello_timeout(&self) -> Option<Duration> {
        self.hello_timeout
    }

    /// Per-socket outbox cap.
    pub fn max_outbox_bytes(&self) -> usize {
        self.max_outbox_bytes
    }

    /// Unauthenticated sockets allowed at once.
    pub fn max_pending_sockets(&self) -> usize {
        self.max_pending_sockets
    }

    /// Server RPCs in flight (0: unlimited).
    pub fn max_concurrent_rpc(&self) -> usize {
        self.max_concurrent_rpc
    }

    /// Replay window (zero: replay protection off).
    pub fn replay_window(&self) -> Duration {
        self.replay_window
    }

    /// Ids remembered per sender.
    pub fn max_recent_ids(&self) -> usize {
        self.max_recent_ids
    }

    /// Ids remembered across all senders.
    pub fn max_total_replay_ids(&self) -> usize {
        self.max_total_replay_ids
    }
}

/// Builder for [`HubConfig`]; every setter documents its default.
#[must_use]
pub struct HubConfigBuilder {
    secret: Secret,
    hash: HashAlgo,
    keepalive_interval: Duration,
    hello_timeout: Duration,
    max_pending_sockets: usize,
    replay_window: Duration,
    max_recent_ids: usize,
    max_total_replay_ids: usize,
    max_message_bytes: usize,
    max_buffered_bytes: usize,
    max_outbox_bytes: usize,
    max_concurrent_rpc: usize,
    expose_rpc_errors: bool,
    peer_updates: PeerUpdates,
    max_peer_list_bytes: usize,
    max_subscriptions_per_peer: usize,
    max_dropped_frames_per_sec: u32,
    handlers: HashMap<String, ServerRpcHandler>,
    acl: Acl,
    rate_limits: RateLimits,
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterConfig>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.$name = value; self } )*
    };
}

impl HubConfigBuilder {
    setters! {
        /// HMAC hash (default sha256).
        hash: HashAlgo,
        /// Ping interval for authenticated sockets (default 15 s; must be positive).
        keepalive_interval: Duration,
        /// Time a socket has to authenticate (default 10 s; zero disables).
        hello_timeout: Duration,
        /// Unauthenticated sockets allowed at once; the oldest is evicted beyond it (default 1024).
        max_pending_sockets: usize,
        /// Replay window (default 300 s; zero disables replay protection).
        replay_window: Duration,
        /// Ids remembered per sender (default 10 000).
        max_recent_ids: usize,
        /// Ids remembered across all senders, departed ones included (default 262 144).
        max_total_replay_ids: usize,
        /// Largest frame, also the WebSocket frame/message cap (default 1 MiB).
        max_message_bytes: usize,
        /// Per-socket WebSocket write buffer before the outbox queues (default 4 MiB).
        max_buffered_bytes: usize,
        /// Per-socket outbox queue cap (default 16 MiB).
        max_outbox_bytes: usize,
        /// Server RPC handlers in flight (default 256; zero means unlimited).
        max_concurrent_rpc: usize,
        /// Send every server handler error as is, not sanitised (default false).
        expose_rpc_errors: bool,
        /// Whether `peers.update` is broadcast (default: yes, as the reference does).
        peer_updates: PeerUpdates,
        /// Largest `peers.update` data in bytes (default 1 MiB − 4 KiB, so the
        /// frame fits a Node client's 1 MiB cap; must be positive). A larger
        /// list holds the earliest-registered peers that fit (docs/protocol.md).
        max_peer_list_bytes: usize,
        /// Topics one peer may be subscribed to at once (default 10 000; must
        /// be positive). A `topic.subscribe` past it is not honoured and is
        /// reported as `protocol-error` `subscription-limit`; the peer sees
        /// nothing on the wire, as for an invalid topic.
        max_subscriptions_per_peer: usize,
        /// Frames of one socket the hub may drop as protocol errors (bad
        /// signature, parse error, replayed id, …) in a second before it
        /// paces that socket (default 100; zero: never paced). Past it the
        /// hub reads the socket no faster than this many dropped frames a
        /// second: every frame is still read and answered as before, and
        /// the socket stays open, but a flood of frames the hub drops costs
        /// it a bounded amount of CPU. A publish (on a lone hub) or direct
        /// message that every recipient's outbox refused
        /// (`outbox-overflow`) counts as dropped too. A peer none of whose frames is dropped, or refused
        /// by every recipient, is never paced (docs/reliability.md,
        /// "Hostile clients").
        max_dropped_frames_per_sec: u32,
        /// Access-control hooks (default: none, zero overhead).
        acl: Acl,
        /// Per-peer rate limits by message class and kind (default: none,
        /// nothing is checked; docs/operations.md, "Rate limits").
        rate_limits: RateLimits,
    }

    /// Registers a server RPC handler for `to: "server"` requests of
    /// `rpc_type`. User handlers override the built-ins (`link.topic.list`,
    /// `link.health`).
    pub fn handler<F, Fut>(mut self, rpc_type: impl Into<String>, f: F) -> Self
    where
        F: Fn(ServerRpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::server_rpc::ServerRpcResult> + Send + 'static,
    {
        self.handlers
            .insert(rpc_type.into(), ServerRpcHandler::new(f));
        self
    }

    /// Joins the hub to a cluster of hubs over NATS (docs/cluster.md).
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, cluster: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<HubConfig, ConfigError> {
        let positive = |option: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::InvalidOption {
                    option,
                    reason: "must be positive",
                })
            }
        };
        positive("keepalive_interval", !self.keepalive_interval.is_zero())?;
        positive("max_pending_sockets", self.max_pending_sockets > 0)?;
        positive("max_recent_ids", self.max_recent_ids > 0)?;
        positive("max_total_replay_ids", self.max_total_replay_ids > 0)?;
        positive("max_message_bytes", self.max_message_bytes > 0)?;
        positive("max_buffered_bytes", self.max_buffered_bytes > 0)?;
        positive("max_outbox_bytes", self.max_outbox_bytes > 0)?;
        positive("max_peer_list_bytes", self.max_peer_list_bytes > 0)?;
        positive(
            "max_subscriptions_per_peer",
            self.max_subscriptions_per_peer > 0,
        )?;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(|e| ConfigError::InvalidOption {
                option: "cluster",
                reason: match e {
                    crate::cluster::ClusterConfigError::Name(_) => {
                        "the name must be 1-64 characters of A-Z a-z 0-9 _ -"
                    }
                    crate::cluster::ClusterConfigError::Secret => "the cluster secret is empty",
                },
            })?;
        }
        let hash = self.hash;
        let keys = match self.secret {
            Secret::Shared(s) => KeySource::Shared(Key::new(&s, hash)?),
            Secret::PerKind(map) => {
                let mut keys = HashMap::with_capacity(map.len());
                for (kind, secret) in map {
                    link_protocol::validate::check_kind(&kind)?;
                    // An empty key counts as no key (unknown-kind), as in the reference.
                    if let Ok(key) = Key::new(&secret, hash) {
                        keys.insert(kind, key);
                    }
                }
                KeySource::PerKind(Arc::new(keys))
            }
            Secret::Resolver(r) => KeySource::Resolver(r),
        };
        Ok(HubConfig {
            keys,
            hash,
            keepalive_interval: self.keepalive_interval,
            hello_timeout: (!self.hello_timeout.is_zero()).then_some(self.hello_timeout),
            max_pending_sockets: self.max_pending_sockets,
            replay_window: self.replay_window,
            max_recent_ids: self.max_recent_ids,
            max_total_replay_ids: self.max_total_replay_ids,
            max_message_bytes: self.max_message_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            max_outbox_bytes: self.max_outbox_bytes,
            max_concurrent_rpc: self.max_concurrent_rpc,
            expose_rpc_errors: self.expose_rpc_errors,
            peer_updates: self.peer_updates,
            max_peer_list_bytes: self.max_peer_list_bytes,
            max_subscriptions_per_peer: self.max_subscriptions_per_peer,
            drop_pace: (self.max_dropped_frames_per_sec > 0)
                .then(|| Duration::from_secs(1) / self.max_dropped_frames_per_sec),
            handlers: self.handlers,
            acl: self.acl,
            rate_limits: (!self.rate_limits.is_empty()).then(|| Arc::new(self.rate_limits)),
            #[cfg(feature = "cluster")]
            cluster: self.cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_reference() {
        let c = HubConfig::builder(Secret::shared("s")).build().unwrap();
        assert_eq!(c.keepalive_interval, Duration::from_secs(15));
        assert_eq!(c.hello_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.max_pending_sockets, 1024);
        assert_eq!(c.replay_window, Duration::from_secs(300));
        assert_eq!(c.max_recent_ids, 10_000);
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.max_buffered_bytes, 4 << 20);
        assert_eq!(c.max_outbox_bytes, 16 << 20);
        assert_eq!(c.max_concurrent_rpc, 256);
        assert_eq!(c.max_subscriptions_per_peer, 10_000);
        assert_eq!(c.max_dropped_frames_per_sec(), 100);
        assert!(!c.expose_rpc_errors);
        assert!(c.rate_limits().is_none());
    }

    #[test]
    fn validation_names_the_option() {
        let err = HubConfig::builder(Secret::shared("s"))
            .max_outbox_bytes(0)
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::InvalidOption {
                option: "max_outbox_bytes",
                reason: "must be positive"
            }
        );
        assert_eq!(
            HubConfig::builder(Secret::shared("")).build().unwrap_err(),
            ConfigError::EmptySecret
        );
        assert!(
            HubConfig::builder(Secret::per_kind([("bad kind", "k")]))
                .build()
                .is_err()
        );
        let c = HubConfig::builder(Secret::shared("s"))
            .hello_timeout(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(c.hello_timeout, None);
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = HubConfig::builder(Secret::per_kind([("alpha", "key-alpha-secret")]))
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("key-alpha-secret"));
        assert!(shown.contains("alpha"));
    }
}
