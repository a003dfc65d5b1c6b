//! A cluster of hubs over a real nats-server (Debian's, started by the
//! test on a port it picks): peers on different hubs call, message,
//! publish and see statuses as if on one hub; one connection per kind per
//! cluster; a stopped hub's peers leave; NATS lost and back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use link_hub::{ClusterConfig, HubConfig, HubEvent, Secret};
use link_protocol::DropReason;
use link_test_support::{
    NatsServer, TestHub, WAIT, fresh_id, hello_frame, key, next_event, protocol_error, ready,
};
use serde_json::json;
use tokio::sync::broadcast;

const SECRET: &str = "cluster-test-secret";
const CLUSTER_SECRET: &str = "inter-hub-secret";

/// Hubs find each other within a heartbeat; a hub is declared gone only
/// after seconds of silence, so a busy test machine never flaps one (the
/// tests that lose a hub stop it or NATS, which is seen at once).
const HEARTBEAT: Duration = Duration::from_millis(200);
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

async fn hub(nats: &NatsServer) -> TestHub {
    hub_with(nats, CLUSTER_SECRET).await
}

async fn hub_with(nats: &NatsServer, cluster_secret: &str) -> TestHub {
    let config = HubConfig::builder(Secret::shared(SECRET))
        .cluster(ClusterConfig::new(nats.url(), cluster_secret).heartbeat(HEARTBEAT, HUB_TIMEOUT))
        .build()
        .unwrap();
    TestHub::builder(config).client_secret(SECRET).start().await
}

/// Waits until `events` reports `kind` reachable on another hub.
async fn reachable(events: &mut broadcast::Receiver<Arc<HubEvent>>, kind: &str) {
    reachable_all(events, &[kind]).await;
}

/// Waits until `events` reports every one of `kinds` reachable, in any
/// order.
async fn reachable_all(events: &mut broadcast::Receiver<Arc<HubEvent>>, kinds: &[&str]) {
    let mut waiting: Vec<&str> = kinds.to_vec();
    while !waiting.is_empty() {
        let e = next_event(events, |e| {
            matches!(e, HubEvent::ClusterPeer { joined: true, .. })
        })
        .await;
        if let HubEvent::ClusterPeer { kind, .. } = &*e {
            waiting.retain(|k| k != kind);
        }
    }
}

/// Waits until `events` reports `kind` gone from another hub.
async fn unreachable(events: &mut broadcast::Receiver<Arc<HubEvent>>, kind: &str) {
    next_event(
        events,
        |e| matches!(e, HubEvent::ClusterPeer { kind: k, joined: false, .. } if k == kind),
    )
    .await;
}

