//! # link-protocol
//!
//! The sans-I/O core of the link protocol, version 1: everything two peers
//! must agree on to the byte, with no sockets, no clock reads and no
//! randomness. Drivers (`link-hub`, `link-client`) feed it bytes, the time
//! and fresh ids, and act on what it returns.
//!
//! ```text
//!   bytes ──► envelope::parse_frame ──► Received ──verify(Key)──► Envelope
//!                                                     │
//!                    replay::ReplayGuard (window + ids)◄┘
//!                                                     │
//!                          messages::Message::parse ◄─┘ ──► driver logic
//!
//!   driver ──► Header + CanonicalData ──► envelope::encode(Key) ──► bytes
//! ```
//!
//! - [`canonical`]: the canonical JSON the reference signs (UTF-16 key order,
//!   ECMAScript numbers, `JSON.stringify` escaping).
//! - [`signing`]: HMAC keys (sha256/384/512), strict constant-time verify.
//! - [`envelope`]: parse/verify/encode frames.
//! - [`replay`]: replay window and per-sender id cache that survives
//!   disconnects within a memory budget.
//! - [`validate`]: kind, topic and id rules; [`wire_safe`]: outgoing payload
//!   checks.
//! - [`messages`], [`codes`]: typed payloads, RPC error codes, close codes.
//!
//! ## Getting started
//!
//! ```
//! use link_protocol::{envelope, CanonicalData, Header, HashAlgo, Key};
//!
//! let key = Key::new("demo-secret", HashAlgo::Sha256)?;
//! let data = CanonicalData::new(&serde_json::json!({"directType": "ping"}));
//! let header = Header { id: "m-1", ts: 1_795_424_112_063, msg_type: "direct", from: Some("alpha"), to: Some("beta") };
//! let frame = envelope::encode(&key, &header, Some(&data));
//!
//! let received = envelope::parse_frame(frame.as_bytes(), envelope::DEFAULT_MAX_MESSAGE_BYTES)
//!     .map_err(|e| e.to_string())?;
//! assert!(received.verify(&key));
//! assert_eq!(received.envelope.to().as_deref(), Some("beta"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod canonical;
pub mod codes;
pub mod conn;
pub mod envelope;
pub mod error;
pub mod handler_error;
mod hex;
mod hmac_sha256;
pub mod messages;
mod plain;
pub mod presence;
pub mod replay;
pub mod signed_form;
pub mod signed_tail;
pub mod signing;
pub mod validate;
pub mod wire_safe;

pub use codes::{Feature, HUB_FEATURES, RpcErrorCode, SERVER, close, msg_type};
pub use envelope::{CanonicalData, Envelope, Header, Received};
pub use error::{ConfigError, Diagnostic, DropReason, KindError, ProtocolError, WireError};
pub use handler_error::HandlerError;
pub use messages::{Hello, HelloAck, Message, PeerInfo, RpcResponse, StatusEntry};
pub use replay::{ReplayCheck, ReplayConfig, ReplayGuard};
pub use serde_json::{Map, Value};
pub use signing::{HashAlgo, Key, KeyId, Signature};
