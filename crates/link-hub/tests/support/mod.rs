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
use link_protocol::{CanonicalData, Envelope, HashAlgo, Key, Message as Msg, envelope};
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
        tokio_tungstenite::connect_async(&self.url).await.unwrap().0
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
        let ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
        let mut config = ClientConnConfig::new(kind, key(secret)).unwrap();
        config.keepalive_interval = None;
        config.hello_ack_diagnostic = None;
        let conn = ClientConn::new(
            config,
            Box::new(SeqIds::new(format!("{kind}-{}", wall_ms()))),
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
        peer.conn.start(now());
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
                    Some(Ok(Message::Text(t))) => self.conn.handle_frame(now(), t.as_bytes()),
                    Some(Ok(Message::Binary(b))) => self.conn.handle_frame(now(), &b),
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.to_string())
                        });
                        self.conn.handle_close(now(), code, &reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => self.conn.handle_close(now(), Some(1006), ""),
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
    pub async fn closed(&mut self) -> (u16, String) {
        match self
            .until(|e| matches!(e, ClientEvent::Disconnected(_)))
            .await
        {
            ClientEvent::Disconnected(d) => (d.code, d.reason),
            _ => unreachable!(),
        }
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
