//! Golden vectors produced by the reference implementation (link-core 0.6.0).
//! `tests/data/` holds verbatim copies of the vectors produced by running the
//! reference (protocol §3.4.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_protocol::envelope::{self, DEFAULT_MAX_MESSAGE_BYTES};
use link_protocol::{HashAlgo, Key, Value, canonical, signed_form};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("missing {k} in {v}"))
}

#[test]
fn canonical_cases_match_text_and_every_hmac() {
    let file = load("canonical.json");
    let secret = s(&file, "secret");
    let keys = [
        ("hmac_sha256", Key::new(secret, HashAlgo::Sha256).unwrap()),
        ("hmac_sha384", Key::new(secret, HashAlgo::Sha384).unwrap()),
        ("hmac_sha512", Key::new(secret, HashAlgo::Sha512).unwrap()),
    ];
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 417);
    let mut macs = 0;
    for (i, case) in cases.iter().enumerate() {
        let input: Value = serde_json::from_str(s(case, "input")).unwrap();
        let got = canonical::to_string(&input);
        assert_eq!(got, s(case, "canonical"), "case {i} ({})", s(case, "input"));
        // The signing-form scanner agrees: a text is "already canonical"
        // exactly when the reference's canonical text equals it.
        let text = s(case, "input");
        assert_eq!(
            signed_form::is_canonical(text.as_bytes()),
            text == got,
            "case {i} ({text})"
        );
        assert!(
            signed_form::is_canonical(got.as_bytes()),
            "case {i} ({got})"
        );
        for (field, key) in &keys {
            if let Some(want) = case[*field].as_str() {
                assert_eq!(key.sign(got.as_bytes()).to_hex(), want, "case {i} {field}");
                macs += 1;
            }
        }
    }
    assert_eq!(macs, 417 + 42 * 2);
}

#[test]
fn envelopes_verify_or_fail_as_marked() {
    let file = load("canonical.json");
    let key = Key::new(s(&file, "secret"), HashAlgo::Sha256).unwrap();
    let envelopes = file["envelopes"].as_array().unwrap();
    assert_eq!(envelopes.len(), 80);
    let mut valid = 0;
    for (i, case) in envelopes.iter().enumerate() {
        let wire = s(case, "wire");
        let want = case["valid"].as_bool().unwrap();
        let ok = envelope::parse_frame(wire.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
            .map(|r| r.verify(&key))
            .unwrap_or(false);
        assert_eq!(ok, want, "envelope {i}: {wire}");
        valid += usize::from(ok);
    }
    assert!(valid > 0 && valid < 80, "both kinds are exercised");
}

#[test]
fn conversation_frames_verify_and_resign_to_the_same_bytes() {
    let file = load("conversation.json");
    let frames = file["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 73);
    for f in frames {
        let raw = s(f, "raw");
        let key = Key::new(s(f, "key"), HashAlgo::Sha256).unwrap();
        let got = envelope::parse_frame(raw.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        let n = &f["n"];
        assert!(got.verify(&key), "frame {n} verifies under its key");
        let sig = got.sig.as_deref().unwrap();
        assert_eq!(
            got.envelope.sign(&key).to_hex(),
            sig,
            "frame {n} re-signs to the same sig"
        );
        // Our own encoding of the same envelope verifies too and carries the same sig.
        let ours = got.envelope.encode(&key);
        assert!(ours.ends_with(&format!("\"sig\":\"{sig}\"}}")), "frame {n}");
        // The reference writes insertion order, so its frames take the
        // general path; ours are in signing form and carry their data text.
        assert!(signed_form::split(raw.as_bytes()).is_none(), "frame {n}");
        let form = signed_form::split(ours.as_bytes()).unwrap();
        assert_eq!(
            form.data.map(|r| &ours[r]),
            got.envelope.data().map(canonical::to_string).as_deref(),
            "frame {n}"
        );
        let back = envelope::parse_frame(ours.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(back.envelope, got.envelope, "frame {n} round-trips");
        assert!(back.verify(&key));
        // Read off the text (signing form) or off the tree, the header and
        // payload read the same.
        let (a, b) = (&back.envelope, &got.envelope);
        assert!(
            a.signed_data_text().is_some() || a.data().is_none(),
            "frame {n}"
        );
        assert_eq!(
            (a.id(), a.msg_type(), a.from(), a.to(), a.ts().to_bits()),
            (b.id(), b.msg_type(), b.from(), b.to(), b.ts().to_bits()),
            "frame {n}"
        );
        assert_eq!((a.version_ok(), a.data()), (b.version_ok(), b.data()));
        // A client authenticates our frames before parsing them and reads
        // the same; the reference's own frames go the checked way.
        assert!(
            envelope::parse_authentic(raw, DEFAULT_MAX_MESSAGE_BYTES, &key).is_none(),
            "frame {n}"
        );
        let c = envelope::parse_authentic(&ours, DEFAULT_MAX_MESSAGE_BYTES, &key)
            .unwrap_or_else(|| panic!("frame {n} authenticates"));
        assert_eq!(&c, b, "frame {n}");
        assert_eq!(
            (c.id(), c.msg_type(), c.from(), c.to(), c.ts().to_bits()),
            (b.id(), b.msg_type(), b.from(), b.to(), b.ts().to_bits()),
            "frame {n}"
        );
        assert_eq!((c.version_ok(), c.data()), (b.version_ok(), b.data()));
        assert_eq!(c.canonical_data(), b.canonical_data(), "frame {n}");
    }
}

#[test]
fn spec_section_3_4_vectors() {
    let k = Key::new("k", HashAlgo::Sha256).unwrap();
    let frame2 = r#"{"v":1,"id":"x","ts":1,"type":"t","from":null,"to":null,"sig":"0e2b3e28249e0307c3412f9a7b86a9c2fb32878437a9070ead93c95d44f70988"}"#;
    let frame3 = r#"{"v":1,"id":"x","ts":1,"type":"t","from":null,"to":null,"data":1,"sig":"4e6f334d3e2cdfe1dd2f8fc505105617ae532c5383e41222dce2173077ca053f"}"#;
    for frame in [frame2, frame3] {
        assert!(
            envelope::parse_frame(frame.as_bytes(), 1 << 20)
                .unwrap()
                .verify(&k),
            "{frame}"
        );
    }
    let hello = r#"{"data":{"kind":"alpha","name":"alpha-1","pid":15128,"startedAt":1795424111499},"from":"alpha","id":"6616b42f-612f-42e2-8210-948f9b1d4ed2","to":null,"ts":1795424111499,"type":"hello","v":1}"#;
    let demo = Key::new("demo-secret", HashAlgo::Sha256).unwrap();
    assert_eq!(
        demo.sign(hello.as_bytes()).to_hex(),
        "5529c1e0a0fa185feaf689bd406e1459bb30b279beb1a5881328746d875d1e82"
    );
}
