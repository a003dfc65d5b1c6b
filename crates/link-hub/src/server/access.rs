//! Who may open a WebSocket or read a protected route: the CIDR allow
//! list, the bearer token and the `authenticate` hook, checked on the HTTP
//! request before any upgrade (docs/operations.md, *Access and limits*).
//!
//! ```text
//!  upgrade:   CIDR (403) ─► pending-upgrade cap (503) ─► per-IP cap (429)
//!             ─► bearer (401) ─► authenticate hook ─► handshake ─► 101
//!  HTTP route (all but /health, unless protect_health):
//!             CIDR (403) ─► bearer (401) ─► authenticate hook ─► route
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use super::limits::{Admission, Limits};
use super::routes::Body;
use super::{HubServerBuilder, ServerError};
use crate::future::BoxFuture;

/// The longest refusal reason sent back, in bytes (longer ones are cut).
const MAX_REASON_BYTES: usize = 256;

/// The type-erased `authenticate` hook.
type AuthFn = Arc<dyn Fn(AuthRequest) -> BoxFuture<AuthDecision> + Send + Sync>;

/// What the [`authenticate`](HubServerBuilder::authenticate) hook sees:
/// the HTTP request before the WebSocket upgrade (or before a protected
/// route), without its body.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    remote: SocketAddr,
    websocket: bool,
}

impl AuthRequest {
    /// A request as the hook would see it (for testing a hook).
    pub fn new(method: Method, uri: Uri, headers: HeaderMap, remote: SocketAddr) -> Self {
        let websocket = super::upgrade::has_token(&headers, &http::header::UPGRADE, "websocket");
        Self {
            method,
            uri,
            headers,
            remote,
            websocket,
        }
    }

    fn of<B>(req: &Request<B>, remote: SocketAddr) -> Self {
        Self::new(
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
            remote,
        )
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as sent (path and query).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The path, as sent (not normalised).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The raw query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is
    /// a space, as in `URLSearchParams`); `None` if absent or not UTF-8.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.uri.query()?, name)
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The TCP peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// True for a WebSocket upgrade, false for a plain HTTP route.
    pub fn is_websocket(&self) -> bool {
        self.websocket
    }
}

/// The [`authenticate`](HubServerBuilder::authenticate) hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDecision {
    /// Go on with the upgrade (or the route).
    Allow,
    /// Answer `status` with `reason` as a `text/plain` body; no upgrade
    /// happens. `status` should be a 4xx (401, 403…); any other status is
    /// sent as 403. `reason` is cut to 256 bytes.
    Refuse {
        /// The HTTP status.
        status: StatusCode,
        /// The body, for the client's error message. Keep secrets out.
        reason: String,
    },
}

impl AuthDecision {
    /// `401 Unauthorized`: no or wrong credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::Refuse {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// `403 Forbidden`: known, but not allowed.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::Refuse {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }
}

/// An IPv4 or IPv6 network, `10.0.0.0/8` or `fd00::/8`; a bare address is
/// a single host (`/32`, `/128`). Host bits are ignored. An IPv4-mapped
/// IPv6 peer (`::ffff:10.1.2.3`, on a dual-stack listener) is matched as
/// its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not a CIDR network.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid CIDR `{input}`: {reason}")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl CidrError {
    /// The stable code, `INVALID_CIDR`.
    pub fn code(&self) -> &'static str {
        "INVALID_CIDR"
    }
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = |reason| CidrError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err("prefix too long"))?
            }
            Some(_) => return Err(err("the prefix length is not a number")),
        };
        if prefix > max {
            return Err(err("prefix too long"));
        }
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| {
                // `::ffff:a.b.c.d/n` is the IPv4 network `a.b.c.d/(n-96)`.
                if prefix >= 96 { IpAddr::V4(v4) } else { addr }
            }),
            IpAddr::V4(_) => addr,
        };
        let prefix = if addr.is_ipv4() && max == 128 {
            prefix - 96
        } else {
            prefix
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The access options, as set on the builder.
#[derive(Default)]
pub(crate) struct AccessOptions {
    allow: Vec<Cidr>,
    /// SHA-256 of the bearer token (compared digest to digest, so the
    /// comparison neither stops early nor depends on the token's length).
    bearer: Option<Result<[u8; 32], &'static str>>,
    hook: Option<AuthFn>,
    protect_health: bool,
    max_pending_upgrades: Option<usize>,
    max_connections_per_ip: Option<usize>,
}

impl fmt::Debug for AccessOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessOptions")
            .field("allow", &self.allow)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("hook", &self.hook.is_some())
            .field("protect_health", &self.protect_health)
            .field("max_pending_upgrades", &self.max_pending_upgrades)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish()
    }
}

