//! Typed payloads of every message type (protocol §6): constructors that build
//! the `data` the reference sends, and lenient parsers that read what the
//! reference accepts.
//!
//! [`Message::parse`] turns a verified [`Envelope`] into a typed value;
//! unknown types become [`Message::Unknown`] (the hub ignores them), and a
//! known type whose payload does not fit becomes [`Message::Malformed`].
//! Each payload type's `to_value` gives the exact `data` object to send.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::codes::{RpcErrorCode, msg_type, rpc_error_text};
use crate::envelope::{CanonicalData, Envelope};
use crate::error::KindError;
use crate::validate::{self, MAX_NAME_LEN, js_string, js_trim, js_truncate, js_truthy};
use crate::{signed_form, signed_tail};

fn obj(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn finite(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|f| f.is_finite())
}

fn num(f: Option<f64>) -> Value {
    f.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, |n| {
            // Integral values go on the wire as integers, as JavaScript prints them.
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            {
                Value::from(n.as_f64().unwrap_or_default() as i64)
            } else {
                Value::Number(n)
            }
        })
}

/// `hello` data: `{kind, name, pid, startedAt}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// The claimed kind.
    pub kind: String,
    /// Display name (defaults to the kind).
    pub name: String,
    /// Process id, if a finite number.
    pub pid: Option<f64>,
    /// Wall clock ms at socket open, if a finite number.
    pub started_at: Option<f64>,
}

impl Hello {
    /// The `data` object.
    pub fn to_value(&self) -> Value {
        obj([
            ("kind", Value::from(self.kind.as_str())),
            ("name", Value::from(self.name.as_str())),
            ("pid", num(self.pid)),
            ("startedAt", num(self.started_at)),
        ])
    }

    /// The hub's sanitisation (protocol §5.1): `String(kind ?? '').trim()` checked
    /// against the kind rules, `name` trimmed and cut to 256, `pid` and
    /// `startedAt` kept only when finite numbers.
    pub fn sanitize(data: Option<&Value>) -> Result<Self, KindError> {
        let field = |name: &str| data.and_then(|d| d.get(name)).filter(|v| !v.is_null());
        let kind = field("kind").map(js_string).unwrap_or_default();
        let kind = js_trim(&kind);
        validate::check_kind(kind)?;
        let name = field("name").map(js_string).unwrap_or_default();
        let name = js_truncate(js_trim(&name), MAX_NAME_LEN);
        Ok(Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            pid: finite(field("pid")),
            started_at: finite(field("startedAt")),
        })
    }
}

