//! Failover across several hub URLs: which one the next connect attempt
//! dials (docs/client.md, *Failover*). The driver knows the URLs; this
//! module only deals in their indices, so the order is decided, and
//! tested, without sockets.
//!
//! A link walks its endpoints in *cycles*: every endpoint once, one right
//! after the other. The reconnect backoff is paid once per cycle, before
//! it starts, never between two endpoints of a cycle: a dead first URL
//! costs one refused dial, not a backoff delay.
//!
//! ```text
//!  start ─► cycle [0, 1, 2] ─dial 0 fails─► dial 1 ─fails─► dial 2 ─fails─► backoff ─► cycle [0, 1, 2]
//!                                             └─ready; lost─► backoff ─► cycle [0, 2, 1]
//! ```
//!
//! [`UrlOrder::Ordered`] starts every cycle from the first URL, so a
//! primary that is back is used again on the next reconnect;
//! [`UrlOrder::Random`] shuffles every cycle. Either way the endpoint whose
//! ready connection was just lost is tried last in the cycle that follows:
//! it most likely went down, and the others are the way around it.

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// The order in which a client tries its hub URLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UrlOrder {
    /// The configured order: every cycle starts from the first URL (the
    /// default).
    #[default]
    Ordered,
    /// A fresh random order every cycle (spreads clients over the hubs).
    Random,
}

impl UrlOrder {
    /// `ordered` or `random`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Random => "random",
        }
    }
}

impl fmt::Display for UrlOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UrlOrder {
    type Err = ConfigError;

    /// `ordered` or `random`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("ordered") {
            Ok(Self::Ordered)
        } else if s.eq_ignore_ascii_case("random") {
            Ok(Self::Random)
        } else {
            Err(ConfigError::InvalidOption {
                option: "url_order",
                reason: "must be ordered or random",
            })
        }
    }
}

/// The endpoints left in the current cycle.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    count: usize,
    order: UrlOrder,
    /// The rest of the cycle, the next endpoint last.
    queue: Vec<usize>,
    /// The endpoint of the attempt under way or of the connection up.
    current: usize,
}

impl Endpoints {
    /// `count` endpoints (at least one; validated by the config).
    pub(crate) fn new(count: usize, order: UrlOrder) -> Self {
        Self {
            count: count.max(1),
            order,
            queue: Vec::new(),
            current: 0,
        }
    }

    /// The endpoint of the attempt under way or of the connection up.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// Starts a cycle through every endpoint. `last`, the endpoint whose
    /// connection was just lost, comes last. `random` (values in `[0, 1)`)
    /// is only called for a random order of more than one endpoint.
    pub(crate) fn new_cycle(&mut self, last: Option<usize>, random: &mut dyn FnMut() -> f64) {
        let mut order: Vec<usize> = (0..self.count).collect();
        if self.order == UrlOrder::Random {
            // Fisher–Yates.
            for i in (1..order.len()).rev() {
                let r = random().clamp(0.0, 1.0);
                // Truncation intended: r·(i+1) is in [0, i+1].
                let j = ((r * (i + 1) as f64) as usize).min(i);
                order.swap(i, j);
            }
        }
        if let Some(last) = last
            && let Some(at) = order.iter().position(|&e| e == last)
        {
            order.remove(at);
            order.push(last);
        }
        order.reverse();
        self.queue = order;
    }

    /// The next endpoint of the cycle (now the current one), or `None`
    /// once every endpoint of the cycle was tried.
    pub(crate) fn next(&mut self) -> Option<usize> {
        let next = self.queue.pop()?;
        self.current = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(
        e: &mut Endpoints,
        last: Option<usize>,
        random: &mut dyn FnMut() -> f64,
    ) -> Vec<usize> {
        e.new_cycle(last, random);
        std::iter::from_fn(|| e.next()).collect()
    }

    fn no_random() -> f64 {
        panic!("an ordered cycle needs no random numbers")
    }

    #[test]
    fn ordered_cycles_start_from_the_first_and_put_the_lost_one_last() {
        let mut e = Endpoints::new(3, UrlOrder::Ordered);
        assert_eq!(cycle(&mut e, None, &mut no_random), [0, 1, 2]);
        assert_eq!(e.current(), 2);
        assert_eq!(e.next(), None, "a cycle tries each endpoint once");
        assert_eq!(cycle(&mut e, Some(0), &mut no_random), [1, 2, 0]);
        // The primary comes first again once another connection was lost.
        assert_eq!(cycle(&mut e, Some(1), &mut no_random), [0, 2, 1]);
        assert_eq!(cycle(&mut e, Some(2), &mut no_random), [0, 1, 2]);
    }

    #[test]
    fn one_endpoint_is_its_own_cycle_without_randomness() {
        for order in [UrlOrder::Ordered, UrlOrder::Random] {
            let mut e = Endpoints::new(1, order);
            assert_eq!(cycle(&mut e, None, &mut no_random), [0]);
            assert_eq!(cycle(&mut e, Some(0), &mut no_random), [0]);
        }
    }

    #[test]
    fn random_cycles_are_permutations_driven_by_the_random_source() {
        let mut e = Endpoints::new(4, UrlOrder::Random);
        // r = 0 swaps each position with the first: [1, 2, 3, 0].
        assert_eq!(cycle(&mut e, None, &mut || 0.0), [1, 2, 3, 0]);
        // r close to 1 keeps every position: the configured order.
        assert_eq!(cycle(&mut e, None, &mut || 0.999), [0, 1, 2, 3]);
        // Out-of-range values are clamped, never out of bounds.
        assert_eq!(cycle(&mut e, None, &mut || 7.0), [0, 1, 2, 3]);
        // The lost endpoint goes last whatever the shuffle.
        let lost = cycle(&mut e, Some(1), &mut || 0.0);
        assert_eq!(lost, [2, 3, 0, 1]);
        let mut seen = [0usize; 4];
        let mut state = 0.37_f64;
        for _ in 0..50 {
            let mut random = || {
                state = (state * 7.919 + 0.123).fract();
                state
            };
            let mut c = cycle(&mut e, None, &mut random);
            seen[c[0]] += 1;
            c.sort_unstable();
            assert_eq!(c, [0, 1, 2, 3], "every endpoint once per cycle");
        }
        assert!(
            seen.iter().all(|&n| n > 0),
            "each endpoint leads a cycle: {seen:?}"
        );
    }

    #[test]
    fn url_order_parses_any_case_and_names_the_option() {
        assert_eq!("Random".parse::<UrlOrder>().unwrap(), UrlOrder::Random);
        assert_eq!("ORDERED".parse::<UrlOrder>().unwrap(), UrlOrder::Ordered);
        assert_eq!(UrlOrder::default(), UrlOrder::Ordered);
        assert_eq!(UrlOrder::Random.to_string(), "random");
        assert!(matches!(
            "round-robin".parse::<UrlOrder>(),
            Err(ConfigError::InvalidOption {
                option: "url_order",
                ..
            })
        ));
    }
}
