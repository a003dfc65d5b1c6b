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
    /// The request id.
    pub id: String,
}

/// Why an operation found the link not ready ([`LinkError::NotReady`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReadyReason {
    /// url, secret or kind is missing: the link never connects.
    Disabled,
    /// `stop()` was called, or the link stopped by itself (displaced,
    /// reconnect attempts exhausted, hello rejected).
    Stopped,
    /// Connecting, handshaking or waiting to reconnect (only `rpc` fails
    /// for this; `send` and `publish` queue).
    Connecting,
    /// Never started (only `rpc` fails for this; `ready()` starts the link,
    /// `send` and `publish` queue).
    NotStarted,
}

impl NotReadyReason {
    /// `disabled`, `stopped`, `connecting` or `not started`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Stopped => "stopped",
            Self::Connecting => "connecting",
            Self::NotStarted => "not started",
        }
    }
}

impl std::fmt::Display for NotReadyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
        /// The request id.
        id: String,
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
        /// The request id.
        id: String,
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
        /// The request id.
        id: String,
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
        /// Bytes written to the socket but not yet flushed.
        buffered_amount: usize,
        /// The handler name, when an RPC request was refused.
        rpc_type: Option<String>,
        /// The request id, when an RPC request was refused.
        id: Option<String>,
    },
    /// The link is disabled, stopped, or (for RPCs) not ready.
    #[error("link not ready for {op}: {reason}")]
    NotReady {
        /// The operation (`rpc`, `send`, `publish`, `ready`).
        op: &'static str,
        /// Why.
        reason: NotReadyReason,
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

    /// The RPC request id, for the errors of an outgoing RPC that got one
    /// (timeout, disconnect, abort, remote error, a refused request).
    pub fn rpc_id(&self) -> Option<&str> {
        match self {
            Self::RpcTimeout { id, .. }
            | Self::RpcDisconnect { id, .. }
            | Self::RpcAbort { id, .. } => Some(id),
            Self::RpcRemote(r) => Some(&r.id),
            Self::Backpressure { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// True for failures worth retrying (timeout, disconnect).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RpcTimeout { .. } | Self::RpcDisconnect { .. })
    }
}

/// Why one connect attempt (TCP, then TLS for `wss://`, then the WebSocket
/// upgrade) failed. Reported in [`LinkEvent::ConnectFailed`](crate::LinkEvent::ConnectFailed);
/// the link then backs off and retries, as after any unexpected close.
///
/// Peer-side faults (a timeout, a refused or reset socket, a certificate
/// the roots do not trust, an upgrade the hub refused) and local ones (a
/// URL that cannot be dialled) are separate variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP, TLS and the WebSocket upgrade did not finish within
    /// `connect_timeout`.
    #[error("connect to {url} timed out after {after:?} (TCP, TLS and WebSocket upgrade)")]
    Timeout {
        /// Hub URL.
        url: String,
        /// The `connect_timeout` that elapsed.
        after: Duration,
    },
    /// The socket failed (refused, reset, unreachable, closed early).
    #[error("connect to {url} failed: {reason}")]
    Io {
        /// Hub URL.
        url: String,
        /// The operating system's or the stream's error.
        reason: String,
    },
    /// The hub's TLS certificate was not accepted (unknown issuer, wrong
    /// name, expired…): check the roots (`ca_file`) and the URL's host.
    #[error("TLS certificate of {url} rejected: {reason}")]
    Certificate {
        /// Hub URL.
        url: String,
        /// rustls' verdict.
        reason: String,
    },
    /// Any other TLS failure (protocol mismatch, an alert from the hub…).
    #[error("TLS handshake with {url} failed: {reason}")]
    Tls {
        /// Hub URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The socket opened but the WebSocket upgrade failed (an HTTP status
    /// other than 101, a malformed answer). For a refusal the reason is
    /// the status and the start of the hub's answer body, which says why
    /// (`HTTP 400 Bad Request: bad websocket path`).
    #[error("WebSocket upgrade at {url} failed: {reason}")]
    Handshake {
        /// Hub URL.
        url: String,
        /// What the hub answered, or what was wrong with it.
        reason: String,
    },
    /// The URL cannot be dialled (not `ws://` or `wss://`, no host…).
    #[error("cannot connect to {url}: {reason}")]
    InvalidUrl {
        /// Hub URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConnectError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "CONNECT_TIMEOUT",
            Self::Io { .. } => "CONNECT_IO",
            Self::Certificate { .. } => "TLS_CERTIFICATE",
            Self::Tls { .. } => "TLS_ERROR",
            Self::Handshake { .. } => "WS_HANDSHAKE",
            Self::InvalidUrl { .. } => "INVALID_URL",
        }
    }

    /// The hub URL of the attempt.
    pub fn url(&self) -> &str {
        match self {
            Self::Timeout { url, .. }
            | Self::Io { url, .. }
            | Self::Certificate { url, .. }
            | Self::Tls { url, .. }
            | Self::Handshake { url, .. }
            | Self::InvalidUrl { url, .. } => url,
        }
    }

    /// Classifies tokio-tungstenite's connect error. rustls' verdicts
    /// arrive wrapped in an I/O error (tokio-rustls), so they are looked
    /// for inside it.
    pub(crate) fn from_ws(url: &str, err: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as E;
        use tokio_tungstenite::tungstenite::error::{TlsError, UrlError};
        let url = url.to_owned();
        match err {
            E::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => Self::from_rustls(url, tls),
                None => Self::Io {
                    url,
                    reason: e.to_string(),
                },
            },
            E::Tls(TlsError::Rustls(tls)) => Self::from_rustls(url, &tls),
            E::Tls(e) => Self::Tls {
                url,
                reason: e.to_string(),
            },
            E::Url(UrlError::TlsFeatureNotEnabled) => Self::Tls {
                url,
                reason: "no TLS configuration for this URL".into(),
            },
            E::Url(e) => Self::InvalidUrl {
                url,
                reason: e.to_string(),
            },
            // The URL did not make an HTTP request (no host, a bad port…).
            E::HttpFormat(e) => Self::InvalidUrl {
                url,
                reason: e.to_string(),
            },
            E::Http(resp) => Self::Handshake {
                url,
                reason: http_refusal(resp.status(), resp.body().as_deref()),
            },
            E::ConnectionClosed | E::AlreadyClosed => Self::Io {
                url,
                reason: "connection closed during the upgrade".into(),
            },
            e => Self::Handshake {
                url,
                reason: e.to_string(),
            },
        }
    }

    fn from_rustls(url: String, err: &rustls::Error) -> Self {
        let reason = err.to_string();
        match err {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                Self::Certificate { url, reason }
            }
            _ => Self::Tls { url, reason },
        }
    }
}

