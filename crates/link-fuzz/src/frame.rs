//! Target `frame`: the bytes of one inbound frame, as a peer controls them.
//!
//! Checks, beyond "no panic":
//! - the fast path agrees with the general one: an envelope read off a
//!   frame in signing form (no JSON tree) has the same body, header fields,
//!   `sig` and canonical text as the tree `serde_json` parses from the same
//!   text, and verifies under exactly the keys the canonicalised tree does;
//! - re-encoding an accepted envelope gives a frame that parses, verifies,
//!   reads back the same through [`envelope::parse_authentic`] (the client's
//!   path) and re-encodes to the same bytes;
//! - the input's own body, signed as it stands (a key holder that writes
//!   non-canonical text), never panics `parse_authentic`, and when that body
//!   is canonical both paths agree on it.

use link_protocol::envelope::{self, Received};
use link_protocol::{Envelope, HashAlgo, Key, Map, Value, canonical, signed_form};

/// Frame cap for the input (the default, 1 MiB).
const MAX: usize = envelope::DEFAULT_MAX_MESSAGE_BYTES;

/// The secrets of the seed frames (the captured conversation and the
/// reference vectors), then one per other hash.
fn keys() -> [Key; 3] {
    let key = |secret, algo| match Key::new(secret, algo) {
        Ok(k) => k,
        Err(e) => panic!("fixed key: {e}"),
    };
    [
        key("demo-secret", HashAlgo::Sha256),
        key("vector-secret", HashAlgo::Sha384),
        key("fuzz-secret", HashAlgo::Sha512),
    ]
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let keys = keys();
    let text = String::from_utf8_lossy(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for key in &keys {
            if let Some(env) = envelope::parse_authentic(text, MAX, key) {
                // Only a key holder's frame gets here; it must also pass the
                // general path (the fuzzer cannot forge one, but a corpus
                // file made by `encode` can).
                let received = envelope::parse_frame(data, MAX)
                    .unwrap_or_else(|e| panic!("authentic frame fails parse_frame: {e}"));
                assert!(received.verify(key), "authentic frame fails verify");
                same_header(&env, &received.envelope);
            }
        }
    }
    if let Ok(received) = envelope::parse_frame(data, MAX) {
        accepted(&received, &text, &keys);
    }
    self_signed(&text, &keys[0]);
}

/// `parse_frame` accepted the frame.
fn accepted(received: &Received, text: &str, keys: &[Key; 3]) {
    let env = &received.envelope;
    touch(env);
    // The general path, from scratch: a tree without `sig`.
    let tree: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("parse_frame accepted what serde_json rejects: {e}"));
    let Value::Object(mut body) = tree else {
        panic!("parse_frame accepted a non-object");
    };
    let sig = match body.remove("sig") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    assert_eq!(received.sig, sig, "sig differs from the tree's");
    assert_eq!(env.body(), &body, "body differs from the tree's");
    let tree_env = tree_envelope(body.clone());
    same_header(env, &tree_env);
    assert_eq!(
        env.canonical(),
        tree_env.canonical(),
        "canonical text differs"
    );
    assert_eq!(
        env.canonical_data().map(|d| d.as_str().to_owned()),
        tree_env.canonical_data().map(|d| d.as_str().to_owned()),
        "canonical data differs"
    );
    let canonical = tree_env.canonical();
    for key in keys {
        let want = sig
            .as_deref()
            .is_some_and(|s| key.verify(canonical.as_bytes(), s));
        assert_eq!(received.verify(key), want, "verify differs from the tree's");
    }
    // Re-encode and read back on both paths.
    let key = &keys[0];
    let frame = env.encode(key);
    let again = envelope::parse_frame(frame.as_bytes(), usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded frame fails to parse: {e}: {frame}"));
    assert!(again.verify(key), "re-encoded frame fails verify: {frame}");
    // Compared as canonical text: `0e+21` reads back as the integer 0, a
    // different `serde_json::Number` for the same double.
    assert_eq!(
        again.envelope.canonical(),
        env.canonical(),
        "re-encoded body differs"
    );
    same_header(&again.envelope, env);
    assert_eq!(
        again.envelope.encode(key),
        frame,
        "encode is not a fixed point"
    );
    match envelope::parse_authentic(&frame, usize::MAX, key) {
        Some(authentic) => {
            touch(&authentic);
            assert_eq!(
                authentic.canonical(),
                env.canonical(),
                "authentic body differs"
            );
            same_header(&authentic, env);
        }
        // Our encoder's shape with an unusual header (e.g. escapes in a
        // header string) takes the general path by design.
        None => assert!(
            !frame_is_plain(env),
            "plain re-encoded frame not read by parse_authentic: {frame}"
        ),
    }
}

