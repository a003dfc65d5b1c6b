//! A scripted peer: a real WebSocket whose handshake, signing and
//! verification are done by the protocol crate's `ClientConn`.

use futures_util::{SinkExt, StreamExt};
use link_protocol::conn::{ClientConn, ClientConnConfig, ClientEvent, SeqIds, Transmit};
use link_protocol::{CanonicalData, Envelope, Key};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    WAIT, Ws, connect, connect_small_rcvbuf, finish, frame, fresh_id, key, now, parse, peer_kinds,
    sign_body,
};

/// A peer driven by `ClientConn`: tests send exact messages and read
/// exactly what the hub answered, verified. Keepalive and the hello-ack
/// diagnostic are off.
pub struct Peer {
    /// The kind it said hello as.
    pub kind: String,
    /// The socket.
    pub ws: Ws,
    /// The protocol state machine.
    pub conn: ClientConn,
    /// The key it signs with.
    pub key: Key,
    /// Verified messages not yet taken by the test.
    pub inbox: Vec<Envelope>,
    /// The features of the `hello.ack`, once ready.
    pub features: Vec<String>,
}

impl Peer {
    /// Connects and completes the handshake as `kind` with `secret`.
    pub async fn connect(url: &str, kind: &str, secret: &str) -> Self {
        let ws = connect(url).await;
        Self::handshake(ws, kind, secret).await
    }

    /// Like [`Peer::connect`], over a TCP socket with a tiny receive buffer:
    /// once the test stops reading it, the hub's writer stalls after a few
    /// frames and its outbox starts queueing (protocol §11).
    pub async fn connect_stalling(url: &str, kind: &str, secret: &str) -> Self {
        Self::handshake(connect_small_rcvbuf(url).await, kind, secret).await
    }

    /// Connects and sends the hello; does not wait for the answer (see
    /// [`Peer::ready_or_closed`]).
    pub async fn hello(url: &str, kind: &str, secret: &str) -> Self {
        Self::begin(connect(url).await, kind, secret).await
    }

    /// Completes the handshake on an open WebSocket.
    pub async fn handshake(ws: Ws, kind: &str, secret: &str) -> Self {
        let mut peer = Self::begin(ws, kind, secret).await;
        peer.until(|e| matches!(e, ClientEvent::Ready { .. })).await;
        peer
    }

    /// Sends the hello on an open WebSocket.
    async fn begin(ws: Ws, kind: &str, secret: &str) -> Self {
        let mut config = ClientConnConfig::new(kind, key(secret)).expect("a usable kind");
        config.keepalive_interval = None;
        config.hello_ack_diagnostic = None;
        let conn = ClientConn::new(
            config,
            // Unique per connection: two sockets of one kind opened in the same
            // millisecond must not share hello ids (replay-id).
            Box::new(SeqIds::new(fresh_id(kind))),
            Box::new(|| 0.5),
        )
        .expect("a usable client config");
        let mut peer = Self {
            kind: kind.into(),
            ws,
            conn,
            key: key(secret),
            inbox: Vec::new(),
            features: Vec::new(),
        };
        peer.conn.start();
        let _ = peer.conn.poll_event(); // Connect
        peer.conn.handle_open(now());
        peer.flush().await;
        peer
    }

    async fn flush(&mut self) {
        while let Some(t) = self.conn.poll_transmit() {
            match t {
                Transmit::Frame(f) => self.ws.send(Message::text(f)).await.expect("send"),
                Transmit::Ping => self
                    .ws
                    .send(Message::Ping(Default::default()))
                    .await
                    .expect("send a ping"),
                Transmit::Close { .. } | Transmit::Terminate => {}
            }
        }
    }

