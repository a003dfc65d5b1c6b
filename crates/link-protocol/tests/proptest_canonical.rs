//! Property tests for canonical JSON (protocol §3.2), number formatting, string
//! escaping and envelope sign/verify (protocol §3.1, §3.3).
//!
//! Generated values stress the places a Rust port is most likely to drift
//! from the Node.js reference: keys mixing astral characters with BMP
//! characters at or above U+E000 (UTF-16 order differs from byte order),
//! control characters, integers beyond 2^53, subnormal and negative-zero
//! doubles. Oracles are independent of the crate where practical: key order
//! is checked with `encode_utf16`, escaping against a small
//! `JSON.stringify` model, numbers by parsing the text back as `f64`, and
//! whole values against `serde_json_canonicalizer` (RFC 8785).

// Helper functions (strategies, scanners, oracles) are not `#[test]` fns, so
// clippy.toml's `allow-unwrap-in-tests` does not cover them; a failed unwrap
// in a test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::fmt::Write as _;

use link_protocol::envelope::{self, CanonicalData, DEFAULT_MAX_MESSAGE_BYTES, Header};
use link_protocol::{Envelope, HashAlgo, Key, Map, Value, canonical, signed_form};
use proptest::prelude::*;

/// 2^53: the largest integer magnitude a double holds exactly.
const MAX_SAFE: u64 = 1 << 53;

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Characters weighted towards the interesting classes.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range(' ', '~'),
        2 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{2028}', '\u{2029}']),
        1 => prop::sample::select(vec![
            '\u{e000}', '\u{ff61}', '\u{ffff}', '\u{fffd}', '\u{1f600}', '\u{1d11e}',
            '\u{10000}', '\u{10ffff}', 'é', '中',
        ]),
        1 => proptest::char::range('\u{80}', '\u{d7ff}'),
        2 => proptest::char::range('\u{e000}', '\u{ffff}'),
        2 => proptest::char::range('\u{10000}', '\u{10ffff}'),
    ]
}

fn any_string(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..=max_chars).prop_map(String::from_iter)
}

/// Keys: arbitrary strings, or short strings over a tiny alphabet so that
/// siblings share prefixes and astral/high-BMP pairs meet often.
fn any_key() -> impl Strategy<Value = String> {
    let tiny = prop::sample::select(vec![
        'a',
        'b',
        'B',
        '1',
        '2',
        '_',
        '\u{e000}',
        '\u{ff61}',
        '\u{1f600}',
        '\u{1d11e}',
    ]);
    prop_oneof![
        any_string(6),
        prop::collection::vec(tiny, 0..=4).prop_map(String::from_iter),
    ]
}

/// Any finite double: raw bit patterns (uniform over exponents), proptest's
/// float classes (normal, subnormal, zero, both signs) and edge values.
fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64 as pf;
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits).prop_filter("finite", |f| f.is_finite()),
        2 => pf::POSITIVE | pf::NEGATIVE | pf::NORMAL | pf::SUBNORMAL | pf::ZERO,
        1 => (0u64..(1 << 52)).prop_map(f64::from_bits), // subnormals
        1 => -1.0e6..1.0e6f64,
        1 => prop::sample::select(vec![
            -0.0, 0.0, 5e-324, -5e-324, f64::MIN_POSITIVE, f64::MAX, f64::MIN, 1e21, 1e20,
            9.999_999_999_999_999e20, 1e-7, 1e-6, 1.5e-7, 0.1 + 0.2, 9_007_199_254_740_994.0,
            123_456_789_012_345_680_000.0,
        ]),
    ]
}

/// Integers of every magnitude, with extra weight around ±2^53.
fn any_int_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (MAX_SAFE - 3..=MAX_SAFE + 3, any::<bool>()).prop_map(|(m, neg)| if neg {
            Value::from(-i64::try_from(m).unwrap())
        } else {
            Value::from(m)
        }),
    ]
}

