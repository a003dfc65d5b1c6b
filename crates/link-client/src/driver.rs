//! The driver task: owns the socket and the [`ClientConn`] state machine,
//! dispatches what arrives (responses, inbound RPCs, topic messages, direct
//! messages, peers and statuses), and runs a writer task per connection
//! that drains the outbox, signing each frame at flush.
//!
//! ```text
//!  hub ──frames──► driver: ClientConn ──► pending RPCs / handlers / streams / events
//!  hub ◄──frames── writer: Outbox ◄── LinkClient handles (send, publish, rpc…)
//! ```
//!
//! The driver awaits in one place only: a `select!` over its commands, the
//! connect attempt under way, the socket and its timers. A connect attempt
//! (TCP, TLS, WebSocket upgrade, bounded by `connect_timeout`) is a future
//! in that select, never awaited inline, so `stop()` is read, and acted on,
//! whatever the link is doing: the attempt is dropped, a backoff is
//! cancelled, and a link that is not ready has nothing to drain. After the
//! close frame is written, the hub's reply is awaited in the background.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, StreamExt};
use link_protocol::conn::{ClientConn, ClientConnConfig, ClientEvent, Now};
use link_protocol::envelope::{self, Header};
use link_protocol::messages::Message as Msg;
use link_protocol::presence::{PeerStep, PeersDelta};
use link_protocol::{
    CanonicalData, DropReason, Envelope, Feature, HandlerError, PeerInfo, ProtocolError,
    ReplayConfig, RpcErrorCode, RpcResponse, SERVER, StatusEntry, close, codes::rpc_error_text,
    msg_type,
};
use link_transport::writer::{self, Outgoing, Taken};
use link_transport::{Frame, TransportError, WebSocket};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectError, LinkError, RemoteError};
use crate::events::LinkEvent;
use crate::handler::RpcCall;
use crate::inner::{
    Cmd, DirectMessage, InFlight, Inner, Phase, TopicMessage, now, tokio_instant, wall_ms,
};
use crate::outbox::OutItem;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The link's connection seen as frames.
type Wire = WebSocket<Ws>;

const BATCH: usize = 256;

/// Already-buffered frames handled per wake-up of the driver.
const DRAIN: usize = 32;

/// After a stop: how long the close frame may take to reach the socket
/// before the socket is dropped without it (a hub that stopped reading).
const CLOSE_FLUSH: Duration = Duration::from_millis(50);

/// After a stop: how long the background wait for the hub's close reply
/// lasts before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

struct Socket {
    stream: SplitStream<Wire>,
    writer: JoinHandle<()>,
    gone: oneshot::Receiver<()>,
    /// Fires when the writer has flushed a close frame.
    close_flushed: oneshot::Receiver<()>,
}

/// A connect attempt under way: a future the driver selects on, with its
/// commands and timers, so that `stop()` can drop it at once.
struct Attempt {
    /// Consecutive failed attempts before this one.
    attempt: u32,
    dial: Pin<Box<dyn Future<Output = Result<Ws, ConnectError>> + Send>>,
}

