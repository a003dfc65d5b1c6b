//! # link-helpers
//!
//! The glue every service on a link bus writes sooner or later, done once:
//!
//! | module | what |
//! |---|---|
//! | [`logging`] | `tracing` setup: level from `LINK_LOG`/`RUST_LOG`, human or JSON lines, an error sink |
//! | [`env`](mod@env) | typed env vars (`num`, `bool`, `require_env`) and `client_config_from_env(prefix)` |
//! | [`observability`] | standard logs for a client's or hub's events, with a protocol-error [`Classifier`] |
//! | [`rpc`] | `wait_for_peer`, `rpc_with_retry`, `SafePublisher` / `SafeSend` |
//! | [`lifecycle`] | `GracefulShutdown` with a watchdog, SIGINT/SIGTERM/panic handlers |
//! | [`secrets`] | `load_secrets` / `watch_secrets` from a vault peer (`secs.get`) |
//! | [`recorder`] | `EventRecorder`: a ring of normalised events and snapshots |
//!
//! ```text
//!   env ──► ClientConfigBuilder ──► LinkClient ──► events() ──┬─► observability (tracing)
//!                                       │                     └─► recorder (snapshots)
//!                                       ├─► rpc (retry, wait_for_peer, safe publish)
//!                                       └─► secrets (secs.get, secs.changed.<ns>)
//!   logging: the tracing subscriber everything above logs into
//!   lifecycle: signals / panic ──► ordered shutdown steps (e.g. client.stop())
//! ```
//!
//! The `hub` feature (on by default) adds
//! [`observability::spawn_hub_logger`].
//!
//! ## Getting started
//!
//! ```no_run
//! use std::time::Duration;
//! use link_client::LinkClient;
//! use link_helpers::{env, lifecycle, logging, observability, rpc};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! logging::init(logging::LogOptions::new().context("billing"))?;
//! env::require_env(&["LINK_URL", "LINK_SECRET"])?;
//! let client = LinkClient::new(env::client_config_from_env("")?.kind("billing").build()?);
//! let _logs = observability::spawn_client_logger(&client, Default::default());
//! client.ready(Some(Duration::from_secs(10))).await?;
//!
//! rpc::wait_for_peer(&client, "inventory", Some(Duration::from_secs(30)), true).await?;
//! let policy = rpc::RetryPolicy::builder().attempts(3).build()?;
//! let stock = rpc::rpc_with_retry(&client, "inventory", "stock.get", None, &policy, None).await?;
//!
//! let shutdown = lifecycle::GracefulShutdown::new(Duration::from_secs(10));
//! let c = client.clone();
//! shutdown.step("stop link", move || async move { c.stop().await; Ok::<_, String>(()) });
//! let _handlers = lifecycle::install_process_handlers(&shutdown)?;
//! # drop(stock);
//! shutdown.wait().await;
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/helpers.md` for one example per helper.

#![forbid(unsafe_code)]

pub mod env;
pub mod lifecycle;
pub mod logging;
pub mod observability;
pub mod recorder;
pub mod rpc;
pub mod secrets;
mod wall_clock;

pub use env::{EnvError, client_config_from_env, require_env};
pub use lifecycle::{GracefulShutdown, ShutdownOutcome, install_process_handlers};
pub use logging::{LogOptions, LoggingError};
#[cfg(feature = "hub")]
pub use observability::spawn_hub_logger;
pub use observability::{Classifier, spawn_client_logger};
pub use recorder::{EventRecorder, RecorderOptions, Snapshot};
pub use rpc::{RetryError, RetryPolicy, SafePublisher, SafeSend, rpc_with_retry, wait_for_peer};
pub use secrets::{Secrets, SecretsError, load_secrets, watch_secrets};
