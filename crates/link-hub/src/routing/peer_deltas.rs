//! The `peers.delta` extension on the hub (docs/protocol.md §5.2.2): a
//! bounded log of membership changes, one per version, and what a peer that
//! asked for the extension is sent instead of `peers.update`: a snapshot
//! (`peers.snapshot`, in parts) when it has none or is too far behind, else
//! `peers.delta`s from the version it holds to the current one.
//!
//! The log is cut into segments of about [`PART_BYTES`] of entries, at
//! version boundaries fixed when the changes are recorded. A peer behind is
//! sent the delta from what it holds to the end of its segment, then one
//! delta per segment, then the open segment's delta to the current version:
//! every peer at a segment's start shares that segment's delta, built once,
//! so a join storm costs O(changes) to build and hold, not O(changes) per
//! peer behind. Pacing is membership.rs's (the same per-peer and hub-wide
//! rates, one list per socket in flight, the same in-flight gauge), so a
//! join storm costs each peer one delta per interval covering everything
//! since what it saw.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use link_protocol::CanonicalData;
use link_protocol::presence;

use super::Routing;
use crate::outbox::PrefixCell;

/// Changes kept in the log; a peer further behind gets a snapshot.
pub(super) const LOG_CAP: usize = 16_384;

/// A snapshot part, and each segment of the log, holds entries up to about
/// this many bytes: far below any frame cap a client may set (our client's
/// default is 1 MiB), and small enough that a socket's write buffer does
/// not grow with the size of the bus.
pub(super) const PART_BYTES: usize = 8 * 1024;

/// A snapshot is sent again, followed by the deltas since, while those
/// deltas are at most this fraction of it.
const REUSE_FRACTION: usize = 4;

/// Deltas from a base inside a closed segment to its end are kept for other
/// peers at the same base up to about this many bytes in all; past it they
/// are forgotten (and built again when asked).
const PARTIAL_BYTES: usize = 4 * 1024 * 1024;

/// What one membership version changed.
#[derive(Clone, Debug)]
pub(super) enum Change {
    /// A kind registered (appended to the registration order).
    Joined(Arc<CanonicalData>),
    /// A kind re-registered by a new socket (keeps its place).
    Changed(Arc<CanonicalData>),
    /// A kind left.
    Left,
}

impl Change {
    /// About how many bytes it adds to a delta.
    fn bytes(&self, kind: &str) -> usize {
        match self {
            Change::Joined(e) | Change::Changed(e) => e.len() + 1,
            Change::Left => kind.len() + 3,
        }
    }
}

/// One message's data and the signed prefix its recipients share.
#[derive(Clone)]
pub(super) struct Built {
    pub(super) data: Arc<CanonicalData>,
    pub(super) prefix: Arc<PrefixCell>,
    /// The version a client holds once it applied this message (a
    /// snapshot part: the snapshot's, once the last part is in).
    pub(super) to: u64,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("bytes", &self.data.len())
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Built {
    fn new(data: CanonicalData, to: u64) -> Self {
        Self {
            data: Arc::new(data),
            prefix: Arc::new(PrefixCell::new()),
            to,
        }
    }
}

/// One recorded change.
struct Logged {
    version: u64,
    kind: Arc<str>,
    change: Change,
    /// Bytes of every change recorded up to and including this one.
    end: u64,
}

/// The log and the messages built from it.
#[derive(Default)]
pub(super) struct DeltaLog {
    /// Versions contiguous, oldest first.
    log: VecDeque<Logged>,
    /// Sum of every current peer's compact entry (a snapshot's size, about).
    entry_bytes: usize,
    /// The versions closed segments end at, ascending; a segment runs from
    /// the cut before it (exclusive) to its cut (inclusive).
    cuts: VecDeque<u64>,
    /// Bytes of the changes after the last cut.
    open_bytes: usize,
    /// Deltas that end at a cut, by base: fixed once built, shared by
    /// every peer at that base, kept while the base is in the log.
    fixed: HashMap<u64, Built>,
    /// Bytes of the deltas in `fixed` whose base is not a cut.
    partial_bytes: usize,
    /// Deltas from a base after the last cut to `open_to`, by base
    /// (cleared when the version moves).
    open: HashMap<u64, Built>,
    open_to: u64,
    /// The snapshot of a version, in parts (a peer part way through an
    /// older one holds that one's parts itself).
    snapshot: Option<(u64, Arc<[Built]>)>,
}

impl DeltaLog {
    /// Records the change that made `version`.
    pub(super) fn record(&mut self, version: u64, kind: Arc<str>, change: Change) {
        let add = change.bytes(&kind);
        if self.open_bytes > 0 && self.open_bytes + add > PART_BYTES {
            self.cuts.push_back(version - 1);
            self.open_bytes = 0;
        }
        self.open_bytes += add;
        let end = self.log.back().map_or(0, |l| l.end) + add as u64;
        self.log.push_back(Logged {
            version,
            kind,
            change,
            end,
        });
        let mut trimmed = false;
        while self.log.len() > LOG_CAP {
            self.log.pop_front();
            trimmed = true;
        }
        if trimmed {
            let oldest = self.oldest_base(version);
            let before = self.cuts.len();
            while self.cuts.front().is_some_and(|c| *c < oldest) {
                self.cuts.pop_front();
            }
            if self.cuts.len() != before {
                self.fixed.retain(|base, _| *base >= oldest);
            }
        }
    }

