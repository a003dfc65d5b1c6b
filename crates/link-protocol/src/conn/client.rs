//! [`ClientConn`]: a client's link to its hub across connections — the
//! handshake, inbound verification, keepalive, the hello-ack diagnostic and
//! the reconnect policy (protocol §4.2, §5, §12, §13).
//!
//! ```text
//!  Idle ─start─► Connecting ─handle_open─► Handshaking ─hello.ack ok─► Ready
//!                    ▲                          │  │                     │
//!                    │ reconnect timer          │  └─ack ok:false─► (stop, or close 1000 + retry)
//!                    │                          ▼                        ▼
//!          WaitingToReconnect ◄──handle_closed (not displaced/stopped)───┘
//!  Stopped: after stop(), close 4000 (displaced), rejection, or exhaustion. Sticky
//!  until start().
//! ```
//!
//! With several hub URLs (`endpoints` > 1) each `Connect` names the endpoint
//! to dial. A failed attempt (a dial, or a connection closed before ready)
//! moves on to the next endpoint of the cycle at once; the reconnect
//! backoff comes once per cycle (see [`UrlOrder`] and docs/client.md,
//! *Failover*). With one endpoint this is the reference's schedule.

use std::collections::VecDeque;
use std::time::Duration;

use super::backoff::{Backoff, BackoffConfig};
use super::endpoints::{Endpoints, UrlOrder};
use super::timers::Timers;
use super::{IdSource, Now, Transmit};
use crate::codes::{SERVER, close, msg_type};
use crate::envelope::{self, CanonicalData, DEFAULT_MAX_MESSAGE_BYTES, Envelope, Header};
use crate::error::{ConfigError, Diagnostic, DropReason, ProtocolError};
use crate::messages::{Hello, HelloAck, Message};
use crate::replay::{ReplayConfig, ReplayGuard};
use crate::signing::Key;
use crate::validate;

/// Settings of a [`ClientConn`], with the reference's defaults.
#[derive(Clone, Debug)]
pub struct ClientConnConfig {
    /// This peer's kind (validated by [`ClientConnConfig::new`]).
    pub kind: String,
    /// Display name sent in the hello (defaults to the kind).
    pub name: String,
    /// Process id sent in the hello.
    pub pid: u32,
    /// The shared secret or this peer's own key.
    pub key: Key,
    /// Replay window and id cache.
    pub replay: ReplayConfig,
    /// Inbound frame cap (1 MiB).
    pub max_message_bytes: usize,
    /// Ping interval; `None` disables keepalive (30 s).
    pub keepalive_interval: Option<Duration>,
    /// Delay before the no-ack diagnostic; `None` disables it (5 s).
    pub hello_ack_diagnostic: Option<Duration>,
    /// Reconnect policy.
    pub reconnect: BackoffConfig,
    /// Reconnect after `hello.ack ok:false` instead of stopping.
    pub reconnect_on_rejection: bool,
    /// Number of hub URLs the driver can dial, at least 1 (1).
    pub endpoints: usize,
    /// The order the endpoints are tried in (ordered).
    pub url_order: UrlOrder,
    /// Ask for the `peers.delta` extension: the hello's data gets
    /// `features: ["peers.delta"]` (docs/protocol.md §5.2.2). Off by
    /// default here (the hello is then the reference's, byte for byte);
    /// `link-client` turns it on.
    pub peer_deltas: bool,
}

impl ClientConnConfig {
    /// Defaults for `kind` and `key`; fails on an invalid kind.
    pub fn new(kind: &str, key: Key) -> Result<Self, ConfigError> {
        validate::check_own_kind(kind)?;
        Ok(Self {
            kind: kind.to_owned(),
            name: kind.to_owned(),
            pid: 0,
            key,
            replay: ReplayConfig::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_interval: Some(Duration::from_secs(30)),
            hello_ack_diagnostic: Some(Duration::from_secs(5)),
            reconnect: BackoffConfig::default(),
            reconnect_on_rejection: false,
            endpoints: 1,
            url_order: UrlOrder::Ordered,
            peer_deltas: false,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate::check_own_kind(&self.kind)?;
        if self.max_message_bytes == 0 {
            return Err(ConfigError::InvalidOption {
                option: "max_message_bytes",
                reason: "must be positive",
            });
        }
        if self.keepalive_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::InvalidOption {
                option: "keepalive_interval",
                reason: "must be positive (use None to disable)",
            });
        }
        if self.endpoints == 0 {
            return Err(ConfigError::InvalidOption {
                option: "endpoints",
                reason: "must be positive",
            });
        }
        self.reconnect.validate()
    }
}

