//! Fuzz harnesses of crate-private parts: today the routing table (target
//! `routing` in `fuzz/`). Compiled for this crate's tests, which replay
//! every committed corpus file through [`routing`], and under the
//! non-default `fuzzing` feature, which the fuzz crate enables. Not a
//! public API.
//!
//! An input is a sequence of what the driver feeds the table: sockets
//! attaching, hellos registering kinds (displacing), verified frames of
//! every type from registered sockets (RPCs to peers and to the hub,
//! answers, cancels, subscribes, publishes, sends, statuses), sockets
//! closing, ACL verdicts and server-RPC answers in any order, mailbox
//! pauses, writers draining outboxes, and operator controls (close all,
//! terminate all, stop), under fuzz-chosen caps and hooks.
//!
//! Checks, after every input:
//! - the table is consistent (`routing/invariants.rs`: peers, order,
//!   statuses, topics and subscriptions agree; waiting sockets are within
//!   the pending cap);
//! - user server RPCs and ACL checks in flight are ones the driver was
//!   handed and has not answered;
//! - nothing is queued for a socket before its hello, and every item a
//!   writer takes from a socket's outbox is addressed to the kind that
//!   socket registered;
//! - presence, as each socket's client sees it: one `hello.ack` per socket,
//!   listing `peers.delta` exactly when the hello asked for it and peer
//!   lists are on; no presence message before it; a v1 socket only ever
//!   gets `peers.update` (it keeps the last list it took), a delta socket
//!   only `peers.snapshot`/`peers.delta`, which it feeds to
//!   [`PeerSync`] and applies as link-client does; the hub never leaves it
//!   a gap (every delta applies to the version it holds) and every delta
//!   is consistent with the list it applies to (`left` and `changed` kinds
//!   are listed, `joined` ones are not once `left` are gone);
//!
//! at quiescent points (a "settle" input, and the end: the clock runs past
//! every presence timer and every writer drains its outbox, until nothing
//! is due), every socket that holds its kind and was not told to close has
//! the table's membership in registration order, entry for entry: all of it
//! for a delta socket, the earliest peers that fit `max_peer_list_bytes`
//! for a v1 one (docs/protocol.md §5.2.1, §5.2.2); and at the end, once
//! every socket has closed and every task is answered, nothing is left: no
//! peer, topic, status, subscription, waiting socket, running RPC or ACL
//! check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashSet;

use link_protocol::conn::Now;
use link_protocol::envelope::Header;
use link_protocol::presence::{PeerStep, PeerSync};
use link_protocol::{
    CanonicalData, Envelope, Feature, HandlerError, Hello, Message, PeerInfo, Value, msg_type,
};
use link_transport::writer::Outgoing;
use serde_json::json;

use crate::acl::Verdict;
use crate::outbox::{OutItem, Outbox};
use crate::routing::{
    AclHooks, ConnId, Listening, PresenceLimits, Route, Routing, RoutingConfig, Task, Ticket,
};

const T0_MS: u64 = 1_795_424_111_000;
const MAX_STEPS: usize = 300;
const KINDS: &[&str] = &["alpha", "beta", "gamma", "server"];
const TOPICS: &[&str] = &["t", "a.b", "a.*", "", "*"];
const RPC_TYPES: &[&str] = &[
    "echo",
    "link.health",
    "link.peer.list",
    "link.topic.list",
    "x",
];

/// Runs one input through the routing table's harness (see the module
/// docs); panics when a check fails.
pub fn routing(data: &[u8]) {
    let mut input = Input(data);
    let mut sim = Sim::new(&mut input);
    for _ in 0..MAX_STEPS {
        if input.0.is_empty() {
            break;
        }
        sim.step(&mut input);
        sim.table.check_invariants();
        sim.check_outboxes();
        let (server_calls, judging) = sim.table.tasks_in_flight();
        assert!(
            server_calls <= sim.server_tickets.len(),
            "a user server RPC runs that the driver was not handed"
        );
        assert!(
            judging <= sim.judge_tickets.len(),
            "an ACL check waits that the driver was not handed"
        );
    }
    sim.finish();
}

