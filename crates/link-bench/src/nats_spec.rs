//! Where nats-server comes from, for `--compare nats` (the runner itself
//! needs the `nats` cargo feature).

use std::path::PathBuf;

/// The nats-server to compare with.
#[derive(Clone, Debug)]
pub enum NatsSpec {
    /// A running server.
    Url {
        /// `nats://127.0.0.1:4222`
        url: String,
        /// Its process id, for memory figures.
        pid: Option<u32>,
    },
    /// Start `program` (e.g. `nats-server` from PATH) on 127.0.0.1 and a
    /// free port, and stop it afterwards.
    Spawn {
        /// The executable.
        program: PathBuf,
    },
}
