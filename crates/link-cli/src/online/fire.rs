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
//! link stops gracefully. Whether a subscriber was there to receive a
//! topic message is not known to the sender.
//!
//! `send` first asks the hub whether a peer of kind `<to>` is connected
//! (the `link.peer.list` server RPC with `{"kind": <to>}`) and sends
//! nothing, exit 1, when none is; `--no-check` skips that question. A hub
//! without `link.peer.list` (the Node reference) cannot be asked: the
//! message is then sent unchecked. Even when checked, the peer may leave
//! before the message reaches it: "handed to the hub" is all exit 0 says.

use clap::Args;
use link_client::{LinkClient, LinkError, RpcOptions};
use serde_json::{Value, json};

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
First checks with the hub (`link.peer.list`) that <TO> is connected and \
sends nothing when it is not (SEND_NO_TARGET, exit 1); --no-check skips \
the check, and a hub without `link.peer.list` cannot be asked. Exits 0 \
once the hub has read the message (on a terminal: `handed ... to the hub \
for <TO>`); the protocol has no delivery receipt.

Example:
  link-cli send inbox greeting '{\"text\": \"hi\"}'

Exit status: 0 handed to the hub; 1 <TO> not connected, no hub or not \
confirmed in time; 2 bad arguments (JSON that does not parse, no secret).")]
pub(crate) struct SendArgs {
    /// Target kind.
    to: String,
    /// Message type.
    #[arg(value_name = "TYPE")]
    msg_type: String,
    /// Data as JSON (`-` reads it from stdin).
    #[arg(value_name = "JSON")]
    data: Option<String>,
    /// Send without first checking that the target kind is connected.
    #[arg(long)]
    no_check: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `link-cli publish`.
pub(crate) fn publish(args: &PublishArgs) -> Result<Status, Failure> {
    if let Err(e) = link_protocol::validate::check_topic(&args.topic) {
        return Err(Failure::unusable(format_args!(
            "invalid topic {:?}: {e}",
            args.topic
        )));
    }
    let payload = conn::json_arg("payload", &args.payload)?;
    let done = format!("published to {}", args.topic);
    conn::block_on(fire(&args.conn, done, None, |link| {
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
    let done = format!("handed {} to the hub for {}", args.msg_type, args.to);
    let check = (!args.no_check).then_some(args.to.as_str());
    conn::block_on(fire(&args.conn, done, check, |link| {
        link.send(&args.to, &args.msg_type, data)
    }))
}

/// Asks the hub whether a peer of `kind` is connected: `Ok(None)` when
/// the hub cannot tell (no `link.peer.list`: an older or Node hub).
async fn is_connected(
    link: &LinkClient,
    kind: &str,
    timeout: std::time::Duration,
) -> Result<Option<bool>, Failure> {
    let opts = RpcOptions {
        timeout: Some(timeout),
        cancel: None,
    };
    let query = Some(json!({ "kind": kind }));
    match link.rpc_with("server", "link.peer.list", query, opts).await {
        Ok(answer) => Ok(answer["peers"].as_array().map(|peers| {
            peers
                .iter()
                .any(|p| p["kind"] == kind && p["connected"] != false)
        })),
        Err(LinkError::RpcRemote(_)) => Ok(None),
        Err(e) => Err(conn::link_failure(&e)),
    }
}

/// Joins, checks that `check` (a target kind) is connected, queues one
/// message, waits for the hub to have handled it, leaves.
async fn fire<F>(
    args: &ConnArgs,
    done: String,
    check: Option<&str>,
    queue: F,
) -> Result<Status, Failure>
where
    F: FnOnce(&LinkClient) -> Result<(), LinkError>,
{
    let link = args.client()?;
    let result = async {
        args.ready(&link).await?;
        if let Some(kind) = check
            && is_connected(&link, kind, args.timeout()).await? == Some(false)
        {
            return Err(Failure::rejected(format_args!(
                "SEND_NO_TARGET: no peer of kind {kind} is connected; nothing was sent \
                 (--no-check sends anyway)"
            )));
        }
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
