//! The routing table, without I/O: who is connected (one socket per kind),
//! which topics they hold, their last statuses, the server RPCs and ACL
//! checks in flight, the membership version, and every decision about where
//! a verified message goes (protocol §5–§10).
//!
//! It is a plain state machine in the quinn-proto shape. Inputs are
//! `handle_*` calls with the time passed in; outputs are polled:
//!
//! ```text
//!  handle_attach / handle_register / handle_closed     membership
//!  handle_inbound(now, conn, kind, envelope)            a verified frame
//!  handle_verdict(now, ticket, verdict)                 an ACL hook answered
//!  handle_server_rpc_done(now, ticket, result)          a server RPC handler returned
//!  handle_input_done(now, more_waiting)                 coalesced peers.update
//!  handle_timeout(now)                                  paced peers.update
//!  close_all / terminate_all / stop                     operator control
//!        │
//!        ├─► Route::push(OutItem)   deliveries (today a local outbox; a
//!        │                          remote hub is the next variant)
//!        ├─► poll_timeout()         when to call handle_timeout
//!        ├─► poll_control()         close / evict / displace a socket
//!        ├─► poll_task()            a server-RPC handler or ACL hook to run
//!        ├─► poll_event()           hub events, built only while someone listens
//!        └─► poll_protocol_error()  the drops it decides, for the dashboard's list
//! ```
//!
//! It also counts what only it sees for `/metrics` (`stats.rs`, plain
//! integers): backpressure and overflow, drops it decides, and RPC
//! latencies, timed with the instants it is given (a sample of relayed RPCs
//! in flight is held in `rpc_timer.rs`, capped).
//!
//! It never reads a clock, opens a socket or spawns a task: the tokio
//! driver in `router.rs` feeds it and carries its outputs out, and its
//! tests (`tests.rs`) are transcripts that run in microseconds. Signing
//! happens later, on each recipient socket's writer.

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod cluster;
mod dashboard;
#[cfg(any(test, feature = "fuzzing"))]
mod invariants;
mod membership;
mod peer_deltas;
mod relay;
mod rpc_timer;
mod server;
mod stats;
#[cfg(test)]
mod tests;
mod verdicts;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

// hashbrown's default hash (foldhash, seeded at random per process): the
// tables are read on every routed frame, where SipHash cost four of them
// about 900 instructions a message.
use hashbrown::{HashMap, HashSet};

use link_protocol::conn::Now;
use link_protocol::{CanonicalData, Hello, ProtocolError, SERVER, StatusEntry};

use crate::cluster::link::RemoteHub;
use crate::events::HubEvent;
use crate::outbox::{OutItem, Outbox, Push};

pub(crate) use dashboard::{DashboardView, PeerRow, TopicRow};
pub(crate) use membership::PresenceLimits;
pub(crate) use server::{ServerRpcCall, topic_list_value};

/// Who listens to the hub's events (the driver reads it once per batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listening {
    /// Someone wants events.
    pub(crate) events: bool,
    /// Someone wants the per-message ones too ([`HubEvent::is_traffic`]).
    pub(crate) traffic: bool,
}
pub(crate) use stats::{Gauges, Histogram, RPC_BUCKETS, RPC_SAMPLE_EVERY, TableStats};
pub(crate) use verdicts::{AclHooks, AclQuery};

/// Reads a size kept outside the table.
pub(crate) type RecentIds = Box<dyn Fn() -> usize + Send>;

/// Identifies one attached socket for the life of the hub.
pub(crate) type ConnId = u64;

/// Names one outstanding task (an ACL check or a server-RPC handler) so its
/// answer finds its way back.
pub(crate) type Ticket = u64;

/// Where a peer's deliveries go.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// A socket on this hub: its outbox, drained and signed by its writer.
    Local(Arc<Outbox>),
    /// A peer on another hub of the cluster: the message crosses NATS and
    /// that hub's writer signs it.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Remote(Arc<RemoteHub>),
}

impl Route {
    /// Queues one message.
    pub(crate) fn push(&self, item: OutItem) -> Push {
        match self {
            Self::Local(outbox) => outbox.push(item),
            Self::Remote(hub) => hub.push(item),
        }
    }

    /// Removes `from`'s queued request `id`; true if it was still queued.
    fn cancel_request(&self, id: &str, from: &str) -> bool {
        match self {
            Self::Local(outbox) => outbox.cancel_request(id, from),
            Self::Remote(_) => false,
        }
    }

    /// A peer list taken by the writer is not on the socket yet.
    fn list_unflushed(&self) -> bool {
        match self {
            Self::Local(outbox) => outbox.list_unflushed(),
            Self::Remote(_) => false,
        }
    }

