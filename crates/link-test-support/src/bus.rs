//! One hub or a cluster of hubs, as a test sees them: a scenario that must
//! hold for both is written once against a [`TestBus`] and run twice, with
//! its peers on one hub or spread over several hubs of a cluster on a real
//! nats-server.
//!
//! A bus of one hub and a bus of several differ only where the cluster
//! does: an effect on a peer of another hub is ordered after the sender's
//! frame only once it has crossed NATS. [`TestBus::peer`] therefore waits
//! until every other hub routes the new kind, and [`assert_nothing_from`]
//! proves "nothing arrived" by per-sender order (a marker), which holds
//! across hubs, where a round trip through the recipient's hub does not.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use link_hub::{ClusterConfig, HubConfigBuilder, HubEvent};
use serde_json::json;
use tokio::sync::broadcast;

use crate::{NatsServer, Peer, TestHub, fresh_id, next_event};

/// The secret hubs of a test cluster share.
pub const CLUSTER_SECRET: &str = "inter-hub-secret";

/// Heartbeat of a test cluster: hubs find each other within it.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// A hub is declared gone only after seconds of silence, so a busy machine
/// never flaps one mid-test.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

/// One hub, or a cluster of hubs that has formed (each has seen every
/// other one up).
pub struct TestBus {
    hubs: Vec<TestHub>,
    /// Per hub: its events, subscribed before it started.
    events: Vec<broadcast::Receiver<Arc<HubEvent>>>,
    /// The cluster's nats-server (none for one hub); dropped last.
    nats: Option<NatsServer>,
}

impl TestBus {
    /// `hubs` hubs built by `config(i)`: one lone hub, or (`hubs > 1`) a
    /// cluster over a nats-server of its own. `client_secret` is what
    /// [`TestHub::client`] signs with.
    pub async fn start(
        hubs: usize,
        mut config: impl FnMut(usize) -> HubConfigBuilder,
        client_secret: Option<&str>,
    ) -> Self {
        assert!(hubs > 0, "a bus has a hub");
        let nats = if hubs > 1 {
            Some(NatsServer::start().await)
        } else {
            None
        };
        let mut bus = Self {
            hubs: Vec::new(),
            events: Vec::new(),
            nats,
        };
        for i in 0..hubs {
            let mut builder = config(i);
            if let Some(nats) = &bus.nats {
                builder = builder.cluster(
                    ClusterConfig::new(nats.url(), CLUSTER_SECRET)
                        .heartbeat(HEARTBEAT, HUB_TIMEOUT),
                );
            }
            let mut test_hub = TestHub::builder(builder.build().expect("a valid hub config"));
            if let Some(secret) = client_secret {
                test_hub = test_hub.client_secret(secret);
            }
            let (hub, events) = test_hub.start_with_events().await;
            bus.hubs.push(hub);
            bus.events.push(events);
        }
        for events in &mut bus.events {
            let mut up = HashSet::new();
            while up.len() < hubs - 1 {
                let e = next_event(events, |e| {
                    matches!(e, HubEvent::ClusterHub { up: true, .. })
                })
                .await;
                if let HubEvent::ClusterHub { hub, .. } = &*e {
                    up.insert(hub.clone());
                }
            }
        }
        bus
    }

    /// Hub `i` (modulo the number of hubs: on one hub, every index is it).
    pub fn hub(&self, i: usize) -> &TestHub {
        &self.hubs[i % self.hubs.len()]
    }

    /// All hubs.
    pub fn hubs(&self) -> &[TestHub] {
        &self.hubs
    }

    /// How many hubs.
    pub fn len(&self) -> usize {
        self.hubs.len()
    }

    /// Never: a bus has a hub.
    pub fn is_empty(&self) -> bool {
        self.hubs.is_empty()
    }

    /// Connects `kind` to hub `on` (modulo), then waits until every other
    /// hub routes `kind` there.
    pub async fn peer(&mut self, kind: &str, secret: &str, on: usize) -> Peer {
        let peer = self.hub(on).peer(kind, secret).await;
        self.reachable(kind, on).await;
        peer
    }

