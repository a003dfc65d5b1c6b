//! Calling peers robustly.
//!
//! - [`wait_for_peer`]: resolves when a kind appears in the peer list,
//!   driven by the client's events (no polling).
//! - [`rpc_with_retry`] and [`retry`]: retry transient failures with linear
//!   backoff and jitter, honouring a cancellation token.
//! - [`SafePublisher`] and [`SafeSend`]: fire-and-forget wrappers that log
//!   transient failures and return `false` instead of failing.

mod retry;
mod safe;
mod wait;

pub use retry::{
    RandomSource, RetryError, RetryPolicy, RetryPolicyBuilder, is_retryable, retry, rpc_with_retry,
};
pub use safe::{SafePublisher, SafeSend};
pub use wait::{WaitError, wait_for_peer};
