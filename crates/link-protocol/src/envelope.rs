//! The envelope: parsing a frame (SPEC §4.1 steps 1–4), verifying and
//! encoding it (§3).
//!
//! An [`Envelope`] keeps every top-level field except `sig`, including
//! unknown ones, because they are all covered by the signature. Accessors
//! give typed views with the reference's coercions.
//!
//! Encoding writes the **canonical signing text itself** followed by `sig`:
//! `{"data":…,"from":…,"id":…,"to":…,"ts":…,"type":…,"v":1,"sig":"…"}`.
//! Receivers never depend on key order (SPEC §3.3), so one serialisation
//! serves both as the MAC input and as the wire frame. See
//! `docs/adr/0002-wire-key-order.md`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::canonical;
use crate::error::{DropReason, ProtocolError, WireError};
use crate::signed_form;
use crate::signing::{Key, Signature};
use crate::validate::{self, MAX_ID_LEN};
use crate::wire_safe;

/// Protocol version carried in `v`.
pub const PROTOCOL_VERSION: u64 = 1;

/// Default frame size cap (`maxMessageBytes`), 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A parsed envelope: every top-level field except `sig`.
///
/// Invariant: `id` is a non-empty string of at most 256 UTF-16 units.
///
/// When the frame arrived in signing form, the envelope also keeps the
/// canonical text of `data` as it was on the wire, so a relay can forward it
/// without canonicalising again ([`Envelope::canonical_data`]).
#[derive(Clone, Debug)]
pub struct Envelope {
    body: Map<String, Value>,
    /// Canonical text of `body["data"]`, when known without re-canonicalising.
    data_text: Option<CanonicalData>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body
    }
}

/// A frame that passed the parse steps, with its signature text.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The envelope (without `sig`).
    pub envelope: Envelope,
    /// The `sig` field as text, if it was a non-empty string.
    pub sig: Option<String>,
    /// Frame size in bytes.
    pub size: usize,
    /// The canonical signing text, when the frame was in signing form (our
    /// own encoder's shape): then verifying needs no canonicalisation.
    signed_text: Option<String>,
}

impl Received {
    /// Verifies the signature under `key` in constant time.
    pub fn verify(&self, key: &Key) -> bool {
        match (&self.sig, &self.signed_text) {
            (Some(sig), Some(text)) => key.verify(text.as_bytes(), sig),
            (Some(sig), None) => key.verify(self.envelope.canonical().as_bytes(), sig),
            (None, _) => false,
        }
    }
}

/// Parses a frame (text or binary) as the reference does: size cap, JSON,
/// `id` presence and length. The order of checks and the reasons match
/// SPEC §4.1 steps 1–4.
///
/// Bytes that are not UTF-8 are decoded with replacement characters first,
/// as Node's `String(buffer)` does.
pub fn parse_frame(bytes: &[u8], max_message_bytes: usize) -> Result<Received, ProtocolError> {
    parse(bytes, max_message_bytes, false)
}

/// [`parse_frame`] for a relay (the hub): a frame in signing form (our own
/// peers' shape, see [`crate::signed_form`]) is verified over its own bytes
/// and keeps its `data` text, so relaying it canonicalises nothing.
///
/// A plain receiver is better served by [`parse_frame`]: scanning the text
/// costs about what canonicalising the tree does, so only a relay, which
/// would otherwise canonicalise `data` a second time, gains.
pub fn parse_frame_for_relay(
    bytes: &[u8],
    max_message_bytes: usize,
) -> Result<Received, ProtocolError> {
    parse(bytes, max_message_bytes, true)
}

