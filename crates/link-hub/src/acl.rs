//! Access-control hooks (protocol §10): `can_rpc`, `can_publish`,
//! `can_subscribe`, `can_send`, each an async function of a context that
//! returns a [`Verdict`]. A hook that panics denies (fail closed) and logs a
//! warning. With no hook configured nothing is awaited at all.
//!
//! Publish, subscribe and send verdicts are awaited in order per socket (a
//! slow verdict cannot reorder one peer's gated messages); RPC verdicts run
//! concurrently.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;

use crate::future::BoxFuture;

/// An ACL decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse; `None` fields take the defaults (`Forbidden`, `<OP>_FORBIDDEN`).
    Deny {
        /// Error code override.
        code: Option<String>,
        /// Error text override.
        error: Option<String>,
    },
}

impl Verdict {
    /// A denial with the default code and text.
    pub fn deny() -> Self {
        Self::Deny {
            code: None,
            error: None,
        }
    }

    /// A denial with a custom code and text (empty strings keep the defaults).
    pub fn deny_with(code: impl Into<String>, error: impl Into<String>) -> Self {
        let (code, error) = (code.into(), error.into());
        Self::Deny {
            code: (!code.is_empty()).then_some(code),
            error: (!error.is_empty()).then_some(error),
        }
    }
}

impl From<bool> for Verdict {
    fn from(ok: bool) -> Self {
        if ok { Self::Allow } else { Self::deny() }
    }
}

/// Which operation a hook gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AclOp {
    /// `rpc.request`.
    Rpc,
    /// `topic.message` (publish).
    Publish,
    /// `topic.subscribe`.
    Subscribe,
    /// `direct`.
    Send,
}

impl AclOp {
    /// Event name of the op (`rpc`, `publish`, `subscribe`, `send`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rpc => "rpc",
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Send => "send",
        }
    }

    /// Default denial code.
    pub const fn default_code(self) -> &'static str {
        match self {
            Self::Rpc => "RPC_FORBIDDEN",
            Self::Publish => "PUBLISH_FORBIDDEN",
            Self::Subscribe => "SUBSCRIBE_FORBIDDEN",
            Self::Send => "SEND_FORBIDDEN",
        }
    }
}

/// Context of `can_rpc` (runs before routing, so `to` may be `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcContext {
    /// Authenticated caller.
    pub from: String,
    /// Target kind or `server`.
    pub to: Option<String>,
    /// Handler name.
    pub rpc_type: String,
    /// Argument.
    pub rpc_data: Option<Value>,
}

/// Context of `can_publish`.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishContext {
    /// Authenticated publisher.
    pub from: String,
    /// Topic (already validated).
    pub topic: String,
    /// Payload.
    pub payload: Option<Value>,
}

/// Context of `can_subscribe`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeContext {
    /// Authenticated subscriber.
    pub from: String,
    /// Topic (already validated).
    pub topic: String,
}

/// Context of `can_send`.
#[derive(Clone, Debug, PartialEq)]
pub struct SendContext {
    /// Authenticated sender.
    pub from: String,
    /// Target kind.
    pub to: String,
    /// `directType`.
    pub msg_type: String,
    /// `directData`.
    pub data: Option<Value>,
}

type Hook<C> = Arc<dyn Fn(C) -> BoxFuture<Verdict> + Send + Sync>;

fn hook<C, F, Fut>(f: F) -> Hook<C>
where
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Verdict> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// The four hooks; all optional.
#[derive(Clone, Default)]
pub struct Acl {
    pub(crate) can_rpc: Option<Hook<RpcContext>>,
    pub(crate) can_publish: Option<Hook<PublishContext>>,
    pub(crate) can_subscribe: Option<Hook<SubscribeContext>>,
    pub(crate) can_send: Option<Hook<SendContext>>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl")
            .field("can_rpc", &self.can_rpc.is_some())
            .field("can_publish", &self.can_publish.is_some())
            .field("can_subscribe", &self.can_subscribe.is_some())
            .field("can_send", &self.can_send.is_some())
            .finish()
    }
}

impl Acl {
    /// Gates every `rpc.request`.
    pub fn can_rpc<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(RpcContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Verdict> + Send + 'static,
    {
        self.can_rpc = Some(hook(f));
        self
    }

    /// Gates every publish.
    pub fn can_publish<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(PublishContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Verdict> + Send + 'static,
    {
        self.can_publish = Some(hook(f));
        self
    }

    /// Gates every subscribe.
    pub fn can_subscribe<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SubscribeContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Verdict> + Send + 'static,
    {
        self.can_subscribe = Some(hook(f));
        self
    }

    /// Gates every direct send.
    pub fn can_send<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SendContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Verdict> + Send + 'static,
    {
        self.can_send = Some(hook(f));
        self
    }
}

/// Runs a hook, turning a panic into a denial (fail closed).
pub(crate) async fn judge<C>(hook: &Hook<C>, ctx: C, op: AclOp) -> Verdict {
    match AssertUnwindSafe(hook(ctx)).catch_unwind().await {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(op = op.as_str(), "ACL hook panicked; denying (fail closed)");
            Verdict::deny()
        }
    }
}
