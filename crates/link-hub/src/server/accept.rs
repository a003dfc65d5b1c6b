//! The accept loop and one task per HTTP connection.
//!
//! Every task holds a receiver of the shutdown channel: sending `true`
//! stops the accept loop and asks each connection for a graceful shutdown
//! (idle keep-alive connections close, in-flight requests finish), and the
//! sender's `closed()` resolves once every task has ended.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Service;
use super::dashboard::ServiceBody;
use super::handshakes::Slot;
use super::routes::{normalize, text};
use super::upgrade::{Guard, is_upgrade_request, upgrade_with};

/// Pause after an accept error that is not about one connection (e.g. out
/// of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn run(
    listener: TcpListener,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
) {
    let for_conns = shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    tokio::spawn(serve(service.clone(), tcp, remote, for_conns.clone()));
                }
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accept failed for one connection");
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// Resolves when shutdown is requested, or when every handle is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

async fn serve(
    service: Arc<Service>,
    tcp: TcpStream,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // Counted until its upgrade is admitted; past the cap the oldest goes.
    let (slot, evicted) = service.handshakes.enter();
    tokio::select! {
        () = handshake_then_http(service.clone(), tcp, remote, shutdown, Arc::new(slot)) => {}
        () = evicted.wait() => {
            tracing::debug!(%remote, "closed: too many HTTP connections (the oldest goes)");
        }
    }
}

async fn handshake_then_http(
    service: Arc<Service>,
    tcp: TcpStream,
    remote: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    slot: Arc<Slot>,
) {
    let timeout = service.settings.handshake_timeout;
    match &service.settings.tls {
        None => serve_http(service.clone(), tcp, remote, shutdown, slot).await,
        Some(tls) => {
            // Bounded like the request headers, and cut short by a stop.
            let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(tcp));
            let stream = tokio::select! {
                result = handshake => result,
                () = stopping(&mut shutdown) => return,
            };
            match stream {
                Ok(Ok(stream)) => {
                    serve_http(service.clone(), stream, remote, shutdown, slot).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                }
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(
    service: Arc<Service>,
    io: S,
    remote: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    slot: Arc<Slot>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let service = service.clone();
        service_fn(move |req| {
            let service = service.clone();
            let slot = slot.clone();
            async move { Ok::<_, Infallible>(service.handle(req, remote, &slot).await) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(service.settings.handshake_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "http connection ended with an error");
    }
}

impl Service {
    async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        slot: &Slot,
    ) -> Response<ServiceBody> {
        if !is_upgrade_request(&req) {
            let path = normalize(req.uri().path());
            if self.access.guards_route(path)
                && let Err(refused) = self.access.check_route(&req, remote).await
            {
                return self.access.refuse(remote, refused).map(Either::Left);
            }
            // The dashboard's paths, unless a user route takes them.
            if let Some(dashboard) = &self.dashboard
                && !self.settings.routes.contains_key(path)
                && let Some(res) = dashboard.answer(&self.hub, path)
            {
                return res;
            }
            return self.http(req).await.map(Either::Left);
        }
        self.upgrade(req, remote, slot).await.map(Either::Left)
    }

    async fn upgrade(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        slot: &Slot,
    ) -> Response<super::routes::Body> {
        if let Some(path) = &self.settings.path
            && normalize(req.uri().path()) != path
        {
            tracing::debug!(%remote, uri = %req.uri(), "websocket upgrade on another path");
            return text(StatusCode::BAD_REQUEST, "bad websocket path");
        }
        if self.stopping.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");
        }
        let admission = match self.access.admit_upgrade(&req, remote).await {
            Ok(admission) => admission,
            Err(refused) => return self.access.refuse(remote, refused),
        };
        // From here the pending-upgrade and per-IP caps count it.
        slot.release();
        let guard = Guard {
            _tracker: self.upgrades.subscribe(),
            stopping: self.stopping.clone(),
            stop_reason: self.stop_reason.clone(),
            admission: Some(admission),
        };
        upgrade_with(&self.hub, req, Some(remote), Some(guard))
    }
}
