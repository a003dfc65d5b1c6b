//! [`LinkClient`]: the cheap, cloneable handle a service uses to talk on
//! the bus (the reference's `LinkClient`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use link_protocol::codes::msg_type;
use link_protocol::{CanonicalData, Feature, PeerInfo, StatusEntry, validate, wire_safe};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;
use crate::error::{LinkError, NotReadyReason};
use crate::events::{ClientHealth, LinkEvent, RpcOutcome};
use crate::handler::{HandlerResult, RpcCall, RpcHandler};
use crate::inner::{
    Cmd, Inner, KeepAlive, PendingRpc, Phase, Sink, TopicFn, TopicMessage, TopicSubs,
};
use crate::streams::{DirectStream, Subscription, TopicHandler};

/// Capacity of each subscription and direct stream.
const STREAM_CAPACITY: usize = 1024;

/// What `ready()` resolves with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The kind the hub registered.
    pub kind: String,
    /// Features the hub advertises.
    pub features: Vec<String>,
}

/// Per-call RPC options.
#[derive(Clone, Debug, Default)]
pub struct RpcOptions {
    /// Timeout; `None` uses the configured default, `Some(ZERO)` waits forever.
    pub timeout: Option<Duration>,
    /// Cancels the call (and sends `rpc.cancel`) when fired.
    pub cancel: Option<CancellationToken>,
}

/// How [`LinkClient::stop_with`] stops.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StopOptions {
    /// Drain the outbox and wait for pending RPCs first (default true).
    pub drain: bool,
    /// The most the drain may take (default `None`: the configured
    /// `stop_drain`, 5 s unless set).
    pub timeout: Option<Duration>,
}

impl Default for StopOptions {
    fn default() -> Self {
        Self {
            drain: true,
            timeout: None,
        }
    }
}

impl StopOptions {
    /// Close at once, without draining.
    pub fn immediate() -> Self {
        Self {
            drain: false,
            timeout: None,
        }
    }

    /// Drain for at most `timeout`.
    pub fn drain_for(timeout: Duration) -> Self {
        Self {
            drain: true,
            timeout: Some(timeout),
        }
    }
}

/// A handle to one link. Clones share the link, which runs from `start()`
/// (or the first `ready()`) until `stop()`, or until every handle and every
/// stream ([`Subscription`], [`DirectStream`]) is dropped.
#[derive(Clone)]
pub struct LinkClient {
    inner: Arc<Inner>,
    keep_alive: Arc<KeepAlive>,
}

impl std::fmt::Debug for LinkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkClient")
            .field("config", &self.inner.config)
            .field("phase", &self.inner.phase())
            .finish()
    }
}

impl LinkClient {
    /// A client that is not started yet.
    pub fn new(config: ClientConfig) -> Self {
        let inner = Arc::new(Inner::new(config));
        Self {
            keep_alive: Arc::new(KeepAlive(inner.clone())),
            inner,
        }
    }

    /// This client's kind (empty when disabled for lack of one).
    pub fn kind(&self) -> &str {
        self.inner.kind()
    }

    /// True when url, secret or kind was missing: every operation but
    /// `subscribe` fails with `LINK_NOT_READY`.
    pub fn is_disabled(&self) -> bool {
        self.inner.config.is_disabled()
    }

