//! The same scenarios through nats-server with async-nats: request/reply
//! for the RPCs, a per-peer subject for `send`, publish/subscribe for
//! `publish` and `fanout`, raw TCP clients for idle connections and for
//! subscribers that stop reading. Payload bytes are the same JSON as on the
//! link side; NATS adds no signature.

pub(crate) use crate::nats_server::NatsTarget;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::context::Ctx;
use crate::error::BenchError;
use crate::link::rpc::{rpc_outcome, warmup_calls};
use crate::link::stream::{Produced, add_impact, fanout_outcome, stream_outcome};
use crate::link::{Window, count, join_counters, spawn_counters};
use crate::options::Scenario;
use crate::report::{CPU_PER_CALL, CPU_PER_DELIVERY, CPU_PER_MSG, Metric, Outcome, System};
use crate::stats::Latencies;
use crate::sys::{CpuMeter, rss_bytes};

/// Runs one scenario once against nats-server.
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    nats: &NatsTarget,
    scenario: Scenario,
) -> Result<Vec<Outcome>, BenchError> {
    let payload = Bytes::from(
        serde_json::to_vec(ctx.payload).map_err(|e| BenchError::op(scenario.as_str(), e))?,
    );
    match scenario {
        Scenario::RpcSeq | Scenario::RpcConc => {
            rpc(ctx, nats, scenario, payload).await.map(|o| vec![o])
        }
        Scenario::Send | Scenario::Publish => {
            stream(ctx, nats, scenario, payload).await.map(|o| vec![o])
        }
        Scenario::Fanout => {
            let base = fanout(ctx, nats, payload.clone(), 0).await?;
            let mut out = vec![base.clone()];
            if ctx.opts.slow > 0 {
                let mut slow = fanout(ctx, nats, payload, ctx.opts.slow).await?;
                add_impact(&mut slow, &base);
                out.push(slow);
            }
            Ok(out)
        }
        Scenario::Connections => connections(ctx, nats).await.map(|o| vec![o]),
        // nats-server has no per-connection publish limit to compare with.
        Scenario::Flood => Ok(Vec::new()),
        // The attacks are on the link hub's own limits.
        Scenario::Hostile => Ok(Vec::new()),
    }
}

async fn client(nats: &NatsTarget, sc: Scenario) -> Result<Client, BenchError> {
    ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .subscription_capacity(1 << 16)
        .connect(nats.url.as_str())
        .await
        .map_err(|e| BenchError::Peer {
            scenario: sc.as_str(),
            kind: "nats client".into(),
            reason: e.to_string(),
        })
}

async fn rpc(
    ctx: &Ctx<'_>,
    nats: &NatsTarget,
    sc: Scenario,
    payload: Bytes,
) -> Result<Outcome, BenchError> {
    let n = ctx.opts.count_for(sc);
    let subject = ctx.name("echo");
    let responder = client(nats, sc).await?;
    let mut requests = responder
        .subscribe(subject.clone())
        .await
        .map_err(|e| BenchError::op(sc.as_str(), e))?;
    responder
        .flush()
        .await
        .map_err(|e| BenchError::op(sc.as_str(), e))?;
    let echo = {
        let responder = responder.clone();
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, m.payload).await;
                }
            }
        })
    };
    let caller = client(nats, sc).await?;
    let call = || async {
        let t = Instant::now();
        let r = caller.request(subject.clone(), payload.clone()).await;
        (t.elapsed(), r)
    };
    for _ in 0..warmup_calls(n) {
        call().await.1.map_err(|e| BenchError::op(sc.as_str(), e))?;
    }
    let bar = ctx.progress.bar(&format!("nats {sc}"), n);
    let mut lat = Latencies::new();
    let cpu = CpuMeter::start(nats.pid);
    let start = Instant::now();
    let c = if sc == Scenario::RpcSeq {
        1
    } else {
        ctx.opts.concurrency
    };
    let mut in_flight = FuturesUnordered::new();
    let (mut issued, mut done) = (0u64, 0u64);
    while done < n {
        while issued < n && in_flight.len() < c {
            in_flight.push(call());
            issued += 1;
        }
        let Some((took, result)) = in_flight.next().await else {
            break;
        };
        result.map_err(|e| BenchError::op(sc.as_str(), e))?;
        lat.record(took);
        done += 1;
        bar.tick(done);
    }
    let elapsed = start.elapsed();
    let server_cpu = cpu.and_then(|m| m.us_per(done));
    drop(in_flight);
    drop(bar);
    echo.abort();
    let mut o = rpc_outcome(sc, System::Nats, n, elapsed, &lat, sc == Scenario::RpcSeq);
    o.push_cpu(CPU_PER_CALL, server_cpu);
    if sc == Scenario::RpcConc {
        o.notes.push(format!("{c} calls in flight"));
    }
    Ok(o)
}

