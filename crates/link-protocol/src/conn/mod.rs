//! Connection state machines in the quinn shape: [`ClientConn`] for a
//! client's link to its hub, [`HubConn`] for one socket on the hub.
//!
//! Both are driven the same way, and the same socket event has the same
//! method name on both. Call order, on every wake-up:
//!
//! 1. feed inputs: `handle_message(now, bytes, ..)` for a text or binary
//!    frame, `handle_pong()`, `handle_closed(..)` once the socket is gone,
//!    `handle_timeout(now)`, or a command (`ClientConn::start`/`stop`,
//!    `HubConn::close`/`displace`/`evict`; `HubConn::key_resolved` answers a
//!    [`HubConnEvent::KeyNeeded`]);
//! 2. drain outputs: `poll_transmit()` until `None` (write those to the
//!    socket), `poll_event()` until `None` (act on them);
//! 3. sleep until `poll_timeout()`, or until the next input.
//!
//! Each reports a dropped frame as a `ProtocolError` event
//! ([`ClientEvent::ProtocolError`], [`HubConnEvent::ProtocolError`]); the
//! client's findings that drop nothing are [`ClientEvent::Diagnostic`].
//!
//! Nothing here reads a clock or a random source: time comes in as [`Now`],
//! ids from an [`IdSource`], jitter from the `random` argument of
//! [`Backoff::next_delay`]. Extra `handle_timeout` calls are harmless.

mod backoff;
mod client;
mod endpoints;
mod hub;
mod outputs;
mod timers;

pub use backoff::{Backoff, BackoffConfig};
pub use client::{CLOSE_GRACE, ClientConn, ClientConnConfig, ClientEvent, ClientState, Disconnect};
pub use endpoints::UrlOrder;
pub use hub::{HubConn, HubConnConfig, HubConnEvent, HubConnState, TERMINATE_GRACE};

use std::time::Instant;

/// The current time, as both clocks the protocol needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub instant: Instant,
    /// Wall clock in ms since the Unix epoch, for `ts` and the replay window.
    pub wall_ms: u64,
}

impl Now {
    /// Both clocks at once.
    pub fn new(instant: Instant, wall_ms: u64) -> Self {
        Self { instant, wall_ms }
    }
}

/// Something the driver must do to the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write a text frame.
    Frame(String),
    /// Send a WebSocket ping.
    Ping,
    /// Start a close handshake; `None` sends a close frame without a code
    /// (the peer sees 1005).
    Close {
        /// Close code, if any.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// Drop the socket without a handshake (the peer sees 1006).
    Terminate,
}

/// A source of fresh message ids (UUID v4 text in production).
pub trait IdSource: Send {
    /// Returns a new id, never returned before.
    fn next_id(&mut self) -> String;
}

/// Ids `prefix-1`, `prefix-2`, … for tests and simulations.
#[derive(Clone, Debug)]
pub struct SeqIds {
    prefix: String,
    next: u64,
}

impl SeqIds {
    /// Starts a sequence.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next: 1,
        }
    }
}

impl IdSource for SeqIds {
    fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

/// Fresh ids for a whole process: UUID-v4-shaped text from a random prefix
/// (supplied by the driver, which owns the randomness) and a counter, so
/// minting an id costs no system call. Unique for 2^48 ids per generator;
/// generators with different prefixes do not collide in practice. Safe to
/// share between threads.
#[derive(Debug)]
pub struct IdGen {
    /// The id of counter 0: the prefix's 24 characters (with the version
    /// and variant bits), then twelve zeros that each id overwrites.
    head: IdText,
    counter: std::sync::atomic::AtomicU64,
}

impl IdGen {
    /// A generator with the given random prefix.
    pub fn new(prefix: [u8; 10]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..10].copy_from_slice(&prefix);
        Self {
            head: IdText::uuid_v4(bytes),
            counter: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The next id.
    pub fn next_id(&self) -> String {
        self.next_id_text().as_str().to_owned()
    }

    /// The next id, formatted on the stack (a hot path writes it straight
    /// into a frame).
    pub fn next_id_text(&self) -> IdText {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.text(n)
    }

    /// A run of [`IdBlock::SIZE`] ids for one task to mint on its own: the
    /// shared counter is touched once per run, not once per id (tasks on
    /// different cores would otherwise pass its cache line back and forth).
    pub fn block(&self) -> IdBlock {
        IdBlock { next: 0, end: 0 }
    }

    /// The id of counter `n`: the head with the counter's low 48 bits as
    /// its last twelve hex digits (what formatting the prefix and the
    /// counter's six bytes as a UUID gives, without formatting the prefix
    /// again).
    fn text(&self, n: u64) -> IdText {
        let mut out = self.head;
        for (i, digit) in out.0[24..].iter_mut().enumerate() {
            let nibble = (n >> (44 - 4 * i)) & 0xf;
            *digit = HEX[nibble as usize];
        }
        out
    }
}

/// Ids reserved from an [`IdGen`] for one task (see [`IdGen::block`]):
/// the same ids the generator would give, taken a run at a time.
#[derive(Debug)]
pub struct IdBlock {
    next: u64,
    end: u64,
}

impl IdBlock {
    /// Ids reserved at a time.
    pub const SIZE: u64 = 256;