/// Longest part of a refusal's body quoted in [`ConnectError::Handshake`].
const MAX_REFUSAL_BODY: usize = 200;

/// `HTTP <status>`, then `: <body>` when the hub said why in a short text
/// body (control characters dropped, cut at [`MAX_REFUSAL_BODY`] chars).
fn http_refusal(
    status: tokio_tungstenite::tungstenite::http::StatusCode,
    body: Option<&[u8]>,
) -> String {
    let text: String = body
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REFUSAL_BODY)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_upgrade_quotes_the_hubs_reason() {
        use tokio_tungstenite::tungstenite::{Error as E, http};
        let refusal = |body: Option<&[u8]>| {
            let mut resp = http::Response::new(body.map(<[u8]>::to_vec));
            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            ConnectError::from_ws("ws://h/x", E::Http(Box::new(resp)))
        };
        let err = refusal(Some(b"bad websocket path"));
        assert_eq!(err.code(), "WS_HANDSHAKE");
        assert_eq!(
            err.to_string(),
            "WebSocket upgrade at ws://h/x failed: HTTP 400 Bad Request: bad websocket path"
        );
        assert_eq!(
            refusal(None).to_string(),
            "WebSocket upgrade at ws://h/x failed: HTTP 400 Bad Request"
        );
        let long = vec![b'a'; 1000];
        let ConnectError::Handshake { reason, .. } = refusal(Some(&long)) else {
            panic!("a handshake error")
        };
        assert_eq!(
            reason.len(),
            "HTTP 400 Bad Request: ".len() + MAX_REFUSAL_BODY
        );
    }

    #[test]
    fn a_url_that_makes_no_request_is_invalid() {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let Err(e) = "ws://".into_client_request() else {
            panic!("ws:// makes no request")
        };
        assert_eq!(ConnectError::from_ws("ws://", e).code(), "INVALID_URL");
    }
}
