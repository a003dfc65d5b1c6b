//! The router task: a thin tokio driver around the routing table
//! ([`Routing`], `routing/`). It reads the mailbox and the sockets'
//! inboxes (one message from each in turn: `inbox.rs`), reads the clock,
//! feeds the table, and carries the table's outputs out: controls to the
//! sockets' readers, server-RPC handlers and ACL hooks onto their own
//! tasks, events onto the broadcast channels. It makes no routing decision
//! of its own; deliveries go straight from the table into the recipients'
//! outboxes (per-socket locks), whose writers sign and send them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use link_protocol::conn::Now;
use tokio::sync::mpsc;

use crate::acl::{self, Verdict};
use crate::inbox::Ring;
use crate::mailbox::{ConnControl, RouterMsg};
use crate::routing::{AclQuery, ConnId, Route, Routing, RoutingConfig, Task};
use crate::shared::{Shared, now, tokio_instant, wall_ms};

/// Mailbox messages, and inbox messages, handled per wake-up (one clock
/// read each).
const BATCH: usize = 64;
/// Time the router handles inbox messages for before it lets the other
/// tasks of its worker run (those it woke wait in its worker's queue).
const SLICE: Duration = Duration::from_millis(1);

pub(crate) struct Router {
    shared: Arc<Shared>,
    table: Routing,
    /// Each attached socket's control channel (to its reader).
    ctls: HashMap<ConnId, Arc<ConnControl>>,
    /// Inboxes with messages waiting, served one message each in turn
    /// (`inbox.rs`).
    ring: Ring,
    /// The cluster driver, when the hub is in a cluster.
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterHandle>,
}

impl Router {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let replay = shared.clone();
        let table = Routing::new(RoutingConfig::from_hub(&shared.config))
            .with_recent_ids(Box::new(move || replay.replay.len()));
        Self {
            shared,
            table,
            ctls: HashMap::new(),
            ring: Ring::default(),
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }

