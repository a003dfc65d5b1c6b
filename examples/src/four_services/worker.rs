//! [`Worker`]: loads its credentials from the vault, then serves `job.run`
//! and reports progress to the caller with direct messages.

use std::sync::{Arc, Weak};
use std::time::Duration;

use link::helpers::rpc::{RetryPolicy, is_retryable, wait_for_peer};
use link::helpers::secrets::{SecretChange, Secrets, SecretsError, load_secrets, watch_secrets};
use link::{ClientConfigBuilder, HandlerError, LinkClient};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{CREDENTIALS, JOB_RPC, PROGRESS, STEPS, VAULT, WORKER};
use crate::Result;

/// Deadline of one credentials load (all secrets together).
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// Where the worker's boot stands.
#[derive(Clone, Debug)]
enum Boot {
    /// Waiting for the vault or loading.
    Loading,
    /// Credentials loaded; `watching` once rotations are followed.
    Ready {
        secrets: Arc<Secrets>,
        watching: bool,
    },
    /// Boot failed; jobs are refused.
    Failed(String),
}

/// The worker (kind [`WORKER`]).
#[derive(Debug)]
pub struct Worker {
    // The `job.run` handler holds a `Weak` to this client, so the client
    // does not keep itself alive through its own handler table.
    client: Arc<LinkClient>,
    boot: watch::Receiver<Boot>,
    rotations: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    task: JoinHandle<()>,
}

impl Worker {
    /// Connects as [`WORKER`] with `base` (url and key) and boots in the
    /// background: wait for the vault, load the credentials (retried while
    /// the failure is transient), then follow rotations.
    pub fn start(base: ClientConfigBuilder) -> Result<Self> {
        let (boot_tx, boot) = watch::channel(Boot::Loading);
        let client = Arc::new(LinkClient::new(base.kind(WORKER).build()?));
        let weak = Arc::downgrade(&client);
        let jobs_boot = boot.clone();
        client.handle(JOB_RPC, move |call| {
            let (client, boot) = (weak.clone(), jobs_boot.clone());
            async move {
                let secrets = credentials(boot).await?;
                run_job(&client, &call.from, call.data.as_ref(), &secrets)
            }
        });
        client.start();
        let (rot_tx, rotations) = mpsc::unbounded_channel();
        let task = tokio::spawn(boot_sequence((*client).clone(), boot_tx, rot_tx));
        Ok(Self {
            client,
            boot,
            rotations: tokio::sync::Mutex::new(rotations),
            task,
        })
    }

    /// The worker's client.
    pub fn client(&self) -> &LinkClient {
        &self.client
    }

    /// Waits until the credentials are loaded; their names.
    pub async fn credentials(&self) -> Result<Vec<String>> {
        let secrets = credentials(self.boot.clone())
            .await
            .map_err(|e| e.text().to_owned())?;
        Ok(secrets.names().map(str::to_owned).collect())
    }

    /// Waits until the worker follows `secs.changed.<ns>`.
    pub async fn watching(&self) -> Result<()> {
        let mut boot = self.boot.clone();
        let state = boot
            .wait_for(|b| matches!(b, Boot::Ready { watching: true, .. } | Boot::Failed(_)))
            .await
            .map_err(|_| "the worker stopped")?;
        match &*state {
            Boot::Failed(e) => Err(e.clone().into()),
            _ => Ok(()),
        }
    }

    /// The next credential refreshed after a rotation.
    pub async fn next_rotation(&self) -> Result<String> {
        let mut rx = self.rotations.lock().await;
        Ok(rx.recv().await.ok_or("the worker stopped")?)
    }

    /// Stops the boot task and the link.
    pub async fn stop(&self) {
        self.task.abort();
        self.client.stop().await;
    }
}

/// Waits for the boot to finish; the credentials, or an error a caller sees.
async fn credentials(mut boot: watch::Receiver<Boot>) -> Result<Arc<Secrets>, HandlerError> {
    let state = boot
        .wait_for(|b| !matches!(b, Boot::Loading))
        .await
        .map_err(|_| HandlerError::new("WORKER_STOPPED", "the worker is stopping"))?;
    match &*state {
        Boot::Ready { secrets, .. } => Ok(secrets.clone()),
        Boot::Failed(e) => Err(HandlerError::new("CREDENTIALS_UNAVAILABLE", e.clone())),
        Boot::Loading => Err(HandlerError::internal("unreachable boot state")),
    }
}

