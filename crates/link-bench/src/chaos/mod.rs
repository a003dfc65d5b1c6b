//! `chaos`: the soak's traffic against a cluster of hubs while a seeded
//! loop kills and restarts hubs and nats-server and cuts one hub off from
//! NATS; it ends with a verdict (docs/reliability.md, *Chaos*):
//!
//! ```text
//!  Netns::create (root, unless --no-netns) ─► ChaosCluster::start (nats-server + N hubs)
//!  Fleet::open (peers spread, each given every hub URL) ─┬─ churn, traffic (the soak's tasks)
//!                                                        └─ chaos loop: Schedule::next_step
//!      wait ─► fault ─► outage ─► heal ─► (churn paused) poll until re-formed ─► record
//!  duration over ─► churn stops ─► everyone up ─► traffic stops ─► drain + RPC grace
//!  ─► ChaosReport ─► `chaos: PASS|FAIL acked_lost=… unanswered=… duplicated=… reform_max=…s faults=…`
//! ```
//!
//! **Re-formed** (what the loop polls for after a heal, every 100 ms): every
//! hub answers `link.health` (asked through a watcher client connected to
//! that hub alone) with `cluster.up` true and a `cluster.hubs` list that
//! names exactly the hubs' current ids; and every peer of the fleet is up
//! (connected, subscription confirmed) with a peer list that names every
//! other peer of the fleet.

mod cluster;
pub mod fault;
pub mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use link_client::{ClientConfig, LinkClient, StopOptions};
use serde::Serialize;

use crate::error::BenchError;
use crate::options::PeerUpdates;
use crate::progress::Progress;
use crate::soak::fleet::{Endpoints, Fleet};
use crate::soak::{
    Delivery, DuplicateBurst, LATE_GRACE, Rng, RpcTally, SPARE_FILES, Traffic, churn, talk,
};
use crate::sys::ensure_open_files;
use cluster::ChaosCluster;
pub use fault::{Fault, Schedule, Step};
use netns::Netns;

/// The longest a re-form may take for a PASS.
pub const MAX_REFORM: Duration = Duration::from_secs(10);
/// How long the loop waits for a re-form before it records "never".
const REFORM_GIVE_UP: Duration = Duration::from_secs(60);
/// Between two looks at a re-forming cluster.
const REFORM_POLL: Duration = Duration::from_millis(100);
/// How long an RPC waits for its answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watcher's `link.health` may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the churned and failed-over peers may take to be back at the
/// end.
const SETTLE: Duration = Duration::from_secs(30);

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The `link-cli` the hubs run.
    pub program: PathBuf,
    /// The nats-server executable.
    pub nats_server: PathBuf,
    /// Hubs in the cluster (2 or more).
    pub hubs: usize,
    /// How long traffic, churn and faults run (after the peers connected).
    pub duration: Duration,
    /// Peers, spread over the hubs.
    pub peers: usize,
    /// Peers per second that disconnect and reconnect (0: none).
    pub churn: f64,
    /// Publishes, direct sends and RPCs per second, each.
    pub rate: f64,
    /// Peers that publish, send and call.
    pub talkers: usize,
    /// The fault schedule's seed (`None`: from the clock; printed either way).
    pub seed: Option<u64>,
    /// Try the network-namespace cut (needs root and `ip netns`).
    pub netns: bool,
    /// `peers.update` mode of the hubs.
    pub peer_updates: PeerUpdates,
}

impl ChaosOptions {
    /// Options for `program` and `nats_server`, the rest at their defaults
    /// (3 hubs, 60 s, 100 peers, churn 2/s, rate 10/s, 10 talkers).
    pub fn new(program: PathBuf, nats_server: PathBuf) -> Self {
        Self {
            program,
            nats_server,
            hubs: 3,
            duration: Duration::from_secs(60),
            peers: 100,
            churn: 2.0,
            rate: 10.0,
            talkers: 10,
            seed: None,
            netns: true,
            peer_updates: PeerUpdates::Broadcast,
        }
    }

