//! `stop()` returns at once whatever the driver is doing, and a connect
//! attempt is bounded by `connect_timeout`.
//!
//! Each stop test gets the link into one state over real loopback sockets,
//! then pauses tokio's clock and measures `stop()` in paused time. A paused
//! clock only moves when every task waits on a timer, so a driver stuck in
//! an await that does not read its commands (a connect, a drain, a close
//! handshake) shows up as whole seconds of paused time: the timer that
//! would have released it. A prompt stop takes none. No real-time bound is
//! asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use link_client::{
    ClientConfig, ClientConfigBuilder, ConnectError, LinkClient, LinkEvent, Phase, RpcOptions,
    StopOptions,
};
use link_test_support::{
    DEMO_SECRET, HubSide, ScriptedHub, WAIT, next_event, next_event_within, started,
};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Generous bound on a prompt stop, in paused time (it takes none).
const PROMPT: Duration = Duration::from_millis(100);

/// A listener that accepts TCP and never answers the WebSocket upgrade.
struct BlackHole {
    listener: TcpListener,
    url: String,
}

impl BlackHole {
    async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        Self { listener, url }
    }

    fn client(&self) -> ClientConfigBuilder {
        ClientConfig::builder()
            .url(&self.url)
            .secret(DEMO_SECRET)
            .kind("alpha")
    }

    /// Accepts the next connection and reads its upgrade request, which is
    /// never answered; the connection stays open while the stream is held.
    async fn swallow(&self) -> TcpStream {
        let (mut tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("the client dialled")
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
                .await
                .expect("the upgrade request")
                .unwrap();
            assert!(n > 0, "EOF before the upgrade request");
            request.extend_from_slice(&buf[..n]);
        }
        assert!(request.starts_with(b"GET "), "an HTTP upgrade request");
        tcp
    }

    /// The same listener as a `wss://` URL.
    fn wss_client(&self) -> ClientConfigBuilder {
        self.client().url(self.url.replacen("ws://", "wss://", 1))
    }

    /// Accepts the next connection and reads the start of its TLS
    /// ClientHello, which is never answered.
    async fn swallow_client_hello(&self) -> TcpStream {
        let (mut tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("the client dialled")
            .unwrap();
        let mut record = [0u8; 5];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut record))
            .await
            .expect("a TLS record")
            .unwrap();
        assert_eq!(record[0], 0x16, "a TLS handshake record");
        tcp
    }
}

/// Pauses the clock, stops the client and returns the paused time it took.
async fn timed_stop(client: &LinkClient) -> Duration {
    tokio::time::pause();
    let started = Instant::now();
    client.stop().await;
    started.elapsed()
}

#[tokio::test]
async fn stop_returns_at_once_while_the_upgrade_is_black_holed() {
    let hole = BlackHole::bind().await;
    // Without a prompt stop, stop() would wait out this timeout.
    let client = started(hole.client().connect_timeout(Duration::from_secs(60)));
    let _held = hole.swallow().await;
    // Queued for a ready that never comes: nothing a stop could drain.
    client.publish("news", json!(1)).unwrap();
    let took = timed_stop(&client).await;
    assert!(took < PROMPT, "stop() took {took:?} of paused time");
    assert_eq!(client.phase(), Phase::Stopped);
    assert!(client.health().stopped && !client.is_connected());
    assert_eq!(
        client.publish("news", json!(2)).unwrap_err().code(),
        "LINK_NOT_READY"
    );
}