/// Runs the link until it stops.
pub(crate) async fn run(inner: Arc<Inner>, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>) {
    let Some(mut conn) = client_conn(&inner) else {
        inner.set_phase(Phase::Disabled);
        return;
    };
    let mut socket: Option<Socket> = None;
    let mut connecting: Option<Attempt> = None;
    let mut stop_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut close_sent = false;
    let mut next_status: Option<tokio::time::Instant> = None;
    let mut cmd_open = true;
    conn.start();
    inner.set_phase(Phase::Connecting);
    loop {
        pump(
            &inner,
            &mut conn,
            &mut socket,
            &mut connecting,
            &mut next_status,
            stop_deadline.is_some(),
        );
        if let (Some(deadline), false) = (stop_deadline, close_sent) {
            // Only a ready link can drain: connecting, backing off or
            // handshaking, the outbox waits for a ready that stop() forbids.
            let drained = inner.outbox.is_empty() && inner.core().pending.is_empty();
            if drained || !conn.is_ready() || tokio::time::Instant::now() >= deadline {
                close_sent = true;
                // A connect attempt under way is dropped (TCP, TLS or
                // upgrade, wherever it was).
                connecting = None;
                conn.stop(now());
                // Bound the wait for the close frame to reach the socket.
                stop_deadline = Some(tokio::time::Instant::now() + CLOSE_FLUSH);
                continue;
            }
        }
        if conn.state() == link_protocol::conn::ClientState::Stopped && socket.is_none() {
            break;
        }
        let timer = [
            conn.poll_timeout().map(tokio_instant),
            next_status,
            stop_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            cmd = cmd_rx.recv(), if cmd_open => match cmd {
                Some(Cmd::Stop { done, drain }) => {
                    stop_waiters.push(done);
                    inner.core().stopped = true;
                    if !close_sent {
                        // The earliest deadline of every stop call wins.
                        let deadline = tokio::time::Instant::now() + drain;
                        stop_deadline = Some(stop_deadline.map_or(deadline, |d| d.min(deadline)));
                    }
                }
                None => {
                    // Every handle dropped: stop without draining.
                    cmd_open = false;
                    inner.core().stopped = true;
                    stop_deadline.get_or_insert_with(tokio::time::Instant::now);
                }
            },
            // Draining: the writer taking the outbox's last items, or a
            // caller abandoning a pending RPC, happen outside this task.
            () = inner.drain_progress.notified(), if stop_deadline.is_some() && !close_sent => {}
            (attempt, result) = dial(&mut connecting) => {
                connecting = None;
                opened(&inner, &mut conn, &mut socket, attempt, result);
            }
            ev = socket_event(&mut socket, close_sent) => match ev {
                SocketEvent::Frame(msg) => {
                    // One clock read for the frames of this wake-up.
                    let at = now();
                    on_socket(&inner, &mut conn, &mut socket, msg, at);
                    // Frames the socket already holds are handled in this
                    // wake-up (each after a pump of what the previous one
                    // produced, as the loop would), not one select and timer
                    // per frame. Polling first keeps a lone frame's path as
                    // short as before.
                    for _ in 0..DRAIN {
                        let Some(msg) = socket.as_mut().and_then(|s| s.stream.next().now_or_never())
                        else {
                            break;
                        };
                        pump(
                            &inner,
                            &mut conn,
                            &mut socket,
                            &mut connecting,
                            &mut next_status,
                            stop_deadline.is_some(),
                        );
                        on_socket(&inner, &mut conn, &mut socket, msg, at);
                    }
                }
                SocketEvent::WriterGone => {
                    close_socket(&mut socket);
                    conn.handle_closed(now(), Some(close::ABNORMAL), "");
                }
                SocketEvent::CloseFlushed => {
                    // Stopping, and the close frame is on the wire: the link
                    // is done; the hub's reply is awaited in the background.
                    linger(socket.take());
                    conn.handle_closed(now(), None, "");
                }
            },
            _ = tokio::time::sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => {
                conn.handle_timeout(now());
                if next_status.is_some_and(|t| t <= tokio::time::Instant::now()) {
                    push_status(&inner);
                    next_status = Some(tokio::time::Instant::now() + inner.config.status_interval);
                }
                if stop_deadline.is_some_and(|t| t <= tokio::time::Instant::now()) && close_sent {
                    // The close frame could not even be written: drop the socket.
                    close_socket(&mut socket);
                    conn.handle_closed(now(), None, "");
                }
            }
        }
    }
    hard_stop(&inner, "Link stopped before RPC completed");
    inner.set_phase(Phase::Stopped);
    for w in stop_waiters {
        let _ = w.send(());
    }
}