    /// Waits until every hub but `on` (modulo) reports `kind` reachable on
    /// another hub (`cluster.peer`). Returns at once on one hub.
    pub async fn reachable(&mut self, kind: &str, on: usize) {
        let on = on % self.hubs.len();
        for (j, events) in self.events.iter_mut().enumerate() {
            if j != on {
                next_event(events, |e| {
                    matches!(e, HubEvent::ClusterPeer { kind: k, joined: true, .. } if k == kind)
                })
                .await;
            }
        }
    }

    /// Takes the hubs, their event receivers (subscribed before each hub
    /// started, drained of the cluster's formation) and the nats-server
    /// (keep it alive as long as the hubs).
    pub fn into_parts(
        self,
    ) -> (
        Vec<TestHub>,
        Vec<broadcast::Receiver<Arc<HubEvent>>>,
        Option<NatsServer>,
    ) {
        (self.hubs, self.events, self.nats)
    }
}

/// Asserts that nothing from `from` reaches `to` (but lists and snapshots)
/// before a marker `from` sends now: what `from` sent before was dropped.
/// Holds on one hub and across hubs (each sender's messages arrive in
/// order).
pub async fn assert_nothing_from(from: &mut Peer, to: &mut Peer) {
    let marker = fresh_id("marker");
    let to_kind = to.kind.clone();
    from.send(
        "direct",
        Some(&to_kind),
        Some(json!({"directType": marker.as_str()})),
    )
    .await;
    let d = to.recv("direct").await;
    assert_eq!(
        d.data().and_then(|d| d["directType"].as_str()),
        Some(marker.as_str()),
        "{to_kind} got {d:?} before the marker"
    );
    let got: Vec<_> = std::mem::take(&mut to.inbox)
        .into_iter()
        .filter(|e| !matches!(e.msg_type(), Some("peers.update" | "status.snapshot")))
        .collect();
    assert!(got.is_empty(), "{to_kind} got {got:?} before the marker");
}

/// Publishes probes on `topic` from `publisher` until every one of
/// `subscribers` has received one, then an end probe that each reads up to
/// (a topic's messages from one sender arrive in order), so that none is
/// left. On one hub the first probe arrives at once; across hubs a hub
/// subscribes on NATS when its first peer subscribes, and no event says
/// when that is in place: this waits for it, polling every 20 ms.
pub async fn topic_reaches(publisher: &mut Peer, topic: &str, subscribers: &mut [&mut Peer]) {
    let probe = fresh_id("probe");
    let is_probe = |e: &link_protocol::Envelope| {
        e.data().and_then(|d| d["payload"]["probe"].as_str()) == Some(probe.as_str())
    };
    let deadline = tokio::time::Instant::now() + crate::WAIT;
    let mut got = vec![false; subscribers.len()];
    while got.iter().any(|g| !g) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "probes on {topic} never reached every subscriber"
        );
        let data = json!({"topic": topic, "payload": {"probe": probe.as_str()}});
        publisher.send("topic.message", None, Some(data)).await;
        for (i, sub) in subscribers.iter_mut().enumerate() {
            if !got[i]
                && let Ok(m) =
                    tokio::time::timeout(Duration::from_millis(20), sub.recv("topic.message")).await
            {
                assert!(is_probe(&m), "{}: not a probe: {m:?}", sub.kind);
                got[i] = true;
            }
        }
    }
    let data = json!({"topic": topic, "payload": {"probe": probe.as_str(), "end": true}});
    publisher.send("topic.message", None, Some(data)).await;
    for sub in subscribers.iter_mut() {
        loop {
            let m = sub.recv("topic.message").await;
            assert!(is_probe(&m), "{}: not a probe: {m:?}", sub.kind);
            if m.data().is_some_and(|d| d["payload"]["end"] == true) {
                break;
            }
        }
    }
}
