//! Connection state machines driven through the in-memory simulator. Each
//! test reads as a transcript of what crossed the virtual wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::time::Duration;

use link_protocol::conn::{
    ClientConn, ClientConnConfig, ClientEvent, ClientState, HubConnEvent, HubConnState, SeqIds,
    UrlOrder,
};
use link_protocol::{ConfigError, Diagnostic, DropReason, HelloAck, ProtocolError, msg_type};
use serde_json::json;
use sim::{KeyMode, Sim, key};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn hub_drops(sim: &Sim) -> Vec<(DropReason, Option<&'static str>)> {
    sim.hub_events
        .iter()
        .filter_map(|e| match e {
            HubConnEvent::ProtocolError(p) => Some((p.reason(), p.detail)),
            _ => None,
        })
        .collect()
}

fn client_drops(sim: &Sim) -> Vec<ProtocolError> {
    sim.client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ProtocolError(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn client_diagnostics(sim: &Sim) -> Vec<Diagnostic> {
    sim.client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Diagnostic(d) => Some(*d),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_reaches_ready_only_on_hello_ack() {
    let mut sim = Sim::new();
    sim.start();
    assert_eq!(
        sim.log,
        [
            "client event: connect attempt=0 endpoint=0",
            "client event: connected",
            "client -> hub: hello",
            "hub event: key-needed alpha",
            "hub event: authenticated alpha",
            "hub -> client: hello.ack",
            "client event: verified",
            "client event: ready alpha [\"topics\", \"direct\"]",
        ]
    );
    assert!(sim.client.is_ready());
    assert_eq!(sim.hub.as_ref().unwrap().kind(), Some("alpha"));
    // The hello carries {kind, name, pid, startedAt} signed with the shared key.
    let hello: serde_json::Value = serde_json::from_str(&sim.client_frames[0]).unwrap();
    assert_eq!(
        hello["data"],
        json!({"kind":"alpha","name":"alpha","pid":4242,"startedAt":sim::T0_MS})
    );
    assert_eq!(hello["from"], "alpha");
    assert_eq!(hello["to"], serde_json::Value::Null);
}

#[test]
fn frames_before_the_ack_are_processed_but_do_not_make_ready() {
    let mut sim = Sim::new();
    sim.hub_acks = false;
    sim.start();
    let frame = sim.hub_frame(msg_type::STATUS_SNAPSHOT, &json!({}));
    sim.inject_to_client(&frame);
    assert_eq!(sim.client.state(), ClientState::Handshaking);
    assert!(sim.lines("client event: message status.snapshot").len() == 1);
    // The diagnostic fires once: verified but never acked.
    sim.advance(secs(5));
    assert!(client_drops(&sim).is_empty());
    assert_eq!(
        client_diagnostics(&sim),
        [Diagnostic::NoAck { verified: true }]
    );
    sim.advance(secs(5));
    assert_eq!(
        client_diagnostics(&sim).len(),
        1,
        "the diagnostic is one-shot"
    );
}

#[test]
fn wrong_secret_gives_bad_signature_at_the_hub_and_no_ack_at_the_client() {
    let mut sim = Sim::new();
    sim.keys.insert("alpha".into(), key("another-secret"));
    sim.start();
    assert_eq!(hub_drops(&sim), [(DropReason::BadSignature, None)]);
    assert_eq!(
        sim.hub.as_ref().unwrap().state(),
        HubConnState::Pending,
        "socket stays open"
    );
    sim.advance(secs(5));
    assert!(client_drops(&sim).is_empty());
    assert_eq!(
        client_diagnostics(&sim),
        [Diagnostic::NoAck { verified: false }]
    );
}

#[test]
fn clock_skew_is_diagnosed() {
    let mut sim = Sim::new();
    sim.clock.hub_skew_ms = 400_000;
    sim.start();
    // The hub refuses the hello (its clock is 400 s ahead)...
    assert_eq!(hub_drops(&sim)[0].0, DropReason::ReplayWindow);
    // ...and a frame from the skewed hub is refused by the client too.
    let frame = sim.hub_frame(msg_type::STATUS_SNAPSHOT, &json!({}));
    sim.inject_to_client(&frame);
    sim.advance(secs(5));
    let drops = client_drops(&sim);
    assert_eq!(drops[0].reason(), DropReason::ReplayWindow);
    assert_eq!(
        client_diagnostics(&sim),
        [Diagnostic::ClockSkew { skew: -400_000.0 }]
    );
}

#[test]
fn rejection_stops_the_client() {
    let mut sim = Sim::new();
    sim.ack = HelloAck {
        ok: false,
        error: Some("not welcome".into()),
        ..HelloAck::parse(None)
    };
    sim.start();
    let tail: Vec<&str> = sim.log.iter().map(String::as_str).skip(6).collect();
    assert_eq!(
        tail,
        [
            "client event: verified",
            "client event: rejected Some(\"not welcome\")",
            "client closes None \"\"",
            "client event: disconnected code=1005 reason=\"\" displaced=false will_reconnect=false",
        ]
    );
    assert_eq!(sim.client.state(), ClientState::Stopped);
    sim.advance(secs(60));
    assert!(
        sim.lines("connect attempt").len() == 1,
        "no reconnect after rejection"
    );
}

#[test]
fn rejection_with_retry_closes_1000_and_reconnects() {
    let mut sim = Sim::with_client(|c| c.reconnect_on_rejection = true);
    sim.ack = HelloAck {
        ok: false,
        error: None,
        ..HelloAck::parse(None)
    };
    sim.start();
    assert_eq!(
        sim.lines("client closes"),
        ["client closes Some(1000) \"hello rejected - will retry\""]
    );
    assert_eq!(
        sim.lines("reconnect in"),
        ["client event: reconnect in 1000ms attempt=1"]
    );
    sim.advance(secs(1));
    assert_eq!(sim.lines("connect attempt").len(), 2);
}

#[test]
fn displacement_closes_4000_and_never_reconnects() {
    let mut sim = Sim::new();
    sim.start();
    let now = sim.clock.hub_now();
    sim.hub.as_mut().unwrap().displace(now);
    sim.run();
    assert_eq!(
        sim.lines("closes").last().copied(),
        Some("hub closes Some(4000) \"replaced by new connection\"")
    );
    let last = sim.client_events.last().unwrap();
    assert!(
        matches!(last, ClientEvent::Disconnected(d) if d.displaced && !d.will_reconnect && d.was_ready)
    );
    assert_eq!(sim.client.state(), ClientState::Stopped);
    // Frames that still arrive on the displaced socket are ignored by the hub.
    let before = sim.hub_events.len();
    sim.inject_to_hub(&sim.client_frames[0].clone());
    assert_eq!(sim.hub_events.len(), before);
    sim.advance(secs(30));
    assert_eq!(sim.lines("connect attempt").len(), 1);
}

#[test]
fn reconnect_backoff_grows_and_resets_on_ready() {
    let mut sim = Sim::with_client(|c| c.reconnect.max_attempts = Some(3));
    sim.keys.clear(); // unknown kind: the hub never authenticates, so close from the hub side
    sim.start();
    for _ in 0..4 {
        let now = sim.clock.hub_now();
        if let Some(hub) = sim.hub.as_mut() {
            hub.close(now, Some(1011), "test");
        }
        sim.run();
        sim.advance(secs(10));
    }
    assert_eq!(
        sim.lines("client event: reconnect"),
        [
            "client event: reconnect in 1000ms attempt=1",
            "client event: reconnect in 1500ms attempt=2",
            "client event: reconnect in 2250ms attempt=3",
            "client event: reconnect-exhausted 3",
        ]
    );
    assert_eq!(sim.client.state(), ClientState::Stopped);

    // After a successful ready the backoff starts over.
    let mut sim = Sim::new();
    sim.start();
    let now = sim.clock.hub_now();
    sim.hub.as_mut().unwrap().close(now, Some(1011), "x");
    sim.run();
    sim.advance(secs(1));
    assert!(sim.client.is_ready());
    let now = sim.clock.hub_now();
    sim.hub.as_mut().unwrap().close(now, Some(1011), "x");
    sim.run();
    assert_eq!(
        sim.lines("reconnect in"),
        ["client event: reconnect in 1000ms attempt=1"; 2]
    );
}

#[test]
fn hello_timeout_closes_1008_then_terminates() {
    let mut sim = Sim::new();
    sim.open_raw_hub_socket();
    sim.advance(Duration::from_millis(9_999));
    assert!(sim.hub_events.is_empty());
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.hub_events, [HubConnEvent::HelloTimeout]);
    assert_eq!(
        sim.lines("hub closes"),
        ["hub closes Some(1008) \"hello timeout\""]
    );
    assert_eq!(sim.hub.as_ref().unwrap().state(), HubConnState::Closing);
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.lines("hub terminates").len(), 1);
    assert!(sim.hub.is_none());
}

#[test]
fn bad_kind_closes_1008_before_any_signature_check() {
    for (kind, detail) in [
        (json!(""), "missing-kind"),
        (json!("server"), "reserved-kind"),
        (json!("a b"), "invalid-kind"),
        (json!("x".repeat(300)), "oversized-kind"),
    ] {
        let mut sim = Sim::new();
        sim.open_raw_hub_socket();
        // Not even signed: the kind check comes first (protocol §4.1 step 5.1).
        let frame = json!({"v":1,"id":"h1","ts":sim::T0_MS,"type":"hello","from":null,"to":null,
                           "data":{"kind":kind},"sig":"00"});
        sim.inject_to_hub(&frame.to_string());
        assert_eq!(hub_drops(&sim), [(DropReason::BadHello, Some(detail))]);
        assert_eq!(
            sim.lines("hub closes"),
            [format!("hub closes Some(1008) {detail:?}")]
        );
    }
}

#[test]
fn pre_hello_frames_are_dropped_and_the_socket_stays_pending() {
    let mut sim = Sim::new();
    sim.open_raw_hub_socket();
    let f = json!({"v":1,"id":"d1","ts":sim::T0_MS,"type":"direct","from":"alpha","to":"beta","sig":"00"});
    sim.inject_to_hub(&f.to_string());
    sim.inject_to_hub("{not json");
    sim.inject_to_hub(r#"{"v":1,"type":"hello"}"#);
    assert_eq!(
        hub_drops(&sim).into_iter().map(|d| d.0).collect::<Vec<_>>(),
        [
            DropReason::PreHelloMessage,
            DropReason::ParseError,
            DropReason::MissingId
        ]
    );
    assert_eq!(sim.hub.as_ref().unwrap().state(), HubConnState::Pending);
}

#[test]
fn unknown_kind_stays_pending_and_may_retry() {
    let mut sim = Sim::new();
    sim.keys.clear();
    sim.start();
    assert_eq!(hub_drops(&sim), [(DropReason::UnknownKind, None)]);
    assert_eq!(sim.hub.as_ref().unwrap().state(), HubConnState::Pending);
    sim.keys.insert("alpha".into(), key("demo-secret"));
    // A second (fresh) hello on the same socket now succeeds.
    let now = sim.clock.client_now();
    let hello = sim
        .client
        .encode(
            now,
            msg_type::HELLO,
            None,
            Some(&link_protocol::CanonicalData::new(&json!({"kind":"alpha"}))),
        )
        .1;
    sim.inject_to_hub(&hello);
    assert!(sim.hub.as_ref().unwrap().is_authenticated());
}

#[test]
fn frames_pipelined_behind_a_hello_are_processed_in_order_once_accepted() {
    let mut sim = Sim::new();
    sim.key_mode = KeyMode::Manual;
    sim.start();
    let now = sim.clock.client_now();
    for n in 0..3 {
        let data = link_protocol::CanonicalData::new(&json!({"directType": "n", "directData": n}));
        let f = sim
            .client
            .encode(now, msg_type::DIRECT, Some("beta"), Some(&data))
            .1;
        sim.inject_to_hub(&f);
    }
    assert!(
        hub_drops(&sim).is_empty(),
        "nothing dropped while the key is looked up"
    );
    sim.resolve_keys();
    let seen: Vec<serde_json::Value> = sim
        .hub_events
        .iter()
        .filter_map(|e| match e {
            HubConnEvent::Message(env) => Some(env.data().unwrap()["directData"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(seen, [json!(0), json!(1), json!(2)]);
    assert!(sim.client.is_ready());
}

#[test]
fn pipelined_frames_after_a_refused_hello_are_pre_hello_drops() {
    let mut sim = Sim::new();
    sim.key_mode = KeyMode::Manual;
    sim.keys.clear();
    sim.start();
    let now = sim.clock.client_now();
    let f = sim
        .client
        .encode(now, msg_type::DIRECT, Some("beta"), None)
        .1;
    sim.inject_to_hub(&f);
    sim.resolve_keys();
    assert_eq!(
        hub_drops(&sim).into_iter().map(|d| d.0).collect::<Vec<_>>(),
        [DropReason::UnknownKind, DropReason::PreHelloMessage]
    );
}

#[test]
fn authenticated_pipeline_reasons() {
    let mut sim = Sim::new();
    sim.start();
    let now = sim.clock.client_now();
    // duplicate hello
    let hello = sim
        .client
        .encode(
            now,
            msg_type::HELLO,
            None,
            Some(&link_protocol::CanonicalData::new(&json!({"kind":"alpha"}))),
        )
        .1;
    sim.inject_to_hub(&hello);
    // replayed frame
    let direct = sim
        .client
        .encode(now, msg_type::DIRECT, Some("beta"), None)
        .1;
    sim.inject_to_hub(&direct);
    sim.inject_to_hub(&direct);
    // bad version, signed correctly
    let mut v2 = link_protocol::Envelope::new(
        &link_protocol::Header {
            id: "v2",
            ts: now.wall_ms,
            msg_type: "direct",
            from: Some("alpha"),
            to: None,
        },
        None,
    )
    .body()
    .clone();
    v2.insert("v".into(), json!(2));
    let v2 = link_protocol::Envelope::from_object(v2)
        .unwrap()
        .encode(&key("demo-secret"));
    sim.inject_to_hub(&v2);
    // tampered
    sim.inject_to_hub(&direct.replace("\"to\":\"beta\"", "\"to\":\"gamma\""));
    // oversize
    sim.inject_to_hub(&" ".repeat(1024 * 1024 + 1));
    // stale ts
    sim.clock.hub_skew_ms = 300_001;
    let late = sim
        .client
        .encode(now, msg_type::DIRECT, Some("beta"), None)
        .1;
    sim.inject_to_hub(&late);
    let reasons: Vec<DropReason> = hub_drops(&sim).into_iter().map(|d| d.0).collect();
    assert_eq!(
        reasons,
        [
            DropReason::DuplicateHello,
            DropReason::ReplayId,
            DropReason::BadVersion,
            DropReason::BadSignature,
            DropReason::Oversize,
            DropReason::ReplayWindow,
        ]
    );
    assert!(
        sim.hub.as_ref().unwrap().is_authenticated(),
        "bad input never closes the socket"
    );
    assert_eq!(sim.lines("hub event: message direct").len(), 1);
}

#[test]
fn a_text_frame_is_read_as_the_same_bytes_in_a_binary_one() {
    // The hub driver hands text frames (UTF-8 the transport has checked) to
    // `handle_text_message` and binary ones to `handle_message`: the same
    // frames get the same verdicts either way.
    let mut seen = Vec::new();
    for as_text in [false, true] {
        let mut sim = Sim::new();
        sim.start();
        let now = sim.clock.client_now();
        let direct = sim
            .client
            .encode(now, msg_type::DIRECT, Some("beta"), None)
            .1;
        let frames = [
            direct.clone(),
            direct.clone(),
            direct.replace("\"to\":\"beta\"", "\"to\":\"gamma\""),
            " ".repeat(1024 * 1024 + 1),
            "{\"id\":".to_owned(),
        ];
        for frame in &frames {
            if as_text {
                sim.inject_text_to_hub(frame);
            } else {
                sim.inject_to_hub(frame);
            }
        }
        assert_eq!(sim.lines("hub event: message direct").len(), 1);
        seen.push(hub_drops(&sim));
    }
    assert_eq!(seen[0], seen[1]);
    let reasons: Vec<DropReason> = seen[1].iter().map(|d| d.0).collect();
    assert_eq!(
        reasons,
        [
            DropReason::ReplayId,
            DropReason::BadSignature,
            DropReason::Oversize,
            DropReason::ParseError,
        ]
    );
}

#[test]
fn captured_hello_cannot_be_replayed_after_its_sender_left() {
    let mut sim = Sim::new();
    sim.start();
    let now = sim.clock.client_now();
    let data = link_protocol::CanonicalData::new(&json!({"directType": "pay", "directData": 100}));
    let direct = sim
        .client
        .encode(now, msg_type::DIRECT, Some("beta"), Some(&data))
        .1;
    sim.inject_to_hub(&direct);
    let captured_hello = sim.client_frames[0].clone();
    // The peer leaves.
    sim.client.stop(now);
    sim.run();
    assert!(sim.hub.is_none());
    // An attacker replays the captured frames on a new socket, inside the window.
    sim.advance(secs(60));
    sim.open_raw_hub_socket();
    sim.hub_events.clear();
    sim.inject_to_hub(&captured_hello);
    sim.inject_to_hub(&direct);
    assert_eq!(
        hub_drops(&sim).into_iter().map(|d| d.0).collect::<Vec<_>>(),
        [DropReason::ReplayId, DropReason::PreHelloMessage]
    );
    assert_eq!(sim.hub.as_ref().unwrap().state(), HubConnState::Pending);
}

#[test]
fn client_keepalive_terminates_on_a_missing_pong_and_reconnects() {
    let mut sim = Sim::new();
    sim.hub_answers_pings = false;
    sim.start();
    sim.advance(secs(30));
    assert_eq!(sim.lines("client -> hub: ping").len(), 1);
    sim.advance(secs(30));
    assert_eq!(client_diagnostics(&sim), [Diagnostic::KeepaliveTimeout]);
    assert!(sim.lines("client terminates").len() == 1);
    assert!(
        sim.client_events.iter().any(
            |e| matches!(e, ClientEvent::Disconnected(d) if d.code == 1006 && d.will_reconnect)
        )
    );
    assert_eq!(sim.client.state(), ClientState::WaitingToReconnect);
}

#[test]
fn client_keepalive_is_quiet_when_pongs_arrive() {
    let mut sim = Sim::new();
    sim.start();
    for _ in 0..5 {
        sim.advance(secs(30));
    }
    assert_eq!(sim.lines("client -> hub: ping").len(), 5);
    assert!(client_drops(&sim).is_empty());
    assert!(client_diagnostics(&sim).is_empty());
    assert!(sim.client.is_ready());
}

#[test]
fn hub_keepalive_terminates_a_silent_peer() {
    let mut sim = Sim::with_client(|c| c.keepalive_interval = None);
    sim.client_answers_pings = false;
    sim.start();
    sim.advance(secs(15));
    assert_eq!(sim.lines("hub -> client: ping").len(), 1);
    sim.advance(secs(15));
    assert!(sim.hub_events.contains(&HubConnEvent::KeepaliveTimeout));
    assert_eq!(sim.lines("hub terminates").len(), 1);
}

#[test]
fn pending_cap_eviction_closes_1008() {
    let mut sim = Sim::new();
    sim.open_raw_hub_socket();
    let now = sim.clock.hub_now();
    sim.hub.as_mut().unwrap().evict(now);
    sim.run();
    assert_eq!(
        sim.lines("hub closes"),
        ["hub closes Some(1008) \"pending cap\""]
    );
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.lines("hub terminates").len(), 1);
}

#[test]
fn stop_closes_without_a_code() {
    let mut sim = Sim::new();
    sim.start();
    let now = sim.clock.client_now();
    sim.client.stop(now);
    sim.run();
    assert_eq!(sim.lines("client closes"), ["client closes None \"\""]);
    assert_eq!(sim.client.state(), ClientState::Stopped);
    assert!(matches!(
        sim.client_events.last(),
        Some(ClientEvent::Disconnected(d)) if d.code == 1005 && !d.will_reconnect
    ));
}

#[test]
fn a_close_the_hub_never_answers_ends_in_terminate() {
    let mut sim = Sim::new();
    sim.hub_answers_close = false;
    sim.ack = HelloAck {
        ok: false,
        error: None,
        ..HelloAck::parse(None)
    };
    sim.start();
    assert_eq!(sim.lines("client closes"), ["client closes None \"\""]);
    assert!(
        sim.client.is_connected(),
        "waiting for the hub's close reply"
    );
    sim.advance(link_protocol::conn::CLOSE_GRACE);
    assert_eq!(sim.lines("client terminates").len(), 1);
    assert_eq!(sim.client.state(), ClientState::Stopped);
}

/// The endpoints dialled so far, in order.
fn dialled(sim: &Sim) -> Vec<usize> {
    sim.client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Connect { endpoint, .. } => Some(*endpoint),
            _ => None,
        })
        .collect()
}

/// The hub closes the ready connection (a hub going away), then the
/// client's backoff runs out.
fn hub_goes_away(sim: &mut Sim) {
    let now = sim.clock.hub_now();
    sim.hub
        .as_mut()
        .unwrap()
        .close(now, Some(1001), "going away");
    sim.run();
    sim.hub = None;
    sim.advance(secs(2));
}

#[test]
fn failover_dials_the_next_endpoint_at_once_after_a_refused_one() {
    let mut sim = Sim::with_client(|c| c.endpoints = 3);
    sim.down.extend([0, 1]);
    sim.start();
    assert!(sim.client.is_ready());
    assert_eq!(dialled(&sim), [0, 1, 2]);
    assert_eq!(sim.client.endpoint(), 2);
    assert!(
        sim.lines("reconnect in").is_empty(),
        "no backoff within a cycle: {:?}",
        sim.log
    );
    assert_eq!(
        sim.lines("connect attempt"),
        [
            "client event: connect attempt=0 endpoint=0",
            "client event: connect attempt=0 endpoint=1",
            "client event: connect attempt=0 endpoint=2",
        ]
    );
}

#[test]
fn failover_pays_the_backoff_once_per_full_cycle() {
    let mut sim = Sim::with_client(|c| {
        c.endpoints = 3;
        c.reconnect.max_attempts = Some(2);
    });
    sim.down.extend([0, 1, 2]);
    sim.start();
    assert_eq!(dialled(&sim), [0, 1, 2]);
    assert_eq!(
        sim.lines("reconnect"),
        ["client event: reconnect in 1000ms attempt=1"]
    );
    assert_eq!(sim.client.state(), ClientState::WaitingToReconnect);
    sim.advance(Duration::from_millis(999));
    assert_eq!(dialled(&sim).len(), 3, "nothing before the delay");
    sim.advance(Duration::from_millis(1));
    // Ordered: the next cycle starts from the first URL again.
    assert_eq!(dialled(&sim), [0, 1, 2, 0, 1, 2]);
    sim.advance(Duration::from_millis(1500));
    assert_eq!(dialled(&sim), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    assert_eq!(
        sim.lines("reconnect"),
        [
            "client event: reconnect in 1000ms attempt=1",
            "client event: reconnect in 1500ms attempt=2",
            "client event: reconnect-exhausted 2",
        ]
    );
    assert_eq!(sim.client.state(), ClientState::Stopped);
}

#[test]
fn failover_after_a_lost_connection_tries_the_others_first_then_prefers_the_primary() {
    let mut sim = Sim::with_client(|c| c.endpoints = 3);
    sim.start();
    assert_eq!((dialled(&sim), sim.client.endpoint()), (vec![0], 0));
    // The primary goes away: the client waits its backoff (a ready link
    // was lost), then moves to the next URL, not straight back to it.
    hub_goes_away(&mut sim);
    assert_eq!(sim.lines("reconnect in").len(), 1);
    assert_eq!(dialled(&sim), [0, 1]);
    assert!(sim.client.is_ready());
    // Losing the secondary, the client goes back to the primary first.
    hub_goes_away(&mut sim);
    assert_eq!(dialled(&sim), [0, 1, 0]);
    assert!(sim.client.is_ready());
    // The primary down for good: losing it again, the client tries the
    // others in order; its turn in that cycle comes last.
    sim.down.insert(0);
    hub_goes_away(&mut sim);
    assert_eq!(dialled(&sim), [0, 1, 0, 1]);
    sim.down.insert(1);
    hub_goes_away(&mut sim);
    // Lost 1: cycle [0, 2, 1]; 0 is refused, 2 is dialled at once.
    assert_eq!(dialled(&sim), [0, 1, 0, 1, 0, 2]);
    assert!(sim.client.is_ready());
    assert_eq!(sim.client.endpoint(), 2);
    assert_eq!(
        sim.lines("reconnect in"),
        ["client event: reconnect in 1000ms attempt=1"; 4],
        "one backoff per lost connection, reset at every ready"
    );
}

#[test]
fn failover_in_random_order_uses_the_injected_random_source() {
    // The simulator's random source always says 0.5: Fisher–Yates then
    // turns [0, 1, 2] into [0, 2, 1].
    let mut sim = Sim::with_client(|c| {
        c.endpoints = 3;
        c.url_order = UrlOrder::Random;
    });
    sim.down.extend([0, 1, 2]);
    sim.start();
    assert_eq!(dialled(&sim), [0, 2, 1]);
    sim.down.clear();
    sim.advance(secs(2));
    assert_eq!(dialled(&sim), [0, 2, 1, 0]);
    assert!(sim.client.is_ready());
}

#[test]
fn a_handshake_that_fails_moves_on_like_a_refused_dial() {
    // The hub closes before hello.ack (e.g. a hub that does not know the
    // key): the link was never ready, so the next endpoint is tried at once.
    let mut sim = Sim::with_client(|c| c.endpoints = 2);
    sim.keys.clear();
    sim.start();
    let now = sim.clock.hub_now();
    sim.hub.as_mut().unwrap().close(now, Some(1008), "unknown");
    sim.run();
    assert_eq!(dialled(&sim), [0, 1]);
    assert!(sim.lines("reconnect in").is_empty());
}

#[test]
fn zero_endpoints_is_a_config_error() {
    let mut config = ClientConnConfig::new("alpha", key("demo-secret")).unwrap();
    config.endpoints = 0;
    let ids = Box::new(SeqIds::new("c"));
    assert!(matches!(
        ClientConn::new(config, ids, Box::new(|| 0.5)),
        Err(ConfigError::InvalidOption {
            option: "endpoints",
            ..
        })
    ));
}
