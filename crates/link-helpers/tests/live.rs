//! Helpers against the real in-process hub on 127.0.0.1:0. Every wait is
//! on an event, a snapshot or a result; timeouts only guard against hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use link_client::{CancellationToken, ClientConfig, HandlerError, LinkClient};
use link_helpers::recorder::{EventRecorder, Recorded, RecorderOptions, Snapshot};
use link_helpers::rpc::{
    RetryError, RetryPolicy, SafePublisher, SafeSend, WaitError, rpc_with_retry, wait_for_peer,
};
use link_helpers::secrets::{SecretChange, SecretsError, load_secrets, watch_secrets};
use link_test_support::{TestHub, WAIT, guard, ready};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The shared secret of every test hub here.
const SECRET: &str = "s";

// ----- wait_for_peer -------------------------------------------------------

#[tokio::test]
async fn wait_for_peer_resolves_on_the_join_event() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = ready(hub.client("alpha")).await;
    let waiting = {
        let alpha = alpha.clone();
        tokio::spawn(async move { wait_for_peer(&alpha, "beta", None, true).await })
    };
    let _beta = ready(hub.client("beta")).await;
    let peer = guard(waiting).await.unwrap().unwrap();
    assert_eq!(peer.kind, "beta");
    assert!(peer.connected);

    // Already there: resolves at once.
    let again = wait_for_peer(&alpha, "beta", Some(WAIT), true)
        .await
        .unwrap();
    assert_eq!(again.kind, "beta");
}

#[tokio::test]
async fn wait_for_peer_ends_when_the_link_stops_or_times_out() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = ready(hub.client("alpha")).await;
    let e = wait_for_peer(&alpha, "ghost", Some(Duration::from_millis(50)), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "WAIT_TIMEOUT");

    let waiting = {
        let alpha = alpha.clone();
        tokio::spawn(async move { wait_for_peer(&alpha, "ghost", None, false).await })
    };
    tokio::task::yield_now().await;
    alpha.stop().await;
    let e = guard(waiting).await.unwrap().unwrap_err();
    assert_eq!(
        e,
        WaitError::Stopped {
            kind: "ghost".into()
        }
    );
    // Stopped before the call.
    assert_eq!(
        wait_for_peer(&alpha, "ghost", None, false)
            .await
            .unwrap_err()
            .code(),
        "WAIT_STOPPED"
    );
    let disabled = LinkClient::new(ClientConfig::builder().build().unwrap());
    assert_eq!(
        wait_for_peer(&disabled, "x", None, false).await,
        Err(WaitError::Disabled)
    );
}

// ----- rpc_with_retry --------------------------------------------------------

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .attempts(attempts)
        .base_delay(Duration::from_millis(1))
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

