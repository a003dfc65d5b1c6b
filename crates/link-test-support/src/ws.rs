//! Client WebSockets on loopback, Nagle off.

use std::net::SocketAddr;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::WAIT;

/// A client WebSocket as the tests hold it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` with Nagle's algorithm off.
pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("websocket connect")
        .0
}

/// Opens a WebSocket (`ws://<addr>` only) whose TCP receive buffer is as
/// small as the kernel allows, so a test that stops reading makes the
/// other side's writer stall fast.
pub async fn connect_small_rcvbuf(url: &str) -> Ws {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .expect("a ws://<ip:port> url");
    let sock = TcpSocket::new_v4().expect("a TCP socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = sock.connect(addr).await.expect("tcp connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .expect("websocket handshake")
        .0
}

/// Reads a socket to its end (after a close frame: sends the automatic
/// reply and waits for the other side to drop the connection).
pub async fn finish(ws: &mut Ws) {
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("timed out finishing a close handshake");
}
