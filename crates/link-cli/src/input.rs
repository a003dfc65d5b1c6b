//! Reading documents from stdin: the whole input as one document, or one
//! document per line (`--lines`).
//!
//! Both forms hand out raw bytes; the caller decides how to decode them
//! (`verify` decodes lossily as the hub does, `canon` and `sign` insist on
//! UTF-8). A line is blank, and skipped, when it holds only JSON whitespace
//! (space, tab, CR).

use std::io::{self, BufRead, Read};

use crate::exit::Failure;

/// Reads all of `input` as one document. Blank input is unusable.
pub(crate) fn read_document(mut input: impl Read) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::read(&e))?;
    if is_blank(&bytes) {
        return Err(Failure::unusable(
            "empty input: expected one JSON document on stdin",
        ));
    }
    Ok(bytes)
}

/// Newline-separated documents with their 1-based line numbers.
pub(crate) struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    number: usize,
}

impl<R: BufRead> Lines<R> {
    /// Wraps a buffered reader.
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::with_capacity(4096),
            number: 0,
        }
    }

    /// The next non-blank line without its `\n` / `\r\n` terminator, and its
    /// line number counting blank lines too. `None` at end of input.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(usize, &[u8])>> {
        let end = loop {
            self.buf.clear();
            if self.input.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(None);
            }
            self.number += 1;
            let line = trim_terminator(&self.buf);
            if !is_blank(line) {
                break line.len();
            }
        };
        Ok(Some((self.number, &self.buf[..end])))
    }
}

fn trim_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// True when `bytes` holds only JSON whitespace (or nothing).
fn is_blank(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let mut lines = Lines::new(text);
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().unwrap() {
            out.push((n, line.to_vec()));
        }
        out
    }

    #[test]
    fn lines_skip_blanks_and_strip_terminators() {
        let got = collect(b"a\r\n\n  \t\r\nb\nc");
        assert_eq!(
            got,
            [(1, b"a".to_vec()), (4, b"b".to_vec()), (5, b"c".to_vec())]
        );
        assert!(collect(b"").is_empty());
        assert!(collect(b"\n\n").is_empty());
    }

    #[test]
    fn blank_document_is_unusable() {
        assert!(read_document(&b" \n\t"[..]).is_err());
        assert!(read_document(&b""[..]).is_err());
        assert_eq!(read_document(&b" 1\n"[..]).unwrap(), b" 1\n");
    }
}
