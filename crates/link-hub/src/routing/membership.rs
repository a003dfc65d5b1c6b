//! Membership: sockets attaching, hellos registering a kind (displacing the
//! socket that held it), sockets going, and the peer list every peer is
//! sent (`peers.update`, coalesced: a burst of joins costs each peer one
//! list; protocol §5.2, §6.1).

use std::net::SocketAddr;
use std::sync::Arc;

use link_protocol::conn::Now;
use link_protocol::messages;
use link_protocol::{CanonicalData, HUB_FEATURES, Hello, HelloAck, PeerInfo, msg_type};
use serde_json::Value;

use super::{ConnCtl, ConnEntry, ConnId, Peer, Route, Routing, hub_stopped};
use crate::events::{HubEvent, TimeoutReason};

/// Membership changes handled before pending `peers.update`s go out even if
/// more inputs keep arriving.
pub(super) const PEERS_FLUSH_EVERY: usize = 256;

/// The membership version and the list sent for it.
#[derive(Default)]
pub(super) struct Presence {
    /// Bumped on every membership change.
    version: u64,
    /// The `peers.update` data of `version`, canonicalised once.
    cache: Option<(u64, Arc<CanonicalData>)>,
    /// Some peers have not seen the current version yet.
    dirty: bool,
    /// Inputs handled since `dirty` was set.
    since_dirty: usize,
}

impl Routing {
    /// A socket was accepted; it waits for its hello. Past
    /// `max_pending_sockets` the oldest waiting socket is evicted.
    pub(crate) fn handle_attach(&mut self, conn: ConnId, route: Route, remote: Option<SocketAddr>) {
        self.conns.insert(
            conn,
            ConnEntry {
                route,
                remote,
                kind: None,
            },
        );
        self.stats.sockets_attached += 1;
        if self.stopped {
            self.controls.push_back((conn, hub_stopped()));
            return;
        }
        self.pending.push_back(conn);
        while self.pending.len() > self.config.max_pending_sockets {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            if let Some(c) = self.conns.get(&oldest) {
                let remote_addr = c.remote;
                self.controls.push_back((oldest, ConnCtl::Evict));
                let hello_timeout_ms = self
                    .config
                    .hello_timeout
                    .map_or(0, |d| d.as_millis() as u64);
                self.emit(|| HubEvent::PeerTimeout {
                    remote_addr,
                    hello_timeout_ms,
                    reason: TimeoutReason::PendingCap,
                });
            }
        }
    }

