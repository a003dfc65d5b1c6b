//! TLS on the hub server: `wss://` and `https://` on one port, a client
//! that does not trust the certificate or does not speak TLS is refused
//! without harm to the hub, and a reload swaps the certificate for new
//! connections while connected peers stay connected.
//!
//! Every CA and certificate (for 127.0.0.1) is made by `rcgen` when the
//! test runs and written to a temporary directory of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use link_client::{ClientConfig, ClientConfigBuilder, LinkClient, LinkEvent, RootCertificates};
use link_hub::{HubConfig, Secret, TlsConfig};
use link_test_support::{TempDir, TestCa, TestServer, WAIT};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "tls-secret";

/// A started TLS server whose certificate and key are files in `dir`.
struct TlsServer {
    server: TestServer,
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsServer {
    async fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, |b| b).await
    }

    async fn start_with(
        ca: &TestCa,
        options: impl FnOnce(link_hub::HubServerBuilder) -> link_hub::HubServerBuilder,
    ) -> Self {
        let dir = TempDir::new("link-hub-tls");
        let issued = ca.issue();
        let cert = dir.write("hub.crt", &issued.cert_pem);
        let key = dir.write("hub.key", &issued.key_pem);
        let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
        let config = HubConfig::builder(Secret::shared(SECRET)).build().unwrap();
        let builder = TestServer::builder(config).path("/link").tls(tls);
        let server = TestServer::start(options(builder)).await;
        Self {
            server,
            dir,
            cert,
            key,
        }
    }

    /// Writes a new certificate from `ca` over the files.
    fn replace_files(&self, ca: &TestCa) {
        let issued = ca.issue();
        std::fs::write(&self.cert, issued.cert_pem).unwrap();
        std::fs::write(&self.key, issued.key_pem).unwrap();
    }
}

fn client(url: &str, kind: &str) -> ClientConfigBuilder {
    ClientConfig::builder()
        .url(url)
        .secret(SECRET)
        .kind(kind)
        .reconnect_initial(Duration::from_millis(50))
        .reconnect_max(Duration::from_millis(50))
}

fn trusting(url: &str, kind: &str, ca: &TestCa) -> ClientConfigBuilder {
    let roots = RootCertificates::from_pem(ca.pem().as_bytes()).unwrap();
    client(url, kind).root_certificates(roots)
}

async fn ready(config: ClientConfigBuilder) -> LinkClient {
    let c = LinkClient::new(config.build().unwrap());
    c.ready(Some(WAIT)).await.unwrap();
    c
}

/// The first failed connect of a client that never gets ready.
async fn first_connect_failure(config: ClientConfigBuilder) -> &'static str {
    let c = LinkClient::new(config.build().unwrap());
    let mut ev = c.events();
    c.start();
    let code = tokio::time::timeout(WAIT, async {
        loop {
            if let LinkEvent::ConnectFailed { error, .. } = &*ev.recv().await.unwrap() {
                return error.code();
            }
        }
    })
    .await
    .expect("a failed connect, not a hang");
    assert!(!c.is_ready());
    c.stop().await;
    code
}

/// `GET target` over https, trusting `ca` only: (status, body).
async fn https_get(server: &TestServer, ca: &TestCa, target: &str) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let name = ServerName::IpAddress(server.addr.ip().into());
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // The reply is complete at `Connection: close`; a missing
        // close_notify is not this test's concern.
        let _ = tls.read_to_end(&mut raw).await;
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a reply head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        (status, body.to_owned())
    })
    .await
    .expect("https request timed out")
}

fn echo(config: ClientConfigBuilder) -> ClientConfigBuilder {
    config.handler("echo", |call| async move {
        Ok(json!({"echoed": call.data, "from": call.from}))
    })
}

#[tokio::test]
async fn an_rpc_over_wss_through_the_hub_server() {
    let ca = TestCa::new("link test CA");
    let tls = TlsServer::start(&ca).await;
    let url = &tls.server.url;
    assert!(
        url.starts_with("wss://127.0.0.1:") && url.ends_with("/link"),
        "{url}"
    );
    assert!(tls.server.is_tls());
    let beta = ready(echo(trusting(url, "beta", &ca))).await;
    let alpha = ready(trusting(url, "alpha", &ca)).await;
    let answer = alpha.rpc("beta", "echo", Some(json!({"n": 1}))).await;
    assert_eq!(answer, Ok(json!({"echoed": {"n": 1}, "from": "alpha"})));
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn health_over_https() {
    let ca = TestCa::new("link test CA");
    let tls = TlsServer::start(&ca).await;
    let (status, body) = https_get(&tls.server, &ca, "/health").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ok"], json!(true), "{body}");
    let (status, _) = https_get(&tls.server, &ca, "/nowhere").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused_and_the_hub_stays_healthy() {
    let ca = TestCa::new("link test CA");
    let tls = TlsServer::start(&ca).await;
    let url = &tls.server.url;
    // System roots only (or none): the test CA is unknown.
    assert_eq!(
        first_connect_failure(client(url, "stranger")).await,
        "TLS_CERTIFICATE"
    );
    // Trusting another CA is no better.
    let other = TestCa::new("another CA");
    assert_eq!(
        first_connect_failure(trusting(url, "stranger", &other)).await,
        "TLS_CERTIFICATE"
    );
    let (status, _) = https_get(&tls.server, &ca, "/health").await;
    assert_eq!(status, 200);
    let alpha = ready(trusting(url, "alpha", &ca)).await;
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], json!(1), "{health}");
    alpha.stop().await;
}

