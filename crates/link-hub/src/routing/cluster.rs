//! The table's view of the cluster (sans-I/O): which other hubs are alive,
//! which kinds they hold (from the lease bucket), the lease each local peer
//! holds, and what a message from another hub does here. Decisions only:
//! the driver (`cluster/driver.rs`) talks to NATS.
//!
//! - A kind is routed to the local socket that holds it, else to the hub
//!   whose lease names it, while that hub is alive.
//! - One connection per kind per cluster: a local peer whose kind's lease
//!   moves to another hub at a later revision is displaced (close 4000),
//!   exactly as a second hello on this hub would displace it; a claim that
//!   lost displaces its peer too. Claims are answered in the driver.
//! - A hub that says bye or misses heartbeats takes its peers with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use link_protocol::codes::rpc_error_text;
use link_protocol::conn::Now;
use link_protocol::{
    CanonicalData, Hello, RpcErrorCode, RpcResponse, messages, msg_type, presence,
};

use super::peer_deltas::Change;
use super::{ConnCtl, ConnId, Route, Routing};
use crate::cluster::link::{ClusterIn, ClusterLink, ClusterOut, Outbound, RemoteHub};
use crate::events::HubEvent;
use crate::outbox::{OutItem, PrefixCell};

/// A kind held on another hub.
#[derive(Clone, Debug)]
pub(crate) struct RemotePeer {
    pub(crate) hub: Arc<str>,
    pub(crate) rev: u64,
    pub(crate) hello: Hello,
    pub(crate) connected_at: u64,
    /// Its `peers.update` entry, canonical, made once.
    pub(crate) entry: Arc<CanonicalData>,
    /// Its compact entry in `peers.delta` snapshots and deltas.
    pub(crate) compact: Arc<CanonicalData>,
}

impl RemotePeer {
    fn info(&self, kind: &str) -> messages::PeerInfo {
        messages::PeerInfo {
            kind: kind.to_owned(),
            hello: Some(self.hello.clone()),
            connected_at: Some(self.connected_at as f64),
            connected: true,
        }
    }
}

/// Where a local peer's lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// Claimed; the driver has not answered yet.
    Pending,
    /// Held since this revision.
    Held(u64),
}

/// Another hub, alive.
struct HubEntry {
    route: Route,
    peers: u64,
}

/// The cluster part of the table (absent on a lone hub).
pub(crate) struct ClusterView {
    link: Arc<ClusterLink>,
    hubs: HashMap<Arc<str>, HubEntry>,
    remote: HashMap<Arc<str>, RemotePeer>,
    leases: HashMap<Arc<str>, Lease>,
    /// RPCs from local callers waiting on another hub, by (caller, id):
    /// answered `RPC_TARGET_UNAVAILABLE` here if that hub goes first.
    calls: HashMap<(Arc<str>, Arc<str>), Arc<str>>,
    /// The hub each remote sender's last message came from (a fallback
    /// while its lease has not reached this hub; capped).
    senders: HashMap<Arc<str>, Arc<str>>,
    /// Kinds another hub handed back, with the revision it held: a lease
    /// entry at or before it is stale, however late the bucket's watch
    /// delivers it. Pruned by age ([`TOMBSTONE_TTL`]) and count.
    released: Tombstones,
    out: VecDeque<ClusterOut>,
}

/// How long a handed-back revision is remembered: far longer than a watch
/// lags behind the heartbeat subject (a watch restarted after NATS comes
/// back replays the bucket's latest entries, deletes included).
const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// Handed-back revisions remembered at most (the oldest are forgotten).
const MAX_TOMBSTONES: usize = 65_536;

/// The revisions other hubs handed back, by kind, oldest first in `order`.
#[derive(Default)]
struct Tombstones {
    rev: HashMap<Arc<str>, u64>,
    order: VecDeque<(Instant, Arc<str>, u64)>,
}

