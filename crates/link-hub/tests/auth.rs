//! Upgrade-time access rule and connection limits over real sockets on
//! 127.0.0.1:0: the authenticate hook, the bearer token (header and
//! `?token=`), the CIDR allow list, the per-IP and pending-upgrade caps,
//! and the protected HTTP routes. A refusal is read off the raw HTTP
//! answer: its status line, and no upgrade.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use link_client::{ClientConfig, ConnectError, LinkClient, LinkEvent};
use link_hub::server::{AuthDecision, AuthRequest, http};
use link_hub::{HubConfig, HubServerBuilder, Secret};
use link_test_support::{Peer, TestServer, guard, http_get, next_event, ready};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

const SECRET: &str = "auth-secret";
const TOKEN: &str = "t0ken/with+odd=chars";

fn builder() -> HubServerBuilder {
    TestServer::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
}

/// The answer to a raw request: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a WebSocket upgrade request for `target` with `extra` header
/// lines from `tcp`, and reads the answer's head and body (by
/// `Content-Length`; a `101` has none).
async fn upgrade_on(tcp: &mut TcpStream, target: &str, extra: &[&str]) -> Answer {
    let mut head = format!(
        "GET {target} HTTP/1.1\r\nHost: link\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    guard(async {
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let end = loop {
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the answer's head");
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let text = String::from_utf8(raw[..end].to_vec()).unwrap();
        let mut lines = text.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = raw[end..].to_vec();
        while body.len() < len {
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        Answer {
            status: status.parse().unwrap(),
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    })
    .await
}

async fn upgrade(addr: SocketAddr, target: &str, extra: &[&str]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    upgrade_on(&mut tcp, target, extra).await
}

/// A GET with extra header lines, `Connection: close`, read to the end.
async fn get(addr: SocketAddr, target: &str, extra: &[&str]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: link\r\nConnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    guard(async {
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    })
    .await
}

fn client(url: &str, kind: &str) -> link_client::ClientConfigBuilder {
    ClientConfig::builder().url(url).secret(SECRET).kind(kind)
}

/// An `echo` responder and a caller on `url`; the caller's RPC goes through.
async fn rpc_works(url: &str) {
    let beta = ready(client(url, "beta").handler("echo", |call| async move {
        Ok(json!({"echoed": call.data}))
    }))
    .await;
    let alpha = ready(client(url, "alpha")).await;
    let r = alpha.rpc("beta", "echo", Some(json!(7))).await.unwrap();
    assert_eq!(r, json!({"echoed": 7}));
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn the_hook_sees_the_request_and_its_refusals_are_exact() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<AuthRequest>();
    let server = TestServer::start(builder().path("/link").authenticate(move |req| {
        let seen_tx = seen_tx.clone();
        async move {
            let role = req
                .headers()
                .get("x-role")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.query_param("role"));
            let _ = seen_tx.send(req);
            match role.as_deref() {
                Some("admin") => AuthDecision::Allow,
                Some("guest") => AuthDecision::forbidden("guests may not connect"),
                _ => AuthDecision::unauthorized("who are you?"),
            }
        }
    }))
    .await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let a = upgrade_on(&mut tcp, "/link?room=7&x=%41", &["X-Team: blue"]).await;
    assert_eq!((a.status, a.body.as_str()), (401, "who are you?"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.header("upgrade"), None);
    let req = seen.recv().await.unwrap();
    assert_eq!(req.path(), "/link");
    assert_eq!(req.query(), Some("room=7&x=%41"));
    assert_eq!(req.query_param("x").as_deref(), Some("A"));
    assert_eq!(req.headers()["x-team"], "blue");
    assert_eq!(req.remote_addr(), me);
    assert!(req.is_websocket());
    // The refused connection is still plain HTTP: a second request on it
    // gets an answer too.
    let a = upgrade_on(&mut tcp, "/link", &["X-Role: guest"]).await;
    assert_eq!((a.status, a.body.as_str()), (403, "guests may not connect"));
    assert_eq!(server.open_connections(), 0);

    // The hook runs after the path filter: a wrong path never reaches it.
    let a = upgrade(server.addr, "/elsewhere", &[]).await;
    assert_eq!(a.status, 400);
    let a = upgrade(server.addr, "/link", &["X-Role: admin"]).await;
    assert_eq!(a.status, 101);
    assert_eq!(a.header("upgrade"), Some("websocket"));

    let url = format!("{}?role=admin", server.url);
    rpc_works(&url).await;
    // Every other request reached the hook too (the first was read above):
    // the guest, the raw upgrade and the two clients.
    seen.close();
    let mut n = 0;
    while seen.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 1 + 1 + 2);
}

#[tokio::test]
async fn a_panicking_hook_refuses_with_500_and_a_non_4xx_refusal_is_403() {
    let server = TestServer::start(builder().authenticate(|req| async move {
        assert!(
            req.query() != Some("boom"),
            "hook bug (expected in this test)"
        );
        match req.query() {
            Some("redirect") => AuthDecision::Refuse {
                status: http::StatusCode::FOUND,
                reason: "elsewhere".into(),
            },
            Some("empty") => AuthDecision::forbidden(""),
            _ => AuthDecision::Allow,
        }
    }))
    .await;
    let a = upgrade(server.addr, "/?boom", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (500, "internal error"));
    let a = upgrade(server.addr, "/?redirect", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (403, "elsewhere"));
    let a = upgrade(server.addr, "/?empty", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (403, "Forbidden"));
    assert_eq!(server.open_connections(), 0);
    // The server is fine afterwards.
    assert_eq!(upgrade(server.addr, "/", &[]).await.status, 101);
}

#[tokio::test]
async fn bearer_token_by_header_or_query() {
    let server = TestServer::start(builder().bearer_token(TOKEN).enable_state_route(true)).await;
    let addr = server.addr;
    for extra in [
        &[][..],
        &["Authorization: Bearer wrong"],
        &["Authorization: Basic dTpw"],
    ] {
        let a = upgrade(addr, "/", extra).await;
        assert_eq!(a.status, 401, "{extra:?}");
        assert_eq!(a.body, "unauthorized: missing or wrong bearer token");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(upgrade(addr, "/?token=wrong", &[]).await.status, 401);
    // A prefix of the token is not the token.
    assert_eq!(upgrade(addr, "/?token=t0ken", &[]).await.status, 401);
    let auth = format!("Authorization: bearer {TOKEN}");
    assert_eq!(upgrade(addr, "/", &[&auth]).await.status, 101);
    // In a URL the token is percent-encoded.
    let query = "?token=t0ken%2Fwith%2Bodd%3Dchars";
    assert_eq!(upgrade(addr, &format!("/{query}"), &[]).await.status, 101);
    let url = format!("{}/{query}", server.url);
    rpc_works(&url).await;

    // /state is behind the same rule; /health stays open.
    assert_eq!(get(addr, "/state", &[]).await.0, 401);
    assert_eq!(get(addr, "/state", &[&auth]).await.0, 200);
    assert_eq!(get(addr, "/nope", &[]).await.0, 401);
    assert_eq!(http_get(addr, "/health").await.status, 200);
}

#[tokio::test]
async fn protect_health_puts_health_behind_the_rule() {
    let server = TestServer::start(builder().bearer_token(TOKEN).protect_health(true)).await;
    assert_eq!(http_get(server.addr, "/health").await.status, 401);
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(get(server.addr, "/health", &[&auth]).await.0, 200);
}

#[tokio::test]
async fn a_refused_link_client_reports_the_status_and_body() {
    let server = TestServer::start(builder().bearer_token(TOKEN)).await;
    let c = LinkClient::new(client(&server.url, "alpha").build().unwrap());
    let mut ev = c.events();
    c.start();
    let e = next_event(&mut ev, |e| matches!(e, LinkEvent::ConnectFailed { .. })).await;
    let LinkEvent::ConnectFailed { error, .. } = &*e else {
        unreachable!()
    };
    assert!(matches!(error, ConnectError::Handshake { .. }), "{error:?}");
    assert_eq!(error.code(), "WS_HANDSHAKE");
    let text = error.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("unauthorized: missing or wrong bearer token"),
        "{text}"
    );
    c.stop().await;
}

#[tokio::test]
async fn cidr_allow_list() {
    let open = TestServer::start(builder().allow_cidr("127.0.0.0/8".parse().unwrap())).await;
    rpc_works(&open.url).await;

    let closed = TestServer::start(
        builder()
            .allow_cidr("10.0.0.0/8".parse().unwrap())
            .allow_cidr("::1/128".parse().unwrap())
            .enable_state_route(true),
    )
    .await;
    let a = upgrade(closed.addr, "/", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, "forbidden: address not allowed")
    );
    assert_eq!(get(closed.addr, "/state", &[]).await.0, 403);
    assert_eq!(http_get(closed.addr, "/health").await.status, 200);
}

