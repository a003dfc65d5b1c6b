//! protocol §4.1: the hub's inbound pipeline, one row at a time. Each drop
//! reason is asserted twice: as the `protocol-error` event the hub emits
//! (`HubEvent::ProtocolError`), and as what the socket sees (nothing: the
//! frame is dropped and the socket stays open, proven by a round trip or a
//! later successful hello on the same socket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_hub::{HubConfig, HubEvent, Secret};
use link_protocol::DropReason;
use link_test_support::{
    TestHub, frame, frame_at, fresh_id, key, next_event, protocol_error, wall_ms,
};
use serde_json::{Value, json};

const S: &str = "demo-secret";

fn config() -> link_hub::HubConfigBuilder {
    HubConfig::builder(Secret::shared(S))
}

/// A direct from alpha to beta as an envelope body (for `sign_body`).
fn direct_body(id: &str, n: u64) -> Value {
    json!({"v": 1, "id": id, "ts": wall_ms(), "type": "direct", "from": "alpha", "to": "beta",
           "data": {"directType": "n", "directData": n}})
}

#[tokio::test]
async fn oversize_is_a_parser_drop_when_the_websocket_layer_lets_it_through() {
    // Sockets accepted with tungstenite's default limits (a "bare hub on
    // your own server"), so a 5000-byte frame reaches the envelope parser.
    let hub = TestHub::builder(config().max_message_bytes(4096).build().unwrap())
        .lenient()
        .start()
        .await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4990));
    assert_eq!(big.len(), 5000);
    alpha.send_raw(&big).await;
    let e = protocol_error(&mut rx, DropReason::Oversize).await;
    assert_eq!(e.size, Some(5000));
    assert_eq!(e.kind.as_deref(), Some("alpha"));
    alpha.assert_quiet().await;

    // A pending socket gets the same drop (no kind yet) and stays open.
    let mut raw = hub.raw_peer().await;
    raw.send_text(big).await;
    let e = protocol_error(&mut rx, DropReason::Oversize).await;
    assert_eq!((e.size, e.kind), (Some(5000), None));
    let ack = raw.hello(&key(S), "beta").await;
    assert_eq!(ack.data().unwrap()["ok"], true);
}