    /// Starts connecting (idempotent; restarts a stopped link). In disabled
    /// mode it only logs a warning. Needs a tokio runtime.
    pub fn start(&self) {
        if self.is_disabled() {
            tracing::warn!("link disabled (url, secret or kind missing): not connecting");
            return;
        }
        let mut cmd = self
            .inner
            .cmd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cmd.as_ref().is_some_and(|c| !c.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *cmd = Some(tx);
        self.inner.core().stopped = false;
        self.inner.set_phase(Phase::Connecting);
        tokio::spawn(crate::driver::run(self.inner.clone(), rx));
    }

    /// Waits until the link is ready (starting it if needed).
    pub async fn ready(&self, timeout: Option<Duration>) -> Result<ReadyInfo, LinkError> {
        if self.is_disabled() {
            return Err(LinkError::NotReady {
                op: "ready",
                reason: NotReadyReason::Disabled,
            });
        }
        if matches!(self.inner.phase(), Phase::Idle) {
            self.start();
        }
        let mut rx = self.inner.phase.subscribe();
        // A rejection is also recorded outside the phase: the phase may
        // already have moved on (to Stopped, or Connecting for a retry) by
        // the time this task looks at it.
        let rejections = self.inner.core().rejections;
        let rejected_since = || {
            let core = self.inner.core();
            (core.rejections != rejections).then(|| core.rejection.clone())
        };
        let wait = async {
            loop {
                let phase = rx.borrow_and_update().clone();
                match phase {
                    Phase::Ready { kind, features } => return Ok(ReadyInfo { kind, features }),
                    Phase::Rejected { reason } => return Err(LinkError::HelloRejected { reason }),
                    Phase::Stopped | Phase::Disabled | Phase::Idle | Phase::Connecting => {}
                }
                if let Some(reason) = rejected_since() {
                    return Err(LinkError::HelloRejected { reason });
                }
                if matches!(phase, Phase::Stopped | Phase::Disabled) {
                    return Err(LinkError::NotReady {
                        op: "ready",
                        reason: NotReadyReason::Stopped,
                    });
                }
                if rx.changed().await.is_err() {
                    return Err(LinkError::NotReady {
                        op: "ready",
                        reason: NotReadyReason::Stopped,
                    });
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| LinkError::ReadyTimeout(t))?,
            None => wait.await,
        }
    }

    /// Graceful stop: drains the outbox and waits for pending RPCs (up to
    /// `stop_drain`), then closes. Idempotent; never fails. The same as
    /// `stop_with(StopOptions::default())`.
    pub async fn stop(&self) {
        self.stop_with(StopOptions::default()).await;
    }

    /// Stops as the reference's `stop({drain, timeoutMs})` does: with
    /// `drain`, the outbox is drained and pending RPCs awaited for at most
    /// `timeout` (default: `stop_drain`), then the link closes; without,
    /// it closes at once (queued messages are dropped, pending RPCs fail
    /// with `RPC_DISCONNECT`). Concurrent calls share one stop, which ends
    /// at the earliest of their deadlines. Never fails.
    pub async fn stop_with(&self, opts: StopOptions) {
        let drain = if opts.drain {
            opts.timeout.unwrap_or(self.inner.config.stop_drain)
        } else {
            Duration::ZERO
        };
        let cmd = self
            .inner
            .cmd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.inner.core().stopped = true;
        let Some(cmd) = cmd else {
            if !self.is_disabled() {
                self.inner.set_phase(Phase::Stopped);
            }
            return;
        };
        let (tx, rx) = oneshot::channel();
        if cmd.send(Cmd::Stop { done: tx, drain }).is_ok() {
            let _ = rx.await;
        }
    }

    /// A socket is open.
    pub fn is_connected(&self) -> bool {
        self.inner.core().connected
    }

    /// The hub URL of the socket open (`None` while connecting, waiting
    /// to reconnect, stopped or disabled). With several URLs, the one the
    /// link failed over to (docs/client.md, *Failover*).
    pub fn connected_url(&self) -> Option<String> {
        self.inner.core().url.clone()
    }

    /// `hello.ack` was received on the current connection.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Features of the last `hello.ack` (`None` before the first).
    pub fn hub_features(&self) -> Option<Vec<String>> {
        self.inner.core().features.clone()
    }

    /// Counters, with the reference's fields.
    pub fn health(&self) -> ClientHealth {
        let (outbox_size, outbox_bytes) = self.inner.outbox.size();
        let core = self.inner.core();
        ClientHealth {
            ready: self.inner.is_ready(),
            stopped: core.stopped,
            verified: core.verified,
            peer_count: core.peers.len(),
            pending_rpc_count: core.pending.len(),
            connected: core.connected,
            last_verified_at: self.inner.last_verified_at(),
            reconnect_attempt: core.reconnect_attempt,
            subscription_count: core.subs.len(),
            buffered_amount: self.inner.outbox.buffered(),
            outbox_size,
            outbox_bytes,
            in_flight_rpc: core.inflight.len(),
        }
    }

    /// Peers of the last `peers.update`.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.core().peers.clone()
    }

    /// Last status of a peer.
    pub fn peer_status(&self, kind: &str) -> Option<StatusEntry> {
        self.inner.core().statuses.get(kind).cloned()
    }

    /// Last status of every peer that sent one.
    pub fn statuses(&self) -> std::collections::HashMap<String, StatusEntry> {
        self.inner.core().statuses.clone()
    }

    /// Where the link stands now.
    pub fn phase(&self) -> Phase {
        self.inner.phase()
    }

    /// Subscribes to link events.
    pub fn events(&self) -> broadcast::Receiver<Arc<LinkEvent>> {
        self.inner.events.subscribe()
    }

    /// Like [`events`](Self::events), plus the `message` firehose: a
    /// [`LinkEvent::Message`] with a copy of every verified frame. Costs a
    /// copy per frame while subscribed; `events()` never carries it.
    pub fn firehose(&self) -> broadcast::Receiver<Arc<LinkEvent>> {
        self.inner.firehose.subscribe()
    }

    /// Waits for the first event matching `pred`, or `None` when `timeout`
    /// elapses first. The listener is registered when this is called, not
    /// when the future is first polled, so an event that happens between
    /// the call and the first `.await` is not missed.
    pub fn wait_for<P>(
        &self,
        mut pred: P,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Option<Arc<LinkEvent>>> + Send + 'static
    where
        P: FnMut(&LinkEvent) -> bool + Send + 'static,
    {
        let mut rx = self.events();
        async move {
            let wait = async {
                loop {
                    match rx.recv().await {
                        Ok(e) if pred(&e) => return Some(e),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, wait).await.ok().flatten(),
                None => wait.await,
            }
        }
    }

    // ----- RPC -----------------------------------------------------------

    /// Calls `rpc_type` on `to` (a kind, or `"server"` for hub RPCs) with
    /// the default timeout. Dropping the future cancels the call.
    pub async fn rpc(
        &self,
        to: &str,
        rpc_type: &str,
        data: Option<Value>,
    ) -> Result<Value, LinkError> {
        self.rpc_with(to, rpc_type, data, RpcOptions::default())
            .await
    }

    /// Typed convenience: serialises the argument and deserialises the result.
    pub async fn rpc_typed<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        to: &str,
        rpc_type: &str,
        data: &Req,
    ) -> Result<Resp, LinkError> {
        let data =
            wire_safe::to_value(data).map_err(|e| LinkError::InvalidArgument(e.to_string()))?;
        let result = self.rpc(to, rpc_type, Some(data)).await?;
        serde_json::from_value(result).map_err(|e| LinkError::Decode(e.to_string()))
    }

    /// Calls with per-call options (timeout, cancellation token).
    pub async fn rpc_with(
        &self,
        to: &str,
        rpc_type: &str,
        data: Option<Value>,
        opts: RpcOptions,
    ) -> Result<Value, LinkError> {
        if to.is_empty() || rpc_type.is_empty() {
            return Err(LinkError::InvalidArgument(
                "rpc needs a non-empty target and rpcType".into(),
            ));
        }
        let call = Call {
            client: self,
            id: self.inner.ids.next_id(),
            to: to.to_owned(),
            rpc_type: rpc_type.to_owned(),
            started: Instant::now(),
        };
        // Every call that gets this far ends with exactly one `rpc.complete`
        // (after its `rpc.timeout`, `rpc.abort` or `rpc.disconnect`).
        if opts
            .cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return call.fail(RpcOutcome::Abort, call.abort_error());
        }
        if self.is_disabled() {
            return call.fail(
                RpcOutcome::NotReady,
                call.not_ready(NotReadyReason::Disabled),
            );
        }
        let payload =
            CanonicalData::new(&link_protocol::messages::rpc_request_value(rpc_type, data));
        let item = self.inner.item(
            Some(call.id.clone()),
            msg_type::RPC_REQUEST,
            Some(call.to.clone()),
            Some(payload),
        );
        let (tx, rx) = oneshot::channel();
        {
            // Checked and queued under the lock the driver holds when a
            // connection ends (see `on_disconnect`): the request is either
            // failed with that connection or never queued on it.
            let mut core = self.inner.core();
            if core.stopped || !self.inner.is_ready() {
                let why = if core.stopped {
                    NotReadyReason::Stopped
                } else if matches!(self.inner.phase(), Phase::Idle) {
                    NotReadyReason::NotStarted
                } else {
                    NotReadyReason::Connecting
                };
                drop(core);
                return call.fail(RpcOutcome::NotReady, call.not_ready(why));
            }
            core.pending.insert(
                call.id.clone(),
                PendingRpc {
                    to: call.to.clone(),
                    tx,
                },
            );
            if let Err(mut e) = self.inner.enqueue(item) {
                core.pending.remove(&call.id);
                drop(core);
                // The reference's BackpressureError names the refused call.
                if let LinkError::Backpressure { rpc_type, id, .. } = &mut e {
                    *rpc_type = Some(call.rpc_type.clone());
                    *id = Some(call.id.clone());
                }
                return call.fail(RpcOutcome::Backpressure, e);
            }
        }
        let mut guard = CancelGuard {
            call: &call,
            armed: true,
        };
        let timeout = match opts.timeout {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => self.inner.config.rpc_timeout,
        };
        let cancel = opts.cancel.unwrap_or_default();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = rx => Some(r),
            () = sleep => None,
            () = cancel.cancelled() => {
                guard.armed = false;
                self.cancel_call(&call.id, &call.to);
                return call.fail(RpcOutcome::Abort, call.abort_error());
            }
        };
        guard.armed = false;
        let result = match outcome {
            None => {
                self.cancel_call(&call.id, &call.to);
                let timeout = timeout.unwrap_or_default();
                let e = LinkError::RpcTimeout {
                    to: call.to.clone(),
                    rpc_type: call.rpc_type.clone(),
                    id: call.id.clone(),
                    timeout,
                };
                return call.fail(RpcOutcome::Timeout, e);
            }
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(LinkError::RpcDisconnect {
                to: call.to.clone(),
                rpc_type: String::new(),
                id: String::new(),
                reason: "link stopped".into(),
            }),
        };
        // Fill in what only the caller knows.
        let result = result.map_err(|e| match e {
            LinkError::RpcRemote(mut r) => {
                r.rpc_type.clone_from(&call.rpc_type);
                r.id.clone_from(&call.id);
                LinkError::RpcRemote(r)
            }
            LinkError::RpcDisconnect { reason, .. } => LinkError::RpcDisconnect {
                to: call.to.clone(),
                rpc_type: call.rpc_type.clone(),
                id: call.id.clone(),
                reason,
            },
            other => other,
        });
        match result {
            Ok(v) => {
                call.complete(RpcOutcome::Ok, None);
                Ok(v)
            }
            Err(e) => {
                let outcome = match &e {
                    LinkError::RpcRemote(_) => RpcOutcome::RemoteError,
                    _ => RpcOutcome::Disconnect,
                };
                call.fail(outcome, e)
            }
        }
    }

