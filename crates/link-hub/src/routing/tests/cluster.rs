//! The table in a cluster, as transcripts: what the driver would tell it
//! (hubs alive, leases, claims, messages from other hubs) and what it hands
//! to NATS (the outbound queue) or to its own peers. No NATS here: the
//! driver is tested against a real server in `tests/cluster.rs`.

use tokio::sync::mpsc;

use super::*;
use crate::cluster::link::{ClusterIn, ClusterLink, ClusterOut, Outbound};

const HUB_B: &str = "hub-b";

/// A bus whose table is in a cluster with NATS up (peer lists off: these
/// transcripts are about routing; `listing()` has them on).
fn clustered() -> (Bus, Arc<ClusterLink>, mpsc::Receiver<Outbound>) {
    in_cluster(RoutingConfig {
        broadcast_peers: false,
        ..config()
    })
}

/// The same with peer lists on.
fn listing() -> (Bus, Arc<ClusterLink>, mpsc::Receiver<Outbound>) {
    in_cluster(config())
}

fn in_cluster(config: RoutingConfig) -> (Bus, Arc<ClusterLink>, mpsc::Receiver<Outbound>) {
    let mut bus = Bus::with(config);
    let (link, rx) = ClusterLink::new("hub-a".into());
    link.set_up(true);
    bus.table.join_cluster(link.clone());
    (bus, link, rx)
}

impl Bus {
    fn cluster(&mut self, input: ClusterIn) {
        let now = self.now();
        self.table.handle_cluster(now, input);
    }

    fn cluster_out(&mut self) -> Vec<ClusterOut> {
        std::iter::from_fn(|| self.table.poll_cluster()).collect()
    }

    /// Hub B is alive and its peer `kind` holds the lease at `rev`.
    fn remote_peer(&mut self, kind: &str, rev: u64) {
        self.cluster(ClusterIn::HubAlive {
            hub: HUB_B.into(),
            peers: 1,
        });
        self.cluster(ClusterIn::Lease {
            kind: kind.into(),
            hub: HUB_B.into(),
            rev,
            hello: Hello::sanitize(Some(&json!({ "kind": kind }))).unwrap(),
            connected_at: T0_MS,
            hello_id: None,
        });
    }

    /// The last peer list `peer` got once the quiet time is over (the
    /// final list of a burst of changes goes out then).
    fn final_list(&mut self, peer: &str) -> Vec<String> {
        self.advance(1000);
        let now = self.now();
        self.table.handle_timeout(now);
        let lists: Vec<Vec<String>> = self
            .take(peer)
            .iter()
            .filter(|i| i.msg_type == msg_type::PEERS_UPDATE)
            .map(peers_of)
            .collect();
        lists.last().cloned().unwrap_or_default()
    }
}

/// `hub: type from->to data` lines for what went to NATS.
fn outbound(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|out| match out {
            Outbound::Deliver { hub, item } => format!("{hub}: {}", line(&item)),
            Outbound::Publish {
                topic,
                from,
                data,
                at,
            } => {
                format!("topic {topic}: {from} {} at +{}", data.as_str(), at - T0_MS)
            }
            Outbound::Release { kind, rev: None } => format!("release {kind}"),
            Outbound::Release {
                kind,
                rev: Some(rev),
            } => format!("release {kind} at {rev}"),
            Outbound::Status { kind, data, .. } => format!(
                "status {kind}: {}",
                data.as_deref().map_or("null", CanonicalData::as_str)
            ),
        })
        .collect()
}

