//! Connections that are not WebSockets (yet): from the TCP accept, through
//! the TLS handshake and the HTTP request, until an upgrade is admitted
//! (then the pending-upgrade and per-IP caps of `limits.rs` take over) or
//! the connection ends. Plain HTTP connections (routes, the dashboard's
//! feeds) count for their whole life.
//!
//! Their number is capped by [`HubServerBuilder::max_http_connections`]:
//! past it the **oldest** is closed, so a client that opens sockets and
//! never finishes a request can neither exhaust memory nor lock good
//! clients out (their requests arrive in a few milliseconds, well before
//! they become the oldest). Each one's time is bounded by
//! [`HubServerBuilder::handshake_timeout`] (TLS handshake, then each
//! request's headers).
//!
//! [`HubServerBuilder::max_http_connections`]: super::HubServerBuilder::max_http_connections
//! [`HubServerBuilder::handshake_timeout`]: super::HubServerBuilder::handshake_timeout

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{HubServer, HubServerBuilder};

/// Default [`HubServerBuilder::max_http_connections`](super::HubServerBuilder::max_http_connections).
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1024;
/// Default [`HubServerBuilder::handshake_timeout`](super::HubServerBuilder::handshake_timeout).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The open non-WebSocket connections, oldest first.
pub(crate) struct Handshakes {
    inner: Arc<Shared>,
}

struct Shared {
    max: usize,
    state: Mutex<State>,
    /// Connections closed because the cap was reached, since the start.
    evicted: AtomicU64,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Id (arrival order) → the eviction signal of that connection.
    open: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handshakes {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Shared {
                max,
                state: Mutex::new(State::default()),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a new connection, closing the oldest ones past the cap.
    /// The returned [`Evicted`] resolves if this one is closed that way.
    pub(crate) fn enter(&self) -> (Slot, Evicted) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.inner.lock();
        let id = state.next;
        state.next += 1;
        state.open.insert(id, tx);
        let mut evicted = 0;
        while state.open.len() > self.inner.max {
            if let Some((_, oldest)) = state.open.pop_first() {
                let _ = oldest.send(());
                evicted += 1;
            }
        }
        drop(state);
        if evicted > 0 {
            self.inner.evicted.fetch_add(evicted, Ordering::Relaxed);
            tracing::debug!(evicted, "too many HTTP connections: closed the oldest");
        }
        let slot = Slot {
            inner: self.inner.clone(),
            id,
        };
        (slot, Evicted(rx))
    }

    /// Connections open now that are not (admitted) WebSockets.
    pub(crate) fn open(&self) -> usize {
        self.inner.lock().open.len()
    }

    /// Connections closed by the cap since the start.
    pub(crate) fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }
}

/// One connection's place; given back by [`release`](Self::release) (its
/// upgrade was admitted) or on drop (it ended).
pub(crate) struct Slot {
    inner: Arc<Shared>,
    id: u64,
}

impl Slot {
    /// Gives the place back; the connection can no longer be evicted.
    pub(crate) fn release(&self) {
        self.inner.lock().open.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Resolves when the connection was evicted; never once its place was
/// given back.
pub(crate) struct Evicted(oneshot::Receiver<()>);

impl Evicted {
    pub(crate) async fn wait(self) {
        if self.0.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl HubServerBuilder {
    /// Time a new connection has for its TLS handshake, and then for each
    /// HTTP request's headers (the upgrade request included; a client that
    /// sends them byte by byte is not given more). Past it the connection
    /// is closed (default 30 s; must be positive). An idle keep-alive
    /// connection gets the same time for its next request.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Cap on connections that are not WebSockets: in the TLS handshake,
    /// sending a request, or serving plain HTTP (routes, dashboard feeds).
    /// A WebSocket leaves this count when its upgrade is admitted. Past
    /// the cap the **oldest** such connection is closed (default 1024;
    /// must be positive).
    pub fn max_http_connections(mut self, n: usize) -> Self {
        self.max_http_connections = n;
        self
    }
}

impl HubServer {
    /// Connections open now that are not WebSockets (the count capped by
    /// [`HubServerBuilder::max_http_connections`]).
    pub fn http_connections(&self) -> usize {
        self.inner.service.handshakes.open()
    }

    /// Connections closed since the start because
    /// [`HubServerBuilder::max_http_connections`] was reached.
    pub fn http_connections_evicted(&self) -> u64 {
        self.inner.service.handshakes.evicted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_is_evicted_past_the_cap_and_a_released_one_never() {
        let h = Handshakes::new(2);
        let (first, first_evicted) = h.enter();
        let (second, second_evicted) = h.enter();
        second.release();
        let (_third, _t) = h.enter();
        assert_eq!(h.open(), 2);
        let (_fourth, _f) = h.enter();
        // `first` was the oldest still counted.
        first_evicted.wait().await;
        assert_eq!(h.evicted(), 1);
        assert_eq!(h.open(), 2);
        drop((first, second));
        let never = tokio::time::timeout(Duration::from_millis(1), second_evicted.wait());
        assert!(never.await.is_err(), "a released place is never evicted");
    }
}