/// Logs a diagnostic. The hello-ack one (`no-ack`, or `clock-skew`, its
/// variant when the clocks disagree) comes once per connection, when no
/// `hello.ack` came within `hello_ack_diagnostic`: a link that never gets
/// ready says so at the default log level.
fn warn_diagnostic(inner: &Inner, d: link_protocol::Diagnostic) {
    use link_protocol::Diagnostic;
    let url = inner.core().url.clone().unwrap_or_default();
    let url = url.as_str();
    let after = inner.config.hello_ack_diagnostic.unwrap_or_default();
    match d {
        Diagnostic::NoAck { verified: true } => tracing::warn!(
            reason = d.code(),
            url,
            "no hello.ack from the hub within {after:?}, although its frames verify: \
             the hub accepted the key but does not answer the hello"
        ),
        Diagnostic::NoAck { verified: false } => tracing::warn!(
            reason = d.code(),
            url,
            "no hello.ack from the hub within {after:?}: check the secret (and hash \
             algorithm) on both sides, and that the URL is a link hub"
        ),
        Diagnostic::ClockSkew { skew } => tracing::warn!(
            reason = d.code(),
            url,
            skew_ms = skew,
            "no hello.ack from the hub within {after:?}: its frames fall outside the \
             replay window (clock skew {skew} ms); check both clocks"
        ),
        _ => tracing::debug!(reason = d.code(), "protocol error"),
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

fn client_conn(inner: &Inner) -> Option<ClientConn> {
    let c = &inner.config;
    let mut cfg = ClientConnConfig::new(c.kind.as_deref()?, c.key.clone()?).ok()?;
    cfg.name = c.name.clone().unwrap_or_else(|| cfg.kind.clone());
    cfg.pid = std::process::id();
    cfg.replay = ReplayConfig {
        window_ms: u64::try_from(c.replay_window.as_millis()).unwrap_or(u64::MAX),
        max_recent_ids: c.max_recent_ids,
        ..ReplayConfig::default()
    };
    cfg.max_message_bytes = c.max_message_bytes;
    cfg.keepalive_interval = c.keepalive;
    cfg.hello_ack_diagnostic = c.hello_ack_diagnostic;
    cfg.reconnect = c.reconnect;
    cfg.reconnect_on_rejection = c.reconnect_on_rejection;
    cfg.endpoints = c.urls.len();
    cfg.peer_deltas = c.peer_deltas;
    cfg.url_order = c.url_order;
    let random = crate::random::source(c.random_seed);
    ClientConn::new(cfg, Box::new(inner.ids.clone()), random).ok()
}

enum SocketEvent {
    Frame(Option<Result<Frame, TransportError>>),
    WriterGone,
    CloseFlushed,
}

/// The next thing the socket has to say (a frame, its writer ending, or,
/// while `closing`, the close frame flushed).
async fn socket_event(socket: &mut Option<Socket>, closing: bool) -> SocketEvent {
    match socket {
        Some(s) => tokio::select! {
            msg = s.stream.next() => SocketEvent::Frame(msg),
            _ = &mut s.gone => SocketEvent::WriterGone,
            _ = &mut s.close_flushed, if closing => SocketEvent::CloseFlushed,
        },
        None => std::future::pending().await,
    }
}

/// The end of the connect attempt under way (pending while there is none).
async fn dial(connecting: &mut Option<Attempt>) -> (u32, Result<Ws, ConnectError>) {
    match connecting {
        Some(a) => (a.attempt, a.dial.as_mut().await),
        None => std::future::pending().await,
    }
}

/// A stopped link's socket, its close frame sent: reads until the hub
/// answers the close (or [`CLOSE_LINGER`] passes), then drops it.
fn linger(socket: Option<Socket>) {
    let Some(mut s) = socket else { return };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(_)) = s.stream.next().await {}
        })
        .await;
        s.writer.abort();
    });
}

fn close_socket(socket: &mut Option<Socket>) {
    if let Some(s) = socket.take() {
        s.writer.abort();
    }
}

fn on_socket(
    inner: &Inner,
    conn: &mut ClientConn,
    socket: &mut Option<Socket>,
    frame: Option<Result<Frame, TransportError>>,
    now: Now,
) {
    match frame {
        Some(Ok(Frame::Text(t))) => conn.handle_text_message(now, t.as_str()),
        Some(Ok(Frame::Binary(b))) => conn.handle_message(now, &b),
        Some(Ok(Frame::Pong)) => conn.handle_pong(),
        Some(Ok(Frame::Close(frame))) => {
            let (code, reason) = frame.map_or((None, String::new()), |f| (Some(f.code), f.reason));
            close_socket(socket);
            conn.handle_closed(now, code, &reason);
        }
        Some(Ok(Frame::Ping)) => {}
        Some(Err(e)) => {
            let text = e.to_string();
            inner.emit(|| LinkEvent::WsError(text));
            close_socket(socket);
            conn.handle_closed(now, Some(close::ABNORMAL), "");
        }
        None => {
            close_socket(socket);
            conn.handle_closed(now, Some(close::ABNORMAL), "");
        }
    }
}

