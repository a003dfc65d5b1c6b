//! What crosses NATS between the hubs of a cluster, byte for byte, and how
//! it is authenticated. Sans-I/O: [`Sealer::seal`] and [`Opener::open`]
//! take the subject and the time; the driver does the publishing.
//!
//! ```text
//!  message = mac[32] ‖ header_len: u32 BE ‖ header (JSON) ‖ data (canonical text, optional)
//!  mac     = HMAC-SHA256(cluster secret, subject ‖ 0x00 ‖ header_len ‖ header ‖ data)
//!  header  = {"h": hub id, "s": seq, "t": wall ms, "op": …, op fields}
//! ```
//!
//! A NATS client without the cluster secret can publish on the subjects
//! but cannot make a MAC: its message is dropped and counted. The subject
//! is under the MAC, so a message cannot be moved to another hub's inbox
//! or another topic. Replays are refused twice over: a header more than
//! the replay window away from now is stale, and within the window every
//! hub's sequence numbers are held in a sliding bitmap (a hub id is random
//! per process, so a restarted hub starts a new sequence).
//!
//! Peer data is never re-parsed: the sending hub built it with
//! [`CanonicalData::new`] (or read it verbatim off a verified frame), and
//! the receiving hub signs it as is for its recipient.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use link_protocol::{CanonicalData, msg_type};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Bytes of the MAC that opens every message.
pub(crate) const MAC_LEN: usize = 32;

/// Sequence numbers held per sending hub below its highest.
const WINDOW_BITS: u64 = 1024;

/// Why a message from NATS was dropped (counted, logged at debug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Shorter than its framing says.
    #[error("truncated")]
    Truncated,
    /// The MAC does not verify under the cluster secret.
    #[error("bad MAC")]
    BadMac,
    /// The header is not the JSON object this module writes (or names a
    /// message type hubs do not relay).
    #[error("malformed header")]
    Malformed,
    /// Outside the replay window.
    #[error("stale")]
    Stale,
    /// Seen already (or older than the sequence window).
    #[error("replayed")]
    Replayed,
}

impl WireError {
    /// The stable code it is counted under.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadMac => "bad-mac",
            Self::Malformed => "malformed",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
        }
    }
}

/// What one message says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    /// A message for a peer on the receiving hub, built by the sending hub
    /// (a relayed RPC, response, cancel or direct message; an RPC error the
    /// hub made).
    Deliver {
        id: Option<Arc<str>>,
        /// One of [`RELAYED`].
        msg_type: &'static str,
        from: Arc<str>,
        to: Arc<str>,
    },
    /// A topic message from a peer of the sending hub, published at `at`
    /// (hub wall ms: when that hub routed it, before any queue towards
    /// NATS; a header without `at`, from an older hub, reads as its `t`).
    Publish {
        topic: String,
        from: Arc<str>,
        at: u64,
    },
    /// A peer of the sending hub set its status (`data`: the status, absent
    /// for `null`) at `at` (hub wall ms).
    Status { kind: Arc<str>, at: u64 },
    /// The sending hub is alive and holds `peers` peers.
    Heartbeat { peers: u64 },
    /// The sending hub's peer `kind` left (its lease is handed back);
    /// `rev`, when known, is the revision of the lease it held: entries at
    /// or before it are stale wherever they arrive from.
    Release { kind: Arc<str>, rev: Option<u64> },
    /// The sending hub's peer took `kind`'s lease at revision `rev`
    /// (`data`: the lease's JSON, as stored): sent once the claim is
    /// written, so the other hubs route to the peer at once instead of
    /// when their watch of the bucket delivers the entry (the watch stays
    /// the directory; a revision seen twice counts once).
    Lease { kind: Arc<str>, rev: u64 },
    /// `link.topic.list` on the sending hub: every hub answers `Topics`.
    TopicsQuery,
    /// A hub's topics (`data`: `{topic: [kinds in subscription order]}`).
    Topics,
    /// The sending hub is stopping: its peers are gone.
    Bye,
}

/// The message types one hub relays to another's peer.
pub(crate) const RELAYED: [&str; 4] = [
    msg_type::RPC_REQUEST,
    msg_type::RPC_RESPONSE,
    msg_type::RPC_CANCEL,
    msg_type::DIRECT,
];

