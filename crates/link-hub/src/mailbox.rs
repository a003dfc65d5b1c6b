//! The router's mailbox: what sockets, tasks and the [`Hub`](crate::Hub)
//! handle send to the router task. A leaf module, so the sockets
//! (`connection.rs`), the shared state and the router import it without
//! importing each other.

use std::net::SocketAddr;
use std::sync::Arc;

use link_protocol::{Envelope, Hello};
use tokio::sync::{mpsc, oneshot};

use crate::acl::Verdict;
use crate::events::{HubHealth, HubState};
use crate::outbox::Outbox;
use crate::routing::{ConnCtl, ConnId, Ticket};
use crate::server_rpc::ServerRpcResult;

/// Messages to the router.
pub(crate) enum RouterMsg {
    /// A socket was accepted (pending until `Register`).
    Attach {
        conn: ConnId,
        outbox: Arc<Outbox>,
        ctl: mpsc::UnboundedSender<ConnCtl>,
        remote: Option<SocketAddr>,
    },
    /// The socket's hello verified: the hello frame's id and ts, and
    /// whether it asked for the `peers.delta` extension.
    Register {
        conn: ConnId,
        hello: Hello,
        hello_id: (Arc<str>, f64),
        peer_deltas: bool,
    },
    /// A verified message.
    Inbound {
        conn: ConnId,
        kind: Arc<str>,
        env: Envelope,
    },
    /// An `rpc.request` refused by the sender's rate limit: answer it
    /// `RPC_RATE_LIMITED`.
    RateLimitedRpc {
        conn: ConnId,
        kind: Arc<str>,
        id: Box<str>,
    },
    /// An ACL hook answered.
    Verdict { ticket: Ticket, verdict: Verdict },
    /// A server RPC handler finished.
    ServerRpcDone {
        ticket: Ticket,
        result: ServerRpcResult,
    },
    /// The socket is gone.
    Closed {
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    },
    /// What the cluster driver learned from NATS.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Cluster(crate::cluster::link::ClusterIn),
    /// This hub's topics (another hub's `link.topic.list` asks).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    LocalTopics(oneshot::Sender<crate::routing::TopicMap>),
    /// `health()`.
    Health(oneshot::Sender<HubHealth>),
    /// `state()`.
    State(oneshot::Sender<HubState>),
    /// The table's counters and gauges, for a `/metrics` scrape.
    Stats(oneshot::Sender<crate::routing::TableStats>),
    /// What the live dashboard shows of the table (asked only while a
    /// dashboard page is open).
    Dashboard(oneshot::Sender<crate::routing::DashboardView>),
    /// Close every socket with this code (server shutdown).
    CloseAll {
        code: Option<u16>,
        reason: String,
        done: oneshot::Sender<usize>,
    },
    /// Terminate every socket still attached.
    TerminateAll(oneshot::Sender<()>),
    /// `stop()`: pending sockets get 1001 `hub stopped`, others a close
    /// without code; all state is cleared.
    Stop(oneshot::Sender<()>),
}