impl Tombstones {
    fn bury(&mut self, now: Instant, kind: &Arc<str>, rev: u64) {
        while let Some((at, old, r)) = self.order.front() {
            if now.duration_since(*at) < TOMBSTONE_TTL && self.order.len() < MAX_TOMBSTONES {
                break;
            }
            if self.rev.get(old) == Some(r) {
                self.rev.remove(old);
            }
            self.order.pop_front();
        }
        let newest = self.rev.entry(kind.clone()).or_insert(rev);
        *newest = (*newest).max(rev);
        self.order.push_back((now, kind.clone(), *newest));
    }

    /// True when `kind`'s lease at `rev` was handed back already.
    fn stale(&mut self, kind: &Arc<str>, rev: u64) -> bool {
        match self.rev.get(kind) {
            Some(&handed_back) if rev <= handed_back => true,
            Some(_) => {
                // A newer lease: the stone has done its work.
                self.rev.remove(kind);
                false
            }
            None => false,
        }
    }
}

/// Remote senders remembered at most (past it the memory starts again).
const MAX_SENDERS: usize = 65_536;

/// Cross-hub RPCs tracked at most; past it a call is not tracked (its
/// caller's timeout still ends it).
pub(crate) const MAX_TRACKED_CALLS: usize = 65_536;

impl ClusterView {
    pub(crate) fn new(link: Arc<ClusterLink>) -> Self {
        Self {
            link,
            hubs: HashMap::new(),
            remote: HashMap::new(),
            leases: HashMap::new(),
            calls: HashMap::new(),
            senders: HashMap::new(),
            released: Tombstones::default(),
            out: VecDeque::new(),
        }
    }

    /// The hub holding `kind`, when it is another one and alive.
    fn remote_route(&self, kind: &str) -> Option<(Route, Arc<str>)> {
        if let Some((k, peer)) = self.remote.get_key_value(kind) {
            let hub = self.hubs.get(&peer.hub)?;
            return Some((hub.route.clone(), k.clone()));
        }
        // Not in the directory yet (its lease is still on its way): the hub
        // its messages came from, so an answer to a peer that called at
        // once after its hello is not lost.
        let (k, hub) = self.senders.get_key_value(kind)?;
        Some((self.hubs.get(hub)?.route.clone(), k.clone()))
    }

    /// Remote peers whose hub is alive, oldest first.
    pub(crate) fn remote_peers(&self) -> Vec<(&Arc<str>, &RemotePeer)> {
        let mut peers: Vec<_> = self
            .remote
            .iter()
            .filter(|(_, p)| self.hubs.contains_key(&p.hub))
            .collect();
        peers.sort_by(|a, b| (a.1.connected_at, a.0).cmp(&(b.1.connected_at, b.0)));
        peers
    }

    /// The kinds `hub`'s leases name, with their compact entries.
    fn kinds_on(&self, hub: &str) -> Vec<(Arc<str>, Arc<CanonicalData>)> {
        let mut kinds: Vec<(Arc<str>, Arc<CanonicalData>)> = self
            .remote
            .iter()
            .filter(|(_, p)| &*p.hub == hub)
            .map(|(k, p)| (k.clone(), p.compact.clone()))
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        kinds
    }

    /// Other hubs alive and their peer counts, by id.
    pub(crate) fn hubs(&self) -> Vec<(String, u64)> {
        let mut hubs: Vec<_> = self
            .hubs
            .iter()
            .map(|(h, e)| (h.to_string(), e.peers))
            .collect();
        hubs.sort();
        hubs
    }
}

impl Routing {
    /// Joins a cluster: from now on kinds unknown here are looked up on the
    /// other hubs, and local membership goes out as [`ClusterOut`].
    pub(crate) fn join_cluster(&mut self, link: Arc<ClusterLink>) {
        self.cluster = Some(ClusterView::new(link));
    }

