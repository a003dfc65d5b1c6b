//! [`WebSocket`]: any tungstenite WebSocket (plain TCP, TLS, an upgraded
//! HTTP connection) as a [`Transport`](crate::Transport). Its size cap is
//! tungstenite's `max_message_size`/`max_frame_size`; a frame over it is
//! [`TransportError::TooBig`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::{CloseFrame, Frame, TransportError};

/// A WebSocket seen as frames.
#[derive(Debug)]
pub struct WebSocket<S> {
    inner: S,
}

impl<S> WebSocket<S> {
    /// Wraps a tungstenite stream/sink of messages.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

pub(crate) fn error(e: WsError) -> TransportError {
    match e {
        WsError::Capacity(e) => TransportError::TooBig(e.to_string()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        e => TransportError::Failed(e.to_string()),
    }
}

pub(crate) fn frame(message: Message) -> Option<Frame> {
    Some(match message {
        Message::Text(t) => Frame::Text(t),
        Message::Binary(b) => Frame::Binary(b),
        Message::Ping(_) => Frame::Ping,
        Message::Pong(_) => Frame::Pong,
        Message::Close(c) => Frame::Close(c.map(|c| CloseFrame {
            code: u16::from(c.code),
            reason: c.reason.to_string(),
        })),
        // Raw frames never come out of a reader.
        Message::Frame(_) => return None,
    })
}

pub(crate) fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping => Message::Ping(Default::default()),
        Frame::Pong => Message::Pong(Default::default()),
        Frame::Close(c) => Message::Close(c.map(|c| WsCloseFrame {
            code: CloseCode::from(c.code),
            reason: c.reason.into(),
        })),
    }
}

impl<S> Stream for WebSocket<S>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(error(e)))),
                Some(Ok(m)) => {
                    if let Some(f) = frame(m) {
                        return Poll::Ready(Some(Ok(f)));
                    }
                }
            }
        }
    }
}

impl<S> Sink<Frame> for WebSocket<S>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx).map_err(error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner)
            .start_send(message(item))
            .map_err(error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_to_messages_and_back() {
        for f in [
            Frame::text("{}"),
            Frame::Binary(vec![1, 2].into()),
            Frame::Ping,
            Frame::Pong,
            Frame::close(Some(4000), "replaced by new connection"),
            Frame::close(None, ""),
        ] {
            assert_eq!(frame(message(f.clone())), Some(f));
        }
    }
}