/// One job: a progress message per step to the caller, then the result.
fn run_job(
    client: &Weak<LinkClient>,
    caller: &str,
    data: Option<&Value>,
    secrets: &Secrets,
) -> Result<Value, HandlerError> {
    let client = client
        .upgrade()
        .ok_or_else(|| HandlerError::new("WORKER_STOPPED", "the worker is stopping"))?;
    let job = data
        .and_then(|d| d.get("job"))
        .and_then(Value::as_u64)
        .ok_or_else(|| HandlerError::new("BAD_REQUEST", "expected {\"job\": <number>}"))?;
    let input = data
        .and_then(|d| d.get("input"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    // A real worker would call an API with API_TOKEN here.
    let token = secrets.get("API_TOKEN").unwrap_or_default();
    for step in 1..=STEPS {
        let progress = json!({ "job": job, "step": step, "of": STEPS });
        // Fire-and-forget: a lost progress message does not fail the job.
        if let Err(e) = client.send(caller, PROGRESS, Some(progress)) {
            tracing::warn!(job, step, code = e.code(), "progress not sent: {e}");
        }
    }
    tracing::info!(job, %caller, "job done");
    Ok(json!({
        "job": job,
        "output": input.to_uppercase(),
        "authorized": !token.is_empty(),
    }))
}

/// Boot: wait for the vault, load the credentials with retries, then
/// follow rotations until the worker stops.
async fn boot_sequence(
    client: LinkClient,
    boot: watch::Sender<Boot>,
    rotations: mpsc::UnboundedSender<String>,
) {
    let secrets = match load_credentials(&client).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("credentials not loaded: {e}");
            boot.send_replace(Boot::Failed(e.to_string()));
            return;
        }
    };
    tracing::info!(names = ?secrets, "credentials loaded");
    boot.send_replace(Boot::Ready {
        secrets,
        watching: false,
    });

    // Subscribes to secs.changed.jobs, then loads again: no rotation
    // between the two is missed.
    let mut watch = match watch_secrets(&client, CREDENTIALS, VAULT, LOAD_DEADLINE).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("not following rotations: {e}");
            return;
        }
    };
    boot.send_replace(Boot::Ready {
        secrets: Arc::new(watch.snapshot()),
        watching: true,
    });
    while let Some(change) = watch.next_change().await {
        match change {
            SecretChange::Updated { name } => {
                tracing::info!(%name, "credential rotated");
                boot.send_replace(Boot::Ready {
                    secrets: Arc::new(watch.snapshot()),
                    watching: true,
                });
                let _ = rotations.send(name);
            }
            other => tracing::warn!(?other, "credential change"),
        }
    }
}

/// `wait_for_peer(vault)` then `load_secrets`, retried with the linear
/// backoff of [`RetryPolicy`] while the failure is transient (the vault
/// restarting, a timeout, the link reconnecting).
async fn load_credentials(client: &LinkClient) -> Result<Secrets> {
    let policy = RetryPolicy::builder()
        .attempts(5)
        .base_delay(Duration::from_millis(200))
        .build()?;
    let mut attempt = 1;
    loop {
        wait_for_peer(client, VAULT, None, true).await?;
        let error = match load_secrets(client, CREDENTIALS, VAULT, LOAD_DEADLINE).await {
            Ok(secrets) => return Ok(secrets),
            Err(e) => e,
        };
        let transient = match &error {
            SecretsError::Fetch { error, .. } => is_retryable(client, error),
            SecretsError::Deadline { .. } => true,
            _ => false,
        };
        if !transient || attempt == policy.attempts() {
            return Err(error.into());
        }
        tracing::warn!(
            attempt,
            code = error.code(),
            "credentials not loaded yet: {error}"
        );
        tokio::time::sleep(policy.delay_after(attempt, 0.5)).await;
        attempt += 1;
    }
}