/// Acts on everything the state machine produced. Never waits: a connect
/// it is asked for starts as an [`Attempt`] that the main loop selects on.
fn pump(
    inner: &Arc<Inner>,
    conn: &mut ClientConn,
    socket: &mut Option<Socket>,
    connecting: &mut Option<Attempt>,
    next_status: &mut Option<tokio::time::Instant>,
    stopping: bool,
) {
    loop {
        let mut progressed = false;
        while let Some(t) = conn.poll_transmit() {
            progressed = true;
            inner.outbox.control(t);
        }
        while let Some(ev) = conn.poll_event() {
            progressed = true;
            match ev {
                ClientEvent::Connect { attempt, endpoint } => {
                    close_socket(socket);
                    // Pings, closes or a terminate still queued were meant
                    // for the old socket.
                    inner.outbox.clear_controls();
                    let url = hub_url(inner, endpoint);
                    tracing::debug!(url, attempt, "connecting");
                    *connecting = Some(Attempt {
                        attempt,
                        dial: connect(inner, url.to_owned()),
                    });
                }
                ClientEvent::Connected => {
                    let url = hub_url(inner, conn.endpoint()).to_owned();
                    {
                        let mut core = inner.core();
                        core.connected = true;
                        core.url = Some(url.clone());
                        // A hub that grants `peers.delta` sends a fresh
                        // snapshot on every connection.
                        core.peer_sync.reset();
                    }
                    let kind = inner.kind().to_owned();
                    inner.emit(|| LinkEvent::Connect { url, kind });
                }
                ClientEvent::Verified => {
                    inner.core().verified = true;
                    inner.verified_at(wall_ms());
                    let kind = inner.kind().to_owned();
                    inner.emit(|| LinkEvent::Verified { kind });
                }
                ClientEvent::Ready { kind, features } => {
                    on_ready(inner, &kind, &features);
                    *next_status = inner.config.status.as_ref().map(|_| {
                        push_status(inner);
                        tokio::time::Instant::now() + inner.config.status_interval
                    });
                }
                ClientEvent::Rejected { reason } => {
                    {
                        // Recorded before the phase changes, so a `ready()`
                        // that wakes later still sees it (the phase may have
                        // moved on to Stopped or Connecting by then).
                        let mut core = inner.core();
                        core.rejections += 1;
                        core.rejection.clone_from(&reason);
                    }
                    inner.set_phase(Phase::Rejected {
                        reason: reason.clone(),
                    });
                    let error = LinkError::HelloRejected {
                        reason: reason.clone(),
                    };
                    inner.emit(|| LinkEvent::Rejected { reason, error });
                }
                ClientEvent::Message {
                    envelope,
                    message,
                    at_ms,
                } => {
                    inner.verified_at(at_ms);
                    on_message(inner, envelope, message);
                }
                ClientEvent::ProtocolError(e) => {
                    tracing::debug!(reason = e.reason.code(), "protocol error");
                    inner.emit(|| LinkEvent::ProtocolError(e));
                }
                ClientEvent::Diagnostic(d) => {
                    warn_diagnostic(inner, d);
                    inner.emit(|| LinkEvent::Diagnostic(d));
                }
                ClientEvent::Disconnected(d) => {
                    close_socket(socket);
                    *next_status = None;
                    on_disconnect(inner, d.displaced || !d.will_reconnect);
                    let reason = if stopping {
                        "stopped".to_owned()
                    } else {
                        d.reason
                    };
                    inner.emit(|| LinkEvent::Disconnect {
                        code: Some(d.code),
                        reason,
                        will_reconnect: d.will_reconnect,
                        was_ready: d.was_ready,
                        displaced: d.displaced,
                    });
                }
                ClientEvent::ReconnectScheduled { delay, attempt } => {
                    inner.core().reconnect_attempt = attempt;
                    inner.emit(|| LinkEvent::Reconnecting { delay, attempt });
                }
                ClientEvent::ReconnectExhausted { attempts } => {
                    inner.core().stopped = true;
                    inner.outbox.clear();
                    let max_reconnect_attempts = inner.config.reconnect.max_attempts;
                    inner.emit(|| LinkEvent::ReconnectExhausted {
                        attempts,
                        max_reconnect_attempts,
                    });
                }
                _ => {}
            }
        }
        if !progressed {
            return;
        }
    }
}

/// The URL of `endpoint` (an index the state machine keeps below the
/// number of URLs).
fn hub_url(inner: &Inner, endpoint: usize) -> &str {
    let urls = &inner.config.urls;
    urls.get(endpoint)
        .or_else(|| urls.first())
        .map_or("", String::as_str)
}

/// One connect attempt to `url`: TCP, TLS for `wss://`, the WebSocket
/// upgrade, all within `connect_timeout`. Owns what it needs: dropping it
/// cancels it.
fn connect(
    inner: &Inner,
    url: String,
) -> Pin<Box<dyn Future<Output = Result<Ws, ConnectError>> + Send>> {
    let c = &inner.config;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes))
        .max_write_buffer_size(c.max_buffered_bytes + c.max_message_bytes);
    // Always a connector of ours: tokio-tungstenite's default TLS set-up is
    // never used. A `ws://` URL of a mixed list dials in plain text.
    let connector = Some(match &c.tls {
        Some(tls) if crate::tls::is_wss(&url) => Connector::Rustls(tls.clone()),
        _ => Connector::Plain,
    });
    let after = c.connect_timeout;
    Box::pin(async move {
        let attempt = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config),
            true,
            connector,
        );
        match tokio::time::timeout(after, attempt).await {
            Ok(Ok((ws, _resp))) => Ok(ws),
            Ok(Err(e)) => Err(ConnectError::from_ws(&url, e)),
            Err(_) => Err(ConnectError::Timeout { url, after }),
        }
    })
}

/// A connect attempt ended: start the connection, or report the failure
/// (the state machine then schedules the reconnect).
fn opened(
    inner: &Arc<Inner>,
    conn: &mut ClientConn,
    socket: &mut Option<Socket>,
    attempt: u32,
    result: Result<Ws, ConnectError>,
) {
    match result {
        Ok(ws) => {
            let (sink, stream) = WebSocket::new(ws).split();
            let (gone_tx, gone) = oneshot::channel();
            let (flushed_tx, close_flushed) = oneshot::channel();
            let writer = tokio::spawn(write_loop(sink, inner.clone(), gone_tx, flushed_tx));
            *socket = Some(Socket {
                stream,
                writer,
                gone,
                close_flushed,
            });
            conn.handle_open(now());
        }
        Err(error) => {
            tracing::debug!(code = error.code(), attempt, "connect failed: {error}");
            let reason = match error {
                ConnectError::Timeout { .. } => "connect timed out",
                _ => "connect failed",
            };
            let text = error.to_string();
            inner.emit(|| LinkEvent::WsError(text));
            inner.emit(|| LinkEvent::ConnectFailed { attempt, error });
            conn.handle_closed(now(), Some(close::ABNORMAL), reason);
        }
    }
}

