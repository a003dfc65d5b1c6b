//! Read pacing for a socket whose frames the hub drops.
//!
//! Every frame a socket's state machine drops (a bad signature, a parse
//! error, a replayed id: a `protocol-error` of the reader) cost the hub its
//! read, parse and HMAC, at whatever speed the peer sends. A socket may have
//! up to `max_dropped_frames_per_sec` frames dropped in a burst; past that
//! the hub reads it no faster than that many dropped frames a second (a
//! token bucket of one second's worth, kept as the instant its tokens are
//! all back). The routing table's drops count too: a frame it refuses (a
//! subscribe past the cap, an invalid topic) and a message it relays to
//! nobody because every recipient's outbox is full (`outbox-overflow`
//! for each: a publish to stalled subscribers only, on a lone hub; a
//! direct message to a stalled peer). Nothing else changes: every frame is still read, in order,
//! and dropped or handled as before; the socket stays open; the peer's TCP
//! window closes while the hub is not reading. A peer with no frame
//! dropped, and none that every recipient refused, is never paced; one
//! whose messages reach at least one recipient is not paced for them.

use std::time::{Duration, Instant};

/// The window a socket's burst of dropped frames is counted over.
const WINDOW: Duration = Duration::from_secs(1);

/// One socket's pace: `None` until a frame of it is dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DropPace {
    /// When every token is back (the theoretical arrival time of the next
    /// frame, GCRA), `WINDOW` ahead of when the socket may be read again.
    full_at: Option<Instant>,
}

impl DropPace {
    /// A frame of this socket was dropped at `now`; `every` is the time one
    /// token takes to come back (a second over the per-second limit).
    pub(crate) fn dropped(&mut self, now: Instant, every: Duration) {
        let from = self.full_at.map_or(now, |t| t.max(now));
        self.full_at = Some(from + every);
    }

    /// Until when the socket must not be read (`None`: read it now).
    pub(crate) fn paused_until(&self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        let resume = self.full_at?.checked_sub(WINDOW)?;
        (resume > now()).then_some(resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(10); // 100 a second

    #[test]
    fn a_socket_without_drops_is_never_paced() {
        let p = DropPace::default();
        assert_eq!(p.paused_until(|| unreachable!("no clock read")), None);
    }

    #[test]
    fn a_second_of_drops_goes_at_full_speed_then_one_per_interval() {
        let t0 = Instant::now();
        let mut p = DropPace::default();
        for _ in 0..100 {
            p.dropped(t0, EVERY);
            assert_eq!(p.paused_until(|| t0), None);
        }
        // The 101st drop at the same instant: read again one interval later.
        p.dropped(t0, EVERY);
        assert_eq!(p.paused_until(|| t0), Some(t0 + EVERY));
        assert_eq!(p.paused_until(|| t0 + EVERY), None);
        // Each further drop right away moves it one interval on.
        p.dropped(t0 + EVERY, EVERY);
        assert_eq!(p.paused_until(|| t0 + EVERY), Some(t0 + 2 * EVERY));
    }

    #[test]
    fn the_burst_comes_back_after_a_quiet_second() {
        let t0 = Instant::now();
        let mut p = DropPace::default();
        for _ in 0..150 {
            p.dropped(t0, EVERY);
        }
        assert!(p.paused_until(|| t0).is_some());
        // Quiet for long enough: a full burst again.
        let later = t0 + Duration::from_secs(3);
        for _ in 0..100 {
            p.dropped(later, EVERY);
            assert_eq!(p.paused_until(|| later), None);
        }
        p.dropped(later, EVERY);
        assert_eq!(p.paused_until(|| later), Some(later + EVERY));
    }
}
