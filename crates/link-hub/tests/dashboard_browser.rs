//! The live dashboard in a real browser: Debian's headless Chromium, started
//! by the test and driven over the DevTools protocol
//! (`link_test_support::Chromium`). A hub with `/ui` and a bearer token on
//! 127.0.0.1:0; the page is refused without the token, and with it a peer
//! that connects appears within 2 s, its status shows within 2 s, and it
//! goes when it leaves. Each wait is a DOM condition re-checked on every
//! change with a 2 s deadline in the page; no sleep.
//!
//! Without Chromium the test fails and says how to install it (`.ci/run`
//! does). `dashboard_screenshot` (ignored) draws docs/img/dashboard.png.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use link_client::ClientConfig;
use link_hub::{HubConfig, HubServerBuilder, Secret};
use link_test_support::{Chromium, Peer, TestServer, WAIT, fresh_id, key, ready};
use serde_json::json;

const SECRET: &str = "browser-secret";
const TOKEN: &str = "browser-t0ken";
/// How soon a change must show on the page.
const SHOWS_WITHIN: Duration = Duration::from_secs(2);

fn builder() -> HubServerBuilder {
    TestServer::builder(HubConfig::builder(Secret::shared(SECRET)).build().unwrap())
        .enable_dashboard(true)
}

/// A JavaScript expression: the peers table's row for `kind`.
fn peer_row(kind: &str) -> String {
    format!(
        r#"[...document.querySelectorAll('#peers tr')].find((tr) => tr.dataset.kind === "{kind}")"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_connects_appears_and_its_status_shows() {
    let server = TestServer::start(builder().bearer_token(TOKEN)).await;
    let base = format!("http://{}", server.addr);
    let mut browser = Chromium::launch(1280, 900).await;

    // Without the token the page is refused.
    browser.goto(&format!("{base}/ui")).await;
    assert_eq!(
        browser.eval("document.body.innerText.trim()").await,
        "unauthorized: missing or wrong bearer token"
    );

    // With it, the page opens its feed (the same token, in the feed's URL).
    browser.goto(&format!("{base}/ui?token={TOKEN}")).await;
    assert!(
        browser
            .wait_for("document.body.dataset.feed === 'live'", WAIT)
            .await,
        "the feed never went live"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('k-peers').textContent")
            .await,
        "0"
    );
    // The feed itself is refused without the token, even from the page.
    assert_eq!(
        browser
            .eval("fetch('/ui/events', {method: 'HEAD'}).then((r) => r.status)")
            .await,
        401
    );

    let ws = format!("ws://{}/?token={TOKEN}", server.addr);
    let mut alpha = Peer::connect(&ws, "alpha", SECRET).await;
    assert!(
        browser
            .wait_for(
                &format!("{} !== undefined", peer_row("alpha")),
                SHOWS_WITHIN
            )
            .await,
        "alpha did not appear within 2 s"
    );
    let row = browser
        .eval(&format!("{}.innerText", peer_row("alpha")))
        .await;
    let row = row.as_str().unwrap();
    assert!(row.contains("127.0.0.1:"), "its address: {row}");
    assert!(row.contains("since "), "its connected time: {row}");

    alpha
        .send(
            "status.update",
            None,
            Some(json!({"phase": "ready", "load": 0.42})),
        )
        .await;
    let status = format!(
        r#"{}.querySelector(".status")?.textContent === '{{"load":0.42,"phase":"ready"}}'"#,
        peer_row("alpha")
    );
    assert!(
        browser.wait_for(&status, SHOWS_WITHIN).await,
        "alpha's status did not show within 2 s"
    );

    drop(alpha);
    assert!(
        browser
            .wait_for(
                &format!("{} === undefined", peer_row("alpha")),
                SHOWS_WITHIN
            )
            .await,
        "alpha did not go within 2 s"
    );
    browser.close().await;
}

/// Draws the screenshot in docs/operations.md: a few peers, topics and
/// traffic for half a minute. Run by hand:
/// `LINK_DASHBOARD_SCREENSHOT=docs/img/dashboard.png cargo nextest run -p
/// link-hub --test dashboard_browser --run-ignored only` (from the
/// workspace root; the path is relative to this crate otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "draws docs/img/dashboard.png; run by hand"]
async fn dashboard_screenshot() {
    let out = std::env::var("LINK_DASHBOARD_SCREENSHOT")
        .expect("LINK_DASHBOARD_SCREENSHOT: where to write the PNG");
    let server = TestServer::start(builder()).await;
    let mut browser = Chromium::launch(1280, 900).await;
    browser.goto(&format!("http://{}/ui", server.addr)).await;
    assert!(
        browser
            .wait_for("document.body.dataset.feed === 'live'", WAIT)
            .await
    );

    let url = server.url.clone();
    let client = |kind: &str| ClientConfig::builder().url(&url).secret(SECRET).kind(kind);
    let billing = ready(
        client("billing")
            .status(|| json!({"state": "ready", "queue": 3}))
            .handler("charge", |call| async move {
                tokio::time::sleep(Duration::from_micros(300)).await;
                Ok(json!({"charged": call.data}))
            }),
    )
    .await;
    let inventory =
        ready(client("inventory").status(|| json!({"state": "ready", "skus": 1284}))).await;
    let notifier =
        ready(client("notifier").status(|| json!({"state": "degraded", "smtp": "slow"}))).await;
    let analytics = ready(client("analytics")).await;
    let gateway =
        ready(client("gateway").status(|| json!({"state": "ready", "region": "eu-west-1"}))).await;
    let pricing = ready(client("pricing").status(|| json!({"state": "ready"}))).await;
    let _subs = [
        inventory.subscribe("orders.created").unwrap(),
        notifier.subscribe("orders.created").unwrap(),
        notifier.subscribe("inventory.low").unwrap(),
        analytics.subscribe("orders.created").unwrap(),
        analytics.subscribe("prices").unwrap(),
        gateway.subscribe("prices").unwrap(),
    ];
    // Two drops for the errors list: a forged frame and an invalid topic.
    let mut rogue = Peer::connect(&url, "legacy-worker", SECRET).await;
    let forged = link_test_support::frame(
        &key("an-old-secret"),
        &fresh_id("forged"),
        "topic.message",
        Some("legacy-worker"),
        None,
        Some(&json!({"topic": "orders.created", "payload": 1})),
    );
    rogue.send_raw(&forged).await;
    rogue
        .send("topic.subscribe", None, Some(json!({"topic": ""})))
        .await;
    rogue.barrier().await;

    // Half a minute of traffic, rising then settling.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..1500u32 {
        tick.tick().await;
        let burst = if (500..900).contains(&i) { 3 } else { 1 };
        for _ in 0..burst {
            gateway
                .publish("orders.created", json!({"order": i}))
                .unwrap();
            pricing
                .publish("prices", json!({"sku": i % 97, "eur": 9.99}))
                .unwrap();
        }
        if i % 4 == 0 {
            let _ = gateway.rpc("billing", "charge", Some(json!(i))).await;
        }
        if i % 25 == 0 {
            inventory
                .publish("inventory.low", json!({"sku": i % 13}))
                .unwrap();
            let _ = pricing.rpc("server", "link.health", None).await;
        }
    }
    // The page has drawn the latest snapshot; fit the viewport to it.
    let height = browser
        .eval("document.documentElement.scrollHeight")
        .await
        .as_u64()
        .unwrap();
    browser.resize(1280, u32::try_from(height).unwrap()).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    std::fs::write(&out, png).unwrap();
    browser.close().await;
    for c in [billing, inventory, notifier, analytics, gateway, pricing] {
        c.stop().await;
    }
}
