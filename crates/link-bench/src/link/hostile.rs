//! `hostile`: attacks on the hub, one after another, each bounded by one
//! of its limits (docs/reliability.md, *Hostile clients*).
//!
//! ```text
//!  quiet: good RPCs alone ─► p99 (the reference), hub RSS
//!  per attack: attack ║ good RPCs ║ RSS sampler ─► peak RSS vs ceiling,
//!                                                  p99 vs quiet (≤ 2x)
//! ```
//!
//! The good peers are a caller and an echo responder (`LinkClient`s)
//! making sequential RPCs for as long as the attack runs, on a runtime of
//! their own (a thread: as in a process of their own). The hub's RSS is
//! sampled every 20 ms; it is the whole hub process only with `--child`
//! (or `--hub-pid`): an embedded hub shares this process with the
//! attackers. Each attack reports PASS when the peak stayed under its
//! ceiling and the p99 within 2x of the quiet run. The attackers run in
//! this process, on the same cores as the hub and the good peers: their
//! own CPU is part of what the good peers feel, unless `--attackers-nice`
//! runs them on threads of their own at a lower CPU priority (19: only
//! the CPU the hub and the good peers leave, as on machines of their own).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use futures_util::{FutureExt, SinkExt};
use link_client::LinkClient;
use link_protocol::{CanonicalData, messages, msg_type};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::raw::{self, Ws};
use super::{ECHO, peer, peer_config, ready_peer};
use crate::context::Ctx;
use crate::error::BenchError;
use crate::options::Scenario;
use crate::report::{Metric, Outcome, System};
use crate::stats::Latencies;
use crate::sys::rss_bytes;
use crate::target::HubTarget;

/// Sockets the largest attack opens at once (for the open-files limit).
pub(crate) const HOSTILE_SOCKETS: u64 = 10_000 + 512;

/// How long a continuous attack (dribbling, flooding) runs.
const PHASE: Duration = Duration::from_secs(3);
/// Good RPCs made at least during an attack.
const MIN_RPCS: u64 = 200;
/// RSS sampling period.
const RSS_EVERY: Duration = Duration::from_millis(20);
/// Good peers' p99 during an attack may be this many times the quiet one.
const P99_FACTOR: f64 = 2.0;
/// Connections opened at once by the socket attacks.
const OPEN_AT_ONCE: usize = 128;

/// One attack: its name, what it does, and its RSS ceiling.
#[derive(Clone, Copy)]
struct Attack {
    name: &'static str,
    what: &'static str,
    ceiling_mib: u64,
}

/// In the order they run; the ceilings are the whole hub's RSS during the
/// attack (after the attacks before it), from the limits that bound it
/// (docs/reliability.md).
const ATTACKS: [Attack; 8] = [
    Attack {
        name: "slow-upgrade",
        what: "2000 sockets dribbling an upgrade request, one byte per 50 ms",
        ceiling_mib: 128,
    },
    Attack {
        name: "silent-tcp",
        what: "10000 TCP sockets that never send a byte",
        ceiling_mib: 128,
    },
    Attack {
        name: "bad-signatures",
        what: "4 peers sending frames with a wrong signature as fast as they can",
        ceiling_mib: 128,
    },
    Attack {
        name: "oversized",
        what: "500 peers each sending one frame 1 KiB over max_message_bytes",
        ceiling_mib: 128,
    },
    Attack {
        name: "nested",
        what: "4 peers sending 500 frames each of 100000 `[`",
        ceiling_mib: 128,
    },
    Attack {
        name: "subscriptions",
        what: "one peer subscribing to up to 100000 topics for 3 s",
        ceiling_mib: 160,
    },
    Attack {
        name: "no-hello",
        what: "10000 WebSockets that never say hello",
        ceiling_mib: 256,
    },
    Attack {
        name: "half-open",
        what: "50 peers that subscribe, then stop reading and never close, under a publisher at full speed",
        ceiling_mib: 512,
    },
];

/// Every attack's name, in the order they run (`--attacks`).
pub(crate) fn attack_names() -> impl Iterator<Item = &'static str> {
    ATTACKS.iter().map(|a| a.name)
}

/// What an attack observed of the hub's answer.
#[derive(Default)]
struct Seen {
    /// Attacking sockets (or frames) sent.
    sent: u64,
    /// Of them, closed or refused by the hub.
    closed: u64,
    /// A note on the bound that held.
    note: String,
}

