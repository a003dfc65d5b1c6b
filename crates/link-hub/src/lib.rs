//! # link-hub
//!
//! The hub of a link bus: services connect over WebSocket, authenticate
//! with a signed hello, and the hub routes their RPCs, topic messages and
//! direct messages — re-signing every frame with its recipient's key. It
//! speaks protocol v1 byte for byte, so unmodified Node.js `link-core`
//! clients work against it.
//!
//! ```text
//!             ┌──────────── per socket ────────────┐
//!  ws frames ─► reader task: HubConn (parse, verify, │
//!             │  replay, hello, timers) ─► ACL lane ─┼─► router task ──┐
//!  ws frames ◄─ writer task: Outbox (sign at flush) ◄┼─────────────────┘
//!             └────────────────────────────────────┘   peers, topics,
//!                                                      statuses, RPCs
//! ```
//!
//! - [`Hub`]: create with a [`HubConfig`], then [`Hub::attach`] any
//!   WebSocket (`Stream`/`Sink` of tungstenite messages) or [`Hub::accept`]
//!   a raw TCP stream.
//! - [`HubConfig::builder`]: the reference's options and defaults.
//! - [`Hub::events`]: every hub event ([`HubEvent`]).
//! - [`Hub::metrics`]: Prometheus metrics as OpenMetrics text (what a
//!   [`HubServer`] serves at `GET /metrics`).
//! - [`RateLimits`]: per-peer token buckets per message class and kind
//!   ([`HubConfigBuilder::rate_limits`]; none by default), counted by
//!   [`Hub::rate_limited`].
//!
//! ## Getting started
//!
//! ```no_run
//! use link_hub::{Hub, HubConfig, Secret};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = HubConfig::builder(Secret::shared("demo-secret"))
//!     .handler("time.now", |_req| async { Ok(serde_json::json!(42)) })
//!     .build()?;
//! let hub = Hub::new(config);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! loop {
//!     let (tcp, addr) = listener.accept().await?;
//!     let hub = hub.clone();
//!     tokio::spawn(async move { hub.accept(tcp, Some(addr)).await });
//! }
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod acl;
mod cluster;
pub mod config;
mod connection;
pub mod events;
mod future;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod hub;
mod ids;
mod inbox;
mod mailbox;
mod metrics;
mod outbox;
mod pace;
pub mod ratelimit;
mod router;
mod routing;
pub mod server;
pub mod server_rpc;
mod shared;

pub use acl::{Acl, AclOp, Verdict};
#[cfg(feature = "cluster")]
pub use cluster::{ClusterConfig, ClusterConfigError, NatsAuth};
pub use config::{
    DEFAULT_MAX_DROPPED_FRAMES_PER_SEC, DEFAULT_MAX_PEER_LIST_BYTES,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_PEER, HubConfig, HubConfigBuilder, KeySource, PeerUpdates,
    Secret,
};
pub use events::{HubEvent, HubHealth, HubState, TimeoutReason};
pub use hub::Hub;
pub use ids::random_secret;
pub use link_protocol::HandlerError;
pub use ratelimit::{Limit, MessageClass, RateLimitError, RateLimited, RateLimits};
pub use server::{HubServer, HubServerBuilder, ServerError, TlsConfig, TlsError};
pub use server_rpc::{ServerRpcRequest, ServerRpcResult};
