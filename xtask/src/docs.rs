//! Keeping the documentation runnable: the `tour` step and the check that
//! every markdown file's Rust blocks are doctests.
//!
//! ```text
//!   README.md ──► xtask/scripts/tour.py ──► link-cli hub --bind 127.0.0.1:0
//!   (tour + offline blocks)      └──────► every tour / offline command, outputs compared
//!   README.md, docs/**/*.md ──► include_str! in crates/link/src/lib.rs ──► cargo test --doc
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, capture, cargo, describe};

/// The script that runs README.md's shell examples.
const TOUR_SCRIPT: &str = "xtask/scripts/tour.py";

/// The crate root whose `cfg(doctest)` module includes every markdown file.
pub(crate) const DOCTEST_HOST: &str = "crates/link/src/lib.rs";

/// A last-resort bound on the whole tour; the script bounds every wait
/// itself (30 s) and the tour as a whole (240 s), and stops what it started.
const TOUR_TIMEOUT: Duration = Duration::from_secs(300);

/// `tour`: builds `link-cli`, then runs `xtask/scripts/tour.py`, which
/// starts `link-cli hub --bind 127.0.0.1:0` and runs README.md's tour and
/// offline examples against it, comparing the outputs the README shows.
pub(crate) fn tour(root: &Path) -> Result {
    let cli = build_link_cli(root)?;
    let mut cmd = Command::new("python3");
    cmd.arg(root.join(TOUR_SCRIPT))
        .arg("--cli")
        .arg(&cli)
        .arg("--readme")
        .arg(root.join("README.md"))
        .current_dir(root)
        .stdin(Stdio::null());
    run_bounded(cmd, TOUR_TIMEOUT)
}

/// `cargo build -p link-cli` (the dev profile the tests already built);
/// returns the binary's path as cargo reports it.
pub(crate) fn build_link_cli(root: &Path) -> Result<PathBuf> {
    let messages = capture(cargo(
        root,
        &[
            "build",
            "-p",
            "link-cli",
            "--bin",
            "link-cli",
            "--locked",
            "--message-format=json-render-diagnostics",
        ],
    ))?;
    executable_in(&messages, "link-cli")
        .ok_or_else(|| "cargo build reported no link-cli executable".into())
}

/// The `"executable"` of the compiler-artifact message for binary `name`
/// in cargo's JSON messages (one object per line; only std, so the field
/// is found by text: cargo writes it as a plain JSON string).
fn executable_in(messages: &str, name: &str) -> Option<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    messages
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .find_map(|line| {
            let start = line.find(KEY)? + KEY.len();
            let mut path = String::new();
            let mut chars = line[start..].chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => path.push(chars.next()?),
                    c => path.push(c),
                }
            }
            let path = PathBuf::from(path);
            (path.file_stem()? == name).then_some(path)
        })
}

/// Runs a command with inherited output, killing it if it outlives
/// `limit`.
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> Result {
    let shown = describe(&cmd);
    println!("$ {shown}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("`{shown}` exited with {status}").into())
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{shown}` was killed after {} s", limit.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails unless README.md and every `docs/**/*.md` is included by
/// [`DOCTEST_HOST`], so a new document's Rust blocks are tested too.
pub(crate) fn docs_are_doctested(root: &Path) -> Result {
    let host_path = root.join(DOCTEST_HOST);
    let host = std::fs::read_to_string(&host_path)
        .map_err(|e| format!("cannot read {}: {e}", host_path.display()))?;
    let mut files = vec!["README.md".to_owned()];
    markdown_under(root, Path::new("docs"), &mut files)?;
    let missing = not_included(&host, &files);
    if missing.is_empty() {
        println!(
            "{DOCTEST_HOST} includes all {} markdown file(s)",
            files.len()
        );
        Ok(())
    } else {
        Err(format!(
            "{DOCTEST_HOST} must include every markdown file so its Rust blocks are \
             doctests; missing (add them to `readme_and_docs`):\n  {}",
            missing.join("\n  ")
        )
        .into())
    }
}

/// The workspace-relative paths (with `/`) of the `.md` files under `dir`,
/// recursively, appended to `out` in sorted order.
fn markdown_under(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result {
    let full = root.join(dir);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&full)
        .map_err(|e| format!("cannot read {}: {e}", full.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name() else {
            continue;
        };
        let rel = dir.join(name);
        if path.is_dir() {
            markdown_under(root, &rel, out)?;
        } else if path.extension().is_some_and(|x| x == "md") {
            let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// The files of `files` (workspace-relative) that `host`, a file three
/// levels below the root, does not `include_str!`.
fn not_included(host: &str, files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| !host.contains(&format!("include_str!(\"../../../{f}\")")))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_cli_executable_is_read_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"link_cli"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","executable":"/t/debug/link-bench"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","executable":"/t/my \"dir\"/debug/link-cli","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable_in(messages, "link-cli"),
            Some(PathBuf::from("/t/my \"dir\"/debug/link-cli"))
        );
        assert_eq!(executable_in(messages, "link-hub"), None);
    }

    #[test]
    fn markdown_files_missing_from_the_doctest_host_are_named() {
        let host = "#[doc = include_str!(\"../../../README.md\")]\n\
                    #[doc = include_str!(\"../../../docs/client.md\")]";
        let files = [
            "README.md".to_owned(),
            "docs/client.md".to_owned(),
            "docs/adr/0001-x.md".to_owned(),
        ];
        assert_eq!(not_included(host, &files), ["docs/adr/0001-x.md"]);
    }

    #[test]
    fn every_markdown_file_of_this_workspace_is_a_doctest() {
        let root = crate::workspace_root();
        assert!(docs_are_doctested(&root).is_ok());
    }
}
