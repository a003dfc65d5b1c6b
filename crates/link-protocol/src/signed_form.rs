//! Recognising frames that are already in signing form.
//!
//! Our encoder writes the canonical signing text itself with `sig` spliced in
//! before the closing brace (ADR 0002). When a received frame has that shape,
//! its own bytes (minus the `sig` member) *are* the canonical text, so it can
//! be verified without building a tree and canonicalising it again, and its
//! `data` bytes can be relayed verbatim.
//!
//! This module owns the strict scanner that decides "this text is exactly
//! its own canonical form". It is a pure optimisation: a `None` or `false`
//! sends the frame down the general path (parse, canonicalise), so the scanner
//! may refuse anything unusual. What it accepts must be valid JSON that
//! [`crate::canonical`] would print byte for byte the same; a property test
//! and the reference vectors hold it to that.

use std::ops::Range;

use crate::canonical;

/// Deepest nesting the scanner follows; deeper text takes the general path
/// (whose parser stops at 128).
const MAX_DEPTH: u32 = 100;

/// Where the parts of a frame in signing form lie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedForm {
    /// Length of the body prefix: the signing text is `frame[..body_len]`
    /// followed by `}`.
    pub body_len: usize,
    /// The `data` value's bytes, when the body has a `data` member.
    pub data: Option<Range<usize>>,
    /// The value bytes of the other envelope members, when present (a
    /// string's span includes its quotes).
    pub header: HeaderSpans,
    /// The `data` value's members, when it is an object: read in the same
    /// pass, so a relay can check them without walking the payload again.
    pub data_members: Option<DataMembers>,
}

/// The members of a frame's `data` object, as the scan met them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataMembers {
    /// How many members the object has.
    pub count: usize,
    /// Its first two members, in order: each key's raw text (between its
    /// quotes) and where its value starts.
    pub first: [Option<(Range<usize>, usize)>; 2],
}

/// Value spans of the top-level envelope members other than `data`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpans {
    /// `from`.
    pub from: Option<Range<usize>>,
    /// `id`.
    pub id: Option<Range<usize>>,
    /// `to`.
    pub to: Option<Range<usize>>,
    /// `ts`.
    pub ts: Option<Range<usize>>,
    /// `type`.
    pub msg_type: Option<Range<usize>>,
    /// `v`.
    pub v: Option<Range<usize>>,
    /// Members other than these and `data` (unknown fields).
    pub others: usize,
}

/// Returns where the signing text and `data` lie when `frame` is a canonical
/// object followed by a trailing `,"sig":"<hex>"}` member (and has no other
/// `sig`), or `None` when it must take the general path.
///
/// ```
/// use link_protocol::signed_form::split;
/// let f = br#"{"data":{"a":1},"id":"x","v":1,"sig":"ab12"}"#;
/// let s = split(f).unwrap();
/// assert_eq!(&f[..s.body_len], br#"{"data":{"a":1},"id":"x","v":1"#);
/// assert_eq!(&f[s.data.unwrap()], br#"{"a":1}"#);
/// assert!(split(br#"{"v":1,"id":"x","sig":"ab12"}"#).is_none()); // keys out of order
/// ```
pub fn split(frame: &[u8]) -> Option<SignedForm> {
    const SIG: &[u8] = b",\"sig\":\"";
    let inner = frame.strip_suffix(b"\"}")?;
    let hex_len = crate::plain::trailing_hex_digits(inner);
    let body_len = inner.len() - hex_len;
    let body_len = body_len.checked_sub(SIG.len())?;
    if &frame[body_len..body_len + SIG.len()] != SIG {
        return None;
    }
    let mut scan = Scan {
        b: &frame[..body_len],
        i: 0,
        close_at_end: true,
        top: SignedForm {
            body_len,
            ..SignedForm::default()
        },
        data_next: false,
    };
    let whole = scan.object(0) && scan.i == body_len + 1;
    whole.then_some(scan.top)
}

