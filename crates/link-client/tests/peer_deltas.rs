//! The `peers.delta` extension from the client's side, against a scripted
//! hub: what the hello asks for in each mode, snapshots in parts, deltas,
//! and a gap answered with `peers.resync` then repaired by a fresh
//! snapshot, with the same events a v1 client would see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use link_client::{LinkClient, LinkEvent};
use link_test_support::ScriptedHub;
use link_test_support::WAIT;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const SECRET: &str = "s3cret";

fn entry(kind: &str, at: u64) -> Value {
    json!([kind, null, 1, 1000, at])
}

async fn next_peer_event(rx: &mut broadcast::Receiver<Arc<LinkEvent>>) -> String {
    let read = async {
        loop {
            match &*rx.recv().await.unwrap() {
                LinkEvent::PeerConnect(p) => return format!("+{}", p.kind),
                LinkEvent::PeerReplaced { kind, .. } => return format!("~{kind}"),
                LinkEvent::PeerDisconnect(p) => return format!("-{}", p.kind),
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a peer event")
}

#[tokio::test]
async fn a_v1_mode_hello_is_the_reference_one() {
    let hub = ScriptedHub::bind(SECRET).await;
    let client = LinkClient::new(hub.client("alpha").peer_deltas(false).build().unwrap());
    client.start();
    let mut conn = hub.accept().await;
    let hello = conn.recv_hello().await;
    let mut keys: Vec<&String> = hello.data().unwrap().as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["kind", "name", "pid", "startedAt"]);
    client.stop().await;
}

#[tokio::test]
async fn snapshot_parts_and_deltas_build_the_list_and_a_gap_asks_for_a_resync() {
    let hub = ScriptedHub::bind(SECRET).await;
    let client = LinkClient::new(hub.client("alpha").build().unwrap());
    let mut rx = client.events();
    client.start();
    let mut conn = hub.accept().await;
    let hello = conn.recv_hello().await;
    assert_eq!(hello.data().unwrap()["features"], json!(["peers.delta"]));
    conn.ack(&["topics", "direct", "peers.delta"]).await;
    // A snapshot in two parts: nothing happens until the last one.
    let part = |part: u32, peers: Vec<Value>| json!({"version": 5, "part": part, "parts": 2, "peers": peers});
    conn.send(
        "peers.snapshot",
        "server",
        Some(part(0, vec![entry("alpha", 1)])),
    )
    .await;
    conn.send(
        "peers.snapshot",
        "server",
        Some(part(1, vec![entry("beta", 2)])),
    )
    .await;
    assert_eq!(next_peer_event(&mut rx).await, "+alpha");
    assert_eq!(next_peer_event(&mut rx).await, "+beta");
    let delta = |base: u64,
                 version: u64,
                 joined: Vec<Value>,
                 left: Vec<&str>,
                 changed: Vec<Value>| {
        json!({"base": base, "version": version, "joined": joined, "left": left, "changed": changed})
    };
    conn.send(
        "peers.delta",
        "server",
        Some(delta(
            5,
            7,
            vec![entry("gamma", 3)],
            vec![],
            vec![entry("beta", 4)],
        )),
    )
    .await;
    assert_eq!(next_peer_event(&mut rx).await, "~beta");
    assert_eq!(next_peer_event(&mut rx).await, "+gamma");
    let kinds = |c: &LinkClient| c.peers().into_iter().map(|p| p.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&client), ["alpha", "beta", "gamma"]);
    assert_eq!(client.peers()[1].connected_at, Some(4.0));
    // A delta from a version the client does not hold: it asks again and
    // applies nothing.
    conn.send(
        "peers.delta",
        "server",
        Some(delta(8, 9, vec![entry("delta", 5)], vec!["beta"], vec![])),
    )
    .await;
    let resync = conn.expect("peers.resync").await;
    assert_eq!(resync.data(), Some(&json!({})));
    assert_eq!(resync.to().as_deref(), None);
    // The fresh snapshot: the list is diffed as a v1 list would be.
    conn.send(
        "peers.snapshot",
        "server",
        Some(json!({"version": 9, "part": 0, "parts": 1,
            "peers": [entry("alpha", 1), entry("gamma", 3), entry("delta", 5)]})),
    )
    .await;
    assert_eq!(next_peer_event(&mut rx).await, "+delta");
    assert_eq!(next_peer_event(&mut rx).await, "-beta");
    assert_eq!(kinds(&client), ["alpha", "gamma", "delta"]);
    // Deltas apply again from the snapshot's version.
    conn.send(
        "peers.delta",
        "server",
        Some(delta(9, 10, vec![], vec!["gamma"], vec![])),
    )
    .await;
    assert_eq!(next_peer_event(&mut rx).await, "-gamma");
    assert_eq!(kinds(&client), ["alpha", "delta"]);
    client.stop().await;
}
