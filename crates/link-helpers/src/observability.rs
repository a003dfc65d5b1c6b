//! Standard `tracing` logs for a client's or a hub's event stream.
//!
//! | what | level |
//! |---|---|
//! | membership: ready, disconnect, peer join/leave/replace | `info` |
//! | security: rejected hello, ACL denial, *concerning* protocol errors | `warn` |
//! | backpressure, overflow, slow consumers, handler failures | `warn` |
//! | *noisy* protocol errors, reconnects, socket errors, per-RPC trace | `debug` |
//! | topic traffic, direct messages | `trace` |
//!
//! Whether a protocol error is concerning (someone may be probing or
//! misconfigured: `bad-signature`, `replay-*`, `bad-hello`,
//! `unknown-kind`…) or noisy (`oversize`, `parse-error`,
//! `keepalive-timeout`…) is decided by a [`Classifier`] the caller can
//! extend or replace.
//!
//! ```no_run
//! use link_client::{ClientConfig, LinkClient};
//! use link_helpers::observability::{spawn_client_logger, Classifier};
//!
//! # async fn demo(client: LinkClient) {
//! let classifier = Classifier::default().noisy("clock-skew");
//! let _logger = spawn_client_logger(&client, classifier); // stops when dropped
//! # }
//! ```
//!
//! Log lines use the target `link_helpers::observability` with fields
//! `event` (the reference's event name) and `link` (the client's kind or
//! `hub`).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use link_client::{LinkClient, LinkEvent, RpcOutcome};
use link_protocol::{Diagnostic, ProtocolError};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Level;

/// How a protocol error is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Logged at `warn`.
    Concerning,
    /// Logged at `debug`.
    Noisy,
}

type Override = Arc<dyn Fn(&ProtocolError) -> Option<Severity> + Send + Sync>;

/// Sorts protocol errors into concerning and noisy, by reason code.
#[derive(Clone)]
pub struct Classifier {
    concerning: HashSet<String>,
    custom: Option<Override>,
}

/// Reason codes that are concerning by default.
pub const DEFAULT_CONCERNING: &[&str] = &[
    "bad-signature",
    "replay-window",
    "replay-id",
    "bad-hello",
    "unknown-kind",
    "duplicate-hello",
    "pre-hello-message",
    "bad-version",
    "rpc-response-mismatch",
    "clock-skew",
    "no-ack",
    "rate-limited",
];

