//! [`ServerSocket`]: the server side of a WebSocket on a raw byte stream
//! (an accepted TCP or TLS connection, an upgraded HTTP connection) that
//! holds no buffer while it is idle.
//!
//! tungstenite keeps a read buffer (zero-filled, so resident) and a write
//! buffer (a `Vec` that keeps the capacity of the most it ever held) for
//! the life of a socket: a peer that was once sent 32 KiB of presence keeps
//! 32–64 KiB of hub memory while it sits idle for hours. Here:
//!
//! - **Writes**: data frames (text, binary) are framed by us, with
//!   tungstenite's own header encoder, into a write buffer that is
//!   allocated when the first frame is queued and freed once the socket
//!   has taken every byte. Control frames (ping, pong, close) still go
//!   through tungstenite, which keeps the close handshake's state; its
//!   write buffer is set to zero, so each one passes straight into the
//!   same buffer, in order. The bytes on the wire are the ones tungstenite
//!   would have written.
//! - **Reads**: a read of the socket goes into a chunk taken for that read
//!   and given back once every byte of it is used. A whole, unfragmented,
//!   masked text or binary frame within the size caps (every frame a link
//!   peer sends) is cut out of the chunk here, unmasked in place and handed
//!   on without a copy ([`ServerSocket::poll_next`]). A control frame is
//!   handed to tungstenite exactly, and only once it is whole, so that
//!   tungstenite answers pings and closes as before and holds no bytes
//!   between frames. Anything else (a fragmented message, a frame over a
//!   cap, reserved bits or opcodes, an unmasked frame, the end of the
//!   stream, a socket that is closing) makes the socket hand every later
//!   byte to tungstenite, which reads, answers and refuses as it always
//!   did; its own read buffer is small ([`TUNGSTENITE_READ`]).
//!
//! ```text
//!   data frames ──► header + payload ─┐
//!   ping/pong/close ──► tungstenite ──┴─► write buffer (on demand) ──► socket
//!   socket ──► read chunk (on demand) ─┬─► whole data frames ──► frames
//!                                      └─► control frames, the unusual ──► tungstenite ──► frames
//! ```
//!
//! Like tungstenite, a data frame after a close frame (sent or received)
//! is refused, and the write buffer is bounded: past `max_write_buffer_size`
//! the socket stops taking control frames and tungstenite fails the write.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

use crate::websocket::{error, frame, message};
use crate::{Frame, TransportError};

/// tungstenite's own read buffer: the most it copies out of a read chunk
/// per call. It stays allocated for the socket's life: once a frame's
/// header is read, tungstenite reserves the frame's length beyond what it
/// holds, so after a frame of `n` bytes the buffer holds about `n` plus
/// what one call copied (at 1 KiB, an idle peer that sent one 350-byte
/// hello kept 1 KiB; at 256 bytes it keeps about 600). A frame of a few
/// hundred bytes takes two or three calls, each a copy.
pub const TUNGSTENITE_READ: usize = 256;

/// A server-side WebSocket whose buffers exist only while bytes wait in
/// them: data frames are framed into a write buffer that is freed once the
/// socket has taken every byte, and each read uses a chunk given back once
/// tungstenite has copied it out (tungstenite's own read buffer is
/// [`TUNGSTENITE_READ`] bytes).
#[derive(Debug)]
pub struct ServerSocket<S> {
    ws: WebSocketStream<Buffers<S>>,
    /// A close frame was sent or received: data frames are refused, as
    /// tungstenite refuses them once its handshake has started.
    closing: bool,
    /// Whole data frames are read here; false once something only
    /// tungstenite handles has arrived (it then reads every later byte).
    fast: bool,
    /// The largest payload a data frame read here may have: the frame and
    /// message caps (a larger one goes to tungstenite, which refuses it).
    max_payload: u64,
    /// An error or the end came out of a read: the stream has ended, as
    /// tungstenite's does after an error (whichever of the two read it).
    ended: bool,
}

