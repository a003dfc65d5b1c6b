//! `link-cli bench`: the load generator of `link-bench` on the command
//! line. It targets any hub URL with its secret (so it runs unchanged
//! against a Node.js hub), or starts our hub in this process (`--embedded`,
//! the default), as a child process (`--child`) or as a cluster of N child
//! hubs over NATS (`--cluster N`, peers spread so that traffic crosses
//! hubs), and with `--compare nats` runs the same scenarios through
//! nats-server.
//!
//! ```text
//!   flags ──► BenchOptions + HubSpec (+ NatsSpec) ──► link_bench::run ──► table on stdout
//!                                                        │ progress bars on stderr
//!                                                        └──► --json: one JSON document
//! ```
//!
//! `--scenario soak` runs alone: N peers churning for `--duration` while
//! traffic runs, ending with the line `soak: PASS|FAIL lost=…
//! duplicated=… unanswered=… rss_drift=…%` (docs/reliability.md, *Soak*).
//!
//! `--scenario chaos` runs alone too: the soak's traffic against a cluster
//! (`--cluster N`, 3 by default) while hubs and nats-server are killed and
//! restarted and one hub is cut off from NATS (in a network namespace,
//! when root), ending with `chaos: PASS|FAIL acked_lost=… unanswered=…
//! duplicated=… reform_max=…s faults=…` (docs/reliability.md, *Chaos*).
//!
//! Exit status: 0 when every scenario ran (and a soak or chaos run
//! passed), 1 when one failed midway or a soak or chaos run failed, 2 for
//! unusable options.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use link_bench::chaos::ChaosOptions;
use link_bench::soak::SoakOptions;
use link_bench::{
    BenchError, BenchOptions, Clients, HubSpec, NatsSpec, PeerUpdates, Progress, Receiver,
    parse_scenarios,
};

use crate::exit::{Failure, Status};

/// What to compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Compare {
    /// nats-server 2.9+ through async-nats (needs the `nats` feature).
    Nats,
}

/// Arguments of `link-cli bench`.
#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("child_hubs").multiple(true).args(["child", "cluster"])
))]
#[command(group(
    clap::ArgGroup::new("nats_users").multiple(true).args(["compare", "cluster"])
))]
pub(crate) struct BenchArgs {
    /// A running hub to measure (any protocol-v1 hub, ours or Node's).
    /// Needs --secret or LINK_SECRET.
    #[arg(long, value_name = "URL", conflicts_with_all = ["embedded", "child", "cluster"])]
    url: Option<String>,

    /// The process id of the --url hub when it runs on this machine (ours,
    /// Node's, any): its CPU time per message is then reported.
    #[arg(long, value_name = "PID", requires = "url")]
    hub_pid: Option<u32>,

    /// The hub's shared secret, for --url. Prefer LINK_SECRET.
    #[arg(
        long,
        env = "LINK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,

    /// Run our hub inside this process (the default without --url).
    #[arg(long, conflicts_with_all = ["child", "cluster"])]
    embedded: bool,

    /// Run our hub as a child process (`link-cli hub --bind 127.0.0.1:0`):
    /// memory and CPU figures are then the hub's alone.
    #[arg(long, conflicts_with = "cluster")]
    child: bool,

