//! Client failover across several hub URLs (docs/client.md, *Failover*):
//! real in-process hubs on 127.0.0.1:0, dead URLs on reserved closed
//! ports. Every wait is on an event or a result; timeouts only guard
//! against hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use link_client::{ClientConfig, LinkClient, LinkEvent, UrlOrder};
use link_hub::{HubConfig, HubEvent, Secret};
use link_test_support::{ClosedPort, TestHub, WAIT, next_event, ready};
use serde_json::json;
use tokio::sync::broadcast;

const SECRET: &str = "s3cret";

/// A backoff far longer than any test: a test that waited for one would
/// hang (and fail on its guard) instead of passing slowly.
const NEVER: Duration = Duration::from_secs(3600);

fn hub_config() -> HubConfig {
    HubConfig::builder(Secret::shared(SECRET)).build().unwrap()
}

/// A client config for `urls`, in order.
fn client(kind: &str, urls: &[&str]) -> link_client::ClientConfigBuilder {
    ClientConfig::builder()
        .urls(urls.iter().copied())
        .secret(SECRET)
        .kind(kind)
        .reconnect_initial(Duration::from_millis(20))
        .reconnect_max(Duration::from_millis(20))
}

/// The next `Connect` event's URL (skipping everything else).
async fn next_connect(events: &mut broadcast::Receiver<Arc<LinkEvent>>) -> String {
    let e = next_event(events, |e| matches!(e, LinkEvent::Connect { .. })).await;
    match &*e {
        LinkEvent::Connect { url, .. } => url.clone(),
        _ => unreachable!(),
    }
}

/// Waits for the link to be ready again after a reconnect.
async fn next_ready(events: &mut broadcast::Receiver<Arc<LinkEvent>>) {
    next_event(events, |e| matches!(e, LinkEvent::Ready { .. })).await;
}

#[tokio::test]
async fn a_dead_first_url_fails_over_to_the_second_without_a_backoff() {
    let dead = ClosedPort::new();
    let hub = TestHub::shared(SECRET).await;
    // A backoff between the two URLs would hang the test.
    let link = LinkClient::new(
        client("alpha", &[&dead.url(), &hub.url])
            .reconnect_initial(NEVER)
            .reconnect_max(NEVER)
            .build()
            .unwrap(),
    );
    let mut events = link.events();
    link.ready(Some(WAIT)).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match &*e {
            LinkEvent::ConnectFailed { attempt, error } => {
                seen.push(format!("failed {} attempt={attempt}", error.url()));
            }
            LinkEvent::Connect { url, .. } => seen.push(format!("connect {url}")),
            LinkEvent::Reconnecting { .. } => seen.push("reconnecting".into()),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            format!("failed {} attempt=0", dead.url()),
            format!("connect {}", hub.url)
        ]
    );
    assert_eq!(link.connected_url().as_deref(), Some(hub.url.as_str()));
    let health = link.rpc("server", "link.health", None).await.unwrap();
    assert!(health.is_object(), "{health}");
    link.stop().await;
    assert_eq!(link.connected_url(), None, "no URL once stopped");
}

