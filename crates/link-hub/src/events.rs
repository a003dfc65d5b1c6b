//! Hub events (docs/hub.md, *Events*) and the `health()` / `state()`
//! snapshots, with the reference's names.
//!
//! Events go out on a broadcast channel; nothing is built when nobody
//! listens. A listener that falls behind misses events (and is told how
//! many) rather than slowing the hub.

use std::net::SocketAddr;

use link_protocol::{Envelope, Hello, PeerInfo, ProtocolError, StatusEntry};
use serde_json::{Map, Value, json};

use crate::acl::AclOp;

/// Why a pending socket was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutReason {
    /// No valid hello within the hello timeout.
    HelloTimeout,
    /// Evicted as the oldest pending socket over the cap.
    PendingCap,
}

impl TimeoutReason {
    /// `hello-timeout` / `pending-cap`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HelloTimeout => "hello-timeout",
            Self::PendingCap => "pending-cap",
        }
    }
}

/// Something the hub did or refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HubEvent {
    /// `peer.connect`.
    PeerConnect {
        /// Kind.
        kind: String,
        /// Sanitised hello.
        hello: Hello,
        /// Hub ms at registration.
        connected_at: u64,
        /// Whether it displaced an older socket.
        replaced: bool,
    },
    /// `peer.disconnect`.
    PeerDisconnect {
        /// Kind.
        kind: String,
        /// Its hello.
        hello: Hello,
        /// Hub ms at registration.
        connected_at: u64,
        /// Close code seen (1006 after a keepalive reap).
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// `peer.replaced`.
    PeerReplaced {
        /// Kind.
        kind: String,
        /// The displaced socket's hello.
        prev_hello: Hello,
        /// The newcomer's hello.
        new_hello: Hello,
    },
    /// `peer.timeout`.
    PeerTimeout {
        /// Remote address, when known.
        remote_addr: Option<SocketAddr>,
        /// The configured hello timeout in ms.
        hello_timeout_ms: u64,
        /// Why.
        reason: TimeoutReason,
    },
    /// `protocol-error`.
    ProtocolError {
        /// The drop.
        error: ProtocolError,
        /// Remote address, when known.
        remote_addr: Option<SocketAddr>,
    },
    /// `acl-denied`.
    AclDenied {
        /// Which hook.
        op: AclOp,
        /// Authenticated sender.
        from: String,
        /// Denial code.
        code: String,
        /// Denial text.
        error: String,
        /// Target (rpc, send).
        to: Option<String>,
        /// rpcType (rpc).
        rpc_type: Option<String>,
        /// Topic (publish, subscribe).
        topic: Option<String>,
        /// directType (send).
        msg_type: Option<String>,
    },
    /// `topic.subscribe` (only for a new subscription).
    TopicSubscribe {
        /// Subscriber.
        kind: String,
        /// Topic.
        topic: String,
    },
    /// `topic.unsubscribe`.
    TopicUnsubscribe {
        /// Subscriber.
        kind: String,
        /// Topic.
        topic: String,
    },
    /// `topic.publish`.
    TopicPublish {
        /// Publisher.
        from: String,
        /// Topic.
        topic: String,
        /// Payload.
        payload: Option<Value>,
        /// Subscribers other than the publisher.
        subscriber_count: usize,
        /// Deliveries written or queued.
        delivered: usize,
    },
    /// `rpc.forwarded`.
    RpcForwarded {
        /// Request id.
        id: String,
        /// Caller.
        from: String,
        /// Target.
        to: String,
        /// Handler name.
        rpc_type: String,
    },
    /// `rpc.response.forwarded`.
    RpcResponseForwarded {
        /// Request id.
        id: String,
        /// Responder.
        from: String,
        /// Caller.
        to: String,
        /// `data.ok`.
        ok: bool,
    },
    /// `rpc.server`.
    RpcServer {
        /// Request id.
        id: String,
        /// Caller.
        from: String,
        /// Handler name.
        rpc_type: String,
        /// Success.
        ok: bool,
        /// Error text (unsanitised) on failure.
        error: Option<String>,
        /// Handler time in ms.
        duration_ms: f64,
    },
    /// `rpc.cancelled`.
    RpcCancelled {
        /// Id of the cancelled request.
        id: String,
        /// Canceller.
        from: String,
        /// Original target.
        to: String,
        /// Removed from the target's outbox before delivery.
        found: bool,
        /// A cancel was relayed to the target.
        forwarded: bool,
    },
    /// `direct`.
    Direct {
        /// Sender.
        from: String,
        /// Target.
        to: String,
        /// directType.
        msg_type: String,
        /// directData.
        data: Option<Value>,
    },
    /// `backpressure`: a socket's outbox started queueing.
    Backpressure {
        /// Recipient kind.
        kind: String,
        /// Type of the queued message.
        msg_type: String,
        /// Its `to`.
        to: String,
        /// Bytes written but not yet flushed.
        buffered_amount: usize,
        /// The cap.
        max_buffered_bytes: usize,
        /// Queue length after the push.
        outbox_size: usize,
    },
    /// `outbox-overflow`: a message was refused.
    OutboxOverflow {
        /// Recipient kind.
        kind: String,
        /// Type of the refused message.
        msg_type: String,
        /// Its `to`.
        to: String,
        /// Bytes queued.
        outbox_bytes: usize,
        /// The cap.
        max_outbox_bytes: usize,
    },
    /// `message`: every verified inbound frame (firehose).
    Message {
        /// Authenticated sender.
        from: String,
        /// The envelope.
        envelope: Envelope,
    },
    /// `cluster.hub` (a clustered hub only): another hub of the cluster
    /// came up (its first heartbeat) or went (bye, silence, or NATS lost).
    ClusterHub {
        /// Its id.
        hub: String,
        /// Up or gone.
        up: bool,
        /// Peers it holds (0 when gone).
        peers: u64,
    },
    /// `cluster.peer` (a clustered hub only): a kind became reachable on
    /// another hub, or stopped being.
    ClusterPeer {
        /// Kind.
        kind: String,
        /// The hub that holds it.
        hub: String,
        /// Reachable now (`true`) or gone.
        joined: bool,
    },
}

