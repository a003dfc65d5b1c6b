//! Joining the bus: the options every online subcommand shares
//! ([`ConnArgs`]), building the [`LinkClient`], waiting for it to be ready,
//! and turning a [`LinkError`] into a [`Failure`].
//!
//! ```text
//!   --url --secret --kind --hash --ca --timeout ──► ClientConfig ──► LinkClient
//!        (LINK_URL LINK_SECRET LINK_KIND LINK_HASH_ALGO LINK_CA)          │ ready(timeout)
//!                                                                   ▼
//!                    Ok(link) │ Err(Failure: LINK_NOT_READY / HELLO_REJECTED …)
//! ```
//!
//! The default kind is `link-cli-<pid>`: two terminals running the CLI at
//! once never displace each other (a hub keeps one socket per kind). Pass
//! `--kind` when others must address this CLI (`listen`, or as an RPC
//! caller that a hub's per-peer keys or ACLs know). `LINK_KIND` is read
//! only by `listen` and `subscribe` ([`ConnArgs::streaming_client`]): an
//! exported `LINK_KIND=billing` must not make `link-cli peers` take the
//! kind over from the live `billing` service (close 4000 to it).
//!
//! A connect attempt that fails (refused, TLS, an upgrade the hub refused,
//! a URL that cannot be dialled) ends the wait at once with its
//! `ConnectError` code; only a hub that accepts the socket and never
//! answers the hello uses up `--timeout`. With several `--url` (repeated,
//! or comma-separated as in `LINK_URL`) the client fails over from one to
//! the next, and the wait ends once every URL has failed, naming each.

use std::fmt;
use std::future::Future;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use link_client::{
    ClientConfig, ConnectError, LinkClient, LinkError, LinkEvent, RpcOptions, UrlOrder,
};
use link_protocol::HashAlgo;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::exit::{Failure, Status};

use super::output::Format;

/// The hub `link-cli hub` listens on by default.
const DEFAULT_URL: &str = "ws://127.0.0.1:8080";

/// Connection and output options shared by every online subcommand.
#[derive(Args)]
pub(crate) struct ConnArgs {
    /// Hub WebSocket URL. Repeat it, or separate URLs with commas (as in
    /// LINK_URL), for a failover list: on a failed connect or a lost link
    /// the client moves on to the next URL.
    #[arg(
        long = "url",
        env = "LINK_URL",
        value_name = "URL",
        default_value = DEFAULT_URL,
        value_delimiter = ','
    )]
    urls: Vec<String>,

    /// The order several URLs are tried in: `ordered` (the first is
    /// preferred) or `random`.
    #[arg(
        long,
        env = "LINK_URL_ORDER",
        value_name = "ORDER",
        default_value = "ordered",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["ordered", "random"])
            .try_map(|name| name.parse::<UrlOrder>()),
    )]
    url_order: UrlOrder,

    /// Shared secret or this peer's key. Prefer setting LINK_SECRET:
    /// arguments are visible to other local users.
    #[arg(
        long,
        env = "LINK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,

    /// Kind this CLI joins as (default: `link-cli-<pid>`). Only `listen`
    /// and `subscribe` also read LINK_KIND: the other commands ignore it,
    /// so an exported LINK_KIND never displaces a live service.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,

    /// HMAC hash algorithm; must match the hub's.
    #[arg(
        long,
        env = "LINK_HASH_ALGO",
        value_name = "ALGO",
        default_value = "sha256",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["sha256", "sha384", "sha512"])
            .try_map(|name| name.parse::<HashAlgo>()),
    )]
    hash: HashAlgo,

    /// PEM file of a CA to trust for a wss:// hub, besides the system's
    /// roots (a private CA).
    #[arg(long, env = "LINK_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Milliseconds to wait for the hub's hello.ack, and for an RPC answer.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout: u64,

    /// Print JSON lines even on a terminal (the default when stdout is
    /// piped).
    #[arg(long)]
    json: bool,
}

impl fmt::Debug for ConnArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnArgs")
            .field("urls", &self.urls)
            .field("url_order", &self.url_order)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .field("json", &self.json)
            .finish()
    }
}