#[tokio::test]
async fn losing_the_hub_fails_over_and_restores_subscriptions_and_handlers() {
    let first = TestHub::shared(SECRET).await;
    let (second, mut second_events) = TestHub::builder(hub_config())
        .client_secret(SECRET)
        .start_with_events()
        .await;
    let alpha = LinkClient::new(
        client("alpha", &[&first.url, &second.url])
            .handler("ping", |call| async move { Ok(json!({"pong": call.data})) })
            .build()
            .unwrap(),
    );
    alpha.ready(Some(WAIT)).await.unwrap();
    let mut events = alpha.events();
    assert_eq!(alpha.connected_url().as_deref(), Some(first.url.as_str()));
    let mut news = alpha.subscribe("news").unwrap();
    // beta lives on the second hub only.
    let beta = ready(second.client("beta")).await;

    let _dead = first.kill().await;
    // alpha moves to the second hub and says so.
    assert_eq!(next_connect(&mut events).await, second.url);
    next_ready(&mut events).await;
    assert_eq!(alpha.connected_url().as_deref(), Some(second.url.as_str()));
    // Its subscription is replayed there, as on any reconnect…
    next_event(&mut second_events, |e| {
        matches!(e, HubEvent::TopicSubscribe { kind, topic } if kind == "alpha" && topic == "news")
    })
    .await;
    beta.publish("news", json!({"n": 1})).unwrap();
    let msg = tokio::time::timeout(WAIT, news.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (msg.from.as_str(), msg.payload()),
        ("beta", Some(&json!({"n": 1})))
    );
    // …and it is registered there under its kind, with its handler.
    let answer = beta.rpc("alpha", "ping", Some(json!(7))).await.unwrap();
    assert_eq!(answer, json!({"pong": 7}));
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test]
async fn ordered_failover_prefers_the_first_url_again_once_it_is_back() {
    let primary = TestHub::shared(SECRET).await;
    let second = TestHub::shared(SECRET).await;
    let third = TestHub::shared(SECRET).await;
    let (primary_url, second_url, third_url) =
        (primary.url.clone(), second.url.clone(), third.url.clone());
    let link = LinkClient::new(
        client("alpha", &[&primary_url, &second_url, &third_url])
            .build()
            .unwrap(),
    );
    link.ready(Some(WAIT)).await.unwrap();
    let mut events = link.events();
    assert_eq!(link.connected_url().as_deref(), Some(primary_url.as_str()));

    // The primary dies: the link moves on to the next URL.
    let port = primary.kill().await;
    assert_eq!(next_connect(&mut events).await, second_url);
    next_ready(&mut events).await;

    // The primary comes back on its address; nothing moves yet (no
    // reconnect without a reason).
    let _primary = TestHub::builder(hub_config())
        .client_secret(SECRET)
        .on(port)
        .start()
        .await;
    link.rpc("server", "link.health", None).await.unwrap();
    assert_eq!(link.connected_url().as_deref(), Some(second_url.as_str()));

    // The second hub dies: the next reconnect goes back to the primary, not
    // on to the third URL.
    let _dead = second.kill().await;
    assert_eq!(next_connect(&mut events).await, primary_url);
    next_ready(&mut events).await;
    assert_eq!(link.connected_url().as_deref(), Some(primary_url.as_str()));
    link.stop().await;
    drop(third);
}

/// The URLs a seeded client with random order dials while every one is
/// dead, over its first cycle and `retries` more.
async fn dial_order(seed: u64, urls: &[&str], retries: u32) -> Vec<String> {
    let link = LinkClient::new(
        client("alpha", urls)
            .url_order(UrlOrder::Random)
            .random_seed(seed)
            .max_reconnect_attempts(Some(retries))
            .reconnect_initial(Duration::from_millis(1))
            .reconnect_max(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let mut events = link.events();
    link.start();
    let mut dialled = Vec::new();
    loop {
        let e = next_event(&mut events, |e| {
            matches!(
                e,
                LinkEvent::ConnectFailed { .. } | LinkEvent::ReconnectExhausted { .. }
            )
        })
        .await;
        match &*e {
            LinkEvent::ConnectFailed { error, .. } => dialled.push(error.url().to_owned()),
            _ => return dialled,
        }
    }
}

#[tokio::test]
async fn random_failover_visits_every_url_in_each_cycle_in_a_seeded_order() {
    let dead = [ClosedPort::new(), ClosedPort::new(), ClosedPort::new()];
    let owned: Vec<String> = dead.iter().map(ClosedPort::url).collect();
    let urls: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut sorted = owned.clone();
    sorted.sort();

    let order = dial_order(11, &urls, 3).await;
    assert_eq!(order.len(), 12, "four cycles of three URLs: {order:?}");
    for cycle in order.chunks(3) {
        let mut cycle = cycle.to_vec();
        cycle.sort();
        assert_eq!(cycle, sorted, "each URL once per cycle: {order:?}");
    }
    // The seed makes the order reproducible…
    assert_eq!(dial_order(11, &urls, 3).await, order);
    // …and it is not the configured order.
    let configured: Vec<String> = owned.iter().cycle().take(12).cloned().collect();
    assert_ne!(order, configured);

    // A live hub among dead ones is found within the first cycle,
    // whatever its place in the shuffle.
    let hub = TestHub::shared(SECRET).await;
    for seed in 0..4 {
        let link = LinkClient::new(
            client("alpha", &[urls[0], &hub.url, urls[1]])
                .url_order(UrlOrder::Random)
                .random_seed(seed)
                .reconnect_initial(NEVER)
                .reconnect_max(NEVER)
                .build()
                .unwrap(),
        );
        link.ready(Some(WAIT)).await.unwrap();
        assert_eq!(link.connected_url().as_deref(), Some(hub.url.as_str()));
        link.stop().await;
    }
}
