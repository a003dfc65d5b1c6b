//! Helpers that touch process-wide state (the global subscriber, the panic
//! hook, signal handlers) get their own test process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use link_helpers::lifecycle::{GracefulShutdown, StepStatus, install_process_handlers};
use link_helpers::logging::{self, LogOptions, LoggingError};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn logging_init_twice_is_an_error_not_a_panic() {
    let quiet = || {
        LogOptions::new()
            .env_source(|_: &str| None)
            .level("off")
            .writer(std::io::sink)
    };
    let setup = logging::init(quiet()).unwrap();
    assert_eq!(setup.filter, "off");
    let err = logging::init(quiet()).unwrap_err();
    assert_eq!(err, LoggingError::AlreadyInitialized);
    assert_eq!(err.code(), "LOG_ALREADY_INITIALIZED");
}

/// Panics on a plain thread, outside any test harness capture.
fn panic_on_a_thread(msg: &'static str) {
    let _ = std::thread::spawn(move || std::panic::panic_any(msg)).join();
}

#[tokio::test]
async fn panics_and_sigterm_trigger_the_shutdown_until_the_guard_drops() {
    // A marker hook standing in for whatever was installed before us.
    let marker = Arc::new(AtomicUsize::new(0));
    let m = marker.clone();
    std::panic::set_hook(Box::new(move |_| {
        m.fetch_add(1, Ordering::SeqCst);
    }));

    // A panic anywhere runs the shutdown, after the previous hook.
    let sd = GracefulShutdown::new(WAIT);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    sd.step("flush", move || async move {
        r.fetch_add(1, Ordering::SeqCst);
        Ok::<(), String>(())
    });
    let handlers = install_process_handlers(&sd).unwrap();
    panic_on_a_thread("worker died");
    let out = tokio::time::timeout(WAIT, sd.wait()).await.unwrap();
    assert_eq!(out.reason, "panic: worker died");
    assert_eq!(out.steps[0].status, StepStatus::Ok);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(marker.load(Ordering::SeqCst), 1, "previous hook still ran");
    drop(handlers);

    // Dropping the guard restored the previous hook.
    panic_on_a_thread("after drop");
    assert_eq!(marker.load(Ordering::SeqCst), 2);

    // SIGTERM (unix): the handler is registered before install returns.
    #[cfg(unix)]
    {
        let sd = GracefulShutdown::new(WAIT);
        let handlers = install_process_handlers(&sd).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = tokio::time::timeout(WAIT, sd.wait()).await.unwrap();
        assert_eq!(out.reason, "SIGTERM");
        assert!(out.is_clean());
        drop(handlers);
    }
    drop(std::panic::take_hook());
}