    /// Run N child hubs (2 or more) joined in a cluster over NATS
    /// (`link-cli hub --cluster URL`): nats-server is started with
    /// JetStream (or --nats-url is used), the bench waits until every hub
    /// sees the others, and spreads each scenario's peers over the hubs so
    /// that traffic crosses them (sender and receiver on different hubs,
    /// fan-out subscribers round-robin over all). Every scenario then also
    /// reports `NATS crossings` (messages the hubs handed to NATS) and
    /// their number per call or message; hub CPU is summed over the hubs.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(2..),
    )]
    cluster: Option<u16>,

    /// The `link-cli` executable the --child (or --cluster) hubs run
    /// (default: this one); an older build gives an A/B of two hubs under
    /// one load tool.
    #[arg(long, value_name = "PATH", requires = "child_hubs")]
    hub_program: Option<std::path::PathBuf>,

    /// Serve wss:// from the hub this starts (embedded or --child), with a
    /// CA and a certificate for 127.0.0.1 made for the run.
    #[arg(long, conflicts_with_all = ["url", "cluster"])]
    tls: bool,

    /// Scenarios, comma-separated: rpc-seq, rpc-conc, send, publish,
    /// fanout, connections, or all; flood and hostile (only when named);
    /// or soak, alone (--duration, --peers, --churn, --rate, --out); or
    /// chaos, alone: the soak against a cluster of --cluster hubs (3 by
    /// default) while hubs and nats-server are killed and restarted and,
    /// as root, one hub is cut off from NATS (--seed, --no-netns).
    #[arg(long, value_name = "LIST", default_value = "all")]
    scenario: Vec<String>,

    /// Calls or messages per scenario (default: rpc-seq 5000, rpc-conc
    /// 50000, send and publish 100000, fanout 1000 per subscriber).
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,

    /// RPCs in flight for rpc-conc.
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,

    /// Subscribers for fanout.
    #[arg(long, value_name = "S", default_value_t = 100)]
    subscribers: usize,

    /// Also run fanout with this many extra subscribers that stop reading,
    /// and report the others' rate against the run without them.
    #[arg(long, value_name = "K", default_value_t = 0)]
    slow: usize,

    /// flood: the flooder's publish limit per second; it publishes at 10x
    /// this. A hub this starts holds it (--rate-limit
    /// bench-flooder:publish=N/s); a --url hub must hold it itself.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    flood_limit: u32,

    /// flood: publisher/subscriber pairs of normal load.
    #[arg(long, value_name = "P", default_value_t = 2)]
    flood_pairs: usize,

    /// hostile: the attacks to run, comma-separated (slow-upgrade,
    /// silent-tcp, bad-signatures, oversized, nested, subscriptions,
    /// no-hello, half-open; default: every one), after the quiet phase.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    attacks: Vec<String>,

    /// hostile: the attackers' threads run at this nice value (0 to 19;
    /// 19: they get only the CPU the hub and the good peers leave, as
    /// attackers on machines of their own would).
    #[arg(long, value_name = "N", default_value_t = 0)]
    attackers_nice: i32,

    /// Idle authenticated peers for the connections scenario.
    #[arg(long, value_name = "K", default_value_t = 10_000)]
    connections: usize,

    /// Hellos in flight while opening connections.
    #[arg(long, value_name = "N", default_value_t = 64)]
    hello_concurrency: usize,

    /// connections: what the peers ask of presence: `v1` (full peers.update
    /// lists, as Node peers are served) or `delta` (the peers.delta
    /// extension: one snapshot, then deltas).
    #[arg(long, value_name = "KIND", default_value = "v1")]
    clients: Clients,

    /// Messages in flight (sent, not yet counted by every receiver) in
    /// send, publish and fanout. Keep it under 1024, the buffer of a client
    /// stream, which drops on overflow; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    window: u64,

    /// Serialised size of the JSON payload (about 270 bytes more once signed).
    #[arg(long, value_name = "BYTES", default_value_t = 80)]
    payload_bytes: usize,

    /// Runs of each scenario; figures are medians.
    #[arg(long, value_name = "R", default_value_t = 1)]
    runs: usize,

    /// End a scenario when nothing arrives for this long.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    idle_timeout: u64,

    /// Stop opening connections after this long.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    max_connect_time: u64,

    /// connections: read `settled KiB/conn` this long after convergence
    /// (the allocator gives memory back when the hub allocates again,
    /// which an idle hub does at its keepalive rounds, 15 s apart).
    #[arg(long, value_name = "SECS", default_value_t = 35)]
    settle: u64,

    /// peers.update mode of the hub this starts (embedded or --child):
    /// `broadcast` (the reference behaviour) or `off` (large fleets).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "broadcast",
        value_parser = crate::hub::peer_updates_parser(),
    )]
    peer_updates: PeerUpdates,

    /// How link subscribers receive in publish and fanout: `handler`
    /// (`subscribe_with`, counted on the link's own task) or `stream`
    /// (`subscribe`, each stream counted by a task of its own, as NATS
    /// subscribers are).
    #[arg(long, value_name = "HOW", default_value = "handler")]
    receiver: Receiver,

    /// soak: how long churn and traffic run, e.g. 60s, 10m, 1h (plain
    /// numbers are seconds).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,

    /// soak: peers kept connected.
    #[arg(long, value_name = "N", default_value_t = 100)]
    peers: usize,

    /// soak: peers per second that disconnect and reconnect (0: none).
    #[arg(long, value_name = "R", default_value_t = 2.0)]
    churn: f64,

    /// soak: publishes, direct sends and RPCs per second, each.
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    rate: f64,

    /// soak: peers that publish, send and call (the others receive and
    /// answer; every peer churns).
    #[arg(long, value_name = "N", default_value_t = 10)]
    talkers: usize,

    /// soak: warm-up; RSS drift is measured from its end (default: a tenth
    /// of --duration, at least 5 s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    warmup: Option<Duration>,

    /// chaos: the seed of the fault schedule (default: from the clock;
    /// printed either way, so a run can be repeated).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// chaos: skip the network-namespace fault (cutting one hub off from
    /// NATS), which needs root and `ip netns`.
    #[arg(long)]
    no_netns: bool,

    /// soak: write soak.csv (samples) and soak.png (chart) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Run the same scenarios through another bus and print both columns.
    #[arg(long, value_enum, value_name = "BUS")]
    compare: Option<Compare>,

    /// A running nats-server, for --compare nats and for --cluster (which
    /// needs JetStream on: `nats-server -js`). Default: start
    /// `--nats-server` on a free port.
    #[arg(long, value_name = "URL", requires = "nats_users")]
    nats_url: Option<String>,

    /// The process id of the --nats-url server, for its memory and CPU
    /// figures.
    #[arg(long, value_name = "PID", requires = "nats_url")]
    nats_pid: Option<u32>,

    /// The nats-server executable to start.
    #[arg(long, value_name = "PATH", default_value = "nats-server")]
    nats_server: PathBuf,

    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,

    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