/// The strings of a hello's `data.features` (a link extension: the
/// reference hub ignores the field, [`Hello::sanitize`] drops it, and it is
/// never echoed in `peers.update`). Non-strings are skipped.
pub fn hello_features(data: Option<&Value>) -> impl Iterator<Item = &str> {
    data.and_then(|d| d.get("features"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `hello.ack` data.
#[derive(Clone, Debug, PartialEq)]
pub struct HelloAck {
    /// False only for an explicit `ok:false`.
    pub ok: bool,
    /// Hub wall clock ms.
    pub server_time: Option<f64>,
    /// The kind the hub registered.
    pub kind: Option<String>,
    /// Advertised features (empty when absent or not an array).
    pub features: Vec<String>,
    /// Rejection reason (`data.error`) when `ok` is false.
    pub error: Option<String>,
}

impl HelloAck {
    /// A successful ack as the v1 hub sends it.
    pub fn accepted(server_time: u64, kind: &str, features: &[&str]) -> Self {
        Self {
            ok: true,
            server_time: Some(server_time as f64),
            kind: Some(kind.to_owned()),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
            error: None,
        }
    }

    /// The `data` object.
    pub fn to_value(&self) -> Value {
        if !self.ok {
            let mut m = Map::new();
            m.insert("ok".into(), Value::Bool(false));
            if let Some(e) = &self.error {
                m.insert("error".into(), Value::from(e.as_str()));
            }
            return Value::Object(m);
        }
        obj([
            ("ok", Value::Bool(true)),
            ("serverTime", num(self.server_time)),
            (
                "kind",
                self.kind.as_deref().map_or(Value::Null, Value::from),
            ),
            ("features", Value::from(self.features.clone())),
        ])
    }

    /// Reads an ack as the client does: ready unless `ok === false`.
    pub fn parse(data: Option<&Value>) -> Self {
        let get = |k: &str| data.and_then(|d| d.get(k));
        let features = match get("features") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Self {
            ok: get("ok") != Some(&Value::Bool(false)),
            server_time: get("serverTime").and_then(Value::as_f64),
            kind: get("kind").and_then(Value::as_str).map(str::to_owned),
            features,
            error: get("error")
                .filter(|v| !v.is_null())
                .map(|v| js_string(v).into_owned()),
        }
    }
}

/// One entry of `peers.update`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    /// Peer kind.
    pub kind: String,
    /// Its sanitised hello, if known.
    pub hello: Option<Hello>,
    /// Hub wall clock ms at registration.
    pub connected_at: Option<f64>,
    /// Whether the socket is registered and open.
    pub connected: bool,
}

impl PeerInfo {
    /// The entry object.
    pub fn to_value(&self) -> Value {
        obj([
            ("kind", Value::from(self.kind.as_str())),
            (
                "hello",
                self.hello.as_ref().map_or(Value::Null, Hello::to_value),
            ),
            ("connectedAt", num(self.connected_at)),
            ("connected", Value::Bool(self.connected)),
        ])
    }

    fn parse(v: &Value) -> Option<Self> {
        let kind = v.get("kind")?.as_str()?.to_owned();
        let hello = v.get("hello").filter(|h| h.is_object()).map(|h| Hello {
            kind: h
                .get("kind")
                .map(js_string)
                .unwrap_or_default()
                .into_owned(),
            name: h
                .get("name")
                .map(js_string)
                .unwrap_or_default()
                .into_owned(),
            pid: finite(h.get("pid")),
            started_at: finite(h.get("startedAt")),
        });
        Some(Self {
            kind,
            hello,
            connected_at: finite(v.get("connectedAt")),
            connected: v.get("connected").is_some_and(js_truthy),
        })
    }
}

/// `peers.update` data: `{peers:[…]}`.
pub fn peers_update_value(peers: &[PeerInfo]) -> Value {
    obj([(
        "peers",
        Value::Array(peers.iter().map(PeerInfo::to_value).collect()),
    )])
}

/// The last status of one peer, as kept by the hub and sent in snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusEntry {
    /// The status as the peer sent it (`None`: the `status.update` had no
    /// `data`, and the key is omitted on the wire, as the reference does).
    pub status: Option<Value>,
    /// Hub wall clock ms when it was stored.
    pub at: f64,
}

/// `status.snapshot` data: `{<kind>:{status, at}}`.
pub fn status_snapshot_value<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a StatusEntry)>,
) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, e)| {
                let mut m = Map::new();
                if let Some(s) = &e.status {
                    m.insert("status".into(), s.clone());
                }
                m.insert("at".into(), num(Some(e.at)));
                (k.to_owned(), Value::Object(m))
            })
            .collect(),
    )
}

/// Hub → client `status.update` data: `{from, status, at}` (`status`
/// omitted when the peer sent none).
pub fn status_fanout_value(from: &str, status: Option<&Value>, at: u64) -> Value {
    let mut m = Map::new();
    m.insert("from".into(), Value::from(from));
    if let Some(s) = status {
        m.insert("status".into(), s.clone());
    }
    m.insert("at".into(), Value::from(at));
    Value::Object(m)
}

/// `rpc.request` data: `{rpcType, rpcData?}`.
pub fn rpc_request_value(rpc_type: &str, rpc_data: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("rpcType".into(), Value::from(rpc_type));
    if let Some(d) = rpc_data {
        m.insert("rpcData".into(), d);
    }
    Value::Object(m)
}

/// An RPC outcome as carried by `rpc.response`.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcResponse {
    /// `{ok:true, result?}`.
    Ok {
        /// The result; omitted on the wire when `None`.
        result: Option<Value>,
    },
    /// `{ok:false, error, code, data?}`.
    Err {
        /// Human-readable message.
        error: String,
        /// Stable code (`RPC_*` or an application code).
        code: String,
        /// Optional structured detail.
        data: Option<Value>,
    },
}

impl RpcResponse {
    /// A failure with one of the protocol's codes.
    pub fn error(code: RpcErrorCode, error: impl Into<String>) -> Self {
        Self::Err {
            error: error.into(),
            code: code.as_str().to_owned(),
            data: None,
        }
    }