fn on_ready(inner: &Inner, kind: &str, features: &[String]) {
    let has = |f: Feature| features.iter().any(|x| x == f.as_str());
    // Features, phase and the topic snapshot change in one critical section
    // with `subscribe()`, which decides under the same lock whether to send
    // its own `topic.subscribe`: every topic is subscribed exactly once.
    let topics: Vec<String> = {
        let mut core = inner.core();
        core.features = Some(features.to_vec());
        core.reconnect_attempt = 0;
        inner.verified_at(wall_ms());
        inner.set_phase(Phase::Ready {
            kind: kind.to_owned(),
            features: features.to_vec(),
        });
        if has(Feature::Topics) {
            core.subs.keys().cloned().collect()
        } else {
            Vec::new()
        }
    };
    inner.outbox.purge(|q| q.feature.is_some_and(|f| !has(f)));
    for topic in topics {
        let data = CanonicalData::new(&link_protocol::messages::topic_value(&topic));
        let _ = inner.enqueue(inner.item(None, msg_type::TOPIC_SUBSCRIBE, None, Some(data)));
    }
    inner.outbox.set_ready(true);
    let (kind, features) = (kind.to_owned(), features.to_vec());
    inner.emit(|| LinkEvent::Ready { kind, features });
}

fn push_status(inner: &Inner) {
    let Some(provider) = &inner.config.status else {
        return;
    };
    let status = provider();
    let data = CanonicalData::new(&status);
    let _ = inner.enqueue(inner.item(None, msg_type::STATUS_UPDATE, None, Some(data)));
}

/// Connection gone: fail pending RPCs, abort inbound handlers, purge what
/// only made sense on that connection.
///
/// The phase changes and the purge happen under the core lock, the one
/// `rpc()` holds while it checks readiness and queues its request, so a
/// request is either failed here or never queued for this connection.
fn on_disconnect(inner: &Inner, terminal: bool) {
    let (pending, inflight) = {
        let mut core = inner.core();
        inner.set_phase(if terminal {
            Phase::Stopped
        } else {
            Phase::Connecting
        });
        inner.outbox.set_ready(false);
        inner
            .outbox
            .purge(|q| matches!(q.msg_type, msg_type::RPC_REQUEST | msg_type::RPC_CANCEL));
        if terminal {
            inner.outbox.clear();
            core.stopped = true;
        }
        core.connected = false;
        core.url = None;
        core.verified = false;
        (
            std::mem::take(&mut core.pending),
            std::mem::take(&mut core.inflight),
        )
    };
    for (_, h) in inflight {
        h.cancel.cancel();
    }
    for (id, p) in pending {
        let _ = p.tx.send(Err(LinkError::RpcDisconnect {
            to: p.to,
            rpc_type: String::new(),
            id,
            reason: "connection closed before the response".into(),
        }));
    }
}

fn hard_stop(inner: &Inner, reason: &str) {
    inner.outbox.clear();
    let (pending, inflight) = {
        let mut core = inner.core();
        core.stopped = true;
        core.connected = false;
        core.url = None;
        (
            std::mem::take(&mut core.pending),
            std::mem::take(&mut core.inflight),
        )
    };
    for (_, h) in inflight {
        h.cancel.cancel();
    }
    for (id, p) in pending {
        let _ = p.tx.send(Err(LinkError::RpcDisconnect {
            to: p.to,
            rpc_type: String::new(),
            id,
            reason: reason.into(),
        }));
    }
}

