//! End-to-end tests of `link-cli hub`: the built binary listens on
//! 127.0.0.1:0, prints `LINK_SECRET=` / `listening=` on stdout, accepts a
//! real peer (handshake by link-protocol's `ClientConn`), answers /health,
//! and shuts down gracefully on SIGTERM. Every wait is on an output line,
//! a protocol event or the process exit, bounded by a hang guard.

// Tests may unwrap; clippy's `allow-unwrap-in-tests` does not reach the
// helper functions of an integration test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use link_protocol::conn::{ClientConn, ClientConnConfig, ClientEvent, Now, SeqIds, Transmit};
use link_protocol::{HashAlgo, Key, close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BIN: &str = env!("CARGO_BIN_EXE_link-cli");
/// Hang guard only; never a timing assertion.
const WAIT: Duration = Duration::from_secs(15);

/// A running `link-cli hub`; killed on drop if a test fails midway.
struct HubProcess {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl HubProcess {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("hub")
            .args(args)
            .env_remove("LINK_SECRET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = Some(thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line.
    fn line(&self) -> String {
        self.stdout
            .recv_timeout(WAIT)
            .expect("no stdout line from link-cli hub")
    }

    /// Reads `LINK_SECRET=` (if printed) and `listening=ws://ADDR`.
    fn announced(&self) -> (Option<String>, SocketAddr) {
        let mut secret = None;
        loop {
            let line = self.line();
            if let Some(s) = line.strip_prefix("LINK_SECRET=") {
                secret = Some(s.to_owned());
            } else if let Some(url) = line.strip_prefix("listening=ws://") {
                return (secret, url.trim_end_matches('/').parse().unwrap());
            } else {
                panic!("unexpected stdout line: {line}");
            }
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the status and everything on stderr.
    fn exit(mut self) -> (ExitStatus, String) {
        let pid = self.child.id();
        let (tx, rx) = mpsc::channel();
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("link-cli hub (pid {pid}) did not exit"))
            .unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, stderr)
    }
}

/// A placeholder so `exit` can move the real child into a waiting thread.
fn dummy_child() -> Child {
    Command::new("true").spawn().unwrap()
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Now::new(std::time::Instant::now(), wall)
}

/// A scripted peer: a WebSocket driven by link-protocol's `ClientConn`.
struct Peer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    conn: ClientConn,
}

impl Peer {
    /// Connects and sends the hello; does not wait for the ack.
    async fn hello(addr: SocketAddr, kind: &str, secret: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
            .await
            .unwrap();
        let mut config =
            ClientConnConfig::new(kind, Key::new(secret, HashAlgo::Sha256).unwrap()).unwrap();
        config.keepalive_interval = None;
        config.hello_ack_diagnostic = None;
        let conn = ClientConn::new(config, Box::new(SeqIds::new(kind)), Box::new(|| 0.5)).unwrap();
        let mut peer = Self { ws, conn };
        peer.conn.start();
        let _ = peer.conn.poll_event(); // Connect
        peer.conn.handle_open(now());
        while let Some(t) = peer.conn.poll_transmit() {
            if let Transmit::Frame(frame) = t {
                peer.ws.send(Message::text(frame)).await.unwrap();
            }
        }
        peer
    }

    /// Connects and waits for the hello.ack.
    async fn join(addr: SocketAddr, kind: &str, secret: &str) -> Self {
        let mut peer = Self::hello(addr, kind, secret).await;
        match peer.ready_or_closed().await {
            ClientEvent::Ready { .. } => peer,
            other => panic!("{kind} was not accepted: {other:?}"),
        }
    }

    /// The next `Ready` or `Disconnected` event.
    async fn ready_or_closed(&mut self) -> ClientEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(e) = self.conn.poll_event() {
                    if matches!(e, ClientEvent::Ready { .. } | ClientEvent::Disconnected(_)) {
                        return e;
                    }
                }
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => self.conn.handle_message(now(), t.as_bytes()),
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.to_string())
                        });
                        self.conn.handle_closed(now(), code, &reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        self.conn.handle_closed(now(), Some(close::ABNORMAL), "")
                    }
                }
            }
        })
        .await
        .expect("timed out waiting for the hub")
    }

    /// Waits for the close; returns (code, reason).
    async fn closed(&mut self) -> (u16, String) {
        match self.ready_or_closed().await {
            ClientEvent::Disconnected(d) => (d.code, d.reason),
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// GET over a raw HTTP/1.1 connection; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    })
    .await
    .expect("http request timed out")
}

/// A file in a directory of its own under the system temp dir, removed
/// (with the directory) when dropped.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let dir = std::env::temp_dir().join(format!(
        "link-cli-hub-{}-{}",
        std::process::id(),
        name.replace('.', "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    TempFile { dir, path }
}

#[tokio::test]
async fn generated_secret_health_and_sigterm() {
    let hub = HubProcess::spawn(&["--bind", "127.0.0.1:0"]);
    let (secret, addr) = hub.announced();
    let secret = secret.expect("no LINK_SECRET= line");
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let mut peer = Peer::join(addr, "alpha", &secret).await;
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ok"], true);
    assert_eq!(health["hub"]["peerCount"], 1);
    assert_eq!(http_get(addr, "/state").await.0, 404);

    hub.sigterm();
    assert_eq!(peer.closed().await, (1001, "server shutdown".to_owned()));
    let (status, stderr) = hub.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("link hub listening on ws://{addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains(&secret), "the secret leaked to the logs");
}

#[tokio::test]
async fn per_kind_keys_admit_the_right_key_only() {
    let keys = temp_file("keys.json", r#"{"alpha": "alpha-key", "beta": "beta-key"}"#);
    let hub = HubProcess::spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--keys",
        keys.to_str().unwrap(),
        "--hello-timeout-ms",
        "200",
        "--path",
        "/",
        "--state-route",
    ]);
    let (secret, addr) = hub.announced();
    assert_eq!(secret, None, "a generated secret with --keys");

    let _alpha = Peer::join(addr, "alpha", "alpha-key").await;
    // A wrong key is a bad signature: no ack, then the hello timeout.
    let mut beta = Peer::hello(addr, "beta", "alpha-key").await;
    match beta.ready_or_closed().await {
        ClientEvent::Disconnected(d) => {
            assert_eq!((d.code, d.reason.as_str()), (1008, "hello timeout"));
        }
        other => panic!("beta got in with alpha's key: {other:?}"),
    }
    let (status, body) = http_get(addr, "/state").await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = state["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["alpha"]);

    hub.sigterm();
    let (status, stderr) = hub.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!stderr.contains("alpha-key"), "a key leaked to the logs");
}

#[test]
fn keys_and_secret_together_are_refused() {
    let keys = temp_file("both.json", r#"{"alpha": "k"}"#);
    let out = Command::new(BIN)
        .args(["hub", "--bind", "127.0.0.1:0", "--keys"])
        .arg(&keys)
        .env("LINK_SECRET", "shared")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--keys"), "{stderr}");
    assert!(!stderr.contains("shared"), "{stderr}");
}

#[test]
fn an_address_in_use_is_unusable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["hub", "--secret", "s", "--bind", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "announced before binding");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}
