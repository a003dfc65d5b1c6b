//! Where a verified message goes: statuses to every other peer, RPCs and
//! their answers and cancels to their target, topic messages to the
//! topic's subscribers in subscription order, direct messages to their
//! target (protocol §6.1, §7, §9). Relayed `data` is shared,
//! not copied: every recipient's item points at one canonical text.

use std::sync::Arc;

use link_protocol::codes::rpc_error_text;
use link_protocol::conn::Now;
use link_protocol::messages::{self, Message as Msg};
use link_protocol::{
    CanonicalData, DropReason, Envelope, ProtocolError, RpcErrorCode, RpcResponse, SERVER,
    StatusEntry, msg_type, validate,
};
use serde_json::Value;

use super::{ConnId, Routing};
use crate::events::HubEvent;
use crate::outbox::{OutItem, PrefixCell, Push};

impl Routing {
    /// A verified message from `conn`, which authenticated as `kind`. With
    /// ACL hooks set it may wait for a verdict first (see `verdicts.rs`).
    pub(crate) fn handle_inbound(&mut self, now: Now, conn: ConnId, kind: Arc<str>, env: Envelope) {
        if !self.is_current(conn, &kind) {
            tracing::debug!(%kind, "dropping a frame from a stale socket");
            return;
        }
        if let Some(env) = self.hold_for_verdict(now, conn, &kind, env) {
            self.route(now, conn, &kind, env);
        }
    }

    /// An `rpc.request` that `conn`'s reader refused under the sender's
    /// rate limit: answered at once with `RPC_RATE_LIMITED`, in the order
    /// of the sender's other frames, like any hub-made RPC error.
    pub(crate) fn handle_rate_limited_rpc(&mut self, conn: ConnId, kind: &Arc<str>, id: &str) {
        if !self.is_current(conn, kind) {
            return;
        }
        let resp = RpcResponse::error(RpcErrorCode::RateLimited, rpc_error_text::RATE_LIMITED);
        self.reply(kind, id, &resp);
    }

    /// Routes a message that needs no (more) verdict.
    pub(super) fn route(&mut self, now: Now, conn: ConnId, kind: &Arc<str>, env: Envelope) {
        if !self.is_current(conn, kind) {
            tracing::debug!(%kind, "dropping a frame from a stale socket");
            return;
        }
        // The RPC relay reads no payload into a tree: only the request's
        // type (read off the signed text), and data only if it is rebuilt.
        match env.msg_type() {
            Some(msg_type::RPC_RESPONSE) => return self.rpc_response(now, kind, &env),
            Some(msg_type::RPC_REQUEST) => {
                if let Some(rpc_type) = messages::rpc_type(&env) {
                    let rpc_data = || messages::rpc_data(&env);
                    return self.rpc_request(now, kind, &env, rpc_type, rpc_data);
                }
            }
            _ => {}
        }
        match Msg::parse(&env) {
            Msg::StatusPush(status) => self.status_update(now, kind, status),
            Msg::RpcRequest { rpc_type, rpc_data } => {
                self.rpc_request(now, kind, &env, &rpc_type, || rpc_data)
            }
            Msg::Malformed(msg_type::RPC_REQUEST) => {
                let resp =
                    RpcResponse::error(RpcErrorCode::BadRequest, "rpc.request missing \"rpcType\"");
                self.reply(kind, env.id(), &resp);
            }
            Msg::RpcCancel { id } => self.rpc_cancel(kind, &env, id),
            Msg::Subscribe { topic } => self.subscribe(now, kind, topic),
            Msg::Unsubscribe { topic } => self.unsubscribe(kind, topic),
            Msg::TopicMessage { topic } => self.publish(now, kind, &env, topic),
            Msg::Direct { direct_type } => self.direct(kind, &env, direct_type),
            Msg::PeersResync => self.peers_resync(kind),
            _ => {} // unknown types and hub-only types are ignored
        }
    }

    fn status_update(&mut self, now: Now, kind: &Arc<str>, status: Option<Value>) {
        let at = now.wall_ms;
        if self.cluster.is_some() {
            let own = status.as_ref().map(|s| Arc::new(CanonicalData::new(s)));
            self.cluster_status(kind, at, own);
        }
        self.store_status(kind, status, at);
    }

