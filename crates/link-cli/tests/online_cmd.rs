//! End-to-end tests of the online subcommands: an in-process hub on
//! 127.0.0.1:0, in-test `LinkClient` peers, and the built `link-cli`
//! binary run for every subcommand, asserting on stdout JSON and exit
//! codes.
//!
//! Every wait is on a process exit, a hub event or a client event, bounded
//! by a hang guard; nothing sleeps to synchronise. A streaming CLI
//! (`subscribe`, `listen`) is known to be in place when the hub reports
//! its subscription or its registration.

// Tests may unwrap; clippy's `allow-unwrap-in-tests` does not reach the
// helper functions of an integration test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;

use link_client::{HandlerError, LinkEvent};
use link_hub::HubEvent;
use link_test_support::{ClosedPort, Done, LinkCli, TestHub, WAIT, finish_cli, next_event, ready};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const SECRET: &str = "online-secret";

/// `link-cli` against a test hub.
trait RunCli {
    /// `link-cli <args>` against this hub, with nothing from the caller's
    /// environment.
    fn cli(&self, args: &[&str]) -> Command;

    /// Runs `link-cli <args>` to the end.
    async fn run(&self, args: &[&str]) -> Done {
        finish_cli(self.cli(args).spawn().unwrap()).await
    }
}

impl RunCli for TestHub {
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = LinkCli::new(env!("CARGO_BIN_EXE_link-cli")).tokio_command();
        cmd.args(args)
            .env("LINK_URL", &self.url)
            .env("LINK_SECRET", SECRET);
        cmd
    }
}

fn subscribed(kind: &'static str, topic: &'static str) -> impl Fn(&HubEvent) -> bool {
    move |e| matches!(e, HubEvent::TopicSubscribe { kind: k, topic: t } if k == kind && t == topic)
}

#[tokio::test]
async fn rpc_prints_the_result_or_the_error_code() {
    let hub = TestHub::shared(SECRET).await;
    let _echo = ready(
        hub.client("echo")
            .handler("echo", |call| async move {
                Ok(json!({"echoed": call.data, "from": call.from}))
            })
            .handler("fail", |_| async {
                Err(HandlerError::new("E_NOPE", "not today"))
            }),
    )
    .await;

    let done = hub
        .run(&[
            "rpc",
            "echo",
            "echo",
            r#"{"x":[1,2.5,"é"]}"#,
            "--kind",
            "ops",
        ])
        .await;
    assert_eq!(
        done.json(),
        json!({"echoed": {"x": [1, 2.5, "é"]}, "from": "ops"})
    );

    // No argument, and an argument on stdin.
    let done = hub.run(&["rpc", "echo", "echo", "--kind", "ops"]).await;
    assert_eq!(done.json(), json!({"echoed": null, "from": "ops"}));
    let mut child = hub
        .cli(&["rpc", "echo", "echo", "-", "--kind", "ops"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"[true]\n").await.unwrap();
    drop(stdin);
    assert_eq!(
        finish_cli(child).await.json(),
        json!({"echoed": [true], "from": "ops"})
    );

    let done = hub.run(&["rpc", "ghost", "echo"]).await;
    assert_eq!(done.code, Some(1));
    assert!(done.stdout.is_empty());
    assert!(
        done.stderr
            .contains("RPC_NO_TARGET: Target not connected: ghost"),
        "{}",
        done.stderr
    );

    let done = hub.run(&["rpc", "echo", "fail"]).await;
    assert_eq!(done.code, Some(1));
    assert!(done.stderr.contains("E_NOPE: not today"), "{}", done.stderr);

    let done = hub.run(&["rpc", "echo", "echo", "{not json"]).await;
    assert_eq!(done.code, Some(2));
    assert!(done.stdout.is_empty());
    assert!(done.stderr.contains("not valid JSON"), "{}", done.stderr);
}

#[tokio::test]
async fn publish_reaches_a_subscriber() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();
    let watcher = ready(hub.client("watcher")).await;
    let mut news = watcher.subscribe("news").unwrap();
    next_event(&mut events, subscribed("watcher", "news")).await;

    let done = hub
        .run(&["publish", "news", r#"{"n":1}"#, "--kind", "pub"])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stdout.is_empty(), "nothing on a pipe: {}", done.stdout);
    let msg = tokio::time::timeout(WAIT, news.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (msg.from.as_str(), msg.payload()),
        ("pub", Some(&json!({"n": 1})))
    );

    for (args, why) in [
        (&["publish", "news", "{"][..], "not valid JSON"),
        (
            &["publish", "bad topic", "1"][..],
            "invalid topic \"bad topic\": the topic has ' ' at character 4",
        ),
        (
            &["publish", "", "1"][..],
            "invalid topic \"\": the topic is empty",
        ),
        (&["publish", "news"][..], "JSON"),
    ] {
        let done = hub.run(args).await;
        assert_eq!(done.code, Some(2), "{args:?}");
        assert!(done.stderr.contains(why), "{args:?}: {}", done.stderr);
    }
}

#[tokio::test]
async fn subscribe_prints_one_line_per_message() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();
    let child = hub
        .cli(&[
            "subscribe",
            "news",
            "alerts",
            "--count",
            "2",
            "--kind",
            "sub",
        ])
        .spawn()
        .unwrap();
    // Subscriptions are sent at ready in no particular order.
    let mut topics = Vec::new();
    while topics.len() < 2 {
        let e = next_event(
            &mut events,
            |e| matches!(e, HubEvent::TopicSubscribe { kind, .. } if kind == "sub"),
        )
        .await;
        if let HubEvent::TopicSubscribe { topic, .. } = &*e {
            topics.push(topic.clone());
        }
    }
    topics.sort();
    assert_eq!(topics, ["alerts", "news"]);

    let publisher = ready(hub.client("pub")).await;
    publisher.publish("news", json!({"n": 1})).unwrap();
    publisher.publish("alerts", json!("fire")).unwrap();

    let lines = finish_cli(child).await.json_lines();
    assert_eq!(
        lines,
        [
            json!({"topic": "news", "from": "pub", "payload": {"n": 1}}),
            json!({"topic": "alerts", "from": "pub", "payload": "fire"}),
        ]
    );
}

#[tokio::test]
async fn send_and_listen() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();

    // `listen` prints what an in-test client sends it.
    let child = hub
        .cli(&["listen", "--kind", "inbox", "--count", "1"])
        .spawn()
        .unwrap();
    next_event(
        &mut events,
        |e| matches!(e, HubEvent::PeerConnect { kind, .. } if kind == "inbox"),
    )
    .await;
    let sender = ready(hub.client("sender")).await;
    sender
        .send("inbox", "greet", Some(json!({"t": "hi"})))
        .unwrap();
    assert_eq!(
        finish_cli(child).await.json(),
        json!({"from": "sender", "type": "greet", "data": {"t": "hi"}})
    );

    // `send` reaches an in-test client.
    let mut directs = sender.directs();
    let done = hub
        .run(&["send", "sender", "ping", "[1,2]", "--kind", "cli"])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stdout.is_empty());
    let msg = tokio::time::timeout(WAIT, directs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (msg.from.as_str(), msg.msg_type.as_str(), msg.data()),
        ("cli", "ping", Some(&json!([1, 2])))
    );

    let done = hub.run(&["send", "sender", "ping", "nope"]).await;
    assert_eq!(done.code, Some(2));
}