/// Default cap on WebSocket upgrades in progress.
pub const DEFAULT_MAX_PENDING_UPGRADES: usize = 1024;
/// Default cap on WebSocket connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

impl AccessOptions {
    pub(crate) fn build(self) -> Result<Access, ServerError> {
        let positive = |option, value: Option<usize>, default| match value {
            Some(0) => Err(ServerError::InvalidOption {
                option,
                reason: "must be positive",
            }),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let pending = positive(
            "max_pending_upgrades",
            self.max_pending_upgrades,
            DEFAULT_MAX_PENDING_UPGRADES,
        )?;
        let per_ip = positive(
            "max_connections_per_ip",
            self.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
        )?;
        let bearer = match self.bearer {
            None => None,
            Some(Ok(digest)) => Some(digest),
            Some(Err(reason)) => {
                return Err(ServerError::InvalidOption {
                    option: "bearer_token",
                    reason,
                });
            }
        };
        Ok(Access {
            allow: self.allow,
            bearer,
            hook: self.hook,
            protect_health: self.protect_health,
            limits: Limits::new(pending, per_ip),
        })
    }
}

/// The built access rule and limits, shared by every connection task.
pub(crate) struct Access {
    allow: Vec<Cidr>,
    bearer: Option<[u8; 32]>,
    hook: Option<AuthFn>,
    protect_health: bool,
    pub(crate) limits: Limits,
}

impl Access {
    /// Whether a plain HTTP request on (normalised) `path` goes through
    /// the access rule: every route but `/health`, unless protected too.
    pub(crate) fn guards_route(&self, path: &str) -> bool {
        self.protect_health || path != "/health"
    }

    /// Checks a plain HTTP request.
    pub(crate) async fn check_route<B>(
        &self,
        req: &Request<B>,
        remote: SocketAddr,
    ) -> Result<(), Refused> {
        self.check_static(req, remote)?;
        self.run_hook(req, remote).await
    }

    /// Checks a WebSocket upgrade request and takes its places under the
    /// limits.
    pub(crate) async fn admit_upgrade<B>(
        &self,
        req: &Request<B>,
        remote: SocketAddr,
    ) -> Result<Admission, Refused> {
        if !self.address_allowed(remote) {
            return Err(Refused::Address);
        }
        let admission = self.limits.admit(remote.ip())?;
        self.check_bearer(req)?;
        self.run_hook(req, remote).await?;
        Ok(admission)
    }

    fn check_static<B>(&self, req: &Request<B>, remote: SocketAddr) -> Result<(), Refused> {
        if !self.address_allowed(remote) {
            return Err(Refused::Address);
        }
        self.check_bearer(req)
    }

    fn address_allowed(&self, remote: SocketAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(remote.ip()))
    }

    fn check_bearer<B>(&self, req: &Request<B>) -> Result<(), Refused> {
        let Some(expected) = &self.bearer else {
            return Ok(());
        };
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_of);
        let query = req.uri().query().and_then(|q| query_param(q, "token"));
        let ok = header
            .into_iter()
            .map(str::to_owned)
            .chain(query)
            .any(|token| token_matches(expected, &token));
        if ok { Ok(()) } else { Err(Refused::Token) }
    }

    async fn run_hook<B>(&self, req: &Request<B>, remote: SocketAddr) -> Result<(), Refused> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        let request = AuthRequest::of(req, remote);
        let decision = match std::panic::catch_unwind(AssertUnwindSafe(|| hook(request))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
            Err(_) => None,
        };
        match decision {
            Some(AuthDecision::Allow) => Ok(()),
            Some(AuthDecision::Refuse { status, reason }) => Err(Refused::Hook(status, reason)),
            None => Err(Refused::HookPanicked),
        }
    }

    /// The answer to a refused request.
    pub(crate) fn refuse(&self, remote: SocketAddr, refused: Refused) -> Response<Body> {
        let (status, body): (StatusCode, String) = match refused {
            Refused::Address => (
                StatusCode::FORBIDDEN,
                "forbidden: address not allowed".into(),
            ),
            Refused::Token => (
                StatusCode::UNAUTHORIZED,
                "unauthorized: missing or wrong bearer token".into(),
            ),
            Refused::PerIp => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address".into(),
            ),
            Refused::Pending => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many upgrades in progress".into(),
            ),
            Refused::HookPanicked => {
                tracing::error!(%remote, "the authenticate hook panicked; refusing");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
            Refused::Hook(status, reason) => {
                let status = if status.is_client_error() {
                    status
                } else {
                    tracing::warn!(%status, "authenticate refused with a non-4xx status; sending 403");
                    StatusCode::FORBIDDEN
                };
                let reason = if reason.is_empty() {
                    status.canonical_reason().unwrap_or("refused").to_owned()
                } else {
                    truncate(reason)
                };
                (status, reason)
            }
        };
        tracing::debug!(%remote, %status, reason = %body, "request refused");
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::UNAUTHORIZED && self.bearer.is_some() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// Why a request was refused.
pub(crate) enum Refused {
    Address,
    Token,
    PerIp,
    Pending,
    Hook(StatusCode, String),
    HookPanicked,
}