impl std::fmt::Debug for BenchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchArgs")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("scenario", &self.scenario)
            .finish_non_exhaustive()
    }
}

impl BenchArgs {
    fn options(&self) -> Result<BenchOptions, Failure> {
        let scenarios = parse_scenarios(&self.scenario).map_err(Failure::unusable)?;
        let opts = BenchOptions {
            scenarios,
            count: self.count,
            concurrency: self.concurrency,
            subscribers: self.subscribers,
            slow: self.slow,
            connections: self.connections,
            hello_concurrency: self.hello_concurrency,
            clients: self.clients,
            window: self.window,
            payload_bytes: self.payload_bytes,
            runs: self.runs,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connect_time: Duration::from_secs(self.max_connect_time),
            settle: Duration::from_secs(self.settle),
            peer_updates: self.peer_updates,
            receiver: self.receiver,
            tls: self.tls,
            flood_limit: self.flood_limit,
            flood_pairs: self.flood_pairs,
            attacks: self.attacks.clone(),
            attackers_nice: self.attackers_nice,
        };
        opts.validate().map_err(Failure::unusable)?;
        Ok(opts)
    }

    fn hub(&self) -> Result<HubSpec, Failure> {
        if let Some(hubs) = self.cluster {
            return Ok(HubSpec::Cluster {
                program: self.hub_program()?,
                hubs: usize::from(hubs),
                nats: self.nats_spec(),
            });
        }
        match (&self.url, self.child) {
            (Some(url), _) => {
                let secret = self.secret.clone().ok_or_else(|| {
                    Failure::unusable("--url needs the hub's secret: --secret or LINK_SECRET")
                })?;
                Ok(HubSpec::Url {
                    url: url.clone(),
                    secret,
                    pid: self.hub_pid,
                })
            }
            (None, true) => Ok(HubSpec::Child {
                program: self.hub_program()?,
            }),
            (None, false) => Ok(HubSpec::Embedded),
        }
    }

