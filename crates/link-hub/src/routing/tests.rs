//! Transcript tests of the routing table: a virtual clock, real outboxes
//! (their conflation and caps are part of what is routed), no sockets, no
//! tasks. Each test reads like a conversation: who connects, who sends
//! what, and what lands in each peer's outbox, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use link_protocol::conn::Now;
use link_protocol::envelope::Header;
use link_protocol::{DropReason, Envelope, Hello, msg_type};
use serde_json::{Value, json};

use super::*;
use crate::acl::{AclOp, Verdict};
use crate::events::{HubEvent, TimeoutReason};
use crate::outbox::{OutItem, Outbox};

mod cluster;
mod deltas;
mod presence;

const T0_MS: u64 = 1_795_424_111_000;

fn config() -> RoutingConfig {
    RoutingConfig {
        max_pending_sockets: 100,
        hello_timeout: Some(Duration::from_secs(5)),
        broadcast_peers: true,
        max_peer_list_bytes: crate::config::DEFAULT_MAX_PEER_LIST_BYTES,
        max_subscriptions_per_peer: crate::config::DEFAULT_MAX_SUBSCRIPTIONS_PER_PEER,
        presence: membership::PresenceLimits::default(),
        max_concurrent_rpc: 0,
        expose_rpc_errors: false,
        max_buffered_bytes: 1 << 20,
        user_rpcs: Default::default(),
        acl: AclHooks::default(),
    }
}

/// The routing table with a virtual clock and one outbox per socket.
struct Bus {
    table: Routing,
    base: Instant,
    elapsed: Duration,
    outbox_bytes: usize,
    next_conn: ConnId,
    outboxes: HashMap<ConnId, Arc<Outbox>>,
    /// The socket each kind connected on last.
    conns: HashMap<String, ConnId>,
    next_id: u64,
}

/// Every event wanted, per-message ones included.
const ALL_EVENTS: Listening = Listening {
    events: true,
    traffic: true,
};

impl Bus {
    /// `kind` subscribes to `topic`.
    fn subscribe(&mut self, kind: &str, topic: &str) {
        self.send(
            kind,
            msg_type::TOPIC_SUBSCRIBE,
            None,
            json!({ "topic": topic }),
        );
    }

    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: RoutingConfig) -> Self {
        let mut table = Routing::new(config).with_recent_ids(Box::new(|| 7));
        table.set_listening(ALL_EVENTS);
        Self {
            table,
            base: Instant::now(),
            elapsed: Duration::ZERO,
            outbox_bytes: 1 << 20,
            next_conn: 1,
            outboxes: HashMap::new(),
            conns: HashMap::new(),
            next_id: 0,
        }
    }

    fn now(&self) -> Now {
        Now::new(
            self.base + self.elapsed,
            T0_MS + self.elapsed.as_millis() as u64,
        )
    }

    fn advance(&mut self, ms: u64) {
        self.elapsed += Duration::from_millis(ms);
    }

    /// A socket is accepted; returns its id.
    fn attach(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let outbox = Arc::new(Outbox::new(self.outbox_bytes));
        self.outboxes.insert(conn, outbox.clone());
        self.table.handle_attach(conn, Route::Local(outbox), None);
        conn
    }

    /// The socket's hello for `kind` verified.
    fn register(&mut self, conn: ConnId, kind: &str) {
        let hello = Hello::sanitize(Some(&json!({ "kind": kind }))).unwrap();
        self.conns.insert(kind.to_owned(), conn);
        let now = self.now();
        self.table.handle_register(now, conn, hello);
    }

    /// Attach, register, and let the mailbox drain.
    fn connect(&mut self, kind: &str) -> ConnId {
        let conn = self.attach();
        self.register(conn, kind);
        self.idle();
        conn
    }

    /// The mailbox is empty.
    fn idle(&mut self) {
        let now = self.now();
        self.table.handle_input_done(now, false);
    }

    fn envelope(&mut self, kind: &str, t: &'static str, to: Option<&str>, data: Value) -> Envelope {
        self.next_id += 1;
        let id = format!("{kind}-{}", self.next_id);
        let header = Header {
            id: &id,
            ts: self.now().wall_ms,
            msg_type: t,
            from: Some(kind),
            to,
        };
        Envelope::new(&header, Some(data))
    }

    /// `kind` sends a message on its current socket; returns its id.
    fn send(&mut self, kind: &str, t: &'static str, to: Option<&str>, data: Value) -> String {
        let conn = self.conns[kind];
        self.send_on(conn, kind, t, to, data)
    }

    fn send_on(
        &mut self,
        conn: ConnId,
        kind: &str,
        t: &'static str,
        to: Option<&str>,
        data: Value,
    ) -> String {
        let env = self.envelope(kind, t, to, data);
        let id = env.id().to_owned();
        let now = self.now();
        self.table.handle_inbound(now, conn, kind.into(), env);
        self.idle();
        id
    }

    fn close(&mut self, conn: ConnId) {
        let now = self.now();
        self.table
            .handle_closed(now, conn, Some(1000), String::new());
        self.idle();
    }

    /// What is queued for `kind`'s current socket, taken out.
    fn take(&mut self, kind: &str) -> Vec<OutItem> {
        let conn = self.conns[kind];
        self.take_conn(conn)
    }

    /// Takes what is queued without flushing (a writer mid-write).
    fn take_conn_unflushed(&mut self, conn: ConnId) -> Vec<OutItem> {
        let mut batch = Vec::new();
        self.outboxes[&conn].take(&mut batch, usize::MAX);
        batch
    }

    /// As the socket's writer does: take, then flush.
    fn take_conn(&mut self, conn: ConnId) -> Vec<OutItem> {
        let mut batch = Vec::new();
        self.outboxes[&conn].take(&mut batch, usize::MAX);
        link_transport::writer::Outgoing::flushed(&*self.outboxes[&conn]);
        batch
    }

    /// `type from->to data` lines for what is queued for `kind`.
    fn transcript(&mut self, kind: &str) -> Vec<String> {
        self.take(kind).iter().map(line).collect()
    }

    fn controls(&mut self) -> Vec<(ConnId, ConnCtl)> {
        std::iter::from_fn(|| self.table.poll_control()).collect()
    }

    fn tasks(&mut self) -> Vec<Task> {
        std::iter::from_fn(|| self.table.poll_task()).collect()
    }

    fn events(&mut self) -> Vec<HubEvent> {
        std::iter::from_fn(|| self.table.poll_event()).collect()
    }

    fn event_names(&mut self) -> Vec<&'static str> {
        self.events().iter().map(HubEvent::name).collect()
    }
}