fn truncate(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive).
fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares digests in constant time: the time depends on neither the
/// position of the first difference nor the token's length.
fn token_matches(expected: &[u8; 32], candidate: &str) -> bool {
    bool::from(digest(candidate.as_bytes()).ct_eq(expected))
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))?
        })
        .next()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Access and limits (see docs/operations.md, *Access and limits*).
impl HubServerBuilder {
    /// Runs `hook` on every WebSocket upgrade request, before the upgrade,
    /// and on every protected HTTP route (all but `/health`, see
    /// [`protect_health`](Self::protect_health)); default: none. It runs
    /// after the CIDR, limit and bearer checks, in the connection's own
    /// task, so a slow hook delays only its own client (the pending-upgrade
    /// cap bounds how many wait). [`AuthDecision::Refuse`] answers its
    /// status and reason and nothing is upgraded. A hook that panics
    /// refuses with `500 internal error` (fail closed).
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = AuthDecision> + Send + 'static,
    {
        self.access.hook = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Accepts connections only from `net` (repeatable; default: every
    /// address). Other addresses get `403` on upgrades and protected routes.
    pub fn allow_cidr(mut self, net: Cidr) -> Self {
        self.access.allow.push(net);
        self
    }

    /// Requires `token` on upgrades and protected routes, as
    /// `Authorization: Bearer <token>` or `?token=<token>` (browsers and
    /// Node clients can only set a URL); compared in constant time. A
    /// missing or wrong token gets `401` with `WWW-Authenticate: Bearer`.
    /// An empty token fails [`build`](Self::build). Default: none.
    pub fn bearer_token(mut self, token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        self.access.bearer = Some(if token.is_empty() {
            Err("must not be empty")
        } else {
            Ok(digest(token))
        });
        self
    }

    /// Puts `/health` behind the access rule too (default false: load
    /// balancers and orchestrators probe it without credentials).
    pub fn protect_health(mut self, on: bool) -> Self {
        self.access.protect_health = on;
        self
    }

    /// Cap on WebSocket upgrades in progress, from the request's arrival
    /// until the socket is attached to the hub (default 1024; must be
    /// positive). Over the cap: `503`.
    pub fn max_pending_upgrades(mut self, n: usize) -> Self {
        self.access.max_pending_upgrades = Some(n);
        self
    }

    /// Cap on WebSocket connections (in progress or attached) from one IP
    /// address (default 256; must be positive). Over the cap: `429`. A
    /// slot is released when its connection ends.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.access.max_connections_per_ip = Some(n);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matches_v4_v6_and_mapped() {
        assert!(cidr("127.0.0.0/8").contains(ip("127.1.2.3")));
        assert!(!cidr("10.0.0.0/8").contains(ip("127.0.0.1")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1").contains(ip("::2")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe80::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("192.168.1.77/24").contains(ip("192.168.1.1")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.1.1.1")));
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("1.2.3.4").to_string(), "1.2.3.4/32");
    }

    #[test]
    fn cidr_rejects_junk() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert_eq!(err.code(), "INVALID_CIDR", "{bad}");
        }
    }

    #[test]
    fn bearer_and_query_token_parsing() {
        assert_eq!(bearer_of("Bearer abc"), Some("abc"));
        assert_eq!(bearer_of("bearer  abc "), Some("abc"));
        assert_eq!(bearer_of("Basic abc"), None);
        assert_eq!(bearer_of("Bearer"), None);
        assert_eq!(
            query_param("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_param("tok=1&token", "token").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "token"), None);
        assert_eq!(percent_decode("%zz%4").as_deref(), Some("%zz%4"));
        let d = digest(b"s3cret");
        assert!(token_matches(&d, "s3cret"));
        assert!(!token_matches(&d, "s3cre"));
        assert!(!token_matches(&d, "s3cret "));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let r = truncate("é".repeat(200));
        assert!(r.len() <= MAX_REASON_BYTES && r.len() >= MAX_REASON_BYTES - 1);
    }
}
