//! Replay protection: the time window and the per-sender id cache
//! (protocol §4.1 steps 8–9, §0.1).
//!
//! Semantics shared with the reference:
//! - `|now − ts| > window` is `replay-window` (a non-number `ts` counts as 0);
//! - an id already seen from the same sender within the window is
//!   `replay-id`; `rpc.response` is exempt from the id check (not from the
//!   window);
//! - each sender has an insertion-ordered cache of at most `max_recent_ids`
//!   ids, each expiring `window` ms after it was recorded;
//! - a window of 0 disables both checks.
//!
//! Where we do better (protocol §0.1): a sender's ids are **not** forgotten when
//! it disconnects, so frames captured from a departed peer (its hello
//! included) cannot be replayed inside the window. Memory stays bounded by
//! `max_total_ids` across all senders. When an id has to be evicted before
//! it expired (per-sender or total cap), the sender's *horizon* rises to that
//! frame's `ts`, and any later frame from that sender with `ts` at or below
//! the horizon is refused as `replay-id`: eviction never reopens a replay.
//! A well-behaved peer stamps frames in order, so its new frames are always
//! above the horizon. See `docs/adr/0003-replay-memory.md`.

mod recent;
mod ring;

use lru::LruCache;

use crate::error::{DropReason, ProtocolError};
use recent::{RecentIds, Seen};

/// Default replay window (`replayWindowMs`), 5 minutes.
pub const DEFAULT_REPLAY_WINDOW_MS: u64 = 300_000;
/// Default per-sender id cache size (`maxRecentIds`).
pub const DEFAULT_MAX_RECENT_IDS: usize = 10_000;
/// Default cap on ids held across all senders (about 40 MB at worst).
pub const DEFAULT_MAX_TOTAL_IDS: usize = 262_144;

/// Replay guard settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Window in ms; 0 disables replay protection.
    pub window_ms: u64,
    /// Ids kept per sender.
    pub max_recent_ids: usize,
    /// Ids kept across all senders.
    pub max_total_ids: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_REPLAY_WINDOW_MS,
            max_recent_ids: DEFAULT_MAX_RECENT_IDS,
            max_total_ids: DEFAULT_MAX_TOTAL_IDS,
        }
    }
}

#[derive(Debug, Default)]
struct SenderIds {
    ids: RecentIds,
    /// Highest `ts` of an id evicted before it expired.
    horizon: Option<f64>,
}

/// Anything that can run the replay checks for a frame: a [`ReplayGuard`],
/// or a driver's wrapper around several (e.g. shards behind locks).
pub trait ReplayCheck {
    /// Runs the window and id checks for a frame from `sender` and records
    /// its id (see [`ReplayGuard::check`]).
    fn check(
        &mut self,
        sender: &str,
        id: &str,
        ts: f64,
        exempt_id: bool,
        now_ms: f64,
    ) -> Result<(), ProtocolError>;
}

impl ReplayCheck for ReplayGuard {
    fn check(
        &mut self,
        sender: &str,
        id: &str,
        ts: f64,
        exempt_id: bool,
        now_ms: f64,
    ) -> Result<(), ProtocolError> {
        ReplayGuard::check(self, sender, id, ts, exempt_id, now_ms)
    }
}

/// Replay window and per-sender id cache.
#[derive(Debug)]
pub struct ReplayGuard {
    config: ReplayConfig,
    senders: LruCache<String, SenderIds>,
    total: usize,
}