    /// The next membership or interest change for the driver.
    pub(crate) fn poll_cluster(&mut self) -> Option<ClusterOut> {
        self.cluster.as_mut()?.out.pop_front()
    }

    /// Where `kind`'s messages go: its socket here, else its hub.
    pub(super) fn target(&self, kind: &str) -> Option<(Route, Arc<str>)> {
        if let Some(p) = self.peers.get(kind) {
            return Some((p.route.clone(), p.kind.clone()));
        }
        self.cluster.as_ref()?.remote_route(kind)
    }

    // ----- local changes, told to the cluster ------------------------------

    pub(super) fn cluster_registered(
        &mut self,
        conn: ConnId,
        kind: &Arc<str>,
        hello: &Hello,
        at: u64,
        hello_id: Option<(Arc<str>, f64)>,
    ) {
        if let Some(c) = &mut self.cluster {
            c.link
                .peers
                .store(self.peers.len() as u64, Ordering::Relaxed);
            c.leases.insert(kind.clone(), Lease::Pending);
            c.out.push_back(ClusterOut::Claim {
                kind: kind.clone(),
                conn,
                hello: hello.clone(),
                connected_at: at,
                hello_id,
            });
        }
    }

    pub(super) fn cluster_left(&mut self, kind: &Arc<str>) {
        if let Some(c) = &mut self.cluster {
            c.link
                .peers
                .store(self.peers.len() as u64, Ordering::Relaxed);
            if let Some(lease) = c.leases.remove(kind) {
                c.out.push_back(ClusterOut::Release { kind: kind.clone() });
                // Said on NATS too: the bucket's delete carries no MAC.
                let rev = match lease {
                    Lease::Held(rev) => Some(rev),
                    Lease::Pending => None,
                };
                c.link.send(Outbound::Release {
                    kind: kind.clone(),
                    rev,
                });
            }
        }
    }

    pub(super) fn cluster_interest(&mut self, topic: &str, on: bool) {
        if let Some(c) = &mut self.cluster {
            c.out.push_back(ClusterOut::Interest {
                topic: topic.to_owned(),
                on,
            });
        }
    }

    /// A local peer's topic message, published at `at` (hub wall ms), for
    /// the other hubs.
    pub(super) fn cluster_publish(
        &mut self,
        topic: &str,
        from: &Arc<str>,
        data: Arc<CanonicalData>,
        at: u64,
    ) {
        if let Some(c) = &self.cluster {
            let pushed = c.link.send(Outbound::Publish {
                topic: topic.to_owned(),
                from: from.clone(),
                data,
                at,
            });
            if !pushed.delivered() {
                self.stats.cluster_refused += 1;
            }
        }
    }

    pub(super) fn cluster_status(
        &mut self,
        kind: &Arc<str>,
        at: u64,
        data: Option<Arc<CanonicalData>>,
    ) {
        if let Some(c) = &self.cluster {
            let pushed = c.link.send(Outbound::Status {
                kind: kind.clone(),
                at,
                data,
            });
            if !pushed.delivered() {
                self.stats.cluster_refused += 1;
            }
        }
    }

    /// A local caller's request went to another hub.
    pub(super) fn cluster_call_started(&mut self, caller: &Arc<str>, id: Arc<str>, route: &Route) {
        if let (Some(c), Route::Remote(hub)) = (&mut self.cluster, route)
            && c.calls.len() < MAX_TRACKED_CALLS
        {
            c.calls.insert((caller.clone(), id), hub.hub.clone());
        }
    }

    /// A local caller's request was answered or cancelled.
    pub(super) fn cluster_call_done(&mut self, caller: &str, id: &str) {
        if let Some(c) = &mut self.cluster
            && !c.calls.is_empty()
        {
            c.calls.remove(&(Arc::from(caller), Arc::from(id)));
        }
    }