    /// Abandons a call: forgets it, removes it from the outbox if still
    /// queued, and sends `rpc.cancel` if the link is ready.
    fn cancel_call(&self, id: &str, to: &str) {
        self.inner.core().pending.remove(id);
        self.inner.outbox.remove_request(id);
        if self.inner.is_ready() {
            let data = CanonicalData::new(&link_protocol::messages::rpc_cancel_value(id));
            let _ = self.inner.enqueue(self.inner.item(
                None,
                msg_type::RPC_CANCEL,
                Some(to.to_owned()),
                Some(data),
            ));
        }
        // A stopping link may be waiting for its last pending call.
        self.inner.drain_progress();
    }

    // ----- handlers ------------------------------------------------------

    /// Registers (or replaces) an RPC handler; returns the previous one.
    pub fn handle<F, Fut>(&self, rpc_type: impl Into<String>, f: F) -> Option<RpcHandler>
    where
        F: Fn(RpcCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
    {
        self.inner
            .core()
            .handlers
            .insert(rpc_type.into(), RpcHandler::new(f))
    }

    /// Removes a handler; true if there was one.
    pub fn unhandle(&self, rpc_type: &str) -> bool {
        self.inner.core().handlers.remove(rpc_type).is_some()
    }

    // ----- fire-and-forget ------------------------------------------------

    fn check_sendable(&self, feature: Feature, op: &'static str) -> Result<(), LinkError> {
        if self.is_disabled() {
            return Err(LinkError::NotReady {
                op,
                reason: NotReadyReason::Disabled,
            });
        }
        if self.inner.core().stopped {
            return Err(LinkError::NotReady {
                op,
                reason: NotReadyReason::Stopped,
            });
        }
        self.check_feature(feature, op)
    }

    /// Fails once the hub's features are known and lack `feature`.
    fn check_feature(&self, feature: Feature, op: &'static str) -> Result<(), LinkError> {
        if self
            .inner
            .core()
            .features
            .as_ref()
            .is_some_and(|f| !f.iter().any(|x| x == feature.as_str()))
        {
            return Err(LinkError::FeatureUnsupported {
                feature: feature.as_str(),
                op,
            });
        }
        Ok(())
    }

    /// Sends a direct message to `to`. Queues while (re)connecting; fails
    /// only when stopped, unsupported, or the outbox is full.
    pub fn send(&self, to: &str, direct_type: &str, data: Option<Value>) -> Result<(), LinkError> {
        if to.is_empty() || direct_type.is_empty() {
            return Err(LinkError::InvalidArgument(
                "send needs a non-empty target and type".into(),
            ));
        }
        self.check_sendable(Feature::Direct, "send")?;
        let payload = CanonicalData::new(&link_protocol::messages::direct_value(direct_type, data));
        self.inner.enqueue(self.inner.item(
            None,
            msg_type::DIRECT,
            Some(to.to_owned()),
            Some(payload),
        ))
    }

    /// Publishes on `topic`. Same queueing rules as [`send`](Self::send).
    pub fn publish(&self, topic: &str, payload: Value) -> Result<(), LinkError> {
        if !validate::is_valid_topic(topic) {
            return Err(LinkError::InvalidArgument(format!(
                "invalid topic {topic:?}"
            )));
        }
        self.check_sendable(Feature::Topics, "publish")?;
        let data = CanonicalData::new(&link_protocol::messages::topic_message_value(
            topic,
            Some(payload),
        ));
        self.inner.enqueue(
            self.inner
                .item(None, msg_type::TOPIC_MESSAGE, None, Some(data)),
        )
    }

    /// Serialises any value and publishes it.
    pub fn publish_typed<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        payload: &T,
    ) -> Result<(), LinkError> {
        let v =
            wire_safe::to_value(payload).map_err(|e| LinkError::InvalidArgument(e.to_string()))?;
        self.publish(topic, v)
    }

