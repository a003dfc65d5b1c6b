//! Envelope hot paths: parse + verify, canonicalise + sign, encode, and our
//! canonicaliser against `serde_json_canonicalizer` (JCS, RFC 8785) on the
//! same `serde_json::Value`.
//!
//! Two realistic `topic.message` frames: "small" (~350 bytes, an ~80-byte
//! payload object) and "large" (~4 KB, nested readings with floats, unicode
//! strings and arrays). Wire frames use the reference's key order
//! (`v,id,ts,type,from,to,data,sig`) and unsorted payload keys, as a Node
//! peer sends them.
//!
//! ```text
//! cargo bench -p link-protocol --bench envelope -- --warm-up-time 1 --measurement-time 3
//! cargo bench -p link-protocol --bench envelope -- --test   # smoke run (CI)
//! ```

// Bench setup panics on impossible states (fixed inputs that must parse and
// verify); clippy.toml's test allowance does not cover bench code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Once;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use link_protocol::envelope::{self, CanonicalData, DEFAULT_MAX_MESSAGE_BYTES, Header};
use link_protocol::messages::Message;
use link_protocol::{HashAlgo, Key, Value, canonical};

const SECRET: &str = "demo-secret";
const ID: &str = "864240cc-efd7-4b5f-9491-0b08f9a31140";
const TS: u64 = 1_795_424_111_962;
const TOPIC: &str = "sensors.kitchen.climate";
/// Readings in the large payload (sized for a ~4 KB frame).
const READINGS: u32 = 31;

/// One benchmark input: the wire frame and what a receiver/sender holds.
struct Input {
    name: &'static str,
    /// Signed wire frame, reference key order.
    frame: String,
    /// The parsed envelope without `sig`, as one JSON value.
    value: Value,
    /// `data` of the envelope, already canonical (what a hub fans out).
    data: CanonicalData,
}

/// ~80-byte payload: unsorted keys, a float, unicode, an array.
fn small_payload() -> String {
    r#"{"room":"Küche","celsius":21.5,"unit":"°C","rh":0.43,"ok":true,"tags":["north","☕"],"seq":1042}"#
        .to_owned()
}

