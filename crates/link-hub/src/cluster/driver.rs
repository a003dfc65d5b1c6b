//! The cluster's tokio tasks around one async-nats connection. They make no
//! routing decision: the table (`routing/cluster.rs`) does; these seal and
//! publish what it hands over, open what NATS delivers and feed it back
//! through the router's mailbox, and keep the leases.
//!
//! - **publisher**: the bounded [`Outbound`] queue and the heartbeat tick
//!   → sealed messages on NATS; `bye` at stop.
//! - **receiver**: this hub's inbox, heartbeats, statuses and the topics
//!   its peers hold → opened, checked, [`ClusterIn`] to the router (whose
//!   bounded mailbox is the backpressure); NATS connection events; hub
//!   liveness (`hubs.rs`).
//! - **leases**: claims and releases in order, refreshes, the bucket
//!   watch (the directory of kinds), and a resync after NATS comes back.
//!
//! Every queue between a hub and NATS is bounded: the outbound queue
//! ([`OUTBOUND_CAPACITY`](super::link::OUTBOUND_CAPACITY)), async-nats'
//! client and subscription buffers, the router's mailbox. A subscription
//! that overflows is reported by async-nats as a slow consumer: logged and
//! counted (`link_hub_cluster_*` in `/metrics`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::AbortHandle;
use link_protocol::{CanonicalData, Hello};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{ClusterConfig, NatsAuth};
use super::hubs::{HubChange, HubWatch};
use super::link::{ClusterIn, ClusterLink, ClusterOut, Outbound};
use super::wire::{self, LeaseValue, Op, Opener, Sealer};
use crate::mailbox::RouterMsg;
use crate::outbox::OutItem;
use crate::routing::ConnId;
use crate::shared::wall_ms;

/// Messages from NATS queued per subscription (async-nats' buffer).
const SUBSCRIPTION_CAPACITY: usize = 8192;

/// Claims tried before a kind is given up to a faster hub.
const CLAIM_TRIES: usize = 5;

/// How long a `link.topic.list` waits for the other hubs' answers.
const QUERY_WAIT: Duration = Duration::from_millis(500);

/// The router's handle on the driver.
pub(crate) struct ClusterHandle {
    leases: mpsc::UnboundedSender<LeaseCmd>,
    interest: mpsc::UnboundedSender<(String, bool)>,
    queries: mpsc::UnboundedSender<Query>,
    stop: watch::Sender<bool>,
}

/// Ask the other hubs for their topics: up to `hubs` answers.
struct Query {
    hubs: usize,
    answers: oneshot::Sender<Vec<crate::routing::TopicMap>>,
}

impl ClusterHandle {
    /// Carries one of the table's cluster outputs to its task.
    pub(crate) fn send(&self, out: ClusterOut) {
        match out {
            ClusterOut::Claim {
                kind,
                conn,
                hello,
                connected_at,
                hello_id,
            } => {
                let _ = self.leases.send(LeaseCmd::Claim {
                    kind,
                    conn,
                    hello,
                    connected_at,
                    hello_id,
                });
            }
            ClusterOut::Release { kind } => {
                let _ = self.leases.send(LeaseCmd::Release { kind });
            }
            ClusterOut::Interest { topic, on } => {
                let _ = self.interest.send((topic, on));
            }
        }
    }

    /// The other hubs' topics (`hubs` answers at most, or what came within
    /// half a second).
    pub(crate) fn topics(
        &self,
        hubs: usize,
    ) -> impl std::future::Future<Output = Vec<crate::routing::TopicMap>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.queries.send(Query { hubs, answers: tx });
        async move { rx.await.unwrap_or_default() }
    }

    /// The hub stops: every lease it holds is handed back and the others
    /// are told (bye); `done` fires when the leases are back.
    pub(crate) fn stop(&self, done: oneshot::Sender<()>) {
        let _ = self.stop.send(true);
        if let Err(mpsc::error::SendError(LeaseCmd::Stop(done))) =
            self.leases.send(LeaseCmd::Stop(done))
        {
            let _ = done.send(());
        }
    }
}

enum LeaseCmd {
    Claim {
        kind: Arc<str>,
        conn: ConnId,
        hello: Hello,
        connected_at: u64,
        hello_id: Option<(Arc<str>, f64)>,
    },
    Release {
        kind: Arc<str>,
    },
    Stop(oneshot::Sender<()>),
}

/// Subjects of one cluster.
#[derive(Clone)]
struct Subjects {
    prefix: String,
}