    /// Checks ranges, naming the option.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |option: &'static str, reason: &str| {
            Err(BenchError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.hubs < 2 {
            return bad("cluster", "chaos needs at least 2 hubs");
        }
        if self.peer_updates == PeerUpdates::Off {
            return bad("peer-updates", "chaos checks peer lists: not `off`");
        }
        // The soak's checks, on a soak with the same figures.
        crate::soak::SoakOptions {
            duration: self.duration,
            peers: self.peers,
            churn: self.churn,
            rate: self.rate,
            talkers: self.talkers,
            warmup: Some(Duration::ZERO),
            ..crate::soak::SoakOptions::default()
        }
        .validate()
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Seconds from the start of traffic to the fault.
    pub at_s: f64,
    /// What.
    pub fault: Fault,
    /// From the fault to the heal, seconds.
    pub outage_s: f64,
    /// From the heal to the re-formed cluster, seconds (`None`: not within
    /// the give-up time).
    pub reform_s: Option<f64>,
    /// When it did not re-form: what was still wrong at the last look.
    pub still_wrong: Option<String>,
}

/// What a chaos run found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// The schedule's seed.
    pub seed: u64,
    /// Hub URLs.
    pub hubs: Vec<String>,
    /// The NATS URL the hubs used.
    pub nats: String,
    /// The namespace of the cut, or why there was none.
    pub netns: Result<String, String>,
    /// Peers.
    pub peers: usize,
    /// Of which talk.
    pub talkers: usize,
    /// Churn asked for, per second.
    pub churn: f64,
    /// Traffic rate asked for, per second each.
    pub rate: f64,
    /// Traffic time, seconds.
    pub duration_s: f64,
    /// Seconds the peers took to connect.
    pub open_s: f64,
    /// Every fault.
    pub faults: Vec<FaultRecord>,
    /// Churns done.
    pub churns: u64,
    /// Disconnects we did not cause (the faults' doing, mostly).
    pub dropped: u64,
    /// Those by close code and reason.
    pub drop_reasons: BTreeMap<String, u64>,
    /// Publishes and direct sends (`lost` is messages that had to arrive by
    /// the soak's rule and did not: not acknowledged, so informational).
    pub delivery: Delivery,
    /// The duplicates, in bursts per receiver (times since the start of
    /// traffic, as the faults'), each with the fault before it.
    pub duplicates: Vec<DuplicateBurst>,
    /// Publishes and sends a client refused, by code.
    pub send_errors: BTreeMap<String, u64>,
    /// RPCs.
    pub rpcs: RpcTally,
    /// Calls a callee's handler ran more than once (extra runs).
    pub rpc_repeats: u64,
}

impl ChaosReport {
    /// Answered OK, yet not the callee's answer: its handler has no record
    /// of the call, or the answer is not the argument.
    pub fn acked_lost(&self) -> u64 {
        self.rpcs.answered_unhandled + self.rpcs.wrong_answers
    }

    /// Calls with neither an answer nor a typed error within their timeout
    /// plus grace.
    pub fn unanswered(&self) -> u64 {
        self.rpcs.no_outcome + self.rpcs.late
    }

    /// Messages delivered twice, and calls run twice.
    pub fn duplicated(&self) -> u64 {
        self.delivery.duplicated + self.rpc_repeats
    }

    /// The longest re-form; `None` when one never happened (or no fault).
    pub fn reform_max(&self) -> Option<Duration> {
        let mut max = Duration::ZERO;
        for f in &self.faults {
            max = max.max(Duration::from_secs_f64(f.reform_s?));
        }
        (!self.faults.is_empty()).then_some(max)
    }

    /// Every check held, and at least one fault was injected.
    pub fn pass(&self) -> bool {
        self.acked_lost() == 0
            && self.unanswered() == 0
            && self.duplicated() == 0
            && self.reform_max().is_some_and(|r| r <= MAX_REFORM)
    }

