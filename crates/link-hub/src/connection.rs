//! One attached socket: a reader task that drives the socket's [`HubConn`]
//! (parse, verify, replay, handshake, timers) and a writer task that drains
//! its [`Outbox`], signing each frame with the socket's key at flush.
//!
//! ```text
//!  WebSocket ──► reader: HubConn ──verified──► [ACL lane] ──► router
//!                  ▲ timers / control (evict, displace, close)
//!  WebSocket ◄── writer: Outbox ◄── router pushes (per-socket lock)
//! ```
//!
//! The reader makes no routing decisions; the router makes no socket I/O.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use link_protocol::conn::{HubConn, HubConnEvent, Transmit};
use link_protocol::envelope::{self, Header, SharedPrefix};
use link_protocol::messages::Message as Msg;
use link_protocol::{Envelope, Key, RpcResponse, SERVER, close, validate};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::acl::{self, AclOp, PublishContext, RpcContext, SendContext, SubscribeContext, Verdict};
use crate::config::KeySource;
use crate::events::{HubEvent, TimeoutReason};
use crate::outbox::{Control, OutItem, Outbox};
use crate::router::RouterMsg;
use crate::shared::{ConnId, Shared, now, tokio_instant, wall_ms};

/// Instructions from the router to a socket.
#[derive(Debug)]
pub(crate) enum ConnCtl {
    /// Pending-cap eviction.
    Evict,
    /// Another socket took this kind.
    Displace,
    /// Close with a code (shutdown).
    Close { code: Option<u16>, reason: String },
    /// Drop the socket now.
    Terminate,
}

const BATCH: usize = 256;

