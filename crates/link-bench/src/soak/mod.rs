//! `soak`: N peers stay connected for a long run while R of them per second
//! disconnect and reconnect (churn), and RPCs, publishes and direct sends
//! go at a steady rate; it ends with a verdict (docs/reliability.md, *Soak*):
//!
//! ```text
//!  Fleet::open (N clients, subscribed) ─┬─ churn task:   R/s stop + start again
//!                                       ├─ traffic task: rate/s each of publish, send, RPC
//!                                       ├─ checkpoints:  pause churn, compare peer lists
//!                                       └─ sampler:      hub RSS, fds, CPU ─► CSV + PNG
//!  duration over ─► churn stops ─► final list check ─► traffic stops ─► drain + RPC grace
//!                ─► Ledger::delivery ─► SoakReport ─► `soak: PASS|FAIL lost=… duplicated=… unanswered=… rss_drift=…%`
//! ```
//!
//! Talkers (the first `talkers` slots, which churn like the others) send:
//! each publish goes to every other peer (all subscribe to the soak
//! topic), each direct send and RPC to a random peer. Payloads carry the
//! talker, its session and a sequence number, so receivers can tell lost,
//! duplicated and out-of-order messages (`ledger.rs`; the rules are in
//! docs/reliability.md, *Soak*).

pub(crate) mod fleet;
pub(crate) mod ledger;
mod samples;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use link_client::LinkError;
use serde::Serialize;
use serde_json::json;
use tokio::time::MissedTickBehavior;

pub use fleet::ListCheck;
use fleet::{DIRECT, ECHO, Endpoints, Fleet, Mark};
use ledger::Flow;
pub use ledger::{BurstSession, Delivery, DuplicateBurst};
pub use samples::Sample;
use samples::Sampler;

use crate::error::BenchError;
use crate::options::PeerUpdates;
use crate::progress::Progress;
use crate::report::TargetInfo;
use crate::sys::{Machine, ensure_open_files};
use crate::target::{HubSpec, HubTarget};

/// The most RSS may grow from the end of warm-up to the end for a PASS.
pub const MAX_RSS_DRIFT_PERCENT: f64 = 5.0;
/// How long an RPC waits for its answer.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long peer lists may take to match at a checkpoint, and the
/// reconnecting peers to come back first.
const SETTLE: Duration = Duration::from_secs(30);
/// An RPC whose outcome comes later than its timeout plus this is late
/// (the client's own timer should have ended it).
pub(crate) const LATE_GRACE: Duration = Duration::from_secs(5);
/// Descriptors beyond the peers' sockets.
pub(crate) const SPARE_FILES: u64 = 512;

/// What a soak run does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long traffic and churn run (after the peers connected).
    pub duration: Duration,
    /// Peers kept connected.
    pub peers: usize,
    /// Peers per second that disconnect and reconnect (0: no churn).
    pub churn: f64,
    /// Publishes, direct sends and RPCs per second, each.
    pub rate: f64,
    /// Peers that publish, send and call (the first slots).
    pub talkers: usize,
    /// Warm-up: RSS drift is measured from its end (default: a tenth of
    /// the duration, at least 5 s).
    pub warmup: Option<Duration>,
    /// A message must arrive if both sides stayed up this long after it
    /// was sent.
    pub drain: Duration,
    /// How long a churned peer stays away.
    pub downtime: Duration,
    /// How long the peers may take to connect at the start.
    pub open_timeout: Duration,
    /// `peers.update` mode of a hub this starts (`off`: no list checks).
    pub peer_updates: PeerUpdates,
    /// Serve `wss://` from a hub this starts.
    pub tls: bool,
    /// Where to write `soak.csv` and `soak.png` (none: no files).
    pub out: Option<PathBuf>,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            peers: 100,
            churn: 2.0,
            rate: 10.0,
            talkers: 10,
            warmup: None,
            drain: Duration::from_secs(10),
            downtime: Duration::from_millis(500),
            open_timeout: Duration::from_secs(120),
            peer_updates: PeerUpdates::Broadcast,
            tls: false,
            out: None,
        }
    }
}

