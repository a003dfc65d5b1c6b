//! `link-cli hub --cluster`: a real hub process in a cluster with an
//! in-process hub over a real nats-server, then killed with SIGKILL (no
//! goodbye, no lease handed back): its peers leave the other hub's view,
//! a call waiting on it ends with a typed error, and its kinds may connect
//! to the other hub at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use link_client::{ClientConfig, LinkClient};
use link_hub::{ClusterConfig, HubConfig, HubEvent, Secret};
use link_test_support::{LinkCli, NatsServer, TestHub, WAIT, next_event, ready};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

const SECRET: &str = "cluster-cli-secret";

async fn next_cluster_peer(
    events: &mut broadcast::Receiver<Arc<HubEvent>>,
    kind: &str,
    joined: bool,
) {
    next_event(events, |e| {
        matches!(e, HubEvent::ClusterPeer { kind: k, joined: j, .. } if k == kind && *j == joined)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hub_process_leaves_the_cluster_and_its_kinds_move() {
    let nats = NatsServer::start().await;
    // Hub A in process, with the CLI's defaults (heartbeat 1 s, gone after
    // 3 s of silence).
    let config = HubConfig::builder(Secret::shared(SECRET))
        .cluster(ClusterConfig::new(nats.url(), SECRET))
        .build()
        .unwrap();
    let a = TestHub::builder(config).client_secret(SECRET).start().await;
    let mut a_events = a.events();
    // Hub B: the binary, the cluster secret defaulting to --secret.
    let b = LinkCli::new(env!("CARGO_BIN_EXE_link-cli")).hub(&[
        "--secret",
        SECRET,
        "--cluster",
        &nats.url(),
    ]);
    let (_, b_addr) = tokio::task::block_in_place(|| b.announced());

    // beta on hub B answers `slow` never, but says it was called.
    let (called_tx, mut called) = mpsc::unbounded_channel();
    let beta = LinkClient::new(
        ClientConfig::builder()
            .url(format!("ws://{b_addr}"))
            .secret(SECRET)
            .kind("beta")
            .handler("slow", move |_| {
                let _ = called_tx.send(());
                std::future::pending()
            })
            .build()
            .unwrap(),
    );
    beta.ready(Some(WAIT)).await.unwrap();
    next_cluster_peer(&mut a_events, "beta", true).await;

    let alpha = ready(a.client("alpha").rpc_timeout(Duration::from_secs(60))).await;
    let call = {
        let alpha = alpha.clone();
        tokio::spawn(async move { alpha.rpc("beta", "slow", Some(json!(1))).await })
    };
    tokio::time::timeout(WAIT, called.recv())
        .await
        .unwrap()
        .unwrap();

    tokio::task::block_in_place(|| b.kill());
    // Within the hang guard (10 s): beta leaves hub A's view, and the call
    // waiting on it ends typed (not at its 60 s timeout).
    next_cluster_peer(&mut a_events, "beta", false).await;
    let err = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "RPC_TARGET_UNAVAILABLE", "{err:?}");
    let err = alpha.rpc("beta", "slow", None).await.unwrap_err();
    assert_eq!(err.code(), "RPC_NO_TARGET", "{err:?}");

    // beta connects to hub A at once (its stale lease is taken over).
    drop(beta);
    let beta_again = ready(
        a.client("beta")
            .handler("fast", |_| async { Ok(json!("here")) }),
    )
    .await;
    assert_eq!(
        alpha.rpc("beta", "fast", None).await.unwrap(),
        json!("here")
    );
    drop(beta_again);
}
