//! A small timer table: one optional deadline per timer kind.

use std::time::Instant;

/// A table of `N` optional deadlines indexed by a timer enum.
#[derive(Clone, Debug)]
pub(crate) struct Timers<const N: usize> {
    deadlines: [Option<Instant>; N],
}

impl<const N: usize> Timers<N> {
    pub(crate) fn new() -> Self {
        Self {
            deadlines: [None; N],
        }
    }

    pub(crate) fn set(&mut self, timer: usize, at: Instant) {
        self.deadlines[timer] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: usize) {
        self.deadlines[timer] = None;
    }

    /// True (and the timer is cleared) when `timer` is due at `now`.
    pub(crate) fn expire(&mut self, timer: usize, now: Instant) -> bool {
        match self.deadlines[timer] {
            Some(at) if at <= now => {
                self.deadlines[timer] = None;
                true
            }
            _ => false,
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.deadlines = [None; N];
    }
}