    /// Subscribes to `topic`. Several subscriptions to one topic share one
    /// hub subscription; dropping the last one unsubscribes. Subscriptions
    /// are replayed on every reconnect.
    ///
    /// Like the reference, this works in any state: made while the link is
    /// connecting, not started, stopped or disabled, a subscription is kept
    /// and sent to the hub at the next ready (a disabled client keeps it,
    /// and never receives on it). It fails only for an invalid topic, a hub
    /// known to lack `topics`, or a full outbox.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, LinkError> {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let id = self.join_topic(topic, |subs, id| {
            subs.sinks.push(Sink { id, tx, dropped: 0 });
        })?;
        Ok(Subscription::new(
            self.inner.clone(),
            self.keep_alive.clone(),
            topic.to_owned(),
            id,
            rx,
        ))
    }

    /// Calls `handler` for every message of `topic`, like the reference
    /// client's `subscribe(topic, handler)`: several handlers (and
    /// [`subscribe`](Self::subscribe) streams) may share a topic and its one
    /// hub subscription, and dropping the returned [`TopicHandler`] removes
    /// the handler.
    ///
    /// The handler runs on the link's own task, as each message is read,
    /// with the message borrowed: nothing is queued or copied for it, and no
    /// message is dropped for it, so it is the cheapest way to receive. It
    /// also holds up everything behind it on the link while it runs: keep it
    /// short and hand longer work to a task or channel of your own. A handler
    /// that panics is logged (`tracing` error) and stays registered; the
    /// other handlers and streams still get the message.
    ///
    /// ```no_run
    /// # fn demo(link: &link_client::LinkClient) -> Result<(), link_client::LinkError> {
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = seen.clone();
    /// let handler = link.subscribe_with("metrics", move |msg| {
    ///     counter.fetch_add(1, Ordering::Relaxed);
    ///     tracing::debug!(from = %msg.from, "metrics update");
    /// })?;
    /// // ...
    /// drop(handler); // unsubscribes (the topic's last subscriber)
    /// # Ok(()) }
    /// ```
    pub fn subscribe_with<F>(&self, topic: &str, handler: F) -> Result<TopicHandler, LinkError>
    where
        F: Fn(&TopicMessage) + Send + Sync + 'static,
    {
        let handler: TopicFn = Arc::new(handler);
        let id = self.join_topic(topic, |subs, id| subs.add_handler(id, handler))?;
        Ok(TopicHandler::new(
            self.inner.clone(),
            self.keep_alive.clone(),
            topic.to_owned(),
            id,
        ))
    }

    /// Validates `topic`, adds a stream or handler to it with a fresh id
    /// (`add`), and sends `topic.subscribe` when it is the topic's first.
    fn join_topic(
        &self,
        topic: &str,
        add: impl FnOnce(&mut TopicSubs, u64),
    ) -> Result<u64, LinkError> {
        if !validate::is_valid_topic(topic) {
            return Err(LinkError::InvalidArgument(format!(
                "invalid topic {topic:?}"
            )));
        }
        self.check_feature(Feature::Topics, "subscribe")?;
        let id = self.inner.next_sink_id();
        // Decided under the lock `on_ready` takes its topic snapshot under:
        // either that snapshot has this topic or we send it now, not both.
        let send_now = {
            let mut core = self.inner.core();
            let subs = core.subs.entry(topic.to_owned()).or_default();
            let first = subs.is_empty();
            add(subs, id);
            first && self.inner.is_ready()
        };
        if send_now {
            let data = CanonicalData::new(&link_protocol::messages::topic_value(topic));
            let sent = self.inner.enqueue(self.inner.item(
                None,
                msg_type::TOPIC_SUBSCRIBE,
                None,
                Some(data),
            ));
            if let Err(e) = sent {
                // Refused (a full outbox): not subscribed, locally either.
                let mut core = self.inner.core();
                if let Some(subs) = core.subs.get_mut(topic) {
                    subs.remove(id);
                    if subs.is_empty() {
                        core.subs.remove(topic);
                    }
                }
                return Err(e);
            }
        }
        Ok(id)
    }

    /// Removes every subscription and handler this client has on `topic`
    /// (the reference's `unsubscribe(topic)`), and sends `topic.unsubscribe`
    /// if the link is ready. True if there was any. Their
    /// [`Subscription`] streams end (`recv()` returns `None`); dropping
    /// them, or the [`TopicHandler`]s, afterwards is harmless, even after
    /// a new `subscribe` to the same topic. To remove just one, drop it.
    pub fn unsubscribe(&self, topic: &str) -> Result<bool, LinkError> {
        if !validate::is_valid_topic(topic) {
            return Err(LinkError::InvalidArgument(format!(
                "invalid topic {topic:?}"
            )));
        }
        let (had, send_now) = {
            let mut core = self.inner.core();
            let had = core.subs.remove(topic).is_some();
            (had, had && !core.stopped && self.inner.is_ready())
        };
        if send_now {
            let data = CanonicalData::new(&link_protocol::messages::topic_value(topic));
            let _ = self.inner.enqueue(self.inner.item(
                None,
                msg_type::TOPIC_UNSUBSCRIBE,
                None,
                Some(data),
            ));
        }
        Ok(had)
    }

    /// A stream of every direct message this client receives.
    pub fn directs(&self) -> DirectStream {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let id = self.inner.next_sink_id();
        self.inner.core().directs.push(Sink { id, tx, dropped: 0 });
        DirectStream::new(self.keep_alive.clone(), rx)
    }
}

