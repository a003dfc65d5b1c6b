//! Replays every committed fuzz input through the same harness the fuzz
//! target runs (stable toolchain, part of the ordinary test suite), so an
//! input that once found a bug keeps passing: `fuzz/corpus/<target>/`
//! (minimised corpora) and `fuzz/regressions/<target>/` (the inputs behind
//! fixed findings).

// A helper, not a `#[test]` fn: clippy.toml's test allowance does not
// reach it, and a failed unwrap here is a test failure, as wanted.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs every file of the target's corpus and regressions; returns how many
/// ran. Fails naming the first file whose run panics.
fn replay(target: &str) -> usize {
    let run = link_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no target {target}"));
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
    files.len()
}

#[test]
fn every_target_has_a_committed_corpus() {
    for (target, _) in link_fuzz::TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let count = std::fs::read_dir(&dir).map(Iterator::count).unwrap_or(0);
        assert!(count > 0, "{} is empty or missing", dir.display());
    }
}

#[test]
fn frame_corpus_replays() {
    assert!(replay("frame") > 0);
}

#[test]
fn canonical_corpus_replays() {
    assert!(replay("canonical") > 0);
}

#[test]
fn hub_conn_corpus_replays() {
    assert!(replay("hub_conn") > 0);
}

#[test]
fn client_conn_corpus_replays() {
    assert!(replay("client_conn") > 0);
}

#[test]
fn presence_corpus_replays() {
    assert!(replay("presence") > 0);
}

#[test]
fn server_socket_corpus_replays() {
    assert!(replay("server_socket") > 0);
}

/// Not the fuzzer, but a cheap net under it: a few thousand inputs from a
/// fixed pseudo-random sequence through every target, so a harness or
/// product change that breaks a check is caught without nightly.
#[test]
fn pseudo_random_inputs_pass_every_target() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (target, run) in link_fuzz::TARGETS {
        for i in 0..2_000 {
            let len = (next() % 256) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                panic!("{target}: pseudo-random input {i} fails: {data:?}");
            }
        }
    }
}
