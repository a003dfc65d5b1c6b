//! Secrets from a vault peer on the bus: [`load_secrets`] once at start,
//! or [`watch_secrets`] to follow rotations.
//!
//! ## Wire contract
//!
//! - Fetch: an RPC `secs.get` to the vault kind with data
//!   `{"path": "sec/<ns>/<rest>"}`, answered with `{"value": "<string>"}`.
//!   A missing or `null` `value` means the secret does not exist; any other
//!   type is an error. Remote errors are reported with their code.
//! - Changes: the vault publishes on topic `secs.changed.<ns>` a payload
//!   `{"op": "set", "path": "sec/<ns>/<rest>"}` (fetch it again) or
//!   `{"op": "del", "path": …}` (forget it). Other payloads are ignored.
//!
//! Paths are `sec/<ns>/<rest>` with a non-empty namespace made of
//! `[A-Za-z0-9._-]` (it becomes part of a topic name) and a non-empty rest.
//!
//! ```no_run
//! use std::time::Duration;
//! use link_helpers::secrets::load_secrets;
//!
//! # async fn demo(client: link_client::LinkClient) -> Result<(), link_helpers::secrets::SecretsError> {
//! let secrets = load_secrets(
//!     &client,
//!     [("DB_PASSWORD", "sec/billing/db/password"), ("API_KEY", "sec/billing/stripe")],
//!     "vault",
//!     Duration::from_secs(5),
//! )
//! .await?;
//! let db_password: &str = secrets.get("DB_PASSWORD").unwrap_or_default();
//! # let _ = db_password;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::try_join_all;
use futures_util::stream::SelectAll;
use link_client::{LinkClient, LinkError, RpcOptions, Subscription};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The RPC that fetches a secret.
pub const GET_RPC: &str = "secs.get";
/// Prefix of the change topics (`secs.changed.<ns>`).
pub const CHANGED_TOPIC_PREFIX: &str = "secs.changed.";

/// A secret that could not be loaded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The path is not `sec/<ns>/<rest>`.
    #[error("secret {name}: invalid path {path:?} (expected sec/<ns>/<rest>)")]
    InvalidPath {
        /// Variable name.
        name: String,
        /// The path.
        path: String,
    },
    /// The vault has no such secret (`value` absent or null).
    #[error("secret {name} ({path}) is missing")]
    Missing {
        /// Variable name.
        name: String,
        /// The path.
        path: String,
    },
    /// The answer's `value` is not a string.
    #[error("secret {name} ({path}) is a {found}, expected a string")]
    WrongType {
        /// Variable name.
        name: String,
        /// The path.
        path: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// The RPC failed (remote error, disconnect, not ready…).
    #[error("secret {name} ({path}): {error}")]
    Fetch {
        /// Variable name.
        name: String,
        /// The path.
        path: String,
        /// The RPC error (boxed: it names the call).
        error: Box<LinkError>,
    },
    /// The deadline passed before every secret arrived.
    #[error("secrets not loaded within {deadline:?}: {}", .pending.join(", "))]
    Deadline {
        /// The deadline.
        deadline: Duration,
        /// Names still outstanding.
        pending: Vec<String>,
    },
    /// Subscribing to a change topic failed.
    #[error("cannot watch {topic}: {error}")]
    Watch {
        /// The topic.
        topic: String,
        /// The error (boxed, as for `Fetch`).
        error: Box<LinkError>,
    },
}

impl SecretsError {
    /// Stable code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidPath { .. } => "SECRET_INVALID_PATH",
            Self::Missing { .. } => "SECRET_MISSING",
            Self::WrongType { .. } => "SECRET_WRONG_TYPE",
            Self::Fetch { .. } => "SECRET_FETCH_FAILED",
            Self::Deadline { .. } => "SECRET_DEADLINE",
            Self::Watch { .. } => "SECRET_WATCH_FAILED",
        }
    }
}

/// One mapped secret: variable name and vault path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    path: String,
    ns: String,
}

fn parse_mapping<K, V>(
    mapping: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<Entry>, SecretsError>
where
    K: Into<String>,
    V: Into<String>,
{
    mapping
        .into_iter()
        .map(|(k, v)| {
            let (name, path) = (k.into(), v.into());
            match namespace(&path) {
                Some(ns) => Ok(Entry {
                    ns: ns.to_owned(),
                    name,
                    path,
                }),
                None => Err(SecretsError::InvalidPath { name, path }),
            }
        })
        .collect()
}

/// The `<ns>` of `sec/<ns>/<rest>`, if the path is well formed.
fn namespace(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("sec/")?;
    let (ns, tail) = rest.split_once('/')?;
    let topic_ok = link_protocol::validate::is_valid_topic(&format!("{CHANGED_TOPIC_PREFIX}{ns}"));
    (!ns.is_empty() && !tail.is_empty() && topic_ok).then_some(ns)
}

/// Loaded secrets: variable name → value. `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Secrets {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No secrets.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Variable names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The map of name → value.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.values
    }
}

