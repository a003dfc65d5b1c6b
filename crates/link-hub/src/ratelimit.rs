//! Per-peer rate limits: token buckets per message class, chosen per kind.
//!
//! ```text
//!  RateLimits (config: default per class, per-kind overrides, disconnect-after)
//!      │ for_kind(kind) at the hello
//!      ▼
//!  PeerLimiter (one per authenticated socket; None when no limit applies)
//!      │ check(class, now) for each verified rpc.request / topic.message /
//!      ▼ direct / status.update, before the frame reaches the router
//!  Verdict::Pass | Verdict::Refuse { report, disconnect }
//! ```
//!
//! The decision is sans-I/O: [`PeerLimiter::check`] takes the time from the
//! caller and reads no clock, so a test is a transcript of calls at explicit
//! instants. The buckets are [`governor`]'s GCRA rate limiters driven by a
//! clock that returns the time last passed in ([`PassedClock`]).
//!
//! A limit is `COUNT[/UNIT][,burst=N]`: COUNT frames per second (`/s`, the
//! default), minute (`/m`) or hour (`/h`), refilled evenly (one frame every
//! UNIT/COUNT), with a bucket of `burst` frames (default COUNT) that starts
//! full. `off` means no limit (to lift a default for one kind). The file
//! format and the flags are in docs/operations.md, "Rate limits".

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use link_protocol::msg_type;
use serde_json::Value;

/// The classes of inbound frames a limit applies to. Other frames
/// (`rpc.response`, `rpc.cancel`, subscribes, unsubscribes) are never
/// limited: refusing an answer or a cancel would hurt the peer waiting for
/// it, and subscriptions are few.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// `rpc.request` (to a peer or to `server`).
    Rpc,
    /// `topic.message`.
    Publish,
    /// `direct`.
    Send,
    /// `status.update`.
    Status,
}

impl MessageClass {
    /// Every class, in the order [`RateLimits::for_kind`] returns limits.
    pub const ALL: [Self; 4] = [Self::Rpc, Self::Publish, Self::Send, Self::Status];

    /// The name used by flags, files and events: `rpc`, `publish`, `send`, `status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rpc => "rpc",
            Self::Publish => "publish",
            Self::Send => "send",
            Self::Status => "status",
        }
    }

    /// The class of a frame type, `None` for frames that are never limited.
    pub fn of_type(msg_type: &str) -> Option<Self> {
        match msg_type {
            msg_type::RPC_REQUEST => Some(Self::Rpc),
            msg_type::TOPIC_MESSAGE => Some(Self::Publish),
            msg_type::DIRECT => Some(Self::Send),
            msg_type::STATUS_UPDATE => Some(Self::Status),
            _ => None,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for MessageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageClass {
    type Err = RateLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| RateLimitError::UnknownClass(s.to_owned()))
    }
}

/// A rate limit was written wrongly (a flag, a file, or a builder value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Not one of `rpc`, `publish`, `send`, `status`.
    #[error("unknown message class {0:?} (expected rpc, publish, send or status)")]
    UnknownClass(String),
    /// A limit that does not parse or is zero.
    #[error("bad rate limit {text:?}: {reason}")]
    BadLimit {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A kind that breaks the kind rules.
    #[error("bad kind {0:?} in a rate limit (1 to 256 of a-z A-Z 0-9 . _ -, not `server`)")]
    BadKind(String),
    /// A rate-limit table that is not the documented JSON shape.
    #[error("bad rate limit table: {0}")]
    BadTable(String),
}

impl RateLimitError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownClass(_) => "RATE_LIMIT_CLASS",
            Self::BadLimit { .. } => "RATE_LIMIT_VALUE",
            Self::BadKind(_) => "RATE_LIMIT_KIND",
            Self::BadTable(_) => "RATE_LIMIT_TABLE",
        }
    }
}

