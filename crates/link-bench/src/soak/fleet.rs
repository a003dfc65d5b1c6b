//! The soak's peers: one [`LinkClient`] per slot for the whole run, each
//! answering the `echo` RPC, subscribed to the soak topic and reading its
//! direct messages into the [`Ledger`]. Churn stops a client and starts it
//! again (the same client: its subscription and handlers come back with
//! it); a task per client turns its link events into sessions:
//!
//! ```text
//!  Ready ─► session_start ─► link.peer.list {kind: self} answered ─► subscribed
//!  Disconnect ─► session_end (and, unless we were churning it, `dropped` += 1)
//! ```
//!
//! The hub handles one connection's frames in order, so the answer to a
//! server RPC sent after the topic subscription proves the subscription
//! was registered: from then on a publish must reach this peer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use link_client::{ClientConfig, LinkClient, LinkEvent, RootCertificates, StopOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::ledger::{Flow, Ledger, Micros};
use crate::error::BenchError;
use crate::target::HubTarget;

/// The RPC every peer answers with its argument.
pub(crate) const ECHO: &str = "echo";
/// The `directType` of the soak's direct messages.
pub(crate) const DIRECT: &str = "soak";
/// Peers started at once while the fleet opens.
const OPEN_BATCH: usize = 50;
/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

/// What a publish or direct send carries: talker slot, talker session,
/// sequence number.
#[derive(Debug, Deserialize)]
pub(crate) struct Mark {
    pub(crate) t: usize,
    pub(crate) e: u32,
    pub(crate) s: u64,
}

impl Mark {
    pub(crate) fn value(talker: usize, epoch: u32, seq: u64) -> Value {
        json!({ "t": talker, "e": epoch, "s": seq })
    }
}

/// The ledger behind a lock that a panicking holder does not poison.
#[derive(Clone, Debug)]
pub(crate) struct Books(Arc<Mutex<Ledger>>);

impl Books {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the peers connect: one hub, or the hubs of a cluster, every peer
/// given all of them (its own first, the hub of slot `i` being
/// `urls[i % urls.len()]`) so that it fails over.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    pub(crate) urls: Vec<String>,
    pub(crate) secret: String,
    pub(crate) roots: Option<RootCertificates>,
}

impl Endpoints {
    /// The one hub of `hub`.
    pub(crate) fn single(hub: &HubTarget) -> Self {
        Self {
            urls: vec![hub.url().to_owned()],
            secret: hub.secret().to_owned(),
            roots: hub.root_certificates().cloned(),
        }
    }

    /// Slot `slot`'s failover list: its hub, then the others in order.
    pub(crate) fn for_slot(&self, slot: usize) -> Vec<String> {
        let n = self.urls.len().max(1);
        (0..self.urls.len())
            .map(|i| self.urls[(slot + i) % n].clone())
            .collect()
    }
}

/// The RPC calls each callee's `echo` handler ran, by call number: which
/// slot ran it and how many times. Written before the handler answers, so
/// an answered call that is not here was never handled by its callee.
#[derive(Clone, Debug, Default)]
pub(crate) struct Handled(Arc<Mutex<HashMap<u64, (usize, u32)>>>);

