//! The test hub: an in-process [`Hub`] with its own accept loop on
//! `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use link_client::{ClientConfig, ClientConfigBuilder};
use link_hub::{Hub, HubConfig, HubEvent, Secret};
use link_protocol::DropReason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::ports::reusable_listener;
use crate::{ClosedPort, Peer, Raw, Ws, connect, frame, fresh_id, key, next_event};

/// A [`Hub`] listening on `127.0.0.1:0`. Every accepted socket gets
/// `TCP_NODELAY` (small request/response frames: Nagle plus delayed ACKs
/// would add ~40 ms to many round trips) and is handed to
/// [`Hub::accept`] (or, [lenient](TestHubBuilder::lenient), upgraded with
/// tungstenite's defaults and handed to [`Hub::attach`]).
///
/// Dropping it stops accepting and stops the hub; [`stop`](Self::stop)
/// does the same and waits for it, [`kill`](Self::kill) drops every
/// socket first and keeps the address for a restart.
pub struct TestHub {
    /// The hub.
    pub hub: Hub,
    /// The address the listener was bound to (the real port).
    pub addr: SocketAddr,
    /// `ws://<addr>`.
    pub url: String,
    /// The secret [`client`](Self::client) and [`peer`](Self::peer) use.
    secret: Option<String>,
    /// The accept loop (which owns the listener) until stopped.
    accept: Option<JoinHandle<()>>,
}

/// Options of a [`TestHub`]; [`start`](Self::start) binds and listens.
#[must_use]
pub struct TestHubBuilder {
    config: HubConfig,
    secret: Option<String>,
    lenient: bool,
    port: Option<ClosedPort>,
}

impl TestHubBuilder {
    /// Accept sockets with tungstenite's default WebSocket limits (64 MiB),
    /// then hand them to [`Hub::attach`]: the "bare hub + your own
    /// WebSocket server" case, where the envelope parser's own size check
    /// (`oversize`) is the one that fires (protocol §1, §4.1 step 1). Default:
    /// [`Hub::accept`], with the hub's own limits.
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// The secret [`TestHub::client`] and [`TestHub::peer`] use (set by
    /// [`TestHub::shared`]; needed with per-kind keys to use them).
    pub fn client_secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_owned());
        self
    }

    /// Listen on an address held since an earlier hub was
    /// [killed](TestHub::kill) (default: a fresh port).
    pub fn on(mut self, port: ClosedPort) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts listening.
    pub async fn start(self) -> TestHub {
        self.start_with_events().await.0
    }

    /// Starts listening, with a hub event receiver subscribed before the
    /// first socket could arrive (for hubs that clients reach on their own,
    /// e.g. after a restart).
    pub async fn start_with_events(self) -> (TestHub, broadcast::Receiver<Arc<HubEvent>>) {
        let hub = Hub::new(self.config);
        let events = hub.events();
        let (listener, addr) = match self.port {
            Some(port) => {
                let addr = port.addr();
                (port.listen(), addr)
            }
            None => reusable_listener(),
        };
        let accept = tokio::spawn(accept_loop(listener, hub.clone(), self.lenient));
        let test_hub = TestHub {
            hub,
            addr,
            url: format!("ws://{addr}"),
            secret: self.secret,
            accept: Some(accept),
        };
        (test_hub, events)
    }
}

async fn accept_loop(listener: TcpListener, hub: Hub, lenient: bool) {
    while let Ok((tcp, remote)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(hub.clone(), tcp, remote, lenient));
    }
}

async fn serve(hub: Hub, tcp: TcpStream, remote: SocketAddr, lenient: bool) {
    if lenient {
        if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
            hub.attach(ws, Some(remote));
        }
    } else {
        let _ = hub.accept(tcp, Some(remote)).await;
    }
}

impl TestHub {
    /// A builder for a hub with `config` (keys, ACL, limits: everything
    /// [`HubConfig`] holds).
    pub fn builder(config: HubConfig) -> TestHubBuilder {
        TestHubBuilder {
            config,
            secret: None,
            lenient: false,
            port: None,
        }
    }

    /// A hub with `config`, listening.
    pub async fn start(config: HubConfig) -> Self {
        Self::builder(config).start().await
    }

    /// A hub with one shared `secret` and default options, listening.
    pub async fn shared(secret: &str) -> Self {
        let config = HubConfig::builder(Secret::shared(secret))
            .build()
            .expect("a default hub config");
        Self::builder(config).client_secret(secret).start().await
    }

    /// Subscribes to the hub's events.
    pub fn events(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.hub.events()
    }

