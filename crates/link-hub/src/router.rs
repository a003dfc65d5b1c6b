//! The router: one task that owns the routing table — peers (one socket per
//! kind), topics, last statuses, pending sockets — and decides where each
//! verified message goes (SPEC §5.2, §6.1, §7, §8, §9, §14).
//!
//! It never touches a socket: it pushes [`OutItem`]s into the recipients'
//! outboxes (per-socket locks) and sends [`ConnCtl`]s to sockets. Parsing,
//! verification and signing happen on the sockets' own tasks, so the
//! router's work per message is a few map lookups and queue pushes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use link_protocol::codes::{msg_type, rpc_error_text};
use link_protocol::messages::{self, Message as Msg};
use link_protocol::{
    CanonicalData, DropReason, Envelope, HUB_FEATURES, Hello, HelloAck, PeerInfo, ProtocolError,
    RpcErrorCode, RpcResponse, SERVER, StatusEntry, validate,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::config::PeerUpdates;
use crate::connection::ConnCtl;
use crate::events::{HubEvent, HubHealth, HubState, TimeoutReason};
use crate::outbox::{OutItem, Outbox, PrefixCell, Push};
use crate::server_rpc::{HEALTH, PEER_LIST, ServerRpcRequest, TOPIC_LIST};
use crate::shared::{ConnId, Shared, wall_ms};

/// Messages to the router.
pub(crate) enum RouterMsg {
    /// A socket was accepted (pending until `Register`).
    Attach {
        conn: ConnId,
        outbox: Arc<Outbox>,
        ctl: mpsc::UnboundedSender<ConnCtl>,
        remote: Option<SocketAddr>,
    },
    /// The socket's hello verified.
    Register { conn: ConnId, hello: Hello },
    /// A verified (and, with ACLs, allowed) message.
    Inbound {
        conn: ConnId,
        kind: Arc<str>,
        env: Envelope,
    },
    /// A server RPC handler finished.
    ServerRpcDone { done: ServerRpcDone },
    /// The socket is gone.
    Closed {
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    },
    /// `health()`.
    Health(oneshot::Sender<HubHealth>),
    /// `state()`.
    State(oneshot::Sender<HubState>),
    /// Close every socket with this code (server shutdown).
    CloseAll {
        code: Option<u16>,
        reason: String,
        done: oneshot::Sender<usize>,
    },
    /// Terminate every socket still attached.
    TerminateAll(oneshot::Sender<()>),
    /// `stop()`: pending sockets get 1001 `hub stopped`, others a close
    /// without code; all state is cleared.
    Stop(oneshot::Sender<()>),
}

pub(crate) struct ServerRpcDone {
    caller: Arc<str>,
    outbox: Arc<Outbox>,
    id: String,
    rpc_type: String,
    result: Result<Value, link_protocol::HandlerError>,
    started: Instant,
}

struct ConnEntry {
    outbox: Arc<Outbox>,
    ctl: mpsc::UnboundedSender<ConnCtl>,
    remote: Option<SocketAddr>,
    kind: Option<Arc<str>>,
}

struct Peer {
    conn: ConnId,
    kind: Arc<str>,
    hello: Hello,
    connected_at: u64,
    outbox: Arc<Outbox>,
    /// The membership version this peer last got a `peers.update` for.
    peers_seen: u64,
}

/// Membership changes handled before pending `peers.update`s go out even if
/// the mailbox never empties.
const PEERS_FLUSH_EVERY: usize = 256;

#[derive(Default)]
struct Subscribers {
    order: Vec<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl Subscribers {
    fn insert(&mut self, kind: &Arc<str>) -> bool {
        if self.set.insert(kind.clone()) {
            self.order.push(kind.clone());
            true
        } else {
            false
        }
    }

    fn remove(&mut self, kind: &str) -> bool {
        if self.set.remove(kind) {
            self.order.retain(|k| &**k != kind);
            true
        } else {
            false
        }
    }
}

pub(crate) struct Router {
    shared: Arc<Shared>,
    conns: HashMap<ConnId, ConnEntry>,
    pending: VecDeque<ConnId>,
    /// Registration order (a re-registered kind keeps its slot).
    order: Vec<Arc<str>>,
    peers: HashMap<Arc<str>, Peer>,
    statuses: HashMap<Arc<str>, StatusEntry>,
    topics: BTreeMap<String, Subscribers>,
    subscriptions: HashMap<Arc<str>, HashSet<String>>,
    server_rpc_in_flight: usize,
    server: Arc<str>,
    /// Bumped on every membership change.
    peers_version: u64,
    peers_cache: Option<(u64, Arc<CanonicalData>)>,
    /// Some peers have not seen the current version yet.
    peers_dirty: bool,
    since_dirty: usize,
    /// `stop()` ran: sockets attached from now on are closed at once.
    stopped: bool,
}

impl Router {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            conns: HashMap::new(),
            pending: VecDeque::new(),
            order: Vec::new(),
            peers: HashMap::new(),
            statuses: HashMap::new(),
            topics: BTreeMap::new(),
            subscriptions: HashMap::new(),
            server_rpc_in_flight: 0,
            server: SERVER.into(),
            peers_version: 0,
            peers_cache: None,
            peers_dirty: false,
            since_dirty: 0,
            stopped: false,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<RouterMsg>) {
        let sweep_every = self
            .shared
            .config
            .replay_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        self.handle(msg);
                        if self.peers_dirty {
                            self.since_dirty += 1;
                            if rx.is_empty() || self.since_dirty >= PEERS_FLUSH_EVERY {
                                self.flush_peers();
                            }
                        }
                    }
                    None => return,
                },
                _ = sweep.tick() => self.shared.replay.sweep(wall_ms() as f64),
            }
        }
    }

    fn handle(&mut self, msg: RouterMsg) {
        match msg {
            RouterMsg::Attach {
                conn,
                outbox,
                ctl,
                remote,
            } => self.attach(conn, outbox, ctl, remote),
            RouterMsg::Register { conn, hello } => self.register(conn, hello),
            RouterMsg::Inbound { conn, kind, env } => self.inbound(conn, kind, env),
            RouterMsg::ServerRpcDone { done } => self.server_rpc_done(done),
            RouterMsg::Closed { conn, code, reason } => self.closed(conn, code, reason),
            RouterMsg::Health(tx) => {
                let _ = tx.send(self.health());
            }
            RouterMsg::State(tx) => {
                let _ = tx.send(self.state());
            }
            RouterMsg::CloseAll { code, reason, done } => {
                for c in self.conns.values() {
                    let _ = c.ctl.send(ConnCtl::Close {
                        code,
                        reason: reason.clone(),
                    });
                }
                let _ = done.send(self.conns.len());
            }
            RouterMsg::TerminateAll(done) => {
                for c in self.conns.values() {
                    let _ = c.ctl.send(ConnCtl::Terminate);
                }
                let _ = done.send(());
            }
            RouterMsg::Stop(done) => {
                for c in self.conns.values() {
                    let (code, reason) = match c.kind {
                        None => (
                            Some(link_protocol::close::GOING_AWAY),
                            link_protocol::close::REASON_HUB_STOPPED,
                        ),
                        Some(_) => (None, ""),
                    };
                    let _ = c.ctl.send(ConnCtl::Close {
                        code,
                        reason: reason.to_owned(),
                    });
                }
                self.pending.clear();
                self.order.clear();
                self.peers.clear();
                self.statuses.clear();
                self.topics.clear();
                self.subscriptions.clear();
                self.stopped = true;
                let _ = done.send(());
            }
        }
    }

    // ----- membership ----------------------------------------------------

    fn attach(
        &mut self,
        conn: ConnId,
        outbox: Arc<Outbox>,
        ctl: mpsc::UnboundedSender<ConnCtl>,
        remote: Option<SocketAddr>,
    ) {
        if self.stopped {
            let _ = ctl.send(ConnCtl::Close {
                code: Some(link_protocol::close::GOING_AWAY),
                reason: link_protocol::close::REASON_HUB_STOPPED.to_owned(),
            });
            self.conns.insert(
                conn,
                ConnEntry {
                    outbox,
                    ctl,
                    remote,
                    kind: None,
                },
            );
            return;
        }
        self.conns.insert(
            conn,
            ConnEntry {
                outbox,
                ctl,
                remote,
                kind: None,
            },
        );
        self.pending.push_back(conn);
        while self.pending.len() > self.shared.config.max_pending_sockets {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            if let Some(c) = self.conns.get(&oldest) {
                let _ = c.ctl.send(ConnCtl::Evict);
                let remote_addr = c.remote;
                let hello_timeout_ms = self
                    .shared
                    .config
                    .hello_timeout
                    .map_or(0, |d| d.as_millis() as u64);
                self.shared.emit(|| HubEvent::PeerTimeout {
                    remote_addr,
                    hello_timeout_ms,
                    reason: TimeoutReason::PendingCap,
                });
            }
        }
    }

    fn register(&mut self, conn: ConnId, hello: Hello) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        self.pending.retain(|c| *c != conn);
        let kind: Arc<str> = hello.kind.as_str().into();
        entry.kind = Some(kind.clone());
        let outbox = entry.outbox.clone();
        let now = wall_ms();
        let mut replaced = false;
        if let Some(old) = self.peers.get(&kind) {
            replaced = true;
            let (prev_hello, new_hello) = (old.hello.clone(), hello.clone());
            let k = kind.to_string();
            self.shared.emit(|| HubEvent::PeerReplaced {
                kind: k,
                prev_hello,
                new_hello,
            });
            if let Some(c) = self.conns.get(&old.conn) {
                let _ = c.ctl.send(ConnCtl::Displace);
            }
        } else {
            self.order.push(kind.clone());
        }
        self.peers.insert(
            kind.clone(),
            Peer {
                conn,
                kind: kind.clone(),
                hello: hello.clone(),
                connected_at: now,
                outbox: outbox.clone(),
                peers_seen: 0,
            },
        );
        let ack = HelloAck::accepted(now, &kind, &HUB_FEATURES);
        self.push(
            &outbox,
            None,
            msg_type::HELLO_ACK,
            &self.server.clone(),
            &kind,
            Some(Arc::new(CanonicalData::new(&ack.to_value()))),
        );
        let k = kind.to_string();
        self.shared.emit(|| HubEvent::PeerConnect {
            kind: k,
            hello,
            connected_at: now,
            replaced,
        });
        // The newcomer gets the list now (hello.ack, peers.update,
        // status.snapshot, in the reference's order); the others when the
        // mailbox drains, so a burst of joins costs one update each.
        if self.broadcasts_peers() {
            self.peers_version += 1;
            let data = self.peers_data();
            self.push(
                &outbox,
                None,
                msg_type::PEERS_UPDATE,
                &self.server.clone(),
                &kind,
                Some(data),
            );
            if let Some(p) = self.peers.get_mut(&kind) {
                p.peers_seen = self.peers_version;
            }
            self.peers_dirty = true;
        }
        let snapshot =
            messages::status_snapshot_value(self.statuses.iter().map(|(k, e)| (&**k, e)));
        self.push(
            &outbox,
            None,
            msg_type::STATUS_SNAPSHOT,
            &self.server.clone(),
            &kind,
            Some(Arc::new(CanonicalData::new(&snapshot))),
        );
    }

    fn closed(&mut self, conn: ConnId, code: Option<u16>, reason: String) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        self.pending.retain(|c| *c != conn);
        let Some(kind) = entry.kind else { return };
        if self.peers.get(&kind).map(|p| p.conn) != Some(conn) {
            return; // a displaced socket: the kind lives on
        }
        let Some(peer) = self.peers.remove(&kind) else {
            return;
        };
        self.order.retain(|k| *k != kind);
        self.statuses.remove(&kind);
        if let Some(topics) = self.subscriptions.remove(&kind) {
            for topic in topics {
                if let Some(subs) = self.topics.get_mut(&topic) {
                    subs.remove(&kind);
                    if subs.order.is_empty() {
                        self.topics.remove(&topic);
                    }
                }
            }
        }
        if self.broadcasts_peers() {
            self.peers_version += 1;
            self.peers_dirty = true;
        }
        let (k, hello, connected_at) = (kind.to_string(), peer.hello, peer.connected_at);
        self.shared.emit(|| HubEvent::PeerDisconnect {
            kind: k,
            hello,
            connected_at,
            code,
            reason,
        });
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        self.order
            .iter()
            .filter_map(|k| self.peers.get(k))
            .map(Self::peer_info)
            .collect()
    }

    fn peer_info(p: &Peer) -> PeerInfo {
        PeerInfo {
            kind: p.kind.to_string(),
            hello: Some(p.hello.clone()),
            connected_at: Some(p.connected_at as f64),
            connected: true,
        }
    }

    fn broadcasts_peers(&self) -> bool {
        self.shared.config.peer_updates == PeerUpdates::Broadcast
    }

    /// `link.peer.list`: every peer, or the one named by `{kind}`.
    fn peer_list(&self, rpc_data: Option<&Value>) -> Value {
        let peers = match rpc_data.and_then(|d| d.get("kind")).and_then(Value::as_str) {
            Some(kind) => self
                .peers
                .get(kind)
                .map(Self::peer_info)
                .into_iter()
                .collect(),
            None => self.peer_infos(),
        };
        messages::peers_update_value(&peers)
    }

    /// The current `peers.update` payload, canonicalised once per version.
    fn peers_data(&mut self) -> Arc<CanonicalData> {
        match &self.peers_cache {
            Some((v, data)) if *v == self.peers_version => data.clone(),
            _ => {
                let data = Arc::new(CanonicalData::new(&messages::peers_update_value(
                    &self.peer_infos(),
                )));
                self.peers_cache = Some((self.peers_version, data.clone()));
                data
            }
        }
    }

    /// Sends the current peer list to every peer that has not seen it.
    fn flush_peers(&mut self) {
        self.peers_dirty = false;
        self.since_dirty = 0;
        let data = self.peers_data();
        let (server, version) = (self.server.clone(), self.peers_version);
        for kind in self.order.clone() {
            let Some(p) = self.peers.get_mut(&kind) else {
                continue;
            };
            if p.peers_seen >= version {
                continue;
            }
            p.peers_seen = version;
            let outbox = p.outbox.clone();
            self.push(
                &outbox,
                None,
                msg_type::PEERS_UPDATE,
                &server,
                &kind,
                Some(data.clone()),
            );
        }
    }

    // ----- routing -------------------------------------------------------

    fn inbound(&mut self, conn: ConnId, kind: Arc<str>, env: Envelope) {
        // SPEC §4.1 step 12: frames from a replaced socket are dropped.
        if self.peers.get(&kind).map(|p| p.conn) != Some(conn) {
            tracing::debug!(%kind, "dropping a frame from a stale socket");
            return;
        }
        match Msg::parse(&env) {
            Msg::StatusPush(status) => self.status_update(&kind, status),
            Msg::RpcRequest { rpc_type, rpc_data } => {
                self.rpc_request(&kind, &env, rpc_type, rpc_data)
            }
            Msg::Malformed(msg_type::RPC_REQUEST) => {
                let resp =
                    RpcResponse::error(RpcErrorCode::BadRequest, "rpc.request missing \"rpcType\"");
                self.reply(&kind, env.id(), &resp);
            }
            Msg::RpcResponse(resp) => self.rpc_response(&kind, &env, resp.is_ok()),
            Msg::RpcCancel { id } => self.rpc_cancel(&kind, &env, id),
            Msg::Subscribe { topic } => self.subscribe(&kind, topic),
            Msg::Unsubscribe { topic } => self.unsubscribe(&kind, topic),
            Msg::TopicMessage { topic } => self.publish(&kind, &env, topic),
            Msg::Direct { direct_type } => self.direct(&kind, &env, direct_type),
            _ => {} // unknown types and hub-only types are ignored
        }
    }

    fn status_update(&mut self, kind: &Arc<str>, status: Option<Value>) {
        let at = wall_ms();
        let data = Arc::new(CanonicalData::new(&messages::status_fanout_value(
            kind,
            status.as_ref(),
            at,
        )));
        self.statuses.insert(
            kind.clone(),
            StatusEntry {
                status,
                at: at as f64,
            },
        );
        let server = self.server.clone();
        let prefix = Arc::new(PrefixCell::new());
        for other in self.order.clone() {
            if other == *kind {
                continue;
            }
            if let Some(p) = self.peers.get(&other) {
                let mut item = OutItem::new(
                    None,
                    msg_type::STATUS_UPDATE,
                    server.clone(),
                    other.clone(),
                    Some(data.clone()),
                );
                item.origin = Some(kind.clone());
                item.prefix = Some(prefix.clone());
                let outbox = p.outbox.clone();
                self.push_item(&outbox, &other, item);
            }
        }
    }

    fn rpc_request(
        &mut self,
        kind: &Arc<str>,
        env: &Envelope,
        rpc_type: String,
        rpc_data: Option<Value>,
    ) {
        let to = env.to();
        match to.as_deref() {
            Some(SERVER) => self.server_rpc(kind, env, rpc_type, rpc_data),
            None => {
                let resp = RpcResponse::error(RpcErrorCode::BadRequest, rpc_error_text::MISSING_TO);
                self.reply(kind, env.id(), &resp);
            }
            Some(target) => {
                let Some(peer) = self.peers.get(target) else {
                    let resp = RpcResponse::error(
                        RpcErrorCode::NoTarget,
                        format!("{}{target}", rpc_error_text::NO_TARGET),
                    );
                    return self.reply(kind, env.id(), &resp);
                };
                let (outbox, target_kind) = (peer.outbox.clone(), peer.kind.clone());
                let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
                    CanonicalData::new(&messages::rpc_request_value(&rpc_type, rpc_data))
                }));
                let item = OutItem::new(
                    Some(env.id().into()),
                    msg_type::RPC_REQUEST,
                    kind.clone(),
                    target_kind.clone(),
                    Some(data),
                );
                if self.push_item(&outbox, &target_kind, item).delivered() {
                    let (id, from, to) = (
                        env.id().to_owned(),
                        kind.to_string(),
                        target_kind.to_string(),
                    );
                    self.shared.emit(|| HubEvent::RpcForwarded {
                        id,
                        from,
                        to,
                        rpc_type,
                    });
                } else {
                    let resp = RpcResponse::error(
                        RpcErrorCode::TargetUnavailable,
                        format!("{}{target}", rpc_error_text::TARGET_UNAVAILABLE),
                    );
                    self.reply(kind, env.id(), &resp);
                }
            }
        }
    }

    fn rpc_response(&mut self, kind: &Arc<str>, env: &Envelope, ok: bool) {
        let Some(to) = env.to() else { return };
        let Some(peer) = self.peers.get(to.as_ref()) else {
            return;
        };
        let (outbox, target) = (peer.outbox.clone(), peer.kind.clone());
        let data = env.canonical_data().map(Arc::new);
        let item = OutItem::new(
            Some(env.id().into()),
            msg_type::RPC_RESPONSE,
            kind.clone(),
            target.clone(),
            data,
        );
        if self.push_item(&outbox, &target, item).delivered() {
            let (id, from, to) = (env.id().to_owned(), kind.to_string(), target.to_string());
            self.shared
                .emit(|| HubEvent::RpcResponseForwarded { id, from, to, ok });
        }
    }

    fn rpc_cancel(&mut self, kind: &Arc<str>, env: &Envelope, id: String) {
        let Some(to) = env.to().map(|t| t.into_owned()) else {
            return;
        };
        let (mut found, mut forwarded) = (false, false);
        if let Some(peer) = self.peers.get(to.as_str()).filter(|_| to != SERVER) {
            {
                let (outbox, target) = (peer.outbox.clone(), peer.kind.clone());
                found = outbox.cancel_request(&id, kind);
                if !found {
                    let data = Arc::new(CanonicalData::new(&messages::rpc_cancel_value(&id)));
                    let item = OutItem::new(
                        None,
                        msg_type::RPC_CANCEL,
                        kind.clone(),
                        target.clone(),
                        Some(data),
                    );
                    forwarded = self.push_item(&outbox, &target, item).delivered();
                }
            }
        }
        let from = kind.to_string();
        self.shared.emit(|| HubEvent::RpcCancelled {
            id,
            from,
            to,
            found,
            forwarded,
        });
    }

    fn subscribe(&mut self, kind: &Arc<str>, topic: Option<String>) {
        let Some(topic) = self.valid_topic(kind, topic, msg_type::TOPIC_SUBSCRIBE) else {
            return;
        };
        if self.topics.entry(topic.clone()).or_default().insert(kind) {
            self.subscriptions
                .entry(kind.clone())
                .or_default()
                .insert(topic.clone());
            let k = kind.to_string();
            self.shared
                .emit(|| HubEvent::TopicSubscribe { kind: k, topic });
        }
    }

    fn unsubscribe(&mut self, kind: &Arc<str>, topic: Option<String>) {
        let topics: Vec<String> = match topic {
            None => self
                .subscriptions
                .remove(kind)
                .map(|t| t.into_iter().collect())
                .unwrap_or_default(),
            Some(t) => {
                let Some(t) = self.valid_topic(kind, Some(t), msg_type::TOPIC_UNSUBSCRIBE) else {
                    return;
                };
                if let Some(set) = self.subscriptions.get_mut(kind) {
                    set.remove(&t);
                }
                vec![t]
            }
        };
        for topic in topics {
            let removed = match self.topics.get_mut(&topic) {
                Some(subs) => {
                    let removed = subs.remove(kind);
                    if subs.order.is_empty() {
                        self.topics.remove(&topic);
                    }
                    removed
                }
                None => false,
            };
            if removed {
                let k = kind.to_string();
                self.shared
                    .emit(|| HubEvent::TopicUnsubscribe { kind: k, topic });
            }
        }
    }

    fn publish(&mut self, kind: &Arc<str>, env: &Envelope, topic: Option<String>) {
        let payload = || messages::topic_payload(env).cloned();
        let Some(topic) = self.valid_topic(kind, topic, msg_type::TOPIC_MESSAGE) else {
            return;
        };
        let subscribers: Vec<Arc<str>> = self
            .topics
            .get(&topic)
            .map(|s| s.order.iter().filter(|k| *k != kind).cloned().collect())
            .unwrap_or_default();
        let mut delivered = 0;
        if !subscribers.is_empty() {
            let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
                CanonicalData::new(&messages::topic_message_value(&topic, payload()))
            }));
            let prefix = Arc::new(PrefixCell::new());
            for sub in &subscribers {
                let Some(peer) = self.peers.get(sub) else {
                    continue;
                };
                let outbox = peer.outbox.clone();
                let mut item = OutItem::new(
                    None,
                    msg_type::TOPIC_MESSAGE,
                    kind.clone(),
                    sub.clone(),
                    Some(data.clone()),
                );
                item.prefix = Some(prefix.clone());
                if self.push_item(&outbox, sub, item).delivered() {
                    delivered += 1;
                }
            }
        }
        let (from, subscriber_count) = (kind.to_string(), subscribers.len());
        self.shared.emit(|| HubEvent::TopicPublish {
            from,
            topic,
            payload: payload(),
            subscriber_count,
            delivered,
        });
    }

    fn direct(&mut self, kind: &Arc<str>, env: &Envelope, direct_type: String) {
        let direct_data = || messages::direct_data(env).cloned();
        let Some(to) = env.to() else { return };
        let Some(peer) = self.peers.get(to.as_ref()) else {
            return;
        }; // offline: silent drop
        let (outbox, target) = (peer.outbox.clone(), peer.kind.clone());
        let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
            CanonicalData::new(&messages::direct_value(&direct_type, direct_data()))
        }));
        let item = OutItem::new(
            None,
            msg_type::DIRECT,
            kind.clone(),
            target.clone(),
            Some(data),
        );
        if self.push_item(&outbox, &target, item).delivered() {
            let (from, to) = (kind.to_string(), target.to_string());
            self.shared.emit(|| HubEvent::Direct {
                from,
                to,
                msg_type: direct_type,
                data: direct_data(),
            });
        }
    }

    fn valid_topic(
        &self,
        kind: &Arc<str>,
        topic: Option<String>,
        msg_type: &str,
    ) -> Option<String> {
        match topic {
            Some(t) if validate::is_valid_topic(&t) => Some(t),
            _ => {
                let e = ProtocolError::new(DropReason::InvalidTopic)
                    .with_kind(&**kind)
                    .with_type(Some(msg_type));
                self.shared.protocol_error(e, None);
                None
            }
        }
    }

    // ----- server RPCs ---------------------------------------------------

    fn server_rpc(
        &mut self,
        kind: &Arc<str>,
        env: &Envelope,
        rpc_type: String,
        rpc_data: Option<Value>,
    ) {
        let user = self.shared.config.handlers.get(&rpc_type).cloned();
        let builtin = matches!(rpc_type.as_str(), TOPIC_LIST | HEALTH | PEER_LIST);
        if user.is_none() && !builtin {
            let resp = RpcResponse::error(
                RpcErrorCode::UnknownType,
                format!("{}{rpc_type}", rpc_error_text::UNKNOWN_SERVER_TYPE),
            );
            return self.reply(kind, env.id(), &resp);
        }
        let cap = self.shared.config.max_concurrent_rpc;
        if cap > 0 && self.server_rpc_in_flight >= cap {
            let resp =
                RpcResponse::error(RpcErrorCode::Overloaded, rpc_error_text::SERVER_OVERLOADED);
            return self.reply(kind, env.id(), &resp);
        }
        let Some(peer) = self.peers.get(kind) else {
            return;
        };
        let outbox = peer.outbox.clone();
        let started = Instant::now();
        match user {
            Some(handler) => {
                self.server_rpc_in_flight += 1;
                let req = ServerRpcRequest {
                    id: env.id().to_owned(),
                    from: kind.to_string(),
                    rpc_type: rpc_type.clone(),
                    rpc_data,
                    envelope: env.clone(),
                };
                let (router, caller, id) = (
                    self.shared.router.clone(),
                    kind.clone(),
                    env.id().to_owned(),
                );
                tokio::spawn(async move {
                    use futures_util::FutureExt;
                    let result = match std::panic::AssertUnwindSafe(handler.call(req))
                        .catch_unwind()
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(link_protocol::HandlerError::internal("handler panicked")),
                    };
                    let done = ServerRpcDone {
                        caller,
                        outbox,
                        id,
                        rpc_type,
                        result,
                        started,
                    };
                    let _ = router.send(RouterMsg::ServerRpcDone { done }).await;
                });
            }
            None => {
                // Built-ins run inline; like the reference they count
                // themselves as in flight while running.
                self.server_rpc_in_flight += 1;
                let result = match rpc_type.as_str() {
                    HEALTH => Ok(self.health().to_value()),
                    PEER_LIST => Ok(self.peer_list(rpc_data.as_ref())),
                    _ => Ok(self.topic_list(rpc_data.as_ref())),
                };
                let done = ServerRpcDone {
                    caller: kind.clone(),
                    outbox,
                    id: env.id().to_owned(),
                    rpc_type,
                    result,
                    started,
                };
                self.server_rpc_done(done);
            }
        }
    }

    fn server_rpc_done(&mut self, done: ServerRpcDone) {
        self.server_rpc_in_flight = self.server_rpc_in_flight.saturating_sub(1);
        let expose_all = self.shared.config.expose_rpc_errors;
        let (resp, error) = match &done.result {
            Ok(v) => (
                RpcResponse::Ok {
                    result: Some(v.clone()),
                },
                None,
            ),
            Err(e) => (e.to_response(expose_all), Some(e.text().to_owned())),
        };
        let ok = resp.is_ok();
        let data = Arc::new(CanonicalData::new(&resp.to_value()));
        let item = OutItem::new(
            Some(done.id.as_str().into()),
            msg_type::RPC_RESPONSE,
            self.server.clone(),
            done.caller.clone(),
            Some(data),
        );
        self.push_item(&done.outbox, &done.caller, item);
        let duration_ms = done.started.elapsed().as_secs_f64() * 1000.0;
        let (id, from, rpc_type) = (done.id, done.caller.to_string(), done.rpc_type);
        self.shared.emit(|| HubEvent::RpcServer {
            id,
            from,
            rpc_type,
            ok,
            error,
            duration_ms,
        });
    }

    fn topic_list(&self, rpc_data: Option<&Value>) -> Value {
        let subscribers_of = |topic: &str| -> Vec<String> {
            self.topics
                .get(topic)
                .map(|s| s.order.iter().map(|k| k.to_string()).collect())
                .unwrap_or_default()
        };
        match rpc_data
            .and_then(|d| d.get("topic"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            Some(topic) => json!({"topic": topic, "subscribers": subscribers_of(topic)}),
            None => {
                let topics: Vec<Value> = self
                    .topics
                    .keys()
                    .map(|t| json!({"topic": t, "subscribers": subscribers_of(t)}))
                    .collect();
                json!({ "topics": topics })
            }
        }
    }

    // ----- snapshots -----------------------------------------------------

    fn health(&self) -> HubHealth {
        let mut h = HubHealth {
            server_rpc_in_flight: self.server_rpc_in_flight,
            peer_count: self.peers.len(),
            status_count: self.statuses.len(),
            topic_count: self.topics.len(),
            total_subscribers: self.topics.values().map(|s| s.order.len()).sum(),
            pending_socket_count: self.pending.len(),
            recent_ids_size: self.shared.replay.len(),
            ..HubHealth::default()
        };
        for c in self.conns.values() {
            let b = c.outbox.queued_bytes();
            h.outbox_bytes += b;
            h.queued_sockets += usize::from(b > 0);
        }
        h
    }

    fn state(&self) -> HubState {
        let mut last_status: Vec<(String, StatusEntry)> = self
            .statuses
            .iter()
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect();
        last_status.sort_by(|a, b| a.0.cmp(&b.0));
        HubState {
            peers: self.peer_infos(),
            last_status,
        }
    }

    // ----- output helpers --------------------------------------------------

    /// Answers `kind`'s request `id` from the hub.
    fn reply(&mut self, kind: &Arc<str>, id: &str, resp: &RpcResponse) {
        let Some(peer) = self.peers.get(kind) else {
            return;
        };
        let outbox = peer.outbox.clone();
        let data = Arc::new(CanonicalData::new(&resp.to_value()));
        let item = OutItem::new(
            Some(id.into()),
            msg_type::RPC_RESPONSE,
            self.server.clone(),
            kind.clone(),
            Some(data),
        );
        self.push_item(&outbox, kind, item);
    }

    fn push(
        &mut self,
        outbox: &Arc<Outbox>,
        id: Option<Arc<str>>,
        msg_type: &'static str,
        from: &Arc<str>,
        to: &Arc<str>,
        data: Option<Arc<CanonicalData>>,
    ) -> Push {
        let item = OutItem::new(id, msg_type, from.clone(), to.clone(), data);
        self.push_item(outbox, to, item)
    }

    /// Pushes into a recipient's outbox and reports backpressure/overflow.
    fn push_item(&self, outbox: &Arc<Outbox>, recipient: &Arc<str>, item: OutItem) -> Push {
        let (t, to) = (item.msg_type, item.to.clone());
        let result = outbox.push(item);
        match result {
            Push::Queued {
                backpressure: Some(bp),
            } => {
                let max_buffered_bytes = self.shared.config.max_buffered_bytes;
                let kind = recipient.to_string();
                self.shared.emit(|| HubEvent::Backpressure {
                    kind,
                    msg_type: t.to_owned(),
                    to: to.to_string(),
                    buffered_amount: bp.buffered_amount,
                    max_buffered_bytes,
                    outbox_size: bp.outbox_size,
                });
            }
            Push::Overflow { outbox_bytes } => {
                tracing::debug!(kind = %recipient, msg_type = t, "outbox overflow");
                let max_outbox_bytes = outbox.max_bytes();
                let kind = recipient.to_string();
                self.shared.emit(|| HubEvent::OutboxOverflow {
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
}
