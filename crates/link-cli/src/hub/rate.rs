//! `link-cli hub` rate-limit flags: `--rate-limit [KIND:]CLASS=RATE`
//! (repeatable), `--rate-limits FILE` (a JSON table) and
//! `--rate-limit-disconnect N` (docs/operations.md, *Rate limits*).

use std::path::PathBuf;

use clap::Args;
use link_hub::RateLimits;

use crate::exit::Failure;

/// Per-peer rate limits (default: none).
// The field docs are `--help` text, where `[/s|/m|/h]` is the usual
// optional-part notation, not a rustdoc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug)]
pub(crate) struct RateLimitArgs {
    /// A per-peer limit for one message class (rpc, publish, send, status):
    /// CLASS=COUNT[/s|/m|/h][,burst=N], e.g. publish=100/s,burst=200, or
    /// for one kind KIND:CLASS=…; `off` lifts a limit. Repeatable; applied
    /// after --rate-limits, a later one replacing an earlier one.
    #[arg(long = "rate-limit", value_name = "[KIND:]CLASS=RATE", value_parser = setting)]
    rate_limit: Vec<String>,

    /// A JSON table of limits: {"default": {CLASS: RATE}, "kinds": {KIND:
    /// {CLASS: RATE | "off"}}, "disconnectAfter": N}.
    #[arg(long, value_name = "FILE")]
    rate_limits: Option<PathBuf>,

    /// Close a peer's socket (1008 `rate limited`) after N refused frames
    /// in a row (default: never; overrides the file's disconnectAfter).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_disconnect: Option<u32>,
}

/// Checks one `--rate-limit` value as clap parses it.
fn setting(s: &str) -> Result<String, String> {
    RateLimits::new()
        .apply_setting(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl RateLimitArgs {
    /// The limits: the file's, then each flag on top.
    pub(crate) fn limits(&self) -> Result<RateLimits, Failure> {
        let mut limits = match &self.rate_limits {
            Some(file) => {
                let shown = file.display();
                let text = std::fs::read_to_string(file)
                    .map_err(|e| Failure::unusable(format_args!("--rate-limits {shown}: {e}")))?;
                RateLimits::from_json(&text)
                    .map_err(|e| Failure::unusable(format_args!("--rate-limits {shown}: {e}")))?
            }
            None => RateLimits::new(),
        };
        for s in &self.rate_limit {
            limits = limits
                .apply_setting(s)
                .map_err(|e| Failure::unusable(format_args!("--rate-limit {s}: {e}")))?;
        }
        if let Some(n) = self.rate_limit_disconnect {
            limits = limits.disconnect_after(std::num::NonZeroU32::new(n));
        }
        Ok(limits)
    }
}
