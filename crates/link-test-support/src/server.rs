//! The test server: a [`HubServer`] on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::ops::Deref;

use link_hub::{HubConfig, HubServer, HubServerBuilder, Secret};

use crate::ports::LOOPBACK_ANY_PORT;

/// A started [`HubServer`] on `127.0.0.1:0` (the server binds the port
/// itself and reports the real address; it sets `TCP_NODELAY` on every
/// connection). Derefs to the server.
///
/// Dropping it starts [`HubServer::stop`] unless a stop already began;
/// call `stop()` to wait for the outcome.
pub struct TestServer {
    /// The server.
    pub server: HubServer,
    /// The bound address (the real port).
    pub addr: SocketAddr,
    /// `ws://<addr><path>`.
    pub url: String,
}

impl TestServer {
    /// A server builder for `config`: bound to `127.0.0.1:0`, without
    /// signal handling; every other option at its default.
    pub fn builder(config: HubConfig) -> HubServerBuilder {
        HubServer::builder(config)
            .bind(LOOPBACK_ANY_PORT)
            .handle_signals(false)
    }

    /// Builds and starts `builder` (made by [`TestServer::builder`], or at
    /// least bound to a port-0 address).
    pub async fn start(builder: HubServerBuilder) -> Self {
        let server = builder.build().expect("a usable server config");
        server.start().await.expect("the server starts");
        let addr = server.local_addr().expect("a started server's address");
        let url = server.url().expect("a started server's url");
        Self { server, addr, url }
    }

    /// A started server with one shared `secret` and default options.
    pub async fn shared(secret: &str) -> Self {
        let config = HubConfig::builder(Secret::shared(secret))
            .build()
            .expect("a default hub config");
        Self::start(Self::builder(config)).await
    }
}

impl Deref for TestServer {
    type Target = HubServer;
    fn deref(&self) -> &HubServer {
        &self.server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.server.is_stopping() || self.server.is_stopped() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let server = self.server.clone();
            rt.spawn(async move { server.stop().await });
        }
    }
}
