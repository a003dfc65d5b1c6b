//! Client events (docs/client.md, *Events*) as one enum on a broadcast stream,
//! plus the `health()` snapshot. Nothing is built when nobody listens; a
//! listener that falls behind skips events instead of slowing the link.

use std::time::Duration;

use link_protocol::{Diagnostic, Envelope, PeerInfo, ProtocolError};
use serde_json::Value;

use crate::error::{ConnectError, LinkError};

/// How an outgoing RPC ended (`rpc.complete` `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcOutcome {
    /// Answered with success.
    Ok,
    /// Timed out.
    Timeout,
    /// Cancelled by the caller.
    Abort,
    /// The link dropped.
    Disconnect,
    /// Answered with an error.
    RemoteError,
    /// Refused by a full outbox.
    Backpressure,
    /// Refused because the link was not ready (or stopped, or disabled).
    NotReady,
}

impl RpcOutcome {
    /// The reference's reason string (`None` for success).
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            Self::Ok => None,
            Self::Timeout => Some("timeout"),
            Self::Abort => Some("abort"),
            Self::Disconnect => Some("disconnect"),
            Self::RemoteError => Some("remote-error"),
            Self::Backpressure => Some("backpressure"),
            Self::NotReady => Some("not-ready"),
        }
    }
}

/// Something that happened on the link.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// `connect`: the socket opened and the hello was sent.
    Connect {
        /// Hub URL.
        url: String,
        /// Our kind.
        kind: String,
    },
    /// `verified`: the first verified frame on this connection.
    Verified {
        /// Our kind.
        kind: String,
    },
    /// `ready`: `hello.ack` received.
    Ready {
        /// The kind the hub registered.
        kind: String,
        /// Features the hub advertises.
        features: Vec<String>,
    },
    /// `rejected`: `hello.ack ok:false`.
    Rejected {
        /// The hub's reason (its `data.error` text).
        reason: Option<String>,
        /// The error `ready()` fails with (`HELLO_REJECTED`, carrying the
        /// same reason).
        error: LinkError,
    },
    /// `disconnect`: once per connection.
    Disconnect {
        /// Close code.
        code: Option<u16>,
        /// Close reason (`stopped` after `stop()`).
        reason: String,
        /// Whether a reconnect follows.
        will_reconnect: bool,
        /// Whether the connection had been ready.
        was_ready: bool,
        /// Close 4000: another socket took this kind.
        displaced: bool,
    },
    /// `reconnecting`.
    Reconnecting {
        /// Delay before the attempt.
        delay: Duration,
        /// Attempt number.
        attempt: u32,
    },
    /// `reconnect-exhausted`: the link stopped.
    ReconnectExhausted {
        /// Attempts made.
        attempts: u32,
        /// The configured maximum.
        max_reconnect_attempts: Option<u32>,
    },
    /// `ws-error`: a socket-level failure (connect refused, I/O error…).
    WsError(String),
    /// `connect-failed` (this client only): a connect attempt failed, typed.
    /// A `ws-error` with the same text comes just before it, as the
    /// reference reports a failed connect; then the reconnect backoff
    /// (`reconnecting`) or, past `max_reconnect_attempts`, the stop.
    ConnectFailed {
        /// Consecutive failed attempts before this one (0: the first connect).
        attempt: u32,
        /// Why it failed (`CONNECT_TIMEOUT`, `TLS_CERTIFICATE`…).
        error: ConnectError,
    },
    /// `protocol-error`: a dropped frame.
    ProtocolError(ProtocolError),
    /// `protocol-error` too (the reference reports both alike): a finding
    /// that drops no frame, such as `keepalive-timeout`, `no-ack` or
    /// `clock-skew`.
    Diagnostic(Diagnostic),
    /// `message`: every verified frame.
    Message(Envelope),
    /// `peer.connect`.
    PeerConnect(PeerInfo),
    /// `peer.disconnect`.
    PeerDisconnect(PeerInfo),
    /// `peer.replaced`: a peer's `connectedAt` changed.
    PeerReplaced {
        /// Kind.
        kind: String,
        /// Before.
        prev: PeerInfo,
        /// After.
        peer: PeerInfo,
    },
    /// `peer.status`.
    PeerStatus {
        /// Originating peer.
        from: String,
        /// Its status.
        status: Option<Value>,
        /// Hub time (ms).
        at: f64,
    },
    /// `rpc.request`: an inbound call (before the handler runs).
    RpcRequest {
        /// Caller.
        from: String,
        /// Request id.
        id: String,
        /// Handler name.
        rpc_type: String,
        /// Argument.
        data: Option<Value>,
    },
    /// `rpc.cancel`: an inbound handler was cancelled by its caller.
    RpcCancel {
        /// Request id.
        id: String,
        /// Caller.
        from: String,
        /// Handler name.
        rpc_type: String,
    },
    /// `rpc.handler-error`: a local handler failed with an unexposed error.
    RpcHandlerError {
        /// Handler name.
        rpc_type: String,
        /// Caller.
        from: String,
        /// Request id.
        id: String,
        /// The real error text (the caller saw `Internal handler error`).
        error: String,
    },
    /// `rpc.timeout`: an outgoing RPC timed out (an `rpc.cancel` was
    /// sent if the link was ready). `rpc.complete` follows.
    RpcTimeout {
        /// Request id.
        id: String,
        /// Target.
        to: String,
        /// Handler name.
        rpc_type: String,
        /// The timeout that elapsed (`timeoutMs`).
        timeout: Duration,
    },
    /// `rpc.abort`: an outgoing RPC was cancelled by its caller (token
    /// fired, or the future dropped). `rpc.complete` follows.
    RpcAbort {
        /// Request id.
        id: String,
        /// Target.
        to: String,
        /// Handler name.
        rpc_type: String,
    },
    /// `rpc.disconnect`: the connection closed (or the link stopped) before
    /// an outgoing RPC's response. `rpc.complete` follows.
    RpcDisconnect {
        /// Request id.
        id: String,
        /// Target.
        to: String,
        /// Handler name.
        rpc_type: String,
    },
    /// `rpc.complete`: an outgoing RPC ended, however it ended (the
    /// `reason` of `outcome` says how; `rpc.timeout`, `rpc.abort` or
    /// `rpc.disconnect` came just before for those outcomes).
    RpcComplete {
        /// Request id.
        id: String,
        /// Target.
        to: String,
        /// Handler name.
        rpc_type: String,
        /// How it ended.
        outcome: RpcOutcome,
        /// Time from call to settlement.
        duration: Duration,
        /// Error text when not ok.
        error: Option<String>,
    },
    /// `backpressure`: messages started queueing (edge-triggered).
    Backpressure {
        /// Type of the queued message.
        msg_type: String,
        /// Its target.
        to: Option<String>,
        /// Bytes written but not yet flushed.
        buffered_amount: usize,
        /// Queue length.
        outbox_size: usize,
    },
    /// `outbox-overflow`: a message was refused.
    OutboxOverflow {
        /// Type.
        msg_type: String,
        /// Target.
        to: Option<String>,
        /// Bytes queued.
        outbox_bytes: usize,
        /// The cap.
        max_outbox_bytes: usize,
    },
    /// `outbox-drained`: the queue emptied.
    OutboxDrained,
    /// `direct`: a direct message arrived.
    Direct {
        /// Sender.
        from: String,
        /// directType.
        msg_type: String,
        /// directData.
        data: Option<Value>,
    },
    /// A subscription or direct stream was full; messages were dropped
    /// rather than stalling the link.
    SlowConsumer {
        /// `topic:<name>` or `direct`.
        stream: String,
        /// Messages dropped so far on that stream.
        dropped: u64,
    },
}

