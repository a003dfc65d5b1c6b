//! The scenarios against a link hub, on [`link_client::LinkClient`] (and
//! raw WebSockets driving a [`ClientConn`](link_protocol::conn::ClientConn)
//! where a full client would weigh on the measurement: idle connections
//! and subscribers that stop reading).
//!
//! On a cluster of hubs ([`HubTarget::is_cluster`]) every scenario places
//! its peers so that its traffic crosses hubs: the producer (caller,
//! sender, publisher) on hub 0, its partner on hub 1, fan-out subscribers
//! and idle peers round-robin over every hub. Before the measured phase
//! each sender's hub must know where its partners are ([`wait_listed`])
//! and every subscriber's hub must have subscribed on NATS
//! ([`ready_to_publish`]).

mod connections;
mod flood;
mod hostile;
pub(crate) use hostile::{HOSTILE_SOCKETS, attack_names};
mod raw;
pub(crate) mod rpc;
pub(crate) mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use link_client::{ClientConfig, LinkClient, LinkError, TopicMessage};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::context::Ctx;
use crate::error::BenchError;
use crate::options::{Receiver, Scenario};
use crate::report::Outcome;
use crate::target::HubTarget;

/// The echo RPC the responder registers.
const ECHO: &str = "echo";
/// Consecutive backpressure retries that only yield before sleeping 1 ms.
const SPIN_RETRIES: u32 = 16;

/// Runs one scenario once against the hub.
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    hub: &HubTarget,
    scenario: Scenario,
) -> Result<Vec<Outcome>, BenchError> {
    match scenario {
        Scenario::RpcSeq => rpc::sequential(ctx, hub).await.map(|o| vec![o]),
        Scenario::RpcConc => rpc::concurrent(ctx, hub).await.map(|o| vec![o]),
        Scenario::Send => stream::send(ctx, hub).await.map(|o| vec![o]),
        Scenario::Publish => stream::publish(ctx, hub).await.map(|o| vec![o]),
        Scenario::Fanout => stream::fanout(ctx, hub).await,
        Scenario::Connections => connections::run(ctx, hub).await.map(|o| vec![o]),
        Scenario::Flood => flood::run(ctx, hub).await.map(|o| vec![o]),
        Scenario::Hostile => hostile::run(ctx, hub).await,
    }
}

/// Where a producer's partner goes: another hub than the producer's (hub
/// 0) on a cluster.
pub(crate) const PARTNER_HUB: usize = 1;

/// A ready client of kind `kind` on hub 0; with `echo`, it answers the
/// `echo` RPC with its argument.
async fn peer(
    hub: &HubTarget,
    scenario: Scenario,
    kind: &str,
    echo: bool,
) -> Result<LinkClient, BenchError> {
    peer_at(hub, 0, scenario, kind, echo).await
}

/// [`peer`] on hub `at` (of a cluster; modulo the number of hubs).
async fn peer_at(
    hub: &HubTarget,
    at: usize,
    scenario: Scenario,
    kind: &str,
    echo: bool,
) -> Result<LinkClient, BenchError> {
    ready_peer(peer_config(hub, at, scenario, kind, echo)?, scenario).await
}

/// The configuration of [`peer_at`]'s client.
fn peer_config(
    hub: &HubTarget,
    at: usize,
    scenario: Scenario,
    kind: &str,
    echo: bool,
) -> Result<ClientConfig, BenchError> {
    let mut builder = ClientConfig::builder()
        .url(hub.url_at(at))
        .secret(hub.secret())
        .kind(kind)
        .rpc_timeout(Duration::from_secs(30))
        // rpc-conc may run more than the default 256 handlers at once.
        .max_concurrent_rpc(0)
        .max_reconnect_attempts(Some(2));
    if let Some(roots) = hub.root_certificates() {
        builder = builder.root_certificates(roots.clone());
    }
    if echo {
        builder = builder.handler(
            ECHO,
            |call| async move { Ok(call.data.unwrap_or(Value::Null)) },
        );
    }
    builder
        .build()
        .map_err(|e| peer_failed(scenario, kind, e.to_string()))
}

