//! [`GracefulShutdown`]: ordered async shutdown steps under one watchdog,
//! and [`install_process_handlers`] to trigger them on SIGINT, SIGTERM or
//! a panic.
//!
//! ```text
//!  SIGINT / SIGTERM / panic / shutdown("reason")
//!        │  (first trigger wins; later ones are no-ops)
//!        ▼
//!  step 1 ─► step 2 ─► … ─► ShutdownOutcome      (all under the watchdog)
//!  failed or panicked steps are logged and the next step still runs;
//!  when the watchdog fires, the running step is dropped and the rest skipped
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use link_helpers::lifecycle::{install_process_handlers, GracefulShutdown};
//!
//! # async fn demo(client: link_client::LinkClient) -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = GracefulShutdown::new(Duration::from_secs(10));
//! let c = client.clone();
//! shutdown.step("stop link", move || async move {
//!     c.stop().await;
//!     Ok::<(), std::convert::Infallible>(())
//! });
//! let _handlers = install_process_handlers(&shutdown)?;
//! let outcome = shutdown.wait().await; // resolves once a signal ran the steps
//! std::process::exit(if outcome.is_clean() { 0 } else { 1 });
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a step's factory returns.
pub type StepFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;
type StepFn = Box<dyn FnOnce() -> StepFuture + Send + 'static>;

/// How one step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Completed.
    Ok,
    /// Returned an error (its text).
    Failed(String),
    /// Panicked (the panic message).
    Panicked(String),
    /// Was running when the watchdog fired.
    TimedOut,
    /// Never started: the watchdog had fired.
    Skipped,
}

/// One step's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// The step's name.
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
}

/// The result of a shutdown, the same for every caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// What triggered it (`SIGTERM`, `SIGINT`, `panic: …`, or the caller's reason).
    pub reason: String,
    /// Every registered step, in order.
    pub steps: Vec<StepReport>,
    /// The watchdog fired.
    pub timed_out: bool,
}

impl ShutdownOutcome {
    /// Every step completed in time.
    pub fn is_clean(&self) -> bool {
        !self.timed_out && self.steps.iter().all(|s| s.status == StepStatus::Ok)
    }
}

struct Inner {
    steps: Mutex<Vec<(String, StepFn)>>,
    watchdog: Duration,
    started: AtomicBool,
    done: watch::Sender<Option<ShutdownOutcome>>,
    handle: Option<Handle>,
}

/// Ordered shutdown steps run once under a watchdog. Cheap to clone; every
/// clone drives the same shutdown.
#[derive(Clone)]
pub struct GracefulShutdown {
    inner: Arc<Inner>,
}

impl fmt::Debug for GracefulShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracefulShutdown")
            .field("watchdog", &self.inner.watchdog)
            .field("triggered", &self.is_triggered())
            .finish_non_exhaustive()
    }
}

