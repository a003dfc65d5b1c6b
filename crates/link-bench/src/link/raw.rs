//! Raw link peers: a WebSocket and a [`ClientConn`] for the hello, without
//! the client's tasks, outbox and streams — light enough to open
//! thousands, and able to stop reading their socket altogether (which a
//! `LinkClient` never does: it drops at the stream instead).

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use link_protocol::conn::{ClientConn, ClientConnConfig, ClientEvent, IdGen, Now, Transmit};
use link_protocol::{CanonicalData, HashAlgo, Key, messages, msg_type};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::target::HubTarget;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected, authenticated raw peer.
pub(crate) struct RawPeer {
    pub(crate) ws: Ws,
    pub(crate) conn: ClientConn,
}

pub(crate) fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Now::new(Instant::now(), wall)
}

/// One id generator for every raw peer of the process.
fn ids() -> Arc<IdGen> {
    static IDS: OnceLock<Arc<IdGen>> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut prefix = [0u8; 10];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix);
        Arc::new(IdGen::new(prefix))
    })
    .clone()
}

/// Small socket buffers: an idle peer should cost the load generator as
/// little memory as possible (frames larger than the buffer still work).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Connects and authenticates as `kind`; resolves at `hello.ack`.
pub(crate) async fn hello(hub: &HubTarget, kind: &str) -> Result<RawPeer, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        hub.url(),
        Some(ws_config()),
        true,
        hub.connector(),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let key = Key::new(hub.secret(), HashAlgo::Sha256).map_err(|e| e.to_string())?;
    let mut cfg = ClientConnConfig::new(kind, key).map_err(|e| e.to_string())?;
    cfg.pid = std::process::id();
    cfg.keepalive_interval = None;
    cfg.hello_ack_diagnostic = None;
    let mut conn =
        ClientConn::new(cfg, Box::new(ids()), Box::new(|| 0.5)).map_err(|e| e.to_string())?;
    conn.start();
    conn.handle_open(now());
    while let Some(t) = conn.poll_transmit() {
        if let Transmit::Frame(f) = t {
            ws.send(Message::text(f))
                .await
                .map_err(|e| format!("hello: {e}"))?;
        }
    }
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(format!("socket: {e}")),
            None => return Err("closed before hello.ack".into()),
        };
        match msg {
            Message::Text(t) => conn.handle_message(now(), t.as_bytes()),
            Message::Binary(b) => conn.handle_message(now(), &b),
            Message::Close(f) => return Err(format!("closed before hello.ack: {f:?}")),
            _ => {}
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientEvent::Ready { .. } => return Ok(RawPeer { ws, conn }),
                ClientEvent::Rejected { reason } => {
                    return Err(format!("hello rejected: {reason:?}"));
                }
                ClientEvent::Disconnected(d) => {
                    return Err(format!("disconnected: {} {}", d.code, d.reason));
                }
                _ => {}
            }
        }
    }
}

/// A subscriber of `topic` that never reads its socket after subscribing:
/// the hub's writes to it stall once the socket buffers are full. Dropping
/// it closes the socket.
pub(crate) async fn slow_subscriber(
    hub: &HubTarget,
    kind: &str,
    topic: &str,
) -> Result<Ws, String> {
    let RawPeer { mut ws, mut conn } = hello(hub, kind).await?;
    let data = CanonicalData::new(&messages::topic_value(topic));
    let (_, frame) = conn.encode(now(), msg_type::TOPIC_SUBSCRIBE, None, Some(&data));
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    Ok(ws)
}
