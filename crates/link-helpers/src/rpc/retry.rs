//! Retries with linear backoff and jitter: [`RetryPolicy`], the generic
//! [`retry`] loop and [`rpc_with_retry`].
//!
//! Which RPC failures are retried ([`is_retryable`]):
//! - `RPC_TIMEOUT` and `RPC_DISCONNECT` ([`LinkError::is_transient`]);
//! - `LINK_NOT_READY` while the link is neither disabled nor stopped, i.e.
//!   (re)connecting: the next attempt may find it ready.
//!
//! Never retried: remote errors (the handler answered), `RPC_ABORT`,
//! `BACKPRESSURE` (adding to a full outbox makes it worse), invalid
//! arguments, decode errors, unsupported features. A timed-out call may
//! still have run on the remote side: retry only idempotent calls.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use link_client::{LinkClient, LinkError, RpcOptions};
use link_protocol::ConfigError;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A source of uniform random numbers in `[0, 1)`, for jitter.
pub type RandomSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// A std-only random number in `[0, 1)` (SipHash with fresh random keys
/// over a counter): good enough for jitter, not for cryptography.
fn std_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    // 53 random bits into the mantissa.
    #[allow(clippy::cast_precision_loss)]
    let r = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    r
}

/// How often and how patiently to retry. Build with [`RetryPolicy::builder`].
///
/// After failed attempt `n` (1-based) the delay is
/// `min(base_delay × n, max_delay) × (1 + jitter × (2r − 1))` with `r`
/// uniform in `[0, 1)`: linear growth, spread by ±`jitter`.
#[derive(Clone)]
pub struct RetryPolicy {
    attempts: u32,
    base_delay: Duration,
    max_delay: Option<Duration>,
    jitter: f64,
    attempt_timeout: Option<Duration>,
    random: RandomSource,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: None,
            jitter: 0.2,
            attempt_timeout: None,
            random: Arc::new(std_random),
        }
    }
}

impl RetryPolicy {
    /// A builder starting from the defaults (3 attempts, 200 ms base delay,
    /// jitter 0.2, no cap, the client's RPC timeout per attempt).
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// Total attempts, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Per-attempt RPC timeout (`None`: the client's default).
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The delay after failed attempt `attempt` (1-based) for a random
    /// draw `r` in `[0, 1)` (clamped; NaN counts as 0.5).
    pub fn delay_after(&self, attempt: u32, r: f64) -> Duration {
        let linear = self.base_delay.saturating_mul(attempt.max(1));
        let capped = self.max_delay.map_or(linear, |m| linear.min(m));
        let r = if r.is_nan() { 0.5 } else { r.clamp(0.0, 1.0) };
        capped.mul_f64((1.0 + self.jitter * (2.0 * r - 1.0)).max(0.0))
    }

    fn next_delay(&self, attempt: u32) -> Duration {
        self.delay_after(attempt, (self.random)())
    }
}

/// Builder for [`RetryPolicy`]; validated by [`build`](Self::build).
#[must_use]
#[derive(Debug)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// Total attempts including the first (default 3; at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.policy.attempts = attempts;
        self
    }

    /// Delay unit of the linear backoff (default 200 ms; zero retries at once).
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.policy.base_delay = delay;
        self
    }

    /// Cap on the delay before jitter (default none).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = Some(delay);
        self
    }

    /// Relative spread of each delay, 0..=1 (default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Timeout of each RPC attempt (default: the client's RPC timeout).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// Random numbers in `[0, 1)` for jitter (default: std-only random).
    pub fn random<F: Fn() -> f64 + Send + Sync + 'static>(mut self, random: F) -> Self {
        self.policy.random = Arc::new(random);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        let bad = |option, reason| Err(ConfigError::InvalidOption { option, reason });
        let p = self.policy;
        if p.attempts == 0 {
            return bad("attempts", "must be at least 1");
        }
        if !(p.jitter.is_finite() && (0.0..=1.0).contains(&p.jitter)) {
            return bad("jitter", "must be a number between 0 and 1");
        }
        if p.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return bad("attempt_timeout", "must be positive");
        }
        Ok(p)
    }
}

/// A call that did not succeed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// A failure that is not retried (remote error, abort, misuse…).
    #[error("{error} (attempt {attempts})")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The error.
        error: LinkError,
    },
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: LinkError,
    },
    /// The cancellation token fired.
    #[error("cancelled after {attempts} attempt(s)")]
    Cancelled {
        /// Attempts started.
        attempts: u32,
        /// The last failure before the cancellation, if any.
        last: Option<LinkError>,
    },
}

impl RetryError {
    /// Stable code: the error's own code for `Failed`, `RETRY_EXHAUSTED`,
    /// or `RPC_ABORT` for `Cancelled`.
    pub fn code(&self) -> &str {
        match self {
            Self::Failed { error, .. } => error.code(),
            Self::Exhausted { .. } => "RETRY_EXHAUSTED",
            Self::Cancelled { .. } => "RPC_ABORT",
        }
    }