/// Serves one WebSocket until it closes.
pub(crate) async fn run<S>(shared: Arc<Shared>, ws: S, remote: Option<SocketAddr>)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + 'static,
{
    let conn = shared.next_conn_id();
    let outbox = Arc::new(Outbox::new(shared.config.max_outbox_bytes));
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let (sink, mut stream) = ws.split();
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(write_loop(sink, outbox.clone(), shared.clone(), gone_tx));
    if shared
        .router
        .send(RouterMsg::Attach {
            conn,
            outbox: outbox.clone(),
            ctl: ctl_tx,
            remote,
        })
        .await
        .is_err()
    {
        writer.abort();
        return;
    }

    let mut reader = Reader {
        shared: shared.clone(),
        conn,
        remote,
        hc: HubConn::new(now().instant, shared.conn_config),
        outbox: outbox.clone(),
        kind: None,
        lane: None,
        key_lookup: None,
        close: (Some(close::ABNORMAL), String::new()),
    };
    loop {
        let deadline = reader.hc.poll_timeout();
        tokio::select! {
            biased;
            _ = &mut gone_rx => break,
            Some(ctl) = ctl_rx.recv() => reader.control(ctl),
            msg = stream.next() => {
                if !reader.incoming(msg) {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline.map_or_else(far_future, tokio_instant)), if deadline.is_some() => {
                reader.hc.handle_timeout(now());
            }
            key = key_answer(&mut reader.key_lookup), if reader.key_lookup.is_some() => {
                reader.key_lookup = None;
                let replay = &mut reader.shared.replay.checker();
                reader.hc.key_resolved(now(), key, replay);
            }
        }
        reader.drain().await;
    }
    reader.hc.handle_closed();
    outbox.close();
    drop(reader.lane.take());
    // Let a queued close frame go out; the writer stops on its own once the
    // outbox is closed and empty.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), writer).await;
    let (code, reason) = reader.close;
    let _ = shared
        .router
        .send(RouterMsg::Closed { conn, code, reason })
        .await;
}

/// The answer of a running key lookup (`None` if its task died).
async fn key_answer(lookup: &mut Option<oneshot::Receiver<Option<Key>>>) -> Option<Key> {
    match lookup {
        Some(rx) => rx.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

struct Reader {
    shared: Arc<Shared>,
    conn: ConnId,
    remote: Option<SocketAddr>,
    hc: HubConn,
    outbox: Arc<Outbox>,
    kind: Option<Arc<str>>,
    lane: Option<mpsc::UnboundedSender<Envelope>>,
    /// A key resolver running for the pending hello.
    key_lookup: Option<oneshot::Receiver<Option<Key>>>,
    /// Close code and reason to report when the socket goes.
    close: (Option<u16>, String),
}

impl Reader {
    /// Handles one read result; false when the socket is done.
    fn incoming(&mut self, msg: Option<Result<Message, WsError>>) -> bool {
        let replay = &mut self.shared.replay.checker();
        match msg {
            Some(Ok(Message::Text(t))) => self.hc.handle_message(now(), t.as_bytes(), replay),
            Some(Ok(Message::Binary(b))) => self.hc.handle_message(now(), &b, replay),
            Some(Ok(Message::Pong(_))) => self.hc.handle_pong(),
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                self.close = match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                    None => (Some(close::NO_STATUS), String::new()),
                };
            }
            Some(Err(WsError::Capacity(e))) => {
                tracing::debug!(conn = self.conn, "frame over the size cap: {e}");
                self.close = (Some(close::TOO_BIG), String::new());
                self.outbox.control(Control::Close {
                    code: Some(close::TOO_BIG),
                    reason: String::new(),
                });
                return false;
            }
            Some(Err(e)) => {
                tracing::debug!(conn = self.conn, "socket error: {e}");
                return false;
            }
            None => return false,
        }
        true
    }

    fn control(&mut self, ctl: ConnCtl) {
        let t = now();
        match ctl {
            ConnCtl::Evict => self.hc.evict(t),
            ConnCtl::Displace => self.hc.displace(t),
            ConnCtl::Close { code, reason } => self.hc.close(t, code, &reason),
            ConnCtl::Terminate => self.outbox.control(Control::Terminate),
        }
    }

    /// Hands socket-level transmits to the writer.
    fn relay_transmits(&mut self) {
        while let Some(t) = self.hc.poll_transmit() {
            self.outbox.control(match t {
                Transmit::Ping => Control::Ping,
                Transmit::Close { code, reason } => Control::Close { code, reason },
                Transmit::Terminate => Control::Terminate,
                Transmit::Frame(_) => continue, // the hub never sends from HubConn
            });
        }
    }

    /// Acts on what the state machine produced.
    async fn drain(&mut self) {
        self.relay_transmits();
        while let Some(ev) = self.hc.poll_event() {
            match ev {
                HubConnEvent::KeyNeeded { kind } => match &self.shared.config.keys {
                    // A resolver runs on its own task: while it works the socket
                    // keeps reading (frames queue behind the hello in HubConn),
                    // and timers and control (hello timeout, eviction, close)
                    // still apply.
                    KeySource::Resolver(resolver) => {
                        let (tx, rx) = oneshot::channel();
                        let (resolver, hash) = (resolver.clone(), self.shared.config.hash);
                        tokio::spawn(async move {
                            let _ = tx.send(resolve_key(&*resolver, hash, &kind).await);
                        });
                        self.key_lookup = Some(rx);
                    }
                    // Static keys answer at once.
                    keys => {
                        let key = match keys {
                            KeySource::Shared(k) => Some(k.clone()),
                            KeySource::PerKind(map) => map.get(&kind).cloned(),
                            KeySource::Resolver(_) => None,
                        };
                        self.hc
                            .key_resolved(now(), key, &mut self.shared.replay.checker());
                        self.relay_transmits();
                    }
                },
                HubConnEvent::Authenticated { hello } => {
                    let Some(key) = self.hc.key().cloned() else {
                        continue;
                    };
                    self.outbox.set_key(key);
                    let kind: Arc<str> = hello.kind.as_str().into();
                    self.kind = Some(kind.clone());
                    if self.shared.config.acl.has_laned_hooks() {
                        self.lane = Some(spawn_lane(self.shared.clone(), self.conn, kind.clone()));
                    }
                    let _ = self
                        .shared
                        .router
                        .send(RouterMsg::Register {
                            conn: self.conn,
                            hello,
                        })
                        .await;
                }
                HubConnEvent::Message(env) => self.dispatch(env).await,
                HubConnEvent::ProtocolError(e) => self.shared.protocol_error(e, self.remote),
                HubConnEvent::HelloTimeout => {
                    let hello_timeout_ms = self
                        .shared
                        .config
                        .hello_timeout
                        .map_or(0, |d| d.as_millis() as u64);
                    let remote_addr = self.remote;
                    self.shared.emit(|| HubEvent::PeerTimeout {
                        remote_addr,
                        hello_timeout_ms,
                        reason: TimeoutReason::HelloTimeout,
                    });
                }
                HubConnEvent::KeepaliveTimeout => {
                    self.close = (Some(close::ABNORMAL), close::REASON_KEEPALIVE.to_owned());
                }
                _ => {}
            }
        }
    }

    /// Sends a verified message on: through the ACL lane or an RPC verdict
    /// when hooks are set, straight to the router otherwise.
    async fn dispatch(&mut self, env: Envelope) {
        let Some(kind) = self.kind.clone() else {
            return;
        };
        if self.shared.firehose_listening() {
            let (from, envelope) = (kind.to_string(), env.clone());
            self.shared.emit(|| HubEvent::Message { from, envelope });
        }
        let t = env.msg_type();
        let laned = matches!(
            t,
            Some(
                link_protocol::msg_type::TOPIC_MESSAGE
                    | link_protocol::msg_type::TOPIC_SUBSCRIBE
                    | link_protocol::msg_type::DIRECT
            )
        );
        if let (true, Some(lane)) = (laned, &self.lane) {
            let _ = lane.send(env);
            return;
        }
        if t == Some(link_protocol::msg_type::RPC_REQUEST)
            && self.shared.config.acl.can_rpc.is_some()
        {
            let (shared, conn, outbox) = (self.shared.clone(), self.conn, self.outbox.clone());
            tokio::spawn(async move {
                if rpc_allowed(&shared, &kind, &env, &outbox).await {
                    let _ = shared
                        .router
                        .send(RouterMsg::Inbound { conn, kind, env })
                        .await;
                }
            });
            return;
        }
        let _ = self
            .shared
            .router
            .send(RouterMsg::Inbound {
                conn: self.conn,
                kind,
                env,
            })
            .await;
    }
}

/// Runs a key resolver; a panic, `None` or an empty key mean "unknown kind".
async fn resolve_key(
    resolver: &(dyn Fn(&str) -> crate::config::BoxFuture<Option<String>> + Send + Sync),
    hash: link_protocol::HashAlgo,
    kind: &str,
) -> Option<Key> {
    let lookup = std::panic::AssertUnwindSafe(async { resolver(kind).await });
    match lookup.catch_unwind().await {
        // An empty key counts as no key, as in the reference.
        Ok(Some(secret)) => Key::new(&secret, hash).ok(),
        Ok(None) => None,
        Err(_) => {
            tracing::warn!(kind, "key resolver panicked; treating the kind as unknown");
            None
        }
    }
}

/// Runs `can_rpc`; on denial answers the caller and emits `acl-denied`.
async fn rpc_allowed(shared: &Shared, kind: &Arc<str>, env: &Envelope, outbox: &Outbox) -> bool {
    let Some(hook) = &shared.config.acl.can_rpc else {
        return true;
    };
    let (rpc_type, rpc_data) = match Msg::parse(env) {
        Msg::RpcRequest { rpc_type, rpc_data } => (rpc_type, rpc_data),
        _ => (String::new(), None),
    };
    let to = env.to().map(|t| t.into_owned());
    let ctx = RpcContext {
        from: kind.to_string(),
        to: to.clone(),
        rpc_type: rpc_type.clone(),
        rpc_data,
    };
    match acl::judge(hook, ctx, AclOp::Rpc).await {
        Verdict::Allow => true,
        Verdict::Deny { code, error } => {
            let code = code.unwrap_or_else(|| AclOp::Rpc.default_code().to_owned());
            let error =
                error.unwrap_or_else(|| link_protocol::codes::rpc_error_text::FORBIDDEN.to_owned());
            let resp = RpcResponse::Err {
                error: error.clone(),
                code: code.clone(),
                data: None,
            };
            push_response(outbox, kind, env.id(), &resp);
            let from = kind.to_string();
            shared.emit(|| HubEvent::AclDenied {
                op: AclOp::Rpc,
                from,
                code,
                error,
                to,
                rpc_type: Some(rpc_type),
                topic: None,
                msg_type: None,
            });
            false
        }
    }
}

/// Queues a hub-made `rpc.response` to `kind`.
pub(crate) fn push_response(outbox: &Outbox, kind: &Arc<str>, id: &str, resp: &RpcResponse) {
    let data = link_protocol::CanonicalData::new(&resp.to_value());
    let item = OutItem::new(
        Some(id.into()),
        link_protocol::msg_type::RPC_RESPONSE,
        SERVER.into(),
        kind.clone(),
        Some(Arc::new(data)),
    );
    let _ = outbox.push(item);
}

/// The per-socket ordered lane for publish/subscribe/send verdicts.
fn spawn_lane(
    shared: Arc<Shared>,
    conn: ConnId,
    kind: Arc<str>,
) -> mpsc::UnboundedSender<Envelope> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    tokio::spawn(async move {
        while let Some(env) = rx.recv().await {
            if laned_allowed(&shared, &kind, &env).await {
                let _ = shared
                    .router
                    .send(RouterMsg::Inbound {
                        conn,
                        kind: kind.clone(),
                        env,
                    })
                    .await;
            }
        }
    });
    tx
}