fn line(item: &OutItem) -> String {
    let data = item.data.as_deref().map_or("null", |d| d.as_str());
    format!("{} {}->{} {data}", item.msg_type, item.from, item.to)
}

fn data(item: &OutItem) -> Value {
    serde_json::from_str(item.data.as_deref().unwrap().as_str()).unwrap()
}

fn peers_of(item: &OutItem) -> Vec<String> {
    assert_eq!(item.msg_type, msg_type::PEERS_UPDATE);
    data(item)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

// ----- membership ------------------------------------------------------------

#[test]
fn a_newcomer_gets_ack_then_peer_list_then_status_snapshot() {
    let mut bus = Bus::new();
    bus.connect("billing");
    let items = bus.take("billing");
    let types: Vec<_> = items.iter().map(|i| i.msg_type).collect();
    assert_eq!(
        types,
        [
            msg_type::HELLO_ACK,
            msg_type::PEERS_UPDATE,
            msg_type::STATUS_SNAPSHOT
        ]
    );
    let ack = data(&items[0]);
    assert_eq!(ack["ok"], json!(true));
    assert_eq!(ack["serverTime"], json!(T0_MS));
    assert_eq!(ack["features"], json!(["topics", "direct"]));
    assert_eq!(peers_of(&items[1]), ["billing"]);
    assert_eq!(data(&items[2]), json!({}));
    assert!(
        items
            .iter()
            .all(|i| &*i.from == "server" && &*i.to == "billing")
    );
    assert_eq!(bus.event_names(), ["peer.connect"]);
}

#[test]
fn a_join_burst_costs_each_peer_one_list_when_the_mailbox_drains() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.take("a");
    // Three hellos arrive back to back: no list goes to `a` until the
    // mailbox is empty.
    for kind in ["b", "c", "d"] {
        let conn = bus.attach();
        bus.register(conn, kind);
        let now = bus.now();
        bus.table.handle_input_done(now, true);
    }
    assert!(bus.take("a").is_empty());
    bus.idle();
    let a = bus.take("a");
    assert_eq!(a.len(), 1);
    assert_eq!(peers_of(&a[0]), ["a", "b", "c", "d"]);
    // b's own list at registration was [a, b]; it still waited in b's
    // outbox, so the final one replaced it in place (conflation).
    let b: Vec<_> = bus.take("b").iter().map(|i| i.msg_type).collect();
    assert_eq!(
        b,
        [
            msg_type::HELLO_ACK,
            msg_type::PEERS_UPDATE,
            msg_type::STATUS_SNAPSHOT
        ]
    );
    // d registered last: its list at registration was already final.
    let d = bus.take("d");
    assert_eq!(peers_of(&d[1]), ["a", "b", "c", "d"]);
    assert_eq!(d.len(), 3);
}

#[test]
fn a_busy_mailbox_still_flushes_peer_lists_every_256_inputs() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("sender");
    bus.take("a");
    let conn = bus.attach();
    bus.register(conn, "late");
    let now = bus.now();
    bus.table.handle_input_done(now, true);
    for i in 1..membership::PEERS_FLUSH_EVERY {
        let env = bus.envelope("sender", msg_type::DIRECT, Some("nobody"), json!({}));
        let now = bus.now();
        bus.table
            .handle_inbound(now, bus.conns["sender"], "sender".into(), env);
        let now = bus.now();
        bus.table.handle_input_done(now, true);
        if i < membership::PEERS_FLUSH_EVERY - 1 {
            assert!(bus.take("a").is_empty(), "flushed early at input {i}");
        }
    }
    let a = bus.take("a");
    assert_eq!(a.len(), 1);
    assert_eq!(peers_of(&a[0]), ["a", "sender", "late"]);
}

#[test]
fn peer_lists_are_not_sent_when_peer_updates_are_off() {
    let mut bus = Bus::with(RoutingConfig {
        broadcast_peers: false,
        ..config()
    });
    bus.connect("a");
    bus.connect("b");
    let a: Vec<_> = bus.take("a").iter().map(|i| i.msg_type).collect();
    assert_eq!(a, [msg_type::HELLO_ACK, msg_type::STATUS_SNAPSHOT]);
}

#[test]
fn a_second_hello_for_a_kind_displaces_the_first_socket() {
    let mut bus = Bus::new();
    let first = bus.connect("billing");
    bus.connect("watcher");
    bus.subscribe("billing", "t");
    bus.events();
    let second = bus.attach();
    bus.register(second, "billing");
    bus.idle();
    assert_eq!(bus.controls(), [(first, ConnCtl::Displace)]);
    assert_eq!(bus.event_names(), ["peer.replaced", "peer.connect"]);
    // The kind keeps its registration slot and is listed once.
    assert_eq!(
        bus.table
            .state()
            .peers
            .iter()
            .map(|p| p.kind.as_str())
            .collect::<Vec<_>>(),
        ["billing", "watcher"]
    );
    // A frame still arriving from the displaced socket is dropped.
    bus.take("watcher");
    bus.send_on(
        first,
        "billing",
        msg_type::DIRECT,
        Some("watcher"),
        json!({"directType": "x"}),
    );
    assert!(bus.take("watcher").is_empty());
    // The displaced socket going does not take the kind with it.
    bus.close(first);
    assert_eq!(bus.table.health().peer_count, 2);
    assert!(bus.events().is_empty());
    // Its subscriptions stay with the kind (held by the new socket).
    bus.send(
        "watcher",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": 1}),
    );
    let got = bus.take_conn(second);
    assert_eq!(got.last().unwrap().msg_type, msg_type::TOPIC_MESSAGE);
}