impl SoakOptions {
    /// Checks ranges, naming the option.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |option: &'static str, reason: &str| {
            Err(BenchError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.peers < 2 {
            return bad("peers", "a soak needs at least 2 peers");
        }
        if self.talkers == 0 || self.talkers > self.peers {
            return bad("talkers", "must be between 1 and the number of peers");
        }
        if !self.churn.is_finite() || self.churn < 0.0 {
            return bad(
                "churn",
                "must be a finite number of peers per second, 0 or more",
            );
        }
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return bad("rate", "must be a positive, finite number per second");
        }
        if self.warmup() >= self.duration {
            return bad("warmup", "must be shorter than the duration");
        }
        if self.drain.is_zero() {
            return bad("drain", "must be positive");
        }
        Ok(())
    }

    /// The warm-up actually used.
    pub fn warmup(&self) -> Duration {
        self.warmup
            .unwrap_or_else(|| (self.duration / 10).max(Duration::from_secs(5)))
    }

    /// One sample per this (about 600 over the run, 1 to 10 s apart).
    fn sample_every(&self) -> Duration {
        (self.duration / 600).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// Peer-list checkpoints during the run (and one at the end).
    fn checkpoint_every(&self) -> Duration {
        (self.duration / 6).max(Duration::from_secs(5))
    }

    /// How many checkpoints run during the run: one every
    /// [`checkpoint_every`](Self::checkpoint_every), none in the last half
    /// interval (the checkpoint after churn stops is the end's). One due at
    /// the very end raced the last sample, which the RSS drift reads, with
    /// its own `link.peer.list` answers (a transient of several MiB for
    /// 1,000 peers).
    fn checkpoints_during(&self) -> u32 {
        let every = self.checkpoint_every().as_nanos();
        let n = self.duration.as_nanos().saturating_sub(every / 2) / every;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// RPC outcomes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RpcTally {
    /// Calls made.
    pub calls: u64,
    /// Answered with the argument echoed.
    pub answered: u64,
    /// Answered with something else.
    pub wrong_answers: u64,
    /// Failed, by error code (all typed: `RPC_DISCONNECT`, `RPC_TIMEOUT`, …).
    pub errors: BTreeMap<String, u64>,
    /// Timed out although caller and callee stayed up for the whole wait.
    pub timed_out_while_up: u64,
    /// With no outcome by the end of the grace period.
    pub no_outcome: u64,
    /// Answered with the argument, but the callee's handler has no record
    /// of the call (the answer did not come from the callee).
    pub answered_unhandled: u64,
    /// Whose outcome (answer or error) came later than the RPC timeout
    /// plus a grace of 5 s.
    pub late: u64,
}

impl RpcTally {
    /// Calls that got no answer they should have had.
    pub fn unanswered(&self) -> u64 {
        self.no_outcome + self.timed_out_while_up
    }
}

/// What a soak run found.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// The hub.
    pub hub: TargetInfo,
    /// The machine.
    pub machine: Machine,
    /// Peers kept connected.
    pub peers: usize,
    /// Of which talk.
    pub talkers: usize,
    /// Churn asked for, peers per second.
    pub churn: f64,
    /// Rate of each kind of traffic, per second.
    pub rate: f64,
    /// Traffic and churn time, seconds.
    pub duration_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Seconds the peers took to connect at the start.
    pub open_s: f64,
    /// Churns done.
    pub churns: u64,
    /// Disconnects we did not cause (the hub closed a peer, or the client
    /// gave up on the socket).
    pub dropped: u64,
    /// Those, by close code and reason.
    pub drop_reasons: BTreeMap<String, u64>,
    /// Publishes and direct sends.
    pub delivery: Delivery,
    /// The duplicates, in bursts per receiver (times since the start).
    pub duplicates: Vec<DuplicateBurst>,
    /// Publishes and sends a client refused, by error code.
    pub send_errors: BTreeMap<String, u64>,
    /// RPCs.
    pub rpcs: RpcTally,
    /// Peer-list checkpoints, the last one after churn stopped.
    pub checkpoints: Vec<ListCheck>,
    /// Hub RSS at the end of warm-up and at the end, bytes.
    pub rss_warm: Option<u64>,
    /// At the end.
    pub rss_end: Option<u64>,
    /// Open descriptors at the end of warm-up.
    pub fds_warm: Option<u64>,
    /// At the end.
    pub fds_end: Option<u64>,
    /// Mean hub CPU over the run, percent of one core.
    pub cpu_mean: Option<f64>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The CSV written.
    pub csv: Option<PathBuf>,
    /// The chart written.
    pub png: Option<PathBuf>,
}

