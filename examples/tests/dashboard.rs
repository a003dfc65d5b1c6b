//! The dashboard serves its page and streams snapshots as Server-Sent Events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use link::hub::HubServer;
use link::{ClientConfig, LinkClient};
use link_examples::dashboard;
use link_test_support::TestServer;
use link_test_support::ports::LOOPBACK_ANY_PORT;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(10);

fn client(server: &HubServer, kind: &str) -> LinkClient {
    LinkClient::new(
        ClientConfig::builder()
            .url(server.url().unwrap())
            .secret("s3cret")
            .kind(kind)
            .build()
            .unwrap(),
    )
}

/// One HTTP/1.1 GET over a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// Reads Server-Sent Events from a body: each `data:` payload as JSON.
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return serde_json::from_str(&data.join("\n")).unwrap();
            }
            let frame = self.body.frame().await.expect("stream ended").unwrap();
            if let Ok(chunk) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        }
    }

    /// The first snapshot for which `pred` holds.
    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let s = self.next().await;
            if pred(&s) {
                return s;
            }
        }
    }
}

fn peer_kinds(snapshot: &Value) -> Vec<&str> {
    snapshot["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_is_served_and_the_stream_follows_the_link() {
    let server = TestServer::shared("s3cret").await;
    let watched = client(&server, "dashboard");
    // Recording starts before the link does, so hub-up is in the log.
    let (addr, handle) = dashboard::serve(LOOPBACK_ANY_PORT, &watched).await.unwrap();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    watched.start();

    // The page.
    let res = get(addr, "/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = res.into_body().collect().await.unwrap().to_bytes();
    let html = std::str::from_utf8(&html).unwrap();
    assert!(html.contains(r#"id="link-dashboard""#));
    assert!(html.contains(r#"new EventSource("/events")"#));

    // The stream: the first event is a snapshot with the documented shape.
    let res = get(addr, "/events").await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut events = Events {
        body: res.into_body(),
        buf: String::new(),
    };
    let first = tokio::time::timeout(LIMIT, events.next()).await.unwrap();
    for key in [
        "connected",
        "ready",
        "self",
        "peers",
        "statuses",
        "startedAt",
        "health",
        "eventLog",
        "at",
        "reason",
    ] {
        assert!(first.get(key).is_some(), "snapshot without {key}: {first}");
    }
    assert_eq!(first["self"], "dashboard");
    assert!(first["connected"].is_boolean());
    assert!(first["eventLog"].is_array());

    // Pushed as the link comes up (unless it was up and logged already:
    // the link's state can read ready before the recorder has logged the
    // event, so wait for the snapshot that has both).
    let up = |s: &Value| {
        s["ready"] == true
            && s["eventLog"]
                .as_array()
                .is_some_and(|log| log.iter().any(|e| e["type"] == "hub-up"))
    };
    let ready = if up(&first) {
        first
    } else {
        tokio::time::timeout(LIMIT, events.until(up)).await.unwrap()
    };
    assert_eq!(ready["connected"], true);

    // ...and as a peer joins after the stream opened.
    let billing = client(&server, "billing");
    billing.start();
    let joined = tokio::time::timeout(LIMIT, events.until(|s| peer_kinds(s).contains(&"billing")))
        .await
        .unwrap();
    let log = joined["eventLog"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|e| e["type"] == "join" && e["peer"] == "billing"),
        "{joined}"
    );

    // On demand, too.
    let res = get(addr, "/snapshot").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let snapshot: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(snapshot["reason"], "request");

    // Shutdown ends the open stream and the server.
    tokio::time::timeout(LIMIT, handle.shutdown())
        .await
        .expect("shutdown hung with a stream open")
        .unwrap();
    billing.stop().await;
    watched.stop().await;
    server.stop().await.unwrap();
}
