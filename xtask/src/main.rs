//! # xtask
//!
//! Workspace automation, run through the cargo alias in `.cargo/config.toml`:
//!
//! ```text
//! cargo xtask ci               every check CI runs, in order, stopping at the first failure
//! cargo xtask fmt              format the workspace (cargo fmt --all)
//! cargo xtask deny-advisories  cargo deny check advisories (needs github.com)
//! cargo xtask bench [ARGS]     link-cli bench beside nats-server (see docs/perf.md)
//! cargo xtask tour             README.md's shell tour against a hub it starts (as in `ci`)
//! cargo xtask soak             the 60 s soak of `ci` alone
//! cargo xtask help             this list
//! ```
//!
//! `ci` runs these steps; every cargo call that resolves dependencies passes
//! `--locked`, so a stale `Cargo.lock` fails instead of being rewritten:
//!
//! ```text
//! fmt        cargo fmt --all -- --check
//! clippy     cargo clippy --workspace --all-targets --locked -- -D warnings
//! test       cargo nextest run --workspace --locked   (cargo test if nextest is absent)
//! tour       cargo build -p link-cli, then python3 xtask/scripts/tour.py: starts
//!            `link-cli hub --bind 127.0.0.1:0` (in place of the README's fixed
//!            8080; the real address and the generated secret are read back from
//!            its `listening=` and `LINK_SECRET=` lines and passed as LINK_URL and
//!            LINK_SECRET), runs every command of README.md's "A 5-minute tour"
//!            and "link-cli: offline commands" blocks as written, compares the
//!            outputs the README shows, and stops the hub; the script's command
//!            list must equal the README's, so the two cannot drift
//! doctest    every markdown file (README.md, docs/**/*.md) is included by
//!            crates/link/src/lib.rs, whose cfg(doctest) module makes their Rust
//!            blocks doctests; then cargo test --doc --workspace --locked
//! rustdoc    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
//! sans-io    cargo tree -p link-protocol -e normal: no tokio, mio or socket2;
//!            and link-hub's routing table (crates/link-hub/src/routing/) and
//!            rate limits (ratelimit.rs) name no runtime, socket, thread, file
//!            or clock read in their code
//! deny       cargo deny --locked check bans licenses sources
//! bench      cargo bench -p link-protocol --locked --bench envelope -- --test
//! soak       cargo build -p link-cli (dev profile, as `tour`), then a 60 s soak:
//!            `link-cli bench --scenario soak --child --duration 60s --warmup 20s
//!            --peers 50 --churn 1 --rate 5 --out <temp dir> -q`; fails unless
//!            it exits 0, which it does only with `soak: PASS`
//!            (docs/reliability.md, *Soak*)
//! ```
//!
//! The advisories check is not part of `ci`: it clones the RustSec database
//! from github.com, which the CI machines cannot reach (they see crates.io
//! only). Run `cargo xtask deny-advisories` where GitHub is reachable.
//!
//! Only std is used, so the tool builds in seconds and adds nothing to the
//! dependency tree that `cargo deny` audits.

use std::env;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod docs;

type Result<T = (), E = Box<dyn Error>> = std::result::Result<T, E>;

/// Crates that must never appear in the protocol crate's normal dependencies:
/// the I/O runtime and the socket layers under it.
const FORBIDDEN_IN_PROTOCOL: [&str; 3] = ["tokio", "mio", "socket2"];

/// The hub's routing table, which must stay free of I/O like the protocol
/// crate (it is a module, not a crate, so its source is checked).
const ROUTING_DIR: &str = "crates/link-hub/src/routing";

/// Other hub modules held to the same rule: the rate limits' decision
/// (its tests, in `ratelimit/tests.rs`, are exempt as the table's are).
const SANS_IO_FILES: [&str; 1] = ["crates/link-hub/src/ratelimit.rs"];

