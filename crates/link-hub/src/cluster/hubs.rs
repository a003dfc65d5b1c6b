//! Which other hubs are alive (sans-I/O, time passed in): a hub is alive
//! from its first heartbeat until it says bye or misses heartbeats for the
//! timeout. The driver feeds it what it reads and the clock, and tells the
//! routing table what changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A change to tell the routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HubChange {
    /// First heartbeat, or a new peer count.
    Alive { hub: String, peers: u64 },
    /// Said bye, or silent past the timeout.
    Gone { hub: String },
}

/// The other hubs' last heartbeats.
pub(crate) struct HubWatch {
    timeout: Duration,
    seen: HashMap<String, (Instant, u64)>,
}

impl HubWatch {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            seen: HashMap::new(),
        }
    }

    /// A heartbeat from `hub`; a change when it is new or its count moved.
    pub(crate) fn heartbeat(&mut self, now: Instant, hub: &str, peers: u64) -> Option<HubChange> {
        let before = self.seen.insert(hub.to_owned(), (now, peers));
        (before.map(|(_, p)| p) != Some(peers)).then(|| HubChange::Alive {
            hub: hub.to_owned(),
            peers,
        })
    }

    /// `hub` said bye.
    pub(crate) fn bye(&mut self, hub: &str) -> Option<HubChange> {
        self.seen.remove(hub).map(|_| HubChange::Gone {
            hub: hub.to_owned(),
        })
    }

    /// Every hub silent for longer than the timeout is gone.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<HubChange> {
        let timeout = self.timeout;
        let mut gone: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, (at, _))| now.saturating_duration_since(*at) > timeout)
            .map(|(h, _)| h.clone())
            .collect();
        gone.sort();
        for hub in &gone {
            self.seen.remove(hub);
        }
        gone.into_iter()
            .map(|hub| HubChange::Gone { hub })
            .collect()
    }

    /// NATS went away: every hub is out of reach.
    pub(crate) fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_lives_from_its_heartbeat_until_silence_or_bye() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = HubWatch::new(3 * s);
        let alive = |peers| {
            Some(HubChange::Alive {
                hub: "a".into(),
                peers,
            })
        };
        assert_eq!(w.heartbeat(t0, "a", 2), alive(2));
        assert_eq!(w.heartbeat(t0 + s, "a", 2), None);
        assert_eq!(w.heartbeat(t0 + 2 * s, "a", 3), alive(3));
        w.heartbeat(t0 + 2 * s, "b", 0);
        assert_eq!(w.expire(t0 + 5 * s), vec![]);
        assert_eq!(
            w.expire(t0 + 5 * s + Duration::from_millis(1)),
            vec![
                HubChange::Gone { hub: "a".into() },
                HubChange::Gone { hub: "b".into() }
            ]
        );
        assert_eq!(w.heartbeat(t0 + 6 * s, "a", 3), alive(3));
        assert_eq!(w.bye("a"), Some(HubChange::Gone { hub: "a".into() }));
        assert_eq!(w.bye("a"), None);
    }
}
