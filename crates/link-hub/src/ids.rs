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

/// This hub's id in a cluster: 16 random hex digits, new per process (a
/// restarted hub is a new member with a fresh message sequence).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn hub_id() -> String {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // Distinct enough for a cluster of a few hubs on one clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