#[tokio::test]
async fn peers_status_health_and_topics() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();
    // The observer sees the worker's status, so the hub has stored it.
    let observer = ready(hub.client("observer")).await;
    let status_seen = observer.wait_for(
        |e| matches!(e, LinkEvent::PeerStatus { from, .. } if from == "worker"),
        Some(WAIT),
    );
    let _worker = ready(hub.client("worker").status(|| json!({"load": 0.5}))).await;
    status_seen.await.expect("worker status");
    let _news = observer.subscribe("news").unwrap();
    next_event(&mut events, subscribed("observer", "news")).await;

    let peers = hub.run(&["peers", "--kind", "ops"]).await.json();
    let kinds: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["observer", "worker", "ops"]);
    for p in peers.as_array().unwrap() {
        assert_eq!(p["connected"], true);
        assert!(p["connectedAt"].is_number());
        assert_eq!(p["hello"]["kind"], p["kind"]);
    }

    let status = hub.run(&["status"]).await.json();
    assert_eq!(status["worker"]["status"], json!({"load": 0.5}));
    assert!(status["worker"]["at"].is_number());
    assert_eq!(status.as_object().unwrap().len(), 1, "{status}");

    let health = hub.run(&["health"]).await.json();
    assert_eq!(health["peerCount"], 3);
    assert_eq!(health["topicCount"], 1);
    assert_eq!(health["statusCount"], 1);

    let topics = hub.run(&["topics"]).await.json();
    assert_eq!(
        topics,
        json!({"topics": [{"topic": "news", "subscribers": ["observer"]}]})
    );
    let one = hub.run(&["topics", "news"]).await.json();
    assert_eq!(one, json!({"topic": "news", "subscribers": ["observer"]}));
}

