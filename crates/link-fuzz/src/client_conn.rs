//! Target `client_conn`: a client's link ([`ClientConn`]) driven by an
//! arbitrary sequence of inputs: start and stop, the socket opening and
//! closing with any code, raw frames, frames the hub signs (with the right
//! or a wrong key; `hello.ack` accepting or rejecting, peer lists, RPCs,
//! topic and direct messages; fresh, repeated or stale ids and timestamps),
//! pongs, and the clock moving and firing timers, under fuzz-chosen
//! keepalive, diagnostic and reconnect settings and one to three hub URLs
//! (failover), in order or shuffled.
//!
//! Checks, after every input and its outputs are drained:
//! - the getters agree with the state (`is_ready`, `is_connected`); `Idle`
//!   is never re-entered; `Stopped` is left only by `start`;
//! - events fit the state they leave behind: `Connect` leaves `Connecting`,
//!   `Ready` leaves `Ready`, `Disconnected` leaves no socket, `Message` and
//!   `Verified` only while connected and only for frames signed with the
//!   link's key;
//! - the only frame written is the hello on open, and it verifies under the
//!   link's key as a `hello` from its kind;
//! - reconnect delays stay within the backoff's bounds, and attempts stop at
//!   `max_attempts`;
//! - failover: every `Connect` names one of the endpoints, and no endpoint
//!   is dialled twice in one cycle (a cycle ends with a scheduled reconnect,
//!   exhaustion or a start); only a failed attempt with endpoints left in
//!   its cycle reconnects without a delay;
//! - timers: after `handle_timeout(now)` nothing is due at `now`; a link
//!   waiting to reconnect, closing, or connected with keepalive has a timer
//!   armed (it never hangs).

use std::time::{Duration, Instant};

use link_protocol::conn::{
    BackoffConfig, ClientConn, ClientConnConfig, ClientEvent, ClientState, Now, SeqIds, Transmit,
    UrlOrder,
};
use link_protocol::envelope::{self, CanonicalData, Header};
use link_protocol::{HashAlgo, Key, ReplayConfig, SERVER, Value, msg_type};
use serde_json::json;

use crate::input::{Input, assert_no_timer_due, time_step};

const T0_MS: u64 = 1_795_424_111_000;
const MAX_STEPS: usize = 200;
const KIND: &str = "alpha";

const TYPES: &[&str] = &[
    msg_type::HELLO_ACK,
    msg_type::PEERS_UPDATE,
    msg_type::STATUS_SNAPSHOT,
    msg_type::STATUS_UPDATE,
    msg_type::RPC_REQUEST,
    msg_type::RPC_RESPONSE,
    msg_type::RPC_CANCEL,
    msg_type::TOPIC_MESSAGE,
    msg_type::DIRECT,
    "x",
];

struct Sim {
    conn: ClientConn,
    base: Instant,
    elapsed_ms: u64,
    key: Key,
    wrong: Key,
    next_id: u64,
    last_id: String,
    keepalive: bool,
    backoff: BackoffConfig,
    ever_started: bool,
    endpoints: usize,
    /// Endpoints dialled in the current cycle.
    cycle: Vec<usize>,
}

