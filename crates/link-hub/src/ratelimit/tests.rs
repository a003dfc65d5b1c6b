//! Transcripts of the buckets at explicit instants: no clock is read.

use super::*;

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

const PASS: Verdict = Verdict::Pass;
/// A refusal to report.
const FIRST: Verdict = Verdict::Refuse {
    report: true,
    disconnect: false,
};
/// A refusal within a second of the last reported one.
const AGAIN: Verdict = Verdict::Refuse {
    report: false,
    disconnect: false,
};

fn limiter(limits: &RateLimits, kind: &str, t0: Instant) -> PeerLimiter {
    PeerLimiter::new(limits, kind, t0).unwrap()
}

#[test]
fn a_full_bucket_passes_its_burst_then_refills_one_frame_per_interval() {
    let t0 = Instant::now();
    let limits = RateLimits::new().limit(MessageClass::Publish, "10/s,burst=3".parse().unwrap());
    let mut l = limiter(&limits, "a", t0);
    let p = MessageClass::Publish;
    let got: Vec<Verdict> = (0..5).map(|_| l.check(p, t0)).collect();
    assert_eq!(got, [PASS, PASS, PASS, FIRST, AGAIN]);
    // 10/s: one frame earned back every 100 ms, not before.
    assert_eq!(l.check(p, ms(t0, 99)), AGAIN);
    assert_eq!(l.check(p, ms(t0, 100)), PASS);
    // Reported at most once a second, passes in between or not.
    assert_eq!(l.check(p, ms(t0, 100)), AGAIN);
    assert_eq!(l.check(p, ms(t0, 250)), PASS);
    assert_eq!(l.check(p, ms(t0, 250)), AGAIN);
    // 749 ms later the bucket is full again (3), not fuller.
    let got: Vec<Verdict> = (0..4).map(|_| l.check(p, ms(t0, 999))).collect();
    assert_eq!(got, [PASS, PASS, PASS, AGAIN]);
    // 1 s after the last report: reported again.
    assert_eq!(l.check(p, ms(t0, 1000)), FIRST);
    assert_eq!(l.check(p, ms(t0, 1100)), PASS);
    assert_eq!(l.check(p, ms(t0, 1100)), AGAIN);
}

#[test]
fn an_idle_peer_earns_back_its_burst_and_no_more() {
    let t0 = Instant::now();
    let limits = RateLimits::new().limit(MessageClass::Send, "10/s,burst=3".parse().unwrap());
    let mut l = limiter(&limits, "a", t0);
    let s = MessageClass::Send;
    for _ in 0..3 {
        assert_eq!(l.check(s, t0), PASS);
    }
    let later = ms(t0, 60_000);
    let got: Vec<Verdict> = (0..4).map(|_| l.check(s, later)).collect();
    assert_eq!(got, [PASS, PASS, PASS, FIRST]);
}

#[test]
fn classes_have_their_own_buckets_and_an_unlimited_class_always_passes() {
    let t0 = Instant::now();
    let limits = RateLimits::new()
        .limit(MessageClass::Publish, "1/h".parse().unwrap())
        .limit(MessageClass::Rpc, "2/h".parse().unwrap());
    let mut l = limiter(&limits, "a", t0);
    assert_eq!(l.check(MessageClass::Publish, t0), PASS);
    assert_eq!(l.check(MessageClass::Publish, t0), FIRST);
    assert_eq!(l.check(MessageClass::Rpc, t0), PASS);
    assert_eq!(l.check(MessageClass::Rpc, t0), PASS);
    assert_eq!(l.check(MessageClass::Rpc, t0), FIRST);
    for _ in 0..100 {
        assert_eq!(l.check(MessageClass::Status, t0), PASS);
        assert_eq!(l.check(MessageClass::Send, t0), PASS);
    }
    // Within the second: not reported again...
    assert_eq!(l.check(MessageClass::Publish, t0), AGAIN);
    // ...and one hour later a publish passes (1/h).
    assert_eq!(l.check(MessageClass::Publish, ms(t0, 3_600_000)), PASS);
}

#[test]
fn a_kind_entry_overrides_the_default_class_by_class() {
    let t0 = Instant::now();
    let limits = RateLimits::new()
        .limit(MessageClass::Publish, "1/h".parse().unwrap())
        .limit(MessageClass::Rpc, "1/h".parse().unwrap())
        .kind_limit(
            "ingest",
            MessageClass::Publish,
            Some("3/h".parse().unwrap()),
        )
        .unwrap()
        .kind_limit("admin", MessageClass::Rpc, None)
        .unwrap();
    let one = Some(Limit::per_hour(n(1)));
    assert_eq!(limits.for_kind("other"), [one, one, None, None]);
    assert_eq!(
        limits.for_kind("ingest"),
        [one, Some(Limit::per_hour(n(3))), None, None]
    );
    assert_eq!(limits.for_kind("admin"), [None, one, None, None]);

    let mut ingest = limiter(&limits, "ingest", t0);
    let got: Vec<Verdict> = (0..4)
        .map(|_| ingest.check(MessageClass::Publish, t0))
        .collect();
    assert_eq!(got, [PASS, PASS, PASS, FIRST]);
    let mut admin = limiter(&limits, "admin", t0);
    for _ in 0..10 {
        assert_eq!(admin.check(MessageClass::Rpc, t0), PASS);
    }
    assert_eq!(admin.check(MessageClass::Publish, t0), PASS);
    assert_eq!(admin.check(MessageClass::Publish, t0), FIRST);
}

