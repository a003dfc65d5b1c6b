//! The `peers.delta` extension as transcripts: who is told about it, what
//! a delta peer is sent (one snapshot, then deltas), join storms at a
//! bounded cost, gap recovery, and v1 peers' bytes unchanged beside it.

use std::collections::{HashMap, HashSet};

use link_protocol::presence::{PeerStep, PeerSync, PeersDelta, PeersSnapshot};

use super::*;

impl Bus {
    /// The socket's hello for `kind` verified, asking for deltas or not.
    fn register_asking(&mut self, conn: ConnId, kind: &str, deltas: bool) {
        let hello = Hello::sanitize(Some(&json!({ "kind": kind }))).unwrap();
        self.conns.insert(kind.to_owned(), conn);
        let now = self.now();
        self.table
            .handle_register_asking(now, conn, hello, deltas, None);
    }

    fn connect_delta(&mut self, kind: &str) -> ConnId {
        let conn = self.attach();
        self.register_asking(conn, kind, true);
        self.idle();
        conn
    }
}

/// What a delta client holds: its list, in order, and one event per
/// change it saw (`+kind`, `-kind`, `~kind`).
#[derive(Default)]
struct DeltaView {
    sync: PeerSync,
    list: Vec<String>,
    connects: HashMap<String, usize>,
    events: Vec<String>,
    bytes: usize,
    resyncs: usize,
    types: Vec<&'static str>,
    /// Every item taken, as `type from->to data` (ids aside).
    lines: Vec<String>,
}

impl DeltaView {
    fn apply(&mut self, item: &OutItem) {
        self.types.push(item.msg_type);
        self.lines.push(line(item));
        let step = match item.msg_type {
            msg_type::PEERS_SNAPSHOT => {
                self.bytes += item.data.as_deref().map_or(0, CanonicalData::len);
                self.sync
                    .on_snapshot(PeersSnapshot::parse(Some(&data(item))).unwrap())
            }
            msg_type::PEERS_DELTA => {
                self.bytes += item.data.as_deref().map_or(0, CanonicalData::len);
                self.sync
                    .on_delta(PeersDelta::parse(Some(&data(item))).unwrap())
            }
            // (v1 peers are drained too; their lists are not read here.)
            _ => return,
        };
        match step {
            PeerStep::List(peers) => {
                let now: Vec<String> = peers.into_iter().map(|p| p.kind).collect();
                let set: HashSet<&String> = now.iter().collect();
                for k in &now {
                    if !self.list.contains(k) {
                        self.connect(k);
                    }
                }
                for k in &self.list {
                    if !set.contains(k) {
                        self.events.push(format!("-{k}"));
                    }
                }
                self.list = now;
            }
            PeerStep::Apply(d) => {
                for p in &d.changed {
                    self.events.push(format!("~{}", p.kind));
                }
                self.list.retain(|k| !d.left.contains(k));
                for p in &d.joined {
                    self.list.push(p.kind.clone());
                    if !d.left.contains(&p.kind) {
                        self.connect(&p.kind);
                    } else {
                        self.events.push(format!("~{}", p.kind));
                    }
                }
                for k in &d.left {
                    if !d.joined.iter().any(|p| &p.kind == k) {
                        self.events.push(format!("-{k}"));
                    }
                }
            }
            PeerStep::Resync => self.resyncs += 1,
            PeerStep::Wait => {}
        }
    }

    fn connect(&mut self, k: &str) {
        *self.connects.entry(k.to_owned()).or_default() += 1;
        self.events.push(format!("+{k}"));
    }
}

fn drain_deltas(bus: &mut Bus, views: &mut HashMap<String, DeltaView>) {
    let conns: Vec<(String, ConnId)> = bus.conns.iter().map(|(k, c)| (k.clone(), *c)).collect();
    for (kind, conn) in conns {
        let items = bus.take_conn(conn);
        let view = views.entry(kind).or_default();
        for item in &items {
            view.apply(item);
        }
    }
}

fn settle_deltas(bus: &mut Bus, views: &mut HashMap<String, DeltaView>) {
    for _ in 0..10_000 {
        drain_deltas(bus, views);
        let Some(at) = bus.table.poll_timeout() else {
            return;
        };
        let now = bus.now().instant;
        bus.advance(at.saturating_duration_since(now).as_millis() as u64 + 1);
        let now = bus.now();
        bus.table.handle_timeout(now);
    }
    panic!("presence never settled");
}

