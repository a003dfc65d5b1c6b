//! Plain HTTP requests: path normalisation, user routes, `/health`,
//! `/state`, `/metrics` and the 404 (protocol §14).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use super::{ServerError, Service};
use crate::future::BoxFuture;

/// A user route, type-erased.
pub(crate) type RouteFn =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Result<Response<Bytes>, String>> + Send + Sync>;
/// The `/state` extension hook.
pub(crate) type ExtraStateFn = Arc<dyn Fn() -> BoxFuture<Value> + Send + Sync>;

/// The response body type of the built-in service.
pub(crate) type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// Keys of `/state` that `extra_state` cannot override.
const HUB_STATE_KEYS: [&str; 2] = ["peers", "lastStatus"];

mod sealed {
    pub trait Sealed {}
}

/// What a route handler may return: an `http::Response` whose body
/// converts into [`Bytes`], or a `Result` of one whose error is logged and
/// answered with `500 internal error`.
pub trait IntoRouteResponse: sealed::Sealed + Send + 'static {
    /// The response, or the error text to log.
    #[doc(hidden)]
    fn into_route_response(self) -> Result<Response<Bytes>, String>;
}

impl<B: Into<Bytes> + Send + 'static> sealed::Sealed for Response<B> {}

impl<B: Into<Bytes> + Send + 'static> IntoRouteResponse for Response<B> {
    fn into_route_response(self) -> Result<Response<Bytes>, String> {
        Ok(self.map(Into::into))
    }
}

impl<B, E> sealed::Sealed for Result<Response<B>, E>
where
    B: Into<Bytes> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
}

impl<B, E> IntoRouteResponse for Result<Response<B>, E>
where
    B: Into<Bytes> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    fn into_route_response(self) -> Result<Response<Bytes>, String> {
        self.map(|r| r.map(Into::into)).map_err(|e| e.to_string())
    }
}

pub(crate) fn route_fn<F, Fut, R>(handler: F) -> RouteFn
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: IntoRouteResponse,
{
    Arc::new(move |req| {
        let fut = handler(req);
        Box::pin(async move { fut.await.into_route_response() })
    })
}

/// `/health/?x=1` → `/health`; `""` and `"///"` → `/`.
pub(crate) fn normalize(path: &str) -> &str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// Normalises a configured path; it must start with `/`.
pub(crate) fn checked_path(option: &'static str, path: &str) -> Result<String, ServerError> {
    if !path.starts_with('/') {
        return Err(ServerError::InvalidOption {
            option,
            reason: "must start with `/`",
        });
    }
    Ok(normalize(path).to_owned())
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(status, TEXT, Bytes::from_static(body.as_bytes()))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn internal_error() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

impl Service {
    /// Answers a request that is not a WebSocket upgrade.
    pub(crate) async fn http(&self, req: Request<Incoming>) -> Response<Body> {
        let path = normalize(req.uri().path()).to_owned();
        let settings = &self.settings;
        if let Some(route) = settings.routes.get(&path) {
            let route = route.clone();
            return match AssertUnwindSafe(async move { route(req).await })
                .catch_unwind()
                .await
            {
                Ok(Ok(res)) => res.map(Full::new),
                Ok(Err(error)) => {
                    tracing::error!(%path, %error, "route failed");
                    internal_error()
                }
                Err(panic) => {
                    tracing::error!(%path, panic = panic_text(&*panic), "route panicked");
                    internal_error()
                }
            };
        }
        match path.as_str() {
            "/health" if settings.health_route => self.health().await,
            "/state" if settings.state_route => self.state().await,
            "/metrics" if settings.metrics_route => self.metrics().await,
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// `{"ok":true,"now":<ms>,"hub":<health>}`, in the reference's key order.
    async fn health(&self) -> Response<Body> {
        let hub = self.hub.health().await.to_value();
        let body = format!(r#"{{"ok":true,"now":{},"hub":{hub}}}"#, wall_ms());
        with_type(StatusCode::OK, JSON, Bytes::from(body))
    }

    /// The Prometheus metrics, as OpenMetrics text.
    async fn metrics(&self) -> Response<Body> {
        let body = self.hub.metrics().await;
        with_type(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            Bytes::from(body),
        )
    }

    /// Pretty `{peers, lastStatus, ...extra_state()}`.
    async fn state(&self) -> Response<Body> {
        let mut state = self.hub.state().await.to_value();
        if let (Some(extra), Value::Object(map)) = (&self.settings.extra_state, &mut state) {
            let extra = extra.clone();
            match AssertUnwindSafe(async move { extra().await })
                .catch_unwind()
                .await
            {
                Ok(Value::Object(more)) => {
                    for (key, value) in more {
                        if HUB_STATE_KEYS.contains(&key.as_str()) {
                            tracing::warn!(%key, "extra_state key collides with hub state; ignored");
                        } else {
                            map.insert(key, value);
                        }
                    }
                }
                Ok(_) => tracing::warn!("extra_state returned a non-object; ignored"),
                Err(panic) => {
                    tracing::error!(panic = panic_text(&*panic), "extra_state panicked");
                    return internal_error();
                }
            }
        }
        match serde_json::to_string_pretty(&state) {
            Ok(body) => with_type(StatusCode::OK, JSON, Bytes::from(body)),
            Err(error) => {
                tracing::error!(%error, "/state serialisation failed");
                internal_error()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_like_the_reference() {
        assert_eq!(normalize("/health/?x=1"), "/health");
        assert_eq!(normalize("/health//"), "/health");
        assert_eq!(normalize("/a/b/"), "/a/b");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("///"), "/");
        assert_eq!(normalize("/?q"), "/");
        assert_eq!(normalize(""), "/");
    }

    #[test]
    fn configured_paths_must_be_absolute() {
        assert_eq!(checked_path("path", "/link/").unwrap(), "/link");
        assert_eq!(checked_path("path", "/").unwrap(), "/");
        assert!(checked_path("path", "link").is_err());
        assert!(checked_path("path", "").is_err());
    }

    #[test]
    fn panic_payloads_are_read() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_text(&*p), "boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_text(&*p), "bang");
        let p: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_text(&*p), "non-string panic payload");
    }
}
