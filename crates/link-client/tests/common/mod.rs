//! A scripted hub for client tests: a WebSocket server on `127.0.0.1:0`
//! that the test drives frame by frame (the h2 "mock peer" shape).
//!
//! Everything it sends is built and signed with
//! `link_protocol::envelope::encode` (fresh `ts`, so the client's replay
//! window accepts it); everything the client sends is checked with
//! `envelope::parse_frame` + `Received::verify` before the test sees it.
//! Reads are bounded by [`WAIT`], which only guards against hangs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use link_client::{ClientConfig, ClientConfigBuilder, LinkClient, LinkEvent};
use link_protocol::envelope::{self, DEFAULT_MAX_MESSAGE_BYTES, Header};
use link_protocol::{CanonicalData, Envelope, HashAlgo, Key};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Hang guard for every wait.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The secret of the captured conversation's shared-key steps.
pub(crate) const SECRET: &str = "demo-secret";

pub(crate) fn key(secret: &str) -> Key {
    Key::new(secret, HashAlgo::Sha256).unwrap()
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("hub-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A listening scripted hub.
pub(crate) struct ScriptedHub {
    listener: TcpListener,
    pub(crate) url: String,
    pub(crate) secret: String,
}

impl ScriptedHub {
    pub(crate) async fn bind(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        Self {
            listener,
            url,
            secret: secret.to_owned(),
        }
    }

    /// A client config pointing here, with a fast first reconnect.
    pub(crate) fn client(&self, kind: &str) -> ClientConfigBuilder {
        ClientConfig::builder()
            .url(&self.url)
            .secret(&self.secret)
            .kind(kind)
            .reconnect_initial(Duration::from_millis(20))
    }

    /// Accepts the next connection and completes the WebSocket upgrade.
    pub(crate) async fn accept(&self) -> HubSide {
        let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("client connected")
            .unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        HubSide {
            ws,
            key: key(&self.secret),
            peer: String::new(),
        }
    }
}

/// The hub's end of one client connection.
pub(crate) struct HubSide {
    ws: WebSocketStream<TcpStream>,
    /// Signs what the hub sends and verifies what it receives.
    pub(crate) key: Key,
    /// The client's kind (from its hello), used as `to`.
    pub(crate) peer: String,
}

impl HubSide {
    /// The next data frame from the client, verified. Pings are answered by
    /// tungstenite while reading; a close or EOF fails the test.
    pub(crate) async fn recv(&mut self) -> Envelope {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame from the client")
                .expect("socket open")
                .unwrap();
            let bytes = match msg {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(c) => panic!("client closed: {c:?}"),
                _ => continue,
            };
            let received = envelope::parse_frame(&bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            assert!(
                received.verify(&self.key),
                "client frame did not verify: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(received.envelope.version_ok());
            return received.envelope;
        }
    }

    /// The next frame of type `msg_type`, skipping periodic `status.update`
    /// pushes; any other type fails the test.
    pub(crate) async fn expect(&mut self, msg_type: &str) -> Envelope {
        loop {
            let env = self.recv().await;
            match env.msg_type() {
                Some(t) if t == msg_type => return env,
                Some("status.update") => {}
                other => panic!("expected {msg_type}, got {other:?}: {env:?}"),
            }
        }
    }

    /// Reads until the client's close frame (answering it) and returns it.
    pub(crate) async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a close from the client");
            match msg {
                Some(Ok(Message::Close(c))) => return c,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => panic!("EOF before close"),
            }
        }
    }

    /// Reads until the socket ends (close or EOF).
    pub(crate) async fn drain_until_closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .expect("socket closed");
    }

    pub(crate) async fn send_raw(&mut self, frame: String) {
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// Sends a signed frame with a fresh id, `ts = now` and `to` = the peer.
    pub(crate) async fn send(&mut self, msg_type: &str, from: &str, data: Option<Value>) -> String {
        let id = fresh_id();
        let to = self.peer.clone();
        self.send_with(&id, msg_type, Some(from), Some(&to), data)
            .await;
        id
    }

    /// Sends a signed frame with every header field chosen.
    pub(crate) async fn send_with(
        &mut self,
        id: &str,
        msg_type: &str,
        from: Option<&str>,
        to: Option<&str>,
        data: Option<Value>,
    ) {
        let frame = sign_frame(&self.key, id, wall_ms(), msg_type, from, to, data.as_ref());
        self.send_raw(frame).await;
    }

    /// Reads the hello and answers as the reference hub does (protocol §5.2):
    /// `hello.ack`, then `peers.update` (just this peer), then
    /// `status.snapshot` (empty). Returns the hello.
    pub(crate) async fn handshake(&mut self, features: &[&str]) -> Envelope {
        let hello = self.recv_hello().await;
        self.ack(features).await;
        let now = wall_ms();
        let peers = json!({"peers": [{
            "kind": self.peer,
            "hello": hello.data().cloned().unwrap_or(Value::Null),
            "connectedAt": now,
            "connected": true,
        }]});
        self.send("peers.update", "server", Some(peers)).await;
        self.send("status.snapshot", "server", Some(json!({})))
            .await;
        hello
    }

    /// Reads the hello and remembers the peer's kind.
    pub(crate) async fn recv_hello(&mut self) -> Envelope {
        let hello = self.recv().await;
        assert_eq!(hello.msg_type(), Some("hello"));
        self.peer = hello.data().unwrap()["kind"].as_str().unwrap().to_owned();
        hello
    }

    /// `hello.ack {ok:true}` with the given features.
    pub(crate) async fn ack(&mut self, features: &[&str]) {
        let data = json!({
            "ok": true, "serverTime": wall_ms(), "kind": self.peer, "features": features,
        });
        self.send("hello.ack", "server", Some(data)).await;
    }

    /// Closes with a code and reason.
    pub(crate) async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}

/// Builds and signs one frame.
pub(crate) fn sign_frame(
    key: &Key,
    id: &str,
    ts: u64,
    msg_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    data: Option<&Value>,
) -> String {
    let header = Header {
        id,
        ts,
        msg_type,
        from,
        to,
    };
    let data = data.map(CanonicalData::new);
    envelope::encode(key, &header, data.as_ref())
}

/// One captured frame of `tests/data/conversation.json`.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub(crate) n: u64,
    pub(crate) dir: String,
    pub(crate) key: String,
    /// The frame as parsed JSON (with its original `sig`).
    pub(crate) raw: Value,
}

