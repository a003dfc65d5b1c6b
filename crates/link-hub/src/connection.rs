//! One attached socket: a reader task that drives the socket's [`HubConn`]
//! (parse, verify, replay, handshake, timers) and a writer task that drains
//! its [`Outbox`], signing each frame with the socket's key at flush.
//!
//! ```text
//!  WebSocket ──► reader: HubConn ──verified──► [rate limit] ──► inbox ──► [ACL lane] ──► router
//!                  ▲ timers / control (evict, displace, close)
//!  WebSocket ◄── writer: Outbox ◄── router pushes (per-socket lock)
//! ```
//!
//! The reader makes no routing decisions; the router makes no socket I/O.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::{BoxFuture, Either};
use futures_util::{FutureExt, StreamExt};
use link_protocol::conn::{HubConn, HubConnEvent, Transmit};
use link_protocol::envelope::{self, Header, SharedPrefix};
use link_protocol::{DropReason, Envelope, Key, ProtocolError, close, msg_type};
use link_transport::writer;
use link_transport::{Frame, Transport, TransportError};

use crate::outbox::OutItem;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;

use crate::config::KeySource;
use crate::events::{HubEvent, TimeoutReason};
use crate::inbox::{Inbox, TrySend};
use crate::mailbox::{ConnControl, RouterMsg};
use crate::metrics::ConnMetrics;
use crate::outbox::Outbox;
use crate::pace::DropPace;
use crate::ratelimit::{MessageClass, PeerLimiter, Verdict};
use crate::routing::{ConnCtl, ConnId};
use crate::shared::{Shared, now, tokio_instant};

const BATCH: usize = 256;

/// Serves one connection until it closes.
///
/// Not an `async fn`: the transport is split and its writer spawned before
/// the returned future exists, so the future (the connection's task, held
/// for the socket's life) carries the read half alone, not a dead copy of
/// the whole transport (an `async fn` keeps its arguments for its life).
pub(crate) fn run<T: Transport>(
    shared: Arc<Shared>,
    transport: T,
    remote: Option<SocketAddr>,
) -> impl Future<Output = ()> + Send + 'static {
    let conn = shared.next_conn_id();
    let outbox = Arc::new(Outbox::new(shared.config.max_outbox_bytes));
    let (sink, stream) = transport.split();
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let counts = shared.metrics.socket();
    let writer = tokio::spawn(write_loop(
        sink,
        outbox.clone(),
        shared.clone(),
        counts.clone(),
        gone_tx,
    ));
    let reader = Reader {
        hc: HubConn::new(now().instant, shared.conn_config),
        shared,
        conn,
        inbox: Arc::default(),
        remote,
        pace: DropPace::default(),
        outbox,
        counts,
        kind: None,
        limiter: None,
        key_lookup: None,
        close: None,
    };
    read_loop(Box::new(Socket {
        reader,
        stream,
        gone_rx,
        writer,
    }))
}

/// What the reader's loop starts with.
struct Socket<S> {
    reader: Reader,
    stream: S,
    gone_rx: oneshot::Receiver<()>,
    writer: tokio::task::JoinHandle<()>,
}