#[test]
fn a_kind_on_another_live_hub_is_routed_there_and_only_while_it_lives() {
    let (mut bus, _link, mut rx) = clustered();
    bus.connect("alpha");
    bus.take("alpha");
    bus.events();
    bus.remote_peer("beta", 3);
    assert_eq!(bus.event_names(), ["cluster.hub", "cluster.peer"]);

    bus.send(
        "alpha",
        msg_type::RPC_REQUEST,
        Some("beta"),
        json!({"rpcType": "sum", "rpcData": [1, 2]}),
    );
    bus.send(
        "alpha",
        msg_type::DIRECT,
        Some("beta"),
        json!({"directType": "note", "directData": 1}),
    );
    assert_eq!(
        outbound(&mut rx),
        [
            r#"hub-b: rpc.request alpha->beta {"rpcData":[1,2],"rpcType":"sum"}"#,
            r#"hub-b: direct alpha->beta {"directData":1,"directType":"note"}"#,
        ]
    );
    assert!(bus.transcript("alpha").is_empty());

    // Hub B misses its heartbeats: beta is nowhere now, and the call
    // still waiting on it ends.
    bus.cluster(ClusterIn::HubGone { hub: HUB_B.into() });
    assert_eq!(
        bus.event_names(),
        ["rpc.forwarded", "direct", "cluster.hub", "cluster.peer"]
    );
    bus.send(
        "alpha",
        msg_type::RPC_REQUEST,
        Some("beta"),
        json!({"rpcType": "sum"}),
    );
    assert!(outbound(&mut rx).is_empty());
    let codes: Vec<Value> = bus
        .take("alpha")
        .iter()
        .map(|r| data(r)["code"].clone())
        .collect();
    assert_eq!(codes, ["RPC_TARGET_UNAVAILABLE", "RPC_NO_TARGET"]);
}

#[test]
fn with_nats_down_a_call_to_another_hub_fails_at_once() {
    let (mut bus, link, mut rx) = clustered();
    bus.connect("alpha");
    bus.take("alpha");
    bus.remote_peer("beta", 3);
    link.set_up(false);
    bus.send(
        "alpha",
        msg_type::RPC_REQUEST,
        Some("beta"),
        json!({"rpcType": "sum"}),
    );
    assert!(outbound(&mut rx).is_empty());
    let reply = bus.take("alpha");
    assert_eq!(data(&reply[0])["code"], "RPC_TARGET_UNAVAILABLE");
    // The driver says so: every other hub is out of reach.
    bus.cluster(ClusterIn::Link(false));
    assert_eq!(bus.table.cluster_stats().unwrap().hubs, 0);
}

#[test]
fn a_registration_claims_the_lease_and_a_leave_hands_it_back() {
    let (mut bus, _link, mut rx) = clustered();
    let conn = bus.connect("alpha");
    let hello = Hello::sanitize(Some(&json!({"kind": "alpha"}))).unwrap();
    assert_eq!(
        bus.cluster_out(),
        [ClusterOut::Claim {
            kind: "alpha".into(),
            conn,
            hello,
            connected_at: T0_MS,
            hello_id: None,
        }]
    );
    bus.close(conn);
    assert_eq!(
        bus.cluster_out(),
        [ClusterOut::Release {
            kind: "alpha".into()
        }]
    );
    // The other hubs hear it from this hub, authenticated (the claim was
    // not answered yet: no revision to name).
    assert_eq!(outbound(&mut rx), ["release alpha"]);

    // Once the claim is answered, the release names the revision held.
    let conn = bus.connect("alpha");
    bus.cluster(ClusterIn::Claimed {
        kind: "alpha".into(),
        conn,
        rev: Some(12),
    });
    bus.close(conn);
    assert_eq!(outbound(&mut rx), ["release alpha at 12"]);
}

#[test]
fn a_lease_handed_back_stays_gone_when_the_watch_delivers_it_late() {
    let (mut bus, _link, _rx) = listing();
    bus.connect("alpha");
    bus.remote_peer("beta", 5);
    bus.events();
    // Hub B's peer leaves; its word (revision 5 handed back) arrives on
    // the heartbeat subject before this hub's lagging watch of the bucket
    // delivers the entry it already had, or a copy of it.
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: Some(5),
    });
    assert!(bus.table.target("beta").is_none());
    bus.remote_peer("beta", 5);
    bus.remote_peer("beta", 4);
    assert!(bus.table.target("beta").is_none());
    // beta left once and did not come back; alpha's final list says so.
    assert_eq!(bus.event_names(), ["cluster.peer"]);
    assert_eq!(bus.final_list("alpha"), ["alpha"]);
    // beta connecting again (a later revision) is seen at once.
    bus.remote_peer("beta", 6);
    assert!(bus.table.target("beta").is_some());
}

