//! Scripted peers for hub integration tests: a real WebSocket to a hub on
//! 127.0.0.1:0, with the handshake, signing and verification done by the
//! protocol crate's `ClientConn`. Tests send exact frames and read exactly
//! what the hub answered; every wait is on an event, bounded by a timeout
//! that only turns a hang into a failure.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use link_hub::{Hub, HubConfig, HubEvent};
use link_protocol::conn::{ClientConn, ClientConnConfig, ClientEvent, Now, SeqIds, Transmit};
use link_protocol::{
    CanonicalData, DropReason, Envelope, HashAlgo, Key, Message as Msg, ProtocolError, close,
    envelope,
};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Guard against hangs only; never a timing assertion.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn now() -> Now {
    Now::new(std::time::Instant::now(), wall_ms())
}

pub fn key(secret: &str) -> Key {
    Key::new(secret, HashAlgo::Sha256).unwrap()
}

/// A hub listening on 127.0.0.1:0.
pub struct TestHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    pub url: String,
}

impl TestHub {
    pub async fn start(config: HubConfig) -> Self {
        let hub = Hub::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = hub.clone();
        tokio::spawn(async move {
            while let Ok((tcp, remote)) = listener.accept().await {
                // Small request/response frames: Nagle plus delayed ACKs
                // would add ~40 ms to many round trips.
                let _ = tcp.set_nodelay(true);
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = h.accept(tcp, Some(remote)).await;
                });
            }
        });
        Self {
            hub,
            addr,
            url: format!("ws://{addr}"),
        }
    }

    pub async fn shared(secret: &str) -> Self {
        Self::start(
            HubConfig::builder(link_hub::Secret::shared(secret))
                .build()
                .unwrap(),
        )
        .await
    }

    /// Opens a raw WebSocket (no hello).
    pub async fn raw(&self) -> Ws {
        connect(&self.url).await
    }

    /// Connects and completes the handshake as `kind` with `secret`.
    pub async fn peer(&self, kind: &str, secret: &str) -> Peer {
        Peer::connect(&self.url, kind, secret).await
    }
}

/// A scripted peer.
pub struct Peer {
    pub kind: String,
    pub ws: Ws,
    pub conn: ClientConn,
    pub key: Key,
    /// Verified messages not yet taken by the test.
    pub inbox: Vec<Envelope>,
    pub features: Vec<String>,
}

impl Peer {
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

    /// Completes the handshake on an open WebSocket.
    pub async fn handshake(ws: Ws, kind: &str, secret: &str) -> Self {
        let mut config = ClientConnConfig::new(kind, key(secret)).unwrap();
        config.keepalive_interval = None;
        config.hello_ack_diagnostic = None;
        let conn = ClientConn::new(
            config,
            // Unique per connection: two sockets of one kind opened in the same
            // millisecond must not share hello ids (replay-id).
            Box::new(SeqIds::new(fresh_id(kind))),
            Box::new(|| 0.5),
        )
        .unwrap();
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
        peer.until(|e| matches!(e, ClientEvent::Ready { .. })).await;
        peer
    }

    async fn flush(&mut self) {
        while let Some(t) = self.conn.poll_transmit() {
            match t {
                Transmit::Frame(f) => self.ws.send(Message::text(f)).await.unwrap(),
                Transmit::Ping => self
                    .ws
                    .send(Message::Ping(Default::default()))
                    .await
                    .unwrap(),
                Transmit::Close { .. } | Transmit::Terminate => {}
            }
        }
    }

    /// Reads until `pred` matches a ClientConn event; panics on timeout.
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
                        self.conn.handle_closed(now(), Some(close::ABNORMAL), "");
                    }
                }
            }
        })
        .await
        .expect("timed out waiting for an event")
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
            _ => unreachable!(),
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
            _ => unreachable!(),
        };
        finish(&mut self.ws).await;
        closed
    }

    /// Signs and sends a message; returns its id.
    pub async fn send(&mut self, msg_type: &str, to: Option<&str>, data: Option<Value>) -> String {
        let data = data.map(|d| CanonicalData::new(&d));
        let (id, frame) = self.conn.encode(now(), msg_type, to, data.as_ref());
        self.ws.send(Message::text(frame)).await.unwrap();
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
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
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
}

