//! The nats-server under comparison: one we start (127.0.0.1, a free port)
//! or one already running.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::BenchError;
use crate::nats_spec::NatsSpec;

/// A reachable nats-server.
#[derive(Debug)]
pub(crate) struct NatsTarget {
    pub(crate) url: String,
    pub(crate) pid: Option<u32>,
    child: Option<Child>,
}

impl NatsTarget {
    pub(crate) async fn start(spec: &NatsSpec) -> Result<Self, BenchError> {
        match spec {
            NatsSpec::Url { url, pid } => Ok(Self {
                url: url.clone(),
                pid: *pid,
                child: None,
            }),
            NatsSpec::Spawn { program } => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| BenchError::io("finding a free port for nats-server", e))?
                    .port();
                let child = Command::new(program)
                    .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| {
                        BenchError::io(
                            format!(
                                "starting {} (install it: apt-get install nats-server)",
                                program.display()
                            ),
                            e,
                        )
                    })?;
                let pid = child.id();
                let deadline = Instant::now() + Duration::from_secs(10);
                while tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                {
                    if Instant::now() > deadline {
                        return Err(BenchError::Nats(format!(
                            "nats-server did not listen on 127.0.0.1:{port} within 10 s"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Self {
                    url: format!("nats://127.0.0.1:{port}"),
                    pid,
                    child: Some(child),
                })
            }
        }
    }

    pub(crate) async fn stop(self) {
        if let Some(mut child) = self.child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}
