//! Reading a frame our own encoder wrote from its end, so that a receiver
//! can check its signature before it parses anything.
//!
//! [`crate::envelope::encode`] writes
//! `{"data":D,"from":F,"id":I,"to":T,"ts":N,"type":Y,"v":1,"sig":"HEX"}`
//! (`data` optional, `from` and `to` a string or `null`). Every member after
//! `data` is a short scalar, so reading them backwards from the closing
//! brace finds the header and the signature without looking inside `D`: the
//! payload is whatever lies between `{"data":` and `,"from":`. That is `D`
//! alone for every frame written from a `Header` and `data` (all our hub
//! and client write); an envelope with an unknown top-level member sorting
//! between `data` and `from` (only [`crate::Envelope::encode`] of a
//! hand-built object writes one) puts that member there too, which
//! [`crate::envelope::parse_authentic`]'s envelope accounts for where it
//! is cheap (see there).
//!
//! Nothing located here is trusted until the signature over the frame's own
//! bytes checks out ([`crate::envelope::parse_authentic`]): a frame with a
//! valid MAC over its exact bytes is what a holder of the key wrote, and our
//! encoder writes canonical JSON. Anything this reader does not recognise
//! (escapes or control characters in a header string, another member order,
//! a non-integer `ts`, a Node peer's insertion-ordered frame) gives `None`,
//! and the frame takes the general path, whose checks and error reasons are
//! the reference's.

use std::ops::Range;

/// Where the parts of a frame in our encoder's shape lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Length of the body prefix: the signing text is `frame[..body_len]`
    /// followed by `}`.
    pub body_len: usize,
    /// The signature's hex digits.
    pub sig: Range<usize>,
    /// The `data` value's bytes, when there is a `data` member.
    pub data: Option<Range<usize>>,
    /// `from` between its quotes; `None` for `null`.
    pub from: Option<Range<usize>>,
    /// `id` between its quotes.
    pub id: Range<usize>,
    /// `to` between its quotes; `None` for `null`.
    pub to: Option<Range<usize>>,
    /// `ts`, a non-negative integer of at most 15 digits (so exact as a
    /// double).
    pub ts: u64,
    /// `type` between its quotes.
    pub msg_type: Range<usize>,
}

/// Locates the members of `frame` when it has exactly our encoder's shape
/// (see the module docs) with a signature of `sig_len` characters (twice
/// the digest length; whether they are hex is the verifier's check), or
/// `None`.
///
/// ```
/// use link_protocol::signed_tail::locate;
/// let f = br#"{"data":{"a":1},"from":null,"id":"x","to":"b","ts":5,"type":"t","v":1,"sig":"ab12"}"#;
/// let t = locate(f, 4).unwrap();
/// assert_eq!(&f[t.data.unwrap()], br#"{"a":1}"#);
/// assert_eq!(&f[t.id], b"x");
/// assert_eq!(t.from, None);
/// assert_eq!(t.ts, 5);
/// assert!(locate(f, 6).is_none());
/// assert!(locate(br#"{"v":1,"id":"x","sig":"ab12"}"#, 4).is_none());
/// ```
pub fn locate(frame: &[u8], sig_len: usize) -> Option<Tail> {
    let mut r = Back {
        b: frame,
        i: frame.len(),
    };
    r.expect(b"\"}")?;
    let sig = r.i.checked_sub(sig_len)?..r.i;
    if sig.is_empty() {
        return None;
    }
    r.i = sig.start;
    r.expect(b",\"sig\":\"")?;
    let body_len = r.i;
    r.expect(b",\"v\":1")?;
    let msg_type = r.string()?;
    r.expect(b",\"type\":")?;
    let ts = r.integer()?;
    r.expect(b",\"ts\":")?;
    let to = r.string_or_null()?;
    r.expect(b",\"to\":")?;
    let id = r.string()?;
    r.expect(b",\"id\":")?;
    let from = r.string_or_null()?;
    r.expect(b"\"from\":")?;
    let data = if r.i == 1 && frame[0] == b'{' {
        None
    } else {
        r.expect(b",")?;
        const DATA: &[u8] = b"{\"data\":";
        if !frame.starts_with(DATA) || r.i <= DATA.len() {
            return None;
        }
        Some(DATA.len()..r.i)
    };
    Some(Tail {
        body_len,
        sig,
        data,
        from,
        id,
        to,
        ts,
        msg_type,
    })
}

/// The last member of a JSON object text when it is `"<key>":"<plain
/// string>"` (no escapes), as the string's bytes between its quotes.
///
/// Canonical objects sort their keys, so `topic` is the last member of a
/// `topic.message`'s data and `directType` of a `direct`'s: this finds them
/// without walking the payload before them. `None` when the last member is
/// anything else; the caller then walks the members. Meant for text whose
/// JSON validity is already established (checked, or covered by a verified
/// signature): in valid JSON an unescaped `"` always delimits a string, and
/// the opening quote found here is checked to follow the `:`.
///
/// ```
/// use link_protocol::signed_tail::last_string_member;
/// let d = r#"{"payload":{"topic":"no"},"topic":"yes"}"#;
/// assert_eq!(last_string_member(d, "topic"), Some("yes"));
/// assert_eq!(last_string_member(r#"{"topic":"a\"b"}"#, "topic"), None);
/// ```
pub fn last_string_member<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let mut r = Back {
        b: object.as_bytes(),
        i: object.len(),
    };
    r.expect(b"}")?;
    let value = r.string()?;
    r.expect(b"\":")?;
    r.expect(key.as_bytes())?;
    r.expect(b"\"")?;
    if r.i == 0 || !matches!(r.b[r.i - 1], b',' | b'{') {
        return None;
    }
    object.get(value)
}

