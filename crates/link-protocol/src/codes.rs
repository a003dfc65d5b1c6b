//! Stable wire vocabulary: message types, RPC error codes (protocol §7), close
//! codes (§13) and the hub feature list.

use std::fmt;

/// Message type strings (protocol §6).
pub mod msg_type {
    /// Client → hub handshake.
    pub const HELLO: &str = "hello";
    /// Hub → client handshake answer.
    pub const HELLO_ACK: &str = "hello.ack";
    /// Hub → client peer list.
    pub const PEERS_UPDATE: &str = "peers.update";
    /// Hub → new client: last status of every peer.
    pub const STATUS_SNAPSHOT: &str = "status.snapshot";
    /// Client → hub status push, and hub → client fan-out.
    pub const STATUS_UPDATE: &str = "status.update";
    /// RPC call.
    pub const RPC_REQUEST: &str = "rpc.request";
    /// RPC answer.
    pub const RPC_RESPONSE: &str = "rpc.response";
    /// RPC cancellation.
    pub const RPC_CANCEL: &str = "rpc.cancel";
    /// Topic subscription.
    pub const TOPIC_SUBSCRIBE: &str = "topic.subscribe";
    /// Topic unsubscription.
    pub const TOPIC_UNSUBSCRIBE: &str = "topic.unsubscribe";
    /// Publish (client → hub) and delivery (hub → client).
    pub const TOPIC_MESSAGE: &str = "topic.message";
    /// Directed fire-and-forget.
    pub const DIRECT: &str = "direct";
    /// Hub → client: the full peer list in parts, with its membership
    /// version (the `peers.delta` extension; docs/protocol.md §5.2.2).
    pub const PEERS_SNAPSHOT: &str = "peers.snapshot";
    /// Hub → client: the peers that joined, left or re-registered between
    /// two membership versions (the `peers.delta` extension).
    pub const PEERS_DELTA: &str = "peers.delta";
    /// Client → hub: "send me a fresh snapshot" after a gap (the
    /// `peers.delta` extension).
    pub const PEERS_RESYNC: &str = "peers.resync";
}

/// The `from`/`to` name of the hub itself.
pub const SERVER: &str = "server";

/// Features a v1 hub advertises in `hello.ack`.
pub const HUB_FEATURES: [&str; 2] = [Feature::Topics.as_str(), Feature::Direct.as_str()];

/// An optional hub capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Pub/sub topics.
    Topics,
    /// Directed messages.
    Direct,
    /// Versioned peer snapshots and deltas instead of full `peers.update`
    /// lists: a link extension, negotiated (client hello `features`, then
    /// `hello.ack` `features`); the reference never sends it.
    PeersDelta,
}

impl Feature {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Topics => "topics",
            Self::Direct => "direct",
            Self::PeersDelta => "peers.delta",
        }
    }
}

/// RPC error codes carried in `rpc.response` `data.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RpcErrorCode {
    /// `to` missing or falsy.
    BadRequest,
    /// Target not connected.
    NoTarget,
    /// Target's outbox overflowed.
    TargetUnavailable,
    /// Denied by an ACL.
    Forbidden,
    /// No handler for the rpcType.
    UnknownType,
    /// Too many handlers in flight.
    Overloaded,
    /// A handler failed (sanitised).
    HandlerError,
    /// A handler returned a value that is not wire-safe.
    ResultNotSerializable,
    /// The caller is over its `rpc` rate limit (a link-hub extension; the
    /// reference hub has no rate limits).
    RateLimited,
}

impl RpcErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [Self; 9] = [
        Self::BadRequest,
        Self::NoTarget,
        Self::TargetUnavailable,
        Self::Forbidden,
        Self::UnknownType,
        Self::Overloaded,
        Self::HandlerError,
        Self::ResultNotSerializable,
        Self::RateLimited,
    ];

    /// Wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "RPC_BAD_REQUEST",
            Self::NoTarget => "RPC_NO_TARGET",
            Self::TargetUnavailable => "RPC_TARGET_UNAVAILABLE",
            Self::Forbidden => "RPC_FORBIDDEN",
            Self::UnknownType => "RPC_UNKNOWN_TYPE",
            Self::Overloaded => "RPC_OVERLOADED",
            Self::HandlerError => "RPC_HANDLER_ERROR",
            Self::ResultNotSerializable => "RPC_RESULT_NOT_SERIALIZABLE",
            Self::RateLimited => "RPC_RATE_LIMITED",
        }
    }

    /// Parses a wire string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for RpcErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error texts the reference puts in hub- and client-made error responses.
