//! Streaming subcommands: `subscribe` prints topic messages and `listen`
//! prints direct messages, one line each, until Ctrl-C or `--count`.
//!
//! ```text
//!   hub ──► Subscription × topics ─┐
//!   hub ──► DirectStream ──────────┴─► render ──► stdout (flushed per line)
//!           Ctrl-C │ --count reached │ stdout closed ──► stop, exit 0
//!           link stopped for good (displaced, reconnects exhausted) ──► exit 1
//!           reconnected but no hello.ack within --timeout ──► exit 1
//! ```
//!
//! Streams are opened before the link starts, so nothing that arrives
//! right after `hello.ack` is missed; subscriptions are sent with the
//! ready handshake and replayed by the client after a reconnect. A dropped
//! connection is retried by the client; a link that stopped for good ends
//! the command with an error, and so does a reconnect that the hub never
//! acknowledges: once a socket is open again, `hello.ack` must come within
//! `--timeout` (a hub restarted with another secret or hash drops every
//! frame as `bad-signature` and would otherwise leave the command silent
//! for ever). While the hub refuses connections (a restart under way) the
//! client keeps retrying.
//!
//! Both read `LINK_KIND` when `--kind` is not given (the other online
//! commands ignore it).

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::{Stream, StreamExt};
use link_client::{LinkClient, LinkEvent};
use tokio::time::Instant;

use crate::exit::{Failure, Status};

use super::conn::{self, ConnArgs};
use super::output::{self, Format, Out};

/// Arguments of `link-cli subscribe`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Prints one line per message: JSON {\"topic\", \"from\", \"payload\"} when \
stdout is not a terminal (or with --json), `[topic] from: payload` on a \
terminal. Runs until Ctrl-C or --count messages. Reconnects after a dropped \
connection; exits 1 when the link stops for good, or when a reconnected \
socket gets no hello.ack within --timeout (wrong secret or hash). The kind \
is --kind, else LINK_KIND, else link-cli-<pid>.

Example:
  link-cli subscribe news alerts --count 10 | jq .payload")]
