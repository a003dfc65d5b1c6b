//! What the operating system tells: resident memory of a process
//! (`/proc/<pid>/status`), the CPU time it has used
//! (`/proc/<pid>/task/*/schedstat`), the machine (cores, CPU model), and
//! the open-files limit, raised when many sockets are needed.

use serde::Serialize;

use crate::error::BenchError;

/// The summed resident set size of processes (`None` if one cannot be read
/// or there are none).
pub fn total_rss_bytes(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_bytes(*p)).sum()
}

/// Resident set size of a process in bytes (`VmRSS`), Linux only.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:  1234 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time a process has used so far, in nanoseconds: the sum over its
/// threads of the first field of `/proc/<pid>/task/<tid>/schedstat`
/// (time on a CPU, nanosecond resolution; `/proc/<pid>/stat` counts in
/// 10 ms ticks, too coarse for a benchmark of a second). Threads that end
/// take their time with them; a hub's workers live as long as it does.
/// Linux only; `None` where it cannot be read.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended between the listing and the read
        };
        if let Some(ns) = parse_schedstat(&text) {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`),
/// Linux only; `None` where it cannot be read (another user's process).
pub fn open_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

/// `12345 678 9` → 12345 (ns on CPU).
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// A process's CPU time over one measured phase.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuMeter {
    pid: u32,
    start_ns: u64,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None` if there is no process to read).
    pub(crate) fn start(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        Some(Self {
            pid,
            start_ns: process_cpu_ns(pid)?,
        })
    }

    /// Microseconds of CPU the process used since `start`, per unit (a
    /// message, a delivery, a call).
    #[cfg(any(test, feature = "nats"))]
    pub(crate) fn us_per(&self, units: u64) -> Option<f64> {
        let used = self.used_us()?;
        (units > 0).then(|| used / units as f64)
    }

    /// Microseconds of CPU the process used since `start`.
    pub(crate) fn used_us(&self) -> Option<f64> {
        let now = process_cpu_ns(self.pid)?;
        Some(now.saturating_sub(self.start_ns) as f64 / 1000.0)
    }
}

/// The machine a report was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo, if readable.
    pub cpu: Option<String>,
    /// The operating system.
    pub os: &'static str,
}

impl Machine {
    /// Looks at this machine.
    pub fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            os: std::env::consts::OS,
        }
    }
}

/// Raises the soft open-files limit towards the hard limit so that at
/// least `needed` descriptors are available; returns the new soft limit.
/// Errors when the hard limit is too low.
pub fn ensure_open_files(needed: u64) -> Result<u64, BenchError> {
    let limit = rlimit::increase_nofile_limit(needed.max(1024))
        .map_err(|e| BenchError::io("raising the open-files limit (RLIMIT_NOFILE)", e))?;
    if limit < needed {
        return Err(BenchError::InvalidOption {
            option: "connections",
            reason: format!(
                "needs about {needed} open files but the hard limit is {limit}; \
                 raise it (ulimit -Hn) or use fewer connections"
            ),
        });
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_first_field_is_the_cpu_time() {
        assert_eq!(parse_schedstat("123456789 2345 67\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn our_own_cpu_time_grows_while_we_work() {
        let pid = std::process::id();
        let meter = CpuMeter::start(Some(pid)).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(meter.us_per(1).unwrap() > 0.0);
        assert_eq!(meter.us_per(0), None);
        assert!(CpuMeter::start(None).is_none());
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    2048 kB\nThreads: 2\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn counts_our_own_open_files() {
        if cfg!(target_os = "linux") {
            let before = open_fds(std::process::id()).unwrap();
            let f = std::fs::File::open("/proc/self/status").unwrap();
            // Other test threads may open files too: at least ours is seen.
            assert!(open_fds(std::process::id()).is_some_and(|n| n > before));
            drop(f);
        }
    }

    #[test]
    fn reads_our_own_rss() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        }
    }
}
