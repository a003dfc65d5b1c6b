//! Per-peer rate limits through a real hub: the `RPC_RATE_LIMITED` answer on
//! the wire (scripted peer and `LinkClient`), publish/send/status dropped
//! with a `protocol-error` `rate-limited` event (at most one per class and
//! peer per second: exact counts under paused time) while other peers are
//! unaffected, the per-kind table over the default, the counters, the
//! optional 1008 close, the refill under paused time, and no limits by
//! default.
//!
//! Limits here are per hour (`N/h`), so no bucket refills while a test
//! runs: every count is exact without reading a clock. A `link.topic.list`
//! round trip is the barrier (the hub checks and handles one socket's frames
//! in order); RPCs are left unlimited wherever a test uses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use link_hub::{Hub, HubConfig, HubEvent, MessageClass, RateLimited, RateLimits, Secret};
use link_protocol::{DropReason, ProtocolError};
use link_test_support::{
    MemoryPeer, TestHub, drain_events, frame, fresh_id, key, next_event, ready,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

const S: &str = "demo-secret";

fn config(limits: RateLimits) -> HubConfig {
    HubConfig::builder(Secret::shared(S))
        .rate_limits(limits)
        .handler("echo", |req| async move {
            Ok(req.rpc_data.unwrap_or(Value::Null))
        })
        .build()
        .unwrap()
}

fn limits(settings: &[&str]) -> RateLimits {
    settings
        .iter()
        .fold(RateLimits::new(), |l, s| l.apply_setting(s).unwrap())
}

/// The `rate-limited` protocol errors among the events so far.
fn rate_limited_events(rx: &mut broadcast::Receiver<Arc<HubEvent>>) -> Vec<ProtocolError> {
    drain_events(rx)
        .iter()
        .filter_map(|e| match &**e {
            HubEvent::ProtocolError { error, .. } if error.reason == DropReason::RateLimited => {
                Some(error.clone())
            }
            _ => None,
        })
        .collect()
}

fn counts(r: RateLimited) -> [u64; 5] {
    [r.rpc, r.publish, r.send, r.status, r.disconnects]
}

#[tokio::test]
async fn an_rpc_over_the_limit_is_answered_rpc_rate_limited_on_the_wire() {
    let hub = TestHub::start(config(limits(&["rpc=2/h", "beta:rpc=off"]))).await;
    let mut rx = hub.hub.events();
    let mut beta = hub.peer("beta", S).await;
    let mut alpha = hub.peer("alpha", S).await;

    let r = alpha.rpc("server", "echo", Some(json!(1))).await;
    assert_eq!(r.data().unwrap(), &json!({"ok": true, "result": 1}));
    let id = alpha
        .send(
            "rpc.request",
            Some("beta"),
            Some(json!({"rpcType": "work", "rpcData": 2})),
        )
        .await;
    assert_eq!(beta.recv("rpc.request").await.id(), id);

    // The third RPC of the hour, to server or to a peer: answered by the
    // hub with the request's id, from "server", the documented error shape.
    let wire = alpha.rpc("server", "echo", Some(json!(3))).await;
    assert_eq!(wire.from(), Some("server"));
    assert_eq!(
        wire.data().unwrap(),
        &json!({"ok": false, "error": "Rate limit exceeded", "code": "RPC_RATE_LIMITED"})
    );
    let to_beta = alpha.rpc("beta", "work", Some(json!(4))).await;
    assert_eq!(to_beta.from(), Some("server"));
    assert_eq!(to_beta.data().unwrap()["code"], "RPC_RATE_LIMITED");
    // beta (rpc=off for its kind) is not limited and saw nothing more.
    beta.assert_quiet().await;
    for _ in 0..5 {
        let r = beta.rpc("server", "echo", Some(json!("b"))).await;
        assert_eq!(r.data().unwrap()["ok"], true);
    }

    assert_eq!(counts(hub.hub.rate_limited()), [2, 0, 0, 0, 0]);
    let events = rate_limited_events(&mut rx);
    // The first refusal is reported; the second only if a second passed.
    assert!((1..=2).contains(&events.len()), "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind.as_deref(), Some("alpha"));
    assert_eq!(e.msg_type.as_deref(), Some("rpc.request"));
    assert_eq!(e.detail, Some("rpc"));
}

#[tokio::test]
async fn a_link_client_sees_rpc_rate_limited_as_a_remote_error_code() {
    let hub = TestHub::builder(config(limits(&["rpc=1/h"])))
        .client_secret(S)
        .start()
        .await;
    let alpha = ready(hub.client("alpha")).await;
    assert_eq!(
        alpha.rpc("server", "echo", Some(json!(1))).await.unwrap(),
        json!(1)
    );
    let err = alpha
        .rpc("server", "echo", Some(json!(2)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "RPC_RATE_LIMITED");
    let link_client::LinkError::RpcRemote(remote) = err else {
        panic!("not a remote error: {err:?}");
    };
    assert_eq!(remote.message, "Rate limit exceeded");
    alpha.stop().await;
}

#[tokio::test]
async fn a_publish_flood_is_dropped_counted_and_reported_once_while_others_flow() {
    let hub = TestHub::start(config(limits(&["publish=3/h"]))).await;
    let mut rx = hub.hub.events();
    let mut sub = hub.peer("sub", S).await;
    sub.subscribe("t").await;
    let mut flooder = hub.peer("flooder", S).await;
    let mut calm = hub.peer("calm", S).await;

    for n in 0..30 {
        flooder
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "t", "payload": {"f": n}})),
            )
            .await;
        if n % 10 == 0 {
            calm.send(
                "topic.message",
                None,
                Some(json!({"topic": "t", "payload": {"c": n}})),
            )
            .await;
        }
    }
    flooder.barrier().await;
    calm.barrier().await;

    let got: Vec<Value> = sub
        .settle()
        .await
        .iter()
        .filter(|e| e.msg_type() == Some("topic.message"))
        .map(|e| e.data().unwrap()["payload"].clone())
        .collect();
    let from_flooder: Vec<&Value> = got.iter().filter(|d| d.get("f").is_some()).collect();
    let from_calm: Vec<&Value> = got.iter().filter(|d| d.get("c").is_some()).collect();
    // The flooder's first three (its burst), in order; calm's three, all.
    assert_eq!(
        from_flooder,
        [&json!({"f": 0}), &json!({"f": 1}), &json!({"f": 2})]
    );
    assert_eq!(
        from_calm,
        [&json!({"c": 0}), &json!({"c": 10}), &json!({"c": 20})]
    );

    assert_eq!(counts(hub.hub.rate_limited()), [0, 27, 0, 0, 0]);
    // Every refusal is counted in the metrics (events are paced, counts not).
    let metrics = hub.hub.metrics().await;
    for line in [
        "link_hub_rate_limited_total{class=\"publish\"} 27",
        "link_hub_rate_limited_total{class=\"rpc\"} 0",
        "link_hub_rate_limit_disconnects_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let events = rate_limited_events(&mut rx);
    // Reported at most once a second: far fewer events than refusals.
    assert!(!events.is_empty() && events.len() < 27, "{events:?}");
    assert_eq!(events[0].kind.as_deref(), Some("flooder"));
    assert_eq!(events[0].msg_type.as_deref(), Some("topic.message"));
    assert_eq!(events[0].detail, Some("publish"));
    // The flooder stays connected (no disconnect configured).
    let r = flooder
        .rpc("server", "echo", Some(json!("still here")))
        .await;
    assert_eq!(r.data().unwrap()["result"], "still here");
}