#[test]
fn no_limiter_for_a_kind_without_limits() {
    let t0 = Instant::now();
    assert!(PeerLimiter::new(&RateLimits::new(), "a", t0).is_none());
    let limits = RateLimits::new()
        .kind_limit("ingest", MessageClass::Send, Some("5/s".parse().unwrap()))
        .unwrap();
    assert!(!limits.is_empty());
    assert!(PeerLimiter::new(&limits, "other", t0).is_none());
    assert!(PeerLimiter::new(&limits, "ingest", t0).is_some());
    let lifted = RateLimits::new()
        .kind_limit("ingest", MessageClass::Send, None)
        .unwrap();
    assert!(lifted.is_empty());
}

#[test]
fn disconnect_comes_after_n_refusals_in_a_row_and_a_pass_resets_the_count() {
    let t0 = Instant::now();
    let limits = RateLimits::new()
        .limit(MessageClass::Send, "10/s,burst=1".parse().unwrap())
        .limit(MessageClass::Publish, "1/h".parse().unwrap())
        .disconnect_after(Some(n(3)));
    let mut l = limiter(&limits, "a", t0);
    let (s, p) = (MessageClass::Send, MessageClass::Publish);
    assert_eq!(l.check(s, t0), PASS);
    assert_eq!(l.check(s, t0), FIRST);
    assert_eq!(l.check(s, t0), AGAIN);
    // A frame of another class that passes (a status: unlimited) resets the
    // count.
    assert_eq!(l.check(MessageClass::Status, t0), PASS);
    assert_eq!(l.check(s, t0), AGAIN);
    assert_eq!(l.check(p, t0), PASS);
    // Refusals of different classes count together.
    assert_eq!(l.check(p, t0), FIRST);
    assert_eq!(l.check(s, t0), AGAIN);
    assert_eq!(
        l.check(s, t0),
        Verdict::Refuse {
            report: false,
            disconnect: true
        }
    );
}

#[test]
fn an_instant_before_the_start_counts_as_the_start() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let limits = RateLimits::new().limit(MessageClass::Rpc, "1/s".parse().unwrap());
    let mut l = limiter(&limits, "a", t0);
    let before = t0 - Duration::from_secs(5);
    assert_eq!(l.check(MessageClass::Rpc, before), PASS);
    assert_eq!(l.check(MessageClass::Rpc, before), FIRST);
    assert_eq!(l.check(MessageClass::Rpc, ms(t0, 1000)), PASS);
}

#[test]
fn limits_parse_with_units_and_burst() {
    let parse = |s: &str| s.parse::<Limit>();
    assert_eq!(parse("100/s").unwrap(), Limit::per_second(n(100)));
    assert_eq!(parse("100").unwrap(), Limit::per_second(n(100)));
    assert_eq!(
        parse("600/m,burst=50").unwrap(),
        Limit::per_minute(n(600)).burst(n(50))
    );
    assert_eq!(
        parse(" 2/h , burst=1 ").unwrap(),
        Limit::per_hour(n(2)).burst(n(1))
    );
    assert_eq!(
        parse("600/m").unwrap().interval(),
        Duration::from_millis(100)
    );
    assert_eq!(
        parse("600/m,burst=50").unwrap().to_string(),
        "600/m,burst=50"
    );
    assert_eq!(parse("7").unwrap().to_string(), "7/s,burst=7");
    for bad in [
        "",
        "0",
        "0/s",
        "-1/s",
        "1.5/s",
        "10/d",
        "abc",
        "10/s,burst=0",
        "10/s,burst=",
        "10/s,max=3",
        "off",
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.code(), "RATE_LIMIT_VALUE", "{bad:?}");
    }
}