/// Validates and judges one laned message; denials emit `acl-denied` and
/// are silent on the wire.
async fn laned_allowed(shared: &Shared, kind: &Arc<str>, env: &Envelope) -> bool {
    let acl = &shared.config.acl;
    let from = kind.to_string();
    let (op, verdict, to, topic, msg_type) = match Msg::parse(env) {
        Msg::TopicMessage { topic } => {
            let Some(hook) = &acl.can_publish else {
                return true;
            };
            let Some(topic) = topic.filter(|t| validate::is_valid_topic(t)) else {
                return true;
            };
            let ctx = PublishContext {
                from: from.clone(),
                topic: topic.clone(),
                payload: link_protocol::messages::topic_payload(env).cloned(),
            };
            (
                AclOp::Publish,
                acl::judge(hook, ctx, AclOp::Publish).await,
                None,
                Some(topic),
                None,
            )
        }
        Msg::Subscribe { topic } => {
            let Some(hook) = &acl.can_subscribe else {
                return true;
            };
            let Some(topic) = topic.filter(|t| validate::is_valid_topic(t)) else {
                return true;
            };
            let ctx = SubscribeContext {
                from: from.clone(),
                topic: topic.clone(),
            };
            (
                AclOp::Subscribe,
                acl::judge(hook, ctx, AclOp::Subscribe).await,
                None,
                Some(topic),
                None,
            )
        }
        Msg::Direct { direct_type } => {
            let Some(hook) = &acl.can_send else {
                return true;
            };
            let Some(to) = env.to().map(|t| t.into_owned()) else {
                return true;
            };
            let ctx = SendContext {
                from: from.clone(),
                to: to.clone(),
                msg_type: direct_type.clone(),
                data: link_protocol::messages::direct_data(env).cloned(),
            };
            (
                AclOp::Send,
                acl::judge(hook, ctx, AclOp::Send).await,
                Some(to),
                None,
                Some(direct_type),
            )
        }
        // Invalid payloads go on to the router, which drops them with the
        // reference's reasons.
        _ => return true,
    };
    match verdict {
        Verdict::Allow => true,
        Verdict::Deny { code, error } => {
            let code = code.unwrap_or_else(|| op.default_code().to_owned());
            let error =
                error.unwrap_or_else(|| link_protocol::codes::rpc_error_text::FORBIDDEN.to_owned());
            shared.emit(|| HubEvent::AclDenied {
                op,
                from,
                code,
                error,
                to,
                rpc_type: None,
                topic,
                msg_type,
            });
            false
        }
    }
}

