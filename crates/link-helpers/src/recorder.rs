//! [`EventRecorder`]: what a link has been through, for a debug endpoint
//! or a dashboard.
//!
//! ```text
//!  LinkClient::events() ──► normalise ──► ring buffer (capacity) ──┐
//!                               │                                  ├─► snapshot()
//!            membership change ─┴─► push ──► watch::Receiver ◄─────┘
//!            heartbeat interval ──► push ──┘
//! ```
//!
//! Recorded event types: `hub-up`, `rejected`, `hub-down`, `join`, `leave`,
//! `status`, `protocol-error`, `backpressure`, `rpc-fail`, `direct`. A
//! [`Snapshot`] serialises as
//! `{connected, ready, self, peers, statuses, startedAt, health, eventLog, at, reason}`.
//!
//! ```no_run
//! use link_helpers::recorder::{EventRecorder, RecorderOptions};
//!
//! # async fn demo(client: link_client::LinkClient) {
//! let recorder = EventRecorder::new(&client, RecorderOptions::default());
//! let mut snapshots = recorder.subscribe();
//! while snapshots.changed().await.is_ok() {
//!     let snapshot = snapshots.borrow_and_update().clone();
//!     let json = serde_json::to_string(&*snapshot).unwrap_or_default();
//!     println!("{json}");
//! }
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use link_client::{ClientHealth, LinkClient, LinkEvent, RpcOutcome};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::wall_clock::now_ms;

/// Recorder settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecorderOptions {
    /// Events kept (default 200; at least 1).
    pub capacity: usize,
    /// Snapshot push interval besides membership changes (default 30 s;
    /// `None` disables).
    pub heartbeat: Option<Duration>,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            capacity: 200,
            heartbeat: Some(Duration::from_secs(30)),
        }
    }
}

impl RecorderOptions {
    /// Sets the capacity.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the heartbeat.
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Option<Duration>) -> Self {
        self.heartbeat = heartbeat;
        self
    }
}

/// Serialises hub milliseconds (an `f64` on the wire, since the reference
/// is JavaScript) as the reference's `JSON.stringify` would: an integral
/// value as an integer (`1795424111258`, not `1795424111258.0`).
fn ms<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    // Below 2^53 every integral f64 converts to i64 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// [`ms`] for an optional value.
fn opt_ms<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ms(v, s),
        None => s.serialize_none(),
    }
}

/// A peer as shown in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// Kind.
    pub kind: String,
    /// Display name from its hello.
    pub name: Option<String>,
    /// Hub ms at registration.
    #[serde(serialize_with = "opt_ms")]
    pub connected_at: Option<f64>,
    /// Socket registered and open.
    pub connected: bool,
}

/// A peer's last status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusView {
    /// The status as sent (`None` when the peer sent none).
    pub status: Option<Value>,
    /// Hub ms when stored.
    #[serde(serialize_with = "ms")]
    pub at: f64,
}

/// [`ClientHealth`] with camelCase names.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HealthView {
    pub ready: bool,
    pub stopped: bool,
    pub verified: bool,
    pub peer_count: usize,
    pub pending_rpc_count: usize,
    pub connected: bool,
    pub last_verified_at: Option<u64>,
    pub reconnect_attempt: u32,
    pub subscription_count: usize,
    pub buffered_amount: usize,
    pub outbox_size: usize,
    pub outbox_bytes: usize,
    pub in_flight_rpc: usize,
}

impl From<ClientHealth> for HealthView {
    fn from(h: ClientHealth) -> Self {
        Self {
            ready: h.ready,
            stopped: h.stopped,
            verified: h.verified,
            peer_count: h.peer_count,
            pending_rpc_count: h.pending_rpc_count,
            connected: h.connected,
            last_verified_at: h.last_verified_at,
            reconnect_attempt: h.reconnect_attempt,
            subscription_count: h.subscription_count,
            buffered_amount: h.buffered_amount,
            outbox_size: h.outbox_size,
            outbox_bytes: h.outbox_bytes,
            in_flight_rpc: h.in_flight_rpc,
        }
    }
}

