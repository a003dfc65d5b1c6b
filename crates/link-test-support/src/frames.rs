//! Building, signing and reading single frames: keys, ids, the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use link_protocol::conn::Now;
use link_protocol::{CanonicalData, Envelope, HashAlgo, Key, Message, envelope};
use serde_json::Value;

/// Wall-clock milliseconds since the Unix epoch (what `ts` carries).
pub fn wall_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// The protocol crate's clock input: now, monotonic and wall.
pub fn now() -> Now {
    Now::new(Instant::now(), wall_ms())
}

/// A SHA-256 key for `secret`.
pub fn key(secret: &str) -> Key {
    Key::new(secret, HashAlgo::Sha256).expect("a usable test secret")
}

/// A process-unique id with a readable prefix (`<prefix>-<ms>-<n>`).
pub fn fresh_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", wall_ms())
}

/// A frame signed with `key`, stamped now.
pub fn frame(
    key: &Key,
    id: &str,
    msg_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    data: Option<&Value>,
) -> String {
    frame_at(key, id, wall_ms(), msg_type, from, to, data)
}

/// A frame signed with `key`, with a chosen `ts`.
pub fn frame_at(
    key: &Key,
    id: &str,
    ts: u64,
    msg_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    data: Option<&Value>,
) -> String {
    let header = envelope::Header {
        id,
        ts,
        msg_type,
        from,
        to,
    };
    let data = data.map(CanonicalData::new);
    envelope::encode(key, &header, data.as_ref())
}

/// A hello frame for `kind` (name = kind).
pub fn hello_frame(key: &Key, id: &str, kind: &str) -> String {
    let data = serde_json::json!({"kind": kind, "name": kind, "pid": 1, "startedAt": wall_ms()});
    frame(key, id, "hello", Some(kind), None, Some(&data))
}

/// Signs an arbitrary JSON object as an envelope (any fields, any types;
/// a `sig` member is replaced).
pub fn sign_body(key: &Key, body: Value) -> String {
    let Value::Object(map) = body else {
        panic!("sign_body needs an object")
    };
    Envelope::from_object(map)
        .expect("an envelope object")
        .encode(key)
}

/// Parses a frame (up to 1 MiB) and reads it as a message; panics on an
/// unparsable frame.
pub fn parse(frame: &str) -> (Envelope, Message) {
    let r = envelope::parse_frame(frame.as_bytes(), 1 << 20).expect("a parsable frame");
    let m = Message::parse(&r.envelope);
    (r.envelope, m)
}

/// Kinds listed in a `peers.update`.
pub fn peer_kinds(e: &Envelope) -> Vec<String> {
    e.data().expect("peers.update data")["peers"]
        .as_array()
        .expect("a peers array")
        .iter()
        .map(|p| p["kind"].as_str().expect("a peer kind").to_owned())
        .collect()
}

/// The shared secret of the captured reference conversation's shared-key
/// steps.
pub const DEMO_SECRET: &str = "demo-secret";
