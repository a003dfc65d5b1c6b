//! Inbound RPC handlers: an async function of an [`RpcCall`] returning a
//! result or a [`HandlerError`]. Each call carries a cancellation token
//! that fires on the caller's `rpc.cancel`, on disconnect and on stop; once
//! it fired, the handler's answer is never sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use link_protocol::{Envelope, HandlerError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A boxed future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One inbound RPC.
#[derive(Clone, Debug)]
pub struct RpcCall {
    /// Request id.
    pub id: String,
    /// Caller kind, as authenticated by the hub.
    pub from: String,
    /// Handler name.
    pub rpc_type: String,
    /// Argument, if any.
    pub data: Option<Value>,
    /// Fires when the caller cancels, the link drops, or the client stops.
    pub cancel: CancellationToken,
    /// The verified request envelope.
    pub envelope: Envelope,
}

/// What a handler returns: the result (sent as `result`) or an error
/// (sanitised unless exposed).
pub type HandlerResult = Result<Value, HandlerError>;

/// A registered handler.
#[derive(Clone)]
pub struct RpcHandler(Arc<dyn Fn(RpcCall) -> BoxFuture<HandlerResult> + Send + Sync>);

impl RpcHandler {
    /// Wraps an async function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Self(Arc::new(move |call| Box::pin(f(call))))
    }

    pub(crate) fn call(&self, call: RpcCall) -> BoxFuture<HandlerResult> {
        (self.0)(call)
    }
}

impl std::fmt::Debug for RpcHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcHandler(..)")
    }
}
