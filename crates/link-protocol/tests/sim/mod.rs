//! In-memory simulator: a `ClientConn` and a `HubConn` joined by a virtual
//! wire and a virtual clock, plus the few hub behaviours a handshake needs
//! (key lookup, `hello.ack`). Tests drive it step by step and read the log
//! like a transcript. No sockets, no sleeps: a whole conversation runs in
//! microseconds.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use link_protocol::conn::{
    ClientConn, ClientConnConfig, ClientEvent, HubConn, HubConnConfig, HubConnEvent, Now, SeqIds,
    Transmit,
};
use link_protocol::envelope::{self, CanonicalData, Header};
use link_protocol::{
    HUB_FEATURES, HashAlgo, HelloAck, Key, ReplayConfig, ReplayGuard, close, msg_type,
};

/// Wall clock at simulation start (ms since epoch).
pub const T0_MS: u64 = 1_795_424_111_000;

pub fn key(secret: &str) -> Key {
    Key::new(secret, HashAlgo::Sha256).unwrap()
}

/// The virtual clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    elapsed: Duration,
    /// Added to the hub's wall clock only (to simulate skew).
    pub hub_skew_ms: i64,
}

impl Clock {
    pub fn client_now(&self) -> Now {
        Now::new(
            self.base + self.elapsed,
            T0_MS + self.elapsed.as_millis() as u64,
        )
    }
    pub fn hub_now(&self) -> Now {
        let wall = (T0_MS + self.elapsed.as_millis() as u64) as i64 + self.hub_skew_ms;
        Now::new(self.base + self.elapsed, wall as u64)
    }
}

/// How the simulated hub answers key lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Answer at once.
    Sync,
    /// Answer only when the test calls `resolve_keys`.
    Manual,
}

pub struct Sim {
    pub clock: Clock,
    pub client: ClientConn,
    pub hub: Option<HubConn>,
    pub hub_config: HubConnConfig,
    pub replay: ReplayGuard,
    pub keys: HashMap<String, Key>,
    pub key_mode: KeyMode,
    /// When false the hub never sends `hello.ack` (a mute or foreign hub).
    pub hub_acks: bool,
    /// Payload of the ack the hub sends.
    pub ack: HelloAck,
    pub hub_answers_pings: bool,
    /// When false the hub never completes a close handshake the client starts.
    pub hub_answers_close: bool,
    pub client_answers_pings: bool,
    /// Endpoints (hub URLs) where a dial is refused; every other one
    /// reaches this simulated hub.
    pub down: HashSet<usize>,
    /// Every frame the client wrote, in order (for replay tests).
    pub client_frames: Vec<String>,
    pub log: Vec<String>,
    pub client_events: Vec<ClientEvent>,
    pub hub_events: Vec<HubConnEvent>,
    pending_keys: VecDeque<String>,
    hub_ids: SeqIds,
}

impl Sim {
    /// A client `alpha` and a hub sharing `demo-secret`.
    pub fn new() -> Self {
        Self::with_client(|_| {})
    }

    pub fn with_client(tweak: impl FnOnce(&mut ClientConnConfig)) -> Self {
        let mut config = ClientConnConfig::new("alpha", key("demo-secret")).unwrap();
        config.pid = 4242;
        tweak(&mut config);
        let client = ClientConn::new(config, Box::new(SeqIds::new("c")), Box::new(|| 0.5)).unwrap();
        let mut keys = HashMap::new();
        keys.insert("alpha".to_owned(), key("demo-secret"));
        Self {
            clock: Clock {
                base: Instant::now(),
                elapsed: Duration::ZERO,
                hub_skew_ms: 0,
            },
            client,
            hub: None,
            hub_config: HubConnConfig::default(),
            replay: ReplayGuard::new(ReplayConfig::default()),
            keys,
            key_mode: KeyMode::Sync,
            hub_acks: true,
            ack: HelloAck::accepted(0, "alpha", &HUB_FEATURES),
            hub_answers_pings: true,
            hub_answers_close: true,
            client_answers_pings: true,
            down: HashSet::new(),
            client_frames: Vec::new(),
            log: Vec::new(),
            client_events: Vec::new(),
            hub_events: Vec::new(),
            pending_keys: VecDeque::new(),
            hub_ids: SeqIds::new("h"),
        }
    }

    pub fn start(&mut self) {
        self.client.start();
        self.run();
    }

    /// Moves the clock and runs every due timer, then settles.
    pub fn advance(&mut self, by: Duration) {
        self.clock.elapsed += by;
        let (c, h) = (self.clock.client_now(), self.clock.hub_now());
        self.client.handle_timeout(c);
        if let Some(hub) = &mut self.hub {
            hub.handle_timeout(h);
        }
        self.run();
    }