fn relayed(t: &str) -> Option<&'static str> {
    RELAYED.into_iter().find(|known| *known == t)
}

/// An opened message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Opened {
    /// The sending hub.
    pub(crate) hub: Arc<str>,
    pub(crate) op: Op,
    pub(crate) data: Option<CanonicalData>,
}

/// The header as it is written and read: one flat object, the fields of
/// every op optional (read borrowing from the message where no escape
/// forces a copy; unknown fields are ignored, a repeated one is
/// malformed).
#[derive(Default, Serialize, Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    h: Cow<'a, str>,
    s: u64,
    t: u64,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    id: Option<Cow<'a, str>>,
    #[serde(
        rename = "type",
        borrow,
        default,
        skip_serializing_if = "Option::is_none"
    )]
    msg_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rev: Option<u64>,
}

impl<'a> Header<'a> {
    /// The header of `op`, sent by `hub` as its `seq`th message at `t`.
    fn of(hub: &'a str, s: u64, t: u64, op: &'a Op) -> Self {
        let text = |v: &'a str| Some(Cow::Borrowed(v));
        let base = |op: &'static str| Header {
            h: Cow::Borrowed(hub),
            s,
            t,
            op: Cow::Borrowed(op),
            ..Header::default()
        };
        match op {
            Op::Deliver {
                id,
                msg_type,
                from,
                to,
            } => Header {
                id: id.as_deref().and_then(text),
                msg_type: Some(Cow::Borrowed(msg_type)),
                from: text(from),
                to: text(to),
                ..base("deliver")
            },
            Op::Publish { topic, from, at } => Header {
                topic: text(topic),
                from: text(from),
                at: Some(*at),
                ..base("publish")
            },
            Op::Status { kind, at } => Header {
                kind: text(kind),
                at: Some(*at),
                ..base("status")
            },
            Op::Heartbeat { peers } => Header {
                peers: Some(*peers),
                ..base("heartbeat")
            },
            Op::Release { kind, rev } => Header {
                kind: text(kind),
                rev: *rev,
                ..base("release")
            },
            Op::Lease { kind, rev } => Header {
                kind: text(kind),
                rev: Some(*rev),
                ..base("lease")
            },
            Op::TopicsQuery => base("topics?"),
            Op::Topics => base("topics"),
            Op::Bye => base("bye"),
        }
    }

    /// The op this header says (`None`: unknown, or a field missing).
    fn op(&self) -> Option<Op> {
        let text = |v: &Option<Cow<'_, str>>| v.as_deref().map(Arc::<str>::from);
        Some(match &*self.op {
            "deliver" => Op::Deliver {
                id: text(&self.id),
                msg_type: relayed(self.msg_type.as_deref()?)?,
                from: text(&self.from)?,
                to: text(&self.to)?,
            },
            "publish" => Op::Publish {
                topic: self.topic.as_deref()?.to_owned(),
                from: text(&self.from)?,
                at: self.at.unwrap_or(self.t),
            },
            "status" => Op::Status {
                kind: text(&self.kind)?,
                at: self.at?,
            },
            "heartbeat" => Op::Heartbeat { peers: self.peers? },
            "release" => Op::Release {
                kind: text(&self.kind)?,
                rev: self.rev,
            },
            "lease" => Op::Lease {
                kind: text(&self.kind)?,
                rev: self.rev?,
            },
            "topics?" => Op::TopicsQuery,
            "topics" => Op::Topics,
            "bye" => Op::Bye,
            _ => return None,
        })
    }
}

fn mac(key: &hmac::Key, subject: &str, rest: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(subject.as_bytes());
    ctx.update(&[0]);
    ctx.update(rest);
    ctx.sign()
}