    /// Stores `kind`'s status (for later snapshots) and sends it to every
    /// other peer on this hub, all sharing one data text and signed prefix.
    pub(super) fn store_status(&mut self, kind: &Arc<str>, status: Option<Value>, at: u64) {
        let data = Arc::new(CanonicalData::new(&messages::status_fanout_value(
            kind,
            status.as_ref(),
            at,
        )));
        self.revision += 1;
        self.statuses.insert(
            kind.clone(),
            StatusEntry {
                status,
                at: at as f64,
            },
        );
        let prefix = Arc::new(PrefixCell::new());
        for other in self.order.clone() {
            if other == *kind {
                continue;
            }
            let Some(route) = self.peers.get(&other).map(|p| p.route.clone()) else {
                continue;
            };
            let mut item = OutItem::new(
                None,
                msg_type::STATUS_UPDATE,
                self.server.clone(),
                other.clone(),
                Some(data.clone()),
            );
            item.origin = Some(kind.clone());
            item.prefix = Some(prefix.clone());
            self.push_item(&route, &other, item);
        }
    }

    fn rpc_request(
        &mut self,
        now: Now,
        kind: &Arc<str>,
        env: &Envelope,
        rpc_type: &str,
        rpc_data: impl FnOnce() -> Option<Value>,
    ) {
        let to = env.to();
        let target = match to.as_deref() {
            Some(SERVER) => {
                return self.server_rpc(now, kind, env, rpc_type.to_owned(), rpc_data());
            }
            None => {
                let resp = RpcResponse::error(RpcErrorCode::BadRequest, rpc_error_text::MISSING_TO);
                return self.reply(kind, env.id(), &resp);
            }
            Some(target) => target,
        };
        let Some((route, target_kind)) = self.target(target) else {
            let resp = RpcResponse::error(
                RpcErrorCode::NoTarget,
                format!("{}{target}", rpc_error_text::NO_TARGET),
            );
            return self.reply(kind, env.id(), &resp);
        };
        let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
            CanonicalData::new(&messages::rpc_request_value(rpc_type, rpc_data()))
        }));
        let id: Arc<str> = env.id().into();
        let item = OutItem::new(
            Some(id.clone()),
            msg_type::RPC_REQUEST,
            kind.clone(),
            target_kind.clone(),
            Some(data),
        );
        if self.push_item(&route, &target_kind, item).delivered() {
            if self.cluster.is_some() {
                self.cluster_call_started(kind, id.clone(), &route);
            }
            self.rpc_until_sample -= 1;
            if self.rpc_until_sample == 0 {
                self.rpc_until_sample = self.rpc_sample_every;
            }
            if self.rpc_until_sample == self.rpc_sample_every
                && self
                    .rpc_timer
                    .start(id, kind.clone(), target_kind.clone(), now.instant)
            {
                self.stats.rpc_untimed += 1;
            }
            self.emit_traffic(|| HubEvent::RpcForwarded {
                id: env.id().to_owned(),
                from: kind.to_string(),
                to: target_kind.to_string(),
                rpc_type: rpc_type.to_owned(),
            });
        } else {
            let resp = RpcResponse::error(
                RpcErrorCode::TargetUnavailable,
                format!("{}{target}", rpc_error_text::TARGET_UNAVAILABLE),
            );
            self.reply(kind, env.id(), &resp);
        }
    }

    fn rpc_response(&mut self, now: Now, kind: &Arc<str>, env: &Envelope) {
        let Some(to) = env.to() else { return };
        let Some((route, target)) = self.target(&to) else {
            return;
        };
        // The call ends for the timer whether or not the caller can take
        // the answer; only a forwarded answer is observed.
        let started = self.rpc_timer.finish(env.id(), &target, kind);
        let data = env.canonical_data().map(Arc::new);
        let item = OutItem::new(
            Some(env.id().into()),
            msg_type::RPC_RESPONSE,
            kind.clone(),
            target.clone(),
            data,
        );
        if self.push_item(&route, &target, item).delivered() {
            if let Some(started) = started {
                self.stats
                    .rpc_relayed
                    .observe(now.instant.saturating_duration_since(started));
            }
            self.emit_traffic(|| HubEvent::RpcResponseForwarded {
                id: env.id().to_owned(),
                from: kind.to_string(),
                to: target.to_string(),
                ok: RpcResponse::parse(env.data()).is_ok(),
            });
        }
    }

    /// `rpc.cancel`: a request still queued for its target is removed;
    /// otherwise the cancel is forwarded to the target.
    fn rpc_cancel(&mut self, kind: &Arc<str>, env: &Envelope, id: String) {
        let Some(to) = env.to().map(|t| t.into_owned()) else {
            return;
        };
        self.rpc_timer.cancel(&id, kind);
        self.cluster_call_done(kind, &id);
        let (mut found, mut forwarded) = (false, false);
        let target = self.target(&to).filter(|_| to != SERVER);
        if let Some((route, target)) = target {
            found = route.cancel_request(&id, kind);
            if !found {
                let data = Arc::new(CanonicalData::new(&messages::rpc_cancel_value(&id)));
                let item = OutItem::new(
                    None,
                    msg_type::RPC_CANCEL,
                    kind.clone(),
                    target.clone(),
                    Some(data),
                );
                forwarded = self.push_item(&route, &target, item).delivered();
            }
        }
        let from = kind.to_string();
        self.emit_traffic(|| HubEvent::RpcCancelled {
            id,
            from,
            to,
            found,
            forwarded,
        });
    }

    fn subscribe(&mut self, now: Now, kind: &Arc<str>, topic: Option<String>) {
        let Some(topic) = self.valid_topic(kind, topic, msg_type::TOPIC_SUBSCRIBE) else {
            return;
        };
        if self.at_subscription_cap(kind, &topic) {
            let e = ProtocolError::new(DropReason::SubscriptionLimit)
                .with_kind(&**kind)
                .with_type(Some(msg_type::TOPIC_SUBSCRIBE));
            self.protocol_error(e);
            return;
        }
        let subs = self.topics.entry(topic.clone()).or_default();
        let first = subs.order.is_empty();
        if subs.insert(kind, now.wall_ms) {
            if first {
                self.cluster_interest(&topic, true);
            }
            self.revision += 1;
            self.subscriptions
                .entry(kind.clone())
                .or_default()
                .insert(topic.clone());
            let k = kind.to_string();
            self.emit(|| HubEvent::TopicSubscribe { kind: k, topic });
        }
    }

    /// Whether `kind` holds its full share of topics and `topic` is not
    /// one of them (a repeated subscribe is never refused).
    fn at_subscription_cap(&self, kind: &Arc<str>, topic: &str) -> bool {
        self.subscriptions.get(kind).is_some_and(|held| {
            held.len() >= self.config.max_subscriptions_per_peer && !held.contains(topic)
        })
    }

    fn unsubscribe(&mut self, kind: &Arc<str>, topic: Option<String>) {
        let topics: Vec<String> = match topic {
            None => self
                .subscriptions
                .remove(kind)
                .map(|t| t.into_iter().collect())
                .unwrap_or_default(),
            Some(t) => {
                let Some(t) = self.valid_topic(kind, Some(t), msg_type::TOPIC_UNSUBSCRIBE) else {
                    return;
                };
                if let Some(set) = self.subscriptions.get_mut(kind) {
                    set.remove(&t);
                }
                vec![t]
            }
        };
        for topic in topics {
            let removed = match self.topics.get_mut(&topic) {
                Some(subs) => {
                    let removed = subs.remove(kind);
                    if subs.order.is_empty() {
                        self.topics.remove(&topic);
                        self.cluster_interest(&topic, false);
                    }
                    removed
                }
                None => false,
            };
            if removed {
                self.revision += 1;
                let k = kind.to_string();
                self.emit(|| HubEvent::TopicUnsubscribe { kind: k, topic });
            }
        }
    }

    /// A topic message goes to every subscriber but its publisher, in
    /// subscription order, all sharing one data text and one signed prefix;
    /// in a cluster, to the other hubs too, stamped with `now`.
    fn publish(&mut self, now: Now, kind: &Arc<str>, env: &Envelope, topic: Option<String>) {
        let payload = || messages::topic_payload(env).cloned();
        let Some(topic) = self.valid_topic(kind, topic, msg_type::TOPIC_MESSAGE) else {
            return;
        };
        let subscribers: Vec<Arc<str>> = match self.topics.get_mut(&topic) {
            Some(s) => {
                s.published += 1;
                s.order.iter().filter(|k| *k != kind).cloned().collect()
            }
            None => Vec::new(),
        };
        let (mut delivered, mut refused) = (0, 0);
        let clustered = self.cluster.is_some();
        if !subscribers.is_empty() || clustered {
            let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
                CanonicalData::new(&messages::topic_message_value(&topic, payload()))
            }));
            if clustered {
                self.cluster_publish(&topic, kind, data.clone(), now.wall_ms);
            }
            // Shared only when there is someone to share it with: a lone
            // subscriber's frame is signed in one pass, as a direct one is.
            let prefix = (subscribers.len() > 1).then(|| Arc::new(PrefixCell::new()));
            for sub in &subscribers {
                let Some(route) = self.peers.get(sub).map(|p| p.route.clone()) else {
                    continue;
                };
                let mut item = OutItem::new(
                    None,
                    msg_type::TOPIC_MESSAGE,
                    kind.clone(),
                    sub.clone(),
                    Some(data.clone()),
                );
                item.prefix = prefix.clone();
                match self.push_item(&route, sub, item) {
                    Push::Queued { .. } => delivered += 1,
                    Push::Overflow { .. } => refused += 1,
                    Push::Closed => {}
                }
            }
            // Relayed to nobody (its sender's reads are paced as for a
            // dropped frame); in a cluster the other hubs may have had it.
            if delivered == 0 && refused > 0 && !clustered {
                self.unheard += 1;
            }
            if let Some(s) = self.topics.get_mut(&topic) {
                s.delivered += delivered as u64;
            }
        }
        let subscriber_count = subscribers.len();
        self.emit_traffic(|| HubEvent::TopicPublish {
            from: kind.to_string(),
            topic,
            payload: payload(),
            subscriber_count,
            delivered,
        });
    }

    /// A direct message to an offline kind is dropped silently.
    fn direct(&mut self, kind: &Arc<str>, env: &Envelope, direct_type: String) {
        let direct_data = || messages::direct_data(env).cloned();
        let Some(to) = env.to() else { return };
        let Some((route, target)) = self.target(&to) else {
            return;
        };
        let data = Arc::new(messages::relay_data(env).unwrap_or_else(|| {
            CanonicalData::new(&messages::direct_value(&direct_type, direct_data()))
        }));
        let item = OutItem::new(
            None,
            msg_type::DIRECT,
            kind.clone(),
            target.clone(),
            Some(data),
        );
        let pushed = self.push_item(&route, &target, item);
        if matches!(pushed, Push::Overflow { .. }) {
            self.unheard += 1;
        }
        if pushed.delivered() {
            self.emit_traffic(|| HubEvent::Direct {
                from: kind.to_string(),
                to: target.to_string(),
                msg_type: direct_type,
                data: direct_data(),
            });
        }
    }

    fn valid_topic(
        &mut self,
        kind: &Arc<str>,
        topic: Option<String>,
        msg_type: &str,
    ) -> Option<String> {
        match validate::check_topic_field(topic.as_deref()) {
            Ok(()) => topic,
            Err(rule) => {
                // The reason stays `invalid-topic`; the detail names the
                // rule that failed (missing, empty, too long, a character).
                let e = ProtocolError::new(DropReason::InvalidTopic)
                    .with_kind(&**kind)
                    .with_type(Some(msg_type))
                    .with_detail(rule.detail());
                self.protocol_error(e);
                None
            }
        }
    }

    /// Answers `kind`'s request `id` from the hub.
    pub(super) fn reply(&mut self, kind: &Arc<str>, id: &str, resp: &RpcResponse) {
        let Some(route) = self.peers.get(kind).map(|p| p.route.clone()) else {
            return;
        };
        let data = Arc::new(CanonicalData::new(&resp.to_value()));
        self.push_from_hub(&route, Some(id.into()), msg_type::RPC_RESPONSE, kind, data);
    }
}