pub(super) async fn run(ctx: &Ctx<'_>, hub: &HubTarget) -> Result<Vec<Outcome>, BenchError> {
    let sc = Scenario::Hostile;
    let side = GoodSide::start()?;
    let echo_kind = ctx.name("hostile-echo");
    let echo = side
        .run(ready_peer(peer_config(hub, 0, sc, &echo_kind, true)?, sc))
        .await??;
    let caller = side
        .run(ready_peer(
            peer_config(hub, 0, sc, &ctx.name("hostile-caller"), false)?,
            sc,
        ))
        .await??;
    let good = Good {
        side: &side,
        caller: caller.clone(),
        echo: echo_kind.into(),
        payload: ctx.payload.clone(),
    };
    let pid = hub.pid();
    // Quiet: the reference p99.
    good.calls(100).await?;
    let rss = Rss::start(pid);
    let quiet = good.calls(ctx.opts.count_for(sc)).await?;
    let quiet_rss = rss.stop().await;
    let quiet_p99 = quiet.summary().p99_us;
    let mut out = Vec::with_capacity(ATTACKS.len() + 1);
    let mut q = Outcome::new("hostile quiet", System::Link, quiet.len());
    q.completed = quiet.len();
    q.metrics.push(Metric::lower("p99 µs", quiet_p99));
    q.metrics
        .push(Metric::lower("peak RSS MiB", mib(quiet_rss.unwrap_or(0))));
    out.push(q);
    let chosen =
        |a: &Attack| ctx.opts.attacks.is_empty() || ctx.opts.attacks.iter().any(|n| n == a.name);
    for &attack in ATTACKS.iter().filter(|a| chosen(a)) {
        let bar = ctx
            .progress
            .bar(&format!("link hostile {}", attack.name), 1);
        let rss = Rss::start(pid);
        let done = Arc::new(AtomicBool::new(false));
        let attacking = async {
            let seen = match ctx.opts.attackers_nice {
                0 => attack_run(attack.name, hub, ctx).await,
                nice => attack_niced(nice, attack.name, hub, ctx),
            };
            done.store(true, Ordering::Release);
            seen
        };
        let during = good.calls_until(done.clone());
        let (seen, during) = tokio::join!(attacking, during);
        let peak = rss.stop().await;
        drop(bar);
        let seen = seen?;
        let during = during?;
        out.push(verdict(attack, &seen, &during, quiet_p99, peak));
    }
    side.run(async move {
        caller.stop().await;
        echo.stop().await;
    })
    .await?;
    side.stop().await;
    Ok(out)
}

/// Runs one attack on a runtime of its own whose threads (and the one
/// that drives it) run at `nice`: the attackers then get the CPU the hub
/// and the good peers leave. Blocks this task's thread meanwhile (the
/// good peers run on theirs, the RSS sampler on this runtime's others).
fn attack_niced(nice: i32, name: &str, hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("hostile-attack")
        .on_thread_start(move || {
            if let Err(e) = lower_priority(nice) {
                eprintln!("hostile: cannot lower an attacker thread's priority: {e}");
            }
        })
        .enable_all()
        .build()
        .map_err(|e| fail(format!("the attackers' runtime: {e}")))?;
    let seen = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("hostile-attack".into())
                .spawn_scoped(scope, || {
                    lower_priority(nice)
                        .map_err(|e| fail(format!("the attackers' priority: {e}")))?;
                    rt.block_on(attack_run(name, hub, ctx))
                })
                .map_err(|e| fail(format!("the attackers' thread: {e}")))?
                .join()
                .map_err(|_| fail("the attackers' thread panicked"))?
        })
    });
    rt.shutdown_background();
    seen
}

/// Lowers this thread's CPU priority to `nice` (Linux: per thread).
fn lower_priority(nice: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
        .map_err(std::io::Error::from)
}

/// The good peers' own runtime, on a thread of its own, as they would have
/// in a process of their own: the attackers' tasks run on this process's
/// runtime and cannot hold the good peers' tasks up in a run queue. The
/// cores are still shared (the OS schedules both threads and the hub).
struct GoodSide {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl GoodSide {
    fn start() -> Result<Self, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("the good peers' runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hostile-good".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| fail(format!("the good peers' thread: {e}")))?;
        Ok(Self {
            handle,
            stop,
            thread,
        })
    }