/// A normalised event (serialised with `type` and camelCase fields).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Recorded {
    /// The link became ready.
    HubUp { kind: String, features: Vec<String> },
    /// The hub refused the hello.
    Rejected { reason: Option<String> },
    /// The connection closed.
    HubDown {
        code: Option<u16>,
        reason: String,
        will_reconnect: bool,
    },
    /// A peer joined (or reconnected: `replaced`).
    Join { peer: String, replaced: bool },
    /// A peer left.
    Leave { peer: String },
    /// A peer's status. `status_at` (`statusAt`) is the hub's time for
    /// it; the log entry's own `at` is when it was recorded.
    Status {
        from: String,
        status: Option<Value>,
        #[serde(serialize_with = "ms")]
        status_at: f64,
    },
    /// A dropped frame.
    ProtocolError {
        reason: String,
        kind: Option<String>,
        detail: Option<String>,
    },
    /// Queueing, overflow or a slow consumer.
    Backpressure {
        what: String,
        msg_type: Option<String>,
        outbox_size: Option<usize>,
    },
    /// An outgoing RPC that did not succeed.
    RpcFail {
        to: String,
        rpc_type: String,
        outcome: String,
        error: Option<String>,
        duration_ms: u64,
    },
    /// A direct message arrived.
    Direct { from: String, direct_type: String },
}

impl Recorded {
    /// The normalised form of a client event, if it is one we keep.
    pub fn from_event(e: &LinkEvent) -> Option<Self> {
        Some(match e {
            LinkEvent::Ready { kind, features } => Self::HubUp {
                kind: kind.clone(),
                features: features.clone(),
            },
            LinkEvent::Rejected { reason, .. } => Self::Rejected {
                reason: reason.clone(),
            },
            LinkEvent::Disconnect {
                code,
                reason,
                will_reconnect,
                ..
            } => Self::HubDown {
                code: *code,
                reason: reason.clone(),
                will_reconnect: *will_reconnect,
            },
            LinkEvent::PeerConnect(p) => Self::Join {
                peer: p.kind.clone(),
                replaced: false,
            },
            LinkEvent::PeerReplaced { kind, .. } => Self::Join {
                peer: kind.clone(),
                replaced: true,
            },
            LinkEvent::PeerDisconnect(p) => Self::Leave {
                peer: p.kind.clone(),
            },
            LinkEvent::PeerStatus { from, status, at } => Self::Status {
                from: from.clone(),
                status: status.clone(),
                status_at: *at,
            },
            LinkEvent::ProtocolError(pe) => Self::ProtocolError {
                reason: pe.reason.code().to_owned(),
                kind: pe.kind.as_deref().map(str::to_owned),
                detail: pe.detail.map(str::to_owned),
            },
            LinkEvent::Diagnostic(d) => Self::ProtocolError {
                reason: d.code().to_owned(),
                kind: None,
                detail: None,
            },
            LinkEvent::Backpressure {
                msg_type,
                outbox_size,
                ..
            } => Self::Backpressure {
                what: "queueing".into(),
                msg_type: Some(msg_type.clone()),
                outbox_size: Some(*outbox_size),
            },
            LinkEvent::OutboxOverflow { msg_type, .. } => Self::Backpressure {
                what: "overflow".into(),
                msg_type: Some(msg_type.clone()),
                outbox_size: None,
            },
            LinkEvent::SlowConsumer { stream, .. } => Self::Backpressure {
                what: format!("slow-consumer:{stream}"),
                msg_type: None,
                outbox_size: None,
            },
            LinkEvent::RpcComplete {
                to,
                rpc_type,
                outcome,
                duration,
                error,
                ..
            } if *outcome != RpcOutcome::Ok => Self::RpcFail {
                to: to.clone(),
                rpc_type: rpc_type.clone(),
                outcome: outcome.reason().unwrap_or("failed").to_owned(),
                error: error.clone(),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            },
            LinkEvent::Direct { from, msg_type, .. } => Self::Direct {
                from: from.clone(),
                direct_type: msg_type.clone(),
            },
            _ => return None,
        })
    }

    /// The type name (`hub-up`, `join`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::HubUp { .. } => "hub-up",
            Self::Rejected { .. } => "rejected",
            Self::HubDown { .. } => "hub-down",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Status { .. } => "status",
            Self::ProtocolError { .. } => "protocol-error",
            Self::Backpressure { .. } => "backpressure",
            Self::RpcFail { .. } => "rpc-fail",
            Self::Direct { .. } => "direct",
        }
    }

    /// Whether the event changes membership (and pushes a snapshot).
    fn is_membership(&self) -> bool {
        matches!(
            self,
            Self::HubUp { .. }
                | Self::Rejected { .. }
                | Self::HubDown { .. }
                | Self::Join { .. }
                | Self::Leave { .. }
        )
    }
}

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEntry {
    /// Sequence number, from 1, never reused.
    pub seq: u64,
    /// Unix ms when recorded.
    pub at: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Recorded,
}

