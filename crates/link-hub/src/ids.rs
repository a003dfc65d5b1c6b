//! Fresh message ids for hub-made frames: UUID-v4-shaped text from a random
//! per-hub prefix and a counter, so a fan-out does not pay a system call per
//! id. Unique for the life of the hub (2^48 ids), unrelated across hubs.

use std::sync::atomic::{AtomicU64, Ordering};

use link_protocol::conn::uuid_v4;
use ring::rand::{SecureRandom, SystemRandom};

/// Hub-wide id generator.
#[derive(Debug)]
pub(crate) struct IdGen {
    prefix: [u8; 10],
    counter: AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> Self {
        let mut prefix = [0u8; 10];
        // A failing OS RNG leaves a zero prefix: ids stay unique within this
        // hub (the counter), only less distinct across hubs.
        if SystemRandom::new().fill(&mut prefix).is_err() {
            tracing::warn!("system RNG unavailable; hub ids use a fixed prefix");
        }
        Self {
            prefix,
            counter: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..10].copy_from_slice(&self.prefix);
        bytes[10..].copy_from_slice(&n.to_be_bytes()[2..]);
        uuid_v4(bytes)
    }
}

/// A random secret of 32 bytes as lowercase hex (for a hub started without one).
pub fn random_secret() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuid_shaped() {
        let g = IdGen::new();
        let (a, b) = (g.next(), g.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        let s = random_secret().unwrap();
        assert_eq!(s.len(), 64);
    }
}