impl Sim {
    fn now(&self) -> Now {
        Now::new(
            self.base + Duration::from_millis(self.elapsed_ms),
            T0_MS + self.elapsed_ms,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Start,
    Frame { signed_right: bool },
    Timeout,
    Other,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let key = |s| match Key::new(s, HashAlgo::Sha256) {
        Ok(k) => k,
        Err(e) => panic!("fixed key: {e}"),
    };
    let Ok(mut config) = ClientConnConfig::new(KIND, key("fuzz-secret")) else {
        panic!("fixed config");
    };
    config.max_message_bytes = *input.choose(&[envelope::DEFAULT_MAX_MESSAGE_BYTES, 300]);
    config.keepalive_interval = *input.choose(&[
        Some(Duration::from_secs(30)),
        None,
        Some(Duration::from_millis(1)),
    ]);
    config.hello_ack_diagnostic = *input.choose(&[
        Some(Duration::from_secs(5)),
        None,
        Some(Duration::from_millis(1)),
    ]);
    config.reconnect = BackoffConfig {
        initial: Duration::from_millis(u64::from(input.byte()) + 1),
        max: Duration::from_millis(u64::from(input.u16()) + 256),
        growth: 1.0 + f64::from(input.byte()) / 64.0,
        jitter: f64::from(input.byte() % 101) / 100.0,
        max_attempts: *input.choose(&[None, Some(0), Some(1), Some(3)]),
    };
    config.reconnect_on_rejection = input.bool();
    config.replay = ReplayConfig {
        window_ms: *input.choose(&[60_000, 0, 10]),
        max_recent_ids: usize::from(input.byte() % 8) + 1,
        max_total_ids: usize::from(input.byte() % 16) + 1,
    };
    let keepalive = config.keepalive_interval.is_some();
    let backoff = config.reconnect;
    // Jitter draws from a fixed sequence over [0, 1).
    let mut seed = u64::from(input.byte());
    // The failover settings come from the seed byte: no extra input is read,
    // so the corpora keep their meaning.
    config.endpoints = usize::try_from(seed % 3).unwrap_or(0) + 1;
    config.url_order = if seed & 0x80 == 0 {
        UrlOrder::Ordered
    } else {
        UrlOrder::Random
    };
    let endpoints = config.endpoints;
    let random = Box::new(move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    });
    let conn = match ClientConn::new(config, Box::new(SeqIds::new("c")), random) {
        Ok(c) => c,
        Err(_) => return, // a setting the builder refuses
    };
    let mut sim = Sim {
        conn,
        base: Instant::now(),
        elapsed_ms: 0,
        key: key("fuzz-secret"),
        wrong: key("wrong-secret"),
        next_id: 0,
        last_id: "h-0".to_owned(),
        keepalive,
        backoff,
        ever_started: false,
        endpoints,
        cycle: Vec::new(),
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        step(&mut sim, &mut input);
    }
}

fn step(sim: &mut Sim, input: &mut Input<'_>) {
    let before = sim.conn.state();
    let now = sim.now();
    let op = match input.byte() % 12 {
        0 => {
            if matches!(before, ClientState::Idle | ClientState::Stopped) {
                sim.cycle.clear();
            }
            sim.conn.start();
            sim.ever_started = true;
            Op::Start
        }
        1 => {
            sim.conn.stop(now);
            Op::Other
        }
        2 => {
            sim.conn.handle_open(now);
            Op::Other
        }
        3 => {
            let code = *input.choose(&[None, Some(1000), Some(1006), Some(4000), Some(1008)]);
            sim.conn.handle_closed(now, code, "gone");
            Op::Other
        }
        4 => {
            let bytes = input.bytes(512);
            sim.conn.handle_message(now, bytes);
            Op::Frame {
                signed_right: false,
            }
        }
        5..=8 => {
            let (frame, right) = hub_frame(sim, input);
            sim.conn.handle_text_message(now, &frame);
            Op::Frame {
                signed_right: right,
            }
        }
        9 => {
            sim.conn.handle_pong();
            Op::Other
        }
        10 => {
            let (id, frame) = sim.conn.encode(now, msg_type::DIRECT, Some("beta"), None);
            let parsed = envelope::parse_authentic(&frame, usize::MAX, &sim.key)
                .unwrap_or_else(|| panic!("own frame does not authenticate: {frame}"));
            assert_eq!(parsed.id(), id);
            Op::Other
        }
        _ => {
            sim.elapsed_ms += time_step(input, now.instant, sim.conn.poll_timeout());
            let now = sim.now();
            sim.conn.handle_timeout(now);
            assert_no_timer_due(sim.conn.poll_timeout(), now.instant);
            Op::Timeout
        }
    };
    drain_and_check(sim, before, op);
}

/// A frame as the hub writes it, with fuzz-chosen fields; true when signed
/// with the link's key.
fn hub_frame(sim: &mut Sim, input: &mut Input<'_>) -> (String, bool) {
    let t = *input.choose(TYPES);
    let from = *input.choose(&[Some(SERVER), None, Some("beta"), Some("")]);
    let id = match input.byte() % 4 {
        0 => sim.last_id.clone(),
        _ => {
            sim.next_id += 1;
            format!("h-{}", sim.next_id)
        }
    };
    sim.last_id = id.clone();
    let wall = sim.now().wall_ms;
    let ts = match input.byte() % 4 {
        0 => wall.saturating_sub(120_000),
        1 => wall + u64::from(input.u16()),
        _ => wall,
    };
    let data: Value = match input.byte() % 6 {
        0 => json!({ "ok": true, "kind": KIND, "features": ["topics", "direct"] }),
        1 => json!({ "ok": false, "error": "no" }),
        2 => json!({ "peers": [{ "kind": "beta" }] }),
        3 => json!({ "rpcType": "echo", "topic": "t", "directType": "d", "ok": true }),
        4 => serde_json::from_slice(input.bytes(64)).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let right = !input.byte().is_multiple_of(8);
    let key = if right { &sim.key } else { &sim.wrong };
    let header = Header {
        id: &id,
        ts,
        msg_type: t,
        from,
        to: Some(KIND),
    };
    let frame = envelope::encode(key, &header, Some(&CanonicalData::new(&data)));
    (frame, right)
}

fn drain_and_check(sim: &mut Sim, before: ClientState, op: Op) {
    let transmits: Vec<_> = std::iter::from_fn(|| sim.conn.poll_transmit()).collect();
    let events: Vec<_> = std::iter::from_fn(|| sim.conn.poll_event()).collect();
    let state = sim.conn.state();
    let connected = matches!(state, ClientState::Handshaking | ClientState::Ready);
    assert_eq!(sim.conn.is_ready(), state == ClientState::Ready);
    assert_eq!(sim.conn.is_connected(), connected);
    if sim.ever_started {
        assert_ne!(state, ClientState::Idle, "Idle re-entered");
    }
    if before == ClientState::Stopped && op != Op::Start {
        assert_eq!(state, ClientState::Stopped, "left Stopped without start");
    }
    for t in &transmits {
        if let Transmit::Frame(frame) = t {
            let env = envelope::parse_authentic(frame, usize::MAX, &sim.key)
                .unwrap_or_else(|| panic!("hello does not authenticate: {frame}"));
            assert_eq!(env.msg_type(), Some(msg_type::HELLO));
            assert_eq!(env.from(), Some(KIND));
        }
    }
    let before_connected = matches!(before, ClientState::Handshaking | ClientState::Ready);
    for e in &events {
        match e {
            ClientEvent::Connect { endpoint, .. } => {
                assert_eq!(state, ClientState::Connecting, "Connect left {state:?}");
                assert!(
                    *endpoint < sim.endpoints,
                    "endpoint {endpoint} of {}",
                    sim.endpoints
                );
                assert!(
                    !sim.cycle.contains(endpoint),
                    "endpoint {endpoint} twice in a cycle: {:?}",
                    sim.cycle
                );
                sim.cycle.push(*endpoint);
            }
            ClientEvent::Ready { .. } => assert_eq!(state, ClientState::Ready),
            ClientEvent::Disconnected(d) => {
                assert!(!connected, "Disconnected but still connected");
                if d.will_reconnect {
                    // At once only to the next endpoint of a cycle that a
                    // link never ready on this connection has not finished.
                    let at_once = !d.was_ready && sim.cycle.len() < sim.endpoints;
                    assert!(
                        matches!(
                            state,
                            ClientState::WaitingToReconnect | ClientState::Stopped
                        ) || (at_once && state == ClientState::Connecting),
                        "will reconnect from {state:?}"
                    );
                } else {
                    assert_eq!(state, ClientState::Stopped);
                }
            }
            ClientEvent::Message { .. } | ClientEvent::Verified => {
                assert!(before_connected, "a message while not connected");
                assert_eq!(
                    op,
                    Op::Frame { signed_right: true },
                    "accepted a frame not signed with the key"
                );
            }
            ClientEvent::ReconnectScheduled { delay, attempt } => {
                let b = sim.backoff;
                let ceiling =
                    b.max.max(b.initial).mul_f64(1.0 + b.jitter / 2.0) + Duration::from_millis(1);
                assert!(*delay <= ceiling, "delay {delay:?} over {ceiling:?}");
                if let Some(max) = b.max_attempts {
                    assert!(*attempt <= max, "attempt {attempt} over {max}");
                }
                assert_eq!(state, ClientState::WaitingToReconnect);
                sim.cycle.clear();
            }
            ClientEvent::ReconnectExhausted { .. } => {
                assert_eq!(state, ClientState::Stopped);
                sim.cycle.clear();
            }
            _ => {}
        }
    }
    let armed = sim.conn.poll_timeout().is_some();
    match state {
        ClientState::WaitingToReconnect => assert!(armed, "waiting to reconnect without a timer"),
        ClientState::Handshaking | ClientState::Ready if sim.keepalive => {
            assert!(armed, "connected without a keepalive timer");
        }
        _ => {}
    }
}