impl Subjects {
    fn hub(&self, hub: &str) -> String {
        format!("{}.hub.{hub}", self.prefix)
    }
    fn topic(&self, topic: &str) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 3 + 2 * topic.len());
        subject.push_str(&self.prefix);
        subject.push_str(".t.");
        wire::push_hex(&mut subject, topic);
        subject
    }
    fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }
    fn status(&self) -> String {
        format!("{}.status", self.prefix)
    }
    fn topics_query(&self) -> String {
        format!("{}.q.topics", self.prefix)
    }
}

/// Starts the driver for `link` (whose queue `outbound` drains).
pub(crate) fn start(
    config: ClusterConfig,
    link: Arc<ClusterLink>,
    outbound: mpsc::Receiver<Outbound>,
    router: mpsc::Sender<RouterMsg>,
    window: Duration,
) -> ClusterHandle {
    let (lease_tx, lease_rx) = mpsc::unbounded_channel();
    let (interest_tx, interest_rx) = mpsc::unbounded_channel();
    let (query_tx, query_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Ctx {
        subjects: Subjects {
            prefix: format!("link.{}", config.name),
        },
        key: config.secret.clone(),
        link,
        router,
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        config,
    };
    tokio::spawn(run(ctx, outbound, lease_rx, interest_rx, query_rx, stop_rx));
    ClusterHandle {
        leases: lease_tx,
        interest: interest_tx,
        queries: query_tx,
        stop: stop_tx,
    }
}

/// What every task needs.
#[derive(Clone)]
struct Ctx {
    subjects: Subjects,
    key: Vec<u8>,
    link: Arc<ClusterLink>,
    router: mpsc::Sender<RouterMsg>,
    window_ms: u64,
    config: ClusterConfig,
}

impl Ctx {
    async fn tell(&self, input: ClusterIn) {
        let _ = self.router.send(RouterMsg::Cluster(input)).await;
    }
}

async fn run(
    ctx: Ctx,
    outbound: mpsc::Receiver<Outbound>,
    leases: mpsc::UnboundedReceiver<LeaseCmd>,
    interest: mpsc::UnboundedReceiver<(String, bool)>,
    queries: mpsc::UnboundedReceiver<Query>,
    stop: watch::Receiver<bool>,
) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("link-hub {}", ctx.link.hub))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            // Back within a second of NATS returning (the cluster re-forms
            // in seconds, not NATS' default minutes of backoff).
            Duration::from_millis((attempts as u64 * 100).min(1000))
        })
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
    options = match &ctx.config.auth {
        NatsAuth::None => options,
        NatsAuth::Token(t) => options.token(t.clone()),
        NatsAuth::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
        NatsAuth::CredsFile(path) => match options.credentials_file(path).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the NATS credentials; the hub stays alone");
                return;
            }
        },
    };
    let client = match options.connect(ctx.config.url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %ctx.config.url, error = %e, "cannot use NATS; the hub stays alone");
            return;
        }
    };
    tracing::info!(hub = %ctx.link.hub, url = %ctx.config.url, cluster = %ctx.config.name, "cluster: connecting");
    let (resync_tx, resync_rx) = watch::channel(0u64);
    let sealer = Sealer::new(wire::key(&ctx.key), &ctx.link.hub);
    tokio::spawn(publisher(
        ctx.clone(),
        client.clone(),
        sealer.clone(),
        outbound,
        stop.clone(),
    ));
    let announce = Announce {
        key: wire::key(&ctx.key),
        client: client.clone(),
        sealer: sealer.clone(),
        subject: ctx.subjects.heartbeat(),
    };
    tokio::spawn(leases_task(
        ctx.clone(),
        client.clone(),
        announce,
        leases,
        resync_rx,
    ));
    let inputs = ReceiverInputs {
        interest,
        queries,
        events,
        resync: resync_tx,
        stop,
    };
    receiver(ctx, client, sealer, inputs).await;
}

// ----- publisher -------------------------------------------------------------