    /// The `data` object.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        match self {
            Self::Ok { result } => {
                m.insert("ok".into(), Value::Bool(true));
                if let Some(r) = result {
                    m.insert("result".into(), r.clone());
                }
            }
            Self::Err { error, code, data } => {
                m.insert("ok".into(), Value::Bool(false));
                m.insert("error".into(), Value::from(error.as_str()));
                m.insert("code".into(), Value::from(code.as_str()));
                if let Some(d) = data {
                    m.insert("data".into(), d.clone());
                }
            }
        }
        Value::Object(m)
    }

    /// Reads a response as the caller does: success when `ok` is truthy;
    /// otherwise `error || 'RPC error'` and `code || 'RPC_REMOTE'`.
    pub fn parse(data: Option<&Value>) -> Self {
        let get = |k: &str| data.and_then(|d| d.get(k));
        if get("ok").is_some_and(js_truthy) {
            return Self::Ok {
                result: get("result").cloned(),
            };
        }
        let text = |k: &str, fallback: &str| {
            get(k)
                .filter(|v| js_truthy(v))
                .map_or_else(|| fallback.to_owned(), |v| js_string(v).into_owned())
        };
        Self::Err {
            error: text("error", rpc_error_text::GENERIC),
            code: text("code", rpc_error_text::REMOTE_CODE),
            data: get("data").cloned(),
        }
    }

    /// True for a success.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

/// `rpc.cancel` data: `{id}`.
pub fn rpc_cancel_value(id: &str) -> Value {
    obj([("id", Value::from(id))])
}

/// `topic.subscribe` / `topic.unsubscribe` data: `{topic}`.
pub fn topic_value(topic: &str) -> Value {
    obj([("topic", Value::from(topic))])
}

/// `topic.message` data: `{topic, payload?}`.
pub fn topic_message_value(topic: &str, payload: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("topic".into(), Value::from(topic));
    if let Some(p) = payload {
        m.insert("payload".into(), p);
    }
    Value::Object(m)
}

/// `direct` data: `{directType, directData?}`.
pub fn direct_value(direct_type: &str, direct_data: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("directType".into(), Value::from(direct_type));
    if let Some(d) = direct_data {
        m.insert("directData".into(), d);
    }
    Value::Object(m)
}

/// The payload to relay for `env` when the hub would rebuild exactly the
/// same payload (a well-formed `topic.message`, `direct` or `rpc.request`
/// with no extra fields, or any `rpc.response`): its canonical text as it
/// arrived, so a relay canonicalises nothing. `None` means "rebuild it".
pub fn relay_data(env: &Envelope) -> Option<CanonicalData> {
    let fits = |name: &str, other: &str| match env.signed_data_text() {
        // As the frame's scan met the members: no second walk.
        Some(_) if let Some((count, first)) = env.scanned_data_members() => {
            count <= 2 && only(first.into_iter().flatten(), name, other)
        }
        // Read off the text: no tree.
        Some(text) => {
            let b = text.as_bytes();
            let members = signed_form::members(text)
                .map(|(key, value)| (key, b.get(value.start).copied().unwrap_or(0)));
            only(members, name, other)
        }
        None => match env.data() {
            Some(Value::Object(m)) => {
                m.get(name).is_some_and(Value::is_string)
                    && m.keys().all(|k| k == name || k == other)
            }
            _ => false,
        },
    };
    let verbatim = match env.msg_type()? {
        msg_type::TOPIC_MESSAGE => fits("topic", "payload"),
        msg_type::DIRECT => fits("directType", "directData"),
        msg_type::RPC_REQUEST => fits("rpcType", "rpcData"),
        msg_type::RPC_RESPONSE => true,
        _ => false,
    };
    verbatim.then(|| env.canonical_data()).flatten()
}

/// True when `members` (each key's raw text and its value's first byte)
/// are `name`, a string, and at most `other` besides.
fn only<'a>(members: impl Iterator<Item = (&'a str, u8)>, name: &str, other: &str) -> bool {
    let mut named = false;
    for (key, first) in members {
        if key == name {
            named = first == b'"';
        } else if key != other {
            return false;
        }
    }
    named
}

