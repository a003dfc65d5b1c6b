//! Target `hub_conn`: one hub socket ([`HubConn`]) driven by an arbitrary
//! sequence of inputs: raw frames, well-formed frames signed with the right
//! or a wrong key (fresh, repeated or stale ids and timestamps), key
//! answers, pongs, the clock moving and firing timers, the socket closing,
//! and the hub's commands (evict, displace, close).
//!
//! Checks, after every input and its outputs are drained:
//! - `Closed` is sticky, and `Closing` only moves to `Closed`; a closed
//!   socket neither transmits nor reports anything;
//! - only a key answer authenticates (never an unknown kind or any other
//!   input); `Authenticated` state and the kind and key getters agree;
//! - messages are reported only while authenticated, and only for frames
//!   signed with the key the socket authenticated with;
//! - a `Terminate` leaves the socket `Closed`; the hub never writes frames;
//! - timers: after `handle_timeout(now)` nothing is due at `now` (no busy
//!   loop), and a socket that is closing, waiting for its hello (with a
//!   hello timeout) or authenticated (with keepalive) has a timer armed (no
//!   socket hangs forever).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use link_protocol::conn::{HubConn, HubConnConfig, HubConnEvent, HubConnState, Now, Transmit};
use link_protocol::envelope::{self, CanonicalData, Header};
use link_protocol::{HashAlgo, Key, ReplayConfig, ReplayGuard, Value, msg_type};

use crate::input::{Input, assert_no_timer_due, time_step};

/// Wall clock at the start (ms since the epoch).
const T0_MS: u64 = 1_795_424_111_000;
/// Inputs per run, so one run stays fast.
const MAX_STEPS: usize = 200;
/// Kinds the frames claim.
const KINDS: &[&str] = &["alpha", "beta", " alpha ", "", "server", "a.b"];
/// Message types the frames carry.
const TYPES: &[&str] = &[
    msg_type::HELLO,
    msg_type::RPC_REQUEST,
    msg_type::RPC_RESPONSE,
    msg_type::TOPIC_MESSAGE,
    msg_type::DIRECT,
    msg_type::HELLO_ACK,
    "status",
    "x",
];

struct Sim {
    conn: HubConn,
    replay: ReplayGuard,
    base: Instant,
    elapsed_ms: u64,
    key: Key,
    wrong: Key,
    next_id: u64,
    last_id: String,
    config: HubConnConfig,
    /// Canonical texts of the well-formed frames sent, by signing key
    /// (right, wrong).
    signed: [HashSet<String>; 2],
}

impl Sim {
    fn now(&self) -> Now {
        Now::new(
            self.base + Duration::from_millis(self.elapsed_ms),
            T0_MS + self.elapsed_ms,
        )
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let config = HubConnConfig {
        max_message_bytes: *input.choose(&[envelope::DEFAULT_MAX_MESSAGE_BYTES, 300, 64]),
        hello_timeout: *input.choose(&[
            Some(Duration::from_secs(10)),
            None,
            Some(Duration::from_millis(1)),
        ]),
        keepalive_interval: *input.choose(&[
            Some(Duration::from_secs(15)),
            None,
            Some(Duration::from_millis(1)),
        ]),
        max_pipelined: usize::from(input.byte() % 4),
    };
    if config.validate().is_err() {
        return;
    }
    let replay = ReplayGuard::new(ReplayConfig {
        window_ms: *input.choose(&[60_000, 0, 10]),
        max_recent_ids: usize::from(input.byte() % 8) + 1,
        max_total_ids: usize::from(input.byte() % 16) + 1,
    });
    let key = |s| match Key::new(s, HashAlgo::Sha256) {
        Ok(k) => k,
        Err(e) => panic!("fixed key: {e}"),
    };
    let base = Instant::now();
    let mut sim = Sim {
        conn: HubConn::new(base, config),
        replay,
        base,
        elapsed_ms: 0,
        key: key("fuzz-secret"),
        wrong: key("wrong-secret"),
        next_id: 0,
        last_id: "id-0".to_owned(),
        config,
        signed: Default::default(),
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        step(&mut sim, &mut input);
    }
}

/// What the last input was, for the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Frame,
    /// A key answered.
    KeyResolved,
    /// The kind is unknown.
    KeyUnknown,
    Timeout,
    Other,
}

fn step(sim: &mut Sim, input: &mut Input<'_>) {
    let before = sim.conn.state();
    let now = sim.now();
    let op = match input.byte() % 12 {
        0 => {
            let bytes = input.bytes(512);
            sim.conn.handle_message(now, bytes, &mut sim.replay);
            Op::Frame
        }
        1..=3 => {
            // Text, as the hub's driver hands a text frame over.
            let frame = honest_frame(sim, input);
            sim.conn.handle_text_message(now, &frame, &mut sim.replay);
            Op::Frame
        }
        4 => {
            sim.conn
                .key_resolved(now, Some(sim.key.clone()), &mut sim.replay);
            Op::KeyResolved
        }
        5 if input.bool() => {
            sim.conn
                .key_resolved(now, Some(sim.wrong.clone()), &mut sim.replay);
            Op::KeyResolved
        }
        5 => {
            sim.conn.key_resolved(now, None, &mut sim.replay);
            Op::KeyUnknown
        }
        6 => {
            sim.conn.handle_pong();
            Op::Other
        }
        7 => {
            // Jump to the next deadline, or a little past it, or a bit.
            sim.elapsed_ms += time_step(input, now.instant, sim.conn.poll_timeout());
            let now = sim.now();
            sim.conn.handle_timeout(now);
            assert_no_timer_due(sim.conn.poll_timeout(), now.instant);
            Op::Timeout
        }
        8 => {
            sim.conn.handle_closed();
            Op::Other
        }
        9 => {
            sim.conn.evict(now);
            Op::Other
        }
        10 => {
            sim.conn.displace(now);
            Op::Other
        }
        _ => {
            let code = *input.choose(&[None, Some(1001), Some(1008)]);
            sim.conn.close(now, code, "bye");
            Op::Other
        }
    };
    drain_and_check(sim, before, op);
}

