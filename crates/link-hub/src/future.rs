//! The boxed future every async hook returns: key resolvers, ACL hooks,
//! server RPC handlers, HTTP routes and shutdown hooks. A leaf module, so
//! the modules that define hooks (`acl`, `server_rpc`) and the one that
//! collects them (`config`) do not import each other.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, as returned by async hooks.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