    /// The last underlying error.
    pub fn last_error(&self) -> Option<&LinkError> {
        match self {
            Self::Failed { error, .. } => Some(error),
            Self::Exhausted { last, .. } => Some(last),
            Self::Cancelled { last, .. } => last.as_ref(),
        }
    }

    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Failed { attempts, .. }
            | Self::Exhausted { attempts, .. }
            | Self::Cancelled { attempts, .. } => *attempts,
        }
    }
}

/// Runs `attempt(n)` (n = 1, 2, …) until it succeeds, fails with an error
/// `retryable` refuses, or the policy's attempts are spent, sleeping
/// [`RetryPolicy::delay_after`] between attempts. `cancel` is checked
/// before each attempt and interrupts both an attempt in flight (its
/// future is dropped) and a backoff sleep.
pub async fn retry<T, F, Fut, P>(
    policy: &RetryPolicy,
    cancel: Option<&CancellationToken>,
    mut retryable: P,
    mut attempt: F,
) -> Result<T, RetryError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
    P: FnMut(&LinkError) -> bool,
{
    let never = CancellationToken::new();
    let cancel = cancel.unwrap_or(&never);
    let mut last = None;
    for n in 1..=policy.attempts {
        if cancel.is_cancelled() {
            return Err(RetryError::Cancelled {
                attempts: n - 1,
                last,
            });
        }
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RetryError::Cancelled { attempts: n, last }),
            r = attempt(n) => r,
        };
        let error = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if matches!(error, LinkError::RpcAbort { .. }) && cancel.is_cancelled() {
            return Err(RetryError::Cancelled {
                attempts: n,
                last: Some(error),
            });
        }
        if !retryable(&error) {
            return Err(RetryError::Failed { attempts: n, error });
        }
        if n == policy.attempts {
            return Err(RetryError::Exhausted {
                attempts: n,
                last: error,
            });
        }
        let delay = policy.next_delay(n);
        tracing::debug!(
            attempt = n,
            ?delay,
            code = error.code(),
            "retrying: {error}"
        );
        last = Some(error);
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RetryError::Cancelled { attempts: n, last }),
            () = tokio::time::sleep(delay) => {}
        }
    }
    // attempts >= 1 is enforced by the builder; an empty loop means no attempt.
    Err(RetryError::Cancelled {
        attempts: 0,
        last: None,
    })
}

/// Whether `rpc_with_retry` retries `error` on `client` (see the module docs).
pub fn is_retryable(client: &LinkClient, error: &LinkError) -> bool {
    match error {
        e if e.is_transient() => true,
        LinkError::NotReady { .. } => !client.is_disabled() && !client.health().stopped,
        _ => false,
    }
}