impl ConnArgs {
    /// `--timeout` as a duration.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout)
    }

    /// JSON lines when forced or when stdout is not a terminal.
    pub(crate) fn format(&self) -> Format {
        if self.json || !io::stdout().is_terminal() {
            Format::Json
        } else {
            Format::Pretty
        }
    }

    /// The kind this CLI joins as: `--kind`, else `link-cli-<pid>`.
    fn kind(&self) -> String {
        self.kind
            .clone()
            .unwrap_or_else(|| format!("link-cli-{}", std::process::id()))
    }

    /// The kind of `listen` and `subscribe`: `--kind`, else `LINK_KIND`,
    /// else `link-cli-<pid>`.
    fn streaming_kind(&self) -> String {
        match (&self.kind, std::env::var("LINK_KIND")) {
            (Some(kind), _) => kind.clone(),
            (None, Ok(kind)) if !kind.is_empty() => kind,
            _ => self.kind(),
        }
    }

    /// The hub URLs, trimmed (`LINK_URL="ws://a, ws://b"`).
    fn hub_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| u.trim().to_owned()).collect()
    }

    /// The client configuration; unusable options are exit 2.
    fn config(&self, kind: String) -> Result<ClientConfig, Failure> {
        let Some(secret) = self.secret.clone() else {
            return Err(Failure::unusable(
                "no secret: pass --secret or set LINK_SECRET",
            ));
        };
        let urls = self.hub_urls();
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("ws://") || u.starts_with("wss://")))
        {
            return Err(Failure::unusable(format_args!(
                "--url {bad:?}: expected ws://HOST:PORT or wss://HOST:PORT"
            )));
        }
        let mut builder = ClientConfig::builder();
        if let Some(ca) = &self.ca {
            builder = builder
                .ca_file(ca)
                .map_err(|e| Failure::unusable(format_args!("--ca: {e}")))?;
        }
        builder
            .urls(urls)
            .url_order(self.url_order)
            .secret(secret)
            .kind(kind.clone())
            .hash(self.hash)
            .rpc_timeout(self.timeout())
            // A hub that is still starting is found quickly; --timeout
            // bounds the whole wait anyway.
            .reconnect_initial(Duration::from_millis(100))
            .reconnect_max(Duration::from_secs(1))
            .stop_drain(self.timeout())
            .build()
            .map_err(|e| match e {
                link_protocol::ConfigError::InvalidKind(_) => {
                    Failure::unusable(format_args!("--kind {kind:?}: {e}"))
                }
                e => Failure::unusable(format_args!("invalid option: {e}")),
            })
    }

    /// A client that is configured but not started: register streams and
    /// event waiters on it, then call [`ConnArgs::ready`]. It joins as
    /// `--kind` or `link-cli-<pid>`, never as `LINK_KIND`.
    pub(crate) fn client(&self) -> Result<LinkClient, Failure> {
        Ok(LinkClient::new(self.config(self.kind())?))
    }

    /// As [`ConnArgs::client`], for `listen` and `subscribe`, which also
    /// take their kind from `LINK_KIND`.
    pub(crate) fn streaming_client(&self) -> Result<LinkClient, Failure> {
        Ok(LinkClient::new(self.config(self.streaming_kind())?))
    }

    /// Starts the link and waits for `hello.ack` within `--timeout`.
    /// Refused hellos and timeouts are exit 1, naming the last connection
    /// error seen; a connect attempt that fails (`ConnectFailed`) ends the
    /// wait at once with its code (`CONNECT_IO`, `WS_HANDSHAKE`, …)
    /// instead of retrying until `--timeout`. With several URLs the wait
    /// ends once each has failed (one cycle of the failover list), naming
    /// every failure; a URL that cannot be dialled ends it at once.
    pub(crate) async fn ready(&self, link: &LinkClient) -> Result<(), Failure> {
        let mut events = link.events();
        let mut failures = link.events();
        // Registered before the link starts, so the first failure is seen.
        let (urls, mut failed) = (self.urls.len().max(1), 0);
        let refused = link.wait_for(
            move |e| match e {
                LinkEvent::ConnectFailed {
                    error: ConnectError::InvalidUrl { .. },
                    ..
                } => true,
                LinkEvent::ConnectFailed { .. } => {
                    failed += 1;
                    failed >= urls
                }
                _ => false,
            },
            None,
        );
        tokio::select! {
            biased;
            result = link.ready(Some(self.timeout())) => match result {
                Ok(_) => Ok(()),
                Err(LinkError::ReadyTimeout(_) | LinkError::NotReady { .. }) => {
                    let why = last_error(&mut events)
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default();
                    Err(Failure::rejected(format_args!(
                        "LINK_NOT_READY: no hello.ack from {} within {} ms{why}",
                        self.hub_urls().join(", "),
                        self.timeout
                    )))
                }
                Err(e) => Err(link_failure(&e)),
            },
            Some(event) = refused => match &*event {
                // A URL that cannot be dialled is unusable input (exit 2).
                LinkEvent::ConnectFailed { error: error @ ConnectError::InvalidUrl { .. }, .. } => {
                    Err(Failure::unusable(format_args!("{}: {error}", error.code())))
                }
                LinkEvent::ConnectFailed { error, .. } => {
                    let mut all = connect_failures(&mut failures, urls);
                    if all.is_empty() {
                        all.push(format!("{}: {error}", error.code()));
                    }
                    Err(Failure::rejected(all.join("; ")))
                }
                _ => Err(Failure::rejected("LINK_NOT_READY: the connect attempt failed")),
            },
        }
    }
}

