//! The live dashboard ([`HubServerBuilder::enable_dashboard`]): `GET /ui`
//! serves one page (its HTML, CSS and JavaScript are embedded in the
//! binary; it loads nothing else), and `GET /ui/events` a Server-Sent
//! Events feed of JSON snapshots the page draws (docs/operations.md,
//! *Live dashboard*).
//!
//! ```text
//!  page ─ EventSource ─► /ui/events ─► one Feed per open page:
//!                        at once, every second, and at most 250 ms after a
//!                        membership, status or subscription change
//!                          RouterMsg::Dashboard ─► the table's view ──┐
//!                          Metrics: socket counters, recent drops ────┴─► snapshot ─► `data: {…}`
//! ```
//!
//! What it costs while no page is open: nothing on the hot path. The table
//! keeps two plain counters per topic and a revision number; the router
//! reads one atomic per batch (are there watchers?) and sends the revision
//! only while a feed holds a receiver. The feed does not listen to hub
//! events, so it never turns their construction (or the message firehose)
//! on. Read-only: the page can only read what `/state` and `/metrics`
//! already show, and both routes are behind the same access rule (so
//! `?token=` works: a browser cannot set `Authorization` on an
//! `EventSource`). Feeds end when the server stops.

mod snapshot;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::HubServerBuilder;
use super::routes::{Body, text};
use crate::hub::Hub;
use crate::shared::wall_ms;

/// The page.
pub(crate) const PAGE_PATH: &str = "/ui";
/// The feed.
pub(crate) const EVENTS_PATH: &str = "/ui/events";

/// A snapshot goes out at least this often.
const PERIOD: Duration = Duration::from_secs(1);
/// And at most this often (a burst of changes is one snapshot).
const MIN_GAP: Duration = Duration::from_millis(250);
/// Pages open at once; more get `503` (each costs a view per second).
pub const MAX_DASHBOARD_FEEDS: usize = 16;

/// The page's HTML, with the stylesheet and the script put inline.
const HTML: &str = include_str!("index.html");
const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");

type FeedStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// The body of the server's responses: whole, or the feed.
pub(crate) type ServiceBody = Either<Body, StreamBody<FeedStream>>;

/// The page, assembled once, and its Content-Security-Policy (the inline
/// script and style are allowed by their hashes, nothing else loads).
struct Page {
    html: Bytes,
    csp: HeaderValue,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = HTML.replace("/*CSS*/", CSS).replace("/*JS*/", JS);
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        sha256_base64(JS),
        sha256_base64(CSS)
    );
    Page {
        html: Bytes::from(html),
        // Base64 and ASCII only: always a valid header value.
        csp: HeaderValue::from_str(&csp)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
    }
});

/// The dashboard of one server: a stop signal for its feeds and their cap.
pub(crate) struct Dashboard {
    stop: watch::Sender<bool>,
    feeds: Arc<Semaphore>,
    started_ms: u64,
}

impl Dashboard {
    pub(crate) fn new() -> Self {
        Self {
            stop: watch::Sender::new(false),
            feeds: Arc::new(Semaphore::new(MAX_DASHBOARD_FEEDS)),
            started_ms: wall_ms(),
        }
    }

    /// Ends every feed (the server stops: HTTP connections finish their
    /// responses, and a feed would never finish on its own).
    pub(crate) fn close(&self) {
        self.stop.send_replace(true);
    }

    /// Answers `/ui` and `/ui/events` (a normalised path); `None` for
    /// every other path.
    pub(crate) fn answer(&self, hub: &Hub, path: &str) -> Option<Response<ServiceBody>> {
        match path {
            PAGE_PATH => Some(page().map(Either::Left)),
            EVENTS_PATH => Some(self.feed(hub)),
            _ => None,
        }
    }

    fn feed(&self, hub: &Hub) -> Response<ServiceBody> {
        let Ok(permit) = self.feeds.clone().try_acquire_owned() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many dashboards open")
                .map(Either::Left);
        };
        let feed = Feed {
            hub: hub.clone(),
            changes: hub.dashboard_changes(),
            stop: self.stop.subscribe(),
            started_ms: self.started_ms,
            last_push: None,
            _permit: permit,
        };
        let stream: FeedStream = Box::pin(futures_util::stream::unfold(feed, Feed::next));
        let mut res = Response::new(Either::Right(StreamBody::new(stream)));
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Reverse proxies (nginx) would otherwise buffer the stream.
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        res
    }
}

/// `GET /ui`.
fn page() -> Response<Body> {
    let page = &*PAGE;
    let mut res = Response::new(Full::new(page.html.clone()));
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        page.csp.clone(),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // The page's URL may carry `?token=`: never send it anywhere.
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// One open page's feed.
struct Feed {
    hub: Hub,
    changes: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    started_ms: u64,
    last_push: Option<Instant>,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    /// The next `data:` event: the first at once, then one a second, or
    /// sooner after a change; `None` ends the stream (the server stops, or
    /// the hub no longer answers).
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Self)> {
        if *self.stop.borrow() {
            return None;
        }
        if let Some(last) = self.last_push {
            let changed = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => return None,
                () = tokio::time::sleep_until(last + PERIOD) => false,
                changed = self.changes.changed() => {
                    changed.ok()?;
                    true
                }
            };
            if changed {
                // A burst of changes is one snapshot.
                tokio::select! {
                    biased;
                    _ = self.stop.wait_for(|stop| *stop) => return None,
                    () = tokio::time::sleep_until(last + MIN_GAP) => {}
                }
            }
        }
        // Changes from here on are in this snapshot or wake the next one.
        self.changes.borrow_and_update();
        let view = self.hub.dashboard().await?;
        let metrics = self.hub.metrics_handle();
        let json = snapshot::snapshot(
            wall_ms(),
            self.started_ms,
            &view,
            &metrics.traffic(),
            &metrics.recent_errors(),
        );
        self.last_push = Some(Instant::now());
        let event = format!("data: {json}\n\n");
        Some((Ok(Frame::data(Bytes::from(event))), self))
    }
}

/// The dashboard (see docs/operations.md, *Live dashboard*).
impl HubServerBuilder {
    /// Serve the live dashboard: `GET /ui` (a page) and `GET /ui/events`
    /// (its Server-Sent Events feed). Default false. Read-only, behind the
    /// access rule like `/state` (open it as `/ui?token=…` with a bearer
    /// token); at most [`MAX_DASHBOARD_FEEDS`] pages at once. It shows
    /// peer kinds, addresses and statuses, so keep it off public
    /// interfaces or behind a token.
    pub fn enable_dashboard(mut self, on: bool) -> Self {
        self.dashboard = on;
        self
    }
}

/// `sha256-…` source for a Content-Security-Policy.
fn sha256_base64(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64(digest.as_ref())
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output, "{input}");
        }
    }

    #[test]
    fn the_page_inlines_its_assets_and_loads_nothing_else() {
        let html = std::str::from_utf8(&PAGE.html).unwrap();
        assert!(!html.contains("/*CSS*/") && !html.contains("/*JS*/"));
        assert!(html.contains(CSS) && html.contains(JS));
        for external in ["http://", "https://", "src=", "<link"] {
            assert!(!html.contains(external), "the page names {external}");
        }
        let csp = PAGE.csp.to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains(&sha256_base64(JS)));
    }
}
