//! State shared by every task of one hub: the configuration, the event
//! channel, the router's mailbox, the replay shards and the id generator.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use link_protocol::conn::{HubConnConfig, Now};
use link_protocol::{ProtocolError, ReplayCheck, ReplayConfig, ReplayGuard};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::HubConfig;
use crate::events::HubEvent;
use crate::mailbox::RouterMsg;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimitCounters;
use crate::routing::ConnId;

const REPLAY_SHARDS: usize = 16;

pub(crate) struct Shared {
    pub(crate) config: HubConfig,
    pub(crate) conn_config: HubConnConfig,
    pub(crate) events: broadcast::Sender<Arc<HubEvent>>,
    /// Every event but the per-message ones ([`HubEvent::is_traffic`]).
    pub(crate) quiet: broadcast::Sender<Arc<HubEvent>>,
    /// Every event plus the per-frame `message` firehose.
    pub(crate) firehose: broadcast::Sender<Arc<HubEvent>>,
    pub(crate) router: mpsc::Sender<RouterMsg>,
    /// Frames waiting in the sockets' inboxes, every socket together.
    pub(crate) queued: crate::inbox::QueuedFrames,
    pub(crate) replay: ReplayShards,
    pub(crate) ids: link_protocol::conn::IdGen,
    /// Counters and histograms (`/metrics`), shared with the routing table.
    pub(crate) metrics: Arc<Metrics>,
    /// The routing table's revision, sent only while a dashboard page
    /// watches (it has receivers only then).
    pub(crate) dashboard: watch::Sender<u64>,
    /// Frames refused by the rate limits (touched only on a refusal).
    pub(crate) rate_limited: RateLimitCounters,
    next_conn: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: HubConfig,
        events: broadcast::Sender<Arc<HubEvent>>,
        quiet: broadcast::Sender<Arc<HubEvent>>,
        firehose: broadcast::Sender<Arc<HubEvent>>,
        router: mpsc::Sender<RouterMsg>,
    ) -> Self {
        let conn_config = HubConnConfig {
            max_message_bytes: config.max_message_bytes,
            hello_timeout: config.hello_timeout,
            keepalive_interval: Some(config.keepalive_interval),
            ..HubConnConfig::default()
        };
        let replay = ReplayShards::new(ReplayConfig {
            window_ms: u64::try_from(config.replay_window.as_millis()).unwrap_or(u64::MAX),
            max_recent_ids: config.max_recent_ids,
            max_total_ids: config.max_total_replay_ids,
        });
        Self {
            config,
            conn_config,
            events,
            quiet,
            firehose,
            router,
            queued: crate::inbox::QueuedFrames::default(),
            replay,
            ids: crate::ids::id_gen(),
            metrics: Arc::new(Metrics::default()),
            dashboard: watch::Sender::new(0),
            rate_limited: RateLimitCounters::default(),
            next_conn: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Who listens, for the routing table: each channel's receivers are
    /// counted once (every count takes the channel's lock).
    pub(crate) fn listeners(&self) -> crate::routing::Listening {
        let traffic = self.events.receiver_count() > 0 || self.firehose.receiver_count() > 0;
        crate::routing::Listening {
            events: traffic || self.quiet.receiver_count() > 0,
            traffic,
        }
    }

    /// True when someone listens to the `message` firehose (so cloning every
    /// verified envelope is worth it).
    pub(crate) fn firehose_listening(&self) -> bool {
        self.firehose.receiver_count() > 0
    }

    /// Tells the open dashboards (if any) the table's revision, when it
    /// moved. With no dashboard open this is one atomic load.
    pub(crate) fn dashboard_revision(&self, revision: u64) {
        if self.dashboard.receiver_count() > 0 {
            self.dashboard.send_if_modified(|seen| {
                let moved = *seen != revision;
                *seen = revision;
                moved
            });
        }
    }

    /// Emits an event built only if someone listens.
    pub(crate) fn emit(&self, build: impl FnOnce() -> HubEvent) {
        // Each count takes its channel's lock: once per channel and event.
        let firehose = self.firehose.receiver_count() > 0;
        let quiet = self.quiet.receiver_count() > 0;
        let events = self.events.receiver_count() > 0;
        if firehose || quiet || events {
            let event = Arc::new(build());
            if firehose {
                let _ = self.firehose.send(event.clone());
            }
            if quiet && !event.is_traffic() {
                let _ = self.quiet.send(event.clone());
            }
            if events && !matches!(*event, HubEvent::Message { .. }) {
                let _ = self.events.send(event);
            }
        }
    }

    pub(crate) fn protocol_error(
        &self,
        error: ProtocolError,
        remote: Option<std::net::SocketAddr>,
    ) {
        tracing::debug!(reason = error.reason.code(), kind = ?error.kind, "frame dropped");
        self.metrics.dropped(error.reason.code());
        self.metrics.recent_error(&error, remote, wall_ms());
        self.emit(|| HubEvent::ProtocolError {
            error,
            remote_addr: remote,
        });
    }
}

/// The current time for the protocol state machines. The monotonic clock is
/// tokio's, so paused test time drives the timers.
pub(crate) fn now() -> Now {
    Now::new(tokio::time::Instant::now().into_std(), wall_ms())
}

/// Wall clock in ms since the epoch.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Std instant → tokio instant (for `sleep_until`).
pub(crate) fn tokio_instant(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
}

/// Replay state split into shards by sender kind, each behind its own
/// short-held lock: no global lock on the relay path.
pub(crate) struct ReplayShards {
    shards: Box<[Mutex<ReplayGuard>]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl ReplayShards {
    fn new(config: ReplayConfig) -> Self {
        let per_shard = ReplayConfig {
            max_total_ids: (config.max_total_ids / REPLAY_SHARDS)
                .max(config.max_recent_ids.min(config.max_total_ids)),
            ..config
        };
        Self {
            shards: (0..REPLAY_SHARDS)
                .map(|_| Mutex::new(ReplayGuard::new(per_shard)))
                .collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    fn shard(&self, sender: &str) -> std::sync::MutexGuard<'_, ReplayGuard> {
        let idx = (self.hasher.hash_one(sender) as usize) % self.shards.len();
        self.shards[idx]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids held across shards.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Expires old ids in every shard.
    pub(crate) fn sweep(&self, now_ms: f64) {
        for s in self.shards.iter() {
            s.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sweep(now_ms);
        }
    }

    /// A [`ReplayCheck`] view for the protocol state machines.
    pub(crate) fn checker(&self) -> ShardChecker<'_> {
        ShardChecker(self)
    }
}

pub(crate) struct ShardChecker<'a>(&'a ReplayShards);

impl ReplayCheck for ShardChecker<'_> {
    fn check(
        &mut self,
        sender: &str,
        id: &str,
        ts: f64,
        exempt_id: bool,
        now_ms: f64,
    ) -> Result<(), ProtocolError> {
        self.0
            .shard(sender)
            .check(sender, id, ts, exempt_id, now_ms)
    }
}