impl Default for Classifier {
    fn default() -> Self {
        Self {
            concerning: DEFAULT_CONCERNING.iter().map(|s| (*s).to_owned()).collect(),
            custom: None,
        }
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut codes: Vec<&String> = self.concerning.iter().collect();
        codes.sort();
        f.debug_struct("Classifier")
            .field("concerning", &codes)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl Classifier {
    /// Nothing is concerning.
    pub fn empty() -> Self {
        Self {
            concerning: HashSet::new(),
            custom: None,
        }
    }

    /// Also treat `code` (e.g. `"oversize"`) as concerning.
    #[must_use]
    pub fn concerning(mut self, code: impl Into<String>) -> Self {
        self.concerning.insert(code.into());
        self
    }

    /// Treat `code` as noisy.
    #[must_use]
    pub fn noisy(mut self, code: &str) -> Self {
        self.concerning.remove(code);
        self
    }

    /// A function consulted first; `None` falls back to the code sets.
    /// Replaces any earlier override.
    #[must_use]
    pub fn with_override<F>(mut self, f: F) -> Self
    where
        F: Fn(&ProtocolError) -> Option<Severity> + Send + Sync + 'static,
    {
        self.custom = Some(Arc::new(f));
        self
    }

    /// The severity of `error`.
    pub fn classify(&self, error: &ProtocolError) -> Severity {
        if let Some(s) = self.custom.as_ref().and_then(|f| f(error)) {
            return s;
        }
        self.classify_code(error.reason.code())
    }

    /// The severity of a diagnostic, by its code alone (the override
    /// function sees dropped frames only).
    pub fn classify_diagnostic(&self, diagnostic: &Diagnostic) -> Severity {
        self.classify_code(diagnostic.code())
    }

    fn classify_code(&self, code: &str) -> Severity {
        if self.concerning.contains(code) {
            Severity::Concerning
        } else {
            Severity::Noisy
        }
    }

    fn level(&self, severity: Severity) -> Level {
        match severity {
            Severity::Concerning => Level::WARN,
            Severity::Noisy => Level::DEBUG,
        }
    }
}

/// A running logger task; dropping it (or [`stop`](Self::stop)) ends the task.
#[derive(Debug)]
#[must_use = "the logger stops when its handle is dropped"]
pub struct LoggerHandle {
    task: JoinHandle<()>,
}

impl LoggerHandle {
    /// Stops logging.
    pub fn stop(self) {}

    /// True once the task ended (stopped, or the event source closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for LoggerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One log line: level and message (fields are rendered into the message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) level: Level,
    pub(crate) event: &'static str,
    pub(crate) text: String,
}

fn line(level: Level, event: &'static str, text: String) -> Option<Line> {
    Some(Line { level, event, text })
}

fn emit(link: &str, l: &Line) {
    let (event, text) = (l.event, l.text.as_str());
    match l.level {
        Level::ERROR => tracing::error!(event, link, "{text}"),
        Level::WARN => tracing::warn!(event, link, "{text}"),
        Level::INFO => tracing::info!(event, link, "{text}"),
        Level::DEBUG => tracing::debug!(event, link, "{text}"),
        Level::TRACE => tracing::trace!(event, link, "{text}"),
    }
}

/// What to log for a client event, if anything.
pub(crate) fn describe_client(e: &LinkEvent, c: &Classifier) -> Option<Line> {
    let name = e.name();
    match e {
        LinkEvent::Ready { kind, features } => line(
            Level::INFO,
            name,
            format!(
                "link ready as {kind} (hub features: {})",
                features.join(", ")
            ),
        ),
        LinkEvent::Rejected { reason, .. } => line(
            Level::WARN,
            name,
            format!(
                "hub rejected the hello: {}",
                reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        LinkEvent::Disconnect {
            code,
            reason,
            will_reconnect,
            displaced,
            ..
        } => {
            let level = if *displaced { Level::WARN } else { Level::INFO };
            let code = code.map_or_else(|| "-".to_owned(), |c| c.to_string());
            let what = if *displaced {
                "displaced by another socket of this kind"
            } else {
                "disconnected"
            };
            line(
                level,
                name,
                format!("{what} (code {code}, reason {reason:?}, will_reconnect {will_reconnect})"),
            )
        }
        LinkEvent::Reconnecting { delay, attempt } => line(
            Level::DEBUG,
            name,
            format!("reconnecting in {delay:?} (attempt {attempt})"),
        ),
        LinkEvent::ReconnectExhausted { attempts, .. } => line(
            Level::WARN,
            name,
            format!("gave up reconnecting after {attempts} attempts; link stopped"),
        ),
        LinkEvent::WsError(text) => line(Level::DEBUG, name, format!("socket error: {text}")),
        LinkEvent::ProtocolError(pe) => {
            line(c.level(c.classify(pe)), name, protocol_text(pe, None))
        }
        LinkEvent::Diagnostic(d) => {
            line(c.level(c.classify_diagnostic(d)), name, diagnostic_text(d))
        }
        LinkEvent::PeerConnect(p) => line(Level::INFO, name, format!("peer {} joined", p.kind)),
        LinkEvent::PeerDisconnect(p) => line(Level::INFO, name, format!("peer {} left", p.kind)),
        LinkEvent::PeerReplaced { kind, .. } => line(
            Level::INFO,
            name,
            format!("peer {kind} reconnected (replaced)"),
        ),
        LinkEvent::RpcRequest {
            from, id, rpc_type, ..
        } => line(
            Level::DEBUG,
            name,
            format!("rpc {rpc_type} from {from} (id {id})"),
        ),
        LinkEvent::RpcCancel { id, from, rpc_type } => line(
            Level::DEBUG,
            name,
            format!("rpc {rpc_type} from {from} cancelled by caller (id {id})"),
        ),
        LinkEvent::RpcHandlerError {
            rpc_type,
            from,
            id,
            error,
        } => line(
            Level::WARN,
            name,
            format!("handler {rpc_type} failed for {from} (id {id}): {error}"),
        ),
        LinkEvent::RpcTimeout {
            id,
            to,
            rpc_type,
            timeout,
        } => line(
            Level::DEBUG,
            name,
            format!("rpc {rpc_type} to {to} (id {id}) timed out after {timeout:?}"),
        ),
        LinkEvent::RpcAbort { id, to, rpc_type } => line(
            Level::DEBUG,
            name,
            format!("rpc {rpc_type} to {to} (id {id}) aborted by the caller"),
        ),
        LinkEvent::RpcDisconnect { id, to, rpc_type } => line(
            Level::DEBUG,
            name,
            format!("rpc {rpc_type} to {to} (id {id}) lost: the link went down"),
        ),
        // Those three outcomes were logged by their own event just before.
        LinkEvent::RpcComplete {
            outcome: RpcOutcome::Timeout | RpcOutcome::Abort | RpcOutcome::Disconnect,
            ..
        } => None,
        LinkEvent::RpcComplete {
            id,
            to,
            rpc_type,
            outcome,
            duration,
            error,
        } => {
            let how = match outcome {
                RpcOutcome::Ok => "ok".to_owned(),
                other => format!(
                    "{}: {}",
                    other.reason().unwrap_or("failed"),
                    error.as_deref().unwrap_or("")
                ),
            };
            line(
                Level::DEBUG,
                name,
                format!("rpc {rpc_type} to {to} (id {id}) {how} in {duration:?}"),
            )
        }
        LinkEvent::Backpressure {
            msg_type,
            outbox_size,
            buffered_amount,
            ..
        } => line(
            Level::WARN,
            name,
            format!(
                "backpressure: {msg_type} queued ({outbox_size} queued, {buffered_amount} bytes unflushed)"
            ),
        ),
        LinkEvent::OutboxOverflow {
            msg_type,
            outbox_bytes,
            max_outbox_bytes,
            ..
        } => line(
            Level::WARN,
            name,
            format!("outbox full: {msg_type} refused ({outbox_bytes}/{max_outbox_bytes} bytes)"),
        ),
        LinkEvent::OutboxDrained => line(Level::DEBUG, name, "outbox drained".to_owned()),
        LinkEvent::SlowConsumer { stream, dropped } => line(
            Level::WARN,
            name,
            format!("slow consumer on {stream}: {dropped} messages dropped"),
        ),
        LinkEvent::Direct { from, msg_type, .. } => {
            line(Level::TRACE, name, format!("direct {msg_type} from {from}"))
        }
        LinkEvent::Connect { url, .. } => line(Level::DEBUG, name, format!("connected to {url}")),
        _ => None,
    }
}

fn protocol_text(pe: &ProtocolError, remote: Option<std::net::SocketAddr>) -> String {
    let mut s = format!("protocol error: {pe}");
    if let Some(k) = &pe.kind {
        s.push_str(&format!(" kind={k}"));
    }
    if let Some(t) = &pe.msg_type {
        s.push_str(&format!(" type={t}"));
    }
    if let Some(skew) = pe.skew {
        s.push_str(&format!(" skew_ms={skew}"));
    }
    if let Some(a) = remote {
        s.push_str(&format!(" remote={a}"));
    }
    s
}

fn diagnostic_text(d: &Diagnostic) -> String {
    let mut s = format!("protocol error: {d}");
    if let Diagnostic::ClockSkew { skew } = d {
        s.push_str(&format!(" skew_ms={skew}"));
    }
    s
}

async fn pump<E, F>(mut rx: broadcast::Receiver<Arc<E>>, link: String, mut describe: F)
where
    F: FnMut(&E) -> Option<Line>,
{
    let mut behind = Behind::default();
    loop {
        match rx.recv().await {
            Ok(e) => {
                behind.log(&link, tokio::time::Instant::now());
                if let Some(l) = describe(&e) {
                    emit(&link, &l);
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                behind.missed += n;
                behind.log(&link, tokio::time::Instant::now());
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Events a logger missed (it fell behind the channel): one line a second
/// at most, with the sum, however often the channel overtakes it.
#[derive(Default)]
struct Behind {
    missed: u64,
    last: Option<tokio::time::Instant>,
}

impl Behind {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// The line, if events were missed and none was written this second.
    fn due(&mut self, now: tokio::time::Instant) -> Option<u64> {
        if self.missed == 0 || self.last.is_some_and(|at| now - at < Self::EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.missed))
    }

    fn log(&mut self, link: &str, now: tokio::time::Instant) {
        if let Some(n) = self.due(now) {
            tracing::warn!(link = %link, "observability fell behind: {n} events not logged");
        }
    }
}

/// Logs `client`'s events until the handle is dropped. Needs a tokio
/// runtime. The `ready` and `disconnect` lines end with `hub=URL`, the hub
/// URL of that connection (the one a failover list led to).
pub fn spawn_client_logger(client: &LinkClient, classifier: Classifier) -> LoggerHandle {
    let rx = client.events();
    let link = client.kind().to_owned();
    LoggerHandle {
        task: tokio::spawn(pump(rx, link, client_describer(classifier))),
    }
}

/// [`describe_client`], remembering the URL of the last `connect` for the
/// `ready` and `disconnect` lines that follow it.
fn client_describer(classifier: Classifier) -> impl FnMut(&LinkEvent) -> Option<Line> {
    let mut hub: Option<String> = None;
    move |e: &LinkEvent| {
        if let LinkEvent::Connect { url, .. } = e {
            hub = Some(url.clone());
        }
        let mut l = describe_client(e, &classifier)?;
        if let (Some(url), LinkEvent::Ready { .. } | LinkEvent::Disconnect { .. }) = (&hub, e) {
            l.text.push_str(&format!(" hub={url}"));
        }
        Some(l)
    }
}

#[cfg(feature = "hub")]
pub use hub_logger::spawn_hub_logger;

#[cfg(feature = "hub")]
mod hub_logger {
    use link_hub::{Hub, HubEvent, TimeoutReason};
    use tracing::Level;

    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::{Classifier, Line, LoggerHandle, line, protocol_text, pump};

    /// Lines about one peer's slow socket (`backpressure`, `outbox-overflow`),
    /// its dropped frames (`protocol-error`, per reason) and pending sockets
    /// closed (`peer.timeout`, per reason) logged at most once a second
    /// each: a stalled consumer or a hostile client can cause thousands a
    /// second. The next line logged says how many were not.
    #[derive(Debug, Default)]
    pub(crate) struct Throttle {
        /// event -> kind -> when its last line was logged, lines held since
        /// (two levels: a lookup borrows the kind, allocating nothing).
        last: HashMap<&'static str, HashMap<String, (Instant, u64)>>,
        /// Keys held in `last`, every event together.
        keys: usize,
    }

    impl Throttle {
        const EVERY: Duration = Duration::from_secs(1);
        /// Keys kept before the stale ones are let go.
        const KEEP: usize = 4096;

        /// `Some(held)` when a line for `event` about `kind` may be logged
        /// at `now` (`held` lines were not since the last one), else `None`.
        pub(crate) fn pass(
            &mut self,
            event: &'static str,
            kind: &str,
            now: Instant,
        ) -> Option<u64> {
            if let Some((at, held)) = self.last.get_mut(event).and_then(|k| k.get_mut(kind)) {
                if now.saturating_duration_since(*at) < Self::EVERY {
                    *held += 1;
                    return None;
                }
                let was = *held;
                (*at, *held) = (now, 0);
                return Some(was);
            }
            if self.keys >= Self::KEEP {
                for kinds in self.last.values_mut() {
                    kinds.retain(|_, (at, _)| now.saturating_duration_since(*at) < Self::EVERY);
                }
                self.keys = self.last.values().map(HashMap::len).sum();
            }
            self.last
                .entry(event)
                .or_default()
                .insert(kind.to_owned(), (now, 0));
            self.keys += 1;
            Some(0)
        }
    }

    /// A close code as a hub log line shows it: the number, and what the
    /// codes that are easy to misread mean (1005 and 1006 are never sent on
    /// the wire; they say how the connection ended).
    fn close_code_text(code: Option<u16>) -> String {
        use link_protocol::close;
        match code {
            None => "-".to_owned(),
            Some(close::NO_STATUS) => "1005 (closed by the peer without a code)".to_owned(),
            Some(close::ABNORMAL) => "1006 (ended without a close frame)".to_owned(),
            Some(c) => c.to_string(),
        }
    }

    /// What to log for a hub event, if anything.
    pub(crate) fn describe_hub(e: &HubEvent, c: &Classifier) -> Option<Line> {
        let name = e.name();
        match e {
            HubEvent::PeerConnect { kind, replaced, .. } => line(
                Level::INFO,
                name,
                if *replaced {
                    format!("peer {kind} connected, replacing its previous socket")
                } else {
                    format!("peer {kind} connected")
                },
            ),
            HubEvent::PeerDisconnect {
                kind, code, reason, ..
            } => line(
                Level::INFO,
                name,
                format!(
                    "peer {kind} disconnected (code {}, reason {reason:?})",
                    close_code_text(*code)
                ),
            ),
            HubEvent::PeerReplaced { kind, .. } => {
                line(Level::INFO, name, format!("peer {kind} replaced"))
            }
            HubEvent::PeerTimeout {
                remote_addr,
                reason,
                ..
            } => line(
                if *reason == TimeoutReason::PendingCap {
                    Level::WARN
                } else {
                    Level::DEBUG
                },
                name,
                format!(
                    "pending socket {} closed: {}",
                    remote_addr.map_or_else(|| "?".to_owned(), |a| a.to_string()),
                    reason.as_str()
                ),
            ),
            HubEvent::ProtocolError { error, remote_addr } => line(
                c.level(c.classify(error)),
                name,
                protocol_text(error, *remote_addr),
            ),
            HubEvent::AclDenied {
                op,
                from,
                code,
                error,
                ..
            } => line(
                Level::WARN,
                name,
                format!("acl denied {op:?} from {from}: {error} ({code})"),
            ),
            HubEvent::TopicSubscribe { kind, topic } => {
                line(Level::DEBUG, name, format!("{kind} subscribed to {topic}"))
            }
            HubEvent::TopicUnsubscribe { kind, topic } => line(
                Level::DEBUG,
                name,
                format!("{kind} unsubscribed from {topic}"),
            ),
            HubEvent::TopicPublish {
                from,
                topic,
                delivered,
                ..
            } => line(
                Level::TRACE,
                name,
                format!("{from} published on {topic} ({delivered} delivered)"),
            ),
            HubEvent::RpcForwarded {
                id,
                from,
                to,
                rpc_type,
            } => line(
                Level::DEBUG,
                name,
                format!("rpc {rpc_type} {from} -> {to} (id {id})"),
            ),
            HubEvent::RpcResponseForwarded { id, from, to, ok } => line(
                Level::DEBUG,
                name,
                format!("rpc response {from} -> {to} (id {id}, ok {ok})"),
            ),
            HubEvent::RpcServer {
                id,
                from,
                rpc_type,
                ok,
                error,
                duration_ms,
            } => line(
                Level::DEBUG,
                name,
                format!(
                    "server rpc {rpc_type} from {from} (id {id}) ok {ok} in {duration_ms} ms{}",
                    error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            ),
            HubEvent::RpcCancelled {
                id,
                from,
                to,
                found,
                ..
            } => line(
                Level::DEBUG,
                name,
                format!("rpc {id} {from} -> {to} cancelled (still queued: {found})"),
            ),
            HubEvent::Direct {
                from, to, msg_type, ..
            } => line(
                Level::TRACE,
                name,
                format!("direct {msg_type} {from} -> {to}"),
            ),
            HubEvent::Backpressure {
                kind,
                msg_type,
                outbox_size,
                ..
            } => line(
                Level::WARN,
                name,
                format!("backpressure to {kind}: {msg_type} queued ({outbox_size} queued)"),
            ),
            HubEvent::OutboxOverflow {
                kind,
                msg_type,
                outbox_bytes,
                max_outbox_bytes,
                ..
            } => line(
                Level::WARN,
                name,
                format!(
                    "outbox to {kind} full: {msg_type} refused ({outbox_bytes}/{max_outbox_bytes} bytes)"
                ),
            ),
            HubEvent::ClusterHub {
                hub,
                up: true,
                peers,
            } => line(
                Level::INFO,
                name,
                format!("cluster hub {hub} up ({peers} peers)"),
            ),
            HubEvent::ClusterHub { hub, up: false, .. } => {
                line(Level::WARN, name, format!("cluster hub {hub} gone"))
            }
            HubEvent::ClusterPeer { kind, hub, joined } => line(
                Level::DEBUG,
                name,
                format!(
                    "{kind} {} on hub {hub}",
                    if *joined { "reachable" } else { "gone" }
                ),
            ),
            _ => None,
        }
    }

    /// What a throttled line is about: the peer of a slow-socket line; the
    /// reason of a pending socket's close (`peer.timeout`); the
    /// reason and sender (its kind, else its address) of a `protocol-error`;
    /// `None` for lines that are never throttled.
    pub(crate) fn throttled(e: &HubEvent) -> Option<Cow<'_, str>> {
        match e {
            HubEvent::Backpressure { kind, .. } | HubEvent::OutboxOverflow { kind, .. } => {
                Some(Cow::Borrowed(kind))
            }
            // Pending sockets closed for one reason: one line a second with
            // the count (10,000 sockets that never say hello are one line,
            // not 10,000).
            HubEvent::PeerTimeout { reason, .. } => Some(Cow::Borrowed(reason.as_str())),
            HubEvent::ProtocolError { error, remote_addr } => Some(Cow::Owned(format!(
                "{} {}",
                error.reason.code(),
                error.kind.as_deref().map_or_else(
                    || remote_addr.map_or_else(String::new, |a| a.to_string()),
                    str::to_owned
                )
            ))),
            _ => None,
        }
    }

    /// Logs `hub`'s events until the handle is dropped. Needs a tokio runtime.
    ///
    /// The per-message events (`topic.publish`, `direct`, RPC relay) log at
    /// DEBUG and TRACE: unless the subscriber enables DEBUG here when the
    /// logger starts, it listens with [`Hub::quiet_events`], so the hub
    /// builds nothing per message for it.
    pub fn spawn_hub_logger(hub: &Hub, classifier: Classifier) -> LoggerHandle {
        let rx = if tracing::enabled!(Level::DEBUG) {
            hub.events()
        } else {
            hub.quiet_events()
        };
        let mut throttle = Throttle::default();
        LoggerHandle {
            task: tokio::spawn(pump(rx, "hub".to_owned(), move |e: &HubEvent| {
                // Throttled before the line is written: a flood of drops
                // costs the logger a lookup each, not a formatted line.
                let held = match throttled(e) {
                    Some(about) => throttle.pass(e.name(), &about, Instant::now())?,
                    None => 0,
                };
                let mut l = describe_hub(e, &classifier)?;
                if held > 0 {
                    l.text
                        .push_str(&format!(" ({held} more like it not logged)"));
                }
                Some(l)
            })),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::close_code_text;

        #[test]
        fn protocol_error_lines_are_throttled_per_reason_and_sender() {
            use link_hub::HubEvent;
            use link_protocol::{DropReason, ProtocolError};
            let pe = |reason, kind: Option<&str>, port: u16| HubEvent::ProtocolError {
                error: match kind {
                    Some(k) => ProtocolError::new(reason).with_kind(k),
                    None => ProtocolError::new(reason),
                },
                remote_addr: Some(std::net::SocketAddr::from(([10, 0, 0, 7], port))),
            };
            let key = |e| super::throttled(&e).unwrap().into_owned();
            let bad = key(pe(DropReason::BadSignature, Some("mallory"), 1));
            // The same sender on another socket is the same line.
            assert_eq!(bad, key(pe(DropReason::BadSignature, Some("mallory"), 2)));
            assert_ne!(bad, key(pe(DropReason::ParseError, Some("mallory"), 1)));
            assert_ne!(bad, key(pe(DropReason::BadSignature, Some("alice"), 1)));
            // Before a hello: by address.
            assert_ne!(
                key(pe(DropReason::PreHelloMessage, None, 1)),
                key(pe(DropReason::PreHelloMessage, None, 2))
            );
            let t0 = std::time::Instant::now();
            let mut t = super::Throttle::default();
            assert_eq!(t.pass("protocol-error", &bad, t0), Some(0));
            assert_eq!(t.pass("protocol-error", &bad, t0), None);
        }

        #[test]
        fn pending_socket_closes_are_one_line_a_second_per_reason() {
            use link_hub::{HubEvent, TimeoutReason};
            let timeout = |reason, port| HubEvent::PeerTimeout {
                remote_addr: Some(std::net::SocketAddr::from(([10, 0, 0, 7], port))),
                hello_timeout_ms: 10_000,
                reason,
            };
            let key = |e| super::throttled(&e).unwrap().into_owned();
            // Any address: one key per reason.
            let cap = key(timeout(TimeoutReason::PendingCap, 1));
            assert_eq!(cap, key(timeout(TimeoutReason::PendingCap, 2)));
            assert_ne!(cap, key(timeout(TimeoutReason::HelloTimeout, 1)));
            let t0 = std::time::Instant::now();
            let mut t = super::Throttle::default();
            assert_eq!(t.pass("peer.timeout", &cap, t0), Some(0));
            assert_eq!(t.pass("peer.timeout", &cap, t0), None);
        }

        #[test]
        fn slow_socket_lines_are_logged_once_a_second_per_peer_with_a_count() {
            let mut t = super::Throttle::default();
            let t0 = std::time::Instant::now();
            let at = |ms| t0 + std::time::Duration::from_millis(ms);
            assert_eq!(t.pass("backpressure", "a", at(0)), Some(0));
            assert_eq!(t.pass("backpressure", "a", at(500)), None);
            assert_eq!(t.pass("backpressure", "a", at(999)), None);
            // Another peer, or another event about the same peer, is its own line.
            assert_eq!(t.pass("backpressure", "b", at(999)), Some(0));
            assert_eq!(t.pass("outbox-overflow", "a", at(999)), Some(0));
            assert_eq!(t.pass("backpressure", "a", at(1000)), Some(2));
            assert_eq!(t.pass("backpressure", "a", at(2500)), Some(0));
        }

        #[test]
        fn close_codes_that_are_never_sent_say_what_they_mean() {
            assert_eq!(close_code_text(None), "-");
            assert_eq!(close_code_text(Some(1001)), "1001");
            assert_eq!(
                close_code_text(Some(1005)),
                "1005 (closed by the peer without a code)"
            );
            assert_eq!(
                close_code_text(Some(1006)),
                "1006 (ended without a close frame)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use link_protocol::{DropReason, PeerInfo};

    use super::*;

    fn pe(reason: DropReason) -> ProtocolError {
        ProtocolError::new(reason).with_kind("mallory")
    }

    #[test]
    fn missed_events_are_summed_into_one_line_a_second() {
        let t0 = tokio::time::Instant::now();
        let mut b = Behind::default();
        assert_eq!(b.due(t0), None, "nothing missed, nothing to say");
        b.missed += 5;
        assert_eq!(b.due(t0), Some(5));
        b.missed += 3;
        b.missed += 4;
        assert_eq!(b.due(t0 + std::time::Duration::from_millis(999)), None);
        assert_eq!(b.due(t0 + Behind::EVERY), Some(7));
        assert_eq!(b.due(t0 + 3 * Behind::EVERY), None);
    }

    #[test]
    fn default_classifier_splits_concerning_from_noisy() {
        let c = Classifier::default();
        for r in [
            DropReason::BadSignature,
            DropReason::ReplayId,
            DropReason::ReplayWindow,
            DropReason::BadHello,
            DropReason::UnknownKind,
        ] {
            assert_eq!(c.classify(&pe(r)), Severity::Concerning, "{r}");
        }
        for r in [
            DropReason::Oversize,
            DropReason::ParseError,
            DropReason::InvalidTopic,
        ] {
            assert_eq!(c.classify(&pe(r)), Severity::Noisy, "{r}");
        }
        assert_eq!(
            c.classify_diagnostic(&Diagnostic::KeepaliveTimeout),
            Severity::Noisy
        );
        for d in [
            Diagnostic::NoAck { verified: false },
            Diagnostic::ClockSkew { skew: 1.0 },
        ] {
            assert_eq!(c.classify_diagnostic(&d), Severity::Concerning, "{d}");
        }
        let c = c.noisy("clock-skew");
        assert_eq!(
            c.classify_diagnostic(&Diagnostic::ClockSkew { skew: 1.0 }),
            Severity::Noisy
        );
    }

    #[test]
    fn classifier_can_be_extended_and_replaced() {
        let c = Classifier::default()
            .concerning("oversize")
            .noisy("bad-signature");
        assert_eq!(c.classify(&pe(DropReason::Oversize)), Severity::Concerning);
        assert_eq!(c.classify(&pe(DropReason::BadSignature)), Severity::Noisy);

        let c = Classifier::empty().with_override(|e| {
            (e.kind.as_deref() == Some("mallory")).then_some(Severity::Concerning)
        });
        assert_eq!(
            c.classify(&pe(DropReason::ParseError)),
            Severity::Concerning
        );
        assert_eq!(
            c.classify(&ProtocolError::new(DropReason::BadSignature)),
            Severity::Noisy
        );
        assert!(format!("{c:?}").contains("custom: true"));
    }

    #[test]
    fn ready_and_disconnect_lines_name_the_hub_of_that_connection() {
        let mut describe = client_describer(Classifier::default());
        let mut text = |e: LinkEvent| describe(&e).map(|l| l.text);
        let ready = || LinkEvent::Ready {
            kind: "alpha".into(),
            features: vec![],
        };
        assert!(
            !text(ready()).unwrap().contains("hub="),
            "no connect seen yet"
        );
        let connect = |url: &str| LinkEvent::Connect {
            url: url.into(),
            kind: "alpha".into(),
        };
        assert_eq!(
            text(connect("ws://a:1")).as_deref(),
            Some("connected to ws://a:1")
        );
        assert!(text(ready()).unwrap().ends_with(" hub=ws://a:1"));
        let gone = text(LinkEvent::Disconnect {
            code: Some(1006),
            reason: String::new(),
            will_reconnect: true,
            was_ready: true,
            displaced: false,
        })
        .unwrap();
        assert!(gone.ends_with(" hub=ws://a:1"), "{gone}");
        // Failed over: the next lines name the other hub.
        text(connect("wss://b:2"));
        assert!(text(ready()).unwrap().ends_with(" hub=wss://b:2"));
    }

    #[test]
    fn client_events_map_to_levels() {
        let c = Classifier::default();
        let peer = PeerInfo {
            kind: "beta".into(),
            hello: None,
            connected_at: Some(1.0),
            connected: true,
        };
        let lvl = |e: LinkEvent| describe_client(&e, &c).map(|l| l.level);
        assert_eq!(lvl(LinkEvent::PeerConnect(peer.clone())), Some(Level::INFO));
        assert_eq!(lvl(LinkEvent::PeerDisconnect(peer)), Some(Level::INFO));
        assert_eq!(
            lvl(LinkEvent::ProtocolError(pe(DropReason::BadSignature))),
            Some(Level::WARN)
        );
        assert_eq!(
            lvl(LinkEvent::ProtocolError(pe(DropReason::Oversize))),
            Some(Level::DEBUG)
        );
        // A link that never gets its hello.ack says so at the default level.
        for verified in [false, true] {
            let l = describe_client(&LinkEvent::Diagnostic(Diagnostic::NoAck { verified }), &c)
                .unwrap();
            assert_eq!((l.level, l.event), (Level::WARN, "protocol-error"));
            assert!(l.text.contains("no-ack"), "{}", l.text);
        }
        assert_eq!(
            lvl(LinkEvent::Rejected {
                reason: None,
                error: link_client::LinkError::HelloRejected { reason: None }
            }),
            Some(Level::WARN)
        );
        let complete = |outcome| LinkEvent::RpcComplete {
            id: "1".into(),
            to: "beta".into(),
            rpc_type: "x".into(),
            outcome,
            duration: std::time::Duration::from_millis(5),
            error: Some("failed".into()),
        };
        // One line per RPC ending: the outcome's own event, or rpc.complete.
        let timeout = LinkEvent::RpcTimeout {
            id: "1".into(),
            to: "beta".into(),
            rpc_type: "x".into(),
            timeout: std::time::Duration::from_secs(5),
        };
        let l = describe_client(&timeout, &c).unwrap();
        assert_eq!((l.level, l.event), (Level::DEBUG, "rpc.timeout"));
        assert!(l.text.contains("timed out after 5s"), "{}", l.text);
        assert_eq!(lvl(complete(RpcOutcome::Timeout)), None);
        assert_eq!(lvl(complete(RpcOutcome::Abort)), None);
        assert_eq!(lvl(complete(RpcOutcome::Disconnect)), None);
        for outcome in [
            RpcOutcome::Ok,
            RpcOutcome::RemoteError,
            RpcOutcome::NotReady,
            RpcOutcome::Backpressure,
        ] {
            let l = describe_client(&complete(outcome), &c).unwrap();
            assert_eq!(
                (l.level, l.event),
                (Level::DEBUG, "rpc.complete"),
                "{outcome:?}"
            );
        }
        assert_eq!(
            lvl(LinkEvent::Message(
                link_protocol::envelope::parse_frame(
                    br#"{"v":1,"id":"a","ts":1,"type":"x","sig":"00"}"#,
                    1024
                )
                .unwrap()
                .envelope
            )),
            None
        );
        let text = describe_client(&LinkEvent::ProtocolError(pe(DropReason::BadSignature)), &c)
            .unwrap()
            .text;
        assert!(
            text.contains("bad-signature") && text.contains("kind=mallory"),
            "{text}"
        );
    }
}
