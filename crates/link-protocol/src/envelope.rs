//! The envelope: parsing a frame (protocol §4.1 steps 1–4), verifying and
//! encoding it (§3).
//!
//! An [`Envelope`] keeps every top-level field except `sig`, including
//! unknown ones, because they are all covered by the signature. Accessors
//! give typed views with the reference's coercions.
//!
//! Encoding writes the **canonical signing text itself** followed by `sig`:
//! `{"data":…,"from":…,"id":…,"to":…,"ts":…,"type":…,"v":1,"sig":"…"}`.
//! Receivers never depend on key order (protocol §3.3), so one serialisation
//! serves both as the MAC input and as the wire frame. See
//! `docs/adr/0002-wire-key-order.md`.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::canonical;
use crate::error::{DropReason, ProtocolError, WireError};
use crate::signed_form::{self, SignedForm};
use crate::signed_tail::{self, Tail};
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
/// A frame that arrived in signing form (our own encoder's shape, see
/// [`crate::signed_form`]) is kept as its canonical text with the header
/// fields located in it: verifying it, reading its header and relaying its
/// `data` ([`Envelope::canonical_data`]) build no JSON tree, and
/// [`Envelope::body`] / [`Envelope::data`] parse the text the first time they
/// are asked for. Clones of such an envelope share that text.
#[derive(Clone, Debug)]
pub struct Envelope {
    repr: Repr,
}

#[derive(Clone, Debug)]
enum Repr {
    /// Built from a JSON tree: the general parse path, or built locally.
    Tree {
        body: Map<String, Value>,
        /// Canonical text of `body["data"]`, when known without
        /// re-canonicalising.
        data_text: Option<CanonicalData>,
    },
    /// Arrived in signing form.
    Signed(Arc<SignedBody>),
}

/// An envelope kept as its canonical signing text.
#[derive(Debug)]
struct SignedBody {
    /// The signing text: the frame without its `sig` member.
    text: String,
    head: Head,
    /// Whether `text` is canonical and the `data` span holds the data value
    /// alone: known at once when the scanner read it, checked on first need
    /// when only its signature was (a frame whose MAC over its own bytes
    /// verified is what a key holder wrote, canonical when the writer
    /// canonicalises, as ours does).
    canonical: OnceLock<bool>,
    data_value: OnceLock<Option<Value>>,
    body: OnceLock<Map<String, Value>>,
}

/// The `data` object's member count and its first two members (raw key
/// text, first byte of the value), as [`Envelope::scanned_data_members`]
/// gives them.
pub(crate) type ScannedMembers<'a> = (usize, [Option<(&'a str, u8)>; 2]);

/// Where the header fields lie in a [`SignedBody`]'s text, and the numbers
/// read from it. Header strings hold no escapes (else the frame takes the
/// tree path), so they are plain slices.
#[derive(Debug)]
struct Head {
    /// `id`, between its quotes.
    id: Range<usize>,
    /// `type`, between its quotes; `None` when absent or `null`.
    msg_type: Option<Range<usize>>,
    /// `from`, between its quotes; `None` when absent or `null`.
    from: Option<Range<usize>>,
    /// `to` when a non-empty string (truthy), between its quotes.
    to: Option<Range<usize>>,
    ts: f64,
    version_ok: bool,
    /// The `data` value's text.
    data: Option<Range<usize>>,
    /// The `data` object's members, when the signing-form scan read them.
    data_members: Option<signed_form::DataMembers>,
}

impl Head {
    /// Locates the header in `text` (the signing text `form` describes), or
    /// `None` when a field has a shape only the tree path reads (escapes,
    /// odd types, unknown members, a missing or oversized id: the tree path
    /// also reports those).
    fn locate(text: &str, form: &SignedForm) -> Option<Self> {
        let b = text.as_bytes();
        let plain = |r: &Range<usize>| {
            let s = &b[r.clone()];
            (s.len() >= 2 && s[0] == b'"' && !s.contains(&b'\\')).then(|| r.start + 1..r.end - 1)
        };
        // Absent or null: Some(None); a plain string: Some(Some); else None.
        let string_or_null = |r: &Option<Range<usize>>| match r {
            None => Some(None),
            Some(r) if &b[r.clone()] == b"null" => Some(None),
            Some(r) => plain(r).map(Some),
        };
        let h = &form.header;
        if h.others > 0 {
            return None;
        }
        let id = plain(h.id.as_ref()?)?;
        if !id_fits(&text[id.clone()]) {
            return None;
        }
        let ts = match &h.ts {
            None => 0.0,
            Some(r) if matches!(b[r.start], b'-' | b'0'..=b'9') => text[r.clone()].parse().ok()?,
            // A non-number counts as 0 (protocol §4.1 step 8).
            Some(_) => 0.0,
        };
        Some(Self {
            id,
            msg_type: string_or_null(&h.msg_type)?,
            from: string_or_null(&h.from)?,
            to: string_or_null(&h.to)?.filter(|r| !r.is_empty()),
            ts,
            version_ok: h.v.as_ref().is_some_and(|r| &b[r.clone()] == b"1"),
            data: form.data.clone(),
            data_members: form.data_members.clone(),
        })
    }

