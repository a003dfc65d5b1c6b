//! State shared by the [`LinkClient`](crate::LinkClient) handles and the
//! driver task: what callers may read or change synchronously (pending
//! RPCs, handlers, subscriptions, peers) under one short-held lock, the
//! outbox under its own, and the link phase on a watch channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use link_protocol::conn::{IdGen, Now};
use link_protocol::{Envelope, PeerInfo, StatusEntry};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::LinkError;
use crate::events::LinkEvent;
use crate::handler::RpcHandler;
use crate::outbox::{OutItem, Outbox, Push};

/// Where the link stands ([`LinkClient::phase`](crate::LinkClient::phase)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Not started.
    Idle,
    /// Connecting, handshaking or waiting to reconnect.
    Connecting,
    /// `hello.ack` received.
    Ready {
        /// The kind the hub registered.
        kind: String,
        /// Features the hub advertises.
        features: Vec<String>,
    },
    /// The hub refused the hello (and the link stopped or will retry).
    Rejected {
        /// The hub's reason.
        reason: Option<String>,
    },
    /// Stopped (by `stop()`, displacement or reconnect exhaustion).
    Stopped,
    /// url, secret or kind missing: never connects.
    Disabled,
}

/// An outgoing RPC waiting for its response.
pub(crate) struct PendingRpc {
    pub(crate) to: String,
    pub(crate) tx: oneshot::Sender<Result<Value, LinkError>>,
}

/// An inbound RPC whose handler is running.
pub(crate) struct InFlight {
    pub(crate) from: String,
    pub(crate) rpc_type: String,
    pub(crate) cancel: CancellationToken,
}

/// A message delivered to a topic subscription.
///
/// The payload stays the text it arrived as until you read it:
/// [`payload`](Self::payload) parses it once (clones share the result, and
/// clones are cheap: they share the envelope's text), and
/// [`payload_as`](Self::payload_as) reads it straight into your own type.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicMessage {
    /// Topic.
    pub topic: String,
    /// Publisher kind.
    pub from: String,
    /// The verified envelope.
    pub envelope: Envelope,
}

impl TopicMessage {
    /// The payload (`None` when the publisher sent none; `null` is
    /// `Some(Value::Null)`).
    pub fn payload(&self) -> Option<&Value> {
        link_protocol::messages::topic_payload(&self.envelope)
    }

    /// The payload deserialised into `T` (an absent payload reads as
    /// `null`, so `Option<T>` takes both), without building a
    /// [`Value`] first.
    ///
    /// ```
    /// # fn demo(msg: &link_client::TopicMessage) -> Result<(), serde_json::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Reading { celsius: f64 }
    /// let r: Reading = msg.payload_as()?;
    /// println!("{} °C from {}", r.celsius, msg.from);
    /// # Ok(()) }
    /// ```
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        link_protocol::messages::topic_payload_as(&self.envelope)
    }
}

/// A direct message.
///
/// Like [`TopicMessage`], its data stays the text it arrived as until read:
/// [`data`](Self::data) parses it once, [`data_as`](Self::data_as) reads it
/// straight into your own type.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectMessage {
    /// Sender kind.
    pub from: String,
    /// directType.
    pub msg_type: String,
    /// The verified envelope.
    pub envelope: Envelope,
}

impl DirectMessage {
    /// `directData` (`None` when the sender sent none; `null` is
    /// `Some(Value::Null)`).
    pub fn data(&self) -> Option<&Value> {
        link_protocol::messages::direct_data(&self.envelope)
    }

    /// `directData` deserialised into `T` (absent reads as `null`), without
    /// building a [`Value`] first.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        link_protocol::messages::direct_data_as(&self.envelope)
    }
}

pub(crate) struct Sink<T> {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<T>,
    pub(crate) dropped: u64,
}

/// A topic handler ([`LinkClient::subscribe_with`](crate::LinkClient::subscribe_with)).
pub(crate) type TopicFn = Arc<dyn Fn(&TopicMessage) + Send + Sync>;

