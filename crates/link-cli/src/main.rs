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
mod exit;
mod hub;
mod input;
mod key;
mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line arguments of `link-cli`.
#[derive(Parser)]
#[command(
    name = "link-cli",
    version,
    about = "Operator CLI for link: canonicalise, sign and verify frames; run a hub.",
    after_help = "Exit status: 0 success, 1 a check failed (verify), 2 unusable input or usage."
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
    Hub(hub::HubArgs),
    /// Load-test a hub (embedded, child or any URL), optionally beside nats-server.
    Bench(Box<bench::BenchArgs>),
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
    };
    exit::finish(name, result)
}
