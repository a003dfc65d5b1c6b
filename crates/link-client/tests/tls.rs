//! `wss://`: the client dials a hub behind TLS (rustls), trusting a private
//! CA given with `ca_file` or `root_certificates`, and refuses a hub whose
//! certificate it cannot verify with a typed error instead of hanging.
//!
//! The CA and the hub's certificate (for 127.0.0.1) are made by `rcgen`
//! when the test runs. The test hub is a `link_hub::Hub` fed by a TLS
//! acceptor (tokio-rustls) and a WebSocket accept on 127.0.0.1:0; the same
//! hub also listens for plain `ws://`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use link_client::{
    ClientConfig, ClientConfigBuilder, ConnectError, LinkClient, LinkEvent, RootCertificates,
};
use link_hub::{Hub, HubConfig, Secret};
use link_test_support::{ClosedPort, TempDir, TestCa};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "tls-secret";

/// A CA and a hub certificate for 127.0.0.1 that it signed; the CA is
/// also written to a file of its own.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let ca = TestCa::new("link test CA");
        let hub = ca.issue();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![hub.cert_der], hub.key_der)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            server: Arc::new(server),
            dir: TempDir::new("link-client-tls"),
        }
    }

    /// The CA's certificate as a PEM file.
    fn ca_file(&self) -> PathBuf {
        self.dir.write("ca.pem", &self.ca_pem)
    }
}

/// One hub, reachable as `wss://` (TLS with the Pki's certificate) and as
/// plain `ws://`.
struct TlsHub {
    wss: String,
    ws: String,
    _hub: Hub,
}

impl TlsHub {
    async fn start(pki: &Pki) -> Self {
        let hub = Hub::new(HubConfig::builder(Secret::shared(SECRET)).build().unwrap());
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wss = format!("wss://{}", tls.local_addr().unwrap());
        let ws = format!("ws://{}", plain.local_addr().unwrap());
        let acceptor = TlsAcceptor::from(pki.server.clone());
        let h = hub.clone();
        tokio::spawn(async move {
            while let Ok((tcp, remote)) = tls.accept().await {
                let (acceptor, h) = (acceptor.clone(), h.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                        h.attach(ws, Some(remote));
                    }
                });
            }
        });
        let h = hub.clone();
        tokio::spawn(async move {
            while let Ok((tcp, remote)) = plain.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        h.attach(ws, Some(remote));
                    }
                });
            }
        });
        Self { wss, ws, _hub: hub }
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

async fn ready(config: ClientConfigBuilder) -> LinkClient {
    let c = LinkClient::new(config.build().unwrap());
    c.ready(Some(WAIT)).await.unwrap();
    c
}

fn echo(config: ClientConfigBuilder) -> ClientConfigBuilder {
    config.handler("echo", |call| async move {
        Ok(json!({"echoed": call.data, "from": call.from}))
    })
}