    /// The header of a frame located by [`signed_tail::locate`], with the
    /// id rules of the general path (else `None`: the general path reports
    /// them).
    fn from_tail(text: &str, t: &Tail) -> Option<Self> {
        if !id_fits(text.get(t.id.clone())?) {
            return None;
        }
        Some(Self {
            id: t.id.clone(),
            msg_type: Some(t.msg_type.clone()),
            from: t.from.clone(),
            to: t.to.clone().filter(|r| !r.is_empty()),
            // At most 15 digits: exact as a double.
            ts: t.ts as f64,
            version_ok: true,
            data: t.data.clone(),
            data_members: None,
        })
    }
}

/// An id the general path accepts as is: non-empty, at most
/// `MAX_ID_LEN` UTF-16 units (else it reports `missing-id` /
/// `oversized-id`).
fn id_fits(id: &str) -> bool {
    !id.is_empty() && validate::js_len(id) <= MAX_ID_LEN
}

impl SignedBody {
    fn new(text: String, head: Head, canonical: OnceLock<bool>) -> Self {
        Self {
            text,
            head,
            canonical,
            data_value: OnceLock::new(),
            body: OnceLock::new(),
        }
    }

    fn slice(&self, r: &Range<usize>) -> &str {
        self.text.get(r.clone()).unwrap_or_default()
    }

    fn is_canonical(&self) -> bool {
        *self.canonical.get_or_init(|| {
            // The data span must also be the data value alone: a frame read
            // off its tail may hold unknown members after it.
            signed_form::is_canonical(self.text.as_bytes())
                && self
                    .head
                    .data
                    .as_ref()
                    .is_none_or(|r| signed_form::is_one_value(&self.text.as_bytes()[r.clone()]))
        })
    }

    fn body(&self) -> &Map<String, Value> {
        // Text the scanner accepted parses; text only a signature vouched
        // for parses unless its writer is broken (then it reads as empty).
        self.body
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or_default())
    }

    fn data(&self) -> Option<&Value> {
        self.data_value
            .get_or_init(|| {
                let text = self.slice(self.head.data.as_ref()?);
                // A span that is not one value (unknown members after
                // `data`, read off the tail): read the whole body instead.
                serde_json::from_str(text)
                    .ok()
                    .or_else(|| self.body().get("data").cloned())
            })
            .as_ref()
    }
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.body() == other.body()
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
            (Some(sig), None) => key.verify(self.envelope.canonical_text().as_bytes(), sig),
            (None, _) => false,
        }
    }
}

/// Parses a frame (text or binary) as the reference does: size cap, JSON,
/// `id` presence and length. The order of checks and the reasons match
/// protocol §4.1 steps 1–4.
///
/// A frame in signing form (our own encoder's shape, see
/// [`crate::signed_form`]) builds no JSON tree: it is verified over its own
/// bytes, and its header is read off the text. Anything else (e.g. a Node
/// peer's insertion-ordered frame) is parsed into a tree and canonicalised
/// when verified.
///
/// Bytes that are not UTF-8 are decoded with replacement characters first,
/// as Node's `String(buffer)` does.
pub fn parse_frame(bytes: &[u8], max_message_bytes: usize) -> Result<Received, ProtocolError> {
    check_size(bytes.len(), max_message_bytes)?;
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_text(text, bytes.len()),
        Err(_) => parse_text(&String::from_utf8_lossy(bytes), bytes.len()),
    }
}

/// [`parse_frame`] for a text frame, which the transport has already
/// checked to be UTF-8 (so it is not checked again).
pub fn parse_text_frame(text: &str, max_message_bytes: usize) -> Result<Received, ProtocolError> {
    check_size(text.len(), max_message_bytes)?;
    parse_text(text, text.len())
}