/// Where the link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Not started.
    Idle,
    /// Waiting for the driver to open a socket.
    Connecting,
    /// Socket open, hello sent, waiting for `hello.ack`.
    Handshaking,
    /// `hello.ack` received: the link is usable.
    Ready,
    /// Socket closed; a reconnect timer is armed.
    WaitingToReconnect,
    /// Stopped for good (until `start`).
    Stopped,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// Close code (1005 when none was given, 1006 when terminated).
    pub code: u16,
    /// Close reason.
    pub reason: String,
    /// Whether the link had been ready on that connection.
    pub was_ready: bool,
    /// Close code 4000: another socket took this kind; no reconnect.
    pub displaced: bool,
    /// Whether a reconnect follows.
    pub will_reconnect: bool,
}

/// What a [`ClientConn`] reports to its driver.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Open a socket to the hub now, then call `handle_open` (or
    /// `handle_closed` with 1006 if it fails).
    Connect {
        /// Consecutive reconnect attempts so far (0 for the first connect):
        /// backoff delays taken, one per cycle through the endpoints.
        attempt: u32,
        /// The endpoint to dial: an index below `endpoints`.
        endpoint: usize,
    },
    /// The socket opened and the hello was queued.
    Connected,
    /// The first frame that verified on this connection.
    Verified,
    /// `hello.ack` ok: the link is ready.
    Ready {
        /// The kind the hub registered.
        kind: String,
        /// Features the hub advertises.
        features: Vec<String>,
    },
    /// `hello.ack ok:false`.
    Rejected {
        /// `data.error`, if given.
        reason: Option<String>,
    },
    /// A verified frame other than `hello.ack`.
    Message {
        /// The envelope.
        envelope: Envelope,
        /// Its typed reading.
        message: Message,
        /// When it was read: the wall clock of the `now` it came in with
        /// (a driver's `lastVerifiedAt`, without a clock read per frame).
        at_ms: u64,
    },
    /// A dropped frame.
    ProtocolError(ProtocolError),
    /// A finding that drops no frame (keepalive timeout, no `hello.ack`,
    /// clock skew).
    Diagnostic(Diagnostic),
    /// The connection ended.
    Disconnected(Disconnect),
    /// A reconnect is scheduled.
    ReconnectScheduled {
        /// Delay until the attempt.
        delay: Duration,
        /// Attempt number (1-based).
        attempt: u32,
    },
    /// `max_attempts` consecutive attempts failed; the link stopped.
    ReconnectExhausted {
        /// Attempts made.
        attempts: u32,
    },
}

const KEEPALIVE: usize = 0;
const DIAGNOSTIC: usize = 1;
const RECONNECT: usize = 2;
const CLOSING: usize = 3;

