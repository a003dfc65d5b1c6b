//! # link-examples
//!
//! Runnable examples for a link bus, each a thin `main` in `examples/`
//! over a module of this library, so the tests drive the same code:
//!
//! | example | module | what it shows |
//! |---|---|---|
//! | `four_services` | [`four_services`] | a hub with per-peer keys, a secrets vault, a worker that loads its credentials from the vault, a coordinator that dispatches jobs and hears progress |
//! | `disabled_mode` | [`disabled_mode`] | a service without bus settings that keeps working (`LINK_NOT_READY` handled) |
//! | `dashboard` | [`dashboard`] | an `EventRecorder` streamed as Server-Sent Events to a small HTML page |
//! | `graceful_shutdown` | [`graceful_shutdown`] | a hub server, a client and a background task stopped in order under a watchdog |
//!
//! ```text
//! cargo run -p link-examples --example four_services
//! cargo run -p link-examples --example disabled_mode
//! cargo run -p link-examples --example dashboard        # then open http://127.0.0.1:8090/
//! cargo run -p link-examples --example graceful_shutdown # then press Ctrl-C
//! ```
//!
//! `examples` is a default member of the workspace, so plain
//! `cargo run --example <name>` from the workspace root works too.
//!
//! Errors are boxed ([`Error`]): fine for examples, not for library APIs.

#![forbid(unsafe_code)]

pub mod dashboard;
pub mod disabled_mode;
pub mod four_services;
pub mod graceful_shutdown;

/// Any error, boxed: what the examples return.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with a boxed [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `fut` under a hang guard: an error naming `what` if it takes
/// longer than `limit`.
pub async fn guard<T>(
    what: &str,
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: no result within {limit:?}").into()),
    }
}
