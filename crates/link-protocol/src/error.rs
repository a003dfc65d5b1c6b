//! Error and drop-reason types of the protocol crate, each with a stable code.
//!
//! - [`DropReason`]: why an inbound frame was discarded; its [`code`](DropReason::code)
//!   is the reference's `protocol-error` `reason` string.
//! - [`ProtocolError`]: a drop reason plus the details the reference attaches
//!   (`kind`, `type`, `size`, `skew`, `detail`, `error`).
//! - [`Diagnostic`]: a finding about the link that drops no frame (keepalive
//!   timeout, no `hello.ack`, clock skew). The reference reports these as
//!   `protocol-error` events too, so its [`code`](Diagnostic::code) shares the
//!   `reason` namespace with [`DropReason::code`] and no code appears in both.
//! - [`ConfigError`]: local misuse found when a configuration is built.
//! - [`WireError`]: a value that cannot be put on the wire.

use std::fmt;

/// Why an inbound frame was dropped (the `reason` of a `protocol-error` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Frame larger than `maxMessageBytes`.
    Oversize,
    /// Not JSON (or not representable, e.g. lone surrogate escapes, protocol §0.5).
    ParseError,
    /// `id` absent, empty or not a string.
    MissingId,
    /// `id` longer than 256 UTF-16 units.
    OversizedId,
    /// A hello whose kind is unusable (`detail` says which rule failed).
    BadHello,
    /// The key lookup for a hello's kind gave no key.
    UnknownKind,
    /// A second hello on an authenticated socket.
    DuplicateHello,
    /// A non-hello frame on an unauthenticated socket.
    PreHelloMessage,
    /// HMAC mismatch.
    BadSignature,
    /// `v` is not the number 1.
    BadVersion,
    /// `ts` outside the replay window (`skew` attached).
    ReplayWindow,
    /// `id` already seen from this sender within the window.
    ReplayId,
    /// A topic that breaks the topic rules.
    InvalidTopic,
    /// (client) an `rpc.response` from neither `server` nor the callee.
    RpcResponseMismatch,
    /// (link-hub) over the sender's rate limit for the frame's class
    /// (`detail`: `rpc`, `publish`, `send` or `status`).
    RateLimited,
    /// (link-hub) a `topic.subscribe` past the sender's subscription cap
    /// (`max_subscriptions_per_peer`); the subscription is not made.
    SubscriptionLimit,
}

impl DropReason {
    /// The stable reason string used on `protocol-error` events.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::ParseError => "parse-error",
            Self::MissingId => "missing-id",
            Self::OversizedId => "oversized-id",
            Self::BadHello => "bad-hello",
            Self::UnknownKind => "unknown-kind",
            Self::DuplicateHello => "duplicate-hello",
            Self::PreHelloMessage => "pre-hello-message",
            Self::BadSignature => "bad-signature",
            Self::BadVersion => "bad-version",
            Self::ReplayWindow => "replay-window",
            Self::ReplayId => "replay-id",
            Self::InvalidTopic => "invalid-topic",
            Self::RpcResponseMismatch => "rpc-response-mismatch",
            Self::RateLimited => "rate-limited",
            Self::SubscriptionLimit => "subscription-limit",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A dropped frame: the reason plus the reference's optional details.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtocolError {
    /// Why the frame was dropped.
    pub reason: DropReason,
    /// Sender kind, when known.
    pub kind: Option<Box<str>>,
    /// The frame's `type`, when known.
    pub msg_type: Option<Box<str>>,
    /// Frame size in bytes (`oversize`, `parse-error`).
    pub size: Option<usize>,
    /// `now - ts` in ms (`replay-window`).
    pub skew: Option<f64>,
    /// Sub-reason (`bad-hello`: `missing-kind` …; `duplicate-hello`: `concurrent-hello`).
    pub detail: Option<&'static str>,
    /// Underlying error text (`parse-error`).
    pub error: Option<Box<str>>,
}

impl ProtocolError {
    /// A bare error with only a reason.
    pub fn new(reason: DropReason) -> Self {
        Self {
            reason,
            kind: None,
            msg_type: None,
            size: None,
            skew: None,
            detail: None,
            error: None,
        }
    }

    /// The reason.
    pub fn reason(&self) -> DropReason {
        self.reason
    }

