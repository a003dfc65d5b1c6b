//! The port helpers and the test hub's lifecycle: a held port refuses
//! connections and nobody else gets it; a killed hub's address is kept
//! until the next hub listens on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;

use link_test_support::{ClosedPort, TestHub, TestServer};
use tokio::net::TcpStream;

const SECRET: &str = "ports-secret";

async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[tokio::test]
async fn a_closed_port_refuses_connections_until_it_listens() {
    let port = ClosedPort::new();
    let addr = port.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(port.url(), format!("ws://{addr}"));
    assert!(refused(addr).await);
    // The port is taken while held.
    assert!(std::net::TcpListener::bind(addr).is_err());
    let listener = port.listen();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    connected.unwrap();
    accepted.unwrap();
}

#[tokio::test]
async fn a_killed_hub_keeps_its_address_for_the_next_one() {
    let hub = TestHub::shared(SECRET).await;
    let (addr, url) = (hub.addr, hub.url.clone());
    let mut alpha = hub.peer("alpha", SECRET).await;
    let port = hub.kill().await;
    assert_eq!(port.addr(), addr);
    // Every socket was dropped without a close frame, and nothing listens.
    assert_eq!(alpha.closed().await.0, 1006);
    assert!(refused(addr).await);
    assert!(std::net::TcpListener::bind(addr).is_err());

    let config = link_hub::HubConfig::builder(link_hub::Secret::shared(SECRET))
        .build()
        .unwrap();
    let hub = TestHub::builder(config)
        .client_secret(SECRET)
        .on(port)
        .start()
        .await;
    assert_eq!(hub.url, url);
    let mut beta = hub.peer("beta", SECRET).await;
    let health = beta.rpc("server", "link.health", None).await;
    assert_eq!(health.data().unwrap()["result"]["peerCount"], 1);
}

#[tokio::test]
async fn a_stopped_hub_no_longer_listens() {
    let hub = TestHub::shared(SECRET).await;
    let addr = hub.addr;
    let mut alpha = hub.peer("alpha", SECRET).await;
    hub.stop().await;
    assert_eq!(
        alpha.closed().await.0,
        1005,
        "authenticated: a close without a code"
    );
    assert!(refused(addr).await);
}

#[tokio::test]
async fn a_test_server_reports_its_real_address() {
    let server = TestServer::shared(SECRET).await;
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    assert_eq!(server.url, format!("ws://{}", server.addr));
    let mut alpha = link_test_support::Peer::connect(&server.url, "alpha", SECRET).await;
    server.stop().await.unwrap();
    assert_eq!(alpha.closed().await, (1001, "server shutdown".to_owned()));
    assert!(refused(server.addr).await);
}