impl<S> ServerSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream whose WebSocket handshake is done. `config` as for
    /// tungstenite: `read_buffer_size` is the size of a read chunk,
    /// `write_buffer_size` how many bytes are queued before they are
    /// written (a flush writes whatever is queued), `max_write_buffer_size`
    /// the bound of the write buffer; message and frame caps apply as
    /// they do in tungstenite.
    pub async fn from_raw_socket(stream: S, config: WebSocketConfig) -> Self {
        let max_payload = [config.max_frame_size, config.max_message_size]
            .into_iter()
            .flatten()
            .min()
            .map_or(u64::MAX, |m| m as u64);
        let io = Buffers {
            io: stream,
            read: BytesMut::new(),
            handover: None,
            read_chunk: config.read_buffer_size.max(1),
            write: Vec::new(),
            written: 0,
            write_batch: config.write_buffer_size,
            write_cap: config.max_write_buffer_size,
        };
        let config = config
            .read_buffer_size(TUNGSTENITE_READ)
            .write_buffer_size(0);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        Self {
            ws,
            closing: false,
            fast: true,
            max_payload,
            ended: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.ws.get_ref().io
    }

    /// Bytes of memory the socket's own buffers hold now (the write
    /// buffer's and the read chunk's capacity; tungstenite's small read
    /// buffer is not counted).
    pub fn buffered_capacity(&self) -> usize {
        let io = self.ws.get_ref();
        io.write.capacity() + io.read.capacity()
    }
}

impl<S> Stream for ServerSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            // (A control frame handed over and not yet read by tungstenite
            // stays its to finish.)
            if self.fast && !self.closing && self.ws.get_ref().handover.is_none() {
                match ready!(self.poll_fast(cx)) {
                    Fast::Frame(f) => {
                        self.ended = f.is_err();
                        return Poll::Ready(Some(f));
                    }
                    // tungstenite reads the control frame handed over.
                    Fast::Control => {}
                    Fast::Tungstenite => self.fast = false,
                }
            }
            let next = ready!(Pin::new(&mut self.ws).poll_next(cx));
            self.ws.get_mut().handover = None;
            match next {
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(error(e))));
                }
                Some(Ok(m)) => {
                    if let Some(f) = frame(m) {
                        match f {
                            Frame::Close(_) => self.closing = true,
                            // tungstenite queued the pong; its next read
                            // would send it, but the next frame may be
                            // read here: send it now (or with the next
                            // flush, if the socket is full).
                            Frame::Ping if self.fast => {
                                let _ = Pin::new(&mut self.ws).poll_flush(cx);
                            }
                            _ => {}
                        }
                        return Poll::Ready(Some(Ok(f)));
                    }
                }
            }
        }
    }
}

/// What the read chunk's next frame is to the fast path.
enum Fast {
    /// A data frame, read here (or the socket's error).
    Frame(Result<Frame, TransportError>),
    /// A whole control frame, handed over to tungstenite.
    Control,
    /// Something for tungstenite from now on.
    Tungstenite,
}

