//! [`HubServer`]: HTTP and WebSocket on one port, the reference's
//! `createHubServer` (docs/hub.md, *Embedding the hub*; protocol §13–§14).
//!
//! ```text
//!  TcpListener ─► per connection: [TLS handshake, with .tls()] ─► hyper http1 (with upgrades)
//!                   │ Upgrade: websocket ─► path filter ─► 101 ─► Hub::attach
//!                   │ otherwise, by normalised path:
//!                   │   user routes ─► [/ui, /ui/events] ─► /health ─► /state ─► /metrics
//!                   │   ─► 404 "not found"
//!  stop(): stop accepting ─► close_all(1001 "server shutdown") ─► drain delay
//!          ─► terminate_all ─► HTTP connections done ─► Hub::stop ─► on_shutdown
//! ```
//!
//! Differences from the reference, on purpose:
//!
//! - The default bind address is `127.0.0.1:8080`, not `0.0.0.0:8080`:
//!   exposing a hub is a decision, made with [`HubServerBuilder::bind`].
//! - A request with `Upgrade: websocket` on a path other than the
//!   configured [`HubServerBuilder::path`] gets `400 bad websocket path`.
//!
//! Access and limits (docs/hub.md, *Access and connection limits*): before
//! an upgrade, and before every route but `/health`, the request passes the
//! CIDR allow list ([`HubServerBuilder::allow_cidr`], `403`), the bearer
//! token ([`HubServerBuilder::bearer_token`], `401`) and the
//! [`HubServerBuilder::authenticate`] hook; upgrades also take a place under
//! [`HubServerBuilder::max_pending_upgrades`] (`503`) and
//! [`HubServerBuilder::max_connections_per_ip`] (`429`). Before any of
//! that, connections that are not WebSockets yet (TLS handshake, request
//! headers, plain HTTP) are capped by
//! [`HubServerBuilder::max_http_connections`] (the oldest is closed) and
//! bounded in time by [`HubServerBuilder::handshake_timeout`].
//!
//! With [`HubServerBuilder::tls`] the port speaks TLS only (`wss://`,
//! `https://`); [`HubServer::reload_tls`] and SIGHUP swap the certificate
//! for new handshakes while connected peers keep theirs.
//!
//! Paths are normalised before matching: the query string is ignored and
//! trailing slashes are removed (`/health/?x=1` is `/health`). The HTTP
//! method is ignored, as in the reference.
//!
//! ## Running a hub server
//!
//! ```no_run
//! use link_hub::server::http;
//! use link_hub::{HubConfig, HubServer, Secret};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = HubConfig::builder(Secret::shared("demo-secret")).build()?;
//! let server = HubServer::builder(config)
//!     .bind("127.0.0.1:8080".parse()?)
//!     .path("/link")
//!     .route("/version", |_req| async { http::Response::new("1.0") })
//!     .build()?;
//! // Starts, then waits for SIGINT/SIGTERM (or another `stop()`), then
//! // shuts down gracefully.
//! server.serve().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Mounting the hub in your own server
//!
//! [`upgrade`] answers a WebSocket upgrade request from any hyper-based
//! server and attaches the socket to a [`Hub`]. With axum:
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::extract::{ConnectInfo, Request, State};
//! use axum::response::Response;
//! use axum::routing::any;
//! use link_hub::{Hub, HubConfig, Secret};
//!
//! async fn link(
//!     State(hub): State<Hub>,
//!     ConnectInfo(remote): ConnectInfo<SocketAddr>,
//!     req: Request,
//! ) -> Response {
//!     link_hub::server::upgrade(&hub, req, Some(remote))
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(HubConfig::builder(Secret::shared("demo-secret")).build()?);
//! let app = axum::Router::new().route("/link", any(link)).with_state(hub.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```

mod accept;
mod access;
mod dashboard;
mod handshakes;
mod lifecycle;
mod limits;
mod routes;
mod tls;
mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::watch;

pub use self::access::{
    AuthDecision, AuthRequest, Cidr, CidrError, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_PENDING_UPGRADES,
};
pub use self::dashboard::MAX_DASHBOARD_FEEDS;
pub use self::handshakes::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HTTP_CONNECTIONS};
pub use self::routes::IntoRouteResponse;
pub use self::tls::{TlsConfig, TlsError};
pub use self::upgrade::{is_upgrade_request, upgrade};
pub use bytes::Bytes;
pub use http;

