//! End-to-end tests of `link-cli hub`: the built binary listens on
//! 127.0.0.1:0, prints `LINK_SECRET=` / `listening=` on stdout, accepts a
//! real peer (handshake by link-protocol's `ClientConn`), answers /health,
//! and shuts down gracefully on SIGTERM. Every wait is on an output line,
//! a protocol event or the process exit, bounded by a hang guard.

// Tests may unwrap; clippy's `allow-unwrap-in-tests` does not reach the
// helper functions of an integration test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use link_protocol::conn::ClientEvent;
use link_test_support::{LinkCli, Peer, http_get, std_listener};

fn cli() -> LinkCli {
    LinkCli::new(env!("CARGO_BIN_EXE_link-cli"))
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}")
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
    let hub = cli().hub(&[]);
    let (secret, addr) = hub.announced();
    let secret = secret.expect("no LINK_SECRET= line");
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let mut peer = Peer::connect(&url(addr), "alpha", &secret).await;
    let r = http_get(addr, "/health").await;
    assert_eq!(r.status, 200);
    let health = r.json();
    assert_eq!(health["ok"], true);
    assert_eq!(health["hub"]["peerCount"], 1);
    assert_eq!(http_get(addr, "/state").await.status, 404);

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
    let hub = cli().hub(&[
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

    let _alpha = Peer::connect(&url(addr), "alpha", "alpha-key").await;
    // A wrong key is a bad signature: no ack, then the hello timeout.
    let mut beta = Peer::hello(&url(addr), "beta", "alpha-key").await;
    match beta.ready_or_closed().await {
        ClientEvent::Disconnected(d) => {
            assert_eq!((d.code, d.reason.as_str()), (1008, "hello timeout"));
        }
        other => panic!("beta got in with alpha's key: {other:?}"),
    }
    let r = http_get(addr, "/state").await;
    assert_eq!(r.status, 200);
    let state = r.json();
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
    let out = cli()
        .command()
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
    let (_taken, addr) = std_listener();
    let addr = addr.to_string();
    let out = cli().output(&["hub", "--secret", "s", "--bind", &addr]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "announced before binding");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn option_errors_name_the_flag_the_value_and_the_file() {
    let out = cli().output(&["hub", "--secret", "s", "--keepalive-ms", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("link-cli hub: --keepalive-ms 0: must be positive"),
        "{stderr}"
    );

    let keys = temp_file("badkind.json", r#"{"alpha": "k", "no spaces": "k"}"#);
    let out = cli()
        .command()
        .args(["hub", "--bind", "127.0.0.1:0", "--keys"])
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--keys {}", keys.display())) && stderr.contains("\"no spaces\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn bind_takes_a_host_name() {
    use std::io::BufRead;
    let mut child = cli()
        .command()
        .args(["hub", "--secret", "s", "--bind", "localhost:0"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || std::io::BufReader::new(stdout).lines().next());
    let line = tokio::time::timeout(link_test_support::WAIT, line)
        .await
        .expect("hang guard")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a listening= line").unwrap();
    let addr: SocketAddr = line
        .strip_prefix("listening=ws://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback() && addr.is_ipv4(), "{addr}");
    assert_ne!(addr.port(), 0);
}

#[tokio::test]
async fn bearer_token_file_and_allow_cidr() {
    let token = temp_file("token.txt", "tok/en+1\n");
    let hub = cli().hub(&[
        "--secret",
        "s",
        "--state-route",
        "--ui",
        "--bearer-token-file",
        token.to_str().unwrap(),
        "--allow-cidr",
        "127.0.0.0/8",
        "--allow-cidr",
        "::1/128",
        "--max-connections-per-ip",
        "4",
    ]);
    let (_, addr) = hub.announced();
    // The token (without the file's newline) is needed for /state and for
    // upgrades; /health stays open.
    assert_eq!(http_get(addr, "/state").await.status, 401);
    assert_eq!(http_get(addr, "/state?token=tok/en+1").await.status, 401);
    assert_eq!(
        http_get(addr, "/state?token=tok%2Fen%2B1").await.status,
        200
    );
    assert_eq!(http_get(addr, "/health").await.status, 200);
    // The dashboard (--ui) is behind the same rule.
    assert_eq!(http_get(addr, "/ui").await.status, 401);
    let page = http_get(addr, "/ui?token=tok%2Fen%2B1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let _peer = Peer::connect(&format!("ws://{addr}/?token=tok%2Fen%2B1"), "alpha", "s").await;
    hub.sigterm();
    let (status, stderr) = hub.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!stderr.contains("tok/en"), "the token leaked to the logs");
    assert!(
        stderr.contains(&format!("live dashboard at http://{addr}/ui")),
        "stderr:\n{stderr}"
    );

    let hub = cli().hub(&[
        "--secret",
        "s",
        "--state-route",
        "--allow-cidr",
        "10.0.0.0/8",
    ]);
    let (_, addr) = hub.announced();
    let r = http_get(addr, "/state").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "forbidden: address not allowed")
    );
    hub.sigterm();
    assert_eq!(hub.exit().0.code(), Some(0));
}

#[test]
fn access_flags_are_checked() {
    for (args, needle) in [
        (&["--allow-cidr", "10.0.0.0/33"][..], "10.0.0.0/33"),
        (&["--max-connections-per-ip", "0"], "must be positive"),
        (&["--max-pending-upgrades", "0"], "must be positive"),
        (&["--max-http-connections", "0"], "must be positive"),
        (&["--handshake-timeout-ms", "0"], "--handshake-timeout-ms"),
        (
            &["--max-subscriptions", "0"],
            "--max-subscriptions 0: must be positive",
        ),
        (
            &["--bearer-token-file", "/nonexistent/token"],
            "/nonexistent/token",
        ),
    ] {
        let out =
            cli().output(&[&["hub", "--secret", "s", "--bind", "127.0.0.1:0"], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn rate_limit_flags_and_table_apply() {
    let table = temp_file(
        "limits.json",
        r#"{"default": {"publish": "100/s"}, "kinds": {"beta": {"rpc": "off"}}}"#,
    );
    let hub = cli().hub(&[
        "--secret",
        "s",
        "--rate-limits",
        table.to_str().unwrap(),
        "--rate-limit",
        "rpc=1/h",
    ]);
    let (_, addr) = hub.announced();
    let mut alpha = Peer::connect(&url(addr), "alpha", "s").await;
    let ok = alpha.rpc("server", "link.topic.list", None).await;
    assert_eq!(ok.data().unwrap()["ok"], true);
    let refused = alpha.rpc("server", "link.topic.list", None).await;
    assert_eq!(refused.data().unwrap()["code"], "RPC_RATE_LIMITED");
    // The table lifts the flag's default for beta.
    let mut beta = Peer::connect(&url(addr), "beta", "s").await;
    for _ in 0..3 {
        let r = beta.rpc("server", "link.topic.list", None).await;
        assert_eq!(r.data().unwrap()["ok"], true);
    }
    hub.sigterm();
    let (status, stderr) = hub.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    // The refusal is logged at warn (one line for the run).
    assert!(
        stderr.contains("rate-limited (rpc)") && stderr.contains("kind=alpha"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn rate_limit_flags_are_checked() {
    let bad_json = temp_file("badlimits.json", r#"{"default": {"publsh": "1/s"}}"#);
    let bad_json = bad_json.to_str().unwrap().to_owned();
    for (args, needles) in [
        (
            &["--rate-limit", "pub=1/s"][..],
            &["--rate-limit", "unknown message class \"pub\""][..],
        ),
        (&["--rate-limit", "publish=0/s"], &["positive integer"]),
        (&["--rate-limit", "publish=10/d"], &["/s, /m or /h"]),
        (&["--rate-limit", "publish"], &["CLASS=RATE"]),
        (&["--rate-limit", "bad kind:rpc=1/s"], &["bad kind"]),
        (
            &["--rate-limit-disconnect", "0"],
            &["--rate-limit-disconnect"],
        ),
        (
            &["--rate-limits", "/nonexistent/limits.json"],
            &["--rate-limits /nonexistent/limits.json"],
        ),
        (
            &["--rate-limits", &bad_json],
            &[&format!("--rate-limits {bad_json}"), "\"publsh\""],
        ),
    ] {
        let out =
            cli().output(&[&["hub", "--secret", "s", "--bind", "127.0.0.1:0"], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
    }
}

/// The hub runs without transparent huge pages (docs/reliability.md,
/// "Soak"): its process carries the THP-disable flag (`THP_enabled: 0`
/// in /proc/PID/status), and no mapping was advised for huge pages
/// (mimalloc built with `no_thp` leaves `hg` out of every mapping's
/// `VmFlags`). With them a hub's RSS moved in 2 MiB steps that the
/// kernel, not the hub, decided.
#[cfg(target_os = "linux")]
#[test]
fn the_hub_runs_without_transparent_huge_pages() {
    let hub = cli().hub(&["--secret", "s"]);
    let _ = hub.announced();
    let proc = |file: &str| std::fs::read_to_string(format!("/proc/{}/{file}", hub.pid())).unwrap();
    let status = proc("status");
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line (Linux 5.0+): {status}"));
    assert_eq!(thp.trim(), "0");
    let smaps = proc("smaps");
    let advised = smaps
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .filter(|flags| flags.split_whitespace().any(|f| f == "hg"))
        .count();
    assert_eq!(advised, 0, "mappings advised for huge pages:\n{smaps}");
    hub.sigterm();
    let (status, _) = hub.exit();
    assert!(status.success());
}
