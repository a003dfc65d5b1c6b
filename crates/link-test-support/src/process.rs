//! Child processes that announce themselves on stderr (Chromium's DevTools
//! address, nats-server's port): spawn with stderr piped, wait for the line
//! that says it is ready, keep draining the rest so the child never blocks
//! on a full pipe.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Spawns `command` (stdin and stdout closed, stderr piped, killed on
/// drop) and returns it with `ready(line)`'s value for the first stderr
/// line it accepts. Panics, naming `what` and showing the stderr read so
/// far, when the child exits first or `wait` passes.
pub(crate) async fn spawn_until<T>(
    mut command: Command,
    what: &str,
    wait: Duration,
    mut ready: impl FnMut(&str) -> Option<T>,
) -> (Child, T) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(wait, async {
        while let Some(line) = lines.next_line().await.expect("the child's stderr") {
            if let Some(found) = ready(&line) {
                return found;
            }
            seen.push(line);
        }
        panic!(
            "{what} exited before it was ready; its stderr:\n{}",
            seen.join("\n")
        );
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not say it was ready within {wait:?}"));
    // Keep draining stderr so that the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, found)
}