use self::lifecycle::{Phase, StopFailure};
use self::routes::{ExtraStateFn, RouteFn};
use crate::config::HubConfig;
use crate::future::BoxFuture;
use crate::hub::Hub;

/// Default listen address: loopback only (the reference uses `0.0.0.0`).
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

/// Close code sent to every socket by [`HubServer::stop`] (1001, going away).
pub const SHUTDOWN_CLOSE_CODE: u16 = link_protocol::close::GOING_AWAY;
/// Close reason sent to every socket by [`HubServer::stop`].
pub const SHUTDOWN_CLOSE_REASON: &str = link_protocol::close::REASON_SERVER_SHUTDOWN;

type ShutdownHook = Box<dyn FnOnce() -> BoxFuture<()> + Send>;

/// Why a server could not be built, started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A builder option is out of range (local misuse).
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The builder method.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listen socket could not be bound (address in use, permission…).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The SIGINT/SIGTERM handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `start()` after `stop()`: a server is single-shot.
    #[error("the server was stopped; a HubServer cannot be restarted")]
    Stopped,
    /// The shutdown sequence did not finish within the shutdown timeout.
    #[error("shutdown did not finish within {timeout:?}")]
    ShutdownTimeout {
        /// The configured bound.
        timeout: Duration,
    },
    /// rustls refused the TLS server configuration.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl ServerError {
    /// A stable code: `INVALID_OPTION`, `BIND_FAILED`, `SIGNAL_SETUP`,
    /// `SERVER_STOPPED`, `SHUTDOWN_TIMEOUT` or `TLS_SETUP`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOption { .. } => "INVALID_OPTION",
            Self::Bind { .. } => "BIND_FAILED",
            Self::Signals(_) => "SIGNAL_SETUP",
            Self::Stopped => "SERVER_STOPPED",
            Self::ShutdownTimeout { .. } => "SHUTDOWN_TIMEOUT",
            Self::Tls(_) => "TLS_SETUP",
        }
    }
}

/// Validated server options (everything but the hub and the hook).
pub(crate) struct Settings {
    bind: SocketAddr,
    path: Option<String>,
    routes: HashMap<String, RouteFn>,
    health_route: bool,
    state_route: bool,
    metrics_route: bool,
    extra_state: Option<ExtraStateFn>,
    handle_signals: bool,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    /// Bound on a TLS handshake and on each request's headers.
    handshake_timeout: Duration,
    /// `Some`: every connection starts with a TLS handshake.
    tls: Option<tls::Tls>,
    /// Reload the certificate when its files change, checked this often.
    tls_watch: Option<Duration>,
}

impl Settings {
    /// `wss` with TLS, else `ws`.
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }
}

/// What the accept loop and the connection tasks share.
pub(crate) struct Service {
    hub: Hub,
    settings: Settings,
    /// Set when `stop()` begins: new upgrades are refused.
    stopping: Arc<AtomicBool>,
    /// The close reason of the shutdown, set by `stop_with` before
    /// `stopping` (default [`SHUTDOWN_CLOSE_REASON`]).
    stop_reason: Arc<OnceLock<String>>,
    /// Every in-flight upgrade task holds a receiver; `closed()` waits for them.
    upgrades: watch::Sender<()>,
    /// Access rule and connection limits.
    access: access::Access,
    /// Connections that are not WebSockets, capped (oldest closed).
    handshakes: handshakes::Handshakes,
    /// `Some` with [`HubServerBuilder::enable_dashboard`].
    dashboard: Option<dashboard::Dashboard>,
}

/// Held by the handles only, so that dropping the last handle drops the
/// running parts (and with them the accept loop).
struct Inner {
    service: Arc<Service>,
    on_shutdown: Mutex<Option<ShutdownHook>>,
    phase: tokio::sync::Mutex<Phase>,
    local_addr: OnceLock<SocketAddr>,
    started: AtomicBool,
    stop_begun: AtomicBool,
    /// `Some` once the stop sequence has ended.
    outcome: watch::Sender<Option<Result<(), StopFailure>>>,
}

