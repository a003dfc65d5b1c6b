//! `link-cli hub` access and limit flags: `--allow-cidr`,
//! `--bearer-token-file`, `--protect-health`, `--max-connections-per-ip`,
//! `--max-pending-upgrades`, `--max-http-connections`,
//! `--handshake-timeout-ms` (docs/operations.md, *Access and limits*).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use link_hub::HubServerBuilder;
use std::time::Duration;

use link_hub::server::{
    Cidr, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HTTP_CONNECTIONS,
    DEFAULT_MAX_PENDING_UPGRADES,
};

use crate::exit::Failure;

/// Who may connect, and how many at once.
#[derive(Args)]
pub(crate) struct AccessArgs {
    /// Accept connections only from this network (IPv4 or IPv6 CIDR, or a
    /// single address); repeatable. Others get 403 on WebSocket upgrades
    /// and on every HTTP route but /health. Default: every address.
    #[arg(long, value_name = "CIDR")]
    allow_cidr: Vec<Cidr>,

    /// Require the token in this file (one trailing newline ignored) as
    /// `Authorization: Bearer <token>` or `?token=<token>` in the URL;
    /// otherwise 401. Covers upgrades and every HTTP route but /health.
    #[arg(long, value_name = "FILE")]
    bearer_token_file: Option<PathBuf>,

    /// Put /health behind --allow-cidr and --bearer-token-file too.
    #[arg(long)]
    protect_health: bool,

    /// WebSocket connections (upgrading or open) from one IP address;
    /// beyond it upgrades get 429.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP,
        value_parser = positive,
    )]
    max_connections_per_ip: usize,

    /// WebSocket upgrades in progress at once; beyond it upgrades get 503.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_PENDING_UPGRADES,
        value_parser = positive,
    )]
    max_pending_upgrades: usize,

    /// Connections that are not WebSockets yet (TLS handshake, request
    /// headers) or plain HTTP; beyond it the oldest is closed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_HTTP_CONNECTIONS,
        value_parser = positive,
    )]
    max_http_connections: usize,

    /// Time a connection has for its TLS handshake and then for each
    /// request's headers (the WebSocket upgrade included); then it is closed.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    handshake_timeout_ms: u64,
}

impl fmt::Debug for AccessArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessArgs")
            .field("allow_cidr", &self.allow_cidr)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("protect_health", &self.protect_health)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_pending_upgrades", &self.max_pending_upgrades)
            .field("max_http_connections", &self.max_http_connections)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .finish()
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be positive".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl AccessArgs {
    /// Applies the flags to `builder`; reads the token file.
    pub(crate) fn apply(&self, mut builder: HubServerBuilder) -> Result<HubServerBuilder, Failure> {
        for net in &self.allow_cidr {
            builder = builder.allow_cidr(*net);
        }
        if let Some(file) = &self.bearer_token_file {
            builder = builder.bearer_token(read_token(file)?);
        }
        Ok(builder
            .protect_health(self.protect_health)
            .max_connections_per_ip(self.max_connections_per_ip)
            .max_pending_upgrades(self.max_pending_upgrades)
            .max_http_connections(self.max_http_connections)
            .handshake_timeout(Duration::from_millis(self.handshake_timeout_ms)))
    }
}

/// Reads a `--bearer-token-file`: its text without one trailing newline
/// (`\n` or `\r\n`). Errors name the file, never the token.
fn read_token(file: &Path) -> Result<String, Failure> {
    let shown = file.display();
    let mut token = std::fs::read_to_string(file)
        .map_err(|e| Failure::unusable(format_args!("--bearer-token-file {shown}: {e}")))?;
    if token.ends_with('\n') {
        token.pop();
        if token.ends_with('\r') {
            token.pop();
        }
    }
    if token.is_empty() {
        return Err(Failure::unusable(format_args!(
            "--bearer-token-file {shown}: the file is empty"
        )));
    }
    super::warn_if_readable_by_others(file, "the bearer token file");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_loses_one_trailing_newline_only() {
        let dir = std::env::temp_dir().join(format!("link-cli-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(read_token(&write("a", "tok\n")).ok().unwrap(), "tok");
        assert_eq!(read_token(&write("b", "tok\r\n")).ok().unwrap(), "tok");
        assert_eq!(read_token(&write("c", "tok")).ok().unwrap(), "tok");
        assert_eq!(read_token(&write("d", "tok\n\n")).ok().unwrap(), "tok\n");
        assert_eq!(read_token(&write("e", " tok ")).ok().unwrap(), " tok ");
        assert!(read_token(&write("f", "\n")).is_err());
        assert!(read_token(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_must_be_positive() {
        assert_eq!(positive("3"), Ok(3));
        assert_eq!(positive("0"), Err("must be positive".to_owned()));
        assert!(positive("-1").is_err());
    }
}
