//! First end-to-end checks of the hub over real sockets on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_test_support::TestHub;
use serde_json::json;

#[tokio::test]
async fn two_peers_rpc_publish_direct() {
    let hub = TestHub::shared("demo-secret").await;
    let mut alpha = hub.peer("alpha", "demo-secret").await;
    assert_eq!(alpha.features, ["topics", "direct"]);
    let mut beta = hub.peer("beta", "demo-secret").await;

    // RPC relay keeps the id and sets the trusted from.
    let data = link_protocol::messages::rpc_request_value("echo", Some(json!({"x": 1})));
    let id = alpha.send("rpc.request", Some("beta"), Some(data)).await;
    let req = beta.recv("rpc.request").await;
    assert_eq!(req.id(), id);
    assert_eq!(req.from(), Some("alpha"));
    assert_eq!(
        req.data().unwrap(),
        &json!({"rpcType": "echo", "rpcData": {"x": 1}})
    );
    beta.send_id(
        &id,
        "rpc.response",
        Some("alpha"),
        Some(json!({"ok": true, "result": 7})),
    )
    .await;
    let resp = alpha.recv("rpc.response").await;
    assert_eq!((resp.id(), resp.from()), (id.as_str(), Some("beta")));
    assert_eq!(resp.data().unwrap(), &json!({"ok": true, "result": 7}));

    // Topics.
    beta.subscribe("news").await;
    alpha
        .send(
            "topic.message",
            None,
            Some(json!({"topic": "news", "payload": {"h": 1}})),
        )
        .await;
    let m = beta.recv("topic.message").await;
    assert_eq!(m.from(), Some("alpha"));
    assert_eq!(
        m.data().unwrap(),
        &json!({"topic": "news", "payload": {"h": 1}})
    );

    // Direct.
    alpha
        .send("direct", Some("beta"), Some(json!({"directType": "ping"})))
        .await;
    let d = beta.recv("direct").await;
    assert_eq!(d.data().unwrap(), &json!({"directType": "ping"}));

    // Hub errors.
    let r = alpha.rpc("ghost", "x", None).await;
    assert_eq!(
        r.data().unwrap(),
        &json!({"ok": false, "error": "Target not connected: ghost", "code": "RPC_NO_TARGET"})
    );
    let h = alpha.rpc("server", "link.health", None).await;
    assert_eq!(h.data().unwrap()["result"]["peerCount"], 2);
    assert_eq!(h.data().unwrap()["result"]["serverRpcInFlight"], 1);
}

#[tokio::test]
async fn sockets_attached_after_stop_are_closed_1001() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let hub = TestHub::shared("demo-secret").await;
    hub.hub.stop().await;
    let mut ws = hub.raw().await;
    let msg = tokio::time::timeout(link_test_support::WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}")
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "hub stopped")
    );
}
