//! Server RPCs: handlers for `rpc.request` frames addressed `to: "server"`
//! (protocol §8). User handlers run as their own tasks, bounded by
//! `max_concurrent_rpc`; their errors are sanitised unless exposed. The
//! built-ins `link.topic.list`, `link.health` and `link.peer.list` are
//! answered by the router itself unless a user handler of the same name
//! overrides them.

use std::future::Future;
use std::sync::Arc;

use link_protocol::{Envelope, HandlerError};
use serde_json::Value;

use crate::future::BoxFuture;

/// Name of the built-in topic listing RPC.
pub const TOPIC_LIST: &str = "link.topic.list";
/// Name of the built-in health RPC.
pub const HEALTH: &str = "link.health";
/// Name of the built-in peer listing RPC (ours; the reference has none):
/// `{peers:[…]}` in the `peers.update` shape, all peers or, with
/// `rpcData: {kind}`, that one. Peer discovery when
/// [`crate::config::PeerUpdates::Off`] is set.
pub const PEER_LIST: &str = "link.peer.list";

/// One server RPC call.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerRpcRequest {
    /// Request id (the response reuses it).
    pub id: String,
    /// Authenticated caller kind (never the claimed `from`).
    pub from: String,
    /// Handler name.
    pub rpc_type: String,
    /// Argument, if any.
    pub rpc_data: Option<Value>,
    /// The verified envelope with `from` as received (for auditing).
    pub envelope: Envelope,
}

/// What a server handler returns: the result (sent as `result`) or an error.
pub type ServerRpcResult = Result<Value, HandlerError>;

/// A registered server RPC handler.
#[derive(Clone)]
pub struct ServerRpcHandler(
    Arc<dyn Fn(ServerRpcRequest) -> BoxFuture<ServerRpcResult> + Send + Sync>,
);

impl ServerRpcHandler {
    /// Wraps an async function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(ServerRpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ServerRpcResult> + Send + 'static,
    {
        Self(Arc::new(move |req| Box::pin(f(req))))
    }

    pub(crate) fn call(&self, req: ServerRpcRequest) -> BoxFuture<ServerRpcResult> {
        (self.0)(req)
    }
}

impl std::fmt::Debug for ServerRpcHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerRpcHandler(..)")
    }
}