#[test]
fn a_release_without_a_revision_is_completed_by_the_one_with_it() {
    let (mut bus, _link, _rx) = clustered();
    bus.cluster(ClusterIn::HubAlive {
        hub: HUB_B.into(),
        peers: 1,
    });
    // Hub B's peer left before its claim was answered: B says so without a
    // revision; the claim lands in the bucket after that and this hub's
    // watch delivers it: beta appears, gone already.
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: None,
    });
    bus.remote_peer("beta", 8);
    assert!(bus.table.target("beta").is_some());
    // B's lease task hands revision 8 back and says so (the bucket's
    // delete alone would not count while B lives): beta is gone for good.
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: Some(8),
    });
    assert!(bus.table.target("beta").is_none());
    bus.remote_peer("beta", 8);
    assert!(bus.table.target("beta").is_none());
}

#[test]
fn a_release_older_than_the_lease_held_now_changes_nothing() {
    let (mut bus, _link, _rx) = clustered();
    // beta left hub B and connected there again: the new lease (7) is
    // announced before the release of the old one (5) arrives.
    bus.remote_peer("beta", 7);
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: Some(5),
    });
    assert!(bus.table.target("beta").is_some());
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: Some(7),
    });
    assert!(bus.table.target("beta").is_none());
}

#[test]
fn a_deleted_lease_counts_only_for_a_hub_that_is_gone_a_release_from_its_hub_always() {
    let (mut bus, _link, _rx) = clustered();
    bus.remote_peer("beta", 3);
    bus.remote_peer("gamma", 4);
    bus.events();
    // Anyone with bucket access can delete: while hub B lives, beta stays.
    bus.cluster(ClusterIn::LeaseGone {
        kind: "beta".into(),
        rev: 9,
    });
    assert!(bus.table.target("beta").is_some());
    // Hub B's own (authenticated) word removes it; another hub's does not.
    bus.cluster(ClusterIn::Released {
        hub: "hub-c".into(),
        kind: "beta".into(),
        rev: None,
    });
    assert!(bus.table.target("beta").is_some());
    bus.cluster(ClusterIn::Released {
        hub: HUB_B.into(),
        kind: "beta".into(),
        rev: None,
    });
    assert!(bus.table.target("beta").is_none());
    assert_eq!(bus.event_names(), ["cluster.peer"]);
}

#[test]
fn a_later_lease_on_another_hub_displaces_the_local_socket_an_earlier_does_not() {
    let (mut bus, _link, _rx) = clustered();
    let conn = bus.connect("alpha");
    bus.cluster(ClusterIn::HubAlive {
        hub: HUB_B.into(),
        peers: 0,
    });
    bus.cluster(ClusterIn::Claimed {
        kind: "alpha".into(),
        conn,
        rev: Some(5),
    });
    // A stale entry (revision 4, before our claim) changes nothing.
    bus.remote_peer("alpha", 4);
    assert!(bus.controls().is_empty());
    // A newer hello on hub B (revision 7) wins, as on one hub: close 4000.
    bus.remote_peer("alpha", 7);
    assert_eq!(bus.controls(), [(conn, ConnCtl::Displace)]);
}

#[test]
fn a_lost_claim_displaces_the_local_socket() {
    let (mut bus, _link, _rx) = clustered();
    let conn = bus.connect("alpha");
    bus.cluster(ClusterIn::Claimed {
        kind: "alpha".into(),
        conn,
        rev: None,
    });
    assert_eq!(bus.controls(), [(conn, ConnCtl::Displace)]);
    // A claim answered for a socket that is gone already is ignored.
    bus.close(conn);
    bus.cluster(ClusterIn::Claimed {
        kind: "alpha".into(),
        conn,
        rev: None,
    });
    assert!(bus.controls().is_empty());
}

#[test]
fn the_first_and_last_local_subscribers_move_the_hubs_interest() {
    let (mut bus, _link, mut rx) = clustered();
    let a = bus.connect("alpha");
    let b = bus.connect("beta");
    bus.cluster_out();
    bus.subscribe("alpha", "news");
    bus.subscribe("beta", "news");
    assert_eq!(
        bus.cluster_out(),
        [ClusterOut::Interest {
            topic: "news".into(),
            on: true
        }]
    );
    // A publish crosses NATS once, whatever the local fan-out.
    bus.send(
        "alpha",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "news", "payload": 1}),
    );
    assert_eq!(
        outbound(&mut rx),
        [r#"topic news: alpha {"payload":1,"topic":"news"} at +0"#]
    );
    bus.close(a);
    assert!(
        !bus.cluster_out()
            .iter()
            .any(|o| matches!(o, ClusterOut::Interest { .. }))
    );
    bus.close(b);
    assert!(bus.cluster_out().contains(&ClusterOut::Interest {
        topic: "news".into(),
        on: false
    }));
}

