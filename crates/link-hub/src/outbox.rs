//! Per-socket outbox (protocol §11): a bounded FIFO of messages to build, sign
//! and write, shared by the router (producer) and the socket's writer task
//! (consumer) under a per-socket lock — never a global one.
//!
//! - Items are built and signed at flush (fresh `ts`), by the writer, with
//!   the recipient's key: signing runs on as many tasks as there are sockets.
//! - The queue is capped by `max_outbox_bytes` using the reference's size
//!   estimate; a refused push is an `outbox-overflow`.
//! - `backpressure` is edge-triggered: the first push while the writer is
//!   stalled on a full socket, once per episode (until the queue drains).
//! - A queued `status.update` is replaced in place by a newer one from the
//!   same originating peer, and a queued `peers.update` by a newer list
//!   (conflation); a queued `rpc.request` can be removed by its caller's
//!   `rpc.cancel`.
//! - Peer lists carry the hub's [`ListGauge`]: their bytes count from the
//!   push until the writer's flush that put them on the socket (or until
//!   the outbox drops them), so the routing table can bound what every
//!   writer together holds of lists.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use link_protocol::envelope::SharedPrefix;
use link_protocol::{CanonicalData, Key, KeyId, msg_type};
use link_transport::writer::{Outgoing, Taken, Transmit};
use tokio::sync::Notify;

/// One message waiting to be written.
#[derive(Clone, Debug)]
pub(crate) struct OutItem {
    /// `None`: a fresh id is made at flush.
    pub(crate) id: Option<Arc<str>>,
    pub(crate) msg_type: &'static str,
    pub(crate) from: Arc<str>,
    pub(crate) to: Arc<str>,
    pub(crate) data: Option<Arc<CanonicalData>>,
    /// Conflation key for `status.update` (the originating peer).
    pub(crate) origin: Option<Arc<str>>,
    /// Shared by the items of one fan-out (same `from` and `data`): the
    /// first writer to encode one fills it, writers under the same key
    /// reuse it.
    pub(crate) prefix: Option<Arc<PrefixCell>>,
    /// Counts this item's bytes until they are flushed (peer lists).
    pub(crate) gauge: Option<Arc<ListGauge>>,
    size: usize,
}

/// Bytes of peer lists queued or being written, across every outbox of a
/// hub, and the recipients whose writers have flushed one since the routing
/// table last looked (it serves them their next list without a pass over
/// every peer).
#[derive(Debug, Default)]
pub(crate) struct ListGauge {
    bytes: AtomicUsize,
    /// Lists given back (written, or dropped with their socket) since the
    /// start: the table tells writers that progress from stalled ones.
    released: AtomicU64,
    written: Mutex<Vec<Arc<str>>>,
}

impl ListGauge {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Lists given back since the start (it only grows).
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.released.fetch_add(1, Ordering::Relaxed);
        // Saturating: a release never exceeds what was added, but be safe.
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// A list to `kind` is on its socket.
    fn written(&self, kind: Arc<str>) {
        self.lock_written().push(kind);
    }

    /// The recipients whose lists were written since the last call (a kind
    /// may appear more than once).
    pub(crate) fn take_written(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.lock_written())
    }

    fn lock_written(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A fan-out's [`SharedPrefix`], made under the key it names.
pub(crate) type PrefixCell = OnceLock<(KeyId, SharedPrefix)>;

impl OutItem {
    pub(crate) fn new(
        id: Option<Arc<str>>,
        msg_type: &'static str,
        from: Arc<str>,
        to: Arc<str>,
        data: Option<Arc<CanonicalData>>,
    ) -> Self {
        // The reference's estimate: 200 + id + type + to + from + JSON(data ?? null).
        let size = 200
            + id.as_deref().map_or(36, str::len)
            + msg_type.len()
            + to.len()
            + from.len()
            + data.as_deref().map_or(4, CanonicalData::len);
        Self {
            id,
            msg_type,
            from,
            to,
            data,
            origin: None,
            prefix: None,
            gauge: None,
            size,
        }
    }

    /// The estimate the caps use (the reference's).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn gauged(&self) -> Option<(&ListGauge, usize)> {
        self.gauge.as_deref().map(|g| (g, self.size))
    }
}

