//! The offline subcommands: `canon`, `sign` and `verify`.
//!
//! They need no hub and no network: each reads JSON from stdin, runs it
//! through `link-protocol` and writes the answer to stdout. With `--lines`
//! every stdin line is one document and gives exactly one output line, so
//! a test harness can push thousands of cases through one process.
//!
//! ```text
//!   stdin ─► input::{read_document | Lines} ─► canon_text / sign_frame / check_frame
//!                                                   │
//!          stdout (BufWriter) ◄─ text | ok | fail <reason> ◄┘   stderr ◄─ details
//! ```
//!
//! Reasons are the protocol's drop codes ([`DropReason::code`]):
//! `parse-error`, `missing-id`, `oversized-id`, `bad-signature`.

use std::fmt;
use std::io::{self, BufRead, BufWriter, Write};

use clap::Args;
use link_protocol::envelope::{self, Envelope};
use link_protocol::{DropReason, Key, ProtocolError, Value, canonical};

use crate::exit::{Failure, Status};
use crate::input::{Lines, read_document};
use crate::key::KeyArgs;

/// Help text on `--lines` shared by the three subcommands.
const LINES_HELP: &str = "Treat every stdin line as one document and print one output line \
     per document; blank lines are skipped";

/// Arguments of `link-cli canon`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Reads one JSON document on stdin and prints its canonical form (the text the \
protocol signs: keys in UTF-16 order at every level, no whitespace, ECMAScript \
numbers, JSON.stringify escaping) followed by a newline.

With --lines, a line that is not JSON prints `fail parse-error` (details on \
stderr) and the other lines are still processed.

Exit status: 0 success; 2 input that is not JSON, empty input, or (--lines) any \
line that is not JSON.")]
pub(crate) struct CanonArgs {
    #[arg(long, help = LINES_HELP)]
    lines: bool,
}

/// Arguments of `link-cli sign`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Reads an envelope as a JSON object on stdin (any `sig` member is ignored) and \
prints the signed wire frame on one line: the canonical envelope with `sig` \
appended. Every member is signed, unknown ones included; `id` must be a \
non-empty string of at most 256 UTF-16 units.

With --lines, a line that cannot be signed prints `fail <reason>` (reason: \
parse-error, missing-id, oversized-id; details on stderr) and the other lines \
are still processed.

Exit status: 0 success; 2 input that is not an envelope object, empty input, \
no secret, or (--lines) any line that could not be signed.")]
pub(crate) struct SignArgs {
    #[command(flatten)]
    key: KeyArgs,

    #[arg(long, help = LINES_HELP)]
    lines: bool,
}

/// Arguments of `link-cli verify`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Reads one wire frame on stdin and checks its `sig` under the key. Only the \
signature is checked: not `v`, not the replay window, not the message type. \
Nothing is printed when the frame verifies.

Exit status:
  0  the signature verifies
  1  a well-formed envelope whose signature does not verify or which has no \
`sig` (stderr: bad-signature)
  2  input that is not an envelope at all (stderr: the drop reason, \
parse-error, missing-id or oversized-id), empty input, or no secret

With --lines, each line prints `ok` or `fail <reason>` where reason is the drop \
code (bad-signature, parse-error, missing-id, oversized-id); nothing goes to \
stderr per line. Exit status: 0 if every line is ok, 1 if any line failed \
(whatever the reason), 2 only for usage errors or unreadable stdin.")]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    key: KeyArgs,

    #[arg(long, help = LINES_HELP)]
    lines: bool,
}

/// Why one document got no answer: the drop code for stdout (`fail
/// <reason>`) and the full text for stderr.
///
/// A local type rather than [`ProtocolError`], which is large (clippy
/// `result_large_err`) and carries hub-side details the CLI never fills.
#[derive(Debug)]
struct Refusal {
    reason: DropReason,
    message: String,
}

impl Refusal {
    /// Just the reason.
    fn bare(reason: DropReason) -> Self {
        Self {
            reason,
            message: reason.code().to_owned(),
        }
    }

    /// A reason with a sub-reason, shown as `reason (detail)`.
    fn detail(reason: DropReason, detail: &str) -> Self {
        Self {
            reason,
            message: format!("{} ({detail})", reason.code()),
        }
    }
}