    fn secret(&self) -> &str {
        self.secret
            .as_deref()
            .expect("TestHub without a client secret (see TestHubBuilder::client_secret)")
    }

    /// A `LinkClient` config for this hub as `kind`, with the hub's
    /// secret and a 20 ms first reconnect.
    pub fn client(&self, kind: &str) -> ClientConfigBuilder {
        ClientConfig::builder()
            .url(&self.url)
            .secret(self.secret())
            .kind(kind)
            .reconnect_initial(Duration::from_millis(20))
    }

    /// Opens a WebSocket (no hello).
    pub async fn raw(&self) -> Ws {
        connect(&self.url).await
    }

    /// A raw socket, scripted frame by frame.
    pub async fn raw_peer(&self) -> Raw {
        Raw::connect(&self.url).await
    }

    /// Connects and completes the handshake as `kind` with `secret`.
    pub async fn peer(&self, kind: &str, secret: &str) -> Peer {
        Peer::connect(&self.url, kind, secret).await
    }

    /// A raw socket the hub has attached (registered as pending): it sent a
    /// pre-hello probe of type `probe` and the hub reported dropping it.
    pub async fn pending(&self, probe: &str) -> Raw {
        let mut rx = self.hub.events();
        let mut raw = self.raw_peer().await;
        raw.send_text(probe_frame(probe)).await;
        probe_dropped(&mut rx, probe).await;
        raw
    }

    /// Connects `kind` and waits until every other listed peer has seen it
    /// in a `peers.update` (useful to start from a quiet state).
    pub async fn peer_seen_by(&self, kind: &str, secret: &str, others: &mut [&mut Peer]) -> Peer {
        let p = self.peer(kind, secret).await;
        for o in others.iter_mut() {
            o.peers_update_with(kind).await;
        }
        p
    }

    /// Stops listening (the listener is closed when this returns).
    async fn stop_accepting(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }

    /// Stops listening, then stops the hub ([`Hub::stop`]: pending sockets
    /// are closed with 1001, authenticated ones without a code).
    pub async fn stop(mut self) {
        self.stop_accepting().await;
        self.hub.stop().await;
    }

    /// Stops listening, drops every socket without a close handshake and
    /// stops the hub. The address stays reserved, with connections refused,
    /// until the returned port is dropped or a new hub is started
    /// [on](TestHubBuilder::on) it.
    pub async fn kill(mut self) -> ClosedPort {
        let port = ClosedPort::share(self.addr);
        self.stop_accepting().await;
        self.hub.terminate_all().await;
        self.hub.stop().await;
        port
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        // Not stopped or killed yet.
        if let Some(accept) = self.accept.take() {
            accept.abort();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let hub = self.hub.clone();
                rt.spawn(async move { hub.stop().await });
            }
        }
    }
}

/// Sends `direct` fillers of `chunk` bytes from `from` to `to` (a peer that
/// is not reading, connected with [`Peer::connect_stalling`]) until the
/// hub's writer for `to` is stuck on the full socket: from then on, frames
/// to `to` wait in its outbox (where they can be conflated, cancelled or
/// refused). Returns the number of fillers sent.
///
/// "Stuck" is read off `health()` after a round trip: queued bytes that
/// survive a round trip *and grow* by the next one were not taken by the
/// writer, which takes everything queued whenever it runs.
pub async fn stall(hub: &Hub, from: &mut Peer, to: &str, chunk: usize) -> usize {
    let filler = "f".repeat(chunk);
    let mut prev = 0;
    for n in 1..=2000 {
        from.send(
            "direct",
            Some(to),
            Some(serde_json::json!({"directType": "filler", "directData": filler})),
        )
        .await;
        from.barrier().await;
        let queued = hub.health().await.outbox_bytes;
        if prev > 0 && queued > prev {
            return n;
        }
        prev = queued;
    }
    panic!("{to} never stalled");
}

/// A pre-hello frame of type `probe`: the hub drops it and reports the drop,
/// which proves it has attached the socket (and holds it as pending).
pub fn probe_frame(probe: &str) -> String {
    frame(&key("unused"), &fresh_id(probe), probe, None, None, None)
}

/// Waits for the hub to report dropping the pre-hello probe `probe`.
pub async fn probe_dropped(rx: &mut broadcast::Receiver<Arc<HubEvent>>, probe: &str) {
    next_event(rx, |e| {
        matches!(e, HubEvent::ProtocolError { error, .. }
            if error.reason == DropReason::PreHelloMessage
                && error.msg_type.as_deref() == Some(probe))
    })
    .await;
}
