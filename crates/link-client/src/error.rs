//! [`LinkError`]: every way a client operation can fail, with the
//! reference's stable codes (`RPC_TIMEOUT`, `BACKPRESSURE`, …).
//!
//! Remote faults ([`LinkError::RpcRemote`]), local state
//! ([`LinkError::NotReady`], [`LinkError::Backpressure`]) and misuse
//! ([`LinkError::InvalidArgument`]) are separate variants.

use std::time::Duration;

use serde_json::Value;

/// An error answer from a remote handler or the hub.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError {
    /// The remote code (`RPC_NO_TARGET`, an application code, or `RPC_REMOTE`).
    pub code: String,
    /// The remote message.
    pub message: String,
    /// Structured detail, if sent.
    pub data: Option<Value>,
    /// Target kind.
    pub to: String,
    /// Handler name.
    pub rpc_type: String,
}

/// A failed client operation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No response within the RPC timeout (an `rpc.cancel` was sent).
    #[error("RPC {rpc_type} to {to} timed out after {timeout:?}")]
    RpcTimeout {
        /// Target kind.
        to: String,
        /// Handler name.
        rpc_type: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The connection closed (or the link stopped) before the response.
    #[error("RPC {rpc_type} to {to} failed: {reason}")]
    RpcDisconnect {
        /// Target kind.
        to: String,
        /// Handler name.
        rpc_type: String,
        /// What happened.
        reason: String,
    },
    /// Cancelled by the caller (an `rpc.cancel` was sent).
    #[error("RPC {rpc_type} to {to} was cancelled")]
    RpcAbort {
        /// Target kind.
        to: String,
        /// Handler name.
        rpc_type: String,
    },
    /// The remote handler (or the hub) answered with an error.
    #[error("{} ({})", .0.message, .0.code)]
    RpcRemote(Box<RemoteError>),
    /// The outbox is full.
    #[error(
        "outbox full: {msg_type} to {to} refused ({outbox_bytes} of {max_outbox_bytes} bytes queued)"
    )]
    Backpressure {
        /// Message type refused.
        msg_type: String,
        /// Its target.
        to: String,
        /// Bytes queued.
        outbox_bytes: usize,
        /// The cap.
        max_outbox_bytes: usize,
    },
    /// The link is disabled, stopped, or (for RPCs) not ready.
    #[error("link not ready for {op}")]
    NotReady {
        /// The operation (`rpc`, `send`, `publish`, `subscribe`, `ready`).
        op: &'static str,
    },
    /// The hub does not advertise a feature the operation needs.
    #[error("hub does not support {feature} (needed by {op})")]
    FeatureUnsupported {
        /// `topics` or `direct`.
        feature: &'static str,
        /// The operation.
        op: &'static str,
    },
    /// The hub refused the hello.
    #[error("hello rejected: {}", reason.as_deref().unwrap_or("no reason given"))]
    HelloRejected {
        /// The hub's reason.
        reason: Option<String>,
    },
    /// `ready()` did not complete in time.
    #[error("ready() timed out after {0:?}")]
    ReadyTimeout(Duration),
    /// A bad argument (empty target, invalid topic, non-finite number…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A typed RPC result did not deserialize.
    #[error("RPC result did not match the expected type: {0}")]
    Decode(String),
}

impl LinkError {
    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            Self::RpcTimeout { .. } => "RPC_TIMEOUT",
            Self::RpcDisconnect { .. } => "RPC_DISCONNECT",
            Self::RpcAbort { .. } => "RPC_ABORT",
            Self::RpcRemote(r) => &r.code,
            Self::Backpressure { .. } => "BACKPRESSURE",
            Self::NotReady { .. } => "LINK_NOT_READY",
            Self::FeatureUnsupported { .. } => "FEATURE_UNSUPPORTED",
            Self::HelloRejected { .. } => "HELLO_REJECTED",
            Self::ReadyTimeout(_) => "READY_TIMEOUT",
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Decode(_) => "DECODE_ERROR",
        }
    }

    /// True for failures worth retrying (timeout, disconnect).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RpcTimeout { .. } | Self::RpcDisconnect { .. })
    }
}
