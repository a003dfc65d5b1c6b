//! [`Hub`]: the handle to a running hub (the reference's `createHub`).
//! Cheap to clone; every clone talks to the same router.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use link_transport::Transport;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::HubConfig;
use crate::events::{HubEvent, HubHealth, HubState};
use crate::mailbox::RouterMsg;
use crate::ratelimit::RateLimited;
use crate::router::Router;
use crate::shared::Shared;

/// Capacity of the event channel; a listener further behind misses events.
const EVENT_CAPACITY: usize = 4096;
/// Capacity of the router's mailbox (readers wait when it is full).
const ROUTER_CAPACITY: usize = 8192;

/// A running hub. Create it inside a tokio runtime.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Hub {
    /// Starts the hub's router task.
    pub fn new(config: HubConfig) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (quiet, _) = broadcast::channel(EVENT_CAPACITY);
        let (firehose, _) = broadcast::channel(EVENT_CAPACITY);
        let (tx, rx) = mpsc::channel(ROUTER_CAPACITY);
        let shared = Arc::new(Shared::new(config, events, quiet, firehose, tx));
        let router = Router::new(shared.clone());
        #[cfg(feature = "cluster")]
        let router = router.with_cluster();
        tokio::spawn(router.run(rx));
        Self { shared }
    }

    /// The state the hub's tasks share.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// WebSocket settings to accept sockets with: frame and message caps of
    /// `max_message_bytes` (never tungstenite's 64 MiB default).
    pub fn websocket_config(&self) -> WebSocketConfig {
        websocket_config(&self.shared.config)
    }

    /// Serves an already-upgraded WebSocket (any `Stream`/`Sink` of
    /// tungstenite messages: a raw tokio-tungstenite accept, hyper, axum…).
    /// The task ends when the socket closes.
    pub fn attach<S>(&self, ws: S, remote: Option<SocketAddr>) -> JoinHandle<()>
    where
        S: Stream<Item = Result<Message, WsError>>
            + Sink<Message, Error = WsError>
            + Send
            + 'static,
    {
        self.attach_transport(link_transport::WebSocket::new(Box::pin(ws)), remote)
    }

    /// Serves a connection over any [`Transport`] (a stream and sink of
    /// [`Frame`](link_transport::Frame)s): a WebSocket, the in-memory
    /// duplex of `link_transport::memory`, or a transport of your own. The
    /// transport enforces its frame cap (give it `max_message_bytes`).
    /// The task ends when the connection closes.
    pub fn attach_transport<T: Transport>(
        &self,
        transport: T,
        remote: Option<SocketAddr>,
    ) -> JoinHandle<()> {
        tokio::spawn(crate::connection::run(
            self.shared.clone(),
            transport,
            remote,
        ))
    }

    /// Serves a connection over `transport` on the calling task until it
    /// closes (what [`attach_transport`](Self::attach_transport) spawns).
    ///
    /// Not an `async fn`, which would keep `transport` in its future for
    /// the connection's life (see `connection::run`).
    pub(crate) fn serve_transport<T: Transport>(
        &self,
        transport: T,
        remote: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static + use<T> {
        crate::connection::run(self.shared.clone(), transport, remote)
    }

    /// Runs the WebSocket handshake on a raw stream (e.g. an accepted
    /// `TcpStream`) with [`Hub::websocket_config`], then attaches it.
    pub async fn accept<IO>(
        &self,
        io: IO,
        remote: Option<SocketAddr>,
    ) -> Result<JoinHandle<()>, WsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws =
            tokio_tungstenite::accept_async_with_config(io, Some(self.websocket_config())).await?;
        Ok(self.attach_transport(link_transport::WebSocket::new(ws), remote))
    }

    /// Subscribes to hub events. Nothing is built while nobody listens; a
    /// receiver that falls more than 4096 events behind skips ahead.
    pub fn events(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.shared.events.subscribe()
    }

    /// Like [`events`](Self::events) without the per-message events
    /// ([`HubEvent::is_traffic`]: `topic.publish`, `direct`, the RPC relay
    /// events): while only quiet listeners are subscribed, the hub builds
    /// nothing per message relayed. For logs, alerts and dashboards.
    pub fn quiet_events(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.shared.quiet.subscribe()
    }

    /// Like [`events`](Self::events), plus the `message` firehose: a
    /// [`HubEvent::Message`] with a copy of every verified inbound frame.
    /// Costs a copy per frame while subscribed; `events()` never carries it.
    pub fn firehose(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.shared.firehose.subscribe()
    }

    /// Counters, as the reference's `health()`.
    pub async fn health(&self) -> HubHealth {
        self.ask(RouterMsg::Health).await.unwrap_or_default()
    }

    /// Peers and last statuses, as the reference's `getState()`.
    pub async fn state(&self) -> HubState {
        self.ask(RouterMsg::State).await.unwrap_or_default()
    }

    /// The hub's Prometheus metrics as OpenMetrics text (what `GET /metrics`
    /// serves; names and meanings in docs/operations.md, *Metrics*). Counters
    /// are read as they stand; the gauges (sockets, peers, outbox bytes…)
    /// are asked of the router, and left at their last value if it does not
    /// answer (the hub is stopping).
    pub async fn metrics(&self) -> String {
        let table = self.ask(RouterMsg::Stats).await;
        self.shared.metrics.encode(table, self.rate_limited())
    }

    /// What the live dashboard shows of the routing table (`None`: the
    /// router no longer answers, the hub is stopping).
    pub(crate) async fn dashboard(&self) -> Option<crate::routing::DashboardView> {
        self.ask(RouterMsg::Dashboard).await
    }

    /// The shared metrics (the dashboard reads the socket counters and the
    /// recent drops).
    pub(crate) fn metrics_handle(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// Resolves changes of the routing table's revision (membership,
    /// statuses, subscriptions). Holding the receiver is what makes the
    /// router send them.
    pub(crate) fn dashboard_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.dashboard.subscribe()
    }

    /// Frames refused by the rate limits since the hub started, per class,
    /// and sockets closed for staying over them (all zero without limits).
    /// Read without asking the router.
    pub fn rate_limited(&self) -> RateLimited {
        self.shared.rate_limited.snapshot()
    }

    /// Closes every socket with `code`/`reason` (e.g. 1001 `server
    /// shutdown`); returns how many sockets were asked to close.
    pub async fn close_all(&self, code: Option<u16>, reason: &str) -> usize {
        let reason = reason.to_owned();
        self.ask(|done| RouterMsg::CloseAll { code, reason, done })
            .await
            .unwrap_or(0)
    }

    /// Drops every socket still attached, without a close handshake.
    pub async fn terminate_all(&self) {
        let _ = self.ask(RouterMsg::TerminateAll).await;
    }

    /// Stops serving: pending sockets are closed with 1001 `hub stopped`,
    /// authenticated ones with a close without code; all state is cleared.
    pub async fn stop(&self) {
        let _ = self.ask(RouterMsg::Stop).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> RouterMsg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.shared.router.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Bytes read from the socket per call. Sockets the hub's server upgrades
/// (a `link_transport::ServerSocket`) take this chunk for a read and give it
/// back once tungstenite has copied it out (their tungstenite buffer is
/// `link_transport::TUNGSTENITE_READ`, 256 bytes); a socket attached as a plain tungstenite stream keeps a read
/// buffer of this size, zero-filled and so resident, for its life.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes queued before a write: a busy socket hands the kernel up to
/// 64 KiB per write (one loopback segment), the writer flushing whatever
/// is left when its queue runs dry. `ServerSocket` frees the buffer once
/// written; tungstenite keeps its largest capacity (docs/perf.md).
const WRITE_BUFFER: usize = 64 * 1024;

pub(crate) fn websocket_config(config: &HubConfig) -> WebSocketConfig {
    // Never tungstenite's defaults: its 128 KiB read buffer would dominate
    // an idle connection's memory.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
        .max_write_buffer_size(
            config.max_buffered_bytes.max(config.max_message_bytes) + config.max_message_bytes,
        )
}