/// Delta peers `kinds`, each holding every other.
fn settled_delta_peers(kinds: &[&str]) -> (Bus, HashMap<String, DeltaView>) {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    for k in kinds {
        bus.connect_delta(k);
    }
    settle_deltas(&mut bus, &mut views);
    (bus, views)
}

fn types(items: &[OutItem]) -> Vec<&'static str> {
    items.iter().map(|i| i.msg_type).collect()
}

#[test]
fn a_delta_peer_is_told_in_its_ack_and_gets_one_snapshot_then_deltas() {
    let mut bus = Bus::new();
    bus.connect("alpha");
    bus.take("alpha");
    // (The test hellos have no name: the sanitised name is "", not the kind.)
    bus.connect_delta("beta");
    let beta = bus.take("beta");
    assert_eq!(
        types(&beta),
        ["hello.ack", "peers.snapshot", "status.snapshot"]
    );
    assert_eq!(
        data(&beta[0])["features"],
        json!(["topics", "direct", "peers.delta"])
    );
    let alpha_at = T0_MS;
    let beta_at = T0_MS;
    assert_eq!(
        line(&beta[1]),
        format!(
            r#"peers.snapshot server->beta {{"part":0,"parts":1,"peers":[["alpha","",null,null,{alpha_at}],["beta","",null,null,{beta_at}]],"version":2}}"#
        )
    );
    // alpha (v1) learns of beta with a full list, as before.
    assert_eq!(peers_of(&bus.take("alpha")[0]), ["alpha", "beta"]);
    bus.advance(5);
    let gamma = bus.connect("gamma");
    bus.take("alpha");
    bus.take("gamma");
    assert_eq!(
        bus.transcript("beta"),
        [format!(
            r#"peers.delta server->beta {{"base":2,"changed":[],"joined":[["gamma","",null,null,{}]],"left":[],"version":3}}"#,
            T0_MS + 5
        )]
    );
    bus.close(gamma);
    assert_eq!(
        bus.transcript("beta"),
        [
            r#"peers.delta server->beta {"base":3,"changed":[],"joined":[],"left":["gamma"],"version":4}"#
        ]
    );
}

#[test]
fn a_v1_peer_gets_the_same_bytes_whether_or_not_others_ask_for_deltas() {
    // Every writer drains after each step, as a socket keeping up would;
    // what alpha (v1) is sent must not depend on what beta asked for.
    let run = |beta_deltas: bool| {
        let mut bus = Bus::new();
        let mut views = HashMap::new();
        bus.connect("alpha");
        settle_deltas(&mut bus, &mut views);
        bus.advance(300);
        let conn = bus.attach();
        bus.register_asking(conn, "beta", beta_deltas);
        bus.idle();
        settle_deltas(&mut bus, &mut views);
        bus.advance(300);
        bus.send("beta", msg_type::STATUS_UPDATE, None, json!({"up": 1}));
        settle_deltas(&mut bus, &mut views);
        bus.advance(300);
        let c = bus.connect("gamma");
        settle_deltas(&mut bus, &mut views);
        bus.advance(300);
        // A v1 peer sending the extension's request is ignored.
        bus.send("alpha", msg_type::PEERS_RESYNC, None, json!({}));
        bus.close(c);
        settle_deltas(&mut bus, &mut views);
        (views.remove("alpha").unwrap().lines, bus.controls())
    };
    let (v1, v1_controls) = run(false);
    let (mixed, mixed_controls) = run(true);
    assert!(v1.iter().any(|l| l.starts_with("peers.update")));
    assert!(
        mixed
            .iter()
            .all(|l| !l.contains("peers.delta") && !l.contains("peers.snapshot"))
    );
    assert_eq!(v1, mixed);
    assert_eq!(v1_controls, mixed_controls);
}

#[test]
fn with_peer_lists_off_nobody_is_told_of_deltas_and_nothing_is_sent() {
    let mut bus = Bus::with(RoutingConfig {
        broadcast_peers: false,
        ..config()
    });
    bus.connect_delta("alpha");
    bus.connect_delta("beta");
    let alpha = bus.take("alpha");
    assert_eq!(types(&alpha), ["hello.ack", "status.snapshot"]);
    assert_eq!(data(&alpha[0])["features"], json!(["topics", "direct"]));
    bus.send("alpha", msg_type::PEERS_RESYNC, None, json!({}));
    assert!(bus.take("alpha").is_empty());
}