    /// `chaos: PASS|FAIL acked_lost=N unanswered=N duplicated=N
    /// reform_max=X.Xs faults=N`, then `unacked_lost=N` (informational).
    pub fn verdict(&self) -> String {
        let reform = match self.reform_max() {
            Some(r) => format!("{:.1}s", r.as_secs_f64()),
            None if self.faults.is_empty() => "n/a".to_owned(),
            None => "never".to_owned(),
        };
        format!(
            "chaos: {} acked_lost={} unanswered={} duplicated={} reform_max={reform} faults={} \
             unacked_lost={}",
            if self.pass() { "PASS" } else { "FAIL" },
            self.acked_lost(),
            self.unanswered(),
            self.duplicated(),
            self.faults.len(),
            self.delivery.lost,
        )
    }

    /// A summary for people (the verdict is not in it).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
        line("seed", self.seed.to_string());
        line(
            "cluster",
            format!(
                "{} hubs {} over {}",
                self.hubs.len(),
                self.hubs.join(" "),
                self.nats
            ),
        );
        line(
            "netns cut",
            match &self.netns {
                Ok(ns) => format!("hub {} in {ns}", self.hubs.len() - 1),
                Err(why) => format!("skipped: {why}"),
            },
        );
        line(
            "run",
            format!(
                "{} peers ({} talkers), churn {}/s, rate {}/s each, {:.0}s after {:.1}s to connect",
                self.peers, self.talkers, self.churn, self.rate, self.duration_s, self.open_s
            ),
        );
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for f in &self.faults {
            let k = match f.fault {
                Fault::KillHub { .. } => "hub-kill",
                Fault::KillNats => "nats-kill",
                Fault::CutHub => "netns-cut",
            };
            *kinds.entry(k).or_default() += 1;
        }
        line(
            "faults",
            format!(
                "{} ({})",
                self.faults.len(),
                kinds
                    .iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        for f in &self.faults {
            line(
                "",
                format!(
                    "{:>7.1}s {:<34} outage {:>4.1}s  re-formed in {}",
                    f.at_s,
                    f.fault.to_string(),
                    f.outage_s,
                    f.reform_s.map_or_else(
                        || format!("never ({})", f.still_wrong.as_deref().unwrap_or("?")),
                        |r| format!("{r:.1}s")
                    )
                ),
            );
        }
        crate::soak::traffic_lines(
            &mut line,
            crate::soak::Tally {
                churns: self.churns,
                dropped: self.dropped,
                drop_reasons: &self.drop_reasons,
                delivery: &self.delivery,
                duplicates: &self.duplicates,
                send_errors: &self.send_errors,
            },
            " by the soak's rule",
        );
        let r = &self.rpcs;
        line(
            "rpcs",
            format!(
                "{} calls, {} answered ({} not run by the callee, {} wrong), {} without outcome, {} late, {} run twice",
                r.calls,
                r.answered,
                r.answered_unhandled,
                r.wrong_answers,
                r.no_outcome,
                r.late,
                self.rpc_repeats
            ),
        );
        line("  errors", crate::soak::counts(&r.errors));
        out
    }
}

/// Runs a chaos run and reports; the verdict is [`ChaosReport::pass`].
/// `announce` gets one line as things start (the seed, the namespace or
/// why there is none), before the run ends.
pub async fn run(
    opts: &ChaosOptions,
    progress: &Progress,
    announce: &(dyn Fn(&str) + Sync),
) -> Result<ChaosReport, BenchError> {
    opts.validate()?;
    ensure_open_files(opts.peers as u64 + SPARE_FILES)?;
    let seed = opts
        .seed
        .unwrap_or_else(|| Rng::seeded().below(1 << 30) as u64);
    announce(&format!("chaos: seed {seed}"));
    let mut ns = if opts.netns {
        Netns::create().await
    } else {
        Err("--no-netns".to_owned())
    };
    match &ns {
        Ok(n) => announce(&format!(
            "chaos: hub {} runs in network namespace {} ({}); nats-server on {}",
            opts.hubs - 1,
            n.name,
            n.hub_addr,
            n.nats_addr
        )),
        Err(why) => announce(&format!(
            "chaos: no network namespace, the cut is skipped: {why}"
        )),
    }
    let result = async {
        let mut cluster = ChaosCluster::start(
            opts.program.clone(),
            opts.nats_server.clone(),
            opts.hubs,
            opts.peer_updates,
            ns.as_ref().ok(),
        )
        .await?;
        // Ctrl-C ends the run early; the cleanup below still runs.
        let outcome = tokio::select! {
            r = chaos(opts, seed, &mut cluster, ns.as_ref().ok(), progress) => r,
            _ = tokio::signal::ctrl_c() => Err(BenchError::Operation {
                scenario: "chaos",
                reason: "interrupted".into(),
            }),
        };
        cluster.stop().await;
        outcome.map(|mut r| {
            r.hubs = cluster.urls();
            r.nats = cluster.nats_url().to_owned();
            r
        })
    }
    .await;
    let netns = match &mut ns {
        Ok(n) => {
            let name = n.name.clone();
            n.remove();
            Ok(name)
        }
        Err(why) => Err(why.clone()),
    };
    result.map(|r| ChaosReport { netns, ..r })
}

/// Watchers: one client per hub, connected to that hub alone, through which
/// `link.health` is asked.
struct Watchers(Vec<LinkClient>);

impl Watchers {
    fn open(urls: &[String], secret: &str, tag: &str) -> Result<Self, BenchError> {
        let mut clients = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let config = ClientConfig::builder()
                .url(url.as_str())
                .secret(secret)
                .kind(format!("chaos-{tag}-watch{i}"))
                .rpc_timeout(HEALTH_TIMEOUT)
                .reconnect_initial(Duration::from_millis(100))
                .reconnect_max(Duration::from_millis(500))
                .build()
                .map_err(|e| BenchError::Peer {
                    scenario: "chaos",
                    kind: format!("watcher {i}"),
                    reason: e.to_string(),
                })?;
            let c = LinkClient::new(config);
            c.start();
            clients.push(c);
        }
        Ok(Self(clients))
    }