/// Releases the gauged bytes of items leaving a queue unwritten.
fn release<'a>(items: impl IntoIterator<Item = &'a OutItem>) {
    for (g, n) in items.into_iter().filter_map(OutItem::gauged) {
        g.sub(n);
    }
}

/// Outcome of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued; `backpressure` is set on the first push of a stall episode.
    Queued { backpressure: Option<Backpressure> },
    /// Refused: the queue is full.
    Overflow { outbox_bytes: usize },
    /// The socket is gone.
    Closed,
}

impl Push {
    pub(crate) fn delivered(self) -> bool {
        matches!(self, Self::Queued { .. })
    }
}

/// Figures for a `backpressure` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backpressure {
    pub(crate) buffered_amount: usize,
    pub(crate) outbox_size: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<OutItem>,
    bytes: usize,
    control: VecDeque<Transmit>,
    closed: bool,
    /// A close frame is queued: nothing may be written after it.
    closing: bool,
    backpressure_episode: bool,
    /// Gauged items (peer lists, snapshot parts, deltas) queued.
    lists: usize,
    /// Gauged bytes taken by the writer and not yet flushed, and to whom.
    unflushed: Option<(Arc<ListGauge>, usize, Arc<str>)>,
}

/// The outbox of one socket.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    key: OnceLock<Key>,
    max_bytes: usize,
    /// The writer is waiting on a full socket.
    stalled: AtomicBool,
    /// Bytes handed to the WebSocket since the last completed flush.
    buffered: AtomicUsize,
    /// Mirror of `state.bytes` for lock-free health reads.
    queued_bytes: AtomicUsize,
    /// `state.unflushed` is set (a lock-free check at every flush).
    unflushed: AtomicBool,
    /// Mirror of `state.lists` (the routing table asks every flush).
    lists_queued: AtomicUsize,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            key: OnceLock::new(),
            max_bytes,
            stalled: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            unflushed: AtomicBool::new(false),
            lists_queued: AtomicUsize::new(0),
        }
    }

    /// The writer flushed: the lists it had taken are on the socket.
    fn release_flushed(&self) {
        if self.unflushed.swap(false, Ordering::Relaxed)
            && let Some((g, n, to)) = self.lock().unflushed.take()
        {
            g.sub(n);
            g.written(to);
        }
    }

    /// Sets the count of gauged items queued (and its mirror).
    fn set_lists(&self, st: &mut State, lists: usize) {
        st.lists = lists;
        self.lists_queued.store(lists, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated
        // in a way that matters more than losing the socket; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the key every frame to this socket is signed with (once).
    pub(crate) fn set_key(&self, key: Key) {
        let _ = self.key.set(key);
    }

    pub(crate) fn key(&self) -> Option<&Key> {
        self.key.get()
    }

    /// Queues a message.
    pub(crate) fn push(&self, item: OutItem) -> Push {
        let mut st = self.lock();
        if st.closed || st.closing {
            return Push::Closed;
        }
        let conflate = match (&item.origin, item.msg_type) {
            (Some(origin), msg_type::STATUS_UPDATE) => st.queue.iter().position(|q| {
                q.msg_type == msg_type::STATUS_UPDATE && q.origin.as_ref() == Some(origin)
            }),
            // A newer peer list supersedes one still waiting.
            (_, msg_type::PEERS_UPDATE) => st
                .queue
                .iter()
                .position(|q| q.msg_type == msg_type::PEERS_UPDATE),
            _ => None,
        };
        if let Some(pos) = conflate {
            let new = item.size;
            if let Some((g, n)) = item.gauged() {
                g.add(n);
            }
            let lists = st.lists + usize::from(item.gauge.is_some());
            let old = std::mem::replace(&mut st.queue[pos], item);
            release([&old]);
            self.set_lists(
                &mut st,
                lists.saturating_sub(usize::from(old.gauge.is_some())),
            );
            let old = old.size;
            st.bytes = st.bytes - old + new;
            self.queued_bytes.store(st.bytes, Ordering::Relaxed);
            return Push::Queued { backpressure: None };
        }
        let was_empty = st.queue.is_empty();
        let stalled = self.stalled.load(Ordering::Relaxed);
        // The cap bounds what waits; an idle socket takes any message at once
        // (the reference's fast path), even one larger than the cap.
        let fast_path = was_empty && !stalled;
        if !fast_path && st.bytes + item.size > self.max_bytes {
            return Push::Overflow {
                outbox_bytes: st.bytes,
            };
        }
        st.bytes += item.size;
        if let Some((g, n)) = item.gauged() {
            g.add(n);
            let lists = st.lists + 1;
            self.set_lists(&mut st, lists);
        }
        st.queue.push_back(item);
        self.queued_bytes.store(st.bytes, Ordering::Relaxed);
        let backpressure = if stalled && !st.backpressure_episode {
            st.backpressure_episode = true;
            Some(Backpressure {
                buffered_amount: self.buffered.load(Ordering::Relaxed),
                outbox_size: st.queue.len(),
            })
        } else {
            None
        };
        drop(st);
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued { backpressure }
    }

    /// Removes a queued `rpc.request` with this id from this caller.
    pub(crate) fn cancel_request(&self, id: &str, from: &str) -> bool {
        let mut st = self.lock();
        let pos = st.queue.iter().position(|q| {
            q.msg_type == msg_type::RPC_REQUEST && q.id.as_deref() == Some(id) && &*q.from == from
        });
        match pos.and_then(|p| st.queue.remove(p)) {
            Some(item) => {
                release([&item]);
                let lists = st.lists.saturating_sub(usize::from(item.gauge.is_some()));
                self.set_lists(&mut st, lists);
                st.bytes -= item.size;
                self.queued_bytes.store(st.bytes, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Queues a socket-level instruction ahead of any message.
    pub(crate) fn control(&self, c: Transmit) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if matches!(c, Transmit::Close { .. }) {
            if st.closing {
                return; // one close frame per socket
            }
            // Messages still queued are dropped: the peer can no longer get them.
            st.closing = true;
            release(&st.queue);
            st.queue.clear();
            self.set_lists(&mut st, 0);
            st.bytes = 0;
            self.queued_bytes.store(0, Ordering::Relaxed);
        }
        st.control.push_back(c);
        drop(st);
        self.notify.notify_one();
    }

    /// Discards everything; later pushes are refused.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        release(&st.queue);
        st.queue.clear();
        self.set_lists(&mut st, 0);
        st.bytes = 0;
        self.queued_bytes.store(0, Ordering::Relaxed);
        drop(st);
        self.notify.notify_one();
    }

    /// Moves up to `max` items into `batch` and returns pending controls.
    pub(crate) fn take(&self, batch: &mut Vec<OutItem>, max: usize) -> Taken {
        let mut st = self.lock();
        let controls: Vec<Transmit> = st.control.drain(..).collect();
        let n = st.queue.len().min(max);
        let mut freed = 0;
        let mut gauged = 0;
        let mut lists = 0;
        let mut gauge = None;
        for item in st.queue.drain(..n) {
            freed += item.size;
            if let Some(g) = &item.gauge {
                gauged += item.size;
                lists += 1;
                gauge.get_or_insert_with(|| (g.clone(), item.to.clone()));
            }
            batch.push(item);
        }
        if lists > 0 {
            let left = st.lists.saturating_sub(lists);
            self.set_lists(&mut st, left);
        }
        if let Some((g, to)) = gauge {
            match &mut st.unflushed {
                Some((_, n, _)) => *n += gauged,
                None => st.unflushed = Some((g, gauged, to)),
            }
            self.unflushed.store(true, Ordering::Relaxed);
        }
        st.bytes -= freed;
        if st.queue.is_empty() {
            st.backpressure_episode = false;
        }
        self.queued_bytes.store(st.bytes, Ordering::Relaxed);
        Taken {
            controls,
            closed: st.closed,
            more: !st.queue.is_empty(),
            drained: false,
        }
    }

    /// Frees the queues' storage if nothing is queued (a push then
    /// allocates anew).
    fn give_back_if_empty(&self) {
        let mut st = self.lock();
        if st.queue.is_empty() && st.queue.capacity() > 0 {
            st.queue = VecDeque::new();
        }
        if st.control.is_empty() && st.control.capacity() > 0 {
            st.control = VecDeque::new();
        }
    }

    /// The writer took a peer list and has not flushed it yet.
    pub(crate) fn list_unflushed(&self) -> bool {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// A peer list (or snapshot part, or delta) is queued, or taken by the
    /// writer and not flushed yet.
    pub(crate) fn list_pending(&self) -> bool {
        self.list_unflushed() || self.lists_queued.load(Ordering::Relaxed) > 0
    }

    /// Bytes queued (health).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// The socket's writer drains the outbox through the shared loop.
impl Outgoing for Outbox {
    type Item = OutItem;

    fn take(&self, batch: &mut Vec<OutItem>, max: usize) -> Taken {
        Outbox::take(self, batch, max)
    }

    /// Called by the writer when it has nothing left to write: the queues
    /// give back what they grew to, so an idle socket holds none.
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send {
        self.give_back_if_empty();
        self.notify.notified()
    }

    fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    fn add_buffered(&self, n: usize) {
        self.buffered.fetch_add(n, Ordering::Relaxed);
    }

    fn flushed(&self) {
        self.buffered.store(0, Ordering::Relaxed);
        self.release_flushed();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let st = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        release(&st.queue);
        if let Some((g, n, _)) = st.unflushed.take() {
            g.sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(msg_type: &'static str, id: &str, from: &str, n: usize) -> OutItem {
        let data = CanonicalData::new(&serde_json::json!({"n": "x".repeat(n)}));
        OutItem::new(
            Some(id.into()),
            msg_type,
            from.into(),
            "beta".into(),
            Some(Arc::new(data)),
        )
    }

    #[test]
    fn an_idle_writer_leaves_the_queues_holding_nothing() {
        let ob = Outbox::new(10_000);
        assert!(ob.push(item("direct", "1", "a", 10)).delivered());
        ob.control(Transmit::Ping);
        let mut batch = Vec::new();
        let taken = Outgoing::take(&ob, &mut batch, 8);
        assert_eq!((batch.len(), taken.controls.len()), (1, 1));
        assert!(ob.lock().queue.capacity() > 0);
        drop(Outgoing::wait(&ob));
        let st = ob.lock();
        assert_eq!((st.queue.capacity(), st.control.capacity()), (0, 0));
        drop(st);
        // Nothing queued is ever given back.
        assert!(ob.push(item("direct", "2", "a", 10)).delivered());
        drop(Outgoing::wait(&ob));
        assert_eq!(ob.lock().queue.len(), 1);
    }

    #[test]
    fn overflow_refuses_and_reports() {
        let ob = Outbox::new(1000);
        assert!(ob.push(item("direct", "1", "a", 100)).delivered());
        let used = ob.queued_bytes();
        assert!(
            matches!(ob.push(item("direct", "2", "a", 900)), Push::Overflow { outbox_bytes } if outbox_bytes == used)
        );
        assert_eq!(ob.queued_bytes(), used);
    }

    #[test]
    fn an_idle_socket_takes_a_message_over_the_cap_and_a_close_ends_the_queue() {
        let ob = Outbox::new(100);
        assert!(
            ob.push(item("direct", "big", "a", 500)).delivered(),
            "fast path"
        );
        assert!(matches!(
            ob.push(item("direct", "2", "a", 1)),
            Push::Overflow { .. }
        ));
        ob.control(Transmit::Close {
            code: Some(link_protocol::close::GOING_AWAY),
            reason: String::new(),
        });
        assert_eq!(
            ob.queued_bytes(),
            0,
            "queued messages dropped behind a close"
        );
        assert_eq!(ob.push(item("direct", "3", "a", 1)), Push::Closed);
    }

    #[test]
    fn backpressure_fires_once_per_stall_episode() {
        let ob = Outbox::new(1 << 20);
        assert_eq!(
            ob.push(item("direct", "1", "a", 1)),
            Push::Queued { backpressure: None }
        );
        ob.set_stalled(true);
        assert!(
            matches!(ob.push(item("direct", "2", "a", 1)), Push::Queued { backpressure: Some(b) } if b.outbox_size == 2)
        );
        assert_eq!(
            ob.push(item("direct", "3", "a", 1)),
            Push::Queued { backpressure: None }
        );
        let mut batch = Vec::new();
        ob.take(&mut batch, 100);
        assert!(matches!(
            ob.push(item("direct", "4", "a", 1)),
            Push::Queued {
                backpressure: Some(_)
            }
        ));
    }

    #[test]
    fn status_updates_conflate_per_origin() {
        let ob = Outbox::new(1 << 20);
        let mut s1 = item("status.update", "1", "server", 1);
        s1.origin = Some("alpha".into());
        let mut s2 = item("status.update", "2", "server", 5);
        s2.origin = Some("alpha".into());
        let mut s3 = item("status.update", "3", "server", 1);
        s3.origin = Some("gamma".into());
        ob.push(s1);
        ob.push(item("direct", "d", "a", 1));
        ob.push(s2);
        ob.push(s3);
        let mut batch = Vec::new();
        ob.take(&mut batch, 100);
        let ids: Vec<&str> = batch.iter().map(|i| i.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["2", "d", "3"], "replaced in place, FIFO kept");
        assert_eq!(ob.queued_bytes(), 0);
    }

    #[test]
    fn a_newer_peer_list_replaces_a_queued_one() {
        let ob = Outbox::new(1 << 20);
        ob.set_stalled(true);
        ob.push(item("peers.update", "p1", "server", 1));
        ob.push(item("direct", "d", "a", 1));
        ob.push(item("peers.update", "p2", "server", 3));
        let mut batch = Vec::new();
        ob.take(&mut batch, 100);
        let ids: Vec<&str> = batch.iter().map(|i| i.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["p2", "d"]);
    }

    #[test]
    fn a_list_is_pending_while_queued_or_taken_and_unflushed() {
        let gauge = Arc::new(ListGauge::default());
        let list = |id: &str| {
            let mut i = item("peers.update", id, "server", 10);
            i.gauge = Some(gauge.clone());
            i
        };
        let ob = Outbox::new(1 << 20);
        ob.set_stalled(true);
        assert!(!ob.list_pending());
        ob.push(item("direct", "d", "a", 1));
        assert!(!ob.list_pending(), "not a list");
        ob.push(list("p1"));
        ob.push(list("p2")); // replaces p1 in the queue
        assert!(ob.list_pending());
        let mut batch = Vec::new();
        ob.take(&mut batch, 100);
        assert!(ob.list_pending(), "taken, not flushed");
        Outgoing::flushed(&ob);
        assert!(!ob.list_pending());
        assert_eq!(gauge.bytes(), 0);
        ob.push(list("p3"));
        assert!(ob.list_pending());
        ob.close();
        assert!(!ob.list_pending(), "a closed outbox holds none");
        assert_eq!(gauge.bytes(), 0);
    }

    #[test]
    fn cancel_removes_only_the_callers_queued_request() {
        let ob = Outbox::new(1 << 20);
        ob.push(item("rpc.request", "r1", "alpha", 1));
        assert!(!ob.cancel_request("r1", "mallory"));
        assert!(ob.cancel_request("r1", "alpha"));
        assert!(!ob.cancel_request("r1", "alpha"));
        assert_eq!(ob.queued_bytes(), 0);
    }
}