#[tokio::test]
async fn remote_errors_are_not_retried() {
    let hub = TestHub::shared(SECRET).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let _beta = ready(hub.client("beta").handler("lookup", move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err(HandlerError::new("ORDER_NOT_FOUND", "no such order")) }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let e = rpc_with_retry(&alpha, "beta", "lookup", None, &policy(5), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ORDER_NOT_FOUND");
    assert!(matches!(e, RetryError::Failed { attempts: 1, .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried_and_succeeds() {
    let hub = TestHub::shared(SECRET).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let _beta = ready(hub.client("beta").handler("flaky", move |call| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                // The first call never answers; the caller's timeout cancels it.
                call.cancel.cancelled().await;
            }
            Ok(json!({ "attempt": n + 1 }))
        }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let v = rpc_with_retry(&alpha, "beta", "flaky", None, &policy(3), None)
        .await
        .unwrap();
    assert_eq!(v, json!({"attempt": 2}));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cancelling_aborts_the_call_in_flight() {
    let hub = TestHub::shared(SECRET).await;
    let started = Arc::new(Notify::new());
    let cancelled = Arc::new(Notify::new());
    let (s, c) = (started.clone(), cancelled.clone());
    let _beta = ready(hub.client("beta").handler("hang", move |call| {
        let (s, c) = (s.clone(), c.clone());
        async move {
            s.notify_one();
            call.cancel.cancelled().await;
            c.notify_one();
            Ok(Value::Null)
        }
    }))
    .await;
    let alpha = ready(hub.client("alpha")).await;
    let token = CancellationToken::new();
    let call = {
        let (alpha, token) = (alpha.clone(), token.clone());
        let p = RetryPolicy::builder().attempts(3).build().unwrap();
        tokio::spawn(
            async move { rpc_with_retry(&alpha, "beta", "hang", None, &p, Some(token)).await },
        )
    };
    guard(started.notified()).await;
    token.cancel();
    let e = guard(call).await.unwrap().unwrap_err();
    assert_eq!(e.code(), "RPC_ABORT");
    assert_eq!(e.attempts(), 1);
    // The remote handler saw the rpc.cancel.
    guard(cancelled.notified()).await;
}

// ----- SafePublisher / SafeSend ---------------------------------------------------

#[tokio::test]
async fn safe_wrappers_deliver_when_ready() {
    let hub = TestHub::shared(SECRET).await;
    let mut hub_events = hub.hub.events();
    let beta = ready(hub.client("beta")).await;
    let mut news = beta.subscribe("news").unwrap();
    let mut directs = beta.directs();
    let alpha = ready(hub.client("alpha")).await;
    guard(async {
        while !matches!(&*hub_events.recv().await.unwrap(),
            link_hub::HubEvent::TopicSubscribe { topic, .. } if topic == "news")
        {}
    })
    .await;
    assert!(SafePublisher::new(alpha.clone()).publish("news", json!({"n": 1})));
    assert!(SafeSend::new(alpha.clone()).send_typed("beta", "ping", &[1, 2]));
    let msg = guard(news.recv()).await.unwrap();
    assert_eq!(msg.payload(), Some(&json!({"n": 1})));
    let d = guard(directs.recv()).await.unwrap();
    assert_eq!(
        (d.msg_type.as_str(), d.data()),
        ("ping", Some(&json!([1, 2])))
    );
    alpha.stop().await;
    assert!(!SafePublisher::new(alpha).publish("news", json!(2)));
}

// ----- secrets ------------------------------------------------------------------

type Store = Arc<Mutex<HashMap<String, Value>>>;

/// A vault peer answering `secs.get` from `store`; paths under `sec/slow/`
/// never answer.
async fn vault(hub: &TestHub, store: Store) -> LinkClient {
    ready(hub.client("vault").handler("secs.get", move |call| {
        let store = store.clone();
        async move {
            let path = call
                .data
                .as_ref()
                .and_then(|d| d["path"].as_str())
                .unwrap_or_default()
                .to_owned();
            if path.starts_with("sec/slow/") {
                call.cancel.cancelled().await;
            }
            if path.starts_with("sec/denied/") {
                return Err(HandlerError::new("FORBIDDEN", "not for you"));
            }
            let value = store.lock().unwrap().get(&path).cloned();
            Ok(match value {
                Some(v) => json!({ "value": v }),
                None => json!({}),
            })
        }
    }))
    .await
}

fn store(entries: &[(&str, Value)]) -> Store {
    Arc::new(Mutex::new(
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    ))
}

#[tokio::test]
async fn load_secrets_fetches_all_and_names_the_bad_one() {
    let hub = TestHub::shared(SECRET).await;
    let _vault = vault(
        &hub,
        store(&[
            ("sec/billing/db", json!("hunter2")),
            ("sec/billing/api", json!("k-1")),
            ("sec/billing/port", json!(5432)),
        ]),
    )
    .await;
    let app = ready(hub.client("app")).await;

    let s = load_secrets(
        &app,
        [("DB", "sec/billing/db"), ("API", "sec/billing/api")],
        "vault",
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        (s.get("DB"), s.get("API"), s.len()),
        (Some("hunter2"), Some("k-1"), 2)
    );

    let load = |name: &'static str, path: &'static str| {
        let app = app.clone();
        async move {
            load_secrets(
                &app,
                [("DB", "sec/billing/db"), (name, path)],
                "vault",
                WAIT,
            )
            .await
            .unwrap_err()
        }
    };
    assert_eq!(
        load("GONE", "sec/billing/gone").await,
        SecretsError::Missing {
            name: "GONE".into(),
            path: "sec/billing/gone".into()
        }
    );
    assert_eq!(
        load("PORT", "sec/billing/port").await,
        SecretsError::WrongType {
            name: "PORT".into(),
            path: "sec/billing/port".into(),
            found: "number"
        }
    );
    match load("NOPE", "sec/denied/x").await {
        SecretsError::Fetch { name, error, .. } => {
            assert_eq!((name.as_str(), error.code()), ("NOPE", "FORBIDDEN"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(load("BAD", "nope").await.code(), "SECRET_INVALID_PATH");
}

#[tokio::test]
async fn one_deadline_covers_the_whole_load() {
    let hub = TestHub::shared(SECRET).await;
    let _vault = vault(&hub, store(&[("sec/billing/db", json!("x"))])).await;
    let app = ready(hub.client("app")).await;
    let e = load_secrets(
        &app,
        [("DB", "sec/billing/db"), ("SLOW", "sec/slow/one")],
        "vault",
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        SecretsError::Deadline {
            deadline: Duration::from_millis(300),
            pending: vec!["SLOW".into()]
        }
    );
    assert_eq!(e.code(), "SECRET_DEADLINE");
}

#[tokio::test]
async fn watched_secrets_follow_rotation_and_deletion() {
    let hub = TestHub::shared(SECRET).await;
    let st = store(&[
        ("sec/billing/db", json!("v1")),
        ("sec/other/key", json!("k")),
    ]);
    let vault = vault(&hub, st.clone()).await;
    let app = ready(hub.client("app")).await;
    let mut watch = watch_secrets(
        &app,
        [("DB", "sec/billing/db"), ("KEY", "sec/other/key")],
        "vault",
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(watch.get("DB").as_deref(), Some("v1"));

    // Unrelated paths and malformed payloads are ignored.
    vault
        .publish(
            "secs.changed.billing",
            json!({"op": "set", "path": "sec/billing/unmapped"}),
        )
        .unwrap();
    vault
        .publish("secs.changed.billing", json!("garbage"))
        .unwrap();

    st.lock()
        .unwrap()
        .insert("sec/billing/db".into(), json!("v2"));
    vault
        .publish(
            "secs.changed.billing",
            json!({"op": "set", "path": "sec/billing/db"}),
        )
        .unwrap();
    assert_eq!(
        guard(watch.next_change()).await,
        Some(SecretChange::Updated { name: "DB".into() })
    );
    assert_eq!(watch.get("DB").as_deref(), Some("v2"));

    vault
        .publish(
            "secs.changed.other",
            json!({"op": "del", "path": "sec/other/key"}),
        )
        .unwrap();
    assert_eq!(
        guard(watch.next_change()).await,
        Some(SecretChange::Removed { name: "KEY".into() })
    );
    assert_eq!(watch.get("KEY"), None);
    assert_eq!(watch.snapshot().names().collect::<Vec<_>>(), ["DB"]);

    // A refetch that fails keeps the old value.
    st.lock().unwrap().remove("sec/billing/db");
    vault
        .publish(
            "secs.changed.billing",
            json!({"op": "set", "path": "sec/billing/db"}),
        )
        .unwrap();
    match guard(watch.next_change()).await {
        Some(SecretChange::Failed { name, error }) => {
            assert_eq!(name, "DB");
            assert_eq!(error.code(), "SECRET_MISSING");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(watch.get("DB").as_deref(), Some("v2"));

    // Unwatching unsubscribes from the hub.
    let mut hub_events = hub.hub.events();
    watch.unwatch();
    guard(async {
        let mut gone = std::collections::BTreeSet::new();
        while gone.len() < 2 {
            if let link_hub::HubEvent::TopicUnsubscribe { kind, topic } =
                &*hub_events.recv().await.unwrap()
            {
                assert_eq!(kind, "app");
                gone.insert(topic.clone());
            }
        }
        assert_eq!(
            gone.into_iter().collect::<Vec<_>>(),
            ["secs.changed.billing", "secs.changed.other"]
        );
    })
    .await;
}

// ----- recorder -----------------------------------------------------------------

async fn snapshot_where(
    rx: &mut tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    guard(async {
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
}

#[tokio::test]
async fn recorder_logs_membership_and_traffic_in_order() {
    let hub = TestHub::shared(SECRET).await;
    let alpha = LinkClient::new(hub.client("alpha").build().unwrap());
    let recorder = EventRecorder::new(
        &alpha,
        RecorderOptions::default().capacity(50).heartbeat(None),
    );
    let mut snaps = recorder.subscribe();
    alpha.ready(Some(WAIT)).await.unwrap();
    let up = snapshot_where(&mut snaps, |s| s.ready).await;
    assert_eq!(up.reason, "membership");
    assert_eq!(up.self_kind, "alpha");

    let beta = ready(hub.client("beta").status(|| json!({"state": "busy"}))).await;
    snapshot_where(&mut snaps, |s| s.peers.iter().any(|p| p.kind == "beta")).await;
    beta.send("alpha", "ping", Some(json!(1))).unwrap();
    let _ = alpha
        .rpc("beta", "missing.handler", None)
        .await
        .unwrap_err();
    beta.stop().await;
    let last = snapshot_where(&mut snaps, |s| {
        s.event_log
            .iter()
            .any(|e| matches!(&e.event, Recorded::Leave { peer } if peer == "beta"))
    })
    .await;
    let types: Vec<&str> = last.event_log.iter().map(|e| e.event.type_name()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap();
    assert_eq!(types[0], "hub-up");
    assert!(pos("join") < pos("direct"), "{types:?}");
    assert!(pos("direct") < pos("rpc-fail"), "{types:?}");
    assert!(pos("rpc-fail") < pos("leave"), "{types:?}");
    assert!(types.contains(&"status"), "{types:?}");
    let seqs: Vec<u64> = last.event_log.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let json = serde_json::to_value(&*last).unwrap();
    assert_eq!(json["self"], "alpha");
    assert_eq!(json["eventLog"][0]["type"], "hub-up");
    assert!(json["startedAt"].as_u64().unwrap() <= json["at"].as_u64().unwrap());

    recorder.close();
    snapshot_where(&mut snaps, |s| s.reason == "closed").await;
    alpha.stop().await;
    assert_eq!(
        recorder.events().len(),
        last.event_log.len(),
        "closed: nothing new"
    );
}

// ----- observability ------------------------------------------------------------

#[cfg(feature = "hub")]
mod observability {
    use link_helpers::observability::{Classifier, spawn_client_logger, spawn_hub_logger};
    use tokio::sync::mpsc;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Sends every (level, message) to a channel.
    struct Forward(mpsc::UnboundedSender<(Level, String)>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Forward {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Msg(String);
            impl tracing::field::Visit for Msg {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Msg(String::new());
            e.record(&mut m);
            let _ = self.0.send((*e.metadata().level(), m.0));
        }
    }

    async fn line(rx: &mut mpsc::UnboundedReceiver<(Level, String)>, text: &str) -> Level {
        guard(async {
            loop {
                let (level, msg) = rx.recv().await.unwrap();
                if msg.contains(text) {
                    return level;
                }
            }
        })
        .await
    }

    #[tokio::test]
    async fn loggers_report_membership_at_info() {
        // The default (current-thread) test runtime runs the logger tasks on
        // this thread, so a thread-local subscriber sees them.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _sub =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(Forward(tx)));
        let hub = TestHub::shared(SECRET).await;
        let _hub_log = spawn_hub_logger(&hub.hub, Classifier::default());
        let alpha = ready(hub.client("alpha")).await;
        let client_log = spawn_client_logger(&alpha, Classifier::default());
        let _beta = ready(hub.client("beta")).await;
        assert_eq!(line(&mut rx, "peer beta connected").await, Level::INFO);
        assert_eq!(line(&mut rx, "peer beta joined").await, Level::INFO);
        let _ = alpha.rpc("beta", "nope", None).await;
        assert_eq!(line(&mut rx, "rpc nope to beta").await, Level::DEBUG);
        assert!(!client_log.is_finished());
        client_log.stop();
    }
}