impl<S> ServerSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads the next frame if it is a whole data frame; hands a whole
    /// control frame to tungstenite; gives up on anything else.
    fn poll_fast(&mut self, cx: &mut Context<'_>) -> Poll<Fast> {
        loop {
            let max_payload = self.max_payload;
            let io = self.ws.get_mut();
            let need = match next_frame(&io.read, max_payload) {
                Next::Data {
                    header_len,
                    len,
                    text,
                    mask,
                } => {
                    let mut bytes = io.read.split_to(header_len + len);
                    if io.read.is_empty() {
                        io.read = BytesMut::new();
                    }
                    bytes.advance(header_len);
                    unmask(&mut bytes, mask);
                    let payload = bytes.freeze();
                    let f = if text {
                        Utf8Bytes::try_from(payload)
                            .map(Frame::Text)
                            .map_err(|e| error(WsError::from(e)))
                    } else {
                        Ok(Frame::Binary(payload))
                    };
                    return Poll::Ready(Fast::Frame(f));
                }
                Next::Control { len } => {
                    io.handover = Some(len);
                    return Poll::Ready(Fast::Control);
                }
                Next::Other => return Poll::Ready(Fast::Tungstenite),
                Next::Short { need } => need,
            };
            // The frame is not all here: read more (at least a chunk).
            io.read
                .reserve(io.read_chunk.max(need.saturating_sub(io.read.len())));
            match tokio_util::io::poll_read_buf(Pin::new(&mut io.io), cx, &mut io.read) {
                Poll::Ready(Ok(0)) => {
                    // The end of the stream: tungstenite says what it means.
                    return Poll::Ready(Fast::Tungstenite);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Fast::Frame(Err(io_error(e)))),
                Poll::Pending => {
                    if io.read.is_empty() {
                        // Nothing held while waiting.
                        io.read = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The next frame in a read chunk, as the fast path sees it.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A whole, final, masked text or binary frame within the caps.
    Data {
        header_len: usize,
        len: usize,
        text: bool,
        mask: [u8; 4],
    },
    /// A whole, final, masked ping, pong or close of at most 125 bytes:
    /// `len` bytes with its header.
    Control { len: usize },
    /// The frame is not all here: `need` bytes make at least its header,
    /// or all of it.
    Short { need: usize },
    /// Anything else: tungstenite's to read (or refuse).
    Other,
}

/// Reads the header of the frame at the start of `buf` with tungstenite's
/// own parser.
fn next_frame(buf: &[u8], max_payload: u64) -> Next {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        // Two bytes say how long the header is; 14 is the longest.
        Ok(None) => {
            return Next::Short {
                need: header_len_from(buf).unwrap_or(2),
            };
        }
        Err(_) => return Next::Other,
    };
    let header_len = cursor.position() as usize;
    let (Some(mask), true, false) = (
        header.mask,
        header.is_final,
        header.rsv1 || header.rsv2 || header.rsv3,
    ) else {
        return Next::Other;
    };
    let whole = |len: usize| {
        let total = header_len + len;
        if buf.len() >= total {
            None
        } else {
            Some(Next::Short { need: total })
        }
    };
    match header.opcode {
        OpCode::Data(Data::Text | Data::Binary) if len <= max_payload => {
            // Within the caps, so it fits in memory (and in `usize`).
            let Ok(len) = usize::try_from(len) else {
                return Next::Other;
            };
            whole(len).unwrap_or(Next::Data {
                header_len,
                len,
                text: header.opcode == OpCode::Data(Data::Text),
                mask,
            })
        }
        OpCode::Control(Control::Ping | Control::Pong | Control::Close) if len <= 125 => {
            let len = len as usize;
            whole(len).unwrap_or(Next::Control {
                len: header_len + len,
            })
        }
        _ => Next::Other,
    }
}

/// The length of a frame header from its first two bytes (RFC 6455 5.2).
fn header_len_from(buf: &[u8]) -> Option<usize> {
    let second = *buf.get(1)?;
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// XORs a client's masking key over its payload (RFC 6455 5.3), eight
/// bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let key = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut words = payload.chunks_exact_mut(8);
    for word in words.by_ref() {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ key).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the key's phase is 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

impl<S> Sink<Frame> for ServerSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(error)?;
        if self.ws.get_ref().queued() >= self.ws.get_ref().write_batch {
            // A batch's worth is queued: write it before taking more.
            ready!(self.as_mut().poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> Result<(), Self::Error> {
        let (opcode, payload) = match item {
            Frame::Text(t) => (Data::Text, t.into()),
            Frame::Binary(b) => (Data::Binary, b),
            control => {
                if matches!(control, Frame::Close(_)) {
                    self.closing = true;
                }
                return Pin::new(&mut self.ws)
                    .start_send(message(control))
                    .map_err(error);
            }
        };
        if self.closing {
            return Err(error(WsError::Protocol(ProtocolError::SendAfterClosing)));
        }
        self.ws.get_mut().queue_data(OpCode::Data(opcode), &payload);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tungstenite writes what it holds into `Buffers` and flushes it;
        // once its close handshake is over it stops short of the flush, so
        // the buffer is written here as well (a no-op when empty).
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(error)?;
        self.ws.get_mut().poll_flush_io(cx).map_err(io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.closing = true;
        Pin::new(&mut self.ws).poll_close(cx).map_err(error)
    }
}

/// The stream under tungstenite, with the on-demand buffers.
#[derive(Debug)]
struct Buffers<S> {
    io: S,
    /// Bytes read from `io` that no one has taken yet; no allocation
    /// while it is empty.
    read: BytesMut,
    /// While the fast path hands tungstenite one whole control frame: the
    /// bytes of it tungstenite has yet to take (it is given those and
    /// nothing more, so that it holds nothing once it has the frame).
    handover: Option<usize>,
    read_chunk: usize,
    /// Frames to write, of which `written` bytes are written; no
    /// allocation once all are.
    write: Vec<u8>,
    written: usize,
    /// Queued bytes past which a data frame waits for a write.
    write_batch: usize,
    /// Queued bytes past which control frames are refused (tungstenite
    /// then holds them, up to its own cap).
    write_cap: usize,
}

impl<S> Buffers<S> {
    fn queued(&self) -> usize {
        self.write.len() - self.written
    }

    /// Moves up to `most` bytes of `read` into `buf` (as many as fit),
    /// giving the chunk back once it is empty; how many moved.
    fn take_read(&mut self, buf: &mut ReadBuf<'_>, most: usize) -> usize {
        let n = buf.remaining().min(most).min(self.read.len());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        n
    }

    /// Appends one unmasked data frame, as tungstenite formats it.
    fn queue_data(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let len = payload.len() as u64;
        let need = header.len(len) + payload.len();
        if self.write.capacity() == 0 {
            // A lone frame takes what it needs (a socket waiting on a slow
            // peer holds its frame, not a batch's worth of buffer) ...
            self.write.reserve_exact(need);
        } else if self.write.capacity() - self.write.len() < need {
            // ... a second one grows the buffer to a batch at once, not a
            // doubling per frame.
            let batch = self.write_batch.saturating_sub(self.write.len());
            self.write.reserve(batch.max(need));
        }
        // Writing a header into a `Vec` cannot fail.
        let _ = header.format(len, &mut self.write);
        self.write.extend_from_slice(payload);
    }
}

impl<S: AsyncWrite + Unpin> Buffers<S> {
    /// Writes the queued bytes; frees the buffer once all are written.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.write.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.write = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_flush_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_queued(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

fn io_error(e: io::Error) -> TransportError {
    error(WsError::Io(e))
}

impl<S: AsyncRead + Unpin> AsyncRead for Buffers<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(left) = this.handover {
            // Only the frame handed over, which is all in `read`.
            let n = this.take_read(buf, left);
            if n == 0 {
                return Poll::Ready(Err(io::Error::other(
                    "tungstenite read past a control frame handed over whole",
                )));
            }
            this.handover = Some(left - n);
            return Poll::Ready(Ok(()));
        }
        if this.read.is_empty() {
            if buf.remaining() >= this.read_chunk {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            this.read.reserve(this.read_chunk);
            let n = match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.read)
            {
                Poll::Ready(Ok(n)) => n,
                other => {
                    // Nothing read: give the chunk back while waiting.
                    this.read = BytesMut::new();
                    return other.map_ok(|_| ());
                }
            };
            if n == 0 {
                this.read = BytesMut::new();
                return Poll::Ready(Ok(()));
            }
        }
        this.take_read(buf, usize::MAX);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffers<S> {
    /// tungstenite's writes (control frames, whole frames at a time with
    /// its write buffer at zero): queued after the data frames before
    /// them, and written at once as far as the socket takes them (as
    /// tungstenite writes them; a close answered as the handshake ends is
    /// never flushed by tungstenite).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queued() + buf.len() > this.write_cap {
            ready!(this.poll_write_queued(cx))?;
        }
        this.write.extend_from_slice(buf);
        if let Poll::Ready(Err(e)) = this.poll_write_queued(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_io(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_queued(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, DuplexStream, duplex};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::WebSocket;

    fn config() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(64 * 1024)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20))
    }

    async fn lean() -> (ServerSocket<DuplexStream>, DuplexStream) {
        let (ours, theirs) = duplex(1 << 22);
        (ServerSocket::from_raw_socket(ours, config()).await, theirs)
    }

    async fn client(io: DuplexStream) -> WebSocketStream<DuplexStream> {
        WebSocketStream::from_raw_socket(io, Role::Client, None).await
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::text("{}"),
            Frame::text("x".repeat(125)),
            Frame::text("y".repeat(126)),
            Frame::Ping,
            Frame::text("z".repeat(65_535)),
            Frame::Binary(vec![7; 65_536].into()),
            Frame::text("é".repeat(50_000)),
            Frame::close(Some(4000), "replaced by new connection"),
        ]
    }

    /// Everything one side wrote, once it is dropped.
    async fn written(mut theirs: DuplexStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        theirs.read_to_end(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn writes_the_bytes_tungstenite_writes() {
        let (mut socket, theirs) = lean().await;
        let (plain, plain_theirs) = duplex(1 << 22);
        let plain = WebSocketStream::from_raw_socket(plain, Role::Server, Some(config())).await;
        let mut plain = WebSocket::new(plain);
        for f in frames() {
            socket.feed(f.clone()).await.unwrap();
            plain.feed(f).await.unwrap();
        }
        socket.flush().await.unwrap();
        plain.flush().await.unwrap();
        drop((socket, plain));
        let (ours, reference) = (written(theirs).await, written(plain_theirs).await);
        assert!(ours.len() > 200_000);
        assert_eq!(ours, reference);
    }

    #[tokio::test]
    async fn holds_no_buffer_once_bytes_are_through() {
        let (mut socket, theirs) = lean().await;
        let mut peer = client(theirs).await;
        socket.send(Frame::text("a".repeat(40_000))).await.unwrap();
        assert_eq!(socket.buffered_capacity(), 0);
        let got = peer.next().await.unwrap().unwrap();
        assert_eq!(got.len(), 40_000);
        peer.send(Message::text("b".repeat(10_000))).await.unwrap();
        peer.send(Message::text("hello")).await.unwrap();
        let first = socket.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 10_000);
        let second = socket.next().await.unwrap().unwrap();
        assert_eq!(second, Frame::text("hello"));
        assert_eq!(socket.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn a_lone_frame_waiting_for_the_peer_holds_its_size_not_a_batch() {
        // The peer reads nothing: the duplex takes 1 KiB, the rest waits.
        let (ours, theirs) = duplex(1024);
        let mut socket = ServerSocket::from_raw_socket(ours, config()).await;
        socket.feed(Frame::text("p".repeat(8_000))).await.unwrap();
        let held = socket.buffered_capacity();
        assert!(
            (8_000..9_000).contains(&held),
            "{held} bytes held for an 8,000-byte frame"
        );
        let mut peer = client(theirs).await;
        let (flushed, got) = tokio::join!(socket.flush(), peer.next());
        flushed.unwrap();
        assert_eq!(got.unwrap().unwrap().len(), 8_000);
        assert_eq!(socket.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn queues_a_batch_before_writing_and_writes_it_on_flush() {
        let (mut socket, theirs) = lean().await;
        let mut peer = client(theirs).await;
        for i in 0..10 {
            socket
                .feed(Frame::text(format!("frame {i}")))
                .await
                .unwrap();
        }
        assert!(socket.buffered_capacity() >= 64 * 1024);
        socket.flush().await.unwrap();
        assert_eq!(socket.buffered_capacity(), 0);
        for i in 0..10 {
            let m = peer.next().await.unwrap().unwrap();
            assert_eq!(m, Message::text(format!("frame {i}")));
        }
    }

    #[tokio::test]
    async fn answers_pings_and_echoes_a_close() {
        let (mut socket, theirs) = lean().await;
        let mut peer = client(theirs).await;
        peer.send(Message::Ping(vec![1, 2, 3].into()))
            .await
            .unwrap();
        peer.send(Message::Close(None)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::Ping);
        // The pong goes out as the next read starts (as with tungstenite).
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::Close(None));
        assert!(socket.next().await.is_none());
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Message::Pong(vec![1, 2, 3].into())
        );
        // The echo went out though tungstenite ended its handshake
        // without a flush.
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::Close(None));
        assert_eq!(socket.buffered_capacity(), 0);
        // Like tungstenite, no data after a close.
        assert!(socket.send(Frame::text("late")).await.is_err());
    }

    #[tokio::test]
    async fn refuses_data_after_sending_a_close() {
        let (mut socket, theirs) = lean().await;
        let mut peer = client(theirs).await;
        socket.send(Frame::text("before")).await.unwrap();
        socket.send(Frame::close(Some(1000), "bye")).await.unwrap();
        let err = socket.send(Frame::text("after")).await.unwrap_err();
        assert_eq!(err.code(), "failed");
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::text("before"));
        assert!(matches!(
            peer.next().await.unwrap().unwrap(),
            Message::Close(Some(c)) if u16::from(c.code) == 1000 && c.reason == "bye"
        ));
    }

    /// A client frame as a peer puts it on the wire: FIN and opcode, the
    /// masked length, the key, the masked payload.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const TEXT: u8 = 0x81;
    const BINARY: u8 = 0x82;

    /// Writes `bytes` a few at a time, so that frames and headers arrive
    /// split at every kind of place.
    async fn dribble(theirs: &mut DuplexStream, bytes: &[u8], step: usize) {
        use tokio::io::AsyncWriteExt;
        for piece in bytes.chunks(step) {
            theirs.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn reads_whole_data_frames_split_anywhere_and_answers_pings_between_them() {
        let sizes = [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65_535, 65_536, 200_000];
        for step in [1, 3, 64, 4096, 1 << 20] {
            let (mut socket, mut theirs) = lean().await;
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (i, n) in sizes.into_iter().enumerate() {
                let mask = [i as u8, 0x5a, 0xff, (n % 251) as u8];
                if i % 2 == 0 {
                    let text: String = "é€x".chars().cycle().take(n).collect();
                    wire.extend(client_frame(TEXT, text.as_bytes(), mask));
                    want.push(Frame::text(text));
                } else {
                    let bytes: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
                    wire.extend(client_frame(BINARY, &bytes, mask));
                    want.push(Frame::Binary(bytes.into()));
                }
                if i == 4 {
                    wire.extend(client_frame(0x89, b"ping!", [9, 8, 7, 6]));
                    want.push(Frame::Ping);
                }
                if i == 6 {
                    wire.extend(client_frame(0x8A, b"", [1, 2, 3, 4]));
                    want.push(Frame::Pong);
                }
            }
            let reader = async {
                let mut got = Vec::new();
                for _ in 0..want.len() {
                    got.push(socket.next().await.unwrap().unwrap());
                }
                (got, socket)
            };
            let ((got, mut socket), ()) = tokio::join!(reader, dribble(&mut theirs, &wire, step));
            assert_eq!(got, want, "written {step} bytes at a time");
            // Nothing held between frames, and still read here.
            assert_eq!(socket.buffered_capacity(), 0);
            assert!(socket.fast, "written {step} bytes at a time");
            // The pong went out with the ping's payload.
            socket.flush().await.unwrap();
            drop(socket);
            let mut peer = client(theirs).await;
            assert_eq!(
                peer.next().await.unwrap().unwrap(),
                Message::Pong(b"ping!".to_vec().into())
            );
        }
    }

    #[tokio::test]
    async fn a_fragmented_message_is_left_to_tungstenite_with_everything_after_it() {
        let (mut socket, mut theirs) = lean().await;
        let mut wire = client_frame(TEXT, b"whole", [1, 1, 1, 1]);
        wire.extend(client_frame(0x01, b"fir", [2, 2, 2, 2])); // text, not final
        wire.extend(client_frame(0x80, b"st", [3, 3, 3, 3])); // final continuation
        wire.extend(client_frame(TEXT, b"after", [4, 4, 4, 4]));
        dribble(&mut theirs, &wire, 5).await;
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::text("whole"));
        assert!(socket.fast);
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::text("first"));
        assert!(!socket.fast);
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::text("after"));
    }

    /// What tungstenite says about `wire`, and what this socket says.
    async fn both_refuse(wire: Vec<u8>) -> (TransportError, TransportError) {
        let (plain, mut plain_theirs) = duplex(1 << 22);
        let plain = WebSocketStream::from_raw_socket(plain, Role::Server, Some(config())).await;
        let mut plain = WebSocket::new(plain);
        let (mut socket, mut theirs) = lean().await;
        dribble(&mut plain_theirs, &wire, 1 << 20).await;
        dribble(&mut theirs, &wire, 1 << 20).await;
        let want = plain.next().await.unwrap().unwrap_err();
        let got = socket.next().await.unwrap().unwrap_err();
        (want, got)
    }

    #[tokio::test]
    async fn refuses_what_tungstenite_refuses_with_its_words() {
        let mut unmasked = client_frame(TEXT, b"hi", [0; 4]);
        unmasked[1] &= 0x7F;
        unmasked.drain(2..6);
        let cases = [
            ("bad UTF-8", client_frame(TEXT, &[0xC3, 0x28], [5, 6, 7, 8])),
            ("unmasked", unmasked),
            ("reserved bit", client_frame(0xC1, b"x", [1, 2, 3, 4])),
            ("reserved opcode", client_frame(0x83, b"x", [1, 2, 3, 4])),
            ("continuation first", client_frame(0x80, b"x", [1, 2, 3, 4])),
            ("long ping", client_frame(0x89, &[0; 126], [1, 2, 3, 4])),
            (
                "over the cap",
                client_frame(BINARY, &vec![0; (1 << 20) + 1], [1, 2, 3, 4]),
            ),
        ];
        for (case, wire) in cases {
            let (want, got) = both_refuse(wire).await;
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn unmasks_as_the_rfc_says_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let mut masked: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut masked, mask);
            assert_eq!(masked, plain, "{len}");
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_cap_is_too_big() {
        let (mut socket, theirs) = lean().await;
        let mut peer = client(theirs).await;
        peer.send(Message::text("x".repeat((1 << 20) + 1)))
            .await
            .unwrap();
        let err = socket.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), "too-big");
    }
}
