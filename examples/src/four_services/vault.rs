//! [`Vault`]: a secrets peer speaking the `link::helpers::secrets` wire
//! contract from an in-memory store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use link::helpers::secrets::{CHANGED_TOPIC_PREFIX, GET_RPC};
use link::{ClientConfigBuilder, HandlerError, LinkClient};
use serde_json::{Value, json};

use super::VAULT;
use crate::Result;

type Store = Arc<Mutex<BTreeMap<String, String>>>;

/// The secrets vault (kind [`VAULT`]).
///
/// - RPC `secs.get` with `{"path": "sec/<ns>/<rest>"}` answers
///   `{"value": "<string>"}`, or `{"value": null}` for an unknown path.
/// - [`rotate`](Self::rotate) stores a new value and publishes
///   `{"op": "set", "path"}` on `secs.changed.<ns>`.
#[derive(Debug)]
pub struct Vault {
    client: LinkClient,
    store: Store,
}

impl Vault {
    /// Connects as [`VAULT`] with `base` (url and key) serving `secrets`
    /// (path → value).
    pub fn start(base: ClientConfigBuilder, secrets: BTreeMap<String, String>) -> Result<Self> {
        let store: Store = Arc::new(Mutex::new(secrets));
        let lookup = store.clone();
        let config = base
            .kind(VAULT)
            .handler(GET_RPC, move |call| {
                let store = lookup.clone();
                async move {
                    let path = call
                        .data
                        .as_ref()
                        .and_then(|d| d.get("path"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| HandlerError::new("BAD_REQUEST", "expected {\"path\"}"))?;
                    let value = store
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(path)
                        .cloned();
                    tracing::info!(from = %call.from, path, found = value.is_some(), "secs.get");
                    Ok(json!({ "value": value }))
                }
            })
            .build()?;
        let client = LinkClient::new(config);
        client.start();
        Ok(Self { client, store })
    }

    /// The vault's client.
    pub fn client(&self) -> &LinkClient {
        &self.client
    }

    /// Stores `value` at `path` and tells subscribers of
    /// `secs.changed.<ns>` to fetch it again.
    pub fn rotate(&self, path: &str, value: &str) -> Result<()> {
        let ns = path
            .strip_prefix("sec/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(ns, _)| ns)
            .ok_or("a vault path is sec/<ns>/<rest>")?;
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), value.to_owned());
        tracing::info!(path, "secret rotated");
        self.client.publish(
            &format!("{CHANGED_TOPIC_PREFIX}{ns}"),
            json!({ "op": "set", "path": path }),
        )?;
        Ok(())
    }

    /// Stops the link (drains the outbox first).
    pub async fn stop(&self) {
        self.client.stop().await;
    }
}
