//! # link-client
//!
//! Join a link bus from any Rust service: one [`LinkClient`] gives RPC
//! (with timeouts, cancellation and typed errors), pub/sub topics, directed
//! fire-and-forget messages, peer lists and statuses — against our hub or an
//! unmodified Node.js `link-core` hub (protocol v1).
//!
//! ```text
//!  LinkClient (Clone) ──► outbox ──► writer task ──► WebSocket ──► hub
//!        ▲                                                         │
//!        └── RPC results, Subscription / DirectStream, events ◄── driver task
//!                                        (ClientConn: verify, replay, keepalive, reconnect)
//! ```
//!
//! ## Getting started
//!
//! ```no_run
//! use link_client::{ClientConfig, LinkClient};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::builder()
//!     .url("ws://127.0.0.1:8080")
//!     .secret(std::env::var("LINK_SECRET")?)
//!     .kind("billing")
//!     .handler("invoice.total", |call| async move {
//!         let n = call.data.as_ref().and_then(|d| d["items"].as_u64()).unwrap_or(0);
//!         Ok(json!({ "total": n * 10 }))
//!     })
//!     .build()?;
//! let link = LinkClient::new(config);
//! link.ready(None).await?;
//!
//! let answer = link.rpc("inventory", "stock.get", Some(json!({"sku": "A-1"}))).await?;
//! link.publish("billing.events", json!({"paid": 42}))?;
//! let mut news = link.subscribe("news")?;
//! if let Some(msg) = news.recv().await {
//!     println!("{} says {:?} ({answer})", msg.from, msg.payload());
//! }
//! link.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Several hub URLs (`urls(..)`, `add_url(..)`) make a failover list:
//! a failed attempt moves on to the next URL at once, the reconnect
//! backoff comes once per cycle through the list, and `url_order` picks
//! the first URL as the preferred one or shuffles every cycle (see
//! `docs/client.md`, *Failover*).
//!
//! Without a url, secret or kind the client is *disabled*: it never
//! connects, `ready`, `rpc`, `send` and `publish` fail with
//! `LINK_NOT_READY`, and subscriptions are kept but never receive, so a
//! service can run without a bus. See `docs/client.md`, which also lists
//! what differs from the reference client.

#![forbid(unsafe_code)]

mod client;
pub mod config;
mod driver;
pub mod error;
pub mod events;
pub mod handler;
mod inner;
mod outbox;
mod random;
mod streams;
pub mod tls;

pub use client::{LinkClient, ReadyInfo, RpcOptions, StopOptions};
pub use config::{ClientConfig, ClientConfigBuilder};
pub use error::{ConnectError, LinkError, NotReadyReason, RemoteError};
pub use events::{ClientHealth, LinkEvent, RpcOutcome};
pub use handler::{HandlerResult, RpcCall, RpcHandler};
pub use inner::{DirectMessage, Phase, TopicMessage};
pub use link_protocol::HandlerError;
pub use link_protocol::conn::UrlOrder;
pub use streams::{DirectStream, Subscription, TopicHandler};
pub use tls::{RootCertificates, TlsConfigError};
pub use tokio_util::sync::CancellationToken;
