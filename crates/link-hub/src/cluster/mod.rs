//! A cluster of hubs over NATS: several hub processes act as one bus.
//! Peers cannot tell whether their partner is on their hub or another.
//!
//! ```text
//!  peer ─► hub A: verify (A's keys) ─► routing table ─► Route::Remote(B)
//!            │                                              │ Outbound (bounded)
//!            └─ cluster driver: seal (cluster secret) ─► NATS link.<name>.hub.<B>
//!  NATS ─► hub B's driver: open (MAC, window, sequence) ─► ClusterIn ─► B's table
//!            ─► B's outbox for the peer ─► signed with the peer's key ─► peer
//! ```
//!
//! What crosses NATS (subjects under `link.<name>`; the bytes in `wire.rs`):
//! - `hub.<id>`: messages for one hub's peers (RPCs, answers, cancels,
//!   direct messages): each crosses once.
//! - `t.<hex topic>`: topic messages; a hub subscribes only to the topics
//!   its own peers hold, so a message crosses once per interested hub.
//! - `status`: status updates; `hb`: heartbeats (each hub, every second,
//!   with its peer count) and `bye` when a hub stops.
//! - The JetStream KV bucket `link_<name>`: one lease per kind, naming the
//!   hub whose peer holds it (create-if-absent, then compare-and-set on the
//!   revision; refreshed; the bucket's max age is the backstop). Every hub
//!   watches it: it is the cluster's directory of kinds.
//!
//! Keys stay home: a hub verifies frames from its own peers and signs for
//! its own recipients; no peer key crosses NATS. The modules:
//! - `link.rs`: the seam to the routing table (no NATS type in it);
//! - `wire.rs`: message and lease bytes, MAC, replay window (sans-I/O);
//! - `hubs.rs`: which hubs are alive (sans-I/O);
//! - `driver.rs`: the tokio tasks around async-nats (feature `cluster`).

#[cfg(feature = "cluster")]
mod driver;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod hubs;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod link;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod wire;

#[cfg(feature = "cluster")]
pub(crate) use driver::{ClusterHandle, start};

#[cfg(feature = "cluster")]
pub use config::{ClusterConfig, NatsAuth};

#[cfg(feature = "cluster")]
mod config {
    use std::path::PathBuf;
    use std::time::Duration;

    /// How a hub authenticates to NATS.
    #[derive(Clone, Debug, Default)]
    pub enum NatsAuth {
        /// None (a local nats-server).
        #[default]
        None,
        /// A `.creds` file (JWT and NKey seed).
        CredsFile(PathBuf),
        /// User and password.
        UserPassword(String, String),
        /// A token.
        Token(String),
    }

    /// Joins a hub to a cluster ([`HubConfigBuilder::cluster`](crate::HubConfigBuilder::cluster)).
    #[derive(Clone)]
    pub struct ClusterConfig {
        pub(crate) url: String,
        pub(crate) name: String,
        pub(crate) secret: Vec<u8>,
        pub(crate) auth: NatsAuth,
        pub(crate) heartbeat: Duration,
        pub(crate) hub_timeout: Duration,
        pub(crate) lease_age: Duration,
    }

    impl std::fmt::Debug for ClusterConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ClusterConfig")
                .field("url", &self.url)
                .field("name", &self.name)
                .field("secret", &"<redacted>")
                .field("heartbeat", &self.heartbeat)
                .field("hub_timeout", &self.hub_timeout)
                .field("lease_age", &self.lease_age)
                .finish_non_exhaustive()
        }
    }

    /// Why a cluster configuration was refused.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum ClusterConfigError {
        /// The name must be 1-64 of `[A-Za-z0-9_-]` (it names NATS subjects
        /// and the lease bucket).
        #[error("cluster name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ -")]
        Name(String),
        /// The cluster secret is empty.
        #[error("the cluster secret is empty")]
        Secret,
    }

    impl ClusterConfig {
        /// NATS at `url` (`nats://host:port`, several comma-separated),
        /// cluster name `link`, inter-hub messages authenticated with
        /// `secret` (every hub of the cluster needs the same one).
        pub fn new(url: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
            Self {
                url: url.into(),
                name: "link".into(),
                secret: secret.as_ref().to_vec(),
                auth: NatsAuth::None,
                heartbeat: Duration::from_secs(1),
                hub_timeout: Duration::from_secs(3),
                lease_age: Duration::from_secs(30),
            }
        }

        /// The cluster's name: hubs with the same NATS and name form one
        /// bus (several clusters can share a NATS).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.name = name.into();
            self
        }

        /// How to authenticate to NATS.
        pub fn auth(mut self, auth: NatsAuth) -> Self {
            self.auth = auth;
            self
        }

        /// How often this hub says it is alive (default 1 s), and how long
        /// the others wait without hearing it before its peers leave
        /// (default 3 s).
        pub fn heartbeat(mut self, every: Duration, timeout: Duration) -> Self {
            self.heartbeat = every;
            self.hub_timeout = timeout;
            self
        }

        /// The lease bucket's max age (default 30 s): a lease not refreshed
        /// for this long (its hub died) is dropped by NATS. Leases are
        /// refreshed every third of it.
        pub fn lease_age(mut self, age: Duration) -> Self {
            self.lease_age = age;
            self
        }

        /// Checks the name and secret.
        pub fn validate(&self) -> Result<(), ClusterConfigError> {
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(ok) {
                return Err(ClusterConfigError::Name(self.name.clone()));
            }
            if self.secret.is_empty() {
                return Err(ClusterConfigError::Secret);
            }
            Ok(())
        }
    }
}

#[cfg(feature = "cluster")]
pub use config::ClusterConfigError;