/// Everything subscribed locally to one topic: streams and handlers.
#[derive(Default)]
pub(crate) struct TopicSubs {
    pub(crate) sinks: Vec<Sink<TopicMessage>>,
    /// Copied on write, so that the driver can take them out of the lock
    /// with one reference count and call them without holding it.
    pub(crate) handlers: Arc<[(u64, TopicFn)]>,
}

impl TopicSubs {
    pub(crate) fn is_empty(&self) -> bool {
        self.sinks.is_empty() && self.handlers.is_empty()
    }

    /// Removes the stream or handler `id`.
    pub(crate) fn remove(&mut self, id: u64) {
        self.sinks.retain(|s| s.id != id);
        if self.handlers.iter().any(|(h, _)| *h == id) {
            self.handlers = self
                .handlers
                .iter()
                .filter(|(h, _)| *h != id)
                .cloned()
                .collect();
        }
    }

    /// Adds a handler.
    pub(crate) fn add_handler(&mut self, id: u64, f: TopicFn) {
        self.handlers = self.handlers.iter().cloned().chain([(id, f)]).collect();
    }
}

#[derive(Default)]
pub(crate) struct Core {
    pub(crate) pending: HashMap<String, PendingRpc>,
    pub(crate) inflight: HashMap<String, InFlight>,
    pub(crate) handlers: HashMap<String, RpcHandler>,
    /// Looked up for every topic message delivered, by a topic the local
    /// application subscribed to (remote input only looks up): hashed
    /// with foldhash rather than SipHash.
    pub(crate) subs: hashbrown::HashMap<String, TopicSubs>,
    pub(crate) directs: Vec<Sink<DirectMessage>>,
    pub(crate) peers: Vec<PeerInfo>,
    /// Where the `peers.delta` extension stands on this connection.
    pub(crate) peer_sync: link_protocol::presence::PeerSync,
    pub(crate) statuses: HashMap<String, StatusEntry>,
    /// Features of the last `hello.ack` (None before the first).
    pub(crate) features: Option<Vec<String>>,
    pub(crate) connected: bool,
    /// The hub URL of the socket open (None when none is).
    pub(crate) url: Option<String>,
    pub(crate) verified: bool,
    pub(crate) reconnect_attempt: u32,
    /// `stop()` was called (or the link stopped by itself).
    pub(crate) stopped: bool,
    /// Rejected hellos so far, and the last reason (for `ready()`).
    pub(crate) rejections: u64,
    pub(crate) rejection: Option<String>,
}

/// Driver commands.
pub(crate) enum Cmd {
    /// Stop, draining for at most `drain` (zero: close at once).
    Stop {
        done: oneshot::Sender<()>,
        drain: std::time::Duration,
    },
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) core: Mutex<Core>,
    pub(crate) outbox: Outbox,
    pub(crate) events: broadcast::Sender<Arc<LinkEvent>>,
    /// Every event plus the per-frame `message` firehose.
    pub(crate) firehose: broadcast::Sender<Arc<LinkEvent>>,
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) ids: Arc<IdGen>,
    pub(crate) cmd: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    pub(crate) next_sink: AtomicU64,
    /// Wall ms of the last verified frame (0: none yet), stamped for every
    /// message without taking the `core` lock.
    pub(crate) last_verified_at: AtomicU64,
    /// Something a stopping driver waits for may have happened outside it:
    /// the writer took the outbox's last items, or a caller abandoned a
    /// pending RPC. The driver re-checks whether it has drained.
    pub(crate) drain_progress: Notify,
}