/// An HTTP + WebSocket server around a [`Hub`]. Cheap to clone; every
/// clone controls the same server.
///
/// Lifecycle: [`build`](HubServerBuilder::build) → [`start`](Self::start)
/// → [`stop`](Self::stop). It is single-shot: `start` after `stop` fails
/// with [`ServerError::Stopped`]. Dropping every handle without `stop`
/// stops accepting, but leaves attached sockets to the hub.
#[derive(Clone)]
pub struct HubServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.inner.service.settings;
        f.debug_struct("HubServer")
            .field("bind", &s.bind)
            .field("local_addr", &self.local_addr())
            .field("path", &s.path)
            .field("routes", &s.routes.keys().collect::<Vec<_>>())
            .field("started", &self.is_started())
            .field("stopping", &self.is_stopping())
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl HubServer {
    /// Starts a builder; the hub configuration is the one mandatory input.
    pub fn builder(hub_config: HubConfig) -> HubServerBuilder {
        HubServerBuilder {
            hub_config,
            bind: DEFAULT_BIND,
            path: None,
            routes: HashMap::new(),
            health_route: true,
            state_route: false,
            metrics_route: true,
            dashboard: false,
            extra_state: None,
            handle_signals: true,
            shutdown_timeout: Duration::from_secs(30),
            drain_delay: Duration::from_millis(250),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            on_shutdown: None,
            access: access::AccessOptions::default(),
            tls: None,
            tls_watch: None,
        }
    }

    /// The hub behind the server.
    pub fn hub(&self) -> &Hub {
        &self.inner.service.hub
    }

    /// The bound address once started (the real port when bound to port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr.get().copied()
    }

    /// `ws://<local_addr><path>` once started (`wss://` with TLS).
    pub fn url(&self) -> Option<String> {
        let settings = &self.inner.service.settings;
        let path = settings.path.as_deref().unwrap_or("");
        let scheme = settings.scheme();
        self.local_addr().map(|a| format!("{scheme}://{a}{path}"))
    }

    /// True when the server speaks TLS ([`HubServerBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        self.inner.service.settings.tls.is_some()
    }

    /// Re-reads the certificate and key files given to
    /// [`TlsConfig::from_pem_files`]: handshakes from now on get the new
    /// certificate, connections already up keep theirs. On failure the
    /// current certificate stays in use (and an error is logged). With
    /// [`handle_signals`](HubServerBuilder::handle_signals) on, SIGHUP does
    /// the same (Unix).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.inner.service.settings.tls {
            Some(tls) => tls.reload(),
            None => Err(TlsError::NotReloadable("the server has no TLS")),
        }
    }

    /// True from a successful [`start`](Self::start) until the stop
    /// sequence has finished.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire) && !self.is_stopped()
    }

    /// True while the stop sequence runs.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop_begun.load(Ordering::Acquire) && !self.is_stopped()
    }

    /// True once the stop sequence has ended (successfully or not).
    pub fn is_stopped(&self) -> bool {
        self.inner.outcome.borrow().is_some()
    }

    /// Starts, then waits until the server is stopped by a signal (when
    /// [`handle_signals`](HubServerBuilder::handle_signals) is on) or by a
    /// [`stop`](Self::stop) call elsewhere; returns the stop outcome.
    pub async fn serve(&self) -> Result<(), ServerError> {
        self.start().await?;
        self.stopped().await
    }

    /// Starts, then stops gracefully when `shutdown` completes (or when a
    /// signal or another `stop()` stops the server first).
    pub async fn serve_until<F: Future<Output = ()>>(
        &self,
        shutdown: F,
    ) -> Result<(), ServerError> {
        self.start().await?;
        tokio::select! {
            () = shutdown => self.stop().await,
            outcome = self.stopped() => outcome,
        }
    }

    /// Waits until the stop sequence has ended, however it was triggered,
    /// and returns its outcome.
    pub async fn stopped(&self) -> Result<(), ServerError> {
        let mut rx = self.inner.outcome.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => *outcome,
            // The sender lives in `inner`, which `self` keeps alive.
            Err(_) => None,
        };
        self.outcome_to_result(outcome.unwrap_or(Ok(())))
    }

    fn outcome_to_result(&self, outcome: Result<(), StopFailure>) -> Result<(), ServerError> {
        outcome.map_err(|StopFailure::Timeout| ServerError::ShutdownTimeout {
            timeout: self.inner.service.settings.shutdown_timeout,
        })
    }

    fn take_on_shutdown(&self) -> Option<ShutdownHook> {
        self.inner
            .on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Builder for [`HubServer`]; every setter documents its default.
#[must_use]
pub struct HubServerBuilder {
    hub_config: HubConfig,
    bind: SocketAddr,
    path: Option<String>,
    routes: HashMap<String, RouteFn>,
    health_route: bool,
    state_route: bool,
    metrics_route: bool,
    dashboard: bool,
    extra_state: Option<ExtraStateFn>,
    handle_signals: bool,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    handshake_timeout: Duration,
    max_http_connections: usize,
    on_shutdown: Option<ShutdownHook>,
    access: access::AccessOptions,
    tls: Option<TlsConfig>,
    tls_watch: Option<Duration>,
}

impl HubServerBuilder {
    /// Listen address (default `127.0.0.1:8080`, loopback only; the
    /// reference binds `0.0.0.0`). Port 0 picks a free port: see
    /// [`HubServer::local_addr`].
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Accept WebSocket upgrades only on this path (default: any path).
    /// Query string and trailing slashes are ignored, as for routes.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Serves `path` (any method) with `handler`, before the built-in
    /// routes. The handler returns an `http::Response` whose body converts
    /// into [`Bytes`] (`&'static str`, `String`, `Vec<u8>`…), or a
    /// `Result` of one; an `Err` or a panic answers `500 internal error`.
    pub fn route<F, Fut, R>(mut self, path: impl Into<String>, handler: F) -> Self
    where
        F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoRouteResponse,
    {
        self.routes.insert(path.into(), routes::route_fn(handler));
        self
    }

    /// Serve `/health` (default true).
    pub fn enable_health_route(mut self, on: bool) -> Self {
        self.health_route = on;
        self
    }

    /// Serve `/state`: peers and statuses, pretty JSON (default false; it
    /// lists every peer's hello, so keep it off on public interfaces).
    pub fn enable_state_route(mut self, on: bool) -> Self {
        self.state_route = on;
        self
    }

    /// Serve `/metrics`: Prometheus metrics as OpenMetrics text (default
    /// true; counters only, like `/health`: no kinds, no payloads; names in
    /// docs/operations.md, *Metrics*).
    pub fn enable_metrics_route(mut self, on: bool) -> Self {
        self.metrics_route = on;
        self
    }

    /// Extra keys merged into `/state`. A non-object result is ignored, and
    /// so are the keys `peers` and `lastStatus` (with a warning each).
    pub fn extra_state<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Value> + Send + 'static,
    {
        self.extra_state = Some(Arc::new(move || Box::pin(f())));
        self
    }

    /// Stop gracefully on SIGINT or SIGTERM (default true; Ctrl-C only on
    /// non-Unix). The listeners are removed when the server stops, but
    /// tokio keeps its process-wide handler installed, so a later signal no
    /// longer ends the process by default.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// Bound on the whole stop sequence (default 30 s; must be positive).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Grace period between the close(1001) and dropping the sockets that
    /// are still open (default 250 ms; zero is allowed).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Serve `wss://` and `https://` with this certificate (default: plain
    /// `ws://` and `http://`). Every route and the WebSocket upgrade go
    /// over TLS; a client that does not speak TLS is dropped after the
    /// failed handshake. See [`HubServer::reload_tls`].
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Also reload the TLS certificate when the contents of its files
    /// change, checking every `interval` (default: off; SIGHUP and
    /// [`HubServer::reload_tls`] work either way). A change is tried once:
    /// a half-written file logs one error, and the next change retries.
    /// Must be positive.
    pub fn tls_watch(mut self, interval: Duration) -> Self {
        self.tls_watch = Some(interval);
        self
    }

    /// Runs once, at the end of the stop sequence.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_shutdown = Some(Box::new(move || Box::pin(hook())));
        self
    }

    /// Validates the options and creates the [`Hub`] (call it inside a
    /// tokio runtime). Nothing is bound until [`HubServer::start`].
    pub fn build(self) -> Result<HubServer, ServerError> {
        if self.tls_watch.is_some_and(|d| d.is_zero()) {
            return Err(ServerError::InvalidOption {
                option: "tls_watch",
                reason: "must be positive",
            });
        }
        for (option, ok) in [
            ("handshake_timeout", !self.handshake_timeout.is_zero()),
            ("max_http_connections", self.max_http_connections > 0),
        ] {
            if !ok {
                return Err(ServerError::InvalidOption {
                    option,
                    reason: "must be positive",
                });
            }
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ServerError::InvalidOption {
                option: "shutdown_timeout",
                reason: "must be positive",
            });
        }
        let path = match &self.path {
            Some(p) => Some(routes::checked_path("path", p)?),
            None => None,
        };
        let mut table = HashMap::with_capacity(self.routes.len());
        for (p, handler) in self.routes {
            table.insert(routes::checked_path("route", &p)?, handler);
        }
        if self.state_route && self.bind.ip().is_unspecified() {
            tracing::warn!(
                bind = %self.bind,
                "/state is enabled on every interface: it lists every peer's hello and status"
            );
        }
        if self.dashboard && self.bind.ip().is_unspecified() {
            tracing::warn!(
                bind = %self.bind,
                "/ui is enabled on every interface: it shows every peer, its address and status"
            );
        }
        let access = self.access.build()?;
        let tls = match self.tls {
            Some(config) => {
                Some(tls::Tls::new(config).map_err(|e| ServerError::Tls(e.to_string()))?)
            }
            None => None,
        };
        let (upgrades, _) = watch::channel(());
        let service = Service {
            hub: Hub::new(self.hub_config),
            settings: Settings {
                bind: self.bind,
                path,
                routes: table,
                health_route: self.health_route,
                state_route: self.state_route,
                metrics_route: self.metrics_route,
                extra_state: self.extra_state,
                handle_signals: self.handle_signals,
                shutdown_timeout: self.shutdown_timeout,
                drain_delay: self.drain_delay,
                handshake_timeout: self.handshake_timeout,
                tls,
                tls_watch: self.tls_watch,
            },
            stopping: Arc::new(AtomicBool::new(false)),
            stop_reason: Arc::new(OnceLock::new()),
            upgrades,
            access,
            handshakes: handshakes::Handshakes::new(self.max_http_connections),
            dashboard: self.dashboard.then(dashboard::Dashboard::new),
        };
        let (outcome, _) = watch::channel(None);
        Ok(HubServer {
            inner: Arc::new(Inner {
                service: Arc::new(service),
                on_shutdown: Mutex::new(self.on_shutdown),
                phase: tokio::sync::Mutex::new(Phase::Idle),
                local_addr: OnceLock::new(),
                started: AtomicBool::new(false),
                stop_begun: AtomicBool::new(false),
                outcome,
            }),
        })
    }
}