/// True when `text` is exactly the canonical form of the JSON it denotes.
///
/// `text` is taken to be UTF-8 (every caller passes a `str`'s bytes): the
/// scanner checks JSON structure and escapes, not the encoding inside
/// strings.
///
/// ```
/// use link_protocol::signed_form::is_canonical;
/// assert!(is_canonical(br#"{"a":[1,"x",null],"b":1.5}"#));
/// assert!(!is_canonical(br#"{"b":1,"a":2}"#));
/// assert!(!is_canonical(b"1.0"));
/// ```
pub fn is_canonical(text: &[u8]) -> bool {
    let mut scan = Scan {
        b: text,
        i: 0,
        close_at_end: false,
        top: SignedForm::default(),
        data_next: false,
    };
    scan.value(0) && scan.i == text.len()
}

/// True when `text` is one JSON value and nothing after it, read as
/// [`members`] skips values (strings scanned, brackets counted, scalars not
/// checked). [`crate::signed_tail`] uses it to be sure a frame's `data`
/// ends where the next member begins.
pub(crate) fn is_one_value(text: &[u8]) -> bool {
    match text.first() {
        Some(b'{' | b'[' | b'"') => {
            let mut scan = Scan {
                b: text,
                i: 0,
                close_at_end: false,
                top: SignedForm::default(),
                data_next: false,
            };
            scan.skip_value() && scan.i == text.len()
        }
        // A bare scalar: nothing that could end it or start another value.
        Some(_) => !text
            .iter()
            .any(|c| matches!(c, b',' | b':' | b'"' | b'{' | b'}' | b'[' | b']')),
        None => false,
    }
}

/// The members of a JSON object text in canonical form (what
/// [`is_canonical`] accepts, or a `data` span from [`split`]): each key's
/// raw text between its quotes, and the span of its value in `object`.
/// Values are skipped over, not checked again, so other text gives
/// unspecified (but in-bounds) spans. Yields nothing when `object` is not an
/// object, and stops at the first thing that is not a member.
///
/// ```
/// use link_protocol::signed_form::members;
/// let text = r#"{"payload":[1,{"a":2}],"topic":"t"}"#;
/// let got: Vec<_> = members(text).map(|(k, r)| (k, &text[r])).collect();
/// assert_eq!(got, [("payload", r#"[1,{"a":2}]"#), ("topic", r#""t""#)]);
/// ```
pub fn members(object: &str) -> Members<'_> {
    let open = object.starts_with('{') && !object.starts_with("{}");
    Members {
        scan: Scan {
            b: object.as_bytes(),
            i: usize::from(open),
            close_at_end: false,
            top: SignedForm::default(),
            data_next: false,
        },
        text: object,
        done: !open,
    }
}

/// Iterator returned by [`members`].
pub struct Members<'a> {
    scan: Scan<'a>,
    text: &'a str,
    done: bool,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = &mut self.scan;
        let member = s.string().and_then(|key| {
            if s.peek() != b':' {
                return None;
            }
            s.i += 1;
            let start = s.i;
            if !s.skip_value() {
                return None;
            }
            let end = s.i;
            match s.peek() {
                b',' => s.i += 1,
                b'}' => self.done = true,
                _ => return None,
            }
            Some((self.text.get(key.start..key.end)?, start..end))
        });
        if member.is_none() {
            self.done = true;
        }
        member
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Reads a virtual `}` just past the end (the body without `sig`).
    close_at_end: bool,
    /// Spans of the top-level members, recorded in split mode.
    top: SignedForm,
    /// The next object scanned is the top-level `data` value (split mode):
    /// it records its members.
    data_next: bool,
}

/// A scanned object key: its raw bytes between the quotes, and whether it
/// holds escapes (then it must be decoded before comparing).
#[derive(Clone, Copy)]
struct KeySpan {
    start: usize,
    end: usize,
    escaped: bool,
    /// No byte of it is above 0x7F.
    ascii: bool,
}

