//! Loopback ports without the bind-then-drop race.
//!
//! A port is never "found free" and then released for someone else to
//! bind: a listener bound on `127.0.0.1:0` is handed to whatever serves
//! it, and an address where nothing may listen is held by a socket that
//! is bound but never listens ([`ClosedPort`]), so connections to it are
//! refused and no other process can take the port meanwhile.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// Backlog of every listener made here.
const BACKLOG: u32 = 1024;

/// `127.0.0.1:0`.
pub const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A tokio listener on `127.0.0.1:0` and the address the kernel gave it.
pub async fn local_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(LOOPBACK_ANY_PORT)
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener's address");
    (listener, addr)
}

/// A blocking std listener on `127.0.0.1:0` (for tests without a
/// runtime), e.g. to hold an address that is in use.
pub fn std_listener() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener's address");
    (listener, addr)
}

/// A loopback address where nothing listens, reserved for as long as this
/// value lives: the socket is bound but not listening, so every connection
/// attempt is refused at once. [`listen`](Self::listen) turns it into a
/// listener on the same address (a "restarted" server).
#[derive(Debug)]
pub struct ClosedPort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves a fresh port on `127.0.0.1`.
    pub fn new() -> Self {
        Self::bind(LOOPBACK_ANY_PORT, false)
    }

    /// Reserves `addr`, which a listener made by [`reusable_listener`]
    /// still holds: both sockets share the port, connections go to the
    /// listener while it lives and are refused once it is gone.
    pub(crate) fn share(addr: SocketAddr) -> Self {
        Self::bind(addr, true)
    }

    fn bind(addr: SocketAddr, shared: bool) -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        // SO_REUSEPORT only: sockets of this user that also set it may
        // share the port (the listener and the socket holding its address
        // after a kill). No SO_REUSEADDR: it would let any other socket with
        // SO_REUSEADDR bind the port while it is held and not listening.
        #[cfg(unix)]
        if shared {
            socket.set_reuseport(true).expect("SO_REUSEPORT");
        }
        #[cfg(not(unix))]
        let _ = shared;
        socket.bind(addr).expect("bind a loopback port");
        let addr = socket.local_addr().expect("a bound socket's address");
        Self { socket, addr }
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Starts listening on the reserved address.
    pub fn listen(self) -> TcpListener {
        self.socket
            .listen(BACKLOG)
            .expect("listen on a reserved port")
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener on `127.0.0.1:0` whose port a [`ClosedPort`] can hold on to
/// after the listener is dropped (`SO_REUSEPORT` on both), so a test can
/// take a server down and bring it back on the same address without
/// releasing the port in between.
pub(crate) fn reusable_listener() -> (TcpListener, SocketAddr) {
    let port = ClosedPort::bind(LOOPBACK_ANY_PORT, true);
    let addr = port.addr();
    (port.listen(), addr)
}
