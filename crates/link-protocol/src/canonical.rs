//! Canonical JSON: the exact text the reference signs (`stableStringify`).
//!
//! This module owns the one function that turns a parsed JSON value into the
//! signing string of protocol v1, byte for byte as the Node.js reference does.
//! The rules (`docs/protocol.md`, protocol §3.2):
//!
//! - object keys sorted by **UTF-16 code units** at every level (not bytes,
//!   not code points); arrays keep their order;
//! - no whitespace;
//! - numbers printed with the ECMAScript Number-to-String algorithm applied to
//!   the IEEE double the text denotes (integers above 2^53 round, `1.0` prints
//!   `1`, `-0` prints `0`, exponents `1e+21` / `1e-7`); the source text of a
//!   number is never echoed;
//! - strings escaped as `JSON.stringify` does: `"` and `\`, the short forms
//!   `\b \t \n \f \r`, other C0 controls as lowercase `\u00xx`, everything
//!   else (including U+007F, `/`, U+2028, U+2029 and non-ASCII) raw.
//!
//! The function never relies on the map order serde happens to give: it
//! checks that the keys are already in UTF-16 order (true for the common
//! all-ASCII case with serde_json's `BTreeMap`) and sorts only when they are
//! not.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Largest integer magnitude a double holds exactly (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// Returns the canonical signing text of `value`.
///
/// ```
/// let v: serde_json::Value = serde_json::from_str(r#"{"b":1.0,"a":[1e21,-0]}"#).unwrap();
/// assert_eq!(link_protocol::canonical::to_string(&v), r#"{"a":[1e+21,0],"b":1}"#);
/// ```
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(value, &mut out);
    out
}

/// Appends the canonical text of `value` to `out`.
///
/// This is the canonicaliser: every other canonical helper calls it.
pub fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Appends the canonical text of an object: keys in UTF-16 order.
pub fn write_object(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    if keys_in_utf16_order(map) {
        write_members(map.iter(), out);
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
        write_members(entries.into_iter(), out);
    }
    out.push('}');
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut String) {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(key, out);
        out.push(':');
        write_value(value, out);
    }
}

fn keys_in_utf16_order(map: &Map<String, Value>) -> bool {
    let mut keys = map.keys();
    let Some(mut prev) = keys.next() else {
        return true;
    };
    for key in keys {
        if cmp_utf16(prev, key) != Ordering::Less {
            return false;
        }
        prev = key;
    }
    true
}

/// Compares two strings by their UTF-16 code units, as JavaScript's default
/// `Array.prototype.sort` does.
///
/// UTF-8 byte order equals code point order, and code point order equals
/// UTF-16 order except when a BMP character at or above U+E000 meets an
/// astral one (whose surrogates, D800–DFFF, sort below it). Up to the first
/// differing byte both strings hold the same characters; if that byte is a
/// lead byte in both, its class (0xEE–0xEF: U+E000–U+FFFF, 0xF0+: astral)
/// decides the special case; if it is a continuation byte, the two
/// characters share a lead byte and hence a class, so byte order is right.
///
/// ```
/// use std::cmp::Ordering;
/// use link_protocol::canonical::cmp_utf16;
/// assert_eq!(cmp_utf16("😀", "｡"), Ordering::Less); // U+1F600 < U+FF61 in UTF-16
/// assert_eq!(cmp_utf16("10", "2"), Ordering::Less);
/// ```
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    match ab.iter().zip(bb).position(|(x, y)| x != y) {
        None => ab.len().cmp(&bb.len()),
        Some(i) => {
            let (x, y) = (ab[i], bb[i]);
            let high_bmp = |b: u8| b == 0xEE || b == 0xEF;
            let astral = |b: u8| b >= 0xF0;
            if astral(x) && high_bmp(y) {
                Ordering::Less
            } else if high_bmp(x) && astral(y) {
                Ordering::Greater
            } else {
                x.cmp(&y)
            }
        }
    }
}

/// Appends a JSON number as JavaScript prints the double it denotes.
pub fn write_number(n: &Number, out: &mut String) {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            out.push_str(itoa::Buffer::new().format(u));
            return;
        }
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE) {
        // `-0` parses as u64 0 above, so `i` is never a negative zero here.
        out.push_str(itoa::Buffer::new().format(i));
        return;
    }
    // Any other number is read as the nearest double, exactly as JSON.parse
    // does (serde_json's `float_roundtrip` gives a correctly rounded f64, and
    // an u64/i64 converts with round-to-nearest-even).
    let f = n.as_f64().unwrap_or(0.0);
    write_f64(f, out);
}

/// Appends a double in ECMAScript Number-to-String form; non-finite values
/// print `null`, as `JSON.stringify` does.
pub fn write_f64(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push_str("null");
    } else if f == 0.0 {
        out.push('0'); // also -0
    } else {
        out.push_str(ryu_js::Buffer::new().format_finite(f));
    }
}

/// Appends `s` as a JSON string with `JSON.stringify` escaping.
pub fn write_str(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    // Most strings (ids, kinds, types, topics) need no escape: one
    // vectorised scan, one copy.
    if crate::plain::is_plain(bytes) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0C => "\\f",
            b'\r' => "\\r",
            0x00..=0x1F => {
                out.push_str(&s[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escape);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        to_string(&serde_json::from_str::<Value>(text).unwrap())
    }

    #[test]
    fn sorts_keys_by_utf16_units() {
        assert_eq!(
            canon(r#"{"2":0,"10":0,"a":0,"B":0,"_":0}"#),
            r#"{"10":0,"2":0,"B":0,"_":0,"a":0}"#
        );
        assert_eq!(canon(r#"{"｡":1,"😀":2,"z":3}"#), r#"{"z":3,"😀":2,"｡":1}"#);
    }

    #[test]
    fn numbers_follow_ecmascript() {
        let cases = [
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345680000", "123456789012345680000"),
            ("1e-7", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("0.000001", "0.000001"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("5e-324", "5e-324"),
            ("9007199254740994", "9007199254740994"),
            ("9007199254740993", "9007199254740992"),
            ("12345678901234567890", "12345678901234567000"),
            ("-12345678901234567890", "-12345678901234567000"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("12.5e3", "12500"),
            ("-9007199254740993", "-9007199254740992"),
            ("100000000000000000000000000000", "1e+29"),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "input {input}");
        }
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        assert_eq!(
            canon(r#""\u0000\u0001\u001f\u007f\u2028\u2029\/\"\\\b\f\n\r\t""#),
            "\"\\u0000\\u0001\\u001f\u{7f}\u{2028}\u{2029}/\\\"\\\\\\b\\f\\n\\r\\t\""
        );
        assert_eq!(canon(r#""\u000b""#), r#""\u000b""#);
    }

    #[test]
    fn cmp_utf16_matches_transcoding() {
        let samples = [
            "", "a", "ab", "B", "é", "中", "\u{e000}", "\u{ff61}", "😀", "𝄞", "a😀", "a｡",
        ];
        for a in samples {
            for b in samples {
                assert_eq!(
                    cmp_utf16(a, b),
                    a.encode_utf16().cmp(b.encode_utf16()),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