/// How long a close handshake we started may take before we terminate.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A client's link to its hub (see the module docs for the states).
pub struct ClientConn {
    config: ClientConnConfig,
    ids: Box<dyn IdSource>,
    random: Box<dyn FnMut() -> f64 + Send>,
    state: ClientState,
    backoff: Backoff,
    endpoints: Endpoints,
    replay: ReplayGuard,
    timers: Timers<4>,
    features: Vec<String>,
    /// Per connection: a frame verified / a pong is owed / skew drops.
    verified: bool,
    awaiting_pong: bool,
    last_skew: Option<f64>,
    was_ready: bool,
    /// Set by `stop` and rejection: the next close does not reconnect.
    stopping: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn")
            .field("kind", &self.config.kind)
            .field("state", &self.state)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl ClientConn {
    /// A link in the `Idle` state. `random` returns values in `[0, 1)` for
    /// reconnect jitter.
    pub fn new(
        config: ClientConnConfig,
        ids: Box<dyn IdSource>,
        random: Box<dyn FnMut() -> f64 + Send>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            backoff: Backoff::new(config.reconnect),
            endpoints: Endpoints::new(config.endpoints, config.url_order),
            replay: ReplayGuard::new(config.replay),
            config,
            ids,
            random,
            state: ClientState::Idle,
            timers: Timers::new(),
            features: Vec::new(),
            verified: false,
            awaiting_pong: false,
            last_skew: None,
            was_ready: false,
            stopping: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    // ----- getters -------------------------------------------------------

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// True once `hello.ack` arrived on the current connection.
    pub fn is_ready(&self) -> bool {
        self.state == ClientState::Ready
    }

    /// True while a socket is open (handshaking or ready).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, ClientState::Handshaking | ClientState::Ready)
    }

    /// Features advertised by the last `hello.ack`.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether the hub advertised `feature`.
    pub fn has_feature(&self, feature: crate::Feature) -> bool {
        self.features.iter().any(|f| f == feature.as_str())
    }

    /// The settings.
    pub fn config(&self) -> &ClientConnConfig {
        &self.config
    }

    /// Reconnect attempts since the last ready.
    pub fn reconnect_attempts(&self) -> u32 {
        self.backoff.attempts()
    }

    /// The endpoint of the connect attempt under way, or of the connection
    /// up (the last one dialled otherwise).
    pub fn endpoint(&self) -> usize {
        self.endpoints.current()
    }

    /// Ids held by the replay guard.
    pub fn recent_ids(&self) -> usize {
        self.replay.len()
    }

    // ----- inputs --------------------------------------------------------

    /// Starts (or restarts after a stop): asks the driver to connect.
    pub fn start(&mut self) {
        if matches!(self.state, ClientState::Idle | ClientState::Stopped) {
            self.stopping = false;
            self.backoff.reset();
            self.state = ClientState::Connecting;
            self.endpoints.new_cycle(None, &mut *self.random);
            let endpoint = self.next_endpoint();
            self.events.push_back(ClientEvent::Connect {
                attempt: 0,
                endpoint,
            });
        }
    }

    /// Stops the link: closes the socket without a code (the hub sees 1005)
    /// and never reconnects.
    pub fn stop(&mut self, now: Now) {
        self.stopping = true;
        self.timers.clear();
        if self.is_connected() {
            self.transmits.push_back(Transmit::Close {
                code: None,
                reason: String::new(),
            });
            self.timers.set(CLOSING, now.instant + CLOSE_GRACE);
        } else {
            self.state = ClientState::Stopped;
        }
    }

    /// The socket opened: sends the hello (bypassing any queue) and arms the
    /// keepalive and diagnostic timers.
    pub fn handle_open(&mut self, now: Now) {
        if self.state != ClientState::Connecting {
            return;
        }
        self.state = ClientState::Handshaking;
        self.verified = false;
        self.awaiting_pong = false;
        self.last_skew = None;
        self.was_ready = false;
        let hello = Hello {
            kind: self.config.kind.clone(),
            name: self.config.name.clone(),
            pid: Some(f64::from(self.config.pid)),
            started_at: Some(now.wall_ms as f64),
        };
        let mut value = hello.to_value();
        if self.config.peer_deltas
            && let Some(m) = value.as_object_mut()
        {
            m.insert(
                "features".into(),
                serde_json::Value::from(vec![crate::Feature::PeersDelta.as_str()]),
            );
        }
        let data = CanonicalData::new(&value);
        let frame = self.encode_with(now, msg_type::HELLO, None, Some(&data)).1;
        self.transmits.push_back(Transmit::Frame(frame));
        if let Some(d) = self.config.keepalive_interval {
            self.timers.set(KEEPALIVE, now.instant + d);
        }
        if let Some(d) = self.config.hello_ack_diagnostic {
            self.timers.set(DIAGNOSTIC, now.instant + d);
        }
        self.events.push_back(ClientEvent::Connected);
    }

    /// A frame arrived (text or binary).
    pub fn handle_message(&mut self, now: Now, bytes: &[u8]) {
        self.receive(now, bytes, std::str::from_utf8(bytes).ok());
    }

    /// A text frame arrived: as [`handle_message`](Self::handle_message),
    /// for text the transport has already checked to be UTF-8.
    pub fn handle_text_message(&mut self, now: Now, text: &str) {
        self.receive(now, text.as_bytes(), Some(text));
    }

    fn receive(&mut self, now: Now, bytes: &[u8], text: Option<&str>) {
        if !self.is_connected() {
            return;
        }
        // Our hub's frames are authenticated over their own bytes first;
        // anything else takes the reference's parse-then-verify path.
        let max = self.config.max_message_bytes;
        let key = &self.config.key;
        let env = match text.and_then(|t| envelope::parse_authentic(t, max, key)) {
            Some(env) => env,
            None => {
                let received = match envelope::parse_frame(bytes, max) {
                    Ok(r) => r,
                    Err(e) => return self.drop_frame(e),
                };
                if !received.verify(&self.config.key) {
                    let mut err = ProtocolError::new(DropReason::BadSignature)
                        .with_type(received.envelope.msg_type());
                    if !self.verified {
                        err = err.with_detail("secret/hashAlgo mismatch?");
                    }
                    return self.drop_frame(err);
                }
                received.envelope
            }
        };
        if !env.version_ok() {
            return self
                .drop_frame(ProtocolError::new(DropReason::BadVersion).with_type(env.msg_type()));
        }
        let sender = env.from().filter(|f| !f.is_empty()).unwrap_or(SERVER);
        let exempt = env.msg_type() == Some(msg_type::RPC_RESPONSE);
        if let Err(e) = self
            .replay
            .check(sender, env.id(), env.ts(), exempt, now.wall_ms as f64)
        {
            if e.reason() == DropReason::ReplayWindow {
                self.last_skew = e.skew;
            }
            let e = e.with_kind(sender.to_owned()).with_type(env.msg_type());
            return self.drop_frame(e);
        }
        if !self.verified {
            self.verified = true;
            self.events.push_back(ClientEvent::Verified);
        }
        match Message::parse(&env) {
            Message::HelloAck(ack) => self.on_hello_ack(now, ack),
            message => self.events.push_back(ClientEvent::Message {
                envelope: env,
                message,
                at_ms: now.wall_ms,
            }),
        }
    }

    /// A pong arrived.
    pub fn handle_pong(&mut self) {
        self.awaiting_pong = false;
    }

    /// The socket closed (or failed to open: pass 1006). `code` is `None`
    /// when the close frame had no code.
    pub fn handle_closed(&mut self, now: Now, code: Option<u16>, reason: &str) {
        let code = code.unwrap_or(close::NO_STATUS);
        let was_connected = self.is_connected();
        if !was_connected && self.state != ClientState::Connecting {
            return;
        }
        self.timers.clear();
        let displaced = code == close::REPLACED;
        let will_reconnect = !displaced && !self.stopping;
        if was_connected {
            self.events.push_back(ClientEvent::Disconnected(Disconnect {
                code,
                reason: reason.to_owned(),
                was_ready: self.was_ready,
                displaced,
                will_reconnect,
            }));
        }
        let was_ready = std::mem::take(&mut self.was_ready);
        if !will_reconnect {
            self.state = ClientState::Stopped;
            return;
        }
        if was_ready {
            // A working connection was lost: a new cycle after the backoff,
            // with the endpoint that failed last.
            let lost = self.endpoints.current();
            self.endpoints.new_cycle(Some(lost), &mut *self.random);
        } else if let Some(endpoint) = self.endpoints.next() {
            // A failed attempt with endpoints left in this cycle: the next
            // one at once, no backoff between the endpoints of a cycle.
            self.state = ClientState::Connecting;
            self.events.push_back(ClientEvent::Connect {
                attempt: self.backoff.attempts(),
                endpoint,
            });
            return;
        } else {
            // Every endpoint failed: the next cycle, after the backoff.
            self.endpoints.new_cycle(None, &mut *self.random);
        }
        let random = (self.random)();
        match self.backoff.next_delay(random) {
            Some(delay) => {
                self.state = ClientState::WaitingToReconnect;
                self.timers.set(RECONNECT, now.instant + delay);
                self.events.push_back(ClientEvent::ReconnectScheduled {
                    delay,
                    attempt: self.backoff.attempts(),
                });
            }
            None => {
                self.state = ClientState::Stopped;
                self.events.push_back(ClientEvent::ReconnectExhausted {
                    attempts: self.backoff.attempts(),
                });
            }
        }
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.timers.expire(CLOSING, now.instant) && self.is_connected() {
            // The hub never finished the close handshake we started.
            self.transmits.push_back(Transmit::Terminate);
            self.handle_closed(now, Some(close::ABNORMAL), close::REASON_CLOSE_TIMEOUT);
            return;
        }
        if self.timers.expire(RECONNECT, now.instant)
            && self.state == ClientState::WaitingToReconnect
        {
            self.state = ClientState::Connecting;
            let endpoint = self.next_endpoint();
            self.events.push_back(ClientEvent::Connect {
                attempt: self.backoff.attempts(),
                endpoint,
            });
        }
        if self.timers.expire(DIAGNOSTIC, now.instant) && self.state == ClientState::Handshaking {
            let diagnostic = match (self.verified, self.last_skew) {
                (false, Some(skew)) => Diagnostic::ClockSkew { skew },
                (verified, _) => Diagnostic::NoAck { verified },
            };
            self.events.push_back(ClientEvent::Diagnostic(diagnostic));
        }
        if self.timers.expire(KEEPALIVE, now.instant) && self.is_connected() {
            if self.awaiting_pong {
                self.events
                    .push_back(ClientEvent::Diagnostic(Diagnostic::KeepaliveTimeout));
                self.transmits.push_back(Transmit::Terminate);
                self.handle_closed(now, Some(close::ABNORMAL), close::REASON_KEEPALIVE);
                return;
            }
            self.awaiting_pong = true;
            self.transmits.push_back(Transmit::Ping);
            if let Some(d) = self.config.keepalive_interval {
                self.timers.set(KEEPALIVE, now.instant + d);
            }
        }
    }

    // ----- commands ------------------------------------------------------

    /// Builds and signs a frame with a fresh id and `ts = now`; returns the
    /// id and the frame. Queueing and readiness rules are the driver's.
    pub fn encode(
        &mut self,
        now: Now,
        msg_type: &str,
        to: Option<&str>,
        data: Option<&CanonicalData>,
    ) -> (String, String) {
        self.encode_with(now, msg_type, to, data)
    }

    /// Builds and signs a frame with a caller-chosen id (e.g. an RPC
    /// request id reserved earlier).
    pub fn encode_id(
        &self,
        now: Now,
        id: &str,
        msg_type: &str,
        to: Option<&str>,
        data: Option<&CanonicalData>,
    ) -> String {
        let header = Header {
            id,
            ts: now.wall_ms,
            msg_type,
            from: Some(&self.config.kind),
            to,
        };
        envelope::encode(&self.config.key, &header, data)
    }

    /// A fresh message id.
    pub fn next_id(&mut self) -> String {
        self.ids.next_id()
    }

    fn encode_with(
        &mut self,
        now: Now,
        msg_type: &str,
        to: Option<&str>,
        data: Option<&CanonicalData>,
    ) -> (String, String) {
        let id = self.ids.next_id();
        let frame = self.encode_id(now, &id, msg_type, to, data);
        (id, frame)
    }

    // ----- outputs -------------------------------------------------------

    /// Next thing to do to the socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.timers.next()
    }

