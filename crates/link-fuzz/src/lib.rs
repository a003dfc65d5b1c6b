//! # link-fuzz
//!
//! The fuzz harnesses of the protocol crate, in one place. Each target is
//! a `run(&[u8])` function that panics when a check fails; two callers use
//! it, so they cannot drift apart:
//!
//! ```text
//!   fuzz/fuzz_targets/<name>.rs   (cargo +nightly fuzz run <name>)  ─┐
//!                                                                   ├─► <name>::run(bytes)
//!   tests/corpus.rs  (stable: replays fuzz/corpus/<name>/*,          │
//!                     fuzz/regressions/<name>/*)                    ─┘
//! ```
//!
//! `server_socket` drives the transport crate's WebSocket reader against
//! tungstenite's. The routing table's harness lives with the table (`link-hub`, module
//! `fuzzing`, behind the non-default `fuzzing` feature) because the table
//! is crate-private. See `docs/reliability.md` for how to run the targets.
//!
//! ```
//! // Any bytes are a valid input; a failed check panics.
//! link_fuzz::canonical::run(br#"{"b":1.0,"a":[1e21]}"#);
//! link_fuzz::frame::run(b"not a frame");
//! ```

#![forbid(unsafe_code)]

pub mod canonical;
pub mod client_conn;
pub mod frame;
pub mod hub_conn;
pub mod input;
pub mod presence;
pub mod server_socket;

/// A harness: runs one input, panics when a check fails.
pub type Harness = fn(&[u8]);

/// Every target of this crate, by name, as the fuzz crate and the replay
/// test know them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("frame", frame::run),
    ("canonical", canonical::run),
    ("hub_conn", hub_conn::run),
    ("client_conn", client_conn::run),
    ("presence", presence::run),
    ("server_socket", server_socket::run),
];