#[tokio::test]
async fn per_ip_cap_refuses_the_next_and_frees_a_slot_on_close() {
    let server = TestServer::start(builder().max_connections_per_ip(2)).await;
    let first = Peer::connect(&server.url, "one", SECRET).await;
    let _second = Peer::connect(&server.url, "two", SECRET).await;
    assert_eq!(server.open_connections(), 2);
    let a = upgrade(server.addr, "/", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (429, "too many connections from this address")
    );
    // Plain HTTP is not counted.
    assert_eq!(http_get(server.addr, "/health").await.status, 200);

    drop(first);
    guard(server.wait_open_connections(1)).await;
    let _third = Peer::connect(&server.url, "three", SECRET).await;
    assert_eq!(server.open_connections(), 2);
}

#[tokio::test]
async fn pending_upgrade_cap_and_a_slow_hook_blocks_no_one_else() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Semaphore::new(0));
    let hook_gate = gate.clone();
    let server = TestServer::start(builder().max_pending_upgrades(1).authenticate(move |_req| {
        let (entered_tx, gate) = (entered_tx.clone(), hook_gate.clone());
        async move {
            let _ = entered_tx.send(());
            let permit = gate.acquire().await.unwrap();
            permit.forget();
            AuthDecision::Allow
        }
    }))
    .await;
    let url = server.url.clone();
    let slow = tokio::spawn(async move { Peer::connect(&url, "slow", SECRET).await });
    guard(entered.recv()).await.unwrap();

    // One upgrade is waiting in the hook: the next one is over the cap,
    // and the hook never ran for it.
    let a = upgrade(server.addr, "/", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (503, "too many upgrades in progress")
    );
    assert!(entered.try_recv().is_err());
    // Plain routes are answered meanwhile.
    assert_eq!(http_get(server.addr, "/health").await.status, 200);

    gate.add_permits(1);
    let _slow = guard(slow).await.unwrap();
    // Attached: the pending place is back, the connection still counts.
    assert_eq!(server.open_connections(), 1);
    gate.add_permits(1);
    let _next = Peer::connect(&server.url, "next", SECRET).await;
    assert_eq!(server.open_connections(), 2);
}

#[tokio::test]
async fn limits_must_be_positive() {
    for b in [
        builder().max_connections_per_ip(0),
        builder().max_pending_upgrades(0),
        builder().bearer_token(""),
    ] {
        let err = b.build().unwrap_err();
        assert_eq!(err.code(), "INVALID_OPTION", "{err}");
    }
}