impl Captured {
    pub(crate) fn msg_type(&self) -> &str {
        self.raw["type"].as_str().unwrap()
    }

    pub(crate) fn data(&self) -> Option<&Value> {
        self.raw.get("data")
    }

    pub(crate) fn id(&self) -> &str {
        self.raw["id"].as_str().unwrap()
    }

    /// Re-stamped (`ts = now`) and re-signed with the frame's own key;
    /// `id` overrides the captured id (e.g. to answer our client's request).
    pub(crate) fn restamp(&self, id: Option<&str>) -> String {
        let r = &self.raw;
        sign_frame(
            &key(&self.key),
            id.unwrap_or(self.id()),
            wall_ms(),
            self.msg_type(),
            r["from"].as_str(),
            r["to"].as_str(),
            self.data(),
        )
    }
}

/// All 73 captured frames, in order.
pub(crate) fn conversation() -> Vec<Captured> {
    let doc: Value = serde_json::from_str(include_str!("../data/conversation.json")).unwrap();
    doc["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Captured {
            n: f["n"].as_u64().unwrap(),
            dir: f["dir"].as_str().unwrap().to_owned(),
            key: f["key"].as_str().unwrap().to_owned(),
            raw: serde_json::from_str(f["raw"].as_str().unwrap()).unwrap(),
        })
        .collect()
}

/// Frame number `n` (1-based, as the captured conversation numbers them
/// and protocol §3.4 and §6.2 cite them).
pub(crate) fn captured(frames: &[Captured], n: u64) -> &Captured {
    let f = &frames[(n - 1) as usize];
    assert_eq!(f.n, n);
    f
}

/// Asserts that a frame our client sent has the captured frame's type,
/// `from`, `to` and `data`.
pub(crate) fn assert_like(env: &Envelope, f: &Captured) {
    assert_eq!(env.msg_type(), Some(f.msg_type()), "type of #{}", f.n);
    assert_eq!(
        env.body().get("from"),
        f.raw.get("from"),
        "from of #{}",
        f.n
    );
    assert_eq!(env.body().get("to"), f.raw.get("to"), "to of #{}", f.n);
    assert_eq!(env.data(), f.data(), "data of #{}", f.n);
}

/// Waits for the first event matching `pred` on `rx` (lagging is fine).
pub(crate) async fn event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<LinkEvent>>,
    pred: impl FnMut(&LinkEvent) -> bool,
) -> std::sync::Arc<LinkEvent> {
    event_within(WAIT, rx, pred).await
}

/// [`event`] with another hang guard (for paused-time tests whose timer is
/// longer than [`WAIT`]).
pub(crate) async fn event_within(
    guard: Duration,
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<LinkEvent>>,
    mut pred: impl FnMut(&LinkEvent) -> bool,
) -> std::sync::Arc<LinkEvent> {
    tokio::time::timeout(guard, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("event")
}

/// Builds a client and starts it.
pub(crate) fn started(builder: ClientConfigBuilder) -> LinkClient {
    let c = LinkClient::new(builder.build().unwrap());
    c.start();
    c
}
