//! The scripted hub: a WebSocket server on `127.0.0.1:0` that a client
//! test drives frame by frame (the h2 "mock peer" shape).
//!
//! Everything it sends is built and signed with
//! `link_protocol::envelope::encode` (fresh `ts`, so the client's replay
//! window accepts it); everything the client sends is checked with
//! `envelope::parse_frame` + `Received::verify` before the test sees it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use link_client::{ClientConfig, ClientConfigBuilder};
use link_protocol::envelope::{self, DEFAULT_MAX_MESSAGE_BYTES};
use link_protocol::{Envelope, Key};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::{WAIT, frame_at, fresh_id, key, local_listener, wall_ms};

/// A listening scripted hub; [`accept`](Self::accept) takes the next
/// client connection.
pub struct ScriptedHub {
    listener: TcpListener,
    /// `ws://<addr>`.
    pub url: String,
    /// The secret every frame is signed with, both ways.
    pub secret: String,
}

impl ScriptedHub {
    /// Listens on `127.0.0.1:0`.
    pub async fn bind(secret: &str) -> Self {
        let (listener, addr) = local_listener().await;
        Self {
            listener,
            url: format!("ws://{addr}"),
            secret: secret.to_owned(),
        }
    }

    /// A client config pointing here, with a fast first reconnect.
    pub fn client(&self, kind: &str) -> ClientConfigBuilder {
        ClientConfig::builder()
            .url(&self.url)
            .secret(&self.secret)
            .kind(kind)
            .reconnect_initial(Duration::from_millis(20))
    }

    /// Accepts the next connection (`TCP_NODELAY` on) and completes the
    /// WebSocket upgrade.
    pub async fn accept(&self) -> HubSide {
        let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("client connected")
            .expect("accept");
        let _ = tcp.set_nodelay(true);
        let ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("websocket upgrade");
        HubSide {
            ws,
            key: key(&self.secret),
            peer: String::new(),
        }
    }
}

/// The hub's end of one client connection.
pub struct HubSide {
    ws: WebSocketStream<TcpStream>,
    /// Signs what the hub sends and verifies what it receives.
    pub key: Key,
    /// The client's kind (from its hello), used as `to`.
    pub peer: String,
}

impl HubSide {
    /// The next data frame from the client, verified. Pings are answered by
    /// tungstenite while reading; a close or EOF fails the test.
    pub async fn recv(&mut self) -> Envelope {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame from the client")
                .expect("socket open")
                .expect("a websocket message");
            let bytes = match msg {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(c) => panic!("client closed: {c:?}"),
                _ => continue,
            };
            let received = envelope::parse_frame(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
                .expect("a parsable client frame");
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
    pub async fn expect(&mut self, msg_type: &str) -> Envelope {
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
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
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
    pub async fn drain_until_closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .expect("socket closed");
    }

    /// Sends a text frame as it is.
    pub async fn send_raw(&mut self, frame: String) {
        self.ws.send(Message::text(frame)).await.expect("send");
    }

    /// Sends a signed frame with a fresh id, `ts = now` and `to` = the peer.
    pub async fn send(&mut self, msg_type: &str, from: &str, data: Option<Value>) -> String {
        let id = fresh_id("hub");
        let to = self.peer.clone();
        self.send_with(&id, msg_type, Some(from), Some(&to), data)
            .await;
        id
    }

    /// Sends a signed frame with every header field chosen.
    pub async fn send_with(
        &mut self,
        id: &str,
        msg_type: &str,
        from: Option<&str>,
        to: Option<&str>,
        data: Option<Value>,
    ) {
        let frame = frame_at(&self.key, id, wall_ms(), msg_type, from, to, data.as_ref());
        self.send_raw(frame).await;
    }

    /// Reads the hello and answers as the reference hub does (protocol §5.2):
    /// `hello.ack`, then `peers.update` (just this peer), then
    /// `status.snapshot` (empty). Returns the hello.
    pub async fn handshake(&mut self, features: &[&str]) -> Envelope {
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
    pub async fn recv_hello(&mut self) -> Envelope {
        let hello = self.recv().await;
        assert_eq!(hello.msg_type(), Some("hello"));
        self.peer = hello.data().expect("hello data")["kind"]
            .as_str()
            .expect("a hello kind")
            .to_owned();
        hello
    }

    /// `hello.ack {ok:true}` with the given features.
    pub async fn ack(&mut self, features: &[&str]) {
        let data = json!({
            "ok": true, "serverTime": wall_ms(), "kind": self.peer, "features": features,
        });
        self.send("hello.ack", "server", Some(data)).await;
    }

    /// Closes with a code and reason.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}