#[tokio::test]
async fn unreachable_hub_and_unusable_options() {
    let hub = TestHub::shared(SECRET).await;
    // A port held with nothing listening refuses connections.
    let closed = ClosedPort::new();
    let done = hub
        .run(&["health", "--url", &closed.url(), "--timeout", "300"])
        .await;
    assert_eq!(done.code, Some(1));
    assert!(done.stderr.contains("CONNECT_IO"), "{}", done.stderr);

    let done = hub
        .run(&["health", "--secret", "wrong", "--timeout", "300"])
        .await;
    assert_eq!(done.code, Some(1));
    assert!(
        done.stderr.contains("LINK_NOT_READY") || done.stderr.contains("HELLO_REJECTED"),
        "{}",
        done.stderr
    );

    let done = finish_cli(
        hub.cli(&["peers"])
            .env_remove("LINK_SECRET")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(done.code, Some(2));
    assert!(done.stderr.contains("no secret"), "{}", done.stderr);

    let done = hub.run(&["subscribe", "ok", "not/ok"]).await;
    assert_eq!(done.code, Some(2));
    assert!(
        done.stderr
            .contains("invalid topic \"not/ok\": the topic has '/' at character 4"),
        "{}",
        done.stderr
    );
    let done = hub.run(&["health", "--url", "http://x"]).await;
    assert_eq!(done.code, Some(2));
}

#[tokio::test]
async fn completions_for_bash() {
    let hub = TestHub::shared(SECRET).await;
    let done = hub.run(&["completions", "bash"]).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    for word in ["link-cli", "subscribe", "publish", "--timeout"] {
        assert!(done.stdout.contains(word), "{word} missing");
    }
    assert_eq!(hub.run(&["completions", "tcsh"]).await.code, Some(2));
}

/// A `--timeout` no test waits for: a command that ends before the hang
/// guard did not wait for it.
const FOREVER_MS: &str = "3600000";

#[tokio::test]
async fn link_kind_from_the_environment_never_displaces_a_service() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();
    let billing = ready(hub.client("billing")).await;
    let displaced = billing.wait_for(
        |e| {
            matches!(
                e,
                LinkEvent::Disconnect {
                    displaced: true,
                    ..
                }
            )
        },
        None,
    );

    // Operator commands ignore LINK_KIND: `peers` joins as link-cli-<pid>.
    let done = finish_cli(
        hub.cli(&["peers"])
            .env("LINK_KIND", "billing")
            .spawn()
            .unwrap(),
    )
    .await;
    let peers = done.json();
    let kinds: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0], "billing");
    assert!(kinds[1].starts_with("link-cli-"), "{kinds:?}");
    for args in [
        &["health"][..],
        &["status"],
        &["topics"],
        &["rpc", "server", "link.health"],
        &["publish", "news", "1"],
        &["send", "billing", "ping"],
    ] {
        let done = finish_cli(hub.cli(args).env("LINK_KIND", "billing").spawn().unwrap()).await;
        assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
    }
    // The CLI left; billing is still the one connected socket of its kind.
    next_event(
        &mut events,
        |e| matches!(e, HubEvent::PeerDisconnect { kind, .. } if kind.starts_with("link-cli-")),
    )
    .await;
    assert!(billing.is_ready());
    assert!(
        tokio::time::timeout(std::time::Duration::ZERO, displaced)
            .await
            .is_err(),
        "billing was displaced"
    );

    // `listen` (and `subscribe`) take their kind from LINK_KIND.
    let child = hub
        .cli(&["listen", "--count", "1"])
        .env("LINK_KIND", "inbox")
        .spawn()
        .unwrap();
    next_event(
        &mut events,
        |e| matches!(e, HubEvent::PeerConnect { kind, .. } if kind == "inbox"),
    )
    .await;
    billing.send("inbox", "hi", None).unwrap();
    assert_eq!(
        finish_cli(child).await.json(),
        json!({"from": "billing", "type": "hi", "data": null})
    );
}

#[tokio::test]
async fn send_checks_that_the_target_is_connected() {
    let hub = TestHub::shared(SECRET).await;
    let done = hub.run(&["send", "nobody", "ping", "{}"]).await;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stdout.is_empty());
    assert!(
        done.stderr
            .contains("SEND_NO_TARGET: no peer of kind nobody is connected; nothing was sent"),
        "{}",
        done.stderr
    );

    // --no-check hands it to the hub anyway.
    let done = hub
        .run(&["send", "nobody", "ping", "{}", "--no-check"])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    // A connected target passes the check (send_and_listen covers delivery).
    let _inbox = ready(hub.client("inbox")).await;
    let done = hub.run(&["send", "inbox", "ping"]).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[tokio::test]