/// The reader's loop. Its one argument is boxed: an `async fn` keeps a
/// copy of its arguments besides the variables it moves them into, for
/// its whole life (the socket's).
async fn read_loop<S>(socket: Box<Socket<S>>)
where
    S: futures_util::Stream<Item = Result<Frame, TransportError>> + Unpin,
{
    let Socket {
        mut reader,
        mut stream,
        mut gone_rx,
        writer,
    } = *socket;
    let control = Arc::new(ConnControl::default());
    let attach = RouterMsg::Attach {
        conn: reader.conn,
        outbox: reader.outbox.clone(),
        ctl: control.clone(),
        remote: reader.remote,
    };
    if !to_mailbox(&reader.shared.router, attach).await {
        writer.abort();
        return;
    }

    loop {
        // A socket whose dropped frames are over their pace is not read
        // until then (`pace.rs`); one timer serves both.
        reader.table_drops();
        let paused = reader.pace.paused_until(|| now().instant);
        let deadline = match (reader.hc.poll_timeout(), paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = &mut gone_rx => break,
            ctl = control.recv() => reader.control(ctl),
            msg = stream.next(), if paused.is_none() => {
                if !reader.incoming(msg) {
                    break;
                }
            }
            // Harmless when only the pause was due.
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
    reader.outbox.close();
    // Let a queued close frame go out; the writer stops on its own once the
    // outbox is closed and empty.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), writer).await;
    // Neither side closed: the socket dropped (1006, as the reference).
    let (code, reason) = reader
        .close
        .take()
        .unwrap_or((Some(close::ABNORMAL), String::new()));
    let conn = reader.conn;
    to_router(&reader, RouterMsg::Closed { conn, code, reason }).await;
}

/// Sends `msg` to the router's mailbox itself (the socket's `Attach`, before
/// its inbox is known to the router); false if the router is gone. The
/// returned future holds no message and no send state unless the mailbox
/// is full (then the wait is boxed): the connection's future, kept for the
/// socket's life, would otherwise carry a send's state (over 400 bytes).
fn to_mailbox(
    router: &mpsc::Sender<RouterMsg>,
    msg: RouterMsg,
) -> Either<std::future::Ready<bool>, BoxFuture<'_, bool>> {
    match router.try_send(msg) {
        Ok(()) => Either::Left(std::future::ready(true)),
        Err(TrySendError::Closed(_)) => Either::Left(std::future::ready(false)),
        Err(TrySendError::Full(msg)) => {
            Either::Right(Box::pin(async move { router.send(msg).await.is_ok() }))
        }
    }
}

/// Queues `msg` (the hello, a frame, the close) in the socket's inbox for
/// the router (`inbox.rs`); false if the router is gone. As with
/// [`to_mailbox`], the future holds no state unless it must wait (the inbox
/// or every inbox together full, or the mailbox full when the router must
/// be told): then the wait is boxed. A send that went through at once
/// still spends a unit of the task's cooperative budget, as
/// `send().await` does, so a busy reader yields to the router as often.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep the message in its future"
)]
fn to_router(reader: &Reader, msg: RouterMsg) -> impl Future<Output = bool> + Send + '_ {
    let (inbox, router, queued) = (&reader.inbox, &reader.shared.router, &reader.shared.queued);
    let wait: Either<bool, BoxFuture<'_, bool>> = match inbox.try_send(router, queued, msg) {
        TrySend::Done(delivered) => Either::Left(delivered),
        TrySend::Tell => Either::Right(Box::pin(inbox.tell(router))),
        TrySend::Full(msg) => Either::Right(Box::pin(inbox.send(router, queued, msg))),
    };
    async move {
        match wait {
            Either::Left(delivered) => {
                tokio::task::consume_budget().await;
                delivered
            }
            Either::Right(wait) => wait.await,
        }
    }
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
    /// This socket's queue to the router (served round robin with the
    /// other sockets').
    inbox: Arc<Inbox>,
    remote: Option<SocketAddr>,
    hc: HubConn,
    /// How fast the socket may be read while its frames are being dropped.
    pace: DropPace,
    outbox: Arc<Outbox>,
    /// This socket's counters (`/metrics`).
    counts: Arc<ConnMetrics>,
    kind: Option<Arc<str>>,
    /// The kind's rate limits, from its hello on (`None`: no limit applies,
    /// nothing is checked). Boxed: the reader's hot fields stay together.
    limiter: Option<Box<PeerLimiter>>,
    /// A key resolver running for the pending hello.
    key_lookup: Option<oneshot::Receiver<Option<Key>>>,
    /// Close code and reason to report when the socket goes: the first
    /// close of the connection, whichever side made it (the close frame the
    /// hub sent, or the one it received); `None` until then.
    close: Option<(Option<u16>, String)>,
}

