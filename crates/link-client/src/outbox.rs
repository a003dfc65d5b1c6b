//! The client outbox (protocol §11): messages wait here while the link is not
//! ready or the socket is congested, and the writer task builds and signs
//! them at flush (fresh `ts`).
//!
//! - Bounded by `max_outbox_bytes` (reference size estimate); a refused push
//!   is `outbox-overflow` and the caller gets `BACKPRESSURE`.
//! - `backpressure` is edge-triggered: the first message queued while the
//!   link cannot write (not ready, or socket full).
//! - One queued `status.update` at most (a newer one replaces it in place).
//! - `rpc.request`/`rpc.cancel` are purged when a connection closes; items
//!   needing a feature the hub lacks are purged at ready; everything is
//!   cleared on stop, displacement and reconnect exhaustion.
//! - Socket-level controls (the hello, pings, closes) bypass the queue and
//!   the ready gate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use link_protocol::{CanonicalData, Feature, msg_type};
use link_transport::writer::{Taken, Transmit};
use tokio::sync::Notify;

/// One queued message.
#[derive(Clone, Debug)]
pub(crate) struct OutItem {
    /// Pre-assigned id (RPC requests and responses); else made at flush.
    pub(crate) id: Option<String>,
    pub(crate) msg_type: &'static str,
    pub(crate) to: Option<String>,
    pub(crate) data: Option<CanonicalData>,
    pub(crate) feature: Option<Feature>,
    size: usize,
}

impl OutItem {
    pub(crate) fn new(
        id: Option<String>,
        msg_type: &'static str,
        to: Option<String>,
        data: Option<CanonicalData>,
        from_len: usize,
    ) -> Self {
        let feature = match msg_type {
            msg_type::TOPIC_MESSAGE | msg_type::TOPIC_SUBSCRIBE | msg_type::TOPIC_UNSUBSCRIBE => {
                Some(Feature::Topics)
            }
            msg_type::DIRECT => Some(Feature::Direct),
            _ => None,
        };
        let size = 200
            + id.as_deref().map_or(36, str::len)
            + msg_type.len()
            + to.as_deref().map_or(0, str::len)
            + from_len
            + data.as_ref().map_or(4, CanonicalData::len);
        Self {
            id,
            msg_type,
            to,
            data,
            feature,
            size,
        }
    }
}