    /// Every call waiting on `hub` ends with `RPC_TARGET_UNAVAILABLE`.
    fn fail_calls_to(&mut self, hub: &str) {
        let Some(c) = &mut self.cluster else { return };
        let mut failed: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        c.calls.retain(|call, h| {
            let gone = &**h == hub;
            if gone {
                failed.push(call.clone());
            }
            !gone
        });
        failed.sort();
        for (caller, id) in failed {
            let resp = RpcResponse::error(
                RpcErrorCode::TargetUnavailable,
                "the target's hub left the cluster",
            );
            self.reply(&caller, &id, &resp);
        }
    }

    // ----- what the driver learned -------------------------------------------

    /// One input from the cluster driver.
    pub(crate) fn handle_cluster(&mut self, now: Now, input: ClusterIn) {
        if self.cluster.is_none() || self.stopped {
            return;
        }
        match input {
            ClusterIn::Link(up) => {
                if !up {
                    // Every other hub is out of reach: their peers leave
                    // until NATS is back and their heartbeats say so.
                    let hubs: Vec<Arc<str>> = self.cluster_hubs();
                    for hub in hubs {
                        self.hub_gone(now, &hub);
                    }
                }
            }
            ClusterIn::HubAlive { hub, peers } => self.hub_alive(now, hub, peers),
            ClusterIn::HubGone { hub } => self.hub_gone(now, &hub),
            ClusterIn::Lease {
                kind,
                hub,
                rev,
                hello,
                connected_at,
                hello_id: _, // the router recorded it in the replay guard
            } => self.lease(now, kind, hub, rev, hello, connected_at),
            ClusterIn::LeaseGone { kind, rev } => self.lease_gone(now, &kind, Some(rev), None),
            ClusterIn::Released { hub, kind, rev } => self.released(now, &kind, &hub, rev),
            ClusterIn::Claimed { kind, conn, rev } => self.claimed(&kind, conn, rev),
            ClusterIn::Deliver { hub, item } => self.remote_deliver(&hub, item),
            ClusterIn::Publish {
                topic,
                from,
                data,
                at,
            } => self.remote_publish(&topic, &from, data, at),
            ClusterIn::Status { kind, at, status } => self.remote_status(&kind, at, status),
        }
    }