    /// The `link-cli` the child hubs run.
    fn hub_program(&self) -> Result<PathBuf, Failure> {
        match &self.hub_program {
            Some(p) => Ok(p.clone()),
            None => std::env::current_exe()
                .map_err(|e| Failure::unusable(format_args!("cannot find this executable: {e}"))),
        }
    }

    /// The nats-server to compare with.
    fn nats(&self) -> Option<NatsSpec> {
        self.compare?;
        Some(self.nats_spec())
    }

    /// --nats-url, else the --nats-server to start.
    fn nats_spec(&self) -> NatsSpec {
        match &self.nats_url {
            Some(url) => NatsSpec::Url {
                url: url.clone(),
                pid: self.nats_pid,
            },
            None => NatsSpec::Spawn {
                program: self.nats_server.clone(),
            },
        }
    }
}

/// `60`, `60s`, `10m`, `1h`, `1.5h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h'))) => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 10m, 1h)"))?;
    let secs = n * match unit {
        'h' => 3600.0,
        'm' => 60.0,
        _ => 1.0,
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

impl BenchArgs {
    /// True when `--scenario` names `name` (`soak` or `chaos`, which must
    /// then be alone).
    fn is_alone(&self, name: &str) -> Result<bool, Failure> {
        let names: Vec<&str> = self
            .scenario
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match names.contains(&name) {
            true if names.len() > 1 => Err(Failure::unusable(format_args!(
                "--scenario {name} runs alone: name no other scenario with it"
            ))),
            named => Ok(named),
        }
    }

    /// True when `--scenario` names `soak` (which must then be alone).
    fn is_soak(&self) -> Result<bool, Failure> {
        self.is_alone("soak")
    }

    fn chaos_options(&self) -> Result<ChaosOptions, Failure> {
        if self.compare.is_some() || self.nats_url.is_some() || self.url.is_some() {
            return Err(Failure::unusable(
                "--scenario chaos starts its own cluster and nats-server: no --url, --nats-url or --compare",
            ));
        }
        if self.tls {
            return Err(Failure::unusable("--scenario chaos has no --tls"));
        }
        let opts = ChaosOptions {
            hubs: self.cluster.map_or(3, usize::from),
            duration: self.duration,
            peers: self.peers,
            churn: self.churn,
            rate: self.rate,
            talkers: self.talkers,
            seed: self.seed,
            netns: !self.no_netns,
            peer_updates: self.peer_updates,
            ..ChaosOptions::new(self.hub_program()?, self.nats_server.clone())
        };
        opts.validate().map_err(Failure::unusable)?;
        Ok(opts)
    }

    fn soak_options(&self) -> Result<SoakOptions, Failure> {
        if self.compare.is_some() {
            return Err(Failure::unusable("--scenario soak has no --compare"));
        }
        let opts = SoakOptions {
            duration: self.duration,
            peers: self.peers,
            churn: self.churn,
            rate: self.rate,
            talkers: self.talkers,
            warmup: self.warmup,
            peer_updates: self.peer_updates,
            tls: self.tls,
            out: self.out.clone(),
            ..SoakOptions::default()
        };
        opts.validate().map_err(Failure::unusable)?;
        Ok(opts)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::unusable(format_args!("cannot start the runtime: {e}")))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", text.trim_end())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::write(&e))
}

/// `--scenario soak`: the summary (or JSON), then the verdict line; exit 1
/// on FAIL.
fn soak(args: &BenchArgs) -> Result<Status, Failure> {
    let opts = args.soak_options()?;
    let hub = args.hub()?;
    let progress = Progress::new(!args.quiet && io::stderr().is_terminal());
    let runtime = runtime()?;
    let report = runtime
        .block_on(link_bench::soak::run(&opts, &hub, &progress))
        .map_err(bench_failure)?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    verdict(
        args,
        || serde_json::to_string_pretty(&report),
        report.table(),
        report.verdict(),
        report.pass(),
    )
}

/// A bench that could not run: a bad option is the caller's (exit 2),
/// anything else the run's (exit 1).
fn bench_failure(e: BenchError) -> Failure {
    match e {
        BenchError::InvalidOption { .. } => Failure::unusable(e),
        e => Failure::rejected(e),
    }
}

/// Prints a run with a verdict (soak, chaos): its table and verdict line,
/// or with `--json` the report on stdout and the verdict on stderr (stdout
/// stays one JSON document); exit 1 on FAIL.
fn verdict(
    args: &BenchArgs,
    json: impl FnOnce() -> serde_json::Result<String>,
    table: String,
    verdict: String,
    pass: bool,
) -> Result<Status, Failure> {
    if args.json {
        let text =
            json().map_err(|e| Failure::unusable(format_args!("cannot encode the report: {e}")))?;
        print(&text)?;
        eprintln!("{verdict}");
    } else {
        print(&format!("{table}{verdict}"))?;
    }
    Ok(if pass { Status::Ok } else { Status::Rejected })
}

/// `--scenario chaos`: the seed and the namespace at once (stderr), then
/// the summary (or JSON) and the verdict line; exit 1 on FAIL.
fn chaos(args: &BenchArgs) -> Result<Status, Failure> {
    let opts = args.chaos_options()?;
    let progress = Progress::new(!args.quiet && io::stderr().is_terminal());
    let runtime = runtime()?;
    let announce = |line: &str| eprintln!("{line}");
    let report = runtime
        .block_on(link_bench::chaos::run(&opts, &progress, &announce))
        .map_err(bench_failure)?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    verdict(
        args,
        || serde_json::to_string_pretty(&report),
        report.table(),
        report.verdict(),
        report.pass(),
    )
}

/// Runs the benchmark and prints the table (or JSON) on stdout.
pub(crate) fn run(args: &BenchArgs) -> Result<Status, Failure> {
    if args.is_alone("chaos")? {
        return chaos(args);
    }
    if args.is_soak()? {
        return soak(args);
    }
    let opts = args.options()?;
    let hub = args.hub()?;
    let nats = args.nats();
    let progress = Progress::new(!args.quiet && io::stderr().is_terminal());
    let runtime = runtime()?;
    let report = runtime
        .block_on(link_bench::run(&opts, &hub, nats.as_ref(), &progress))
        .map_err(bench_failure)?;
    // Sockets and tasks of the peers are gone; do not wait for stragglers.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let text = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::unusable(format_args!("cannot encode the report: {e}")))?
    } else {
        report.table()
    };
    print(&text)?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_are_the_issue_defaults() {
        let a = parse(&[]).unwrap();
        let o = a.options().ok().unwrap();
        assert_eq!(o.concurrency, 64);
        assert_eq!(o.subscribers, 100);
        assert_eq!(o.connections, 10_000);
        assert_eq!(o.payload_bytes, 80);
        assert_eq!(o.scenarios.len(), 6);
        assert!(matches!(a.hub().ok().unwrap(), HubSpec::Embedded));
        assert!(a.nats().is_none());
    }

    #[test]
    fn url_needs_a_secret_and_excludes_embedded() {
        let mut a = parse(&["--url", "ws://127.0.0.1:1"]).unwrap();
        a.secret = None;
        assert!(a.hub().is_err());
        a.secret = Some("s".into());
        assert!(matches!(a.hub().ok().unwrap(), HubSpec::Url { .. }));
        assert!(parse(&["--url", "ws://x", "--embedded"]).is_err());
        assert!(parse(&["--embedded", "--child"]).is_err());
    }

    #[test]
    fn scenario_lists_and_compare() {
        let a = parse(&["--scenario", "send,publish", "--compare", "nats"]).unwrap();
        assert_eq!(a.options().ok().unwrap().scenarios.len(), 2);
        assert!(matches!(a.nats(), Some(NatsSpec::Spawn { .. })));
        assert!(parse(&["--scenario", "bogus"]).unwrap().options().is_err());
        assert!(
            parse(&["--nats-url", "nats://x"]).is_err(),
            "needs --compare or --cluster"
        );
    }

    #[test]
    fn cluster_takes_two_hubs_or_more_and_a_nats_url() {
        assert!(parse(&["--cluster", "1"]).is_err());
        for conflict in ["--child", "--embedded", "--tls"] {
            assert!(parse(&["--cluster", "2", conflict]).is_err(), "{conflict}");
        }
        assert!(parse(&["--cluster", "2", "--url", "ws://x"]).is_err());
        let a = parse(&[
            "--cluster",
            "3",
            "--nats-url",
            "nats://127.0.0.1:4222",
            "--hub-program",
            "/bin/link-cli",
        ])
        .unwrap();
        match a.hub().ok().unwrap() {
            HubSpec::Cluster {
                program,
                hubs,
                nats: NatsSpec::Url { url, .. },
            } => {
                assert_eq!(hubs, 3);
                assert_eq!(url, "nats://127.0.0.1:4222");
                assert_eq!(program, PathBuf::from("/bin/link-cli"));
            }
            other => panic!("{other:?}"),
        }
        // No comparison unless asked.
        assert!(a.nats().is_none());
        assert!(parse(&["--hub-program", "/bin/link-cli"]).is_err());
    }

    #[test]
    fn soak_runs_alone_with_its_options() {
        let a = parse(&[
            "--scenario",
            "soak",
            "--duration",
            "1h",
            "--peers",
            "1000",
            "--churn",
            "1",
            "--rate",
            "5",
            "--out",
            "x",
        ])
        .unwrap();
        assert!(a.is_soak().ok().unwrap());
        let o = a.soak_options().ok().unwrap();
        assert_eq!(o.duration, Duration::from_secs(3600));
        assert_eq!((o.peers, o.churn, o.rate), (1000, 1.0, 5.0));
        assert_eq!(o.out, Some(PathBuf::from("x")));
        assert!(!parse(&[]).unwrap().is_soak().ok().unwrap());
        assert!(
            parse(&["--scenario", "soak,send"])
                .unwrap()
                .is_soak()
                .is_err()
        );
        assert!(
            parse(&["--scenario", "soak", "--peers", "1"])
                .unwrap()
                .soak_options()
                .is_err()
        );
    }

    #[test]
    fn chaos_runs_alone_on_its_own_cluster() {
        let a = parse(&[
            "--scenario",
            "chaos",
            "--seed",
            "7",
            "--no-netns",
            "--duration",
            "5m",
            "--cluster",
            "3",
            "--hub-program",
            "/bin/link-cli",
        ])
        .unwrap();
        assert!(a.is_alone("chaos").ok().unwrap());
        let o = a.chaos_options().ok().unwrap();
        assert_eq!((o.hubs, o.seed, o.netns), (3, Some(7), false));
        assert_eq!(o.duration, Duration::from_secs(300));
        assert_eq!(o.program, PathBuf::from("/bin/link-cli"));
        let o = parse(&["--scenario", "chaos", "--cluster", "4"])
            .unwrap()
            .chaos_options()
            .ok()
            .unwrap();
        assert_eq!((o.hubs, o.seed, o.netns), (4, None, true));
        assert!(
            parse(&["--scenario", "chaos,soak"])
                .unwrap()
                .is_alone("chaos")
                .is_err()
        );
        for bad in [
            &[
                "--scenario",
                "chaos",
                "--cluster",
                "2",
                "--nats-url",
                "nats://x",
            ][..],
            &["--scenario", "chaos", "--url", "ws://x", "--secret", "s"][..],
            &["--scenario", "chaos", "--peer-updates", "off"][..],
        ] {
            assert!(parse(bad).unwrap().chaos_options().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1m").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let a = parse(&["--secret", "hunter2"]).unwrap();
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
