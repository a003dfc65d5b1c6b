//! The WebSocket handshake (RFC 6455 §4.2) over hyper's upgrade, done
//! here so the socket gets the hub's size limits from the first byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::SinkExt;
use futures_util::future::Either;
use http::header::{
    CONNECTION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use link_transport::{Frame, ServerSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::limits::Admission;
use super::{SHUTDOWN_CLOSE_CODE, SHUTDOWN_CLOSE_REASON};
use crate::hub::Hub;

/// Ties an upgrade task to a [`HubServer`](super::HubServer): the server
/// waits for it when stopping, and the task closes its socket instead of
/// attaching it if the server began stopping meanwhile.
pub(crate) struct Guard {
    pub(crate) _tracker: watch::Receiver<()>,
    pub(crate) stopping: Arc<AtomicBool>,
    /// The shutdown's close reason once `stop_with` has set it.
    pub(crate) stop_reason: Arc<std::sync::OnceLock<String>>,
    /// The upgrade's places under the connection limits: the pending one
    /// is given back once attached, the per-IP slot when the connection ends.
    pub(crate) admission: Option<Admission>,
}

/// True when the request asks for a WebSocket (`Upgrade: websocket`).
/// Such a request should go to [`upgrade`], not to ordinary routes.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), &UPGRADE, "websocket")
}

/// Answers a WebSocket upgrade request and, once the connection is
/// upgraded, attaches the socket to `hub`.
///
/// Use it from any hyper-based server (hyper's `serve_connection(..)
/// .with_upgrades()`, axum, …) on the route where the hub should live. The
/// socket's frame and message caps are the hub's `max_message_bytes`. The
/// response is `101 Switching Protocols`; an invalid handshake gets `400`
/// (`426` for an unsupported `Sec-WebSocket-Version`), and a request whose
/// connection cannot be upgraded gets `500`. `remote` is reported in hub
/// events. Must be called inside a tokio runtime.
///
/// See the [module documentation](super) for an axum example; with hyper:
///
/// ```no_run
/// use std::convert::Infallible;
///
/// use http_body_util::Full;
/// use hyper::service::service_fn;
/// use hyper_util::rt::TokioIo;
/// use link_hub::server::{Bytes, http};
/// use link_hub::{Hub, HubConfig, Secret};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new(HubConfig::builder(Secret::shared("demo-secret")).build()?);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (tcp, remote) = listener.accept().await?;
///     let hub = hub.clone();
///     let service = service_fn(move |req| {
///         let res: http::Response<Full<Bytes>> = if req.uri().path() == "/link" {
///             link_hub::server::upgrade(&hub, req, Some(remote))
///         } else {
///             http::Response::new(Full::new(Bytes::from_static(b"hello")))
///         };
///         async move { Ok::<_, Infallible>(res) }
///     });
///     tokio::spawn(
///         hyper::server::conn::http1::Builder::new()
///             .serve_connection(TokioIo::new(tcp), service)
///             .with_upgrades(),
///     );
/// }
/// # }
/// ```
pub fn upgrade<B, R>(hub: &Hub, req: Request<B>, remote: Option<SocketAddr>) -> Response<R>
where
    R: From<Bytes>,
{
    upgrade_with(hub, req, remote, None)
}

pub(crate) fn upgrade_with<B, R>(
    hub: &Hub,
    req: Request<B>,
    remote: Option<SocketAddr>,
    guard: Option<Guard>,
) -> Response<R>
where
    R: From<Bytes>,
{
    let accept = match check_handshake(&req) {
        Ok(accept) => accept,
        Err(refusal) => {
            tracing::debug!(
                ?remote,
                reason = refusal.reason,
                "websocket handshake refused"
            );
            return refusal.into_response();
        }
    };
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        tracing::error!(
            "this connection cannot be upgraded: serve it with hyper's `with_upgrades()`"
        );
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let on_upgrade = hyper::upgrade::on(req);
    let hub = hub.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(?remote, %error, "websocket upgrade did not complete");
                return;
            }
        };
        // The socket holds its read and write buffers only while bytes
        // wait in them: what an idle peer costs is its tasks and state.
        // Boxed: this task lives as long as the socket, and would otherwise
        // keep room for the setup's future (over 600 bytes) all along.
        let setup = ServerSocket::from_raw_socket(TokioIo::new(upgraded), hub.websocket_config());
        let ws = Box::pin(setup).await;
        // Served on this task (one task fewer per socket than spawning).
        attach(hub, ws, remote, guard).await;
    });

    let mut res = Response::new(R::from(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Serves an upgraded socket on the calling task, or closes it if the
/// server began stopping meanwhile.
///
/// The upgrade task lives as long as the socket, so its future is what an
/// idle peer costs. Neither the socket nor the reader's future is kept
/// twice in it: the socket is moved in before any await (a local moved
/// into the reader still had room of its own), and the reader's future is
/// extended with `map` rather than awaited inside an `async` block (that
/// moves it out of the block's capture into a second slot). 1,512 bytes
/// before, the reader's ~940 now (docs/perf.md, "Cheaper idle
/// connections").
fn attach<T>(
    hub: Hub,
    ws: ServerSocket<T>,
    remote: Option<SocketAddr>,
    guard: Option<Guard>,
) -> impl Future<Output = ()> + Send + 'static
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some(g) = guard
        .as_ref()
        .filter(|g| g.stopping.load(Ordering::Acquire))
    {
        let reason = g
            .stop_reason
            .get()
            .map_or(SHUTDOWN_CLOSE_REASON, String::as_str)
            .to_owned();
        return Either::Left(close_stopping(ws, reason));
    }
    let mut admission = guard.and_then(|g| g.admission);
    if let Some(admission) = &mut admission {
        admission.attached();
    }
    // The per-IP place is held until the connection ends.
    Either::Right(
        hub.serve_transport(ws, remote)
            .map(move |()| drop(admission)),
    )
}

/// The server began stopping while this socket was being upgraded.
async fn close_stopping<T>(mut ws: ServerSocket<T>, reason: String)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = ws
        .send(Frame::close(Some(SHUTDOWN_CLOSE_CODE), &reason))
        .await;
}