/// A bounded log: the newest `capacity` entries.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    capacity: usize,
    next_seq: u64,
    entries: VecDeque<LogEntry>,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            next_seq: 1,
            entries: VecDeque::with_capacity(capacity.min(1024)),
        }
    }

    pub(crate) fn push(&mut self, at: u64, event: Recorded) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(LogEntry {
            seq: self.next_seq,
            at,
            event,
        });
        self.next_seq += 1;
    }

    pub(crate) fn to_vec(&self) -> Vec<LogEntry> {
        self.entries.iter().cloned().collect()
    }
}

/// The recorder's view of the link at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// A socket is open.
    pub connected: bool,
    /// `hello.ack` received.
    pub ready: bool,
    /// This client's kind.
    #[serde(rename = "self")]
    pub self_kind: String,
    /// The current peer list.
    pub peers: Vec<PeerView>,
    /// Last status per peer kind.
    pub statuses: BTreeMap<String, StatusView>,
    /// Unix ms when the recorder started.
    pub started_at: u64,
    /// Client counters.
    pub health: HealthView,
    /// Recorded events, oldest first.
    pub event_log: Vec<LogEntry>,
    /// Unix ms of this snapshot.
    pub at: u64,
    /// Why it was taken: `initial`, `membership`, `heartbeat`, `request`, `closed`.
    pub reason: String,
}

struct Shared {
    client: LinkClient,
    ring: Mutex<Ring>,
    started_at: u64,
    tx: watch::Sender<Arc<Snapshot>>,
    stop: CancellationToken,
}

impl Shared {
    fn snapshot(&self, reason: &str) -> Snapshot {
        let c = &self.client;
        let peers = c.peers();
        let statuses = peers
            .iter()
            .filter_map(|p| {
                c.peer_status(&p.kind).map(|s| {
                    (
                        p.kind.clone(),
                        StatusView {
                            status: s.status,
                            at: s.at,
                        },
                    )
                })
            })
            .collect();
        Snapshot {
            connected: c.is_connected(),
            ready: c.is_ready(),
            self_kind: c.kind().to_owned(),
            peers: peers
                .into_iter()
                .map(|p| PeerView {
                    name: p.hello.map(|h| h.name),
                    kind: p.kind,
                    connected_at: p.connected_at,
                    connected: p.connected,
                })
                .collect(),
            statuses,
            started_at: self.started_at,
            health: c.health().into(),
            event_log: self
                .ring
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .to_vec(),
            at: now_ms(),
            reason: reason.to_owned(),
        }
    }

    fn push(&self, reason: &str) {
        self.tx.send_replace(Arc::new(self.snapshot(reason)));
    }
}

/// Records a client's events; see the [module docs](self). Dropping it
/// closes it.
pub struct EventRecorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// Starts recording `client`'s events from now on. Needs a tokio runtime.
    pub fn new(client: &LinkClient, options: RecorderOptions) -> Self {
        let events = client.events();
        let started_at = now_ms();
        let (tx, _) = watch::channel(Arc::new(Snapshot {
            connected: false,
            ready: false,
            self_kind: client.kind().to_owned(),
            peers: Vec::new(),
            statuses: BTreeMap::new(),
            started_at,
            health: HealthView::default(),
            event_log: Vec::new(),
            at: started_at,
            reason: "initial".into(),
        }));
        let shared = Arc::new(Shared {
            client: client.clone(),
            ring: Mutex::new(Ring::new(options.capacity)),
            started_at,
            tx,
            stop: CancellationToken::new(),
        });
        shared.push("initial");
        tokio::spawn(run(shared.clone(), events, options.heartbeat));
        Self { shared }
    }

    /// The current snapshot (reason `request`).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot("request")
    }

    /// Snapshots pushed on membership changes, heartbeats and close. The
    /// receiver starts with the latest one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.tx.subscribe()
    }

    /// The recorded events, oldest first.
    pub fn events(&self) -> Vec<LogEntry> {
        self.shared
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_vec()
    }

    /// Stops recording and pushes a last snapshot (reason `closed`).
    /// Idempotent; `snapshot()` keeps working afterwards.
    pub fn close(&self) {
        if !self.shared.stop.is_cancelled() {
            self.shared.stop.cancel();
            self.shared.push("closed");
        }
    }

    /// `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.shared.stop.is_cancelled()
    }
}