    fn cluster_hubs(&self) -> Vec<Arc<str>> {
        self.cluster
            .as_ref()
            .map(|c| c.hubs.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn hub_alive(&mut self, now: Now, hub: Arc<str>, peers: u64) {
        let Some(c) = &mut self.cluster else { return };
        if hub == c.link.hub {
            return;
        }
        if let Some(entry) = c.hubs.get_mut(&hub) {
            entry.peers = peers;
            return;
        }
        let route = Route::Remote(Arc::new(RemoteHub {
            hub: hub.clone(),
            link: c.link.clone(),
        }));
        c.hubs.insert(hub.clone(), HubEntry { route, peers });
        tracing::debug!(%hub, "cluster hub up");
        // Its leases known already become peers.
        let kinds = c.kinds_on(&hub);
        let h = hub.to_string();
        self.emit(|| HubEvent::ClusterHub {
            hub: h,
            up: true,
            peers,
        });
        self.remote_peers_moved(now, &hub, kinds, true);
    }

    fn hub_gone(&mut self, now: Now, hub: &Arc<str>) {
        let Some(c) = &mut self.cluster else { return };
        if c.hubs.remove(hub).is_none() {
            return;
        }
        c.senders.retain(|_, h| h != hub);
        tracing::debug!(%hub, "cluster hub gone");
        let kinds = c.kinds_on(hub);
        self.fail_calls_to(hub);
        // Its leases stay known (a hub back within the bucket's age brings
        // them back); routing to them stops now.
        for (kind, _) in &kinds {
            if !self.peers.contains_key(kind) {
                self.statuses.remove(kind);
            }
        }
        let h = hub.to_string();
        self.emit(|| HubEvent::ClusterHub {
            hub: h,
            up: false,
            peers: 0,
        });
        self.remote_peers_moved(now, hub, kinds, false);
    }

    fn lease(
        &mut self,
        now: Now,
        kind: Arc<str>,
        hub: Arc<str>,
        rev: u64,
        hello: Hello,
        connected_at: u64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        if c.released.stale(&kind, rev) {
            // Handed back already: the watch is late.
            return;
        }
        if hub == c.link.hub {
            // Our own claim, seen by the watch: `Claimed` decides.
            if c.remote.get(&kind).is_some_and(|p| p.rev < rev)
                && let Some(gone) = c.remote.remove(&kind)
                && c.hubs.contains_key(&gone.hub)
            {
                self.remote_peers_moved(now, &gone.hub, vec![(kind, gone.compact)], false);
            }
            return;
        }
        if c.remote.get(&kind).is_some_and(|p| p.rev >= rev) {
            return;
        }
        let local = c.leases.get(&kind).copied();
        let alive = c.hubs.contains_key(&hub);
        let info = messages::PeerInfo {
            kind: kind.to_string(),
            hello: Some(hello.clone()),
            connected_at: Some(connected_at as f64),
            connected: true,
        };
        let peer = RemotePeer {
            hub: hub.clone(),
            rev,
            hello,
            connected_at,
            entry: Arc::new(CanonicalData::new(&info.to_value())),
            compact: Arc::new(presence::compact_entry(&info)),
        };
        let compact = peer.compact.clone();
        let before = c.remote.insert(kind.clone(), peer);
        if let Some(Lease::Held(ours)) = local
            && rev > ours
        {
            self.displaced_by_cluster(&kind);
        }
        // A kind moving from one live hub to another leaves there and
        // joins here (a new socket, as on one hub).
        if let Some(before) = before
            && before.hub != hub
            && self
                .cluster
                .as_ref()
                .is_some_and(|c| c.hubs.contains_key(&before.hub))
        {
            self.remote_peers_moved(
                now,
                &before.hub,
                vec![(kind.clone(), before.compact)],
                false,
            );
        }
        if alive {
            self.remote_peers_moved(now, &hub, vec![(kind, compact)], true);
        }
    }

    /// `hub` says its peer `kind` left, handing back the lease it held at
    /// `rev` when it knows it: the entry goes unless it is newer than
    /// that (the kind connected there again and that word came first),
    /// and the revision is remembered against a late watch.
    fn released(&mut self, now: Now, kind: &Arc<str>, hub: &Arc<str>, rev: Option<u64>) {
        let Some(c) = &mut self.cluster else { return };
        if let Some(rev) = rev {
            c.released.bury(now.instant, kind, rev);
        }
        self.lease_gone(now, kind, rev, Some(hub));
    }

    /// `kind` left its hub: a deleted entry (`rev`; counts only while its
    /// hub is gone, as anyone with bucket access can delete) or the hub's
    /// own word (`by`, handing back `rev` if known).
    fn lease_gone(&mut self, now: Now, kind: &Arc<str>, rev: Option<u64>, by: Option<&Arc<str>>) {
        let Some(c) = &mut self.cluster else { return };
        let gone = c.remote.get(kind).is_some_and(|p| match (rev, by) {
            (rev, Some(hub)) => p.hub == *hub && rev.is_none_or(|rev| p.rev <= rev),
            (Some(rev), None) => p.rev < rev && !c.hubs.contains_key(&p.hub),
            (None, None) => false,
        });
        if gone {
            let Some(gone) = c.remote.remove(kind) else {
                return;
            };
            let alive = c.hubs.contains_key(&gone.hub);
            if !self.peers.contains_key(kind) {
                self.statuses.remove(kind);
            }
            if alive {
                self.remote_peers_moved(now, &gone.hub, vec![(kind.clone(), gone.compact)], false);
            }
        }
    }

    fn claimed(&mut self, kind: &Arc<str>, conn: ConnId, rev: Option<u64>) {
        if !self.is_current(conn, kind) {
            return;
        }
        let Some(c) = &mut self.cluster else { return };
        match rev {
            Some(rev) => {
                c.leases.insert(kind.clone(), Lease::Held(rev));
                if c.remote.get(kind).is_some_and(|p| p.rev > rev) {
                    self.displaced_by_cluster(kind);
                }
            }
            None => self.displaced_by_cluster(kind),
        }
    }

    /// Another hub's peer took `kind`: the local socket is displaced (close
    /// 4000, as on one hub); its close removes it from the table.
    fn displaced_by_cluster(&mut self, kind: &Arc<str>) {
        if let Some(c) = &mut self.cluster {
            c.leases.remove(kind);
        }
        if let Some(peer) = self.peers.get(kind) {
            tracing::debug!(%kind, "displaced by a peer on another hub");
            self.controls.push_back((peer.conn, ConnCtl::Displace));
        }
    }

    /// Kinds on `hub` became reachable (`joined`) or stopped being: routing
    /// follows at once; listeners hear of it; the peer lists change.
    ///
    /// Each kind not held here is one membership version, logged for
    /// `peers.delta` peers like a local join or leave.
    fn remote_peers_moved(
        &mut self,
        now: Now,
        hub: &Arc<str>,
        kinds: Vec<(Arc<str>, Arc<CanonicalData>)>,
        joined: bool,
    ) {
        if kinds.is_empty() {
            return;
        }
        self.revision += 1;
        for (kind, compact) in kinds {
            let (k, h) = (kind.to_string(), hub.to_string());
            self.emit(|| HubEvent::ClusterPeer {
                kind: k,
                hub: h,
                joined,
            });
            if self.config.broadcast_peers && !self.peers.contains_key(&kind) {
                self.log_remote_change(now, kind, compact, joined);
            }
        }
    }

    /// One membership version for a remote peer entering (`joined`) or
    /// leaving this hub's lists.
    fn log_remote_change(
        &mut self,
        now: Now,
        kind: Arc<str>,
        compact: Arc<CanonicalData>,
        joined: bool,
    ) {
        let deltas = &mut self.presence.deltas;
        let change = if joined {
            deltas.add_entry_bytes(compact.len() + 1, 0);
            Change::Joined(compact)
        } else {
            deltas.add_entry_bytes(0, compact.len() + 1);
            Change::Left
        };
        deltas.record(self.presence.version + 1, kind, change);
        self.membership_changed(now.instant);
    }

    /// A local registration of `kind` is about to replace its remote entry
    /// in the lists: that entry leaves first (the local one joins).
    pub(super) fn hide_remote(&mut self, now: Now, kind: &Arc<str>) {
        if let Some(compact) = self.listed_remote(kind) {
            self.log_remote_change(now, kind.clone(), compact, false);
        }
    }

    /// `kind`'s local socket left: its remote entry, if any, joins the
    /// lists again.
    pub(super) fn show_remote(&mut self, now: Now, kind: &Arc<str>) {
        if let Some(compact) = self.listed_remote(kind) {
            self.log_remote_change(now, kind.clone(), compact, true);
        }
    }

    /// `kind`'s compact entry when another live hub holds it (lists on).
    fn listed_remote(&self, kind: &str) -> Option<Arc<CanonicalData>> {
        if !self.config.broadcast_peers {
            return None;
        }
        let c = self.cluster.as_ref()?;
        let p = c.remote.get(kind)?;
        c.hubs.contains_key(&p.hub).then(|| p.compact.clone())
    }

    /// The other hubs' peers' compact entries, in list order.
    pub(super) fn remote_compacts(&self) -> Vec<Arc<CanonicalData>> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.remote_peers()
            .into_iter()
            .filter(|(k, _)| !self.peers.contains_key(*k))
            .map(|(_, p)| p.compact.clone())
            .collect()
    }

    /// The other hubs' peers' list entries (alive, not held here), oldest
    /// first: a peer list is this hub's peers then these.
    pub(super) fn remote_entries(&self) -> Vec<Arc<CanonicalData>> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.remote_peers()
            .into_iter()
            .filter(|(k, _)| !self.peers.contains_key(*k))
            .map(|(_, p)| p.entry.clone())
            .collect()
    }

