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
//!
//! and at the end, once every socket has closed and every task is answered,
//! nothing is left: no peer, topic, status, subscription, waiting socket,
//! running RPC or ACL check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use link_protocol::conn::Now;
use link_protocol::envelope::Header;
use link_protocol::{Envelope, HandlerError, Hello, Value, msg_type};
use serde_json::json;

use crate::acl::Verdict;
use crate::outbox::Outbox;
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

/// One attached socket as the driver sees it.
struct Sock {
    outbox: Arc<Outbox>,
    kind: Option<Arc<str>>,
}

struct Sim {
    table: Routing,
    base: Instant,
    elapsed_ms: u64,
    outbox_bytes: usize,
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
                let sock = self.socks.get_mut(&conn);
                let Some(sock) = sock.filter(|s| s.kind.is_none()) else {
                    return;
                };
                let Ok(hello) = Hello::sanitize(Some(&json!({ "kind": kind }))) else {
                    return;
                };
                sock.kind = Some(kind.into());
                // 3: the hello asked for the `peers.delta` extension.
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
                // A writer drains its socket's outbox.
                let Some(conn) = self.pick(input, false) else {
                    return;
                };
                let max = usize::from(input.byte());
                self.take(conn, max);
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
        while self.table.poll_control().is_some() {}
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

    /// A writer takes up to `max` items: each is addressed to the kind the
    /// socket registered.
    fn take(&self, conn: ConnId, max: usize) {
        let Some(sock) = self.socks.get(&conn) else {
            return;
        };
        let mut batch = Vec::new();
        let _ = sock.outbox.take(&mut batch, max);
        for item in batch {
            let kind = sock.kind.as_ref();
            assert_eq!(
                Some(&item.to),
                kind,
                "conn {conn}: {} for another kind",
                item.msg_type
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
        let now = self.now();
        let mut conns: Vec<ConnId> = self.socks.keys().copied().collect();
        conns.sort_unstable();
        for &conn in &conns {
            self.take(conn, usize::MAX);
        }
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