/// A verified envelope read as one of the protocol's messages.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// `hello` (raw data; the hub sanitises it with [`Hello::sanitize`]).
    Hello(Option<Value>),
    /// `hello.ack`.
    HelloAck(HelloAck),
    /// `peers.update`.
    PeersUpdate(Vec<PeerInfo>),
    /// `peers.snapshot` (the `peers.delta` extension).
    PeersSnapshot(crate::presence::PeersSnapshot),
    /// `peers.delta` (the `peers.delta` extension).
    PeersDelta(crate::presence::PeersDelta),
    /// `peers.resync` from a client (the `peers.delta` extension).
    PeersResync,
    /// `status.snapshot`.
    StatusSnapshot(BTreeMap<String, StatusEntry>),
    /// `status.update` from a client (any JSON, `None` when absent).
    StatusPush(Option<Value>),
    /// `status.update` fan-out from the hub.
    StatusFanout {
        /// Originating peer.
        from: String,
        /// Its status (`None` when the key was absent).
        status: Option<Value>,
        /// Hub time.
        at: f64,
    },
    /// `rpc.request`.
    RpcRequest {
        /// Handler name.
        rpc_type: String,
        /// Argument, if any.
        rpc_data: Option<Value>,
    },
    /// `rpc.response`.
    RpcResponse(RpcResponse),
    /// `rpc.cancel` for the given request id.
    RpcCancel {
        /// Id of the request to cancel.
        id: String,
    },
    /// `topic.subscribe`.
    Subscribe {
        /// Topic (not yet validated).
        topic: Option<String>,
    },
    /// `topic.unsubscribe`; `None` means "all topics".
    Unsubscribe {
        /// Topic, or `None` for a falsy topic.
        topic: Option<String>,
    },
    /// `topic.message`. Its payload stays in the envelope until someone
    /// asks for it ([`topic_payload`]): a relay forwards its text, a
    /// subscriber may never read it or read it into its own type.
    TopicMessage {
        /// Topic (not yet validated).
        topic: Option<String>,
    },
    /// `direct`. Its payload stays in the envelope until someone asks
    /// for it ([`direct_data`]).
    Direct {
        /// Application message type.
        direct_type: String,
    },
    /// A known type whose payload does not fit.
    Malformed(&'static str),
    /// A type this protocol does not know (ignored by the hub).
    Unknown,
}

impl Message {
    /// Reads `env`'s payload according to its type.
    pub fn parse(env: &Envelope) -> Self {
        if let Some(m) = Self::parse_signed(env) {
            return m;
        }
        let data = env.data();
        let get = |k: &str| data.and_then(|d| d.get(k)).filter(|v| !v.is_null());
        let string = |k: &str| get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(t) = env.msg_type() else {
            return Self::Unknown;
        };
        match t {
            msg_type::HELLO => Self::Hello(data.cloned()),
            msg_type::HELLO_ACK => Self::HelloAck(HelloAck::parse(data)),
            msg_type::PEERS_UPDATE => match get("peers") {
                Some(Value::Array(items)) => {
                    Self::PeersUpdate(items.iter().filter_map(PeerInfo::parse).collect())
                }
                _ => Self::Malformed(msg_type::PEERS_UPDATE),
            },
            msg_type::PEERS_SNAPSHOT => match crate::presence::PeersSnapshot::parse(data) {
                Some(s) => Self::PeersSnapshot(s),
                None => Self::Malformed(msg_type::PEERS_SNAPSHOT),
            },
            msg_type::PEERS_DELTA => match crate::presence::PeersDelta::parse(data) {
                Some(d) => Self::PeersDelta(d),
                None => Self::Malformed(msg_type::PEERS_DELTA),
            },
            msg_type::PEERS_RESYNC => Self::PeersResync,
            msg_type::STATUS_SNAPSHOT => match data {
                Some(Value::Object(m)) => Self::StatusSnapshot(
                    m.iter()
                        .map(|(k, v)| {
                            let entry = StatusEntry {
                                status: v.get("status").cloned(),
                                at: finite(v.get("at")).unwrap_or(0.0),
                            };
                            (k.clone(), entry)
                        })
                        .collect(),
                ),
                _ => Self::Malformed(msg_type::STATUS_SNAPSHOT),
            },
            msg_type::STATUS_UPDATE => {
                if env.from() == Some(crate::codes::SERVER) {
                    match string("from") {
                        Some(from) => Self::StatusFanout {
                            from,
                            status: data.and_then(|d| d.get("status")).cloned(),
                            at: finite(get("at")).unwrap_or(0.0),
                        },
                        None => Self::Malformed(msg_type::STATUS_UPDATE),
                    }
                } else {
                    Self::StatusPush(data.cloned())
                }
            }
            msg_type::RPC_REQUEST => match get("rpcType").and_then(Value::as_str) {
                Some(rpc_type) => Self::RpcRequest {
                    rpc_type: rpc_type.to_owned(),
                    rpc_data: data.and_then(|d| d.get("rpcData")).cloned(),
                },
                None => Self::Malformed(msg_type::RPC_REQUEST),
            },
            msg_type::RPC_RESPONSE => Self::RpcResponse(RpcResponse::parse(data)),
            msg_type::RPC_CANCEL => match string("id").filter(|s| !s.is_empty()) {
                Some(id) => Self::RpcCancel { id },
                None => Self::Malformed(msg_type::RPC_CANCEL),
            },
            msg_type::TOPIC_SUBSCRIBE => Self::Subscribe {
                topic: topic_of(get("topic")),
            },
            msg_type::TOPIC_UNSUBSCRIBE => Self::Unsubscribe {
                topic: get("topic")
                    .filter(|v| js_truthy(v))
                    .map(|v| js_string(v).into_owned()),
            },
            msg_type::TOPIC_MESSAGE => Self::TopicMessage {
                topic: topic_of(get("topic")),
            },
            msg_type::DIRECT => match string("directType").filter(|s| !s.is_empty()) {
                Some(direct_type) => Self::Direct { direct_type },
                None => Self::Malformed(msg_type::DIRECT),
            },
            _ => Self::Unknown,
        }
    }
}