#[test]
fn a_peer_that_goes_leaves_its_topics_status_and_the_list() {
    let mut bus = Bus::new();
    bus.connect("a");
    let b = bus.connect("b");
    bus.subscribe("b", "news");
    bus.send(
        "b",
        msg_type::STATUS_UPDATE,
        None,
        json!({"status": {"load": 1}}),
    );
    assert_eq!(bus.table.health().status_count, 1);
    bus.take("a");
    bus.events();
    bus.close(b);
    let health = bus.table.health();
    assert_eq!(
        (health.peer_count, health.status_count, health.topic_count),
        (1, 0, 0)
    );
    let a = bus.take("a");
    assert_eq!(peers_of(&a[0]), ["a"]);
    match &bus.events()[..] {
        [HubEvent::PeerDisconnect { kind, code, .. }] => {
            assert_eq!((kind.as_str(), *code), ("b", Some(1000)));
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn past_the_pending_cap_the_oldest_waiting_socket_is_evicted() {
    let mut bus = Bus::with(RoutingConfig {
        max_pending_sockets: 2,
        ..config()
    });
    let first = bus.attach();
    let second = bus.attach();
    bus.register(second, "b");
    let third = bus.attach();
    assert!(bus.controls().is_empty(), "b registered: one is pending");
    let fourth = bus.attach();
    assert_eq!(bus.controls(), [(first, ConnCtl::Evict)]);
    match &bus.events()[..] {
        [
            _connect,
            HubEvent::PeerTimeout {
                reason,
                hello_timeout_ms,
                ..
            },
        ] => {
            assert_eq!(*reason, TimeoutReason::PendingCap);
            assert_eq!(*hello_timeout_ms, 5000);
        }
        other => panic!("unexpected events {other:?}"),
    }
    assert_eq!(bus.table.health().pending_socket_count, 2);
    let _ = (third, fourth);
}

// ----- topics and fan-out ----------------------------------------------------

#[test]
fn a_topic_message_reaches_subscribers_in_subscription_order_but_not_its_publisher() {
    let mut bus = Bus::new();
    for kind in ["pub", "x", "y", "z"] {
        bus.connect(kind);
    }
    for kind in ["z", "pub", "x", "y"] {
        bus.send(
            kind,
            msg_type::TOPIC_SUBSCRIBE,
            None,
            json!({"topic": "news"}),
        );
    }
    for kind in ["pub", "x", "y", "z"] {
        bus.take(kind);
    }
    bus.events();
    bus.send(
        "pub",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "news", "payload": {"h": 1}}),
    );
    assert!(bus.take("pub").is_empty());
    let mut order = Vec::new();
    let mut datas = Vec::new();
    for kind in ["x", "y", "z"] {
        let items = bus.take(kind);
        assert_eq!(
            items.iter().map(line).collect::<Vec<_>>(),
            [format!(
                "topic.message pub->{kind} {}",
                r#"{"payload":{"h":1},"topic":"news"}"#
            )]
        );
        datas.push(items[0].data.clone().unwrap());
        order.push(items[0].prefix.clone().unwrap());
    }
    // One data text and one signed-prefix cell shared by every recipient.
    assert!(datas.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert!(order.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    match &bus.events()[..] {
        [
            HubEvent::TopicPublish {
                subscriber_count,
                delivered,
                ..
            },
        ] => assert_eq!((*subscriber_count, *delivered), (3, 3)),
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn a_lone_subscriber_gets_its_topic_message_signed_in_one_pass() {
    let mut bus = Bus::new();
    for kind in ["pub", "x"] {
        bus.connect(kind);
    }
    bus.subscribe("x", "news");
    bus.subscribe("pub", "news");
    bus.take("x");
    bus.send(
        "pub",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "news", "payload": 1}),
    );
    let items = bus.take("x");
    assert_eq!(
        items.iter().map(line).collect::<Vec<_>>(),
        [r#"topic.message pub->x {"payload":1,"topic":"news"}"#]
    );
    // Nobody to share a signed prefix with (the publisher is not sent its
    // own message): the writer encodes the frame whole, as for a direct.
    assert!(items[0].prefix.is_none());
}

#[test]
fn the_topic_fan_out_order_is_the_subscription_order_after_resubscribing() {
    let mut bus = Bus::new();
    for kind in ["pub", "x", "y"] {
        bus.connect(kind);
    }
    bus.subscribe("x", "t");
    bus.subscribe("y", "t");
    bus.send(
        "x",
        msg_type::TOPIC_UNSUBSCRIBE,
        None,
        json!({"topic": "t"}),
    );
    bus.subscribe("x", "t");
    let list = bus.table.topic_list(None);
    assert_eq!(
        list,
        json!({"topics": [{"topic": "t", "subscribers": ["y", "x"]}]})
    );
}

#[test]
fn an_invalid_topic_is_a_protocol_error_and_routes_nothing() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.events();
    bus.subscribe("b", "");
    bus.send("a", msg_type::TOPIC_MESSAGE, None, json!({"payload": 1}));
    let reasons: Vec<_> = bus
        .events()
        .iter()
        .map(|e| match e {
            HubEvent::ProtocolError { error, .. } => (
                error.reason,
                error.msg_type.as_deref().map(str::to_owned),
                error.detail,
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                DropReason::InvalidTopic,
                Some(msg_type::TOPIC_SUBSCRIBE.to_owned()),
                Some("empty-topic")
            ),
            (
                DropReason::InvalidTopic,
                Some(msg_type::TOPIC_MESSAGE.to_owned()),
                Some("missing-topic")
            ),
        ]
    );
    assert_eq!(bus.table.health().topic_count, 0);
}

#[test]
fn a_subscribe_past_the_cap_is_dropped_typed_and_an_unsubscribe_frees_a_place() {
    let mut bus = Bus::with(RoutingConfig {
        max_subscriptions_per_peer: 2,
        ..config()
    });
    bus.connect("a");
    bus.connect("b");
    bus.events();
    bus.subscribe("a", "t1");
    bus.subscribe("a", "t2");
    bus.subscribe("a", "t2"); // held already: not a new place
    bus.subscribe("a", "t3");
    let refused: Vec<_> = bus
        .events()
        .iter()
        .filter_map(|e| match e {
            HubEvent::ProtocolError { error, .. } => Some((
                error.reason,
                error.kind.as_deref().map(str::to_owned),
                error.msg_type.as_deref().map(str::to_owned),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [(
            DropReason::SubscriptionLimit,
            Some("a".to_owned()),
            Some(msg_type::TOPIC_SUBSCRIBE.to_owned())
        )]
    );
    assert_eq!(DropReason::SubscriptionLimit.code(), "subscription-limit");
    assert_eq!(bus.table.health().topic_count, 2);
    // Another peer has its own share.
    bus.subscribe("b", "t3");
    assert_eq!(bus.table.health().topic_count, 3);
    bus.send(
        "a",
        msg_type::TOPIC_UNSUBSCRIBE,
        None,
        json!({ "topic": "t1" }),
    );
    bus.events();
    bus.subscribe("a", "t3");
    assert!(
        !bus.events()
            .iter()
            .any(|e| matches!(e, HubEvent::ProtocolError { .. }))
    );
    // t1 went with its last subscriber; a holds t2 and t3, b holds t3.
    let health = bus.table.health();
    assert_eq!((health.topic_count, health.total_subscribers), (2, 3));
}

#[test]
fn unsubscribe_without_a_topic_leaves_every_topic() {
    let mut bus = Bus::new();
    bus.connect("a");
    for t in ["t1", "t2", "t3"] {
        bus.send("a", msg_type::TOPIC_SUBSCRIBE, None, json!({ "topic": t }));
    }
    bus.events();
    bus.send("a", msg_type::TOPIC_UNSUBSCRIBE, None, json!({}));
    assert_eq!(bus.table.health().topic_count, 0);
    let mut names = bus.event_names();
    names.dedup();
    assert_eq!(names, ["topic.unsubscribe"]);
}

#[test]
fn link_topic_list_answers_every_topic_or_one() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.subscribe("a", "beta");
    bus.subscribe("b", "alpha");
    bus.subscribe("a", "alpha");
    bus.take("a");
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.topic.list"}),
    );
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.topic.list", "rpcData": {"topic": "ghost"}}),
    );
    let got: Vec<Value> = bus.take("a").iter().map(data).collect();
    assert_eq!(
        got,
        [
            json!({"ok": true, "result": {"topics": [
                {"topic": "alpha", "subscribers": ["b", "a"]},
                {"topic": "beta", "subscribers": ["a"]},
            ]}}),
            json!({"ok": true, "result": {"topic": "ghost", "subscribers": []}}),
        ]
    );
}

// ----- statuses --------------------------------------------------------------

#[test]
fn a_status_goes_to_every_other_peer_and_into_later_snapshots() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.take("a");
    bus.take("b");
    bus.advance(250);
    bus.send("a", msg_type::STATUS_UPDATE, None, json!({"up": true}));
    assert!(bus.take("a").is_empty());
    let at = T0_MS + 250;
    assert_eq!(
        bus.transcript("b"),
        [format!(
            r#"status.update server->b {{"at":{at},"from":"a","status":{{"up":true}}}}"#
        )]
    );
    bus.connect("c");
    let c = bus.take("c");
    assert_eq!(
        data(&c[2]),
        json!({"a": {"status": {"up": true}, "at": at}})
    );
}

#[test]
fn queued_statuses_from_one_peer_conflate_to_the_newest() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.take("b");
    for n in 1..=3 {
        bus.send("a", msg_type::STATUS_UPDATE, None, json!(n));
    }
    let b = bus.take("b");
    assert_eq!(b.len(), 1);
    assert_eq!(data(&b[0])["status"], json!(3));
}

// ----- RPCs ------------------------------------------------------------------

#[test]
fn an_rpc_is_relayed_with_its_id_and_so_is_its_answer() {
    let mut bus = Bus::new();
    bus.connect("caller");
    bus.connect("callee");
    bus.take("caller");
    bus.take("callee");
    bus.events();
    let id = bus.send(
        "caller",
        msg_type::RPC_REQUEST,
        Some("callee"),
        json!({"rpcType": "sum", "rpcData": [1, 2]}),
    );
    let req = bus.take("callee");
    assert_eq!(
        req.iter().map(line).collect::<Vec<_>>(),
        [r#"rpc.request caller->callee {"rpcData":[1,2],"rpcType":"sum"}"#]
    );
    assert_eq!(req[0].id.as_deref(), Some(id.as_str()));
    let env = bus.envelope(
        "callee",
        msg_type::RPC_RESPONSE,
        Some("caller"),
        json!({"ok": true, "result": 3}),
    );
    let env = {
        // The answer carries the request's id.
        let mut body = env.body().clone();
        body.insert("id".into(), json!(id));
        Envelope::from_object(body).unwrap()
    };
    let now = bus.now();
    bus.table
        .handle_inbound(now, bus.conns["callee"], "callee".into(), env);
    let resp = bus.take("caller");
    assert_eq!(
        resp.iter().map(line).collect::<Vec<_>>(),
        [r#"rpc.response callee->caller {"ok":true,"result":3}"#]
    );
    assert_eq!(resp[0].id.as_deref(), Some(id.as_str()));
    assert_eq!(
        bus.event_names(),
        ["rpc.forwarded", "rpc.response.forwarded"]
    );
}

#[test]
fn rpc_errors_from_the_hub_name_the_fault() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.take("a");
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("ghost"),
        json!({"rpcType": "x"}),
    );
    bus.send("a", msg_type::RPC_REQUEST, None, json!({"rpcType": "x"}));
    bus.send("a", msg_type::RPC_REQUEST, Some("ghost"), json!({}));
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "nope"}),
    );
    let got: Vec<Value> = bus.take("a").iter().map(data).collect();
    assert_eq!(
        got,
        [
            json!({"ok": false, "code": "RPC_NO_TARGET", "error": "Target not connected: ghost"}),
            json!({"ok": false, "code": "RPC_BAD_REQUEST", "error": "rpc.request missing \"to\""}),
            json!({"ok": false, "code": "RPC_BAD_REQUEST", "error": "rpc.request missing \"rpcType\""}),
            json!({"ok": false, "code": "RPC_UNKNOWN_TYPE", "error": "Unknown server rpcType: nope"}),
        ]
    );
}