#[tokio::test]
async fn parse_error_carries_the_error_text_and_size() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;

    for bad in [
        "{not json",
        "{\"id\":\"a\"} trailing",
        "",
        // protocol §0.5: a lone surrogate escape is legal JSON for the
        // reference but cannot be a Rust String.
        "{\"v\":1,\"id\":\"x\",\"ts\":1,\"type\":\"t\",\"data\":\"\\ud800\"}",
    ] {
        alpha.send_raw(bad).await;
        let e = protocol_error(&mut rx, DropReason::ParseError).await;
        assert_eq!(e.size, Some(bad.len()), "{bad:?}");
        assert!(e.error.as_deref().is_some_and(|t| !t.is_empty()), "{bad:?}");
        assert_eq!(e.kind.as_deref(), Some("alpha"));
    }
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn missing_id_for_every_kind_of_unusable_id() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;

    let cases = [
        (r#"{"v":1,"type":"direct"}"#, Some("direct")),
        (r#"{"id":"","type":"direct"}"#, Some("direct")),
        (r#"{"id":7}"#, None),
        (r#"{"id":null}"#, None),
        (r#"{"id":["a"]}"#, None),
        ("[1,2]", None),
        ("\"just a string\"", None),
        ("42", None),
        ("null", None),
    ];
    for (bad, msg_type) in cases {
        alpha.send_raw(bad).await;
        let e = protocol_error(&mut rx, DropReason::MissingId).await;
        assert_eq!(e.msg_type.as_deref(), msg_type, "{bad}");
    }
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn oversized_id_counts_utf16_units_like_javascript() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let k = key(S);

    let health = |id: &str| {
        let data = json!({"rpcType": "link.health"});
        frame(
            &k,
            id,
            "rpc.request",
            Some("alpha"),
            Some("server"),
            Some(&data),
        )
    };
    // 257 ASCII chars, and 129 astral chars (258 UTF-16 units): refused.
    for id in ["x".repeat(257), "😀".repeat(129)] {
        alpha.send_raw(&health(&id)).await;
        let e = protocol_error(&mut rx, DropReason::OversizedId).await;
        assert_eq!(e.msg_type.as_deref(), Some("rpc.request"));
    }
    // Exactly 256 units is fine: the hub answers with the same id.
    for id in ["y".repeat(256), "😀".repeat(128)] {
        alpha.send_raw(&health(&id)).await;
        let r = alpha.recv("rpc.response").await;
        assert_eq!(r.id(), id);
        assert_eq!(r.data().unwrap()["ok"], true);
    }
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn bad_signature_is_dropped_and_the_socket_stays_open() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    let k = key(S);

    let good = |id: &str| link_test_support::sign_body(&k, direct_body(id, 1));
    let sig_of = |f: &str| f[f.len() - 66..f.len() - 2].to_owned();
    let with_sig = |f: &str, sig: &str| {
        let mut v: Value = serde_json::from_str(f).unwrap();
        v["sig"] = json!(sig);
        v.to_string()
    };

    let f = good(&fresh_id("a"));
    let sig = sig_of(&f);
    let tampered = f.replace("\"directData\":1", "\"directData\":2");
    let cases: Vec<String> = vec![
        tampered,
        with_sig(&good(&fresh_id("a")), "00"),
        with_sig(&good(&fresh_id("a")), ""),
        {
            let f = good(&fresh_id("a"));
            let mut v: Value = serde_json::from_str(&f).unwrap();
            v.as_object_mut().unwrap().remove("sig");
            v.to_string()
        },
        {
            let f = good(&fresh_id("a"));
            let mut v: Value = serde_json::from_str(&f).unwrap();
            v["sig"] = json!(12345);
            v.to_string()
        },
        // protocol §0.2: strict hex. The reference accepts trailing non-hex
        // garbage; we do not. Extra hex digits fail everywhere.
        {
            let f = good(&fresh_id("a"));
            let s = sig_of(&f);
            with_sig(&f, &format!("{s}zz"))
        },
        {
            let f = good(&fresh_id("a"));
            let s = sig_of(&f);
            with_sig(&f, &format!("{s}ab"))
        },
        // Signed with another key.
        frame(
            &key("other"),
            &fresh_id("a"),
            "direct",
            Some("alpha"),
            Some("beta"),
            Some(&json!({"directType": "n"})),
        ),
    ];
    assert_eq!(sig.len(), 64);
    for bad in &cases {
        alpha.send_raw(bad).await;
        let e = protocol_error(&mut rx, DropReason::BadSignature).await;
        assert_eq!(e.kind.as_deref(), Some("alpha"), "{bad}");
        assert_eq!(e.msg_type.as_deref(), Some("direct"), "{bad}");
    }
    // Uppercase hex is the same digest (protocol §0.2: either case).
    let f = good(&fresh_id("upper"));
    let upper = with_sig(&f, &sig_of(&f).to_uppercase());
    alpha.send_raw(&upper).await;
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap()["directData"], 1);
    alpha.assert_quiet().await;
    beta.assert_quiet().await;
}

#[tokio::test]
async fn bad_version_unless_v_is_the_number_one() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;

    for v in [json!(2), json!("1"), json!(null), json!(true), json!(0.5)] {
        let mut body = direct_body(&fresh_id("v"), 1);
        body["v"] = v.clone();
        alpha.send_body(body).await;
        let e = protocol_error(&mut rx, DropReason::BadVersion).await;
        assert_eq!(e.kind.as_deref(), Some("alpha"), "{v}");
    }
    let mut body = direct_body(&fresh_id("v"), 1);
    body.as_object_mut().unwrap().remove("v");
    alpha.send_body(body).await;
    protocol_error(&mut rx, DropReason::BadVersion).await;

    // `1.0` on the wire is the number 1 (and canonicalises as `1`).
    let f = link_test_support::sign_body(&key(S), direct_body(&fresh_id("v"), 7));
    let f = f.replace("\"v\":1", "\"v\":1.0");
    assert!(f.contains("\"v\":1.0"));
    alpha.send_raw(&f).await;
    assert_eq!(beta.recv("direct").await.data().unwrap()["directData"], 7);
    beta.assert_quiet().await;
}

#[tokio::test]
async fn receivers_do_not_depend_on_key_order_or_formatting() {
    let hub = TestHub::shared(S).await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    let id = fresh_id("fmt");
    let f = link_test_support::sign_body(&key(S), direct_body(&id, 3));
    // Re-serialise in a different key order, pretty-printed, with numbers
    // spelled differently: the value is what is signed (protocol §3.3).
    let v: Value = serde_json::from_str(&f).unwrap();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.reverse();
    let mut text = String::from("{\n");
    for (i, k) in keys.iter().enumerate() {
        let sep = if i + 1 == keys.len() { "" } else { "," };
        text.push_str(&format!("  {:?} : {}{sep}\n", k, v[k.as_str()]));
    }
    text.push('}');
    let text = text.replace("\"directData\":3", "\"directData\":3e0");
    alpha.send_raw(&text).await;
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap()["directData"], 3);
    assert_eq!(d.from(), Some("alpha"));
}

#[tokio::test]
async fn replay_window_refuses_stale_and_future_timestamps() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let k = key(S);
    let now = wall_ms();
    let data = json!({"directType": "n"});

    for (ts, sign) in [(now - 301_000, 1.0), (now + 301_000, -1.0)] {
        let f = frame_at(
            &k,
            &fresh_id("w"),
            ts,
            "direct",
            Some("alpha"),
            Some("beta"),
            Some(&data),
        );
        alpha.send_raw(&f).await;
        let e = protocol_error(&mut rx, DropReason::ReplayWindow).await;
        let skew = e.skew.expect("skew attached");
        assert!(skew * sign > 300_000.0, "skew {skew}");
        assert_eq!(e.kind.as_deref(), Some("alpha"));
    }
    // A non-number ts counts as 0: always outside the window.
    let mut body = direct_body(&fresh_id("w"), 1);
    body["ts"] = json!("now");
    alpha.send_body(body).await;
    protocol_error(&mut rx, DropReason::ReplayWindow).await;
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn replay_id_refuses_a_resent_frame_but_not_rpc_responses() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    let k = key(S);

    let f = link_test_support::sign_body(&k, direct_body(&fresh_id("r"), 1));
    alpha.send_raw(&f).await;
    beta.recv("direct").await;
    alpha.send_raw(&f).await;
    let e = protocol_error(&mut rx, DropReason::ReplayId).await;
    assert_eq!(e.kind.as_deref(), Some("alpha"));
    assert_eq!(e.msg_type.as_deref(), Some("direct"));

    // rpc.response is exempt from the id check: both copies are relayed.
    let id = fresh_id("resp");
    let resp = frame(
        &k,
        &id,
        "rpc.response",
        Some("beta"),
        Some("alpha"),
        Some(&json!({"ok": true, "result": 1})),
    );
    beta.send_raw(&resp).await;
    beta.send_raw(&resp).await;
    for _ in 0..2 {
        let r = alpha.recv("rpc.response").await;
        assert_eq!((r.id(), r.from()), (id.as_str(), Some("beta")));
    }
    // ...but not from the window.
    let old = frame_at(
        &k,
        &id,
        wall_ms() - 400_000,
        "rpc.response",
        Some("beta"),
        Some("alpha"),
        Some(&json!({"ok": true})),
    );
    beta.send_raw(&old).await;
    let e = protocol_error(&mut rx, DropReason::ReplayWindow).await;
    assert_eq!(e.msg_type.as_deref(), Some("rpc.response"));
    alpha.assert_quiet().await;
    beta.assert_quiet().await;
}