fn kinds(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("peer-{i:04}")).collect()
}

#[test]
fn a_delta_join_storm_ends_with_every_peer_holding_everyone_once_at_about_one_list_each() {
    const N: usize = 400;
    let mut bus = Bus::with(super::presence::small_limits());
    let mut views = HashMap::new();
    for (i, kind) in kinds(N).iter().enumerate() {
        bus.advance(1);
        let conn = bus.attach();
        bus.register_asking(conn, kind, true);
        bus.idle();
        if i % 10 == 9 {
            drain_deltas(&mut bus, &mut views);
        }
    }
    settle_deltas(&mut bus, &mut views);
    let all = kinds(N);
    let snapshot_bytes = bus.table.presence.deltas.snapshot_bytes();
    for (kind, view) in &views {
        assert_eq!(
            view.list, all,
            "{kind} does not hold the final list in order"
        );
        for k in &all {
            assert_eq!(view.connects.get(k), Some(&1), "{kind}: connects of {k}");
        }
        assert_eq!(view.resyncs, 0);
        assert!(!view.types.contains(&msg_type::PEERS_UPDATE));
        // Each entry about once: the floor is one snapshot's worth, plus
        // each message's frame.
        assert!(
            view.bytes <= 2 * snapshot_bytes,
            "{kind}: {} bytes of presence for a {snapshot_bytes}-byte list",
            view.bytes
        );
    }
}

#[test]
fn deltas_to_one_version_are_built_once_and_shared_by_peers_at_the_same_base() {
    let (mut bus, _views) = settled_delta_peers(&["a", "b", "c"]);
    bus.advance(1000);
    bus.connect("d");
    let items: Vec<OutItem> = ["a", "b", "c"].iter().flat_map(|k| bus.take(k)).collect();
    assert_eq!(types(&items), ["peers.delta"; 3]);
    for item in &items {
        assert!(Arc::ptr_eq(
            item.data.as_ref().unwrap(),
            items[0].data.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            item.prefix.as_ref().unwrap(),
            items[0].prefix.as_ref().unwrap()
        ));
    }
}

#[test]
fn a_displaced_kind_is_changed_in_place_and_one_that_left_and_came_back_moves_to_the_end() {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    bus.connect_delta("watcher");
    for k in ["a", "b", "c"] {
        bus.connect(k);
    }
    settle_deltas(&mut bus, &mut views);
    // `a` displaced by a new socket: changed, in its place.
    bus.advance(10);
    bus.connect("a");
    settle_deltas(&mut bus, &mut views);
    assert_eq!(views["watcher"].list, ["watcher", "a", "b", "c"]);
    assert_eq!(
        views["watcher"].events.last().map(String::as_str),
        Some("~a")
    );
    // `b` leaves and comes back within one batch of inputs: one delta
    // lists it as left and joined, and it moves to the end.
    bus.advance(10);
    let b = bus.conns["b"];
    let now = bus.now();
    bus.table.handle_closed(now, b, Some(1000), String::new());
    let conn = bus.attach();
    bus.register_asking(conn, "b", false);
    bus.idle();
    let items = bus.take("watcher");
    assert_eq!(types(&items), ["peers.delta"]);
    let d = data(&items[0]);
    assert_eq!(d["left"], json!(["b"]));
    assert_eq!(d["joined"][0][0], json!("b"));
    assert_eq!(d["changed"], json!([]));
    views.get_mut("watcher").unwrap().apply(&items[0]);
    let w = &views["watcher"];
    assert_eq!(w.list, ["watcher", "a", "c", "b"]);
    assert_eq!(w.events.last().map(String::as_str), Some("~b"));
    // The same order a v1 peer's list has.
    bus.take("c");
    bus.advance(1);
    bus.connect("d");
    assert_eq!(peers_of(&bus.take("c")[0]), ["watcher", "a", "c", "b", "d"]);
}

