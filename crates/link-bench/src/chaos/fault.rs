//! The faults a chaos run injects and their seeded schedule: the same seed,
//! the same faults at the same offsets (what the cluster makes of them
//! still varies with timing).
//!
//! ```text
//!  wait (5–15 s) ─► fault ─► outage (4–12 s) ─► heal ─► wait for re-form ─► next
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::soak::Rng;

/// Shortest and longest quiet time before a fault.
pub const GAP: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(15));
/// Shortest and longest outage (from the fault to its heal). At least 4 s:
/// longer than the hubs' heartbeat timeout (3 s), so that every fault is
/// noticed by the other hubs before it heals.
pub const OUTAGE: (Duration, Duration) = (Duration::from_secs(4), Duration::from_secs(12));

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL hub `hub`; start it again (same address) at the heal.
    KillHub {
        /// Which hub (0-based).
        hub: usize,
    },
    /// SIGKILL nats-server; start it again on the same port with the same
    /// JetStream store at the heal.
    KillNats,
    /// Cut the hub in the network namespace off from NATS (its end of the
    /// NATS veth down); bring the link up at the heal. Its peers keep
    /// their own link to it.
    CutHub,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillHub { hub } => write!(f, "kill hub {hub}"),
            Self::KillNats => f.write_str("kill nats-server"),
            Self::CutHub => f.write_str("cut the netns hub off from NATS"),
        }
    }
}

/// What to do next: wait, inject, wait, heal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Quiet time before the fault.
    pub wait: Duration,
    /// The fault.
    pub fault: Fault,
    /// From the fault to its heal.
    pub outage: Duration,
}

/// An endless seeded sequence of [`Step`]s. Each fault kind is equally
/// likely (a hub to kill is then drawn among the hubs); `CutHub` only when
/// a network namespace is set up.
#[derive(Clone, Debug)]
pub struct Schedule {
    rng: Rng,
    hubs: usize,
    cut: bool,
}

impl Schedule {
    /// The schedule of `seed` for `hubs` hubs (≥ 1), with or without the
    /// cut.
    pub fn new(seed: u64, hubs: usize, cut: bool) -> Self {
        Self {
            rng: Rng::with_seed(seed),
            hubs: hubs.max(1),
            cut,
        }
    }

    /// The next step.
    pub fn next_step(&mut self) -> Step {
        let wait = self.between(GAP);
        let kinds = if self.cut { 3 } else { 2 };
        let fault = match self.rng.below(kinds) {
            0 => Fault::KillHub {
                hub: self.rng.below(self.hubs),
            },
            1 => Fault::KillNats,
            _ => Fault::CutHub,
        };
        let outage = self.between(OUTAGE);
        Step {
            wait,
            fault,
            outage,
        }
    }

    /// A duration in `[lo, hi]`, in steps of 100 ms.
    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let steps = ((hi - lo).as_millis() / 100) as usize;
        lo + Duration::from_millis(100 * self.rng.below(steps + 1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(seed: u64, hubs: usize, cut: bool, n: usize) -> Vec<Step> {
        let mut s = Schedule::new(seed, hubs, cut);
        (0..n).map(|_| s.next_step()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(steps(42, 3, true, 50), steps(42, 3, true, 50));
        assert_ne!(steps(42, 3, true, 50), steps(43, 3, true, 50));
    }

    #[test]
    fn steps_stay_in_range_and_use_every_fault() {
        let all = steps(7, 3, true, 300);
        for s in &all {
            assert!(GAP.0 <= s.wait && s.wait <= GAP.1, "{s:?}");
            assert!(OUTAGE.0 <= s.outage && s.outage <= OUTAGE.1, "{s:?}");
            if let Fault::KillHub { hub } = s.fault {
                assert!(hub < 3);
            }
        }
        for want in [
            Fault::KillHub { hub: 0 },
            Fault::KillHub { hub: 1 },
            Fault::KillHub { hub: 2 },
            Fault::KillNats,
            Fault::CutHub,
        ] {
            assert!(all.iter().any(|s| s.fault == want), "{want:?} never drawn");
        }
    }

    #[test]
    fn no_cut_without_a_namespace() {
        assert!(
            steps(7, 3, false, 300)
                .iter()
                .all(|s| s.fault != Fault::CutHub)
        );
    }
}