/// One token bucket: `count` frames per `per`, refilled evenly, holding up
/// to `burst` frames (full at the start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    count: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Limit {
    /// `count` frames per second, burst `count`.
    pub const fn per_second(count: NonZeroU32) -> Self {
        Self {
            count,
            per: SECOND,
            burst: count,
        }
    }

    /// `count` frames per minute, burst `count`.
    pub const fn per_minute(count: NonZeroU32) -> Self {
        Self {
            count,
            per: MINUTE,
            burst: count,
        }
    }

    /// `count` frames per hour, burst `count`.
    pub const fn per_hour(count: NonZeroU32) -> Self {
        Self {
            count,
            per: HOUR,
            burst: count,
        }
    }

    /// Sets the bucket size (default: the count).
    #[must_use]
    pub const fn burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// The bucket size.
    pub const fn burst_size(&self) -> NonZeroU32 {
        self.burst
    }

    /// Time to earn one frame back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    fn quota(&self) -> Option<Quota> {
        Quota::with_period(self.interval()).map(|q| q.allow_burst(self.burst))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per {
            MINUTE => "m",
            HOUR => "h",
            _ => "s",
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

impl FromStr for Limit {
    type Err = RateLimitError;

    /// `COUNT[/s|/m|/h][,burst=N]`, e.g. `100/s`, `600/m,burst=50`, `20`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RateLimitError::BadLimit {
            text: text.to_owned(),
            reason,
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, extra)) => {
                let n = extra
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or_else(|| bad("after the rate only `,burst=N` may follow"))?;
                (
                    rate,
                    Some(positive(n).ok_or_else(|| bad("burst must be a positive integer"))?),
                )
            }
            None => (text, None),
        };
        let (count, per) = match rate.trim().split_once('/') {
            Some((count, "s")) => (count, SECOND),
            Some((count, "m")) => (count, MINUTE),
            Some((count, "h")) => (count, HOUR),
            Some(_) => return Err(bad("the unit must be /s, /m or /h")),
            None => (rate.trim(), SECOND),
        };
        let count = positive(count).ok_or_else(|| {
            bad("the rate must be a positive integer count (use `off` for no limit)")
        })?;
        let limit = Self {
            count,
            per,
            burst: burst.unwrap_or(count),
        };
        if limit.interval().is_zero() {
            return Err(bad("more than 10^9 per second"));
        }
        Ok(limit)
    }
}

fn positive(text: &str) -> Option<NonZeroU32> {
    text.trim().parse::<NonZeroU32>().ok()
}

/// A class's setting in a per-kind entry: inherit the default, no limit, or
/// its own limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Setting {
    #[default]
    Inherit,
    Off,
    Limit(Limit),
}

/// The limits of a hub: a default per class, per-kind overrides, and
/// whether a peer that keeps going over is disconnected. Empty by default
/// (no limits: nothing is checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    default: [Option<Limit>; 4],
    kinds: HashMap<String, [Setting; 4]>,
    disconnect_after: Option<NonZeroU32>,
}

