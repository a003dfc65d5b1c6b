//! The live dashboard over real sockets, without a browser (the browser
//! test is `dashboard_browser.rs`): `/ui` and `/ui/events` are off by
//! default and behind the access rule, the feed pushes a snapshot at once
//! and again after a change (peers, statuses, topics and their counters,
//! recent drops without their payload), feeds are capped, and they end when
//! the server stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use link_hub::server::MAX_DASHBOARD_FEEDS;
use link_hub::{HubConfig, HubServerBuilder, Secret};
use link_test_support::{Peer, TestServer, WAIT, fresh_id, guard, http_get, key};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "dashboard-secret";
const TOKEN: &str = "dash-t0ken";

fn builder() -> HubServerBuilder {
    TestServer::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
}

/// A Server-Sent Events reader over HTTP/1.1 (chunked, as hyper streams).
struct Sse {
    io: BufReader<TcpStream>,
    pending: String,
}

/// The status line and headers of an answer.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Sse {
    /// `GET target`; the head, and the reader when the answer is a stream.
    async fn open(addr: SocketAddr, target: &str) -> (Head, Self) {
        guard(async {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            );
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut io = BufReader::new(tcp);
            let mut line = String::new();
            io.read_line(&mut line).await.unwrap();
            let status = line.split(' ').nth(1).unwrap().parse().unwrap();
            let mut headers = Vec::new();
            loop {
                line.clear();
                io.read_line(&mut line).await.unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (n, v) = l.split_once(':').unwrap();
                headers.push((n.to_owned(), v.trim().to_owned()));
            }
            let sse = Self {
                io,
                pending: String::new(),
            };
            (Head { status, headers }, sse)
        })
        .await
    }

    /// The next chunk of the body; `None` at its end.
    async fn chunk(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.io.read_line(&mut line).await.unwrap() == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
        let mut data = vec![0; size + 2];
        self.io.read_exact(&mut data).await.unwrap();
        if size == 0 {
            return None;
        }
        data.truncate(size);
        Some(String::from_utf8(data).unwrap())
    }

    /// The next `data:` event's JSON; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                return Some(serde_json::from_str(data).expect("JSON data"));
            }
            let chunk = self.chunk().await?;
            self.pending.push_str(&chunk);
        }
    }

    /// The first snapshot for which `pred` holds (bounded by the hang guard).
    async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        guard(async {
            loop {
                let s = self.next().await.expect("the feed ended");
                if pred(&s) {
                    return s;
                }
            }
        })
        .await
    }
}

fn peer<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["peers"].as_array()?.iter().find(|p| p["kind"] == kind)
}

fn topic<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["topics"].as_array()?.iter().find(|t| t["topic"] == name)
}

#[tokio::test]
async fn the_dashboard_is_off_by_default() {
    let server = TestServer::start(builder()).await;
    assert_eq!(http_get(server.addr, "/ui").await.status, 404);
    assert_eq!(http_get(server.addr, "/ui/events").await.status, 404);
}