#[test]
fn an_rpc_to_a_full_outbox_is_answered_target_unavailable() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.outbox_bytes = 600;
    bus.connect("slow");
    bus.take("a");
    let overflows = bus.table.stats().outbox_overflow;
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("slow"),
        json!({"rpcType": "x", "rpcData": "y".repeat(1000)}),
    );
    let got = bus.take("a");
    assert_eq!(
        data(&got[0]),
        json!({"ok": false, "code": "RPC_TARGET_UNAVAILABLE", "error": "Target backpressured or send failed: slow"})
    );
    assert!(bus.event_names().contains(&"outbox-overflow"));
    assert_eq!(bus.table.stats().outbox_overflow, overflows + 1);
    assert_eq!(bus.in_flight(), 0, "not forwarded");
}

#[test]
fn a_cancel_removes_a_request_still_queued_for_its_target() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.take("b");
    let id = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "slow"}),
    );
    bus.events();
    bus.send("a", msg_type::RPC_CANCEL, Some("b"), json!({ "id": id }));
    assert!(bus.take("b").is_empty(), "the request never reaches b");
    match &bus.events()[..] {
        [
            HubEvent::RpcCancelled {
                found, forwarded, ..
            },
        ] => assert_eq!((*found, *forwarded), (true, false)),
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn a_cancel_for_a_request_already_written_is_forwarded() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    let id = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "slow"}),
    );
    bus.take("b");
    bus.send("a", msg_type::RPC_CANCEL, Some("b"), json!({ "id": id }));
    assert_eq!(
        bus.transcript("b"),
        [format!(r#"rpc.cancel a->b {{"id":"{id}"}}"#)]
    );
}

#[test]
fn link_health_and_link_peer_list_answer_from_the_table() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.subscribe("b", "t");
    bus.take("a");
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.health"}),
    );
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.peer.list", "rpcData": {"kind": "b"}}),
    );
    let got = bus.take("a");
    let health = data(&got[0])["result"].clone();
    assert_eq!(health["peerCount"], json!(2));
    assert_eq!(health["totalSubscribers"], json!(1));
    assert_eq!(health["recentIdsSize"], json!(7), "read through the probe");
    assert_eq!(health["serverRpcInFlight"], json!(1), "counts itself");
    let peers = data(&got[1])["result"]["peers"].clone();
    assert_eq!(peers.as_array().unwrap().len(), 1);
    assert_eq!(peers[0]["kind"], json!("b"));
}

