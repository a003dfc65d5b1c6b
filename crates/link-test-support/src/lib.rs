//! Test-only plumbing shared by every crate of the link workspace: one copy
//! of the test hub, the raw and scripted peers, the scripted hub, the port
//! helpers and the `link-cli` launcher. Used only as a dev-dependency;
//! never published.
//!
//! ```text
//!  hub tests ──► TestHub / TestServer ◄── Peer (ClientConn) / Raw (bytes)
//!                  (127.0.0.1:0)      ◄── LinkClient (client, helpers, cli tests)
//!  client tests: LinkClient ──► ScriptedHub / HubSide (frames scripted by the test)
//!  cli tests:    LinkCli ──► link-cli hub --bind 127.0.0.1:0 ──► listening=ws://…
//! ```
//!
//! What it holds:
//! - [`TestHub`]: an in-process [`Hub`](link_hub::Hub) with its own
//!   accept loop on `127.0.0.1:0` (address read back from the bound
//!   listener, `TCP_NODELAY` on every socket), built from any
//!   [`HubConfig`](link_hub::HubConfig) (keys, ACL, limits); stopped on drop
//!   or by [`stop`](TestHub::stop), killed and restarted on the same
//!   address with [`kill`](TestHub::kill) and [`TestHubBuilder::on`].
//! - [`TestServer`]: a started [`HubServer`](link_hub::HubServer) on
//!   `127.0.0.1:0`, stopped on drop.
//! - [`Peer`]: a WebSocket driven by the protocol crate's `ClientConn`
//!   (signs what it sends, verifies what it reads); [`Raw`]: a WebSocket
//!   the test scripts byte by byte, with [`frame`], [`sign_body`] and
//!   friends to build frames.
//! - [`MemoryPeer`]: a peer on the in-memory transport, for hub tests
//!   under paused tokio time (timers at their real durations, in
//!   microseconds).
//! - [`ScriptedHub`] / [`HubSide`]: a fake hub for client tests.
//! - [`TestCa`]: a private CA made at test time and certificates for
//!   127.0.0.1 ([`Issued`]); [`TempDir`] for the files they are read from.
//! - [`ports`]: listeners on `127.0.0.1:0` handed over as they are, and
//!   [`ClosedPort`], an address held with nothing listening; no port is
//!   ever probed and released (the bind-then-drop race).
//! - [`LinkCli`] / [`CliHub`]: the built `link-cli` binary, its hub
//!   started on port 0 and read back from `listening=`.
//! - [`NatsServer`]: Debian's nats-server with JetStream on a port it
//!   picks (read back from its log), killed and restarted for real, for
//!   the cluster tests; [`TestBus`]: one hub or a cluster of hubs on it,
//!   so that a scenario written once runs with its peers on one hub and
//!   spread over several.
//! - [`Chromium`]: Debian's headless Chromium, started by the test and
//!   driven over the DevTools protocol (navigate, evaluate, wait for a DOM
//!   condition with a deadline, screenshot).
//! - Waits bounded by the hang guard [`WAIT`] ([`next_event`], [`guard`]),
//!   [`http_request`], and client starters ([`ready`], [`started`]).
//!
//! ```no_run
//! # async fn demo() {
//! use link_test_support::{TestHub, ready};
//!
//! let hub = TestHub::shared("s3cret").await;
//! let mut beta = hub.peer("beta", "s3cret").await; // a scripted peer
//! let alpha = ready(hub.client("alpha")).await; // a LinkClient
//! alpha.publish("news", serde_json::json!(1)).unwrap();
//! # drop(beta.recv("peers.update").await);
//! # }
//! ```

// A panic is how this crate fails a test: unwrapping is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod bus;
mod cli;
mod clients;
mod frames;
mod http;
mod hub;
mod memory;
mod nats;
mod peer;
pub mod ports;
mod process;
mod raw;
mod scripted;
mod server;
mod tls;
mod wait;
mod ws;

pub use browser::{CHROMIUM_ENV, Chromium, DEFAULT_CHROMIUM};
pub use bus::{CLUSTER_SECRET, TestBus, assert_nothing_from, topic_reaches};
pub use cli::{CliHub, Done, LinkCli, PROCESS_WAIT, finish as finish_cli};
pub use clients::{ready, started};
pub use frames::{
    DEMO_SECRET, frame, frame_at, fresh_id, hello_frame, key, now, parse, peer_kinds, sign_body,
    wall_ms,
};
pub use http::{HttpReply, http_get, http_request};
pub use hub::{TestHub, TestHubBuilder, probe_dropped, probe_frame, stall};
pub use memory::MemoryPeer;
pub use nats::NatsServer;
pub use peer::Peer;
pub use ports::{ClosedPort, local_listener, std_listener};
pub use raw::Raw;
pub use scripted::{HubSide, ScriptedHub};
pub use server::TestServer;
pub use tls::{Issued, TempDir, TestCa};
pub use wait::{WAIT, drain_events, guard, next_event, next_event_within, protocol_error};
pub use ws::{Ws, connect, connect_small_rcvbuf, finish};
