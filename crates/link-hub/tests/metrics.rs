//! `GET /metrics` over a real socket: the OpenMetrics text parses, and its
//! counters move with the traffic (frames by type, drops by reason, relayed
//! RPC latency, the peers gauge).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use link_hub::{HubConfig, Secret};
use link_test_support::{Peer, TestServer, frame, fresh_id, http_get, key};
use serde_json::json;

const SECRET: &str = "metrics-secret";

/// `name{labels}` -> value, for every sample line of the exposition text.
/// Checks the shape as it goes: `# HELP`/`# TYPE` comments, one sample per
/// line, and `# EOF` last.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut lines = text.lines().peekable();
    let mut saw_eof = false;
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "# EOF is not last");
            saw_eof = true;
            break;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let word = comment.split(' ').next().unwrap_or_default();
            assert!(
                matches!(word, "HELP" | "TYPE" | "UNIT"),
                "odd comment {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        assert!(series.starts_with("link_hub_"), "unprefixed {series}");
        samples.insert(series.to_owned(), value.parse().expect("a number"));
    }
    assert!(saw_eof, "no # EOF");
    samples
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let r = http_get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    parse(&r.body)
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing in {m:?}"))
}

fn server_builder() -> link_hub::HubServerBuilder {
    TestServer::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
}

#[tokio::test]
async fn counters_move_with_the_traffic() {
    let server = TestServer::start(server_builder()).await;
    let url = server.url.clone();
    let mut publisher = Peer::connect(&url, "publisher", SECRET).await;
    let mut sub = Peer::connect(&url, "sub", SECRET).await;
    let mut callee = Peer::connect(&url, "callee", SECRET).await;
    sub.subscribe("prices").await;
    publisher.barrier().await;
    callee.barrier().await;

    let before = scrape(&server).await;
    assert_eq!(get(&before, "link_hub_peers"), 3.0);
    assert_eq!(get(&before, "link_hub_sockets"), 3.0);
    assert_eq!(get(&before, "link_hub_pending_sockets"), 0.0);
    assert_eq!(
        get(&before, "link_hub_frames_in_total{type=\"hello\"}"),
        3.0
    );

    // N published messages: N topic.message frames in, N out to the one
    // subscriber.
    const N: usize = 25;
    for i in 0..N {
        publisher
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "prices", "payload": i})),
            )
            .await;
    }
    for _ in 0..N {
        sub.recv("topic.message").await;
    }

    // Sixteen relayed RPCs, publisher -> callee -> publisher: one in 16 is
    // timed. A direct message to an offline kind goes in the middle: read
    // (counted), routed nowhere.
    for i in 0..16 {
        let id = publisher
            .send(
                "rpc.request",
                Some("callee"),
                Some(json!({"rpcType": "sum", "rpcData": [i, 2]})),
            )
            .await;
        let req = callee.recv("rpc.request").await;
        assert_eq!(req.id(), id);
        if i == 0 {
            callee
                .send("direct", Some("nobody"), Some(json!({"type": "x"})))
                .await;
        }
        callee
            .send_id(
                &id,
                "rpc.response",
                Some("publisher"),
                Some(json!({"ok": true, "result": i + 2})),
            )
            .await;
        let resp = publisher.recv("rpc.response").await;
        assert_eq!(resp.id(), id);
    }

    // A frame signed with the wrong key is dropped as bad-signature.
    let forged = frame(
        &key("not-the-secret"),
        &fresh_id("forged"),
        "topic.message",
        Some("publisher"),
        None,
        Some(&json!({"topic": "prices", "payload": "x"})),
    );
    publisher.send_raw(&forged).await;
    publisher.barrier().await;

    let after = scrape(&server).await;
    let delta = |series: &str| get(&after, series) - before.get(series).copied().unwrap_or(0.0);
    assert_eq!(
        delta("link_hub_frames_in_total{type=\"topic.message\"}"),
        N as f64
    );
    assert_eq!(
        delta("link_hub_frames_out_total{type=\"topic.message\"}"),
        N as f64
    );
    assert_eq!(
        delta("link_hub_frames_in_total{type=\"rpc.request\"}"),
        17.0,
        "the RPCs and the barrier"
    );
    assert_eq!(
        delta("link_hub_frames_in_total{type=\"rpc.response\"}"),
        16.0
    );
    assert_eq!(delta("link_hub_frames_in_total{type=\"direct\"}"), 1.0);
    assert_eq!(
        delta("link_hub_frames_dropped_total{reason=\"bad-signature\"}"),
        1.0
    );
    assert_eq!(
        delta("link_hub_rpc_relayed_duration_seconds_count"),
        1.0,
        "one in 16 sampled"
    );
    assert_eq!(
        delta("link_hub_rpc_relayed_duration_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(delta("link_hub_rpc_relayed_duration_seconds_sum") >= 0.0);
    assert_eq!(
        delta("link_hub_rpc_server_duration_seconds_count{rpc_type=\"link.topic.list\"}"),
        1.0,
        "the barrier"
    );
    assert_eq!(get(&after, "link_hub_rpc_relayed_in_flight"), 0.0);
    assert!(delta("link_hub_received_bytes_total") > 0.0);
    assert!(delta("link_hub_sent_bytes_total") > 0.0);

    // The peers gauge follows membership (older peer lists are let go first).
    publisher.settle().await;
    drop(callee);
    publisher.peers_update_without("callee").await;
    let later = scrape(&server).await;
    assert_eq!(get(&later, "link_hub_peers"), 2.0);
    // What the callee's socket counted outlives it: counters never go back.
    let series = "link_hub_frames_in_total{type=\"rpc.response\"}";
    assert_eq!(get(&later, series), get(&after, series));
    server.server.stop().await.unwrap();
}

#[tokio::test]
async fn the_route_can_be_turned_off() {
    let server = TestServer::start(server_builder().enable_metrics_route(false)).await;
    let r = http_get(server.addr, "/metrics").await;
    assert_eq!(r.status, 404);
    server.server.stop().await.unwrap();
}