#[test]
fn a_user_server_rpc_runs_as_a_task_and_its_answer_goes_to_the_caller() {
    let mut bus = Bus::with(RoutingConfig {
        user_rpcs: ["time.now".to_owned()].into(),
        max_concurrent_rpc: 1,
        ..config()
    });
    bus.connect("a");
    bus.take("a");
    bus.events();
    let id = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "time.now"}),
    );
    let ticket = match &bus.tasks()[..] {
        [Task::ServerRpc(call)] => {
            assert_eq!(call.request.id, id);
            assert_eq!(call.request.from, "a");
            call.ticket
        }
        other => panic!("unexpected tasks {other:?}"),
    };
    assert_eq!(bus.table.health().server_rpc_in_flight, 1);
    // At the cap, the next call is refused at once.
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "time.now"}),
    );
    assert!(bus.tasks().is_empty());
    assert_eq!(data(&bus.take("a")[0])["code"], json!("RPC_OVERLOADED"));
    bus.advance(40);
    let now = bus.now();
    bus.table.handle_server_rpc_done(now, ticket, Ok(json!(42)));
    // A second answer for the same ticket is ignored.
    bus.table.handle_server_rpc_done(now, ticket, Ok(json!(43)));
    let got = bus.take("a");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id.as_deref(), Some(id.as_str()));
    assert_eq!(data(&got[0]), json!({"ok": true, "result": 42}));
    assert_eq!(bus.table.health().server_rpc_in_flight, 0);
    match &bus.events()[..] {
        [
            HubEvent::RpcServer {
                ok, duration_ms, ..
            },
        ] => {
            assert!(*ok);
            assert_eq!(*duration_ms, 40.0, "measured on the clock passed in");
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn a_user_handler_shadows_a_built_in_of_the_same_name() {
    let mut bus = Bus::with(RoutingConfig {
        user_rpcs: ["link.health".to_owned()].into(),
        ..config()
    });
    bus.connect("a");
    bus.take("a");
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.health"}),
    );
    assert!(bus.take("a").is_empty());
    assert!(matches!(&bus.tasks()[..], [Task::ServerRpc(_)]));
}

// ----- direct ----------------------------------------------------------------

#[test]
fn a_direct_message_goes_to_its_target_and_to_nobody_when_offline() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.connect("b");
    bus.take("b");
    bus.events();
    bus.send(
        "a",
        msg_type::DIRECT,
        Some("ghost"),
        json!({"directType": "ping"}),
    );
    assert!(bus.events().is_empty(), "dropped silently");
    bus.send(
        "a",
        msg_type::DIRECT,
        Some("b"),
        json!({"directType": "ping", "directData": {"n": 1}}),
    );
    assert_eq!(
        bus.transcript("b"),
        [r#"direct a->b {"directData":{"n":1},"directType":"ping"}"#]
    );
    assert_eq!(bus.event_names(), ["direct"]);
}

// ----- ACL verdicts ----------------------------------------------------------

fn judged(bus: &mut Bus) -> Vec<(Ticket, AclOp)> {
    bus.tasks()
        .into_iter()
        .map(|t| match t {
            Task::Judge { ticket, query } => (ticket, query.op()),
            other => panic!("unexpected task {other:?}"),
        })
        .collect()
}

fn with_hooks(acl: AclHooks) -> Bus {
    Bus::with(RoutingConfig { acl, ..config() })
}

#[test]
fn laned_messages_are_judged_one_at_a_time_in_the_order_sent() {
    let mut bus = with_hooks(AclHooks {
        subscribe: true,
        publish: true,
        ..AclHooks::default()
    });
    bus.connect("a");
    bus.connect("b");
    bus.subscribe("b", "t");
    let [(t1, AclOp::Subscribe)] = judged(&mut bus)[..] else {
        panic!("subscribe not judged")
    };
    bus.take("b");
    // b's publish waits behind its subscribe: nothing is judged yet.
    bus.send(
        "b",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": 1}),
    );
    bus.subscribe("a", "t");
    let [(t_a, AclOp::Subscribe)] = judged(&mut bus)[..] else {
        panic!("a's lane is its own")
    };
    let now = bus.now();
    bus.table.handle_verdict(now, t_a, Verdict::Allow);
    bus.table.handle_verdict(now, t1, Verdict::Allow);
    // Now b's publish is judged, after b's subscribe took effect.
    let [(t2, AclOp::Publish)] = judged(&mut bus)[..] else {
        panic!("publish not judged next")
    };
    assert_eq!(
        bus.table.topic_list(None),
        json!({"topics": [{"topic": "t", "subscribers": ["a", "b"]}]})
    );
    bus.take("a");
    bus.table.handle_verdict(now, t2, Verdict::Allow);
    assert_eq!(
        bus.transcript("a"),
        [r#"topic.message b->a {"payload":1,"topic":"t"}"#]
    );
}

#[test]
fn a_message_no_hook_applies_to_still_waits_its_turn_in_the_lane() {
    let mut bus = with_hooks(AclHooks {
        subscribe: true,
        ..AclHooks::default()
    });
    bus.connect("a");
    bus.connect("b");
    bus.take("b");
    bus.subscribe("a", "t");
    // No send hook, but a direct is laned: it must not overtake the
    // subscribe in front of it.
    bus.send(
        "a",
        msg_type::DIRECT,
        Some("b"),
        json!({"directType": "after"}),
    );
    assert!(bus.take("b").is_empty());
    // A status is not laned: it goes at once.
    bus.send("a", msg_type::STATUS_UPDATE, None, json!({"status": 1}));
    assert_eq!(bus.take("b")[0].msg_type, msg_type::STATUS_UPDATE);
    let [(t, AclOp::Subscribe)] = judged(&mut bus)[..] else {
        panic!("subscribe not judged")
    };
    let now = bus.now();
    bus.table.handle_verdict(now, t, Verdict::Allow);
    assert!(judged(&mut bus).is_empty(), "the direct needs no verdict");
    assert_eq!(
        bus.transcript("b"),
        [r#"direct a->b {"directType":"after"}"#]
    );
}

#[test]
fn a_denied_publish_is_dropped_silently_and_the_lane_moves_on() {
    let mut bus = with_hooks(AclHooks {
        publish: true,
        ..AclHooks::default()
    });
    bus.connect("a");
    bus.connect("b");
    bus.subscribe("b", "t");
    bus.take("a");
    bus.take("b");
    bus.events();
    bus.send(
        "a",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": "no"}),
    );
    bus.send(
        "a",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": "yes"}),
    );
    let [(t1, AclOp::Publish)] = judged(&mut bus)[..] else {
        panic!("first publish not judged")
    };
    let now = bus.now();
    bus.table.handle_verdict(now, t1, Verdict::deny());
    assert!(bus.take("a").is_empty(), "no answer on the wire");
    let [(t2, AclOp::Publish)] = judged(&mut bus)[..] else {
        panic!("second publish not judged")
    };
    bus.table.handle_verdict(now, t2, Verdict::Allow);
    assert_eq!(
        bus.transcript("b"),
        [r#"topic.message a->b {"payload":"yes","topic":"t"}"#]
    );
    match &bus.events()[..] {
        [
            HubEvent::AclDenied {
                op, code, topic, ..
            },
            HubEvent::TopicPublish { .. },
        ] => {
            assert_eq!(*op, AclOp::Publish);
            assert_eq!(code, "PUBLISH_FORBIDDEN");
            assert_eq!(topic.as_deref(), Some("t"));
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn a_denied_rpc_is_answered_with_the_hooks_code_and_calls_are_judged_independently() {
    let mut bus = with_hooks(AclHooks {
        rpc: true,
        ..AclHooks::default()
    });
    bus.connect("a");
    bus.connect("b");
    bus.take("a");
    bus.take("b");
    bus.events();
    let first = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "x"}),
    );
    let second = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "y"}),
    );
    let [(t1, AclOp::Rpc), (t2, AclOp::Rpc)] = judged(&mut bus)[..] else {
        panic!("both calls judged at once")
    };
    let now = bus.now();
    bus.table.handle_verdict(now, t2, Verdict::Allow);
    bus.table.handle_verdict(
        now,
        t1,
        Verdict::Deny {
            code: Some("NOPE".into()),
            error: Some("not you".into()),
        },
    );
    let to_b = bus.take("b");
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].id.as_deref(), Some(second.as_str()));
    let to_a = bus.take("a");
    assert_eq!(to_a[0].id.as_deref(), Some(first.as_str()));
    assert_eq!(
        data(&to_a[0]),
        json!({"ok": false, "code": "NOPE", "error": "not you"})
    );
}

