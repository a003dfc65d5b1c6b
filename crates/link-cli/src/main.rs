//! # link-cli
//!
//! The operator command line for link. This file is only the clap
//! definition: each subcommand's arguments and behaviour live in a module,
//! and `main` dispatches to it and turns the result into an exit status.
//!
//! ```text
//!   argv ──clap──► Command ──► offline::{canon, sign, verify}(args)
//!                                     │ stdin ─► link_protocol ─► stdout
//!                                     ▼
//!                   Result<Status, Failure> ──► exit::finish ──► ExitCode
//! ```
//!
//! - [`offline`]: `canon`, `sign`, `verify`, which need no network.
//! - [`key`]: the `--secret` / `LINK_SECRET` and `--hash` options.
//! - [`input`]: reading one document or one document per line from stdin.
//! - [`exit`]: the exit status convention shared by every subcommand.
//! - [`hub`]: `hub`, which runs a hub server until SIGINT/SIGTERM.
//! - [`bench`](mod@bench): `bench`, the load generator (see docs/perf.md).
//! - [`online`]: `rpc`, `publish`, `subscribe`, `send`, `listen`, `peers`,
//!   `status`, `health`, `topics`: a peer on a running hub.
//! - [`completions`]: `completions <shell>`, via clap_complete.
//!
//! ## Getting started
//!
//! ```text
//! $ echo '{"b":1.0,"a":[1e21]}' | link-cli canon
//! {"a":[1e+21],"b":1}
//! $ export LINK_SECRET=k
//! $ echo '{"v":1,"id":"x","ts":1000,"type":"t","from":null,"to":null}' | link-cli sign | link-cli verify && echo valid
//! valid
//! ```

#![forbid(unsafe_code)]

mod bench;
mod completions;
mod exit;
mod hub;
mod input;
mod key;
mod offline;
mod online;

use std::process::ExitCode;

/// mimalloc: allocation and freeing were about a quarter of the hub's CPU
/// under load with the system allocator (docs/perf.md). Without the
/// `mimalloc` feature the system allocator serves, for heap profilers.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, Parser, Subcommand};

/// Command-line arguments of `link-cli`.
#[derive(Parser)]
#[command(
    name = "link-cli",
    version,
    about = "Operator CLI for link: canonicalise, sign and verify frames; run a hub; talk on a bus.",
    after_help = "Exit status: 0 success, 1 a check failed (verify) or the bus said no \
                  (online commands), 2 unusable input or usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each variant's arguments are owned by its module.
#[derive(Subcommand)]
enum Command {
    /// Print the canonical signing form of a JSON document.
    Canon(offline::CanonArgs),
    /// Sign an envelope and print the wire frame.
    Sign(offline::SignArgs),
    /// Check the signature of a wire frame.
    Verify(offline::VerifyArgs),
    /// Run a hub: HTTP and WebSocket on one port, until SIGINT/SIGTERM.
    Hub(Box<hub::HubArgs>),
    /// Load-test a hub (embedded, child or any URL), optionally beside nats-server.
    Bench(Box<bench::BenchArgs>),
    /// Call an RPC on a peer (or `server`) and print the result as JSON.
    Rpc(online::call::RpcArgs),
    /// Publish a JSON payload on a topic.
    Publish(online::fire::PublishArgs),
    /// Print topic messages, one line each, until Ctrl-C or --count.
    Subscribe(online::stream::SubscribeArgs),
    /// Send a direct message to a peer.
    Send(online::fire::SendArgs),
    /// Print direct messages sent to this CLI, until Ctrl-C or --count.
    Listen(online::stream::ListenArgs),
    /// List the peers connected to the hub.
    Peers(online::call::PeersArgs),
    /// Print the last status of every peer.
    Status(online::call::PeersArgs),
    /// Print the hub's health (the `link.health` server RPC).
    Health(online::call::HealthArgs),
    /// List topics and their subscribers (the `link.topic.list` server RPC).
    Topics(online::call::TopicsArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

impl Command {
    /// The subcommand name used to prefix diagnostics.
    fn name(&self) -> &'static str {
        match self {
            Self::Canon(_) => "canon",
            Self::Sign(_) => "sign",
            Self::Verify(_) => "verify",
            Self::Hub(_) => "hub",
            Self::Bench(_) => "bench",
            Self::Rpc(_) => "rpc",
            Self::Publish(_) => "publish",
            Self::Subscribe(_) => "subscribe",
            Self::Send(_) => "send",
            Self::Listen(_) => "listen",
            Self::Peers(_) => "peers",
            Self::Status(_) => "status",
            Self::Health(_) => "health",
            Self::Topics(_) => "topics",
            Self::Completions(_) => "completions",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    let result = match &cli.command {
        Command::Canon(args) => offline::canon(args),
        Command::Sign(args) => offline::sign(args),
        Command::Verify(args) => offline::verify(args),
        Command::Hub(args) => hub::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Rpc(args) => online::call::rpc(args),
        Command::Publish(args) => online::fire::publish(args),
        Command::Subscribe(args) => online::stream::subscribe(args),
        Command::Send(args) => online::fire::send(args),
        Command::Listen(args) => online::stream::listen(args),
        Command::Peers(args) => online::call::peers(args),
        Command::Status(args) => online::call::status(args),
        Command::Health(args) => online::call::health(args),
        Command::Topics(args) => online::call::topics(args),
        Command::Completions(args) => completions::run(args, Cli::command()),
    };
    exit::finish(name, result)
}