/// What the routing table's code may not name: the runtime, sockets,
/// threads, files, clock reads and the hub's shared state (which holds
/// channels and clocks). `SocketAddr` is plain data and allowed. Test
/// files (`tests.rs`) are exempt: they seed a virtual clock once.
const FORBIDDEN_IN_ROUTING: [&str; 12] = [
    "tokio",
    "mio::",
    "socket2",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "Instant::now",
    "SystemTime::now",
    "std::thread",
    "std::fs",
    "crate::shared",
    "wall_ms()",
];

/// The criterion bench smoke-run by `ci`, relative to the workspace root.
const BENCH_SOURCE: &str = "crates/link-protocol/benches/envelope.rs";

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci               run every check CI runs (fmt, clippy, tests, README tour,
                   doctests, rustdoc, sans-io dependency check, cargo deny,
                   bench smoke run, 60 s soak)
  fmt              format the whole workspace (cargo fmt --all)
  deny-advisories  cargo deny check advisories (fetches the RustSec database
                   from github.com; not part of `ci`, see README.md)
  bench [ARGS]     release-build link-cli with the `nats` feature, start
                   nats-server on 127.0.0.1 (installing it with apt-get if
                   missing), run `link-cli bench --compare nats ARGS`
                   (default ARGS: --runs 3), stop nats-server
  tour             build link-cli, start a hub on 127.0.0.1 and run README.md's
                   tour and offline examples against it, comparing the outputs
                   the README shows (xtask/scripts/tour.py; needs python3)
  soak             the 60 s soak of `ci` alone: link-cli bench --scenario soak
                   against a child hub of the dev build (docs/reliability.md)
  help             show this message";

/// One named step of a command.
struct Step {
    name: &'static str,
    run: fn(&Path) -> Result,
}