fn any_number() -> impl Strategy<Value = Value> {
    prop_oneof![any_int_value(), finite_f64().prop_map(Value::from)]
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => any_number(),
        3 => any_string(8).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// Oracles
// ---------------------------------------------------------------------------

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `JSON.stringify` of a string, written char by char from protocol §3.2.
fn js_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Scans canonical JSON text and returns, for every object in document
/// order of its closing brace, the keys in the order they were written.
fn object_key_lists(text: &str) -> Vec<Vec<String>> {
    enum Frame {
        Obj { keys: Vec<String>, expect_key: bool },
        Arr,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut done = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => stack.push(Frame::Obj {
                keys: Vec::new(),
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Arr),
            b'}' | b']' => {
                if let Some(Frame::Obj { keys, .. }) = stack.pop() {
                    done.push(keys);
                }
            }
            b',' => {
                if let Some(Frame::Obj { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            b':' => {
                if let Some(Frame::Obj { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Obj {
                    keys,
                    expect_key: true,
                }) = stack.last_mut()
                {
                    keys.push(serde_json::from_str(&text[start..=i]).unwrap());
                }
            }
            _ => {}
        }
        i += 1;
    }
    assert!(stack.is_empty(), "unbalanced canonical text {text}");
    done
}

fn count_keys(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len() + m.values().map(count_keys).sum::<usize>(),
        Value::Array(a) => a.iter().map(count_keys).sum(),
        _ => 0,
    }
}

/// Checks that every `\` escape in canonical string text is one that
/// `JSON.stringify` produces, with lowercase `\u00xx` for other C0 controls.
fn check_escapes(text: &str) -> Result<(), TestCaseError> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        prop_assert!(b[i] >= 0x20, "raw control byte {:#x} in {:?}", b[i], text);
        if b[i] == b'\\' {
            let e = b[i + 1];
            if e == b'u' {
                let hex = &text[i + 2..i + 6];
                prop_assert!(
                    hex.bytes()
                        .all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(&h)),
                    "non-lowercase \\u escape {hex:?} in {text:?}"
                );
                let code = u32::from_str_radix(hex, 16).unwrap();
                prop_assert!(
                    code < 0x20 && ![0x08, 0x09, 0x0a, 0x0c, 0x0d].contains(&code),
                    "unexpected \\u{hex} in {text:?}"
                );
                i += 6;
                continue;
            }
            prop_assert!(
                b"\"\\bfnrt".contains(&e),
                "unexpected escape \\{} in {text:?}",
                char::from(e)
            );
            i += 2;
            continue;
        }
        i += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Canonical JSON
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// canonical(parse(canonical(x))) == canonical(x).
    #[test]
    fn canonical_is_idempotent_through_parse(x in any_value()) {
        let once = canonical::to_string(&x);
        let parsed: Value = serde_json::from_str(&once)
            .map_err(|e| TestCaseError::fail(format!("{e}: {once}")))?;
        prop_assert_eq!(canonical::to_string(&parsed), once);
    }

    /// Differential oracle: RFC 8785 (JCS) also sorts by UTF-16 units and
    /// prints ECMAScript numbers, so on any value serde_json can hold it
    /// must agree with `stableStringify` byte for byte.
    #[test]
    fn agrees_with_serde_json_canonicalizer(x in any_value()) {
        let jcs = serde_json_canonicalizer::to_string(&x)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(canonical::to_string(&x), jcs);
    }

    /// Keys are written in strictly increasing UTF-16 order at every level,
    /// and none are lost.
    #[test]
    fn keys_sorted_by_utf16_at_every_level(x in any_value()) {
        let text = canonical::to_string(&x);
        let lists = object_key_lists(&text);
        let written: usize = lists.iter().map(Vec::len).sum();
        prop_assert_eq!(written, count_keys(&x));
        for keys in &lists {
            for pair in keys.windows(2) {
                prop_assert_eq!(
                    utf16_cmp(&pair[0], &pair[1]), Ordering::Less,
                    "{:?} before {:?} in {}", pair[0], pair[1], text
                );
            }
        }
    }

    /// The signing-form scanner accepts every canonical text.
    #[test]
    fn scanner_accepts_canonical_text(x in any_value()) {
        let text = canonical::to_string(&x);
        prop_assert!(signed_form::is_canonical(text.as_bytes()), "{}", text);
    }

    /// ... and whatever it accepts is exactly its own canonical form, even
    /// after the text is mangled (keys swapped, spaces, number spellings).
    #[test]
    fn scanner_never_accepts_non_canonical_text(
        x in any_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..6), 0..4),
    ) {
        let mut text = serde_json::to_string(&x).unwrap();
        for (at, what) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            let piece = ["1.0", " ", "\\u0041", "-0", ",\"a\":1", "e5"][what];
            text.insert_str(pos, piece);
        }
        if signed_form::is_canonical(text.as_bytes()) {
            let parsed: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("accepted invalid JSON {text}: {e}")))?;
            prop_assert_eq!(canonical::to_string(&parsed), text);
        }
    }

    /// Strings: `JSON.stringify` escaping, parses back, no raw controls.
    #[test]
    fn strings_escape_like_json_stringify(s in any_string(24)) {
        let text = canonical::to_string(&Value::String(s.clone()));
        prop_assert_eq!(&text, &js_quote(&s));
        let back: String = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &s);
        check_escapes(&text)?;
    }
}