    /// Runs `f` on the good peers' runtime: it starts now, not when the
    /// returned future is first polled.
    fn run<F>(&self, f: F) -> impl Future<Output = Result<F::Output, BenchError>> + use<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.handle.spawn(f);
        async move {
            task.await
                .map_err(|e| fail(format!("a good peer's task: {e}")))
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn verdict(
    attack: Attack,
    seen: &Seen,
    during: &Latencies,
    quiet_p99: f64,
    peak: Option<u64>,
) -> Outcome {
    let p99 = during.summary().p99_us;
    let ratio = if quiet_p99 > 0.0 {
        p99 / quiet_p99
    } else {
        0.0
    };
    let mut o = Outcome::new(format!("hostile {}", attack.name), System::Link, seen.sent);
    o.completed = seen.closed;
    o.metrics.push(Metric::lower("p99 µs", p99));
    o.metrics.push(Metric::lower("p99 x quiet", ratio));
    let rss_ok = match peak {
        Some(peak) => {
            o.metrics.push(Metric::lower("peak RSS MiB", mib(peak)));
            mib(peak) <= attack.ceiling_mib as f64
        }
        None => true,
    };
    o.metrics
        .push(Metric::lower("RSS ceiling MiB", attack.ceiling_mib as f64));
    o.metrics
        .push(Metric::higher("good RPCs", during.len() as f64));
    o.metrics
        .push(Metric::higher("attack units", seen.sent as f64));
    if seen.closed > 0 {
        o.metrics
            .push(Metric::higher("closed or refused", seen.closed as f64));
    }
    let p99_ok = ratio <= P99_FACTOR;
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    o.notes.push(format!(
        "{}: {} — {}; RSS {} (peak {} ≤ {} MiB), p99 {} ({ratio:.2}x quiet ≤ {P99_FACTOR}x)",
        attack.name,
        attack.what,
        seen.note,
        pass(rss_ok),
        peak.map_or_else(|| "unknown".to_owned(), |p| format!("{:.0}", mib(p))),
        attack.ceiling_mib,
        pass(p99_ok),
    ));
    o
}

/// The good peers: sequential echo RPCs, made on their own runtime.
struct Good<'a> {
    side: &'a GoodSide,
    caller: LinkClient,
    echo: Arc<str>,
    payload: Value,
}

impl Good<'_> {
    async fn calls(&self, n: u64) -> Result<Latencies, BenchError> {
        let (caller, echo, payload) =
            (self.caller.clone(), self.echo.clone(), self.payload.clone());
        self.side
            .run(async move {
                let mut lat = Latencies::new();
                for _ in 0..n {
                    lat.record(call(&caller, &echo, &payload).await?);
                }
                Ok(lat)
            })
            .await?
    }

    /// Calls until `done` and at least [`MIN_RPCS`] times, starting now
    /// (an attack that blocks its thread cannot hold the calls back).
    fn calls_until(
        &self,
        done: Arc<AtomicBool>,
    ) -> impl Future<Output = Result<Latencies, BenchError>> + use<> {
        let (caller, echo, payload) =
            (self.caller.clone(), self.echo.clone(), self.payload.clone());
        let task = self.side.run(async move {
            let mut lat = Latencies::new();
            while !done.load(Ordering::Acquire) || lat.len() < MIN_RPCS {
                lat.record(call(&caller, &echo, &payload).await?);
            }
            Ok(lat)
        });
        async move { task.await? }
    }
}

async fn call(caller: &LinkClient, echo: &str, payload: &Value) -> Result<Duration, BenchError> {
    let t = Instant::now();
    caller
        .rpc(echo, ECHO, Some(payload.clone()))
        .await
        .map_err(|e| BenchError::op(Scenario::Hostile.as_str(), e))?;
    Ok(t.elapsed())
}

/// The hub's peak RSS while it runs.
struct Rss {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<u64>>,
}

impl Rss {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = pid.map(|pid| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut peak = 0;
                let mut tick = tokio::time::interval(RSS_EVERY);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    peak = peak.max(rss_bytes(pid).unwrap_or(0));
                }
                peak
            })
        });
        Self { stop, task }
    }

    async fn stop(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task {
            Some(t) => t.await.ok().filter(|&p| p > 0),
            None => None,
        }
    }
}

async fn attack_run(name: &str, hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    match name {
        "slow-upgrade" => slow_upgrade(hub).await,
        "silent-tcp" => silent_tcp(hub).await,
        "bad-signatures" => bad_signatures(hub, ctx).await,
        "oversized" => oversized(hub, ctx).await,
        "nested" => nested(hub, ctx).await,
        "subscriptions" => subscriptions(hub, ctx).await,
        "no-hello" => no_hello(hub).await,
        _ => half_open(hub, ctx).await,
    }
}