    /// The next id of this block, reserving a new run from `ids` when the
    /// block is spent.
    pub fn next_id_text(&mut self, ids: &IdGen) -> IdText {
        if self.next == self.end {
            self.next = ids
                .counter
                .fetch_add(Self::SIZE, std::sync::atomic::Ordering::Relaxed);
            self.end = self.next + Self::SIZE;
        }
        let n = self.next;
        self.next += 1;
        ids.text(n)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A UUID's 36 characters, without an allocation.
#[derive(Clone, Copy)]
pub struct IdText([u8; 36]);

impl IdText {
    fn uuid_v4(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1; // the dash
            }
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
            at += 2;
        }
        Self(out)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Hex digits and dashes only, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for IdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl IdSource for std::sync::Arc<IdGen> {
    fn next_id(&mut self) -> String {
        IdGen::next_id(self)
    }
}

/// Formats 16 random bytes as a lowercase UUID v4 (as `crypto.randomUUID`).
pub fn uuid_v4(bytes: [u8; 16]) -> String {
    IdText::uuid_v4(bytes).as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub holds one `HubConn` per socket for the socket's life (it was
    /// 600 bytes, plus 448 of event queue once used, before the key's MAC
    /// states were shared, the hello's state boxed and the queues made to
    /// hold nothing while idle).
    #[test]
    fn a_hub_conn_stays_small() {
        let bytes = std::mem::size_of::<HubConn>();
        assert!(bytes <= 448, "HubConn: {bytes} bytes");
    }

    #[test]
    fn id_gen_counts_under_a_fixed_prefix() {
        let g = IdGen::new([0xab; 10]);
        let (a, b) = (g.next_id(), g.next_id());
        assert_eq!(a, "abababab-abab-4bab-abab-000000000001");
        assert_eq!(b, "abababab-abab-4bab-abab-000000000002");
    }

    #[test]
    fn an_id_is_its_prefix_and_counter_formatted_as_one_uuid() {
        let prefix = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc];
        let g = IdGen::new(prefix);
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xfedc_ba98_7654,
            (1 << 48) - 1,
            1 << 48,
            u64::MAX,
        ] {
            let mut bytes = [0u8; 16];
            bytes[..10].copy_from_slice(&prefix);
            bytes[10..].copy_from_slice(&n.to_be_bytes()[2..]);
            assert_eq!(g.text(n).as_str(), uuid_v4(bytes), "{n:#x}");
        }
        assert_eq!(
            g.text(0xfedc_ba98_7654).as_str(),
            "01234567-89ab-4def-bedc-fedcba987654"
        );
    }

    #[test]
    fn blocks_take_runs_of_the_same_counter_and_never_overlap() {
        let g = IdGen::new([0xab; 10]);
        let (mut a, mut b) = (g.block(), g.block());
        let take = |block: &mut IdBlock| block.next_id_text(&g).as_str().to_owned();
        let first = take(&mut a);
        let second = take(&mut b);
        assert_eq!(first, "abababab-abab-4bab-abab-000000000001");
        assert_eq!(second, "abababab-abab-4bab-abab-000000000101");
        // A plain id comes after both runs.
        let plain = g.next_id();
        assert_eq!(plain, "abababab-abab-4bab-abab-000000000201");
        let mut seen = std::collections::HashSet::from([first, second, plain]);
        // a spends three runs, b one: no id is given twice.
        for _ in 1..3 * IdBlock::SIZE {
            assert!(seen.insert(take(&mut a)));
        }
        for _ in 1..IdBlock::SIZE {
            assert!(seen.insert(take(&mut b)));
        }
        assert!(seen.insert(g.next_id()));
        assert_eq!(seen.len() as u64, 4 * IdBlock::SIZE + 2);
    }

    #[test]
    fn uuid_shape() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }
}
