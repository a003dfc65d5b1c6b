//! Waiting on events and futures. Every wait is bounded by a hang guard
//! that only turns a hang into a failure; none is a timing assertion.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use link_hub::HubEvent;
use link_protocol::{DropReason, ProtocolError};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// The hang guard of every wait in this crate. No test waits this long
/// when it passes.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn guard<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("hang guard")
}

/// The first event matching `pred` on a hub or client event stream
/// (lagging is fine; a closed stream fails the test).
pub async fn next_event<T>(
    rx: &mut broadcast::Receiver<Arc<T>>,
    pred: impl FnMut(&T) -> bool,
) -> Arc<T> {
    next_event_within(WAIT, rx, pred).await
}

/// [`next_event`] with another hang guard (for paused-time tests whose
/// timer is longer than [`WAIT`]).
pub async fn next_event_within<T>(
    guard: Duration,
    rx: &mut broadcast::Receiver<Arc<T>>,
    mut pred: impl FnMut(&T) -> bool,
) -> Arc<T> {
    tokio::time::timeout(guard, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

/// Every event already in the channel (non-blocking).
pub fn drain_events<T>(rx: &mut broadcast::Receiver<Arc<T>>) -> Vec<Arc<T>> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// Waits for the hub's next `protocol-error` with `reason`.
pub async fn protocol_error(
    rx: &mut broadcast::Receiver<Arc<HubEvent>>,
    reason: DropReason,
) -> ProtocolError {
    let e = next_event(
        rx,
        |e| matches!(e, HubEvent::ProtocolError { error, .. } if error.reason == reason),
    )
    .await;
    match &*e {
        HubEvent::ProtocolError { error, .. } => error.clone(),
        _ => unreachable!("the predicate matched a protocol error"),
    }
}
