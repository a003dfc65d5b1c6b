//! # link-transport
//!
//! The seam between link's drivers (the hub's sockets, the client's link)
//! and the wire. A driver reads and writes [`Frame`]s through anything that
//! is a [`Transport`]: a `Stream` of frames and a `Sink` for them.
//!
//! ```text
//!   hub connection / client driver
//!        │ read: Stream<Item = Result<Frame, TransportError>>
//!        │ write: writer::write_loop(Sink<Frame>, queue, encoder)
//!        ▼
//!   Transport ── WebSocket<S>     tungstenite (ws://, wss://, any attached socket)
//!             ├─ ServerSocket<S>  the hub's side of a raw stream: data frames read and
//!             │                   written by itself, no buffer held while idle
//!             └─ memory::duplex   in-process pair with a frame cap (tests)
//! ```
//!
//! - [`Frame`]: text or binary data, ping, pong, close with code and
//!   reason. Text stays in tungstenite's validated UTF-8 buffer, so no
//!   frame is copied on its way in or out.
//! - [`TransportError`]: a frame over the size cap ([`TransportError::TooBig`],
//!   which the hub answers with close 1009), the peer gone, or a failure.
//! - [`writer::write_loop`]: the one loop that drains an outbox into a
//!   transport, signing at flush (the hub and the client share it).
//!
//! A new transport (Unix socket, raw TCP with length prefixes) implements
//! `Stream` + `Sink` of [`Frame`] and enforces its size cap on read; the
//! drivers need no change.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use futures_util::{SinkExt, StreamExt};
//! use link_transport::{Frame, memory};
//!
//! let (mut a, mut b) = memory::duplex(8, 1024);
//! a.send(Frame::text("hello")).await.unwrap();
//! assert_eq!(b.next().await.unwrap().unwrap(), Frame::text("hello"));
//! # }
//! ```

#![forbid(unsafe_code)]

mod frame;
pub mod memory;
mod server_socket;
mod websocket;
pub mod writer;

pub use frame::{Binary, CloseFrame, Frame, Text, TransportError};
pub use server_socket::{ServerSocket, TUNGSTENITE_READ};
pub use websocket::WebSocket;

use futures_util::{Sink, Stream};

/// Anything a driver can read frames from and write frames to.
pub trait Transport:
    Stream<Item = Result<Frame, TransportError>> + Sink<Frame, Error = TransportError> + Send + 'static
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Frame, TransportError>>
        + Sink<Frame, Error = TransportError>
        + Send
        + 'static
{
}