fn check_size(size: usize, max_message_bytes: usize) -> Result<(), ProtocolError> {
    if size > max_message_bytes {
        return Err(ProtocolError {
            size: Some(size),
            ..ProtocolError::new(DropReason::Oversize)
        });
    }
    Ok(())
}

/// Steps 2–4 of [`parse_frame`] on the frame's text; `size` is the
/// frame's size on the wire.
fn parse_text(text: &str, size: usize) -> Result<Received, ProtocolError> {
    let form = signed_form::split(text.as_bytes());
    let Some(form) = form else {
        return parse_tree(text, size, None);
    };
    let mut signed = String::with_capacity(form.body_len + 1);
    signed.push_str(&text[..form.body_len]);
    signed.push('}');
    let Some(head) = Head::locate(&signed, &form) else {
        return parse_tree(text, size, Some((signed, form)));
    };
    // `,"sig":"` then the hex digits then `"}`.
    let sig = text
        .get(form.body_len + 8..text.len() - 2)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(Received {
        envelope: Envelope {
            repr: Repr::Signed(Arc::new(SignedBody::new(
                signed,
                head,
                OnceLock::from(true),
            ))),
        },
        sig,
        size,
        signed_text: None,
    })
}

/// Authenticates a frame before parsing it: when `frame` has exactly our
/// encoder's shape ([`signed_tail`]) and its signature under `key` checks
/// out over its own bytes, returns the envelope, read off the text and
/// nothing else (the payload is parsed on first use). Otherwise `None`: run
/// [`parse_frame`] and [`Received::verify`], which give the reference's
/// checks and reasons (a Node peer's frame, a bad signature, a frame over
/// `max_message_bytes`).
///
/// This skips the signing-form scan of [`parse_frame`]: the bytes are not
/// checked to be canonical, they are checked to be what a holder of `key`
/// wrote. A receiver that accepts frames only from such writers (a client
/// reading its hub) gives the same result either way for every frame a
/// correct writer sends, and a forger gets nothing past the MAC.
///
/// One shape is read differently here (found by fuzzing): an envelope with
/// an unknown top-level member whose key sorts between `data` and `from`,
/// which only [`Envelope::encode`] of a hand-built object writes (never our
/// hub or client). Its `data`, `body`, `canonical` and `canonical_data`
/// stay exact (checked when first asked for), but
/// [`Envelope::signed_data_text`], and the typed readers built on it such
/// as [`crate::Message::parse`], see that member after the payload.
/// Checking for it up front would walk the whole payload, the cost this
/// path exists to avoid (3-4x on a 4 KB frame, measured).
///
/// ```
/// use link_protocol::{envelope, CanonicalData, Header, HashAlgo, Key};
/// let key = Key::new("s", HashAlgo::Sha256)?;
/// let header = Header { id: "m-1", ts: 5, msg_type: "direct", from: Some("a"), to: Some("b") };
/// let frame = envelope::encode(&key, &header, Some(&CanonicalData::new(&serde_json::json!({"x": 1}))));
/// let env = envelope::parse_authentic(&frame, 1 << 20, &key).unwrap();
/// assert_eq!((env.id(), env.from(), env.ts()), ("m-1", Some("a"), 5.0));
/// let other = Key::new("t", HashAlgo::Sha256)?;
/// assert!(envelope::parse_authentic(&frame, 1 << 20, &other).is_none());
/// # Ok::<(), link_protocol::ConfigError>(())
/// ```
pub fn parse_authentic(frame: &str, max_message_bytes: usize, key: &Key) -> Option<Envelope> {
    if frame.len() > max_message_bytes {
        return None;
    }
    let tail = signed_tail::locate(frame.as_bytes(), key.algo().digest_len() * 2)?;
    let body = frame.get(..tail.body_len)?;
    let mut text = String::with_capacity(body.len() + 1);
    text.push_str(body);
    text.push('}');
    let sig = frame.get(tail.sig.clone())?;
    if !key.verify(text.as_bytes(), sig) {
        return None;
    }
    let head = Head::from_tail(&text, &tail)?;
    Some(Envelope {
        repr: Repr::Signed(Arc::new(SignedBody::new(text, head, OnceLock::new()))),
    })
}