    /// Sets the sender kind.
    pub fn with_kind(mut self, kind: impl Into<Box<str>>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the frame type.
    pub fn with_type(mut self, msg_type: Option<&str>) -> Self {
        self.msg_type = msg_type.map(Into::into);
        self
    }

    /// Sets the detail text.
    pub fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.code())?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProtocolError {}

/// A finding about the link that drops no frame (the client's diagnostics,
/// reported by the reference as `protocol-error` events; protocol §12).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Diagnostic {
    /// No pong since the previous ping; the socket was terminated (a
    /// reconnect follows, as after any unexpected close).
    KeepaliveTimeout,
    /// Connected, but no `hello.ack` within the diagnostic delay.
    NoAck {
        /// Whether a frame from the hub verified on this connection: the hub
        /// speaks with our key but never acked. `false` hints at a secret or
        /// hash mismatch.
        verified: bool,
    },
    /// No `hello.ack` within the diagnostic delay, and frames that verified
    /// were dropped by the replay window: the clocks disagree.
    ClockSkew {
        /// `now - ts` of the last such frame, in ms.
        skew: f64,
    },
}

impl Diagnostic {
    /// The stable reason string used on `protocol-error` events.
    pub const fn code(self) -> &'static str {
        match self {
            Self::KeepaliveTimeout => "keepalive-timeout",
            Self::NoAck { .. } => "no-ack",
            Self::ClockSkew { .. } => "clock-skew",
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A configuration value that cannot be used; found once, at build time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The secret or key is empty.
    #[error("secret must be a non-empty string")]
    EmptySecret,
    /// Unknown hash algorithm name.
    #[error("unsupported hash algorithm {0:?} (use sha256, sha384 or sha512)")]
    UnsupportedHash(String),
    /// A kind that breaks the kind rules.
    #[error("invalid kind: {0}")]
    InvalidKind(#[from] KindError),
    /// A numeric option out of range.
    #[error("option {option} is invalid: {reason}")]
    InvalidOption {
        /// Option name as documented.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ConfigError {
    /// Stable code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::EmptySecret => "CONFIG_EMPTY_SECRET",
            Self::UnsupportedHash(_) => "CONFIG_UNSUPPORTED_HASH",
            Self::InvalidKind(_) => "CONFIG_INVALID_KIND",
            Self::InvalidOption { .. } => "CONFIG_INVALID_OPTION",
        }
    }
}

/// Why a kind is unusable; `detail()` is the hub's close reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// Empty after trimming.
    #[error("missing-kind")]
    Missing,
    /// Longer than 256 characters.
    #[error("oversized-kind")]
    Oversized,
    /// `server`, `__proto__`, `constructor` or `prototype`.
    #[error("reserved-kind")]
    Reserved,
    /// Characters outside `[a-zA-Z0-9._-]` (or surrounding whitespace, for a
    /// client's own kind).
    #[error("invalid-kind")]
    Invalid,
}

impl KindError {
    /// The close reason / `bad-hello` detail.
    pub const fn detail(self) -> &'static str {
        match self {
            Self::Missing => "missing-kind",
            Self::Oversized => "oversized-kind",
            Self::Reserved => "reserved-kind",
            Self::Invalid => "invalid-kind",
        }
    }
}

/// A payload that cannot be sent as-is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// NaN or ±Infinity somewhere in the value (JSON has no such numbers).
    #[error("value contains a non-finite number (NaN or Infinity)")]
    NonFinite,
    /// The value could not be serialised to JSON.
    #[error("not serialisable: {0}")]
    NotSerializable(String),
    /// A topic that breaks the topic rules.
    #[error("invalid topic {0:?}")]
    InvalidTopic(String),
    /// The encoded frame exceeds the size cap.
    #[error("frame of {size} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The cap.
        max: usize,
    },
}

impl WireError {
    /// Stable code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NonFinite | Self::NotSerializable(_) => "WIRE_NOT_SERIALIZABLE",
            Self::InvalidTopic(_) => "INVALID_TOPIC",
            Self::TooLarge { .. } => "WIRE_TOO_LARGE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_codes_are_the_reference_reasons_and_no_drop_reason_uses_them() {
        let diagnostics = [
            Diagnostic::KeepaliveTimeout,
            Diagnostic::NoAck { verified: false },
            Diagnostic::NoAck { verified: true },
            Diagnostic::ClockSkew { skew: -1.0 },
        ];
        let codes: Vec<&str> = diagnostics.iter().map(|d| d.code()).collect();
        assert_eq!(
            codes,
            ["keepalive-timeout", "no-ack", "no-ack", "clock-skew"]
        );
        let drops = [
            DropReason::Oversize,
            DropReason::ParseError,
            DropReason::MissingId,
            DropReason::OversizedId,
            DropReason::BadHello,
            DropReason::UnknownKind,
            DropReason::DuplicateHello,
            DropReason::PreHelloMessage,
            DropReason::BadSignature,
            DropReason::BadVersion,
            DropReason::ReplayWindow,
            DropReason::ReplayId,
            DropReason::InvalidTopic,
            DropReason::RpcResponseMismatch,
        ];
        for d in drops {
            assert!(!codes.contains(&d.code()), "{d} is also a diagnostic code");
        }
        assert_eq!(
            Diagnostic::ClockSkew { skew: 5.0 }.to_string(),
            "clock-skew"
        );
    }
}