/// The header fields as the tail reader handles them: plain strings, no
/// escapes or controls, integral `ts`, `v` 1, and no unknown members.
fn frame_is_plain(env: &Envelope) -> bool {
    let plain = |v: Option<&Value>| match v {
        Some(Value::Null) => true,
        Some(Value::String(s)) => !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
        Some(_) | None => false,
    };
    let body = env.body();
    let known = ["data", "from", "id", "to", "ts", "type", "v"];
    body.keys().all(|k| known.contains(&k.as_str()))
        && plain(body.get("from"))
        && plain(body.get("to"))
        && matches!(body.get("id"), Some(Value::String(_)))
        && plain(body.get("id"))
        && matches!(body.get("type"), Some(Value::String(_)))
        && plain(body.get("type"))
        && body
            .get("ts")
            .and_then(Value::as_u64)
            .is_some_and(|t| t < 1_000_000_000_000_000)
        && body.get("v").and_then(Value::as_u64) == Some(1)
}

/// The input's body signed as it stands: `{…}` becomes `{…,"sig":"<mac>"}`.
fn self_signed(text: &str, key: &Key) {
    let Some(body) = text.strip_suffix('}') else {
        return;
    };
    if !body.starts_with('{') {
        return;
    }
    let sig = key.sign(text.as_bytes()).to_hex();
    let frame = format!("{body},\"sig\":\"{sig}\"}}");
    let Some(env) = envelope::parse_authentic(&frame, MAX, key) else {
        return;
    };
    touch(&env);
    if signed_form::is_canonical(text.as_bytes()) {
        // What a correct writer sends: both paths must agree.
        let received = envelope::parse_frame(frame.as_bytes(), MAX)
            .unwrap_or_else(|e| panic!("canonical signed body fails parse_frame: {e}"));
        assert!(received.verify(key), "canonical signed body fails verify");
        assert_eq!(
            received.envelope.canonical(),
            env.canonical(),
            "paths disagree"
        );
        same_header(&env, &received.envelope);
    }
}

/// The header accessors agree (`ts` as numbers: `-0` and `0` are the same
/// timestamp, and canonical JSON writes `-0` as `0`, as `JSON.stringify`
/// does, so a re-encoded `-0.0` reads back as `0`; NaN, which JSON cannot
/// carry, would still fail; `data` as canonical text).
fn same_header(a: &Envelope, b: &Envelope) {
    assert_eq!(a.id(), b.id(), "id differs");
    assert_eq!(a.msg_type(), b.msg_type(), "type differs");
    assert_eq!(a.from(), b.from(), "from differs");
    assert_eq!(a.to(), b.to(), "to differs");
    assert!(a.ts() == b.ts(), "ts differs: {} vs {}", a.ts(), b.ts());
    assert_eq!(a.version_ok(), b.version_ok(), "version differs");
    let data = |e: &Envelope| e.data().map(canonical::to_string);
    assert_eq!(data(a), data(b), "data differs");
}

/// Reads every accessor once.
fn touch(env: &Envelope) {
    let _ = (env.id(), env.msg_type(), env.from(), env.to(), env.ts());
    let _ = (env.version_ok(), env.data(), env.signed_data_text());
    let _ = (env.body(), env.canonical_data(), env.canonical());
    let _ = link_protocol::Message::parse(env);
    let mut owned = env.clone();
    let _ = owned.take_data();
}

/// The envelope the general path builds from a body.
fn tree_envelope(body: Map<String, Value>) -> Envelope {
    match Envelope::from_object(body) {
        Ok(env) => env,
        Err(e) => panic!("a body parse_frame accepted is not an envelope: {e}"),
    }
}