    /// Joins the cluster the configuration names: the table learns of the
    /// link, the driver starts.
    #[cfg(feature = "cluster")]
    pub(crate) fn with_cluster(mut self) -> Self {
        let Some(config) = self.shared.config.cluster.clone() else {
            return self;
        };
        let (link, outbound) = crate::cluster::link::ClusterLink::new(crate::ids::hub_id().into());
        let handle = crate::cluster::start(
            config,
            link.clone(),
            outbound,
            self.shared.router.clone(),
            self.shared.config.replay_window,
        );
        self.table.join_cluster(link);
        self.cluster = Some(handle);
        self
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<RouterMsg>) {
        let sweep_every = self
            .shared
            .config
            .replay_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let deadline = self.table.poll_timeout();
            // Sockets with frames waiting: take what the mailbox has without
            // waiting for more, then serve them (the loop yields below).
            let busy = !self.ring.is_empty();
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH), if !busy => {
                    if n == 0 {
                        return;
                    }
                }
                () = std::future::ready(()), if busy => {
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(msg) => batch.push(msg),
                            Err(_) => break,
                        }
                    }
                }
                _ = sweep.tick() => self.shared.replay.sweep(wall_ms() as f64),
                // Peer lists held back (rate, in-flight cap) or the final
                // list once membership is quiet.
                _ = tokio::time::sleep_until(deadline.map_or_else(far_future, tokio_instant)), if deadline.is_some() => {
                    self.table.handle_timeout(now());
                    self.carry_out();
                }
            }
            if batch.is_empty() && self.ring.is_empty() {
                continue;
            }
            // One clock read and one listener check per wake-up: the
            // messages of a wake-up are handled at one instant.
            let now = now();
            self.table.set_listening(self.shared.listeners());
            let mut left = batch.len();
            for msg in batch.drain(..) {
                left -= 1;
                if let RouterMsg::Ready(inbox) = msg {
                    self.ring.push(inbox);
                    continue;
                }
                self.handle(now, msg);
                let more = left > 0 || !self.ring.is_empty() || !rx.is_empty();
                self.table.handle_input_done(now, more);
                self.carry_out();
            }
            // One message from each socket with something waiting, in turn,
            // until BATCH messages or a SLICE of time; then the other tasks
            // of this worker (those the table just woke: writers, readers)
            // get their turn before the next wake-up.
            let started = std::time::Instant::now();
            for n in 1..=BATCH {
                let Some(msg) = self.ring.next(&self.shared.queued) else {
                    break;
                };
                self.handle(now, msg);
                let more = !self.ring.is_empty() || !rx.is_empty();
                self.table.handle_input_done(now, more);
                let refused = self.carry_out();
                self.ring.done(refused);
                // The clock every few messages: most take a few µs.
                if n % 8 == 0 && started.elapsed() >= SLICE {
                    break;
                }
            }
            if !self.ring.is_empty() {
                tokio::task::yield_now().await;
            }
            // One atomic load per wake-up while no dashboard is open.
            self.shared.dashboard_revision(self.table.revision());
        }
    }

    fn handle(&mut self, now: Now, msg: RouterMsg) {
        match msg {
            // Put in the ring as it arrives (`run`).
            RouterMsg::Ready(inbox) => self.ring.push(inbox),
            RouterMsg::Attach {
                conn,
                outbox,
                ctl,
                remote,
            } => {
                self.ctls.insert(conn, ctl);
                self.table.handle_attach(conn, Route::Local(outbox), remote);
            }
            RouterMsg::Register {
                conn,
                hello,
                hello_id,
                peer_deltas,
            } => self
                .table
                .handle_register_asking(now, conn, hello, peer_deltas, Some(hello_id)),
            RouterMsg::Inbound { conn, kind, env } => {
                self.table.handle_inbound(now, conn, kind, env)
            }
            RouterMsg::RateLimitedRpc { conn, kind, id } => {
                self.table.handle_rate_limited_rpc(conn, &kind, &id)
            }
            RouterMsg::Verdict { ticket, verdict } => {
                self.table.handle_verdict(now, ticket, verdict)
            }
            RouterMsg::ServerRpcDone { ticket, result } => {
                self.table.handle_server_rpc_done(now, ticket, result)
            }
            RouterMsg::Closed { conn, code, reason } => {
                self.table.handle_closed(now, conn, code, reason);
                // After the table's controls for it (none are sent to a
                // closed socket anyway).
                self.ctls.remove(&conn);
            }
            RouterMsg::Cluster(input) => {
                // A hello accepted on another hub cannot be replayed here.
                if let crate::cluster::link::ClusterIn::Lease {
                    kind,
                    hello_id: Some((id, ts)),
                    ..
                } = &input
                {
                    use link_protocol::ReplayCheck;
                    let _ = self.shared.replay.checker().check(
                        kind,
                        id,
                        *ts,
                        false,
                        now.wall_ms as f64,
                    );
                }
                self.table.handle_cluster(now, input)
            }
            RouterMsg::LocalTopics(tx) => {
                let _ = tx.send(self.table.local_topics());
            }
            RouterMsg::Health(tx) => {
                let _ = tx.send(self.table.health());
            }
            RouterMsg::State(tx) => {
                let _ = tx.send(self.table.state());
            }
            RouterMsg::Stats(tx) => {
                let _ = tx.send(self.table.stats());
            }
            RouterMsg::Dashboard(tx) => {
                let _ = tx.send(self.table.dashboard());
            }
            RouterMsg::CloseAll { code, reason, done } => {
                let told = self.table.close_all(code, &reason);
                self.carry_out();
                let _ = done.send(told);
            }
            RouterMsg::TerminateAll(done) => {
                self.table.terminate_all();
                self.carry_out();
                let _ = done.send(());
            }
            RouterMsg::Stop(done) => {
                self.table.stop();
                self.carry_out();
                // A clustered hub hands its leases back before it says done.
                #[cfg(feature = "cluster")]
                if let Some(cluster) = &self.cluster {
                    return cluster.stop(done);
                }
                let _ = done.send(());
            }
        }
    }

    /// Sends the table's controls, starts its tasks, publishes its events.
    /// Returns the frames the table dropped (its protocol errors) or
    /// relayed to nobody (every recipient's outbox full): the sender's
    /// reader paces them.
    fn carry_out(&mut self) -> usize {
        let mut errors = self.table.take_unheard();
        while let Some((conn, ctl)) = self.table.poll_control() {
            if let Some(control) = self.ctls.get(&conn) {
                control.send(ctl);
            }
        }
        while let Some(task) = self.table.poll_task() {
            self.spawn(task);
        }
        while let Some(event) = self.table.poll_event() {
            self.shared.emit(|| event);
        }
        while let Some(error) = self.table.poll_protocol_error() {
            self.shared.metrics.recent_error(&error, None, wall_ms());
            errors += 1;
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            while let Some(out) = self.table.poll_cluster() {
                cluster.send(out);
            }
        }
        errors
    }

    fn spawn(&self, task: Task) {
        let shared = self.shared.clone();
        match task {
            Task::ServerRpc(call) => {
                let handler = shared.config.handlers.get(&call.request.rpc_type).cloned();
                tokio::spawn(async move {
                    let result = match handler {
                        Some(handler) => {
                            match std::panic::AssertUnwindSafe(handler.call(call.request))
                                .catch_unwind()
                                .await
                            {
                                Ok(r) => r,
                                Err(_) => {
                                    Err(link_protocol::HandlerError::internal("handler panicked"))
                                }
                            }
                        }
                        None => Err(link_protocol::HandlerError::internal("handler missing")),
                    };
                    let ticket = call.ticket;
                    let _ = shared
                        .router
                        .send(RouterMsg::ServerRpcDone { ticket, result })
                        .await;
                });
            }
            Task::ClusterTopics {
                ticket,
                local,
                hubs,
                topic,
            } => {
                #[cfg(feature = "cluster")]
                if let Some(cluster) = &self.cluster {
                    let others = cluster.topics(hubs);
                    tokio::spawn(async move {
                        let mut merged = local;
                        for map in others.await {
                            for (t, kinds) in map {
                                let subs = merged.entry(t).or_default();
                                for kind in kinds {
                                    if !subs.contains(&kind) {
                                        subs.push(kind);
                                    }
                                }
                            }
                        }
                        let result =
                            Ok(crate::routing::topic_list_value(&merged, topic.as_deref()));
                        let _ = shared
                            .router
                            .send(RouterMsg::ServerRpcDone { ticket, result })
                            .await;
                    });
                    return;
                }
                let _ = (hubs, &shared);
                let result = Ok(crate::routing::topic_list_value(&local, topic.as_deref()));
                tokio::spawn(async move {
                    let _ = shared
                        .router
                        .send(RouterMsg::ServerRpcDone { ticket, result })
                        .await;
                });
            }
            Task::Judge { ticket, query } => {
                tokio::spawn(async move {
                    let verdict = ask_hook(&shared.config.acl, query).await;
                    let _ = shared
                        .router
                        .send(RouterMsg::Verdict { ticket, verdict })
                        .await;
                });
            }
        }
    }
}

/// Runs the hook a query is for (a panicking hook denies: fail closed).
async fn ask_hook(hooks: &acl::Acl, query: AclQuery) -> Verdict {
    let op = query.op();
    match query {
        AclQuery::Rpc(ctx) => match &hooks.can_rpc {
            Some(h) => acl::judge(h, ctx, op).await,
            None => Verdict::Allow,
        },
        AclQuery::Publish(ctx) => match &hooks.can_publish {
            Some(h) => acl::judge(h, ctx, op).await,
            None => Verdict::Allow,
        },
        AclQuery::Subscribe(ctx) => match &hooks.can_subscribe {
            Some(h) => acl::judge(h, ctx, op).await,
            None => Verdict::Allow,
        },
        AclQuery::Send(ctx) => match &hooks.can_send {
            Some(h) => acl::judge(h, ctx, op).await,
            None => Verdict::Allow,
        },
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