#[test]
fn a_gap_is_repaired_by_a_resync_answered_with_a_fresh_snapshot_at_the_peers_rate() {
    // A slow per-peer rate: a snapshot of three costs alpha about 0.3 s.
    let mut bus = Bus::with(RoutingConfig {
        presence: membership::PresenceLimits {
            list_bytes_per_peer_per_sec: 1024.0,
            ..Default::default()
        },
        ..config()
    });
    let mut views: HashMap<String, DeltaView> = HashMap::new();
    bus.connect_delta("alpha");
    drain_deltas(&mut bus, &mut views);
    bus.advance(1000);
    bus.connect("beta");
    // The delta about beta is lost on the way.
    let lost = bus.take("alpha");
    assert_eq!(types(&lost), ["peers.delta"]);
    bus.take("beta");
    bus.advance(1000);
    bus.connect("gamma");
    let items = bus.take("alpha");
    let view = views.get_mut("alpha").unwrap();
    for item in &items {
        view.apply(item);
    }
    assert_eq!(view.resyncs, 1, "the gap is seen");
    assert_eq!(view.sync.version(), None);
    bus.send("alpha", msg_type::PEERS_RESYNC, None, json!({}));
    // The answer, read by a fresh view: a snapshot of the current version.
    let mut views2 = HashMap::new();
    settle_deltas(&mut bus, &mut views2);
    let fresh = &views2["alpha"];
    assert_eq!(fresh.types, [msg_type::PEERS_SNAPSHOT]);
    assert_eq!(fresh.sync.version(), Some(3));
    assert_eq!(fresh.list, ["alpha", "beta", "gamma"]);
    // Asks in a burst: the first is answered at once, the others wait for
    // alpha's rate and share one snapshot.
    bus.advance(1000);
    for _ in 0..3 {
        bus.send("alpha", msg_type::PEERS_RESYNC, None, json!({}));
    }
    let first = bus.take("alpha");
    assert_eq!(types(&first), [msg_type::PEERS_SNAPSHOT]);
    assert!(
        bus.table.poll_timeout().is_some(),
        "the rest wait for the rate"
    );
    let mut views3 = HashMap::new();
    settle_deltas(&mut bus, &mut views3);
    assert_eq!(views3["alpha"].types, [msg_type::PEERS_SNAPSHOT]);
    assert_eq!(views3["alpha"].list, ["alpha", "beta", "gamma"]);
}

#[test]
fn a_peer_held_back_past_a_large_departure_gets_a_snapshot_not_a_larger_delta() {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    bus.connect_delta("watcher");
    let conns: Vec<ConnId> = (0..100)
        .map(|i| bus.connect(&format!("a-leaver-with-a-long-name-{i:02}")))
        .collect();
    settle_deltas(&mut bus, &mut views);
    assert_eq!(views["watcher"].list.len(), 101);
    for c in conns {
        let now = bus.now();
        bus.table.handle_closed(now, c, Some(1000), String::new());
    }
    bus.connect("z");
    settle_deltas(&mut bus, &mut views);
    let w = &views["watcher"];
    // 100 kinds left since what it holds: the two-entry snapshot is smaller.
    assert_eq!(w.types.last(), Some(&msg_type::PEERS_SNAPSHOT));
    assert_eq!(w.list, ["watcher", "z"]);
    assert_eq!(w.resyncs, 0);
}

#[test]
fn large_changes_come_as_small_chained_deltas_and_large_lists_as_small_parts() {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    bus.connect_delta("watcher");
    drain_deltas(&mut bus, &mut views);
    let watcher = bus.conns["watcher"];
    // The watcher's writer holds a list meanwhile: 600 joins pile up.
    bus.connect("first");
    let held = bus.take_conn_unflushed(watcher);
    assert_eq!(types(&held), ["peers.delta"]);
    for i in 0..600 {
        let conn = bus.attach();
        bus.register(conn, &format!("joiner-{i:03}"));
    }
    bus.idle();
    link_transport::writer::Outgoing::flushed(&*bus.outboxes[&watcher]);
    views.get_mut("watcher").unwrap().apply(&held[0]);
    settle_deltas(&mut bus, &mut views);
    let w = &views["watcher"];
    let chain = w
        .types
        .iter()
        .filter(|t| **t == msg_type::PEERS_DELTA)
        .count();
    assert!(chain >= 3, "{chain} deltas: one per join batch of ~8 KiB");
    assert_eq!(w.resyncs, 0);
    assert_eq!(w.list.len(), 602);
    for l in &w.lines {
        assert!(l.len() < 9 * 1024, "a {}-byte message", l.len());
    }
    // A newcomer's snapshot of 602 comes in parts of about 8 KiB.
    bus.connect_delta("late");
    settle_deltas(&mut bus, &mut views);
    let late = &views["late"];
    let parts = late
        .types
        .iter()
        .filter(|t| **t == msg_type::PEERS_SNAPSHOT)
        .count();
    assert!(parts >= 2, "{parts} parts");
    assert_eq!(late.list.len(), 603);
    assert!(late.lines.iter().all(|l| l.len() < 9 * 1024));
}

