//! Running the built `link-cli` binary.
//!
//! The binary's path is only known to `link-cli`'s own tests
//! (`env!("CARGO_BIN_EXE_link-cli")`), so they pass it in.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

/// Hang guard for a child process (start-up included); never a timing
/// assertion.
pub const PROCESS_WAIT: Duration = Duration::from_secs(15);

/// What `link-cli` reads from the environment; every command made here
/// starts without them.
const CLI_ENV: [&str; 5] = [
    "LINK_SECRET",
    "LINK_URL",
    "LINK_KIND",
    "LINK_HASH_ALGO",
    "RUST_LOG",
];

/// The built `link-cli` binary.
#[derive(Clone, Debug)]
pub struct LinkCli {
    bin: PathBuf,
}

impl LinkCli {
    /// The binary at `bin` (`env!("CARGO_BIN_EXE_link-cli")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { bin: bin.into() }
    }

    /// `link-cli` with nothing from the caller's environment that it reads
    /// (`LINK_*`, `RUST_LOG`), stdin empty, stdout and stderr piped.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for name in CLI_ENV {
            cmd.env_remove(name);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// [`command`](Self::command) for tokio, killed when dropped.
    pub fn tokio_command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `link-cli <args>` to the end.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("link-cli runs")
    }

    /// Starts `link-cli hub --bind 127.0.0.1:0 <args>` with `RUST_LOG=info`;
    /// [`CliHub::announced`] reads the real address back.
    pub fn hub(&self, args: &[&str]) -> CliHub {
        let mut child = self
            .command()
            .args(["hub", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("link-cli hub starts");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = Some(thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }));
        CliHub {
            child: Some(child),
            stdout,
            stderr,
        }
    }
}

/// A running `link-cli hub`; killed on drop if a test fails midway.
pub struct CliHub {
    child: Option<Child>,
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl CliHub {
    /// The next stdout line.
    pub fn line(&self) -> String {
        self.stdout
            .recv_timeout(PROCESS_WAIT)
            .expect("no stdout line from link-cli hub")
    }

    /// Reads `LINK_SECRET=` (if printed) and `listening=ws://ADDR`; any
    /// other line fails the test.
    pub fn announced(&self) -> (Option<String>, SocketAddr) {
        let mut secret = None;
        loop {
            let line = self.line();
            if let Some(s) = line.strip_prefix("LINK_SECRET=") {
                secret = Some(s.to_owned());
            } else if let Some(url) = line.strip_prefix("listening=ws://") {
                let addr = url
                    .trim_end_matches('/')
                    .parse()
                    .expect("listening= carries an address");
                return (secret, addr);
            } else {
                panic!("unexpected stdout line: {line}");
            }
        }
    }

    /// The hub's process id (0 once it has been waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Kills the hub with SIGKILL (no shutdown of any kind) and waits for
    /// it to be gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL link-cli hub");
            child.wait().expect("wait for link-cli hub");
        }
    }

    /// Sends SIGHUP (a TLS hub reloads its certificate).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit; returns the status and everything on stderr.
    pub fn exit(mut self) -> (ExitStatus, String) {
        let pid = self.pid();
        let mut child = self.child.take().expect("a running child");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(PROCESS_WAIT)
            .unwrap_or_else(|_| panic!("link-cli hub (pid {pid}) did not exit"))
            .expect("wait for link-cli hub");
        let stderr = self
            .stderr
            .take()
            .expect("stderr is read once")
            .join()
            .expect("the stderr reader");
        (status, stderr)
    }
}

impl Drop for CliHub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished `link-cli` run.
#[derive(Debug)]
pub struct Done {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Done {
    /// The only stdout line, as JSON, after checking exit 0.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout: {}", self.stdout);
        serde_json::from_str(lines[0]).expect("a JSON line")
    }

    /// Every stdout line as JSON, after checking exit 0.
    pub fn json_lines(&self) -> Vec<Value> {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// Waits for a tokio child to exit and collects its output.
pub async fn finish(child: tokio::process::Child) -> Done {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(PROCESS_WAIT, child.wait_with_output())
        .await
        .expect("link-cli did not exit")
        .expect("wait for link-cli");
    Done {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(stderr).expect("UTF-8 stderr"),
    }
}