/// The chaos run's duplicates (docs/reliability.md, *Chaos*): hub B was
/// cut off from NATS; a message its peer beta published meanwhile reached
/// gamma, on hub B then; gamma moved here (churn, failover) and subscribed;
/// the cut healed and hub B's backlog arrived here. Gamma must not get the
/// message a second time; a peer subscribed here all along gets it (late),
/// and gamma gets what was published once it was here.
#[test]
fn a_topic_message_published_before_a_peer_subscribed_here_is_not_delivered_to_it() {
    let (mut bus, _link, _rx) = clustered();
    bus.connect("alpha");
    bus.subscribe("alpha", "news");
    bus.take("alpha");
    bus.remote_peer("beta", 3);
    bus.advance(5_000);
    bus.connect("gamma");
    bus.subscribe("gamma", "news");
    bus.take("gamma");
    bus.advance(1_000);
    for (payload, at) in [(1, 2_000), (2, 4_999), (3, 5_000), (4, 5_500)] {
        let data = json!({"topic": "news", "payload": payload});
        bus.cluster(ClusterIn::Publish {
            topic: "news".into(),
            from: "beta".into(),
            data: Some(Arc::new(CanonicalData::new(&data))),
            at: T0_MS + at,
        });
    }
    let payloads = |bus: &mut Bus, kind: &str| -> Vec<Value> {
        bus.take(kind)
            .iter()
            .map(|m| data(m)["payload"].clone())
            .collect()
    };
    assert_eq!(payloads(&mut bus, "alpha"), [1, 2, 3, 4]);
    assert_eq!(payloads(&mut bus, "gamma"), [3, 4]);
}

#[test]
fn messages_from_another_hub_reach_local_peers() {
    let (mut bus, _link, mut rx) = clustered();
    bus.connect("alpha");
    bus.connect("gamma");
    bus.subscribe("alpha", "news");
    bus.take("alpha");
    bus.take("gamma");
    bus.remote_peer("beta", 3);
    let news = Arc::new(CanonicalData::new(&json!({"topic": "news", "payload": 2})));
    bus.cluster(ClusterIn::Publish {
        topic: "news".into(),
        from: "beta".into(),
        data: Some(news),
        at: T0_MS,
    });
    bus.cluster(ClusterIn::Status {
        kind: "beta".into(),
        at: T0_MS,
        status: Some(json!("busy")),
    });
    let note = OutItem::new(
        Some("m1".into()),
        msg_type::DIRECT,
        "beta".into(),
        "gamma".into(),
        Some(Arc::new(CanonicalData::new(
            &json!({"directType": "n", "directData": null}),
        ))),
    );
    bus.cluster(ClusterIn::Deliver {
        hub: HUB_B.into(),
        item: note,
    });
    assert_eq!(
        bus.transcript("alpha"),
        [
            r#"topic.message beta->alpha {"payload":2,"topic":"news"}"#,
            format!(
                r#"status.update server->alpha {{"at":{T0_MS},"from":"beta","status":"busy"}}"#
            )
            .as_str(),
        ]
    );
    assert_eq!(
        bus.transcript("gamma"),
        [
            format!(
                r#"status.update server->gamma {{"at":{T0_MS},"from":"beta","status":"busy"}}"#
            )
            .as_str(),
            r#"direct beta->gamma {"directData":null,"directType":"n"}"#,
        ]
    );
    assert!(outbound(&mut rx).is_empty());
}