/// Starts a client of `config` on the current runtime and waits until it
/// is ready.
async fn ready_peer(config: ClientConfig, scenario: Scenario) -> Result<LinkClient, BenchError> {
    let kind = config.kind().unwrap_or_default().to_owned();
    let client = LinkClient::new(config);
    client
        .ready(Some(Duration::from_secs(30)))
        .await
        .map_err(|e| peer_failed(scenario, &kind, e.to_string()))?;
    Ok(client)
}

fn peer_failed(scenario: Scenario, kind: &str, reason: String) -> BenchError {
    BenchError::Peer {
        scenario: scenario.as_str(),
        kind: kind.to_owned(),
        reason,
    }
}

/// Retries `op` while the outbox is full: yields first, then sleeps 1 ms
/// per retry so that a blocked producer does not take a core from the hub.
/// Returns how many retries it took.
async fn paced(
    scenario: Scenario,
    mut op: impl FnMut() -> Result<(), LinkError>,
) -> Result<u64, BenchError> {
    let mut retries = 0u32;
    loop {
        match op() {
            Ok(()) => return Ok(u64::from(retries)),
            Err(LinkError::Backpressure { .. }) => {
                retries += 1;
                if retries <= SPIN_RETRIES {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Err(e) => return Err(BenchError::op(scenario.as_str(), e)),
        }
    }
}

/// Waits until the hub lists every kind of `kinds` as a subscriber of
/// `topic` (the `link.topic.list` server RPC, which the reference hub has
/// too), so that no publish races a subscription.
async fn wait_subscribed(
    client: &LinkClient,
    scenario: Scenario,
    topic: &str,
    kinds: &[String],
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let listed = client
            .rpc(
                link_protocol::SERVER,
                "link.topic.list",
                Some(json!({ "topic": topic })),
            )
            .await
            .map_err(|e| BenchError::op(scenario.as_str(), e))?;
        let subs: Vec<&str> = listed["subscribers"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if kinds.iter().all(|k| subs.contains(&k.as_str())) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Stalled {
                scenario: scenario.as_str(),
                idle: timeout,
                what: format!(
                    "{} of {} subscriptions to {topic} registered",
                    subs.len(),
                    kinds.len()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// On a cluster: waits until `client`'s hub lists every kind of `kinds`
/// (`link.peer.list`, cluster-wide: a kind held on another hub is listed
/// once its lease is seen), so that no message to them races their
/// arrival. Nothing to wait for on a lone hub: a ready peer is registered.
async fn wait_listed(
    hub: &HubTarget,
    client: &LinkClient,
    scenario: Scenario,
    kinds: &[&str],
    timeout: Duration,
) -> Result<(), BenchError> {
    if !hub.is_cluster() {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let listed = client
            .rpc(link_protocol::SERVER, "link.peer.list", None)
            .await
            .map_err(|e| BenchError::op(scenario.as_str(), e))?;
        let peers: Vec<&str> = listed["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["kind"].as_str()).collect())
            .unwrap_or_default();
        let missing = kinds.iter().filter(|k| !peers.contains(k)).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Stalled {
                scenario: scenario.as_str(),
                idle: timeout,
                what: format!(
                    "{missing} of {} peers on other hubs not listed by the cluster",
                    kinds.len()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Between two probes while a cluster's subscriptions settle.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Waits until `publisher`'s messages to `topic` reach every subscriber.
///
/// On a lone hub, the hub lists every kind (`subscribers` and `raw`, the
/// raw slow subscribers) as a subscriber ([`wait_subscribed`]). On a
/// cluster the publisher's hub lists only its own peers, and a hub
/// subscribes on NATS asynchronously, with nothing to say it is done; so
/// every subscriber client also subscribes to a probe topic *after*
/// `topic` (the subscription of `topic` must already be sent), and the
/// publisher publishes probes until every one of them received one. A
/// hub's NATS subscriptions go out in the order its peers asked for them,
/// on one connection: a probe delivered means `topic` is subscribed too.
/// Raw subscribers cannot take part: they must be on the publisher's hub,
/// where the hub's own list is checked.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ready_to_publish(
    hub: &HubTarget,
    publisher: &LinkClient,
    scenario: Scenario,
    topic: &str,
    subscribers: &[LinkClient],
    kinds: &[String],
    raw: &[String],
    timeout: Duration,
) -> Result<(), BenchError> {
    if !hub.is_cluster() {
        let all: Vec<String> = kinds.iter().chain(raw).cloned().collect();
        return wait_subscribed(publisher, scenario, topic, &all, timeout).await;
    }
    if !raw.is_empty() {
        wait_subscribed(publisher, scenario, topic, raw, timeout).await?;
    }
    let probe_topic = format!("{topic}-probe");
    let probed: Vec<Arc<std::sync::atomic::AtomicBool>> =
        subscribers.iter().map(|_| Arc::default()).collect();
    let mut handlers = Vec::with_capacity(subscribers.len());
    for (c, flag) in subscribers.iter().zip(&probed) {
        let flag = flag.clone();
        let h = c
            .subscribe_with(&probe_topic, move |_| flag.store(true, Ordering::Relaxed))
            .map_err(|e| BenchError::op(scenario.as_str(), e))?;
        handlers.push(h);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match publisher.publish(&probe_topic, Value::Null) {
            Ok(()) | Err(LinkError::Backpressure { .. }) => {}
            Err(e) => return Err(BenchError::op(scenario.as_str(), e)),
        }
        tokio::time::sleep(PROBE_EVERY).await;
        let missing = probed.iter().filter(|p| !p.load(Ordering::Relaxed)).count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Stalled {
                scenario: scenario.as_str(),
                idle: timeout,
                what: format!(
                    "{missing} of {} subscribers on the cluster's hubs got no probe on {probe_topic}",
                    subscribers.len()
                ),
            });
        }
    }
    // Unsubscribes from the probe topic.
    drop(handlers);
    Ok(())
}

/// A scenario's note on where its peers are, on a cluster.
pub(crate) fn placement(hub: &HubTarget, what: &str) -> Option<String> {
    hub.is_cluster().then(|| {
        format!(
            "cluster of {} hubs: {what}; NATS crossings are the messages the hubs handed to \
             NATS over the measured phase (each hub's heartbeat included, 1/s)",
            hub.hubs()
        )
    })
}

/// What a receiving peer counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counted {
    pub(crate) got: u64,
    /// When the last message arrived.
    pub(crate) last: Option<Instant>,
}

/// Counts up to `n` items of a stream; gives up after `idle` without one.
///
/// The clock is read when the count completes and once per `idle` period,
/// not per item: a timer and a timestamp per item cost a fan-out's hundred
/// receivers more than some of what they measure. When the wait ends early,
/// `last` is the last check that saw progress (or the stream's end).
pub(crate) async fn count<S: Stream + Unpin>(
    mut stream: S,
    n: u64,
    idle: Duration,
    on_item: impl Fn(u64),
) -> Counted {
    let mut c = Counted { got: 0, last: None };
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut seen = 0;
    while c.got < n {
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(_) => {
                    c.got += 1;
                    on_item(c.got);
                }
                None => {
                    c.last = (c.got > 0).then(Instant::now);
                    return c;
                }
            },
            () = &mut deadline => {
                if c.got == seen {
                    return c;
                }
                seen = c.got;
                let now = tokio::time::Instant::now();
                c.last = Some(now.into_std());
                deadline.as_mut().reset(now + idle);
            }
        }
    }
    c.last = Some(Instant::now());
    c
}

/// How many messages a fan-out receiver counts before it adds them to the
/// progress bar.
const BAR_STEP: u64 = 64;

/// The progress bar of a scenario with several receivers, and the total they
/// add to it.
#[derive(Clone)]
pub(crate) struct BarShare {
    bar: Arc<crate::progress::Bar>,
    total: Arc<AtomicU64>,
}

impl BarShare {
    pub(crate) fn new(bar: &Arc<crate::progress::Bar>) -> Self {
        Self {
            bar: bar.clone(),
            total: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A receiver counted its `got`-th of `n` messages. The total is shared
    /// by every receiver: it is added to in steps, not one contended atomic
    /// per message.
    fn counted(&self, got: u64, n: u64) {
        let rem = got % BAR_STEP;
        if rem == 0 || got == n {
            let step = if rem == 0 { BAR_STEP } else { rem };
            self.bar
                .tick(self.total.fetch_add(step, Ordering::Relaxed) + step);
        }
    }
}

/// Fan-out receivers: one task per stream counting `n` messages into the
/// window and the progress bar (shared by the link and NATS runs).
pub(crate) fn spawn_counters<S>(
    streams: Vec<S>,
    n: u64,
    window: &Window,
    bar: &Arc<crate::progress::Bar>,
    idle: Duration,
) -> Vec<tokio::task::JoinHandle<Counted>>
where
    S: Stream + Unpin + Send + 'static,
{
    let share = BarShare::new(bar);
    streams
        .into_iter()
        .enumerate()
        .map(|(i, sub)| {
            let (share, mine) = (share.clone(), window.counter(i));
            tokio::spawn(async move {
                count(sub, n, idle, |got| {
                    mine.fetch_add(1, Ordering::Relaxed);
                    share.counted(got, n);
                })
                .await
            })
        })
        .collect()
}

/// A receiver that counts in a `subscribe_with` handler, on the client's
/// own task: no channel and no task of its own.
pub(crate) struct Tally {
    n: u64,
    /// The receiver's window counter.
    got: Arc<AtomicU64>,
    /// When the `n`-th message arrived.
    finished: Arc<OnceLock<Instant>>,
    done: Arc<Notify>,
}

impl Tally {
    /// Counts `n` messages into `got` (a [`Window::counter`]).
    pub(crate) fn new(n: u64, got: Arc<AtomicU64>) -> Self {
        Self {
            n,
            got,
            finished: Arc::default(),
            done: Arc::default(),
        }
    }

    /// The handler to register with `subscribe_with`.
    pub(crate) fn handler(
        &self,
        share: BarShare,
    ) -> impl Fn(&TopicMessage) + Send + Sync + 'static {
        let (n, got, finished, done) = (
            self.n,
            self.got.clone(),
            self.finished.clone(),
            self.done.clone(),
        );
        move |_| {
            let g = got.fetch_add(1, Ordering::Relaxed) + 1;
            share.counted(g, n);
            if g == n {
                let _ = finished.set(Instant::now());
                done.notify_one();
            }
        }
    }

    /// Waits for the `n` messages, or until `idle` passes without one; like
    /// [`count`], `last` is then the last check that saw progress.
    pub(crate) async fn wait(self, idle: Duration) -> Counted {
        let (mut seen, mut last) = (0, None);
        loop {
            if let Some(t) = self.finished.get() {
                return Counted {
                    got: self.n,
                    last: Some(*t),
                };
            }
            if tokio::time::timeout(idle, self.done.notified())
                .await
                .is_ok()
            {
                continue;
            }
            let got = self.got.load(Ordering::Relaxed);
            if got == seen {
                return Counted { got, last };
            }
            (seen, last) = (got, Some(Instant::now()));
        }
    }
}

/// A scenario's link subscribers, receiving as `--receiver` says.
pub(crate) enum Receivers {
    /// A counting task per `Subscription`.
    Streams(Vec<tokio::task::JoinHandle<Counted>>),
    /// A counting handler per client.
    Handlers(Vec<(link_client::TopicHandler, Tally)>),
}

impl Receivers {
    /// Subscribes every client of `clients` to `topic`, receiver `i`
    /// counting `n` messages into `window.counter(i)` and the bar.
    pub(crate) fn subscribe(
        clients: &[LinkClient],
        topic: &str,
        n: u64,
        window: &Window,
        bar: &Arc<crate::progress::Bar>,
        ctx: &Ctx<'_>,
        sc: Scenario,
    ) -> Result<Self, BenchError> {
        let fail = |e| BenchError::op(sc.as_str(), e);
        match ctx.opts.receiver {
            Receiver::Stream => {
                let streams = clients
                    .iter()
                    .map(|c| c.subscribe(topic))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(fail)?;
                Ok(Self::Streams(spawn_counters(
                    streams,
                    n,
                    window,
                    bar,
                    ctx.opts.idle_timeout,
                )))
            }
            Receiver::Handler => {
                let share = BarShare::new(bar);
                let mut handlers = Vec::with_capacity(clients.len());
                for (i, c) in clients.iter().enumerate() {
                    let tally = Tally::new(n, window.counter(i));
                    let handler = c
                        .subscribe_with(topic, tally.handler(share.clone()))
                        .map_err(fail)?;
                    handlers.push((handler, tally));
                }
                Ok(Self::Handlers(handlers))
            }
        }
    }

    /// Waits for every receiver: total messages and when the last arrived.
    pub(crate) async fn join(
        self,
        sc: Scenario,
        idle: Duration,
    ) -> Result<(u64, Option<Instant>), BenchError> {
        match self {
            Self::Streams(counters) => join_counters(counters, sc).await,
            Self::Handlers(handlers) => {
                let (mut got, mut last) = (0, None);
                for (_handler, tally) in handlers {
                    let counted = tally.wait(idle).await;
                    got += counted.got;
                    last = last.max(counted.last);
                }
                Ok((got, last))
            }
        }
    }
}

/// Waits for the counting tasks: total messages and when the last arrived.
pub(crate) async fn join_counters(
    counters: Vec<tokio::task::JoinHandle<Counted>>,
    sc: Scenario,
) -> Result<(u64, Option<Instant>), BenchError> {
    let (mut got, mut last) = (0, None);
    for c in counters {
        let counted = c.await.map_err(|e| BenchError::op(sc.as_str(), e))?;
        got += counted.got;
        last = last.max(counted.last);
    }
    Ok((got, last))
}

/// Flow control between a producer and its receivers: at most `size`
/// messages sent but not yet counted by the slowest receiver, so that the
/// measurement is of delivered traffic, not of what overflowed a buffer.
pub(crate) struct Window {
    counters: Vec<Arc<AtomicU64>>,
    size: u64,
    idle: Duration,
    /// The slowest count seen at the last scan: a lower bound of the
    /// current one (counts only grow), so the producer rescans the
    /// receivers' counters only when this bound no longer admits it,
    /// instead of reading every receiver's counter (another core's cache
    /// line) for every message.
    floor: AtomicU64,
}

impl Window {
    pub(crate) fn new(receivers: usize, size: u64, idle: Duration) -> Self {
        Self {
            counters: (0..receivers.max(1))
                .map(|_| Arc::new(AtomicU64::new(0)))
                .collect(),
            size,
            idle,
            floor: AtomicU64::new(0),
        }
    }

    /// The counter receiver `i` increments for every message it counts.
    pub(crate) fn counter(&self, i: usize) -> Arc<AtomicU64> {
        self.counters[i % self.counters.len()].clone()
    }

    fn slowest(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Waits until message number `sent` (0-based) may go: fewer than
    /// `size` messages in flight (once blocked, until a sixteenth of the
    /// window is free). False when the slowest receiver made no progress
    /// for the idle timeout (the producer should stop: something was lost).
    pub(crate) async fn admit(&self, sent: u64) -> bool {
        if self.size == 0 {
            return true;
        }
        if sent.saturating_sub(self.floor.load(Ordering::Relaxed)) < self.size {
            return true;
        }
        // Blocked: wait until a sixteenth of the window is free again, so
        // that the next messages go without a scan each.
        let refill = (self.size / 16).max(1);
        let (mut last, mut since, mut spins) = (u64::MAX, Instant::now(), 0u32);
        loop {
            let d = self.slowest();
            if sent.saturating_sub(d) + refill <= self.size {
                self.floor.store(d, Ordering::Relaxed);
                return true;
            }
            if d != last {
                (last, since) = (d, Instant::now());
            } else if since.elapsed() > self.idle {
                return false;
            }
            spins += 1;
            if spins <= SPIN_RETRIES {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn the_window_holds_size_in_flight_and_refills_by_a_sixteenth() {
        let w = Window::new(2, 32, Duration::from_secs(60));
        let (a, b) = (w.counter(0), w.counter(1));
        for sent in 0..32 {
            assert_eq!(w.admit(sent).now_or_never(), Some(true), "{sent}");
        }
        assert_eq!(w.admit(32).now_or_never(), None, "32 in flight");
        // One slot free is not enough once blocked: 32/16 = 2 are needed,
        // from the slowest receiver.
        a.store(5, Ordering::Relaxed);
        b.store(1, Ordering::Relaxed);
        assert_eq!(w.admit(32).now_or_never(), None);
        b.store(2, Ordering::Relaxed);
        assert_eq!(w.admit(32).now_or_never(), Some(true));
        assert_eq!(w.admit(33).now_or_never(), Some(true));
        assert_eq!(w.admit(34).now_or_never(), None, "32 in flight again");
        // An unlimited window never blocks.
        let open = Window::new(1, 0, Duration::from_secs(60));
        assert_eq!(open.admit(1_000_000).now_or_never(), Some(true));
    }
}
