//! The one writer loop: drains an outbox into a transport, building and
//! signing each frame at flush (a fresh `ts`, the recipient's key). The
//! hub runs one per socket, the client one per connection; each brings
//! its queue ([`Outgoing`]) and its encoder.
//!
//! Per wake-up: controls first (ping, close, pre-built frames), then up to
//! `max_batch` items encoded and fed, then one flush when the queue ran
//! dry. While the transport cannot take more (a full socket), the queue is
//! marked stalled: that is what makes `backpressure` fire upstream.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, Sink, SinkExt};

use crate::{Frame, TransportError};

/// Socket-level instructions bypass the queue. They are the protocol state
/// machines' own [`Transmit`]s (`ClientConn`/`HubConn::poll_transmit`),
/// handed over unchanged: `Frame` is written as is (the client's hello),
/// `Close` with `None` sends a close without a body, `Terminate` stops the
/// writer.
pub use link_protocol::conn::Transmit;

/// What one [`Outgoing::take`] got besides the items.
#[derive(Debug, Default)]
pub struct Taken {
    /// Controls, in the order they were queued.
    pub controls: Vec<Transmit>,
    /// More items are waiting beyond this batch.
    pub more: bool,
    /// The queue is closed and empty: flush and stop.
    pub closed: bool,
    /// The queue just became empty after a backlog.
    pub drained: bool,
}

/// A queue a writer drains.
pub trait Outgoing: Sync {
    /// One queued message, encoded by the loop's encoder.
    type Item: Send;

    /// Takes the controls and up to `max` items.
    fn take(&self, batch: &mut Vec<Self::Item>, max: usize) -> Taken;

    /// Resolves when something was queued since the last take.
    fn wait(&self) -> impl Future<Output = ()> + Send;

    /// The transport cannot take more (true) or can again (false).
    fn set_stalled(&self, stalled: bool);

    /// `bytes` were handed to the transport and not yet flushed.
    fn add_buffered(&self, bytes: usize);

    /// A flush completed.
    fn flushed(&self);

    /// The queue drained after a backlog (see [`Taken::drained`]).
    fn drained(&self) {}

    /// A [`Transmit::Close`] was written and flushed.
    fn close_sent(&self) {}
}

/// Drains `queue` into `sink` until the queue closes, a
/// [`Transmit::Terminate`] is taken, or the transport fails. `encode` turns
/// an item into its frame text, given the batch's wall-clock `ts` in ms;
/// `None` skips the item.
///
/// Not an `async fn`, which would keep a second copy of its arguments in
/// its future (a writer's future lives as long as its socket).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn write_loop<'a, K, Q, E>(
    sink: &'a mut K,
    queue: &'a Q,
    max_batch: usize,
    mut encode: E,
) -> impl Future<Output = Result<(), TransportError>> + 'a
where
    K: Sink<Frame, Error = TransportError> + Unpin,
    Q: Outgoing,
    E: FnMut(Q::Item, u64) -> Option<String> + 'a,
{
    async move {
        // Grows to what this connection's traffic needs (at most max_batch
        // items), and is given back whenever the queue runs dry.
        let mut batch = Vec::new();
        loop {
            let taken = queue.take(&mut batch, max_batch);
            for c in taken.controls {
                match c {
                    Transmit::Frame(f) => sink.feed(Frame::text(f)).await?,
                    Transmit::Ping => sink.feed(Frame::Ping).await?,
                    Transmit::Close { code, reason } => {
                        sink.send(Frame::close(code, reason)).await?;
                        queue.close_sent();
                    }
                    Transmit::Terminate => return Ok(()),
                }
            }
            if taken.drained {
                queue.drained();
            }
            if batch.is_empty() {
                if taken.closed {
                    sink.flush().await?;
                    return Ok(());
                }
                flush(sink, queue).await?;
                // Idle: hold no batch while waiting (an idle peer's writer
                // would otherwise keep the capacity of its largest batch).
                batch = Vec::new();
                queue.wait().await;
                continue;
            }
            let ts = wall_ms();
            for item in batch.drain(..) {
                // Ready first: a frame is encoded only once the transport
                // takes it, so a socket waiting on a full peer holds its
                // queued items (shared data), not a copy of each.
                ready(sink, queue).await?;
                let Some(frame) = encode(item, ts) else {
                    continue;
                };
                queue.add_buffered(frame.len());
                sink.start_send_unpin(Frame::text(frame))?;
            }
            if !taken.more {
                flush(sink, queue).await?;
            }
        }
    }
}

/// Flushes, marking the queue stalled while the transport cannot take more.
async fn flush<K, Q>(sink: &mut K, queue: &Q) -> Result<(), TransportError>
where
    K: Sink<Frame, Error = TransportError> + Unpin,
    Q: Outgoing,
{
    if let Some(r) = futures_util::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never() {
        r?;
    } else {
        queue.set_stalled(true);
        let r = futures_util::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).await;
        queue.set_stalled(false);
        r?;
    }
    queue.flushed();
    Ok(())
}

/// Waits for the transport to accept a frame, marking the queue stalled
/// while it cannot.
async fn ready<K, Q>(sink: &mut K, queue: &Q) -> Result<(), TransportError>
where
    K: Sink<Frame, Error = TransportError> + Unpin,
    Q: Outgoing,
{
    if let Some(r) = futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never() {
        return r;
    }
    queue.set_stalled(true);
    let r = futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await;
    queue.set_stalled(false);
    r
}

/// Wall clock in ms since the epoch (the `ts` of a batch).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