#[tokio::test]
async fn peers_on_three_hubs_call_message_and_publish_as_on_one() {
    let nats = NatsServer::start().await;
    let (a, b, c) = (hub(&nats).await, hub(&nats).await, hub(&nats).await);
    let mut a_events = a.events();
    let mut c_events = c.events();

    let beta = ready(b.client("beta").handler("echo", |call| async move {
        Ok(json!({"echoed": call.data, "from": call.from}))
    }))
    .await;
    let gamma = ready(c.client("gamma")).await;
    reachable_all(&mut a_events, &["beta", "gamma"]).await;
    let alpha = ready(a.client("alpha")).await;
    reachable(&mut c_events, "alpha").await;

    // RPC across hubs: the answer comes back signed for alpha by its hub.
    let r = alpha
        .rpc("beta", "echo", Some(json!({"x": [1, 2.5, "é"]})))
        .await
        .unwrap();
    assert_eq!(r, json!({"echoed": {"x": [1, 2.5, "é"]}, "from": "alpha"}));

    // A kind nowhere in the cluster: RPC_NO_TARGET at once.
    let err = alpha.rpc("nobody", "echo", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");

    // Direct messages across hubs, in order.
    let mut directs = gamma.directs();
    for i in 0..20 {
        alpha.send("gamma", "note", Some(json!(i))).unwrap();
    }
    for i in 0..20 {
        let m = tokio::time::timeout(WAIT, directs.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.from.as_str(), m.msg_type.as_str()), ("alpha", "note"));
        assert_eq!(m.data(), Some(&json!(i)));
    }

    // A topic with subscribers on two other hubs: every message once per
    // subscriber, in the publisher's order.
    let mut on_b = beta.subscribe("news").unwrap();
    let mut on_c = gamma.subscribe("news").unwrap();
    // The hubs subscribe on NATS when their first peer does: probe until
    // both receive (no event says a NATS subscription is in place).
    probe_until_received(&alpha, &mut [&mut on_b, &mut on_c]).await;
    for i in 0..50 {
        alpha.publish("news", json!({"n": i})).unwrap();
    }
    for sub in [&mut on_b, &mut on_c] {
        for i in 0..50 {
            let m = tokio::time::timeout(WAIT, sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.from, "alpha");
            assert_eq!(m.payload(), Some(&json!({"n": i})));
        }
    }

    // link.topic.list, link.peer.list and link.health are cluster-wide.
    let topics = alpha.rpc("server", "link.topic.list", None).await.unwrap();
    let news = &topics["topics"][0];
    assert_eq!(news["topic"], "news", "{topics}");
    let mut subscribers: Vec<&str> = news["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    subscribers.sort();
    assert_eq!(subscribers, ["beta", "gamma"], "{topics}");
    let one = alpha
        .rpc("server", "link.topic.list", Some(json!({"topic": "news"})))
        .await
        .unwrap();
    assert_eq!(
        one["subscribers"].as_array().map(Vec::len),
        Some(2),
        "{one}"
    );

    let list = alpha.rpc("server", "link.peer.list", None).await.unwrap();
    let mut kinds: Vec<&str> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["alpha", "beta", "gamma"]);
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    let hubs = health["cluster"]["hubs"].as_array().unwrap();
    assert_eq!(hubs.len(), 3, "{health}");
    let peers: u64 = hubs.iter().map(|h| h["peers"].as_u64().unwrap()).sum();
    assert_eq!(peers, 3, "{health}");
    drop((beta, gamma));
}

/// Publishes probes until every subscription got one, then drains them.
async fn probe_until_received(
    publisher: &link_client::LinkClient,
    subs: &mut [&mut link_client::Subscription],
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = vec![false; subs.len()];
    while got.iter().any(|g| !g) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "probes never arrived"
        );
        publisher.publish("news", json!("probe")).unwrap();
        for (i, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(50), sub.recv()).await
            {
                assert_eq!(m.payload(), Some(&json!("probe")));
                got[i] = true;
            }
        }
    }
    // Probes still in flight to the other subscriber are drained.
    for sub in subs.iter_mut() {
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            assert_eq!(m.payload(), Some(&json!("probe")));
        }
    }
}

#[tokio::test]
async fn a_hello_on_another_hub_displaces_the_kind_with_4000() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut b_events = b.events();
    let mut first = a.peer("alpha", SECRET).await;
    reachable(&mut b_events, "alpha").await;
    let mut a_events = a.events();
    let _second = b.peer("alpha", SECRET).await;
    let (code, reason) = first.closed().await;
    assert_eq!(code, 4000, "{reason}");
    // Hub A now routes alpha to hub B.
    reachable(&mut a_events, "alpha").await;
}

#[tokio::test]
async fn statuses_cross_hubs() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut b_events = b.events();
    let mut watcher = b.peer("watcher", SECRET).await;
    let mut a_events = a.events();
    reachable(&mut a_events, "watcher").await;
    let mut alpha = a.peer("alpha", SECRET).await;
    reachable(&mut b_events, "alpha").await;
    alpha
        .send("status.update", None, Some(json!({"load": 0.5})))
        .await;
    // watcher's peer list (a Node peer's view) has alpha from hub A.
    let list = watcher.peers_update_with("alpha").await;
    let kinds: Vec<&str> = list.data().unwrap()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["watcher", "alpha"]);
    let update = watcher.recv("status.update").await;
    assert_eq!(update.from(), Some("server"));
    let data = update.data().unwrap();
    assert_eq!(data["from"], "alpha");
    assert_eq!(data["status"], json!({"load": 0.5}));
    // A newcomer on hub B gets alpha's status in its snapshot.
    let mut late = b.peer("late", SECRET).await;
    let snapshot = late.recv("status.snapshot").await;
    assert_eq!(
        snapshot.data().unwrap()["alpha"]["status"],
        json!({"load": 0.5}),
        "{:?}",
        snapshot.data()
    );
    // alpha leaves hub A: it leaves watcher's list on hub B.
    drop(alpha);
    watcher.peers_update_without("alpha").await;
}