    /// Answers every pending key lookup (for `KeyMode::Manual`).
    pub fn resolve_keys(&mut self) {
        while let Some(kind) = self.pending_keys.pop_front() {
            let key = self.keys.get(&kind).cloned();
            let now = self.clock.hub_now();
            if let Some(hub) = &mut self.hub {
                hub.key_resolved(now, key, &mut self.replay);
            }
        }
        self.run();
    }

    /// Delivers raw bytes to the hub as if the client had sent them.
    pub fn inject_to_hub(&mut self, bytes: &str) {
        let now = self.clock.hub_now();
        if let Some(hub) = &mut self.hub {
            hub.handle_message(now, bytes.as_bytes(), &mut self.replay);
        }
        self.run();
    }

    /// Delivers a text frame to the hub, as its driver does.
    pub fn inject_text_to_hub(&mut self, text: &str) {
        let now = self.clock.hub_now();
        if let Some(hub) = &mut self.hub {
            hub.handle_text_message(now, text, &mut self.replay);
        }
        self.run();
    }

    /// Delivers raw bytes to the client as if the hub had sent them.
    pub fn inject_to_client(&mut self, bytes: &str) {
        let now = self.clock.client_now();
        self.client.handle_message(now, bytes.as_bytes());
        self.run();
    }

    /// Signs a frame as the hub would for this client.
    pub fn hub_frame(&mut self, msg_type: &str, data: &serde_json::Value) -> String {
        let id = link_protocol::conn::IdSource::next_id(&mut self.hub_ids);
        let now = self.clock.hub_now();
        let header = Header {
            id: &id,
            ts: now.wall_ms,
            msg_type,
            from: Some("server"),
            to: Some("alpha"),
        };
        envelope::encode(
            &key("demo-secret"),
            &header,
            Some(&CanonicalData::new(data)),
        )
    }

    /// Opens a fresh hub-side socket with no client behind it.
    pub fn open_raw_hub_socket(&mut self) {
        self.hub = Some(HubConn::new(self.clock.hub_now().instant, self.hub_config));
    }