impl SoakReport {
    /// RSS change from the end of warm-up to the end, percent.
    pub fn rss_drift(&self) -> Option<f64> {
        let (w, e) = (self.rss_warm?, self.rss_end?);
        (w > 0).then(|| (e as f64 - w as f64) / w as f64 * 100.0)
    }

    /// Peers whose list stayed wrong at some checkpoint (or did not come
    /// back up to be checked), plus checkpoints where the hub's own list
    /// was wrong.
    pub fn lists_wrong(&self) -> u64 {
        self.checkpoints
            .iter()
            .map(|c| c.wrong_peers + c.not_up + u64::from(c.hub_wrong))
            .sum()
    }

    /// Every check held.
    pub fn pass(&self) -> bool {
        let d = &self.delivery;
        d.lost == 0
            && d.duplicated == 0
            && d.out_of_order == 0
            && self.rpcs.unanswered() == 0
            && self.rpcs.wrong_answers == 0
            && self.dropped == 0
            && self.lists_wrong() == 0
            && self.rss_drift().is_none_or(|x| x <= MAX_RSS_DRIFT_PERCENT)
    }

    /// `soak: PASS|FAIL lost=N duplicated=N unanswered=N rss_drift=X%`, then
    /// the other checks (`out_of_order`, `wrong_answers`, `dropped`,
    /// `lists_wrong`).
    pub fn verdict(&self) -> String {
        let drift = self
            .rss_drift()
            .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.1}%"));
        format!(
            "soak: {} lost={} duplicated={} unanswered={} rss_drift={drift} \
             out_of_order={} wrong_answers={} dropped={} lists_wrong={}",
            if self.pass() { "PASS" } else { "FAIL" },
            self.delivery.lost,
            self.delivery.duplicated,
            self.rpcs.unanswered(),
            self.delivery.out_of_order,
            self.rpcs.wrong_answers,
            self.dropped,
            self.lists_wrong(),
        )
    }

    /// A summary for people (the verdict is not in it).
    pub fn table(&self) -> String {
        let mib = |b: Option<u64>| {
            b.map_or_else(
                || "n/a".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            )
        };
        let n = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let d = &self.delivery;
        let settled: Vec<String> = self
            .checkpoints
            .iter()
            .map(|c| {
                c.settled_in.map_or_else(
                    || "never".to_owned(),
                    |t| format!("{:.1}s", t.as_secs_f64()),
                )
            })
            .collect();
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
        line(
            "hub",
            format!(
                "{} {} ({} cores)",
                self.hub.mode, self.hub.url, self.machine.nproc
            ),
        );
        line(
            "run",
            format!(
                "{} peers ({} talkers), churn {}/s, rate {}/s each, {:.0}s after {:.1}s to connect, warm-up {:.0}s",
                self.peers,
                self.talkers,
                self.churn,
                self.rate,
                self.duration_s,
                self.open_s,
                self.warmup_s
            ),
        );
        traffic_lines(
            &mut line,
            Tally {
                churns: self.churns,
                dropped: self.dropped,
                drop_reasons: &self.drop_reasons,
                delivery: d,
                duplicates: &self.duplicates,
                send_errors: &self.send_errors,
            },
            "",
        );
        let r = &self.rpcs;
        line(
            "rpcs",
            format!(
                "{} calls, {} answered, {} wrong, {} unanswered",
                r.calls,
                r.answered,
                r.wrong_answers,
                r.unanswered()
            ),
        );
        line("  errors", counts(&r.errors));
        line(
            "peer lists",
            format!(
                "{} checkpoints, settled in [{}], {} wrong",
                self.checkpoints.len(),
                settled.join(", "),
                self.lists_wrong()
            ),
        );
        line(
            "hub rss",
            format!(
                "{} after warm-up, {} at the end",
                mib(self.rss_warm),
                mib(self.rss_end)
            ),
        );
        line(
            "hub fds",
            format!(
                "{} after warm-up, {} at the end",
                n(self.fds_warm),
                n(self.fds_end)
            ),
        );
        line(
            "hub cpu",
            self.cpu_mean
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.1}% of a core (mean)")),
        );
        if let Some(p) = &self.csv {
            line("csv", p.display().to_string());
        }
        if let Some(p) = &self.png {
            line("chart", p.display().to_string());
        }
        out
    }
}