    /// Every hub says NATS is up and lists exactly the hubs' ids; else
    /// what is not so.
    async fn hubs_agree(&self) -> Result<(), String> {
        let mut ids = Vec::with_capacity(self.0.len());
        let mut lists = Vec::with_capacity(self.0.len());
        for (i, c) in self.0.iter().enumerate() {
            let h = c
                .rpc(link_protocol::SERVER, "link.health", None)
                .await
                .map_err(|e| format!("hub {i}: link.health: {}", e.code()))?;
            let cluster = &h["cluster"];
            let (Some(id), Some(up), Some(hubs)) = (
                cluster["hub"].as_str(),
                cluster["up"].as_bool(),
                cluster["hubs"].as_array(),
            ) else {
                return Err(format!("hub {i}: link.health has no cluster part"));
            };
            if !up {
                return Err(format!("hub {i}: NATS not up"));
            }
            ids.push(id.to_owned());
            lists.push(
                hubs.iter()
                    .filter_map(|h| h["hub"].as_str().map(str::to_owned))
                    .collect::<BTreeSet<_>>(),
            );
        }
        let all: BTreeSet<String> = ids.into_iter().collect();
        for (i, l) in lists.iter().enumerate() {
            if *l != all {
                return Err(format!(
                    "hub {i} lists {} of the {} hubs",
                    l.intersection(&all).count(),
                    all.len()
                ));
            }
        }
        Ok(())
    }

    async fn close(&self) {
        for c in &self.0 {
            c.stop_with(StopOptions::immediate()).await;
        }
    }
}

/// Every peer is up and lists every other peer of the fleet; else what is
/// not so.
fn peers_agree(fleet: &Fleet) -> Result<(), String> {
    let n = fleet.kinds.len();
    let down: Vec<usize> = (0..n).filter(|&s| !fleet.up(s)).collect();
    if !down.is_empty() {
        // A peer displaced (close 4000) does not reconnect.
        let displaced: u64 = fleet
            .drop_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(why, _)| why.starts_with("4000:"))
            .map(|(_, n)| n)
            .sum();
        return Err(format!(
            "{} peers not up, first p{}; {displaced} displaced so far",
            down.len(),
            down[0]
        ));
    }
    let fleet_kinds: BTreeSet<&str> = fleet.kinds.iter().map(String::as_str).collect();
    let mut short = Vec::new();
    for (slot, (c, me)) in fleet.clients.iter().zip(&fleet.kinds).enumerate() {
        let peers = c.peers();
        let seen = peers
            .iter()
            .map(|p| p.kind.as_str())
            .filter(|k| fleet_kinds.contains(k) && *k != me.as_str())
            .collect::<BTreeSet<&str>>()
            .len();
        if seen != n - 1 {
            short.push((slot, n - 1 - seen));
        }
    }
    match short.first() {
        None => Ok(()),
        Some((slot, missing)) => Err(format!(
            "{} peers' lists incomplete, e.g. p{slot} misses {missing}",
            short.len()
        )),
    }
}