async fn publisher(
    ctx: Ctx,
    client: async_nats::Client,
    sealer: Sealer,
    mut outbound: mpsc::Receiver<Outbound>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = ctx.subjects.heartbeat();
    loop {
        let (subject, op, data) = tokio::select! {
            out = outbound.recv() => match out {
                Some(out) => sealed(&ctx.subjects, out),
                None => return,
            },
            _ = tick.tick() => {
                if !ctx.link.is_up() {
                    continue;
                }
                let peers = ctx.link.peers.load(Ordering::Relaxed);
                (heartbeat.clone(), Op::Heartbeat { peers }, None)
            }
            _ = stop.changed() => {
                let bytes = sealer.seal(&heartbeat, wall_ms(), &Op::Bye, None);
                let _ = client.publish(heartbeat.clone(), Bytes::from(bytes)).await;
                let _ = client.flush().await;
                return;
            }
        };
        let bytes = sealer.seal(&subject, wall_ms(), &op, data.as_deref());
        if client.publish(subject, Bytes::from(bytes)).await.is_ok() {
            ctx.link.counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The subject, header and data of one outbound message.
fn sealed(subjects: &Subjects, out: Outbound) -> (String, Op, Option<Arc<CanonicalData>>) {
    match out {
        Outbound::Deliver { hub, item } => (
            subjects.hub(&hub),
            Op::Deliver {
                id: item.id.clone(),
                msg_type: item.msg_type,
                from: Arc::clone(&item.from),
                to: Arc::clone(&item.to),
            },
            item.data,
        ),
        Outbound::Publish {
            topic,
            from,
            data,
            at,
        } => (
            subjects.topic(&topic),
            Op::Publish { topic, from, at },
            Some(data),
        ),
        Outbound::Release { kind, rev } => (subjects.heartbeat(), Op::Release { kind, rev }, None),
        Outbound::Status { kind, at, data } => (subjects.status(), Op::Status { kind, at }, data),
    }
}

// ----- receiver --------------------------------------------------------------

/// What the receiver listens to besides NATS.
struct ReceiverInputs {
    interest: mpsc::UnboundedReceiver<(String, bool)>,
    queries: mpsc::UnboundedReceiver<Query>,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
    resync: watch::Sender<u64>,
    stop: watch::Receiver<bool>,
}

async fn receiver(ctx: Ctx, client: async_nats::Client, sealer: Sealer, given: ReceiverInputs) {
    let ReceiverInputs {
        mut interest,
        mut queries,
        mut events,
        resync,
        mut stop,
    } = given;
    let mut opener = Opener::new(wire::key(&ctx.key), ctx.window_ms);
    let mut hubs = HubWatch::new(ctx.config.hub_timeout);
    // Every subscription is read here directly (no hop between async-nats
    // and the table): the fixed ones, and one per topic this hub's peers
    // hold (abortable: aborting ends the stream, SelectAll drops it, and
    // dropping the subscriber unsubscribes).
    let mut fixed = futures_util::stream::SelectAll::new();
    let mut by_topic = futures_util::stream::SelectAll::new();
    for subject in [
        ctx.subjects.hub(&ctx.link.hub),
        ctx.subjects.heartbeat(),
        ctx.subjects.status(),
        ctx.subjects.topics_query(),
    ] {
        match client.subscribe(subject.clone()).await {
            Ok(sub) => fixed.push(sub),
            Err(e) => tracing::error!(%subject, error = %e, "cluster: cannot subscribe"),
        }
    }
    let mut topics: HashMap<String, AbortHandle> = HashMap::new();
    let mut expire = tokio::time::interval(ctx.config.heartbeat / 2);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut epoch = 0u64;
    loop {
        tokio::select! {
            Some(msg) = fixed.next() => {
                on_message(&ctx, &client, &sealer, &mut opener, &mut hubs, msg).await;
            }
            Some(msg) = by_topic.next() => {
                on_message(&ctx, &client, &sealer, &mut opener, &mut hubs, msg).await;
            }
            Some(query) = queries.recv() => {
                tokio::spawn(ask_topics(ctx.clone(), client.clone(), sealer.clone(), query));
            }
            Some((topic, on)) = interest.recv() => {
                if on {
                    if topics.contains_key(&topic) {
                        continue;
                    }
                    match client.subscribe(ctx.subjects.topic(&topic)).await {
                        Ok(sub) => {
                            let (sub, handle) = futures_util::stream::abortable(sub);
                            by_topic.push(sub);
                            topics.insert(topic, handle);
                        }
                        Err(e) => tracing::warn!(%topic, error = %e, "cluster: cannot subscribe to a topic"),
                    }
                } else if let Some(handle) = topics.remove(&topic) {
                    handle.abort();
                }
            }
            Some(event) = events.recv() => match event {
                async_nats::Event::Connected => {
                    tracing::info!(hub = %ctx.link.hub, "cluster: NATS connected");
                    ctx.link.set_up(true);
                    ctx.tell(ClusterIn::Link(true)).await;
                    epoch += 1;
                    let _ = resync.send(epoch);
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!(hub = %ctx.link.hub, "cluster: NATS disconnected; serving local peers only");
                    ctx.link.set_up(false);
                    hubs.clear();
                    ctx.tell(ClusterIn::Link(false)).await;
                }
                async_nats::Event::SlowConsumer(sid) => {
                    ctx.link.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sid, "cluster: slow consumer (messages from NATS dropped)");
                }
                other => tracing::debug!(event = %other, "cluster: NATS event"),
            },
            _ = expire.tick() => {
                for change in hubs.expire(Instant::now()) {
                    if let HubChange::Gone { hub } = &change {
                        opener.forget(hub);
                    }
                    ctx.tell(change_input(change)).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// One message from NATS: opened (MAC, window, sequence) and handed on.
async fn on_message(
    ctx: &Ctx,
    client: &async_nats::Client,
    sealer: &Sealer,
    opener: &mut Opener,
    hubs: &mut HubWatch,
    msg: async_nats::Message,
) {
    match opener.open(msg.subject.as_str(), &msg.payload, wall_ms()) {
        Ok(opened) if opened.op == Op::TopicsQuery => {
            if let Some(reply) = msg.reply
                && *opened.hub != *ctx.link.hub
            {
                let (ctx, client, sealer) = (ctx.clone(), client.clone(), sealer.clone());
                tokio::spawn(answer_topics(ctx, client, sealer, reply.to_string()));
            }
        }
        Ok(opened) => {
            for input in inputs(ctx, hubs, opened) {
                ctx.tell(input).await;
            }
        }
        Err(e) => {
            ctx.link.counters.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(subject = %msg.subject, reason = e.code(), "cluster message dropped");
        }
    }
}

/// Answers another hub's `link.topic.list` with this hub's topics.
async fn answer_topics(ctx: Ctx, client: async_nats::Client, sealer: Sealer, reply: String) {
    let (tx, rx) = oneshot::channel();
    if ctx.router.send(RouterMsg::LocalTopics(tx)).await.is_err() {
        return;
    }
    let Ok(topics) = rx.await else { return };
    let data = CanonicalData::new(&serde_json::json!(topics));
    let bytes = sealer.seal(&reply, wall_ms(), &Op::Topics, Some(&data));
    let _ = client.publish(reply, Bytes::from(bytes)).await;
}

/// Asks every other hub for its topics; gathers up to `query.hubs`
/// answers within [`QUERY_WAIT`].
async fn ask_topics(ctx: Ctx, client: async_nats::Client, sealer: Sealer, query: Query) {
    let inbox = client.new_inbox();
    let mut answers = Vec::new();
    if let Ok(mut sub) = client.subscribe(inbox.clone()).await {
        let subject = ctx.subjects.topics_query();
        let bytes = sealer.seal(&subject, wall_ms(), &Op::TopicsQuery, None);
        if client
            .publish_with_reply(subject, inbox.clone(), Bytes::from(bytes))
            .await
            .is_ok()
        {
            let mut opener = Opener::new(wire::key(&ctx.key), ctx.window_ms);
            let deadline = tokio::time::Instant::now() + QUERY_WAIT;
            while answers.len() < query.hubs {
                let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await else {
                    break;
                };
                let Ok(opened) = opener.open(&inbox, &msg.payload, wall_ms()) else {
                    ctx.link.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let map = opened.data.and_then(|d| {
                    serde_json::from_str::<crate::routing::TopicMap>(d.as_str()).ok()
                });
                if let (Op::Topics, Some(map)) = (opened.op, map) {
                    answers.push(map);
                }
            }
        }
    }
    let _ = query.answers.send(answers);
}

fn change_input(change: HubChange) -> ClusterIn {
    match change {
        HubChange::Alive { hub, peers } => ClusterIn::HubAlive {
            hub: hub.into(),
            peers,
        },
        HubChange::Gone { hub } => ClusterIn::HubGone { hub: hub.into() },
    }
}

/// What an opened message means for the table.
fn inputs(ctx: &Ctx, hubs: &mut HubWatch, opened: wire::Opened) -> Vec<ClusterIn> {
    let hub = opened.hub;
    if hub == ctx.link.hub {
        return Vec::new(); // our own heartbeat, status or topic message
    }
    let data = opened.data.map(Arc::new);
    match opened.op {
        Op::Heartbeat { peers } => hubs
            .heartbeat(Instant::now(), &hub, peers)
            .map(change_input)
            .into_iter()
            .collect(),
        Op::Bye => hubs.bye(&hub).map(change_input).into_iter().collect(),
        Op::Release { kind, rev } => vec![ClusterIn::Released { hub, kind, rev }],
        Op::Lease { kind, rev } => {
            let max_age_ms = u64::try_from(ctx.config.lease_age.as_millis()).unwrap_or(u64::MAX);
            let lease = data
                .as_deref()
                .map(|d| wire::read_lease(d.as_str().as_bytes(), wall_ms(), max_age_ms));
            // The announcement is the sending hub's own word about its own
            // peer: a lease naming another hub or kind is not one.
            match lease {
                Some(Ok(lease)) if *lease.hub == *hub && *lease.kind == *kind => {
                    lease_in(kind, rev, lease).into_iter().collect()
                }
                _ => Vec::new(),
            }
        }
        // Answered by the receiver itself; answers go to a query's inbox.
        Op::TopicsQuery | Op::Topics => Vec::new(),
        Op::Deliver {
            id,
            msg_type,
            from,
            to,
        } => {
            let item = OutItem::new(id, msg_type, from, to, data);
            vec![ClusterIn::Deliver { hub, item }]
        }
        Op::Publish { topic, from, at } => vec![ClusterIn::Publish {
            topic,
            from,
            data,
            at,
        }],
        Op::Status { kind, at } => {
            let status = data.and_then(|d| serde_json::from_str(d.as_str()).ok());
            vec![ClusterIn::Status { kind, at, status }]
        }
    }
}

// ----- leases ----------------------------------------------------------------

/// A lease this hub holds for a local peer.
struct Held {
    conn: ConnId,
    rev: u64,
    lease: LeaseValue,
}

/// Seals leases (`key`) and tells the other hubs of a claim as soon as it
/// is written.
struct Announce {
    key: ring::hmac::Key,
    client: async_nats::Client,
    sealer: Sealer,
    subject: String,
}

impl Announce {
    async fn lease(&self, kind: &Arc<str>, rev: u64, lease: &LeaseValue) {
        let data = CanonicalData::new(&wire::lease_json(lease));
        let op = Op::Lease {
            kind: Arc::clone(kind),
            rev,
        };
        self.say(&op, Some(&data)).await;
    }

    async fn release(&self, kind: &Arc<str>, rev: u64) {
        let op = Op::Release {
            kind: Arc::clone(kind),
            rev: Some(rev),
        };
        self.say(&op, None).await;
    }

    async fn say(&self, op: &Op, data: Option<&CanonicalData>) {
        let bytes = self.sealer.seal(&self.subject, wall_ms(), op, data);
        let _ = self
            .client
            .publish(self.subject.clone(), Bytes::from(bytes))
            .await;
    }
}

async fn leases_task(
    ctx: Ctx,
    client: async_nats::Client,
    announce: Announce,
    mut cmds: mpsc::UnboundedReceiver<LeaseCmd>,
    mut resync: watch::Receiver<u64>,
) {
    let key = announce.key.clone();
    let js = jetstream::new(client);
    let bucket = format!("link_{}", ctx.config.name);
    let max_age_ms = u64::try_from(ctx.config.lease_age.as_millis()).unwrap_or(u64::MAX);
    // Claims made before the bucket is ready wait here.
    let mut waiting: Vec<LeaseCmd> = Vec::new();
    let mut held: HashMap<Arc<str>, Held> = HashMap::new();
    let mut refresh = tokio::time::interval(ctx.config.lease_age / 3);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut store: Option<kv::Store> = None;
    let mut watch: Option<kv::Watch> = None;
    loop {
        if store.is_none() && ctx.link.is_up() {
            store = open_bucket(&js, &bucket, ctx.config.lease_age).await;
            if let Some(s) = &store {
                watch = s.watch_with_history(">").await.ok();
                for cmd in std::mem::take(&mut waiting) {
                    lease_cmd(&ctx, s, &announce, &mut held, cmd).await;
                }
            }
        }
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                match &store {
                    Some(s) => {
                        let stop = matches!(cmd, LeaseCmd::Stop(_));
                        lease_cmd(&ctx, s, &announce, &mut held, cmd).await;
                        if stop {
                            return;
                        }
                    }
                    None => match cmd {
                        LeaseCmd::Stop(done) => {
                            let _ = done.send(());
                            return;
                        }
                        cmd => waiting.push(cmd),
                    },
                }
            }
            entry = next_entry(&mut watch) => match entry {
                Some(entry) => {
                    tracing::trace!(key = %entry.key, rev = entry.revision, op = ?entry.operation, "cluster: lease entry");
                    if let Some(input) = lease_input(&key, entry, max_age_ms) {
                        ctx.tell(input).await;
                    }
                }
                None => {
                    // The watch ended (its consumer was lost): watch again;
                    // the history replays the directory (the table skips
                    // revisions it has seen).
                    watch = match &store {
                        Some(s) => s.watch_with_history(">").await.ok(),
                        None => None,
                    };
                }
            },
            _ = refresh.tick() => {
                // While NATS is away every write would wait for its timeout;
                // the first tick after it is back refreshes.
                if let Some(s) = store.as_ref().filter(|_| ctx.link.is_up()) {
                    let queued = Queued { cmds: &mut cmds, waiting: &mut waiting };
                    refresh_all(&ctx, s, &announce, &mut held, queued).await;
                    // What came meanwhile, in order (a release after the
                    // refresh that skipped its kind).
                    for cmd in std::mem::take(&mut waiting) {
                        let stop = matches!(cmd, LeaseCmd::Stop(_));
                        lease_cmd(&ctx, s, &announce, &mut held, cmd).await;
                        if stop {
                            return;
                        }
                    }
                }
            }
            changed = resync.changed() => {
                if changed.is_err() {
                    return;
                }
                // NATS is back: the bucket handle is rebuilt, held leases
                // are claimed again (one may have expired meanwhile) and
                // the watch replays the directory.
                store = open_bucket(&js, &bucket, ctx.config.lease_age).await;
                if let Some(s) = &store {
                    watch = s.watch_with_history(">").await.ok();
                    // Commands queued while NATS was away are read first: a
                    // kind whose peer left meanwhile (its release still
                    // queued) is not claimed again, or the claim would
                    // displace the kind where it connected since.
                    let again: Vec<(Arc<str>, Held)> = held.drain().collect();
                    for (kind, h) in again {
                        let mut queued = Queued { cmds: &mut cmds, waiting: &mut waiting };
                        if queued.releases(&kind) {
                            // The queued release hands it back.
                            held.insert(kind, h);
                        } else {
                            claim(&ctx, s, &announce, &mut held, kind, h.conn, h.lease).await;
                        }
                    }
                    for cmd in std::mem::take(&mut waiting) {
                        let stop = matches!(cmd, LeaseCmd::Stop(_));
                        lease_cmd(&ctx, s, &announce, &mut held, cmd).await;
                        if stop {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The lease commands not acted on yet: those still in the channel and
/// those taken out of it to look at (`waiting`, run in order later).
struct Queued<'a> {
    cmds: &'a mut mpsc::UnboundedReceiver<LeaseCmd>,
    waiting: &'a mut Vec<LeaseCmd>,
}

impl Queued<'_> {
    /// Whether a release of `kind` is queued: its peer left, and the lease
    /// is handed back once the release runs. Until then the lease must not
    /// be claimed again (the kind may have connected to another hub since,
    /// and a claim would displace it there).
    fn releases(&mut self, kind: &str) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            self.waiting.push(cmd);
        }
        self.waiting
            .iter()
            .any(|c| matches!(c, LeaseCmd::Release { kind: k } if **k == *kind))
    }
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cluster: lease watch error; watching again");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

async fn open_bucket(js: &jetstream::Context, bucket: &str, age: Duration) -> Option<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Some(store);
    }
    // The bucket's stream, made as async-nats' `create_key_value` would
    // make it, without its account query (whose reply from nats-server 2.9,
    // Debian's, async-nats cannot read).
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: age.min(Duration::from_secs(120)),
        ..Default::default()
    };
    if let Err(e) = js.get_or_create_stream(config).await {
        tracing::warn!(%bucket, error = %e, "cluster: no lease bucket yet");
        return None;
    }
    match js.get_key_value(bucket).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(%bucket, error = %e, "cluster: no lease bucket yet");
            None
        }
    }
}

async fn lease_cmd(
    ctx: &Ctx,
    store: &kv::Store,
    announce: &Announce,
    held: &mut HashMap<Arc<str>, Held>,
    cmd: LeaseCmd,
) {
    match cmd {
        LeaseCmd::Claim {
            kind,
            conn,
            hello,
            connected_at,
            hello_id,
        } => {
            let lease = LeaseValue {
                hub: ctx.link.hub.to_string(),
                kind: kind.to_string(),
                hello: hello.to_value(),
                connected_at,
                hello_id: hello_id.map(|(id, ts)| (id.to_string(), ts)),
                t: wall_ms(),
            };
            claim(ctx, store, announce, held, kind, conn, lease).await;
        }
        LeaseCmd::Release { kind } => {
            if let Some(h) = held.remove(&kind) {
                let _ = store
                    .delete_expect_revision(wire::hex(&kind), Some(h.rev))
                    .await;
                // The table said `release` already, maybe before its claim
                // was answered; this one names the revision handed back, so
                // a watch that delivers the entry late cannot bring the
                // peer back on the other hubs.
                announce.release(&kind, h.rev).await;
            }
        }
        LeaseCmd::Stop(done) => {
            for (kind, h) in held.drain() {
                let _ = store
                    .delete_expect_revision(wire::hex(&kind), Some(h.rev))
                    .await;
            }
            let _ = done.send(());
        }
    }
}

/// Takes `kind`'s lease whoever holds it (a newer hello wins, as on one
/// hub): create if absent, else compare-and-set on the revision read; a
/// conflict (another hub wrote meanwhile) reads again.
async fn claim(
    ctx: &Ctx,
    store: &kv::Store,
    announce: &Announce,
    held: &mut HashMap<Arc<str>, Held>,
    kind: Arc<str>,
    conn: ConnId,
    mut lease: LeaseValue,
) {
    let key = &announce.key;
    let kv_key = wire::hex(&kind);
    let mut rev = None;
    for _ in 0..CLAIM_TRIES {
        lease.t = wall_ms();
        let value = Bytes::from(wire::seal_lease(key, &kv_key, &lease));
        let attempt = match store.entry(kv_key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                // The same hello that took the lease on another hub: a
                // replay (the frame was captured there). It loses.
                let held = wire::open_lease(key, &kv_key, &entry.value, wall_ms(), u64::MAX).ok();
                if let Some(held) = held
                    && held.hub != lease.hub
                    && held.hello_id.is_some()
                    && held.hello_id.as_ref().map(|(id, _)| id)
                        == lease.hello_id.as_ref().map(|(id, _)| id)
                {
                    tracing::warn!(%kind, "cluster: a hello replayed from another hub refused");
                    break;
                }
                store
                    .update(kv_key.as_str(), value, entry.revision)
                    .await
                    .map_err(|e| e.to_string())
            }
            Ok(_) => store
                .create(kv_key.as_str(), value)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(r) => {
                rev = Some(r);
                break;
            }
            Err(e) => tracing::debug!(%kind, error = %e, "cluster: claim conflict, reading again"),
        }
    }
    tracing::debug!(%kind, ?rev, "cluster: claim");
    if let Some(rev) = rev {
        announce.lease(&kind, rev, &lease).await;
        held.insert(kind.clone(), Held { conn, rev, lease });
    }
    ctx.tell(ClusterIn::Claimed { kind, conn, rev }).await;
}

/// Rewrites every held lease at its revision; one another hub took is lost.
/// A kind whose release is queued is left to its release.
async fn refresh_all(
    ctx: &Ctx,
    store: &kv::Store,
    announce: &Announce,
    held: &mut HashMap<Arc<str>, Held>,
    mut queued: Queued<'_>,
) {
    let key = &announce.key;
    let kinds: Vec<Arc<str>> = held.keys().cloned().collect();
    for kind in kinds {
        let Some(h) = held.get_mut(&kind) else {
            continue;
        };
        h.lease.t = wall_ms();
        let kv_key = wire::hex(&kind);
        let value = Bytes::from(wire::seal_lease(key, &kv_key, &h.lease));
        match store.update(kv_key.as_str(), value, h.rev).await {
            Ok(rev) => h.rev = rev,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                if queued.releases(&kind) {
                    // Its peer left (while this refresh waited on NATS,
                    // say) and may be on another hub by now, whose claim
                    // moved the revision: nothing to defend.
                    continue;
                }
                let writer = written_by(store, key, &kv_key, &ctx.link.hub).await;
                match writer {
                    Writer::Us(rev) => {
                        // Our own write: a refresh that timed out here (NATS
                        // unreachable, or a cut link) but reached the bucket
                        // later. The lease is still ours, at that revision.
                        if let Some(h) = held.get_mut(&kind) {
                            h.rev = rev;
                        }
                        continue;
                    }
                    Writer::Unknown => {
                        // The key could not be read: the next refresh looks
                        // again (taking it now could overwrite a newer claim).
                        continue;
                    }
                    Writer::AnotherHub | Writer::Outsider => {}
                }
                let Some(h) = held.remove(&kind) else {
                    continue;
                };
                if writer == Writer::AnotherHub {
                    // A newer hello on another hub took the kind.
                    ctx.tell(ClusterIn::Claimed {
                        kind,
                        conn: h.conn,
                        rev: None,
                    })
                    .await;
                } else {
                    // Someone without the cluster secret wrote the key: it
                    // proves nothing; the lease is taken back.
                    tracing::warn!(%kind, "cluster: a lease overwritten without the cluster secret; taking it back");
                    claim(ctx, store, announce, held, kind, h.conn, h.lease).await;
                }
            }
            Err(e) => tracing::debug!(%kind, error = %e, "cluster: lease refresh failed"),
        }
    }
}

/// Who wrote `kv_key`'s current value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// This hub, at this revision.
    Us(u64),
    /// Another hub of the cluster (sealed with the cluster secret).
    AnotherHub,
    /// No hub: deleted, purged, or written without the secret.
    Outsider,
    /// The key could not be read (NATS or JetStream failed).
    Unknown,
}

async fn written_by(store: &kv::Store, key: &ring::hmac::Key, kv_key: &str, hub: &str) -> Writer {
    match store.entry(kv_key).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            match wire::open_lease(key, kv_key, &entry.value, wall_ms(), u64::MAX) {
                Ok(lease) if lease.hub == hub => Writer::Us(entry.revision),
                Ok(_) => Writer::AnotherHub,
                Err(_) => Writer::Outsider,
            }
        }
        // Deleted or purged: only a hub handing a lease back does that
        // legitimately, and never ours; take it back either way.
        Ok(_) => Writer::Outsider,
        Err(e) => {
            tracing::debug!(key = %kv_key, error = %e, "cluster: cannot read a lease");
            Writer::Unknown
        }
    }
}

