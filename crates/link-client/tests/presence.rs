//! Presence against the in-process hub: many clients joining at once each
//! end with the complete list and exactly one `peer.connect` per peer, in
//! v1 mode (the client diffs `peers.update` lists, as the Node client does,
//! so this is what a Node fleet sees) and with the `peers.delta`
//! extension; and one scenario gives the same event transcript and the
//! same list in both modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use link_client::{LinkClient, LinkEvent};
use link_test_support::{TestHub, WAIT};
use tokio::sync::broadcast;

const SECRET: &str = "s3cret";

/// What one client's event stream said about the others.
#[derive(Debug, Default)]
struct Seen {
    connects: HashMap<String, usize>,
    disconnects: usize,
}

/// Reads events until `n` distinct peers have connected.
async fn watch(mut rx: broadcast::Receiver<Arc<LinkEvent>>, n: usize) -> Seen {
    let mut seen = Seen::default();
    while seen.connects.len() < n {
        match rx.recv().await {
            Ok(e) => match &*e {
                LinkEvent::PeerConnect(p) => *seen.connects.entry(p.kind.clone()).or_default() += 1,
                LinkEvent::PeerDisconnect(_) => seen.disconnects += 1,
                _ => {}
            },
            Err(broadcast::error::RecvError::Lagged(n)) => panic!("lost {n} events"),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_joining_at_once_each_see_every_other_exactly_once() {
    storm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_delta_clients_joining_at_once_each_see_every_other_exactly_once() {
    storm(true).await;
}

async fn storm(peer_deltas: bool) {
    const N: usize = 300;
    let hub = TestHub::shared(SECRET).await;
    let kinds: Vec<String> = (0..N).map(|i| format!("svc-{i:03}")).collect();
    let mut clients = Vec::with_capacity(N);
    let mut watchers = Vec::with_capacity(N);
    for kind in &kinds {
        let c = LinkClient::new(hub.client(kind).peer_deltas(peer_deltas).build().unwrap());
        watchers.push(tokio::spawn(watch(c.events(), N)));
        clients.push(c);
    }
    // Every client starts at once: a join storm.
    for c in &clients {
        c.start();
    }
    let all = futures_util::future::join_all(watchers);
    // A hang guard only (300 debug-build clients on a shared box are slow).
    let seen = tokio::time::timeout(WAIT * 30, all)
        .await
        .expect("every client saw every peer");
    for (kind, (seen, client)) in kinds.iter().zip(seen.into_iter().zip(&clients)) {
        let seen = seen.unwrap();
        assert_eq!(seen.disconnects, 0, "{kind} saw a peer leave");
        for other in &kinds {
            assert_eq!(
                seen.connects.get(other),
                Some(&1),
                "{kind}: peer.connect events for {other}"
            );
        }
        let mut listed: Vec<String> = client.peers().into_iter().map(|p| p.kind).collect();
        listed.sort();
        assert_eq!(listed, kinds, "{kind}'s peer list");
    }
    assert_eq!(hub.hub.health().await.peer_count, N);
    for c in &clients {
        c.stop().await;
    }
}

/// One observer's `peer.*` events, as `+kind`, `~kind`, `-kind`.
/// Message types seen on the way go to `types`.
async fn next_peer_event(
    rx: &mut broadcast::Receiver<Arc<LinkEvent>>,
    types: &mut Vec<String>,
) -> String {
    loop {
        match &*rx.recv().await.unwrap() {
            LinkEvent::Message(env) => types.push(env.msg_type().unwrap_or_default().to_owned()),
            LinkEvent::PeerConnect(p) => return format!("+{}", p.kind),
            LinkEvent::PeerReplaced { kind, .. } => return format!("~{kind}"),
            LinkEvent::PeerDisconnect(p) => return format!("-{}", p.kind),
            _ => {}
        }
    }
}

/// The observer's transcript through joins, a displacement and a leave,
/// its list at the end, the features its hub granted, and the presence
/// message types it was sent.
async fn scenario(peer_deltas: bool) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let hub = TestHub::shared(SECRET).await;
    let client =
        |kind: &str| LinkClient::new(hub.client(kind).peer_deltas(peer_deltas).build().unwrap());
    let observer = client("observer");
    let mut rx = observer.firehose();
    observer.start();
    let mut transcript = Vec::new();
    let mut types = Vec::new();
    macro_rules! step {
        () => {
            tokio::time::timeout(WAIT, next_peer_event(&mut rx, &mut types))
                .await
                .expect("a peer event")
        };
    }
    transcript.push(step!());
    let a = client("alpha");
    a.start();
    transcript.push(step!());
    let b = client("beta");
    b.start();
    transcript.push(step!());
    // A second alpha displaces the first (which then stops for good).
    let a2 = client("alpha");
    a2.start();
    transcript.push(step!());
    b.stop().await;
    transcript.push(step!());
    let listed: Vec<String> = observer.peers().into_iter().map(|p| p.kind).collect();
    let features = observer.hub_features().unwrap_or_default();
    for c in [&observer, &a, &a2] {
        c.stop().await;
    }
    (transcript, listed, features, types)
}

#[tokio::test]
async fn peer_events_and_the_peer_list_are_the_same_with_and_without_deltas() {
    let (v1, v1_list, v1_features, v1_types) = scenario(false).await;
    assert!(v1_types.iter().any(|t| t == "peers.update"), "{v1_types:?}");
    let (delta, delta_list, delta_features, delta_types) = scenario(true).await;
    let expected = ["+observer", "+alpha", "+beta", "~alpha", "-beta"];
    assert_eq!(v1, expected);
    assert_eq!(delta, expected);
    assert_eq!(v1_list, ["observer", "alpha"]);
    assert_eq!(delta_list, v1_list);
    assert!(!v1_features.iter().any(|f| f == "peers.delta"));
    assert!(delta_features.iter().any(|f| f == "peers.delta"));
    assert!(
        !delta_types.iter().any(|t| t == "peers.update"),
        "{delta_types:?}"
    );
    assert!(
        delta_types.iter().any(|t| t == "peers.snapshot"),
        "{delta_types:?}"
    );
    assert!(
        delta_types.iter().any(|t| t == "peers.delta"),
        "{delta_types:?}"
    );
}
