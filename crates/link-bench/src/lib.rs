//! # link-bench
//!
//! A load generator for link hubs, built on [`link_client`]: it runs the
//! same scenarios against any protocol-v1 hub (ours embedded in-process, ours
//! as a child process, a cluster of our hubs over NATS with the peers spread
//! so that traffic crosses hubs, or any hub at a URL, Node.js included) and
//! — with the `nats` feature — against nats-server through async-nats, and reports
//! the figures side by side. `link-cli bench` and `cargo xtask bench` are
//! its front ends; `docs/perf.md` has the method and the figures.
//!
//! ```text
//!  BenchOptions + HubSpec (+ NatsSpec)
//!        │
//!        ▼
//!   run() ─► HubTarget (embedded | child | cluster | url) ─► link scenarios ──┐
//!        └─► NatsTarget (spawned | url) ──────────────────► nats scenarios ──┤ Outcome per run
//!                                                                             ▼
//!                                        medians ─► BenchReport ─► table() | serde JSON
//! ```
//!
//! Scenarios ([`Scenario`]): `rpc-seq`, `rpc-conc`, `send`, `publish`,
//! `fanout` (with a slow-subscriber variant, `fanout-slow`) and
//! `connections`, plus `flood` (run only when named: other publishers'
//! rate with and without a peer flooding at 10x its rate limit). Latencies go into an HdrHistogram; throughput is counted
//! at the receivers, from the first message sent to the last one received.
//!
//! ## Getting started
//!
//! ```no_run
//! use link_bench::{BenchOptions, HubSpec, Progress, Scenario};
//!
//! # async fn demo() -> Result<(), link_bench::BenchError> {
//! let opts = BenchOptions {
//!     scenarios: vec![Scenario::RpcSeq, Scenario::Publish],
//!     count: Some(10_000),
//!     ..BenchOptions::default()
//! };
//! let report = link_bench::run(&opts, &HubSpec::Embedded, None, &Progress::hidden()).await?;
//! println!("{}", report.table());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod chaos;
mod context;
mod error;
mod link;
pub mod meter;
#[cfg(feature = "nats")]
mod nats;
mod nats_server;
mod nats_spec;
mod options;
pub mod payload;
mod progress;
pub mod report;
mod run;
mod scrape;
pub mod soak;
pub mod stats;
pub mod sys;
mod target;

pub use error::BenchError;
pub use nats_spec::NatsSpec;
pub use options::{BenchOptions, Clients, PeerUpdates, Receiver, Scenario, parse_scenarios};
pub use progress::{Bar, Progress};
pub use report::{BenchReport, Metric, Outcome, System};
pub use run::run;
pub use target::{FLOODER_KIND, HubSpec, HubTarget};
