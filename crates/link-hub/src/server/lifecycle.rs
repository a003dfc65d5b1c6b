//! `start()`, `stop()` and the signal listener.
//!
//! The phase mutex serialises `start` against `stop`: `start` holds it
//! while binding, `stop` takes the running parts out of it. The stop
//! sequence runs once; later and concurrent callers wait for its outcome.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{HubServer, Inner, SHUTDOWN_CLOSE_CODE, SHUTDOWN_CLOSE_REASON, ServerError};

pub(crate) enum Phase {
    Idle,
    Running(Running),
    /// Stopping or stopped: the running parts were taken by `stop`.
    Stopped,
}

pub(crate) struct Running {
    accept: JoinHandle<()>,
    /// `true` stops accepting and shuts HTTP connections down gracefully;
    /// `closed()` resolves once the accept loop and every connection ended.
    shutdown: watch::Sender<bool>,
    signals: Option<JoinHandle<()>>,
    /// The SIGHUP listener and file watch that reload the TLS certificate.
    reload: Option<JoinHandle<()>>,
}

/// How a stop sequence failed (cloneable, for every waiter).
#[derive(Clone, Copy, Debug)]
pub(crate) enum StopFailure {
    Timeout,
}

impl HubServer {
    /// Binds and starts accepting. Idempotent while running; fails with
    /// [`ServerError::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn start(&self) -> Result<(), ServerError> {
        let mut phase = self.inner.phase.lock().await;
        match &*phase {
            Phase::Running(_) => return Ok(()),
            Phase::Stopped => return Err(ServerError::Stopped),
            Phase::Idle if self.inner.stop_begun.load(Ordering::Acquire) => {
                return Err(ServerError::Stopped);
            }
            Phase::Idle => {}
        }
        let service = &self.inner.service;
        let bind = service.settings.bind;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| ServerError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: bind, source })?;
        let signals = if service.settings.handle_signals {
            Some(spawn_signal_listener(Arc::downgrade(&self.inner)).map_err(ServerError::Signals)?)
        } else {
            None
        };
        let reload = super::tls::spawn_reloader(
            Arc::downgrade(&self.inner),
            service.settings.handle_signals,
            service.settings.tls_watch,
        )
        .map_err(ServerError::Signals)?;
        let _ = self.inner.local_addr.set(addr);
        let (shutdown, rx) = watch::channel(false);
        let accept = tokio::spawn(super::accept::run(listener, service.clone(), rx));
        *phase = Phase::Running(Running {
            accept,
            shutdown,
            signals,
            reload,
        });
        self.inner.started.store(true, Ordering::Release);
        let path = service.settings.path.as_deref().unwrap_or("");
        let scheme = service.settings.scheme();
        tracing::info!(%addr, "link hub listening on {scheme}://{addr}{path}");
        Ok(())
    }

    /// Stops gracefully, once; later calls wait for the same outcome.
    ///
    /// 1. stop accepting (new upgrades get `503`);
    /// 2. close every socket with 1001 `server shutdown`;
    /// 3. wait the drain delay (if any socket was open), then drop the
    ///    sockets still open;
    /// 4. wait for the HTTP connections to finish their requests;
    /// 5. [`Hub::stop`](crate::Hub::stop);
    /// 6. run the `on_shutdown` hook.
    ///
    /// The sequence is bounded by the shutdown timeout
    /// ([`ServerError::ShutdownTimeout`] past it). Calling `stop` before
    /// `start` is allowed and makes the server unstartable.
    pub async fn stop(&self) -> Result<(), ServerError> {
        self.stop_with(SHUTDOWN_CLOSE_REASON).await
    }

    /// [`stop`](Self::stop) with another reason in the 1001 close frame
    /// (the reference's `stop(reason)`; `stop()` uses `server shutdown`),
    /// e.g. `"deploying v2"`. A reason over the WebSocket limit of 123
    /// bytes is cut at a character boundary. Only the first stop's reason
    /// is used: later calls wait for the same outcome.
    pub async fn stop_with(&self, reason: impl Into<String>) -> Result<(), ServerError> {
        if self.inner.stop_begun.swap(true, Ordering::AcqRel) {
            return self.stopped().await;
        }
        let service = self.inner.service.clone();
        let _ = service.stop_reason.set(close_reason(reason.into()));
        service.stopping.store(true, Ordering::Release);
        if let Some(dashboard) = &service.dashboard {
            dashboard.close();
        }
        let running = match std::mem::replace(&mut *self.inner.phase.lock().await, Phase::Stopped) {
            Phase::Running(running) => Some(running),
            Phase::Idle | Phase::Stopped => None,
        };
        let accept_abort = running.as_ref().map(|r| r.accept.abort_handle());
        let timeout = service.settings.shutdown_timeout;
        let outcome = match tokio::time::timeout(timeout, self.shutdown_sequence(running)).await {
            Ok(()) => Ok(()),
            Err(_) => {
                tracing::error!(
                    ?timeout,
                    "graceful shutdown timed out; dropping what is left"
                );
                if let Some(accept) = accept_abort {
                    accept.abort();
                }
                let hub = service.hub.clone();
                tokio::spawn(async move {
                    hub.terminate_all().await;
                    hub.stop().await;
                });
                Err(StopFailure::Timeout)
            }
        };
        self.inner.outcome.send_replace(Some(outcome));
        self.outcome_to_result(outcome)
    }

    async fn shutdown_sequence(&self, running: Option<Running>) {
        let service = &self.inner.service;
        let hub = &service.hub;
        let mut connections = None;
        if let Some(running) = running {
            if let Some(signals) = running.signals {
                signals.abort();
            }
            if let Some(reload) = running.reload {
                reload.abort();
            }
            let _ = running.shutdown.send(true);
            let _ = running.accept.await;
            // Upgrades already answered attach (or close, seeing `stopping`).
            service.upgrades.closed().await;
            connections = Some(running.shutdown);
        }
        let reason = service
            .stop_reason
            .get()
            .map_or(SHUTDOWN_CLOSE_REASON, String::as_str);
        let open = hub.close_all(Some(SHUTDOWN_CLOSE_CODE), reason).await;
        tracing::info!(open, "closing sockets: {reason}");
        let drain = service.settings.drain_delay;
        if open > 0 && !drain.is_zero() {
            tokio::time::sleep(drain).await;
        }
        hub.terminate_all().await;
        if let Some(connections) = connections {
            connections.closed().await;
        }
        hub.stop().await;
        if let Some(hook) = self.take_on_shutdown() {
            hook().await;
        }
        tracing::info!("link hub stopped");
    }
}

/// Spawns the SIGINT/SIGTERM listener. The streams are registered before
/// this returns, so a signal sent once `start` has returned is seen.
fn spawn_signal_listener(server: Weak<Inner>) -> std::io::Result<JoinHandle<()>> {
    #[cfg(unix)]
    let received = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        async move {
            tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            }
        }
    };
    #[cfg(not(unix))]
    let received = async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    };
    Ok(tokio::spawn(async move {
        let signal = received.await;
        let Some(inner) = server.upgrade() else {
            return;
        };
        tracing::info!(signal, "signal received; shutting down");
        let server = HubServer { inner };
        // Its own task: `stop` aborts this one.
        tokio::spawn(async move {
            if let Err(error) = server.stop().await {
                tracing::error!(%error, "shutdown failed");
            }
        });
    }))
}

/// Longest close reason a WebSocket close frame carries (RFC 6455 §5.5:
/// 125 bytes of payload, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes at a character boundary.
fn close_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("deploying v2".into()), "deploying v2");
        let cut = close_reason("é".repeat(100));
        assert_eq!(cut.len(), 122, "61 two-byte characters");
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
