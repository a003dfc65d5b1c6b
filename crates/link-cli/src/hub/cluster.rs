//! `link-cli hub` cluster flags: `--cluster nats://HOST:PORT` joins the hub
//! to a cluster of hubs over NATS (docs/cluster.md), with `--cluster-name`,
//! the inter-hub secret (`--cluster-secret` or `LINK_CLUSTER_SECRET`; the
//! hub's `--secret` when neither is given) and NATS credentials.

use std::path::PathBuf;

use clap::Args;
use link_hub::{ClusterConfig, NatsAuth};

use crate::exit::Failure;

/// Cluster options (default: a lone hub).
#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// Join a cluster of hubs over NATS at this URL (nats://HOST:PORT;
    /// several comma-separated). Hubs with the same NATS and cluster name
    /// form one bus.
    #[arg(long, value_name = "URL", env = "LINK_CLUSTER")]
    cluster: Option<String>,

    /// The cluster's name (1-64 of A-Z a-z 0-9 _ -; default `link`).
    #[arg(
        long,
        value_name = "NAME",
        requires = "cluster",
        default_value = "link"
    )]
    cluster_name: String,

    /// The secret every hub of the cluster shares, authenticating what
    /// crosses NATS (default: the hub's --secret).
    #[arg(
        long,
        value_name = "SECRET",
        env = "LINK_CLUSTER_SECRET",
        hide_env_values = true
    )]
    cluster_secret: Option<String>,

    /// A NATS credentials file (JWT and NKey seed).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    nats_creds: Option<PathBuf>,

    /// A NATS user (with --nats-password).
    #[arg(long, value_name = "USER", requires_all = ["cluster", "nats_password"])]
    nats_user: Option<String>,

    /// The NATS user's password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "LINK_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    nats_password: Option<String>,

    /// A NATS token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LINK_NATS_TOKEN",
        hide_env_values = true
    )]
    nats_token: Option<String>,
}

impl std::fmt::Debug for ClusterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterArgs")
            .field("cluster", &self.cluster)
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

impl ClusterArgs {
    /// The cluster to join, if any. `hub_secret` is the hub's shared
    /// secret (`None` with --keys or a generated one).
    pub(crate) fn config(
        &self,
        hub_secret: Option<&str>,
    ) -> Result<Option<ClusterConfig>, Failure> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let secret = match (&self.cluster_secret, hub_secret) {
            (Some(s), _) => s.as_str(),
            (None, Some(s)) => {
                tracing::info!(
                    "cluster: authenticating inter-hub traffic with the hub's --secret (set --cluster-secret to use another)"
                );
                s
            }
            (None, None) => {
                return Err(Failure::unusable(
                    "--cluster needs --cluster-secret (or LINK_CLUSTER_SECRET) when the hub has no --secret",
                ));
            }
        };
        let auth = match (&self.nats_creds, &self.nats_user, &self.nats_token) {
            (Some(file), None, None) => NatsAuth::CredsFile(file.clone()),
            (None, Some(user), None) => {
                NatsAuth::UserPassword(user.clone(), self.nats_password.clone().unwrap_or_default())
            }
            (None, None, Some(token)) => NatsAuth::Token(token.clone()),
            (None, None, None) => NatsAuth::None,
            _ => {
                return Err(Failure::unusable(
                    "use one of --nats-creds, --nats-user/--nats-password and --nats-token",
                ));
            }
        };
        let config = ClusterConfig::new(url.clone(), secret)
            .name(self.cluster_name.clone())
            .auth(auth);
        config
            .validate()
            .map_err(|e| Failure::unusable(format_args!("--cluster-name/--cluster-secret: {e}")))?;
        Ok(Some(config))
    }
}
