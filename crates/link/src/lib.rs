//! # link
//!
//! One dependency for a service on a link bus. The protocol is always
//! here; the rest is picked with cargo features:
//!
//! | feature | module | what | default |
//! |---|---|---|---|
//! | — | `link::protocol` | envelopes, canonical JSON, signing, replay rules | always |
//! | `client` | `link::client` | `LinkClient`: RPC, pub/sub, direct messages, peers | yes |
//! | `hub` | `link::hub` | `Hub`: authenticate peers and route their traffic | no |
//! | `helpers` | `link::helpers` | logging, env config, retries, shutdown, secrets, recorder | no |
//!
//! ```toml
//! [dependencies]
//! link = { version = "0.1", features = ["helpers"] }          # a service
//! # link = { version = "0.1", features = ["hub", "helpers"] } # a hub binary
//! ```
//!
//! ```text
//!   link::protocol ◄── link::client ◄── link::helpers
//!          ▲                                  │ (hub feature: hub logger)
//!          └──────── link::hub ◄──────────────┘
//! ```
//!
//! The most used items are also at the root: `link::Key`, `link::Envelope`,
//! `link::Value`… always; `link::LinkClient`, `link::ClientConfig`,
//! `link::LinkError`… with `client`; `link::Hub`, `link::HubConfig`… with `hub`.
//!
//! ## Getting started
//!
//! The protocol layer needs no runtime and no network:
//!
//! ```
//! use link::{CanonicalData, HashAlgo, Header, Key, protocol::envelope};
//!
//! let key = Key::new("demo-secret", HashAlgo::Sha256)?;
//! let data = CanonicalData::new(&serde_json::json!({"directType": "ping"}));
//! let header = Header { id: "m-1", ts: 1_795_424_112_063, msg_type: "direct", from: Some("alpha"), to: Some("beta") };
//! let frame = envelope::encode(&key, &header, Some(&data));
//! let received = envelope::parse_frame(frame.as_bytes(), envelope::DEFAULT_MAX_MESSAGE_BYTES)
//!     .map_err(|e| e.to_string())?;
//! assert!(received.verify(&key));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each feature module has its own example.

#![forbid(unsafe_code)]

/// The sans-I/O protocol core: everything of `link-protocol`.
///
/// ```
/// use link::protocol::validate;
/// assert!(validate::is_valid_topic("billing.events"));
/// ```
pub mod protocol {
    pub use link_protocol::*;
}

pub use link_protocol::{
    CanonicalData, ConfigError, DropReason, Envelope, Feature, HandlerError, HashAlgo, Header,
    Hello, Key, PeerInfo, ProtocolError, StatusEntry, Value,
};

/// The client (feature `client`): everything of `link-client`.
///
/// ```no_run
/// use link::client::{ClientConfig, LinkClient};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ClientConfig::builder()
///     .url("ws://127.0.0.1:8080")
///     .secret("demo-secret")
///     .kind("billing")
///     .handler("invoice.total", |_call| async { Ok(serde_json::json!({"total": 42})) })
///     .build()?;
/// let client = LinkClient::new(config);
/// client.ready(None).await?;
/// let stock = client.rpc("inventory", "stock.get", None).await?;
/// client.publish("billing.events", stock)?;
/// client.stop().await;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "client")]
pub mod client {
    pub use link_client::*;
}

#[cfg(feature = "client")]
pub use link_client::{
    CancellationToken, ClientConfig, ClientConfigBuilder, LinkClient, LinkError, LinkEvent,
    RpcOptions,
};

/// The hub (feature `hub`): everything of `link-hub`.
///
/// ```no_run
/// use link::hub::{Hub, HubConfig, Secret};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new(HubConfig::builder(Secret::shared("demo-secret")).build()?);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (tcp, addr) = listener.accept().await?;
///     let hub = hub.clone();
///     tokio::spawn(async move { hub.accept(tcp, Some(addr)).await });
/// }
/// # }
/// ```
#[cfg(feature = "hub")]
pub mod hub {
    pub use link_hub::*;
}

#[cfg(feature = "hub")]
pub use link_hub::{Hub, HubConfig, HubEvent, Secret};

/// Service helpers (feature `helpers`): everything of `link-helpers`.
///
/// ```no_run
/// use std::time::Duration;
/// use link::helpers::{env, lifecycle::GracefulShutdown, logging, rpc};
/// use link::LinkClient;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// logging::init(logging::LogOptions::new().context("billing").production(true))?;
/// let client = LinkClient::new(env::client_config_from_env("BILLING_")?.build()?);
/// client.ready(Some(Duration::from_secs(10))).await?;
/// rpc::wait_for_peer(&client, "inventory", Some(Duration::from_secs(30)), true).await?;
/// let policy = rpc::RetryPolicy::builder().attempts(3).build()?;
/// let stock = rpc::rpc_with_retry(&client, "inventory", "stock.get", None, &policy, None).await?;
///
/// let shutdown = GracefulShutdown::new(Duration::from_secs(10));
/// let c = client.clone();
/// shutdown.step("stop link", move || async move { c.stop().await; Ok::<_, String>(()) });
/// # drop(stock);
/// shutdown.shutdown("done").await;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "helpers")]
pub mod helpers {
    pub use link_helpers::*;
}

/// The Rust code blocks of README.md and of every file in docs/, compiled
/// (and run where they can) by `cargo test --doc`, so the documentation
/// cannot drift from the API. Blocks that need a hub are `no_run`; lines
/// starting with `# ` are setup hidden from rustdoc's rendering.
#[cfg(doctest)]
mod readme_and_docs {
    #[doc = include_str!("../../../README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/architecture.md")]
    struct Architecture;
    #[doc = include_str!("../../../docs/client.md")]
    struct Client;
    #[doc = include_str!("../../../docs/cluster.md")]
    struct Cluster;
    #[doc = include_str!("../../../docs/helpers.md")]
    struct Helpers;
    #[doc = include_str!("../../../docs/hub.md")]
    struct HubDoc;
    #[doc = include_str!("../../../docs/operations.md")]
    struct Operations;
    #[doc = include_str!("../../../docs/perf.md")]
    struct Perf;
    #[doc = include_str!("../../../docs/protocol.md")]
    struct Protocol;
    #[doc = include_str!("../../../docs/reliability.md")]
    struct Reliability;
    #[doc = include_str!("../../../docs/adr/0001-sans-io-protocol-crate.md")]
    struct Adr0001;
    #[doc = include_str!("../../../docs/adr/0002-wire-key-order.md")]
    struct Adr0002;
    #[doc = include_str!("../../../docs/adr/0003-replay-memory.md")]
    struct Adr0003;
    #[doc = include_str!("../../../docs/adr/0004-strict-signature-hex.md")]
    struct Adr0004;
}
