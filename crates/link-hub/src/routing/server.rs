//! RPCs addressed to the hub itself (`to: "server"`): the built-ins
//! (`link.health`, `link.peer.list`, `link.topic.list`) answer inline from
//! the table; a user handler of the same name shadows a built-in and runs
//! as a [`Task`] the driver spawns, its answer coming back through
//! [`Routing::handle_server_rpc_done`]. `max_concurrent_rpc` caps both
//! (protocol §8).

use std::sync::Arc;
use std::time::Instant;

use link_protocol::codes::rpc_error_text;
use link_protocol::conn::Now;
use link_protocol::{CanonicalData, Envelope, RpcErrorCode, RpcResponse, msg_type};
use serde_json::{Value, json};

use super::{Route, Routing, Task, Ticket, TopicMap, elapsed_ms};
use crate::events::HubEvent;
use crate::server_rpc::{HEALTH, PEER_LIST, ServerRpcRequest, ServerRpcResult, TOPIC_LIST};

/// A user handler to run.
#[derive(Debug)]
pub(crate) struct ServerRpcCall {
    /// Pass back to [`Routing::handle_server_rpc_done`].
    pub(crate) ticket: Ticket,
    /// What the handler sees.
    pub(crate) request: ServerRpcRequest,
}

/// A user handler running: where its answer goes.
pub(super) struct Running {
    caller: Arc<str>,
    /// The caller's route when it asked: a caller that reconnected since
    /// does not get the answer (its old socket is gone).
    route: Route,
    id: String,
    rpc_type: String,
    started: Instant,
}

impl Routing {
    pub(super) fn server_rpc(
        &mut self,
        now: Now,
        kind: &Arc<str>,
        env: &Envelope,
        rpc_type: String,
        rpc_data: Option<Value>,
    ) {
        let user = self.config.user_rpcs.contains(&rpc_type);
        let builtin = matches!(rpc_type.as_str(), TOPIC_LIST | HEALTH | PEER_LIST);
        if !user && !builtin {
            let resp = RpcResponse::error(
                RpcErrorCode::UnknownType,
                format!("{}{rpc_type}", rpc_error_text::UNKNOWN_SERVER_TYPE),
            );
            return self.reply(kind, env.id(), &resp);
        }
        let cap = self.config.max_concurrent_rpc;
        if cap > 0 && self.server_rpc_in_flight() >= cap {
            let resp =
                RpcResponse::error(RpcErrorCode::Overloaded, rpc_error_text::SERVER_OVERLOADED);
            return self.reply(kind, env.id(), &resp);
        }
        let Some(route) = self.peers.get(kind).map(|p| p.route.clone()) else {
            return;
        };
        let running = Running {
            caller: kind.clone(),
            route,
            id: env.id().to_owned(),
            rpc_type: rpc_type.clone(),
            started: now.instant,
        };
        if !user
            && rpc_type == TOPIC_LIST
            && let Some(hubs) = self.cluster_hub_count().filter(|n| *n > 0)
        {
            // The other hubs are asked; the answer comes back as a task's.
            let ticket = self.ticket();
            self.server_calls.insert(ticket, running);
            let topic = rpc_data
                .as_ref()
                .and_then(|d| d.get("topic"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let local = self.local_topics();
            self.tasks.push_back(Task::ClusterTopics {
                ticket,
                local,
                hubs,
                topic,
            });
            return;
        }
        if user {
            let ticket = self.ticket();
            self.server_calls.insert(ticket, running);
            let request = ServerRpcRequest {
                id: env.id().to_owned(),
                from: kind.to_string(),
                rpc_type,
                rpc_data,
                envelope: env.clone(),
            };
            self.tasks
                .push_back(Task::ServerRpc(ServerRpcCall { ticket, request }));
            return;
        }
        // Built-ins run inline; like the reference they count themselves
        // as in flight while running.
        self.builtin_running += 1;
        let result = match rpc_type.as_str() {
            HEALTH => {
                let mut health = self.health().to_value();
                // Only a clustered hub (a new deployment) adds the member.
                if let (Some(cluster), Value::Object(h)) = (self.cluster_health(), &mut health) {
                    h.insert("cluster".into(), cluster);
                }
                Ok(health)
            }
            PEER_LIST => Ok(self.peer_list(rpc_data.as_ref())),
            _ => Ok(self.topic_list(rpc_data.as_ref())),
        };
        self.builtin_running -= 1;
        self.answer_server_rpc(now, running, result);
    }

    /// A user handler returned (or panicked: the driver turns that into an
    /// internal error). Unknown tickets are ignored.
    pub(crate) fn handle_server_rpc_done(
        &mut self,
        now: Now,
        ticket: Ticket,
        result: ServerRpcResult,
    ) {
        if let Some(running) = self.server_calls.remove(&ticket) {
            self.answer_server_rpc(now, running, result);
        }
    }

    fn answer_server_rpc(&mut self, now: Now, running: Running, result: ServerRpcResult) {
        let expose_all = self.config.expose_rpc_errors;
        let (resp, error) = match &result {
            Ok(v) => (
                RpcResponse::Ok {
                    result: Some(v.clone()),
                },
                None,
            ),
            Err(e) => (e.to_response(expose_all), Some(e.text().to_owned())),
        };
        let ok = resp.is_ok();
        let data = Arc::new(CanonicalData::new(&resp.to_value()));
        let id: Arc<str> = running.id.as_str().into();
        self.push_from_hub(
            &running.route,
            Some(id),
            msg_type::RPC_RESPONSE,
            &running.caller,
            data,
        );
        let duration_ms = elapsed_ms(running.started, now);
        self.stats
            .rpc_server
            .entry(running.rpc_type.clone())
            .or_default()
            .observe(now.instant.saturating_duration_since(running.started));
        let (id, from, rpc_type) = (running.id, running.caller.to_string(), running.rpc_type);
        self.emit_traffic(|| HubEvent::RpcServer {
            id,
            from,
            rpc_type,
            ok,
            error,
            duration_ms,
        });
    }

    /// `link.topic.list`: every topic with its subscribers, or the one
    /// named by `{topic}`.
    pub(super) fn topic_list(&self, rpc_data: Option<&Value>) -> Value {
        let topic = rpc_data
            .and_then(|d| d.get("topic"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        topic_list_value(&self.local_topics(), topic)
    }

    /// This hub's topics and their subscribers.
    pub(crate) fn local_topics(&self) -> TopicMap {
        self.topics
            .iter()
            .map(|(t, s)| (t.clone(), s.order.iter().map(|k| k.to_string()).collect()))
            .collect()
    }
}

/// `link.topic.list`'s answer from a topic map: every topic, or `topic`.
pub(crate) fn topic_list_value(topics: &TopicMap, topic: Option<&str>) -> Value {
    match topic {
        Some(topic) => {
            json!({"topic": topic, "subscribers": topics.get(topic).cloned().unwrap_or_default()})
        }
        None => {
            let topics: Vec<Value> = topics
                .iter()
                .map(|(t, subs)| json!({"topic": t, "subscribers": subs}))
                .collect();
            json!({ "topics": topics })
        }
    }
}
