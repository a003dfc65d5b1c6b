//! Membership: sockets attaching, hellos registering a kind (displacing the
//! socket that held it), sockets going, and the peer list every peer is
//! sent (`peers.update`, protocol §5.2, §5.2.1, §6.1).
//!
//! Lists cost O(change) to build, not O(peers) per recipient: each peer's
//! entry is canonicalised once, a version's list is their concatenation,
//! built once and shared (data and signed prefix) by every outbox. Lists
//! are paced: per-peer and hub-wide rates while membership changes, one
//! list per socket in flight, a hub-wide byte cap on lists in flight, and
//! the final list for everyone once membership is quiet. Every list is a
//! full snapshot, so a client diffing lists sees each peer join once.
//!
//! A peer whose hello asked for `peers.delta` is paced the same way but is
//! sent a versioned snapshot once, then deltas (`peer_deltas.rs`); nobody
//! else ever sees those messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use link_protocol::conn::Now;
use link_protocol::messages;
use link_protocol::{CanonicalData, Feature, HUB_FEATURES, Hello, HelloAck, PeerInfo, msg_type};
use serde_json::Value;

use super::peer_deltas::{Built, Change, DeltaLog, Next};
use super::{ConnCtl, ConnEntry, ConnId, Peer, Route, Routing, hub_stopped};
use crate::events::{HubEvent, TimeoutReason};
use crate::outbox::{ListGauge, OutItem, PrefixCell, Push};

/// A list handed to one recipient.
struct ListRef {
    version: u64,
    data: Arc<CanonicalData>,
    prefix: Arc<PrefixCell>,
}

/// The rate limit lets a peer run this far ahead (a burst of small lists
/// is not held back).
const TOLERANCE: Duration = Duration::from_millis(50);

/// The most the hub-wide rate limit runs ahead of now.
const HUB_DEBT: Duration = Duration::from_secs(1);

/// Membership changes handled before pending `peers.update`s go out even if
/// more inputs keep arriving.
pub(super) const PEERS_FLUSH_EVERY: usize = 256;

/// Once membership has been still for this long, every peer that has not
/// seen the final list gets it, whatever its rate allows.
pub(super) const QUIET: Duration = Duration::from_millis(250);

/// A change that interrupts such a final round (a lull in a storm, not its
/// end) doubles the stillness asked for the next one, up to this; a round
/// that completes sets it back to [`QUIET`].
pub(super) const MAX_QUIET: Duration = Duration::from_secs(2);

/// How the hub paces `peers.update` (defaults in [`PresenceLimits::default`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PresenceLimits {
    /// A newcomer gets the list at once, right after `hello.ack` (the
    /// reference's order), while the list is smaller than this; a larger
    /// one waits for the next flush with everyone else's. Default 64 KiB.
    pub(crate) small_list_bytes: usize,
    /// While membership keeps changing, a peer is sent lists at most at
    /// this rate (bytes of list per second, per peer): a join storm costs
    /// each peer a bounded number of lists, not one per join. Default
    /// 256 KiB/s.
    pub(crate) list_bytes_per_peer_per_sec: f64,
    /// The same bound for the whole hub while membership keeps changing
    /// (newcomers' first lists included), so a storm leaves the CPU to the
    /// hellos; the final lists, once quiet, are bounded by the in-flight
    /// cap alone. Default 32 MiB/s.
    pub(crate) list_bytes_per_sec: f64,
    /// Bytes of lists queued or being written across all outboxes at once;
    /// past it further lists wait (memory stays bounded in a storm: each
    /// recipient's socket encodes its own copy). Lists that sockets stopped
    /// writing stop counting after [`PARK_AFTER`]. Default 16 MiB: at 10,000
    /// peers it is 1.6 KiB per connection at the storm's peak (64 MiB was
    /// 6.6 and no faster; docs/perf.md, session 12).
    pub(crate) lists_in_flight_bytes: usize,
}