/// One outgoing call, for its events and errors.
struct Call<'a> {
    client: &'a LinkClient,
    id: String,
    to: String,
    rpc_type: String,
    started: Instant,
}

impl Call<'_> {
    fn abort_error(&self) -> LinkError {
        LinkError::RpcAbort {
            to: self.to.clone(),
            rpc_type: self.rpc_type.clone(),
            id: self.id.clone(),
        }
    }

    fn not_ready(&self, reason: NotReadyReason) -> LinkError {
        LinkError::NotReady { op: "rpc", reason }
    }

    /// Emits the call's events (see [`complete`](Self::complete)) and fails
    /// with `e`.
    fn fail<T>(&self, outcome: RpcOutcome, e: LinkError) -> Result<T, LinkError> {
        self.complete(outcome, Some(&e));
        Err(e)
    }

    /// `rpc.timeout`, `rpc.abort` or `rpc.disconnect` for those outcomes,
    /// then `rpc.complete`, as the reference emits them.
    fn complete(&self, outcome: RpcOutcome, error: Option<&LinkError>) {
        let inner = &self.client.inner;
        if !inner.listening() {
            return;
        }
        let (id, to, rpc_type) = (self.id.clone(), self.to.clone(), self.rpc_type.clone());
        match (outcome, error) {
            (RpcOutcome::Timeout, Some(LinkError::RpcTimeout { timeout, .. })) => {
                let (id, to, rpc_type, timeout) =
                    (id.clone(), to.clone(), rpc_type.clone(), *timeout);
                inner.emit(|| LinkEvent::RpcTimeout {
                    id,
                    to,
                    rpc_type,
                    timeout,
                });
            }
            (RpcOutcome::Abort, _) => {
                let (id, to, rpc_type) = (id.clone(), to.clone(), rpc_type.clone());
                inner.emit(|| LinkEvent::RpcAbort { id, to, rpc_type });
            }
            (RpcOutcome::Disconnect, _) => {
                let (id, to, rpc_type) = (id.clone(), to.clone(), rpc_type.clone());
                inner.emit(|| LinkEvent::RpcDisconnect { id, to, rpc_type });
            }
            _ => {}
        }
        let duration = self.started.elapsed();
        let error = error.map(ToString::to_string);
        inner.emit(|| LinkEvent::RpcComplete {
            id,
            to,
            rpc_type,
            outcome,
            duration,
            error,
        });
    }
}

/// Cancels an RPC whose future is dropped mid-flight (an abort, as far as
/// events go).
struct CancelGuard<'a, 'c> {
    call: &'a Call<'c>,
    armed: bool,
}

impl Drop for CancelGuard<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            let call = self.call;
            call.client.cancel_call(&call.id, &call.to);
            call.complete(RpcOutcome::Abort, Some(&call.abort_error()));
        }
    }
}