impl Message {
    /// The relayed message types read straight from the `data` text of an
    /// envelope that arrived in signing form, into the values the general
    /// path would build (no intermediate tree to clone from). `None` sends
    /// the envelope down the general path.
    fn parse_signed(env: &Envelope) -> Option<Self> {
        // Only an object: its members are found without building anything.
        let text = env.signed_data_text().filter(|t| t.starts_with('{'))?;
        let member = |name: &str| {
            signed_form::members(text)
                .find(|(key, _)| *key == name)
                .and_then(|(_, span)| text.get(span))
        };
        // The sorted keys put `topic` / `directType` last: as the scan
        // recorded it, else read from the end.
        let last = |name: &str| {
            env.scanned_last_member(name)
                .and_then(plain_string)
                .or_else(|| signed_tail::last_string_member(text, name))
        };
        match env.msg_type()? {
            msg_type::TOPIC_MESSAGE if let Some(topic) = last("topic") => {
                Some(Self::TopicMessage {
                    topic: Some(topic.to_owned()),
                })
            }
            msg_type::DIRECT if let Some(direct_type) = last("directType") => {
                (!direct_type.is_empty()).then(|| Self::Direct {
                    direct_type: direct_type.to_owned(),
                })
            }
            msg_type::TOPIC_MESSAGE => match member("topic") {
                None | Some("null") => Some(Self::TopicMessage { topic: None }),
                Some(topic) => Some(Self::TopicMessage {
                    topic: Some(plain_string(topic)?.to_owned()),
                }),
            },
            msg_type::DIRECT => match plain_string(member("directType")?)? {
                "" => None,
                direct_type => Some(Self::Direct {
                    direct_type: direct_type.to_owned(),
                }),
            },
            msg_type::RPC_REQUEST => Some(Self::RpcRequest {
                rpc_type: plain_string(member("rpcType")?)?.to_owned(),
                rpc_data: match member("rpcData") {
                    Some(data) => Some(serde_json::from_str(data).ok()?),
                    None => None,
                },
            }),
            _ => None,
        }
    }
}

/// The contents of a JSON string literal that holds no escapes.
fn plain_string(literal: &str) -> Option<&str> {
    literal
        .strip_prefix('"')?
        .strip_suffix('"')
        .filter(|s| !s.contains('\\'))
}

/// A `topic.message`'s payload (`None` when absent; `null` is present).
/// An envelope that arrived in signing form parses its `data` the first
/// time this is called.
pub fn topic_payload(env: &Envelope) -> Option<&Value> {
    env.data()?.get("payload")
}

/// A `topic.message`'s payload read straight into `T` (absent reads as
/// `null`): from the text as it arrived when the envelope is in signing
/// form, so no intermediate tree is built.
pub fn topic_payload_as<T: DeserializeOwned>(env: &Envelope) -> Result<T, serde_json::Error> {
    member_as(env, "payload")
}

/// An `rpc.request`'s `rpcType` when it is a string without escapes (what
/// a relay needs), read off the signed text when there is one: no tree is
/// built. `None` when it is missing or not a plain string: ask
/// [`Message::parse`] then.
pub fn rpc_type(env: &Envelope) -> Option<&str> {
    if let Some(rpc_type) = env.scanned_last_member("rpcType").and_then(plain_string) {
        return Some(rpc_type);
    }
    match env.signed_data_text().filter(|t| t.starts_with('{')) {
        Some(text) => plain_string(signed_member(text, "rpcType")?),
        None => env.data()?.get("rpcType")?.as_str(),
    }
}

/// An `rpc.request`'s `rpcData` as [`Message::parse`] reads it (`None` when
/// absent, `Some(Null)` for `null`), from the signed text when there is one.
pub fn rpc_data(env: &Envelope) -> Option<Value> {
    let signed = env.signed_data_text().filter(|t| t.starts_with('{'));
    if let Some(Ok(v)) = signed.map(|text| {
        signed_member(text, "rpcData")
            .map(serde_json::from_str)
            .transpose()
    }) {
        return v;
    }
    env.data()?.get("rpcData").cloned()
}