    pub(super) fn add_entry_bytes(&mut self, add: usize, remove: usize) {
        self.entry_bytes = (self.entry_bytes + add).saturating_sub(remove);
    }

    /// The oldest base a delta can be built from.
    fn oldest_base(&self, version: u64) -> u64 {
        self.log.front().map_or(version, |l| l.version - 1)
    }

    /// Bytes of the changes recorded up to and including version `v`.
    fn bytes_through(&self, v: u64) -> u64 {
        let i = self.log.partition_point(|l| l.version <= v);
        match i.checked_sub(1).and_then(|i| self.log.get(i)) {
            Some(l) => l.end,
            None => self
                .log
                .front()
                .map_or(0, |l| l.end - l.change.bytes(&l.kind) as u64),
        }
    }

    /// About how many bytes a snapshot's entries take.
    pub(super) fn snapshot_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// Every peer holds the current version: no delta built so far will
    /// be asked for again (a peer behind later is behind a newer version),
    /// and no change recorded so far either (deltas start from the current
    /// version; a newcomer gets a snapshot of it). Without this the log
    /// kept every change up to [`LOG_CAP`] on a bus that churns: the
    /// soak's hour grew the hub by about 1 MiB (docs/reliability.md).
    ///
    /// What is kept: the snapshot's size, the cached snapshot and where
    /// open deltas ended.
    pub(super) fn settled(&mut self) {
        *self = Self {
            entry_bytes: self.entry_bytes,
            open_to: self.open_to,
            snapshot: self.snapshot.take(),
            ..Self::default()
        };
    }

    /// Forgets everything (the hub stopped).
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Deltas kept for later peers (tests).
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.fixed.len() + self.open.len()
    }

    /// Changes held in the log (tests).
    #[cfg(test)]
    pub(super) fn logged(&self) -> usize {
        self.log.len()
    }
}

/// What a delta peer is sent next: the current version's snapshot parts
/// (with that version), or the next delta from what it holds (it says the
/// version it leads to).
pub(super) enum Next {
    Snapshot(u64, Arc<[Built]>),
    Delta(Built),
}

impl Routing {
    /// What a peer that asked for deltas, holding `seen` (or nothing when
    /// `snapshot_due`), gets next towards the current version.
    pub(super) fn next_presence(&mut self, seen: u64, snapshot_due: bool) -> Next {
        let version = self.presence.version;
        let log = &self.presence.deltas;
        if snapshot_due || seen < log.oldest_base(version) {
            // A newcomer (it never held a list) may be sent a recent
            // snapshot and the deltas since; a peer repairing a gap or a
            // refusal gets one of the current version.
            return self.snapshot(seen == 0);
        }
        let total = log.bytes_through(version) - log.bytes_through(seen);
        if total > log.snapshot_bytes().max(1024) as u64 {
            // More to say than the whole list (mostly departures).
            return self.snapshot(false);
        }
        let i = log.cuts.partition_point(|c| *c <= seen);
        if let Some(&cut) = log.cuts.get(i) {
            if let Some(b) = self.presence.deltas.fixed.get(&seen) {
                return Next::Delta(b.clone());
            }
            let b = Built::new(self.build_delta(seen, cut), cut);
            let deltas = &mut self.presence.deltas;
            let at_cut = i > 0 && deltas.cuts[i - 1] == seen;
            if !at_cut {
                deltas.partial_bytes += b.data.len();
                if deltas.partial_bytes > PARTIAL_BYTES {
                    let cuts = &deltas.cuts;
                    deltas
                        .fixed
                        .retain(|base, _| cuts.binary_search(base).is_ok());
                    deltas.partial_bytes = b.data.len();
                }
            }
            deltas.fixed.insert(seen, b.clone());
            return Next::Delta(b);
        }
        if self.presence.deltas.open_to != version {
            self.presence.deltas.open.clear();
            self.presence.deltas.open_to = version;
        }
        if let Some(b) = self.presence.deltas.open.get(&seen) {
            return Next::Delta(b.clone());
        }
        let b = Built::new(self.build_delta(seen, version), version);
        self.presence.deltas.open.insert(seen, b.clone());
        Next::Delta(b)
    }

