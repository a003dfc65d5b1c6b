//! What every scenario run gets: the options, the payload, the progress
//! bars and a tag that makes its peer names unique.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::options::BenchOptions;
use crate::progress::Progress;

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// One scenario run.
pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a BenchOptions,
    pub(crate) payload: &'a Value,
    pub(crate) progress: &'a Progress,
    tag: String,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(opts: &'a BenchOptions, payload: &'a Value, progress: &'a Progress) -> Self {
        let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        Self {
            opts,
            payload,
            progress,
            tag: format!("{:x}-{run}", std::process::id()),
        }
    }

    /// A peer name (link kind, NATS subject part) unique to this run.
    pub(crate) fn name(&self, role: &str) -> String {
        format!("bench-{}-{role}", self.tag)
    }
}
