//! Connection limits: WebSocket upgrades in progress, and WebSocket
//! connections per IP address. Each admitted upgrade holds an
//! [`Admission`]; its pending place is given back once the socket is
//! attached (or the upgrade fails), its per-IP slot when the connection
//! ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::HubServer;
use super::access::Refused;

/// The shared counters.
pub(crate) struct Limits {
    inner: Arc<Counters>,
}

struct Counters {
    max_pending: usize,
    max_per_ip: usize,
    state: Mutex<State>,
    /// WebSocket connections open (in progress or attached), for waiters.
    open: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    pending: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Limits {
    pub(crate) fn new(max_pending: usize, max_per_ip: usize) -> Self {
        Self {
            inner: Arc::new(Counters {
                max_pending,
                max_per_ip,
                state: Mutex::new(State::default()),
                open: watch::channel(0).0,
            }),
        }
    }

    /// Takes a pending place and a slot for `ip`, or says which cap is hit.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admission, Refused> {
        let ip = ip.to_canonical();
        let c = &self.inner;
        let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.pending >= c.max_pending {
            return Err(Refused::Pending);
        }
        let open = state.per_ip.get(&ip).copied().unwrap_or(0);
        if open >= c.max_per_ip {
            return Err(Refused::PerIp);
        }
        state.pending += 1;
        state.per_ip.insert(ip, open + 1);
        drop(state);
        c.open.send_modify(|n| *n += 1);
        Ok(Admission {
            counters: self.inner.clone(),
            ip,
            pending: true,
        })
    }

    fn open(&self) -> usize {
        *self.inner.open.borrow()
    }
}

/// One admitted WebSocket: a pending place until [`attached`](Self::attached),
/// and a per-IP slot until dropped.
pub(crate) struct Admission {
    counters: Arc<Counters>,
    ip: IpAddr,
    pending: bool,
}

impl Admission {
    /// The socket is attached: give the pending place back.
    pub(crate) fn attached(&mut self) {
        if std::mem::take(&mut self.pending) {
            let mut state = self.counters.lock();
            state.pending = state.pending.saturating_sub(1);
        }
    }
}

impl Counters {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.attached();
        let mut state = self.counters.lock();
        if let Some(n) = state.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
        drop(state);
        self.counters.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl HubServer {
    /// WebSocket connections the server holds now, upgrading or attached
    /// (the count behind the per-IP and pending-upgrade caps; connections
    /// attached with [`Hub::attach`](crate::Hub::attach) are not counted).
    pub fn open_connections(&self) -> usize {
        self.inner.service.access.limits.open()
    }

    /// Waits until at most `n` WebSocket connections are open, that is
    /// until the slots of closed connections have been given back.
    pub async fn wait_open_connections(&self, n: usize) {
        let mut rx = self.inner.service.access.limits.inner.open.subscribe();
        // The sender lives in the service, which `self` keeps alive.
        let _ = rx.wait_for(|open| *open <= n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let limits = Limits::new(2, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let mut first = limits.admit(a).ok().unwrap();
        let second = limits.admit(b).ok().unwrap();
        // Same host (the mapped form is canonicalised): per-IP cap, but the
        // pending cap is reached first.
        assert!(matches!(limits.admit(a), Err(Refused::Pending)));
        first.attached();
        assert!(matches!(limits.admit(a), Err(Refused::PerIp)));
        let other = limits.admit(c).ok().unwrap();
        assert_eq!(limits.open(), 3);
        drop(second);
        assert_eq!(limits.open(), 2);
        drop((first, other));
        assert_eq!(limits.open(), 0);
        assert!(limits.inner.lock().per_ip.is_empty());
        assert_eq!(limits.inner.lock().pending, 0);
    }
}