/// The cluster secret as an HMAC key.
pub(crate) fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// Seals this hub's messages: its id, a sequence, the time, the MAC.
/// Clones share the sequence (every task of a hub seals with one).
#[derive(Clone)]
pub(crate) struct Sealer {
    key: hmac::Key,
    hub: String,
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sealer {
    pub(crate) fn new(key: hmac::Key, hub: &str) -> Self {
        Self {
            key,
            hub: hub.to_owned(),
            seq: Default::default(),
        }
    }

    /// The bytes to publish on `subject`.
    pub(crate) fn seal(
        &self,
        subject: &str,
        now_ms: u64,
        op: &Op,
        data: Option<&CanonicalData>,
    ) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let data = data.map_or("", CanonicalData::as_str);
        let mut out = Vec::with_capacity(MAC_LEN + 4 + 160 + data.len());
        out.extend_from_slice(&[0; MAC_LEN + 4]);
        // Writing into a Vec cannot fail, and the header holds only strings
        // and integers.
        let _ = serde_json::to_writer(&mut out, &Header::of(&self.hub, seq, now_ms, op));
        let header_len = u32::try_from(out.len() - MAC_LEN - 4).unwrap_or(u32::MAX);
        out[MAC_LEN..MAC_LEN + 4].copy_from_slice(&header_len.to_be_bytes());
        out.extend_from_slice(data.as_bytes());
        let tag = mac(&self.key, subject, &out[MAC_LEN..]);
        out[..MAC_LEN].copy_from_slice(tag.as_ref());
        out
    }
}

/// Opens other hubs' messages: MAC, freshness, replay.
pub(crate) struct Opener {
    key: hmac::Key,
    window_ms: u64,
    seen: HashMap<Arc<str>, SeqWindow>,
}

impl Opener {
    /// `window_ms`: how far a message's time may be from now (the hub's
    /// replay window).
    pub(crate) fn new(key: hmac::Key, window_ms: u64) -> Self {
        Self {
            key,
            window_ms,
            seen: HashMap::new(),
        }
    }

    /// Checks and decodes one message read on `subject`.
    pub(crate) fn open(
        &mut self,
        subject: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Opened, WireError> {
        let (tag, rest) = bytes
            .split_first_chunk::<MAC_LEN>()
            .ok_or(WireError::Truncated)?;
        let want = mac(&self.key, subject, rest);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(want.as_ref(), &tag[..])) {
            return Err(WireError::BadMac);
        }
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(WireError::Truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        let (header, data) = rest.split_at(len);
        let header: Header<'_> =
            serde_json::from_slice(header).map_err(|_| WireError::Malformed)?;
        if header.t.abs_diff(now_ms) > self.window_ms {
            return Err(WireError::Stale);
        }
        let op = header.op().ok_or(WireError::Malformed)?;
        let data = match std::str::from_utf8(data) {
            Ok("") => None,
            Ok(text) => Some(CanonicalData::assume_canonical(text.to_owned())),
            Err(_) => return Err(WireError::Malformed),
        };
        // Last: only an authentic, well-formed message takes a slot.
        let hub = match self.seen.get_key_value(&*header.h) {
            Some((hub, _)) => Arc::clone(hub),
            None => Arc::from(&*header.h),
        };
        if !self
            .seen
            .entry(Arc::clone(&hub))
            .or_default()
            .admit(header.s)
        {
            return Err(WireError::Replayed);
        }
        Ok(Opened { hub, op, data })
    }

    /// Forgets a hub (gone): its window is not needed any more.
    pub(crate) fn forget(&mut self, hub: &str) {
        self.seen.remove(hub);
    }
}

/// A lease entry's value: which hub's peer holds a kind, with the peer's
/// hello for the others' peer lists. Sealed like a message (the MAC covers
/// the bucket key, so a value cannot be moved to another kind) and dated:
/// a value older than the bucket's age is refused, so a captured value
/// cannot be put back later.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LeaseValue {
    pub(crate) hub: String,
    pub(crate) kind: String,
    pub(crate) hello: Value,
    pub(crate) connected_at: u64,
    /// The id and ts of the hello that took the lease.
    pub(crate) hello_id: Option<(String, f64)>,
    /// When it was written (hub wall ms); refreshed with the lease.
    pub(crate) t: u64,
}

fn lease_mac(key: &hmac::Key, kv_key: &str, json: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(b"lease\0");
    ctx.update(kv_key.as_bytes());
    ctx.update(&[0]);
    ctx.update(json);
    ctx.sign()
}

