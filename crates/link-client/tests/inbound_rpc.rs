//! Inbound RPCs (protocol §7, §9, §12): the concurrency cap, the cancel guard
//! (a peer may cancel only its own calls), suppressed answers after a
//! cancel, runtime `handle`/`unhandle`, and error sanitisation. A scripted
//! hub plays the callers, so the test chooses every `from`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use link_client::{HandlerError, LinkClient, LinkEvent};
use link_test_support::{DEMO_SECRET, HubSide, ScriptedHub, WAIT, next_event, started};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

async fn ready_pair(hub: &ScriptedHub, client: LinkClient) -> (LinkClient, HubSide) {
    let mut conn = hub.accept().await;
    conn.handshake(&["topics", "direct"]).await;
    client.ready(Some(WAIT)).await.unwrap();
    (client, conn)
}

/// Sends a request from `from` and returns its id.
async fn request(conn: &mut HubSide, from: &str, rpc_type: &str) -> String {
    conn.send(
        "rpc.request",
        from,
        Some(json!({"rpcType": rpc_type, "rpcData": {"n": 1}})),
    )
    .await
}

/// The next response, which must answer `id`; returns its data.
async fn response(conn: &mut HubSide, id: &str) -> Value {
    let r = conn.expect("rpc.response").await;
    assert_eq!(r.id(), id, "answers in order");
    assert_eq!(r.body()["to"], "alpha");
    r.data().cloned().unwrap()
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn concurrency_cap_answers_overloaded() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (started_tx, mut running) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let r2 = release.clone();
    let client = started(
        hub.client("beta")
            .max_concurrent_rpc(1)
            .handler("hold", move |c| {
                let (tx, release) = (started_tx.clone(), r2.clone());
                async move {
                    tx.send(c.id).unwrap();
                    release.notified().await;
                    Ok(json!("held"))
                }
            }),
    );
    let (client, mut conn) = ready_pair(&hub, client).await;

    let first = request(&mut conn, "alpha", "hold").await;
    assert_eq!(recv(&mut running).await, first);
    let second = request(&mut conn, "alpha", "hold").await;
    assert_eq!(
        response(&mut conn, &second).await,
        json!({"ok": false, "error": "Handler overloaded - too many concurrent RPCs", "code": "RPC_OVERLOADED"})
    );
    assert_eq!(client.health().in_flight_rpc, 1);
    release.notify_one();
    assert_eq!(
        response(&mut conn, &first).await,
        json!({"ok": true, "result": "held"})
    );
    assert_eq!(client.health().in_flight_rpc, 0);
    // The slot is free again.
    let third = request(&mut conn, "alpha", "hold").await;
    assert_eq!(recv(&mut running).await, third);
    release.notify_one();
    assert_eq!(response(&mut conn, &third).await["ok"], true);
}

#[tokio::test]
async fn only_the_caller_can_cancel_and_the_answer_is_suppressed() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let (started_tx, mut running) = mpsc::unbounded_channel();
    let (cancel_tx, mut cancelled) = mpsc::unbounded_channel();
    let client = started(
        hub.client("beta")
            .handler("hold", move |c| {
                let (started, cancelled) = (started_tx.clone(), cancel_tx.clone());
                async move {
                    started.send(c.id.clone()).unwrap();
                    c.cancel.cancelled().await;
                    cancelled.send(c.id).unwrap();
                    // Answering anyway: the client must not send it.
                    Ok(json!("too late"))
                }
            })
            .handler("ping", |_| async { Ok(json!("pong")) }),
    );
    let mut ev = client.events();
    let (client, mut conn) = ready_pair(&hub, client).await;

    let id = request(&mut conn, "alpha", "hold").await;
    assert_eq!(recv(&mut running).await, id);
    // Another peer's cancel for alpha's call is ignored...
    conn.send("rpc.cancel", "mallory", Some(json!({ "id": id })))
        .await;
    // ...and a cancel for an unknown id too.
    conn.send("rpc.cancel", "alpha", Some(json!({"id": "nope"})))
        .await;
    // A later call's answer proves both cancels were processed.
    let probe = request(&mut conn, "alpha", "ping").await;
    assert_eq!(response(&mut conn, &probe).await["result"], "pong");
    assert!(cancelled.try_recv().is_err(), "handler still running");
    assert_eq!(client.health().in_flight_rpc, 1);
    while let Ok(e) = ev.try_recv() {
        assert!(!matches!(&*e, LinkEvent::RpcCancel { .. }), "{e:?}");
    }

    // The caller's own cancel fires the token.
    conn.send("rpc.cancel", "alpha", Some(json!({ "id": id })))
        .await;
    assert_eq!(recv(&mut cancelled).await, id);
    next_event(&mut ev, |e| {
        matches!(e, LinkEvent::RpcCancel { id: i, from, rpc_type } if *i == id && from == "alpha" && rpc_type == "hold")
    })
    .await;
    // The handler returned "too late"; the next answer on the wire is the probe's.
    let probe = request(&mut conn, "alpha", "ping").await;
    assert_eq!(response(&mut conn, &probe).await["result"], "pong");
    assert_eq!(client.health().in_flight_rpc, 0);
}