/// Reads the hub's events until one matches.
pub async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<HubEvent>>,
    mut pred: impl FnMut(&HubEvent) -> bool,
) -> std::sync::Arc<HubEvent> {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel closed: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a hub event")
}

/// Parses a frame and reads it as a message (for raw-socket tests).
pub fn parse(frame: &str) -> (Envelope, Msg) {
    let r = envelope::parse_frame(frame.as_bytes(), 1 << 20).unwrap();
    let m = Msg::parse(&r.envelope);
    (r.envelope, m)
}

// ----- additions for the integration suite ---------------------------------

/// Opens a WebSocket with Nagle's algorithm off.
pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap()
        .0
}

/// Opens a WebSocket whose TCP receive buffer is as small as the kernel
/// allows, so a test that stops reading makes the hub's writer stall fast.
pub async fn connect_small_rcvbuf(url: &str) -> Ws {
    let addr: SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap()
        .0
}

impl TestHub {
    /// A hub whose sockets are accepted with tungstenite's default
    /// WebSocket limits (64 MiB), then handed to [`Hub::attach`]: the
    /// "bare createHub + your own wss" case, where the envelope parser's own
    /// size check (`oversize`) is the one that fires (protocol §1, §4.1 step 1).
    pub async fn start_lenient(config: HubConfig) -> Self {
        let hub = Hub::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = hub.clone();
        tokio::spawn(async move {
            while let Ok((tcp, remote)) = listener.accept().await {
                // Small request/response frames: Nagle plus delayed ACKs
                // would add ~40 ms to many round trips.
                let _ = tcp.set_nodelay(true);
                let h = h.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        h.attach(ws, Some(remote));
                    }
                });
            }
        });
        Self {
            hub,
            addr,
            url: format!("ws://{addr}"),
        }
    }

    /// A raw socket, scripted frame by frame.
    pub async fn raw_peer(&self) -> Raw {
        Raw::connect(&self.url).await
    }

    /// A raw socket the hub has attached (registered as pending): it sent a
    /// pre-hello probe of type `probe` and the hub reported dropping it.
    pub async fn pending(&self, probe: &str) -> Raw {
        let mut rx = self.hub.events();
        let mut raw = self.raw_peer().await;
        raw.send_text(frame(
            &key("unused"),
            &fresh_id(probe),
            probe,
            None,
            None,
            None,
        ))
        .await;
        next_event(&mut rx, |e| {
            matches!(e, HubEvent::ProtocolError { error, .. }
                if error.reason == DropReason::PreHelloMessage
                    && error.msg_type.as_deref() == Some(probe))
        })
        .await;
        raw
    }

    /// Connects `kind` and waits until every other listed peer has seen it
    /// in a `peers.update` (useful to start from a quiet state).
    pub async fn peer_seen_by(&self, kind: &str, secret: &str, others: &mut [&mut Peer]) -> Peer {
        let p = self.peer(kind, secret).await;
        for o in others.iter_mut() {
            o.peers_update_with(kind).await;
        }
        p
    }
}