/// Held by every handle and stream; the last one dropped stops the link
/// (the driver sees its command channel close and shuts down without
/// draining).
pub(crate) struct KeepAlive(pub(crate) Arc<Inner>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0
            .cmd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

impl Inner {
    pub(crate) fn new(config: ClientConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (firehose, _) = broadcast::channel(1024);
        let phase = if config.is_disabled() {
            Phase::Disabled
        } else {
            Phase::Idle
        };
        let (phase, _) = watch::channel(phase);
        let mut prefix = [0u8; 10];
        if SystemRandom::new().fill(&mut prefix).is_err() {
            tracing::warn!("system RNG unavailable; message ids use a fixed prefix");
        }
        let mut core = Core {
            handlers: config.handlers.clone(),
            ..Core::default()
        };
        core.stopped = config.is_disabled();
        Self {
            outbox: Outbox::new(config.max_outbox_bytes),
            config,
            core: Mutex::new(core),
            events,
            firehose,
            phase,
            ids: Arc::new(IdGen::new(prefix)),
            cmd: Mutex::new(None),
            next_sink: AtomicU64::new(1),
            last_verified_at: AtomicU64::new(0),
            drain_progress: Notify::new(),
        }
    }

    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn kind(&self) -> &str {
        self.config.kind.as_deref().unwrap_or_default()
    }

    pub(crate) fn listening(&self) -> bool {
        self.events.receiver_count() > 0 || self.firehose.receiver_count() > 0
    }

    /// True when someone listens to the per-frame `message` firehose.
    pub(crate) fn firehose_listening(&self) -> bool {
        self.firehose.receiver_count() > 0
    }

    pub(crate) fn emit(&self, build: impl FnOnce() -> LinkEvent) {
        if self.listening() {
            let event = Arc::new(build());
            if self.firehose.receiver_count() > 0 {
                let _ = self.firehose.send(event.clone());
            }
            if self.events.receiver_count() > 0 && !matches!(*event, LinkEvent::Message(_)) {
                let _ = self.events.send(event);
            }
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Ready { .. })
    }

    /// Records a verified frame at `wall_ms`.
    pub(crate) fn verified_at(&self, wall_ms: u64) {
        self.last_verified_at.store(wall_ms, Ordering::Relaxed);
    }

    /// When the last verified frame arrived (wall ms), if one has.
    pub(crate) fn last_verified_at(&self) -> Option<u64> {
        Some(self.last_verified_at.load(Ordering::Relaxed)).filter(|&at| at != 0)
    }

    /// Wakes a stopping driver to re-check its drain (a stored permit if
    /// it is not waiting yet, so a wake-up between its check and its wait
    /// is not lost).
    pub(crate) fn drain_progress(&self) {
        self.drain_progress.notify_one();
    }

    pub(crate) fn next_sink_id(&self) -> u64 {
        self.next_sink.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a message, emitting backpressure/overflow events. A refused
    /// RPC request's `Backpressure` is completed (`rpc_type`, `id`) by its
    /// caller.
    pub(crate) fn enqueue(&self, item: OutItem) -> Result<(), LinkError> {
        let (t, to) = (item.msg_type, item.to.clone());
        match self.outbox.push(item) {
            Push::Queued {
                backpressure: Some(outbox_size),
            } => {
                let buffered_amount = self.outbox.buffered();
                self.emit(|| LinkEvent::Backpressure {
                    msg_type: t.to_owned(),
                    to,
                    buffered_amount,
                    outbox_size,
                });
                Ok(())
            }
            Push::Queued { backpressure: None } => Ok(()),
            Push::Overflow { outbox_bytes } => {
                let max_outbox_bytes = self.outbox.max_bytes();
                let to2 = to.clone();
                self.emit(|| LinkEvent::OutboxOverflow {
                    msg_type: t.to_owned(),
                    to: to2,
                    outbox_bytes,
                    max_outbox_bytes,
                });
                Err(LinkError::Backpressure {
                    msg_type: t.to_owned(),
                    to: to.unwrap_or_default(),
                    outbox_bytes,
                    max_outbox_bytes,
                    buffered_amount: self.outbox.buffered(),
                    rpc_type: None,
                    id: None,
                })
            }
        }
    }

    /// An item from this client.
    pub(crate) fn item(
        &self,
        id: Option<String>,
        msg_type: &'static str,
        to: Option<String>,
        data: Option<link_protocol::CanonicalData>,
    ) -> OutItem {
        OutItem::new(id, msg_type, to, data, self.kind().len())
    }
}

/// The current time for the protocol state machine (tokio's monotonic
/// clock, so paused test time drives timers).
pub(crate) fn now() -> Now {
    Now::new(tokio::time::Instant::now().into_std(), wall_ms())
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn tokio_instant(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
}
