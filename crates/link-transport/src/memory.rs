//! An in-process transport: [`duplex`] makes two connected ends, each a
//! [`Transport`](crate::Transport). Frames travel whole through bounded
//! channels (a full channel makes the writer wait, as a full socket does);
//! a frame over the receiver's cap arrives as [`TransportError::TooBig`];
//! dropping one end ends the other's stream, as a dropped TCP connection
//! does. With no sockets and no real timers it runs under paused tokio
//! time, so timer tests take microseconds.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::{Frame, TransportError};

/// One end of an in-memory connection.
#[derive(Debug)]
pub struct Memory {
    tx: PollSender<Frame>,
    rx: mpsc::Receiver<Frame>,
    /// Frames larger than this are refused on read.
    max_frame_bytes: usize,
}

/// Two connected ends; each direction holds up to `capacity` frames in
/// flight, and each end refuses frames over `max_frame_bytes` on read.
pub fn duplex(capacity: usize, max_frame_bytes: usize) -> (Memory, Memory) {
    let capacity = capacity.max(1);
    let (a_tx, b_rx) = mpsc::channel(capacity);
    let (b_tx, a_rx) = mpsc::channel(capacity);
    (
        Memory {
            tx: PollSender::new(a_tx),
            rx: a_rx,
            max_frame_bytes,
        },
        Memory {
            tx: PollSender::new(b_tx),
            rx: b_rx,
            max_frame_bytes,
        },
    )
}

impl Stream for Memory {
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let frame = ready!(self.rx.poll_recv(cx));
        Poll::Ready(frame.map(|f| {
            if f.len() > self.max_frame_bytes {
                Err(TransportError::TooBig(format!(
                    "frame of {} bytes, cap {}",
                    f.len(),
                    self.max_frame_bytes
                )))
            } else {
                Ok(f)
            }
        }))
    }
}

impl Sink<Frame> for Memory {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_reserve(cx).map_err(|_| TransportError::Closed)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> Result<(), Self::Error> {
        self.tx.send_item(item).map_err(|_| TransportError::Closed)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::{SinkExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn frames_cross_in_order_and_over_the_cap_is_too_big() {
        let (mut a, mut b) = duplex(4, 8);
        a.send(Frame::text("one")).await.unwrap();
        a.send(Frame::Ping).await.unwrap();
        a.send(Frame::text("123456789")).await.unwrap();
        assert_eq!(b.next().await.unwrap(), Ok(Frame::text("one")));
        assert_eq!(b.next().await.unwrap(), Ok(Frame::Ping));
        assert!(matches!(
            b.next().await.unwrap(),
            Err(TransportError::TooBig(_))
        ));
    }

    #[tokio::test]
    async fn a_dropped_end_ends_the_other_stream_and_refuses_writes() {
        let (a, mut b) = duplex(4, 8);
        drop(a);
        assert_eq!(b.next().await, None);
        assert_eq!(b.send(Frame::Ping).await, Err(TransportError::Closed));
    }

    #[tokio::test]
    async fn a_full_channel_makes_the_writer_wait() {
        let (mut a, mut b) = duplex(1, 8);
        a.send(Frame::Ping).await.unwrap();
        let mut second = a.send(Frame::Pong);
        assert!(futures_util::poll!(&mut second).is_pending());
        assert_eq!(b.next().await.unwrap(), Ok(Frame::Ping));
        second.await.unwrap();
        assert_eq!(b.next().await.unwrap(), Ok(Frame::Pong));
    }
}