impl LinkEvent {
    /// The reference's event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Verified { .. } => "verified",
            Self::Ready { .. } => "ready",
            Self::Rejected { .. } => "rejected",
            Self::Disconnect { .. } => "disconnect",
            Self::Reconnecting { .. } => "reconnecting",
            Self::ReconnectExhausted { .. } => "reconnect-exhausted",
            Self::WsError(_) => "ws-error",
            Self::ConnectFailed { .. } => "connect-failed",
            Self::ProtocolError(_) | Self::Diagnostic(_) => "protocol-error",
            Self::Message(_) => "message",
            Self::PeerConnect(_) => "peer.connect",
            Self::PeerDisconnect(_) => "peer.disconnect",
            Self::PeerReplaced { .. } => "peer.replaced",
            Self::PeerStatus { .. } => "peer.status",
            Self::RpcRequest { .. } => "rpc.request",
            Self::RpcCancel { .. } => "rpc.cancel",
            Self::RpcHandlerError { .. } => "rpc.handler-error",
            Self::RpcTimeout { .. } => "rpc.timeout",
            Self::RpcAbort { .. } => "rpc.abort",
            Self::RpcDisconnect { .. } => "rpc.disconnect",
            Self::RpcComplete { .. } => "rpc.complete",
            Self::Backpressure { .. } => "backpressure",
            Self::OutboxOverflow { .. } => "outbox-overflow",
            Self::OutboxDrained => "outbox-drained",
            Self::Direct { .. } => "direct",
            Self::SlowConsumer { .. } => "slow-consumer",
        }
    }
}

/// `health()`: the reference's fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientHealth {
    /// `hello.ack` received on the current connection.
    pub ready: bool,
    /// Stopped (or disabled).
    pub stopped: bool,
    /// A frame verified on the current connection.
    pub verified: bool,
    /// Peers in the last `peers.update`.
    pub peer_count: usize,
    /// Outgoing RPCs awaiting an answer.
    pub pending_rpc_count: usize,
    /// A socket is open.
    pub connected: bool,
    /// Wall ms of the last verified frame.
    pub last_verified_at: Option<u64>,
    /// Consecutive reconnect attempts.
    pub reconnect_attempt: u32,
    /// Topics subscribed locally.
    pub subscription_count: usize,
    /// Bytes written but not yet flushed.
    pub buffered_amount: usize,
    /// Queued messages.
    pub outbox_size: usize,
    /// Queued bytes.
    pub outbox_bytes: usize,
    /// Inbound handlers running.
    pub in_flight_rpc: usize,
}
