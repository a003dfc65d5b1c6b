//! Fire-and-forget subcommands: `publish` and `send`.
//!
//! ```text
//!   publish <topic> <json> ──► topic.message ─┐
//!   send <to> <type> [json] ─► direct ────────┼─► hub ──► subscribers / <to>
//!                              link.health ───┘   (answered after the message)
//! ```
//!
//! The protocol has no acknowledgement for these messages, so exit 0 means
//! "the hub has read and routed it": a `link.health` server RPC is sent
//! behind the message on the same socket, and its answer comes back only
//! after the hub handled what came before (see [`conn::barrier`]). Then the
//! link stops gracefully. Whether a subscriber or `<to>` was there to
//! receive it is not known to the sender.

use clap::Args;
use link_client::LinkClient;
use serde_json::Value;

use crate::exit::{Failure, Status};

use super::conn::{self, ConnArgs};
use super::output::{Format, Out};

/// Arguments of `link-cli publish`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Exits 0 once the hub has routed the message to the topic's subscribers \
(prints nothing when stdout is not a terminal).

Example:
  link-cli publish news '{\"headline\": \"hello\"}'

Exit status: 0 routed by the hub; 1 no hub or not confirmed in time; 2 bad \
arguments (JSON that does not parse, an invalid topic, no secret).")]
pub(crate) struct PublishArgs {
    /// Topic: 1 to 256 of `a-z A-Z 0-9 . _ -`.
    topic: String,
    /// Payload as JSON (`-` reads it from stdin).
    #[arg(value_name = "JSON")]
    payload: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `link-cli send`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Sends a direct message to the peer of kind <TO> (see `link-cli listen`). \
Exits 0 once the hub has routed it (prints nothing when stdout is not a \
terminal).

Example:
  link-cli send inbox greeting '{\"text\": \"hi\"}'

Exit status: 0 routed by the hub; 1 no hub or not confirmed in time; 2 bad \
arguments (JSON that does not parse, no secret).")]
pub(crate) struct SendArgs {
    /// Target kind.
    to: String,
    /// Message type.
    #[arg(value_name = "TYPE")]
    msg_type: String,
    /// Data as JSON (`-` reads it from stdin).
    #[arg(value_name = "JSON")]
    data: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `link-cli publish`.
pub(crate) fn publish(args: &PublishArgs) -> Result<Status, Failure> {
    if !link_protocol::validate::is_valid_topic(&args.topic) {
        return Err(Failure::unusable(format_args!(
            "invalid topic {:?}: expected 1 to 256 of a-z A-Z 0-9 . _ -",
            args.topic
        )));
    }
    let payload = conn::json_arg("payload", &args.payload)?;
    let done = format!("published to {}", args.topic);
    conn::block_on(fire(&args.conn, done, |link| {
        link.publish(&args.topic, payload)
    }))
}

/// `link-cli send`.
pub(crate) fn send(args: &SendArgs) -> Result<Status, Failure> {
    let data: Option<Value> = args
        .data
        .as_deref()
        .map(|text| conn::json_arg("data", text))
        .transpose()?;
    let done = format!("sent {} to {}", args.msg_type, args.to);
    conn::block_on(fire(&args.conn, done, |link| {
        link.send(&args.to, &args.msg_type, data)
    }))
}

/// Joins, queues one message, waits for the hub to have handled it, leaves.
async fn fire<F>(args: &ConnArgs, done: String, queue: F) -> Result<Status, Failure>
where
    F: FnOnce(&LinkClient) -> Result<(), link_client::LinkError>,
{
    let link = args.client()?;
    let result = async {
        args.ready(&link).await?;
        queue(&link).map_err(|e| conn::link_failure(&e))?;
        conn::barrier(&link, args.timeout()).await
    }
    .await;
    link.stop().await;
    result?;
    if args.format() == Format::Pretty
        && let Err(e) = Out::new().line(&done)
    {
        return Out::closed(&e);
    }
    Ok(Status::Ok)
}
