//! Presence at scale against the in-process hub: many clients joining at
//! once each end with the complete list and exactly one `peer.connect`
//! per peer. Our client derives its events by diffing `peers.update`
//! lists, as the Node client does, so this is what a Node fleet sees.

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
    const N: usize = 300;
    let hub = TestHub::shared(SECRET).await;
    let kinds: Vec<String> = (0..N).map(|i| format!("svc-{i:03}")).collect();
    let mut clients = Vec::with_capacity(N);
    let mut watchers = Vec::with_capacity(N);
    for kind in &kinds {
        let c = LinkClient::new(hub.client(kind).build().unwrap());
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
