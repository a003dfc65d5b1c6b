//! `link-cli hub --tls-cert FILE --tls-key FILE`: the built binary serves
//! `wss://`, a client trusting the CA does an RPC, SIGHUP reloads the
//! certificate for new connections while the connected client keeps
//! working, and a bad key file is refused by name before anything binds.
//! Certificates are made by `rcgen` when the test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use link_client::{ClientConfig, LinkClient, RootCertificates};
use link_test_support::{LinkCli, TempDir, TestCa, WAIT};

fn cli() -> LinkCli {
    LinkCli::new(env!("CARGO_BIN_EXE_link-cli"))
}

fn client(url: &str, kind: &str, ca_pem: &str) -> LinkClient {
    let roots = RootCertificates::from_pem(ca_pem.as_bytes()).unwrap();
    let config = ClientConfig::builder()
        .url(url)
        .secret("cli-tls")
        .kind(kind)
        .root_certificates(roots)
        .reconnect_initial(Duration::from_millis(50))
        .reconnect_max(Duration::from_millis(50))
        .build()
        .unwrap();
    LinkClient::new(config)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn wss_rpc_and_sighup_reload() {
    let dir = TempDir::new("link-cli-tls");
    let first_ca = TestCa::new("first CA");
    let issued = first_ca.issue();
    let cert_file = dir.write("hub.crt", &issued.cert_pem);
    let key_file = dir.write("hub.key", &issued.key_pem);
    let hub = cli().hub(&[
        "--secret",
        "cli-tls",
        "--tls-cert",
        path_str(&cert_file),
        "--tls-key",
        path_str(&key_file),
    ]);
    let line = hub.line();
    let url = line
        .strip_prefix("listening=")
        .expect("a listening= line")
        .to_owned();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");

    let alpha = client(&url, "alpha", &first_ca.pem());
    alpha.ready(Some(WAIT)).await.unwrap();
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], 1, "{health}");

    // New files, then SIGHUP. A client trusting only the second CA keeps
    // retrying until a handshake shows the new certificate.
    let second_ca = TestCa::new("second CA");
    let issued = second_ca.issue();
    std::fs::write(&cert_file, issued.cert_pem).unwrap();
    std::fs::write(&key_file, issued.key_pem).unwrap();
    hub.sighup();
    let beta = client(&url, "beta", &second_ca.pem());
    beta.ready(Some(WAIT)).await.unwrap();
    // The peer connected before the reload is still there and working.
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], 2, "{health}");
    assert!(alpha.is_connected());

    hub.sigterm();
    let (status, stderr) = hub.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("link hub listening on wss://"), "{stderr}");
    assert!(stderr.contains("TLS certificate reloaded"), "{stderr}");
    alpha.stop().await;
    beta.stop().await;
}

#[test]
fn a_bad_key_file_is_refused_by_name() {
    let dir = TempDir::new("link-cli-tls");
    let cert_file = dir.write("hub.crt", TestCa::new("CA").issue().cert_pem);
    let key_file = dir.write("broken.key", "not a key\n");
    let out = cli().output(&[
        "hub",
        "--bind",
        "127.0.0.1:0",
        "--secret",
        "s",
        "--tls-cert",
        path_str(&cert_file),
        "--tls-key",
        path_str(&key_file),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.key"), "{stderr}");
    assert!(stderr.contains("no PRIVATE KEY block"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing listened");
}