/// A small xorshift generator: churn victims, recipients and the chaos
/// schedule need no more.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock.
    pub(crate) fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::with_seed(nanos)
    }

    /// A given seed (the same seed, the same sequence).
    pub(crate) fn with_seed(seed: u64) -> Self {
        // splitmix64 once, so that small seeds do not start near zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    /// A slot other than `not` among `n` (n ≥ 2).
    pub(crate) fn other(&mut self, n: usize, not: usize) -> usize {
        (not + 1 + self.below(n - 1)) % n
    }
}

/// Runs a soak against the hub `hub` and reports; the verdict is
/// [`SoakReport::pass`].
pub async fn run(
    opts: &SoakOptions,
    hub: &HubSpec,
    progress: &Progress,
) -> Result<SoakReport, BenchError> {
    opts.validate()?;
    let ends = if matches!(hub, HubSpec::Embedded) {
        2
    } else {
        1
    };
    ensure_open_files(opts.peers as u64 * ends + SPARE_FILES)?;
    let target = HubTarget::start(hub, opts.peer_updates, opts.tls, None).await?;
    let result = soak(opts, &target, progress).await;
    target.stop().await;
    let mut report = result?;
    if let Some(dir) = &opts.out {
        write_files(&mut report, dir, opts.warmup())?;
    }
    Ok(report)
}

fn write_files(report: &mut SoakReport, dir: &Path, warmup: Duration) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let csv = dir.join("soak.csv");
    std::fs::write(&csv, samples::csv(&report.samples))
        .map_err(|e| BenchError::io(format!("writing {}", csv.display()), e))?;
    let png = dir.join("soak.png");
    let warm_secs = report.open_s + warmup.as_secs_f64();
    samples::chart(&report.samples, warm_secs, &png)?;
    report.csv = Some(csv);
    report.png = Some(png);
    Ok(())
}

/// Counters the traffic task keeps.
#[derive(Default)]
pub(crate) struct Traffic {
    rpcs: Mutex<RpcTally>,
    pub(crate) in_flight: AtomicU64,
    rpcs_done: AtomicU64,
    pub(crate) send_errors: Mutex<BTreeMap<String, u64>>,
}

impl Traffic {
    fn refused(&self, e: &LinkError) {
        *self
            .send_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(e.code().to_owned())
            .or_default() += 1;
    }