impl GracefulShutdown {
    /// A shutdown whose steps must all finish within `watchdog`. When
    /// created inside a tokio runtime, [`trigger`](Self::trigger) can later
    /// be called from any thread.
    pub fn new(watchdog: Duration) -> Self {
        let (done, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                steps: Mutex::new(Vec::new()),
                watchdog,
                started: AtomicBool::new(false),
                done,
                handle: Handle::try_current().ok(),
            }),
        }
    }

    /// Appends a step. `f` is called once, when the shutdown reaches it.
    /// Steps added after the shutdown started are ignored (with a warning).
    pub fn step<F, Fut, E>(&self, name: impl Into<String>, f: F) -> &Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let name = name.into();
        if self.is_triggered() {
            tracing::warn!(step = %name, "shutdown already started: step ignored");
            return self;
        }
        let boxed: StepFn =
            Box::new(move || Box::pin(f().map(|r| r.map_err(|e| e.to_string()))) as StepFuture);
        self.inner
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, boxed));
        self
    }

    /// The shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Runs the steps (once) and returns the outcome. Later and concurrent
    /// calls run nothing and return the same outcome. The steps run in a
    /// task of their own, so dropping this future does not interrupt them.
    pub async fn shutdown(&self, reason: impl Into<String>) -> ShutdownOutcome {
        let reason = reason.into();
        if let Ok(handle) = Handle::try_current() {
            self.start_on(&handle, reason);
        }
        self.wait().await
    }

    /// Starts the shutdown without waiting; `false` if it had already
    /// started or no tokio runtime is reachable. Callable from any thread.
    pub fn trigger(&self, reason: impl Into<String>) -> bool {
        match Handle::try_current()
            .ok()
            .or_else(|| self.inner.handle.clone())
        {
            Some(handle) => self.start_on(&handle, reason.into()),
            None => false,
        }
    }

    /// Waits until a shutdown (started by anyone) has finished.
    pub async fn wait(&self) -> ShutdownOutcome {
        let mut rx = self.inner.done.subscribe();
        loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                return o;
            }
            if rx.changed().await.is_err() {
                // Unreachable while `self` holds the sender; wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    fn start_on(&self, handle: &Handle, reason: String) -> bool {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return false;
        }
        let me = self.clone();
        handle.spawn(async move {
            let outcome = me.run(reason).await;
            me.inner.done.send_replace(Some(outcome));
        });
        true
    }

    async fn run(&self, reason: String) -> ShutdownOutcome {
        let steps = std::mem::take(
            &mut *self
                .inner
                .steps
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tracing::info!(%reason, steps = steps.len(), "graceful shutdown started");
        let deadline = tokio::time::Instant::now() + self.inner.watchdog;
        let mut reports = Vec::with_capacity(steps.len());
        let mut timed_out = false;
        for (name, f) in steps {
            if timed_out {
                reports.push(StepReport {
                    name,
                    status: StepStatus::Skipped,
                });
                continue;
            }
            let fut = AssertUnwindSafe(async move { f().await }).catch_unwind();
            let status = match tokio::time::timeout_at(deadline, fut).await {
                Ok(Ok(Ok(()))) => StepStatus::Ok,
                Ok(Ok(Err(e))) => {
                    tracing::error!(step = %name, "shutdown step failed: {e}");
                    StepStatus::Failed(e)
                }
                Ok(Err(panic)) => {
                    let msg = panic_message(panic.as_ref());
                    tracing::error!(step = %name, "shutdown step panicked: {msg}");
                    StepStatus::Panicked(msg)
                }
                Err(_) => {
                    tracing::error!(step = %name, watchdog = ?self.inner.watchdog, "shutdown watchdog fired");
                    timed_out = true;
                    StepStatus::TimedOut
                }
            };
            reports.push(StepReport { name, status });
        }
        let outcome = ShutdownOutcome {
            reason,
            steps: reports,
            timed_out,
        };
        tracing::info!(clean = outcome.is_clean(), "graceful shutdown finished");
        outcome
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Why the process handlers could not be installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// Not called inside a tokio runtime.
    #[error("install_process_handlers needs a tokio runtime")]
    NoRuntime,
    /// The OS refused a signal handler.
    #[error("cannot listen for {signal}: {error}")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The OS error.
        error: String,
    },
}

impl LifecycleError {
    /// Stable code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NoRuntime => "NO_RUNTIME",
            Self::Signal { .. } => "SIGNAL_INSTALL_FAILED",
        }
    }
}

type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Installed signal and panic handlers; dropping it removes them.
///
/// On drop the previous panic hook is restored (if another hook was set
/// after this one, it is replaced too) and signals stop triggering the
/// shutdown. Tokio cannot give an OS signal back: after the drop, SIGINT
/// and SIGTERM are still caught (and ignored) rather than ending the
/// process by default.
#[must_use = "the handlers are removed when this guard is dropped"]
pub struct ProcessHandlers {
    signals: JoinHandle<()>,
    previous_hook: Option<Arc<PanicHook>>,
}

impl fmt::Debug for ProcessHandlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandlers").finish_non_exhaustive()
    }
}

impl Drop for ProcessHandlers {
    fn drop(&mut self) {
        self.signals.abort();
        if let Some(prev) = self.previous_hook.take() {
            std::panic::set_hook(Box::new(move |info| prev(info)));
        }
    }
}

/// Triggers `shutdown` on SIGINT or SIGTERM (Ctrl-C elsewhere than Unix)
/// and on any panic (after the previous panic hook ran, so the panic is
/// still printed). Must be called inside a tokio runtime.
pub fn install_process_handlers(
    shutdown: &GracefulShutdown,
) -> Result<ProcessHandlers, LifecycleError> {
    let handle = Handle::try_current().map_err(|_| LifecycleError::NoRuntime)?;
    let signals = spawn_signal_listener(&handle, shutdown.clone())?;

    let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
    let prev = previous.clone();
    let sd = shutdown.clone();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        let msg = panic_message(info.payload());
        sd.start_on(&handle, format!("panic: {msg}"));
    }));
    Ok(ProcessHandlers {
        signals,
        previous_hook: Some(previous),
    })
}