#[tokio::test]
async fn a_stopped_hub_hands_its_peers_back_at_once() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut a_events = a.events();
    let _beta = b.peer("beta", SECRET).await;
    reachable(&mut a_events, "beta").await;
    b.stop().await;
    unreachable(&mut a_events, "beta").await;
    let alpha = ready(a.client("alpha")).await;
    let err = alpha.rpc("beta", "x", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");
    // And beta may connect to hub A at once.
    let _beta_again = a.peer("beta", SECRET).await;
}

#[tokio::test]
async fn a_hub_with_another_secret_is_not_part_of_the_cluster() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let outsider = hub_with(&nats, "not-the-secret").await;
    let mut a_events = a.events();
    let _mallory = outsider.peer("mallory", SECRET).await;
    let _beta = b.peer("beta", SECRET).await;
    // beta (an insider on hub B) becomes reachable; mallory never does.
    let seen = next_event(&mut a_events, |e| matches!(e, HubEvent::ClusterPeer { .. })).await;
    assert!(
        matches!(&*seen, HubEvent::ClusterPeer { kind, .. } if kind == "beta"),
        "{seen:?}"
    );
    let alpha = ready(a.client("alpha")).await;
    let err = alpha.rpc("mallory", "x", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");
}

#[tokio::test]
async fn with_nats_gone_each_hub_serves_its_own_and_the_cluster_reforms_when_it_is_back() {
    let mut nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut a_events = a.events();
    let _beta = ready(
        b.client("beta")
            .handler("where", |_| async { Ok(json!("b")) }),
    )
    .await;
    reachable(&mut a_events, "beta").await;
    let alpha = ready(a.client("alpha")).await;
    let _gamma = ready(
        a.client("gamma")
            .handler("where", |_| async { Ok(json!("a")) }),
    )
    .await;
    assert_eq!(alpha.rpc("beta", "where", None).await.unwrap(), json!("b"));

    nats.kill().await;
    // Hub B is out of reach: beta leaves A's view; a call to it fails at
    // once, typed; A's own peers carry on.
    unreachable(&mut a_events, "beta").await;
    let err = alpha.rpc("beta", "where", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");
    assert_eq!(alpha.rpc("gamma", "where", None).await.unwrap(), json!("a"));

    // NATS back on the same port and store: the hubs reconnect, the
    // leases are claimed again, beta is reachable again, no restart.
    nats.restart().await;
    reachable(&mut a_events, "beta").await;
    assert_eq!(alpha.rpc("beta", "where", None).await.unwrap(), json!("b"));
}

#[tokio::test]
async fn a_hello_captured_on_one_hub_is_refused_on_another() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut b_events = b.events();
    let k = key(SECRET);
    let hello = hello_frame(&k, &fresh_id("alpha-hello"), "alpha");
    let mut alpha = a.raw_peer().await;
    alpha.send_text(hello.clone()).await;
    alpha.recv(&k, "hello.ack").await;
    reachable(&mut b_events, "alpha").await;

    // Replayed on hub B while alpha is on A: refused as on one hub.
    let mut early = b.raw_peer().await;
    early.send_text(hello.clone()).await;
    let e = protocol_error(&mut b_events, DropReason::ReplayId).await;
    assert_eq!(
        (e.kind.as_deref(), e.msg_type.as_deref()),
        (Some("alpha"), Some("hello"))
    );

    // alpha leaves hub A; the captured hello, on hub B, is still refused.
    drop(alpha);
    unreachable(&mut b_events, "alpha").await;
    let mut attacker = b.raw_peer().await;
    attacker.send_text(hello.clone()).await;
    let e = protocol_error(&mut b_events, DropReason::ReplayId).await;
    assert_eq!(e.kind.as_deref(), Some("alpha"));
}