impl From<ProtocolError> for Refusal {
    fn from(err: ProtocolError) -> Self {
        Self {
            reason: err.reason(),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `link-cli canon`.
pub(crate) fn canon(args: &CanonArgs) -> Result<Status, Failure> {
    transform(
        "canon",
        args.lines,
        io::stdin().lock(),
        BufWriter::new(io::stdout().lock()),
        canon_text,
    )
}

/// `link-cli sign`.
pub(crate) fn sign(args: &SignArgs) -> Result<Status, Failure> {
    let key = args.key.key()?;
    transform(
        "sign",
        args.lines,
        io::stdin().lock(),
        BufWriter::new(io::stdout().lock()),
        |bytes| sign_frame(bytes, &key),
    )
}

/// `link-cli verify`.
pub(crate) fn verify(args: &VerifyArgs) -> Result<Status, Failure> {
    let key = args.key.key()?;
    let input = io::stdin().lock();
    if args.lines {
        verify_lines(input, BufWriter::new(io::stdout().lock()), &key)
    } else {
        verify_document(input, &key)
    }
}

/// The canonical text of one JSON document.
fn canon_text(bytes: &[u8]) -> Result<String, Refusal> {
    Ok(canonical::to_string(&parse_json(bytes)?))
}

/// The signed frame of one envelope object.
fn sign_frame(bytes: &[u8], key: &Key) -> Result<String, Refusal> {
    let Value::Object(map) = parse_json(bytes)? else {
        // The same code `parse_frame` gives a non-object frame.
        return Err(Refusal::detail(DropReason::MissingId, "not a JSON object"));
    };
    Ok(Envelope::from_object(map)?.encode(key))
}

/// Checks one frame: `Ok` when it verifies, else the drop reason.
/// `bad-signature` means a well-formed envelope; any other reason means the
/// input is not an envelope at all.
fn check_frame(bytes: &[u8], key: &Key) -> Result<(), Refusal> {
    let received = envelope::parse_frame(bytes, usize::MAX)?;
    if received.sig.is_none() {
        Err(Refusal::detail(DropReason::BadSignature, "no sig"))
    } else if received.verify(key) {
        Ok(())
    } else {
        Err(Refusal::bare(DropReason::BadSignature))
    }
}

/// Strict JSON (UTF-8 required), failing with `parse-error`.
fn parse_json(bytes: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| Refusal {
        reason: DropReason::ParseError,
        message: format!("{}: {e}", DropReason::ParseError.code()),
    })
}

/// Runs a document-to-text function (`canon`, `sign`) over stdin, once or
/// per line. Any document that fails makes the run unusable (exit 2).
fn transform<R, W, F>(
    command: &str,
    lines: bool,
    input: R,
    mut out: W,
    f: F,
) -> Result<Status, Failure>
where
    R: BufRead,
    W: Write,
    F: Fn(&[u8]) -> Result<String, Refusal>,
{
    if !lines {
        let text = f(&read_document(input)?).map_err(Failure::unusable)?;
        return write_line(&mut out, &text)
            .and_then(|()| out.flush())
            .map(|()| Status::Ok)
            .map_err(|e| Failure::write(&e));
    }
    let mut lines = Lines::new(input);
    let mut status = Status::Ok;
    loop {
        let (number, line) = match lines.next_line() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) => return Err(flush_then(&mut out, Failure::read(&e))),
        };
        let written = match f(line) {
            Ok(text) => write_line(&mut out, &text),
            Err(e) => {
                eprintln!("link-cli {command}: line {number}: {e}");
                status = Status::Unusable;
                write_fail(&mut out, &e)
            }
        };
        written.map_err(|e| Failure::write(&e))?;
    }
    out.flush().map_err(|e| Failure::write(&e))?;
    Ok(status)
}

/// `verify` of one frame: silent on success, the reason on stderr otherwise.
fn verify_document(input: impl BufRead, key: &Key) -> Result<Status, Failure> {
    match check_frame(&read_document(input)?, key) {
        Ok(()) => Ok(Status::Ok),
        Err(e) if e.reason == DropReason::BadSignature => Err(Failure::rejected(e)),
        Err(e) => Err(Failure::unusable(e)),
    }
}