/// Drains every writer until presence is quiet, keeping what each took.
fn settle_items(bus: &mut Bus) -> HashMap<String, Vec<OutItem>> {
    let mut taken: HashMap<String, Vec<OutItem>> = HashMap::new();
    for _ in 0..10_000 {
        let conns: Vec<(String, ConnId)> = bus.conns.iter().map(|(k, c)| (k.clone(), *c)).collect();
        for (kind, conn) in conns {
            let items = bus.take_conn(conn);
            taken.entry(kind).or_default().extend(items);
        }
        let Some(at) = bus.table.poll_timeout() else {
            return taken;
        };
        let now = bus.now().instant;
        bus.advance(at.saturating_duration_since(now).as_millis() as u64 + 1);
        let now = bus.now();
        bus.table.handle_timeout(now);
    }
    panic!("presence never settled");
}

#[test]
fn peers_behind_from_different_versions_share_every_delta_after_their_first() {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    bus.connect_delta("early");
    bus.connect_delta("late");
    drain_deltas(&mut bus, &mut views);
    let (early, late) = (bus.conns["early"], bus.conns["late"]);
    // early's writer holds a delta from here on; late's a little later.
    bus.advance(1000);
    bus.connect("first");
    let early_held = bus.take_conn_unflushed(early);
    for item in bus.take("late") {
        views.get_mut("late").unwrap().apply(&item);
    }
    for i in 0..150 {
        let conn = bus.attach();
        bus.register(conn, &format!("joiner-{i:03}"));
    }
    bus.idle();
    let late_held = bus.take_conn_unflushed(late);
    assert_eq!(types(&early_held), ["peers.delta"]);
    assert!(!late_held.is_empty());
    for i in 150..900 {
        let conn = bus.attach();
        bus.register(conn, &format!("joiner-{i:03}"));
    }
    bus.idle();
    for conn in [early, late] {
        link_transport::writer::Outgoing::flushed(&*bus.outboxes[&conn]);
    }
    let taken = settle_items(&mut bus);
    let deltas = |kind: &str| -> Vec<OutItem> {
        taken[kind]
            .iter()
            .filter(|i| i.msg_type == msg_type::PEERS_DELTA)
            .cloned()
            .collect()
    };
    let (e, l) = (deltas("early"), deltas("late"));
    assert!(e.len() >= 5, "{} deltas for 750 joins", e.len());
    // After its first delta (to the end of the segment it is in), late is
    // sent the very messages early is: one build per segment, shared.
    for item in &l[1..] {
        assert!(
            e.iter()
                .any(|x| Arc::ptr_eq(x.data.as_ref().unwrap(), item.data.as_ref().unwrap())),
            "late's {} is not early's",
            line(item)
        );
    }
    // Both end holding everyone; nothing built is kept once all are current.
    for (kind, held) in [("early", &early_held), ("late", &late_held)] {
        let view = views.get_mut(kind).unwrap();
        for item in held.iter().chain(&taken[kind]) {
            view.apply(item);
        }
        assert_eq!(view.list.len(), 903, "{kind}");
        assert_eq!(view.resyncs, 0, "{kind}");
    }
    assert_eq!(bus.table.presence.deltas.kept(), 0);
}

#[test]
fn newcomers_close_together_share_one_snapshot_and_catch_up_by_delta() {
    let mut bus = Bus::new();
    let mut views = HashMap::new();
    for i in 0..40 {
        bus.connect(&format!("resident-{i:02}"));
    }
    settle_deltas(&mut bus, &mut views);
    bus.connect_delta("first");
    let first = bus.take("first");
    bus.connect_delta("second");
    let second = bus.take("second");
    assert_eq!(
        types(&first),
        ["hello.ack", "peers.snapshot", "status.snapshot"]
    );
    // One join since the first's snapshot: the second is sent the same
    // snapshot (not a new one per version), then the delta since.
    assert_eq!(
        types(&second),
        [
            "hello.ack",
            "peers.snapshot",
            "peers.delta",
            "status.snapshot"
        ]
    );
    assert!(Arc::ptr_eq(
        first[1].data.as_ref().unwrap(),
        second[1].data.as_ref().unwrap()
    ));
    let view = views.entry("second".to_owned()).or_default();
    for item in &second {
        view.apply(item);
    }
    assert_eq!(view.list.len(), 42);
    assert_eq!(view.list.last().map(String::as_str), Some("second"));
    assert_eq!(view.resyncs, 0);
}