#[tokio::test]
async fn sends_and_statuses_over_the_limit_are_dropped() {
    let hub = TestHub::start(config(limits(&["send=1/h", "status=2/h"]))).await;
    let mut rx = hub.hub.events();
    let mut beta = hub.peer("beta", S).await;
    let mut alpha = hub.peer_seen_by("alpha", S, &mut [&mut beta]).await;
    for n in 0..3 {
        alpha
            .send(
                "direct",
                Some("beta"),
                Some(json!({"directType": "d", "directData": n})),
            )
            .await;
        alpha
            .send("status.update", None, Some(json!({"n": n})))
            .await;
    }
    alpha.barrier().await;
    let got = beta.settle().await;
    let directs: Vec<Value> = got
        .iter()
        .filter(|e| e.msg_type() == Some("direct"))
        .map(|e| e.data().unwrap()["directData"].clone())
        .collect();
    assert_eq!(directs, [json!(0)]);
    let statuses: Vec<Value> = got
        .iter()
        .filter(|e| e.msg_type() == Some("status.update"))
        .map(|e| e.data().unwrap()["status"].clone())
        .collect();
    // Queued statuses of one peer conflate, so beta may see 0 and 1 or
    // just 1; never 2.
    assert_eq!(statuses.last(), Some(&json!({"n": 1})));
    assert!(!statuses.contains(&json!({"n": 2})));
    // The hub's stored status is the last one that passed.
    let state = hub.hub.state().await;
    let alpha_status = state
        .last_status
        .iter()
        .find(|(k, _)| k == "alpha")
        .unwrap();
    assert_eq!(alpha_status.1.status, Some(json!({"n": 1})));

    assert_eq!(counts(hub.hub.rate_limited()), [0, 0, 2, 1, 0]);
    let details: Vec<_> = rate_limited_events(&mut rx)
        .iter()
        .map(|e| e.detail.unwrap())
        .collect();
    // Reported per class: the first send refusal (at 1) comes before the
    // status one (at 2).
    assert_eq!(details.first(), Some(&"send"));
    assert!(details.contains(&"status"), "{details:?}");
}