async fn chaos(
    opts: &ChaosOptions,
    seed: u64,
    cluster: &mut ChaosCluster,
    ns: Option<&Netns>,
    progress: &Progress,
) -> Result<ChaosReport, BenchError> {
    let tag = format!("{:x}-{:x}", std::process::id(), seed & 0xffff_ffff);
    let endpoints = Endpoints {
        urls: cluster.urls(),
        secret: cluster.secret().to_owned(),
        roots: None,
    };
    let watchers = Watchers::open(&endpoints.urls, cluster.secret(), &tag)?;
    let opening = Instant::now();
    let fleet = match Fleet::open(
        &endpoints,
        &tag,
        opts.peers,
        opts.talkers,
        crate::soak::SoakOptions::default().drain,
        RPC_TIMEOUT,
        Duration::from_secs(120),
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            watchers.close().await;
            return Err(e);
        }
    };
    let open_s = opening.elapsed().as_secs_f64();
    let result = drive(opts, seed, cluster, ns, progress, &fleet, &watchers, open_s).await;
    fleet.close().await;
    watchers.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    opts: &ChaosOptions,
    seed: u64,
    cluster: &mut ChaosCluster,
    ns: Option<&Netns>,
    progress: &Progress,
    fleet: &Arc<Fleet>,
    watchers: &Watchers,
    open_s: f64,
) -> Result<ChaosReport, BenchError> {
    let drain = crate::soak::SoakOptions::default().drain;
    let paused = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let churner = (opts.churn > 0.0).then(|| {
        tokio::spawn(churn(
            fleet.clone(),
            paused.clone(),
            opts.churn,
            crate::soak::SoakOptions::default().downtime,
        ))
    });
    let talker = tokio::spawn(talk(
        fleet.clone(),
        traffic.clone(),
        opts.rate,
        opts.talkers,
        RPC_TIMEOUT,
    ));

    let bar = progress.bar("chaos seconds", opts.duration.as_secs());
    let mut schedule = Schedule::new(seed, cluster.len(), ns.is_some());
    let start = Instant::now();
    let base = fleet.now();
    let mut faults = Vec::new();
    let mut failure = None;
    loop {
        let step = schedule.next_step();
        // A fault starts only if its outage and a re-form fit in the run.
        let left = opts.duration.saturating_sub(start.elapsed());
        if step.wait + step.outage + MAX_REFORM > left {
            tokio::time::sleep(left).await;
            break;
        }
        tokio::time::sleep(step.wait).await;
        bar.set(start.elapsed().as_secs());
        let at_s = start.elapsed().as_secs_f64();
        if let Err(e) = inject(cluster, ns, step.fault).await {
            failure = Some(e);
            break;
        }
        tokio::time::sleep(step.outage).await;
        if let Err(e) = heal(cluster, ns, step.fault).await {
            failure = Some(e);
            break;
        }
        let healed = Instant::now();
        let outage_s = (healed - start).as_secs_f64() - at_s;
        // Churn waits while the cluster re-forms, so that lists can settle.
        paused.store(true, Ordering::Release);
        let (reform_s, still_wrong) = loop {
            let wrong = match watchers.hubs_agree().await {
                Ok(()) => peers_agree(fleet),
                Err(e) => Err(e),
            };
            match wrong {
                Ok(()) => break (Some(healed.elapsed().as_secs_f64()), None),
                Err(why) if healed.elapsed() >= REFORM_GIVE_UP => break (None, Some(why)),
                Err(_) => tokio::time::sleep(REFORM_POLL).await,
            }
        };
        paused.store(false, Ordering::Release);
        bar.set(start.elapsed().as_secs());
        faults.push(FaultRecord {
            at_s,
            fault: step.fault,
            outage_s,
            reform_s,
            still_wrong,
        });
    }
    drop(bar);

    // Churn stops; everyone comes back; traffic stops; what is in flight
    // gets the drain window, RPCs their timeout on top.
    if let Some(c) = churner {
        c.abort();
    }
    paused.store(true, Ordering::Release);
    fleet.all_up(SETTLE).await;
    talker.abort();
    let _ = talker.await;
    tokio::time::sleep(drain).await;
    let grace = Instant::now() + RPC_TIMEOUT + LATE_GRACE;
    while traffic.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut rpcs = traffic.rpcs().clone();
    rpcs.no_outcome = traffic.in_flight.load(Ordering::Acquire);
    let (delivery, mut duplicates) = {
        let books = fleet.books.lock();
        (books.delivery(), books.duplicate_bursts(base))
    };
    for b in &mut duplicates {
        b.note = fault_before(&faults, b.first_s);
    }
    Ok(ChaosReport {
        seed,
        hubs: Vec::new(),
        nats: String::new(),
        netns: Err(String::new()),
        peers: opts.peers,
        talkers: opts.talkers,
        churn: opts.churn,
        rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        open_s,
        faults,
        churns: fleet.churns.load(Ordering::Relaxed),
        dropped: fleet.dropped.load(Ordering::Relaxed),
        drop_reasons: fleet
            .drop_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        delivery,
        duplicates,
        send_errors: traffic
            .send_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        rpcs,
        rpc_repeats: fleet.handled.repeated(),
    })
}