#[test]
fn in_a_cluster_a_delta_peer_follows_the_other_hubs_peers_and_kinds_that_move() {
    use crate::cluster::link::{ClusterIn, ClusterLink};
    let mut bus = Bus::new();
    let (link, _rx) = ClusterLink::new("hub-a".into());
    link.set_up(true);
    bus.table.join_cluster(link);
    let mut views = HashMap::new();
    let lease = |bus: &mut Bus, kind: &str, rev: u64| {
        let now = bus.now();
        bus.table.handle_cluster(
            now,
            ClusterIn::Lease {
                kind: kind.into(),
                hub: "hub-b".into(),
                rev,
                hello: Hello::sanitize(Some(&json!({ "kind": kind }))).unwrap(),
                connected_at: T0_MS,
                hello_id: None,
            },
        );
    };
    bus.connect_delta("alpha");
    bus.connect("omega"); // a v1 peer beside it
    let now = bus.now();
    bus.table.handle_cluster(
        now,
        ClusterIn::HubAlive {
            hub: "hub-b".into(),
            peers: 2,
        },
    );
    lease(&mut bus, "beta", 3);
    lease(&mut bus, "gamma", 4);
    settle_deltas(&mut bus, &mut views);
    assert_eq!(views["alpha"].list, ["alpha", "omega", "beta", "gamma"]);
    // gamma moves to this hub (a new socket here), then leaves it: the
    // lists follow, each change seen once.
    let gamma = bus.connect("gamma");
    settle_deltas(&mut bus, &mut views);
    assert_eq!(views["alpha"].list, ["alpha", "omega", "beta", "gamma"]);
    bus.close(gamma);
    settle_deltas(&mut bus, &mut views);
    // Its lease still names hub B: listed as hub B's again.
    assert_eq!(views["alpha"].list, ["alpha", "omega", "beta", "gamma"]);
    // Hub B goes: its peers leave every list.
    let now = bus.now();
    bus.table.handle_cluster(
        now,
        ClusterIn::HubGone {
            hub: "hub-b".into(),
        },
    );
    settle_deltas(&mut bus, &mut views);
    assert_eq!(views["alpha"].list, ["alpha", "omega"]);
    assert_eq!(views["alpha"].resyncs, 0);
    // gamma's two moves (to this hub's socket and back to hub B's) come
    // as changes in place, as a re-registration on one hub does.
    let events: Vec<&str> = views["alpha"].events.iter().map(String::as_str).collect();
    assert_eq!(
        events,
        [
            "+alpha", "+omega", "+beta", "+gamma", "~gamma", "~gamma", "-beta", "-gamma"
        ]
    );
}

/// Soak finding: the change log kept every join and departure up to
/// `LOG_CAP` on a bus that churns, though every peer held the current
/// version: the hub grew about 1 MiB an hour. Once all are current it
/// holds nothing, and the next change still reaches them as a delta.
#[test]
fn a_churning_bus_keeps_no_change_log_once_every_peer_is_current() {
    let (mut bus, mut views) = settled_delta_peers(&["a", "b", "c"]);
    for round in 0..50 {
        let conn = bus.conns["c"];
        bus.close(conn);
        bus.connect_delta("c");
        settle_deltas(&mut bus, &mut views);
        assert_eq!(bus.table.presence.deltas.logged(), 0, "round {round}");
    }
    let a = views.get_mut("a").unwrap();
    assert_eq!(a.list, ["a", "b", "c"]);
    assert_eq!(a.resyncs, 0);
    assert_eq!(
        a.types
            .iter()
            .filter(|t| **t == msg_type::PEERS_SNAPSHOT)
            .count(),
        1,
        "a's one snapshot was its first list; every churn came as a delta"
    );
}