#[tokio::test]
async fn the_per_kind_table_overrides_the_default() {
    let table = RateLimits::from_json(
        r#"{
            "default": {"publish": "1/h"},
            "kinds": {"ingest": {"publish": "5/h"}, "admin": {"publish": "off"}}
        }"#,
    )
    .unwrap();
    let hub = TestHub::start(config(table)).await;
    let mut sub = hub.peer("sub", S).await;
    sub.subscribe("t").await;
    let mut ingest = hub.peer("ingest", S).await;
    let mut admin = hub.peer("admin", S).await;
    let mut other = hub.peer("other", S).await;
    for (peer, n) in [(&mut ingest, 8), (&mut admin, 20), (&mut other, 4)] {
        for i in 0..n {
            peer.send(
                "topic.message",
                None,
                Some(json!({"topic": "t", "payload": i})),
            )
            .await;
        }
        peer.barrier().await;
    }
    let mut per_sender = std::collections::BTreeMap::<String, usize>::new();
    for e in sub.settle().await {
        if e.msg_type() == Some("topic.message") {
            *per_sender.entry(e.from().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        per_sender.into_iter().collect::<Vec<_>>(),
        [
            ("admin".to_owned(), 20),
            ("ingest".to_owned(), 5),
            ("other".to_owned(), 1)
        ]
    );
    assert_eq!(counts(hub.hub.rate_limited()), [0, 3 + 3, 0, 0, 0]);
}

#[tokio::test]
async fn a_peer_over_the_limit_n_times_in_a_row_is_closed_1008_when_configured() {
    let limits = limits(&["publish=1/h"]).disconnect_after(NonZeroU32::new(3));
    let hub = TestHub::start(config(limits)).await;
    let mut rx = hub.hub.events();
    let mut watcher = hub.peer("watcher", S).await;
    let mut flooder = hub.peer_seen_by("flooder", S, &mut [&mut watcher]).await;
    for n in 0..10 {
        flooder
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "t", "payload": n})),
            )
            .await;
    }
    assert_eq!(flooder.closed().await, (1008, "rate limited".to_owned()));
    let e = next_event(&mut rx, |e| matches!(e, HubEvent::PeerDisconnect { .. })).await;
    let HubEvent::PeerDisconnect {
        kind, code, reason, ..
    } = &*e
    else {
        unreachable!()
    };
    assert_eq!(
        (kind.as_str(), *code, reason.as_str()),
        ("flooder", Some(1008), "rate limited")
    );
    watcher.peers_update_without("flooder").await;
    // 1 passed, the 3 refusals in a row closed it; what came after was
    // not read.
    assert_eq!(counts(hub.hub.rate_limited()), [0, 3, 0, 0, 1]);
}

