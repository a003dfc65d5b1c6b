//! Target `server_socket`: the bytes a WebSocket client sends, read by the
//! hub's socket.
//!
//! `link_transport::ServerSocket` reads whole data frames itself and hands
//! the rest to tungstenite. Checks that for any byte stream, arriving in
//! pieces of any size and then ended, it yields exactly what tungstenite's
//! own server socket yields (the same frames in the same order, then the
//! same error or end) and writes back the same bytes (pongs, the close
//! reply).
use std::pin::pin;

use futures_util::StreamExt;
use link_transport::{Frame, ServerSocket, TransportError, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Caps small enough that short inputs cross them.
const CAP: usize = 300;

/// Frames (or errors) read past which a run stops.
const MOST: usize = 1_000;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64)
        .max_message_size(Some(CAP))
        .max_frame_size(Some(CAP))
}

/// Runs one input: its first byte sets the size of the pieces the rest
/// arrives in.
pub fn run(data: &[u8]) {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        panic!("no runtime");
    };
    rt.block_on(async {
        let (ours, ours_wrote) = {
            let (io, peer) = duplex(1 << 16);
            let socket = ServerSocket::from_raw_socket(io, config()).await;
            read_all(socket, peer, bytes, step).await
        };
        let (theirs, theirs_wrote) = {
            let (io, peer) = duplex(1 << 16);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
            read_all(WebSocket::new(ws), peer, bytes, step).await
        };
        assert_eq!(ours, theirs, "read differently from tungstenite");
        assert_eq!(
            ours_wrote, theirs_wrote,
            "wrote back differently from tungstenite"
        );
    });
}

/// Feeds `bytes` to `socket` `step` at a time, then ends the stream, and
/// reads until the socket ends; what it read, and what it wrote back.
async fn read_all<T>(
    socket: T,
    peer: DuplexStream,
    bytes: &[u8],
    step: usize,
) -> (Vec<Result<Frame, TransportError>>, Vec<u8>)
where
    T: futures_util::Stream<Item = Result<Frame, TransportError>>,
{
    let (mut from_socket, mut to_socket) = tokio::io::split(peer);
    let feed = async {
        for piece in bytes.chunks(step) {
            if to_socket.write_all(piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = to_socket.shutdown().await;
    };
    let read = async {
        let mut socket = pin!(socket);
        let mut got = Vec::new();
        while let Some(item) = socket.next().await {
            got.push(item);
            if got.len() == MOST {
                break;
            }
        }
        got
    };
    let ((), got) = tokio::join!(feed, read);
    // The socket is dropped with `read`: what it wrote back is all there.
    let mut wrote = Vec::new();
    let _ = from_socket.read_to_end(&mut wrote).await;
    (got, wrote)
}