/// Drains the outbox into the socket: builds and signs each frame at flush,
/// feeds a batch, flushes when the queue runs dry.
async fn write_loop<K>(
    mut sink: K,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    gone: oneshot::Sender<()>,
) where
    K: Sink<Message, Error = WsError> + Unpin,
{
    // Grows to what this socket's traffic needs (at most BATCH items): an
    // idle peer's writer holds a handful, not BATCH × size_of::<OutItem>()
    // (24 KiB, which was half of an idle connection's memory).
    let mut batch = Vec::new();
    let result: Result<(), WsError> = async {
        loop {
            let taken = outbox.take(&mut batch, BATCH);
            for c in taken.controls {
                match c {
                    Control::Ping => sink.feed(Message::Ping(Default::default())).await?,
                    Control::Close { code, reason } => {
                        let frame = code.map(|c| CloseFrame {
                            code: CloseCode::from(c),
                            reason: reason.into(),
                        });
                        sink.send(Message::Close(frame)).await?;
                    }
                    Control::Terminate => return Ok(()),
                }
            }
            if batch.is_empty() {
                if taken.closed {
                    sink.flush().await?;
                    return Ok(());
                }
                flush(&mut sink, &outbox).await?;
                outbox.wait().await;
                continue;
            }
            let Some(key) = outbox.key().cloned() else {
                batch.clear();
                continue;
            };
            let ts = wall_ms();
            for item in batch.drain(..) {
                let fresh;
                let id = match &item.id {
                    Some(id) => &**id,
                    None => {
                        fresh = shared.ids.next_id_text();
                        fresh.as_str()
                    }
                };
                let header = Header {
                    id,
                    ts,
                    msg_type: item.msg_type,
                    from: Some(&item.from),
                    to: Some(&item.to),
                };
                // A fan-out's shared prefix, when it was made under this key.
                let prefix = item.prefix.as_deref().and_then(|cell| {
                    let (made_under, prefix) = cell.get_or_init(|| {
                        let p = SharedPrefix::new(&key, header.from, item.data.as_deref());
                        (key.id(), p)
                    });
                    (*made_under == key.id()).then_some(prefix)
                });
                let frame = match prefix {
                    Some(prefix) => prefix.encode(&header),
                    None => envelope::encode(&key, &header, item.data.as_deref()),
                };
                outbox.add_buffered(frame.len());
                ready(&mut sink, &outbox).await?;
                sink.start_send_unpin(Message::text(frame))?;
            }
            if !taken.more {
                flush(&mut sink, &outbox).await?;
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("socket write failed: {e}");
    }
    let _ = gone.send(());
}

/// Flushes, marking the outbox stalled while the socket cannot take more.
async fn flush<K>(sink: &mut K, outbox: &Outbox) -> Result<(), WsError>
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    if let Some(r) = futures_util::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never() {
        r?;
    } else {
        outbox.set_stalled(true);
        let r = futures_util::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).await;
        outbox.set_stalled(false);
        r?;
    }
    outbox.flushed();
    Ok(())
}

/// Waits for the sink to accept a message, marking the outbox stalled while
/// it cannot (that is what makes `backpressure` fire).
async fn ready<K>(sink: &mut K, outbox: &Outbox) -> Result<(), WsError>
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    if let Some(r) = futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never() {
        return r;
    }
    outbox.set_stalled(true);
    let r = futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await;
    outbox.set_stalled(false);
    r
}