/// The text of member `name` of a signed object's text.
fn signed_member<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    signed_form::members(text)
        .find(|(key, _)| *key == name)
        .and_then(|(_, span)| text.get(span))
}

/// A `direct` message's `directData`, as [`topic_payload`] reads a payload.
pub fn direct_data(env: &Envelope) -> Option<&Value> {
    env.data()?.get("directData")
}

/// A `direct` message's `directData` read straight into `T`, as
/// [`topic_payload_as`] reads a payload.
pub fn direct_data_as<T: DeserializeOwned>(env: &Envelope) -> Result<T, serde_json::Error> {
    member_as(env, "directData")
}

/// Member `name` of `env`'s data object read into `T` (absent reads as
/// `null`), from the signed text when there is one.
fn member_as<T: DeserializeOwned>(env: &Envelope, name: &str) -> Result<T, serde_json::Error> {
    if let Some(text) = env.signed_data_text() {
        let member = signed_form::members(text).find(|(key, _)| *key == name);
        return match member.and_then(|(_, span)| text.get(span)) {
            Some(value) => serde_json::from_str(value),
            None => T::deserialize(&Value::Null),
        };
    }
    match env.data().and_then(|d| d.get(name)) {
        Some(v) => T::deserialize(v),
        None => T::deserialize(&Value::Null),
    }
}

