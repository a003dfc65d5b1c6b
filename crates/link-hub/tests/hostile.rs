//! Hostile clients, one test per attack (docs/reliability.md, *Hostile
//! clients*): each is bounded by a documented limit, the limit's typed
//! outcome is asserted (a close code, a `protocol-error` reason, a count),
//! and a good peer's RPC still works during or after the attack.
//!
//! Real sockets on 127.0.0.1; limits are lowered so each test stays short
//! (the full-size attacks run in `link-cli bench --scenario hostile`).
//! Timers that matter are configured short; waits are on events, never on
//! sleeps (the one sleep paces the slow client's bytes, as an attacker
//! would).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use link_hub::{HubConfig, HubEvent, HubServerBuilder, Secret};
use link_protocol::{DropReason, Envelope, Key};
use link_test_support::{
    MemoryPeer, Peer, Raw, TestServer, frame, fresh_id, guard, key, next_event, probe_dropped,
    probe_frame, protocol_error,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

const S: &str = "hostile-secret";

fn config() -> link_hub::HubConfigBuilder {
    HubConfig::builder(Secret::shared(S))
}

async fn server(
    hub: link_hub::HubConfigBuilder,
    f: impl FnOnce(HubServerBuilder) -> HubServerBuilder,
) -> TestServer {
    TestServer::start(f(TestServer::builder(hub.build().unwrap()))).await
}

/// A good peer's RPC through the hub: answered `ok`.
async fn good_rpc_works(good: &mut Peer) {
    let r = good.rpc("server", "link.health", None).await;
    assert_eq!(r.data().unwrap()["ok"], true, "{r:?}");
}

/// Reads until the hub closes the TCP connection; returns what it sent.
async fn read_to_close(rd: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn upgrade_request(addr: std::net::SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         User-Agent: a-very-slow-client/1.0 (it sends one byte at a time)\r\n\r\n"
    )
}

#[tokio::test]
async fn a_slow_upgrade_is_closed_at_the_handshake_timeout() {
    let s = server(config(), |b| {
        b.handshake_timeout(Duration::from_millis(300))
    })
    .await;
    let mut good = Peer::connect(&s.url, "good", S).await;
    let request = upgrade_request(s.addr);
    let (mut rd, mut wr) = TcpStream::connect(s.addr).await.unwrap().into_split();
    // One byte every 20 ms: the whole request would take seconds.
    let dribble = async {
        for b in request.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let during = async {
        good_rpc_works(&mut good).await;
        read_to_close(&mut rd).await
    };
    let answer = tokio::select! {
        answer = during => answer,
        () = dribble => panic!("the whole slow request went through"),
    };
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("101"), "upgraded: {answer}");
    // The slow socket's place is given back; the good peer is unaffected.
    assert_eq!(s.http_connections(), 0);
    assert_eq!(s.open_connections(), 1);
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn sockets_that_never_send_a_request_are_capped_and_the_oldest_closed() {
    const CAP: usize = 8;
    const SILENT: usize = 20;
    let s = server(config(), |b| b.max_http_connections(CAP)).await;
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    // The first SILENT - CAP are closed by the hub, oldest first; the
    // last of them closes only once the last silent socket was counted.
    for tcp in &mut silent[..SILENT - CAP] {
        assert!(guard(read_to_close(tcp)).await.is_empty());
    }
    assert_eq!(s.http_connections(), CAP);
    assert_eq!(s.http_connections_evicted(), (SILENT - CAP) as u64);
    // A good client still gets in: its request arrives long before its
    // connection could become the oldest, and the upgrade leaves the count.
    let mut good = Peer::connect(&s.url, "good", S).await;
    good_rpc_works(&mut good).await;
    assert_eq!(s.http_connections_evicted(), (SILENT - CAP + 1) as u64);
    assert!(s.http_connections() <= CAP);
}

#[tokio::test]
async fn websockets_that_never_say_hello_hit_the_per_ip_cap() {
    const PER_IP: usize = 4;
    let s = server(config(), |b| b.max_connections_per_ip(PER_IP)).await;
    let mut rx = s.hub().events();
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut silent = Vec::new();
    for i in 0..PER_IP - 1 {
        silent.push(attached_silent(&s, &mut rx, i).await);
    }
    let refused = tokio_tungstenite::connect_async(s.url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(s.open_connections(), PER_IP);
    good_rpc_works(&mut good).await;
    drop(silent);
    guard(s.wait_open_connections(1)).await;
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn websockets_that_never_say_hello_hit_the_pending_cap_oldest_first() {
    const PENDING: usize = 3;
    const SILENT: usize = 5;
    // No hello timeout: only the cap closes sockets here.
    let s = server(
        config()
            .max_pending_sockets(PENDING)
            .hello_timeout(Duration::ZERO),
        |b| b,
    )
    .await;
    let mut rx = s.hub().events();
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut silent = Vec::new();
    for i in 0..SILENT {
        silent.push(attached_silent(&s, &mut rx, i).await);
    }
    // The oldest are closed as new ones arrive: 1008 `pending cap`.
    for raw in &mut silent[..SILENT - PENDING] {
        assert_eq!(raw.closed().await, (1008, "pending cap".to_owned()));
    }
    guard(s.wait_open_connections(1 + PENDING)).await;
    assert_eq!(s.hub().health().await.pending_socket_count, PENDING);
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn a_websocket_that_never_says_hello_is_closed_at_the_hello_timeout() {
    let s = server(config().hello_timeout(Duration::from_millis(300)), |b| b).await;
    let mut rx = s.hub().events();
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut silent = attached_silent(&s, &mut rx, 0).await;
    assert_eq!(silent.closed().await, (1008, "hello timeout".to_owned()));
    guard(s.wait_open_connections(1)).await;
    good_rpc_works(&mut good).await;
}

/// A WebSocket without a hello, attached and held as pending by the hub
/// (proven by the hub dropping its pre-hello probe).
async fn attached_silent(
    s: &TestServer,
    rx: &mut broadcast::Receiver<Arc<HubEvent>>,
    i: usize,
) -> Raw {
    let mut raw = Raw::connect(&s.url).await;
    let probe = format!("probe-{i}");
    raw.send_text(probe_frame(&probe)).await;
    probe_dropped(rx, &probe).await;
    raw
}

#[tokio::test]
async fn a_half_open_peer_that_stops_reading_is_reaped_by_keepalive() {
    let s = server(
        config()
            .keepalive_interval(Duration::from_millis(300))
            .max_outbox_bytes(64 * 1024),
        |b| b,
    )
    .await;
    let mut rx = s.hub().events();
    // The good peer is a full client: its driver answers the hub's pings
    // whatever the test is doing.
    let good = link_test_support::ready(
        link_client::ClientConfig::builder()
            .url(&s.url)
            .secret(S)
            .kind("good"),
    )
    .await;
    let good_rpc = || async {
        let health = good.rpc("server", "link.health", None).await.unwrap();
        assert!(health.get("peerCount").is_some(), "{health}");
    };
    // Says hello, subscribes, then never reads again and never closes.
    let mut stalled = Peer::connect_stalling(&s.url, "stalled", S).await;
    stalled.subscribe("feed").await;
    let filler = "x".repeat(4096);
    // Enough to fill its socket and reach its outbox cap.
    for _ in 0..64 {
        good.publish("feed", json!(filler)).unwrap();
    }
    next_event(&mut rx, |e| {
        matches!(e, HubEvent::PeerDisconnect { kind, code, reason, .. }
            if kind == "stalled" && *code == Some(1006) && reason == "keepalive timeout")
    })
    .await;
    // Its queue went with it; the good peer is unaffected.
    assert_eq!(s.hub().health().await.outbox_bytes, 0);
    assert_eq!(s.hub().health().await.peer_count, 1);
    good_rpc().await;
    drop(stalled);
    good.stop().await;
}

/// Counts `link_hub_frames_dropped_total{reason="<reason>"}`.
async fn dropped(s: &TestServer, reason: &str) -> u64 {
    let metrics = s.hub().metrics().await;
    let prefix = format!("link_hub_frames_dropped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_flood_of_bad_signatures_is_dropped_and_the_socket_keeps_working() {
    const FLOOD: u64 = 2_000;
    // The whole flood within one burst, so it is read at full speed here
    // (the pace past it: `a_socket_whose_frames_are_dropped_is_read_at_its_pace_and_kept`).
    let s = server(config().max_dropped_frames_per_sec(FLOOD as u32), |b| b).await;
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut mallory = Peer::connect(&s.url, "mallory", S).await;
    let wrong = key("not-the-secret");
    let flood = async {
        for i in 0..FLOOD {
            let id = fresh_id(&format!("bad-{i}"));
            let f = frame(&wrong, &id, "status.update", Some("mallory"), None, None);
            mallory.send_raw(&f).await;
        }
        // Its own frames are still handled, in order, after the flood.
        mallory.barrier().await;
    };
    let during = async {
        for _ in 0..10 {
            good_rpc_works(&mut good).await;
        }
    };
    tokio::join!(flood, during);
    assert_eq!(dropped(&s, "bad-signature").await, FLOOD);
    assert_eq!(s.hub().health().await.peer_count, 2);
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn an_oversized_frame_closes_1009() {
    let s = server(config().max_message_bytes(64 * 1024), |b| b).await;
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut mallory = Raw::connect(&s.url).await;
    mallory.hello(&key(S), "mallory").await;
    let mut rx = s.hub().events();
    // A little over the cap: the WebSocket layer refuses it.
    mallory.send_text("x".repeat(64 * 1024 + 1000)).await;
    assert_eq!(mallory.closed().await, (1009, String::new()));
    next_event(&mut rx, |e| {
        matches!(e, HubEvent::PeerDisconnect { kind, code: Some(1009), .. } if kind == "mallory")
    })
    .await;
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn a_frame_nested_100_000_deep_is_dropped_as_a_parse_error() {
    let s = server(config(), |b| b).await;
    let mut rx: broadcast::Receiver<Arc<HubEvent>> = s.hub().events();
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut mallory = Peer::connect(&s.url, "mallory", S).await;
    let deep = "[".repeat(100_000);
    mallory.send_raw(&deep).await;
    let e = protocol_error(&mut rx, DropReason::ParseError).await;
    assert_eq!(e.size, Some(100_000));
    let error = e.error.as_deref().unwrap_or_default();
    assert!(error.contains("recursion limit"), "{error}");
    // Deep but valid JSON inside a signed frame: parsed under the limit.
    let nested = (0..100).fold(json!(1), |v, _| json!([v]));
    mallory
        .send("status.update", None, Some(json!({ "status": nested })))
        .await;
    mallory.barrier().await;
    assert_eq!(s.hub().health().await.peer_count, 2);
    good_rpc_works(&mut good).await;
}

#[tokio::test]
async fn one_peer_past_its_subscription_cap_is_refused_typed() {
    const CAP: usize = 100;
    const TRIED: usize = 150;
    let s = server(config().max_subscriptions_per_peer(CAP), |b| b).await;
    let mut rx = s.hub().events();
    let mut good = Peer::connect(&s.url, "good", S).await;
    let mut mallory = Peer::connect(&s.url, "mallory", S).await;
    for i in 0..TRIED {
        mallory
            .send(
                "topic.subscribe",
                None,
                Some(json!({ "topic": format!("t{i}") })),
            )
            .await;
    }
    mallory.barrier().await;
    let e = protocol_error(&mut rx, DropReason::SubscriptionLimit).await;
    assert_eq!(e.kind.as_deref(), Some("mallory"));
    assert_eq!(e.msg_type.as_deref(), Some("topic.subscribe"));
    assert_eq!(
        dropped(&s, "subscription-limit").await,
        (TRIED - CAP) as u64
    );
    assert_eq!(s.hub().health().await.topic_count, CAP);
    // Nothing on the wire for the refused ones (as for an invalid topic),
    // and other peers have their own share.
    mallory.assert_quiet().await;
    good.subscribe(&format!("t{}", TRIED - 1)).await;
    mallory
        .send(
            "topic.message",
            None,
            Some(json!({ "topic": format!("t{}", TRIED - 1), "payload": 1 })),
        )
        .await;
    let m = good.recv("topic.message").await;
    assert_eq!(m.from(), Some("mallory"));
    good_rpc_works(&mut good).await;
}

/// Sends `flood` frames with a wrong signature from `mallory`, then a
/// `link.health` RPC of its own; returns the hub time its answer took and
/// the frames dropped `bad-signature` by then.
async fn bad_frames_then_rpc(max_dropped_frames_per_sec: u32, flood: u32) -> (Duration, u64) {
    let (hub, k, mut mallory) =
        mallory_on(config().max_dropped_frames_per_sec(max_dropped_frames_per_sec)).await;
    let wrong = key("not-the-secret");
    let start = tokio::time::Instant::now();
    for i in 0..flood {
        let id = fresh_id(&format!("bad-{i}"));
        let f = frame(&wrong, &id, "status.update", Some("mallory"), None, None);
        mallory.send_text(f).await;
    }
    let r = ask_server(&mut mallory, &k, "link.health").await;
    assert_eq!(r.data().unwrap()["ok"], true, "{r:?}");
    (start.elapsed(), hub_dropped(&hub, "bad-signature").await)
}

/// A hub built from `config` (no keepalive comes due while the test runs)
/// with mallory attached in memory and past her hello.
async fn mallory_on(config: link_hub::HubConfigBuilder) -> (link_hub::Hub, Key, MemoryPeer) {
    let hub = link_hub::Hub::new(
        config
            .keepalive_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let k = key(S);
    let mut mallory = MemoryPeer::attach(&hub, "127.0.0.1:40000".parse().unwrap());
    mallory.hello(&k, "mallory").await;
    (hub, k, mallory)
}

/// Calls the hub's own RPC `rpc_type` as mallory and returns its answer
/// (frames before it are whatever the attack left queued).
async fn ask_server(mallory: &mut MemoryPeer, k: &Key, rpc_type: &str) -> Envelope {
    let id = fresh_id("ask");
    let rpc = json!({ "rpcType": rpc_type });
    let f = frame(
        k,
        &id,
        "rpc.request",
        Some("mallory"),
        Some("server"),
        Some(&rpc),
    );
    mallory.send_text(f).await;
    loop {
        let r = mallory.recv(k, "rpc.response").await;
        if r.id() == id {
            return r;
        }
    }
}

/// Frames `hub` dropped for `reason`.
async fn hub_dropped(hub: &link_hub::Hub, reason: &str) -> u64 {
    hub_series(
        hub,
        &format!("link_hub_frames_dropped_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// The value of one series of the hub's metrics (0 when absent).
async fn hub_series(hub: &link_hub::Hub, series: &str) -> u64 {
    let prefix = format!("{series} ");
    hub.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_socket_whose_frames_are_dropped_is_read_at_its_pace_and_kept() {
    // 10 a second: the first 10 at once, then one every 100 ms; the RPC
    // behind the 30th is read when the 30th's interval is over.
    let (took, dropped) = bad_frames_then_rpc(10, 30).await;
    assert_eq!(dropped, 30, "every frame is still read and dropped");
    assert_eq!(
        took,
        Duration::from_millis(2000),
        "20 frames past the burst"
    );
    // Within the burst: not paced.
    let (took, dropped) = bad_frames_then_rpc(10, 10).await;
    assert_eq!((took, dropped), (Duration::ZERO, 10));
    // Zero: never paced.
    let (took, dropped) = bad_frames_then_rpc(0, 30).await;
    assert_eq!((took, dropped), (Duration::ZERO, 30));
}

#[tokio::test(start_paused = true)]
async fn frames_the_routing_table_refuses_count_towards_the_pace() {
    const REFUSED: u64 = 200;
    let (hub, k, mut mallory) = mallory_on(
        config()
            .max_subscriptions_per_peer(1)
            .max_dropped_frames_per_sec(10),
    )
    .await;
    let start = tokio::time::Instant::now();
    let subscribes = async {
        // One topic held, then REFUSED subscribes past the cap.
        for i in 0..=REFUSED {
            let data = json!({ "topic": format!("t{i}") });
            let f = frame(
                &k,
                &fresh_id("sub"),
                "topic.subscribe",
                Some("mallory"),
                None,
                Some(&data),
            );
            mallory.send_text(f).await;
        }
        ask_server(&mut mallory, &k, "link.health").await
    };
    let r = subscribes.await;
    assert_eq!(r.data().unwrap()["result"]["topicCount"], 1, "{r:?}");
    assert_eq!(hub_dropped(&hub, "subscription-limit").await, REFUSED);
    // The reader is at most an inbox (64 frames) ahead of the table's
    // refusals; past a burst of 10, the rest is read at 10 a second.
    let paced = (REFUSED - 10 - 64) / 10;
    assert!(
        start.elapsed() >= Duration::from_secs(paced),
        "read at full speed: {:?}",
        start.elapsed()
    );
}

/// The hub's `name` counter (`link_hub_{name}_total`).
async fn hub_counter(hub: &link_hub::Hub, name: &str) -> u64 {
    hub_series(hub, &format!("link_hub_{name}_total")).await
}

/// beta subscribes to `news` and stops reading; mallory sends it `flood`
/// messages (publishes to `news`, or direct messages when `direct`), then
/// asks the hub's health. Returns the hub time the answer took and the
/// messages beta's outbox refused by then.
async fn messages_nobody_takes_then_rpc(
    max_dropped_frames_per_sec: u32,
    flood: u32,
    direct: bool,
) -> (Duration, u64) {
    let (hub, k, mut mallory) = mallory_on(
        config()
            .max_outbox_bytes(4096)
            .max_dropped_frames_per_sec(max_dropped_frames_per_sec),
    )
    .await;
    let mut beta = MemoryPeer::attach(&hub, "127.0.0.1:40001".parse().unwrap());
    beta.hello(&k, "beta").await;
    let news = json!({ "topic": "news" });
    let f = frame(
        &k,
        &fresh_id("sub"),
        "topic.subscribe",
        Some("beta"),
        None,
        Some(&news),
    );
    beta.send_text(f).await;
    // beta's health answer: its subscribe was handled before it.
    let id = fresh_id("beta-ask");
    let rpc = json!({ "rpcType": "link.health" });
    let f = frame(
        &k,
        &id,
        "rpc.request",
        Some("beta"),
        Some("server"),
        Some(&rpc),
    );
    beta.send_text(f).await;
    while beta.recv(&k, "rpc.response").await.id() != id {}
    let start = tokio::time::Instant::now();
    for i in 0..flood {
        let f = if direct {
            let data = json!({ "directType": "note", "directData": i });
            let id = fresh_id("dm");
            frame(
                &k,
                &id,
                "direct",
                Some("mallory"),
                Some("beta"),
                Some(&data),
            )
        } else {
            let data = json!({ "topic": "news", "payload": i });
            let id = fresh_id("pub");
            frame(&k, &id, "topic.message", Some("mallory"), None, Some(&data))
        };
        mallory.send_text(f).await;
    }
    let r = ask_server(&mut mallory, &k, "link.health").await;
    assert_eq!(r.data().unwrap()["ok"], true, "{r:?}");
    let refused = hub_counter(&hub, "outbox_overflow").await;
    drop(beta);
    (start.elapsed(), refused)
}

#[tokio::test(start_paused = true)]
async fn publishes_every_subscriber_refuses_count_towards_the_pace() {
    messages_every_recipient_refuses_are_paced(false).await;
}

#[tokio::test(start_paused = true)]
async fn direct_messages_the_target_refuses_count_towards_the_pace() {
    messages_every_recipient_refuses_are_paced(true).await;
}

async fn messages_every_recipient_refuses_are_paced(direct: bool) {
    const FLOOD: u32 = 400;
    // beta's channel and outbox take the first ones; every later one is
    // refused (one `outbox-overflow` each) and paced as a dropped frame:
    // 10 a second past a burst of 10, the reader at most an inbox (64
    // frames) ahead of the table.
    let (took, refused) = messages_nobody_takes_then_rpc(10, FLOOD, direct).await;
    assert!(refused > 200 && refused < u64::from(FLOOD), "{refused}");
    let paced = (refused - 10 - 64) / 10;
    assert!(
        took >= Duration::from_secs(paced),
        "read at full speed: {took:?} for {refused} refused"
    );
    // Zero: never paced; as many are refused (give or take the one the
    // writer had taken off the queue when the flood began).
    let (took, unpaced) = messages_nobody_takes_then_rpc(0, FLOOD, direct).await;
    assert_eq!(took, Duration::ZERO);
    assert!(unpaced.abs_diff(refused) <= 1, "{unpaced} vs {refused}");
}