/// `client.rpc(to, rpc_type, data)` retried under `policy` (see the module
/// docs for what is retried). Each attempt uses the policy's
/// `attempt_timeout` (or the client's default) and `cancel`, so firing the
/// token aborts the call in flight with an `rpc.cancel`.
pub async fn rpc_with_retry(
    client: &LinkClient,
    to: &str,
    rpc_type: &str,
    data: Option<Value>,
    policy: &RetryPolicy,
    cancel: Option<CancellationToken>,
) -> Result<Value, RetryError> {
    retry(
        policy,
        cancel.as_ref(),
        |e| is_retryable(client, e),
        |_| {
            let opts = RpcOptions {
                timeout: policy.attempt_timeout,
                cancel: cancel.clone(),
            };
            client.rpc_with(to, rpc_type, data.clone(), opts)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use link_client::{ClientConfig, RemoteError};
    use tokio::time::Instant;

    use super::*;

    fn timeout_err() -> LinkError {
        LinkError::RpcTimeout {
            to: "b".into(),
            rpc_type: "x".into(),
            id: "1".into(),
            timeout: Duration::from_secs(1),
        }
    }

    fn remote_err() -> LinkError {
        LinkError::RpcRemote(Box::new(RemoteError {
            code: "NOPE".into(),
            message: "no".into(),
            data: None,
            to: "b".into(),
            rpc_type: "x".into(),
            id: "1".into(),
        }))
    }

    fn policy(attempts: u32, base_ms: u64) -> RetryPolicy {
        RetryPolicy::builder()
            .attempts(attempts)
            .base_delay(Duration::from_millis(base_ms))
            .jitter(0.5)
            .random(|| 0.5)
            .build()
            .unwrap()
    }

    #[test]
    fn delays_grow_linearly_with_bounded_jitter() {
        let p = RetryPolicy::builder()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(250))
            .jitter(0.5)
            .build()
            .unwrap();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(p.delay_after(1, 0.5)), 100);
        assert_eq!(ms(p.delay_after(2, 0.5)), 200);
        assert_eq!(ms(p.delay_after(3, 0.5)), 250, "capped");
        assert_eq!(ms(p.delay_after(1, 0.0)), 50);
        assert_eq!(ms(p.delay_after(1, 1.0)), 150);
        assert_eq!(ms(p.delay_after(1, f64::NAN)), 100);
        assert_eq!(ms(p.delay_after(1, 7.0)), 150, "clamped");
        let p = RetryPolicy::builder().jitter(0.0).build().unwrap();
        assert_eq!(p.delay_after(2, 0.9), Duration::from_millis(400));
        for _ in 0..100 {
            let r = std_random();
            assert!((0.0..1.0).contains(&r));
        }
    }

    #[test]
    fn builder_names_bad_options() {
        let option = |b: RetryPolicyBuilder| match b.build() {
            Err(ConfigError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(option(RetryPolicy::builder().attempts(0)), "attempts");
        assert_eq!(option(RetryPolicy::builder().jitter(1.5)), "jitter");
        assert_eq!(option(RetryPolicy::builder().jitter(f64::NAN)), "jitter");
        assert_eq!(
            option(RetryPolicy::builder().attempt_timeout(Duration::ZERO)),
            "attempt_timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_with_linear_backoff() {
        let starts = Mutex::new(Vec::new());
        let t0 = Instant::now();
        let r = retry(&policy(4, 100), None, LinkError::is_transient, |n| {
            starts.lock().unwrap().push(t0.elapsed());
            async move { if n < 3 { Err(timeout_err()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r, Ok(3));
        // Virtual time: the gaps are exactly the linear delays.
        assert_eq!(
            *starts.lock().unwrap(),
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(300)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt() {
        let r: Result<(), _> = retry(&policy(3, 10), None, LinkError::is_transient, |_| async {
            Err(timeout_err())
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "RETRY_EXHAUSTED");
        assert_eq!(e.attempts(), 3);
        assert_eq!(e.last_error(), Some(&timeout_err()));
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_remote_errors_or_aborts() {
        for err in [
            remote_err(),
            LinkError::RpcAbort {
                to: "b".into(),
                rpc_type: "x".into(),
                id: "1".into(),
            },
        ] {
            let calls = Mutex::new(0);
            let r: Result<(), _> = retry(&policy(5, 10), None, LinkError::is_transient, |_| {
                *calls.lock().unwrap() += 1;
                let e = err.clone();
                async move { Err(e) }
            })
            .await;
            assert_eq!(*calls.lock().unwrap(), 1);
            assert_eq!(
                r.unwrap_err(),
                RetryError::Failed {
                    attempts: 1,
                    error: err.clone()
                }
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_interrupts_the_backoff() {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            t.cancel();
        });
        let t0 = Instant::now();
        let calls = Mutex::new(0);
        let r: Result<(), _> = retry(
            &policy(3, 60_000),
            Some(&token),
            LinkError::is_transient,
            |_| {
                *calls.lock().unwrap() += 1;
                async { Err(timeout_err()) }
            },
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            RetryError::Cancelled {
                attempts: 1,
                last: Some(timeout_err())
            }
        );
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "backoff was cut short"
        );

        // Already cancelled: no attempt at all.
        let r: Result<(), _> =
            retry(&policy(3, 1), Some(&token), |_| true, |_| async { Ok(()) }).await;
        assert_eq!(r.unwrap_err().attempts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_interrupts_an_attempt_in_flight() {
        let token = CancellationToken::new();
        let t = token.clone();
        let r: Result<(), _> = retry(
            &policy(3, 1),
            Some(&token),
            |_| true,
            |_| {
                t.cancel();
                std::future::pending()
            },
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            RetryError::Cancelled {
                attempts: 1,
                last: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_is_retried_only_while_the_link_may_come_up() {
        // Never started (not disabled, not stopped): retried. No socket is opened.
        let idle = LinkClient::new(
            ClientConfig::builder()
                .url("ws://127.0.0.1:9")
                .secret("s")
                .kind("a")
                .build()
                .unwrap(),
        );
        let e = rpc_with_retry(&idle, "b", "x", None, &policy(3, 10), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "RETRY_EXHAUSTED");
        assert_eq!(e.attempts(), 3);

        idle.stop().await;
        let e = rpc_with_retry(&idle, "b", "x", None, &policy(3, 10), None)
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.attempts()), ("LINK_NOT_READY", 1));

        let disabled = LinkClient::new(ClientConfig::builder().build().unwrap());
        let e = rpc_with_retry(&disabled, "b", "x", None, &policy(3, 10), None)
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.attempts()), ("LINK_NOT_READY", 1));
    }
}
