//! Reconnect delay policy (protocol §12): `delay = base × (1 − j/2 + r·j)`,
//! `base` starting at `initial` and growing ×`growth` after each attempt up
//! to `max`; attempts bounded by `max_attempts`; reset on ready.

use std::time::Duration;

use crate::error::ConfigError;

/// Reconnect settings, with the reference's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First base delay (1 s).
    pub initial: Duration,
    /// Cap on the base delay (10 s).
    pub max: Duration,
    /// Growth factor per attempt (1.5).
    pub growth: f64,
    /// Jitter fraction `j` in 0..=1 (0.5).
    pub jitter: f64,
    /// Consecutive attempts before giving up (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1000),
            max: Duration::from_millis(10_000),
            growth: 1.5,
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl BackoffConfig {
    /// Checks the settings once, naming the bad option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option, reason| Err(ConfigError::InvalidOption { option, reason });
        if self.initial.is_zero() {
            return bad("reconnect_initial", "must be positive");
        }
        if self.max < self.initial {
            return bad("reconnect_max", "must be at least reconnect_initial");
        }
        if !(self.growth.is_finite() && self.growth >= 1.0) {
            return bad("reconnect_growth", "must be a finite number >= 1");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("reconnect_jitter", "must be between 0 and 1");
        }
        Ok(())
    }
}

/// Reconnect backoff state.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    base: Duration,
    attempts: u32,
}

impl Backoff {
    /// Fresh state.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            base: config.initial,
            config,
            attempts: 0,
        }
    }

    /// Consecutive attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The settings.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Delay before the next attempt given a random `r` in `[0, 1)`, or
    /// `None` when the attempts are exhausted.
    pub fn next_delay(&mut self, random: f64) -> Option<Duration> {
        if self
            .config
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        let j = self.config.jitter;
        let r = random.clamp(0.0, 1.0);
        let delay = self.base.mul_f64(1.0 - j / 2.0 + r * j);
        self.base = self.base.mul_f64(self.config.growth).min(self.config.max);
        self.attempts += 1;
        Some(delay)
    }

    /// Back to the first delay (on ready).
    pub fn reset(&mut self) {
        self.base = self.config.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_half_to_the_cap_with_jitter_bounds() {
        let mut b = Backoff::new(BackoffConfig::default());
        let ms = |d: Option<Duration>| d.unwrap().as_millis();
        assert_eq!(ms(b.next_delay(0.5)), 1000);
        assert_eq!(ms(b.next_delay(0.5)), 1500);
        assert_eq!(ms(b.next_delay(0.0)), 1687); // 2250 × 0.75
        assert_eq!(ms(b.next_delay(1.0)), 4218); // 3375 × 1.25
        for _ in 0..10 {
            b.next_delay(0.5);
        }
        assert_eq!(ms(b.next_delay(0.5)), 10_000);
        b.reset();
        assert_eq!(ms(b.next_delay(0.5)), 1000);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut b = Backoff::new(BackoffConfig {
            max_attempts: Some(2),
            ..BackoffConfig::default()
        });
        assert!(b.next_delay(0.5).is_some());
        assert!(b.next_delay(0.5).is_some());
        assert_eq!(b.next_delay(0.5), None);
        assert_eq!(b.attempts(), 2);
    }

    #[test]
    fn validation_names_the_option() {
        let bad = BackoffConfig {
            jitter: 1.5,
            ..BackoffConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::InvalidOption {
                option: "reconnect_jitter",
                ..
            })
        ));
        assert!(BackoffConfig::default().validate().is_ok());
    }
}