#[test]
fn held_messages_go_with_their_socket_and_late_verdicts_are_ignored() {
    let mut bus = with_hooks(AclHooks {
        send: true,
        ..AclHooks::default()
    });
    let a = bus.connect("a");
    bus.connect("b");
    bus.take("b");
    bus.send(
        "a",
        msg_type::DIRECT,
        Some("b"),
        json!({"directType": "one"}),
    );
    bus.send(
        "a",
        msg_type::DIRECT,
        Some("b"),
        json!({"directType": "two"}),
    );
    let [(t1, AclOp::Send)] = judged(&mut bus)[..] else {
        panic!("first send not judged")
    };
    bus.close(a);
    let now = bus.now();
    bus.table.handle_verdict(now, t1, Verdict::Allow);
    assert!(judged(&mut bus).is_empty());
    let b: Vec<_> = bus.take("b").iter().map(|i| i.msg_type).collect();
    assert_eq!(b, [msg_type::PEERS_UPDATE], "only the list without a");
}

// ----- operator control and events -------------------------------------------

#[test]
fn stop_closes_pending_sockets_1001_and_registered_ones_without_a_code() {
    let mut bus = Bus::new();
    let pending = bus.attach();
    let peer = bus.connect("a");
    bus.table.stop();
    assert_eq!(
        bus.controls(),
        [
            (
                pending,
                ConnCtl::Close {
                    code: Some(1001),
                    reason: "hub stopped".into()
                }
            ),
            (
                peer,
                ConnCtl::Close {
                    code: None,
                    reason: String::new()
                }
            ),
        ]
    );
    assert_eq!(bus.table.health().peer_count, 0);
    let late = bus.attach();
    assert_eq!(
        bus.controls(),
        [(
            late,
            ConnCtl::Close {
                code: Some(1001),
                reason: "hub stopped".into()
            }
        )]
    );
}

#[test]
fn close_all_tells_every_socket_and_counts_them() {
    let mut bus = Bus::new();
    let pending = bus.attach();
    let peer = bus.connect("a");
    assert_eq!(bus.table.close_all(Some(1001), "server shutdown"), 2);
    let close = ConnCtl::Close {
        code: Some(1001),
        reason: "server shutdown".into(),
    };
    assert_eq!(bus.controls(), [(pending, close.clone()), (peer, close)]);
    bus.table.terminate_all();
    assert_eq!(
        bus.controls(),
        [(pending, ConnCtl::Terminate), (peer, ConnCtl::Terminate)]
    );
}

#[test]
fn no_events_are_built_while_nobody_listens() {
    let mut bus = Bus::new();
    bus.table.set_listening(Listening::default());
    bus.connect("a");
    bus.connect("b");
    bus.send("a", msg_type::DIRECT, Some("b"), json!({"directType": "x"}));
    assert!(bus.events().is_empty());
    bus.table.set_listening(ALL_EVENTS);
    bus.send("a", msg_type::DIRECT, Some("b"), json!({"directType": "x"}));
    assert_eq!(bus.event_names(), ["direct"]);
}