fn topic_of(v: Option<&Value>) -> Option<String> {
    v.map(|v| js_string(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Header;
    use serde_json::json;

    fn env(t: &str, from: Option<&str>, data: Value) -> Envelope {
        Envelope::new(
            &Header {
                id: "i",
                ts: 1,
                msg_type: t,
                from,
                to: None,
            },
            Some(data),
        )
    }

    /// A frame as our peers send it (signing form), parsed back by the
    /// scanner and by the authenticate-first path.
    fn wire(t: &str, data: Value) -> [Envelope; 2] {
        let key = crate::Key::new("k", crate::HashAlgo::Sha256).unwrap();
        let frame = env(t, Some("a"), data).encode(&key);
        let scanned = crate::envelope::parse_frame(frame.as_bytes(), 1 << 20)
            .unwrap()
            .envelope;
        let authentic = crate::envelope::parse_authentic(&frame, 1 << 20, &key).unwrap();
        [scanned, authentic]
    }

    #[test]
    fn the_scanned_last_member_reads_as_the_text_does() {
        let cases = [
            (
                json!({"payload": {"topic": "no"}, "topic": "t.x"}),
                "topic",
                Some("t.x"),
            ),
            (json!({"topic": "t"}), "topic", Some("t")),
            (json!({"topic": "é€"}), "topic", Some("é€")),
            (json!({"payload": 1, "topic": "a\"b"}), "topic", None),
            (json!({"payload": 1, "topic": 5}), "topic", None),
            (json!({"payload": "x", "topic": ""}), "topic", Some("")),
            (
                json!({"directData": [1], "directType": "ping"}),
                "directType",
                Some("ping"),
            ),
            (
                json!({"rpcData": {}, "rpcType": "sum"}),
                "rpcType",
                Some("sum"),
            ),
            (json!({"rpcType": "sum", "z": 1}), "rpcType", None),
            (json!({}), "topic", None),
        ];
        for (data, name, want) in cases {
            let [scanned, _] = wire(msg_type::TOPIC_MESSAGE, data.clone());
            let recorded = scanned.scanned_last_member(name).and_then(plain_string);
            assert_eq!(recorded, want, "{data}");
            let text = scanned.signed_data_text().unwrap();
            assert_eq!(signed_tail::last_string_member(text, name), want, "{data}");
        }
        // Past two members the scan keeps no record of the last: the text is read.
        let [scanned, _] = wire(
            msg_type::TOPIC_MESSAGE,
            json!({"a": 1, "b": 2, "topic": "t"}),
        );
        assert_eq!(scanned.scanned_last_member("topic"), None);
        assert_eq!(
            Message::parse(&scanned),
            Message::TopicMessage {
                topic: Some("t".into())
            }
        );
    }

    #[test]
    fn rpc_type_and_data_read_like_parse_from_text_and_tree() {
        let p = json!({"z": [1.5, "x"], "a": null});
        for data in [
            json!({"rpcType": "sum", "rpcData": p}),
            json!({"rpcType": "sum", "rpcData": null}),
            json!({"rpcType": "sum"}),
            json!({"rpcType": "s\"um", "rpcData": 1}),
            json!({"rpcType": "", "rpcData": 1}),
            json!({"rpcType": 5, "rpcData": 1}),
            json!({"rpcType": null}),
            json!({"rpcData": 1}),
            json!({"rpcType": "sum", "rpcData": 1, "extra": true}),
            json!([1]),
            Value::Null,
        ] {
            for e in wire(msg_type::RPC_REQUEST, data.clone()) {
                match Message::parse(&e) {
                    Message::RpcRequest { rpc_type, rpc_data } => {
                        // A type with escapes is left to `parse`.
                        if let Some(t) = super::rpc_type(&e) {
                            assert_eq!(t, rpc_type, "{data}");
                        } else {
                            assert!(rpc_type.contains('\\') || rpc_type.contains('"'), "{data}");
                        }
                        assert_eq!(super::rpc_data(&e), rpc_data, "{data}");
                    }
                    other => {
                        assert_eq!(other, Message::Malformed(msg_type::RPC_REQUEST), "{data}");
                        assert_eq!(rpc_type(&e), None, "{data}");
                    }
                }
            }
        }
    }

    #[test]
    fn signed_text_reads_like_the_tree() {
        let p = json!({"z": [1.5, "x"], "a": null});
        let mut signed = 0;
        for t in [
            msg_type::TOPIC_MESSAGE,
            msg_type::DIRECT,
            msg_type::RPC_REQUEST,
        ] {
            for data in [
                json!({"topic": "t", "payload": p}),
                json!({"topic": "t", "payload": null}),
                json!({"topic": "t"}),
                json!({"topic": null, "payload": 1}),
                json!({"topic": 5, "payload": 1}),
                json!({"topic": "t", "extra": 1}),
                json!({"topic": "t", "zzz": 1}),
                json!({"payload": {"topic": "inner"}, "topic": "outer"}),
                json!({"directData": {"directType": "inner"}, "directType": "outer"}),
                json!({"directType": "d", "directData": p}),
                json!({"directType": "", "directData": 1}),
                json!({"directType": 3, "directData": null}),
                json!({"directType": "d"}),
                json!({"rpcType": "r", "rpcData": p}),
                json!({"rpcType": "", "rpcData": null}),
                json!({"rpcType": 1}),
                json!({"topic": "a\"b", "directType": "d\n", "rpcType": "r\\"}),
                json!(["t", 1]),
                json!("t"),
                json!({}),
            ] {
                let tree = env(t, Some("a"), data.clone());
                let payload = topic_payload(&tree).cloned();
                let direct = direct_data(&tree).cloned();
                for on_wire in wire(t, data.clone()) {
                    signed += usize::from(Message::parse_signed(&on_wire).is_some());
                    assert_eq!(
                        Message::parse(&on_wire),
                        Message::parse(&tree),
                        "{t} {data}"
                    );
                    assert_eq!(topic_payload(&on_wire), payload.as_ref(), "{data}");
                    assert_eq!(direct_data(&on_wire), direct.as_ref(), "{data}");
                    assert_eq!(on_wire.canonical_data(), tree.canonical_data(), "{data}");
                }
                for e in wire(t, data.clone()).iter().chain([&tree]) {
                    let typed: Value = topic_payload_as(e).unwrap();
                    assert_eq!(typed, payload.clone().unwrap_or_default(), "{data}");
                    let typed: Value = direct_data_as(e).unwrap();
                    assert_eq!(typed, direct.clone().unwrap_or_default(), "{data}");
                }
            }
        }
        // topic.message: every object whose topic is absent, null or a string
        // without escapes; direct and rpc.request: the two with such a name.
        // Twice: once per parse path.
        assert_eq!(
            signed,
            2 * (16 + 3 + 2),
            "plain objects are read off the text"
        );
    }

    #[test]
    fn relay_data_is_the_rebuilt_payload_or_nothing() {
        let p = json!({"z": [1.5, "x"], "a": null});
        let cases = [
            (
                msg_type::TOPIC_MESSAGE,
                json!({"topic": "t", "payload": p}),
                topic_message_value("t", Some(p.clone())),
            ),
            (
                msg_type::TOPIC_MESSAGE,
                json!({"topic": "t"}),
                topic_message_value("t", None),
            ),
            (
                // Members inside the payload are the payload's.
                msg_type::TOPIC_MESSAGE,
                json!({"topic": "t", "payload": {"topic": 5, "x": {"y": 1}}}),
                topic_message_value("t", Some(json!({"topic": 5, "x": {"y": 1}}))),
            ),
            (
                msg_type::DIRECT,
                json!({"directType": "d", "directData": p}),
                direct_value("d", Some(p.clone())),
            ),
            (
                msg_type::RPC_REQUEST,
                json!({"rpcType": "r", "rpcData": null}),
                rpc_request_value("r", Some(Value::Null)),
            ),
            (
                msg_type::RPC_RESPONSE,
                json!({"ok": true, "result": p}),
                json!({"ok": true, "result": p}),
            ),
        ];
        for (t, data, rebuilt) in cases {
            let got = relay_data(&wire(t, data)[0]).map(|d| d.as_str().to_owned());
            assert_eq!(got, Some(crate::canonical::to_string(&rebuilt)), "{t}");
        }
        // Anything the hub would rewrite is rebuilt instead.
        for (t, data) in [
            (msg_type::TOPIC_MESSAGE, json!({"topic": 5, "payload": 1})),
            (msg_type::TOPIC_MESSAGE, json!({"topic": "t", "extra": 1})),
            (
                msg_type::TOPIC_MESSAGE,
                json!({"payload": 1, "q": 2, "topic": "t"}),
            ),
            (msg_type::TOPIC_MESSAGE, json!({"payload": 1})),
            (msg_type::TOPIC_MESSAGE, json!({})),
            (
                msg_type::DIRECT,
                json!({"directData": 1, "directType": "d", "x": 1}),
            ),
            (msg_type::DIRECT, json!({"directData": 1})),
            (msg_type::RPC_REQUEST, json!({"rpcType": "r", "to": "x"})),
            (msg_type::STATUS_UPDATE, json!({"state": "idle"})),
            (msg_type::TOPIC_MESSAGE, json!([1])),
        ] {
            assert_eq!(relay_data(&wire(t, data.clone())[0]), None, "{t} {data}");
        }
    }

    #[test]
    fn hello_sanitisation_follows_the_hub() {
        let h = Hello::sanitize(Some(
            &json!({"kind": " alpha ", "name": 5, "pid": "x", "startedAt": 12}),
        ))
        .unwrap();
        assert_eq!(h.kind, "alpha");
        assert_eq!(h.name, "5");
        assert_eq!(h.pid, None);
        assert_eq!(h.started_at, Some(12.0));
        assert_eq!(
            h.to_value(),
            json!({"kind":"alpha","name":"5","pid":null,"startedAt":12})
        );
        assert_eq!(Hello::sanitize(None), Err(KindError::Missing));
        assert_eq!(
            Hello::sanitize(Some(&json!({"kind": "server"}))),
            Err(KindError::Reserved)
        );
        assert_eq!(
            Hello::sanitize(Some(&json!({"kind": {"a": 1}}))),
            Err(KindError::Invalid)
        );
    }

    #[test]
    fn rpc_response_fallbacks() {
        assert_eq!(
            RpcResponse::parse(Some(&json!({"ok": false}))),
            RpcResponse::Err {
                error: "RPC error".into(),
                code: "RPC_REMOTE".into(),
                data: None
            }
        );
        assert_eq!(
            RpcResponse::parse(Some(&json!({"ok": 1}))),
            RpcResponse::Ok { result: None }
        );
        let e = RpcResponse::error(RpcErrorCode::NoTarget, "Target not connected: ghost");
        assert_eq!(
            e.to_value(),
            json!({"ok":false,"error":"Target not connected: ghost","code":"RPC_NO_TARGET"})
        );
    }

    #[test]
    fn parses_each_type() {
        assert_eq!(
            Message::parse(&env("direct", Some("a"), json!({"directType": "ping"}))),
            Message::Direct {
                direct_type: "ping".into(),
            }
        );
        assert_eq!(
            Message::parse(&env("direct", Some("a"), json!({"directType": ""}))),
            Message::Malformed("direct")
        );
        assert_eq!(
            Message::parse(&env("topic.unsubscribe", Some("a"), json!({"topic": ""}))),
            Message::Unsubscribe { topic: None }
        );
        assert_eq!(
            Message::parse(&env(
                "status.update",
                Some("server"),
                json!({"from": "a", "status": 1, "at": 5})
            )),
            Message::StatusFanout {
                from: "a".into(),
                status: Some(json!(1)),
                at: 5.0
            }
        );
        assert_eq!(
            Message::parse(&env("weird", None, json!(1))),
            Message::Unknown
        );
        let ack = HelloAck::parse(Some(&json!({"ok": true, "features": "nope"})));
        assert!(ack.ok && ack.features.is_empty());
        assert!(!HelloAck::parse(Some(&json!({"ok": false, "error": "no"}))).ok);
    }
}