    /// A peer list is queued or taken and not on the socket yet.
    fn list_pending(&self) -> bool {
        match self {
            Self::Local(outbox) => outbox.list_pending(),
            Self::Remote(_) => false,
        }
    }

    fn queued_bytes(&self) -> usize {
        match self {
            Self::Local(outbox) => outbox.queued_bytes(),
            Self::Remote(_) => 0,
        }
    }

    fn max_bytes(&self) -> usize {
        match self {
            Self::Local(outbox) => outbox.max_bytes(),
            Self::Remote(_) => crate::cluster::link::OUTBOUND_CAPACITY,
        }
    }
}

/// Instructions from the routing table to a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConnCtl {
    /// Pending-cap eviction.
    Evict,
    /// Another socket took this kind.
    Displace,
    /// Close with a code (shutdown).
    Close { code: Option<u16>, reason: String },
    /// Drop the socket now.
    Terminate,
}

/// What the routing table needs of the hub's configuration.
#[derive(Clone, Debug)]
pub(crate) struct RoutingConfig {
    /// Sockets allowed to wait for their hello at once.
    pub(crate) max_pending_sockets: usize,
    /// Reported in `peer-timeout` events.
    pub(crate) hello_timeout: Option<Duration>,
    /// Send `peers.update` on every membership change.
    pub(crate) broadcast_peers: bool,
    /// Largest `peers.update` data; past it the list holds the earliest
    /// peers that fit.
    pub(crate) max_peer_list_bytes: usize,
    /// Topics one peer may hold; a subscribe past it is dropped
    /// (`subscription-limit`).
    pub(crate) max_subscriptions_per_peer: usize,
    /// How `peers.update` is paced.
    pub(crate) presence: membership::PresenceLimits,
    /// Server RPCs allowed to run at once (0: no cap).
    pub(crate) max_concurrent_rpc: usize,
    /// Pass every handler error's text to the caller.
    pub(crate) expose_rpc_errors: bool,
    /// Reported in `backpressure` events.
    pub(crate) max_buffered_bytes: usize,
    /// Server RPC types with a user handler (they shadow the built-ins).
    pub(crate) user_rpcs: HashSet<String>,
    /// Which ACL hooks are set.
    pub(crate) acl: AclHooks,
}

impl RoutingConfig {
    /// The routing part of a hub configuration.
    pub(crate) fn from_hub(config: &crate::config::HubConfig) -> Self {
        Self {
            max_pending_sockets: config.max_pending_sockets,
            hello_timeout: config.hello_timeout,
            broadcast_peers: config.peer_updates == crate::config::PeerUpdates::Broadcast,
            max_peer_list_bytes: config.max_peer_list_bytes,
            max_subscriptions_per_peer: config.max_subscriptions_per_peer,
            presence: PresenceLimits::default(),
            max_concurrent_rpc: config.max_concurrent_rpc,
            expose_rpc_errors: config.expose_rpc_errors,
            max_buffered_bytes: config.max_buffered_bytes,
            user_rpcs: config.handlers.keys().cloned().collect(),
            acl: AclHooks::of(&config.acl),
        }
    }
}

/// Something the driver must run off the routing table's thread.
#[derive(Debug)]
pub(crate) enum Task {
    /// Run a user server-RPC handler, then call
    /// [`Routing::handle_server_rpc_done`] with the ticket.
    ServerRpc(ServerRpcCall),
    /// Ask an ACL hook, then call [`Routing::handle_verdict`] with the ticket.
    Judge { ticket: Ticket, query: AclQuery },
    /// `link.topic.list` in a cluster: ask the `hubs` other hubs for their
    /// topics, merge them with `local`, then call
    /// [`Routing::handle_server_rpc_done`] with the ticket and the answer
    /// (shaped by `topic`, the one asked for, if any).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    ClusterTopics {
        ticket: Ticket,
        local: TopicMap,
        hubs: usize,
        topic: Option<String>,
    },
}

/// Topics and their subscribers, in subscription order.
pub(crate) type TopicMap = BTreeMap<String, Vec<String>>;

/// One attached socket.
struct ConnEntry {
    route: Route,
    remote: Option<SocketAddr>,
    /// Set when its hello verified.
    kind: Option<Arc<str>>,
}

/// One registered peer (the socket that holds its kind).
struct Peer {
    conn: ConnId,
    kind: Arc<str>,
    hello: Hello,
    connected_at: u64,
    route: Route,
    /// Its list entry and what it has seen (`None` when lists are off;
    /// boxed, so that a peer without lists does not carry its room).
    presence: Option<Box<membership::PeerPresence>>,
}

