//! The seam between the routing table and the cluster driver: what the
//! table hands to NATS ([`Outbound`] on a bounded channel, pushed like an
//! outbox; [`ClusterOut`] for membership, drained like its other outputs)
//! and what the driver feeds back in ([`ClusterIn`], through the router's
//! mailbox). No NATS type appears here: the table stays sans-I/O and is
//! tested without a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use link_protocol::{CanonicalData, Hello};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::outbox::{OutItem, Push};
use crate::routing::ConnId;

/// Messages queued towards NATS at most (past it a delivery is refused
/// like a full outbox: an RPC gets `TARGET_UNAVAILABLE`, a topic message
/// or status is dropped and counted).
pub(crate) const OUTBOUND_CAPACITY: usize = 8192;

/// The data path to the other hubs.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message for a peer on hub `hub`.
    Deliver { hub: Arc<str>, item: OutItem },
    /// A topic message from a local peer, for every hub with subscribers,
    /// published at `at` (hub wall ms).
    Publish {
        topic: String,
        from: Arc<str>,
        data: Arc<CanonicalData>,
        at: u64,
    },
    /// A local peer left: the other hubs stop routing to it here. `rev`:
    /// the lease revision it held, when its claim was answered (a hub
    /// then ignores that lease and older ones if its watch of the bucket
    /// delivers them late).
    Release { kind: Arc<str>, rev: Option<u64> },
    /// A local peer's status (`data`: the status, `None` for `null`).
    Status {
        kind: Arc<str>,
        at: u64,
        data: Option<Arc<CanonicalData>>,
    },
}

/// Membership and interest, from the table to the driver (unbounded: one
/// per local membership or first/last subscription change).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ClusterOut {
    /// A local peer registered: take its kind's lease (it displaces any
    /// other hub's holder) and answer with [`ClusterIn::Claimed`].
    Claim {
        kind: Arc<str>,
        conn: ConnId,
        hello: Hello,
        connected_at: u64,
        /// The hello frame's id and ts: the other hubs add them to their
        /// replay guards, so the hello cannot be replayed on them.
        hello_id: Option<(Arc<str>, f64)>,
    },
    /// A local peer left: hand its lease back if it still holds it.
    Release { kind: Arc<str> },
    /// This hub's first subscriber to `topic` came (`on`), or its last went.
    Interest { topic: String, on: bool },
}

/// What the driver learned, for the table.
#[derive(Debug)]
pub(crate) enum ClusterIn {
    /// The NATS connection came up (`true`) or went down.
    Link(bool),
    /// A hub is alive (heartbeat), with how many peers it holds.
    HubAlive { hub: Arc<str>, peers: u64 },
    /// A hub stopped (said bye) or missed its heartbeats.
    HubGone { hub: Arc<str> },
    /// A lease entry: `kind` is held by a peer on `hub` since `rev`.
    Lease {
        kind: Arc<str>,
        hub: Arc<str>,
        rev: u64,
        hello: Hello,
        connected_at: u64,
        /// The id and ts of the hello that took it.
        hello_id: Option<(Arc<str>, f64)>,
    },
    /// `kind`'s lease entry was deleted at `rev` (handed back, expired,
    /// or deleted by anyone with access to the bucket: a delete carries no
    /// MAC, so it only counts for a hub that is gone).
    LeaseGone { kind: Arc<str>, rev: u64 },
    /// `hub` says its peer `kind` left (authenticated), with the lease
    /// revision it held when it knows it (`None`: the claim was still in
    /// flight).
    Released {
        hub: Arc<str>,
        kind: Arc<str>,
        rev: Option<u64>,
    },
    /// This hub's claim for `conn`'s `kind` took revision `rev`, or was
    /// lost (`None`: another hub's peer holds it now).
    Claimed {
        kind: Arc<str>,
        conn: ConnId,
        rev: Option<u64>,
    },
    /// A message for a local peer, from another hub.
    Deliver { hub: Arc<str>, item: OutItem },
    /// A topic message from another hub's peer, published at `at` (that
    /// hub's wall ms).
    Publish {
        topic: String,
        from: Arc<str>,
        data: Option<Arc<CanonicalData>>,
        at: u64,
    },
    /// Another hub's peer set its status.
    Status {
        kind: Arc<str>,
        at: u64,
        status: Option<Value>,
    },
}

/// What the cluster counts, for `/metrics` (the driver adds, a scrape
/// reads).
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    /// Messages sealed and handed to NATS.
    pub(crate) published: AtomicU64,
    /// Messages from NATS dropped: bad MAC, stale, replayed, malformed.
    pub(crate) rejected: AtomicU64,
    /// Slow-consumer events from async-nats (messages it dropped).
    pub(crate) slow_consumers: AtomicU64,
    /// Deliveries refused at the link (NATS down or the queue full).
    pub(crate) refused: AtomicU64,
}

/// The table's handle on the data path: a bounded queue and whether NATS
/// is up (a delivery while it is down fails at once).
#[derive(Debug)]
pub(crate) struct ClusterLink {
    /// This hub's id in the cluster.
    pub(crate) hub: Arc<str>,
    tx: mpsc::Sender<Outbound>,
    up: AtomicBool,
    /// What the cluster counts.
    pub(crate) counters: ClusterCounters,
    /// Peers on this hub (for its heartbeats), set by the table.
    pub(crate) peers: AtomicU64,
}

impl ClusterLink {
    /// A link and the receiving end of its queue (for the driver).
    pub(crate) fn new(hub: Arc<str>) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let link = Self {
            hub,
            tx,
            up: AtomicBool::new(false),
            counters: ClusterCounters::default(),
            peers: AtomicU64::new(0),
        };
        (Arc::new(link), rx)
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Queues one message for NATS.
    pub(crate) fn send(&self, out: Outbound) -> Push {
        if !self.is_up() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Push::Closed;
        }
        match self.tx.try_send(out) {
            Ok(()) => Push::Queued { backpressure: None },
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Push::Overflow {
                    outbox_bytes: OUTBOUND_CAPACITY,
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Closed,
        }
    }
}

/// A peer's route when it is on another hub.
#[derive(Debug)]
pub(crate) struct RemoteHub {
    pub(crate) hub: Arc<str>,
    pub(crate) link: Arc<ClusterLink>,
}

impl RemoteHub {
    pub(crate) fn push(&self, item: OutItem) -> Push {
        self.link.send(Outbound::Deliver {
            hub: self.hub.clone(),
            item,
        })
    }
}