const CI_STEPS: &[Step] = &[
    Step {
        name: "fmt",
        run: fmt_check,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "test",
        run: test,
    },
    Step {
        name: "tour",
        run: docs::tour,
    },
    Step {
        name: "doctest",
        run: doctest,
    },
    Step {
        name: "rustdoc",
        run: rustdoc,
    },
    Step {
        name: "sans-io",
        run: sans_io,
    },
    Step {
        name: "deny",
        run: deny,
    },
    Step {
        name: "bench",
        run: bench_smoke,
    },
    Step {
        name: "soak",
        run: soak,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let steps: &[Step] = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["ci"] => CI_STEPS,
        ["fmt"] => &[Step {
            name: "fmt",
            run: fmt,
        }],
        ["tour"] => &[Step {
            name: "tour",
            run: docs::tour,
        }],
        ["soak"] => &[Step {
            name: "soak",
            run: soak,
        }],
        ["deny-advisories"] => &[Step {
            name: "advisories",
            run: deny_advisories,
        }],
        ["bench", ref rest @ ..] => {
            return match bench(&workspace_root(), rest) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtask: bench FAILED: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        [] | ["help" | "-h" | "--help"] => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("xtask: unknown arguments {args:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run_steps(steps, &workspace_root()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}

/// Runs `steps` in order, printing each name and duration; stops at the
/// first failure.
fn run_steps(steps: &[Step], root: &Path) -> std::result::Result<(), ()> {
    let started = Instant::now();
    let count = steps.len();
    for (i, step) in steps.iter().enumerate() {
        println!("\n==> [{}/{count}] {}", i + 1, step.name);
        let t = Instant::now();
        let outcome = (step.run)(root);
        let took = secs(t.elapsed());
        match outcome {
            Ok(()) => println!("==> {} ok ({took})", step.name),
            Err(e) => {
                eprintln!("\nxtask: step `{}` FAILED after {took}: {e}", step.name);
                return Err(());
            }
        }
    }
    println!(
        "\n==> all {count} step(s) passed in {}",
        secs(started.elapsed())
    );
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command in `root`: the cargo that launched us (`$CARGO`), so the
/// toolchain matches, else the one on `PATH`.
fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(root);
    cmd
}

/// Runs a command with inherited output; a non-zero exit is an error that
/// names the command.
fn run(mut cmd: Command) -> Result {
    let shown = describe(&cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` exited with {status}").into())
    }
}

/// Runs a command and returns its stdout; stderr passes through.
fn capture(mut cmd: Command) -> Result<String> {
    let shown = describe(&cmd);
    println!("$ {shown}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}` exited with {}", out.status).into());
    }
    Ok(String::from_utf8(out.stdout).map_err(|e| format!("`{shown}` printed non-UTF-8: {e}"))?)
}

/// True when `cargo <subcommand> --version` runs successfully.
fn has_subcommand(root: &Path, subcommand: &str) -> bool {
    cargo(root, &[subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo` plus its arguments, with any environment we set, for logs.
fn describe(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(k, v)| {
        v.map(|v| format!("{}=\"{}\"", k.to_string_lossy(), v.to_string_lossy()))
    });
    let program = Path::new(cmd.get_program())
        .file_name()
        .map_or_else(|| "cargo".into(), |p| p.to_string_lossy().into_owned());
    let args = cmd.get_args().map(|a| a.to_string_lossy().into_owned());
    envs.chain([program])
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt(root: &Path) -> Result {
    run(cargo(root, &["fmt", "--all"]))
}

fn fmt_check(root: &Path) -> Result {
    run(cargo(root, &["fmt", "--all", "--", "--check"]))
        .map_err(|e| format!("{e}\n  run `cargo xtask fmt` to fix the formatting").into())
}

fn clippy(root: &Path) -> Result {
    run(cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    ))
}

fn test(root: &Path) -> Result {
    if has_subcommand(root, "nextest") {
        run(cargo(root, &["nextest", "run", "--workspace", "--locked"]))
    } else {
        println!("cargo-nextest not found: falling back to cargo test");
        run(cargo(root, &["test", "--workspace", "--locked"]))
    }
}

/// Doctests: nextest does not run them, and `cargo test` already did when it
/// was the runner, but running them again costs seconds and keeps one path.
/// They include the Rust blocks of every markdown file (checked first).
fn doctest(root: &Path) -> Result {
    docs::docs_are_doctested(root)?;
    run(cargo(root, &["test", "--doc", "--workspace", "--locked"]))
}

fn rustdoc(root: &Path) -> Result {
    let mut cmd = cargo(root, &["doc", "--workspace", "--no-deps", "--locked"]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    run(cmd)
}

/// The protocol crate must stay sans-I/O: no async runtime or socket crate
/// among its normal (non-dev) dependencies.
fn sans_io(root: &Path) -> Result {
    let tree = capture(cargo(
        root,
        &[
            "tree",
            "-p",
            "link-protocol",
            "-e",
            "normal",
            "--locked",
            "--prefix",
            "none",
        ],
    ))?;
    let offending: Vec<&str> = tree
        .lines()
        .filter(|line| is_forbidden_in_protocol(line))
        .collect();
    if !offending.is_empty() {
        return Err(format!(
            "link-protocol must stay sans-I/O (docs/adr/0001-sans-io-protocol-crate.md) \
             but depends on:\n  {}",
            offending.join("\n  ")
        )
        .into());
    }
    println!(
        "link-protocol depends on none of: {}",
        FORBIDDEN_IN_PROTOCOL.join(", ")
    );
    routing_sans_io(root)
}

/// Checks the routing table's source files for I/O (see
/// [`FORBIDDEN_IN_ROUTING`]).
fn routing_sans_io(root: &Path) -> Result {
    let dir = root.join(ROUTING_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no source files under {ROUTING_DIR}").into());
    }
    files.extend(SANS_IO_FILES.iter().map(|f| root.join(f)));
    let mut offending = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for (n, hit) in forbidden_in_routing(&text) {
            offending.push(format!("{}:{n}: {hit}", file.display()));
        }
    }
    if offending.is_empty() {
        println!(
            "{ROUTING_DIR} and {}: {} file(s) name none of: {}",
            SANS_IO_FILES.join(", "),
            files.len(),
            FORBIDDEN_IN_ROUTING.join(", ")
        );
        Ok(())
    } else {
        Err(format!(
            "the routing table must stay free of I/O (docs/architecture.md) but names:\n  {}",
            offending.join("\n  ")
        )
        .into())
    }
}

/// `(line number, forbidden name)` for each line of code (comments cut)
/// that names something in [`FORBIDDEN_IN_ROUTING`].
fn forbidden_in_routing(text: &str) -> Vec<(usize, &'static str)> {
    let mut hits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for name in FORBIDDEN_IN_ROUTING {
            if code.contains(name) {
                hits.push((i + 1, name));
            }
        }
    }
    hits
}

/// True for a `cargo tree --prefix none` line naming a forbidden crate:
/// anything starting with `tokio` (tokio, tokio-util, …), or exactly `mio` /
/// `socket2`.
fn is_forbidden_in_protocol(line: &str) -> bool {
    let name = line.split_whitespace().next().unwrap_or_default();
    name.starts_with("tokio") || FORBIDDEN_IN_PROTOCOL.contains(&name)
}

fn require_cargo_deny(root: &Path) -> Result {
    if has_subcommand(root, "deny") {
        Ok(())
    } else {
        Err(
            "cargo-deny is not installed; install it with `cargo install cargo-deny --locked` \
             (.ci/run does this automatically)"
                .into(),
        )
    }
}

/// Bans, licences and sources: everything cargo-deny checks from the lock
/// file and crates.io metadata alone.
fn deny(root: &Path) -> Result {
    require_cargo_deny(root)?;
    println!("(advisories are skipped here: run `cargo xtask deny-advisories` with GitHub access)");
    run(cargo(
        root,
        &["deny", "--locked", "check", "bans", "licenses", "sources"],
    ))
}

fn deny_advisories(root: &Path) -> Result {
    require_cargo_deny(root)?;
    run(cargo(root, &["deny", "--locked", "check", "advisories"])).map_err(|e| {
        format!(
            "{e}\n  this check clones https://github.com/RustSec/advisory-db; \
             it fails where github.com is unreachable"
        )
        .into()
    })
}

/// Runs each criterion bench once (`--test` mode) so a broken bench fails
/// CI without paying for a measurement.
fn bench_smoke(root: &Path) -> Result {
    if !root.join(BENCH_SOURCE).is_file() {
        println!("skipped: {BENCH_SOURCE} does not exist yet");
        return Ok(());
    }
    run(cargo(
        root,
        &[
            "bench",
            "-p",
            "link-protocol",
            "--locked",
            "--bench",
            "envelope",
            "--",
            "--test",
        ],
    ))
}

/// The `ci` soak: its arguments, and how long it may take in all (60 s of
/// churn and traffic, the peers' connect, the final checks, the drain and
/// the RPC grace, on a busy machine).
/// 50 peers and modest rates: the dev build verifies every frame's MAC
/// unoptimised, and CI has two cores. A 20 s warm-up leaves the hub's
/// start-up allocations out of the drift.
const SOAK_ARGS: [&str; 15] = [
    "bench",
    "--scenario",
    "soak",
    "--child",
    "--duration",
    "60s",
    "--warmup",
    "20s",
    "--peers",
    "50",
    "--churn",
    "1",
    "--rate",
    "5",
    "-q",
];
const SOAK_TIMEOUT: Duration = Duration::from_secs(300);

/// A 60 s soak against a child hub of the dev build: fails on a FAIL
/// verdict (exit 1) or any other error; the CSV and chart go to a
/// temporary directory that is removed afterwards.
fn soak(root: &Path) -> Result {
    let cli = docs::build_link_cli(root)?;
    let out = env::temp_dir().join(format!("link-ci-soak-{}", std::process::id()));
    let mut cmd = Command::new(cli);
    cmd.args(SOAK_ARGS)
        .arg("--out")
        .arg(&out)
        .current_dir(root)
        .stdin(Stdio::null());
    let result = docs::run_bounded(cmd, SOAK_TIMEOUT);
    let _ = std::fs::remove_dir_all(&out);
    result
}

/// `cargo xtask bench [ARGS]`: `link-cli bench --compare nats` against a
/// nats-server we start on 127.0.0.1 and a free port, and stop afterwards.
fn bench(root: &Path, args: &[&str]) -> Result {
    let program = ensure_nats_server()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    let result = wait_for_port(port).and_then(|()| {
        let url = format!("nats://127.0.0.1:{port}");
        let pid = server.id().to_string();
        let mut cmd = cargo(
            root,
            &[
                "run",
                "--release",
                "--locked",
                "-q",
                "-p",
                "link-cli",
                "--features",
                "nats",
                "--",
                "bench",
                "--compare",
                "nats",
                "--nats-url",
                &url,
                "--nats-pid",
                &pid,
            ],
        );
        // Without arguments: medians of 3, and no peers.update broadcasts
        // (NATS has no peer lists, and the 10 000-peer `connections`
        // scenario cannot work with them: see docs/perf.md).
        cmd.args(if args.is_empty() {
            &["--runs", "3", "--peer-updates", "off"][..]
        } else {
            args
        });
        run(cmd)
    });
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// `nats-server` on PATH, installed with apt-get (after an `apt-get update`
/// if the first attempt fails) when missing.
fn ensure_nats_server() -> Result<&'static str> {
    const NATS: &str = "nats-server";
    let present = || {
        Command::new(NATS)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(NATS);
    }
    println!("{NATS} not found: installing the Debian package");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", NATS]);
        run(cmd)
    };
    if install().is_err() {
        let mut update = Command::new("apt-get");
        update.arg("update");
        run(update)?;
        install()?;
    }
    if present() {
        Ok(NATS)
    } else {
        Err(format!("{NATS} is still not runnable after apt-get install").into())
    }
}

/// Waits (up to 10 s) until something accepts connections on the port.
fn wait_for_port(port: u16) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(
                format!("nats-server did not listen on 127.0.0.1:{port} within 10 s").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_crates_are_matched_by_name() {
        assert!(is_forbidden_in_protocol("tokio v1.48.0"));
        assert!(is_forbidden_in_protocol("tokio-util v0.7.16"));
        assert!(is_forbidden_in_protocol("mio v1.0.4"));
        assert!(is_forbidden_in_protocol("socket2 v0.6.0"));
        assert!(!is_forbidden_in_protocol(
            "link-protocol v0.1.0 (/src/link)"
        ));
        assert!(!is_forbidden_in_protocol("miow v0.6.0"));
        assert!(!is_forbidden_in_protocol("serde_json v1.0.145 (*)"));
        assert!(!is_forbidden_in_protocol(""));
    }

    #[test]
    fn io_in_routing_code_is_found_and_comments_are_not() {
        let text = "//! driven by a tokio task\n\
                    use std::net::SocketAddr;\n\
                    let t = std::time::Instant::now(); // read the clock\n\
                    tokio::spawn(async {});\n\
                    let x = 1; // Instant::now is not called here\n";
        assert_eq!(
            forbidden_in_routing(text),
            [(3, "Instant::now"), (4, "tokio")]
        );
        assert!(forbidden_in_routing("fn handle(now: Now) {}").is_empty());
    }

    #[test]
    fn describe_shows_env_and_args() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["doc", "--locked"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            describe(&cmd),
            "RUSTDOCFLAGS=\"-D warnings\" cargo doc --locked"
        );
    }
}