impl Scan<'_> {
    fn peek(&self) -> u8 {
        self.at(self.i)
    }

    fn value(&mut self, depth: u32) -> bool {
        match self.value_at(self.i, depth) {
            Some(end) => {
                self.i = end;
                true
            }
            None => false,
        }
    }

    /// Moves past one value without checking it (the text was checked
    /// before): strings are scanned, brackets counted, anything else runs
    /// to the next `,` or closing bracket.
    fn skip_value(&mut self) -> bool {
        let start = self.i;
        let mut depth = 0u32;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    if self.string().is_none() {
                        return false;
                    }
                    if depth == 0 {
                        return true;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => return self.i > start,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return true;
                    }
                }
                b',' if depth == 0 => return self.i > start,
                _ => {}
            }
            self.i += 1;
        }
        false
    }

    /// The byte at `i`, the virtual `}` just past the end in split mode,
    /// or 0 past the text.
    #[inline]
    fn at(&self, i: usize) -> u8 {
        match self.b.get(i) {
            Some(&c) => c,
            None if self.close_at_end && i == self.b.len() => b'}',
            None => 0,
        }
    }

    /// The value that starts at `i` (a member's or an element's), read in
    /// the container's loop: strings and literals here, numbers and
    /// containers by their own methods. Where it ends, or `None`.
    #[inline(always)]
    fn value_at(&mut self, i: usize, depth: u32) -> Option<usize> {
        let c = self.at(i);
        match c {
            b'"' => string_at(self.b, i).map(|(_, end)| end),
            b'{' | b'[' | b'-' | b'0'..=b'9' => {
                self.i = i;
                let valid = match c {
                    b'{' => self.object(depth),
                    b'[' => self.array(depth),
                    _ => self.number(),
                };
                valid.then_some(self.i)
            }
            b't' => literal_at(self.b, i, b"true"),
            b'f' => literal_at(self.b, i, b"false"),
            b'n' => literal_at(self.b, i, b"null"),
            _ => None,
        }
    }

    fn object(&mut self, depth: u32) -> bool {
        // Only this object is `data`, not the ones inside it.
        let mut members = std::mem::take(&mut self.data_next).then(DataMembers::default);
        if depth >= MAX_DEPTH || self.peek() != b'{' {
            return false;
        }
        // The envelope itself, in split mode: its members' spans are kept.
        let top = depth == 0 && self.close_at_end;
        let b = self.b;
        let mut i = self.i + 1;
        if self.at(i) == b'}' {
            self.i = i + 1;
            if members.is_some() {
                self.top.data_members = members;
            }
            return true;
        }
        let mut prev: Option<KeySpan> = None;
        loop {
            let Some((key, after)) = string_at(b, i) else {
                return false;
            };
            if let Some(p) = prev
                && !self.key_less(p, key)
            {
                return false; // out of order, or a duplicate
            }
            prev = Some(key);
            if self.at(after) != b':' {
                return false;
            }
            let start = after + 1;
            if let Some(m) = members.as_mut() {
                if let Some(slot) = m.first.get_mut(m.count) {
                    *slot = Some((key.start..key.end, start));
                }
                m.count += 1;
            }
            self.data_next = top && self.at(start) == b'{' && &b[key.start..key.end] == b"data";
            let end = self.value_at(start, depth + 1);
            self.data_next = false;
            let Some(end) = end else {
                return false;
            };
            i = end;
            if top {
                let span = Some(start..end);
                let h = &mut self.top.header;
                match &b[key.start..key.end] {
                    b"sig" => return false, // must be the trailing member only
                    b"data" => self.top.data = span,
                    b"from" => h.from = span,
                    b"id" => h.id = span,
                    b"to" => h.to = span,
                    b"ts" => h.ts = span,
                    b"type" => h.msg_type = span,
                    b"v" => h.v = span,
                    _ => h.others += 1,
                }
            }
            match self.at(i) {
                b',' => i += 1,
                b'}' => {
                    self.i = i + 1;
                    if members.is_some() {
                        self.top.data_members = members;
                    }
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn array(&mut self, depth: u32) -> bool {
        if depth >= MAX_DEPTH {
            return false;
        }
        let mut i = self.i + 1;
        if self.at(i) == b']' {
            self.i = i + 1;
            return true;
        }
        loop {
            let Some(end) = self.value_at(i, depth + 1) else {
                return false;
            };
            i = end;
            match self.at(i) {
                b',' => i += 1,
                b']' => {
                    self.i = i + 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// Scans a string that is written exactly as `JSON.stringify` writes it.
    fn string(&mut self) -> Option<KeySpan> {
        let (key, end) = string_at(self.b, self.i)?;
        self.i = end;
        Some(key)
    }

    /// Scans a number whose text is what JavaScript prints for its double.
    fn number(&mut self) -> bool {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i - from
        };
        if self.peek() == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return false;
        }
        let mut simple = true;
        let mut fraction = None;
        if self.peek() == b'.' {
            self.i += 1;
            simple = false;
            let from = self.i;
            if digits(self) == 0 {
                return false;
            }
            fraction = Some(from..self.i);
        }
        let mut exponent = false;
        if matches!(self.peek(), b'e' | b'E') {
            self.i += 1;
            simple = false;
            exponent = true;
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            if digits(self) == 0 {
                return false;
            }
        }
        let text = &self.b[start..self.i];
        if simple && int_digits <= 15 {
            // An integer below 10^15 prints as itself, except `-0`.
            return text != b"-0";
        }
        if let (Some(fraction), false) = (fraction, exponent) {
            let int = &self.b[int_start..int_start + int_digits];
            if let Some(fixed) = plain_decimal(int, &self.b[fraction]) {
                return fixed;
            }
        }
        // Anything else: the text must be what the double prints as.
        let Ok(s) = std::str::from_utf8(text) else {
            return false;
        };
        match s.parse::<f64>() {
            Ok(0.0) => false, // zero (and -0) prints as `0`, a simple integer
            Ok(f) if f.is_finite() => ryu_js::Buffer::new().format_finite(f).as_bytes() == text,
            _ => false,
        }
    }

    fn key_less(&self, a: KeySpan, b: KeySpan) -> bool {
        let (ka, kb) = (&self.b[a.start..a.end], &self.b[b.start..b.end]);
        if !a.escaped && !b.escaped && a.ascii && b.ascii {
            // ASCII: byte order is UTF-16 order. Keys are short: a loop
            // here costs less than a call to `memcmp`.
            for (x, y) in ka.iter().zip(kb) {
                if x != y {
                    return x < y;
                }
            }
            return ka.len() < kb.len();
        }
        let text = |k: KeySpan| std::str::from_utf8(&self.b[k.start..k.end]).ok();
        let (Some(ta), Some(tb)) = (text(a), text(b)) else {
            return false;
        };
        if !a.escaped && !b.escaped {
            return canonical::cmp_utf16(ta, tb).is_lt();
        }
        canonical::cmp_utf16(&unescape(ta), &unescape(tb)).is_lt()
    }
}

/// The string that starts at `b[i]`, if it is written exactly as
/// `JSON.stringify` writes it: its span between the quotes, and where it
/// ends (past the closing quote).
#[inline(always)]
fn string_at(b: &[u8], i: usize) -> Option<(KeySpan, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut i = start;
    let mut escaped = false;
    // The high bits of the plain bytes met: zero when the string is ASCII.
    let mut high = 0u64;
    loop {
        // Skip plain bytes, eight at a time while there are eight; a
        // string must end before the text does.
        let (at, high_before) = crate::plain::next_special(b, i)?;
        high |= high_before;
        i = at;
        match b[i] {
            b'"' => {
                let key = KeySpan {
                    start,
                    end: i,
                    escaped,
                    ascii: high == 0,
                };
                return Some((key, i + 1));
            }
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => i += 2,
                    b'u' => {
                        let hex = b.get(i + 2..i + 6)?;
                        let lower = |h: u8| h.is_ascii_digit() || (b'a'..=b'f').contains(&h);
                        if &hex[..2] != b"00" || !lower(hex[2]) || !lower(hex[3]) {
                            return None;
                        }
                        let unit = hex_val(hex[2]) * 16 + hex_val(hex[3]);
                        // Only controls without a short form are written as \u00xx.
                        if unit >= 0x20 || matches!(unit, 0x08 | 0x09 | 0x0A | 0x0C | 0x0D) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            _ => return None, // raw control: not JSON
        }
    }
}

/// Where `word` (`true`, `false`, `null`) ends if `b[i..]` starts with it.
#[inline]
fn literal_at(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..)?.starts_with(word).then_some(i + word.len())
}

/// Decides a decimal `int.fraction` (no exponent) without formatting its
/// double, when that is easy: with at most 15 significant digits it is the
/// only such decimal of its double (`DBL_DIG`), hence the shortest, and
/// JavaScript prints it in this fixed notation unless it is below 1e-6 or
/// ends in a zero. `None`: let the formatter decide.
fn plain_decimal(int: &[u8], fraction: &[u8]) -> Option<bool> {
    if fraction.last() == Some(&b'0') {
        return Some(false);
    }
    let significant = if int == b"0" {
        let zeros = fraction.iter().take_while(|&&d| d == b'0').count();
        if zeros > 5 {
            return Some(false); // below 1e-6: exponent notation
        }
        fraction.len() - zeros
    } else {
        int.len() + fraction.len()
    };
    (significant <= 15).then_some(true)
}

fn hex_val(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        _ => h - b'a' + 10,
    }
}

/// Decodes the escapes [`Scan::string`] admits.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('f') => out.push('\u{c}'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = u32::from_str_radix(&hex, 16).unwrap_or(0);
                out.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canon(text: &str) -> String {
        canonical::to_string(&serde_json::from_str::<Value>(text).unwrap())
    }

    #[test]
    fn accepts_exactly_canonical_text() {
        let cases = [
            r#"{"a":1}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            r#"[1,2.5,-3,1e+21,1e-7,0.000001,true,false,null,"x"]"#,
            "1.0",
            "-0",
            "1E21",
            "1e21",
            "9007199254740993",
            "9007199254740992",
            "123456789012345680000",
            "0.000001",
            "0.0000001",
            "0.00000123",
            "-0.5",
            "-0.0",
            "21.50",
            "100.25",
            "123456789012345.6",
            "1.0000000000000002",
            "0.30000000000000004",
            "0.1",
            "5e-7",
            r#""\u0001\b\t\n\f\r\"\\""#,
            r#""\u0008""#,
            r#""\u0041""#,
            r#""\/""#,
            r#""\u001F""#,
            r#"{"\n":1,"\t":2}"#,
            r#"{"\t":1,"\n":2}"#,
            r#"{"😀":1,"｡":2}"#,
            r#"{"｡":1,"😀":2}"#,
            "\"\u{7f}\u{2028}é\"",
            r#"{"10":0,"2":0}"#,
            "{}",
            "[]",
            "[[[]]]",
        ];
        for text in cases {
            let want = canon(text) == text;
            assert_eq!(is_canonical(text.as_bytes()), want, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "\"\u{1}\"",
            "tru",
            "1.",
            "-",
            "01",
            "-01",
            "1e",
            "{\"a\":1}x",
        ] {
            assert!(!is_canonical(text.as_bytes()), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!is_canonical(deep.as_bytes()));
    }

    #[test]
    fn members_skip_values_with_brackets_in_strings() {
        let text = r#"{"a":"x}],\"","b":[{"c":"]"},[]],"c":-1.5e-7,"d":null,"e":{}}"#;
        assert!(is_canonical(text.as_bytes()));
        let got: Vec<_> = members(text).map(|(k, r)| (k, &text[r])).collect();
        assert_eq!(
            got,
            [
                ("a", r#""x}],\"""#),
                ("b", r#"[{"c":"]"},[]]"#),
                ("c", "-1.5e-7"),
                ("d", "null"),
                ("e", "{}"),
            ]
        );
        for not_object in ["{}", "[1]", "1", "", "\"{\""] {
            assert_eq!(members(not_object).count(), 0, "{not_object}");
        }
    }

    #[test]
    fn one_value_and_nothing_after_it() {
        for one in [
            r#"{"a":[1,"}"]}"#,
            "[]",
            r#""x\"y""#,
            "true",
            "-1.5e3",
            "null",
        ] {
            assert!(is_one_value(one.as_bytes()), "{one}");
        }
        let more = [
            r#"{"a":1},"e":2"#,
            r#"[1],"e":{}"#,
            r#""s","e":[]"#,
            r#"true,"datsig":"x""#,
            "",
        ];
        for text in more {
            assert!(!is_one_value(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn split_finds_body_and_data() {
        let f = br#"{"data":{"x":[1]},"from":"a","id":"i","to":null,"ts":5,"type":"t","v":1,"sig":"00ff"}"#;
        let s = split(f).unwrap();
        assert_eq!(f[s.body_len], b',');
        assert_eq!(&f[s.data.unwrap()], br#"{"x":[1]}"#);
        let no_data = br#"{"id":"i","sig":"00"}"#;
        assert_eq!(split(no_data).unwrap().data, None);
    }

    #[test]
    fn split_records_the_data_objects_members_and_not_those_inside_them() {
        type Seen<'a> = (usize, [Option<(&'a str, char)>; 2]);
        fn members(f: &str) -> Option<Seen<'_>> {
            let s = split(f.as_bytes()).unwrap();
            s.data_members.map(|m| {
                let first = m
                    .first
                    .map(|slot| slot.map(|(key, value)| (&f[key], f.as_bytes()[value] as char)));
                (m.count, first)
            })
        }
        assert_eq!(
            members(r#"{"data":{"payload":{"a":{"topic":1}},"topic":"t"},"id":"i","sig":"00"}"#),
            Some((2, [Some(("payload", '{')), Some(("topic", '"'))]))
        );
        assert_eq!(
            members(r#"{"data":{"a":1,"b":[{"c":2}],"d":null},"id":"i","sig":"00"}"#),
            Some((3, [Some(("a", '1')), Some(("b", '['))]))
        );
        assert_eq!(
            members(r#"{"data":{},"id":"i","sig":"00"}"#),
            Some((0, [None, None]))
        );
        // Not an object, or no data: nothing recorded, whatever is inside.
        assert_eq!(members(r#"{"data":[{"a":1}],"id":"i","sig":"00"}"#), None);
        assert_eq!(members(r#"{"data":"x","id":"i","sig":"00"}"#), None);
        assert_eq!(members(r#"{"from":{"a":1},"id":"i","sig":"00"}"#), None);
        // Only split reads them: the same text checked alone records nothing.
        let mut scan = Scan {
            b: br#"{"data":{"a":1}}"#,
            i: 0,
            close_at_end: false,
            top: SignedForm::default(),
            data_next: false,
        };
        assert!(scan.value(0));
        assert_eq!(scan.top.data_members, None);
    }

    #[test]
    fn split_refuses_other_shapes() {
        for f in [
            r#"{"id":"i","sig":"00","v":1}"#,      // sig not last
            r#"{"id":"i","sig":"zz"}"#,            // not hex
            r#"{"sig":"00"}"#,                     // no body member
            r#"{"id":"i","sig":"00","sig":"00"}"#, // a second sig
            r#"{"id":"i","sig":1}"#,               // not a string
            r#"{"v":1,"id":"i","sig":"00"}"#,      // body not canonical
            r#"{"id":"i" ,"sig":"00"}"#,           // whitespace
            r#"{"data":{"sig":1},"id":"i","sig":"00"}"#,
        ] {
            let got = split(f.as_bytes());
            // A nested "sig" is ordinary data; only the top level is refused.
            let nested = f.starts_with(r#"{"data":{"sig""#);
            assert_eq!(got.is_some(), nested, "{f}");
        }
    }
}