/// A bucket entry as the table's input (entries failing their MAC or too
/// old are dropped and counted).
fn lease_input(key: &ring::hmac::Key, entry: kv::Entry, max_age_ms: u64) -> Option<ClusterIn> {
    let kind = unhex(&entry.key)?;
    match entry.operation {
        kv::Operation::Put => {
            let lease = wire::open_lease(key, &entry.key, &entry.value, wall_ms(), max_age_ms)
                .map_err(|e| tracing::debug!(key = %entry.key, reason = e.code(), "lease dropped"))
                .ok()?;
            if lease.kind != kind {
                return None;
            }
            lease_in(kind.into(), entry.revision, lease)
        }
        kv::Operation::Delete | kv::Operation::Purge => Some(ClusterIn::LeaseGone {
            kind: kind.into(),
            rev: entry.revision,
        }),
    }
}

/// The table's input for a lease at `rev` (from the watch or announced).
fn lease_in(kind: Arc<str>, rev: u64, lease: LeaseValue) -> Option<ClusterIn> {
    let hello = Hello::sanitize(Some(&lease.hello)).ok()?;
    Some(ClusterIn::Lease {
        kind,
        hub: lease.hub.into(),
        rev,
        hello,
        connected_at: lease.connected_at,
        hello_id: lease.hello_id.map(|(id, ts)| (id.into(), ts)),
    })
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(kind: &str) -> LeaseCmd {
        LeaseCmd::Release { kind: kind.into() }
    }

    fn claim(kind: &str) -> LeaseCmd {
        LeaseCmd::Claim {
            kind: kind.into(),
            conn: 1,
            hello: Hello::sanitize(Some(&serde_json::json!({ "kind": kind })))
                .expect("a valid hello"),
            connected_at: 0,
            hello_id: None,
        }
    }

    fn names(cmds: &[LeaseCmd]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                LeaseCmd::Claim { kind, .. } => format!("claim {kind}"),
                LeaseCmd::Release { kind } => format!("release {kind}"),
                LeaseCmd::Stop(_) => "stop".to_owned(),
            })
            .collect()
    }

    /// What a refresh or a resync sees before it defends a lease: a
    /// release still queued (its peer left, maybe for another hub) counts,
    /// and every command looked at is kept, in order, to run after.
    #[test]
    fn a_queued_release_is_seen_and_the_queue_keeps_its_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut waiting = vec![claim("a")];
        for cmd in [release("b"), claim("c")] {
            tx.send(cmd).expect("open");
        }
        let mut queued = Queued {
            cmds: &mut rx,
            waiting: &mut waiting,
        };
        assert!(queued.releases("b"));
        assert!(!queued.releases("a"), "a claim is not a release");
        assert!(!queued.releases("c"));
        tx.send(release("c")).expect("open");
        assert!(queued.releases("c"), "one queued since is seen too");
        assert_eq!(
            names(&waiting),
            ["claim a", "release b", "claim c", "release c"]
        );
    }
}