#[tokio::test]
async fn replay_window_zero_disables_both_checks() {
    let hub = TestHub::start(
        config()
            .replay_window(std::time::Duration::ZERO)
            .build()
            .unwrap(),
    )
    .await;
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;
    let f = frame_at(
        &key(S),
        "same-id",
        1,
        "direct",
        Some("alpha"),
        Some("beta"),
        Some(&json!({"directType": "old"})),
    );
    alpha.send_raw(&f).await;
    alpha.send_raw(&f).await;
    beta.recv("direct").await;
    beta.recv("direct").await;
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn checks_run_in_spec_order() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let k = key(S);
    let old = wall_ms() - 400_000;

    // Bad signature before bad version.
    let mut body = direct_body(&fresh_id("o"), 1);
    body["v"] = json!(2);
    let f = link_test_support::sign_body(&key("wrong"), body);
    alpha.send_raw(&f).await;
    protocol_error(&mut rx, DropReason::BadSignature).await;
    // Bad version before the window.
    let mut body = direct_body(&fresh_id("o"), 1);
    body["v"] = json!(2);
    body["ts"] = json!(old);
    alpha.send_body(body).await;
    protocol_error(&mut rx, DropReason::BadVersion).await;
    // The window before the id: a seen id with a stale ts is replay-window.
    let id = fresh_id("o");
    alpha
        .send_raw(&link_test_support::sign_body(&k, direct_body(&id, 1)))
        .await;
    let mut body = direct_body(&id, 1);
    body["ts"] = json!(old);
    alpha.send_body(body).await;
    protocol_error(&mut rx, DropReason::ReplayWindow).await;
    // Size before JSON, JSON before id, id before length.
    let mut raw = hub.raw_peer().await;
    raw.send_text(format!("{{\"id\":\"{}\"", "x".repeat(300)))
        .await;
    protocol_error(&mut rx, DropReason::ParseError).await;
    raw.send_text(format!("{{\"id\":\"{}\"}}", "x".repeat(300)))
        .await;
    protocol_error(&mut rx, DropReason::OversizedId).await;
    // ...and all of them before the pre-hello gate.
    raw.send_text("{\"type\":\"direct\"}").await;
    protocol_error(&mut rx, DropReason::MissingId).await;
    alpha.assert_quiet().await;
}

