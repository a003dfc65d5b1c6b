//! Timers with paused tokio time (protocol §9, §12): `ready()` and RPC
//! timeouts, the hello-ack diagnostic, keepalive and reconnect exhaustion,
//! all at their default durations.
//!
//! These use real loopback sockets with a paused clock. Tokio advances a
//! paused clock only when every task is idle; on loopback a write is
//! readable by the peer as soon as it returns, so "idle" here means
//! "waiting for a timer", and the default 5 s / 30 s timers elapse
//! instantly. The hang guards (`WAIT`, 10 s) are longer than every timer a
//! test waits for, except where a test waits for a later one on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use link_client::{ClientConfig, LinkClient, LinkError, LinkEvent, RpcOutcome};
use link_protocol::{Diagnostic, DropReason, close};
use link_test_support::{
    ClosedPort, DEMO_SECRET, ScriptedHub, WAIT, frame_at, next_event, next_event_within, started,
    wall_ms,
};
use serde_json::json;

fn protocol_error(reason: DropReason) -> impl FnMut(&LinkEvent) -> bool {
    move |e| matches!(e, LinkEvent::ProtocolError(p) if p.reason() == reason)
}

/// A diagnostic with the given code (`no-ack`, `clock-skew`, ...).
fn diagnostic(code: &'static str) -> impl FnMut(&LinkEvent) -> bool {
    move |e| matches!(e, LinkEvent::Diagnostic(d) if d.code() == code)
}

#[tokio::test(start_paused = true)]
async fn ready_times_out_when_the_hub_never_acks() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    assert_eq!(
        client.ready(Some(Duration::from_secs(3))).await,
        Err(LinkError::ReadyTimeout(Duration::from_secs(3)))
    );
    assert!(client.is_connected() && !client.is_ready());
}

#[tokio::test(start_paused = true)]
async fn no_ack_diagnostic_after_five_seconds() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    // Nothing verified: a likely secret or hash mismatch.
    let e = next_event(&mut ev, diagnostic("no-ack")).await;
    assert_eq!(e.name(), "protocol-error");
    assert_eq!(
        *e,
        LinkEvent::Diagnostic(Diagnostic::NoAck { verified: false })
    );
    // Once only, and the link keeps waiting for the ack.
    conn.ack(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    while let Ok(e) = ev.try_recv() {
        assert!(!diagnostic("no-ack")(&e), "{e:?}");
    }
}

/// Log lines written while the returned guard lives, on this thread, at
/// the default level (INFO and above), as a plain `tracing` subscriber
/// would show them.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Capture(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// The captured WARN lines that name `no-ack`.
fn no_ack_warnings(buf: &Mutex<Vec<u8>>) -> Vec<String> {
    String::from_utf8_lossy(&buf.lock().unwrap())
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no-ack"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn no_ack_is_logged_at_warn_once_per_connection() {
    // The runtime is single-threaded: the link's tasks log on this thread.
    let (logs, _guard) = capture_logs();
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    next_event(&mut ev, diagnostic("no-ack")).await;
    let warned = no_ack_warnings(&logs);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("hello.ack"), "{}", warned[0]);
    // Still nothing acked, a minute on: no repeat on this connection.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(no_ack_warnings(&logs).len(), 1);
    // The next connection that is not acked says so again.
    conn.close(1001, "going away").await;
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    next_event(&mut ev, diagnostic("no-ack")).await;
    assert_eq!(no_ack_warnings(&logs).len(), 2);
    client.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_ack_diagnostic_says_verified_when_frames_verified() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    conn.send("status.snapshot", "server", Some(json!({})))
        .await;
    let e = next_event(&mut ev, diagnostic("no-ack")).await;
    assert_eq!(
        *e,
        LinkEvent::Diagnostic(Diagnostic::NoAck { verified: true })
    );
    assert!(client.health().verified);
}

#[tokio::test(start_paused = true)]
async fn no_ack_diagnostic_reports_clock_skew() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.recv_hello().await;
    // A correctly signed ack from a hub whose clock is ten minutes behind.
    let ts = wall_ms() - 600_000;
    let ack = json!({"ok": true, "serverTime": ts, "kind": "alpha", "features": []});
    let key = conn.key.clone();
    conn.send_raw(frame_at(
        &key,
        "late-ack",
        ts,
        "hello.ack",
        Some("server"),
        Some("alpha"),
        Some(&ack),
    ))
    .await;
    next_event(&mut ev, protocol_error(DropReason::ReplayWindow)).await;
    let e = next_event(&mut ev, diagnostic("clock-skew")).await;
    assert!(
        matches!(&*e, LinkEvent::Diagnostic(Diagnostic::ClockSkew { skew }) if skew.abs() >= 600_000.0),
        "{e:?}"
    );
    assert!(!client.is_ready());
}