fn parse(bytes: &[u8], max_message_bytes: usize, relay: bool) -> Result<Received, ProtocolError> {
    let size = bytes.len();
    if size > max_message_bytes {
        return Err(ProtocolError {
            size: Some(size),
            ..ProtocolError::new(DropReason::Oversize)
        });
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| ProtocolError {
        size: Some(size),
        error: Some(e.to_string().into()),
        ..ProtocolError::new(DropReason::ParseError)
    })?;
    let Value::Object(mut body) = value else {
        return Err(ProtocolError::new(DropReason::MissingId));
    };
    let msg_type = body.get("type").and_then(Value::as_str).map(Into::into);
    match body.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            if validate::js_len(id) > MAX_ID_LEN {
                return Err(ProtocolError {
                    msg_type,
                    ..ProtocolError::new(DropReason::OversizedId)
                });
            }
        }
        _ => {
            return Err(ProtocolError {
                msg_type,
                ..ProtocolError::new(DropReason::MissingId)
            });
        }
    }
    let sig = match body.remove("sig") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    // Our own peers send the signing text itself: a relay keeps it (and the
    // data text) so neither is rebuilt from the tree. Anything else, e.g. a
    // Node peer's insertion-ordered frame, is canonicalised when verified.
    let form = if relay {
        signed_form::split(text.as_bytes())
    } else {
        None
    };
    let (signed_text, data_text) = match form {
        Some(form) => {
            let mut signed = String::with_capacity(form.body_len + 1);
            signed.push_str(&text[..form.body_len]);
            signed.push('}');
            let data = form.data.map(|r| CanonicalData(text[r].to_owned()));
            (Some(signed), data)
        }
        None => (None, None),
    };
    Ok(Received {
        envelope: Envelope { body, data_text },
        sig,
        size,
        signed_text,
    })
}

/// The fields of an outgoing envelope other than `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Message id.
    pub id: &'a str,
    /// Sender wall clock, ms since the epoch.
    pub ts: u64,
    /// Message type.
    pub msg_type: &'a str,
    /// Sender kind (`"server"` for the hub), or `null`.
    pub from: Option<&'a str>,
    /// Recipient kind, or `null`.
    pub to: Option<&'a str>,
}

/// A payload already in canonical form, so it can be signed and written for
/// any number of recipients without canonicalising again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CanonicalData(String);

impl CanonicalData {
    /// Canonicalises a JSON value.
    pub fn new(value: &Value) -> Self {
        Self(canonical::to_string(value))
    }

    /// Converts any serialisable value, refusing non-finite floats and
    /// anything serde_json cannot represent (SPEC §11 wire-safety).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, WireError> {
        Ok(Self::new(&wire_safe::to_value(value)?))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Byte length of the canonical text.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: the shortest JSON text has one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Encodes and signs a frame from its header and canonical payload.
///
/// This is the hot path for everything a hub or client builds: the output is
/// the canonical signing text with `sig` appended, computed in one pass.
pub fn encode(key: &Key, header: &Header<'_>, data: Option<&CanonicalData>) -> String {
    let mut out = String::with_capacity(
        160 + header.id.len()
            + header.msg_type.len()
            + header.from.map_or(0, str::len)
            + header.to.map_or(0, str::len)
            + data.map_or(0, CanonicalData::len)
            + key.algo().digest_len() * 2,
    );
    out.push('{');
    if let Some(data) = data {
        out.push_str("\"data\":");
        out.push_str(data.as_str());
        out.push(',');
    }
    out.push_str("\"from\":");
    write_opt_str(header.from, &mut out);
    out.push_str(",\"id\":");
    canonical::write_str(header.id, &mut out);
    out.push_str(",\"to\":");
    write_opt_str(header.to, &mut out);
    out.push_str(",\"ts\":");
    // Through the canonical number writer: a ts above 2^53 must print as
    // the double a receiver will read it as.
    canonical::write_number(&serde_json::Number::from(header.ts), &mut out);
    out.push_str(",\"type\":");
    canonical::write_str(header.msg_type, &mut out);
    out.push_str(",\"v\":1}");
    let sig = key.sign(out.as_bytes());
    append_sig(&mut out, &sig);
    out
}

fn write_opt_str(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => canonical::write_str(s, out),
        None => out.push_str("null"),
    }
}

/// Replaces the closing `}` of a canonical object with `,"sig":"…"}`.
fn append_sig(out: &mut String, sig: &Signature) {
    out.pop();
    out.push_str(",\"sig\":\"");
    sig.write_hex(out);
    out.push_str("\"}");
}