impl RateLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the default limit of `class` for every kind without its own.
    #[must_use]
    pub fn limit(mut self, class: MessageClass, limit: Limit) -> Self {
        self.default[class.index()] = Some(limit);
        self
    }

    /// Sets `kind`'s limit for `class`; `None` lifts the default for that
    /// kind (no limit).
    pub fn kind_limit(
        mut self,
        kind: impl Into<String>,
        class: MessageClass,
        limit: Option<Limit>,
    ) -> Result<Self, RateLimitError> {
        let kind = kind.into();
        if link_protocol::validate::check_kind(&kind).is_err() {
            return Err(RateLimitError::BadKind(kind));
        }
        self.kinds.entry(kind).or_default()[class.index()] = match limit {
            Some(l) => Setting::Limit(l),
            None => Setting::Off,
        };
        Ok(self)
    }

    /// Closes a peer's socket (1008 `rate limited`) after `n` refused frames
    /// in a row (default: never; a peer is only refused frame by frame).
    #[must_use]
    pub fn disconnect_after(mut self, n: Option<NonZeroU32>) -> Self {
        self.disconnect_after = n;
        self
    }

    /// The threshold of [`disconnect_after`](Self::disconnect_after).
    pub fn disconnect_threshold(&self) -> Option<NonZeroU32> {
        self.disconnect_after
    }

    /// True when no kind has any limit.
    pub fn is_empty(&self) -> bool {
        self.default.iter().all(Option::is_none)
            && self
                .kinds
                .values()
                .all(|s| s.iter().all(|s| !matches!(s, Setting::Limit(_))))
    }

    /// The limit per class (in [`MessageClass::ALL`] order) for `kind`.
    pub fn for_kind(&self, kind: &str) -> [Option<Limit>; 4] {
        let mut limits = self.default;
        if let Some(own) = self.kinds.get(kind) {
            for (limit, setting) in limits.iter_mut().zip(own) {
                match setting {
                    Setting::Inherit => {}
                    Setting::Off => *limit = None,
                    Setting::Limit(l) => *limit = Some(*l),
                }
            }
        }
        limits
    }

    /// Adds a `CLASS=LIMIT` or `KIND:CLASS=LIMIT` setting (the
    /// `--rate-limit` flag); LIMIT is [`Limit`]'s syntax or `off`. A later
    /// setting of the same kind and class replaces an earlier one.
    pub fn apply_setting(self, setting: &str) -> Result<Self, RateLimitError> {
        let bad = |reason| RateLimitError::BadLimit {
            text: setting.to_owned(),
            reason,
        };
        let (target, value) = setting
            .split_once('=')
            .ok_or_else(|| bad("expected CLASS=RATE[/s|/m|/h][,burst=N] or KIND:CLASS=…"))?;
        let (kind, class) = match target.split_once(':') {
            Some((kind, class)) => (Some(kind.trim()), class),
            None => (None, target),
        };
        let class: MessageClass = class.trim().parse()?;
        let limit = parse_limit_or_off(value)?;
        match (kind, limit) {
            (Some(kind), limit) => self.kind_limit(kind, class, limit),
            (None, Some(limit)) => Ok(self.limit(class, limit)),
            (None, None) => {
                let mut this = self;
                this.default[class.index()] = None;
                Ok(this)
            }
        }
    }

    /// Reads the JSON table (`--rate-limits FILE`):
    ///
    /// ```json
    /// {
    ///   "default": {"rpc": "50/s,burst=100", "publish": "200/s"},
    ///   "kinds": {
    ///     "ingest": {"publish": "5000/s,burst=10000"},
    ///     "admin": {"rpc": "off"}
    ///   },
    ///   "disconnectAfter": 1000
    /// }
    /// ```
    ///
    /// Every key is optional; unknown keys and classes are errors (a typo
    /// must not silently leave a peer unlimited).
    pub fn from_json(text: &str) -> Result<Self, RateLimitError> {
        let bad = |why: String| RateLimitError::BadTable(why);
        let root: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let Value::Object(root) = root else {
            return Err(bad("expected a JSON object".into()));
        };
        let mut limits = Self::new();
        for (key, value) in root {
            match key.as_str() {
                "default" => {
                    for (class, limit) in classes(&value, "default")? {
                        limits.default[class.index()] = limit;
                    }
                }
                "kinds" => {
                    let Value::Object(kinds) = value else {
                        return Err(bad("\"kinds\" must be an object of kind -> classes".into()));
                    };
                    for (kind, table) in kinds {
                        for (class, limit) in classes(&table, &kind)? {
                            limits = limits.kind_limit(kind.clone(), class, limit)?;
                        }
                    }
                }
                "disconnectAfter" => {
                    let n = match &value {
                        Value::Null => None,
                        v => Some(
                            v.as_u64()
                                .and_then(|n| u32::try_from(n).ok())
                                .and_then(NonZeroU32::new)
                                .ok_or_else(|| {
                                    bad("\"disconnectAfter\" must be a positive integer or null"
                                        .into())
                                })?,
                        ),
                    };
                    limits.disconnect_after = n;
                }
                other => {
                    return Err(bad(format!(
                        "unknown key {other:?} (expected default, kinds, disconnectAfter)"
                    )));
                }
            }
        }
        Ok(limits)
    }
}

fn parse_limit_or_off(text: &str) -> Result<Option<Limit>, RateLimitError> {
    match text.trim() {
        "off" => Ok(None),
        t => t.parse().map(Some),
    }
}

/// `{"class": "LIMIT" | "off" | null, ...}` of a table entry.
fn classes(
    value: &Value,
    entry: &str,
) -> Result<Vec<(MessageClass, Option<Limit>)>, RateLimitError> {
    let Value::Object(map) = value else {
        return Err(RateLimitError::BadTable(format!(
            "{entry:?} must be an object of class -> limit"
        )));
    };
    map.iter()
        .map(|(class, limit)| {
            let class: MessageClass = class.parse()?;
            let limit = match limit {
                Value::Null => None,
                Value::String(s) => parse_limit_or_off(s)?,
                _ => {
                    return Err(RateLimitError::BadTable(format!(
                        "{entry:?}.{class}: a limit is a string like \"100/s,burst=200\" or \"off\""
                    )));
                }
            };
            Ok((class, limit))
        })
        .collect()
}

/// A [`governor`] clock that reads no clock: it returns the time the
/// limiter's owner last passed in, as the time since the limiter was made.
#[derive(Debug, Default)]
pub struct PassedClock {
    nanos: AtomicU64,
}

impl PassedClock {
    fn set(&self, since_start: Duration) {
        let nanos = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Ordering::Relaxed);
    }
}

impl Clock for PassedClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, PassedClock, NoOpMiddleware<Duration>>;