#[test]
fn quiet_listeners_get_no_per_message_events() {
    let mut bus = Bus::new();
    bus.table.set_listening(Listening {
        events: true,
        traffic: false,
    });
    bus.connect("a");
    bus.connect("b");
    bus.events();
    bus.take("b");
    bus.subscribe("b", "t");
    bus.send(
        "a",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": 1}),
    );
    bus.send("a", msg_type::DIRECT, Some("b"), json!({"directType": "x"}));
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "r"}),
    );
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.health"}),
    );
    bus.subscribe("a", "");
    // The messages were relayed; only the events that are not one per
    // message were built.
    let relayed: Vec<_> = bus.take("b").iter().map(|i| i.msg_type).collect();
    assert_eq!(
        relayed,
        [
            msg_type::TOPIC_MESSAGE,
            msg_type::DIRECT,
            msg_type::RPC_REQUEST
        ]
    );
    assert_eq!(bus.event_names(), ["topic.subscribe", "protocol-error"]);
}

#[test]
fn state_lists_peers_in_registration_order_and_statuses_by_kind() {
    let mut bus = Bus::new();
    for kind in ["zeta", "alpha", "mid"] {
        bus.connect(kind);
    }
    bus.send(
        "zeta",
        msg_type::STATUS_UPDATE,
        None,
        json!({"status": "z"}),
    );
    bus.send(
        "alpha",
        msg_type::STATUS_UPDATE,
        None,
        json!({"status": "a"}),
    );
    let state = bus.table.state();
    let kinds: Vec<_> = state.peers.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["zeta", "alpha", "mid"]);
    let statuses: Vec<_> = state.last_status.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(statuses, ["alpha", "zeta"]);
}

// ----- relayed RPC timing (metrics) ------------------------------------------

impl Bus {
    /// `from` answers request `id` to `to` (the answer carries the id).
    fn answer(&mut self, from: &str, to: &str, id: &str) {
        let env = self.envelope(
            from,
            msg_type::RPC_RESPONSE,
            Some(to),
            json!({"ok": true, "result": 1}),
        );
        let mut body = env.body().clone();
        body.insert("id".into(), json!(id));
        let env = Envelope::from_object(body).unwrap();
        let now = self.now();
        self.table
            .handle_inbound(now, self.conns[from], from.into(), env);
        self.idle();
    }

    fn call(&mut self, from: &str, to: &str) -> String {
        self.send(
            from,
            msg_type::RPC_REQUEST,
            Some(to),
            json!({"rpcType": "sum"}),
        )
    }

    fn relayed(&self) -> (u64, f64) {
        let h = self.table.stats().rpc_relayed;
        (h.count, h.sum_seconds)
    }

    /// Sampled relayed RPCs in flight.
    fn in_flight(&self) -> usize {
        self.table.stats().gauges.relayed_rpc_in_flight
    }

    /// Every relayed RPC is sampled.
    fn time_every_rpc(&mut self) {
        self.table.rpc_sample_every = 1;
        self.table.rpc_until_sample = 1;
    }
}

#[test]
fn a_relayed_rpc_is_timed_from_request_forwarded_to_response_forwarded() {
    let mut bus = Bus::new();
    bus.time_every_rpc();
    bus.connect("caller");
    bus.connect("callee");
    let id = bus.call("caller", "callee");
    assert_eq!(bus.in_flight(), 1);
    bus.advance(40);
    // Only the target can end the call: an answer from anyone else is
    // relayed as before but times nothing.
    bus.connect("other");
    bus.answer("other", "caller", &id);
    assert_eq!(bus.relayed().0, 0);
    bus.answer("callee", "caller", &id);
    let (count, sum) = bus.relayed();
    assert_eq!(count, 1);
    assert!((sum - 0.040).abs() < 1e-9, "{sum}");
    assert_eq!(bus.in_flight(), 0);
    // A second answer to the same id is not observed twice.
    bus.answer("callee", "caller", &id);
    assert_eq!(bus.relayed().0, 1);
}

#[test]
fn a_peer_leaving_or_a_cancel_ends_its_timed_calls_unobserved() {
    let mut bus = Bus::new();
    bus.time_every_rpc();
    bus.connect("caller");
    let callee = bus.connect("callee");
    bus.connect("third");
    bus.call("caller", "callee");
    bus.call("caller", "callee");
    bus.call("caller", "third");
    let cancelled = bus.call("third", "caller");
    assert_eq!(bus.in_flight(), 4);
    bus.close(callee);
    assert_eq!(bus.in_flight(), 2, "calls to callee");
    let caller = bus.conns["caller"];
    bus.send(
        "third",
        msg_type::RPC_CANCEL,
        Some("caller"),
        json!({ "id": cancelled }),
    );
    assert_eq!(bus.in_flight(), 1, "cancelled");
    bus.close(caller);
    assert_eq!(bus.in_flight(), 0, "calls by caller");
    assert_eq!(bus.relayed().0, 0);
}

#[test]
fn the_rpc_timer_is_capped_and_gives_up_the_oldest_call() {
    let mut bus = Bus::new();
    bus.time_every_rpc();
    bus.table.rpc_timer = rpc_timer::RpcTimer::new(2);
    bus.connect("caller");
    bus.connect("callee");
    let first = bus.call("caller", "callee");
    let second = bus.call("caller", "callee");
    let third = bus.call("caller", "callee");
    assert_eq!(bus.in_flight(), 2);
    assert_eq!(bus.table.stats().rpc_untimed, 1);
    bus.answer("callee", "caller", &first);
    assert_eq!(bus.relayed().0, 0, "the oldest was given up");
    bus.answer("callee", "caller", &second);
    bus.answer("callee", "caller", &third);
    assert_eq!(bus.relayed().0, 2);
    assert_eq!(bus.in_flight(), 0);
    assert!(
        bus.take("caller")
            .iter()
            .filter(|i| i.msg_type == msg_type::RPC_RESPONSE)
            .count()
            == 3,
        "routing is unaffected by the cap"
    );
}

#[test]
fn one_relayed_rpc_in_sixteen_is_timed() {
    let mut bus = Bus::new();
    bus.connect("caller");
    bus.connect("callee");
    let ids: Vec<String> = (0..32).map(|_| bus.call("caller", "callee")).collect();
    assert_eq!(bus.in_flight(), 2, "calls 16 and 32");
    bus.advance(5);
    for id in &ids {
        bus.answer("callee", "caller", id);
    }
    let (count, sum) = bus.relayed();
    assert_eq!(count, 2);
    assert!((sum - 0.010).abs() < 1e-9, "{sum}");
    assert_eq!(bus.in_flight(), 0);
    let answers = bus.take("caller");
    assert_eq!(
        answers
            .iter()
            .filter(|i| i.msg_type == msg_type::RPC_RESPONSE)
            .count(),
        32,
        "every call is answered, timed or not"
    );
}

