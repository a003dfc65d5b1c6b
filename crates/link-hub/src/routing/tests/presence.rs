//! Presence at scale, as transcripts: one list per version shared by every
//! recipient, lists paced in a join storm (each peer still sees every
//! joined peer exactly once), the in-flight cap, and lists larger than
//! `max_peer_list_bytes`.

use std::collections::{HashMap, HashSet};

use super::*;

/// What a peer that derives its events by diffing lists (as the Node
/// client does) has seen.
#[derive(Default)]
struct View {
    kinds: HashSet<String>,
    connects: HashMap<String, usize>,
    disconnects: usize,
    lists: usize,
    list_bytes: usize,
}

impl View {
    fn apply(&mut self, item: &OutItem) {
        let now: HashSet<String> = peers_of(item).into_iter().collect();
        for k in now.difference(&self.kinds) {
            *self.connects.entry(k.clone()).or_default() += 1;
        }
        self.disconnects += self.kinds.difference(&now).count();
        self.kinds = now;
        self.lists += 1;
        self.list_bytes += item.data.as_deref().map_or(0, CanonicalData::len);
    }
}

/// Every writer takes what is queued and flushes it.
fn drain(bus: &mut Bus, views: &mut HashMap<String, View>) {
    let conns: Vec<(String, ConnId)> = bus.conns.iter().map(|(k, c)| (k.clone(), *c)).collect();
    for (kind, conn) in conns {
        let items = bus.take_conn(conn);
        let view = views.entry(kind).or_default();
        for item in items
            .iter()
            .filter(|i| i.msg_type == msg_type::PEERS_UPDATE)
        {
            view.apply(item);
        }
    }
}

