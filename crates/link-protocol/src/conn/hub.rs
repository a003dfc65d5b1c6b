//! [`HubConn`]: one socket as the hub sees it — pending until a hello
//! verifies, then authenticated as a kind (protocol §4.1, §5, §12, §13).
//!
//! ```text
//!  Pending ──hello (kind ok)──► Resolving ──key_resolved(Some, verifies)──► Authenticated
//!     ▲  │                          │                                           │
//!     │  └─bad kind: close 1008─┐   └─no key / bad sig / replay: back to Pending │
//!     │                         ▼                                               ▼
//!     └──────────────────── Closing (close sent; terminate after 500 ms) ──► Closed
//! ```
//!
//! Key lookup is a request to the driver ([`HubConnEvent::KeyNeeded`]),
//! answered with [`HubConn::key_resolved`], so an async resolver never
//! blocks the state machine. Unlike the reference (protocol §0.3), frames that
//! arrive behind a hello while its key is being resolved are kept, in order,
//! and processed once the hello is accepted (bounded; beyond the bound they
//! are `pre-hello-message` drops).
//!
//! Replay state is hub-wide: each call that verifies frames borrows the
//! hub's replay state (anything implementing [`ReplayCheck`], usually a
//! [`ReplayGuard`](crate::ReplayGuard)).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outputs::Outputs;
use super::timers::Timers;
use super::{Now, Transmit};
use crate::codes::{close, msg_type};
use crate::envelope::{self, DEFAULT_MAX_MESSAGE_BYTES, Envelope, Received};
use crate::error::{ConfigError, DropReason, ProtocolError};
use crate::messages::Hello;
use crate::replay::ReplayCheck;
use crate::signing::Key;

/// Grace between a policy close and the hard terminate.
pub const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// Settings of a [`HubConn`], with the reference's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubConnConfig {
    /// Inbound frame cap (1 MiB).
    pub max_message_bytes: usize,
    /// Time allowed to authenticate; `None` disables (10 s).
    pub hello_timeout: Option<Duration>,
    /// Ping interval for authenticated sockets; `None` disables (15 s).
    pub keepalive_interval: Option<Duration>,
    /// Frames kept behind a hello whose key is being resolved (16).
    pub max_pipelined: usize,
}

impl Default for HubConnConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            hello_timeout: Some(Duration::from_secs(10)),
            keepalive_interval: Some(Duration::from_secs(15)),
            max_pipelined: 16,
        }
    }
}

impl HubConnConfig {
    /// Checks the settings, naming the bad option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option, reason| Err(ConfigError::InvalidOption { option, reason });
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes", "must be positive");
        }
        if self.hello_timeout.is_some_and(|d| d.is_zero()) {
            return bad("hello_timeout", "must be positive (use None to disable)");
        }
        if self.keepalive_interval.is_some_and(|d| d.is_zero()) {
            return bad(
                "keepalive_interval",
                "must be positive (use None to disable)",
            );
        }
        Ok(())
    }
}

/// Where the socket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubConnState {
    /// No accepted hello yet.
    Pending,
    /// A hello's key is being looked up.
    Resolving,
    /// Authenticated as a kind.
    Authenticated,
    /// A close was sent; terminate follows.
    Closing,
    /// Gone. Sticky.
    Closed,
}

/// What a [`HubConn`] reports to the hub.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HubConnEvent {
    /// Look up the key for `kind`, then call [`HubConn::key_resolved`].
    KeyNeeded {
        /// The sanitised claimed kind.
        kind: String,
    },
    /// The hello verified: register the socket as `hello.kind`.
    Authenticated {
        /// The sanitised hello.
        hello: Hello,
        /// The hello frame's id and timestamp (a cluster of hubs shares
        /// them, so that the hello cannot be replayed on another hub).
        id: String,
        /// Its `ts`.
        ts: f64,
    },
    /// A verified frame from the authenticated kind.
    Message(Envelope),
    /// A dropped frame (the socket stays open unless a `Transmit::Close`
    /// was queued).
    ProtocolError(ProtocolError),
    /// No valid hello within the hello timeout; close 1008 was queued.
    HelloTimeout,
    /// No pong since the previous ping; terminate was queued.
    KeepaliveTimeout,
}