impl Envelope {
    /// Builds an envelope from a header and an optional payload.
    pub fn new(header: &Header<'_>, data: Option<Value>) -> Self {
        let mut body = Map::new();
        body.insert("v".into(), Value::from(PROTOCOL_VERSION));
        body.insert("id".into(), Value::from(header.id));
        body.insert("ts".into(), Value::from(header.ts));
        body.insert("type".into(), Value::from(header.msg_type));
        body.insert("from".into(), header.from.map_or(Value::Null, Value::from));
        body.insert("to".into(), header.to.map_or(Value::Null, Value::from));
        if let Some(data) = data {
            body.insert("data".into(), data);
        }
        Self {
            body,
            data_text: None,
        }
    }

    /// Builds an envelope from an arbitrary JSON object (e.g. typed in by a
    /// person for `link-cli sign`). A `sig` member is dropped; the `id` must
    /// obey the id rules.
    pub fn from_object(mut body: Map<String, Value>) -> Result<Self, ProtocolError> {
        body.remove("sig");
        match body.get("id") {
            Some(Value::String(id)) if validate::is_valid_id(id) => Ok(Self {
                body,
                data_text: None,
            }),
            Some(Value::String(id)) if !id.is_empty() => {
                Err(ProtocolError::new(DropReason::OversizedId))
            }
            _ => Err(ProtocolError::new(DropReason::MissingId)),
        }
    }

    /// All top-level fields except `sig`, unknown ones included.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The message id.
    pub fn id(&self) -> &str {
        self.body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The `type` when it is a string.
    pub fn msg_type(&self) -> Option<&str> {
        self.body.get("type").and_then(Value::as_str)
    }

    /// The `from` when it is a string.
    pub fn from(&self) -> Option<&str> {
        self.body.get("from").and_then(Value::as_str)
    }

    /// The `to` as the hub reads it: `String(to)` of a truthy value, else `None`.
    pub fn to(&self) -> Option<Cow<'_, str>> {
        self.body
            .get("to")
            .filter(|v| validate::js_truthy(v))
            .map(validate::js_string)
    }

    /// `ts` as a number; a non-number counts as 0 (SPEC §4.1 step 8).
    pub fn ts(&self) -> f64 {
        self.body.get("ts").and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// True when `v` is the number 1 (`v === 1`, so `1.0` counts).
    pub fn version_ok(&self) -> bool {
        self.body.get("v").and_then(Value::as_f64) == Some(1.0)
    }

    /// The payload, if present (`null` is present).
    pub fn data(&self) -> Option<&Value> {
        self.body.get("data")
    }

    /// Takes the payload out.
    pub fn take_data(&mut self) -> Option<Value> {
        self.data_text = None;
        self.body.remove("data")
    }

    /// The payload's canonical text: the bytes it arrived as when the frame
    /// was in signing form, else canonicalised now.
    pub fn canonical_data(&self) -> Option<CanonicalData> {
        match &self.data_text {
            Some(text) => Some(text.clone()),
            None => self.data().map(CanonicalData::new),
        }
    }

    /// The canonical signing text.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(256);
        canonical::write_object(&self.body, &mut out);
        out
    }

    /// Signs under `key` and returns the wire frame.
    pub fn encode(&self, key: &Key) -> String {
        let mut out = self.canonical();
        let sig = key.sign(out.as_bytes());
        append_sig(&mut out, &sig);
        out
    }