#[cfg(unix)]
fn spawn_signal_listener(
    handle: &Handle,
    shutdown: GracefulShutdown,
) -> Result<JoinHandle<()>, LifecycleError> {
    use tokio::signal::unix::{SignalKind, signal};
    let _guard = handle.enter();
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|e| LifecycleError::Signal {
            signal: name,
            error: e.to_string(),
        })
    };
    // Registered now, so a signal sent right after this returns is caught.
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    Ok(handle.spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "signal received");
        shutdown.trigger(name);
    }))
}

#[cfg(not(unix))]
fn spawn_signal_listener(
    handle: &Handle,
    shutdown: GracefulShutdown,
) -> Result<JoinHandle<()>, LifecycleError> {
    Ok(handle.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "ctrl-c", "signal received");
            shutdown.trigger("SIGINT");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Arc<Mutex<Vec<&'static str>>> {
        Arc::default()
    }

    fn push(l: &Arc<Mutex<Vec<&'static str>>>, s: &'static str) {
        l.lock().unwrap().push(s);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_run_in_order_and_failures_do_not_stop_the_rest() {
        let sd = GracefulShutdown::new(Duration::from_secs(5));
        let l = log();
        let (a, b, c) = (l.clone(), l.clone(), l.clone());
        sd.step("first", move || async move {
            push(&a, "first");
            Ok::<(), String>(())
        })
        .step("fails", move || async move {
            push(&b, "fails");
            Err("disk on fire")
        })
        .step("panics", || async {
            if true {
                panic!("boom");
            }
            Ok::<(), String>(())
        })
        .step("last", move || async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            push(&c, "last");
            Ok::<(), String>(())
        });
        let out = sd.shutdown("test").await;
        assert_eq!(*l.lock().unwrap(), ["first", "fails", "last"]);
        let statuses: Vec<_> = out
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.status.clone()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("first", StepStatus::Ok),
                ("fails", StepStatus::Failed("disk on fire".into())),
                ("panics", StepStatus::Panicked("boom".into())),
                ("last", StepStatus::Ok),
            ]
        );
        assert_eq!(out.reason, "test");
        assert!(!out.timed_out);
        assert!(!out.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_stops_a_hung_step_and_skips_the_rest() {
        let sd = GracefulShutdown::new(Duration::from_secs(5));
        sd.step("quick", || async { Ok::<(), String>(()) })
            .step("hangs", || async {
                std::future::pending::<()>().await;
                Ok::<(), String>(())
            })
            .step("never", || async { Ok::<(), String>(()) });
        let out = sd.shutdown("test").await;
        let statuses: Vec<_> = out.steps.iter().map(|s| s.status.clone()).collect();
        assert_eq!(
            statuses,
            [StepStatus::Ok, StepStatus::TimedOut, StepStatus::Skipped]
        );
        assert!(out.timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn second_call_is_a_no_op_with_the_same_outcome() {
        let sd = GracefulShutdown::new(Duration::from_secs(5));
        let runs = Arc::new(Mutex::new(0));
        let r = runs.clone();
        sd.step("count", move || async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            *r.lock().unwrap() += 1;
            Ok::<(), String>(())
        });
        let other = sd.clone();
        let (first, concurrent) = tokio::join!(sd.shutdown("one"), other.shutdown("two"));
        let later = sd.shutdown("three").await;
        assert_eq!(*runs.lock().unwrap(), 1);
        assert_eq!(first, concurrent);
        assert_eq!(first, later);
        assert_eq!(first.reason, "one");
        assert!(!sd.trigger("four"));

        sd.step("late", || async { Ok::<(), String>(()) });
        assert_eq!(sd.shutdown("five").await.steps.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn trigger_runs_in_the_background_and_wait_sees_it() {
        let sd = GracefulShutdown::new(Duration::from_secs(5));
        sd.step("s", || async { Ok::<(), String>(()) });
        let waiter = tokio::spawn({
            let sd = sd.clone();
            async move { sd.wait().await }
        });
        assert!(!sd.is_triggered());
        assert!(sd.trigger("background"));
        assert!(sd.is_triggered());
        let out = waiter.await.unwrap();
        assert_eq!(out.reason, "background");
        assert!(out.is_clean());
    }

    #[test]
    fn trigger_without_a_runtime_does_nothing() {
        let sd = GracefulShutdown::new(Duration::from_secs(1));
        assert!(!sd.trigger("nowhere"));
        assert!(!sd.is_triggered());
        assert_eq!(
            install_process_handlers(&sd).unwrap_err(),
            LifecycleError::NoRuntime
        );
    }
}