    fn remote_deliver(&mut self, hub: &Arc<str>, item: OutItem) {
        if let Some(c) = &mut self.cluster
            && c.senders.get(&item.from) != Some(hub)
        {
            if c.senders.len() >= MAX_SENDERS {
                c.senders.clear();
            }
            c.senders.insert(item.from.clone(), hub.clone());
        }
        let Some(peer) = self.peers.get(&item.to) else {
            // Raced away (or never here): an RPC still gets its answer.
            if item.msg_type == msg_type::RPC_REQUEST
                && let Some(id) = item.id.clone()
            {
                self.remote_rpc_error(hub, &item.from, &id, &item.to);
            }
            return;
        };
        let (route, to) = (peer.route.clone(), peer.kind.clone());
        let (msg_type, id, from) = (item.msg_type, item.id.clone(), item.from.clone());
        if msg_type == msg_type::RPC_RESPONSE
            && let Some(id) = &id
        {
            self.cluster_call_done(&to, id);
        }
        // A cancel for a request still queued here removes it; else the
        // cancel goes on to the peer.
        if msg_type == msg_type::RPC_CANCEL
            && let Some(target_id) = item.data.as_deref().and_then(cancelled_id)
            && route.cancel_request(&target_id, &from)
        {
            return;
        }
        let delivered = self.push_item(&route, &to, item).delivered();
        if !delivered
            && msg_type == msg_type::RPC_REQUEST
            && let Some(id) = id
        {
            self.remote_rpc_error(hub, &from, &id, &to);
        }
    }