/// `verify --lines`: `ok` or `fail <reason>` per line; any failure is exit 1.
fn verify_lines(input: impl BufRead, mut out: impl Write, key: &Key) -> Result<Status, Failure> {
    let mut lines = Lines::new(input);
    let mut status = Status::Ok;
    loop {
        let line = match lines.next_line() {
            Ok(Some((_, line))) => line,
            Ok(None) => break,
            Err(e) => return Err(flush_then(&mut out, Failure::read(&e))),
        };
        let written = match check_frame(line, key) {
            Ok(()) => out.write_all(b"ok\n"),
            Err(e) => {
                status = Status::Rejected;
                write_fail(&mut out, &e)
            }
        };
        written.map_err(|e| Failure::write(&e))?;
    }
    out.flush().map_err(|e| Failure::write(&e))?;
    Ok(status)
}

fn write_line(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")
}

fn write_fail(out: &mut impl Write, err: &Refusal) -> io::Result<()> {
    writeln!(out, "fail {}", err.reason.code())
}

/// Flushes what was already answered before reporting `failure`; a flush
/// error is dropped because `failure` is the cause worth reporting.
fn flush_then(out: &mut impl Write, failure: Failure) -> Failure {
    let _ = out.flush();
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use link_protocol::HashAlgo;

    const ENVELOPE: &str =
        r#"{"v":1,"id":"x","ts":1000,"type":"t","from":null,"to":null,"data":{"a":1}}"#;
    const FRAME: &str = r#"{"data":{"a":1},"from":null,"id":"x","to":null,"ts":1000,"type":"t","v":1,"sig":"4f9134cd8bc1091eb4009d54260df36fe1406c453af246c4d8415d908ee7cd0f"}"#;

    fn key(secret: &str) -> Key {
        Key::new(secret, HashAlgo::Sha256).unwrap()
    }

    fn reason<T: std::fmt::Debug>(r: Result<T, Refusal>) -> &'static str {
        r.unwrap_err().reason.code()
    }

    #[test]
    fn sign_and_check_spec_vector() {
        assert_eq!(sign_frame(ENVELOPE.as_bytes(), &key("k")).unwrap(), FRAME);
        let with_sig = FRAME.replace("4f91", "0000");
        assert_eq!(sign_frame(with_sig.as_bytes(), &key("k")).unwrap(), FRAME);
        assert!(check_frame(FRAME.as_bytes(), &key("k")).is_ok());
        assert_eq!(
            reason(check_frame(FRAME.as_bytes(), &key("other"))),
            "bad-signature"
        );
    }

    #[test]
    fn reasons_for_unusable_documents() {
        let k = key("k");
        assert_eq!(reason(canon_text(b"{")), "parse-error");
        assert_eq!(reason(canon_text(b"\"\xff\"")), "parse-error");
        assert_eq!(reason(sign_frame(b"[1]", &k)), "missing-id");
        assert_eq!(reason(sign_frame(br#"{"id":""}"#, &k)), "missing-id");
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(257));
        assert_eq!(reason(sign_frame(long.as_bytes(), &k)), "oversized-id");
        assert_eq!(reason(check_frame(long.as_bytes(), &k)), "oversized-id");
        assert_eq!(reason(check_frame(b"nope", &k)), "parse-error");
        assert_eq!(reason(check_frame(br#"{"id":"a"}"#, &k)), "bad-signature");
    }

    #[test]
    fn transform_lines_keeps_going_after_a_bad_line() {
        let mut out = Vec::new();
        let status = transform(
            "canon",
            true,
            &b"{\"b\":1,\"a\":2}\n\n{\n[1.0]\n"[..],
            &mut out,
            canon_text,
        )
        .unwrap();
        assert_eq!(status, Status::Unusable);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":2,\"b\":1}\nfail parse-error\n[1]\n"
        );
    }

    #[test]
    fn verify_lines_reports_each_frame() {
        let input = format!("{FRAME}\n{{\"id\":\"a\",\"sig\":\"00\"}}\n\nnot json\n");
        let mut out = Vec::new();
        let status = verify_lines(input.as_bytes(), &mut out, &key("k")).unwrap();
        assert_eq!(status, Status::Rejected);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok\nfail bad-signature\nfail parse-error\n"
        );
    }
}