/// `CODE: error` for the first `max` failed connect attempts in the
/// buffered events, in order (one per URL tried).
fn connect_failures(events: &mut broadcast::Receiver<Arc<LinkEvent>>, max: usize) -> Vec<String> {
    let mut failures = Vec::new();
    while failures.len() < max {
        match events.try_recv() {
            Ok(event) => {
                if let LinkEvent::ConnectFailed { error, .. } = &*event {
                    failures.push(format!("{}: {error}", error.code()));
                }
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    failures
}

/// The most recent connection-level failure in the buffered events. A
/// socket that opened and then heard nothing usually means a hub that
/// dropped the hello: a wrong secret or hash.
fn last_error(events: &mut broadcast::Receiver<Arc<LinkEvent>>) -> Option<String> {
    let mut last = None;
    loop {
        match events.try_recv() {
            Ok(event) => match &*event {
                LinkEvent::Connect { .. } => {
                    last = Some("connected, but the hub never answered the hello: check --secret and --hash".to_owned());
                }
                LinkEvent::WsError(e) => last = Some(e.clone()),
                LinkEvent::ProtocolError(e) => last = Some(e.to_string()),
                LinkEvent::Diagnostic(d) => last = Some(d.to_string()),
                LinkEvent::Disconnect { code, reason, .. } => {
                    last = Some(match code {
                        Some(code) => format!("closed with {code} {reason}"),
                        None => format!("closed: {reason}"),
                    });
                }
                _ => {}
            },
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return last,
        }
    }
}

/// `CODE: message` on stderr. Bad arguments are exit 2, everything else
/// (remote errors, timeouts, a link that is not ready) exit 1.
pub(crate) fn link_failure(err: &LinkError) -> Failure {
    match err {
        LinkError::InvalidArgument(_) => Failure::unusable(err),
        LinkError::RpcRemote(remote) => {
            Failure::rejected(format_args!("{}: {}", remote.code, remote.message))
        }
        _ => Failure::rejected(format_args!("{}: {err}", err.code())),
    }
}

/// Waits until the hub has handled everything this client sent so far: a
/// `link.health` server RPC travels behind it on the same socket, so any
/// answer (even an error from a hub without that RPC) proves the earlier
/// frames were read and routed.
pub(crate) async fn barrier(link: &LinkClient, timeout: Duration) -> Result<(), Failure> {
    let opts = RpcOptions {
        timeout: Some(timeout),
        cancel: None,
    };
    match link.rpc_with("server", "link.health", None, opts).await {
        Ok(_) | Err(LinkError::RpcRemote(_)) => Ok(()),
        Err(e) => Err(Failure::rejected(format_args!(
            "{}: not confirmed by the hub: {e}",
            e.code()
        ))),
    }
}

/// Runs an online command on a single-threaded runtime.
pub(crate) fn block_on<F>(f: F) -> Result<Status, Failure>
where
    F: Future<Output = Result<Status, Failure>>,
{
    init_logging();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::unusable(format_args!("cannot start the runtime: {e}")))?
        .block_on(f)
}

/// Client logs on stderr, filtered by `RUST_LOG` (default: errors only,
/// since every failure that ends the command is reported anyway).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    // Err only when a subscriber is already installed: keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Parses a JSON argument; `-` reads it from stdin. Not JSON is exit 2.
pub(crate) fn json_arg(what: &str, text: &str) -> Result<Value, Failure> {
    let owned;
    let text = if text == "-" {
        let bytes = crate::input::read_document(io::stdin().lock())?;
        owned = String::from_utf8(bytes)
            .map_err(|_| Failure::unusable(format_args!("{what} on stdin: not UTF-8")))?;
        owned.as_str()
    } else {
        text
    };
    serde_json::from_str(text)
        .map_err(|e| Failure::unusable(format_args!("{what} is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        conn: ConnArgs,
    }

    fn parse(args: &[&str]) -> Result<ConnArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.conn)
    }

    #[test]
    fn options_are_checked_before_connecting() {
        let ok = parse(&["--secret", "s", "--url", "ws://127.0.0.1:1"]).unwrap();
        assert!(ok.config(ok.kind()).is_ok());
        assert!(ok.kind().starts_with("link-cli-"));
        let bad_url = parse(&["--secret", "s", "--url", "http://x"]).unwrap();
        assert!(bad_url.config(bad_url.kind()).is_err());
        let bad_kind = parse(&["--secret", "s", "--kind", "a b"]).unwrap();
        assert!(bad_kind.config(bad_kind.kind()).is_err());
        assert!(parse(&["--timeout", "0"]).is_err());
        assert!(parse(&["--hash", "md5"]).is_err());
        let no_ca = parse(&["--secret", "s", "--ca", "/nonexistent/ca.pem"]).unwrap();
        let Err(failure) = no_ca.config(no_ca.kind()) else {
            panic!("a missing CA file is refused")
        };
        assert!(
            format!("{failure:?}").contains("/nonexistent/ca.pem"),
            "{failure:?}"
        );
    }

    #[test]
    fn url_repeats_or_takes_a_comma_separated_list() {
        let repeated = parse(&["--url", "ws://a:1", "--url", "wss://b:2", "--secret", "s"]);
        let repeated = repeated.unwrap();
        assert_eq!(repeated.urls, ["ws://a:1", "wss://b:2"]);
        let ordered = parse(&["--url-order", "ordered"]).unwrap();
        assert_eq!(ordered.url_order, UrlOrder::Ordered);
        let config = repeated.config(repeated.kind()).unwrap();
        assert_eq!(config.urls(), ["ws://a:1", "wss://b:2"]);
        let listed = parse(&["--url", "ws://a:1, ws://b:2", "--url-order", "RANDOM"]).unwrap();
        assert_eq!(listed.hub_urls(), ["ws://a:1", "ws://b:2"]);
        assert_eq!(listed.url_order, UrlOrder::Random);
        let empty = parse(&["--url", "ws://a:1,", "--secret", "s"]).unwrap();
        assert!(
            empty.config(empty.kind()).is_err(),
            "an empty URL is refused"
        );
        assert!(parse(&["--url-order", "round-robin"]).is_err());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let args = parse(&["--secret", "hunter2"]).unwrap();
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn json_arguments() {
        assert_eq!(json_arg("data", r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(json_arg("data", "{a:1}").is_err());
        assert!(json_arg("data", "").is_err());
    }
}