const HELLO: usize = 0;
const KEEPALIVE: usize = 1;
const TERMINATE: usize = 2;

#[derive(Debug)]
struct Resolving {
    received: Received,
    hello: Hello,
}

/// One hub socket (see the module docs).
///
/// A hub holds one per socket for the socket's life, so what only the
/// hello needs is boxed (`resolving`), the frames held behind a hello are
/// given back once released, and the output queues hold no heap memory
/// while idle.
#[derive(Debug)]
pub struct HubConn {
    config: HubConnConfig,
    state: HubConnState,
    resolving: Option<Box<Resolving>>,
    pipelined: VecDeque<Received>,
    kind: Option<Arc<str>>,
    key: Option<Key>,
    /// The accepted hello asked for the `peers.delta` extension.
    peer_deltas: bool,
    awaiting_pong: bool,
    timers: Timers<3>,
    transmits: Outputs<Transmit>,
    events: Outputs<HubConnEvent>,
}

impl HubConn {
    /// A new pending socket accepted at `now`.
    pub fn new(now: Instant, config: HubConnConfig) -> Self {
        let mut timers = Timers::new();
        if let Some(d) = config.hello_timeout {
            timers.set(HELLO, now + d);
        }
        Self {
            config,
            state: HubConnState::Pending,
            resolving: None,
            pipelined: VecDeque::new(),
            kind: None,
            key: None,
            peer_deltas: false,
            awaiting_pong: false,
            timers,
            transmits: Outputs::default(),
            events: Outputs::default(),
        }
    }

    // ----- getters -------------------------------------------------------

    /// Current state.
    pub fn state(&self) -> HubConnState {
        self.state
    }

    /// True before authentication (pending or resolving).
    pub fn is_pending(&self) -> bool {
        matches!(self.state, HubConnState::Pending | HubConnState::Resolving)
    }

    /// True once authenticated and not closing.
    pub fn is_authenticated(&self) -> bool {
        self.state == HubConnState::Authenticated
    }

    /// The authenticated kind.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The authenticated kind, shared: a driver that keeps the kind for
    /// the socket's life clones this instead of copying the text.
    pub fn kind_shared(&self) -> Option<&Arc<str>> {
        self.kind.as_ref()
    }

    /// Whether the accepted hello listed `peers.delta` in `data.features`
    /// (the extension of docs/protocol.md §5.2.2; the hub serves such a
    /// peer snapshots and deltas instead of `peers.update`).
    pub fn wants_peer_deltas(&self) -> bool {
        self.peer_deltas
    }

    /// The key every frame to and from this socket is signed with.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    // ----- inputs --------------------------------------------------------

    /// A frame arrived (text or binary).
    pub fn handle_message(&mut self, now: Now, bytes: &[u8], replay: &mut dyn ReplayCheck) {
        if matches!(self.state, HubConnState::Closing | HubConnState::Closed) {
            return;
        }
        let parsed = envelope::parse_frame(bytes, self.config.max_message_bytes);
        self.handle_parsed(now, parsed, replay);
    }

    /// A text frame arrived: as [`handle_message`](Self::handle_message),
    /// for text the transport has already checked to be UTF-8.
    pub fn handle_text_message(&mut self, now: Now, text: &str, replay: &mut dyn ReplayCheck) {
        if matches!(self.state, HubConnState::Closing | HubConnState::Closed) {
            return;
        }
        let parsed = envelope::parse_text_frame(text, self.config.max_message_bytes);
        self.handle_parsed(now, parsed, replay);
    }

    fn handle_parsed(
        &mut self,
        now: Now,
        parsed: Result<envelope::Received, ProtocolError>,
        replay: &mut dyn ReplayCheck,
    ) {
        let received = match parsed {
            Ok(r) => r,
            Err(mut e) => {
                e.kind = self.kind.as_deref().map(Into::into);
                return self.emit_drop(e);
            }
        };
        self.handle_received(now, received, replay);
    }