impl Reader {
    /// Handles one read result; false when the socket is done. Counts the
    /// bytes of every data frame (`link_hub_received_bytes_total`); the
    /// frame's type is counted once it has verified, in [`Reader::drain`].
    fn incoming(&mut self, frame: Option<Result<Frame, TransportError>>) -> bool {
        let replay = &mut self.shared.replay.checker();
        match frame {
            Some(Ok(Frame::Text(t))) => {
                self.counts.bytes_in(t.len());
                self.hc.handle_text_message(now(), t.as_str(), replay)
            }
            Some(Ok(Frame::Binary(b))) => {
                self.counts.bytes_in(b.len());
                self.hc.handle_message(now(), &b, replay)
            }
            Some(Ok(Frame::Pong)) => self.hc.handle_pong(),
            Some(Ok(Frame::Ping)) => {}
            Some(Ok(Frame::Close(frame))) => {
                // A close frame without a status code is reported as 1005
                // ("no status received"), as the reference hub does.
                self.closed_with(match frame {
                    Some(f) => (Some(f.code), f.reason),
                    None => (Some(close::NO_STATUS), String::new()),
                });
            }
            Some(Err(TransportError::TooBig(e))) => {
                tracing::debug!(conn = self.conn, "frame over the size cap: {e}");
                self.shared
                    .metrics
                    .dropped(link_protocol::DropReason::Oversize.code());
                self.closed_with((Some(close::TOO_BIG), String::new()));
                self.outbox.control(Transmit::Close {
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

    /// Records the close to report, unless one was recorded already (the
    /// peer's echo of the hub's close, or the hub's answer to the peer's,
    /// does not replace it).
    fn closed_with(&mut self, close: (Option<u16>, String)) {
        self.close.get_or_insert(close);
    }

    fn control(&mut self, ctl: ConnCtl) {
        let t = now();
        match ctl {
            ConnCtl::Evict => self.hc.evict(t),
            ConnCtl::Displace => self.hc.displace(t),
            ConnCtl::Close { code, reason } => self.hc.close(t, code, &reason),
            ConnCtl::Terminate => self.outbox.control(Transmit::Terminate),
        }
    }

    /// Hands socket-level transmits to the writer, as they are.
    fn relay_transmits(&mut self) {
        while let Some(t) = self.hc.poll_transmit() {
            if let Transmit::Close { code, reason } = &t {
                // The hub closes: report what it sent, not what the socket
                // looks like once the writer has finished.
                self.closed_with((*code, reason.clone()));
            }
            self.outbox.control(t);
        }
    }

    /// Acts on what the state machine produced. Each event is handled at
    /// once and what it sends to the router is sent after, so the one await
    /// holds a small send, not an event and a message (this future is part
    /// of the connection's, which lives as long as the socket).
    async fn drain(&mut self) {
        self.relay_transmits();
        loop {
            let Some(ev) = self.hc.poll_event() else {
                return;
            };
            let send = match self.on_event(ev) {
                Some(msg) => to_router(self, msg),
                None => continue,
            };
            send.await;
        }
    }

    /// Handles one event; returns what goes to the router.
    fn on_event(&mut self, ev: HubConnEvent) -> Option<RouterMsg> {
        {
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
                HubConnEvent::Authenticated { hello, id, ts } => {
                    let key = self.hc.key().cloned()?;
                    self.outbox.set_key(key);
                    self.counts.frame_in(Some(msg_type::HELLO));
                    let kind: Arc<str> = match self.hc.kind_shared() {
                        Some(kind) => kind.clone(),
                        None => hello.kind.as_str().into(),
                    };
                    self.limiter = self
                        .shared
                        .config
                        .rate_limits
                        .as_deref()
                        .and_then(|limits| PeerLimiter::new(limits, &kind, now().instant))
                        .map(Box::new);
                    self.kind = Some(kind.clone());
                    return Some(RouterMsg::Register {
                        conn: self.conn,
                        hello,
                        hello_id: (id.into(), ts),
                        peer_deltas: self.hc.wants_peer_deltas(),
                    });
                }
                HubConnEvent::Message(env) => {
                    self.counts.frame_in(env.msg_type());
                    return self.dispatch(env);
                }
                HubConnEvent::ProtocolError(e) => {
                    if let Some(every) = self.shared.config.drop_pace {
                        self.pace.dropped(now().instant, every);
                    }
                    self.shared.protocol_error(e, self.remote);
                }
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
                    self.closed_with((Some(close::ABNORMAL), close::REASON_KEEPALIVE.to_owned()));
                }
                _ => {}
            }
        }
        None
    }

    /// What to send the router for a verified message (which it holds for
    /// an ACL verdict when a hook applies).
    fn dispatch(&mut self, env: Envelope) -> Option<RouterMsg> {
        let kind = self.kind.clone()?;
        if self.shared.firehose_listening() {
            let (from, envelope) = (kind.to_string(), env.clone());
            self.shared.emit(|| HubEvent::Message { from, envelope });
        }
        // Rate limits, before the frame costs the router anything. Without
        // limits for this kind this is one `None` check (the path is the
        // same as without limits).
        let refused = match &mut self.limiter {
            None => None,
            Some(limiter) => match env.msg_type().and_then(MessageClass::of_type) {
                Some(class) => match limiter.check(class, now().instant) {
                    Verdict::Pass => None,
                    Verdict::Refuse { report, disconnect } => Some((class, report, disconnect)),
                },
                None => None,
            },
        };
        match refused {
            None => Some(RouterMsg::Inbound {
                conn: self.conn,
                kind,
                env,
            }),
            Some((class, report, disconnect)) => self.refuse(kind, &env, class, report, disconnect),
        }
    }

    /// Frames of this socket the routing table dropped count towards its
    /// pace as the reader's own drops do.
    fn table_drops(&mut self) {
        let refused = self.inbox.take_refused();
        if let (Some(every), true) = (self.shared.config.drop_pace, refused > 0) {
            let at = now().instant;
            for _ in 0..refused {
                self.pace.dropped(at, every);
            }
        }
    }

    /// A frame over its class's limit: an RPC is answered `RPC_RATE_LIMITED`
    /// (by the router, in order with the sender's other frames: the message
    /// to send it is returned), anything else is dropped. Every refusal is
    /// counted; the reported ones (at most one per class per second) emit a
    /// `protocol-error` `rate-limited` event.
    fn refuse(
        &mut self,
        kind: Arc<str>,
        env: &Envelope,
        class: MessageClass,
        report: bool,
        disconnect: bool,
    ) -> Option<RouterMsg> {
        self.shared.rate_limited.refused(class);
        if report {
            let error = ProtocolError::new(DropReason::RateLimited)
                .with_kind(&*kind)
                .with_type(env.msg_type())
                .with_detail(class.as_str());
            self.shared.protocol_error(error, self.remote);
        }
        if disconnect {
            self.shared.rate_limited.disconnected();
            self.hc
                .close(now(), Some(close::POLICY), close::REASON_RATE_LIMITED);
            self.relay_transmits();
            // Nothing more from this socket reaches the router (frames the
            // state machine had already queued included).
            self.kind = None;
            self.limiter = None;
            return None;
        }
        (class == MessageClass::Rpc).then(|| RouterMsg::RateLimitedRpc {
            conn: self.conn,
            kind,
            id: env.id().into(),
        })
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

/// Drains the outbox into the socket through the shared writer loop:
/// builds and signs each frame at flush with the socket's key.
///
/// A block, not an `async fn`, which would keep a second copy of its
/// arguments for the socket's life.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
fn write_loop<K>(
    mut sink: K,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    counts: Arc<ConnMetrics>,
    gone: oneshot::Sender<()>,
) -> impl Future<Output = ()> + Send
where
    K: futures_util::Sink<Frame, Error = TransportError> + Unpin + Send,
{
    async move {
        // Fresh ids a run at a time: no shared counter touched per frame.
        let mut ids = shared.ids.block();
        let encode = |item: OutItem, ts: u64| {
            let key = outbox.key()?;
            let fresh;
            let id = match &item.id {
                Some(id) => &**id,
                None => {
                    fresh = ids.next_id_text(&shared.ids);
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
                    let p = SharedPrefix::new(key, header.from, item.data.as_deref());
                    (key.id(), p)
                });
                (*made_under == key.id()).then_some(prefix)
            });
            let frame = match prefix {
                Some(prefix) => prefix.encode(&header),
                None => envelope::encode(key, &header, item.data.as_deref()),
            };
            counts.frame_out(item.msg_type, frame.len());
            Some(frame)
        };
        if let Err(e) = writer::write_loop(&mut sink, &*outbox, BATCH, encode).await {
            tracing::debug!("socket write failed: {e}");
        }
        let _ = gone.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's reader and writer futures live as long as the socket:
    /// an idle peer's hub memory is mostly these (docs/perf.md, "Cheaper
    /// idle connections"). They were 2 168 and 680 bytes before the
    /// transport was split outside the reader's future, sends to the
    /// router stopped holding their message, and neither kept a second
    /// copy of its arguments.
    #[tokio::test]
    async fn a_connections_futures_stay_small() {
        let hub = crate::Hub::new(
            crate::HubConfig::builder(crate::Secret::shared("s"))
                .build()
                .expect("config"),
        );
        let shared = hub.shared().clone();
        let (a, _b) = tokio::io::duplex(64);
        let socket = link_transport::ServerSocket::from_raw_socket(a, Default::default()).await;
        let reader = run(shared.clone(), socket, None);
        let reader_bytes = std::mem::size_of_val(&reader);
        assert!(reader_bytes <= 1024, "reader future: {reader_bytes} bytes");
        drop(reader);

        let (a, _b) = tokio::io::duplex(64);
        let socket = link_transport::ServerSocket::from_raw_socket(a, Default::default()).await;
        let (sink, _stream) = socket.split();
        let (gone, _) = oneshot::channel();
        let counts = shared.metrics.socket();
        let outbox = Arc::new(Outbox::new(1024));
        let writer = write_loop(sink, outbox, shared, counts, gone);
        let writer_bytes = std::mem::size_of_val(&writer);
        assert!(writer_bytes <= 640, "writer future: {writer_bytes} bytes");
    }
}
