//! The hub's resources over the soak: resident memory, open descriptors
//! and CPU (from /proc, [`crate::sys`]) with the traffic counters, one
//! [`Sample`] per interval; written as CSV and drawn as a PNG chart
//! (plotters' bitmap backend, no text: no font is needed).
//!
//! The chart has three panels sharing the time axis: hub RSS (top, blue),
//! open descriptors (middle, green) and hub CPU in percent of one core
//! (bottom, red). Each panel's y axis starts at zero; a grey vertical line
//! marks the end of warm-up. Scales are in the CSV and the report.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::BenchError;
use crate::sys::{open_fds, process_cpu_ns, rss_bytes};

/// One look at the hub and the traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub secs: f64,
    /// Hub resident memory, bytes.
    pub rss: Option<u64>,
    /// Hub open file descriptors.
    pub fds: Option<u64>,
    /// Hub CPU since the previous sample, percent of one core.
    pub cpu: Option<f64>,
    /// Our peers with a session up.
    pub connected: u64,
    /// Messages handed to clients so far (publishes and sends).
    pub sent: u64,
    /// Deliveries received so far.
    pub received: u64,
    /// RPCs that ended so far (answered or failed).
    pub rpcs: u64,
}

/// Reads the hub process's figures.
#[derive(Debug)]
pub(crate) struct Sampler {
    pid: Option<u32>,
    cpu_pid: Option<u32>,
    last_cpu: Option<(f64, u64)>,
}

impl Sampler {
    /// `pid`: the process whose memory and descriptors are the hub's;
    /// `cpu_pid`: the one whose CPU is the hub's alone (none when embedded).
    pub(crate) fn new(pid: Option<u32>, cpu_pid: Option<u32>) -> Self {
        Self {
            pid,
            cpu_pid,
            last_cpu: None,
        }
    }

    /// The hub's figures at `secs`; the traffic counters are left at zero.
    pub(crate) fn sample(&mut self, secs: f64) -> Sample {
        let cpu_now = self.cpu_pid.and_then(process_cpu_ns);
        let cpu = match (self.last_cpu, cpu_now) {
            (Some((t0, c0)), Some(c1)) if secs > t0 => {
                Some(c1.saturating_sub(c0) as f64 / 1e9 / (secs - t0) * 100.0)
            }
            _ => None,
        };
        self.last_cpu = cpu_now.map(|c| (secs, c));
        Sample {
            secs,
            rss: self.pid.and_then(rss_bytes),
            fds: self.pid.and_then(open_fds),
            cpu,
            ..Sample::default()
        }
    }
}

/// The CSV header.
pub(crate) const CSV_HEADER: &str =
    "elapsed_s,hub_rss_bytes,hub_fds,hub_cpu_percent,connected,sent,received,rpcs_done";

/// The samples as CSV (empty fields where a figure was unavailable).
pub(crate) fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{}",
            s.secs,
            opt(s.rss),
            opt(s.fds),
            s.cpu.map(|c| format!("{c:.1}")).unwrap_or_default(),
            s.connected,
            s.sent,
            s.received,
            s.rpcs
        );
    }
    out
}

/// Chart size in pixels.
const WIDTH: u32 = 900;
const PANEL: u32 = 200;

/// Draws the three panels into a PNG at `path`.
pub(crate) fn chart(samples: &[Sample], warmup_secs: f64, path: &Path) -> Result<(), BenchError> {
    let fail = |e: &dyn std::fmt::Display| {
        BenchError::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(e.to_string()),
        )
    };
    let root = BitMapBackend::new(path, (WIDTH, 3 * PANEL)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((3, 1));
    let end = samples.last().map_or(1.0, |s| s.secs).max(1.0);
    let series: [(Vec<(f64, f64)>, RGBColor); 3] = [
        (
            points(samples, |s| s.rss.map(|b| b as f64 / (1024.0 * 1024.0))),
            BLUE,
        ),
        (points(samples, |s| s.fds.map(|n| n as f64)), GREEN),
        (points(samples, |s| s.cpu), RED),
    ];
    for (area, (pts, colour)) in panels.iter().zip(series) {
        let top = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(
                [(warmup_secs, 0.0), (warmup_secs, top)],
                RGBColor(160, 160, 160),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (end, 0.0)], RGBColor(0, 0, 0)))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn points(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|s| f(s).map(|v| (s.secs, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: f64, rss: u64) -> Sample {
        Sample {
            secs,
            rss: Some(rss),
            fds: Some(12),
            cpu: Some(3.25),
            connected: 5,
            sent: 7,
            received: 30,
            rpcs: 2,
        }
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_sample_with_blanks_for_unknowns() {
        let mut gap = sample(2.0, 2048);
        gap.cpu = None;
        gap.fds = None;
        let text = csv(&[sample(1.0, 1024), gap]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "1.0,1024,12,3.2,5,7,30,2");
        assert_eq!(lines[2], "2.0,2048,,,5,7,30,2");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn the_chart_is_a_png() {
        let dir = std::env::temp_dir().join(format!("link-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("soak.png");
        let samples: Vec<Sample> = (0..50)
            .map(|i| sample(f64::from(i), 1_000_000 + u64::from(i as u32) * 1000))
            .collect();
        chart(&samples, 10.0, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_is_the_share_of_one_core_between_samples() {
        let mut s = Sampler::new(None, None);
        assert_eq!(
            s.sample(1.0),
            Sample {
                secs: 1.0,
                ..Sample::default()
            }
        );
        let me = std::process::id();
        let mut s = Sampler::new(Some(me), Some(me));
        assert!(s.sample(0.0).cpu.is_none(), "no previous reading");
        if cfg!(target_os = "linux") {
            let later = s.sample(1.0);
            assert!(later.cpu.is_some_and(|c| c >= 0.0));
            assert!(later.rss.is_some() && later.fds.is_some());
        }
    }
}