#[tokio::test]
async fn a_nats_client_without_the_secret_cannot_inject_forge_or_take_a_lease() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut a_events = a.events();
    let _beta = ready(
        b.client("beta")
            .handler("who", |call| async move { Ok(json!(call.from)) }),
    )
    .await;
    reachable(&mut a_events, "beta").await;
    let alpha = ready(a.client("alpha")).await;
    let mut news = alpha.subscribe("news").unwrap();
    let mut directs = alpha.directs();

    // An outsider on the same NATS: forged messages on every subject the
    // hubs read, a forged lease for beta, beta's lease deleted.
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let forged = |text: &str| bytes::Bytes::from(format!("{:032}{text}", 0));
    for subject in [
        "link.link.hb",
        "link.link.status",
        &format!("link.link.t.{}", "6e657773"),
    ] {
        nc.publish(subject.to_owned(), forged(r#"{"op":"bye"}"#))
            .await
            .unwrap();
    }
    let js = async_nats::jetstream::new(nc.clone());
    let kv = js.get_key_value("link_link").await.unwrap();
    kv.put("62657461", forged(r#"{"hub":"mallory","kind":"beta"}"#))
        .await
        .unwrap();
    kv.put(
        "6d616c6c6f7279",
        forged(r#"{"hub":"mallory","kind":"mallory"}"#),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();

    // beta is still on hub B and answers as itself; mallory is nowhere;
    // nothing forged reached alpha.
    assert_eq!(
        alpha.rpc("beta", "who", None).await.unwrap(),
        json!("alpha")
    );
    let err = alpha.rpc("mallory", "who", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");
    kv.delete("62657461").await.unwrap();
    assert_eq!(
        alpha.rpc("beta", "who", None).await.unwrap(),
        json!("alpha")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), news.recv())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(10), directs.recv())
            .await
            .is_err()
    );
    let metrics = a.hub.metrics().await;
    let rejected = metrics
        .lines()
        .find_map(|l| l.strip_prefix("link_hub_cluster_rejected_total "))
        .unwrap_or("0");
    assert_ne!(rejected, "0", "{metrics}");
}

#[tokio::test]
async fn a_timed_out_call_is_cancelled_on_the_other_hub() {
    let nats = NatsServer::start().await;
    let (a, b) = (hub(&nats).await, hub(&nats).await);
    let mut a_events = a.events();
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let seen = cancelled.clone();
    let _beta = ready(b.client("beta").handler("slow", move |call| {
        let seen = seen.clone();
        async move {
            call.cancel.cancelled().await;
            seen.notify_one();
            Ok(json!("too late"))
        }
    }))
    .await;
    reachable(&mut a_events, "beta").await;
    let alpha = ready(a.client("alpha")).await;
    let opts = link_client::RpcOptions {
        timeout: Some(Duration::from_millis(100)),
        cancel: None,
    };
    let err = alpha
        .rpc_with("beta", "slow", None, opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "RPC_TIMEOUT", "{err:?}");
    // alpha's rpc.cancel crossed to hub B and fired beta's token.
    tokio::time::timeout(WAIT, cancelled.notified())
        .await
        .unwrap();
    // The late answer is suppressed by alpha's client; the link stays good.
    let health = alpha.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(health["cluster"]["up"], true);
}

#[tokio::test]
async fn per_peer_keys_work_across_hubs_and_never_cross_nats() {
    let nats = NatsServer::start().await;
    let keys = [("alpha", "key-alpha"), ("beta", "key-beta")];
    // Hub A knows only alpha's key, hub B only beta's: each verifies and
    // signs for its own peers.
    let per_kind = |i: usize| {
        let config = HubConfig::builder(Secret::per_kind([keys[i]]))
            .cluster(
                ClusterConfig::new(nats.url(), CLUSTER_SECRET).heartbeat(HEARTBEAT, HUB_TIMEOUT),
            )
            .build()
            .unwrap();
        TestHub::builder(config).start()
    };
    let (a, b) = (per_kind(0).await, per_kind(1).await);
    let mut a_events = a.events();
    let client = |hub: &TestHub, (kind, key): (&str, &str)| {
        link_client::ClientConfig::builder()
            .url(hub.url.clone())
            .secret(key)
            .kind(kind)
    };
    let _beta =
        ready(client(&b, keys[1]).handler("who", |call| async move { Ok(json!(call.from)) })).await;
    reachable(&mut a_events, "beta").await;
    let alpha = ready(client(&a, keys[0])).await;
    assert_eq!(
        alpha.rpc("beta", "who", None).await.unwrap(),
        json!("alpha")
    );
}