proptest! {
    // Each case canonicalises up to 12 nested values twice: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// A flat object with generated keys: the exact text equals members
    /// sorted with `encode_utf16` and written one by one.
    #[test]
    fn flat_object_matches_utf16_sorted_members(
        members in prop::collection::vec((any_key(), any_value()), 0..12),
    ) {
        let map: Map<String, Value> = members.into_iter().collect();
        let mut sorted: Vec<(&String, &Value)> = map.iter().collect();
        sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));
        let mut want = String::from("{");
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                want.push(',');
            }
            want.push_str(&js_quote(k));
            want.push(':');
            canonical::write_value(v, &mut want);
        }
        want.push('}');
        let got = canonical::to_string(&Value::Object(map.clone()));
        prop_assert_eq!(&got, &want);
        let keys: Vec<String> = sorted.iter().map(|(k, _)| (*k).clone()).collect();
        prop_assert_eq!(object_key_lists(&got).last().cloned().unwrap_or_default(), keys);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn cmp_utf16_matches_encode_utf16(a in any_key(), b in any_key()) {
        prop_assert_eq!(canonical::cmp_utf16(&a, &b), utf16_cmp(&a, &b));
    }

    #[test]
    fn cmp_utf16_with_shared_prefix(p in any_string(4), a in any_key(), b in any_key()) {
        let (pa, pb) = (format!("{p}{a}"), format!("{p}{b}"));
        prop_assert_eq!(canonical::cmp_utf16(&pa, &pb), utf16_cmp(&pa, &pb));
        prop_assert_eq!(canonical::cmp_utf16(&pa, &p), utf16_cmp(&pa, &p));
        prop_assert_eq!(canonical::cmp_utf16(&p, &pb), utf16_cmp(&p, &pb));
    }

    /// Any finite double prints as text that parses back to the same bits
    /// (-0 prints `0`), in ECMAScript's fixed/exponent form.
    #[test]
    fn doubles_round_trip(x in finite_f64()) {
        let text = canonical::to_string(&Value::from(x));
        let back: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        if x == 0.0 {
            prop_assert_eq!(&text, "0");
        } else {
            prop_assert_eq!(back.to_bits(), x.to_bits(), "{} printed {}", x, text);
        }
        let a = x.abs();
        prop_assert_eq!(text.contains("e+"), a >= 1e21, "{}", text);
        prop_assert_eq!(text.contains("e-"), a != 0.0 && a < 1e-6, "{}", text);
        prop_assert!(!text.contains('E') && !text.starts_with('+'), "{}", text);
        if a < 1e21 && x.fract() == 0.0 && a <= MAX_SAFE as f64 {
            prop_assert_eq!(text, (x as i64).to_string());
        }
    }

    /// Safe integers print as their decimal text, whether held as an
    /// integer or as a double.
    #[test]
    fn safe_integers_print_exactly(
        i in prop_oneof![
            -(MAX_SAFE as i64)..=(MAX_SAFE as i64),
            -1000i64..1000,
            (MAX_SAFE as i64 - 8)..=(MAX_SAFE as i64),
        ]
    ) {
        prop_assert_eq!(canonical::to_string(&Value::from(i)), i.to_string());
        prop_assert_eq!(canonical::to_string(&Value::from(i as f64)), i.to_string());
    }

    /// Integers beyond 2^53 print as the double they round to.
    #[test]
    fn big_integers_print_as_their_double(n in any_int_value()) {
        let text = canonical::to_string(&n);
        let want = n.as_f64().unwrap();
        let back: f64 = text.parse().unwrap();
        prop_assert_eq!(back.to_bits(), want.to_bits(), "{} printed {}", n, text);
        prop_assert_eq!(text, canonical::to_string(&Value::from(want)));
    }
}

// ---------------------------------------------------------------------------
// Envelopes: encode / parse / verify
// ---------------------------------------------------------------------------

/// An owned [`Header`] plus payload for generation.
#[derive(Clone, Debug)]
struct EnvelopeInput {
    id: String,
    ts: u64,
    msg_type: String,
    from: Option<String>,
    to: Option<String>,
    data: Option<Value>,
}

impl EnvelopeInput {
    fn header(&self) -> Header<'_> {
        Header {
            id: &self.id,
            ts: self.ts,
            msg_type: &self.msg_type,
            from: self.from.as_deref(),
            to: self.to.as_deref(),
        }
    }
}