#[test]
fn settings_name_a_class_and_optionally_a_kind() {
    let limits = RateLimits::new()
        .apply_setting("publish=10/s")
        .unwrap()
        .apply_setting("rpc=5/s,burst=20")
        .unwrap()
        .apply_setting("ingest:publish=1000/s")
        .unwrap()
        .apply_setting("admin:rpc=off")
        .unwrap();
    let ten = Some(Limit::per_second(n(10)));
    let rpc = Some(Limit::per_second(n(5)).burst(n(20)));
    assert_eq!(limits.for_kind("x"), [rpc, ten, None, None]);
    assert_eq!(
        limits.for_kind("ingest"),
        [rpc, Some(Limit::per_second(n(1000))), None, None]
    );
    assert_eq!(limits.for_kind("admin"), [None, ten, None, None]);
    // A later default setting replaces an earlier one; `off` removes it.
    let limits = limits.apply_setting("publish=off").unwrap();
    assert_eq!(limits.for_kind("x"), [rpc, None, None, None]);

    let err = |s: &str| RateLimits::new().apply_setting(s).unwrap_err().code();
    assert_eq!(err("bogus=1/s"), "RATE_LIMIT_CLASS");
    assert_eq!(err("publish"), "RATE_LIMIT_VALUE");
    assert_eq!(err("publish=fast"), "RATE_LIMIT_VALUE");
    assert_eq!(err("bad kind:publish=1/s"), "RATE_LIMIT_KIND");
    assert_eq!(err("server:publish=1/s"), "RATE_LIMIT_KIND");
}

#[test]
fn the_json_table_sets_defaults_kinds_and_the_disconnect_threshold() {
    let limits = RateLimits::from_json(
        r#"{
            "default": {"rpc": "50/s,burst=100", "publish": "200/s", "status": null},
            "kinds": {
                "ingest": {"publish": "5000/s,burst=10000"},
                "admin": {"rpc": "off"}
            },
            "disconnectAfter": 1000
        }"#,
    )
    .unwrap();
    let rpc = Some(Limit::per_second(n(50)).burst(n(100)));
    let publish = Some(Limit::per_second(n(200)));
    assert_eq!(limits.for_kind("x"), [rpc, publish, None, None]);
    assert_eq!(
        limits.for_kind("ingest"),
        [
            rpc,
            Some(Limit::per_second(n(5000)).burst(n(10000))),
            None,
            None
        ]
    );
    assert_eq!(limits.for_kind("admin"), [None, publish, None, None]);
    assert_eq!(limits.disconnect_threshold(), Some(n(1000)));
    assert_eq!(RateLimits::from_json("{}").unwrap(), RateLimits::new());

    let err = |s: &str| RateLimits::from_json(s).unwrap_err();
    assert_eq!(err("[]").code(), "RATE_LIMIT_TABLE");
    assert_eq!(err("{").code(), "RATE_LIMIT_TABLE");
    assert_eq!(err(r#"{"defaults": {}}"#).code(), "RATE_LIMIT_TABLE");
    assert_eq!(
        err(r#"{"default": {"pub": "1/s"}}"#).code(),
        "RATE_LIMIT_CLASS"
    );
    assert_eq!(
        err(r#"{"default": {"rpc": 10}}"#).code(),
        "RATE_LIMIT_TABLE"
    );
    assert_eq!(
        err(r#"{"default": {"rpc": "0/s"}}"#).code(),
        "RATE_LIMIT_VALUE"
    );
    assert_eq!(
        err(r#"{"kinds": {"a b": {"rpc": "1/s"}}}"#).code(),
        "RATE_LIMIT_KIND"
    );
    assert_eq!(err(r#"{"kinds": ["a"]}"#).code(), "RATE_LIMIT_TABLE");
    assert_eq!(err(r#"{"disconnectAfter": 0}"#).code(), "RATE_LIMIT_TABLE");
    assert_eq!(
        err(r#"{"disconnectAfter": "3"}"#).code(),
        "RATE_LIMIT_TABLE"
    );
}

#[test]
fn message_classes_map_from_frame_types() {
    assert_eq!(
        MessageClass::of_type("rpc.request"),
        Some(MessageClass::Rpc)
    );
    assert_eq!(
        MessageClass::of_type("topic.message"),
        Some(MessageClass::Publish)
    );
    assert_eq!(MessageClass::of_type("direct"), Some(MessageClass::Send));
    assert_eq!(
        MessageClass::of_type("status.update"),
        Some(MessageClass::Status)
    );
    for never in [
        "rpc.response",
        "rpc.cancel",
        "topic.subscribe",
        "topic.unsubscribe",
        "hello",
        "x",
    ] {
        assert_eq!(MessageClass::of_type(never), None);
    }
    for c in MessageClass::ALL {
        assert_eq!(c.as_str().parse::<MessageClass>(), Ok(c));
    }
}

#[test]
fn counters_count_per_class() {
    let c = RateLimitCounters::default();
    c.refused(MessageClass::Publish);
    c.refused(MessageClass::Publish);
    c.refused(MessageClass::Rpc);
    c.disconnected();
    let s = c.snapshot();
    assert_eq!(
        (s.rpc, s.publish, s.send, s.status, s.disconnects),
        (1, 2, 0, 0, 1)
    );
    assert_eq!(s.get(MessageClass::Publish), 2);
    assert_eq!(
        s.to_value(),
        serde_json::json!({"rpc":1,"publish":2,"send":0,"status":0,"disconnects":1})
    );
}