impl Peer {
    /// A round trip through the hub (`link.topic.list`): once it returns,
    /// the hub has processed every frame this socket sent before it (the
    /// hub handles one socket's frames in order). Not a barrier for frames
    /// held by an ACL lane or an async `can_rpc` verdict.
    pub async fn barrier(&mut self) {
        let r = self.rpc("server", "link.topic.list", None).await;
        assert_eq!(r.data().unwrap()["ok"], true, "barrier failed: {r:?}");
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

/// Kinds listed in a `peers.update`.
pub fn peer_kinds(e: &Envelope) -> Vec<String> {
    e.data().unwrap()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A process-unique id with a readable prefix.
pub fn fresh_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", wall_ms())
}

/// A signed frame stamped now.
pub fn frame(
    key: &Key,
    id: &str,
    msg_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    data: Option<&Value>,
) -> String {
    frame_at(key, id, wall_ms(), msg_type, from, to, data)
}

/// A signed frame with a chosen `ts`.
pub fn frame_at(
    key: &Key,
    id: &str,
    ts: u64,
    msg_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    data: Option<&Value>,
) -> String {
    let header = envelope::Header {
        id,
        ts,
        msg_type,
        from,
        to,
    };
    let data = data.map(CanonicalData::new);
    envelope::encode(key, &header, data.as_ref())
}

/// A hello frame for `kind` (name = kind).
pub fn hello_frame(key: &Key, id: &str, kind: &str) -> String {
    let data = serde_json::json!({"kind": kind, "name": kind, "pid": 1, "startedAt": wall_ms()});
    frame(key, id, "hello", Some(kind), None, Some(&data))
}

/// Signs an arbitrary JSON object as an envelope (any fields, any types;
/// a `sig` member is replaced).
pub fn sign_body(key: &Key, body: Value) -> String {
    let Value::Object(map) = body else {
        panic!("sign_body needs an object")
    };
    Envelope::from_object(map).unwrap().encode(key)
}

/// A raw WebSocket under the test's full control: no handshake logic, no
/// verification; frames are built with [`frame`] / [`sign_body`].
pub struct Raw {
    pub ws: Ws,
}

impl Raw {
    pub async fn connect(url: &str) -> Self {
        Self {
            ws: connect(url).await,
        }
    }

    /// This end's address (what the hub reports as the remote address).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
            _ => unreachable!("plain TCP only"),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
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
            let r = envelope::parse_frame(text.as_bytes(), 1 << 24).unwrap();
            if r.envelope.msg_type() == Some(msg_type) {
                assert!(r.verify(key), "hub frame does not verify: {text}");
                return r.envelope;
            }
        }
    }

    /// Reads until the hub closes: the close frame's (code, reason), or
    /// 1006 when the socket ended without one. Text frames are skipped.
    /// As [`Peer::closed`], the close handshake is completed.
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

/// Waits for the next `protocol-error` with `reason`.
pub async fn protocol_error(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<HubEvent>>,
    reason: DropReason,
) -> ProtocolError {
    let e = next_event(
        rx,
        |e| matches!(e, HubEvent::ProtocolError { error, .. } if error.reason == reason),
    )
    .await;
    match &*e {
        HubEvent::ProtocolError { error, .. } => error.clone(),
        _ => unreachable!(),
    }
}

/// Every event already in the channel (non-blocking).
pub fn drain_events(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<HubEvent>>,
) -> Vec<std::sync::Arc<HubEvent>> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// Sends `direct` fillers of `chunk` bytes from `from` to `to` (a peer that
/// is not reading, connected with [`Peer::connect_stalling`]) until the
/// hub's writer for `to` is stuck on the full socket: from then on, frames
/// to `to` wait in its outbox (where they can be conflated, cancelled or
/// refused). Returns the number of fillers sent.
///
/// "Stuck" is read off `health()` after a round trip: queued bytes that
/// survive a round trip *and grow* by the next one were not taken by the
/// writer, which takes everything queued whenever it runs. (The
/// `backpressure` event is not used here: see `outbox.rs`.)
pub async fn stall(hub: &Hub, from: &mut Peer, to: &str, chunk: usize) -> usize {
    let filler = "f".repeat(chunk);
    let mut prev = 0;
    for n in 1..=2000 {
        from.send(
            "direct",
            Some(to),
            Some(serde_json::json!({"directType": "filler", "directData": filler})),
        )
        .await;
        from.barrier().await;
        let queued = hub.health().await.outbox_bytes;
        if prev > 0 && queued > prev {
            return n;
        }
        prev = queued;
    }
    panic!("{to} never stalled");
}

/// Reads a socket to its end (after a close frame: sends the automatic
/// reply and waits for the other side to drop the connection).
pub async fn finish(ws: &mut Ws) {
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("timed out finishing a close handshake");
}