/// A peer's refusals of one class are reported (a `protocol-error` event)
/// at most this often: the first refusal, then at most one per second while
/// they go on. A flood at 10x a limit alternates passes and refusals every
/// few frames, so "one event per run of refusals" would still be one event
/// per passing frame; a time bound keeps a flood from washing other events
/// out of listeners' buffers (and the hub log quiet). Counters count every
/// refusal.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit (or its class has none): route it.
    Pass,
    /// Over the limit: refuse it (an RPC is answered `RPC_RATE_LIMITED`,
    /// anything else is dropped).
    Refuse {
        /// Report this refusal (a `protocol-error` `rate-limited` event):
        /// the peer's first refusal of this class, or the first
        /// [`REPORT_EVERY`] after the last reported one.
        report: bool,
        /// The refusals in a row reached the disconnect threshold: close
        /// the socket.
        disconnect: bool,
    },
}

/// The buckets of one peer's socket. The caller passes the time in.
#[derive(Debug)]
pub struct PeerLimiter {
    buckets: [Option<Bucket>; 4],
    start: Instant,
    /// Per class: when a refusal was last reported.
    reported: [Option<Instant>; 4],
    refused_in_a_row: u32,
    disconnect_after: Option<NonZeroU32>,
}

impl PeerLimiter {
    /// The limiter for `kind` under `limits`, with full buckets at `now`;
    /// `None` when no limit applies to the kind (nothing to check).
    pub fn new(limits: &RateLimits, kind: &str, now: Instant) -> Option<Self> {
        let per_class = limits.for_kind(kind);
        if per_class.iter().all(Option::is_none) {
            return None;
        }
        let buckets = per_class.map(|limit| {
            limit
                .and_then(|l| l.quota())
                .map(|q| RateLimiter::direct_with_clock(q, PassedClock::default()))
        });
        Some(Self {
            buckets,
            start: now,
            reported: [None; 4],
            refused_in_a_row: 0,
            disconnect_after: limits.disconnect_after,
        })
    }

    /// Takes one frame of `class` at `now` (a monotonic instant that never
    /// goes back; an earlier one counts as the start).
    pub fn check(&mut self, class: MessageClass, now: Instant) -> Verdict {
        let i = class.index();
        let conforms = match &self.buckets[i] {
            None => true,
            Some(bucket) => {
                bucket
                    .clock()
                    .set(now.saturating_duration_since(self.start));
                bucket.check().is_ok()
            }
        };
        if conforms {
            self.refused_in_a_row = 0;
            return Verdict::Pass;
        }
        let report =
            self.reported[i].is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if report {
            self.reported[i] = Some(now);
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        let disconnect = self
            .disconnect_after
            .is_some_and(|n| self.refused_in_a_row == n.get());
        Verdict::Refuse { report, disconnect }
    }
}

/// Frames refused by the rate limits since the hub started, per class, and
/// sockets closed for it ([`Hub::rate_limited`](crate::Hub::rate_limited)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimited {
    /// `rpc.request`s answered `RPC_RATE_LIMITED`.
    pub rpc: u64,
    /// `topic.message`s dropped.
    pub publish: u64,
    /// `direct`s dropped.
    pub send: u64,
    /// `status.update`s dropped.
    pub status: u64,
    /// Sockets closed with 1008 `rate limited`.
    pub disconnects: u64,
}

impl RateLimited {
    /// The count of one class.
    pub fn get(&self, class: MessageClass) -> u64 {
        match class {
            MessageClass::Rpc => self.rpc,
            MessageClass::Publish => self.publish,
            MessageClass::Send => self.send,
            MessageClass::Status => self.status,
        }
    }

    /// `{"rpc":…, "publish":…, "send":…, "status":…, "disconnects":…}`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "rpc": self.rpc,
            "publish": self.publish,
            "send": self.send,
            "status": self.status,
            "disconnects": self.disconnects,
        })
    }
}

/// The live counters behind [`RateLimited`] (relaxed adds, only on refusals).
#[derive(Debug, Default)]
pub(crate) struct RateLimitCounters {
    refused: [AtomicU64; 4],
    disconnects: AtomicU64,
}

impl RateLimitCounters {
    pub(crate) fn refused(&self, class: MessageClass) {
        self.refused[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RateLimited {
        let get = |c: MessageClass| self.refused[c.index()].load(Ordering::Relaxed);
        RateLimited {
            rpc: get(MessageClass::Rpc),
            publish: get(MessageClass::Publish),
            send: get(MessageClass::Send),
            status: get(MessageClass::Status),
            disconnects: self.disconnects.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