#[tokio::test]
async fn stop_returns_at_once_while_the_tls_handshake_is_black_holed() {
    let hole = BlackHole::bind().await;
    let client = LinkClient::new(
        hole.wss_client()
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let mut ev = client.events();
    client.start();
    let _held = hole.swallow_client_hello().await;
    let took = timed_stop(&client).await;
    assert!(took < PROMPT, "stop() took {took:?} of paused time");
    assert_eq!(client.phase(), Phase::Stopped);
    while let Ok(e) = ev.try_recv() {
        assert!(!matches!(&*e, LinkEvent::ConnectFailed { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake() {
    let hole = BlackHole::bind().await;
    let client = LinkClient::new(
        hole.wss_client()
            .connect_timeout(Duration::from_secs(3))
            .reconnect_initial(Duration::from_secs(60))
            .reconnect_max(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let mut ev = client.events();
    client.start();
    let _held = hole.swallow_client_hello().await;
    tokio::time::pause();
    let failed = next_event_within(Duration::from_secs(3600), &mut ev, |e| {
        matches!(e, LinkEvent::ConnectFailed { .. })
    })
    .await;
    assert!(
        matches!(
            &*failed,
            LinkEvent::ConnectFailed { attempt: 0, error: ConnectError::Timeout { after, .. } }
                if *after == Duration::from_secs(3)
        ),
        "{failed:?}"
    );
    client.stop().await;
}

#[tokio::test]
async fn stop_during_the_reconnect_backoff_cancels_it() {
    let hole = BlackHole::bind().await;
    let client = LinkClient::new(
        hole.client()
            .reconnect_initial(Duration::from_secs(60))
            .reconnect_max(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let mut ev = client.events();
    client.start();
    // The hub hangs up on the upgrade: a failed connect, then the backoff.
    drop(hole.swallow().await);
    let failed = next_event(&mut ev, |e| matches!(e, LinkEvent::ConnectFailed { .. })).await;
    let LinkEvent::ConnectFailed { attempt, error } = &*failed else {
        unreachable!()
    };
    assert_eq!(*attempt, 0);
    assert_eq!(error.url(), hole.url);
    assert_ne!(error.code(), "CONNECT_TIMEOUT", "{error}");
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::Reconnecting { attempt: 1, delay } if *delay >= Duration::from_secs(30))
    })
    .await;
    client.publish("news", json!(1)).unwrap();
    let took = timed_stop(&client).await;
    assert!(took < PROMPT, "stop() took {took:?} of paused time");
    assert_eq!(client.phase(), Phase::Stopped);
    // The cancelled backoff never fires: no further attempt is made.
    tokio::time::advance(Duration::from_secs(120)).await;
    while let Ok(e) = ev.try_recv() {
        assert!(!matches!(&*e, LinkEvent::Connect { .. }), "{e:?}");
    }
    assert!(
        tokio::time::timeout(Duration::ZERO, hole.listener.accept())
            .await
            .is_err(),
        "no reconnect after stop"
    );
}

#[tokio::test]
async fn stop_during_the_handshake_sends_the_close_and_returns() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = LinkClient::new(hub.client("alpha").build().unwrap());
    let mut ev = client.events();
    client.start();
    let mut conn = hub.accept().await;
    // The hello arrives; the hub never acks it (nor reads on, for now).
    conn.recv_hello().await;
    client.publish("news", json!(1)).unwrap();
    let took = timed_stop(&client).await;
    assert!(took < PROMPT, "stop() took {took:?} of paused time");
    assert_eq!(client.phase(), Phase::Stopped);
    let disconnect = next_event(&mut ev, |e| matches!(e, LinkEvent::Disconnect { .. })).await;
    assert!(
        matches!(
            &*disconnect,
            LinkEvent::Disconnect { reason, will_reconnect: false, was_ready: false, .. }
                if reason == "stopped"
        ),
        "{disconnect:?}"
    );
    // The close frame (no code: the hub sees 1005) was written before
    // stop() returned; the queued publish never was.
    assert_eq!(conn.recv_close().await, None);
}

#[tokio::test]
async fn connect_timeout_fails_the_attempt_and_the_link_retries() {
    let hole = BlackHole::bind().await;
    let client = LinkClient::new(
        hole.client()
            .reconnect_initial(Duration::from_millis(10))
            .reconnect_max(Duration::from_millis(10))
            .reconnect_jitter(0.0)
            .build()
            .unwrap(),
    );
    let mut ev = client.events();
    client.start();
    let _first = hole.swallow().await;
    // The default 10 s connect timeout elapses in paused time.
    tokio::time::pause();
    let failed = next_event_within(Duration::from_secs(3600), &mut ev, |e| {
        matches!(e, LinkEvent::ConnectFailed { .. })
    })
    .await;
    let LinkEvent::ConnectFailed { attempt, error } = &*failed else {
        unreachable!()
    };
    assert_eq!(*attempt, 0);
    assert_eq!(
        error,
        &ConnectError::Timeout {
            url: hole.url.clone(),
            after: Duration::from_secs(10)
        }
    );
    assert_eq!(error.code(), "CONNECT_TIMEOUT");
    // It counts as a failed connect: the usual backoff, then a new attempt.
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::Reconnecting { attempt: 1, .. })
    })
    .await;
    assert_eq!(client.health().reconnect_attempt, 1);
    assert_eq!(client.phase(), Phase::Connecting);
    tokio::time::resume();
    let _second = hole.swallow().await;
    client.stop().await;
    assert_eq!(client.phase(), Phase::Stopped);
}

/// A client that is ready on a scripted hub, and the hub's side of it.
async fn ready_on(hub: &ScriptedHub) -> (LinkClient, HubSide) {
    let client = started(hub.client("alpha"));
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    (client, conn)
}

#[tokio::test]
async fn stop_returns_when_the_pending_rpc_it_drains_for_is_abandoned() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (client, mut conn) = ready_on(&hub).await;
    let call = tokio::spawn({
        let c = client.clone();
        let opts = RpcOptions {
            timeout: Some(Duration::from_secs(1)),
            cancel: None,
        };
        async move { c.rpc_with("beta", "slow", None, opts).await }
    });
    let req = conn.expect("rpc.request").await;
    // The drain waits for the call; its caller gives up after 1 s (from
    // another task than the link's), and the stop goes on from there, not
    // at the end of the 5 s stop_drain.
    let took = timed_stop(&client).await;
    assert_eq!(call.await.unwrap().unwrap_err().code(), "RPC_TIMEOUT");
    assert!(
        took < Duration::from_secs(2),
        "stop() took {took:?} of paused time"
    );
    // The cancel went out before the close.
    let cancel = conn.expect("rpc.cancel").await;
    assert_eq!(cancel.data(), Some(&json!({"id": req.id()})));
    assert_eq!(conn.recv_close().await, None);
}

#[tokio::test]
async fn stop_returns_once_a_backlog_it_drains_for_is_written() {
    // The drain ends when the writer (another task than the link's) takes
    // the last queued message, whenever that happens. Here the hub stops
    // reading, so the stop is read with a backlog queued, and the hub
    // reads again only once the link is draining. Repeated, as the race
    // this guards against was intermittent.
    for round in 0..3 {
        let hub = ScriptedHub::bind(DEMO_SECRET).await;
        let (client, mut conn) = ready_on(&hub).await;
        let payload = json!({"pad": "x".repeat(16 * 1024)});
        let mut published = 0u64;
        // Publish until the socket is full and messages stay queued.
        while client.health().outbox_size < 4 {
            client.publish("news", payload.clone()).unwrap();
            published += 1;
            tokio::task::yield_now().await;
        }
        tokio::time::pause();
        let started = Instant::now();
        let stopping = tokio::spawn({
            let c = client.clone();
            async move { c.stop().await }
        });
        // Let the link read the stop and find the backlog.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !stopping.is_finished(),
            "round {round}: nothing drained yet"
        );
        assert!(client.health().outbox_size > 0);
        // The hub reads again: the backlog drains, then the close comes.
        let mut seen = 0;
        while seen < published {
            if conn.recv().await.msg_type() == Some("topic.message") {
                seen += 1;
            }
        }
        assert_eq!(conn.recv_close().await, None);
        stopping.await.unwrap();
        let took = started.elapsed();
        assert!(
            took < PROMPT,
            "round {round}: stop() took {took:?} of paused time after the backlog was written"
        );
        tokio::time::resume();
    }
}

#[tokio::test]
async fn stop_with_sets_the_drain_per_call() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (client, mut conn) = ready_on(&hub).await;
    let forever = RpcOptions {
        timeout: Some(Duration::ZERO),
        cancel: None,
    };
    let call = tokio::spawn({
        let c = client.clone();
        let opts = forever.clone();
        async move { c.rpc_with("beta", "never", None, opts).await }
    });
    conn.expect("rpc.request").await;
    // Never answered: a drain bounded at 1 s gives up after 1 s.
    tokio::time::pause();
    let started = Instant::now();
    client
        .stop_with(StopOptions::drain_for(Duration::from_secs(1)))
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), "RPC_DISCONNECT");
    assert_eq!(client.phase(), Phase::Stopped);
    tokio::time::resume();

    // Without drain: at once, even with a graceful stop already waiting;
    // both return.
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (client, mut conn) = ready_on(&hub).await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.rpc_with("beta", "never", None, forever).await }
    });
    conn.expect("rpc.request").await;
    tokio::time::pause();
    let started = Instant::now();
    let graceful = tokio::spawn({
        let c = client.clone();
        async move { c.stop().await }
    });
    tokio::task::yield_now().await;
    client.stop_with(StopOptions::immediate()).await;
    graceful.await.unwrap();
    let took = started.elapsed();
    assert!(took < PROMPT, "stop() took {took:?} of paused time");
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), "RPC_DISCONNECT");
    assert_eq!(conn.recv_close().await, None);
}