impl Handled {
    fn record(&self, call: u64, slot: usize) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(call).or_insert((slot, 0));
        entry.1 += 1;
    }

    /// Slot `slot` ran call `call` (at least once).
    pub(crate) fn by(&self, call: u64, slot: usize) -> bool {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&call).is_some_and(|&(s, _)| s == slot)
    }

    /// Calls that a handler ran more than once (the extra runs).
    pub(crate) fn repeated(&self) -> u64 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.values()
            .map(|&(_, n)| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

/// Everything the soak's tasks share.
pub(crate) struct Fleet {
    base: Instant,
    pub(crate) books: Books,
    pub(crate) kinds: Vec<String>,
    pub(crate) clients: Vec<LinkClient>,
    /// What the `echo` handlers ran.
    pub(crate) handled: Handled,
    churning: Vec<AtomicBool>,
    /// Disconnects we did not cause.
    pub(crate) dropped: AtomicU64,
    /// Those, by close code and reason (`1006 keepalive timeout`, …).
    pub(crate) drop_reasons: Mutex<BTreeMap<String, u64>>,
    /// Churns done.
    pub(crate) churns: AtomicU64,
    /// Set by [`Fleet::close`]: the disconnects that follow are ours.
    closing: AtomicBool,
    pub(crate) topic: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The hub URLs (`Endpoints::urls`).
    urls: Vec<String>,
    /// Per slot, the hub (index of `urls`) its client last connected to
    /// (`usize::MAX`: none yet).
    on_hub: Vec<AtomicUsize>,
}

impl Fleet {
    /// Microseconds since `base`.
    pub(crate) fn now(&self) -> Micros {
        self.base.elapsed().as_micros() as Micros
    }

    /// Makes `n` clients (`talkers` of them send) and opens them, in
    /// batches, until each has a session with a confirmed subscription.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        hub: &Endpoints,
        tag: &str,
        n: usize,
        talkers: usize,
        drain: Duration,
        rpc_timeout: Duration,
        open_timeout: Duration,
    ) -> Result<Arc<Self>, BenchError> {
        let base = Instant::now();
        let books = Books(Arc::new(Mutex::new(Ledger::new(
            n,
            talkers,
            drain.as_micros() as Micros,
        ))));
        let topic = format!("soak.{tag}");
        let kinds: Vec<String> = (0..n).map(|i| format!("soak-{tag}-p{i}")).collect();
        let mut clients = Vec::with_capacity(n);
        let mut handlers = Vec::with_capacity(n);
        let handled = Handled::default();
        for (slot, kind) in kinds.iter().enumerate() {
            let ran = handled.clone();
            let mut builder = ClientConfig::builder()
                .urls(hub.for_slot(slot))
                .secret(hub.secret.as_str())
                .kind(kind.as_str())
                .rpc_timeout(rpc_timeout)
                .handler(ECHO, move |call| {
                    if let Some(n) = call.data.as_ref().and_then(|d| d["n"].as_u64()) {
                        ran.record(n, slot);
                    }
                    async move { Ok(call.data.unwrap_or(Value::Null)) }
                });
            if let Some(roots) = &hub.roots {
                builder = builder.root_certificates(roots.clone());
            }
            let config = builder.build().map_err(|e| BenchError::Peer {
                scenario: "soak",
                kind: kind.clone(),
                reason: e.to_string(),
            })?;
            let client = LinkClient::new(config);
            let b = books.clone();
            let handler = client
                .subscribe_with(&topic, move |msg| {
                    if let Ok(m) = msg.payload_as::<Mark>() {
                        let now = base.elapsed().as_micros() as Micros;
                        b.lock().received(slot, m.t, Flow::Publish, (m.e, m.s), now);
                    }
                })
                .map_err(|e| BenchError::op("soak", e))?;
            handlers.push(handler);
            clients.push(client);
        }
        let fleet = Arc::new(Self {
            base,
            books,
            kinds,
            clients,
            handled,
            churning: (0..n).map(|_| AtomicBool::new(false)).collect(),
            dropped: AtomicU64::new(0),
            drop_reasons: Mutex::new(BTreeMap::new()),
            churns: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            topic,
            tasks: Mutex::new(Vec::new()),
            urls: hub.urls.clone(),
            on_hub: (0..n).map(|_| AtomicUsize::new(usize::MAX)).collect(),
        });
        let mut tasks = Vec::with_capacity(2 * n + 1);
        // The topic handlers live as long as the fleet's tasks do.
        tasks.push(tokio::spawn(async move {
            std::future::pending::<()>().await;
            drop(handlers);
        }));
        for slot in 0..n {
            tasks.push(tokio::spawn(directs(fleet.clone(), slot)));
            tasks.push(tokio::spawn(sessions(fleet.clone(), slot)));
        }
        *fleet.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        let deadline = Instant::now() + open_timeout;
        for batch in (0..n).collect::<Vec<_>>().chunks(OPEN_BATCH) {
            for &slot in batch {
                fleet.clients[slot].start();
            }
            while !batch.iter().all(|&s| fleet.up(s)) {
                if Instant::now() >= deadline {
                    let up = (0..n).filter(|&s| fleet.up(s)).count();
                    fleet.close().await;
                    return Err(BenchError::Stalled {
                        scenario: "soak",
                        idle: open_timeout,
                        what: format!("{up} of {n} peers connected and subscribed"),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(fleet)
    }

    /// Slot `slot` has a session up with a confirmed subscription and is
    /// not being churned.
    pub(crate) fn up(&self, slot: usize) -> bool {
        !self.churning[slot].load(Ordering::Acquire) && self.books.lock().up(slot)
    }

    /// Peers with a session up.
    pub(crate) fn connected(&self) -> u64 {
        let books = self.books.lock();
        (0..self.kinds.len())
            .filter(|&s| books.live(s).is_some())
            .count() as u64
    }

    /// Waits until every slot is up; false after `timeout`.
    pub(crate) async fn all_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if (0..self.kinds.len()).all(|s| self.up(s)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Churns slot `slot` if it is up: closes its session, waits `down`,
    /// starts it again (its session task marks it up once back).
    pub(crate) async fn churn(&self, slot: usize, down: Duration) {
        if !self.up(slot) || self.churning[slot].swap(true, Ordering::AcqRel) {
            return;
        }
        self.churns.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        self.books.lock().session_end(slot, now);
        self.clients[slot].stop_with(StopOptions::immediate()).await;
        tokio::time::sleep(down).await;
        self.clients[slot].start();
    }

    /// Checks every peer's `peers.update` list against the hub's
    /// (`link.peer.list`) and the hub's against the fleet, until they all
    /// match or `settle` passes. Every slot must be up.
    pub(crate) async fn check_lists(&self, settle: Duration) -> ListCheck {
        let start = Instant::now();
        let expected: BTreeSet<&str> = self.kinds.iter().map(String::as_str).collect();
        loop {
            let mut last = self.compare_lists(&expected).await.unwrap_or(ListCheck {
                wrong_peers: self.kinds.len() as u64,
                hub_wrong: true,
                ..ListCheck::default()
            });
            if last.wrong_peers == 0 && !last.hub_wrong {
                last.settled_in = Some(start.elapsed());
                return last;
            }
            if start.elapsed() >= settle {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn compare_lists(&self, expected: &BTreeSet<&str>) -> Option<ListCheck> {
        let asked = self.clients.first()?;
        let listed = asked
            .rpc(link_protocol::SERVER, "link.peer.list", None)
            .await
            .ok()?;
        let hub: BTreeSet<String> = listed["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p["kind"].as_str().map(str::to_owned))
            .collect();
        let hub_wrong = hub.iter().map(String::as_str).ne(expected.iter().copied());
        // Counts first (cheap); a peer whose count is off is wrong without
        // copying its list.
        let counted = self
            .clients
            .iter()
            .filter(|c| c.health().peer_count != hub.len())
            .count() as u64;
        if counted > 0 {
            return Some(ListCheck {
                wrong_peers: counted,
                hub_wrong,
                ..ListCheck::default()
            });
        }
        let mut wrong = 0;
        for (i, (client, kind)) in self.clients.iter().zip(&self.kinds).enumerate() {
            let without_self = |k: &&str| *k != kind.as_str();
            let want = hub.iter().map(String::as_str).filter(without_self);
            let peers = client.peers();
            let mut mine: Vec<&str> = peers.iter().map(|p| p.kind.as_str()).collect();
            mine.sort_unstable();
            mine.dedup();
            if mine.len() != peers.len() || mine.into_iter().filter(without_self).ne(want) {
                wrong += 1;
            }
            if i % 16 == 15 {
                // A thousand lists of a thousand peers: let the peers run.
                tokio::task::yield_now().await;
            }
        }
        Some(ListCheck {
            wrong_peers: wrong,
            hub_wrong,
            ..ListCheck::default()
        })
    }

    /// Stops every client and task.
    pub(crate) async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        for c in &self.clients {
            c.stop_with(StopOptions::immediate()).await;
        }
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

/// One peer-list check.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ListCheck {
    /// Peers whose list differed from the hub's when the check ended.
    pub wrong_peers: u64,
    /// The hub's list differed from the peers we had connected.
    pub hub_wrong: bool,
    /// Peers that were not back up (connected and subscribed) in time to
    /// be checked.
    pub not_up: u64,
    /// How long the lists took to match.
    pub settled_in: Option<Duration>,
}

/// Records slot `slot`'s direct messages.
async fn directs(fleet: Arc<Fleet>, slot: usize) {
    let mut stream = fleet.clients[slot].directs();
    while let Some(msg) = stream.recv().await {
        if msg.msg_type != DIRECT {
            continue;
        }
        if let Ok(m) = msg.data_as::<Mark>() {
            let now = fleet.now();
            fleet
                .books
                .lock()
                .received(slot, m.t, Flow::Direct, (m.e, m.s), now);
        }
    }
}

/// Turns slot `slot`'s link events into sessions.
async fn sessions(fleet: Arc<Fleet>, slot: usize) {
    let client = fleet.clients[slot].clone();
    let mut events = client.events();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => {
                // Events were skipped (a storm of peer.connect): take the
                // state from the client instead.
                let live = fleet.books.lock().live(slot).is_some();
                if client.is_ready() && !live {
                    ready(&fleet, &client, slot).await;
                } else if !client.is_ready() && live {
                    disconnected(&fleet, slot, true, None);
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match &*event {
            LinkEvent::Connect { url, .. } => {
                if let Some(i) = fleet.urls.iter().position(|u| u == url) {
                    fleet.on_hub[slot].store(i, Ordering::Relaxed);
                }
            }
            LinkEvent::Ready { .. } => ready(&fleet, &client, slot).await,
            LinkEvent::Disconnect {
                was_ready,
                code,
                reason,
                ..
            } => {
                let why = match code {
                    Some(c) => format!("{c}:{reason}"),
                    None => format!("none:{reason}"),
                };
                disconnected(&fleet, slot, *was_ready, Some(why));
            }
            _ => {}
        }
    }
}

/// A new session: opened now, subscribed once a server RPC sent after the
/// subscription is answered.
async fn ready(fleet: &Fleet, client: &LinkClient, slot: usize) {
    let now = fleet.now();
    let epoch = {
        let mut books = fleet.books.lock();
        let epoch = books.session_start(slot, now);
        let hub = fleet.on_hub[slot].load(Ordering::Relaxed);
        if hub != usize::MAX {
            books.session_hub(slot, epoch, hub);
        }
        epoch
    };
    let barrier = client
        .rpc(
            link_protocol::SERVER,
            "link.peer.list",
            Some(json!({ "kind": fleet.kinds[slot] })),
        )
        .await;
    if barrier.is_ok() {
        let now = fleet.now();
        fleet.books.lock().subscribed(slot, epoch, now);
    }
    fleet.churning[slot].store(false, Ordering::Release);
}

/// The session ended: by our hand (churn, close) or the hub's (`dropped`).
fn disconnected(fleet: &Fleet, slot: usize, was_ready: bool, why: Option<String>) {
    let ours =
        fleet.churning[slot].load(Ordering::Acquire) || fleet.closing.load(Ordering::Acquire);
    if !ours && was_ready {
        fleet.dropped.fetch_add(1, Ordering::Relaxed);
        let why = why.unwrap_or_else(|| "unknown (events skipped)".to_owned());
        *fleet
            .drop_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(why)
            .or_default() += 1;
    }
    let now = fleet.now();
    fleet.books.lock().session_end(slot, now);
}
