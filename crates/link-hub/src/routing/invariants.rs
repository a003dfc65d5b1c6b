//! Consistency checks of the routing table, for its fuzz harness
//! (`crate::fuzzing`, the `routing` target in `fuzz/`): compiled for this
//! crate's tests and under the non-default `fuzzing` feature.
//!
//! - every peer's socket is attached and holds its kind; registration order
//!   lists each peer once; statuses and subscriptions belong to peers; the
//!   count of peers whose next list waits on their writer is theirs;
//! - each topic's subscriber list is non-empty, duplicate-free and mirrored
//!   by each subscriber's own subscription set;
//! - waiting sockets are attached, unregistered, listed once and within the
//!   pending cap; no built-in server RPC is counted as running between
//!   inputs;
//! - once every socket has closed and every task is answered, nothing is
//!   left (no peer, topic, status, subscription, socket, server RPC, ACL
//!   check or lane).

use std::collections::HashSet;
use std::sync::Arc;

use super::{ConnId, Routing};

impl Routing {
    /// The table's structural invariants; panics naming the broken one.
    pub(crate) fn check_invariants(&self) {
        for (kind, peer) in &self.peers {
            assert_eq!(&peer.kind, kind);
            let entry = self.conns.get(&peer.conn);
            let entry = entry.unwrap_or_else(|| panic!("peer {kind}: socket not attached"));
            assert_eq!(
                entry.kind.as_ref(),
                Some(kind),
                "peer {kind}: socket holds another kind"
            );
        }
        let busy = self
            .peers
            .values()
            .filter_map(|p| p.presence.as_ref())
            .filter(|pp| pp.writer_busy())
            .count();
        assert_eq!(
            busy,
            self.presence.waiting_writers(),
            "peers waiting on their writers miscounted"
        );
        let order: HashSet<&Arc<str>> = self.order.iter().collect();
        assert_eq!(
            order.len(),
            self.order.len(),
            "a kind registered twice in order"
        );
        assert_eq!(order.len(), self.peers.len(), "order and peers differ");
        assert!(
            self.order.iter().all(|k| self.peers.contains_key(k)),
            "order lists a gone peer"
        );
        assert!(
            self.statuses.keys().all(|k| self.peers.contains_key(k)),
            "status of a gone peer"
        );
        for (topic, subs) in &self.topics {
            assert!(
                !subs.order.is_empty(),
                "topic {topic:?} kept with no subscriber"
            );
            assert_eq!(
                subs.order.len(),
                subs.since.len(),
                "topic {topic:?}: duplicate subscriber"
            );
            for kind in &subs.order {
                assert!(subs.since.contains_key(kind));
                assert!(
                    self.peers.contains_key(kind),
                    "topic {topic:?}: gone subscriber {kind}"
                );
                let mine = self.subscriptions.get(kind);
                assert!(
                    mine.is_some_and(|m| m.contains(topic)),
                    "topic {topic:?}: {kind} unaware"
                );
            }
        }
        for (kind, topics) in &self.subscriptions {
            assert!(
                self.peers.contains_key(kind),
                "subscriptions of gone peer {kind}"
            );
            for topic in topics {
                let subs = self.topics.get(topic);
                assert!(
                    subs.is_some_and(|s| s.since.contains_key(kind)),
                    "{kind} thinks it holds {topic:?}"
                );
            }
        }
        let pending: HashSet<&ConnId> = self.pending.iter().collect();
        assert_eq!(pending.len(), self.pending.len(), "a socket waits twice");
        assert!(
            self.pending.len() <= self.config.max_pending_sockets,
            "pending cap exceeded"
        );
        for conn in &self.pending {
            let entry = self.conns.get(conn);
            assert!(
                entry.is_some_and(|e| e.kind.is_none()),
                "waiting socket {conn} is gone or registered"
            );
        }
        assert_eq!(
            self.builtin_running, 0,
            "a built-in RPC still counted between inputs"
        );
    }
    /// The membership a peer list of the current version describes: every
    /// peer, in registration order, as its `peers.update` entry.
    pub(crate) fn membership(&self) -> Vec<link_protocol::PeerInfo> {
        self.peer_infos()
    }

    /// User server RPCs running and ACL checks in flight.
    pub(crate) fn tasks_in_flight(&self) -> (usize, usize) {
        (self.server_calls.len(), self.verdicts.sizes().0)
    }

    /// Once every socket has closed and every task is answered: nothing
    /// may be left. Panics naming what was.
    pub(crate) fn check_drained(&self) {
        self.check_invariants();
        assert!(
            self.peers.is_empty() && self.order.is_empty(),
            "a peer outlived its socket"
        );
        assert!(self.statuses.is_empty(), "a status outlived its peer");
        assert!(
            self.topics.is_empty() && self.subscriptions.is_empty(),
            "a subscription outlived its peer"
        );
        assert!(
            self.pending.is_empty() && self.conns.is_empty(),
            "a socket outlived its close"
        );
        assert!(
            self.server_calls.is_empty(),
            "a server RPC outlived its answer"
        );
        let (judging, lanes) = self.verdicts.sizes();
        assert_eq!(judging, 0, "an ACL check outlived its verdict");
        assert_eq!(lanes, 0, "an ACL lane outlived its socket");
    }
}