    /// Answers a remote caller's request that cannot reach its target here.
    fn remote_rpc_error(&mut self, hub: &Arc<str>, caller: &Arc<str>, id: &str, target: &str) {
        let resp = RpcResponse::error(
            RpcErrorCode::TargetUnavailable,
            format!("{}{target}", rpc_error_text::TARGET_UNAVAILABLE),
        );
        let data = Arc::new(CanonicalData::new(&resp.to_value()));
        let item = OutItem::new(
            Some(id.into()),
            msg_type::RPC_RESPONSE,
            self.server.clone(),
            caller.clone(),
            Some(data),
        );
        let route = self
            .cluster
            .as_ref()
            .and_then(|c| c.hubs.get(hub))
            .map(|h| h.route.clone());
        if let Some(route) = route {
            route.push(item);
        }
    }

    /// Another hub's peer published at `at` (its hub's wall ms): every
    /// local subscriber but the publisher that subscribed here by then gets
    /// it. A message published before a peer subscribed here is not for
    /// it, as on one hub: it is one that came late (its hub was cut off
    /// from NATS, its backlog arriving when the link heals), and the peer,
    /// which moved here meanwhile, may have had it on the hub it left.
    fn remote_publish(
        &mut self,
        topic: &str,
        from: &Arc<str>,
        data: Option<Arc<CanonicalData>>,
        at: u64,
    ) {
        let subscribers: Vec<Arc<str>> = match self.topics.get_mut(topic) {
            Some(s) => {
                s.published += 1;
                s.order
                    .iter()
                    .filter(|k| *k != from && s.since.get(*k).is_some_and(|since| *since <= at))
                    .cloned()
                    .collect()
            }
            None => return,
        };
        let prefix = Arc::new(PrefixCell::new());
        let mut delivered = 0u64;
        for sub in &subscribers {
            let Some(route) = self.peers.get(sub).map(|p| p.route.clone()) else {
                continue;
            };
            let mut item = OutItem::new(
                None,
                msg_type::TOPIC_MESSAGE,
                from.clone(),
                sub.clone(),
                data.clone(),
            );
            item.prefix = Some(prefix.clone());
            if self.push_item(&route, sub, item).delivered() {
                delivered += 1;
            }
        }
        if let Some(s) = self.topics.get_mut(topic) {
            s.delivered += delivered;
        }
    }

