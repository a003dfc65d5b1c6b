//! ACL verdicts in order. With a `can_publish`, `can_subscribe` or
//! `can_send` hook set, a socket's publishes, subscribes and direct sends
//! wait in that socket's lane and are judged one at a time, so they are
//! routed in the order the peer sent them whatever each hook takes. An
//! `rpc.request` with `can_rpc` set is judged on its own (calls are
//! independent). The hooks run off the table as [`Task::Judge`]; their
//! answers come back through [`Routing::handle_verdict`]. A denied
//! request is answered with the hook's code (`RPC_FORBIDDEN` by default); a
//! denied publish, subscribe or send is dropped silently; each denial is an
//! `acl-denied` event (protocol §10).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use link_protocol::codes::rpc_error_text;
use link_protocol::conn::Now;
use link_protocol::messages::{self, Message as Msg};
use link_protocol::{CanonicalData, Envelope, RpcResponse, msg_type, validate};

use super::{ConnId, Routing, Task, Ticket};
use crate::acl::{Acl, AclOp, PublishContext, RpcContext, SendContext, SubscribeContext, Verdict};
use crate::events::HubEvent;

/// Which ACL hooks are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AclHooks {
    pub(crate) rpc: bool,
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) send: bool,
}

impl AclHooks {
    pub(crate) fn of(acl: &Acl) -> Self {
        Self {
            rpc: acl.can_rpc.is_some(),
            publish: acl.can_publish.is_some(),
            subscribe: acl.can_subscribe.is_some(),
            send: acl.can_send.is_some(),
        }
    }

    /// Some hook is set (without one, nothing is ever held).
    fn any(self) -> bool {
        self.rpc || self.laned()
    }

    /// Publishes, subscribes and sends share one ordered lane per socket.
    fn laned(self) -> bool {
        self.publish || self.subscribe || self.send
    }
}

/// What a hook is asked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AclQuery {
    Rpc(RpcContext),
    Publish(PublishContext),
    Subscribe(SubscribeContext),
    Send(SendContext),
}

impl AclQuery {
    pub(crate) fn op(&self) -> AclOp {
        match self {
            Self::Rpc(_) => AclOp::Rpc,
            Self::Publish(_) => AclOp::Publish,
            Self::Subscribe(_) => AclOp::Subscribe,
            Self::Send(_) => AclOp::Send,
        }
    }
}

/// Checks in flight and messages waiting behind them.
#[derive(Default)]
pub(super) struct Verdicts {
    judging: HashMap<Ticket, Judging>,
    lanes: HashMap<ConnId, Lane>,
}

impl Verdicts {
    /// The socket is gone: what it was waiting for is dropped.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        if self.lanes.remove(&conn).is_some() || !self.judging.is_empty() {
            self.judging.retain(|_, j| j.conn != conn);
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Verdicts {
    /// ACL checks in flight, and sockets with a lane (for the fuzz checks).
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.judging.len(), self.lanes.len())
    }
}

/// One message waiting for its verdict.
struct Judging {
    conn: ConnId,
    kind: Arc<str>,
    env: Envelope,
    query: AclQuery,
    laned: bool,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Envelope>,
    /// Its head is being judged.
    busy: bool,
}

impl Routing {
    /// Holds `env` for a verdict when a hook applies; returns it when it
    /// may be routed at once.
    pub(super) fn hold_for_verdict(
        &mut self,
        now: Now,
        conn: ConnId,
        kind: &Arc<str>,
        env: Envelope,
    ) -> Option<Envelope> {
        let hooks = self.config.acl;
        if !hooks.any() {
            return Some(env);
        }
        let t = env.msg_type();
        let laned = matches!(
            t,
            Some(msg_type::TOPIC_MESSAGE | msg_type::TOPIC_SUBSCRIBE | msg_type::DIRECT)
        );
        if laned && hooks.laned() {
            self.verdicts
                .lanes
                .entry(conn)
                .or_default()
                .queue
                .push_back(env);
            self.advance_lane(now, conn, kind);
            return None;
        }
        if hooks.rpc && t == Some(msg_type::RPC_REQUEST) {
            let query = AclQuery::Rpc(rpc_context(kind, &env));
            self.judge(conn, kind, env, query, false);
            return None;
        }
        Some(env)
    }

    /// A hook answered. Allowed messages are routed (if their socket still
    /// holds its kind); the socket's lane moves on.
    pub(crate) fn handle_verdict(&mut self, now: Now, ticket: Ticket, verdict: Verdict) {
        let Some(j) = self.verdicts.judging.remove(&ticket) else {
            return;
        };
        let (conn, kind, laned) = (j.conn, j.kind.clone(), j.laned);
        if laned && let Some(lane) = self.verdicts.lanes.get_mut(&conn) {
            lane.busy = false;
        }
        match verdict {
            Verdict::Allow => self.route(now, conn, &kind, j.env),
            Verdict::Deny { code, error } => self.denied(j, code, error),
        }
        if laned {
            self.advance_lane(now, conn, &kind);
        }
    }