    /// The net change from `base` to `version`: a kind that left and came
    /// back is listed as left and joined (it moved to the end of the
    /// registration order); one re-registered in place as changed.
    fn build_delta(&self, base: u64, version: u64) -> CanonicalData {
        struct Net {
            in_base: bool,
            entry: Option<Arc<CanonicalData>>,
            moved: bool,
            /// Position of its last join among the log's changes.
            joined_at: usize,
        }
        let mut net: HashMap<&Arc<str>, Net> = HashMap::new();
        let mut touched: Vec<&Arc<str>> = Vec::new();
        let log = &self.presence.deltas.log;
        let skip = log.partition_point(|l| l.version <= base);
        let end = log.partition_point(|l| l.version <= version);
        for (i, l) in log.iter().enumerate().take(end).skip(skip) {
            let (kind, change) = (&l.kind, &l.change);
            let n = net.entry(kind).or_insert_with(|| {
                touched.push(kind);
                Net {
                    in_base: !matches!(change, Change::Joined(_)),
                    entry: None,
                    moved: false,
                    joined_at: 0,
                }
            });
            match change {
                Change::Joined(e) => {
                    n.entry = Some(e.clone());
                    n.moved = n.in_base;
                    n.joined_at = i;
                }
                Change::Changed(e) => n.entry = Some(e.clone()),
                Change::Left => n.entry = None,
            }
        }
        let mut left: Vec<&str> = Vec::new();
        let mut changed: Vec<&Arc<str>> = Vec::new();
        let mut joined: Vec<(usize, &CanonicalData)> = Vec::new();
        for kind in touched {
            let Some(n) = net.get(kind) else { continue };
            match (&n.entry, n.in_base) {
                (None, true) => left.push(kind),
                (None, false) => {}
                (Some(_), true) if !n.moved => changed.push(kind),
                (Some(e), in_base) => {
                    if in_base {
                        left.push(kind);
                    }
                    joined.push((n.joined_at, e));
                }
            }
        }
        joined.sort_by_key(|(at, _)| *at);
        if changed.len() > 1 {
            // In registration order, as a v1 client diffing lists meets them.
            let pos: HashMap<&Arc<str>, usize> =
                self.order.iter().enumerate().map(|(i, k)| (k, i)).collect();
            changed.sort_by_key(|k| pos.get(k).copied().unwrap_or(usize::MAX));
        }
        let changed = changed
            .iter()
            .filter_map(|k| net.get(k).and_then(|n| n.entry.as_deref()));
        presence::delta_data(
            base,
            version,
            changed,
            joined.into_iter().map(|(_, e)| e),
            left,
        )
    }

    /// The current version's snapshot in parts, built once per version;
    /// when `recent`, a cached older one may do (the deltas since follow).
    fn snapshot(&mut self, recent: bool) -> Next {
        let version = self.presence.version;
        let log = &self.presence.deltas;
        if let Some((v, parts)) = &log.snapshot
            && (*v == version || (recent && *v >= log.oldest_base(version)))
        {
            // A recent snapshot and the deltas since (at most a quarter of
            // its size: fewer bytes than a snapshot, so a peer sent it is
            // then sent those deltas) rather than a new one: in a join
            // storm newcomers share a few snapshots, not one per version.
            let since = log.bytes_through(version) - log.bytes_through(*v);
            if since <= (log.snapshot_bytes() / REUSE_FRACTION) as u64 {
                return Next::Snapshot(*v, parts.clone());
            }
        }
        // This hub's peers, then the other hubs' (a cluster), as in v1 lists.
        let remote = self.remote_compacts();
        let entries: Vec<&CanonicalData> = self
            .order
            .iter()
            .filter_map(|k| self.peers.get(k).and_then(|p| p.presence.as_ref()))
            .map(|pp| &*pp.compact)
            .chain(remote.iter().map(|e| &**e))
            .collect();
        // Cut into runs of at most PART_BYTES (at least one entry).
        let mut runs: Vec<&[&CanonicalData]> = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, e) in entries.iter().enumerate() {
            if i > start && bytes + e.len() + 1 > PART_BYTES {
                runs.push(&entries[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += e.len() + 1;
        }
        runs.push(&entries[start..]);
        let n = runs.len() as u32;
        let parts: Arc<[Built]> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                Built::new(
                    presence::snapshot_data(version, i as u32, n, run.iter().copied()),
                    version,
                )
            })
            .collect();
        self.presence.deltas.snapshot = Some((version, parts.clone()));
        Next::Snapshot(version, parts)
    }

    /// `peers.resync` from `kind`: if it asked for deltas, it gets a fresh
    /// snapshot when its rate allows (a resync never bypasses the per-peer
    /// rate, even once membership is quiet).
    pub(super) fn peers_resync(&mut self, kind: &Arc<str>) {
        let Some(pp) = self.peers.get_mut(kind).and_then(|p| p.presence.as_mut()) else {
            return;
        };
        if !pp.deltas || pp.snapshot_due {
            return;
        }
        pp.snapshot_due = true;
        self.presence.dirty = true;
        if !self.presence.fresh.contains(kind) {
            self.presence.fresh.push(kind.clone());
        }
    }
}