impl Drop for EventRecorder {
    fn drop(&mut self) {
        self.close();
    }
}

async fn run(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<Arc<LinkEvent>>,
    heartbeat: Option<Duration>,
) {
    let mut ticker = heartbeat.map(|h| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + h, h);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            r = events.recv() => match r {
                Ok(e) => {
                    if let Some(rec) = Recorded::from_event(&e) {
                        let membership = rec.is_membership();
                        shared
                            .ring
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(now_ms(), rec);
                        if membership {
                            shared.push("membership");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("event recorder skipped {n} events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tick => shared.push("heartbeat"),
        }
    }
}

#[cfg(test)]
mod tests {
    use link_client::ClientConfig;
    use link_protocol::{Diagnostic, DropReason, PeerInfo, ProtocolError};

    use super::*;

    fn join(kind: &str) -> Recorded {
        Recorded::Join {
            peer: kind.into(),
            replaced: false,
        }
    }

    #[test]
    fn ring_keeps_the_newest_entries_with_increasing_seq() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i, join(&format!("p{i}")));
        }
        let v = r.to_vec();
        assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(v[0].event, join("p2"));
        assert_eq!(Ring::new(0).capacity, 1);
    }

    #[test]
    fn events_normalise_to_the_documented_types() {
        let peer = PeerInfo {
            kind: "beta".into(),
            hello: None,
            connected_at: Some(5.0),
            connected: true,
        };
        let cases = [
            (
                LinkEvent::Ready {
                    kind: "a".into(),
                    features: vec![],
                },
                "hub-up",
            ),
            (
                LinkEvent::Rejected {
                    reason: None,
                    error: link_client::LinkError::HelloRejected { reason: None },
                },
                "rejected",
            ),
            (
                LinkEvent::Disconnect {
                    code: Some(link_protocol::close::ABNORMAL),
                    reason: String::new(),
                    will_reconnect: true,
                    was_ready: true,
                    displaced: false,
                },
                "hub-down",
            ),
            (LinkEvent::PeerConnect(peer.clone()), "join"),
            (
                LinkEvent::PeerReplaced {
                    kind: "beta".into(),
                    prev: peer.clone(),
                    peer: peer.clone(),
                },
                "join",
            ),
            (LinkEvent::PeerDisconnect(peer), "leave"),
            (
                LinkEvent::PeerStatus {
                    from: "beta".into(),
                    status: Some(serde_json::json!({"ok": true})),
                    at: 1.0,
                },
                "status",
            ),
            (
                LinkEvent::ProtocolError(ProtocolError::new(DropReason::BadSignature)),
                "protocol-error",
            ),
            (
                LinkEvent::SlowConsumer {
                    stream: "direct".into(),
                    dropped: 3,
                },
                "backpressure",
            ),
            (
                LinkEvent::RpcComplete {
                    id: "1".into(),
                    to: "b".into(),
                    rpc_type: "x".into(),
                    outcome: RpcOutcome::Timeout,
                    duration: Duration::from_millis(7),
                    error: None,
                },
                "rpc-fail",
            ),
            (
                LinkEvent::Direct {
                    from: "b".into(),
                    msg_type: "ping".into(),
                    data: None,
                },
                "direct",
            ),
        ];
        for (event, want) in cases {
            let rec = Recorded::from_event(&event).unwrap();
            assert_eq!(rec.type_name(), want);
            let json = serde_json::to_value(&rec).unwrap();
            assert_eq!(json["type"], want);
        }
        // A diagnostic is recorded as the reference's protocol-error.
        let rec =
            Recorded::from_event(&LinkEvent::Diagnostic(Diagnostic::KeepaliveTimeout)).unwrap();
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            (&json["type"], &json["reason"]),
            (&"protocol-error".into(), &"keepalive-timeout".into())
        );
        let ok = LinkEvent::RpcComplete {
            id: "1".into(),
            to: "b".into(),
            rpc_type: "x".into(),
            outcome: RpcOutcome::Ok,
            duration: Duration::ZERO,
            error: None,
        };
        assert_eq!(Recorded::from_event(&ok), None);
        assert_eq!(Recorded::from_event(&LinkEvent::OutboxDrained), None);
        let fail = serde_json::to_value(
            Recorded::from_event(&LinkEvent::RpcComplete {
                id: "1".into(),
                to: "b".into(),
                rpc_type: "x".into(),
                outcome: RpcOutcome::Timeout,
                duration: Duration::from_millis(7),
                error: None,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(fail["rpcType"], "x");
        assert_eq!(fail["durationMs"], 7);
    }

    /// Fails on a JSON object with a key twice (serde_json's `Value` would
    /// silently keep the last one).
    struct NoDuplicateKeys;

    impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = NoDuplicateKeys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if !seen.insert(key.clone()) {
                            return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                        }
                        map.next_value::<NoDuplicateKeys>()?;
                    }
                    Ok(NoDuplicateKeys)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Self::Value, A::Error> {
                    while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                    Ok(NoDuplicateKeys)
                }
                fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
                fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
                fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
                fn visit_unit<E>(self) -> Result<Self::Value, E> {
                    Ok(NoDuplicateKeys)
                }
            }
            d.deserialize_any(V)
        }
    }

    fn assert_no_duplicate_keys(json: &str) {
        if let Err(e) = serde_json::from_str::<NoDuplicateKeys>(json) {
            panic!("{e} in {json}");
        }
    }

    #[test]
    fn duplicate_key_check_works() {
        assert!(serde_json::from_str::<NoDuplicateKeys>(r#"{"a":[{"b":1,"b":2}]}"#).is_err());
        assert_no_duplicate_keys(r#"{"a":[{"b":1,"c":2.5}],"b":null}"#);
    }

    #[test]
    fn status_entries_have_one_at_and_integer_milliseconds() {
        let mut ring = Ring::new(4);
        let status = LinkEvent::PeerStatus {
            from: "beta".into(),
            status: Some(serde_json::json!({"load": 0.5})),
            at: 1_795_424_111_258.0,
        };
        ring.push(1_795_424_111_300, Recorded::from_event(&status).unwrap());
        let json = serde_json::to_string(&ring.to_vec()).unwrap();
        assert_eq!(
            json,
            r#"[{"seq":1,"at":1795424111300,"type":"status","from":"beta","status":{"load":0.5},"statusAt":1795424111258}]"#
        );
        assert_no_duplicate_keys(&json);

        // Peers and statuses in a snapshot: integral hub ms as integers, a
        // fractional one as it is.
        let peer = PeerView {
            kind: "beta".into(),
            name: None,
            connected_at: Some(1_795_424_111_000.0),
            connected: true,
        };
        assert_eq!(
            serde_json::to_string(&peer).unwrap(),
            r#"{"kind":"beta","name":null,"connectedAt":1795424111000,"connected":true}"#
        );
        let view = StatusView {
            status: None,
            at: 12.5,
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"status":null,"at":12.5}"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_push_snapshots_and_close_is_idempotent() {
        // A disabled client never opens a socket, so paused time is safe.
        let client = LinkClient::new(ClientConfig::builder().build().unwrap());
        let rec = EventRecorder::new(
            &client,
            RecorderOptions::default()
                .capacity(10)
                .heartbeat(Some(Duration::from_secs(5))),
        );
        let mut rx = rec.subscribe();
        assert_eq!(rx.borrow_and_update().reason, "initial");
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().reason, "heartbeat");
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().reason, "heartbeat");

        let snap = rec.snapshot();
        assert_eq!(snap.reason, "request");
        assert!(!snap.connected && !snap.ready);
        assert_no_duplicate_keys(&serde_json::to_string(&snap).unwrap());
        let json = serde_json::to_value(&snap).unwrap();
        for key in [
            "connected",
            "ready",
            "self",
            "peers",
            "statuses",
            "startedAt",
            "health",
            "eventLog",
            "at",
            "reason",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json["health"].get("pendingRpcCount").is_some());

        rec.close();
        rec.close();
        assert!(rec.is_closed());
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().reason, "closed");
        assert!(!rx.has_changed().unwrap());
        assert_eq!(rec.snapshot().reason, "request");
    }
}
