//! Target `canonical`: JSON text, canonicalised.
//!
//! Checks, for any text `serde_json` parses to a value `v`:
//! - idempotence: `canonical(parse(canonical(v))) == canonical(v)`;
//! - differential: where `serde_json_canonicalizer` (RFC 8785, which also
//!   sorts by UTF-16 units and prints ECMAScript numbers) gives an answer,
//!   it is byte for byte ours;
//! - the signing-form scanner: it accepts every canonical text (up to its
//!   depth limit), and whatever it accepts is exactly the canonical form of
//!   what it denotes (so verifying a frame over its own bytes is sound);
//! - `cmp_utf16` agrees with comparing `encode_utf16` for every pair of
//!   neighbouring object keys.

use std::cmp::Ordering;

use link_protocol::{Value, canonical, signed_form};

/// Nesting the signing-form scanner follows (its `MAX_DEPTH`).
const SCANNER_DEPTH: usize = 100;

/// Runs one input.
pub fn run(data: &[u8]) {
    // The scanner is only ever given a `str`'s bytes (it checks structure,
    // not the encoding inside strings; the first finding of this target).
    let claimed = std::str::from_utf8(data).is_ok() && signed_form::is_canonical(data);
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        assert!(!claimed, "scanner accepts text serde_json rejects");
        return;
    };
    let once = canonical::to_string(&value);
    if claimed {
        assert_eq!(
            once.as_bytes(),
            data,
            "scanner accepts text that is not canonical"
        );
    }
    if depth(&value) <= SCANNER_DEPTH {
        assert!(
            signed_form::is_canonical(once.as_bytes()),
            "scanner refuses canonical text: {once}"
        );
    }
    let reparsed: Value = serde_json::from_str(&once)
        .unwrap_or_else(|e| panic!("canonical text does not parse: {e}: {once}"));
    assert_eq!(
        canonical::to_string(&reparsed),
        once,
        "canonicalisation is not idempotent"
    );
    if let Ok(jcs) = serde_json_canonicalizer::to_string(&value) {
        assert_eq!(
            once, jcs,
            "differs from RFC 8785 (serde_json_canonicalizer)"
        );
    }
    check_key_order(&value);
}

/// Nesting depth (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_key_order(value: &Value) {
    match value {
        Value::Array(items) => items.iter().for_each(check_key_order),
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            for pair in keys.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let want: Ordering = a.encode_utf16().cmp(b.encode_utf16());
                assert_eq!(canonical::cmp_utf16(a, b), want, "{a:?} vs {b:?}");
                assert_eq!(canonical::cmp_utf16(b, a), want.reverse(), "{b:?} vs {a:?}");
            }
            map.values().for_each(check_key_order);
        }
        _ => {}
    }
}