    // ----- internals -----------------------------------------------------

    /// The first endpoint of a cycle just started (the current one if the
    /// cycle were empty, which `new_cycle` never leaves it).
    fn next_endpoint(&mut self) -> usize {
        self.endpoints
            .next()
            .unwrap_or_else(|| self.endpoints.current())
    }

    fn drop_frame(&mut self, err: ProtocolError) {
        self.events.push_back(ClientEvent::ProtocolError(err));
    }

    fn on_hello_ack(&mut self, now: Now, ack: HelloAck) {
        if ack.ok {
            self.features = ack.features;
            self.state = ClientState::Ready;
            self.was_ready = true;
            self.timers.stop(DIAGNOSTIC);
            self.backoff.reset();
            self.events.push_back(ClientEvent::Ready {
                kind: ack.kind.unwrap_or_else(|| self.config.kind.clone()),
                features: self.features.clone(),
            });
            return;
        }
        self.events
            .push_back(ClientEvent::Rejected { reason: ack.error });
        self.timers.stop(DIAGNOSTIC);
        if self.config.reconnect_on_rejection {
            self.transmits.push_back(Transmit::Close {
                code: Some(close::NORMAL),
                reason: close::REASON_REJECTED_RETRY.to_owned(),
            });
            self.timers.set(CLOSING, now.instant + CLOSE_GRACE);
        } else {
            self.stop(now);
        }
    }
}