/// The fuzzer's bytes as choices; zeros past the end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn choose<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[usize::from(self.byte()) % items.len()]
    }
}

/// One attached socket as the driver sees it, and what its client made of
/// the presence messages it took.
struct Sock {
    outbox: Arc<Outbox>,
    kind: Option<Arc<str>>,
    /// Its hello asked for `peers.delta`.
    deltas: bool,
    /// It took its `hello.ack`.
    acked: bool,
    /// The table told the driver to close it (displaced, evicted, closed,
    /// terminated): the harness keeps it open, but promises end there.
    doomed: bool,
    /// The peer list its client holds (`None`: none yet).
    list: Option<Vec<PeerInfo>>,
    /// A delta client's tracker.
    sync: PeerSync,
}

struct Sim {
    table: Routing,
    base: Instant,
    elapsed_ms: u64,
    outbox_bytes: usize,
    broadcast_peers: bool,
    max_peer_list_bytes: usize,
    next_conn: ConnId,
    socks: HashMap<ConnId, Sock>,
    next_id: u64,
    /// Ids of requests sent, for answers and cancels.
    sent: Vec<String>,
    server_tickets: Vec<Ticket>,
    judge_tickets: Vec<Ticket>,
}

impl Sim {
    fn new(input: &mut Input<'_>) -> Self {
        let acl_bits = input.byte();
        let config = RoutingConfig {
            max_pending_sockets: usize::from(input.byte() % 4) + 1,
            hello_timeout: Some(Duration::from_secs(10)),
            broadcast_peers: input.bool(),
            max_concurrent_rpc: usize::from(input.byte() % 3),
            expose_rpc_errors: input.bool(),
            max_buffered_bytes: 1 << 20,
            user_rpcs: if input.bool() {
                HashSet::from(["echo".to_owned(), "link.health".to_owned()])
            } else {
                HashSet::new()
            },
            acl: AclHooks {
                rpc: acl_bits & 1 != 0,
                publish: acl_bits & 2 != 0,
                subscribe: acl_bits & 4 != 0,
                send: acl_bits & 8 != 0,
            },
            // Small lists, so that the size cap is reached too.
            max_peer_list_bytes: *input.choose(&[1 << 20, 400]),
            // Small, so that the subscription cap is reached too.
            max_subscriptions_per_peer: *input.choose(&[10_000, 2]),
            presence: PresenceLimits::default(),
        };
        let (broadcast_peers, max_peer_list_bytes) =
            (config.broadcast_peers, config.max_peer_list_bytes);
        let mut table = Routing::new(config);
        table.set_listening(Listening {
            events: input.bool(),
            traffic: input.bool(),
        });
        Self {
            table,
            base: Instant::now(),
            elapsed_ms: 0,
            outbox_bytes: *input.choose(&[1 << 20, 2_000, 600]),
            broadcast_peers,
            max_peer_list_bytes,
            next_conn: 1,
            socks: HashMap::new(),
            next_id: 0,
            sent: Vec::new(),
            server_tickets: Vec::new(),
            judge_tickets: Vec::new(),
        }
    }

    fn now(&self) -> Now {
        Now::new(
            self.base + Duration::from_millis(self.elapsed_ms),
            T0_MS + self.elapsed_ms,
        )
    }