    pub(crate) fn rpcs(&self) -> std::sync::MutexGuard<'_, RpcTally> {
        self.rpcs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn soak(
    opts: &SoakOptions,
    target: &HubTarget,
    progress: &Progress,
) -> Result<SoakReport, BenchError> {
    // Unique to this run, so that a reused hub keeps runs apart.
    let tag = format!(
        "{:x}-{:x}",
        std::process::id(),
        Rng::seeded().0 & 0xffff_ffff
    );
    let opening = Instant::now();
    let fleet = Fleet::open(
        &Endpoints::single(target),
        &tag,
        opts.peers,
        opts.talkers,
        opts.drain,
        RPC_TIMEOUT,
        opts.open_timeout,
    )
    .await?;
    let open_s = opening.elapsed().as_secs_f64();
    let result = drive(opts, target, progress, &fleet, open_s).await;
    fleet.close().await;
    result
}

async fn drive(
    opts: &SoakOptions,
    target: &HubTarget,
    progress: &Progress,
    fleet: &Arc<Fleet>,
    open_s: f64,
) -> Result<SoakReport, BenchError> {
    let lists = target.peer_updates() != PeerUpdates::Off;
    let paused = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let churner = (opts.churn > 0.0).then(|| {
        tokio::spawn(churn(
            fleet.clone(),
            paused.clone(),
            opts.churn,
            opts.downtime,
        ))
    });
    let talker = tokio::spawn(talk(
        fleet.clone(),
        traffic.clone(),
        opts.rate,
        opts.talkers,
        RPC_TIMEOUT,
    ));
    let checkpoints = Arc::new(Mutex::new(Vec::new()));
    let checker = lists.then(|| {
        let (fleet, paused, checkpoints) = (fleet.clone(), paused.clone(), checkpoints.clone());
        let (every, during) = (opts.checkpoint_every(), opts.checkpoints_during());
        let begin = tokio::time::Instant::now();
        tokio::spawn(async move {
            for k in 1..=during {
                tokio::time::sleep_until(begin + every * k).await;
                let check = checkpoint(&fleet, &paused).await;
                checkpoints
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(check);
            }
        })
    });

    // Sample until the duration is over.
    let bar = progress.bar("soak seconds", opts.duration.as_secs());
    let mut sampler = Sampler::new(target.pid(), target.cpu_pids().first().copied());
    let start = Instant::now();
    let warmup = opts.warmup();
    let mut samples = Vec::new();
    let mut warm: Option<Sample> = None;
    let mut tick = tokio::time::interval(opts.sample_every());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let take = |sampler: &mut Sampler| {
        let mut s = sampler.sample(open_s + start.elapsed().as_secs_f64());
        s.connected = fleet.connected();
        let d = fleet.books.lock().counts();
        (s.sent, s.received) = d;
        s.rpcs = traffic.rpcs_done.load(Ordering::Relaxed);
        s
    };
    loop {
        tick.tick().await;
        let s = take(&mut sampler);
        samples.push(s);
        bar.set(start.elapsed().as_secs());
        if warm.is_none() && start.elapsed() >= warmup {
            warm = Some(s);
        }
        if start.elapsed() >= opts.duration {
            break;
        }
    }
    drop(bar);
    let end = samples.last().copied();

    // Churn stops; everyone comes back; the lists must settle.
    if let Some(c) = churner {
        c.abort();
    }
    if let Some(c) = checker {
        c.abort();
    }
    paused.store(true, Ordering::Release);
    let mut checkpoints =
        std::mem::take(&mut *checkpoints.lock().unwrap_or_else(PoisonError::into_inner));
    if lists {
        checkpoints.push(checkpoint(fleet, &paused).await);
    } else {
        // Still wait for the churned peers to return before the books close.
        fleet.all_up(SETTLE).await;
    }

    // Traffic stops; what is in flight gets the drain window, RPCs their
    // timeout on top.
    talker.abort();
    let _ = talker.await;
    tokio::time::sleep(opts.drain).await;
    let grace = Instant::now() + RPC_TIMEOUT + opts.drain;
    while traffic.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.push(take(&mut sampler));
    let (delivery, duplicates) = {
        let books = fleet.books.lock();
        (books.delivery(), books.duplicate_bursts(0))
    };
    let mut rpcs = traffic.rpcs().clone();
    rpcs.no_outcome = traffic.in_flight.load(Ordering::Acquire);
    let send_errors = traffic
        .send_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu).collect();
    Ok(SoakReport {
        hub: target.info(),
        machine: Machine::current(),
        peers: opts.peers,
        talkers: opts.talkers,
        churn: opts.churn,
        rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        open_s,
        churns: fleet.churns.load(Ordering::Relaxed),
        dropped: fleet.dropped.load(Ordering::Relaxed),
        drop_reasons: fleet
            .drop_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        delivery,
        duplicates,
        send_errors,
        rpcs,
        checkpoints,
        rss_warm: warm.and_then(|s| s.rss),
        rss_end: end.and_then(|s| s.rss),
        fds_warm: warm.and_then(|s| s.fds),
        fds_end: end.and_then(|s| s.fds),
        cpu_mean: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
        samples,
        csv: None,
        png: None,
    })
}

