//! A peer on the in-memory transport (`link_transport::memory`): no socket,
//! no kernel, so a hub's timers can run under paused tokio time and every
//! frame is where the test expects it the moment the hub's task yields.
//! Reading answers pings (as a WebSocket library does while its stream is
//! polled); a peer the test stops reading never pongs.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use link_hub::Hub;
use link_protocol::{Envelope, Key, envelope};
use link_transport::memory::{Memory, duplex};
use link_transport::{Frame, TransportError};

use crate::{fresh_id, hello_frame, probe_dropped, probe_frame};

/// Frames in flight per direction before a writer waits.
const CAPACITY: usize = 64;

/// Hang guard for reads. Under paused time it costs nothing, and it must
/// outlast every hub timer a test waits for (keepalive reaping takes two
/// 30 s intervals by default), which a real-time guard would not.
const PAUSED_WAIT: Duration = Duration::from_secs(3600);

/// One end of an in-memory connection to a hub.
pub struct MemoryPeer {
    end: Memory,
    remote: SocketAddr,
}

impl MemoryPeer {
    /// Attaches a new in-memory connection to `hub`, which sees it as coming
    /// from `remote`; frames over the hub's `max_message_bytes` are refused
    /// by the transport, as a WebSocket's cap does.
    pub fn attach(hub: &Hub, remote: SocketAddr) -> Self {
        let (ours, theirs) = duplex(CAPACITY, hub.config().max_message_bytes());
        hub.attach_transport(theirs, Some(remote));
        Self { end: ours, remote }
    }

    /// [`attach`](Self::attach), then a pre-hello probe of type `probe`,
    /// returned once the hub reported dropping it: the hub holds this
    /// connection as pending.
    pub async fn attach_pending(hub: &Hub, remote: SocketAddr, probe: &str) -> Self {
        let mut rx = hub.events();
        let mut peer = Self::attach(hub, remote);
        peer.send_text(probe_frame(probe)).await;
        probe_dropped(&mut rx, probe).await;
        peer
    }

    /// The address the hub reports for this peer.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Sends a frame as is.
    pub async fn send(&mut self, frame: Frame) {
        self.end.send(frame).await.expect("the hub end is gone");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Frame::text(text.into())).await;
    }

    /// The next frame that is not a ping (pings are answered); `None` once
    /// the hub dropped the connection.
    pub async fn next(&mut self) -> Option<Result<Frame, TransportError>> {
        loop {
            let frame = tokio::time::timeout(PAUSED_WAIT, self.end.next())
                .await
                .expect("timed out reading an in-memory peer");
            match frame {
                Some(Ok(Frame::Ping)) => {
                    // The hub may be gone already; the read reports it.
                    let _ = self.end.send(Frame::Pong).await;
                }
                other => return other,
            }
        }
    }

    /// The next frame, pings included and not answered.
    pub async fn next_raw(&mut self) -> Option<Result<Frame, TransportError>> {
        tokio::time::timeout(PAUSED_WAIT, self.end.next())
            .await
            .expect("timed out reading an in-memory peer")
    }

    /// The next text frame of `msg_type` (others skipped), verified with
    /// `key`; panics if the connection closes first.
    pub async fn recv(&mut self, key: &Key, msg_type: &str) -> Envelope {
        loop {
            match self.next().await {
                Some(Ok(Frame::Text(t))) => {
                    let r = envelope::parse_frame(t.as_bytes(), 1 << 24).expect("a parsable frame");
                    if r.envelope.msg_type() == Some(msg_type) {
                        assert!(r.verify(key), "hub frame does not verify: {t}");
                        return r.envelope;
                    }
                }
                Some(Ok(Frame::Close(c))) => panic!("closed while waiting for {msg_type}: {c:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("transport failed while waiting for {msg_type}: {e}"),
                None => panic!("connection ended while waiting for {msg_type}"),
            }
        }
    }

    /// Sends a hello for `kind` and returns the `hello.ack`.
    pub async fn hello(&mut self, key: &Key, kind: &str) -> Envelope {
        self.send_text(hello_frame(key, &fresh_id(kind), kind))
            .await;
        self.recv(key, "hello.ack").await
    }

    /// Reads until the hub closes: the close frame's (code, reason), 1005
    /// for a close frame without a code, or 1006 when the connection ended
    /// without one. Other frames are skipped (pings answered).
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Some(Ok(Frame::Close(Some(c)))) => return (c.code, c.reason),
                Some(Ok(Frame::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (1006, String::new()),
            }
        }
    }
}