    /// An attached socket, chosen by the input (registered ones if asked).
    fn pick(&self, input: &mut Input<'_>, registered: bool) -> Option<ConnId> {
        let mut ids: Vec<ConnId> = self
            .socks
            .iter()
            .filter(|(_, s)| !registered || s.kind.is_some())
            .map(|(c, _)| *c)
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        Some(*input.choose(&ids))
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let now = self.now();
        let op = input.byte() % 16;
        match op {
            0 | 1 => {
                let conn = self.next_conn;
                self.next_conn += 1;
                let outbox = Arc::new(Outbox::new(self.outbox_bytes));
                self.socks.insert(
                    conn,
                    Sock {
                        outbox: outbox.clone(),
                        kind: None,
                        deltas: false,
                        acked: false,
                        doomed: false,
                        list: None,
                        sync: PeerSync::new(),
                    },
                );
                self.table.handle_attach(conn, Route::Local(outbox), None);
            }
            2 | 3 => {
                // A socket's hello verified (once per socket, as HubConn does).
                let Some(conn) = self.pick(input, false) else {
                    return;
                };
                let kind = *input.choose(KINDS);
                // Names, pids and start times as clients send them (a
                // name equal to the kind is left out of compact entries).
                let name = *input.choose(&[None, Some(kind), Some("n-1"), Some("")]);
                let pid = *input.choose(&[None, Some(7.0), Some(1.5)]);
                let sock = self.socks.get_mut(&conn);
                let Some(sock) = sock.filter(|s| s.kind.is_none()) else {
                    return;
                };
                let data = json!({ "kind": kind, "name": name, "pid": pid, "startedAt": pid });
                let Ok(hello) = Hello::sanitize(Some(&data)) else {
                    return;
                };
                sock.kind = Some(kind.into());
                // 3: the hello asked for the `peers.delta` extension.
                sock.deltas = op == 3;
                self.table
                    .handle_register_asking(now, conn, hello, op == 3, None);
            }
            4..=8 => {
                let Some(conn) = self.pick(input, true) else {
                    return;
                };
                let Some(kind) = self.socks.get(&conn).and_then(|s| s.kind.clone()) else {
                    return;
                };
                let env = self.envelope(input, &kind);
                self.table.handle_inbound(now, conn, kind, env);
            }
            9 => {
                let Some(conn) = self.pick(input, false) else {
                    return;
                };
                self.socks.remove(&conn);
                let code = *input.choose(&[Some(1000), None, Some(4000)]);
                let now = self.now();
                self.table.handle_closed(now, conn, code, String::new());
            }
            10 => {
                if self.judge_tickets.is_empty() {
                    return;
                }
                let i = usize::from(input.byte()) % self.judge_tickets.len();
                let ticket = self.judge_tickets.swap_remove(i);
                let verdict = match input.byte() % 3 {
                    0 => Verdict::Deny {
                        code: None,
                        error: None,
                    },
                    1 => Verdict::Deny {
                        code: Some("NOPE".into()),
                        error: Some("no".into()),
                    },
                    _ => Verdict::Allow,
                };
                self.table.handle_verdict(now, ticket, verdict);
            }
            11 => {
                if self.server_tickets.is_empty() {
                    return;
                }
                let i = usize::from(input.byte()) % self.server_tickets.len();
                let ticket = self.server_tickets.swap_remove(i);
                let result = match input.byte() % 3 {
                    0 => Err(HandlerError::new("E_FUZZ", "failed")),
                    1 => Err(HandlerError::internal("boom")),
                    _ => Ok(json!({ "ok": 1 })),
                };
                self.table.handle_server_rpc_done(now, ticket, result);
            }
            12 => {
                let now = self.now();
                self.table.handle_input_done(now, input.bool());
            }
            13 => {
                // A writer drains its socket's outbox, and flushes (or
                // not yet: a list taken and not flushed holds the next).
                let Some(conn) = self.pick(input, false) else {
                    return;
                };
                let max = usize::from(input.byte());
                let flush = input.bool();
                self.take(conn, max, flush);
            }
            14 => {
                // Time passes; the table's timer (paced peer lists) fires
                // when it is due, as the driver fires it.
                self.elapsed_ms += u64::from(input.byte()) * 10;
                let now = self.now();
                self.table.handle_timeout(now);
            }
            _ => match input.byte() % 8 {
                0 => {
                    self.table.close_all(Some(1001), "server shutdown");
                }
                1 => self.table.terminate_all(),
                2 => self.table.stop(),
                3 => self.settle(),
                4 => {
                    // A client asks for a fresh snapshot (ignored from a
                    // v1 peer).
                    let Some(conn) = self.pick(input, true) else {
                        return;
                    };
                    self.resync(conn);
                }
                _ => {
                    let _ = (self.table.health(), self.table.state());
                }
            },
        }
        self.drain();
    }

