//! A socket's frames on their way to the router, served round robin.
//!
//! Every socket's reader queues what it has for the routing table (its
//! hello, its verified frames, its close) in its own [`Inbox`], and tells
//! the router once, through the mailbox, that the inbox has something
//! ([`RouterMsg::Ready`]). The router keeps the inboxes that have something
//! in a ring and takes **one** message from each in turn, so a socket that
//! floods the hub with frames the table must handle (subscribes, publishes
//! to stalled subscribers) is served as often as any other socket with
//! something waiting, not as often as all of them together.
//!
//! ```text
//!  reader A ─► Inbox A (≤ INBOX_FRAMES) ─┐ Ready(A) once,    ┌─► ring: A B C A B …
//!  reader B ─► Inbox B                  ─┼─ while non-empty ─┤   one message per turn
//!  reader C ─► Inbox C                  ─┘   (the mailbox)   └─► routing table
//! ```
//!
//! Bounds: a socket has at most [`INBOX_FRAMES`] frames waiting (its reader
//! then stops reading until the router has taken one: TCP pushes back on
//! that peer alone), and every inbox together at most [`QUEUED_FRAMES`]
//! (what the router's mailbox alone bounded before inboxes). The hello and the close are never held back by either bound:
//! each socket has one of each. Order within a socket is kept (a FIFO).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, mpsc};

use crate::mailbox::RouterMsg;

/// Frames one socket may have waiting for the router.
pub(crate) const INBOX_FRAMES: usize = 64;
/// A reader held back by a full inbox resumes when it is down to this.
const RESUME_AT: usize = INBOX_FRAMES / 2;
/// Frames every socket together may have waiting for the router.
pub(crate) const QUEUED_FRAMES: usize = 8192;

/// One socket's queue to the router.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// The router took a frame from a full inbox.
    space: Notify,
    /// Frames of this socket the routing table dropped as protocol errors
    /// (a subscribe past the cap, an invalid topic…) or relayed to nobody
    /// (every recipient's outbox full), not yet counted by its reader's
    /// pace.
    refused: AtomicUsize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<RouterMsg>,
    /// Frames in `queue` (the hello and the close are not counted).
    frames: usize,
    /// The router has been told (a `Ready` is in its mailbox or the inbox
    /// is in its ring); cleared by the router when it empties the inbox.
    scheduled: bool,
}

/// Frames waiting in every inbox of a hub (the bound [`QUEUED_FRAMES`]).
#[derive(Debug, Default)]
pub(crate) struct QueuedFrames {
    count: AtomicUsize,
    space: Notify,
}