    /// The answer to [`HubConnEvent::KeyNeeded`]: the key for the claimed
    /// kind, or `None` when the kind is unknown.
    pub fn key_resolved(&mut self, now: Now, key: Option<Key>, replay: &mut dyn ReplayCheck) {
        if self.state != HubConnState::Resolving {
            return; // closed meanwhile: drop silently
        }
        let Some(resolving) = self.resolving.take() else {
            return;
        };
        let Resolving { received, hello } = *resolving;
        self.state = HubConnState::Pending;
        let msg_type = received.envelope.msg_type().map(Into::into);
        let result = match key {
            None => Err(ProtocolError::new(DropReason::UnknownKind)),
            Some(key) => verify_and_check(&received, &key, &hello.kind, now, replay).map(|()| key),
        };
        match result {
            Ok(key) => {
                self.state = HubConnState::Authenticated;
                self.kind = Some(hello.kind.as_str().into());
                self.key = Some(key);
                self.peer_deltas = crate::messages::hello_features(received.envelope.data())
                    .any(|f| f == crate::Feature::PeersDelta.as_str());
                self.timers.stop(HELLO);
                if let Some(d) = self.config.keepalive_interval {
                    self.timers.set(KEEPALIVE, now.instant + d);
                }
                self.events.push_back(HubConnEvent::Authenticated {
                    hello,
                    id: received.envelope.id().to_owned(),
                    ts: received.envelope.ts(),
                });
            }
            Err(mut e) => {
                e.kind = Some(hello.kind.into());
                e.msg_type = msg_type;
                self.emit_drop(e);
            }
        }
        // Frames that queued behind the hello, in arrival order.
        while let Some(next) = self.pipelined.pop_front() {
            if self.state == HubConnState::Resolving {
                self.pipelined.push_front(next);
                break;
            }
            self.handle_received(now, next, replay);
        }
        if self.pipelined.is_empty() {
            // Held only behind a hello: give the capacity back.
            self.pipelined = VecDeque::new();
        }
    }

    /// A pong arrived.
    pub fn handle_pong(&mut self) {
        self.awaiting_pong = false;
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.timers.expire(TERMINATE, now.instant) {
            self.transmits.push_back(Transmit::Terminate);
            self.closed();
            return;
        }
        if self.timers.expire(HELLO, now.instant) && self.is_pending() {
            self.events.push_back(HubConnEvent::HelloTimeout);
            self.close(now, Some(close::POLICY), close::REASON_HELLO_TIMEOUT);
        }
        if self.timers.expire(KEEPALIVE, now.instant) && self.is_authenticated() {
            if self.awaiting_pong {
                self.events.push_back(HubConnEvent::KeepaliveTimeout);
                self.transmits.push_back(Transmit::Terminate);
                self.closed();
                return;
            }
            self.awaiting_pong = true;
            self.transmits.push_back(Transmit::Ping);
            if let Some(d) = self.config.keepalive_interval {
                self.timers.set(KEEPALIVE, now.instant + d);
            }
        }
    }

    /// The socket is gone (closed by the peer or terminated).
    pub fn handle_closed(&mut self) {
        self.closed();
    }

    // ----- commands ------------------------------------------------------

    /// Evicts this pending socket (pending cap): close 1008 `pending cap`,
    /// terminate after 500 ms.
    pub fn evict(&mut self, now: Now) {
        if self.is_pending() {
            self.close(now, Some(close::POLICY), close::REASON_PENDING_CAP);
        }
    }

    /// Another socket took this kind: close 4000. Later frames are ignored.
    pub fn displace(&mut self, now: Now) {
        self.close(now, Some(close::REPLACED), close::REASON_REPLACED);
    }