/// A topic's subscribers, in subscription order, each with when it
/// subscribed (hub wall ms), and what was published to it since it got its
/// first subscriber (for the dashboard: plain counters, bumped where a
/// publish is routed).
#[derive(Default)]
struct Subscribers {
    order: Vec<Arc<str>>,
    since: HashMap<Arc<str>, u64>,
    published: u64,
    delivered: u64,
}

impl Subscribers {
    /// Adds `kind`, subscribed at `at`; false (and `at` ignored) if it
    /// was there.
    fn insert(&mut self, kind: &Arc<str>, at: u64) -> bool {
        match self.since.entry(kind.clone()) {
            hashbrown::hash_map::Entry::Occupied(_) => false,
            hashbrown::hash_map::Entry::Vacant(v) => {
                v.insert(at);
                self.order.push(kind.clone());
                true
            }
        }
    }

    fn remove(&mut self, kind: &str) -> bool {
        if self.since.remove(kind).is_some() {
            self.order.retain(|k| &**k != kind);
            true
        } else {
            false
        }
    }
}

/// The hub's routing table. Call order per input: one `handle_*`, then
/// drain `poll_control`, `poll_task` and `poll_event`; after each input,
/// `handle_input_done` says whether more are waiting.
pub(crate) struct Routing {
    config: RoutingConfig,
    conns: HashMap<ConnId, ConnEntry>,
    /// Sockets waiting for their hello, oldest first.
    pending: VecDeque<ConnId>,
    /// Registration order (a re-registered kind keeps its slot).
    order: Vec<Arc<str>>,
    /// Boxed: a table sized for thousands of peers holds a pointer per
    /// slot, not a whole peer (its spare slots cost 24 bytes, not 240).
    peers: HashMap<Arc<str>, Box<Peer>>,
    statuses: HashMap<Arc<str>, StatusEntry>,
    topics: BTreeMap<String, Subscribers>,
    subscriptions: HashMap<Arc<str>, HashSet<String>>,
    /// User server RPCs running, by ticket.
    server_calls: HashMap<Ticket, server::Running>,
    /// Built-in server RPCs count themselves while they run (inline).
    builtin_running: usize,
    /// ACL checks in flight and the per-socket ordered lanes.
    verdicts: verdicts::Verdicts,
    next_ticket: Ticket,
    server: Arc<str>,
    presence: membership::Presence,
    /// `stop()` ran: sockets attached from now on are closed at once.
    stopped: bool,
    /// Someone listens to events: build them.
    listening: Listening,
    /// Reads the replay guard's size (held outside the table) for health.
    recent_ids: RecentIds,
    /// What the table counts for `/metrics` (its gauges are filled in by
    /// [`Routing::stats`]).
    stats: TableStats,
    /// A sample of relayed RPCs forwarded and not answered yet, for their
    /// latency: one in `rpc_sample_every`, counted down by
    /// `rpc_until_sample` (never 0 between calls).
    rpc_timer: rpc_timer::RpcTimer,
    rpc_sample_every: u32,
    rpc_until_sample: u32,
    /// Bumped on every membership, status and subscription change (the
    /// dashboard pushes a view when it moves).
    revision: u64,
    controls: VecDeque<(ConnId, ConnCtl)>,
    tasks: VecDeque<Task>,
    events: VecDeque<HubEvent>,
    /// The other hubs and what they hold (`None` on a lone hub).
    cluster: Option<cluster::ClusterView>,
    /// Drops the table decided, for the dashboard's recent errors (drained
    /// after every input; capped in case nobody drains it).
    errors: VecDeque<ProtocolError>,
    /// Frames relayed to nobody since the last [`Routing::take_unheard`]:
    /// a publish or a direct message every recipient's outbox refused.
    unheard: usize,
}

impl Routing {
    /// An empty table.
    pub(crate) fn new(config: RoutingConfig) -> Self {
        Self {
            config,
            conns: HashMap::new(),
            pending: VecDeque::new(),
            order: Vec::new(),
            peers: HashMap::new(),
            statuses: HashMap::new(),
            topics: BTreeMap::new(),
            subscriptions: HashMap::new(),
            server_calls: HashMap::new(),
            builtin_running: 0,
            verdicts: verdicts::Verdicts::default(),
            next_ticket: 1,
            server: SERVER.into(),
            presence: membership::Presence::default(),
            stopped: false,
            listening: Listening::default(),
            recent_ids: Box::new(|| 0),
            stats: TableStats::default(),
            rpc_timer: rpc_timer::RpcTimer::new(rpc_timer::RPC_TIMER_CAP),
            rpc_sample_every: stats::RPC_SAMPLE_EVERY,
            rpc_until_sample: stats::RPC_SAMPLE_EVERY,
            revision: 0,
            controls: VecDeque::new(),
            tasks: VecDeque::new(),
            events: VecDeque::new(),
            errors: VecDeque::new(),
            unheard: 0,
            cluster: None,
        }
    }