/// `send` (a subject per receiving peer) and `publish` (a topic subject):
/// on NATS both are a publish to one subscriber.
async fn stream(
    ctx: &Ctx<'_>,
    nats: &NatsTarget,
    sc: Scenario,
    payload: Bytes,
) -> Result<Outcome, BenchError> {
    let n = ctx.opts.count_for(sc);
    let subject = if sc == Scenario::Send {
        format!("{}.direct", ctx.name("b"))
    } else {
        ctx.name("topic")
    };
    let b = client(nats, sc).await?;
    let sub = b
        .subscribe(subject.clone())
        .await
        .map_err(|e| BenchError::op(sc.as_str(), e))?;
    b.flush()
        .await
        .map_err(|e| BenchError::op(sc.as_str(), e))?;
    let a = client(nats, sc).await?;
    let window = Window::new(1, ctx.opts.window, ctx.opts.idle_timeout);
    let bar = Arc::new(ctx.progress.bar(&format!("nats {sc}"), n));
    let counter = {
        let (bar, idle, delivered) = (bar.clone(), ctx.opts.idle_timeout, window.counter(0));
        tokio::spawn(async move {
            count(sub, n, idle, |i| {
                delivered.fetch_add(1, Ordering::Relaxed);
                bar.tick(i);
            })
            .await
        })
    };
    let cpu = CpuMeter::start(nats.pid);
    let start = Instant::now();
    let produced = produce(&a, sc, &subject, &payload, n, &window).await?;
    let counted = counter.await.map_err(|e| BenchError::op(sc.as_str(), e))?;
    let server_cpu = cpu.and_then(|m| m.us_per(counted.got));
    drop(bar);
    let mut o = stream_outcome(
        sc,
        System::Nats,
        n,
        counted.got,
        start,
        counted.last,
        produced,
    );
    o.push_cpu(CPU_PER_MSG, server_cpu);
    Ok(o)
}

/// Publishes `n` messages within the window, then flushes.
async fn produce(
    client: &Client,
    sc: Scenario,
    subject: &str,
    payload: &Bytes,
    n: u64,
    window: &Window,
) -> Result<Produced, BenchError> {
    let start = Instant::now();
    let mut p = Produced::default();
    for i in 0..n {
        if !window.admit(i).await {
            p.stalled = true;
            break;
        }
        client
            .publish(subject.to_owned(), payload.clone())
            .await
            .map_err(|e| BenchError::op(sc.as_str(), e))?;
        p.sent += 1;
    }
    client
        .flush()
        .await
        .map_err(|e| BenchError::op(sc.as_str(), e))?;
    p.took = start.elapsed();
    Ok(p)
}

async fn fanout(
    ctx: &Ctx<'_>,
    nats: &NatsTarget,
    payload: Bytes,
    slow: usize,
) -> Result<Outcome, BenchError> {
    let sc = Scenario::Fanout;
    let n = ctx.opts.count_for(sc);
    let s = ctx.opts.subscribers;
    let subject = ctx.name(if slow > 0 { "topic-slow" } else { "topic" });
    let mut clients = Vec::with_capacity(s);
    let mut subs = Vec::with_capacity(s);
    for _ in 0..s {
        let c = client(nats, sc).await?;
        subs.push(
            c.subscribe(subject.clone())
                .await
                .map_err(|e| BenchError::op(sc.as_str(), e))?,
        );
        c.flush()
            .await
            .map_err(|e| BenchError::op(sc.as_str(), e))?;
        clients.push(c);
    }
    let mut slow_peers = Vec::with_capacity(slow);
    for _ in 0..slow {
        slow_peers.push(raw_connect(nats, Some(&subject)).await.map_err(|reason| {
            BenchError::Peer {
                scenario: sc.as_str(),
                kind: "slow nats subscriber".into(),
                reason,
            }
        })?);
    }
    let publisher = client(nats, sc).await?;
    let total = n * s as u64;
    let label = if slow > 0 {
        "nats fanout-slow"
    } else {
        "nats fanout"
    };
    let bar = Arc::new(ctx.progress.bar(label, total));
    let window = Window::new(s, ctx.opts.window, ctx.opts.idle_timeout);
    let counters = spawn_counters(subs, n, &window, &bar, ctx.opts.idle_timeout);
    let cpu = CpuMeter::start(nats.pid);
    let start = Instant::now();
    let produced = produce(&publisher, sc, &subject, &payload, n, &window).await?;
    let (got, last) = join_counters(counters, sc).await?;
    let server_cpu = cpu.and_then(|m| m.us_per(got));
    drop(bar);
    drop(slow_peers);
    drop(clients);
    let mut o = fanout_outcome(
        System::Nats,
        s,
        slow,
        stream_outcome(sc, System::Nats, total, got, start, last, produced),
    );
    o.push_cpu(CPU_PER_DELIVERY, server_cpu);
    Ok(o)
}

