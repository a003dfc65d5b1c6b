//! A service that keeps working without a bus (disabled mode).
//!
//! ```text
//! cargo run -p link-examples --example disabled_mode
//! ```
//!
//! The "orders" service reads its link settings from `ORDERS_LINK_*`
//! variables (`ORDERS_LINK_URL`, `ORDERS_LINK_SECRET`, …). With none set,
//! its client is disabled: it never connects, every link operation fails at
//! once with `LINK_NOT_READY`, and the service falls back to a local price
//! list and skips its event publishes, processing every order anyway. Set
//! `ORDERS_LINK_URL` and `ORDERS_LINK_SECRET` to put it on a bus: it then
//! publishes, and asks a `pricing` peer for prices when one is connected
//! (without one it gets `RPC_NO_TARGET` and uses the local list again).

use link::LinkClient;
use link::helpers::env::{self, Env};
use link::helpers::logging::{self, LogOptions};
use link_examples::Result;
use link_examples::disabled_mode::{self, KIND};

#[tokio::main]
async fn main() -> Result<()> {
    logging::init(LogOptions::new().context(KIND).level("info"))?;
    let mut config = env::client_config_from_env("ORDERS_")?;
    if Env::process().string("ORDERS_LINK_KIND").is_none() {
        config = config.kind(KIND);
    }
    let client = LinkClient::new(config.build()?);
    if client.is_disabled() {
        tracing::warn!("no ORDERS_LINK_URL / ORDERS_LINK_SECRET: link disabled");
    }
    let report = disabled_mode::run(&client, 10).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