fn fail(what: impl std::fmt::Display) -> BenchError {
    BenchError::op(Scenario::Hostile.as_str(), what)
}

/// `host:port` of the hub's URL.
fn authority(hub: &HubTarget) -> Result<String, BenchError> {
    let rest = hub
        .url()
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| fail("the hub URL has no scheme"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

/// Reads until the hub closes the connection (or `stop`); true when the hub closed it.
async fn closed_by_hub(tcp: &mut TcpStream, stop: &AtomicBool) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) if stop.load(Ordering::Relaxed) => return false,
            Err(_) => {}
        }
    }
}

async fn slow_upgrade(hub: &HubTarget) -> Result<Seen, BenchError> {
    const N: usize = 2000;
    let addr = authority(hub)?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| fail(format!("slow-upgrade connect: {e}")))?;
        let (stop, closed, request) = (stop.clone(), closed.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut rd, mut wr) = tcp.into_split();
            let dribble = async {
                for b in request.bytes() {
                    if stop.load(Ordering::Relaxed) || wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let mut buf = [0u8; 256];
            tokio::select! {
                () = dribble => {}
                r = rd.read(&mut buf) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    hold_then_stop(PHASE, &stop, tasks).await;
    let closed = closed.load(Ordering::Relaxed);
    Ok(Seen {
        sent: N as u64,
        closed,
        note: format!(
            "{closed} of {N} closed by the hub (max_http_connections: the oldest go; \
             handshake_timeout closes the rest)"
        ),
    })
}

async fn silent_tcp(hub: &HubTarget) -> Result<Seen, BenchError> {
    const N: usize = 10_000;
    let addr = authority(hub)?;
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let sockets: Vec<_> = stream::iter(0..N)
        .map(|_| TcpStream::connect(addr.as_str()))
        .buffered(OPEN_AT_ONCE)
        .collect()
        .await;
    let mut tasks = Vec::with_capacity(N);
    for tcp in sockets {
        let mut tcp = tcp.map_err(|e| fail(format!("silent-tcp connect: {e}")))?;
        let (stop, closed) = (stop.clone(), closed.clone());
        tasks.push(tokio::spawn(async move {
            if closed_by_hub(&mut tcp, &stop).await {
                closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    hold_then_stop(Duration::from_millis(500), &stop, tasks).await;
    let closed = closed.load(Ordering::Relaxed);
    Ok(Seen {
        sent: N as u64,
        closed,
        note: format!("{closed} of {N} closed by the hub (max_http_connections, oldest first)"),
    })
}

/// A raw authenticated peer, or the error as a bench failure.
async fn authenticated(hub: &HubTarget, kind: &str) -> Result<raw::RawPeer, BenchError> {
    raw::hello(hub, 0, kind).await.map_err(fail)
}

/// `frame` with the last digit of its signature changed.
fn bad_signature(frame: &str) -> String {
    let mut bytes = frame.as_bytes().to_vec();
    // The frame ends with `"sig":"<hex>"}`.
    if let Some(i) = bytes.len().checked_sub(3) {
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
    }
    String::from_utf8(bytes).unwrap_or_default()
}

async fn bad_signatures(hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    const PEERS: usize = 4;
    let deadline = Instant::now() + PHASE;
    let mut flooders = Vec::with_capacity(PEERS);
    for i in 0..PEERS {
        let mut p = authenticated(hub, &ctx.name(&format!("badsig{i}"))).await?;
        let data = CanonicalData::new(&json!({ "status": { "load": 1 } }));
        let (_, frame) = p
            .conn
            .encode(raw::now(), msg_type::STATUS_UPDATE, None, Some(&data));
        let bad = bad_signature(&frame);
        flooders.push(async move {
            let mut sent = 0u64;
            // Until the deadline, even when the hub has stopped reading
            // this socket (its frames are over their pace): then the
            // attacker walks away without a close handshake.
            let flood = async {
                loop {
                    for _ in 0..64 {
                        if p.ws.feed(Message::text(bad.clone())).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                    if p.ws.flush().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), flood).await;
            sent
        });
    }
    let sent: u64 = futures_util::future::join_all(flooders)
        .await
        .into_iter()
        .sum();
    Ok(Seen {
        sent,
        closed: 0,
        note: format!(
            "{sent} bad-signature frames dropped one by one (no socket closed; each costs a parse \
             and an HMAC)"
        ),
    })
}

/// Reads until the close frame; its code (1006 when none came).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return u16::from(f.code),
            Ok(Some(Ok(Message::Close(None)))) => return 1005,
            Ok(Some(Ok(_))) => {}
            _ => return 1006,
        }
    }
}

async fn oversized(hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    const N: usize = 500;
    let big = "x".repeat(link_protocol::envelope::DEFAULT_MAX_MESSAGE_BYTES + 1024);
    let codes: Vec<Result<u16, BenchError>> = stream::iter(0..N)
        .map(|i| {
            let big = big.clone();
            async move {
                let mut p = authenticated(hub, &ctx.name(&format!("big{i}"))).await?;
                let _ = p.ws.send(Message::text(big)).await;
                Ok(close_code(&mut p.ws).await)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (mut closed, mut too_big) = (0, 0);
    for c in codes {
        match c? {
            1009 => too_big += 1,
            // Closed with the rest of the frame unread: a reset, no close frame.
            1006 => {}
            _ => continue,
        }
        closed += 1;
    }
    Ok(Seen {
        sent: N as u64,
        closed,
        note: format!(
            "{closed} of {N} closed by the hub, {too_big} of them with a 1009 frame (the others \
             saw the reset of a socket closed with the frame's rest unread); max_message_bytes, \
             in the WebSocket layer"
        ),
    })
}

async fn nested(hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    const PEERS: usize = 4;
    const FRAMES: u64 = 500;
    let deep = "[".repeat(100_000);
    let mut senders = Vec::with_capacity(PEERS);
    for i in 0..PEERS {
        let mut p = authenticated(hub, &ctx.name(&format!("nested{i}"))).await?;
        let deep = deep.clone();
        senders.push(async move {
            for _ in 0..FRAMES {
                if p.ws.send(Message::text(deep.clone())).await.is_err() {
                    return Err(fail("a nested-frame sender was disconnected"));
                }
            }
            // Still connected: the hub dropped the frames, not the socket.
            let data = CanonicalData::new(&json!({ "status": 1 }));
            let (_, frame) = p
                .conn
                .encode(raw::now(), msg_type::STATUS_UPDATE, None, Some(&data));
            p.ws.send(Message::text(frame))
                .await
                .map_err(|e| fail(format!("nested: {e}")))?;
            let _ = p.ws.close(None).await;
            Ok(())
        });
    }
    for r in futures_util::future::join_all(senders).await {
        r?;
    }
    let sent = PEERS as u64 * FRAMES;
    Ok(Seen {
        sent,
        closed: 0,
        note: format!(
            "{sent} frames nested 100000 deep dropped as parse-error (serde_json's recursion \
             limit, 128); no socket closed"
        ),
    })
}

async fn subscriptions(hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    const TOPICS: u64 = 100_000;
    let mut p = authenticated(hub, &ctx.name("subscriber")).await?;
    let deadline = Instant::now() + PHASE;
    let mut sent = 0u64;
    // Until every subscribe is written or the deadline: past the cap the
    // hub refuses them and paces the socket's reads, and the attacker walks
    // away with the rest unread.
    let flood = async {
        for i in 0..TOPICS {
            let data = CanonicalData::new(&messages::topic_value(&format!("hostile.t{i}")));
            let (_, frame) =
                p.conn
                    .encode(raw::now(), msg_type::TOPIC_SUBSCRIBE, None, Some(&data));
            p.ws.feed(Message::text(frame))
                .await
                .map_err(|e| fail(format!("subscriptions: {e}")))?;
            sent += 1;
        }
        p.ws.flush()
            .await
            .map_err(|e| fail(format!("subscriptions: {e}")))
    };
    if let Ok(r) = tokio::time::timeout_at(deadline.into(), flood).await {
        r?;
    }
    // What the hub holds, asked by another peer while the attacker is
    // still connected (its topics go with its socket).
    let mut q = authenticated(hub, &ctx.name("subscriber-count")).await?;
    let data = CanonicalData::new(&messages::rpc_request_value("link.health", None::<Value>));
    let (id, frame) = q.conn.encode(
        raw::now(),
        msg_type::RPC_REQUEST,
        Some("server"),
        Some(&data),
    );
    q.ws.send(Message::text(frame))
        .await
        .map_err(|e| fail(format!("subscriptions: {e}")))?;
    let mut topics = None;
    while let Some(Ok(m)) = q.ws.next().await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            if v["id"] == id.as_str() {
                topics = v["data"]["result"]["topicCount"].as_u64();
                break;
            }
        }
    }
    let _ = q.ws.close(None).await;
    drop(p);
    let held = topics.map_or_else(|| "?".to_owned(), |n| n.to_string());
    Ok(Seen {
        sent,
        closed: topics.map_or(0, |n| sent.saturating_sub(n)),
        note: format!(
            "{sent} subscribes sent in {PHASE:?}; the hub holds {held} topics; the rest were \
             refused as subscription-limit (max_subscriptions_per_peer) or left unread when the \
             attacker walked away (its reads paced by max_dropped_frames_per_sec)"
        ),
    })
}

async fn no_hello(hub: &HubTarget) -> Result<Seen, BenchError> {
    const N: usize = 10_000;
    let stop = Arc::new(AtomicBool::new(false));
    let pending_cap = Arc::new(AtomicU64::new(0));
    let opened: Vec<_> = stream::iter(0..N)
        .map(|_| {
            tokio_tungstenite::connect_async_tls_with_config(hub.url(), None, true, hub.connector())
                .map(|r| r.map(|(ws, _)| ws))
        })
        .buffered(OPEN_AT_ONCE)
        .collect()
        .await;
    let mut tasks = Vec::with_capacity(N);
    let mut refused = 0u64;
    for ws in opened {
        let Ok(mut ws) = ws else {
            refused += 1;
            continue;
        };
        let (stop, pending_cap) = (stop.clone(), pending_cap.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
                match next {
                    Ok(Some(Ok(Message::Close(Some(f))))) => {
                        if u16::from(f.code) == 1008 {
                            pending_cap.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    Ok(None | Some(Err(_)) | Some(Ok(Message::Close(None)))) => return,
                    Ok(Some(Ok(_))) => {}
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    hold_then_stop(Duration::from_millis(500), &stop, tasks).await;
    let closed = pending_cap.load(Ordering::Relaxed);
    Ok(Seen {
        sent: N as u64,
        closed,
        note: format!(
            "{closed} of {N} closed 1008 `pending cap` (max_pending_sockets, oldest first), \
             {refused} refused at the upgrade; the hello timeout closes the rest"
        ),
    })
}

async fn half_open(hub: &HubTarget, ctx: &Ctx<'_>) -> Result<Seen, BenchError> {
    const PEERS: usize = 50;
    let topic = ctx.name("half-open");
    let mut stalled = Vec::with_capacity(PEERS);
    for i in 0..PEERS {
        let ws = raw::slow_subscriber(hub, &ctx.name(&format!("stalled{i}")), &topic)
            .await
            .map_err(fail)?;
        stalled.push(ws);
    }
    let publisher = peer(hub, Scenario::Hostile, &ctx.name("half-open-pub"), false).await?;
    let payload = json!({ "fill": "x".repeat(1024) });
    let deadline = Instant::now() + PHASE;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        match publisher.publish(&topic, payload.clone()) {
            Ok(()) => sent += 1,
            Err(link_client::LinkError::Backpressure { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(fail(e)),
        }
        if sent.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    publisher.stop().await;
    drop(stalled);
    Ok(Seen {
        sent,
        closed: 0,
        note: format!(
            "{sent} messages of 1 KiB published to {PEERS} stalled subscribers: each holds at \
             most max_buffered_bytes in its socket's buffer and max_outbox_bytes queued (the \
             rest refused as outbox-overflow) until keepalive reaps it"
        ),
    })
}

/// Lets an attack's tasks run for `hold`, then tells them to stop and waits
/// for every one.
async fn hold_then_stop(
    hold: Duration,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    tokio::time::sleep(hold).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attacker_thread_lowers_its_own_priority_only() {
        let mine = rustix::process::getpriority_process(None).expect("this thread's nice");
        let theirs = std::thread::spawn(|| {
            lower_priority(19).map(|()| rustix::process::getpriority_process(None))
        })
        .join()
        .expect("the thread ran");
        assert_eq!(theirs.expect("lowered").expect("read back"), 19);
        assert_eq!(
            rustix::process::getpriority_process(None).expect("this thread's nice"),
            mine,
            "the nice value is per thread: the caller's is unchanged"
        );
    }
}