#[test]
fn the_table_counts_its_drops_sockets_and_server_rpc_latency() {
    let mut bus = Bus::new();
    bus.connect("a");
    bus.subscribe("a", "");
    assert_eq!(bus.table.stats().dropped.get("invalid-topic"), Some(&1));
    bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("server"),
        json!({"rpcType": "link.health"}),
    );
    let stats = bus.table.stats();
    let health = &stats.rpc_server["link.health"];
    assert_eq!(health.count, 1);
    assert_eq!(health.buckets[0], 1, "answered inline, in no time");
    assert_eq!(stats.sockets_attached, 1);
    assert_eq!(stats.gauges.peers, 1);
    assert_eq!(stats.gauges.sockets, 1);
}

// ----- the dashboard's view -------------------------------------------------

#[test]
fn the_dashboard_view_lists_peers_with_status_and_topics_with_their_counters() {
    let mut bus = Bus::new();
    bus.connect("pub");
    bus.advance(250);
    bus.connect("x");
    bus.connect("y");
    bus.subscribe("x", "news");
    bus.subscribe("y", "news");
    bus.subscribe("pub", "news");
    bus.subscribe("y", "alerts");
    for _ in 0..3 {
        bus.send(
            "pub",
            msg_type::TOPIC_MESSAGE,
            None,
            json!({"topic": "news", "payload": 1}),
        );
    }
    // A topic nobody holds is not counted (nor kept).
    bus.send(
        "pub",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "void", "payload": 1}),
    );
    bus.send(
        "x",
        msg_type::STATUS_UPDATE,
        None,
        json!({"phase": "ready"}),
    );
    let view = bus.table.dashboard();
    let kinds: Vec<&str> = view.peers.iter().map(|p| &*p.kind).collect();
    assert_eq!(kinds, ["pub", "x", "y"], "registration order");
    assert_eq!(view.peer_count, 3);
    assert_eq!(view.peers[0].connected_at, T0_MS);
    assert_eq!(view.peers[1].connected_at, T0_MS + 250);
    assert_eq!(
        view.peers[1].status.as_deref(),
        Some(r#"{"phase":"ready"}"#)
    );
    assert_eq!(view.peers[1].status_at, Some(T0_MS + 250));
    assert_eq!(view.peers[0].status, None);
    assert_eq!(
        view.topics,
        [
            TopicRow {
                topic: "alerts".into(),
                subscribers: 1,
                published: 0,
                delivered: 0,
            },
            TopicRow {
                topic: "news".into(),
                subscribers: 3,
                published: 3,
                // Every subscriber but the publisher, three times.
                delivered: 6,
            },
        ]
    );
    assert_eq!(view.topic_count, 2);
    assert_eq!(view.stats.gauges.peers, 3);
}

#[test]
fn the_revision_moves_on_membership_status_and_subscriptions_only() {
    let mut bus = Bus::new();
    let mut seen = bus.table.revision();
    let mut moved = |bus: &mut Bus| {
        let now = bus.table.revision();
        let moved = now != seen;
        seen = now;
        moved
    };
    bus.connect("a");
    assert!(moved(&mut bus), "a registered");
    bus.connect("b");
    assert!(moved(&mut bus), "b registered");
    bus.subscribe("b", "t");
    assert!(moved(&mut bus), "subscribed");
    bus.subscribe("b", "t");
    assert!(!moved(&mut bus), "already subscribed");
    bus.send(
        "a",
        msg_type::TOPIC_MESSAGE,
        None,
        json!({"topic": "t", "payload": 1}),
    );
    bus.send("a", msg_type::DIRECT, Some("b"), json!({"type": "x"}));
    assert!(!moved(&mut bus), "messages are not changes");
    bus.send("a", msg_type::STATUS_UPDATE, None, json!({"up": true}));
    assert!(moved(&mut bus), "status");
    bus.send(
        "b",
        msg_type::TOPIC_UNSUBSCRIBE,
        None,
        json!({"topic": "t"}),
    );
    assert!(moved(&mut bus), "unsubscribed");
    let b = bus.conns["b"];
    bus.close(b);
    assert!(moved(&mut bus), "b left");
}

#[test]
fn drops_the_table_decides_are_queued_for_the_dashboard_even_unheard() {
    let mut bus = Bus::new();
    bus.table.set_listening(Listening::default());
    bus.connect("a");
    bus.subscribe("a", "");
    assert!(bus.events().is_empty(), "no events built while unheard");
    let e = bus.table.poll_protocol_error().expect("the drop");
    assert_eq!(e.reason, DropReason::InvalidTopic);
    assert_eq!(e.kind.as_deref(), Some("a"));
    assert!(bus.table.poll_protocol_error().is_none());
    // Undrained, the queue stays bounded.
    for _ in 0..100 {
        bus.subscribe("a", "");
    }
    assert_eq!(
        std::iter::from_fn(|| bus.table.poll_protocol_error()).count(),
        MAX_QUEUED_ERRORS
    );
}

#[test]
fn a_rate_limited_rpc_is_answered_from_the_hub_with_the_request_id_in_order() {
    let mut bus = Bus::new();
    let a = bus.connect("a");
    bus.connect("b");
    bus.take("a");
    bus.take("b");
    bus.events();
    let first = bus.send(
        "a",
        msg_type::RPC_REQUEST,
        Some("b"),
        json!({"rpcType": "x"}),
    );
    // The reader refused the next one; the table answers it.
    bus.table
        .handle_rate_limited_rpc(a, &Arc::from("a"), "a-refused");
    bus.idle();
    let relayed = bus.take("b");
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].id.as_deref(), Some(first.as_str()));
    let answers = bus.take("a");
    assert_eq!(answers.len(), 1);
    let answer = &answers[0];
    assert_eq!(answer.msg_type, msg_type::RPC_RESPONSE);
    assert_eq!(&*answer.from, "server");
    assert_eq!(answer.id.as_deref(), Some("a-refused"));
    assert_eq!(
        data(answer),
        json!({"ok": false, "error": "Rate limit exceeded", "code": "RPC_RATE_LIMITED"})
    );
    // The refusal's event comes from the reader, not the table.
    assert_eq!(bus.event_names(), ["rpc.forwarded"]);
}

#[test]
fn a_rate_limited_rpc_from_a_replaced_socket_is_not_answered() {
    let mut bus = Bus::new();
    let old = bus.connect("a");
    bus.connect("a");
    bus.take("a");
    bus.take_conn(old);
    bus.table
        .handle_rate_limited_rpc(old, &Arc::from("a"), "a-1");
    bus.idle();
    assert!(bus.take("a").is_empty());
    assert!(bus.take_conn(old).is_empty());
}
