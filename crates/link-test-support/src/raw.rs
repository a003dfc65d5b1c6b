//! A raw WebSocket under the test's full control.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use link_protocol::{Envelope, Key, envelope};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{WAIT, Ws, connect, finish, fresh_id, hello_frame};

/// A raw WebSocket: no handshake logic, no verification; frames are built
/// with [`frame`](crate::frame) / [`sign_body`](crate::sign_body) and read
/// back as they came.
pub struct Raw {
    /// The socket itself, for what the methods do not cover.
    pub ws: Ws,
}

impl Raw {
    /// Opens a WebSocket to `url` (Nagle off).
    pub async fn connect(url: &str) -> Self {
        Self {
            ws: connect(url).await,
        }
    }

    /// This end's address (what the hub reports as the remote address).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("a connected socket's address"),
            _ => unreachable!("plain TCP only"),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send a text frame");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send a binary frame");
    }

    /// The next WebSocket message (pings included); `None` once the socket
    /// ended (closed or reset).
    pub async fn next(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("timed out reading a raw socket")
            .and_then(Result::ok)
    }

    /// The next text frame; panics if the socket closes first.
    pub async fn next_text(&mut self) -> String {
        loop {
            match self.next().await {
                Some(Message::Text(t)) => return t.to_string(),
                Some(Message::Close(f)) => panic!("closed while waiting for text: {f:?}"),
                Some(_) => {}
                None => panic!("socket ended while waiting for text"),
            }
        }
    }

    /// The next text frame of `msg_type` (others skipped), verified with `key`.
    pub async fn recv(&mut self, key: &Key, msg_type: &str) -> Envelope {
        loop {
            let text = self.next_text().await;
            let r = envelope::parse_frame(text.as_bytes(), 1 << 24).expect("a parsable frame");
            if r.envelope.msg_type() == Some(msg_type) {
                assert!(r.verify(key), "hub frame does not verify: {text}");
                return r.envelope;
            }
        }
    }

    /// Reads until the other side closes: the close frame's (code, reason),
    /// 1005 for a close frame without a code, or 1006 when the socket ended
    /// without one. Other frames are skipped. The close handshake is
    /// completed, as in [`Peer::closed`](crate::Peer::closed).
    pub async fn closed(&mut self) -> (u16, String) {
        let closed = loop {
            match self.next().await {
                Some(Message::Close(Some(f))) => break (u16::from(f.code), f.reason.to_string()),
                Some(Message::Close(None)) => break (1005, String::new()),
                Some(_) => {}
                None => return (1006, String::new()),
            }
        };
        finish(&mut self.ws).await;
        closed
    }

    /// Sends a hello for `kind` and returns the `hello.ack`.
    pub async fn hello(&mut self, key: &Key, kind: &str) -> Envelope {
        self.send_text(hello_frame(key, &fresh_id(kind), kind))
            .await;
        self.recv(key, "hello.ack").await
    }
}
