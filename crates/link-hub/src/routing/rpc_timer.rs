//! A sample of relayed RPCs in flight, for the latency histogram
//! (`link_hub_rpc_relayed_duration_seconds`): when the hub forwards a
//! sampled request (one in `stats::RPC_SAMPLE_EVERY`) it notes the time it
//! was given; when it forwards the target's response to the caller it
//! observes the difference. Nothing here reads a clock.
//!
//! Entries are keyed by request id (a caller's ids are unique in practice;
//! another caller reusing an id only loses one timing) and leave when the
//! response is forwarded, when the caller cancels, and when the caller or
//! the target leaves. The table is capped at [`RPC_TIMER_CAP`] entries: past
//! it the oldest entry is given up (counted in
//! `link_hub_rpc_relayed_untimed_total`), so a target that never answers
//! cannot grow it.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

/// Sampled relayed RPCs timed at once (about 100 bytes each; with one call
/// in 16 sampled, 65,536 calls in flight). Past it the oldest is dropped
/// from the table; routing is unaffected.
pub(crate) const RPC_TIMER_CAP: usize = 4_096;

struct InFlight {
    caller: Arc<str>,
    target: Arc<str>,
    started: Instant,
}

/// Relayed RPCs forwarded and not answered yet, oldest first.
pub(super) struct RpcTimer {
    /// Used in insertion order only (`peek`/`pop`, never `get`).
    in_flight: LruCache<Arc<str>, InFlight>,
}

impl RpcTimer {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            in_flight: LruCache::new(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// `caller`'s request `id` was forwarded to `target` at `now`; true if
    /// an older entry was given up to make room.
    pub(super) fn start(
        &mut self,
        id: Arc<str>,
        caller: Arc<str>,
        target: Arc<str>,
        now: Instant,
    ) -> bool {
        let entry = InFlight {
            caller,
            target,
            started: now,
        };
        match self.in_flight.push(id.clone(), entry) {
            Some((old, _)) => old != id,
            None => false,
        }
    }

    /// `target` answered `caller`'s request `id`: its start, if it was timed.
    pub(super) fn finish(&mut self, id: &str, caller: &str, target: &str) -> Option<Instant> {
        if self.in_flight.is_empty() {
            return None;
        }
        let e = self.in_flight.peek(id)?;
        if &*e.caller != caller || &*e.target != target {
            return None;
        }
        self.in_flight.pop(id).map(|e| e.started)
    }

    /// `caller` cancelled its request `id`.
    pub(super) fn cancel(&mut self, id: &str, caller: &str) {
        if self
            .in_flight
            .peek(id)
            .is_some_and(|e| &*e.caller == caller)
        {
            self.in_flight.pop(id);
        }
    }

    /// `kind` left: its calls, and the calls waiting for it, end untimed.
    pub(super) fn forget_kind(&mut self, kind: &str) {
        if self.in_flight.is_empty() {
            return;
        }
        let gone: Vec<Arc<str>> = self
            .in_flight
            .iter()
            .filter(|(_, e)| &*e.caller == kind || &*e.target == kind)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.in_flight.pop(&*id);
        }
    }

    pub(super) fn clear(&mut self) {
        self.in_flight.clear();
    }
}
