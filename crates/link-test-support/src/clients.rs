//! Starting `LinkClient`s.

use link_client::{ClientConfigBuilder, LinkClient};

use crate::WAIT;

/// Builds a client, starts it and waits until it is ready.
pub async fn ready(builder: ClientConfigBuilder) -> LinkClient {
    let c = LinkClient::new(builder.build().expect("a usable client config"));
    c.ready(Some(WAIT)).await.expect("the client got ready");
    c
}

/// Builds a client and starts it, without waiting.
pub fn started(builder: ClientConfigBuilder) -> LinkClient {
    let c = LinkClient::new(builder.build().expect("a usable client config"));
    c.start();
    c
}