#[tokio::test]
async fn wss_with_the_private_ca_file_does_an_rpc() {
    let pki = Pki::new();
    let hub = TlsHub::start(&pki).await;
    let ca = pki.ca_file();
    let beta = ready(echo(client(&hub.wss, "beta")).ca_file(&ca).unwrap()).await;
    let alpha = ready(client(&hub.wss, "alpha").ca_file(&ca).unwrap()).await;
    assert!(alpha.is_connected() && beta.is_ready());
    let answer = alpha.rpc("beta", "echo", Some(json!({"n": 1}))).await;
    assert_eq!(answer, Ok(json!({"echoed": {"n": 1}, "from": "alpha"})));
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn root_certificates_from_pem_work_like_a_ca_file() {
    let pki = Pki::new();
    let hub = TlsHub::start(&pki).await;
    let roots = RootCertificates::from_pem(pki.ca_pem.as_bytes()).unwrap();
    assert_eq!(roots.len(), 1);
    let alpha = ready(client(&hub.wss, "alpha").root_certificates(roots)).await;
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert!(health.is_object(), "{health}");
    alpha.stop().await;
}

#[tokio::test]
async fn wss_without_the_ca_is_refused_with_a_certificate_error() {
    let pki = Pki::new();
    let hub = TlsHub::start(&pki).await;
    // System roots only (none at all on some machines): the test CA is
    // unknown either way.
    let alpha = LinkClient::new(client(&hub.wss, "alpha").build().unwrap());
    let mut ev = alpha.events();
    alpha.start();
    let failed = tokio::time::timeout(WAIT, async {
        loop {
            let e = ev.recv().await.unwrap();
            if let LinkEvent::ConnectFailed { error, attempt } = &*e {
                return (error.clone(), *attempt);
            }
        }
    })
    .await
    .expect("a failed connect, not a hang");
    let (error, attempt) = failed;
    assert_eq!(attempt, 0);
    assert_eq!(error.code(), "TLS_CERTIFICATE", "{error}");
    assert!(
        matches!(&error, ConnectError::Certificate { url, reason }
            if *url == hub.wss && reason.contains("UnknownIssuer")),
        "{error:?}"
    );
    // Retried like any failed connect, and never ready.
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let LinkEvent::ConnectFailed { error, attempt } = &*ev.recv().await.unwrap() {
                return (error.code(), *attempt);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(again, ("TLS_CERTIFICATE", 1));
    assert!(!alpha.is_ready() && !alpha.is_connected());
    alpha.stop().await;
}

#[tokio::test]
async fn plain_ws_still_works_beside_wss() {
    let pki = Pki::new();
    let hub = TlsHub::start(&pki).await;
    let ca = pki.ca_file();
    let beta = ready(echo(client(&hub.wss, "beta")).ca_file(&ca).unwrap()).await;
    // A CA given to a ws:// client is simply unused.
    let alpha = ready(client(&hub.ws, "alpha").ca_file(&ca).unwrap()).await;
    let answer = alpha.rpc("beta", "echo", Some(json!("plain"))).await;
    assert_eq!(answer, Ok(json!({"echoed": "plain", "from": "alpha"})));
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn a_failover_list_may_mix_ws_and_wss() {
    let pki = Pki::new();
    let hub = TlsHub::start(&pki).await;
    let ca = pki.ca_file();
    let dead = ClosedPort::new();
    // A dead ws:// URL, then the hub over TLS.
    let alpha = ready(
        client(&hub.wss, "alpha")
            .urls([dead.url(), hub.wss.clone()])
            .ca_file(&ca)
            .unwrap(),
    )
    .await;
    assert_eq!(alpha.connected_url().as_deref(), Some(hub.wss.as_str()));
    // A dead wss:// URL, then the same hub in plain text.
    let dead_wss = dead.url().replacen("ws://", "wss://", 1);
    let beta = ready(echo(
        client(&hub.ws, "beta")
            .urls([dead_wss, hub.ws.clone()])
            .ca_file(&ca)
            .unwrap(),
    ))
    .await;
    assert_eq!(beta.connected_url().as_deref(), Some(hub.ws.as_str()));
    let answer = alpha.rpc("beta", "echo", Some(json!("mixed"))).await;
    assert_eq!(answer, Ok(json!({"echoed": "mixed", "from": "alpha"})));
    alpha.stop().await;
    beta.stop().await;
}

#[test]
fn a_bad_ca_file_is_refused_by_name() {
    let dir = TempDir::new("link-client-tls");
    let not_pem = dir.write("text.pem", "not a certificate\n");
    let err = ClientConfig::builder().ca_file(&not_pem).err().unwrap();
    assert_eq!(err.code(), "TLS_CA_FILE");
    let shown = err.to_string();
    assert!(shown.contains(&*not_pem.to_string_lossy()), "{shown}");
    assert!(shown.contains("no CERTIFICATE block"), "{shown}");
    let missing = std::env::temp_dir().join("link-tls-no-such-file.pem");
    let err = ClientConfig::builder().ca_file(&missing).err().unwrap();
    assert!(
        err.to_string().contains("link-tls-no-such-file.pem"),
        "{err}"
    );
}