/// Runs the table's timers until it wants none, writers flushing between.
fn settle(bus: &mut Bus, views: &mut HashMap<String, View>) {
    for _ in 0..10_000 {
        drain(bus, views);
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

fn kinds(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("peer-{i:04}")).collect()
}

#[test]
fn one_list_per_version_is_shared_by_every_recipient_with_one_signed_prefix() {
    let mut bus = Bus::new();
    for k in ["a", "b", "c"] {
        bus.connect(k);
        bus.take(k);
    }
    bus.connect("d");
    let lists: Vec<OutItem> = ["a", "b", "c"].iter().flat_map(|k| bus.take(k)).collect();
    assert_eq!(lists.len(), 3);
    let d = bus.take("d");
    let first = &lists[0];
    for item in lists.iter().chain([&d[1]]) {
        assert_eq!(peers_of(item), ["a", "b", "c", "d"]);
        assert!(Arc::ptr_eq(
            item.data.as_ref().unwrap(),
            first.data.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            item.prefix.as_ref().unwrap(),
            first.prefix.as_ref().unwrap()
        ));
    }
}

/// Limits scaled down with the bus (a list of 300 peers is about 35 KiB).
pub(super) fn small_limits() -> RoutingConfig {
    RoutingConfig {
        presence: membership::PresenceLimits {
            small_list_bytes: 4 * 1024,
            list_bytes_per_peer_per_sec: 64.0 * 1024.0,
            list_bytes_per_sec: 64.0 * 1024.0 * 1024.0,
            lists_in_flight_bytes: 1 << 20,
        },
        ..config()
    }
}

#[test]
fn a_join_storm_ends_with_every_peer_holding_every_peer_once_at_a_bounded_cost() {
    const N: usize = 300;
    let mut bus = Bus::with(small_limits());
    let mut views = HashMap::new();
    for (i, kind) in kinds(N).iter().enumerate() {
        bus.advance(1);
        let conn = bus.attach();
        bus.register(conn, kind);
        bus.idle();
        if i % 10 == 9 {
            drain(&mut bus, &mut views);
        }
    }
    settle(&mut bus, &mut views);
    let all: HashSet<String> = kinds(N).into_iter().collect();
    let list_bytes = views.values().map(|v| v.list_bytes).max().unwrap();
    let final_bytes = {
        let any = bus.table.peer_list(None);
        CanonicalData::new(&any).len()
    };
    for (kind, view) in &views {
        assert_eq!(view.kinds, all, "{kind} does not hold the final list");
        assert_eq!(view.disconnects, 0, "{kind} saw a peer leave");
        for k in &all {
            assert_eq!(view.connects.get(k), Some(&1), "{kind}: connects of {k}");
        }
    }
    // Unpaced, the first peer would get one list per join: about
    // N/2 lists of the final size. Paced, a storm of one second costs it
    // its rate plus the final list.
    let rate = small_limits().presence.list_bytes_per_peer_per_sec;
    let budget = (0.3 * rate) as usize + 3 * final_bytes;
    assert!(
        list_bytes <= budget,
        "{list_bytes} list bytes for one peer, budget {budget}"
    );
    assert!(list_bytes < N / 2 * final_bytes / 20);
}

/// `n` peers join at one instant and no writer flushes: the storm's
/// flushes fill the in-flight cap. The bus, the cap and the final list's
/// size.
fn storm_without_writers(n: usize) -> (Bus, usize, usize) {
    let mut bus = Bus::with(small_limits());
    let cap = small_limits().presence.lists_in_flight_bytes;
    for kind in kinds(n) {
        let conn = bus.attach();
        bus.register(conn, &kind);
        let now = bus.now();
        bus.table.handle_input_done(now, true);
    }
    let list = CanonicalData::new(&bus.table.peer_list(None)).len();
    (bus, cap, list)
}

#[test]
fn lists_in_flight_are_capped_until_the_writers_flush_them() {
    const N: usize = 300;
    let (mut bus, cap, list) = storm_without_writers(N);
    let in_flight = bus.table.lists_in_flight();
    assert!(
        in_flight <= cap + 2 * (list + 400),
        "{in_flight} bytes of lists in flight"
    );
    assert!(in_flight >= cap);
    // Nothing was flushed: a retry before the writers move sends nothing.
    let held_at = in_flight;
    bus.advance(1 + membership::RETRY.as_millis() as u64);
    let now = bus.now();
    bus.table.handle_timeout(now);
    assert_eq!(bus.table.lists_in_flight(), held_at);
    let mut views = HashMap::new();
    settle(&mut bus, &mut views);
    assert_eq!(bus.table.lists_in_flight(), 0);
    assert!(views.values().all(|v| v.kinds.len() == N));
}

#[test]
fn lists_held_by_sockets_that_stopped_writing_stop_counting_against_the_cap() {
    const N: usize = 300;
    let (mut bus, cap, list) = storm_without_writers(N);
    let first = bus.table.lists_in_flight();
    assert!(first >= cap && first <= cap + 2 * (list + 400), "{first}");
    // No writer moves: within STUCK nothing more goes; then one list per
    // STUCK, as before.
    bus.advance(membership::STUCK.as_millis() as u64 - 1);
    let now = bus.now();
    bus.table.handle_timeout(now);
    assert_eq!(bus.table.lists_in_flight(), first);
    let mut last = first;
    let steps = membership::PARK_AFTER.as_millis() / membership::STUCK.as_millis();
    for _ in 1..steps {
        bus.advance(membership::STUCK.as_millis() as u64);
        let now = bus.now();
        bus.table.handle_timeout(now);
        let in_flight = bus.table.lists_in_flight();
        assert!(
            in_flight > last && in_flight - last <= list + 400,
            "one list per STUCK"
        );
        last = in_flight;
    }
    // A second without any list given back: those lists are taken as
    // stalled, and another cap's worth goes in one flush.
    bus.advance(membership::STUCK.as_millis() as u64 + 1);
    let now = bus.now();
    bus.table.handle_timeout(now);
    let second = bus.table.lists_in_flight();
    assert!(
        second >= last + cap && second <= last + cap + 2 * (list + 400),
        "{second} bytes in flight after {last}"
    );
    // Sockets that never write can park at most MAX_PARKED caps: then one
    // list per STUCK goes, as before, and memory stays bounded.
    let bound = (membership::MAX_PARKED + 1) * cap;
    // Each flush may pass its cap by the list that crossed it, and each
    // STUCK before a park adds one.
    let slack = (membership::MAX_PARKED + 2) * steps as usize * (list + 400);
    let mut last = second;
    for _ in 0..2 * membership::MAX_PARKED {
        bus.advance(membership::PARK_AFTER.as_millis() as u64 + 1);
        let now = bus.now();
        bus.table.handle_timeout(now);
        let now_in_flight = bus.table.lists_in_flight();
        assert!(now_in_flight <= bound + slack, "{now_in_flight}");
        if last >= bound {
            assert!(
                now_in_flight - last <= list + 400,
                "one list past the bound"
            );
        }
        last = now_in_flight;
    }
    assert!(last >= bound, "{last}: the parked lists reached the bound");
    // The writers move at last: every peer ends with the final list.
    let mut views = HashMap::new();
    settle(&mut bus, &mut views);
    assert_eq!(bus.table.lists_in_flight(), 0);
    assert!(views.values().all(|v| v.kinds.len() == N));
}

#[test]
fn a_list_past_max_peer_list_bytes_holds_the_earliest_peers_and_nobody_is_disconnected() {
    let mut bus = Bus::with(RoutingConfig {
        max_peer_list_bytes: 700,
        ..config()
    });
    let names = kinds(12);
    let mut conns = Vec::new();
    for k in &names {
        conns.push(bus.connect(k));
    }
    let list = bus
        .take(&names[0])
        .into_iter()
        .rev()
        .find(|i| i.msg_type == msg_type::PEERS_UPDATE)
        .unwrap();
    assert!(list.data.as_deref().unwrap().len() <= 700);
    let listed = peers_of(&list);
    assert!(listed.len() >= 4 && listed.len() < 12, "{listed:?}");
    assert_eq!(listed, names[..listed.len()]);
    assert!(bus.controls().is_empty(), "nobody is disconnected");
    assert_eq!(bus.table.health().peer_count, 12);
    // An early peer leaves: the next one in registration order moves in.
    bus.close(conns[1]);
    let list = bus.take(&names[0]).pop().unwrap();
    let mut expected: Vec<String> = names[..=listed.len()].to_vec();
    expected.remove(1);
    assert_eq!(peers_of(&list), expected);
    // link.peer.list still answers about every peer.
    let all = bus.table.peer_list(None);
    assert_eq!(all["peers"].as_array().unwrap().len(), 11);
}

#[test]
fn a_writer_still_busy_with_a_list_gets_the_newest_when_done_and_the_timer_never_spins() {
    let mut bus = Bus::new();
    let a = bus.connect("a");
    // a's writer took its first list and has not flushed it yet.
    let mut taken = Vec::new();
    bus.outboxes[&a].take(&mut taken, usize::MAX);
    assert_eq!(peers_of(&taken[1]), ["a"]);
    bus.connect("b");
    bus.advance(membership::QUIET.as_millis() as u64 + 1);
    for _ in 0..3 {
        let now = bus.now();
        bus.table.handle_timeout(now);
        let next = bus
            .table
            .poll_timeout()
            .expect("a still waits for the list");
        assert!(next > now.instant, "the timer would fire at once, forever");
        assert!(bus.take_conn_unflushed(a).is_empty(), "one list in flight");
        bus.advance(membership::RETRY.as_millis() as u64);
    }
    link_transport::writer::Outgoing::flushed(&*bus.outboxes[&a]);
    let now = bus.now();
    bus.table.handle_timeout(now);
    let got = bus.take_conn(a);
    assert_eq!(got.len(), 1);
    assert_eq!(peers_of(&got[0]), ["a", "b"]);
    assert_eq!(bus.table.poll_timeout(), None);
}

/// The presence timer fires now; none of the first five peers gets a list.
fn no_list_at_the_timeout(bus: &mut Bus) {
    let now = bus.now();
    bus.table.handle_timeout(now);
    for k in kinds(5) {
        assert!(
            bus.take(&k)
                .iter()
                .all(|i| i.msg_type != msg_type::PEERS_UPDATE),
            "no list before the longer quiet"
        );
    }
}

#[test]
fn a_final_round_cut_short_by_a_join_makes_the_next_wait_longer() {
    // Lists go only in final rounds (rates of a byte a second), one per
    // flush (any list fills the in-flight cap).
    let mut bus = Bus::with(RoutingConfig {
        presence: membership::PresenceLimits {
            small_list_bytes: 1,
            list_bytes_per_peer_per_sec: 1.0,
            list_bytes_per_sec: 1.0,
            lists_in_flight_bytes: 1,
        },
        ..config()
    });
    let mut views = HashMap::new();
    for kind in kinds(5) {
        let conn = bus.attach();
        bus.register(conn, &kind);
        bus.idle();
    }
    settle(&mut bus, &mut views);
    assert!(views.values().all(|v| v.kinds.len() == 5));
    // A join, then 250 ms of quiet: the round starts, one list per flush.
    let conn = bus.attach();
    bus.register(conn, "late-1");
    bus.idle();
    bus.advance(membership::QUIET.as_millis() as u64);
    let now = bus.now();
    bus.table.handle_timeout(now);
    let sent: usize =
        kinds(5).iter().map(|k| bus.take(k).len()).sum::<usize>() + bus.take("late-1").len();
    assert!(sent >= 1, "the final round started");
    // Another join cuts it short: the next round waits twice as long.
    let conn = bus.attach();
    bus.register(conn, "late-2");
    bus.idle();
    let joined = bus.now().instant;
    // (Wake-ups before it, retries of the cut round, send no list.)
    loop {
        let next = bus.table.poll_timeout().unwrap();
        if next >= joined + membership::QUIET {
            assert_eq!(next, joined + 2 * membership::QUIET);
            break;
        }
        bus.advance(
            next.saturating_duration_since(bus.now().instant)
                .as_millis() as u64,
        );
        no_list_at_the_timeout(&mut bus);
    }
    bus.advance(membership::QUIET.as_millis() as u64 + 1);
    no_list_at_the_timeout(&mut bus);
    settle(&mut bus, &mut views);
    for (kind, view) in &views {
        assert_eq!(view.kinds.len(), 7, "{kind}");
        assert!(view.connects.values().all(|n| *n == 1));
    }
}

/// Fuzz finding (`fuzz/regressions/routing/v1-list-refused-by-full-outbox`):
/// a `peers.update` refused by a full outbox was counted as seen, so the
/// peer never got the list until membership changed again. It is retried.
#[test]
fn a_list_refused_by_a_full_outbox_is_sent_again_once_there_is_room() {
    let mut bus = Bus::new();
    // Room for the hello.ack (an idle socket takes any message) and
    // nothing more.
    bus.outbox_bytes = 64;
    let a = bus.connect("a");
    let first: Vec<&str> = bus.take_conn(a).iter().map(|i| i.msg_type).collect();
    assert_eq!(first, [msg_type::HELLO_ACK], "the list did not fit");
    let mut views = HashMap::new();
    settle(&mut bus, &mut views);
    assert_eq!(views["a"].lists, 1);
    assert_eq!(views["a"].kinds, HashSet::from(["a".to_owned()]));
}
