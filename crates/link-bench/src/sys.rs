//! What the operating system tells: resident memory of a process
//! (`/proc/<pid>/status`), the machine (cores, CPU model), and the
//! open-files limit, raised when many sockets are needed.

use serde::Serialize;

use crate::error::BenchError;

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
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    2048 kB\nThreads: 2\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_our_own_rss() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        }
    }
}
