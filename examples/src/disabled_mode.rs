//! A service that runs without a bus: its `LinkClient` has no url or
//! secret, so it is *disabled*. It never connects and every operation
//! fails at once with `LINK_NOT_READY`; the service treats that as "no
//! bus" and keeps doing its own work.
//!
//! The same code runs on a real bus (set `ORDERS_LINK_URL` and
//! `ORDERS_LINK_SECRET`): then a pricing service that is not there
//! (`RPC_NO_TARGET`), slow (`RPC_TIMEOUT`), gone mid-call
//! (`RPC_DISCONNECT`) or backpressured is handled the same way, with the
//! local price list; only errors that mean a bug (a malformed answer, a bad
//! argument) end the run.
//!
//! ```text
//!  order ──► price: rpc("pricing") ── LINK_NOT_READY / RPC_NO_TARGET / … ──► local price list
//!        ──► total ──► SafePublisher("orders.processed") ── skipped (false) when disabled
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use link::helpers::rpc::{SafePublisher, wait_for_peer};
use link::{ClientConfig, LinkClient, LinkError};
use serde::Serialize;
use serde_json::json;

use crate::Result;

/// This service's kind.
pub const KIND: &str = "orders";

/// What [`run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisabledReport {
    /// The client was disabled.
    pub disabled: bool,
    /// Orders handled.
    pub processed: u64,
    /// Sum of the order totals, in cents.
    pub total_cents: u64,
    /// Prices taken from the local list because the pricing RPC failed.
    pub local_prices: u64,
    /// Publishes that went out.
    pub published: u64,
    /// Publishes skipped (no bus).
    pub skipped: u64,
    /// Every error code seen from the link.
    pub codes: BTreeSet<String>,
}

/// A disabled client: a kind, but no url and no secret.
pub fn disabled_client() -> Result<LinkClient> {
    Ok(LinkClient::new(ClientConfig::builder().kind(KIND).build()?))
}

/// Processes `orders` orders with `client`, using the bus when it can and
/// working on without it when it cannot.
pub async fn run(client: &LinkClient, orders: u64) -> Result<DisabledReport> {
    let mut report = DisabledReport {
        disabled: client.is_disabled(),
        ..DisabledReport::default()
    };
    // Neither call waits when the link is disabled: both fail at once.
    match client.ready(Some(Duration::from_secs(5))).await {
        Ok(_) => tracing::info!("on the bus"),
        Err(e) => {
            tracing::warn!(code = e.code(), "running without the bus: {e}");
            report.codes.insert(e.code().to_owned());
        }
    }
    if let Err(e) = wait_for_peer(client, "pricing", Some(Duration::from_secs(1)), true).await {
        tracing::info!(code = e.code(), "no pricing service: {e}");
        report.codes.insert(e.code().to_owned());
    }

    let events = SafePublisher::new(client.clone());
    for order in 1..=orders {
        let quantity = order % 3 + 1;
        let unit_cents = match price(client, order).await {
            Ok(cents) => cents,
            Err(e) => {
                // No price from the bus: fall back. Anything else is a bug.
                if !pricing_unavailable(&e) {
                    return Err(e.into());
                }
                report.codes.insert(e.code().to_owned());
                report.local_prices += 1;
                local_price(order)
            }
        };
        let total = unit_cents * quantity;
        report.processed += 1;
        report.total_cents += total;
        // Fire-and-forget that never fails: `false` means skipped (logged at debug).
        if events.publish(
            "orders.processed",
            json!({ "order": order, "totalCents": total }),
        ) {
            report.published += 1;
        } else {
            report.skipped += 1;
        }
    }
    if let Err(e) = client.send("audit", "orders.batch", Some(json!({ "count": orders }))) {
        report.codes.insert(e.code().to_owned());
    }
    client.stop().await; // a no-op for a disabled link
    Ok(report)
}

/// Asks the pricing service for a unit price (cents).
async fn price(client: &LinkClient, order: u64) -> Result<u64, LinkError> {
    let quote = client
        .rpc("pricing", "price.quote", Some(json!({ "order": order })))
        .await?;
    quote["unitCents"]
        .as_u64()
        .ok_or_else(|| LinkError::Decode("price.quote: no unitCents".into()))
}

/// Whether `err` means "the bus cannot price this now" (no bus, no pricing
/// peer, a slow or vanished one, a full outbox), as opposed to a bug.
fn pricing_unavailable(err: &LinkError) -> bool {
    err.is_transient()
        || matches!(
            err.code(),
            "LINK_NOT_READY" | "RPC_NO_TARGET" | "RPC_TARGET_UNAVAILABLE" | "BACKPRESSURE"
        )
}

/// The fallback price list.
fn local_price(order: u64) -> u64 {
    [499, 1250, 899][usize::try_from(order % 3).unwrap_or(0)]
}