#[test]
fn a_request_for_a_kind_that_left_is_answered_to_the_callers_hub() {
    let (mut bus, _link, mut rx) = clustered();
    bus.remote_peer("beta", 3);
    let call = OutItem::new(
        Some("call-1".into()),
        msg_type::RPC_REQUEST,
        "beta".into(),
        "gone".into(),
        Some(Arc::new(CanonicalData::new(&json!({"rpcType": "x"})))),
    );
    bus.cluster(ClusterIn::Deliver {
        hub: HUB_B.into(),
        item: call,
    });
    let out = outbound(&mut rx);
    assert_eq!(
        out,
        [
            r#"hub-b: rpc.response server->beta {"code":"RPC_TARGET_UNAVAILABLE","error":"Target backpressured or send failed: gone","ok":false}"#
        ]
    );
}

#[test]
fn calls_waiting_on_a_hub_that_goes_end_with_a_typed_error() {
    let (mut bus, _link, mut rx) = clustered();
    bus.connect("alpha");
    bus.take("alpha");
    bus.remote_peer("beta", 3);
    let answered = bus.send(
        "alpha",
        msg_type::RPC_REQUEST,
        Some("beta"),
        json!({"rpcType": "fast"}),
    );
    let waiting = bus.send(
        "alpha",
        msg_type::RPC_REQUEST,
        Some("beta"),
        json!({"rpcType": "slow"}),
    );
    assert_eq!(outbound(&mut rx).len(), 2);
    // Beta's hub answers the first call.
    let answer = OutItem::new(
        Some(answered.as_str().into()),
        msg_type::RPC_RESPONSE,
        "beta".into(),
        "alpha".into(),
        Some(Arc::new(CanonicalData::new(
            &json!({"ok": true, "result": 1}),
        ))),
    );
    bus.cluster(ClusterIn::Deliver {
        hub: HUB_B.into(),
        item: answer,
    });
    // Hub B dies: the call still waiting ends here, typed, at once.
    bus.cluster(ClusterIn::HubGone { hub: HUB_B.into() });
    let got = bus.take("alpha");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id.as_deref(), Some(answered.as_str()));
    assert_eq!(data(&got[0]), json!({"ok": true, "result": 1}));
    assert_eq!(got[1].id.as_deref(), Some(waiting.as_str()));
    assert_eq!(
        data(&got[1]),
        json!({"ok": false, "code": "RPC_TARGET_UNAVAILABLE", "error": "the target's hub left the cluster"})
    );
}

#[test]
fn peer_lists_hold_this_hubs_peers_then_the_other_hubs_peers() {
    let (mut bus, _link, _rx) = listing();
    bus.connect("alpha");
    bus.take("alpha");
    bus.remote_peer("beta", 3);
    assert_eq!(bus.final_list("alpha"), ["alpha", "beta"]);
    // Hub B goes: beta leaves the list.
    bus.cluster(ClusterIn::HubGone { hub: HUB_B.into() });
    assert_eq!(bus.final_list("alpha"), ["alpha"]);
}

#[test]
fn an_answer_to_a_caller_whose_lease_is_not_here_yet_goes_to_its_hub() {
    let (mut bus, _link, mut rx) = clustered();
    bus.connect("beta");
    bus.take("beta");
    // Hub B is alive; alpha on hub B calls beta before its lease got here.
    bus.cluster(ClusterIn::HubAlive {
        hub: HUB_B.into(),
        peers: 1,
    });
    let call = OutItem::new(
        Some("call-1".into()),
        msg_type::RPC_REQUEST,
        "alpha".into(),
        "beta".into(),
        Some(Arc::new(CanonicalData::new(&json!({"rpcType": "x"})))),
    );
    bus.cluster(ClusterIn::Deliver {
        hub: HUB_B.into(),
        item: call,
    });
    assert_eq!(bus.take("beta").len(), 1);
    let env = bus.envelope(
        "beta",
        msg_type::RPC_RESPONSE,
        Some("alpha"),
        json!({"ok": true, "result": 1}),
    );
    let env = {
        let mut body = env.body().clone();
        body.insert("id".into(), json!("call-1"));
        Envelope::from_object(body).unwrap()
    };
    let now = bus.now();
    let conn = bus.conns["beta"];
    bus.table.handle_inbound(now, conn, "beta".into(), env);
    assert_eq!(
        outbound(&mut rx),
        [r#"hub-b: rpc.response beta->alpha {"ok":true,"result":1}"#]
    );
}