fn any_envelope(ts: impl Strategy<Value = u64>) -> impl Strategy<Value = EnvelopeInput> {
    (
        any_string(12).prop_map(|s| format!("m{s}")), // non-empty, <= 256 UTF-16 units
        ts,
        any_string(10),
        prop::option::of(any_string(8)),
        prop::option::of(any_string(8)),
        prop::option::of(any_value()),
    )
        .prop_map(|(id, ts, msg_type, from, to, data)| EnvelopeInput {
            id,
            ts,
            msg_type,
            from,
            to,
            data,
        })
}

fn any_algo() -> impl Strategy<Value = HashAlgo> {
    prop::sample::select(vec![HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512])
}

/// Timestamps a double holds exactly (realistic ones are ~1.8e12).
fn safe_ts() -> impl Strategy<Value = u64> {
    prop_oneof![1_600_000_000_000u64..2_000_000_000_000, 0..=MAX_SAFE]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// encode → parse_frame → verify under the same key; fails under another
    /// secret; fails when any single hex digit of `sig` changes value.
    #[test]
    fn encoded_frames_verify_only_under_their_key(
        env in any_envelope(safe_ts()),
        algo in any_algo(),
        (secret, other) in (any_string(6), any_string(6))
            .prop_map(|(a, b)| (format!("k{a}"), format!("k{b}")))
            // HMAC zero-pads short keys, so "k" and "k\0" are the same key
            // (in Node too): secrets must differ beyond trailing NULs.
            .prop_filter("distinct HMAC keys", |(a, b)| {
                a.trim_end_matches('\0') != b.trim_end_matches('\0')
            }),
        digit in any::<prop::sample::Index>(),
        delta in 1u8..16,
    ) {
        let key = Key::new(&secret, algo).unwrap();
        let data = env.data.as_ref().map(CanonicalData::new);
        let frame = envelope::encode(&key, &env.header(), data.as_ref());

        let got = envelope::parse_frame(frame.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
            .map_err(|e| TestCaseError::fail(format!("{e}: {frame}")))?;
        prop_assert!(got.verify(&key), "does not verify: {}", frame);
        prop_assert!(!got.verify(&Key::new(&other, algo).unwrap()));
        // Our frames are in signing form: read off the text (unless a header
        // string needs escapes), the envelope shows what the tree of the
        // same bytes holds.
        let plain = |s: &str| !s.chars().any(|c| c == '"' || c == '\\' || c < ' ');
        let header_plain = [Some(&env.id), Some(&env.msg_type), env.from.as_ref(), env.to.as_ref()]
            .into_iter()
            .flatten()
            .all(|s| plain(s));
        prop_assert_eq!(
            got.envelope.signed_data_text().is_some(),
            header_plain && data.is_some()
        );
        let tree: serde_json::Map<String, Value> = serde_json::from_str(&frame).unwrap();
        let tree = Envelope::from_object(tree).unwrap();
        prop_assert_eq!(&got.envelope, &tree);
        prop_assert_eq!(got.envelope.msg_type(), tree.msg_type());
        prop_assert_eq!(got.envelope.from(), tree.from());
        prop_assert_eq!(got.envelope.to(), tree.to());
        prop_assert_eq!(got.envelope.ts().to_bits(), tree.ts().to_bits());
        prop_assert_eq!(got.envelope.data(), tree.data());
        prop_assert_eq!(got.envelope.canonical(), tree.canonical());
        prop_assert_eq!(got.envelope.canonical_data(), data.clone());
        prop_assert_eq!(got.envelope.id(), env.id.as_str());

        // The fast path equals the generic envelope path, and a fan-out's
        // shared prefix writes the same bytes.
        prop_assert_eq!(&Envelope::new(&env.header(), env.data.clone()).encode(&key), &frame);
        let prefix = envelope::SharedPrefix::new(&key, env.from.as_deref(), data.as_ref());
        prop_assert_eq!(&prefix.encode(&env.header()), &frame);

        // Flip one hex digit of the trailing `"sig":"<hex>"}` to another value.
        let hex_len = algo.digest_len() * 2;
        let sig_start = frame.len() - 2 - hex_len;
        prop_assert_eq!(&frame[sig_start - 8..sig_start], ",\"sig\":\"");
        let pos = sig_start + digit.index(hex_len);
        let old = u8::from_str_radix(&frame[pos..=pos], 16).unwrap();
        let new = char::from_digit(u32::from((old + delta) % 16), 16).unwrap();
        let mut tampered = frame.clone();
        tampered.replace_range(pos..=pos, new.encode_utf8(&mut [0; 4]));
        let bad = envelope::parse_frame(tampered.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        prop_assert!(!bad.verify(&key), "tampered sig verified: {}", tampered);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The authenticate-first path (`parse_authentic`) takes every frame our
    /// encoder writes whose header strings need no escapes and whose `ts` has
    /// at most 15 digits, and reads it exactly as the checked path does. It
    /// takes nothing under another key, nor a frame with any bit changed.
    #[test]
    fn authentic_path_reads_what_the_checked_path_reads(
        env in any_envelope(safe_ts()),
        algo in any_algo(),
        byte in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let key = Key::new("k1", algo).unwrap();
        let data = env.data.as_ref().map(CanonicalData::new);
        let frame = envelope::encode(&key, &env.header(), data.as_ref());
        let checked = envelope::parse_frame(frame.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap()
            .envelope;
        let plain = |s: &str| !s.chars().any(|c| c == '"' || c == '\\' || c < ' ');
        let recognised = [Some(&env.id), Some(&env.msg_type), env.from.as_ref(), env.to.as_ref()]
            .into_iter()
            .flatten()
            .all(|s| plain(s))
            && env.ts < 1_000_000_000_000_000;
        let got = envelope::parse_authentic(&frame, DEFAULT_MAX_MESSAGE_BYTES, &key);
        prop_assert_eq!(got.is_some(), recognised, "{}", frame);
        if let Some(got) = got {
            prop_assert_eq!(&got, &checked);
            prop_assert_eq!(got.id(), checked.id());
            prop_assert_eq!(got.msg_type(), checked.msg_type());
            prop_assert_eq!(got.from(), checked.from());
            prop_assert_eq!(got.to(), checked.to());
            prop_assert_eq!(got.ts().to_bits(), checked.ts().to_bits());
            prop_assert_eq!(got.version_ok(), checked.version_ok());
            prop_assert_eq!(got.data(), checked.data());
            prop_assert_eq!(got.signed_data_text(), checked.signed_data_text());
            prop_assert_eq!(got.canonical_data(), data.clone());
            prop_assert_eq!(got.canonical(), checked.canonical());
        }
        let other = Key::new("k2", algo).unwrap();
        prop_assert!(
            envelope::parse_authentic(&frame, DEFAULT_MAX_MESSAGE_BYTES, &other).is_none()
        );
        let mut flipped = frame.clone().into_bytes();
        let i = byte.index(flipped.len());
        flipped[i] ^= 1 << bit;
        // Changing the case of a signature's hex letter keeps its value.
        let sig = frame.len() - 2 - algo.digest_len() * 2..frame.len() - 2;
        let same_tag = sig.contains(&i) && flipped[i].eq_ignore_ascii_case(&frame.as_bytes()[i]);
        prop_assert!(
            same_tag ||
            std::str::from_utf8(&flipped).map_or(true, |f| {
                    envelope::parse_authentic(f, DEFAULT_MAX_MESSAGE_BYTES, &key).is_none()
                }),
            "bit {} of byte {} flipped in {}", bit, i, frame
        );
        prop_assert!(
            envelope::parse_authentic(&frame, frame.len() - 1, &key).is_none()
        );
        // Every proper prefix and suffix (at char boundaries) is refused,
        // without a panic.
        for (i, _) in frame.char_indices().skip(1) {
            prop_assert!(envelope::parse_authentic(&frame[..i], DEFAULT_MAX_MESSAGE_BYTES, &key).is_none());
            prop_assert!(envelope::parse_authentic(&frame[i..], DEFAULT_MAX_MESSAGE_BYTES, &key).is_none());
        }
    }

    /// Arbitrary text, and text that ends like one of our frames, never
    /// makes the authenticate-first path panic, and never authenticates.
    #[test]
    fn authentic_path_takes_arbitrary_text_calmly(
        head in any_string(40),
        tail in prop::sample::select(vec![
            "",
            "\"}",
            ",\"v\":1,\"sig\":\"ab\"}",
            "\"ts\":1,\"type\":\"t\",\"v\":1,\"sig\":\"00\"}",
            ",\"from\":null,\"id\":\"x\",\"to\":null,\"ts\":1,\"type\":\"t\",\"v\":1,\"sig\":\"00\"}",
        ]),
    ) {
        let key = Key::new("k", HashAlgo::Sha256).unwrap();
        let text = format!("{head}{tail}");
        prop_assert!(envelope::parse_authentic(&text, DEFAULT_MAX_MESSAGE_BYTES, &key).is_none());
        let data = format!("{{\"data\":{head}{tail}");
        prop_assert!(envelope::parse_authentic(&data, DEFAULT_MAX_MESSAGE_BYTES, &key).is_none());
    }
}