    /// Collects controls (ignored: closes are fed back by `handle_closed`
    /// steps), tasks (kept to answer later) and events.
    fn drain(&mut self) {
        while let Some((conn, _)) = self.table.poll_control() {
            if let Some(sock) = self.socks.get_mut(&conn) {
                sock.doomed = true;
            }
        }
        while let Some(task) = self.table.poll_task() {
            match task {
                Task::ServerRpc(call) => self.server_tickets.push(call.ticket),
                // Answered like a user handler (the fuzzed table is alone).
                Task::ClusterTopics { ticket, .. } => self.server_tickets.push(ticket),
                Task::Judge { ticket, .. } => self.judge_tickets.push(ticket),
            }
        }
        while self.table.poll_event().is_some() {}
    }

    /// A verified envelope from `kind` with fuzz-chosen type, target and data.
    fn envelope(&mut self, input: &mut Input<'_>, kind: &str) -> Envelope {
        self.next_id += 1;
        let id = format!("{kind}-{}", self.next_id);
        let to = *input.choose(&[
            None,
            Some("server"),
            Some("alpha"),
            Some("beta"),
            Some("gamma"),
            Some(""),
        ]);
        let topic = *input.choose(TOPICS);
        let earlier = if self.sent.is_empty() {
            "none".to_owned()
        } else {
            self.sent[usize::from(input.byte()) % self.sent.len()].clone()
        };
        let (t, data): (&'static str, Value) = match input.byte() % 10 {
            0 | 1 => {
                self.sent.push(id.clone());
                let rpc_type = *input.choose(RPC_TYPES);
                (
                    msg_type::RPC_REQUEST,
                    json!({ "rpcType": rpc_type, "rpcData": { "kind": "alpha" } }),
                )
            }
            2 => (msg_type::RPC_REQUEST, json!({})),
            3 => (
                msg_type::RPC_RESPONSE,
                json!({ "ok": input.bool(), "result": 1 }),
            ),
            4 => (msg_type::RPC_CANCEL, json!({ "id": earlier })),
            5 => (msg_type::TOPIC_SUBSCRIBE, json!({ "topic": topic })),
            6 => (msg_type::TOPIC_UNSUBSCRIBE, json!({ "topic": topic })),
            7 => (
                msg_type::TOPIC_MESSAGE,
                json!({ "topic": topic, "payload": [1] }),
            ),
            8 => (
                msg_type::DIRECT,
                json!({ "directType": "d", "directData": null }),
            ),
            _ => (
                msg_type::STATUS_UPDATE,
                json!({ "status": { "n": input.byte() } }),
            ),
        };
        // Answers reuse the id of an earlier request, as a responder does.
        let id = if t == msg_type::RPC_RESPONSE {
            earlier
        } else {
            id
        };
        let header = Header {
            id: &id,
            ts: self.now().wall_ms,
            msg_type: t,
            from: Some(kind),
            to,
        };
        Envelope::new(&header, Some(data))
    }

    /// A writer takes up to `max` items (and flushes them if `flush`): each
    /// is addressed to the kind the socket registered, and its client acts
    /// on the presence messages among them. Returns how many it took.
    fn take(&mut self, conn: ConnId, max: usize, flush: bool) -> usize {
        let Some(sock) = self.socks.get_mut(&conn) else {
            return 0;
        };
        let mut batch = Vec::new();
        let _ = sock.outbox.take(&mut batch, max);
        if flush {
            sock.outbox.flushed();
        }
        let n = batch.len();
        for item in &batch {
            let kind = sock.kind.as_ref();
            assert_eq!(
                Some(&item.to),
                kind,
                "conn {conn}: {} for another kind",
                item.msg_type
            );
            Self::client_takes(conn, sock, item, self.broadcast_peers);
        }
        n
    }