/// A frame as a peer's encoder writes it, with fuzz-chosen fields.
fn honest_frame(sim: &mut Sim, input: &mut Input<'_>) -> String {
    let t = *input.choose(TYPES);
    let kind = *input.choose(KINDS);
    let id = match input.byte() % 4 {
        0 => sim.last_id.clone(), // a replay
        1 => String::new(),       // missing
        _ => {
            sim.next_id += 1;
            format!("id-{}", sim.next_id)
        }
    };
    sim.last_id = id.clone();
    let wall = sim.now().wall_ms;
    let ts = match input.byte() % 4 {
        0 => wall.saturating_sub(120_000), // outside the window
        1 => wall + u64::from(input.u16()),
        _ => wall,
    };
    let data: Value = match input.byte() % 4 {
        0 if t == msg_type::HELLO => serde_json::json!({ "kind": kind, "name": "n" }),
        0 => Value::Null,
        1 => serde_json::json!({ "kind": kind, "pid": input.u16() }),
        2 => serde_json::from_slice(input.bytes(64)).unwrap_or(Value::Null),
        _ => serde_json::json!({ "rpcType": "echo", "topic": "t", "directType": "d" }),
    };
    let wrong = input.byte().is_multiple_of(8);
    let key = if wrong { &sim.wrong } else { &sim.key };
    let header = Header {
        id: &id,
        ts,
        msg_type: t,
        from: Some(kind),
        to: None,
    };
    let frame = envelope::encode(key, &header, Some(&CanonicalData::new(&data)));
    if let Ok(received) = envelope::parse_frame(frame.as_bytes(), usize::MAX) {
        sim.signed[usize::from(wrong)].insert(received.envelope.canonical());
    }
    frame
}

fn drain_and_check(sim: &mut Sim, before: HubConnState, op: Op) {
    let transmits: Vec<_> = std::iter::from_fn(|| sim.conn.poll_transmit()).collect();
    let events: Vec<_> = std::iter::from_fn(|| sim.conn.poll_event()).collect();
    let state = sim.conn.state();
    match before {
        HubConnState::Closed => {
            assert_eq!(state, HubConnState::Closed, "Closed is not sticky");
            assert!(
                transmits.is_empty() && events.is_empty(),
                "a closed socket acted"
            );
        }
        HubConnState::Closing => assert!(
            matches!(state, HubConnState::Closing | HubConnState::Closed),
            "Closing moved to {state:?}"
        ),
        _ => {}
    }
    for t in &transmits {
        match t {
            Transmit::Frame(_) => panic!("the hub conn wrote a frame"),
            Transmit::Terminate => {
                assert_eq!(state, HubConnState::Closed, "terminated but {state:?}")
            }
            Transmit::Ping | Transmit::Close { .. } => {}
        }
    }
    for e in &events {
        match e {
            HubConnEvent::Authenticated { hello, .. } => {
                assert_eq!(op, Op::KeyResolved, "authenticated without a key");
                assert_eq!(sim.conn.kind(), Some(hello.kind.as_str()));
            }
            HubConnEvent::Message(env) => {
                let key = sim
                    .conn
                    .key()
                    .unwrap_or_else(|| panic!("a message before a key"));
                let wrong = key.id() != sim.key.id();
                assert!(
                    sim.signed[usize::from(wrong)].contains(&env.canonical()),
                    "a message not signed with the socket's key"
                );
                assert!(
                    env.msg_type() != Some(msg_type::HELLO),
                    "a second hello passed"
                );
                assert!(!env.id().is_empty());
            }
            HubConnEvent::KeyNeeded { kind } => {
                assert!(!kind.is_empty(), "a key asked for an empty kind");
            }
            HubConnEvent::HelloTimeout | HubConnEvent::KeepaliveTimeout => {
                assert_eq!(op, Op::Timeout, "a timeout outside handle_timeout");
            }
            _ => {}
        }
    }
    let authenticated = state == HubConnState::Authenticated;
    assert_eq!(sim.conn.is_authenticated(), authenticated);
    if authenticated {
        assert!(sim.conn.kind().is_some() && sim.conn.key().is_some());
    }
    if before != HubConnState::Authenticated && authenticated && op != Op::KeyResolved {
        panic!("authenticated by an input other than a key");
    }
    let armed = sim.conn.poll_timeout().is_some();
    match state {
        HubConnState::Closing => assert!(armed, "closing without a terminate timer"),
        HubConnState::Pending | HubConnState::Resolving if sim.config.hello_timeout.is_some() => {
            assert!(armed, "pending without a hello timer");
        }
        HubConnState::Authenticated if sim.config.keepalive_interval.is_some() => {
            assert!(armed, "authenticated without a keepalive timer");
        }
        HubConnState::Closed => assert!(!armed, "closed with a timer"),
        _ => {}
    }
}