#[tokio::test]
async fn without_limits_nothing_is_refused() {
    let hub = TestHub::start(config(RateLimits::new())).await;
    assert!(hub.hub.config().rate_limits().is_none());
    let mut sub = hub.peer("sub", S).await;
    sub.subscribe("t").await;
    let mut alpha = hub.peer("alpha", S).await;
    for n in 0..300 {
        alpha
            .send(
                "topic.message",
                None,
                Some(json!({"topic": "t", "payload": n})),
            )
            .await;
    }
    for _ in 0..50 {
        let r = alpha.rpc("server", "echo", Some(json!(0))).await;
        assert_eq!(r.data().unwrap()["ok"], true);
    }
    let got = sub
        .settle()
        .await
        .into_iter()
        .filter(|e| e.msg_type() == Some("topic.message"))
        .count();
    assert_eq!(got, 300);
    assert_eq!(hub.hub.rate_limited(), RateLimited::default());
}

fn remote() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// One publish from `peer`, then a `link.topic.list` round trip: once it
/// returns, the hub has checked the publish.
async fn publish_and_sync(peer: &mut MemoryPeer, k: &link_protocol::Key, n: u32) {
    let data = json!({"topic": "t", "payload": n});
    peer.send_text(frame(
        k,
        &fresh_id("p"),
        "topic.message",
        Some("a"),
        None,
        Some(&data),
    ))
    .await;
    let rpc = json!({"rpcType": "link.topic.list"});
    let id = fresh_id("sync");
    peer.send_text(frame(
        k,
        &id,
        "rpc.request",
        Some("a"),
        Some("server"),
        Some(&rpc),
    ))
    .await;
    loop {
        let r = peer.recv(k, "rpc.response").await;
        if r.id() == id {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_bucket_refills_with_hub_time() {
    let hub = Hub::new(config(limits(&["publish=1/s,burst=2"])));
    let mut rx = hub.events();
    let k = key(S);
    let mut a = MemoryPeer::attach(&hub, remote());
    a.hello(&k, "a").await;
    let refused = |hub: &Hub| hub.rate_limited().get(MessageClass::Publish);
    for n in 0..3 {
        publish_and_sync(&mut a, &k, n).await;
    }
    assert_eq!(refused(&hub), 1, "burst 2: the third is refused");
    assert_eq!(rate_limited_events(&mut rx).len(), 1, "reported");
    tokio::time::advance(Duration::from_millis(999)).await;
    publish_and_sync(&mut a, &k, 3).await;
    assert_eq!(refused(&hub), 2, "not a whole second yet");
    assert_eq!(rate_limited_events(&mut rx).len(), 0, "reported < 1 s ago");
    tokio::time::advance(Duration::from_millis(1)).await;
    publish_and_sync(&mut a, &k, 4).await;
    assert_eq!(refused(&hub), 2, "one earned back after 1 s");
    publish_and_sync(&mut a, &k, 5).await;
    assert_eq!(refused(&hub), 3);
    assert_eq!(
        rate_limited_events(&mut rx).len(),
        1,
        "1 s after the report"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    for n in 6..8 {
        publish_and_sync(&mut a, &k, n).await;
    }
    publish_and_sync(&mut a, &k, 8).await;
    assert_eq!(
        refused(&hub),
        4,
        "a long pause refills the burst (2), no more"
    );
    assert_eq!(rate_limited_events(&mut rx).len(), 1);
}