pub(crate) struct SubscribeArgs {
    /// Topics to subscribe to.
    #[arg(required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// Exit 0 after this many messages (all topics together).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `link-cli listen`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Prints every direct message sent to this CLI's kind: JSON {\"from\", \
\"type\", \"data\"} when stdout is not a terminal (or with --json), \
`[type] from: data` on a terminal. Pick the kind others send to with --kind \
(or LINK_KIND). Runs until Ctrl-C or --count messages. Reconnects after a \
dropped connection; exits 1 when the link stops for good, or when a \
reconnected socket gets no hello.ack within --timeout (wrong secret or \
hash).

Example:
  link-cli listen --kind inbox --count 1")]
pub(crate) struct ListenArgs {
    /// Exit 0 after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `link-cli subscribe`.
pub(crate) fn subscribe(args: &SubscribeArgs) -> Result<Status, Failure> {
    for topic in &args.topics {
        if let Err(e) = link_protocol::validate::check_topic(topic) {
            return Err(Failure::unusable(format_args!(
                "invalid topic {topic:?}: {e}"
            )));
        }
    }
    conn::block_on(async {
        let link = args.conn.streaming_client()?;
        let mut subs = Vec::with_capacity(args.topics.len());
        for topic in &args.topics {
            subs.push(link.subscribe(topic).map_err(|e| conn::link_failure(&e))?);
        }
        let format = args.conn.format();
        let what = format!("subscribed to {}", args.topics.join(", "));
        let messages =
            futures_util::stream::select_all(subs).map(move |m| output::render_topic(format, &m));
        run(&args.conn, &link, &what, messages, args.count).await
    })
}

/// `link-cli listen`.
pub(crate) fn listen(args: &ListenArgs) -> Result<Status, Failure> {
    conn::block_on(async {
        let link = args.conn.streaming_client()?;
        let format = args.conn.format();
        let messages = link
            .directs()
            .map(move |m| output::render_direct(format, &m));
        let what = format!("listening as {}", link.kind());
        run(&args.conn, &link, &what, messages, args.count).await
    })
}

/// Starts the link, prints lines until an end, then stops the link.
async fn run<S>(
    args: &ConnArgs,
    link: &LinkClient,
    what: &str,
    lines: S,
    count: Option<u64>,
) -> Result<Status, Failure>
where
    S: Stream<Item = String> + Unpin,
{
    let result = async {
        args.ready(link).await?;
        if io::stderr().is_terminal() && args.format() == Format::Pretty {
            eprintln!("{what} (Ctrl-C to stop)");
        }
        print_until_end(link, lines, count, args.timeout()).await
    }
    .await;
    link.stop().await;
    result
}

async fn print_until_end<S>(
    link: &LinkClient,
    mut lines: S,
    count: Option<u64>,
    ack_within: Duration,
) -> Result<Status, Failure>
where
    S: Stream<Item = String> + Unpin,
{
    let mut out = Out::new();
    let gone = link.wait_for(stopped_for_good, None);
    tokio::pin!(gone);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut events = link.events();
    let mut reack = Reack::default();
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let deadline = reack.deadline;
        tokio::select! {
            line = lines.next() => {
                let Some(line) = line else {
                    return Err(Failure::rejected("LINK_NOT_READY: the link stopped"));
                };
                if let Err(e) = out.line(&line) {
                    return Out::closed(&e);
                }
                printed += 1;
            }
            event = &mut gone => return Err(stopped_failure(event)),
            event = events.recv() => {
                if let Ok(event) = event {
                    reack.saw(&event, ack_within);
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return Err(reack.failure(ack_within));
            }
            _ = &mut ctrl_c => break,
        }
    }
    Ok(Status::Ok)
}

/// Whether the hub acknowledged the link again after it dropped: the
/// deadline runs from the first socket opened after the drop until a
/// `hello.ack` (`Ready`). Refused connections do not start it.
#[derive(Default)]
struct Reack {
    /// The connection dropped and no `hello.ack` came since.
    lost: bool,
    /// When the `hello.ack` of the reconnected socket is due.
    deadline: Option<Instant>,
    /// The last diagnostic or dropped-frame report seen while waiting.
    last: Option<String>,
}

impl Reack {
    fn saw(&mut self, event: &LinkEvent, ack_within: Duration) {
        match event {
            LinkEvent::Ready { .. } => *self = Self::default(),
            LinkEvent::Disconnect { .. } => self.lost = true,
            LinkEvent::Connect { .. } if self.lost && self.deadline.is_none() => {
                self.deadline = Some(Instant::now() + ack_within);
            }
            LinkEvent::Diagnostic(d) if self.lost => self.last = Some(d.to_string()),
            LinkEvent::ProtocolError(e) if self.lost => self.last = Some(e.to_string()),
            _ => {}
        }
    }

    fn failure(&self, ack_within: Duration) -> Failure {
        let last = self
            .last
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        Failure::rejected(format_args!(
            "LINK_NOT_READY: reconnected, but not acknowledged by the hub within {} ms: \
             wrong secret or hash?{last}",
            ack_within.as_millis()
        ))
    }
}

/// Events after which the client will not reconnect.
fn stopped_for_good(event: &LinkEvent) -> bool {
    matches!(
        event,
        LinkEvent::Disconnect {
            will_reconnect: false,
            ..
        } | LinkEvent::ReconnectExhausted { .. }
    )
}

fn stopped_failure(event: Option<Arc<LinkEvent>>) -> Failure {
    let why = match event.as_deref() {
        Some(LinkEvent::Disconnect {
            displaced: true, ..
        }) => "another peer joined with the same kind".to_owned(),
        Some(LinkEvent::Disconnect { code, reason, .. }) => match code {
            Some(code) => format!("closed with {code} {reason}"),
            None => format!("closed: {reason}"),
        },
        Some(LinkEvent::ReconnectExhausted { attempts, .. }) => {
            format!("gave up after {attempts} reconnect attempts")
        }
        _ => "no more events".to_owned(),
    };
    Failure::rejected(format_args!("LINK_NOT_READY: the link stopped: {why}"))
}