    /// What the socket's client makes of one message: the presence checks
    /// in the module docs.
    fn client_takes(conn: ConnId, sock: &mut Sock, item: &OutItem, broadcast_peers: bool) {
        let t = item.msg_type;
        let presence = matches!(
            t,
            msg_type::PEERS_UPDATE | msg_type::PEERS_SNAPSHOT | msg_type::PEERS_DELTA
        );
        if t == msg_type::HELLO_ACK {
            assert!(!sock.acked, "conn {conn}: a second hello.ack");
            sock.acked = true;
        } else if !presence {
            return;
        }
        assert!(sock.acked, "conn {conn}: {t} before its hello.ack");
        let data = item.data.as_deref().map(|d| {
            serde_json::from_str::<Value>(d.as_str())
                .unwrap_or_else(|e| panic!("conn {conn}: {t} data is not JSON: {e}"))
        });
        let header = Header {
            id: "x",
            ts: T0_MS,
            msg_type: t,
            from: Some("server"),
            to: Some(&*item.to),
        };
        let msg = Message::parse(&Envelope::new(&header, data));
        let step = match msg {
            Message::HelloAck(ack) => {
                let granted = ack
                    .features
                    .iter()
                    .any(|f| f == Feature::PeersDelta.as_str());
                assert_eq!(
                    granted,
                    sock.deltas && broadcast_peers,
                    "conn {conn}: hello.ack features {:?}",
                    ack.features
                );
                return;
            }
            Message::PeersUpdate(peers) => {
                assert!(!sock.deltas, "conn {conn}: peers.update to a delta peer");
                sock.list = Some(peers);
                return;
            }
            Message::PeersSnapshot(part) => {
                assert!(sock.deltas, "conn {conn}: peers.snapshot to a v1 peer");
                sock.sync.on_snapshot(part)
            }
            Message::PeersDelta(delta) => {
                assert!(sock.deltas, "conn {conn}: peers.delta to a v1 peer");
                sock.sync.on_delta(delta)
            }
            other => panic!("conn {conn}: malformed {t}: {other:?}"),
        };
        match step {
            PeerStep::Wait => {}
            PeerStep::List(peers) => sock.list = Some(peers),
            PeerStep::Apply(delta) => {
                let Some(list) = sock.list.as_mut() else {
                    panic!("conn {conn}: a delta applied with no list held");
                };
                // As link-client applies it; each part must make sense
                // against the list held.
                for kind in &delta.left {
                    assert!(
                        list.iter().any(|p| p.kind == *kind),
                        "conn {conn}: delta {}..{}: {kind} left but is not listed",
                        delta.base,
                        delta.version
                    );
                }
                list.retain(|p| !delta.left.contains(&p.kind));
                for p in delta.changed {
                    let slot = list.iter_mut().find(|q| q.kind == p.kind);
                    let Some(slot) = slot else {
                        panic!("conn {conn}: {} changed but is not listed", p.kind);
                    };
                    *slot = p;
                }
                for p in delta.joined {
                    assert!(
                        list.iter().all(|q| q.kind != p.kind),
                        "conn {conn}: {} joined but is listed",
                        p.kind
                    );
                    list.push(p);
                }
            }
            PeerStep::Resync => {
                panic!("conn {conn}: {t} left a gap (the hub lost or reordered presence messages)")
            }
        }
    }

    /// `peers.resync` from a registered socket, as a client sends it.
    fn resync(&mut self, conn: ConnId) {
        let Some(kind) = self.socks.get(&conn).and_then(|s| s.kind.clone()) else {
            return;
        };
        self.next_id += 1;
        let id = format!("{kind}-{}", self.next_id);
        let header = Header {
            id: &id,
            ts: self.now().wall_ms,
            msg_type: msg_type::PEERS_RESYNC,
            from: Some(&kind),
            to: None,
        };
        let env = Envelope::new(&header, Some(json!({})));
        let now = self.now();
        self.table.handle_inbound(now, conn, kind, env);
        self.drain();
    }