#[tokio::test]
async fn the_page_and_its_feed_are_behind_the_access_rule() {
    let server = TestServer::start(builder().enable_dashboard(true).bearer_token(TOKEN)).await;
    let addr = server.addr;
    for target in ["/ui", "/ui/", "/ui/events", "/ui?token=wrong"] {
        let r = http_get(addr, target).await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(r.body, "unauthorized: missing or wrong bearer token");
    }
    let page = http_get(addr, &format!("/ui?token={TOKEN}")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.body.contains("<canvas id=\"chart\""), "{}", page.body);
    // The query token is how an EventSource authenticates.
    let (head, mut feed) = Sse::open(addr, &format!("/ui/events?token={TOKEN}")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-store"));
    let first = feed.next().await.unwrap();
    assert_eq!(first["peers"], json!([]));
}

#[tokio::test]
async fn the_page_loads_nothing_from_elsewhere() {
    let server = TestServer::start(builder().enable_dashboard(true)).await;
    let (head, _) = Sse::open(server.addr, "/ui").await;
    assert_eq!(head.status, 200);
    let csp = head.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(head.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(head.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn a_user_route_on_ui_wins() {
    let server = TestServer::start(
        builder()
            .enable_dashboard(true)
            .route("/ui", |_req| async { http::Response::new("mine") }),
    )
    .await;
    assert_eq!(http_get(server.addr, "/ui").await.body, "mine");
}

#[tokio::test]
async fn the_feed_shows_peers_statuses_topics_and_drops_as_they_happen() {
    let server = TestServer::start(builder().enable_dashboard(true)).await;
    let (_, mut feed) = Sse::open(server.addr, "/ui/events").await;
    let first = feed.next().await.unwrap();
    assert_eq!(
        (first["peerCount"].clone(), first["topicCount"].clone()),
        (json!(0), json!(0))
    );
    assert!(first["startedAt"].as_u64().unwrap() <= first["now"].as_u64().unwrap());

    let mut alpha = Peer::connect(&server.url, "alpha", SECRET).await;
    let s = feed.until(|s| peer(s, "alpha").is_some()).await;
    let p = peer(&s, "alpha").unwrap();
    assert!(
        p["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{p}"
    );
    assert!(p["connectedAt"].as_u64().unwrap() <= s["now"].as_u64().unwrap());
    assert_eq!(p["status"], Value::Null);

    alpha
        .send("status.update", None, Some(json!({"phase": "ready"})))
        .await;
    let s = feed
        .until(|s| peer(s, "alpha").is_some_and(|p| p["status"] == r#"{"phase":"ready"}"#))
        .await;
    assert!(peer(&s, "alpha").unwrap()["statusAt"].is_u64());

    let mut beta = Peer::connect(&server.url, "beta", SECRET).await;
    beta.subscribe("prices").await;
    for i in 0..3 {
        alpha
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "prices", "payload": i})),
            )
            .await;
    }
    for _ in 0..3 {
        beta.recv("topic.message").await;
    }
    // Counters are not changes: they arrive with the next periodic snapshot.
    let s = feed
        .until(|s| topic(s, "prices").is_some_and(|t| t["published"] == 3))
        .await;
    assert_eq!(
        topic(&s, "prices").unwrap(),
        &json!({"topic": "prices", "subscribers": 1, "published": 3, "delivered": 3})
    );
    let frames_in = |s: &Value, t: &str| {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["type"] == t)
            .unwrap()["in"]
            .clone()
    };
    assert_eq!(frames_in(&s, "topic.message"), 3);
    assert_eq!(frames_in(&s, "hello"), 2);

    // A forged frame is listed with its reason and address, not its payload.
    let forged = link_test_support::frame(
        &key("not-the-secret"),
        &fresh_id("forged"),
        "topic.message",
        Some("alpha"),
        None,
        Some(&json!({"topic": "prices", "payload": "do-not-show-this"})),
    );
    alpha.send_raw(&forged).await;
    // And the table's own drops (an invalid topic) too.
    alpha
        .send("topic.subscribe", None, Some(json!({"topic": ""})))
        .await;
    alpha.barrier().await;
    let s = feed
        .until(|s| s["errors"].as_array().is_some_and(|e| e.len() == 2))
        .await;
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors[0]["reason"], "invalid-topic", "newest first");
    assert_eq!(errors[0]["kind"], "alpha");
    assert_eq!(errors[0]["type"], "topic.subscribe");
    assert_eq!(errors[1]["reason"], "bad-signature");
    assert!(
        errors[1]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!s.to_string().contains("do-not-show-this"));
    assert_eq!(s["dropped"]["bad-signature"], 1);
    assert_eq!(s["dropped"]["invalid-topic"], 1);

    // A server RPC lands in its latency histogram.
    alpha.rpc("server", "link.health", None).await;
    let s = feed
        .until(|s| s["rpc"]["server"].as_array().is_some_and(|a| !a.is_empty()))
        .await;
    let health = &s["rpc"]["server"][0];
    assert_eq!(health["rpcType"], "link.health");
    assert_eq!(health["count"], 1);
    assert!(health["p50"].as_f64().unwrap() > 0.0);

    drop(beta);
    feed.until(|s| peer(s, "beta").is_none()).await;
}

#[tokio::test]
async fn feeds_are_capped() {
    let server = TestServer::start(builder().enable_dashboard(true)).await;
    let mut open = Vec::new();
    for _ in 0..MAX_DASHBOARD_FEEDS {
        let (head, mut feed) = Sse::open(server.addr, "/ui/events").await;
        assert_eq!(head.status, 200);
        feed.next().await.unwrap();
        open.push(feed);
    }
    let (head, _) = Sse::open(server.addr, "/ui/events").await;
    assert_eq!(head.status, 503);
}

#[tokio::test]
async fn feeds_end_when_the_server_stops() {
    // Were a feed to outlive the stop, the HTTP connection would never
    // finish and the stop would fail with SHUTDOWN_TIMEOUT.
    let server = TestServer::start(
        builder()
            .enable_dashboard(true)
            .shutdown_timeout(WAIT / 2)
            .drain_delay(Duration::ZERO),
    )
    .await;
    let (_, mut feed) = Sse::open(server.addr, "/ui/events").await;
    feed.next().await.unwrap();
    server.stop().await.unwrap();
    assert!(guard(feed.next()).await.is_none(), "the stream ended");
}