#[tokio::test]
async fn handle_and_unhandle_at_runtime() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(hub.client("beta"));
    let (client, mut conn) = ready_pair(&hub, client).await;

    assert!(
        client
            .handle("greet", |_| async { Ok(json!("v1")) })
            .is_none()
    );
    assert!(
        client
            .handle("greet", |c| async move {
                Ok(json!(format!("v2 for {}", c.from)))
            })
            .is_some(),
        "returns the handler it replaced"
    );
    let id = request(&mut conn, "alpha", "greet").await;
    assert_eq!(
        response(&mut conn, &id).await,
        json!({"ok": true, "result": "v2 for alpha"})
    );

    assert!(client.unhandle("greet"));
    assert!(!client.unhandle("greet"));
    let id = request(&mut conn, "alpha", "greet").await;
    assert_eq!(
        response(&mut conn, &id).await,
        json!({"ok": false, "error": "Unknown rpcType: greet", "code": "RPC_UNKNOWN_TYPE"})
    );
}

fn failing(hub: &ScriptedHub) -> link_client::ClientConfigBuilder {
    hub.client("beta")
        .handler("plain", |_| async {
            Err(std::io::Error::other("disk on fire").into())
        })
        .handler("exposed", |_| async {
            Err(HandlerError::new("ORDER_NOT_FOUND", "Order not found")
                .with_data(json!({"orderId": 42})))
        })
        .handler("message", |_| async {
            Err(HandlerError::message("shown as is"))
        })
        .handler("panics", |_| async { panic!("kaboom") })
}

#[tokio::test]
async fn handler_errors_are_sanitised_unless_exposed() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(failing(&hub));
    let mut ev = client.events();
    let (_client, mut conn) = ready_pair(&hub, client).await;

    // Exposed errors go out as they are, and are not reported locally.
    let id = request(&mut conn, "alpha", "exposed").await;
    assert_eq!(
        response(&mut conn, &id).await,
        json!({"ok": false, "error": "Order not found", "code": "ORDER_NOT_FOUND", "data": {"orderId": 42}})
    );
    let id = request(&mut conn, "alpha", "message").await;
    assert_eq!(
        response(&mut conn, &id).await,
        json!({"ok": false, "error": "shown as is", "code": "RPC_HANDLER_ERROR"})
    );

    // Anything else is sanitised on the wire and reported with the real text.
    let sanitised =
        json!({"ok": false, "error": "Internal handler error", "code": "RPC_HANDLER_ERROR"});
    let plain = request(&mut conn, "alpha", "plain").await;
    assert_eq!(response(&mut conn, &plain).await, sanitised);
    let e = next_event(&mut ev, |e| matches!(e, LinkEvent::RpcHandlerError { .. })).await;
    assert!(
        matches!(&*e, LinkEvent::RpcHandlerError { rpc_type, from, id, error }
            if rpc_type == "plain" && from == "alpha" && *id == plain && error == "disk on fire"),
        "the first handler error is the plain one: {e:?}"
    );

    // A panicking handler answers like a failing one.
    let id = request(&mut conn, "alpha", "panics").await;
    assert_eq!(response(&mut conn, &id).await, sanitised);
    next_event(
        &mut ev,
        |e| matches!(e, LinkEvent::RpcHandlerError { rpc_type, .. } if rpc_type == "panics"),
    )
    .await;
}

#[tokio::test]
async fn expose_rpc_errors_sends_the_real_message() {
    let hub = ScriptedHub::bind(DEMO_SECRET).await;
    let client = started(failing(&hub).expose_rpc_errors(true));
    let (_client, mut conn) = ready_pair(&hub, client).await;
    let id = request(&mut conn, "alpha", "plain").await;
    assert_eq!(
        response(&mut conn, &id).await,
        json!({"ok": false, "error": "disk on fire", "code": "RPC_HANDLER_ERROR"})
    );
}