/// Outcome of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued { backpressure: Option<usize> },
    Overflow { outbox_bytes: usize },
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<OutItem>,
    bytes: usize,
    control: VecDeque<Transmit>,
    ready: bool,
    /// A drain episode is open (for `outbox-drained`).
    backlog: bool,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    max_bytes: usize,
    stalled: AtomicBool,
    buffered: AtomicUsize,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes,
            stalled: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn push(&self, item: OutItem) -> Push {
        let mut st = self.lock();
        let queued_status = (item.msg_type == msg_type::STATUS_UPDATE)
            .then(|| {
                st.queue
                    .iter()
                    .position(|q| q.msg_type == msg_type::STATUS_UPDATE)
            })
            .flatten();
        if let Some(pos) = queued_status {
            let new = item.size;
            let old = std::mem::replace(&mut st.queue[pos], item).size;
            st.bytes = st.bytes - old + new;
            return Push::Queued { backpressure: None };
        }
        if st.bytes + item.size > self.max_bytes {
            return Push::Overflow {
                outbox_bytes: st.bytes,
            };
        }
        let was_empty = st.queue.is_empty();
        st.bytes += item.size;
        st.queue.push_back(item);
        let congested = !st.ready || self.stalled.load(Ordering::Relaxed);
        let backpressure = (was_empty && congested).then(|| {
            st.backlog = true;
            st.queue.len()
        });
        drop(st);
        self.notify.notify_one();
        Push::Queued { backpressure }
    }

    pub(crate) fn control(&self, c: Transmit) {
        self.lock().control.push_back(c);
        self.notify.notify_one();
    }

    /// Opens or closes the ready gate.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
        self.notify.notify_one();
    }

    /// Removes queued items matching `pred`; returns how many.
    pub(crate) fn purge(&self, pred: impl Fn(&OutItem) -> bool) -> usize {
        let mut st = self.lock();
        let before = st.queue.len();
        let mut freed = 0;
        st.queue.retain(|q| {
            let drop = pred(q);
            if drop {
                freed += q.size;
            }
            !drop
        });
        st.bytes -= freed;
        before - st.queue.len()
    }

    /// Removes a queued `rpc.request` by id.
    pub(crate) fn remove_request(&self, id: &str) -> bool {
        self.purge(|q| q.msg_type == msg_type::RPC_REQUEST && q.id.as_deref() == Some(id)) > 0
    }

    /// Drops pending socket controls: they belonged to a socket that is
    /// gone (a `Terminate` left for a dead socket would kill the next one).
    pub(crate) fn clear_controls(&self) {
        self.lock().control.clear();
    }

    /// Drops every queued message and control.
    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        st.queue.clear();
        st.control.clear();
        st.bytes = 0;
    }

    /// Takes controls, and up to `max` items when ready.
    pub(crate) fn take(&self, batch: &mut Vec<OutItem>, max: usize) -> Taken {
        let mut st = self.lock();
        let controls: Vec<Transmit> = st.control.drain(..).collect();
        let mut drained = false;
        if st.ready {
            let n = st.queue.len().min(max);
            let mut freed = 0;
            for item in st.queue.drain(..n) {
                freed += item.size;
                batch.push(item);
            }
            st.bytes -= freed;
            if st.queue.is_empty() && st.backlog {
                st.backlog = false;
                drained = true;
            }
        }
        Taken {
            controls,
            more: st.ready && !st.queue.is_empty(),
            closed: false,
            drained,
        }
    }

    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }

    pub(crate) fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    pub(crate) fn add_buffered(&self, n: usize) {
        self.buffered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn flushed(&self) {
        self.buffered.store(0, Ordering::Relaxed);
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// (messages, bytes) queued.
    pub(crate) fn size(&self) -> (usize, usize) {
        let st = self.lock();
        (st.queue.len(), st.bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(t: &'static str, id: &str) -> OutItem {
        OutItem::new(Some(id.into()), t, Some("beta".into()), None, 5)
    }

    #[test]
    fn queues_while_not_ready_with_one_backpressure_edge() {
        let ob = Outbox::new(1 << 20);
        assert_eq!(
            ob.push(item("direct", "1")),
            Push::Queued {
                backpressure: Some(1)
            }
        );
        assert_eq!(
            ob.push(item("direct", "2")),
            Push::Queued { backpressure: None }
        );
        let mut batch = Vec::new();
        let t = ob.take(&mut batch, 10);
        assert!(batch.is_empty() && !t.drained, "gate closed");
        ob.set_ready(true);
        let t = ob.take(&mut batch, 10);
        assert_eq!(batch.len(), 2);
        assert!(t.drained);
        assert_eq!(
            ob.push(item("direct", "3")),
            Push::Queued { backpressure: None },
            "fast path"
        );
    }

    #[test]
    fn purges_and_conflates() {
        let ob = Outbox::new(1 << 20);
        ob.push(item("rpc.request", "r"));
        ob.push(item("status.update", "s1"));
        ob.push(item("topic.message", "t"));
        ob.push(item("status.update", "s2"));
        assert_eq!(ob.size().0, 3);
        assert!(ob.remove_request("r"));
        assert_eq!(ob.purge(|q| q.feature == Some(Feature::Topics)), 1);
        ob.set_ready(true);
        let mut batch = Vec::new();
        ob.take(&mut batch, 10);
        assert_eq!(
            batch
                .iter()
                .map(|i| i.id.clone().unwrap())
                .collect::<Vec<_>>(),
            ["s2"]
        );
        assert_eq!(ob.size(), (0, 0));
    }

    #[test]
    fn overflow_is_refused() {
        let ob = Outbox::new(300);
        assert!(matches!(ob.push(item("direct", "1")), Push::Queued { .. }));
        assert!(matches!(
            ob.push(item("direct", "2")),
            Push::Overflow { .. }
        ));
    }
}