fn on_message(inner: &Arc<Inner>, env: Envelope, message: Msg) {
    if inner.firehose_listening() {
        let e = env.clone();
        inner.emit(|| LinkEvent::Message(e));
    }
    let from = env.from().unwrap_or(SERVER).to_owned();
    match message {
        Msg::RpcResponse(resp) => on_response(inner, &env, &from, resp),
        Msg::RpcRequest { rpc_type, rpc_data } => on_request(inner, env, from, rpc_type, rpc_data),
        Msg::RpcCancel { id } => {
            let cancelled = {
                let mut core = inner.core();
                match core.inflight.get(&id) {
                    // A peer can only cancel its own requests.
                    Some(h) if h.from == from => core.inflight.remove(&id),
                    _ => None,
                }
            };
            if let Some(h) = cancelled {
                h.cancel.cancel();
                let rpc_type = h.rpc_type;
                inner.emit(|| LinkEvent::RpcCancel { id, from, rpc_type });
            }
        }
        Msg::TopicMessage { topic: Some(topic) } => on_topic_message(
            inner,
            TopicMessage {
                topic,
                from,
                envelope: env,
            },
        ),
        Msg::Direct { direct_type } => {
            let msg = DirectMessage {
                from,
                msg_type: direct_type,
                envelope: env,
            };
            // The event (for listeners only) goes out after the streams got it.
            let event = inner.listening().then(|| LinkEvent::Direct {
                from: msg.from.clone(),
                msg_type: msg.msg_type.clone(),
                data: msg.data().cloned(),
            });
            deliver(inner, &mut inner.core().directs, msg, |_| {
                "direct".to_owned()
            });
            if let Some(event) = event {
                inner.emit(|| event);
            }
        }
        Msg::PeersUpdate(peers) => on_peers(inner, peers),
        Msg::PeersSnapshot(part) => {
            let step = inner.core().peer_sync.on_snapshot(part);
            on_peer_step(inner, step);
        }
        Msg::PeersDelta(delta) => {
            let step = inner.core().peer_sync.on_delta(delta);
            on_peer_step(inner, step);
        }
        Msg::StatusSnapshot(map) => {
            let mut core = inner.core();
            for (k, e) in map {
                core.statuses.insert(k, e);
            }
        }
        Msg::StatusFanout { from, status, at } => {
            inner.core().statuses.insert(
                from.clone(),
                StatusEntry {
                    status: status.clone(),
                    at,
                },
            );
            inner.emit(|| LinkEvent::PeerStatus { from, status, at });
        }
        _ => {}
    }
}

/// Calls the topic's handlers (outside the lock: a handler may use the
/// client), then hands the message to its streams.
fn on_topic_message(inner: &Inner, msg: TopicMessage) {
    let handlers = {
        let mut core = inner.core();
        let Some(subs) = core.subs.get_mut(&msg.topic) else {
            return;
        };
        if subs.handlers.is_empty() {
            return deliver(inner, &mut subs.sinks, msg, topic_stream);
        }
        subs.handlers.clone()
    };
    for (_, handler) in handlers.iter() {
        let call = std::panic::AssertUnwindSafe(|| handler(&msg));
        if std::panic::catch_unwind(call).is_err() {
            tracing::error!(topic = %msg.topic, "a topic handler panicked");
        }
    }
    let mut core = inner.core();
    if let Some(subs) = core.subs.get_mut(&msg.topic)
        && !subs.sinks.is_empty()
    {
        deliver(inner, &mut subs.sinks, msg, topic_stream);
    }
}

/// The `SlowConsumer` name of a topic's stream.
fn topic_stream(msg: &TopicMessage) -> String {
    format!("topic:{}", msg.topic)
}

/// Hands a message to every live stream; a full stream loses the message
/// (counted, reported) instead of stalling the link; closed ones are pruned.
fn deliver<T: Clone>(
    inner: &Inner,
    sinks: &mut Vec<crate::inner::Sink<T>>,
    msg: T,
    // Names the stream from the message a full one refused (rare).
    stream: impl Fn(&T) -> String,
) {
    sinks.retain(|s| !s.tx.is_closed());
    // Clone for all but the last stream; the last one takes the message.
    let mut msg = Some(msg);
    let last = sinks.len().saturating_sub(1);
    for (i, s) in sinks.iter_mut().enumerate() {
        let item = if i == last { msg.take() } else { msg.clone() };
        let Some(item) = item else { break };
        match s.tx.try_send(item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                s.dropped += 1;
                let dropped = s.dropped;
                inner.emit(|| LinkEvent::SlowConsumer {
                    stream: stream(&item),
                    dropped,
                });
            }
        }
    }
}

fn on_response(inner: &Inner, env: &Envelope, from: &str, resp: link_protocol::RpcResponse) {
    let mut core = inner.core();
    let Some(p) = core.pending.get(env.id()) else {
        return;
    };
    if from != SERVER && from != p.to {
        drop(core);
        let e = ProtocolError::new(DropReason::RpcResponseMismatch)
            .with_kind(from)
            .with_type(Some(msg_type::RPC_RESPONSE));
        inner.emit(|| LinkEvent::ProtocolError(e));
        return;
    }
    let Some(p) = core.pending.remove(env.id()) else {
        return;
    };
    drop(core);
    let result = match resp {
        RpcResponse::Ok { result } => Ok(result.unwrap_or(Value::Null)),
        RpcResponse::Err { error, code, data } => {
            Err(LinkError::RpcRemote(Box::new(RemoteError {
                code,
                message: error,
                data,
                to: p.to.clone(),
                rpc_type: String::new(),
                id: env.id().to_owned(),
            })))
        }
    };
    let _ = p.tx.send(result);
}