/// Pauses churn, waits for every peer to be back, checks the lists, resumes.
async fn checkpoint(fleet: &Fleet, paused: &AtomicBool) -> ListCheck {
    let was = paused.swap(true, Ordering::AcqRel);
    let check = if fleet.all_up(SETTLE).await {
        fleet.check_lists(SETTLE).await
    } else {
        ListCheck {
            not_up: (0..fleet.kinds.len()).filter(|&s| !fleet.up(s)).count() as u64,
            ..ListCheck::default()
        }
    };
    paused.store(was, Ordering::Release);
    check
}

/// Churns `per_sec` random peers a second while not paused.
pub(crate) async fn churn(
    fleet: Arc<Fleet>,
    paused: Arc<AtomicBool>,
    per_sec: f64,
    down: Duration,
) {
    let mut rng = Rng::seeded();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let n = fleet.kinds.len();
    loop {
        tick.tick().await;
        if paused.load(Ordering::Acquire) {
            continue;
        }
        let slot = rng.below(n);
        let f = fleet.clone();
        tokio::spawn(async move { f.churn(slot, down).await });
    }
}

/// Every 1/rate s: one publish, one direct send and one RPC, from the next
/// talker that is up. An RPC answered with its argument is checked against
/// the callee's record of the calls it ran (`answered_unhandled`); one
/// whose outcome comes after `rpc_timeout` + [`LATE_GRACE`] is `late`.
pub(crate) async fn talk(
    fleet: Arc<Fleet>,
    traffic: Arc<Traffic>,
    rate: f64,
    talkers: usize,
    rpc_timeout: Duration,
) {
    let mut rng = Rng::seeded();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let n = fleet.kinds.len();
    let mut next = 0usize;
    let mut call = 0u64;
    loop {
        tick.tick().await;
        let Some(t) = (0..talkers)
            .map(|i| (next + i) % talkers)
            .find(|&t| fleet.up(t))
        else {
            continue;
        };
        next = t + 1;
        let client = &fleet.clients[t];
        // Publish.
        let taken = fleet.books.lock().next_seq(t, Flow::Publish);
        if let Some((seq, epoch)) = taken {
            let at = fleet.now();
            match client.publish(&fleet.topic, Mark::value(t, epoch, seq)) {
                Ok(()) => fleet
                    .books
                    .lock()
                    .sent(t, Flow::Publish, seq, epoch, at, None),
                Err(e) => traffic.refused(&e),
            }
        }
        // Direct send.
        let to = rng.other(n, t);
        let taken = fleet.books.lock().next_seq(t, Flow::Direct);
        if let Some((seq, epoch)) = taken {
            let at = fleet.now();
            match client.send(&fleet.kinds[to], DIRECT, Some(Mark::value(t, epoch, seq))) {
                Ok(()) => fleet
                    .books
                    .lock()
                    .sent(t, Flow::Direct, seq, epoch, at, Some(to)),
                Err(e) => traffic.refused(&e),
            }
        }
        // RPC.
        let callee = rng.other(n, t);
        call += 1;
        traffic.rpcs().calls += 1;
        traffic.in_flight.fetch_add(1, Ordering::AcqRel);
        let (fleet, traffic) = (fleet.clone(), traffic.clone());
        tokio::spawn(async move {
            let arg = json!({ "n": call });
            let at = fleet.now();
            let started = Instant::now();
            let got = fleet.clients[t]
                .rpc(&fleet.kinds[callee], ECHO, Some(arg.clone()))
                .await;
            {
                let mut r = traffic.rpcs();
                if started.elapsed() > rpc_timeout + LATE_GRACE {
                    r.late += 1;
                }
                match got {
                    Ok(v) if v == arg => {
                        r.answered += 1;
                        if !fleet.handled.by(call, callee) {
                            r.answered_unhandled += 1;
                        }
                    }
                    Ok(_) => r.wrong_answers += 1,
                    Err(e) => {
                        if matches!(e, LinkError::RpcTimeout { .. }) {
                            let until = at + rpc_timeout.as_micros() as u64;
                            let books = fleet.books.lock();
                            if books.stayed_up(t, at, until) && books.stayed_up(callee, at, until) {
                                r.timed_out_while_up += 1;
                            }
                        }
                        *r.errors.entry(e.code().to_owned()).or_default() += 1;
                    }
                }
            }
            traffic.rpcs_done.fetch_add(1, Ordering::Relaxed);
            traffic.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// `k=v k=v` in key order, or `none`.
pub(crate) fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "none".to_owned()
    } else {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a run's churn and messages came to, for its summary.
pub(crate) struct Tally<'a> {
    pub(crate) churns: u64,
    pub(crate) dropped: u64,
    pub(crate) drop_reasons: &'a BTreeMap<String, u64>,
    pub(crate) delivery: &'a Delivery,
    pub(crate) duplicates: &'a [DuplicateBurst],
    pub(crate) send_errors: &'a BTreeMap<String, u64>,
}

/// Bursts of duplicates the summary lists (the report holds them all).
const LISTED_BURSTS: usize = 12;

/// The summary's churn and message lines (the soak's and the chaos run's);
/// `rule` follows "had to arrive".
pub(crate) fn traffic_lines(line: &mut impl FnMut(&str, String), t: Tally<'_>, rule: &str) {
    line(
        "churn",
        format!(
            "{} reconnects, {} disconnects we did not cause",
            t.churns, t.dropped
        ),
    );
    if !t.drop_reasons.is_empty() {
        line("  close codes", counts(t.drop_reasons));
    }
    let d = t.delivery;
    line(
        "messages",
        format!(
            "{} sent, {} deliveries received, {} had to arrive{rule}",
            d.sent, d.received, d.must_arrive
        ),
    );
    line(
        "  lost/dup/ooo",
        format!("{} / {} / {}", d.lost, d.duplicated, d.out_of_order),
    );
    line("  refused", counts(t.send_errors));
    for b in t.duplicates.iter().take(LISTED_BURSTS) {
        line("  duplicates", burst_line(b));
    }
    if t.duplicates.len() > LISTED_BURSTS {
        line(
            "",
            format!("and {} more bursts", t.duplicates.len() - LISTED_BURSTS),
        );
    }
}

/// `p62: 247 (247 topic) from 10 talkers at 120.3-145.2s; on #3 hub 1
/// 40.1-130.2s: 100, #4 hub 2 131.0s-: 147; <note>`.
fn burst_line(b: &DuplicateBurst) -> String {
    let sessions: Vec<String> = b
        .sessions
        .iter()
        .map(|s| {
            let hub = s.hub.map_or_else(|| "?".to_owned(), |h| h.to_string());
            let end = s.end_s.map_or_else(String::new, |e| format!("{e:.1}"));
            format!(
                "#{} hub {hub} {:.1}-{end}s: {}",
                s.epoch, s.start_s, s.duplicates
            )
        })
        .collect();
    let mut text = format!(
        "p{}: {} ({} topic) from {} talkers at {:.1}-{:.1}s; on {}",
        b.receiver,
        b.count,
        b.publishes,
        b.talkers,
        b.first_s,
        b.last_s,
        if sessions.is_empty() {
            "no session".to_owned()
        } else {
            sessions.join(", ")
        }
    );
    if let Some(note) = &b.note {
        text.push_str("; ");
        text.push_str(note);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_by_name() {
        let ok = SoakOptions::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.warmup(), Duration::from_secs(6));
        let named = |o: SoakOptions| match o.validate() {
            Err(BenchError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            named(SoakOptions {
                peers: 1,
                ..ok.clone()
            }),
            "peers"
        );
        assert_eq!(
            named(SoakOptions {
                talkers: 101,
                ..ok.clone()
            }),
            "talkers"
        );
        assert_eq!(
            named(SoakOptions {
                churn: f64::NAN,
                ..ok.clone()
            }),
            "churn"
        );
        assert_eq!(
            named(SoakOptions {
                rate: 0.0,
                ..ok.clone()
            }),
            "rate"
        );
        assert_eq!(
            named(SoakOptions {
                warmup: Some(Duration::from_secs(60)),
                ..ok.clone()
            }),
            "warmup"
        );
        // One hour: 6 min of warm-up, a sample every 6 s, checkpoints every 10 min.
        let hour = SoakOptions {
            duration: Duration::from_secs(3600),
            ..ok
        };
        assert_eq!(hour.warmup(), Duration::from_secs(360));
        assert_eq!(hour.sample_every(), Duration::from_secs(6));
        assert_eq!(hour.checkpoint_every(), Duration::from_secs(600));
        // At 10, 20, …, 50 min; the one at 60 min is the end's, after churn.
        assert_eq!(hour.checkpoints_during(), 5);
        let short = |secs| SoakOptions {
            duration: Duration::from_secs(secs),
            ..hour.clone()
        };
        // 60 s (CI): at 10 … 50 s; 20 s: every 5 s (the floor), at 5, 10, 15 s;
        // 61 s: at 10.2 … 50.8 s (the sixth would be due a few ns before
        // the end); 5 s and 7 s: none before the end's.
        assert_eq!(short(60).checkpoints_during(), 5);
        assert_eq!(short(20).checkpoints_during(), 3);
        assert_eq!(short(61).checkpoints_during(), 5);
        assert_eq!(short(5).checkpoints_during(), 0);
        assert_eq!(short(7).checkpoints_during(), 0);
        assert_eq!(short(8).checkpoints_during(), 1);
    }

    fn report() -> SoakReport {
        SoakReport {
            hub: TargetInfo {
                mode: "child",
                url: "ws://127.0.0.1:1".into(),
                cluster: None,
            },
            machine: Machine::current(),
            peers: 10,
            talkers: 2,
            churn: 1.0,
            rate: 5.0,
            duration_s: 60.0,
            warmup_s: 6.0,
            open_s: 1.0,
            churns: 50,
            dropped: 0,
            drop_reasons: BTreeMap::new(),
            delivery: Delivery::default(),
            duplicates: Vec::new(),
            send_errors: BTreeMap::new(),
            rpcs: RpcTally::default(),
            checkpoints: vec![ListCheck::default()],
            rss_warm: Some(100_000_000),
            rss_end: Some(105_000_000),
            fds_warm: Some(20),
            fds_end: Some(20),
            cpu_mean: Some(3.0),
            samples: Vec::new(),
            csv: None,
            png: None,
        }
    }

    #[test]
    fn the_verdict_passes_only_when_every_check_holds() {
        let r = report();
        assert!(r.pass());
        assert_eq!(
            r.verdict(),
            "soak: PASS lost=0 duplicated=0 unanswered=0 rss_drift=5.0% \
             out_of_order=0 wrong_answers=0 dropped=0 lists_wrong=0"
        );
        let fails: [fn(&mut SoakReport); 9] = [
            |r| r.delivery.lost = 1,
            |r| r.delivery.duplicated = 1,
            |r| r.delivery.out_of_order = 1,
            |r| r.rpcs.no_outcome = 1,
            |r| r.rpcs.timed_out_while_up = 1,
            |r| r.rpcs.wrong_answers = 1,
            |r| r.dropped = 1,
            |r| r.checkpoints[0].wrong_peers = 1,
            |r| r.rss_end = Some(105_000_001),
        ];
        for (i, f) in fails.iter().enumerate() {
            let mut r = report();
            f(&mut r);
            assert!(!r.pass(), "case {i}");
            assert!(r.verdict().starts_with("soak: FAIL "), "case {i}");
        }
        let mut r = report();
        r.dropped = 2;
        r.drop_reasons.insert("1006:keepalive timeout".into(), 2);
        assert!(
            r.table()
                .lines()
                .any(|l| l.starts_with("  close codes") && l.ends_with(" 1006:keepalive timeout=2"))
        );
        r = report();
        r.rpcs.no_outcome = 2;
        r.rpcs.timed_out_while_up = 1;
        assert!(r.verdict().contains(" unanswered=3 "));
        // Memory that shrinks is no drift failure; unknown memory is n/a.
        r = report();
        r.rss_end = Some(50_000_000);
        assert!(r.pass());
        r.rss_end = None;
        assert!(r.pass() && r.verdict().contains("rss_drift=n/a"));
    }

    #[test]
    fn the_rng_picks_another_slot_in_range() {
        let mut rng = Rng::seeded();
        for _ in 0..1000 {
            let o = rng.other(5, 3);
            assert!(o < 5 && o != 3);
        }
    }
}