/// A lease's JSON (what is stored after the MAC, and what a lease
/// announcement carries).
pub(crate) fn lease_json(lease: &LeaseValue) -> Value {
    json!({
        "hub": lease.hub,
        "kind": lease.kind,
        "hello": lease.hello,
        "connectedAt": lease.connected_at,
        "helloId": lease.hello_id.as_ref().map(|(id, _)| id),
        "helloTs": lease.hello_id.as_ref().map(|(_, ts)| ts),
        "t": lease.t,
    })
}

/// The bytes to store under `kv_key`.
pub(crate) fn seal_lease(key: &hmac::Key, kv_key: &str, lease: &LeaseValue) -> Vec<u8> {
    let json = lease_json(lease).to_string();
    let mut out = Vec::with_capacity(MAC_LEN + json.len());
    out.extend_from_slice(lease_mac(key, kv_key, json.as_bytes()).as_ref());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Checks a value read under `kv_key`: MAC, then age (`max_age_ms`).
pub(crate) fn open_lease(
    key: &hmac::Key,
    kv_key: &str,
    bytes: &[u8],
    now_ms: u64,
    max_age_ms: u64,
) -> Result<LeaseValue, WireError> {
    let (tag, json) = bytes
        .split_first_chunk::<MAC_LEN>()
        .ok_or(WireError::Truncated)?;
    let want = lease_mac(key, kv_key, json);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(want.as_ref(), &tag[..])) {
        return Err(WireError::BadMac);
    }
    read_lease(json, now_ms, max_age_ms)
}

/// Reads a lease's JSON (authenticated by the caller: a bucket value's MAC
/// or an announcement's); refuses one written more than `max_age_ms` from
/// now.
pub(crate) fn read_lease(
    json: &[u8],
    now_ms: u64,
    max_age_ms: u64,
) -> Result<LeaseValue, WireError> {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(json) else {
        return Err(WireError::Malformed);
    };
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let number = |name: &str| v.get(name).and_then(Value::as_u64);
    let (Some(hub), Some(kind), Some(connected_at), Some(t)) = (
        text("hub"),
        text("kind"),
        number("connectedAt"),
        number("t"),
    ) else {
        return Err(WireError::Malformed);
    };
    if t.abs_diff(now_ms) > max_age_ms {
        return Err(WireError::Stale);
    }
    let hello_id = match (text("helloId"), v.get("helloTs").and_then(Value::as_f64)) {
        (Some(id), Some(ts)) => Some((id, ts)),
        _ => None,
    };
    Ok(LeaseValue {
        hub,
        kind,
        hello: v.get("hello").cloned().unwrap_or(Value::Null),
        connected_at,
        hello_id,
        t,
    })
}

/// `text` as lowercase hex: a NATS subject token or KV key for any kind or
/// topic name (both allow characters those do not).
pub(crate) fn hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    push_hex(&mut out, text);
    out
}

/// Appends `text` as lowercase hex to `out`.
pub(crate) fn push_hex(out: &mut String, text: &str) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in text.bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The sequence numbers seen from one hub: the highest and a bitmap of the
/// [`WINDOW_BITS`] below it (messages of several subjects may arrive a
/// little out of order).
#[derive(Default)]
struct SeqWindow {
    top: u64,
    bits: [u64; (WINDOW_BITS / 64) as usize],
}