async fn a_failed_connect_ends_the_wait_at_once() {
    let hub = TestHub::shared(SECRET).await;
    // Nothing listening: the first refusal, not --timeout, ends the run.
    let closed = ClosedPort::new();
    let done = hub
        .run(&["health", "--url", &closed.url(), "--timeout", FOREVER_MS])
        .await;
    assert_eq!(done.code, Some(1));
    assert!(
        done.stderr
            .contains("link-cli health: CONNECT_IO: connect to ws://"),
        "{}",
        done.stderr
    );

    // A URL that cannot be dialled.
    let done = hub
        .run(&["peers", "--url", "ws://", "--timeout", FOREVER_MS])
        .await;
    assert_eq!(done.code, Some(2));
    assert!(
        done.stderr
            .contains("link-cli peers: INVALID_URL: cannot connect to ws://"),
        "{}",
        done.stderr
    );

    // A hub that accepts upgrades on /link only: its reason is shown.
    let server = link_hub::HubServer::builder(
        link_hub::HubConfig::builder(link_hub::Secret::shared(SECRET))
            .build()
            .unwrap(),
    )
    .bind("127.0.0.1:0".parse().unwrap())
    .path("/link")
    .build()
    .unwrap();
    server.start().await.unwrap();
    let addr = server.local_addr().unwrap();
    let done = hub
        .run(&[
            "health",
            "--url",
            &format!("ws://{addr}/wrong"),
            "--timeout",
            FOREVER_MS,
        ])
        .await;
    assert_eq!(done.code, Some(1));
    assert!(
        done.stderr
            .contains("WS_HANDSHAKE: WebSocket upgrade at ws://")
            && done
                .stderr
                .contains("HTTP 400 Bad Request: bad websocket path"),
        "{}",
        done.stderr
    );
    let done = hub
        .run(&["health", "--url", &format!("ws://{addr}/link")])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn subscribe_exits_when_a_restarted_hub_never_acknowledges() {
    let hub = TestHub::shared(SECRET).await;
    let mut events = hub.hub.events();
    let child = hub
        .cli(&["subscribe", "news", "--kind", "sub", "--timeout", "1000"])
        .spawn()
        .unwrap();
    next_event(&mut events, subscribed("sub", "news")).await;

    // The hub comes back on the same port with another secret: every frame
    // of the CLI is now `bad-signature`, and no hello.ack comes.
    let port = hub.kill().await;
    let config = link_hub::HubConfig::builder(link_hub::Secret::shared("another-secret"))
        .build()
        .unwrap();
    let (_restarted, mut events) = TestHub::builder(config).on(port).start_with_events().await;
    next_event(&mut events, |e| matches!(e, HubEvent::ProtocolError { .. })).await;

    let done = finish_cli(child).await;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stdout.is_empty());
    assert!(
        done.stderr.contains(
            "LINK_NOT_READY: reconnected, but not acknowledged by the hub within 1000 ms: \
             wrong secret or hash?"
        ),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn several_urls_fail_over_from_repeated_flags_or_a_comma_separated_link_url() {
    let hub = TestHub::shared(SECRET).await;
    let (dead, other_dead) = (ClosedPort::new(), ClosedPort::new());

    // LINK_URL with a dead hub first: the command reaches the second.
    let link_url = format!("{}, {}", dead.url(), hub.url);
    let done = finish_cli(
        hub.cli(&["health", "--timeout", FOREVER_MS])
            .env("LINK_URL", &link_url)
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.json().is_object());

    // --url repeated (it replaces LINK_URL), in random order.
    let done = hub
        .run(&[
            "health",
            "--url",
            &dead.url(),
            "--url",
            &hub.url,
            "--url-order",
            "random",
            "--timeout",
            FOREVER_MS,
        ])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    // Every URL dead: the run ends after one cycle, naming each failure.
    let done = hub
        .run(&[
            "health",
            "--url",
            &dead.url(),
            "--url",
            &other_dead.url(),
            "--timeout",
            FOREVER_MS,
        ])
        .await;
    assert_eq!(done.code, Some(1));
    for url in [dead.url(), other_dead.url()] {
        assert!(
            done.stderr
                .contains(&format!("CONNECT_IO: connect to {url} failed")),
            "{}",
            done.stderr
        );
    }

    // One bad URL in the list is unusable input.
    let done = hub
        .run(&["health", "--url", &format!("{},http://x", hub.url)])
        .await;
    assert_eq!(done.code, Some(2));
    assert!(done.stderr.contains("\"http://x\""), "{}", done.stderr);
    let done = hub.run(&["health", "--url-order", "round-robin"]).await;
    assert_eq!(done.code, Some(2));
}
