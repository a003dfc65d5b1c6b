//! Fresh message ids for hub-made frames ([`IdGen`] with a random per-hub
//! prefix) and random secrets, both from the OS RNG.

use link_protocol::conn::IdGen;
use ring::rand::{SecureRandom, SystemRandom};

/// An id generator with a random prefix.
pub(crate) fn id_gen() -> IdGen {
    let mut prefix = [0u8; 10];
    // A failing OS RNG leaves a zero prefix: ids stay unique within this
    // hub (the counter), only less distinct across hubs.
    if SystemRandom::new().fill(&mut prefix).is_err() {
        tracing::warn!("system RNG unavailable; hub ids use a fixed prefix");
    }
    IdGen::new(prefix)
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
        let g = id_gen();
        let (a, b) = (g.next_id(), g.next_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(random_secret().unwrap().len(), 64);
    }
}