/// A handshake refused before any upgrade.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }

    fn into_response<R: From<Bytes>>(self) -> Response<R> {
        let mut res = plain(self.status, "bad websocket upgrade");
        if self.status == StatusCode::UPGRADE_REQUIRED {
            res.headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        res
    }
}

/// Checks the client handshake; returns the `Sec-WebSocket-Accept` value.
fn check_handshake<B>(req: &Request<B>) -> Result<HeaderValue, Refusal> {
    if req.method() != Method::GET {
        return Err(Refusal::bad("method is not GET"));
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refusal::bad("not HTTP/1.1"));
    }
    let headers = req.headers();
    if !has_token(headers, &UPGRADE, "websocket") {
        return Err(Refusal::bad("no `Upgrade: websocket`"));
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(Refusal::bad("no `Connection: upgrade`"));
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal {
            status: StatusCode::UPGRADE_REQUIRED,
            reason: "Sec-WebSocket-Version is not 13",
        });
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| is_key(k))
        .ok_or(Refusal::bad("bad Sec-WebSocket-Key"))?;
    HeaderValue::from_str(&derive_accept_key(key))
        .map_err(|_| Refusal::bad("bad Sec-WebSocket-Key"))
}

/// A base64-encoded 16-byte nonce: 22 base64 characters then `==`.
fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Whether a comma-separated header contains `token` (ASCII case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn plain<R: From<Bytes>>(status: StatusCode, body: &'static str) -> Response<R> {
    let mut res = Response::new(R::from(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(
            crate::HubConfig::builder(crate::Secret::shared("s"))
                .build()
                .expect("config"),
        )
    }

    /// The upgrade task serves the socket for its whole life: what it keeps
    /// besides the reader's future is paid per idle peer. The socket or the
    /// reader's future kept a second time made it 1,512 and 1,920 bytes.
    #[tokio::test]
    async fn the_attached_socket_is_kept_once() {
        let hub = hub();
        let (a, _b) = tokio::io::duplex(64);
        let ws = ServerSocket::from_raw_socket(a, Default::default()).await;
        let reader = std::mem::size_of_val(&hub.serve_transport(ws, None));
        let (a, _b) = tokio::io::duplex(64);
        let ws = ServerSocket::from_raw_socket(a, Default::default()).await;
        let attached = std::mem::size_of_val(&attach(hub, ws, None, None));
        assert!(
            attached <= reader + 64,
            "attach future {attached} bytes, the reader's {reader}"
        );
    }

    /// A socket whose upgrade finished after the server began stopping is
    /// closed with the shutdown's code and reason, never attached.
    #[tokio::test]
    async fn a_socket_upgraded_while_stopping_is_closed_with_the_reason() {
        use tokio::io::AsyncReadExt;
        let hub = hub();
        let (tracker_tx, tracker) = watch::channel(());
        let stop_reason = Arc::new(std::sync::OnceLock::new());
        let _ = stop_reason.set("maintenance".to_owned());
        let guard = Guard {
            _tracker: tracker,
            stopping: Arc::new(AtomicBool::new(true)),
            stop_reason,
            admission: None,
        };
        let (a, mut peer) = tokio::io::duplex(256);
        let ws = ServerSocket::from_raw_socket(a, Default::default()).await;
        attach(hub, ws, None, Some(guard)).await;
        let mut frame = [0u8; 15];
        peer.read_exact(&mut frame).await.expect("a close frame");
        // FIN + close, unmasked, 13 bytes: the code, then the reason.
        assert_eq!(frame[..2], [0x88, 13]);
        assert_eq!(
            u16::from_be_bytes([frame[2], frame[3]]),
            SHUTDOWN_CLOSE_CODE
        );
        assert_eq!(&frame[4..], b"maintenance");
        tracker_tx.closed().await;
    }

    fn request() -> http::request::Builder {
        Request::builder()
            .method(Method::GET)
            .uri("/")
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn accepts_the_rfc_example() {
        let req = request().body(()).unwrap();
        assert!(is_upgrade_request(&req));
        let accept = check_handshake(&req).ok().unwrap();
        // RFC 6455 §1.3.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_bad_handshakes() {
        let status = |req: Request<()>| check_handshake(&req).err().map(|r| r.status);
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(
            status(request().method(Method::POST).body(()).unwrap()),
            bad
        );
        assert_eq!(
            status(request().version(Version::HTTP_10).body(()).unwrap()),
            bad
        );
        let no_conn = {
            let mut r = request().body(()).unwrap();
            r.headers_mut().remove(CONNECTION);
            r
        };
        assert_eq!(status(no_conn), bad);
        let mut short_key = request().body(()).unwrap();
        short_key
            .headers_mut()
            .insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("c2hvcnQ="));
        assert_eq!(status(short_key), bad);
        let mut v8 = request().body(()).unwrap();
        v8.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(status(v8), Some(StatusCode::UPGRADE_REQUIRED));
        let res: Response<Bytes> = Refusal {
            status: StatusCode::UPGRADE_REQUIRED,
            reason: "",
        }
        .into_response();
        assert_eq!(res.headers()[SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn tokens_are_case_insensitive_and_comma_separated() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(CONNECTION, HeaderValue::from_static("foo, UPGRADE"));
        assert!(has_token(&h, &CONNECTION, "upgrade"));
        assert!(!has_token(&h, &CONNECTION, "close"));
    }
}