/// Fetches one secret; `deadline` bounds the RPC.
async fn fetch(
    client: &LinkClient,
    vault: &str,
    e: &Entry,
    deadline: Instant,
) -> Result<String, SecretsError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        // Mapped to `Deadline` by the caller.
        return Err(SecretsError::Fetch {
            name: e.name.clone(),
            path: e.path.clone(),
            error: Box::new(LinkError::RpcTimeout {
                to: vault.to_owned(),
                rpc_type: GET_RPC.to_owned(),
                id: String::new(),
                timeout: Duration::ZERO,
            }),
        });
    }
    let opts = RpcOptions {
        timeout: Some(remaining),
        cancel: None,
    };
    let answer = client
        .rpc_with(vault, GET_RPC, Some(json!({ "path": e.path })), opts)
        .await
        .map_err(|error| SecretsError::Fetch {
            name: e.name.clone(),
            path: e.path.clone(),
            error: Box::new(error),
        })?;
    match answer.get("value") {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(SecretsError::Missing {
            name: e.name.clone(),
            path: e.path.clone(),
        }),
        Some(other) => Err(SecretsError::WrongType {
            name: e.name.clone(),
            path: e.path.clone(),
            found: json_type(other),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

async fn load_entries(
    client: &LinkClient,
    entries: &[Entry],
    vault: &str,
    deadline: Duration,
) -> Result<Secrets, SecretsError> {
    let until = Instant::now() + deadline;
    let done = Mutex::new(BTreeSet::new());
    let all = try_join_all(entries.iter().map(|e| {
        let done = &done;
        async move {
            let v = fetch(client, vault, e, until).await?;
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(e.name.clone());
            Ok::<_, SecretsError>((e.name.clone(), v))
        }
    }));
    let result = tokio::time::timeout_at(until, all).await;
    let pending = || {
        let done = done.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .filter(|e| !done.contains(&e.name))
            .map(|e| e.name.clone())
            .collect::<Vec<_>>()
    };
    match result {
        Ok(Ok(values)) => Ok(Secrets {
            values: values.into_iter().collect(),
        }),
        Ok(Err(SecretsError::Fetch { error, .. }))
            if matches!(*error, LinkError::RpcTimeout { .. }) =>
        {
            Err(SecretsError::Deadline {
                deadline,
                pending: pending(),
            })
        }
        Err(_) => Err(SecretsError::Deadline {
            deadline,
            pending: pending(),
        }),
        Ok(Err(e)) => Err(e),
    }
}

/// Fetches every secret of `mapping` (variable name → `sec/<ns>/<rest>`)
/// from `vault_kind`, concurrently, under ONE deadline for the whole load.
/// Fails fast on the first missing, mistyped or failed secret, naming it;
/// on the deadline, names every secret still outstanding. The client must
/// be ready (or become ready quickly: RPCs fail with `LINK_NOT_READY`).
pub async fn load_secrets<K, V>(
    client: &LinkClient,
    mapping: impl IntoIterator<Item = (K, V)>,
    vault_kind: &str,
    deadline: Duration,
) -> Result<Secrets, SecretsError>
where
    K: Into<String>,
    V: Into<String>,
{
    let entries = parse_mapping(mapping)?;
    load_entries(client, &entries, vault_kind, deadline).await
}

/// A change seen by a [`SecretWatch`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SecretChange {
    /// The secret was refetched after an `op: "set"`.
    Updated {
        /// Variable name.
        name: String,
    },
    /// The secret was forgotten after an `op: "del"`.
    Removed {
        /// Variable name.
        name: String,
    },
    /// Refetching after an `op: "set"` failed; the old value is kept.
    Failed {
        /// Variable name.
        name: String,
        /// Why.
        error: SecretsError,
    },
}

/// Live secrets that follow `secs.changed.<ns>`. Dropping it (or
/// [`unwatch`](Self::unwatch)) stops watching and unsubscribes.
#[must_use = "the watch stops when dropped"]
pub struct SecretWatch {
    current: Arc<Mutex<Secrets>>,
    changes: mpsc::Receiver<SecretChange>,
    task: JoinHandle<()>,
}

impl fmt::Debug for SecretWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretWatch")
            .field(
                "current",
                &*self.current.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

impl SecretWatch {
    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(str::to_owned)
    }

    /// A copy of every current value.
    pub fn snapshot(&self) -> Secrets {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The next change, applied before it is reported (`None` once the
    /// watch ended). Changes are buffered (256); beyond that, notifications
    /// are dropped but values still update.
    pub async fn next_change(&mut self) -> Option<SecretChange> {
        self.changes.recv().await
    }

    /// Stops watching.
    pub fn unwatch(self) {}
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to the change topics of every namespace in `mapping`, then
/// loads the secrets as [`load_secrets`] does (subscribing first, so no
/// change between the two is lost), and keeps them current: `set`
/// refetches (bounded by `deadline` each), `del` removes.
pub async fn watch_secrets<K, V>(
    client: &LinkClient,
    mapping: impl IntoIterator<Item = (K, V)>,
    vault_kind: &str,
    deadline: Duration,
) -> Result<SecretWatch, SecretsError>
where
    K: Into<String>,
    V: Into<String>,
{
    let entries = parse_mapping(mapping)?;
    let namespaces: BTreeSet<&str> = entries.iter().map(|e| e.ns.as_str()).collect();
    let mut subs: SelectAll<Subscription> = SelectAll::new();
    for ns in namespaces {
        let topic = format!("{CHANGED_TOPIC_PREFIX}{ns}");
        let sub = client
            .subscribe(&topic)
            .map_err(|error| SecretsError::Watch {
                topic,
                error: Box::new(error),
            })?;
        subs.push(sub);
    }
    let initial = load_entries(client, &entries, vault_kind, deadline).await?;
    let current = Arc::new(Mutex::new(initial));
    let (tx, changes) = mpsc::channel(256);
    let task = tokio::spawn(follow(
        client.clone(),
        vault_kind.to_owned(),
        entries,
        deadline,
        subs,
        current.clone(),
        tx,
    ));
    Ok(SecretWatch {
        current,
        changes,
        task,
    })
}

async fn follow(
    client: LinkClient,
    vault: String,
    entries: Vec<Entry>,
    deadline: Duration,
    mut subs: SelectAll<Subscription>,
    current: Arc<Mutex<Secrets>>,
    tx: mpsc::Sender<SecretChange>,
) {
    while let Some(msg) = subs.next().await {
        let Some(payload) = msg.payload() else {
            continue;
        };
        let (Some(op), Some(path)) = (
            payload.get("op").and_then(Value::as_str),
            payload.get("path").and_then(Value::as_str),
        ) else {
            tracing::debug!(topic = %msg.topic, "ignoring malformed secret change");
            continue;
        };
        for e in entries.iter().filter(|e| e.path == path) {
            let change = match op {
                "set" => match fetch(&client, &vault, e, Instant::now() + deadline).await {
                    Ok(v) => {
                        current
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .values
                            .insert(e.name.clone(), v);
                        SecretChange::Updated {
                            name: e.name.clone(),
                        }
                    }
                    Err(error) => {
                        tracing::warn!(name = %e.name, "secret refetch failed: {error}");
                        SecretChange::Failed {
                            name: e.name.clone(),
                            error,
                        }
                    }
                },
                "del" => {
                    current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values
                        .remove(&e.name);
                    SecretChange::Removed {
                        name: e.name.clone(),
                    }
                }
                _ => continue,
            };
            let _ = tx.try_send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_a_namespace_and_a_rest() {
        assert_eq!(namespace("sec/billing/db/password"), Some("billing"));
        assert_eq!(namespace("sec/a.b-c/x"), Some("a.b-c"));
        for bad in [
            "sec/billing",
            "sec//x",
            "sec/billing/",
            "secs/a/b",
            "sec/bad ns/x",
            "sec/ü/x",
            "",
        ] {
            assert_eq!(namespace(bad), None, "{bad}");
        }
        let err = parse_mapping([("A", "sec/ns/x"), ("B", "nope")]).unwrap_err();
        assert_eq!(
            err,
            SecretsError::InvalidPath {
                name: "B".into(),
                path: "nope".into()
            }
        );
        assert_eq!(err.code(), "SECRET_INVALID_PATH");
    }

    #[test]
    fn debug_never_shows_values() {
        let s = Secrets {
            values: [("DB".to_owned(), "hunter2".to_owned())].into(),
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("DB") && !shown.contains("hunter2"));
    }

    #[tokio::test]
    async fn a_link_that_is_not_ready_fails_naming_the_secret() {
        let client = LinkClient::new(link_client::ClientConfig::builder().build().unwrap());
        let err = load_secrets(
            &client,
            [("DB", "sec/ns/db")],
            "vault",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        match err {
            SecretsError::Fetch { name, error, .. } => {
                assert_eq!(name, "DB");
                assert_eq!(error.code(), "LINK_NOT_READY");
            }
            other => panic!("{other:?}"),
        }
    }
}