/// The fault last injected before `at_s`, and where `at_s` falls in it:
/// `during "kill hub 1" (2.1s after it)` or `after "kill hub 1" (0.4s after
/// its heal)`.
fn fault_before(faults: &[FaultRecord], at_s: f64) -> Option<String> {
    let f = faults.iter().rev().find(|f| f.at_s <= at_s)?;
    let healed = f.at_s + f.outage_s;
    Some(if at_s <= healed {
        format!("during \"{}\" ({:.1}s after it)", f.fault, at_s - f.at_s)
    } else {
        format!(
            "after \"{}\" ({:.1}s after its heal)",
            f.fault,
            at_s - healed
        )
    })
}

async fn inject(
    cluster: &mut ChaosCluster,
    ns: Option<&Netns>,
    fault: Fault,
) -> Result<(), BenchError> {
    match fault {
        Fault::KillHub { hub } => cluster.kill_hub(hub).await,
        Fault::KillNats => cluster.kill_nats().await,
        Fault::CutHub => {
            let ns = ns.ok_or_else(|| BenchError::op("chaos", "a cut without a namespace"))?;
            ns.cut().await.map_err(|e| BenchError::op("chaos", e))?;
        }
    }
    Ok(())
}

async fn heal(
    cluster: &mut ChaosCluster,
    ns: Option<&Netns>,
    fault: Fault,
) -> Result<(), BenchError> {
    match fault {
        Fault::KillHub { hub } => {
            // Its port may still be held for a moment: a few tries.
            let mut last = None;
            for _ in 0..10 {
                match cluster.start_hub(hub).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(last.unwrap_or_else(|| BenchError::Hub("the hub did not start again".into())))
        }
        Fault::KillNats => cluster.start_nats().await,
        Fault::CutHub => {
            let ns = ns.ok_or_else(|| BenchError::op("chaos", "a heal without a namespace"))?;
            ns.heal().await.map_err(|e| BenchError::op("chaos", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ChaosReport {
        ChaosReport {
            seed: 1,
            hubs: vec!["ws://a".into(), "ws://b".into(), "ws://c".into()],
            nats: "nats://n".into(),
            netns: Err("--no-netns".into()),
            peers: 10,
            talkers: 2,
            churn: 1.0,
            rate: 5.0,
            duration_s: 60.0,
            open_s: 1.0,
            faults: vec![
                FaultRecord {
                    at_s: 5.0,
                    fault: Fault::KillHub { hub: 1 },
                    outage_s: 3.0,
                    reform_s: Some(2.5),
                    still_wrong: None,
                },
                FaultRecord {
                    at_s: 20.0,
                    fault: Fault::KillNats,
                    outage_s: 4.0,
                    reform_s: Some(10.0),
                    still_wrong: None,
                },
            ],
            churns: 0,
            dropped: 30,
            drop_reasons: BTreeMap::new(),
            delivery: Delivery {
                lost: 12,
                ..Delivery::default()
            },
            duplicates: Vec::new(),
            send_errors: BTreeMap::new(),
            rpcs: RpcTally::default(),
            rpc_repeats: 0,
        }
    }

    #[test]
    fn a_burst_of_duplicates_is_dated_against_the_fault_before_it() {
        let r = report();
        assert_eq!(fault_before(&r.faults, 4.9), None);
        assert_eq!(
            fault_before(&r.faults, 6.0).as_deref(),
            Some("during \"kill hub 1\" (1.0s after it)")
        );
        assert_eq!(
            fault_before(&r.faults, 8.5).as_deref(),
            Some("after \"kill hub 1\" (0.5s after its heal)")
        );
        assert_eq!(
            fault_before(&r.faults, 30.0).as_deref(),
            Some("after \"kill nats-server\" (6.0s after its heal)")
        );
    }

    #[test]
    fn the_verdict_counts_what_was_acknowledged() {
        let r = report();
        // Unacknowledged losses and drops are reported but pass; a re-form
        // of exactly 10 s passes.
        assert!(r.pass(), "{}", r.verdict());
        assert_eq!(
            r.verdict(),
            "chaos: PASS acked_lost=0 unanswered=0 duplicated=0 reform_max=10.0s faults=2 \
             unacked_lost=12"
        );
        let fails: [fn(&mut ChaosReport); 7] = [
            |r| r.rpcs.answered_unhandled = 1,
            |r| r.rpcs.wrong_answers = 1,
            |r| r.rpcs.no_outcome = 1,
            |r| r.rpcs.late = 1,
            |r| r.delivery.duplicated = 1,
            |r| r.rpc_repeats = 1,
            |r| r.faults[0].reform_s = Some(10.1),
        ];
        for (i, f) in fails.iter().enumerate() {
            let mut r = report();
            f(&mut r);
            assert!(!r.pass(), "case {i}");
            assert!(r.verdict().starts_with("chaos: FAIL "), "case {i}");
        }
        let mut r = report();
        r.rpcs.answered_unhandled = 2;
        r.rpcs.wrong_answers = 1;
        r.rpcs.no_outcome = 1;
        r.rpcs.late = 3;
        r.delivery.duplicated = 1;
        r.rpc_repeats = 4;
        assert!(
            r.verdict()
                .contains(" acked_lost=3 unanswered=4 duplicated=5 ")
        );
        // A heal after which the cluster never re-formed fails and says so;
        // a run without a fault proves nothing and fails too.
        r = report();
        r.faults[1].reform_s = None;
        assert!(!r.pass() && r.verdict().contains(" reform_max=never "));
        r.faults.clear();
        assert!(!r.pass() && r.verdict().contains(" reform_max=n/a faults=0 "));
    }

    #[test]
    fn options_are_checked_by_name() {
        let ok = ChaosOptions::new("link-cli".into(), "nats-server".into());
        assert!(ok.validate().is_ok());
        let named = |o: ChaosOptions| match o.validate() {
            Err(BenchError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            named(ChaosOptions {
                hubs: 1,
                ..ok.clone()
            }),
            "cluster"
        );
        assert_eq!(
            named(ChaosOptions {
                peer_updates: PeerUpdates::Off,
                ..ok.clone()
            }),
            "peer-updates"
        );
        assert_eq!(
            named(ChaosOptions {
                peers: 1,
                ..ok.clone()
            }),
            "peers"
        );
    }
}
