//! `link-cli hub --tls-cert FILE --tls-key FILE`: the built binary serves
//! `wss://`, a client trusting the CA does an RPC, SIGHUP reloads the
//! certificate for new connections while the connected client keeps
//! working, and a bad key file is refused by name before anything binds.
//! Certificates are made by `rcgen` when the test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use link_client::{ClientConfig, LinkClient, RootCertificates};
use link_test_support::{LinkCli, WAIT};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

fn cli() -> LinkCli {
    LinkCli::new(env!("CARGO_BIN_EXE_link-cli"))
}

/// A private CA: its PEM, and a certificate for 127.0.0.1 with its key.
fn ca(name: &str) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (issuer.pem(), cert.pem(), key.serialize_pem())
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("link-cli-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let dir = TempDir::new("reload");
    let (first_ca, cert, key) = ca("first CA");
    let cert_file = dir.write("hub.crt", &cert);
    let key_file = dir.write("hub.key", &key);
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

    let alpha = client(&url, "alpha", &first_ca);
    alpha.ready(Some(WAIT)).await.unwrap();
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["peerCount"], 1, "{health}");

    // New files, then SIGHUP. A client trusting only the second CA keeps
    // retrying until a handshake shows the new certificate.
    let (second_ca, cert, key) = ca("second CA");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    hub.sighup();
    let beta = client(&url, "beta", &second_ca);
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
    let dir = TempDir::new("bad-key");
    let (_, cert, _) = ca("CA");
    let cert_file = dir.write("hub.crt", &cert);
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
