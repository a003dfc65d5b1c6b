//! What crosses a transport: [`Frame`], and what can go wrong reading or
//! writing one ([`TransportError`]).

/// Validated UTF-8 text, shared without copying (tungstenite's buffer).
pub type Text = tokio_tungstenite::tungstenite::Utf8Bytes;

/// Binary payload, shared without copying.
pub type Binary = tokio_tungstenite::tungstenite::Bytes;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (every link envelope).
    Text(Text),
    /// A binary frame (peers may send envelopes as binary).
    Binary(Binary),
    /// A keepalive probe.
    Ping,
    /// The answer to a ping.
    Pong,
    /// A close, with code and reason when the closer gave one.
    Close(Option<CloseFrame>),
}

impl Frame {
    /// A text frame.
    pub fn text(text: impl Into<Text>) -> Self {
        Self::Text(text.into())
    }

    /// A close frame with `code` and `reason`, or without a body.
    pub fn close(code: Option<u16>, reason: impl Into<String>) -> Self {
        Self::Close(code.map(|code| CloseFrame {
            code,
            reason: reason.into(),
        }))
    }

    /// Payload bytes, for size caps.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
            Self::Close(Some(c)) => 2 + c.reason.len(),
            Self::Ping | Self::Pong | Self::Close(None) => 0,
        }
    }

    /// True for frames without payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A close frame's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (1000 normal, 1001 going away, 4000 replaced, ...).
    pub code: u16,
    /// The reason text.
    pub reason: String,
}

/// A transport's failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A frame larger than the transport's cap arrived; the connection
    /// should be closed with 1009.
    #[error("frame over the size cap: {0}")]
    TooBig(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// Anything else (I/O, protocol violation at the framing layer), with
    /// the underlying error's text.
    #[error("{0}")]
    Failed(String),
}

impl TransportError {
    /// A stable code for logs and events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooBig(_) => "too-big",
            Self::Closed => "closed",
            Self::Failed(_) => "failed",
        }
    }
}