/// The general path: a JSON tree. `signed` is the signing text and its
/// spans when the frame was in signing form.
fn parse_tree(
    text: &str,
    size: usize,
    signed: Option<(String, SignedForm)>,
) -> Result<Received, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError {
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
    let (signed_text, data_text) = match signed {
        Some((signed, form)) => {
            let data = form.data.map(|r| CanonicalData(text[r].to_owned()));
            (Some(signed), data)
        }
        None => (None, None),
    };
    Ok(Received {
        envelope: Envelope {
            repr: Repr::Tree { body, data_text },
        },
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
    /// anything serde_json cannot represent (protocol §11 wire-safety).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, WireError> {
        Ok(Self::new(&wire_safe::to_value(value)?))
    }

    /// Takes a text the caller vouches is already canonical, without
    /// checking it: for data built by [`CanonicalData::new`] elsewhere and
    /// carried over an authenticated channel (a hub of the same cluster
    /// relaying a peer's payload). Text from anywhere else must go through
    /// [`CanonicalData::new`].
    pub fn assume_canonical(text: String) -> Self {
        Self(text)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{"<name>":[item,…]}` from items already in canonical form: the
    /// canonical text of an object with that one member, built by
    /// concatenation (no value is parsed or canonicalised again). A peer
    /// list of thousands of entries is then a copy of cached texts.
    pub fn object_of_array<'a>(
        name: &str,
        items: impl IntoIterator<Item = &'a CanonicalData>,
    ) -> Self {
        let mut text = String::from("{");
        canonical::write_str(name, &mut text);
        text.push_str(":[");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(item.as_str());
        }
        text.push_str("]}");
        Self(text)
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
    write_prefix(header.from, data, &mut out);
    write_rest(header, &mut out);
    let sig = key.sign(out.as_bytes());
    append_sig(&mut out, &sig);
    out
}

/// `{"data":…,"from":…,"id":` — the members before `id`.
fn write_prefix(from: Option<&str>, data: Option<&CanonicalData>, out: &mut String) {
    out.push('{');
    if let Some(data) = data {
        out.push_str("\"data\":");
        out.push_str(data.as_str());
        out.push(',');
    }
    out.push_str("\"from\":");
    write_opt_str(from, out);
    out.push_str(",\"id\":");
}

/// `id` to the closing brace (`header.from` is in the prefix).
fn write_rest(header: &Header<'_>, out: &mut String) {
    canonical::write_str(header.id, out);
    out.push_str(",\"to\":");
    write_opt_str(header.to, out);
    out.push_str(",\"ts\":");
    // Through the canonical number writer: a ts above 2^53 must print as
    // the double a receiver will read it as.
    canonical::write_number(&serde_json::Number::from(header.ts), out);
    out.push_str(",\"type\":");
    canonical::write_str(header.msg_type, out);
    out.push_str(",\"v\":1}");
}

/// What every frame of one fan-out shares: the text up to `id`
/// (`{"data":…,"from":…,"id":`, most of a frame's bytes) and the MAC state
/// after it, computed once. Each recipient's frame then costs the MAC of
/// its own few bytes (`id`, `to`, `ts`, `type`). Only for recipients under
/// the key it was made with.
///
/// ```
/// use link_protocol::{envelope::{self, SharedPrefix}, CanonicalData, Header, HashAlgo, Key};
/// let key = Key::new("s", HashAlgo::Sha256)?;
/// let data = CanonicalData::new(&serde_json::json!({"payload": 1, "topic": "t"}));
/// let prefix = SharedPrefix::new(&key, Some("pub"), Some(&data));
/// let header = Header { id: "m-1", ts: 5, msg_type: "topic.message", from: Some("pub"), to: Some("sub-1") };
/// assert_eq!(prefix.encode(&header), envelope::encode(&key, &header, Some(&data)));
/// # Ok::<(), link_protocol::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedPrefix {
    text: String,
    mac: crate::signing::SigningContext,
}

impl SharedPrefix {
    /// The prefix of frames from `from` carrying `data`, under `key`.
    pub fn new(key: &Key, from: Option<&str>, data: Option<&CanonicalData>) -> Self {
        let mut text = String::with_capacity(
            32 + from.map_or(4, str::len) + data.map_or(0, CanonicalData::len),
        );
        write_prefix(from, data, &mut text);
        let mut mac = key.context();
        mac.update(text.as_bytes());
        Self { text, mac }
    }

    /// The frame for `header`, byte for byte what [`encode`] writes under
    /// the prefix's key. `header.from` is the prefix's (not read again).
    pub fn encode(&self, header: &Header<'_>) -> String {
        // Member names and punctuation, `ts`, and the longest `sig`
        // (SHA-512, 128 hex digits) around the strings.
        const FIXED: usize = 64 + 24 + 128;
        let mut out = String::with_capacity(
            self.text.len()
                + FIXED
                + header.id.len()
                + header.msg_type.len()
                + header.to.map_or(0, str::len),
        );
        out.push_str(&self.text);
        let start = out.len();
        write_rest(header, &mut out);
        let mut mac = self.mac.clone();
        mac.update(&out.as_bytes()[start..]);
        append_sig(&mut out, &mac.finish());
        out
    }
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
    fn tree(body: Map<String, Value>) -> Self {
        Self {
            repr: Repr::Tree {
                body,
                data_text: None,
            },
        }
    }

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
        Self::tree(body)
    }

    /// Builds an envelope from an arbitrary JSON object (e.g. typed in by a
    /// person for `link-cli sign`). A `sig` member is dropped; the `id` must
    /// obey the id rules.
    pub fn from_object(mut body: Map<String, Value>) -> Result<Self, ProtocolError> {
        body.remove("sig");
        match body.get("id") {
            Some(Value::String(id)) if validate::is_valid_id(id) => Ok(Self::tree(body)),
            Some(Value::String(id)) if !id.is_empty() => {
                Err(ProtocolError::new(DropReason::OversizedId))
            }
            _ => Err(ProtocolError::new(DropReason::MissingId)),
        }
    }

    /// All top-level fields except `sig`, unknown ones included. An
    /// envelope that arrived in signing form parses its text the first time
    /// this is called.
    pub fn body(&self) -> &Map<String, Value> {
        match &self.repr {
            Repr::Tree { body, .. } => body,
            Repr::Signed(s) => s.body(),
        }
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.body().get(name)
    }

    /// The message id.
    pub fn id(&self) -> &str {
        match &self.repr {
            Repr::Tree { body, .. } => body.get("id").and_then(Value::as_str).unwrap_or_default(),
            Repr::Signed(s) => s.slice(&s.head.id),
        }
    }

    /// The `type` when it is a string.
    pub fn msg_type(&self) -> Option<&str> {
        match &self.repr {
            Repr::Tree { .. } => self.field("type").and_then(Value::as_str),
            Repr::Signed(s) => s.head.msg_type.as_ref().map(|r| s.slice(r)),
        }
    }

    /// The `from` when it is a string.
    pub fn from(&self) -> Option<&str> {
        match &self.repr {
            Repr::Tree { .. } => self.field("from").and_then(Value::as_str),
            Repr::Signed(s) => s.head.from.as_ref().map(|r| s.slice(r)),
        }
    }

    /// The `to` as the hub reads it: `String(to)` of a truthy value, else `None`.
    pub fn to(&self) -> Option<Cow<'_, str>> {
        match &self.repr {
            Repr::Tree { .. } => self
                .field("to")
                .filter(|v| validate::js_truthy(v))
                .map(validate::js_string),
            Repr::Signed(s) => s.head.to.as_ref().map(|r| Cow::Borrowed(s.slice(r))),
        }
    }

    /// `ts` as a number; a non-number counts as 0 (protocol §4.1 step 8).
    pub fn ts(&self) -> f64 {
        match &self.repr {
            Repr::Tree { .. } => self.field("ts").and_then(Value::as_f64).unwrap_or(0.0),
            Repr::Signed(s) => s.head.ts,
        }
    }

    /// True when `v` is the number 1 (`v === 1`, so `1.0` counts).
    pub fn version_ok(&self) -> bool {
        match &self.repr {
            Repr::Tree { .. } => self.field("v").and_then(Value::as_f64) == Some(1.0),
            Repr::Signed(s) => s.head.version_ok,
        }
    }

    /// The payload, if present (`null` is present). An envelope that
    /// arrived in signing form parses it the first time this is called.
    pub fn data(&self) -> Option<&Value> {
        match &self.repr {
            Repr::Tree { body, .. } => body.get("data"),
            Repr::Signed(s) => s.data(),
        }
    }

    /// The payload's text as it arrived, when the frame was in signing form
    /// (so it was covered by the verified signature, and is canonical when
    /// its writer canonicalises): typed readers parse it straight into
    /// their own types. For an envelope from [`parse_authentic`] whose
    /// writer added an unknown member sorting between `data` and `from`,
    /// the text runs on over that member (see there).
    pub fn signed_data_text(&self) -> Option<&str> {
        match &self.repr {
            Repr::Tree { .. } => None,
            Repr::Signed(s) => s.head.data.as_ref().map(|r| s.slice(r)),
        }
    }

    /// How many members the `data` object has and its first two (raw key
    /// text, first byte of the value), when the frame's signing-form scan
    /// recorded them ([`parse_frame`]); `None` otherwise (read
    /// [`Self::signed_data_text`] instead).
    pub(crate) fn scanned_data_members(&self) -> Option<ScannedMembers<'_>> {
        let Repr::Signed(s) = &self.repr else {
            return None;
        };
        let m = s.head.data_members.as_ref()?;
        let b = s.text.as_bytes();
        let member = |slot: &Option<(Range<usize>, usize)>| {
            let (key, value) = slot.as_ref()?;
            Some((s.text.get(key.clone())?, *b.get(*value)?))
        };
        Some((m.count, [member(&m.first[0]), member(&m.first[1])]))
    }

    /// The value text of `data`'s last member when that member is `name`
    /// (a topic, a `directType`, an `rpcType`: each sorts after its
    /// payload), read from the members the frame's scan recorded; `None`
    /// when it is not so or was not recorded (a data object of more than
    /// two members): read the text then.
    pub(crate) fn scanned_last_member(&self, name: &str) -> Option<&str> {
        let Repr::Signed(s) = &self.repr else {
            return None;
        };
        let m = s.head.data_members.as_ref()?;
        let (key, value) = m.first.get(m.count.checked_sub(1)?)?.as_ref()?;
        if s.text.get(key.clone())? != name {
            return None;
        }
        // The last value runs to the data object's closing brace.
        let data = s.head.data.as_ref()?;
        s.text.get(*value..data.end.checked_sub(1)?)
    }

    /// Takes the payload out.
    pub fn take_data(&mut self) -> Option<Value> {
        if let Repr::Signed(s) = &self.repr {
            let body = s.body().clone();
            self.repr = Repr::Tree {
                body,
                data_text: None,
            };
        }
        match &mut self.repr {
            Repr::Tree { body, data_text } => {
                *data_text = None;
                body.remove("data")
            }
            Repr::Signed(_) => None,
        }
    }

    /// The payload's canonical text: the bytes it arrived as when the frame
    /// was in signing form, else canonicalised now.
    pub fn canonical_data(&self) -> Option<CanonicalData> {
        match &self.repr {
            Repr::Tree {
                data_text: Some(text),
                ..
            } => Some(text.clone()),
            Repr::Tree { body, .. } => body.get("data").map(CanonicalData::new),
            Repr::Signed(s) if s.is_canonical() => {
                self.signed_data_text().map(|t| CanonicalData(t.to_owned()))
            }
            Repr::Signed(s) => s.data().map(CanonicalData::new),
        }
    }

    /// The canonical signing text.
    pub fn canonical(&self) -> String {
        self.canonical_text().into_owned()
    }

    /// The canonical signing text, borrowed when the frame arrived in
    /// signing form.
    fn canonical_text(&self) -> Cow<'_, str> {
        match &self.repr {
            Repr::Tree { body, .. } => {
                let mut out = String::with_capacity(256);
                canonical::write_object(body, &mut out);
                Cow::Owned(out)
            }
            Repr::Signed(s) if s.is_canonical() => Cow::Borrowed(&s.text),
            Repr::Signed(s) => {
                let mut out = String::with_capacity(s.text.len());
                canonical::write_object(s.body(), &mut out);
                Cow::Owned(out)
            }
        }
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
        key.sign(self.canonical_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn object_of_array_is_the_canonical_text_of_the_whole() {
        let items = [
            serde_json::json!({"kind": "b", "a": [1, 2.5, "é\u{1}"]}),
            serde_json::json!({"z": null, "kind": "a"}),
        ];
        let parts: Vec<CanonicalData> = items.iter().map(CanonicalData::new).collect();
        let whole = CanonicalData::new(&serde_json::json!({ "peers": items }));
        assert_eq!(CanonicalData::object_of_array("peers", &parts), whole);
        let empty = CanonicalData::new(&serde_json::json!({ "peers": [] }));
        assert_eq!(CanonicalData::object_of_array("peers", []), empty);
    }
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
    fn signing_form_verifies_own_bytes_and_catches_tampering() {
        let h = Header {
            id: "x",
            ts: 1000,
            msg_type: "t",
            from: Some("a"),
            to: Some("b"),
        };
        let data = CanonicalData::new(&json!({"n": 1, "s": "v"}));
        let wire = encode(&key("k"), &h, Some(&data));
        let got = parse_frame(wire.as_bytes(), 1 << 20).unwrap();
        assert!(
            matches!(got.envelope.repr, Repr::Signed(_)),
            "our frames are in signing form"
        );
        assert!(got.verify(&key("k")));
        assert_eq!(got.envelope.canonical_data(), Some(data));
        for (from, to) in [("\"n\":1", "\"n\":2"), ("\"to\":\"b\"", "\"to\":\"c\"")] {
            let bad = wire.replacen(from, to, 1);
            let got = parse_frame(bad.as_bytes(), 1 << 20).unwrap();
            assert!(matches!(got.envelope.repr, Repr::Signed(_)));
            assert!(!got.verify(&key("k")), "{bad}");
        }
        // Whitespace makes it take the general path, which still verifies.
        let spaced = wire.replacen("\"n\":1", "\"n\": 1", 1);
        let got = parse_frame(spaced.as_bytes(), 1 << 20).unwrap();
        assert!(matches!(got.envelope.repr, Repr::Tree { .. }));
        assert_eq!(got.envelope.signed_data_text(), None);
        assert!(got.verify(&key("k")));
    }

    type View = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        u64,
        bool,
        Option<Value>,
        Option<String>,
        String,
    );

    /// Everything a reader sees of an envelope.
    fn view(e: &Envelope) -> View {
        (
            e.id().to_owned(),
            e.msg_type().map(str::to_owned),
            e.from().map(str::to_owned),
            e.to().map(Cow::into_owned),
            e.ts().to_bits(),
            e.version_ok(),
            e.data().cloned(),
            e.canonical_data().map(|d| d.as_str().to_owned()),
            e.canonical(),
        )
    }

    #[test]
    fn signing_form_reads_the_same_as_the_tree() {
        let k = key("k");
        let cases = [
            json!({"v": 1, "id": "a", "ts": 5, "type": "t", "from": "f", "to": "g", "data": {"b": [1, 2.5]}}),
            json!({"v": 1, "id": "a", "ts": 5, "type": "t", "from": null, "to": null}),
            json!({"v": 1, "id": "é€😀", "ts": 1.5, "type": "", "from": "", "to": "", "data": null}),
            json!({"v": 2, "id": "a", "ts": "5", "type": null, "to": "x", "data": [1]}),
            json!({"v": 1, "id": "a", "ts": 1, "to": false}),
            json!({"v": "1", "id": "a", "ts": 9_007_199_254_740_993u64, "to": 0}),
            json!({"v": 1.0, "id": "a", "ts": -1e21, "to": 7, "from": 3, "type": 4}),
            json!({"id": "a", "ts": true, "to": {"x": 1}, "data": "s"}),
            json!({"v": 1, "id": "a\nb", "ts": 1, "to": "t\"o", "type": "\u{1}"}),
            json!({"v": 1, "id": "a", "ts": 1, "extra": [1], "data": {}}),
            json!({"v": 1, "id": "x".repeat(300), "ts": 1}),
            json!({"v": 1, "id": "", "ts": 1}),
            json!({"v": 1, "id": 5, "ts": 1}),
        ];
        let mut signed = 0;
        for case in cases {
            let Value::Object(body) = case else {
                unreachable!()
            };
            let wire = Envelope::tree(body.clone()).encode(&k);
            // The same bytes down both paths.
            let got = parse_frame(wire.as_bytes(), 1 << 20);
            let want = parse_tree(&wire, wire.len(), None);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    signed += usize::from(matches!(got.envelope.repr, Repr::Signed(_)));
                    assert!(got.verify(&k) && want.verify(&k), "{wire}");
                    assert_eq!(view(&got.envelope), view(&want.envelope), "{wire}");
                    assert_eq!(got.envelope.body(), want.envelope.body(), "{wire}");
                    assert_eq!(got.envelope, want.envelope);
                    let mut taken = got.envelope.clone();
                    assert_eq!(taken.take_data(), body.get("data").cloned());
                    assert_eq!(taken.data(), None);
                    assert!(!taken.body().contains_key("data"));
                }
                (got, want) => assert_eq!(
                    got.map_err(|e| e.reason()).map(|_| ()),
                    want.map_err(|e| e.reason()).map(|_| ()),
                    "{wire}"
                ),
            }
        }
        assert_eq!(
            signed, 4,
            "the plain-header cases take the signing-form path"
        );
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

    /// A frame signed over bytes that are not canonical: only a key holder
    /// writes one. The checked path refuses it (the MAC is over the
    /// canonical text); the authenticate-first path takes it as written,
    /// and whatever re-signs or relays it canonicalises it first.
    #[test]
    fn authentic_path_takes_a_key_holders_bytes_and_recanonicalises() {
        let k = key("s");
        let body =
            r#"{"data":{"b":1,"a":[1.0]},"from":"a","id":"m","to":null,"ts":7,"type":"x","v":1"#;
        let sig = k.sign(format!("{body}}}").as_bytes()).to_hex();
        let frame = format!(r#"{body},"sig":"{sig}"}}"#);
        let checked = parse_frame(frame.as_bytes(), 1 << 20).unwrap();
        assert!(!checked.verify(&k));
        let env = parse_authentic(&frame, 1 << 20, &k).unwrap();
        assert_eq!(env.data(), Some(&json!({"a": [1.0], "b": 1})));
        assert_eq!(env.canonical_data().unwrap().as_str(), r#"{"a":[1],"b":1}"#);
        assert_eq!(
            env.canonical(),
            r#"{"data":{"a":[1],"b":1},"from":"a","id":"m","to":null,"ts":7,"type":"x","v":1}"#
        );
    }

    /// A Node peer's frame (insertion order) is left to the checked path.
    #[test]
    fn authentic_path_leaves_other_shapes_to_the_checked_path() {
        let k = key("s");
        let canonical = r#"{"data":{"a":1},"from":"a","id":"m","to":null,"ts":7,"type":"x","v":1}"#;
        let sig = k.sign(canonical.as_bytes()).to_hex();
        let node = format!(
            r#"{{"type":"x","id":"m","from":"a","to":null,"ts":7,"v":1,"data":{{"a":1}},"sig":"{sig}"}}"#
        );
        assert!(parse_authentic(&node, 1 << 20, &k).is_none());
        assert!(parse_frame(node.as_bytes(), 1 << 20).unwrap().verify(&k));
        // Our own shape, but an id over 256 UTF-16 units: the checked path
        // reports it.
        let long = canonical.replace(r#""m""#, &format!("\"{}\"", "i".repeat(257)));
        let sig = k.sign(long.as_bytes()).to_hex();
        let frame = format!(r#"{},"sig":"{sig}"}}"#, &long[..long.len() - 1]);
        assert!(parse_authentic(&frame, 1 << 20, &k).is_none());
        assert_eq!(
            parse_frame(frame.as_bytes(), 1 << 20).unwrap_err().reason(),
            DropReason::OversizedId
        );
    }

    /// Found by fuzzing (`frame`): an envelope with an unknown member that
    /// sorts between `data` and `from` re-encodes to our own shape, and the
    /// authenticate-first path read that member as part of `data`, which
    /// then parsed as `null` and was given out verbatim as the canonical
    /// data (invalid JSON). Data, body and canonical forms are now exact.
    #[test]
    fn authentic_path_reads_data_right_with_a_member_after_it() {
        let k = key("s");
        for (extra, data) in [
            (r#""datsig":"x""#, json!(true)),
            (r#""e":{"f":[1]}"#, json!(true)),
        ] {
            let text = format!(
                r#"{{"data":true,{extra},"from":null,"id":"m","to":null,"ts":7,"type":"x","v":1}}"#
            );
            let body = serde_json::from_str::<Value>(&text).unwrap();
            let Value::Object(body) = body else { panic!() };
            let frame = Envelope::from_object(body).unwrap().encode(&k);
            assert!(frame.starts_with(&text[..text.len() - 1]), "{frame}");
            let checked = parse_frame(frame.as_bytes(), 1 << 20).unwrap();
            assert!(checked.verify(&k));
            let authentic = parse_authentic(&frame, 1 << 20, &k).unwrap();
            for env in [&authentic, &checked.envelope] {
                assert_eq!(env.data(), Some(&data), "{frame}");
                assert_eq!(env.canonical_data().unwrap().as_str(), "true");
                assert_eq!(env.canonical(), text);
                assert_eq!(env.body(), checked.envelope.body());
            }
        }
    }
}