fn on_request(
    inner: &Arc<Inner>,
    env: Envelope,
    from: String,
    rpc_type: String,
    data: Option<Value>,
) {
    let id = env.id().to_owned();
    if inner.listening() {
        let (f, i, t, d) = (from.clone(), id.clone(), rpc_type.clone(), data.clone());
        inner.emit(|| LinkEvent::RpcRequest {
            from: f,
            id: i,
            rpc_type: t,
            data: d,
        });
    }
    let cap = inner.config.max_concurrent_rpc;
    let (handler, cancel) = {
        let mut core = inner.core();
        let Some(handler) = core.handlers.get(&rpc_type).cloned() else {
            drop(core);
            let resp = RpcResponse::error(
                RpcErrorCode::UnknownType,
                format!("{}{rpc_type}", rpc_error_text::UNKNOWN_TYPE),
            );
            return respond(inner, &id, &from, &resp);
        };
        if cap > 0 && core.inflight.len() >= cap {
            drop(core);
            let resp =
                RpcResponse::error(RpcErrorCode::Overloaded, rpc_error_text::HANDLER_OVERLOADED);
            return respond(inner, &id, &from, &resp);
        }
        let cancel = CancellationToken::new();
        core.inflight.insert(
            id.clone(),
            InFlight {
                from: from.clone(),
                rpc_type: rpc_type.clone(),
                cancel: cancel.clone(),
            },
        );
        (handler, cancel)
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let call = RpcCall {
            id: id.clone(),
            from: from.clone(),
            rpc_type: rpc_type.clone(),
            data,
            cancel: cancel.clone(),
            envelope: env,
        };
        let result = match std::panic::AssertUnwindSafe(handler.call(call))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(_) => Err(HandlerError::internal("handler panicked")),
        };
        // Cancelled (by the caller, a disconnect or stop): never answer.
        let still_ours = {
            let mut core = inner.core();
            core.inflight.remove(&id).is_some()
        };
        if !still_ours || cancel.is_cancelled() {
            return;
        }
        let resp = match result {
            Ok(v) => RpcResponse::Ok { result: Some(v) },
            Err(e) => {
                if !e.is_exposed() {
                    let (t, f, i, err) = (
                        rpc_type.clone(),
                        from.clone(),
                        id.clone(),
                        e.text().to_owned(),
                    );
                    tracing::warn!(rpc_type = %t, from = %f, "RPC handler failed: {err}");
                    inner.emit(|| LinkEvent::RpcHandlerError {
                        rpc_type: t,
                        from: f,
                        id: i,
                        error: err,
                    });
                }
                e.to_response(inner.config.expose_rpc_errors)
            }
        };
        respond(&inner, &id, &from, &resp);
    });
}

fn respond(inner: &Inner, id: &str, to: &str, resp: &RpcResponse) {
    let data = CanonicalData::new(&resp.to_value());
    let _ = inner.enqueue(inner.item(
        Some(id.to_owned()),
        msg_type::RPC_RESPONSE,
        Some(to.to_owned()),
        Some(data),
    ));
}

/// Acts on what the `peers.delta` tracker made of a snapshot part or a
/// delta: the same list and the same `peer.*` events as a v1 list would
/// give.
fn on_peer_step(inner: &Inner, step: PeerStep) {
    match step {
        PeerStep::List(peers) => on_peers(inner, peers),
        PeerStep::Apply(delta) => on_peer_delta(inner, delta),
        PeerStep::Resync => {
            tracing::debug!("peer list gap: asking the hub for a fresh snapshot");
            let data = CanonicalData::new(&Value::Object(Default::default()));
            let _ = inner.enqueue(inner.item(None, msg_type::PEERS_RESYNC, None, Some(data)));
        }
        _ => {}
    }
}

