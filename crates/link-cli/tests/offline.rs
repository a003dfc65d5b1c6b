//! End-to-end tests of `link-cli canon`, `sign` and `verify`: the built
//! binary is run with a piped stdin and its exact stdout and exit status are
//! checked. The `--lines` tests push every golden vector of
//! `link-protocol/tests/data/canonical.json` through one process.

// Tests may unwrap; clippy's `allow-unwrap-in-tests` does not reach the
// helper functions of an integration test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Output, Stdio};
use std::thread;

use link_test_support::LinkCli;
use serde_json::Value;

const ENVELOPE: &str =
    r#"{"v":1,"id":"x","ts":1000,"type":"t","from":null,"to":null,"data":{"a":1}}"#;
const SIG: &str = "4f9134cd8bc1091eb4009d54260df36fe1406c453af246c4d8415d908ee7cd0f";

/// Runs the binary with `args`, `LINK_*` and `RUST_LOG` unset unless given
/// in `env`.
fn run_env(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = LinkCli::new(env!("CARGO_BIN_EXE_link-cli")).command();
    cmd.args(args).stdin(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    // Feed stdin from another thread so a large output cannot deadlock us.
    let feeder = thread::spawn(move || {
        // The child may exit early (usage error) and close its stdin.
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn run(args: &[&str], stdin: &str) -> Output {
    run_env(args, &[], stdin)
}

fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> &str {
    std::str::from_utf8(&out.stderr).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../link-protocol/tests/data/canonical.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn canon_sorts_keys_by_utf16() {
    let out = run(&["canon"], r#"{"2":0,"10":0,"a":0,"B":0,"_":0}"#);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"10\":0,\"2\":0,\"B\":0,\"_\":0,\"a\":0}\n");
}

#[test]
fn canon_refuses_bad_and_empty_input() {
    for input in ["{", "", " \n ", "1 2", "\"\\ud800\""] {
        let out = run(&["canon"], input);
        assert_eq!(code(&out), 2, "input {input:?}");
        assert_eq!(stdout(&out), "");
        assert!(
            stderr(&out).starts_with("link-cli canon: "),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn sign_spec_vector_then_verify() {
    let out = run(&["sign", "--secret", "k"], ENVELOPE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let frame = stdout(&out);
    assert_eq!(
        frame,
        format!(
            r#"{{"data":{{"a":1}},"from":null,"id":"x","to":null,"ts":1000,"type":"t","v":1,"sig":"{SIG}"}}"#
        ) + "\n"
    );
    let parsed: Value = serde_json::from_str(frame).unwrap();
    assert_eq!(parsed["sig"], SIG);

    let ok = run(&["verify", "--secret", "k"], frame);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "");

    let bad = run(&["verify", "--secret", "other"], frame);
    assert_eq!(code(&bad), 1);
    assert_eq!(stdout(&bad), "");
    assert!(stderr(&bad).contains("bad-signature"), "{}", stderr(&bad));
    assert!(!stderr(&bad).contains("other"), "secret leaked");
}

#[test]
fn sign_ignores_an_existing_sig() {
    let with_sig = ENVELOPE.replace("\"v\":1", "\"sig\":\"00\",\"v\":1");
    let out = run(&["sign", "--secret", "k"], &with_sig);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).ends_with(&format!("\"sig\":\"{SIG}\"}}\n")));
}

#[test]
fn sha512_round_trip_with_secret_from_env() {
    let env = [("LINK_SECRET", "env-secret")];
    let signed = run_env(&["sign", "--hash", "sha512"], &env, ENVELOPE);
    assert_eq!(code(&signed), 0, "{}", stderr(&signed));
    let frame = stdout(&signed);
    let parsed: Value = serde_json::from_str(frame).unwrap();
    assert_eq!(parsed["sig"].as_str().unwrap().len(), 128);

    let ok = run_env(&["verify", "--hash", "sha512"], &env, frame);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    // Same secret on the command line; upper case names are accepted.
    let ok = run(
        &["verify", "--secret", "env-secret", "--hash", "SHA512"],
        frame,
    );
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    // A sha256 key refuses a sha512 signature.
    let bad = run_env(&["verify"], &env, frame);
    assert_eq!(code(&bad), 1);
    // --secret wins over the environment.
    let bad = run_env(
        &["verify", "--hash", "sha512", "--secret", "x"],
        &env,
        frame,
    );
    assert_eq!(code(&bad), 1);
}

#[test]
fn verify_sorts_out_unusable_input() {
    let cases = [
        ("not json", 2, "parse-error"),
        ("[1]", 2, "missing-id"),
        (r#"{"id":7}"#, 2, "missing-id"),
        ("", 2, "empty input"),
        (r#"{"id":"a"}"#, 1, "bad-signature"),
        (r#"{"id":"a","sig":"zz"}"#, 1, "bad-signature"),
    ];
    for (input, want, reason) in cases {
        let out = run(&["verify", "--secret", "k"], input);
        assert_eq!(code(&out), want, "input {input:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
    let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(257));
    let out = run(&["verify", "--secret", "k"], &long);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("oversized-id"), "{}", stderr(&out));
}

#[test]
fn bad_hash_and_missing_secret_exit_2() {
    let out = run(&["sign", "--secret", "k", "--hash", "md5"], ENVELOPE);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("md5"));
    assert_eq!(stdout(&out), "");

    for cmd in ["sign", "verify"] {
        let out = run(&[cmd], ENVELOPE);
        assert_eq!(code(&out), 2, "{cmd}");
        assert!(stderr(&out).contains("LINK_SECRET"), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");

        let out = run(&[cmd, "--secret", ""], ENVELOPE);
        assert_eq!(code(&out), 2, "{cmd} with an empty secret");
    }
}

#[test]
fn help_hides_the_secret_from_the_environment() {
    let out = run_env(&["verify", "--help"], &[("LINK_SECRET", "do-not-show")], "");
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("LINK_SECRET"));
    assert!(stdout(&out).contains("Exit status"));
    assert!(!stdout(&out).contains("do-not-show"));
}

#[test]
fn verify_lines_over_every_envelope_vector() {
    let file = vectors();
    let secret = file["secret"].as_str().unwrap();
    let envelopes = file["envelopes"].as_array().unwrap();
    assert_eq!(envelopes.len(), 80);
    let mut input = String::new();
    let mut want = String::new();
    for case in envelopes {
        let wire = case["wire"].as_str().unwrap();
        assert!(!wire.contains('\n'));
        input.push_str(wire);
        input.push('\n');
        want.push_str(if case["valid"].as_bool().unwrap() {
            "ok\n"
        } else {
            "fail bad-signature\n"
        });
    }
    let out = run(&["verify", "--lines", "--secret", secret], &input);
    assert_eq!(stdout(&out), want);
    assert_eq!(code(&out), 1, "some vectors are invalid");
    assert_eq!(stderr(&out), "");
}

#[test]
fn canon_lines_over_every_case_vector() {
    let file = vectors();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 417);
    let mut input = String::new();
    let mut want = String::new();
    for case in cases {
        // A raw newline in JSON text can only be insignificant whitespace.
        let text = case["input"].as_str().unwrap().replace('\n', " ");
        input.push_str(&text);
        input.push('\n');
        want.push_str(case["canonical"].as_str().unwrap());
        want.push('\n');
    }
    let out = run(&["canon", "--lines"], &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (got, want): (Vec<&str>, Vec<&str>) =
        (stdout(&out).lines().collect(), want.lines().collect());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "case {i}");
    }
}

#[test]
fn sign_lines_signs_every_case_like_the_vectors() {
    // Every case input that is an object with an id is an envelope; its
    // sha256 HMAC of the canonical text is in the file, so the signed frame
    // must carry that sig.
    let file = vectors();
    let secret = file["secret"].as_str().unwrap();
    let mut input = String::new();
    let mut want = Vec::new();
    for case in file["cases"].as_array().unwrap() {
        let text = case["input"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(text).unwrap();
        if parsed["id"].as_str().is_none_or(str::is_empty) {
            continue;
        }
        input.push_str(&text.replace('\n', " "));
        input.push('\n');
        want.push(case["hmac_sha256"].as_str().unwrap().to_owned());
    }
    assert!(want.len() > 10, "enough envelope-shaped cases");
    let out = run(&["sign", "--lines", "--secret", secret], &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let frames: Vec<&str> = stdout(&out).lines().collect();
    assert_eq!(frames.len(), want.len());
    for (frame, sig) in frames.iter().zip(&want) {
        let parsed: Value = serde_json::from_str(frame).unwrap();
        assert_eq!(parsed["sig"].as_str(), Some(sig.as_str()), "{frame}");
    }

    // And verify --lines accepts them all in one more process.
    let out = run(&["verify", "--lines", "--secret", secret], stdout(&out));
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "ok\n".repeat(want.len()));
}

#[test]
fn lines_mode_reports_each_line_and_the_worst_status() {
    let frame = stdout(&run(&["sign", "--secret", "k"], ENVELOPE)).to_owned();
    let input = format!("{frame}\n\n   \nnot json\n[1]\n{{\"id\":\"a\"}}\r\n{frame}");
    let out = run(&["verify", "--lines", "--secret", "k"], &input);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stdout(&out),
        "ok\nfail parse-error\nfail missing-id\nfail bad-signature\nok\n"
    );

    let out = run(
        &["sign", "--lines", "--secret", "k"],
        &format!("{ENVELOPE}\n{{\n[1]\n{{\"id\":\"\"}}\n{ENVELOPE}\n"),
    );
    assert_eq!(code(&out), 2);
    let lines: Vec<&str> = stdout(&out).lines().collect();
    assert_eq!(
        lines[1..4],
        ["fail parse-error", "fail missing-id", "fail missing-id"]
    );
    assert_eq!(lines[0], lines[4]);
    assert!(lines[0].contains(SIG));
    assert!(
        stderr(&out).contains("line 2: parse-error"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("line 3: missing-id"),
        "{}",
        stderr(&out)
    );

    let out = run(&["canon", "--lines"], "{\"b\":1,\"a\":2}\n\n{\n[1.0]");
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "{\"a\":2,\"b\":1}\nfail parse-error\n[1]\n");

    let out = run(&["canon", "--lines"], "\n\n");
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "");
}