    /// The socket's hello verified: it now holds its kind. A socket that
    /// held the kind is displaced (close 4000). The newcomer gets
    /// `hello.ack`, the peer list and the status snapshot, in the
    /// reference's order; the others get the list when inputs pause.
    pub(crate) fn handle_register(&mut self, now: Now, conn: ConnId, hello: Hello) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        self.pending.retain(|c| *c != conn);
        let kind: Arc<str> = hello.kind.as_str().into();
        entry.kind = Some(kind.clone());
        let route = entry.route.clone();
        let mut replaced = false;
        if let Some(old) = self.peers.get(&kind) {
            replaced = true;
            let (old_conn, prev_hello, new_hello) = (old.conn, old.hello.clone(), hello.clone());
            let k = kind.to_string();
            self.emit(|| HubEvent::PeerReplaced {
                kind: k,
                prev_hello,
                new_hello,
            });
            if self.conns.contains_key(&old_conn) {
                self.controls.push_back((old_conn, ConnCtl::Displace));
            }
        } else {
            self.order.push(kind.clone());
        }
        self.revision += 1;
        self.peers.insert(
            kind.clone(),
            Peer {
                conn,
                kind: kind.clone(),
                hello: hello.clone(),
                connected_at: now.wall_ms,
                route: route.clone(),
                peers_seen: 0,
            },
        );
        let ack = HelloAck::accepted(now.wall_ms, &kind, &HUB_FEATURES);
        let ack = Arc::new(CanonicalData::new(&ack.to_value()));
        self.push_from_hub(&route, None, msg_type::HELLO_ACK, &kind, ack);
        let (k, connected_at) = (kind.to_string(), now.wall_ms);
        self.emit(|| HubEvent::PeerConnect {
            kind: k,
            hello,
            connected_at,
            replaced,
        });
        if self.config.broadcast_peers {
            self.presence.version += 1;
            let data = self.peers_data();
            self.push_from_hub(&route, None, msg_type::PEERS_UPDATE, &kind, data);
            if let Some(p) = self.peers.get_mut(&kind) {
                p.peers_seen = self.presence.version;
            }
            self.presence.dirty = true;
        }
        let snapshot =
            messages::status_snapshot_value(self.statuses.iter().map(|(k, e)| (&**k, e)));
        let snapshot = Arc::new(CanonicalData::new(&snapshot));
        self.push_from_hub(&route, None, msg_type::STATUS_SNAPSHOT, &kind, snapshot);
    }

    /// The socket is gone, with the close code and reason its reader saw.
    /// If it held its kind, the kind leaves: its status, its subscriptions
    /// and its held messages go, and the others learn of it.
    pub(crate) fn handle_closed(&mut self, conn: ConnId, code: Option<u16>, reason: String) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        self.pending.retain(|c| *c != conn);
        self.verdicts.forget_conn(conn);
        let Some(kind) = entry.kind else { return };
        if !self.is_current(conn, &kind) {
            return; // a displaced socket: the kind lives on
        }
        let Some(peer) = self.peers.remove(&kind) else {
            return;
        };
        self.revision += 1;
        self.order.retain(|k| *k != kind);
        self.statuses.remove(&kind);
        self.rpc_timer.forget_kind(&kind);
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
        if self.config.broadcast_peers {
            self.presence.version += 1;
            self.presence.dirty = true;
        }
        let (k, hello, connected_at) = (kind.to_string(), peer.hello, peer.connected_at);
        self.emit(|| HubEvent::PeerDisconnect {
            kind: k,
            hello,
            connected_at,
            code,
            reason,
        });
    }

    /// Call after each input. Peers that have not seen the current peer
    /// list get it when no more inputs are waiting, or after
    /// [`PEERS_FLUSH_EVERY`] inputs if they keep coming.
    pub(crate) fn handle_input_done(&mut self, more_waiting: bool) {
        if !self.presence.dirty {
            return;
        }
        self.presence.since_dirty += 1;
        if !more_waiting || self.presence.since_dirty >= PEERS_FLUSH_EVERY {
            self.flush_peers();
        }
    }

    /// Sends the current peer list to every peer that has not seen it.
    fn flush_peers(&mut self) {
        self.presence.dirty = false;
        self.presence.since_dirty = 0;
        let data = self.peers_data();
        let version = self.presence.version;
        for kind in self.order.clone() {
            let Some(p) = self.peers.get_mut(&kind) else {
                continue;
            };
            if p.peers_seen >= version {
                continue;
            }
            p.peers_seen = version;
            let route = p.route.clone();
            self.push_from_hub(&route, None, msg_type::PEERS_UPDATE, &kind, data.clone());
        }
    }

    /// The current `peers.update` payload, canonicalised once per version.
    fn peers_data(&mut self) -> Arc<CanonicalData> {
        match &self.presence.cache {
            Some((v, data)) if *v == self.presence.version => data.clone(),
            _ => {
                let data = Arc::new(CanonicalData::new(&messages::peers_update_value(
                    &self.peer_infos(),
                )));
                self.presence.cache = Some((self.presence.version, data.clone()));
                data
            }
        }
    }

    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        self.order
            .iter()
            .filter_map(|k| self.peers.get(k))
            .map(peer_info)
            .collect()
    }

    /// `link.peer.list`: every peer, or the one named by `{kind}`.
    pub(super) fn peer_list(&self, rpc_data: Option<&Value>) -> Value {
        let peers = match rpc_data.and_then(|d| d.get("kind")).and_then(Value::as_str) {
            Some(kind) => self.peers.get(kind).map(peer_info).into_iter().collect(),
            None => self.peer_infos(),
        };
        messages::peers_update_value(&peers)
    }
}

fn peer_info(p: &Peer) -> PeerInfo {
    PeerInfo {
        kind: p.kind.to_string(),
        hello: Some(p.hello.clone()),
        connected_at: Some(p.connected_at as f64),
        connected: true,
    }
}