#[tokio::test]
async fn pre_hello_message_is_dropped_and_the_socket_stays_open() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut beta = hub.peer("beta", S).await;
    let k = key(S);
    let mut raw = hub.raw_peer().await;

    for t in ["direct", "rpc.request", "status.update", "weird"] {
        raw.send_text(frame(
            &k,
            &fresh_id("pre"),
            t,
            Some("alpha"),
            Some("beta"),
            Some(&json!({"directType": "x", "rpcType": "link.health"})),
        ))
        .await;
        let e = protocol_error(&mut rx, DropReason::PreHelloMessage).await;
        assert_eq!(e.msg_type.as_deref(), Some(t));
        assert_eq!(e.kind, None);
    }
    // Still open, and the hub sent nothing before the hello.ack.
    raw.send_text(link_test_support::hello_frame(&k, &fresh_id("h"), "alpha"))
        .await;
    let first = raw.next_text().await;
    assert_eq!(
        link_test_support::parse(&first).0.msg_type(),
        Some("hello.ack")
    );
    beta.assert_quiet().await;
}

#[tokio::test]
async fn unknown_and_hub_only_types_are_ignored_silently() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut alpha = hub.peer("alpha", S).await;
    let mut beta = hub.peer("beta", S).await;

    for t in [
        json!("nope"),
        json!("hello.ack"),
        json!("peers.update"),
        json!("status.snapshot"),
        json!(5),
        json!(null),
    ] {
        alpha
            .send_body(
                json!({"v": 1, "id": fresh_id("u"), "ts": wall_ms(), "type": t,
                              "from": "alpha", "to": "beta", "data": {"peers": []}}),
            )
            .await;
    }
    let mut body = direct_body(&fresh_id("u"), 1);
    body.as_object_mut().unwrap().remove("type");
    alpha.send_body(body).await;
    alpha.assert_quiet().await;
    beta.assert_quiet().await;
    // No protocol error for any of them: everything up to the barrier's
    // server RPC event is a plain `message`.
    loop {
        let e = next_event(&mut rx, |_| true).await;
        match &*e {
            HubEvent::ProtocolError { error, .. } => panic!("unexpected {error}"),
            HubEvent::RpcServer { .. } => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn binary_frames_holding_json_are_accepted() {
    let hub = TestHub::shared(S).await;
    let mut rx = hub.hub.events();
    let mut beta = hub.peer("beta", S).await;
    let k = key(S);
    let mut raw = hub.raw_peer().await;

    raw.send_binary(link_test_support::hello_frame(&k, &fresh_id("h"), "alpha").into_bytes())
        .await;
    raw.recv(&k, "hello.ack").await;
    let d = frame(
        &k,
        &fresh_id("d"),
        "direct",
        Some("alpha"),
        Some("beta"),
        Some(&json!({"directType": "bin"})),
    );
    raw.send_binary(d.into_bytes()).await;
    let got = beta.recv("direct").await;
    assert_eq!(got.data().unwrap()["directType"], "bin");
    // Bytes that are not UTF-8 are decoded lossily, then fail as JSON.
    raw.send_binary(vec![b'{', 0xff, 0xfe, b'}']).await;
    let e = protocol_error(&mut rx, DropReason::ParseError).await;
    assert_eq!(e.kind.as_deref(), Some("alpha"));
    beta.assert_quiet().await;
}