impl Default for PresenceLimits {
    fn default() -> Self {
        Self {
            small_list_bytes: 64 * 1024,
            list_bytes_per_peer_per_sec: 256.0 * 1024.0,
            list_bytes_per_sec: 32.0 * 1024.0 * 1024.0,
            lists_in_flight_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A delta peer is sent at most about this many bytes of snapshot parts
/// and deltas at a time; the rest once its socket has written them (its
/// write buffer holds a few parts, not a whole list).
pub(super) const DELTA_WINDOW: usize = 32 * 1024;

/// Past this long at the cap with no list given back, what is in flight is
/// taken to be held by sockets that stopped writing (peers stalled on full
/// sockets keep their lists until they are reaped): it stops counting
/// against the cap, so stalled sockets cannot slow presence to a list per
/// [`STUCK`]. Writers that are slow but still finishing lists (a storm on a
/// busy box) give one back well within it.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// List bytes held by sockets that stopped writing may stop counting up to
/// this many in-flight caps (16 + 48 MiB by default: the 64 MiB cap the
/// hub had before bounds it still).
pub(super) const MAX_PARKED: usize = 3;

/// How soon a flush held back by the in-flight cap tries again.
pub(super) const RETRY: Duration = Duration::from_millis(5);

/// Past this long held back by the in-flight cap, one list goes anyway:
/// presence never stops.
pub(super) const STUCK: Duration = Duration::from_millis(250);

/// Which peers a flush looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Newcomers, then every peer from the cursor.
    All,
    /// Newcomers alone.
    Fresh,
    /// Newcomers, then the peers whose writers finished a list.
    Written,
}

/// The membership version and the list sent for it.
#[derive(Default)]
pub(super) struct Presence {
    /// Bumped on every membership change.
    pub(super) version: u64,
    /// The list of `version`, built once and shared by every recipient.
    cache: Option<List>,
    /// Some peers have not seen the current version yet.
    pub(super) dirty: bool,
    /// Inputs handled since `dirty` was set.
    since_dirty: usize,
    /// When membership last changed.
    changed_at: Option<Instant>,
    /// A flush is due then (time coalescing, or lists held back).
    due: Option<Instant>,
    /// Peers whose writers were busy with a list are served then, as
    /// their writers report them done (`ListGauge::take_written`): no
    /// pass over every peer while a round waits on sockets.
    written_due: Option<Instant>,
    /// The version the last pass over every peer was made for.
    passed_version: u64,
    /// Peers marked `writer_busy`.
    waiting_writers: usize,
    /// Where the next flush starts in the registration order (fairness
    /// when the in-flight cap stops a flush part way).
    cursor: usize,
    /// Newcomers still waiting for their first list, and delta peers that
    /// asked for a fresh snapshot, served first.
    pub(super) fresh: Vec<Arc<str>>,
    /// Since when flushes have been held back by the gauge with no list
    /// given back (a writer that finishes one starts the wait again), and
    /// the gauge's release count then.
    held_since: Option<(Instant, u64)>,
    /// When the last list went past the cap because flushes were held
    /// back for [`STUCK`].
    forced_at: Option<Instant>,
    /// List bytes parked: in flight when the gauge last held flushes back
    /// for [`PARK_AFTER`], so held by sockets that stopped writing. They do not
    /// count against the cap; the part of them written since is given
    /// back as the gauge drains below them.
    parked: usize,
    /// Lists queued or being written, hub-wide.
    gauge: Arc<ListGauge>,
    /// The hub-wide rate limit (GCRA), as `PeerPresence::next_at`.
    hub_next_at: Option<Instant>,
    /// When the last flush ran.
    flushed_at: Option<Instant>,
    /// The stillness the next final round waits for (`None`: [`QUIET`]).
    quiet_for: Option<Duration>,
    /// A final round sent lists and has not completed.
    in_round: bool,
    /// The last list left peers out (logged once per crossing).
    truncated: bool,
    /// The change log and the snapshots and deltas built from it.
    pub(super) deltas: DeltaLog,
}

/// One version's list: the canonical data (shared by every recipient's
/// outbox) and the fan-out's signed prefix (shared-secret mode hashes the
/// data once).
struct List {
    version: u64,
    data: Arc<CanonicalData>,
    prefix: Arc<PrefixCell>,
}

/// One peer's presence state, kept in its [`super::Peer`].
#[derive(Debug)]
pub(super) struct PeerPresence {
    /// Its entry in the list, canonical, made once at registration.
    entry: CanonicalData,
    /// Its compact entry in snapshots and deltas (docs/protocol.md §5.2.2).
    pub(super) compact: Arc<CanonicalData>,
    /// Its hello asked for `peers.delta`: it is sent snapshots and deltas,
    /// never `peers.update`.
    pub(super) deltas: bool,
    /// (Delta peers.) It holds no usable list: the next send is a snapshot.
    pub(super) snapshot_due: bool,
    /// (Delta peers.) The snapshot being sent, one part per flush: its
    /// version, the next part, and the parts (held until sent; the whole
    /// snapshot was charged to the rates when its first part went).
    snapshot_next: Option<(u64, usize, Arc<[Built]>)>,
    /// The membership version it last got a list for.
    seen: u64,
    /// A flush found its writer busy with a list, or left it more to send
    /// once its writer is done (counted in `Presence::waiting_writers`).
    writer_busy: std::cell::Cell<bool>,
    /// Rate limit (GCRA): the earliest time it may get the next list
    /// while membership keeps changing.
    next_at: Option<Instant>,
}

impl Presence {
    fn quiet(&self) -> Duration {
        self.quiet_for.unwrap_or(QUIET)
    }

    /// Peers whose next list waits on their writer (invariants).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn waiting_writers(&self) -> usize {
        self.waiting_writers
    }

    /// A peer's presence state goes (it left, or its kind was taken over).
    fn forget(&mut self, pp: &PeerPresence) {
        if pp.writer_busy.get() {
            self.waiting_writers = self.waiting_writers.saturating_sub(1);
        }
    }

    /// The hub stopped: nothing more to send.
    pub(super) fn stop(&mut self) {
        self.waiting_writers = 0;
        self.written_due = None;
        self.dirty = false;
        self.due = None;
        self.fresh.clear();
        self.deltas.clear();
    }
}

impl PeerPresence {
    /// Its next list waits on its writer (invariants).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn writer_busy(&self) -> bool {
        self.writer_busy.get()
    }