    /// A quiescent point: inputs pause, the clock runs past every presence
    /// timer and every writer drains and flushes its outbox, until nothing
    /// is due; then every live peer's list is the membership.
    fn settle(&mut self) {
        for round in 0.. {
            assert!(round < 10_000, "presence never settles");
            let now = self.now();
            self.table.handle_input_done(now, false);
            self.drain();
            let mut conns: Vec<ConnId> = self.socks.keys().copied().collect();
            conns.sort_unstable();
            let mut took = 0;
            for conn in conns {
                took += self.take(conn, usize::MAX, true);
            }
            match self.table.poll_timeout() {
                Some(t) => {
                    let ms = t.saturating_duration_since(self.base).as_micros();
                    let ms = u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX);
                    self.elapsed_ms = self.elapsed_ms.max(ms);
                    let now = self.now();
                    self.table.handle_timeout(now);
                    self.drain();
                }
                None if took == 0 => break,
                None => {}
            }
        }
        self.check_presence();
    }

    /// Every socket that holds its kind and was not told to close has the
    /// membership (v1: as far as `max_peer_list_bytes` lets a list go).
    fn check_presence(&self) {
        let members = self.table.membership();
        let mut conns: Vec<&ConnId> = self.socks.keys().collect();
        conns.sort_unstable();
        for conn in conns {
            let sock = &self.socks[conn];
            let Some(kind) = &sock.kind else { continue };
            if sock.doomed || !self.broadcast_peers {
                continue;
            }
            assert!(
                members.iter().any(|p| *p.kind == **kind),
                "conn {conn}: {kind} holds its kind but is not a member"
            );
            let want = if sock.deltas {
                &members[..]
            } else {
                // The earliest peers that fit, as the hub cuts a list.
                let (mut bytes, mut listed) = (12, 0);
                for p in &members {
                    let add = CanonicalData::new(&p.to_value()).len() + usize::from(listed > 0);
                    if bytes + add > self.max_peer_list_bytes {
                        break;
                    }
                    bytes += add;
                    listed += 1;
                }
                &members[..listed]
            };
            assert_eq!(
                sock.list.as_deref(),
                Some(want),
                "conn {conn} ({kind}, deltas {}): its list is not the membership",
                sock.deltas
            );
        }
    }

    /// Nothing is queued for a socket before its hello.
    fn check_outboxes(&self) {
        for (conn, sock) in &self.socks {
            if sock.kind.is_none() {
                assert_eq!(
                    sock.outbox.queued_bytes(),
                    0,
                    "conn {conn}: queued before its hello"
                );
            }
        }
    }

    /// Every socket closes, every task is answered: nothing may be left.
    fn finish(mut self) {
        self.settle();
        let now = self.now();
        let mut conns: Vec<ConnId> = self.socks.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.table
                .handle_closed(now, conn, Some(1000), String::new());
            self.drain();
        }
        while !self.judge_tickets.is_empty() || !self.server_tickets.is_empty() {
            for ticket in std::mem::take(&mut self.judge_tickets) {
                self.table.handle_verdict(now, ticket, Verdict::Allow);
            }
            for ticket in std::mem::take(&mut self.server_tickets) {
                self.table
                    .handle_server_rpc_done(now, ticket, Ok(Value::Null));
            }
            self.drain();
        }
        self.table.handle_input_done(now, false);
        self.table.check_drained();
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::Path;

    /// Replays `fuzz/corpus/routing/*` and `fuzz/regressions/routing/*`
    /// through the harness (stable), so a fixed finding stays fixed.
    #[test]
    fn routing_corpus_replays() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut files = Vec::new();
        for dir in ["corpus", "regressions"] {
            if let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("routing")) {
                files.extend(entries.map(|e| e.unwrap().path()));
            }
        }
        files.sort();
        assert!(!files.is_empty(), "no committed routing corpus");
        for path in &files {
            let data = std::fs::read(path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| super::routing(&data))).is_err() {
                panic!("routing: {} fails", path.display());
            }
        }
    }

    /// A cheap net under the fuzzer on stable: pseudo-random programs.
    #[test]
    fn pseudo_random_programs_pass() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..2_000 {
            let data: Vec<u8> = (0..(i % 300))
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if catch_unwind(AssertUnwindSafe(|| super::routing(&data))).is_err() {
                panic!("routing: pseudo-random program {i} fails: {data:?}");
            }
        }
    }
}