/// Applies a delta in O(change), with the events a v1 client diffing the
/// lists before and after would emit, in the same order: for each changed
/// peer (in list order) and each joined one (appended), `peer-replaced`
/// when it was listed before with another `connectedAt`, else
/// `peer-connect`; then `peer-disconnect` for each peer gone.
fn on_peer_delta(inner: &Inner, delta: PeersDelta) {
    let left: std::collections::HashSet<&str> = delta.left.iter().map(String::as_str).collect();
    let (gone, replaced) = {
        let mut core = inner.core();
        let mut gone: HashMap<String, PeerInfo> = HashMap::new();
        if !left.is_empty() {
            let peers = std::mem::take(&mut core.peers);
            let (out, kept): (Vec<PeerInfo>, Vec<PeerInfo>) = peers
                .into_iter()
                .partition(|p| left.contains(p.kind.as_str()));
            core.peers = kept;
            gone = out.into_iter().map(|p| (p.kind.clone(), p)).collect();
        }
        let mut replaced: Vec<(PeerInfo, Option<PeerInfo>)> = Vec::new();
        for p in delta.changed {
            if let Some(slot) = core.peers.iter_mut().find(|q| q.kind == p.kind) {
                let old = std::mem::replace(slot, p.clone());
                replaced.push((p, Some(old)));
            }
        }
        for p in delta.joined {
            let old = gone.remove(&p.kind);
            core.peers.push(p.clone());
            replaced.push((p, old));
        }
        for kind in gone.keys() {
            core.statuses.remove(kind);
        }
        (gone, replaced)
    };
    for (p, old) in replaced {
        match old {
            None => inner.emit(|| LinkEvent::PeerConnect(p)),
            Some(old) if old.connected_at != p.connected_at => {
                let kind = p.kind.clone();
                inner.emit(|| LinkEvent::PeerReplaced {
                    kind,
                    prev: old,
                    peer: p,
                });
            }
            Some(_) => {}
        }
    }
    for (_, old) in gone {
        inner.emit(|| LinkEvent::PeerDisconnect(old));
    }
}

fn on_peers(inner: &Inner, peers: Vec<PeerInfo>) {
    // Set lookups: a list of thousands of peers diffs in linear time.
    let now: std::collections::HashSet<&str> = peers.iter().map(|p| p.kind.as_str()).collect();
    let prev: HashMap<String, PeerInfo> = {
        let mut core = inner.core();
        let prev = std::mem::replace(&mut core.peers, peers.clone());
        for gone in prev.iter().filter(|p| !now.contains(p.kind.as_str())) {
            core.statuses.remove(&gone.kind);
        }
        prev.into_iter().map(|p| (p.kind.clone(), p)).collect()
    };
    for p in &peers {
        match prev.get(&p.kind) {
            None => {
                let p = p.clone();
                inner.emit(|| LinkEvent::PeerConnect(p));
            }
            Some(old) if old.connected_at != p.connected_at => {
                let (kind, prev, peer) = (p.kind.clone(), old.clone(), p.clone());
                inner.emit(|| LinkEvent::PeerReplaced { kind, prev, peer });
            }
            Some(_) => {}
        }
    }
    for (kind, old) in prev {
        if !now.contains(kind.as_str()) {
            inner.emit(|| LinkEvent::PeerDisconnect(old));
        }
    }
}

/// The link's outbox as the shared writer loop sees it, plus this
/// connection's hooks: `outbox-drained` events and the close-flushed signal
/// the driver waits for after a stop.
struct LinkQueue<'a> {
    inner: &'a Inner,
    close_flushed: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Outgoing for LinkQueue<'_> {
    type Item = OutItem;

    fn take(&self, batch: &mut Vec<OutItem>, max: usize) -> Taken {
        let before = batch.len();
        let taken = self.inner.outbox.take(batch, max);
        if batch.len() > before && !taken.more {
            // The queue's last items are on their way to the socket: a
            // stopping driver may have been waiting for exactly that.
            self.inner.drain_progress();
        }
        taken
    }

    fn wait(&self) -> impl Future<Output = ()> + Send {
        self.inner.outbox.wait()
    }

    fn set_stalled(&self, stalled: bool) {
        self.inner.outbox.set_stalled(stalled);
    }

    fn add_buffered(&self, bytes: usize) {
        self.inner.outbox.add_buffered(bytes);
    }

    fn flushed(&self) {
        self.inner.outbox.flushed();
    }

    fn drained(&self) {
        self.inner.emit(|| LinkEvent::OutboxDrained);
    }

    fn close_sent(&self) {
        let tx = self
            .close_flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

/// Drains the outbox into the socket through the shared writer loop;
/// builds and signs at flush with this client's key and kind.
async fn write_loop(
    mut sink: SplitSink<Wire, Frame>,
    inner: Arc<Inner>,
    gone: oneshot::Sender<()>,
    close_flushed: oneshot::Sender<()>,
) {
    let (Some(key), kind) = (inner.config.key.clone(), inner.kind().to_owned()) else {
        let _ = gone.send(());
        return;
    };
    let queue = LinkQueue {
        inner: &inner,
        close_flushed: std::sync::Mutex::new(Some(close_flushed)),
    };
    let encode = |item: OutItem, ts: u64| {
        let id = item.id.unwrap_or_else(|| inner.ids.next_id());
        let header = Header {
            id: &id,
            ts,
            msg_type: item.msg_type,
            from: Some(&kind),
            to: item.to.as_deref(),
        };
        Some(envelope::encode(&key, &header, item.data.as_ref()))
    };
    if let Err(e) = writer::write_loop(&mut sink, &queue, BATCH, encode).await {
        tracing::debug!("link write failed: {e}");
    }
    let _ = gone.send(());
}