impl QueuedFrames {
    /// Frames waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes a place; waits while every place is taken.
    async fn take(&self) {
        loop {
            let n = self.count.load(Ordering::Acquire);
            if n < QUEUED_FRAMES {
                if self
                    .count
                    .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            // Register before checking again: a place given back in between
            // wakes this waiter.
            let mut freed = pin!(self.space.notified());
            freed.as_mut().enable();
            if self.count.load(Ordering::Acquire) < QUEUED_FRAMES {
                continue;
            }
            freed.await;
        }
    }

    /// Takes a place if one is free, without waiting.
    fn try_take(&self) -> bool {
        let mut n = self.count.load(Ordering::Acquire);
        while n < QUEUED_FRAMES {
            match self
                .count
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// Gives a place back.
    fn give_back(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == QUEUED_FRAMES {
            self.space.notify_waiters();
        }
    }
}

/// What [`Inbox::try_send`] did.
pub(crate) enum TrySend {
    /// Queued, and the router knows it has something (false: the router
    /// is gone).
    Done(bool),
    /// Queued; the router must be told, and its mailbox is full: finish
    /// with [`Inbox::tell`].
    Tell,
    /// Not queued: this inbox, or every inbox together, is full. Send it
    /// with [`Inbox::send`], which waits.
    Full(RouterMsg),
}

impl Inbox {
    /// [`Inbox::send`] without waiting: what a reader does first, so its
    /// task's future holds no send state unless it must wait.
    pub(crate) fn try_send(
        self: &Arc<Self>,
        router: &mpsc::Sender<RouterMsg>,
        queued: &QueuedFrames,
        msg: RouterMsg,
    ) -> TrySend {
        let frame = is_frame(&msg);
        if frame && !queued.try_take() {
            return TrySend::Full(msg);
        }
        let tell = {
            let mut s = self.lock();
            if frame && s.frames >= INBOX_FRAMES {
                drop(s);
                queued.give_back();
                return TrySend::Full(msg);
            }
            s.queue.push_back(msg);
            s.frames += usize::from(frame);
            !std::mem::replace(&mut s.scheduled, true)
        };
        if !tell {
            return TrySend::Done(true);
        }
        match router.try_send(RouterMsg::Ready(self.clone())) {
            Ok(()) => TrySend::Done(true),
            Err(mpsc::error::TrySendError::Closed(_)) => TrySend::Done(false),
            Err(mpsc::error::TrySendError::Full(_)) => TrySend::Tell,
        }
    }

    /// Tells the router this inbox has something (after
    /// [`TrySend::Tell`]); false if the router is gone.
    pub(crate) async fn tell(self: &Arc<Self>, router: &mpsc::Sender<RouterMsg>) -> bool {
        router.send(RouterMsg::Ready(self.clone())).await.is_ok()
    }

    /// Queues a message of this socket for the router, in order. A frame
    /// (an `Inbound` or a `RateLimitedRpc`) waits while this socket has
    /// [`INBOX_FRAMES`] waiting, or every socket together [`QUEUED_FRAMES`];
    /// the hello and the close are never held back. False when the router
    /// is gone.
    pub(crate) async fn send(
        self: &Arc<Self>,
        router: &mpsc::Sender<RouterMsg>,
        queued: &QueuedFrames,
        msg: RouterMsg,
    ) -> bool {
        let frame = is_frame(&msg);
        if frame {
            queued.take().await;
        }
        let tell = loop {
            {
                let mut s = self.lock();
                if !frame || s.frames < INBOX_FRAMES {
                    s.queue.push_back(msg);
                    s.frames += usize::from(frame);
                    break !std::mem::replace(&mut s.scheduled, true);
                }
            }
            // Full: wait for the router to free half of it (registered
            // before checking again, so its wake-up is not missed).
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            if self.lock().frames < INBOX_FRAMES {
                continue;
            }
            space.await;
        };
        !tell || router.send(RouterMsg::Ready(self.clone())).await.is_ok()
    }

    /// The router takes the next message; the second value is true when
    /// more wait (the inbox stays in the ring). When it returns `None` or
    /// `false`, the inbox is no longer scheduled: the reader's next message
    /// tells the router again.
    pub(crate) fn take(&self, queued: &QueuedFrames) -> (Option<RouterMsg>, bool) {
        let mut s = self.lock();
        let msg = s.queue.pop_front();
        if msg.as_ref().is_some_and(is_frame) {
            s.frames -= 1;
            queued.give_back();
            // A reader waiting on a full inbox resumes once half of it is
            // free (one wake-up per half inbox, not per frame).
            if s.frames == RESUME_AT {
                self.space.notify_waiters();
            }
        }
        let more = !s.queue.is_empty();
        if !more && s.queue.capacity() > 0 {
            // Drained: an idle socket keeps no slots (a `VecDeque` keeps the
            // capacity of its first use, its hello's: four messages).
            s.queue = VecDeque::new();
        }
        s.scheduled = more;
        (msg, more)
    }

    /// Frames the table dropped since the last call (the reader paces them
    /// as its own drops). One load while there are none.
    pub(crate) fn take_refused(&self) -> usize {
        if self.refused.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.refused.swap(0, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The inboxes with messages waiting, in the order they are served: one
/// message from the front inbox, which goes to the back if it has more.
#[derive(Default)]
pub(crate) struct Ring {
    ready: VecDeque<Arc<Inbox>>,
    /// The inbox of the message [`Ring::next`] returned last, and whether
    /// it has more, until [`Ring::done`].
    current: Option<(Arc<Inbox>, bool)>,
}

impl Ring {
    /// An inbox the router was told of (`RouterMsg::Ready`).
    pub(crate) fn push(&mut self, inbox: Arc<Inbox>) {
        self.ready.push_back(inbox);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.current.as_ref().is_none_or(|(_, more)| !more)
    }

    /// The next message in turn (`None`: no inbox has one).
    pub(crate) fn next(&mut self, queued: &QueuedFrames) -> Option<RouterMsg> {
        self.done(0);
        loop {
            let inbox = self.ready.pop_front()?;
            let (msg, more) = inbox.take(queued);
            if msg.is_some() {
                self.current = Some((inbox, more));
                return msg;
            }
        }
    }

    /// The message [`Ring::next`] returned was handled; the table dropped
    /// `refused` frames for it (protocol errors, or a message every
    /// recipient's outbox refused: its reader paces them).
    pub(crate) fn done(&mut self, refused: usize) {
        if let Some((inbox, more)) = self.current.take() {
            if refused > 0 {
                inbox.refused.fetch_add(refused, Ordering::Relaxed);
            }
            if more {
                self.ready.push_back(inbox);
            }
        }
    }
}

/// A frame of the peer's (bounded), not the socket's hello or close.
fn is_frame(msg: &RouterMsg) -> bool {
    matches!(
        msg,
        RouterMsg::Inbound { .. } | RouterMsg::RateLimitedRpc { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(conn: u64, n: usize) -> RouterMsg {
        RouterMsg::RateLimitedRpc {
            conn,
            kind: "k".into(),
            id: n.to_string().into(),
        }
    }

    fn closed(conn: u64) -> RouterMsg {
        RouterMsg::Closed {
            conn,
            code: None,
            reason: String::new(),
        }
    }

    /// (socket, frame number) of a served message; the close as `usize::MAX`.
    fn served(msg: RouterMsg) -> (u64, usize) {
        match msg {
            RouterMsg::RateLimitedRpc { conn, id, .. } => (conn, id.parse().unwrap()),
            RouterMsg::Closed { conn, .. } => (conn, usize::MAX),
            _ => panic!("an unexpected message"),
        }
    }

    /// Moves the `Ready`s the router was sent into its ring.
    fn readies(rx: &mut mpsc::Receiver<RouterMsg>, ring: &mut Ring) -> usize {
        let mut n = 0;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                RouterMsg::Ready(inbox) => ring.push(inbox),
                _ => panic!("only Ready goes through the mailbox"),
            }
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn sockets_are_served_one_message_each_in_turn() {
        let (tx, mut rx) = mpsc::channel(16);
        let queued = QueuedFrames::default();
        let (a, b) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
        // The flooder queued first and more.
        for n in 0..4 {
            assert!(a.send(&tx, &queued, frame(1, n)).await);
        }
        for n in 0..2 {
            assert!(b.send(&tx, &queued, frame(2, n)).await);
        }
        assert!(b.send(&tx, &queued, closed(2)).await);
        let mut ring = Ring::default();
        assert_eq!(readies(&mut rx, &mut ring), 2, "one Ready per socket");
        assert_eq!(queued.len(), 6);
        let order: Vec<_> = std::iter::from_fn(|| ring.next(&queued).map(served)).collect();
        assert_eq!(
            order,
            [
                (1, 0),
                (2, 0),
                (1, 1),
                (2, 1),
                (1, 2),
                (2, usize::MAX),
                (1, 3)
            ]
        );
        assert!(ring.is_empty());
        assert_eq!(queued.len(), 0);
        // Drained inboxes keep no slots (an idle socket's memory).
        assert_eq!(
            (a.lock().queue.capacity(), b.lock().queue.capacity()),
            (0, 0)
        );
        // Emptied, the inbox tells the router again on its next message.
        assert!(a.send(&tx, &queued, frame(1, 4)).await);
        assert_eq!(readies(&mut rx, &mut ring), 1);
        assert_eq!(ring.next(&queued).map(served), Some((1, 4)));
    }

    #[tokio::test]
    async fn a_full_inbox_holds_its_reader_until_half_of_it_is_free() {
        let (tx, mut rx) = mpsc::channel(16);
        let queued = Arc::new(QueuedFrames::default());
        let inbox = Arc::new(Inbox::default());
        for n in 0..INBOX_FRAMES {
            assert!(inbox.send(&tx, &queued, frame(1, n)).await);
        }
        let reader = {
            let (inbox, tx, queued) = (inbox.clone(), tx.clone(), queued.clone());
            tokio::spawn(async move { inbox.send(&tx, &queued, frame(1, INBOX_FRAMES)).await })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "a frame past INBOX_FRAMES waits");
        // Neither the close nor any other socket is held back.
        assert!(inbox.send(&tx, &queued, closed(1)).await);
        let other = Arc::new(Inbox::default());
        assert!(other.send(&tx, &queued, frame(2, 0)).await);
        let mut ring = Ring::default();
        readies(&mut rx, &mut ring);
        // Served in turn: the other socket's frame comes second.
        assert_eq!(ring.next(&queued).map(served), Some((1, 0)));
        assert_eq!(ring.next(&queued).map(served), Some((2, 0)));
        for n in 1..INBOX_FRAMES - RESUME_AT {
            tokio::task::yield_now().await;
            assert!(!reader.is_finished(), "resumed early, at {n} taken");
            assert_eq!(ring.next(&queued).map(served), Some((1, n)));
        }
        assert!(reader.await.unwrap());
        assert_eq!(queued.len(), RESUME_AT + 1);
    }

    #[tokio::test]
    async fn every_socket_together_waits_at_queued_frames() {
        let (tx, mut rx) = mpsc::channel(16);
        let queued = Arc::new(QueuedFrames::default());
        let inbox = Arc::new(Inbox::default());
        assert!(inbox.send(&tx, &queued, frame(1, 0)).await);
        // Every other place is taken (by other sockets).
        queued.count.fetch_add(QUEUED_FRAMES - 1, Ordering::AcqRel);
        let other = {
            let (tx, queued) = (tx.clone(), queued.clone());
            tokio::spawn(async move {
                let inbox = Arc::new(Inbox::default());
                inbox.send(&tx, &queued, frame(2, 0)).await
            })
        };
        tokio::task::yield_now().await;
        assert!(!other.is_finished(), "a frame past QUEUED_FRAMES waits");
        let mut ring = Ring::default();
        readies(&mut rx, &mut ring);
        assert_eq!(ring.next(&queued).map(served), Some((1, 0)));
        assert!(other.await.unwrap());
    }
}