    fn remote_status(&mut self, kind: &Arc<str>, at: u64, status: Option<serde_json::Value>) {
        if self.peers.contains_key(kind) {
            return; // the local socket holds the kind now
        }
        self.store_status(kind, status, at);
    }

    /// Other hubs alive (`None` on a lone hub or while NATS is down).
    pub(super) fn cluster_hub_count(&self) -> Option<usize> {
        let c = self.cluster.as_ref()?;
        c.link.is_up().then_some(c.hubs.len())
    }

    /// The cluster's figures for `/metrics`.
    pub(super) fn cluster_stats(&self) -> Option<super::stats::ClusterStats> {
        let c = self.cluster.as_ref()?;
        let n = &c.link.counters;
        Some(super::stats::ClusterStats {
            hubs: c.hubs.len(),
            remote_peers: c.remote_peers().len(),
            published: n.published.load(Ordering::Relaxed),
            rejected: n.rejected.load(Ordering::Relaxed),
            slow_consumers: n.slow_consumers.load(Ordering::Relaxed),
            refused: n.refused.load(Ordering::Relaxed),
            up: c.link.is_up(),
        })
    }

    /// `link.health`'s cluster part: this hub and the others alive.
    pub(super) fn cluster_health(&self) -> Option<serde_json::Value> {
        let c = self.cluster.as_ref()?;
        let mut hubs = vec![serde_json::json!({
            "hub": &*c.link.hub,
            "peers": self.peers.len(),
            "self": true,
        })];
        for (hub, peers) in c.hubs() {
            hubs.push(serde_json::json!({"hub": hub, "peers": peers, "self": false}));
        }
        Some(serde_json::json!({"hub": &*c.link.hub, "up": c.link.is_up(), "hubs": hubs}))
    }

    /// Remote peers for `link.peer.list`.
    pub(super) fn remote_peer_infos(&self) -> Vec<messages::PeerInfo> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.remote_peers()
            .into_iter()
            .filter(|(k, _)| !self.peers.contains_key(*k))
            .map(|(k, p)| p.info(k))
            .collect()
    }
}

/// The request id an `rpc.cancel`'s data names.
fn cancelled_id(data: &CanonicalData) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(data.as_str()).ok()?;
    v.get("id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_keep_the_newest_revision_and_forget_by_age_and_count() {
        // A clock seeded once, as the table's other tests do.
        let t0 = link_test_support::now().instant;
        let mut stones = Tombstones::default();
        let beta: Arc<str> = "beta".into();
        stones.bury(t0, &beta, 5);
        stones.bury(t0, &beta, 3); // an older word changes nothing
        assert!(stones.stale(&beta, 5) && stones.stale(&beta, 4));
        assert!(!stones.stale(&beta, 6), "a newer lease is live");
        assert!(!stones.stale(&beta, 5), "and it lifted the stone");

        stones.bury(t0, &beta, 9);
        let later = t0 + TOMBSTONE_TTL;
        stones.bury(later, &"gamma".into(), 1);
        assert!(!stones.stale(&beta, 9), "forgotten after the TTL");

        for i in 0..MAX_TOMBSTONES as u64 + 1 {
            stones.bury(later, &format!("k{i}").into(), i);
        }
        assert!(stones.rev.len() <= MAX_TOMBSTONES);
        assert!(!stones.stale(&"k0".into(), 0), "the oldest went first");
        assert!(stones.stale(&format!("k{MAX_TOMBSTONES}").into(), 1));
    }
}