impl std::fmt::Debug for HubServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubServerBuilder")
            .field("bind", &self.bind)
            .field("path", &self.path)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("health_route", &self.health_route)
            .field("state_route", &self.state_route)
            .field("metrics_route", &self.metrics_route)
            .field("dashboard", &self.dashboard)
            .field("handle_signals", &self.handle_signals)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("drain_delay", &self.drain_delay)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_http_connections", &self.max_http_connections)
            .field("access", &self.access)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> HubConfig {
        HubConfig::builder(Secret::shared("s")).build().unwrap()
    }

    #[tokio::test]
    async fn build_validates_options() {
        let err = HubServer::builder(config())
            .shutdown_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_OPTION");
        assert!(err.to_string().contains("shutdown_timeout"), "{err}");
        let err = HubServer::builder(config())
            .tls_watch(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`tls_watch`"), "{err}");
        let err = HubServer::builder(config())
            .handshake_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`handshake_timeout`"), "{err}");
        let err = HubServer::builder(config())
            .max_http_connections(0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`max_http_connections`"), "{err}");
        let err = HubServer::builder(config())
            .path("link")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`path`"), "{err}");
        let err = HubServer::builder(config())
            .route("", |_req| async { http::Response::new("") })
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`route`"), "{err}");
    }

    #[tokio::test]
    async fn defaults_are_loopback_and_not_started() {
        let server = HubServer::builder(config()).build().unwrap();
        let s = &server.inner.service.settings;
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(s.health_route && !s.state_route && s.handle_signals);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.drain_delay, Duration::from_millis(250));
        assert_eq!(s.handshake_timeout, Duration::from_secs(30));
        assert!(!server.is_started() && !server.is_stopping() && !server.is_stopped());
        assert_eq!(server.local_addr(), None);
    }
}