    /// Routes the lane's head messages that need no verdict, up to the
    /// first that does, which goes out to be judged.
    fn advance_lane(&mut self, now: Now, conn: ConnId, kind: &Arc<str>) {
        loop {
            let env = match self.verdicts.lanes.get_mut(&conn) {
                Some(lane) if !lane.busy => match lane.queue.pop_front() {
                    Some(env) => env,
                    None => return,
                },
                _ => return,
            };
            match self.laned_query(kind, &env) {
                Some(query) => {
                    if let Some(lane) = self.verdicts.lanes.get_mut(&conn) {
                        lane.busy = true;
                    }
                    self.judge(conn, kind, env, query, true);
                    return;
                }
                None => self.route(now, conn, kind, env),
            }
        }
    }

    fn judge(
        &mut self,
        conn: ConnId,
        kind: &Arc<str>,
        env: Envelope,
        query: AclQuery,
        laned: bool,
    ) {
        let ticket = self.ticket();
        self.tasks.push_back(Task::Judge {
            ticket,
            query: query.clone(),
        });
        self.verdicts.judging.insert(
            ticket,
            Judging {
                conn,
                kind: kind.clone(),
                env,
                query,
                laned,
            },
        );
    }

    /// The hook to ask for a laned message, if one applies. Invalid
    /// payloads ask none: routing drops them with the reference's reasons.
    fn laned_query(&self, kind: &Arc<str>, env: &Envelope) -> Option<AclQuery> {
        let hooks = self.config.acl;
        let from = kind.to_string();
        match Msg::parse(env) {
            Msg::TopicMessage { topic } if hooks.publish => {
                let topic = topic.filter(|t| validate::is_valid_topic(t))?;
                Some(AclQuery::Publish(PublishContext {
                    from,
                    topic,
                    payload: messages::topic_payload(env).cloned(),
                }))
            }
            Msg::Subscribe { topic } if hooks.subscribe => {
                let topic = topic.filter(|t| validate::is_valid_topic(t))?;
                Some(AclQuery::Subscribe(SubscribeContext { from, topic }))
            }
            Msg::Direct { direct_type } if hooks.send => {
                let to = env.to()?.into_owned();
                Some(AclQuery::Send(SendContext {
                    from,
                    to,
                    msg_type: direct_type,
                    data: messages::direct_data(env).cloned(),
                }))
            }
            _ => None,
        }
    }

    fn denied(&mut self, j: Judging, code: Option<String>, error: Option<String>) {
        let op = j.query.op();
        let code = code.unwrap_or_else(|| op.default_code().to_owned());
        let error = error.unwrap_or_else(|| rpc_error_text::FORBIDDEN.to_owned());
        let (mut to, mut rpc_type, mut topic, mut msg_type) = (None, None, None, None);
        match j.query {
            AclQuery::Rpc(ctx) => {
                // Answered on the socket that asked.
                if let Some(route) = self.conns.get(&j.conn).map(|c| c.route.clone()) {
                    let resp = RpcResponse::Err {
                        error: error.clone(),
                        code: code.clone(),
                        data: None,
                    };
                    let data = Arc::new(CanonicalData::new(&resp.to_value()));
                    let id: Arc<str> = j.env.id().into();
                    self.push_from_hub(&route, Some(id), msg_type::RPC_RESPONSE, &j.kind, data);
                }
                to = ctx.to;
                rpc_type = Some(ctx.rpc_type);
            }
            AclQuery::Publish(ctx) => topic = Some(ctx.topic),
            AclQuery::Subscribe(ctx) => topic = Some(ctx.topic),
            AclQuery::Send(ctx) => {
                to = Some(ctx.to);
                msg_type = Some(ctx.msg_type);
            }
        }
        let from = j.kind.to_string();
        self.emit(|| HubEvent::AclDenied {
            op,
            from,
            code,
            error,
            to,
            rpc_type,
            topic,
            msg_type,
        });
    }
}

fn rpc_context(kind: &Arc<str>, env: &Envelope) -> RpcContext {
    let (rpc_type, rpc_data) = match Msg::parse(env) {
        Msg::RpcRequest { rpc_type, rpc_data } => (rpc_type, rpc_data),
        _ => (String::new(), None),
    };
    RpcContext {
        from: kind.to_string(),
        to: env.to().map(|t| t.into_owned()),
        rpc_type,
        rpc_data,
    }
}