/// A reader that consumes `b[..i]` from its end.
struct Back<'a> {
    b: &'a [u8],
    i: usize,
}

impl Back<'_> {
    // Inlined so that each call compares a literal of known length in
    // place instead of calling `memcmp`.
    #[inline(always)]
    fn expect(&mut self, lit: &[u8]) -> Option<()> {
        self.b[..self.i].ends_with(lit).then(|| self.i -= lit.len())
    }

    /// A string without escapes or control characters, ending at `i`: its
    /// bytes between the quotes.
    fn string(&mut self) -> Option<Range<usize>> {
        let end = self.i.checked_sub(1)?;
        if self.b[end] != b'"' {
            return None;
        }
        // One pass back to the opening quote, refusing what needs escapes.
        let mut open = end;
        loop {
            open = open.checked_sub(1)?;
            match self.b[open] {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => {}
            }
        }
        self.i = open;
        Some(open + 1..end)
    }

    fn string_or_null(&mut self) -> Option<Option<Range<usize>>> {
        if self.expect(b"null").is_some() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A non-negative integer in canonical form (no sign, no leading zero)
    /// of at most 15 digits.
    fn integer(&mut self) -> Option<u64> {
        let end = self.i;
        while self.i > 0 && self.b[self.i - 1].is_ascii_digit() && end - self.i < 16 {
            self.i -= 1;
        }
        let digits = &self.b[self.i..end];
        if digits.is_empty() || digits.len() > 15 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"data":{"payload":{"a":[1,"}"]},"topic":"t"},"from":"pub","id":"i-1","to":"sub","ts":1700000000000,"type":"topic.message","v":1,"sig":"00ff"}"#;

    fn part(f: &str, r: Range<usize>) -> &str {
        &f[r]
    }

    #[test]
    fn locates_every_member() {
        let t = locate(FULL.as_bytes(), 4).unwrap();
        assert_eq!(&FULL[..t.body_len], &FULL[..FULL.find(",\"sig\"").unwrap()]);
        assert_eq!(part(FULL, t.sig), "00ff");
        assert_eq!(
            part(FULL, t.data.unwrap()),
            r#"{"payload":{"a":[1,"}"]},"topic":"t"}"#
        );
        assert_eq!(part(FULL, t.from.unwrap()), "pub");
        assert_eq!(part(FULL, t.id), "i-1");
        assert_eq!(part(FULL, t.to.unwrap()), "sub");
        assert_eq!(t.ts, 1_700_000_000_000);
        assert_eq!(part(FULL, t.msg_type), "topic.message");
    }

    #[test]
    fn without_data_and_with_nulls() {
        let f = r#"{"from":null,"id":"x","to":null,"ts":0,"type":"ping","v":1,"sig":"AB"}"#;
        let t = locate(f.as_bytes(), 2).unwrap();
        assert_eq!((t.data, t.from, t.to, t.ts), (None, None, None, 0));
        assert_eq!(part(f, t.msg_type), "ping");
    }

    #[test]
    fn refuses_what_it_does_not_recognise() {
        let bad = [
            // A Node peer's member order.
            r#"{"type":"t","id":"x","from":null,"to":null,"ts":1,"v":1,"sig":"ab"}"#,
            // An escape or a control character in a header string.
            r#"{"from":"a\"b","id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            "{\"from\":null,\"id\":\"x\u{1}\",\"to\":null,\"ts\":1,\"type\":\"t\",\"v\":1,\"sig\":\"ab\"}",
            // ts: fraction, sign, leading zero, 16 digits.
            r#"{"from":null,"id":"x","to":null,"ts":1.5,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","to":null,"ts":-1,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","to":null,"ts":01,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","to":null,"ts":1234567890123456,"type":"t","v":1,"sig":"ab"}"#,
            // v other than 1, no sig, an empty sig, a sig of another length.
            r#"{"from":null,"id":"x","to":null,"ts":1,"type":"t","v":2,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","to":null,"ts":1,"type":"t","v":1}"#,
            r#"{"from":null,"id":"x","to":null,"ts":1,"type":"t","v":1,"sig":""}"#,
            r#"{"from":null,"id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"abc"}"#,
            // An unknown member, a missing one, a non-string id or type.
            r#"{"extra":1,"from":null,"id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","ts":1,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":7,"to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null,"id":"x","to":null,"ts":1,"type":null,"v":1,"sig":"ab"}"#,
            // Empty data, whitespace, truncation.
            r#"{"data":,"from":null,"id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            r#"{"from":null, "id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            r#""from":null,"id":"x","to":null,"ts":1,"type":"t","v":1,"sig":"ab"}"#,
            "",
            "\"}",
        ];
        for f in bad {
            assert_eq!(locate(f.as_bytes(), 2), None, "{f}");
        }
    }

    #[test]
    fn last_member_lookup() {
        let d = r#"{"directData":{"directType":"inner"},"directType":"outer"}"#;
        assert_eq!(last_string_member(d, "directType"), Some("outer"));
        assert_eq!(last_string_member(d, "topic"), None);
        assert_eq!(last_string_member(r#"{"topic":""}"#, "topic"), Some(""));
        // The key must be a whole key, the value a plain string.
        assert_eq!(last_string_member(r#"{"xtopic":"a"}"#, "topic"), None);
        assert_eq!(last_string_member(r#"{"topic":1}"#, "topic"), None);
        assert_eq!(last_string_member(r#"{"topic":null}"#, "topic"), None);
        assert_eq!(
            last_string_member(r#"{"a":"x\\","topic":"t"}"#, "topic"),
            Some("t")
        );
        assert_eq!(
            last_string_member(r#"{"a":"\":\"topic\":\"t"}"#, "topic"),
            None
        );
        assert_eq!(last_string_member("[]", "topic"), None);
    }
}
