//! Request/answer subcommands: `rpc`, `health`, `topics`, `peers`,
//! `status`. Each joins the bus, asks one question, prints one answer and
//! leaves.
//!
//! ```text
//!   rpc <to> <type> [json] ──► rpc.request ──► peer or hub ──► result ──► stdout
//!   health / topics        ──► server RPC link.health / link.topic.list
//!   peers                  ──► first peers.update (the PeerConnect of this CLI)
//!   status                 ──► status.snapshot (read behind a barrier RPC)
//! ```
//!
//! The hub sends `hello.ack`, `peers.update` and `status.snapshot` in that
//! order when a peer joins. `peers` waits for the event of its own entry
//! in the first `peers.update`; `status` has no event to wait for (an
//! empty snapshot changes nothing), so it sends a server RPC and reads the
//! statuses once the answer is back, which the hub queued after the
//! snapshot.

use clap::Args;
use link_client::{LinkClient, LinkEvent, RpcOptions};
use serde_json::{Value, json};

use crate::exit::{Failure, Status};

use super::conn::{self, ConnArgs};
use super::output::{self, Out};

/// Arguments of `link-cli rpc`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Prints the result as JSON. On failure prints `CODE: message` on stderr \
(RPC_NO_TARGET, RPC_TIMEOUT, an application code, ...) and exits 1.

Examples:
  link-cli rpc billing invoice.total '{\"items\": 3}'
  link-cli rpc server link.health
  echo '{\"items\": 3}' | link-cli rpc billing invoice.total -

Exit status: 0 answered; 1 an error answer, a timeout or no hub; 2 bad \
arguments (JSON that does not parse, no secret).")]
pub(crate) struct RpcArgs {
    /// Target kind (`server` for the hub's own RPCs).
    to: String,
    /// RPC type (the handler name).
    #[arg(value_name = "TYPE")]
    rpc_type: String,
    /// Argument as JSON (`-` reads it from stdin).
    #[arg(value_name = "JSON")]
    data: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `link-cli health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `link-cli topics`.
#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    /// Only this topic: `{"topic", "subscribers"}` instead of every topic.
    topic: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `link-cli peers` and `link-cli status`.
#[derive(Debug, Args)]
pub(crate) struct PeersArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

/// `link-cli rpc`.
pub(crate) fn rpc(args: &RpcArgs) -> Result<Status, Failure> {
    let data = args
        .data
        .as_deref()
        .map(|text| conn::json_arg("JSON argument", text))
        .transpose()?;
    conn::block_on(call(&args.conn, &args.to, &args.rpc_type, data))
}

/// `link-cli health`: the hub's `link.health`.
pub(crate) fn health(args: &HealthArgs) -> Result<Status, Failure> {
    conn::block_on(call(&args.conn, "server", "link.health", None))
}

/// `link-cli topics`: the hub's `link.topic.list`.
pub(crate) fn topics(args: &TopicsArgs) -> Result<Status, Failure> {
    let data = args.topic.as_ref().map(|topic| json!({ "topic": topic }));
    conn::block_on(call(&args.conn, "server", "link.topic.list", data))
}

/// One RPC, its result printed. Ctrl-C cancels the call (`rpc.cancel`).
async fn call(
    args: &ConnArgs,
    to: &str,
    rpc_type: &str,
    data: Option<Value>,
) -> Result<Status, Failure> {
    let link = args.client()?;
    let result = async {
        args.ready(&link).await?;
        let opts = RpcOptions {
            timeout: Some(args.timeout()),
            cancel: None,
        };
        tokio::select! {
            r = link.rpc_with(to, rpc_type, data, opts) => r.map_err(|e| conn::link_failure(&e)),
            _ = tokio::signal::ctrl_c() => Err(Failure::rejected("RPC_ABORT: interrupted")),
        }
    }
    .await;
    link.stop().await;
    let text = output::render_value(args.format(), &result?);
    Out::new()
        .line(&text)
        .map_or_else(|e| Out::closed(&e), |()| Ok(Status::Ok))
}

/// `link-cli peers`: the hub's peer list, this CLI included.
pub(crate) fn peers(args: &PeersArgs) -> Result<Status, Failure> {
    conn::block_on(async {
        let link = args.conn.client()?;
        let result = list_peers(&args.conn, &link).await;
        link.stop().await;
        let text =
            output::render_peers(args.conn.format(), &result?, link.kind(), output::now_ms());
        Out::new()
            .line(&text)
            .map_or_else(|e| Out::closed(&e), |()| Ok(Status::Ok))
    })
}

async fn list_peers(
    args: &ConnArgs,
    link: &LinkClient,
) -> Result<Vec<link_protocol::PeerInfo>, Failure> {
    let own = link.kind().to_owned();
    // Registered before the link starts, so the first update is not missed.
    let listed = link.wait_for(
        move |e| matches!(e, LinkEvent::PeerConnect(p) if p.kind == own),
        Some(args.timeout()),
    );
    args.ready(link).await?;
    if listed.await.is_none() {
        return Err(Failure::rejected(format_args!(
            "LINK_NOT_READY: no peers.update listing this CLI within {} ms",
            args.timeout().as_millis()
        )));
    }
    Ok(link.peers())
}

/// `link-cli status`: the last status of every peer that sent one.
pub(crate) fn status(args: &PeersArgs) -> Result<Status, Failure> {
    conn::block_on(async {
        let link = args.conn.client()?;
        let result = async {
            args.conn.ready(&link).await?;
            conn::barrier(&link, args.conn.timeout()).await?;
            Ok::<_, Failure>(link.statuses())
        }
        .await;
        link.stop().await;
        let mut statuses: Vec<_> = result?.into_iter().collect();
        statuses.sort_by(|a, b| a.0.cmp(&b.0));
        let text = output::render_statuses(args.conn.format(), &statuses, output::now_ms());
        Out::new()
            .line(&text)
            .map_or_else(|e| Out::closed(&e), |()| Ok(Status::Ok))
    })
}