impl HubEvent {
    /// True for the events the hub emits once per message it relays or
    /// answers (`topic.publish`, `direct`, `rpc.forwarded`,
    /// `rpc.response.forwarded`, `rpc.server`, `rpc.cancelled`, `message`):
    /// [`Hub::quiet_events`](crate::Hub::quiet_events) leaves them out, and
    /// they are built only while an [`events`](crate::Hub::events) or
    /// firehose listener is subscribed.
    pub fn is_traffic(&self) -> bool {
        matches!(
            self,
            Self::TopicPublish { .. }
                | Self::Direct { .. }
                | Self::RpcForwarded { .. }
                | Self::RpcResponseForwarded { .. }
                | Self::RpcServer { .. }
                | Self::RpcCancelled { .. }
                | Self::Message { .. }
        )
    }

    /// The reference's event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PeerConnect { .. } => "peer.connect",
            Self::PeerDisconnect { .. } => "peer.disconnect",
            Self::PeerReplaced { .. } => "peer.replaced",
            Self::PeerTimeout { .. } => "peer.timeout",
            Self::ProtocolError { .. } => "protocol-error",
            Self::AclDenied { .. } => "acl-denied",
            Self::TopicSubscribe { .. } => "topic.subscribe",
            Self::TopicUnsubscribe { .. } => "topic.unsubscribe",
            Self::TopicPublish { .. } => "topic.publish",
            Self::RpcForwarded { .. } => "rpc.forwarded",
            Self::RpcResponseForwarded { .. } => "rpc.response.forwarded",
            Self::RpcServer { .. } => "rpc.server",
            Self::RpcCancelled { .. } => "rpc.cancelled",
            Self::Direct { .. } => "direct",
            Self::Backpressure { .. } => "backpressure",
            Self::OutboxOverflow { .. } => "outbox-overflow",
            Self::Message { .. } => "message",
            Self::ClusterHub { .. } => "cluster.hub",
            Self::ClusterPeer { .. } => "cluster.peer",
        }
    }
}

/// `health()`: counters with the reference's field names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubHealth {
    /// Bytes queued across all outboxes.
    pub outbox_bytes: usize,
    /// Sockets with a non-empty outbox.
    pub queued_sockets: usize,
    /// Subscriptions across all topics.
    pub total_subscribers: usize,
    /// Server RPC handlers running.
    pub server_rpc_in_flight: usize,
    /// Registered peers.
    pub peer_count: usize,
    /// Peers with a stored status.
    pub status_count: usize,
    /// Topics with at least one subscriber.
    pub topic_count: usize,
    /// Sockets not yet authenticated.
    pub pending_socket_count: usize,
    /// Ids held by the replay guard.
    pub recent_ids_size: usize,
}

impl HubHealth {
    /// The JSON object the reference returns (same key order).
    pub fn to_value(&self) -> Value {
        json!({
            "outboxBytes": self.outbox_bytes,
            "queuedSockets": self.queued_sockets,
            "totalSubscribers": self.total_subscribers,
            "serverRpcInFlight": self.server_rpc_in_flight,
            "peerCount": self.peer_count,
            "statusCount": self.status_count,
            "topicCount": self.topic_count,
            "pendingSocketCount": self.pending_socket_count,
            "recentIdsSize": self.recent_ids_size,
        })
    }
}

/// `state()`: `{peers, lastStatus}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HubState {
    /// Registered peers in registration order.
    pub peers: Vec<PeerInfo>,
    /// Last status per kind.
    pub last_status: Vec<(String, StatusEntry)>,
}

impl HubState {
    /// The JSON object the reference returns.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "peers".into(),
            Value::Array(self.peers.iter().map(PeerInfo::to_value).collect()),
        );
        m.insert(
            "lastStatus".into(),
            link_protocol::messages::status_snapshot_value(
                self.last_status.iter().map(|(k, e)| (k.as_str(), e)),
            ),
        );
        Value::Object(m)
    }
}