#[tokio::test(start_paused = true)]
async fn rpc_timeout_sends_cancel_and_completes() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();

    let call = tokio::spawn({
        let c = client.clone();
        async move { c.rpc("beta", "slow", None).await }
    });
    let req = conn.expect("rpc.request").await;
    // Nobody answers: the default 5 s timeout elapses.
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, LinkError::RpcTimeout { timeout, to, rpc_type, id }
            if *timeout == Duration::from_secs(5) && to == "beta" && rpc_type == "slow"
                && id == req.id()),
        "{err:?}"
    );
    assert_eq!(err.rpc_id(), Some(req.id()));
    let cancel = conn.expect("rpc.cancel").await;
    assert_eq!(cancel.data(), Some(&json!({"id": req.id()})));
    // As the reference: `rpc.timeout {id, to, rpcType, timeoutMs}`, then
    // `rpc.complete` with reason `timeout`.
    let timed_out = next_event(&mut ev, |e| e.name().starts_with("rpc.")).await;
    assert_eq!(timed_out.name(), "rpc.timeout");
    assert_eq!(
        *timed_out,
        LinkEvent::RpcTimeout {
            id: req.id().to_owned(),
            to: "beta".into(),
            rpc_type: "slow".into(),
            timeout: Duration::from_secs(5),
        }
    );
    let done = ev.try_recv().unwrap();
    assert!(
        matches!(
            &*done,
            LinkEvent::RpcComplete { id, outcome: RpcOutcome::Timeout, error: Some(_), .. }
                if id == req.id()
        ),
        "{done:?}"
    );
    assert_eq!(done.name(), "rpc.complete");
    // A late answer is ignored.
    conn.send_with(
        req.id(),
        "rpc.response",
        Some("beta"),
        Some("alpha"),
        Some(json!({"ok": true})),
    )
    .await;
    assert_eq!(client.health().pending_rpc_count, 0);
}

#[tokio::test(start_paused = true)]
async fn missing_pong_terminates_and_reconnects() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("alpha"));
    let mut ev = client.events();
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();

    // The hub no longer reads its socket, so pings go unanswered: the first
    // one at 30 s, the verdict at 60 s.
    let e = next_event_within(
        Duration::from_secs(120),
        &mut ev,
        diagnostic("keepalive-timeout"),
    )
    .await;
    assert_eq!(e.name(), "protocol-error");
    let d = next_event(&mut ev, |e| matches!(e, LinkEvent::Disconnect { .. })).await;
    assert!(
        matches!(
            &*d,
            LinkEvent::Disconnect {
                code: Some(close::ABNORMAL),
                will_reconnect: true,
                was_ready: true,
                ..
            }
        ),
        "{d:?}"
    );
    // A new connection with a fresh hello.
    let mut conn2 = hub.accept().await;
    conn2.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    drop(conn);
}

#[tokio::test(start_paused = true)]
async fn reconnect_exhaustion_stops_the_link() {
    // Nothing listens on this port.
    let port = ClosedPort::new();
    let client = LinkClient::new(
        ClientConfig::builder()
            .url(port.url())
            .secret(DEMO_SECRET)
            .kind("alpha")
            .max_reconnect_attempts(Some(2))
            .build()
            .unwrap(),
    );
    let mut ev = client.events();
    client.start();
    client.publish("news", json!("queued")).unwrap();
    let e = next_event(&mut ev, |e| {
        matches!(e, LinkEvent::ReconnectExhausted { .. })
    })
    .await;
    assert!(matches!(
        &*e,
        LinkEvent::ReconnectExhausted {
            attempts: 2,
            max_reconnect_attempts: Some(2)
        }
    ));
    assert_eq!(e.name(), "reconnect-exhausted");
    assert!(matches!(
        client.ready(None).await,
        Err(LinkError::NotReady { .. })
    ));
    let health = client.health();
    assert!(health.stopped);
    assert_eq!(health.outbox_size, 0, "the outbox is cleared");
    assert_eq!(
        client.publish("news", json!(1)).unwrap_err().code(),
        "LINK_NOT_READY"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_for_times_out() {
    let client = LinkClient::new(ClientConfig::builder().build().unwrap());
    let never = client.wait_for(|_| true, Some(Duration::from_secs(60)));
    assert!(never.await.is_none());
}