impl SeqWindow {
    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW_BITS;
        (&mut self.bits[(i / 64) as usize], 1 << (i % 64))
    }

    /// True the first time `seq` is seen (and it is not too old).
    fn admit(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= WINDOW_BITS {
                self.bits = Default::default();
            } else {
                for s in self.top + 1..seq {
                    let (word, mask) = self.bit(s);
                    *word &= !mask;
                }
            }
            self.top = seq;
            let (word, mask) = self.bit(seq);
            *word |= mask;
            return true;
        }
        if self.top - seq >= WINDOW_BITS {
            return false;
        }
        let (word, mask) = self.bit(seq);
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn pair() -> (Sealer, Opener) {
        (
            Sealer::new(key(b"cluster-secret"), "hub-a"),
            Opener::new(key(b"cluster-secret"), 30_000),
        )
    }

    fn deliver() -> Op {
        Op::Deliver {
            id: Some("m1".into()),
            msg_type: "direct",
            from: "alpha".into(),
            to: "beta".into(),
        }
    }

    #[test]
    fn a_sealed_message_opens_once_with_its_data_verbatim() {
        let (sealer, mut opener) = pair();
        let data = CanonicalData::new(&json!({"directType": "ping", "directData": [1, "é"]}));
        let bytes = sealer.seal("link.c.hub.b", NOW, &deliver(), Some(&data));
        let opened = opener.open("link.c.hub.b", &bytes, NOW + 5).unwrap();
        assert_eq!(&*opened.hub, "hub-a");
        assert_eq!(opened.op, deliver());
        assert_eq!(
            opened.data.as_ref().map(CanonicalData::as_str),
            Some(data.as_str())
        );
        assert_eq!(
            opener.open("link.c.hub.b", &bytes, NOW + 6),
            Err(WireError::Replayed)
        );
    }

    #[test]
    fn another_secret_another_subject_or_a_flipped_byte_fail_the_mac() {
        let (sealer, mut opener) = pair();
        let bytes = sealer.seal("link.c.hub.b", NOW, &deliver(), None);
        let mut outsider = Opener::new(key(b"guess"), 30_000);
        assert_eq!(
            outsider.open("link.c.hub.b", &bytes, NOW),
            Err(WireError::BadMac)
        );
        assert_eq!(
            opener.open("link.c.hub.c", &bytes, NOW),
            Err(WireError::BadMac)
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert_eq!(
            opener.open("link.c.hub.b", &flipped, NOW),
            Err(WireError::BadMac)
        );
        assert_eq!(
            opener.open("link.c.hub.b", &bytes[..10], NOW),
            Err(WireError::Truncated)
        );
        // The failures took no sequence slot: the genuine message opens.
        assert!(opener.open("link.c.hub.b", &bytes, NOW).is_ok());
    }

    #[test]
    fn a_message_outside_the_window_is_stale() {
        let (sealer, mut opener) = pair();
        let bytes = sealer.seal("s", NOW, &Op::Bye, None);
        assert_eq!(
            opener.open("s", &bytes, NOW + 30_001),
            Err(WireError::Stale)
        );
        assert_eq!(
            opener.open("s", &bytes, NOW - 30_001),
            Err(WireError::Stale)
        );
        assert!(opener.open("s", &bytes, NOW + 30_000).is_ok());
    }

    #[test]
    fn out_of_order_sequences_within_the_window_open_and_replays_do_not() {
        let (sealer, mut opener) = pair();
        let msgs: Vec<Vec<u8>> = (0..3000)
            .map(|_| sealer.seal("s", NOW, &Op::Heartbeat { peers: 1 }, None))
            .collect();
        // 2 arrives before 1; both open once.
        assert!(opener.open("s", &msgs[1], NOW).is_ok());
        assert!(opener.open("s", &msgs[0], NOW).is_ok());
        assert_eq!(opener.open("s", &msgs[0], NOW), Err(WireError::Replayed));
        for m in &msgs[2..2000] {
            assert!(opener.open("s", m, NOW).is_ok());
        }
        // Seq 1500 (inside the window) and seq 500 (below it) are refused.
        assert_eq!(opener.open("s", &msgs[1499], NOW), Err(WireError::Replayed));
        assert_eq!(opener.open("s", &msgs[499], NOW), Err(WireError::Replayed));
        // A jump past the window clears it; what follows still opens.
        assert!(opener.open("s", &msgs[2999], NOW).is_ok());
        assert!(opener.open("s", &msgs[2500], NOW).is_ok());
        assert_eq!(opener.open("s", &msgs[2500], NOW), Err(WireError::Replayed));
    }

    #[test]
    fn a_publish_without_at_from_an_older_hub_reads_as_published_at_its_time() {
        let (_, mut opener) = pair();
        let header = format!(
            r#"{{"h":"hub-a","s":1,"t":{NOW},"op":"publish","topic":"news","from":"alpha"}}"#
        );
        let mut rest = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
        rest.extend_from_slice(header.as_bytes());
        let mut bytes = mac(&key(b"cluster-secret"), "s", &rest).as_ref().to_vec();
        bytes.extend_from_slice(&rest);
        let opened = opener.open("s", &bytes, NOW + 5).unwrap();
        assert_eq!(
            opened.op,
            Op::Publish {
                topic: "news".into(),
                from: "alpha".into(),
                at: NOW,
            }
        );
    }

    #[test]
    fn every_op_round_trips() {
        let (sealer, mut opener) = pair();
        let ops = [
            deliver(),
            Op::Deliver {
                id: None,
                msg_type: "rpc.cancel",
                from: "a".into(),
                to: "b".into(),
            },
            Op::Publish {
                topic: "news.eu".into(),
                from: "alpha".into(),
                at: NOW - 5,
            },
            Op::Status {
                kind: "alpha".into(),
                at: NOW,
            },
            Op::Heartbeat { peers: 7 },
            Op::Release {
                kind: "alpha".into(),
                rev: None,
            },
            Op::Release {
                kind: "alpha".into(),
                rev: Some(41),
            },
            Op::Lease {
                kind: "alpha".into(),
                rev: 42,
            },
            Op::TopicsQuery,
            Op::Topics,
            Op::Bye,
        ];
        for op in ops {
            let bytes = sealer.seal("s", NOW, &op, None);
            assert_eq!(opener.open("s", &bytes, NOW).unwrap().op, op);
        }
    }

    /// A message with `header` (the JSON text) as an authentic hub would
    /// seal it.
    fn sealed_header(header: &str) -> Vec<u8> {
        let mut rest = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
        rest.extend_from_slice(header.as_bytes());
        let mut out = mac(&key(b"cluster-secret"), "s", &rest).as_ref().to_vec();
        out.extend_from_slice(&rest);
        out
    }

    #[test]
    fn a_header_reads_in_any_field_order_and_a_bad_one_is_malformed() {
        let (_, mut opener) = pair();
        let t = NOW;
        // Fields in another order, escapes, an explicit null id, an unknown
        // field: all read.
        let bytes = sealed_header(&format!(
            r#"{{"to":"b\u0065ta","id":null,"op":"deliver","from":"alpha","type":"direct","t":{t},"s":1,"h":"hub-x","new":1}}"#
        ));
        let opened = opener.open("s", &bytes, NOW).unwrap();
        assert_eq!(&*opened.hub, "hub-x");
        assert_eq!(
            opened.op,
            Op::Deliver {
                id: None,
                msg_type: "direct",
                from: "alpha".into(),
                to: "beta".into(),
            }
        );
        for bad in [
            // A type hubs never relay.
            format!(
                r#"{{"h":"x","s":2,"t":{t},"op":"deliver","type":"hello","from":"a","to":"b"}}"#
            ),
            // An op without its fields, an unknown op, a repeated field.
            format!(r#"{{"h":"x","s":3,"t":{t},"op":"publish","from":"a"}}"#),
            format!(r#"{{"h":"x","s":4,"t":{t},"op":"shout"}}"#),
            format!(r#"{{"h":"x","s":5,"s":6,"t":{t},"op":"bye"}}"#),
            format!(r#"{{"h":"x","s":"7","t":{t},"op":"bye"}}"#),
            "[1]".to_owned(),
        ] {
            assert_eq!(
                opener.open("s", &sealed_header(&bad), NOW),
                Err(WireError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_lease_opens_under_its_key_only_and_only_while_fresh() {
        let k = key(b"cluster-secret");
        let lease = LeaseValue {
            hub: "hub-a".into(),
            kind: "alpha".into(),
            hello: json!({"kind": "alpha"}),
            connected_at: NOW,
            hello_id: Some(("h-1".into(), NOW as f64)),
            t: NOW,
        };
        let bytes = seal_lease(&k, "616c706861", &lease);
        assert_eq!(open_lease(&k, "616c706861", &bytes, NOW, 30_000), Ok(lease));
        assert_eq!(
            open_lease(&k, "62657461", &bytes, NOW, 30_000),
            Err(WireError::BadMac)
        );
        assert_eq!(
            open_lease(&key(b"guess"), "616c706861", &bytes, NOW, 30_000),
            Err(WireError::BadMac)
        );
        assert_eq!(
            open_lease(&k, "616c706861", &bytes, NOW + 30_001, 30_000),
            Err(WireError::Stale)
        );
        assert_eq!(hex("alpha"), "616c706861");
        assert_eq!(hex("é."), "c3a92e");
    }
}
