//! [`BenchError`]: why a benchmark could not run, with a stable
//! [`code`](BenchError::code) per variant.

use std::time::Duration;

/// A benchmark that could not be set up or run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An option is out of range (local misuse).
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The hub (embedded, child or remote) could not be started or reached.
    #[error("hub: {0}")]
    Hub(String),
    /// nats-server could not be started or reached.
    #[error("nats: {0}")]
    Nats(String),
    /// A peer could not connect or authenticate.
    #[error("{scenario}: peer {kind} did not become ready: {reason}")]
    Peer {
        /// The scenario.
        scenario: &'static str,
        /// The peer's kind (or name).
        kind: String,
        /// Why.
        reason: String,
    },
    /// An operation failed mid-scenario (an RPC error, a closed socket…).
    #[error("{scenario}: {reason}")]
    Operation {
        /// The scenario.
        scenario: &'static str,
        /// What failed.
        reason: String,
    },
    /// Nothing progressed for too long.
    #[error("{scenario}: no progress for {idle:?} ({what})")]
    Stalled {
        /// The scenario.
        scenario: &'static str,
        /// The idle time that elapsed.
        idle: Duration,
        /// What was awaited.
        what: String,
    },
    /// An operating-system call failed (spawning, rlimit, /proc).
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    /// A stable code: `INVALID_OPTION`, `HUB`, `NATS`, `PEER`, `OPERATION`,
    /// `STALLED` or `IO`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOption { .. } => "INVALID_OPTION",
            Self::Hub(_) => "HUB",
            Self::Nats(_) => "NATS",
            Self::Peer { .. } => "PEER",
            Self::Operation { .. } => "OPERATION",
            Self::Stalled { .. } => "STALLED",
            Self::Io { .. } => "IO",
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn op(scenario: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Operation {
            scenario,
            reason: reason.to_string(),
        }
    }
}