pub mod rpc_error_text {
    /// `RPC_BAD_REQUEST`.
    pub const MISSING_TO: &str = "rpc.request missing \"to\"";
    /// `RPC_NO_TARGET` prefix (followed by the target).
    pub const NO_TARGET: &str = "Target not connected: ";
    /// `RPC_TARGET_UNAVAILABLE` prefix.
    pub const TARGET_UNAVAILABLE: &str = "Target backpressured or send failed: ";
    /// Default `RPC_FORBIDDEN` text.
    pub const FORBIDDEN: &str = "Forbidden";
    /// Hub `RPC_UNKNOWN_TYPE` prefix.
    pub const UNKNOWN_SERVER_TYPE: &str = "Unknown server rpcType: ";
    /// Client `RPC_UNKNOWN_TYPE` prefix.
    pub const UNKNOWN_TYPE: &str = "Unknown rpcType: ";
    /// Hub `RPC_OVERLOADED`.
    pub const SERVER_OVERLOADED: &str = "Server overloaded - too many concurrent RPCs";
    /// Client `RPC_OVERLOADED`.
    pub const HANDLER_OVERLOADED: &str = "Handler overloaded - too many concurrent RPCs";
    /// Sanitised `RPC_HANDLER_ERROR`.
    pub const INTERNAL: &str = "Internal handler error";
    /// Hub `RPC_RATE_LIMITED` (link-hub's rate limits).
    pub const RATE_LIMITED: &str = "Rate limit exceeded";
    /// `RPC_RESULT_NOT_SERIALIZABLE`.
    pub const NOT_SERIALIZABLE: &str = "RPC handler returned a non-serializable result";
    /// Fallback message for an error response without `error`.
    pub const GENERIC: &str = "RPC error";
    /// Fallback code for an error response without `code`.
    pub const REMOTE_CODE: &str = "RPC_REMOTE";
}

/// WebSocket close codes and reasons (protocol §13).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away (hub stopped, server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// No status (what a peer sees for a close without a code).
    pub const NO_STATUS: u16 = 1005;
    /// Abnormal (terminated without a close frame).
    pub const ABNORMAL: u16 = 1006;
    /// Policy violation (bad hello, hello timeout, pending cap).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Displaced by a newer socket of the same kind.
    pub const REPLACED: u16 = 4000;

    /// Reason sent with [`REPLACED`].
    pub const REASON_REPLACED: &str = "replaced by new connection";
    /// Reason for a hello timeout.
    pub const REASON_HELLO_TIMEOUT: &str = "hello timeout";
    /// Reason for pending-cap eviction.
    pub const REASON_PENDING_CAP: &str = "pending cap";
    /// Reason when `Hub::stop` closes pending sockets.
    pub const REASON_HUB_STOPPED: &str = "hub stopped";
    /// Reason when the hub server shuts down.
    pub const REASON_SERVER_SHUTDOWN: &str = "server shutdown";
    /// Reason when a client closes after a rejected hello and will retry.
    pub const REASON_REJECTED_RETRY: &str = "hello rejected - will retry";
    /// Reason when link-hub closes a peer that stayed over its rate limits
    /// (with [`POLICY`]).
    pub const REASON_RATE_LIMITED: &str = "rate limited";
    /// Reason on a keepalive termination (event only; no frame is sent).
    pub const REASON_KEEPALIVE: &str = "keepalive timeout";
    /// Reason when a close handshake we started was not finished within
    /// the grace period and the socket was terminated (event only; no frame
    /// is sent).
    pub const REASON_CLOSE_TIMEOUT: &str = "close timeout";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_codes_round_trip() {
        for code in RpcErrorCode::ALL {
            assert_eq!(RpcErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(RpcErrorCode::parse("RPC_REMOTE"), None);
        assert_eq!(HUB_FEATURES, ["topics", "direct"]);
    }

    /// The close codes are wire values (RFC 6455 §7.4.1 and protocol §13):
    /// pinned here once, so code and tests can name them.
    #[test]
    fn close_codes_are_the_wire_values() {
        assert_eq!(
            [
                close::NORMAL,
                close::GOING_AWAY,
                close::NO_STATUS,
                close::ABNORMAL,
                close::POLICY,
                close::TOO_BIG,
                close::REPLACED,
            ],
            [1000, 1001, 1005, 1006, 1008, 1009, 4000]
        );
    }
}