    /// Closes with the given code (e.g. 1001 on shutdown); later frames are
    /// ignored, and the socket is terminated if the peer does not finish the
    /// handshake within 500 ms.
    pub fn close(&mut self, now: Now, code: Option<u16>, reason: &str) {
        if matches!(self.state, HubConnState::Closing | HubConnState::Closed) {
            return;
        }
        self.transmits.push_back(Transmit::Close {
            code,
            reason: reason.to_owned(),
        });
        self.state = HubConnState::Closing;
        self.resolving = None;
        self.pipelined.clear();
        self.timers.clear();
        self.timers.set(TERMINATE, now.instant + TERMINATE_GRACE);
    }

    // ----- outputs -------------------------------------------------------

    /// Next thing to do to the socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<HubConnEvent> {
        self.events.pop_front()
    }

    /// Earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- internals -----------------------------------------------------

    fn handle_received(&mut self, now: Now, received: Received, replay: &mut dyn ReplayCheck) {
        match self.state {
            HubConnState::Authenticated => self.on_authenticated_frame(now, received, replay),
            HubConnState::Resolving => {
                if self.pipelined.len() < self.config.max_pipelined {
                    self.pipelined.push_back(received);
                } else {
                    let t = received.envelope.msg_type();
                    self.emit_drop(ProtocolError::new(DropReason::PreHelloMessage).with_type(t));
                }
            }
            HubConnState::Pending => self.on_pending_frame(now, received),
            HubConnState::Closing | HubConnState::Closed => {}
        }
    }

    fn on_pending_frame(&mut self, now: Now, received: Received) {
        let env = &received.envelope;
        if env.msg_type() != Some(msg_type::HELLO) {
            let e = ProtocolError::new(DropReason::PreHelloMessage).with_type(env.msg_type());
            return self.emit_drop(e);
        }
        match Hello::sanitize(env.data()) {
            Err(kind_err) => {
                let e = ProtocolError::new(DropReason::BadHello)
                    .with_type(Some(msg_type::HELLO))
                    .with_detail(kind_err.detail());
                self.emit_drop(e);
                self.close(now, Some(close::POLICY), kind_err.detail());
            }
            Ok(hello) => {
                self.state = HubConnState::Resolving;
                self.events.push_back(HubConnEvent::KeyNeeded {
                    kind: hello.kind.clone(),
                });
                self.resolving = Some(Box::new(Resolving { received, hello }));
            }
        }
    }

    fn on_authenticated_frame(
        &mut self,
        now: Now,
        received: Received,
        replay: &mut dyn ReplayCheck,
    ) {
        let (Some(key), Some(kind)) = (&self.key, &self.kind) else {
            return;
        };
        if let Err(mut e) = verify_and_check(&received, key, kind, now, replay) {
            e.kind = Some((**kind).into());
            e.msg_type = received.envelope.msg_type().map(Into::into);
            return self.emit_drop(e);
        }
        if received.envelope.msg_type() == Some(msg_type::HELLO) {
            let e = ProtocolError::new(DropReason::DuplicateHello)
                .with_kind(&**kind)
                .with_type(Some(msg_type::HELLO));
            return self.emit_drop(e);
        }
        self.events
            .push_back(HubConnEvent::Message(received.envelope));
    }

    fn emit_drop(&mut self, e: ProtocolError) {
        self.events.push_back(HubConnEvent::ProtocolError(e));
    }

    fn closed(&mut self) {
        self.state = HubConnState::Closed;
        self.resolving = None;
        self.pipelined.clear();
        self.timers.clear();
    }
}

/// protocol §4.1 steps 6–9: signature, version, replay window, replay id.
fn verify_and_check(
    received: &Received,
    key: &Key,
    sender: &str,
    now: Now,
    replay: &mut dyn ReplayCheck,
) -> Result<(), ProtocolError> {
    if !received.verify(key) {
        return Err(ProtocolError::new(DropReason::BadSignature));
    }
    let env = &received.envelope;
    if !env.version_ok() {
        return Err(ProtocolError::new(DropReason::BadVersion));
    }
    let exempt = env.msg_type() == Some(msg_type::RPC_RESPONSE);
    replay.check(sender, env.id(), env.ts(), exempt, now.wall_ms as f64)
}