    pub(super) fn new(info: &PeerInfo, deltas: bool) -> Self {
        Self {
            entry: CanonicalData::new(&info.to_value()),
            compact: Arc::new(link_protocol::presence::compact_entry(info)),
            deltas,
            snapshot_due: deltas,
            snapshot_next: None,
            seen: 0,
            writer_busy: std::cell::Cell::new(false),
            next_at: None,
        }
    }
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
    #[cfg(test)]
    pub(crate) fn handle_register(&mut self, now: Now, conn: ConnId, hello: Hello) {
        self.handle_register_asking(now, conn, hello, false, None);
    }

    /// As [`Routing::handle_register`], for a hello that may have asked
    /// for the `peers.delta` extension (its `data.features`): such a peer
    /// is told so in `hello.ack` (while peer lists are on) and is sent a
    /// snapshot and deltas instead of `peers.update`. `hello_id` (the hello
    /// frame's id and ts) goes with the kind's lease in a cluster.
    pub(crate) fn handle_register_asking(
        &mut self,
        now: Now,
        conn: ConnId,
        hello: Hello,
        peer_deltas: bool,
        hello_id: Option<(Arc<str>, f64)>,
    ) {
        let peer_deltas = peer_deltas && self.config.broadcast_peers;
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
        let mut peer = Peer {
            conn,
            kind: kind.clone(),
            hello: hello.clone(),
            connected_at: now.wall_ms,
            route: route.clone(),
            presence: None,
        };
        let mut previous = None;
        if self.config.broadcast_peers {
            let pp = PeerPresence::new(&peer_info(&peer), peer_deltas);
            let compact = pp.compact.clone();
            peer.presence = Some(Box::new(pp));
            previous = Some(compact);
        }
        if !replaced {
            // In a cluster the kind may be listed as another hub's peer.
            self.hide_remote(now, &kind);
        }
        let old = self.peers.insert(kind.clone(), Box::new(peer));
        if let Some(pp) = old.as_ref().and_then(|p| p.presence.as_ref()) {
            self.presence.forget(pp);
        }
        if let Some(compact) = previous {
            let old = old
                .and_then(|p| p.presence)
                .map_or(0, |pp| pp.compact.len() + 1);
            self.presence.deltas.add_entry_bytes(compact.len() + 1, old);
            let change = if replaced {
                Change::Changed(compact)
            } else {
                Change::Joined(compact)
            };
            self.presence
                .deltas
                .record(self.presence.version + 1, kind.clone(), change);
        }
        self.cluster_registered(conn, &kind, &hello, now.wall_ms, hello_id);
        let ack = if peer_deltas {
            let mut features = HUB_FEATURES.to_vec();
            features.push(Feature::PeersDelta.as_str());
            HelloAck::accepted(now.wall_ms, &kind, &features)
        } else {
            HelloAck::accepted(now.wall_ms, &kind, &HUB_FEATURES)
        };
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
            self.membership_changed(now.instant);
            let small = if peer_deltas {
                self.presence.deltas.snapshot_bytes() < self.config.presence.small_list_bytes
            } else {
                self.presence
                    .cache
                    .as_ref()
                    .is_none_or(|l| l.data.len() < self.config.presence.small_list_bytes)
            };
            if small {
                let _ = self.send_list(now.instant, &kind);
            } else {
                self.presence.fresh.push(kind.clone());
            }
        }
        let snapshot =
            messages::status_snapshot_value(self.statuses.iter().map(|(k, e)| (&**k, e)));
        let snapshot = Arc::new(CanonicalData::new(&snapshot));
        self.push_from_hub(&route, None, msg_type::STATUS_SNAPSHOT, &kind, snapshot);
    }

    /// The socket is gone, with the close code and reason its reader saw.
    /// If it held its kind, the kind leaves: its status, its subscriptions
    /// and its held messages go, and the others learn of it.
    pub(crate) fn handle_closed(
        &mut self,
        now: Now,
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    ) {
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
        if let Some(pp) = &peer.presence {
            self.presence.forget(pp);
        }
        self.revision += 1;
        self.cluster_left(&kind);
        self.order.retain(|k| *k != kind);
        self.statuses.remove(&kind);
        self.rpc_timer.forget_kind(&kind);
        if let Some(topics) = self.subscriptions.remove(&kind) {
            for topic in topics {
                if let Some(subs) = self.topics.get_mut(&topic) {
                    subs.remove(&kind);
                    if subs.order.is_empty() {
                        self.topics.remove(&topic);
                        self.cluster_interest(&topic, false);
                    }
                }
            }
        }
        if let Some(pp) = &peer.presence {
            self.presence
                .deltas
                .add_entry_bytes(0, pp.compact.len() + 1);
            self.presence
                .deltas
                .record(self.presence.version + 1, kind.clone(), Change::Left);
        }
        if self.config.broadcast_peers {
            self.membership_changed(now.instant);
        }
        // In a cluster another hub may hold the kind too (it moved there).
        self.show_remote(now, &kind);
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
    /// list get it when no more inputs are waiting (or after
    /// [`PEERS_FLUSH_EVERY`] inputs if they keep coming), as far as their
    /// rate and the in-flight cap allow; the rest wait for
    /// [`Routing::poll_timeout`].
    pub(crate) fn handle_input_done(&mut self, now: Now, more_waiting: bool) {
        if !self.presence.dirty {
            return;
        }
        self.presence.since_dirty += 1;
        if more_waiting && self.presence.since_dirty < PEERS_FLUSH_EVERY {
            return;
        }
        self.presence.since_dirty = 0;
        // Nobody can take a list before `due` unless a newcomer waits:
        // then only newcomers are served (a join storm costs each hello
        // its newcomers, not a pass over every peer).
        let next = match (self.presence.due, self.presence.written_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let waiting = next.is_some_and(|d| now.instant < d);
        if !waiting {
            self.flush_peers(now.instant);
        } else if !self.presence.fresh.is_empty() {
            self.flush(now.instant, Pass::Fresh);
        }
    }

    /// When the table wants [`Routing::handle_timeout`]: lists held back
    /// by a peer's rate or by the in-flight cap, or the final list once
    /// membership is quiet.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.presence.dirty {
            return None;
        }
        // The quiet instant wakes the table once; after a flush at or past
        // it, `due` alone says when to try again.
        let quiet = self
            .presence
            .changed_at
            .map(|t| t + self.presence.quiet())
            .filter(|q| self.presence.flushed_at.is_none_or(|f| f < *q));
        [self.presence.due, quiet, self.presence.written_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// A timer from [`Routing::poll_timeout`] fired (extra calls are
    /// harmless).
    pub(crate) fn handle_timeout(&mut self, now: Now) {
        if self.poll_timeout().is_none_or(|t| t > now.instant) {
            return;
        }
        let p = &self.presence;
        let quiet = p
            .changed_at
            .map(|t| t + p.quiet())
            .filter(|q| p.flushed_at.is_none_or(|f| f < *q));
        let all_due = p.due.into_iter().chain(quiet).any(|t| t <= now.instant);
        if all_due || p.passed_version != p.version {
            self.flush_peers(now.instant);
        } else {
            self.flush(now.instant, Pass::Written);
        }
    }

    /// A peer joined or left: a new version, not yet seen by anyone.
    pub(super) fn membership_changed(&mut self, now: Instant) {
        if std::mem::take(&mut self.presence.in_round) {
            // A lull, not the end: the lists of that round are stale now.
            self.presence.quiet_for = Some((self.presence.quiet() * 2).min(MAX_QUIET));
        }
        self.presence.version += 1;
        self.presence.dirty = true;
        self.presence.changed_at = Some(now);
    }

    /// Sends the current list to peers that have not seen it: newcomers
    /// first, then the others in registration order from where the last
    /// flush stopped. While membership keeps changing each peer is held
    /// to its rate ([`PresenceLimits`]); once it has been quiet for
    /// [`QUIET`] (longer after an interrupted round, up to [`MAX_QUIET`]),
    /// everyone gets the final list. Past the in-flight cap the
    /// flush stops and retries shortly.
    fn flush_peers(&mut self, now: Instant) {
        self.flush(now, Pass::All);
    }

    /// The flush itself. Before the others' `due`, newcomers (and peers
    /// that asked for a fresh snapshot) are served alone ([`Pass::Fresh`]),
    /// and while a round waits on busy sockets, those whose writers are
    /// done ([`Pass::Written`]): the others' state and timers are left as
    /// they are.
    fn flush(&mut self, now: Instant, pass: Pass) {
        if pass == Pass::All {
            self.presence.flushed_at = Some(now);
            self.presence.passed_version = self.presence.version;
        }
        let written = match pass {
            Pass::Fresh => Vec::new(),
            Pass::All => {
                // Everyone is looked at anyway.
                self.presence.gauge.take_written();
                Vec::new()
            }
            Pass::Written => self.presence.gauge.take_written(),
        };
        let version = self.presence.version;
        let quiet_for = self.presence.quiet();
        let quiet = self
            .presence
            .changed_at
            .is_none_or(|t| now >= t + quiet_for);
        let (mut next_due, mut held, mut stale) = (None::<Instant>, false, false);
        let mut busy = false;
        let mut held_by_rate = false;
        // (Nothing below adds newcomers; the list is put back after.)
        let mut fresh = std::mem::take(&mut self.presence.fresh);
        let n = match pass {
            Pass::All => self.order.len(),
            Pass::Fresh => 0,
            Pass::Written => written.len(),
        };
        let start = self.presence.cursor.min(n);
        let fresh_len = fresh.len();
        let mut visited = fresh_len + n;
        for i in 0..fresh_len + n {
            if pass != Pass::Written && (held || held_by_rate) {
                // The rest wait too (a peer part way through a snapshot is
                // served when its writer is done; the next pass starts at
                // the cursor): a pass costs what it sends, not a walk over
                // every peer still waiting.
                visited = i;
                stale = true;
                break;
            }
            // One lookup per peer: most are up to date or busy.
            let kind = match fresh.get(i) {
                Some(k) => k,
                None if pass == Pass::Written => &written[i - fresh_len],
                None => &self.order[(start + i - fresh_len) % n],
            };
            let Some(p) = self.peers.get(kind) else {
                continue;
            };
            let Some(pp) = p.presence.as_ref() else {
                continue;
            };
            let writing = if pp.deltas {
                p.route.list_pending()
            } else {
                p.route.list_unflushed()
            };
            if pp.writer_busy.get() && !writing {
                pp.writer_busy.set(false);
                self.presence.waiting_writers = self.presence.waiting_writers.saturating_sub(1);
            }
            let limit = pp.next_at.map(|t| t.checked_sub(TOLERANCE).unwrap_or(t));
            // A resync (a delta peer up to date asking for a snapshot) is
            // held to its rate even once quiet.
            let resync = pp.snapshot_due && pp.seen >= version && pp.seen > 0;
            // The rest of a snapshot already charged to the rates.
            let paid = pp.snapshot_next.is_some();
            if pp.seen >= version && !resync && !paid {
                // Up to date; when it could take the next list still
                // bounds when anyone can (while membership changes: once
                // quiet, rates no longer hold lists back).
                if !quiet && let Some(t) = limit.filter(|t| *t > now) {
                    next_due = Some(next_due.map_or(t, |d| d.min(t)));
                }
                continue;
            }
            if (held || held_by_rate) && !paid {
                stale = true;
                continue;
            }
            if (!quiet || resync)
                && !paid
                && let Some(t) = limit.filter(|t| *t > now)
            {
                next_due = Some(next_due.map_or(t, |d| d.min(t)));
                stale = true;
                continue;
            }
            // The hub's own rate while membership keeps changing.
            let hub_limit = self
                .presence
                .hub_next_at
                .map(|t| t.checked_sub(TOLERANCE).unwrap_or(t));
            if !quiet
                && !paid
                && let Some(t) = hub_limit.filter(|t| *t > now)
            {
                next_due = Some(next_due.map_or(t, |d| d.min(t)));
                stale = true;
                held_by_rate = true;
                if pass == Pass::All && i >= fresh_len {
                    self.presence.cursor = (start + i - fresh_len) % n;
                }
                continue;
            }
            // One list per socket at a time: a writer still busy with the
            // previous one gets the newest when it is done. (A v1 list still
            // queued is replaced in the queue; a delta peer's messages
            // chain, so one of them waits until the previous is written.)
            if writing {
                if !pp.writer_busy.replace(true) {
                    self.presence.waiting_writers += 1;
                }
                busy = true;
                stale = true;
                continue;
            }
            let kind = kind.clone();
            let in_flight = self.presence.gauge.bytes();
            self.presence.parked = self.presence.parked.min(in_flight);
            let cap = self.config.presence.lists_in_flight_bytes;
            if in_flight - self.presence.parked >= cap {
                // The wait counts from the last list a writer gave back:
                // while writers make progress, the cap holds.
                let released = self.presence.gauge.released();
                let since = match self.presence.held_since {
                    Some((since, at)) if at == released => since,
                    _ => {
                        self.presence.held_since = Some((now, released));
                        self.presence.forced_at = None;
                        now
                    }
                };
                let waited = now.saturating_duration_since(since);
                let parked = in_flight.min(MAX_PARKED * cap);
                if waited >= PARK_AFTER && parked > self.presence.parked {
                    // No list given back for PARK_AFTER: what is in flight
                    // sits with sockets that stopped writing. It stops
                    // counting (up to MAX_PARKED caps) and lists go again.
                    self.presence.parked = parked;
                    self.presence.held_since = None;
                } else if now.saturating_duration_since(self.presence.forced_at.unwrap_or(since))
                    >= STUCK
                {
                    // Held back too long: one list goes anyway.
                    self.presence.forced_at = Some(now);
                } else {
                    held = true;
                    stale = true;
                    if pass == Pass::All && i >= fresh_len {
                        self.presence.cursor = (start + i - fresh_len) % n;
                    }
                    continue;
                }
            } else {
                self.presence.held_since = None;
            }
            if !self.send_list(now, &kind) {
                // Refused by its outbox: a snapshot when its rate allows.
                stale = true;
                let t = self
                    .peers
                    .get(&kind)
                    .and_then(|p| p.presence.as_ref())
                    .and_then(|pp| pp.next_at)
                    .unwrap_or(now + RETRY);
                next_due = Some(next_due.map_or(t, |d| d.min(t)));
            } else if let Some(pp) = self
                .peers
                .get(&kind)
                .and_then(|p| p.presence.as_ref())
                .filter(|pp| pp.seen < version || pp.snapshot_due)
            {
                // A delta peer is sent a window of messages per flush (its
                // socket's write buffer holds a few parts, not a whole
                // list): the rest once its writer has flushed these.
                if !pp.writer_busy.replace(true) {
                    self.presence.waiting_writers += 1;
                }
                stale = true;
                busy = true;
            }
        }
        let peers = &self.peers;
        let unvisited = fresh.split_off(visited.min(fresh_len));
        // A peer part way through its snapshot is served as its writer is
        // done (`Pass::Written`), no longer first.
        fresh.retain(|k| {
            peers
                .get(k)
                .and_then(|p| p.presence.as_ref())
                .is_some_and(|pp| {
                    (pp.seen < version || pp.snapshot_due) && pp.snapshot_next.is_none()
                })
        });
        fresh.extend(unvisited);
        fresh.append(&mut self.presence.fresh);
        self.presence.fresh = fresh;
        if pass != Pass::All {
            // A peer held back is served with the others, at `due` (in
            // the future, or this was a pass over all), or sooner; one
            // whose writer is busy once it is done.
            let retry = held.then_some(now + RETRY);
            if let Some(t) = retry.or(next_due.filter(|_| stale)) {
                self.presence.due = Some(self.presence.due.map_or(t, |d| d.min(t)));
            }
            if pass == Pass::Written && self.presence.waiting_writers == 0 && !held {
                // Every busy writer is done: one pass over all settles
                // the round (or finds who is still behind).
                self.presence.written_due = None;
                self.flush(now, Pass::All);
            } else if self.presence.waiting_writers > 0 {
                // (Never later than already asked: a storm's newcomer
                // passes must not keep postponing the written ones.)
                let t = now + RETRY;
                let due = self
                    .presence
                    .written_due
                    .filter(|d| *d > now)
                    .map_or(t, |d| d.min(t));
                self.presence.written_due = Some(due);
            }
            return;
        }
        if stale {
            tracing::debug!(
                version,
                quiet,
                held,
                held_by_rate,
                busy,
                in_flight = self.presence.gauge.bytes(),
                "peer lists held back"
            );
        }
        self.presence.dirty = stale;
        if !stale {
            // Everyone holds this version: the deltas built on the way
            // are never asked for again.
            self.presence.deltas.settled();
        }
        if quiet {
            self.presence.in_round = stale;
            if !stale {
                self.presence.quiet_for = None;
            }
        }
        // A pass over every peer costs O(peers): at most one per RETRY.
        self.presence.due = if held {
            Some(now + RETRY)
        } else if stale {
            next_due.map(|t| t.max(now + RETRY))
        } else {
            None
        };
        self.presence.written_due = busy.then_some(now + RETRY);
    }

    /// Queues the current list for `kind` and records that it saw it (for
    /// a delta peer: a snapshot or a delta, recorded once queued). False
    /// when its outbox refused the message: it has not seen it.
    fn send_list(&mut self, now: Instant, kind: &Arc<str>) -> bool {
        let delta_peer = self
            .peers
            .get(kind)
            .and_then(|p| p.presence.as_ref())
            .map(|pp| (pp.deltas, pp.seen, pp.snapshot_due));
        if let Some((true, _, _)) = delta_peer {
            return self.send_deltas(now, kind);
        }
        let list = self.current_list();
        let limits = self.config.presence;
        let Some(p) = self.peers.get_mut(kind) else {
            return true;
        };
        let Some(pp) = p.presence.as_mut() else {
            return true;
        };
        let seen = std::mem::replace(&mut pp.seen, list.version);
        let mut item = OutItem::new(
            None,
            msg_type::PEERS_UPDATE,
            self.server.clone(),
            kind.clone(),
            Some(list.data.clone()),
        );
        let size = item.size();
        Self::charge_rates(&mut self.presence, limits, now, &mut pp.next_at, size);
        item.prefix = Some(list.prefix.clone());
        item.gauge = Some(self.presence.gauge.clone());
        let route = p.route.clone();
        if matches!(self.push_item(&route, kind, item), Push::Overflow { .. }) {
            // Refused (its outbox is full): it has not seen this version,
            // so it gets the then current list once its rate allows.
            if let Some(pp) = self.peers.get_mut(kind).and_then(|p| p.presence.as_mut()) {
                pp.seen = seen;
            }
            return false;
        }
        true
    }

    /// Charges `bytes` of lists to a peer's rate (`next_at`) and to the
    /// hub's.
    fn charge_rates(
        presence: &mut Presence,
        limits: PresenceLimits,
        now: Instant,
        next_at: &mut Option<Instant>,
        bytes: usize,
    ) {
        let cost = |rate: f64| Duration::from_secs_f64(bytes as f64 / rate);
        *next_at =
            Some(next_at.map_or(now, |t| t.max(now)) + cost(limits.list_bytes_per_peer_per_sec));
        // The hub's debt is capped: a final round does not mute the next
        // storm for long.
        let hub =
            presence.hub_next_at.map_or(now, |t| t.max(now)) + cost(limits.list_bytes_per_sec);
        presence.hub_next_at = Some(hub.min(now + HUB_DEBT));
    }

    /// Queues for a delta peer its next messages towards the current
    /// version, about [`DELTA_WINDOW`] bytes of them at most (the rest once
    /// its socket has written these). False when its outbox refused one.
    fn send_deltas(&mut self, now: Instant, kind: &Arc<str>) -> bool {
        let version = self.presence.version;
        let mut sent = 0;
        loop {
            let Some((seen, snapshot_due)) = self
                .peers
                .get(kind)
                .and_then(|p| p.presence.as_ref())
                .filter(|pp| pp.seen < version || pp.snapshot_due)
                .map(|pp| (pp.seen, pp.snapshot_due))
            else {
                return true;
            };
            if sent >= DELTA_WINDOW {
                return true;
            }
            match self.send_delta(now, kind, seen, snapshot_due) {
                Some(bytes) => sent += bytes,
                None => return false,
            }
        }
    }

    /// Queues for a delta peer the next message towards the current
    /// version: the next part of the snapshot it is part way through (its
    /// version's deltas follow), else the first part of the current
    /// version's snapshot or the next delta from what it holds. A snapshot
    /// is charged to the rates whole, at its first part. Its size, or `None` when its outbox refused the message: its next
    /// send is then a fresh snapshot.
    fn send_delta(
        &mut self,
        now: Instant,
        kind: &Arc<str>,
        seen: u64,
        snapshot_due: bool,
    ) -> Option<usize> {
        let sending = self
            .peers
            .get_mut(kind)
            .and_then(|p| p.presence.as_mut())
            .and_then(|pp| pp.snapshot_next.take());
        // (the message, its type, the snapshot and part it is, bytes to charge)
        let (built, msg_type, snapshot, charge) = match sending {
            Some((v, i, parts)) if i < parts.len() => (
                parts[i].clone(),
                msg_type::PEERS_SNAPSHOT,
                Some((v, i, parts)),
                0,
            ),
            _ => match self.next_presence(seen, snapshot_due) {
                Next::Snapshot(v, parts) => {
                    let all = parts.iter().map(|b| b.data.len() + 200).sum();
                    (
                        parts[0].clone(),
                        msg_type::PEERS_SNAPSHOT,
                        Some((v, 0, parts)),
                        all,
                    )
                }
                Next::Delta(b) => {
                    let charge = b.data.len() + 200;
                    (b, msg_type::PEERS_DELTA, None, charge)
                }
            },
        };
        let mut item = OutItem::new(
            None,
            msg_type,
            self.server.clone(),
            kind.clone(),
            Some(built.data.clone()),
        );
        item.prefix = Some(built.prefix.clone());
        item.gauge = Some(self.presence.gauge.clone());
        let limits = self.config.presence;
        let size = item.size();
        let Some(p) = self.peers.get_mut(kind) else {
            return Some(size);
        };
        let Some(pp) = p.presence.as_mut() else {
            return Some(size);
        };
        if charge > 0 {
            Self::charge_rates(&mut self.presence, limits, now, &mut pp.next_at, charge);
        }
        let route = p.route.clone();
        let queued = matches!(self.push_item(&route, kind, item), Push::Queued { .. });
        let Some(pp) = self.peers.get_mut(kind).and_then(|p| p.presence.as_mut()) else {
            return queued.then_some(size);
        };
        match (queued, snapshot) {
            (false, _) => {
                // A snapshot's parts may be half queued: only a whole
                // snapshot repairs.
                pp.snapshot_due = true;
                pp.snapshot_next = None;
            }
            (true, Some((v, i, parts))) if i + 1 < parts.len() => {
                pp.snapshot_next = Some((v, i + 1, parts));
            }
            (true, _) => {
                pp.seen = built.to;
                pp.snapshot_due = false;
                pp.snapshot_next = None;
            }
        }
        queued.then_some(size)
    }

    /// The list of the current version, built once per version from the
    /// peers' cached entries, in registration order, as long as it fits
    /// `max_peer_list_bytes` (docs/protocol.md, "Large peer lists").
    fn current_list(&mut self) -> ListRef {
        let version = self.presence.version;
        if let Some(l) = &self.presence.cache
            && l.version == version
        {
            return ListRef {
                version,
                data: l.data.clone(),
                prefix: l.prefix.clone(),
            };
        }
        // This hub's peers in registration order, then the other hubs'
        // (a cluster), oldest first.
        let remote = self.remote_entries();
        let all = self
            .order
            .iter()
            .filter_map(|k| self.peers.get(k).and_then(|p| p.presence.as_ref()))
            .map(|pp| &pp.entry)
            .chain(remote.iter().map(|e| &**e));
        // `{"peers":[` and `]}` around the entries, commas between.
        let mut bytes = 12;
        let mut listed = 0;
        for entry in all.clone() {
            let add = entry.len() + usize::from(listed > 0);
            if bytes + add > self.config.max_peer_list_bytes {
                break;
            }
            bytes += add;
            listed += 1;
        }
        let data = Arc::new(CanonicalData::object_of_array("peers", all.take(listed)));
        let omitted = self.peers.len() + remote.len() - listed;
        if omitted > 0 && !self.presence.truncated {
            tracing::warn!(
                peers = self.peers.len(),
                listed,
                max_peer_list_bytes = self.config.max_peer_list_bytes,
                "the peer list is larger than max_peer_list_bytes: peers.update lists the \
                 earliest peers that fit"
            );
        }
        self.presence.truncated = omitted > 0;
        let prefix = Arc::new(PrefixCell::new());
        self.presence.cache = Some(List {
            version,
            data: data.clone(),
            prefix: prefix.clone(),
        });
        ListRef {
            version,
            data,
            prefix,
        }
    }

    /// Bytes of lists queued or being written (tests).
    #[cfg(test)]
    pub(super) fn lists_in_flight(&self) -> usize {
        self.presence.gauge.bytes()
    }

    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut infos: Vec<PeerInfo> = self
            .order
            .iter()
            .filter_map(|k| self.peers.get(k).map(Box::as_ref))
            .map(peer_info)
            .collect();
        infos.extend(self.remote_peer_infos());
        infos
    }

    /// `link.peer.list`: every peer, or the one named by `{kind}`.
    pub(super) fn peer_list(&self, rpc_data: Option<&Value>) -> Value {
        let peers = match rpc_data.and_then(|d| d.get("kind")).and_then(Value::as_str) {
            Some(kind) => match self.peers.get(kind) {
                Some(p) => vec![peer_info(p)],
                None => self
                    .remote_peer_infos()
                    .into_iter()
                    .filter(|p| p.kind == kind)
                    .collect(),
            },
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