    /// Reads until `pred` matches a `ClientConn` event; panics on timeout.
    /// Messages that do not match are kept in the inbox.
    pub async fn until(&mut self, mut pred: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        tokio::time::timeout(WAIT, async {
            let mut ended = false;
            loop {
                while let Some(e) = self.conn.poll_event() {
                    if let ClientEvent::Ready { features, .. } = &e {
                        self.features = features.clone();
                    }
                    let hit = pred(&e);
                    if let (false, ClientEvent::Message { envelope, .. }) = (hit, &e) {
                        self.inbox.push(envelope.clone());
                    }
                    if hit {
                        return e;
                    }
                }
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => self.conn.handle_message(now(), t.as_bytes()),
                    Some(Ok(Message::Binary(b))) => self.conn.handle_message(now(), &b),
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.to_string())
                        });
                        self.conn.handle_closed(now(), code, &reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        // A finished stream answers at once, forever: stop
                        // rather than spin past the timeout.
                        assert!(!ended, "{}: socket ended while waiting", self.kind);
                        ended = true;
                        self.conn
                            .handle_closed(now(), Some(link_protocol::close::ABNORMAL), "");
                    }
                }
            }
        })
        .await
        .expect("timed out waiting for an event")
    }

    /// The next `Ready` or `Disconnected` event.
    pub async fn ready_or_closed(&mut self) -> ClientEvent {
        self.until(|e| matches!(e, ClientEvent::Ready { .. } | ClientEvent::Disconnected(_)))
            .await
    }

    /// Waits for the next verified message of `msg_type` (earlier ones of
    /// other types stay in the inbox).
    pub async fn recv(&mut self, msg_type: &str) -> Envelope {
        if let Some(pos) = self
            .inbox
            .iter()
            .position(|e| e.msg_type() == Some(msg_type))
        {
            return self.inbox.remove(pos);
        }
        match self.until(|e| matches!(e, ClientEvent::Message { envelope, .. } if envelope.msg_type() == Some(msg_type))).await {
            ClientEvent::Message { envelope, .. } => envelope,
            _ => unreachable!("the predicate matched a message"),
        }
    }

    /// Waits for the socket to close; returns (code, reason).
    /// Reading on after the close frame sends the automatic close reply
    /// and lets the hub finish the handshake (a peer that stops reading
    /// would be terminated instead, and seen by the hub as 1006).
    pub async fn closed(&mut self) -> (u16, String) {
        let closed = match self
            .until(|e| matches!(e, ClientEvent::Disconnected(_)))
            .await
        {
            ClientEvent::Disconnected(d) => (d.code, d.reason),
            _ => unreachable!("the predicate matched a disconnect"),
        };
        finish(&mut self.ws).await;
        closed
    }

    /// Signs and sends a message; returns its id.
    pub async fn send(&mut self, msg_type: &str, to: Option<&str>, data: Option<Value>) -> String {
        let data = data.map(|d| CanonicalData::new(&d));
        let (id, frame) = self.conn.encode(now(), msg_type, to, data.as_ref());
        self.ws.send(Message::text(frame)).await.expect("send");
        id
    }

    /// Sends a message with a chosen id.
    pub async fn send_id(
        &mut self,
        id: &str,
        msg_type: &str,
        to: Option<&str>,
        data: Option<Value>,
    ) {
        let data = data.map(|d| CanonicalData::new(&d));
        let frame = self.conn.encode_id(now(), id, msg_type, to, data.as_ref());
        self.ws.send(Message::text(frame)).await.expect("send");
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    /// RPC round trip through the hub: returns the response envelope.
    pub async fn rpc(&mut self, to: &str, rpc_type: &str, rpc_data: Option<Value>) -> Envelope {
        let data = link_protocol::messages::rpc_request_value(rpc_type, rpc_data);
        let id = self.send("rpc.request", Some(to), Some(data)).await;
        loop {
            let env = self.recv("rpc.response").await;
            if env.id() == id {
                return env;
            }
        }
    }

    /// Subscribes and waits until the hub has recorded it (a `link.topic.list`
    /// round trip: the hub handles one socket's frames in order).
    pub async fn subscribe(&mut self, topic: &str) {
        self.send(
            "topic.subscribe",
            None,
            Some(serde_json::json!({ "topic": topic })),
        )
        .await;
        self.rpc(
            "server",
            "link.topic.list",
            Some(serde_json::json!({ "topic": topic })),
        )
        .await;
    }

    /// A round trip through the hub (`link.topic.list`): once it returns,
    /// the hub has processed every frame this socket sent before it (the
    /// hub handles one socket's frames in order). Not a barrier for frames
    /// held by an ACL lane or an async `can_rpc` verdict.
    pub async fn barrier(&mut self) {
        let r = self.rpc("server", "link.topic.list", None).await;
        assert_eq!(
            r.data().expect("a response body")["ok"],
            true,
            "barrier failed: {r:?}"
        );
    }

    /// Takes every buffered message, after a [`Peer::barrier`].
    pub async fn settle(&mut self) -> Vec<Envelope> {
        self.barrier().await;
        std::mem::take(&mut self.inbox)
    }

    /// Asserts nothing but `peers.update`/`status.snapshot` arrived since the
    /// last look (a round trip makes sure the hub answered everything sent
    /// before).
    pub async fn assert_quiet(&mut self) {
        let got: Vec<Envelope> = self
            .settle()
            .await
            .into_iter()
            .filter(|e| !matches!(e.msg_type(), Some("peers.update" | "status.snapshot")))
            .collect();
        assert!(
            got.is_empty(),
            "{} expected nothing, got {got:?}",
            self.kind
        );
    }

    /// Waits for a `peers.update` listing `kind`.
    pub async fn peers_update_with(&mut self, kind: &str) -> Envelope {
        loop {
            let e = self.recv("peers.update").await;
            if peer_kinds(&e).iter().any(|k| k == kind) {
                return e;
            }
        }
    }

    /// Waits for a `peers.update` not listing `kind`.
    pub async fn peers_update_without(&mut self, kind: &str) -> Envelope {
        loop {
            let e = self.recv("peers.update").await;
            if !peer_kinds(&e).iter().any(|k| k == kind) {
                return e;
            }
        }
    }

    /// Reads the next frame of `msg_type` straight off the socket, as text
    /// (bypassing the `ClientConn`, so nothing is verified or consumed by
    /// it). Frames of other types are skipped.
    pub async fn recv_raw(&mut self, msg_type: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let (env, _) = parse(t.as_str());
                        if env.msg_type() == Some(msg_type) {
                            return t.to_string();
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended while waiting for {msg_type}: {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a raw frame")
    }

    /// Signs an arbitrary envelope body with this peer's key and sends it.
    pub async fn send_body(&mut self, body: Value) {
        let text = sign_body(&self.key, body);
        self.send_raw(&text).await;
    }

    /// Sends a frame with a chosen envelope `from` (a spoofing attempt).
    pub async fn send_as(
        &mut self,
        from: &str,
        msg_type: &str,
        to: Option<&str>,
        data: Option<Value>,
    ) -> String {
        let id = fresh_id(&self.kind);
        let text = frame(&self.key, &id, msg_type, Some(from), to, data.as_ref());
        self.send_raw(&text).await;
        id
    }
}