/// A raw NATS client: INFO, CONNECT, optional SUB, PING → PONG. The caller
/// may then stop reading it altogether (a slow consumer).
async fn raw_connect(nats: &NatsTarget, subscribe: Option<&str>) -> Result<TcpStream, String> {
    let addr = nats.url.trim_start_matches("nats://");
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut hello = String::from(
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1}\r\n",
    );
    if let Some(subject) = subscribe {
        hello.push_str(&format!("SUB {subject} 1\r\n"));
    }
    hello.push_str("PING\r\n");
    tcp.write_all(hello.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut seen = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !seen.windows(6).any(|w| w == b"PONG\r\n") {
        let n = tcp.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before PONG".into());
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(5).any(|w| w == b"-ERR ") {
            return Err(String::from_utf8_lossy(&seen).trim().to_owned());
        }
    }
    Ok(tcp)
}

async fn connections(ctx: &Ctx<'_>, nats: &NatsTarget) -> Result<Outcome, BenchError> {
    let sc = Scenario::Connections;
    let k = ctx.opts.connections;
    let before = nats.pid.and_then(rss_bytes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let bar = ctx.progress.bar("nats connections", k as u64);
    let mut opens = futures_util::stream::iter(0..k)
        .map(|_| raw_connect(nats, None))
        .buffer_unordered(ctx.opts.hello_concurrency);
    let start = Instant::now();
    let (mut connected, mut failed, mut last) = (0u64, 0u64, start);
    let mut first_error = None;
    let mut holders = Vec::with_capacity(k);
    while let Ok(Some(r)) = tokio::time::timeout(ctx.opts.idle_timeout, opens.next()).await {
        match r {
            Ok(tcp) => {
                connected += 1;
                last = Instant::now();
                bar.set(connected);
                holders.push(tokio::spawn(hold(tcp, stop_rx.clone())));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if start.elapsed() > ctx.opts.max_connect_time {
            break;
        }
    }
    drop(opens);
    drop(bar);
    let opened = last.saturating_duration_since(start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = nats.pid.and_then(rss_bytes);
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let secs = opened.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut o = Outcome::new(sc.as_str(), System::Nats, k as u64);
    o.completed = connected;
    o.elapsed_s = secs;
    o.metrics
        .push(Metric::higher("hellos/s", connected as f64 / secs));
    if let (Some(b), Some(a), true) = (before, after, connected > 0) {
        o.metrics.push(Metric::lower(
            "settled KiB/conn",
            a.saturating_sub(b) as f64 / connected as f64 / 1024.0,
        ));
        o.metrics
            .push(Metric::lower("hub RSS MiB", a as f64 / (1024.0 * 1024.0)));
    } else {
        o.notes
            .push("server memory unknown (pass its pid with --nats-pid)".to_owned());
    }
    if failed > 0 {
        o.notes.push(format!(
            "{failed} connection(s) failed; first: {}",
            first_error.unwrap_or_default()
        ));
    }
    if connected < k as u64 {
        o.notes.push(format!("{connected} of {k} connected"));
    }
    Ok(o)
}

/// Keeps a raw NATS connection alive (answers the server's PINGs) until
/// told to stop.
async fn hold(mut tcp: TcpStream, mut stop: watch::Receiver<bool>) {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if buf[..n].windows(6).any(|w| w == b"PING\r\n")
                        && tcp.write_all(b"PONG\r\n").await.is_err()
                    {
                        return;
                    }
                }
            },
        }
    }
}
