//! The router's mailbox: what sockets, tasks and the [`Hub`](crate::Hub)
//! handle send to the router task. A leaf module, so the sockets
//! (`connection.rs`), the shared state and the router import it without
//! importing each other.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use link_protocol::{Envelope, Hello};
use tokio::sync::{Notify, oneshot};

use crate::acl::Verdict;
use crate::events::{HubHealth, HubState};
use crate::outbox::Outbox;
use crate::routing::{ConnCtl, ConnId, Ticket};
use crate::server_rpc::ServerRpcResult;

/// Orders from the router to one socket's reader (evict, displace,
/// close, terminate), in the order sent. Holds nothing until an order is
/// sent: an idle socket pays for no channel block (a tokio channel
/// allocates one of 32 slots up front, about 1.5 KiB with its state).
#[derive(Debug, Default)]
pub(crate) struct ConnControl {
    queue: Mutex<VecDeque<ConnCtl>>,
    notify: Notify,
}

impl ConnControl {
    /// Queues an order and wakes the reader.
    pub(crate) fn send(&self, ctl: ConnCtl) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(ctl);
        self.notify.notify_one();
    }

    /// The next order; waits for one. Cancel-safe: an order is taken only
    /// by the poll that returns it.
    pub(crate) async fn recv(&self) -> ConnCtl {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(ctl) = next {
                return ctl;
            }
            // A `send` between the check and here leaves a permit.
            self.notify.notified().await;
        }
    }
}

/// Messages to the router.
pub(crate) enum RouterMsg {
    /// A socket's inbox has messages (sent once, when it stops being empty:
    /// `inbox.rs`). `Register`, `Inbound`, `RateLimitedRpc` and `Closed`
    /// come through a socket's inbox, never through the mailbox itself.
    Ready(Arc<crate::inbox::Inbox>),
    /// A socket was accepted (pending until `Register`).
    Attach {
        conn: ConnId,
        outbox: Arc<Outbox>,
        ctl: Arc<ConnControl>,
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
