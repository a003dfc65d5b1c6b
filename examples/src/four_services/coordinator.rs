//! [`Coordinator`]: dispatches jobs to the worker and listens for their
//! progress on direct messages.

use std::time::Duration;

use futures_util::future::try_join_all;
use link::client::DirectStream;
use link::helpers::rpc::{RetryPolicy, rpc_with_retry, wait_for_peer};
use link::{ClientConfigBuilder, LinkClient};
use serde::Serialize;
use serde_json::{Value, json};

use super::{COORDINATOR, JOB_RPC, PROGRESS, WORKER};
use crate::Result;

/// A job's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobResult {
    /// Job number.
    pub job: u64,
    /// The worker's result.
    pub result: Value,
}

/// One `job.progress` direct message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Sender kind.
    pub from: String,
    /// Job number.
    pub job: u64,
    /// Step done, from 1.
    pub step: u64,
    /// Steps in all.
    pub of: u64,
}

/// The coordinator (kind [`COORDINATOR`]).
#[derive(Debug)]
pub struct Coordinator {
    client: LinkClient,
    directs: DirectStream,
    policy: RetryPolicy,
}

impl Coordinator {
    /// Connects as [`COORDINATOR`] with `base` (url and key). The direct
    /// message stream is open before the link starts, so no progress
    /// message can arrive unheard.
    pub fn start(base: ClientConfigBuilder) -> Result<Self> {
        let client = LinkClient::new(base.kind(COORDINATOR).build()?);
        let directs = client.directs();
        client.start();
        // Jobs are idempotent here, so timeouts and disconnects may retry.
        let policy = RetryPolicy::builder()
            .attempts(3)
            .base_delay(Duration::from_millis(200))
            .attempt_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            client,
            directs,
            policy,
        })
    }

    /// The coordinator's client.
    pub fn client(&self) -> &LinkClient {
        &self.client
    }

    /// Waits for the worker, then runs jobs `1..=jobs` concurrently.
    pub async fn dispatch(&self, jobs: u64) -> Result<Vec<JobResult>> {
        wait_for_peer(&self.client, WORKER, None, true).await?;
        tracing::info!(jobs, "worker is up: dispatching");
        try_join_all((1..=jobs).map(|job| async move {
            let data = json!({ "job": job, "input": format!("payload {job}") });
            let result = rpc_with_retry(
                &self.client,
                WORKER,
                JOB_RPC,
                Some(data),
                &self.policy,
                None,
            )
            .await?;
            tracing::info!(job, %result, "job finished");
            Ok::<_, crate::Error>(JobResult { job, result })
        }))
        .await
    }

    /// Waits for `expected` progress messages; other direct messages are
    /// logged and skipped.
    pub async fn collect_progress(&mut self, expected: usize) -> Result<Vec<Progress>> {
        let mut seen = Vec::with_capacity(expected);
        while seen.len() < expected {
            let msg = self
                .directs
                .recv()
                .await
                .ok_or("the link stopped before every progress message arrived")?;
            match parse_progress(&msg.from, &msg.msg_type, msg.data()) {
                Some(p) => {
                    tracing::info!(job = p.job, "progress {}/{} from {}", p.step, p.of, p.from);
                    seen.push(p);
                }
                None => tracing::debug!(from = %msg.from, kind = %msg.msg_type, "other direct"),
            }
        }
        Ok(seen)
    }

    /// Stops the link.
    pub async fn stop(&self) {
        self.client.stop().await;
    }
}

fn parse_progress(from: &str, msg_type: &str, data: Option<&Value>) -> Option<Progress> {
    if msg_type != PROGRESS {
        return None;
    }
    let field = |name| data?.get(name)?.as_u64();
    Some(Progress {
        from: from.to_owned(),
        job: field("job")?,
        step: field("step")?,
        of: field("of")?,
    })
}