    /// Where `health()` reads the replay guard's size from (it lives
    /// outside the table, shared by the sockets' readers).
    pub(crate) fn with_recent_ids(mut self, probe: RecentIds) -> Self {
        self.recent_ids = probe;
        self
    }

    // ----- getters ---------------------------------------------------------

    /// Counters for `health()` and `link.health`.
    pub(crate) fn health(&self) -> crate::events::HubHealth {
        let mut h = crate::events::HubHealth {
            recent_ids_size: (self.recent_ids)(),
            server_rpc_in_flight: self.server_rpc_in_flight(),
            peer_count: self.peers.len(),
            status_count: self.statuses.len(),
            topic_count: self.topics.len(),
            total_subscribers: self.topics.values().map(|s| s.order.len()).sum(),
            pending_socket_count: self.pending.len(),
            ..Default::default()
        };
        for c in self.conns.values() {
            let b = c.route.queued_bytes();
            h.outbox_bytes += b;
            h.queued_sockets += usize::from(b > 0);
        }
        h
    }

    /// A copy of what the table counts, with its gauges read now (for a
    /// `/metrics` scrape).
    pub(crate) fn stats(&self) -> TableStats {
        TableStats {
            gauges: self.gauges(),
            cluster: self.cluster_stats(),
            ..self.stats.clone()
        }
    }

    fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            sockets: self.conns.len(),
            pending_sockets: self.pending.len(),
            peers: self.peers.len(),
            topics: self.topics.len(),
            server_rpc_in_flight: self.server_rpc_in_flight(),
            relayed_rpc_in_flight: self.rpc_timer.len(),
            ..Gauges::default()
        };
        for c in self.conns.values() {
            let b = c.route.queued_bytes();
            g.outbox_bytes += b;
            g.queued_sockets += usize::from(b > 0);
        }
        g
    }

    /// `state()`: peers in registration order, statuses by kind.
    pub(crate) fn state(&self) -> crate::events::HubState {
        let mut last_status: Vec<(String, StatusEntry)> = self
            .statuses
            .iter()
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect();
        last_status.sort_by(|a, b| a.0.cmp(&b.0));
        crate::events::HubState {
            peers: self.peer_infos(),
            last_status,
        }
    }

    fn server_rpc_in_flight(&self) -> usize {
        self.server_calls.len() + self.builtin_running
    }

    // ----- inputs ------------------------------------------------------------

    /// Which events are wanted; none are built while nobody listens, and no
    /// per-message event while nobody wants those.
    pub(crate) fn set_listening(&mut self, listening: Listening) {
        self.listening = listening;
    }

    /// Close every socket with this code (server shutdown); returns how
    /// many were told.
    pub(crate) fn close_all(&mut self, code: Option<u16>, reason: &str) -> usize {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for conn in &ids {
            self.controls.push_back((
                *conn,
                ConnCtl::Close {
                    code,
                    reason: reason.to_owned(),
                },
            ));
        }
        ids.len()
    }

    /// Drop every socket now.
    pub(crate) fn terminate_all(&mut self) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        self.controls
            .extend(ids.into_iter().map(|c| (c, ConnCtl::Terminate)));
    }

    /// `stop()`: pending sockets get 1001 `hub stopped`, registered ones a
    /// close without code; all routing state is cleared and sockets
    /// attached later are closed at once.
    pub(crate) fn stop(&mut self) {
        let mut ids: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .map(|(c, e)| (*c, e.kind.is_some()))
            .collect();
        ids.sort_unstable();
        for (conn, registered) in ids {
            let ctl = if registered {
                ConnCtl::Close {
                    code: None,
                    reason: String::new(),
                }
            } else {
                hub_stopped()
            };
            self.controls.push_back((conn, ctl));
        }
        self.pending.clear();
        self.order.clear();
        self.peers.clear();
        self.statuses.clear();
        self.topics.clear();
        self.subscriptions.clear();
        self.verdicts = verdicts::Verdicts::default();
        self.rpc_timer.clear();
        self.presence.stop();
        self.stopped = true;
    }

    // ----- outputs -----------------------------------------------------------

    /// The next instruction for a socket.
    pub(crate) fn poll_control(&mut self) -> Option<(ConnId, ConnCtl)> {
        self.controls.pop_front()
    }

    /// The next handler or hook to run.
    pub(crate) fn poll_task(&mut self) -> Option<Task> {
        self.tasks.pop_front()
    }

    /// The next hub event.
    pub(crate) fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// The next frame the table dropped (an error path: it is queued
    /// whether or not anyone listens to events).
    pub(crate) fn poll_protocol_error(&mut self) -> Option<ProtocolError> {
        self.errors.pop_front()
    }

    /// Frames relayed to nobody since the last call: a publish, or a
    /// direct message, that every recipient's outbox refused
    /// (`outbox-overflow`; none took it). Their sender's reader paces them
    /// as it does its own dropped frames (`pace.rs`): a flood of messages
    /// that go nowhere costs the hub its reads at full speed no longer.
    pub(crate) fn take_unheard(&mut self) -> usize {
        std::mem::take(&mut self.unheard)
    }

    // ----- helpers -----------------------------------------------------------

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    /// Queues an event built only if someone listens.
    fn emit(&mut self, build: impl FnOnce() -> HubEvent) {
        if self.listening.events {
            self.events.push_back(build());
        }
    }

    /// Queues a per-message event ([`HubEvent::is_traffic`]), built only if
    /// someone listens to those.
    fn emit_traffic(&mut self, build: impl FnOnce() -> HubEvent) {
        if self.listening.traffic {
            self.events.push_back(build());
        }
    }

    fn protocol_error(&mut self, error: ProtocolError) {
        tracing::debug!(reason = error.reason.code(), kind = ?error.kind, "frame dropped");
        *self.stats.dropped.entry(error.reason.code()).or_default() += 1;
        if self.errors.len() == MAX_QUEUED_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(error.clone());
        self.emit(|| HubEvent::ProtocolError {
            error,
            remote_addr: None,
        });
    }

    /// Pushes into a recipient's route and reports backpressure/overflow.
    fn push_item(&mut self, route: &Route, recipient: &Arc<str>, item: OutItem) -> Push {
        let (t, to) = (item.msg_type, item.to.clone());
        let result = route.push(item);
        match result {
            Push::Queued {
                backpressure: Some(bp),
            } => {
                self.stats.backpressure += 1;
                let max_buffered_bytes = self.config.max_buffered_bytes;
                let kind = recipient.to_string();
                self.emit(|| HubEvent::Backpressure {
                    kind,
                    msg_type: t.to_owned(),
                    to: to.to_string(),
                    buffered_amount: bp.buffered_amount,
                    max_buffered_bytes,
                    outbox_size: bp.outbox_size,
                });
            }
            Push::Overflow { outbox_bytes } => {
                self.stats.outbox_overflow += 1;
                tracing::debug!(kind = %recipient, msg_type = t, "outbox overflow");
                let max_outbox_bytes = route.max_bytes();
                let kind = recipient.to_string();
                self.emit(|| HubEvent::OutboxOverflow {
                    kind,
                    msg_type: t.to_owned(),
                    to: to.to_string(),
                    outbox_bytes,
                    max_outbox_bytes,
                });
            }
            _ => {}
        }
        result
    }

    /// Queues a hub-made message (`from` is the hub).
    fn push_from_hub(
        &mut self,
        route: &Route,
        id: Option<Arc<str>>,
        msg_type: &'static str,
        to: &Arc<str>,
        data: Arc<CanonicalData>,
    ) -> Push {
        let item = OutItem::new(id, msg_type, self.server.clone(), to.clone(), Some(data));
        self.push_item(route, to, item)
    }

    /// True when `conn` is the socket that holds `kind` now (frames from a
    /// replaced socket are dropped: protocol §4.1 step 12).
    fn is_current(&self, conn: ConnId, kind: &str) -> bool {
        self.peers.get(kind).map(|p| p.conn) == Some(conn)
    }
}

/// Drops queued for [`Routing::poll_protocol_error`] at most.
const MAX_QUEUED_ERRORS: usize = 64;

/// 1001 `hub stopped`.
fn hub_stopped() -> ConnCtl {
    ConnCtl::Close {
        code: Some(link_protocol::close::GOING_AWAY),
        reason: link_protocol::close::REASON_HUB_STOPPED.to_owned(),
    }
}

/// Milliseconds between two instants of the caller's clock.
fn elapsed_ms(since: Instant, now: Now) -> f64 {
    now.instant.saturating_duration_since(since).as_secs_f64() * 1000.0
}
