//! HubServer over real sockets on 127.0.0.1:0: the HTTP routes (protocol §14),
//! the WebSocket path filter and size cap, mounting in axum, and the
//! graceful stop sequence (close 1001 `server shutdown`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use link_hub::server::http;
use link_hub::{Hub, HubConfig, HubServerBuilder, Secret};
use link_test_support::{
    Peer, TestServer, WAIT, connect, http_get, http_request, local_listener, next_event,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "server-secret";

fn builder() -> HubServerBuilder {
    TestServer::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
}

#[tokio::test]
async fn health_has_the_reference_shape() {
    let server = TestServer::start(builder()).await;
    let addr = server.addr;
    let r = http_get(addr, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert!(r.body.starts_with(r#"{"ok":true,"now":"#), "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert!(v["now"].as_u64().unwrap() > 1_600_000_000_000);
    let mut keys: Vec<&str> = v["hub"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = [
        "outboxBytes",
        "queuedSockets",
        "totalSubscribers",
        "serverRpcInFlight",
        "peerCount",
        "statusCount",
        "topicCount",
        "pendingSocketCount",
        "recentIdsSize",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(v.as_object().unwrap().len(), 3);

    // Method, query string and trailing slashes are ignored.
    let r = http_request(addr, "POST", "/health/?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_counts_peers_and_can_be_disabled() {
    let server = TestServer::start(builder()).await;
    let addr = server.addr;
    let _peer = Peer::connect(&server.url().unwrap(), "alpha", SECRET).await;
    assert_eq!(
        http_get(addr, "/health").await.json()["hub"]["peerCount"],
        1
    );
    server.stop().await.unwrap();

    let server = TestServer::start(builder().enable_health_route(false)).await;
    let addr = server.addr;
    let r = http_get(addr, "/health").await;
    assert_eq!((r.status, r.body.as_str()), (404, "not found"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_path_is_a_text_404() {
    let server = TestServer::start(builder()).await;
    let addr = server.addr;
    for target in ["/", "/nope", "/health/x", "/state"] {
        let r = http_get(addr, target).await;
        assert_eq!(r.status, 404, "{target}");
        assert!(r.content_type.starts_with("text/plain"), "{target}");
        assert_eq!(r.body, "not found", "{target}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn state_is_pretty_json_with_extra_keys() {
    let server = TestServer::start(builder().enable_state_route(true).extra_state(|| async {
        json!({"version": "1.2.3", "peers": "ignored", "lastStatus": "ignored"})
    }))
    .await;
    let addr = server.addr;
    let _peer = Peer::connect(&server.url().unwrap(), "alpha", SECRET).await;
    let r = http_get(addr, "/state/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert!(r.body.starts_with("{\n  \""), "{}", r.body);
    let v = r.json();
    assert_eq!(v["version"], "1.2.3");
    assert_eq!(v["lastStatus"], json!({}));
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["kind"], "alpha");
    assert_eq!(v.as_object().unwrap().len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn state_ignores_a_non_object_extra() {
    let server = TestServer::start(
        builder()
            .enable_state_route(true)
            .extra_state(|| async { json!([1, 2]) }),
    )
    .await;
    let addr = server.addr;
    let v = http_get(addr, "/state").await.json();
    assert_eq!(v, json!({"peers": [], "lastStatus": {}}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn user_routes_come_first_and_failures_are_500() {
    let server = TestServer::start(
        builder()
            .route("/health", |_req| async {
                http::Response::builder()
                    .status(202)
                    .body(String::from("mine"))
            })
            .route("/hello/", |req: http::Request<_>| async move {
                http::Response::new(format!("{} {}", req.method(), req.uri().path()))
            })
            .route("/panic", |_req| async {
                if true {
                    panic!("route boom");
                }
                http::Response::new("unreachable")
            })
            .route("/error", |_req| async {
                Err::<http::Response<&str>, _>("no database")
            }),
    )
    .await;
    let addr = server.addr;
    let r = http_get(addr, "/health").await;
    assert_eq!((r.status, r.body.as_str()), (202, "mine"));
    let r = http_request(addr, "DELETE", "/hello?x=1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "DELETE /hello"));
    for target in ["/panic", "/error"] {
        let r = http_get(addr, target).await;
        assert_eq!(r.status, 500, "{target}");
        assert!(r.content_type.starts_with("text/plain"), "{target}");
        assert_eq!(r.body, "internal error", "{target}");
    }
    // The server survives a panicking route.
    assert_eq!(http_get(addr, "/hello").await.status, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_path_filter() {
    let server = TestServer::start(builder().path("/link/")).await;
    let addr = server.addr;
    assert_eq!(server.url().unwrap(), format!("ws://{addr}/link"));
    match tokio_tungstenite::connect_async(format!("ws://{addr}/other")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 400);
        }
        other => panic!("upgrade on the wrong path was not refused: {other:?}"),
    }
    // Query string and trailing slash are ignored; the hello completes.
    let mut events = server.hub().events();
    let mut peer = Peer::connect(&format!("ws://{addr}/link/?v=1"), "alpha", SECRET).await;
    link_test_support::next_event(&mut events, |e| e.name() == "peer.connect").await;
    let health = peer.rpc("server", "link.health", None).await;
    assert_eq!(health.data().unwrap()["result"]["peerCount"], 1);
    // Plain HTTP on the WebSocket path is an ordinary (unknown) route.
    assert_eq!(http_get(addr, "/link").await.status, 404);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_path_every_upgrade_goes_to_the_hub() {
    let server = TestServer::start(builder()).await;
    let addr = server.addr;
    let _a = Peer::connect(&format!("ws://{addr}/"), "alpha", SECRET).await;
    let _b = Peer::connect(&format!("ws://{addr}/any/where"), "beta", SECRET).await;
    assert_eq!(
        http_get(addr, "/health").await.json()["hub"]["peerCount"],
        2
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_over_max_message_bytes_close_with_1009() {
    let config = HubConfig::builder(Secret::shared(SECRET))
        .max_message_bytes(1024)
        .build()
        .unwrap();
    let server = TestServer::start(TestServer::builder(config)).await;
    let mut ws = connect(&server.url).await;
    ws.send(Message::text("x".repeat(4096))).await.unwrap();
    let code = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("no close frame");
    assert_eq!(code, Some(1009));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_stop_closes_peers_with_1001_and_is_single_shot() {
    let hook_runs = Arc::new(AtomicUsize::new(0));
    let runs = hook_runs.clone();
    let server = TestServer::start(builder().on_shutdown(move || async move {
        runs.fetch_add(1, Ordering::SeqCst);
    }))
    .await;
    let addr = server.addr;
    assert!(server.is_started() && !server.is_stopping() && !server.is_stopped());
    // start is idempotent while running.
    server.start().await.unwrap();
    assert_eq!(server.local_addr(), Some(addr));

    let mut peer = Peer::connect(&server.url().unwrap(), "alpha", SECRET).await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.stop().await }
    });
    assert_eq!(peer.closed().await, (1001, "server shutdown".to_owned()));
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stop hung")
        .unwrap()
        .unwrap();

    assert!(server.is_stopped() && !server.is_started() && !server.is_stopping());
    server.stop().await.unwrap();
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);
    let err = server.start().await.unwrap_err();
    assert_eq!(err.code(), "SERVER_STOPPED");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after stop"
    );
}

#[tokio::test]
async fn stop_with_a_reason_closes_peers_with_it() {
    let server = TestServer::start(builder()).await;
    let mut events = server.hub().events();
    let mut peer = Peer::connect(&server.url().unwrap(), "alpha", SECRET).await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.stop_with("deploying v2").await }
    });
    assert_eq!(peer.closed().await, (1001, "deploying v2".to_owned()));
    let e = next_event(&mut events, |e| {
        matches!(e, link_hub::HubEvent::PeerDisconnect { .. })
    })
    .await;
    assert!(
        matches!(&*e, link_hub::HubEvent::PeerDisconnect { code: Some(1001), reason, .. }
            if reason == "deploying v2"),
        "{e:?}"
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stop hung")
        .unwrap()
        .unwrap();
    // Later stops wait for the same outcome, whatever their reason.
    server.stop_with("again").await.unwrap();
}

#[tokio::test]
async fn concurrent_stops_share_one_sequence() {
    let hook_runs = Arc::new(AtomicUsize::new(0));
    let runs = hook_runs.clone();
    let server = TestServer::start(builder().on_shutdown(move || async move {
        runs.fetch_add(1, Ordering::SeqCst);
    }))
    .await;
    let (a, b, c) = tokio::join!(server.stop(), server.stop(), server.stopped());
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stop_before_start_makes_the_server_unstartable() {
    let server = builder().build().unwrap();
    server.stop().await.unwrap();
    assert!(server.is_stopped());
    assert_eq!(server.start().await.unwrap_err().code(), "SERVER_STOPPED");
    assert_eq!(server.local_addr(), None);
}

#[tokio::test]
async fn serve_until_stops_when_the_future_completes() {
    let server = builder().build().unwrap();
    // start is idempotent: serve_until below reuses this listener.
    server.start().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_until(async {
                    let _ = rx.await;
                })
                .await
        }
    });
    let url = server.url().unwrap();
    let mut peer = Peer::connect(&url, "alpha", SECRET).await;
    tx.send(()).unwrap();
    assert_eq!(peer.closed().await.0, 1001);
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve_until hung")
        .unwrap()
        .unwrap();
    assert!(server.is_stopped());
}

#[tokio::test(start_paused = true)]
async fn a_hung_shutdown_hook_hits_the_shutdown_timeout() {
    let server = builder()
        .shutdown_timeout(Duration::from_millis(50))
        .on_shutdown(std::future::pending::<()>)
        .build()
        .unwrap();
    let err = server.stop().await.unwrap_err();
    assert_eq!(err.code(), "SHUTDOWN_TIMEOUT");
    assert!(server.is_stopped());
    // Later callers see the same outcome.
    assert_eq!(server.stop().await.unwrap_err().code(), "SHUTDOWN_TIMEOUT");
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let server = TestServer::start(builder()).await;
    let addr = server.addr;
    let taken = builder().bind(addr).build().unwrap();
    let err = taken.start().await.unwrap_err();
    assert_eq!(err.code(), "BIND_FAILED");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn upgrade_mounts_the_hub_in_an_axum_app() {
    use axum::extract::{ConnectInfo, Request, State};
    use axum::response::Response;

    async fn link(
        State(hub): State<Hub>,
        ConnectInfo(remote): ConnectInfo<SocketAddr>,
        req: Request,
    ) -> Response {
        link_hub::server::upgrade(&hub, req, Some(remote))
    }

    let hub = Hub::new(HubConfig::builder(Secret::shared(SECRET)).build().unwrap());
    let app = axum::Router::new()
        .route("/link", axum::routing::any(link))
        .route("/other", axum::routing::get(|| async { "other" }))
        .with_state(hub.clone());
    let (listener, addr) = local_listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut events = hub.events();
    let _peer = Peer::connect(&format!("ws://{addr}/link"), "alpha", SECRET).await;
    let connected =
        link_test_support::next_event(&mut events, |e| e.name() == "peer.connect").await;
    assert!(matches!(&*connected, link_hub::HubEvent::PeerConnect { kind, .. } if kind == "alpha"));
    assert_eq!(http_get(addr, "/other").await.body, "other");
    // A plain GET on the hub's route is refused, not upgraded.
    assert_eq!(http_get(addr, "/link").await.status, 400);
    hub.stop().await;
}