/// ~3.9 KB payload: a device block and an array of readings objects.
fn large_payload() -> String {
    let mut p = String::from(
        r#"{"device":{"name":"Wetterstation Süd","fw":"2.14.1","loc":{"lat":52.520008,"lon":13.404954,"alt":34.5},"owner":"Zoë Ångström"},"unit":"°C","readings":["#,
    );
    for i in 0..READINGS {
        if i > 0 {
            p.push(',');
        }
        let celsius = 18.0 + f64::from(i) * 0.37;
        let rh = 0.4 + f64::from(i % 7) / 100.0;
        write!(
            p,
            r#"{{"seq":{},"at":{},"celsius":{celsius:.2},"rh":{rh},"ok":{},"note":"{}","flags":[{},{}]}}"#,
            1000 + i,
            TS - u64::from(i) * 60_000,
            i % 5 != 0,
            ["stable", "rising ↑", "falling ↓", r#"sensor \"B\" warm"#, "温度 ok 😀"][i as usize % 5],
            i % 3,
            i % 2 == 0,
        )
        .unwrap();
    }
    write!(
        p,
        r#"],"summary":{{"min":18,"max":29.1,"mean":23.55,"count":{READINGS},"ratio":1.5e-7}}}}"#
    )
    .unwrap();
    p
}

/// Builds a signed frame in the reference's key order and its parsed forms.
fn input(name: &'static str, payload: &str, key: &Key) -> Input {
    let data_text = format!(r#"{{"topic":"{TOPIC}","payload":{payload}}}"#);
    let unsigned = format!(
        r#"{{"v":1,"id":"{ID}","ts":{TS},"type":"topic.message","from":"alpha","to":"beta","data":{data_text}}}"#
    );
    let received = envelope::parse_frame(unsigned.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    let sig = received.envelope.sign(key).to_hex();
    let frame = format!("{},\"sig\":\"{sig}\"}}", &unsigned[..unsigned.len() - 1]);

    let received = envelope::parse_frame(frame.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    assert!(received.verify(key), "{name} frame does not verify");
    let value = Value::Object(received.envelope.body().clone());
    let data = CanonicalData::new(&serde_json::from_str(&data_text).unwrap());
    Input {
        name,
        frame,
        value,
        data,
    }
}

fn header() -> Header<'static> {
    Header {
        id: ID,
        ts: TS,
        msg_type: "topic.message",
        from: Some("alpha"),
        to: Some("beta"),
    }
}

fn key() -> Key {
    Key::new(SECRET, HashAlgo::Sha256).unwrap()
}

fn inputs() -> Vec<Input> {
    let key = key();
    let inputs = vec![
        input("small", &small_payload(), &key),
        input("large", &large_payload(), &key),
    ];
    for i in &inputs {
        let ours = canonical::to_string(&i.value);
        let jcs = serde_json_canonicalizer::to_string(&i.value).unwrap();
        assert_eq!(ours, jcs, "{}: ours and JCS disagree", i.name);
        // The sender fast path signs the same envelope a receiver verifies.
        let encoded = envelope::encode(&key, &header(), Some(&i.data));
        let back = envelope::parse_frame(encoded.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert!(back.verify(&key));
        assert_eq!(back.envelope.canonical(), ours);
    }
    static SIZES: Once = Once::new();
    SIZES.call_once(|| {
        for i in &inputs {
            let canonical = canonical::to_string(&i.value).len();
            eprintln!(
                "{}: frame {} B, canonical {canonical} B",
                i.name,
                i.frame.len()
            );
        }
    });
    inputs
}

fn parse_verify(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("parse_verify");
    for i in &inputs() {
        // A Node peer's frame (insertion order: the tree path) and ours
        // (signing form: read off the text), then what a subscriber does:
        // the same plus reading the message.
        let ours = envelope::encode(&key, &header(), Some(&i.data));
        let parse = |frame: &str| {
            envelope::parse_frame(black_box(frame.as_bytes()), DEFAULT_MAX_MESSAGE_BYTES).unwrap()
        };
        for (origin, frame) in [("node", &i.frame), ("ours", &ours)] {
            g.throughput(Throughput::Bytes(frame.len() as u64));
            g.bench_with_input(BenchmarkId::new(origin, i.name), frame, |b, frame| {
                b.iter(|| parse(frame).verify(&key));
            });
            if origin == "ours" {
                // What a client does with our hub's frame: authenticate it
                // over its own bytes, then read the message.
                g.bench_with_input(
                    BenchmarkId::new("ours+authentic+read", i.name),
                    frame,
                    |b, frame| {
                        b.iter(|| {
                            let env = envelope::parse_authentic(
                                black_box(frame),
                                DEFAULT_MAX_MESSAGE_BYTES,
                                &key,
                            )
                            .unwrap();
                            Message::parse(&env)
                        });
                    },
                );
            }
            let read = format!("{origin}+read");
            g.bench_with_input(BenchmarkId::new(read, i.name), frame, |b, frame| {
                b.iter(|| {
                    let r = parse(frame);
                    assert!(r.verify(&key));
                    Message::parse(&r.envelope)
                });
            });
        }
    }
    g.finish();
}

fn scan(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("scan");
    for i in &inputs() {
        let ours = envelope::encode(&key, &header(), Some(&i.data));
        g.throughput(Throughput::Bytes(ours.len() as u64));
        g.bench_with_input(BenchmarkId::new("split", i.name), &ours, |b, frame| {
            b.iter(|| link_protocol::signed_form::split(black_box(frame.as_bytes())));
        });
    }
    g.finish();
}

fn canonicalise_sign(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("canonicalise_sign");
    for i in &inputs() {
        g.throughput(Throughput::Bytes(i.frame.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("canonical+sign", i.name),
            &i.value,
            |b, value| b.iter(|| key.sign(canonical::to_string(black_box(value)).as_bytes())),
        );
        g.bench_with_input(BenchmarkId::new("encode", i.name), &i.data, |b, data| {
            b.iter(|| envelope::encode(&key, black_box(&header()), Some(black_box(data))));
        });
        // One recipient of a fan-out whose prefix (up to `id`) was MAC'd
        // once for all of them.
        let prefix = envelope::SharedPrefix::new(&key, header().from, Some(&i.data));
        g.bench_with_input(
            BenchmarkId::new("encode_shared_prefix", i.name),
            &prefix,
            |b, p| {
                b.iter(|| p.encode(black_box(&header())));
            },
        );
    }
    g.finish();
}

fn canonicalise_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonicalise_only");
    for i in &inputs() {
        let len = canonical::to_string(&i.value).len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("ours", i.name), &i.value, |b, value| {
            b.iter(|| canonical::to_string(black_box(value)));
        });
        g.bench_with_input(BenchmarkId::new("jcs", i.name), &i.value, |b, value| {
            b.iter(|| serde_json_canonicalizer::to_string(black_box(value)).unwrap());
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    parse_verify,
    scan,
    canonicalise_sign,
    canonicalise_only
);
criterion_main!(benches);