impl ReplayGuard {
    /// A guard with the given settings.
    pub fn new(config: ReplayConfig) -> Self {
        Self {
            config,
            senders: LruCache::unbounded(),
            total: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ReplayConfig {
        &self.config
    }

    /// Number of ids currently held (the `recentIdsSize` health figure).
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Applies the window check only (used where the id check does not).
    pub fn check_window(&self, ts: f64, now_ms: f64) -> Result<(), ProtocolError> {
        let window = self.config.window_ms as f64;
        if self.config.window_ms == 0 {
            return Ok(());
        }
        let skew = now_ms - ts;
        if skew.abs() > window || skew.is_nan() {
            return Err(ProtocolError {
                skew: Some(skew),
                ..ProtocolError::new(DropReason::ReplayWindow)
            });
        }
        Ok(())
    }

    /// Runs both checks for a frame from `sender` and records its id.
    ///
    /// `exempt_id` is true for `rpc.response`.
    pub fn check(
        &mut self,
        sender: &str,
        id: &str,
        ts: f64,
        exempt_id: bool,
        now_ms: f64,
    ) -> Result<(), ProtocolError> {
        self.check_window(ts, now_ms)?;
        if self.config.window_ms == 0 || exempt_id {
            return Ok(());
        }
        let window = self.config.window_ms as f64;
        let max_per_sender = self.config.max_recent_ids.max(1);
        let entry = self
            .senders
            .get_or_insert_mut_ref(sender, SenderIds::default);
        self.total -= expire(entry, now_ms, window);
        // Remembered until the frame could no longer pass the window check:
        // a frame stamped ahead of our clock stays valid until ts + window.
        let seen = Seen {
            ts,
            at: now_ms.max(ts),
        };
        if entry.horizon.is_some_and(|h| ts <= h) || !entry.ids.insert(id, seen) {
            return Err(ProtocolError::new(DropReason::ReplayId).with_kind(sender));
        }
        self.total += 1;
        while entry.ids.len() > max_per_sender {
            evict_oldest(entry);
            self.total -= 1;
        }
        self.enforce_total(now_ms);
        Ok(())
    }

    /// Drops expired ids of every sender, and senders left with nothing to
    /// remember. Call it from a periodic timer; `check` also expires lazily.
    pub fn sweep(&mut self, now_ms: f64) {
        let window = self.config.window_ms as f64;
        let mut removed = 0;
        for (_, entry) in self.senders.iter_mut() {
            removed += expire(entry, now_ms, window);
            if entry.horizon.is_some_and(|h| now_ms - h > window) {
                entry.horizon = None;
            }
        }
        self.total -= removed;
        let empty: Vec<String> = self
            .senders
            .iter()
            .filter(|(_, e)| e.ids.is_empty() && e.horizon.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in empty {
            self.senders.pop(&key);
        }
    }

    /// Evicts oldest ids of the least recently active senders until the
    /// total fits the budget. A sender left without ids keeps its entry (and
    /// horizon) until `sweep` finds the horizon expired, so budget churn
    /// never reopens a replay.
    fn enforce_total(&mut self, now_ms: f64) {
        let window = self.config.window_ms as f64;
        while self.total > self.config.max_total_ids.max(1) {
            // Least recently active sender that still holds ids.
            let Some(key) = self
                .senders
                .iter()
                .rev()
                .find(|(_, e)| !e.ids.is_empty())
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            let Some(entry) = self.senders.peek_mut(&key) else {
                return;
            };
            let expired = expire(entry, now_ms, window);
            self.total -= expired;
            if expired == 0 {
                evict_oldest(entry);
                self.total -= 1;
            }
        }
    }
}

/// Removes ids recorded more than `window` ms ago; returns how many.
fn expire(entry: &mut SenderIds, now_ms: f64, window: f64) -> usize {
    let mut n = 0;
    while let Some(seen) = entry.ids.oldest() {
        if now_ms - seen.at > window {
            entry.ids.pop_oldest();
            n += 1;
        } else {
            break;
        }
    }
    n
}

/// Evicts the oldest id before its expiry, raising the horizon.
fn evict_oldest(entry: &mut SenderIds) {
    if let Some(seen) = entry.ids.pop_oldest() {
        entry.horizon = Some(entry.horizon.map_or(seen.ts, |h| h.max(seen.ts)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(window_ms: u64, max_recent_ids: usize, max_total_ids: usize) -> ReplayGuard {
        ReplayGuard::new(ReplayConfig {
            window_ms,
            max_recent_ids,
            max_total_ids,
        })
    }

    fn reason(r: Result<(), ProtocolError>) -> Option<DropReason> {
        r.err().map(|e| e.reason())
    }

    #[test]
    fn window_rejects_both_directions() {
        let g = guard(1000, 10, 100);
        assert_eq!(g.check_window(5000.0, 6000.0), Ok(()));
        let err = g.check_window(4999.0, 6000.0).unwrap_err();
        assert_eq!(err.reason(), DropReason::ReplayWindow);
        assert_eq!(err.skew, Some(1001.0));
        assert_eq!(
            reason(g.check_window(7001.0, 6000.0)),
            Some(DropReason::ReplayWindow)
        );
        assert_eq!(
            reason(g.check_window(0.0, 6000.0)),
            Some(DropReason::ReplayWindow)
        );
    }

    #[test]
    fn ids_are_per_sender_and_rpc_response_is_exempt() {
        let mut g = guard(1000, 10, 100);
        assert_eq!(g.check("a", "x", 10.0, false, 10.0), Ok(()));
        assert_eq!(
            reason(g.check("a", "x", 11.0, false, 11.0)),
            Some(DropReason::ReplayId)
        );
        assert_eq!(g.check("b", "x", 11.0, false, 11.0), Ok(()));
        assert_eq!(g.check("a", "r", 12.0, true, 12.0), Ok(()));
        assert_eq!(g.check("a", "r", 12.0, true, 12.0), Ok(()));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn ids_expire_after_the_window() {
        let mut g = guard(1000, 10, 100);
        g.check("a", "x", 0.0, false, 0.0).unwrap();
        // Still remembered at the window's edge, then forgotten (the frame's
        // own ts must be fresh to pass the window check).
        assert_eq!(
            reason(g.check("a", "x", 1000.0, false, 1000.0)),
            Some(DropReason::ReplayId)
        );
        assert_eq!(g.check("a", "x", 1001.0, false, 1001.0), Ok(()));
    }

    #[test]
    fn zero_window_disables_everything() {
        let mut g = guard(0, 10, 100);
        assert_eq!(g.check("a", "x", 0.0, false, 1e12), Ok(()));
        assert_eq!(g.check("a", "x", 0.0, false, 1e12), Ok(()));
        assert!(g.is_empty());
    }

    #[test]
    fn per_sender_cap_evicts_oldest_but_horizon_keeps_it_refused() {
        let mut g = guard(10_000, 2, 100);
        g.check("a", "1", 100.0, false, 100.0).unwrap();
        g.check("a", "2", 101.0, false, 101.0).unwrap();
        g.check("a", "3", 102.0, false, 102.0).unwrap();
        assert_eq!(g.len(), 2);
        // "1" was evicted early: replaying it is still refused via the horizon.
        assert_eq!(
            reason(g.check("a", "1", 100.0, false, 103.0)),
            Some(DropReason::ReplayId)
        );
        // New frames stamped later pass.
        assert_eq!(g.check("a", "4", 103.0, false, 103.0), Ok(()));
    }

    #[test]
    fn total_cap_bounds_memory_across_departed_senders() {
        let mut g = guard(10_000, 100, 3);
        g.check("old", "h", 1.0, false, 1.0).unwrap();
        g.check("old", "d", 2.0, false, 2.0).unwrap();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            g.check("busy", id, 10.0 + i as f64, false, 10.0 + i as f64)
                .unwrap();
        }
        assert_eq!(g.len(), 3);
        // The departed sender lost its ids to the budget but not its protection.
        assert_eq!(
            reason(g.check("old", "h", 1.0, false, 20.0)),
            Some(DropReason::ReplayId)
        );
        assert_eq!(
            reason(g.check("old", "d", 2.0, false, 20.0)),
            Some(DropReason::ReplayId)
        );
        assert_eq!(g.check("old", "new", 20.0, false, 20.0), Ok(()));
    }

    #[test]
    fn budget_churn_keeps_a_departed_senders_horizon() {
        let mut g = guard(10_000, 100, 2);
        g.check("old", "hello", 1.0, false, 1.0).unwrap();
        // Two busy senders push "old" out of the id budget entirely...
        for i in 0..6 {
            let t = 10.0 + f64::from(i);
            g.check(
                if i % 2 == 0 { "b1" } else { "b2" },
                &format!("m{i}"),
                t,
                false,
                t,
            )
            .unwrap();
        }
        assert!(g.len() <= 2);
        // ...but its horizon still refuses the captured hello.
        assert_eq!(
            reason(g.check("old", "hello", 1.0, false, 20.0)),
            Some(DropReason::ReplayId)
        );
    }

    #[test]
    fn future_stamped_ids_live_until_their_ts_leaves_the_window() {
        let mut g = guard(1000, 10, 100);
        // Stamped 900 ms ahead of our clock: valid until now = 1900.
        g.check("a", "x", 900.0, false, 0.0).unwrap();
        assert_eq!(
            reason(g.check("a", "x", 900.0, false, 1500.0)),
            Some(DropReason::ReplayId)
        );
        assert_eq!(
            reason(g.check("a", "x", 900.0, false, 1900.0)),
            Some(DropReason::ReplayId)
        );
        // Past that the window check refuses it anyway.
        assert_eq!(
            reason(g.check("a", "x", 900.0, false, 1901.0)),
            Some(DropReason::ReplayWindow)
        );
    }

    #[test]
    fn sweep_releases_expired_senders() {
        let mut g = guard(1000, 10, 100);
        g.check("a", "x", 0.0, false, 0.0).unwrap();
        g.check("b", "y", 500.0, false, 500.0).unwrap();
        g.sweep(1200.0);
        assert_eq!(g.len(), 1);
        g.sweep(2000.0);
        assert!(g.is_empty());
    }
}