#[tokio::test]
async fn a_plain_ws_client_on_the_tls_port_fails_cleanly() {
    let ca = TestCa::new("link test CA");
    let tls = TlsServer::start(&ca).await;
    let plain = tls.server.url.replacen("wss://", "ws://", 1);
    let code = first_connect_failure(client(&plain, "plain")).await;
    assert_ne!(code, "", "a typed connect failure");
    // Plain HTTP gets no answer but a closed connection, not a hang.
    let mut tcp = TcpStream::connect(tls.server.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("the hub drops a plain-HTTP connection");
    assert!(!raw.starts_with(b"HTTP/"), "no plain-HTTP answer");
    let alpha = ready(trusting(&tls.server.url, "alpha", &ca)).await;
    assert!(alpha.is_ready());
    alpha.stop().await;
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_connected_peers() {
    let first = TestCa::new("first CA");
    let second = TestCa::new("second CA");
    let tls = TlsServer::start(&first).await;
    let url = tls.server.url.clone();
    let beta = ready(echo(trusting(&url, "beta", &first))).await;
    let alpha = ready(trusting(&url, "alpha", &first)).await;

    tls.replace_files(&second);
    // Files alone change nothing until the reload.
    let (status, _) = https_get(&tls.server, &first, "/health").await;
    assert_eq!(status, 200);
    tls.server.reload_tls().unwrap();

    // New connections get the certificate of the second CA...
    assert_eq!(
        first_connect_failure(trusting(&url, "late", &first)).await,
        "TLS_CERTIFICATE"
    );
    let gamma = ready(trusting(&url, "gamma", &second)).await;
    let (status, _) = https_get(&tls.server, &second, "/health").await;
    assert_eq!(status, 200);
    // ...while the peers connected before keep working, with each other
    // and with the newcomer.
    let answer = alpha.rpc("beta", "echo", Some(json!("still here"))).await;
    assert_eq!(answer, Ok(json!({"echoed": "still here", "from": "alpha"})));
    let answer = gamma.rpc("beta", "echo", Some(json!(2))).await;
    assert_eq!(answer, Ok(json!({"echoed": 2, "from": "gamma"})));
    assert!(alpha.is_connected() && beta.is_connected());

    // A failed reload keeps the current certificate.
    std::fs::write(&tls.key, "not a key\n").unwrap();
    let err = tls.server.reload_tls().unwrap_err();
    assert_eq!(err.code(), "TLS_KEY_FILE");
    assert!(err.to_string().contains("hub.key"), "{err}");
    let (status, _) = https_get(&tls.server, &second, "/health").await;
    assert_eq!(status, 200);

    for c in [alpha, beta, gamma] {
        c.stop().await;
    }
    drop(tls.dir);
}

#[tokio::test]
async fn a_watched_certificate_is_reloaded_when_its_files_change() {
    let first = TestCa::new("first CA");
    let second = TestCa::new("second CA");
    let tls = TlsServer::start_with(&first, |b| b.tls_watch(Duration::from_millis(20))).await;
    let url = tls.server.url.clone();
    let alpha = ready(trusting(&url, "alpha", &first)).await;
    tls.replace_files(&second);
    // No reload call: a client trusting only the second CA retries until a
    // handshake shows the new certificate.
    let beta = ready(trusting(&url, "beta", &second)).await;
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], json!(2), "{health}");
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn reload_without_files_is_refused() {
    let ca = TestCa::new("link test CA");
    let issued = ca.issue();
    let config = HubConfig::builder(Secret::shared(SECRET)).build().unwrap();
    let tls = TlsConfig::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap();
    let server = TestServer::start(TestServer::builder(config.clone()).tls(tls)).await;
    assert_eq!(
        server.reload_tls().unwrap_err().code(),
        "TLS_NOT_RELOADABLE"
    );
    let (status, _) = https_get(&server, &ca, "/health").await;
    assert_eq!(status, 200);
    let plain = TestServer::start(TestServer::builder(config)).await;
    assert!(plain.url.starts_with("ws://") && !plain.is_tls());
    assert_eq!(plain.reload_tls().unwrap_err().code(), "TLS_NOT_RELOADABLE");
}

#[test]
fn bad_files_are_refused_by_name() {
    let ca = TestCa::new("link test CA");
    let dir = TempDir::new("link-hub-tls");
    let issued = ca.issue();
    let cert = dir.write("good.crt", &issued.cert_pem);
    let key = dir.write("good.key", &issued.key_pem);
    assert!(TlsConfig::from_pem_files(&cert, &key).is_ok());

    let missing = dir.path().join("missing.crt");
    let err = TlsConfig::from_pem_files(&missing, &key).unwrap_err();
    assert_eq!(err.code(), "TLS_CERT_FILE");
    assert!(err.to_string().contains("missing.crt"), "{err}");

    let not_pem = dir.write("text.crt", "hello\n");
    let err = TlsConfig::from_pem_files(&not_pem, &key).unwrap_err();
    assert_eq!(err.code(), "TLS_CERT_FILE");
    assert!(err.to_string().contains("text.crt"), "{err}");
    assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");

    // A certificate where the key should be.
    let err = TlsConfig::from_pem_files(&cert, &cert).unwrap_err();
    assert_eq!(err.code(), "TLS_KEY_FILE");
    assert!(err.to_string().contains("good.crt"), "{err}");

    let other_key = dir.write("other.key", ca.issue().key_pem);
    let err = TlsConfig::from_pem_files(&cert, &other_key).unwrap_err();
    assert_eq!(err.code(), "TLS_KEY_MISMATCH");
    let shown = err.to_string();
    assert!(
        shown.contains("other.key") && shown.contains("good.crt"),
        "{shown}"
    );
}