    /// The signature this envelope would carry under `key`.
    pub fn sign(&self, key: &Key) -> Signature {
        key.sign(self.canonical().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashAlgo;
    use serde_json::json;

    fn key(s: &str) -> Key {
        Key::new(s, HashAlgo::Sha256).unwrap()
    }

    #[test]
    fn parse_order_and_reasons() {
        let r = |b: &[u8]| parse_frame(b, 64).unwrap_err().reason();
        assert_eq!(r(&[b' '; 65]), DropReason::Oversize);
        assert_eq!(r(b"{\"id\":"), DropReason::ParseError);
        assert_eq!(r(b"{\"id\":\"\\ud800\"}"), DropReason::ParseError);
        assert_eq!(r(b"[1]"), DropReason::MissingId);
        assert_eq!(r(b"{\"id\":\"\"}"), DropReason::MissingId);
        assert_eq!(r(b"{\"id\":7}"), DropReason::MissingId);
        let long = format!("{{\"id\":\"{}\"}}", "x".repeat(257));
        assert_eq!(
            parse_frame(long.as_bytes(), 1024).unwrap_err().reason(),
            DropReason::OversizedId
        );
    }

    #[test]
    fn spec_vector_one_round_trip() {
        let h = Header {
            id: "x",
            ts: 1000,
            msg_type: "t",
            from: None,
            to: None,
        };
        let data = CanonicalData::new(&json!({"a": 1}));
        let wire = encode(&key("k"), &h, Some(&data));
        assert!(wire.ends_with(
            r#""sig":"4f9134cd8bc1091eb4009d54260df36fe1406c453af246c4d8415d908ee7cd0f"}"#
        ));
        let got = parse_frame(wire.as_bytes(), 1 << 20).unwrap();
        assert!(got.verify(&key("k")));
        assert!(!got.verify(&key("other")));
        assert_eq!(
            Envelope::new(&h, Some(json!({"a": 1}))).encode(&key("k")),
            wire
        );
    }

    #[test]
    fn relay_parse_verifies_own_bytes_and_catches_tampering() {
        let h = Header {
            id: "x",
            ts: 1000,
            msg_type: "t",
            from: Some("a"),
            to: Some("b"),
        };
        let data = CanonicalData::new(&json!({"n": 1, "s": "v"}));
        let wire = encode(&key("k"), &h, Some(&data));
        let got = parse_frame_for_relay(wire.as_bytes(), 1 << 20).unwrap();
        assert!(got.signed_text.is_some(), "our frames are in signing form");
        assert!(got.verify(&key("k")));
        assert_eq!(got.envelope.canonical_data(), Some(data));
        for (from, to) in [("\"n\":1", "\"n\":2"), ("\"to\":\"b\"", "\"to\":\"c\"")] {
            let bad = wire.replacen(from, to, 1);
            let got = parse_frame_for_relay(bad.as_bytes(), 1 << 20).unwrap();
            assert!(got.signed_text.is_some());
            assert!(!got.verify(&key("k")), "{bad}");
        }
        // Whitespace makes it take the general path, which still verifies.
        let spaced = wire.replacen("\"n\":1", "\"n\": 1", 1);
        let got = parse_frame_for_relay(spaced.as_bytes(), 1 << 20).unwrap();
        assert!(got.signed_text.is_none());
        assert!(got.verify(&key("k")));
    }

    #[test]
    fn encode_ts_above_2_pow_53_verifies() {
        let h = Header {
            id: "x",
            ts: (1 << 53) + 1,
            msg_type: "t",
            from: None,
            to: None,
        };
        let wire = encode(&key("k"), &h, None);
        assert!(
            parse_frame(wire.as_bytes(), 1 << 20)
                .unwrap()
                .verify(&key("k"))
        );
        assert_eq!(Envelope::new(&h, None).encode(&key("k")), wire);
    }

    #[test]
    fn unknown_fields_are_signed() {
        let wire = r#"{"v":1,"id":"x","ts":1000,"type":"t","from":null,"to":null,"data":{"a":1},"extra":1,"sig":"4f9134cd8bc1091eb4009d54260df36fe1406c453af246c4d8415d908ee7cd0f"}"#;
        assert!(
            !parse_frame(wire.as_bytes(), 1 << 20)
                .unwrap()
                .verify(&key("k"))
        );
    }

    #[test]
    fn accessors_coerce_like_javascript() {
        let got = parse_frame(br#"{"id":"a","to":5,"ts":"x","v":1.0,"type":3}"#, 1024).unwrap();
        let env = got.envelope;
        assert_eq!(env.to().as_deref(), Some("5"));
        assert_eq!(env.ts(), 0.0);
        assert!(env.version_ok());
        assert_eq!(env.msg_type(), None);
        assert!(got.sig.is_none());
    }

    #[test]
    fn invalid_utf8_is_replaced_like_node() {
        let got = parse_frame(b"{\"id\":\"a\xffb\"}", 1024).unwrap();
        assert_eq!(got.envelope.id(), "a\u{fffd}b");
    }
}