    /// Runs until neither side has anything left to do.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    fn step(&mut self) -> bool {
        let mut busy = false;
        while let Some(e) = self.client.poll_event() {
            busy = true;
            self.client_event(e);
        }
        while let Some(t) = self.client.poll_transmit() {
            busy = true;
            self.client_transmit(t);
        }
        let mut hub_out = Vec::new();
        let mut hub_ev = Vec::new();
        if let Some(hub) = &mut self.hub {
            while let Some(t) = hub.poll_transmit() {
                hub_out.push(t);
            }
            while let Some(e) = hub.poll_event() {
                hub_ev.push(e);
            }
        }
        for t in hub_out {
            busy = true;
            self.hub_transmit(t);
        }
        for e in hub_ev {
            busy = true;
            self.hub_event(e);
        }
        busy
    }

    fn client_transmit(&mut self, t: Transmit) {
        let (c, h) = (self.clock.client_now(), self.clock.hub_now());
        match t {
            Transmit::Frame(f) => {
                self.log.push(format!("client -> hub: {}", type_of(&f)));
                self.client_frames.push(f.clone());
                // As the hub driver does for text frames; injected frames
                // go through `handle_message`.
                if let Some(hub) = &mut self.hub {
                    hub.handle_text_message(h, &f, &mut self.replay);
                }
            }
            Transmit::Ping => {
                self.log.push("client -> hub: ping".into());
                if self.hub_answers_pings {
                    self.client.handle_pong();
                }
            }
            Transmit::Close { code, reason } => {
                self.log.push(format!("client closes {code:?} {reason:?}"));
                if self.hub_answers_close {
                    if let Some(mut hub) = self.hub.take() {
                        hub.handle_closed();
                    }
                    self.client.handle_closed(c, code, &reason);
                }
            }
            Transmit::Terminate => {
                self.log.push("client terminates".into());
                if let Some(mut hub) = self.hub.take() {
                    hub.handle_closed();
                }
                self.client.handle_closed(c, Some(close::ABNORMAL), "");
            }
        }
    }

    fn hub_transmit(&mut self, t: Transmit) {
        let c = self.clock.client_now();
        match t {
            Transmit::Frame(f) => {
                self.log.push(format!("hub -> client: {}", type_of(&f)));
                // As the client driver does for text frames; injected
                // frames and the hello.ack go through `handle_message`.
                self.client.handle_text_message(c, &f);
            }
            Transmit::Ping => {
                self.log.push("hub -> client: ping".into());
                if let (true, Some(hub)) = (self.client_answers_pings, &mut self.hub) {
                    hub.handle_pong();
                }
            }
            Transmit::Close { code, reason } => {
                self.log.push(format!("hub closes {code:?} {reason:?}"));
                if self.client.is_connected() {
                    self.client.handle_closed(c, code, &reason);
                }
                // The hub socket lingers in Closing until its terminate timer.
            }
            Transmit::Terminate => {
                self.log.push("hub terminates".into());
                if let Some(mut hub) = self.hub.take() {
                    hub.handle_closed();
                }
                if self.client.is_connected() {
                    self.client.handle_closed(c, Some(close::ABNORMAL), "");
                }
            }
        }
    }

    fn client_event(&mut self, e: ClientEvent) {
        self.log
            .push(format!("client event: {}", describe_client(&e)));
        self.client_events.push(e.clone());
        if let ClientEvent::Connect { endpoint, .. } = e {
            let now = self.clock.client_now();
            if self.down.contains(&endpoint) {
                self.log.push(format!("dial {endpoint} refused"));
                self.client
                    .handle_closed(now, Some(close::ABNORMAL), "connect failed");
                return;
            }
            self.hub = Some(HubConn::new(self.clock.hub_now().instant, self.hub_config));
            self.client.handle_open(now);
        }
    }

    fn hub_event(&mut self, e: HubConnEvent) {
        self.log.push(format!("hub event: {}", describe_hub(&e)));
        match &e {
            HubConnEvent::KeyNeeded { kind } => match self.key_mode {
                KeyMode::Sync => {
                    let key = self.keys.get(kind).cloned();
                    let now = self.clock.hub_now();
                    if let Some(hub) = &mut self.hub {
                        hub.key_resolved(now, key, &mut self.replay);
                    }
                }
                KeyMode::Manual => self.pending_keys.push_back(kind.clone()),
            },
            HubConnEvent::Authenticated { hello, .. } if self.hub_acks => {
                let mut ack = self.ack.clone();
                if ack.ok {
                    ack.server_time = Some(self.clock.hub_now().wall_ms as f64);
                    ack.kind = Some(hello.kind.clone());
                }
                let frame = self.hub_frame(msg_type::HELLO_ACK, &ack.to_value());
                self.log.push(format!("hub -> client: {}", type_of(&frame)));
                let now = self.clock.client_now();
                self.client.handle_message(now, frame.as_bytes());
            }
            _ => {}
        }
        self.hub_events.push(e);
    }

    /// Log lines that mention `needle`.
    pub fn lines(&self, needle: &str) -> Vec<&str> {
        self.log
            .iter()
            .map(String::as_str)
            .filter(|l| l.contains(needle))
            .collect()
    }
}

pub fn type_of(frame: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(frame).unwrap();
    v["type"].as_str().unwrap_or("?").to_owned()
}

pub fn describe_client(e: &ClientEvent) -> String {
    match e {
        ClientEvent::Connect { attempt, endpoint } => {
            format!("connect attempt={attempt} endpoint={endpoint}")
        }
        ClientEvent::Connected => "connected".into(),
        ClientEvent::Verified => "verified".into(),
        ClientEvent::Ready { kind, features } => format!("ready {kind} {features:?}"),
        ClientEvent::Rejected { reason } => format!("rejected {reason:?}"),
        ClientEvent::Message { envelope, .. } => {
            format!("message {}", envelope.msg_type().unwrap_or("?"))
        }
        ClientEvent::ProtocolError(p) => format!("protocol-error {p}"),
        ClientEvent::Diagnostic(d) => format!("diagnostic {d}"),
        ClientEvent::Disconnected(d) => format!(
            "disconnected code={} reason={:?} displaced={} will_reconnect={}",
            d.code, d.reason, d.displaced, d.will_reconnect
        ),
        ClientEvent::ReconnectScheduled { delay, attempt } => {
            format!("reconnect in {}ms attempt={attempt}", delay.as_millis())
        }
        ClientEvent::ReconnectExhausted { attempts } => format!("reconnect-exhausted {attempts}"),
        other => format!("{other:?}"),
    }
}

pub fn describe_hub(e: &HubConnEvent) -> String {
    match e {
        HubConnEvent::KeyNeeded { kind } => format!("key-needed {kind}"),
        HubConnEvent::Authenticated { hello, .. } => format!("authenticated {}", hello.kind),
        HubConnEvent::Message(env) => format!("message {}", env.msg_type().unwrap_or("?")),
        HubConnEvent::ProtocolError(p) => format!("protocol-error {p}"),
        HubConnEvent::HelloTimeout => "hello-timeout".into(),
        HubConnEvent::KeepaliveTimeout => "keepalive-timeout".into(),
        other => format!("{other:?}"),
    }
}
