//! Progress bars on stderr (indicatif). Hidden when stderr is not a
//! terminal or when the caller asks for quiet output; updates from hot
//! loops are batched so that drawing never shows up in a profile.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes one bar per scenario step.
#[derive(Clone, Debug)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars on stderr when `enabled` (and stderr is a terminal).
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    /// No bars at all.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    /// A bar for `len` units of `label`.
    pub fn bar(&self, label: &str, len: u64) -> Bar {
        let pb = if self.enabled {
            let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {human_pos}/{human_len} {per_sec} {elapsed}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_prefix(label.to_owned());
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        } else {
            ProgressBar::hidden()
        };
        Bar { pb }
    }
}

/// One bar; finished (and cleared) on drop.
#[derive(Debug)]
pub struct Bar {
    pb: ProgressBar,
}

impl Bar {
    /// Sets the position (cheap: an atomic store; drawing is rate-limited).
    pub fn set(&self, pos: u64) {
        self.pb.set_position(pos);
    }

    /// Sets the position every 1024 units only (for per-message loops).
    pub fn tick(&self, pos: u64) {
        if pos & 1023 == 0 {
            self.pb.set_position(pos);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
    }
}
