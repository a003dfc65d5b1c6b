//! One sender's recently seen ids, oldest first, without an allocation per
//! id.
//!
//! The replay cache is insertion-ordered (protocol §4.1): ids are only ever
//! added at the back, looked up, and dropped from the front (expiry or
//! eviction). So they live in a ring of records numbered by a running
//! sequence, and a hash table maps each id to its sequence number. An id in
//! the canonical lowercase UUID form (what both the reference and we
//! generate) is stored as its 16 bytes; any other id as a boxed string.
//! About 50 bytes per UUID id, against ~110 and two allocations in a
//! general-purpose LRU map.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::ring::Ring;

/// An id as stored.
#[derive(Debug, PartialEq, Eq)]
enum IdKey {
    /// A canonical lowercase UUID (`8-4-4-4-12` hex digits).
    Uuid([u8; 16]),
    /// Anything else, as sent.
    Other(Box<str>),
}

/// An id as looked up (borrowed: a lookup allocates nothing).
#[derive(Clone, Copy)]
enum IdRef<'a> {
    Uuid([u8; 16]),
    Other(&'a str),
}

impl<'a> IdRef<'a> {
    fn new(id: &'a str) -> Self {
        parse_uuid(id).map_or(Self::Other(id), Self::Uuid)
    }

    fn matches(self, key: &IdKey) -> bool {
        match (self, key) {
            (Self::Uuid(a), IdKey::Uuid(b)) => a == *b,
            (Self::Other(a), IdKey::Other(b)) => a == &**b,
            _ => false,
        }
    }

    fn to_key(self) -> IdKey {
        match self {
            Self::Uuid(b) => IdKey::Uuid(b),
            Self::Other(s) => IdKey::Other(s.into()),
        }
    }
}

impl IdKey {
    fn as_ref(&self) -> IdRef<'_> {
        match self {
            Self::Uuid(b) => IdRef::Uuid(*b),
            Self::Other(s) => IdRef::Other(s),
        }
    }
}

impl Hash for IdRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Uuid(b) => {
                state.write_u8(0);
                b.hash(state);
            }
            Self::Other(s) => {
                state.write_u8(1);
                s.hash(state);
            }
        }
    }
}

/// The 16 bytes of `id` when it is a UUID written exactly as
/// `crypto.randomUUID()` writes one (lowercase, dashes at 8, 13, 18, 23).
/// Formatting the bytes back gives `id` again, so two ids are equal exactly
/// when their keys are.
fn parse_uuid(id: &str) -> Option<[u8; 16]> {
    let b: &[u8; 36] = id.as_bytes().try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // Lowercase only: uppercase digits are another id.
    if b.iter().fold(false, |up, c| up | c.is_ascii_uppercase()) {
        return None;
    }
    let mut digits = [0u8; 32];
    digits[..8].copy_from_slice(&b[..8]);
    digits[8..12].copy_from_slice(&b[9..13]);
    digits[12..16].copy_from_slice(&b[14..18]);
    digits[16..20].copy_from_slice(&b[19..23]);
    digits[20..].copy_from_slice(&b[24..]);
    let mut out = [0u8; 16];
    crate::hex::decode_into(&digits, &mut out).then_some(out)
}

/// When an id was recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Seen {
    /// Frame `ts` (sender clock), for the horizon.
    pub(super) ts: f64,
    /// Local wall clock when recorded, for expiry.
    pub(super) at: f64,
}

#[derive(Debug)]
struct Record {
    id: IdKey,
    seen: Seen,
}

/// One sender's ids in the order they were recorded.
#[derive(Debug, Default)]
pub(super) struct RecentIds {
    /// Oldest first; `ring[i]` has sequence number `base + i`.
    ring: Ring<Record>,
    /// Sequence numbers are kept as `u32` (wrapping): a ring holds far
    /// fewer than 2^32 ids, and the index stays half the size.
    base: u32,
    /// `Ascending` while every id held is a UUID greater (as a 128-bit
    /// number) than the one before: then a new id greater than the last
    /// cannot repeat any, and no index is needed. Our hubs and clients
    /// number their ids with a counter under a fixed prefix, so their
    /// frames stay in this mode; the first id out of order (any reference
    /// peer's random UUIDs, a restarted sender, a replay) builds the index.
    order: Order,
    /// With `Order::Indexed`: the sequence number of every id in `ring`,
    /// found by the id's hash.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Order {
    /// Ids held are ascending UUIDs; the greatest (the newest) is given.
    Ascending(u128),
    /// Nothing held (and no index).
    #[default]
    Empty,
    /// The index is kept.
    Indexed,
}

impl RecentIds {
    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn hash(&self, id: IdRef<'_>) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The hash of the id a sequence number stands for (what the index
    /// needs when it grows).
    fn rehasher<'a>(
        ring: &'a Ring<Record>,
        base: u32,
        hasher: &'a DefaultHashBuilder,
    ) -> impl Fn(&u32) -> u64 + 'a {
        move |&seq| {
            ring.get(seq.wrapping_sub(base) as usize)
                .map_or(0, |r| hasher.hash_one(r.id.as_ref()))
        }
    }

    fn record(&self, seq: u32) -> Option<&Record> {
        self.ring.get(seq.wrapping_sub(self.base) as usize)
    }

    /// True when `id` is held.
    #[cfg(test)]
    fn contains(&self, id: &str) -> bool {
        let id = IdRef::new(id);
        match self.order {
            Order::Indexed => self.find(id, self.hash(id)),
            _ => (0..self.ring.len()).any(|i| self.ring.get(i).is_some_and(|r| id.matches(&r.id))),
        }
    }

    /// Leaves the ascending mode: indexes every id held.
    fn build_index(&mut self) {
        let mut index = HashTable::with_capacity(self.ring.len());
        for i in 0..self.ring.len() {
            if let Some(r) = self.ring.get(i) {
                let seq = self.base.wrapping_add(i as u32);
                let hash = self.hasher.hash_one(r.id.as_ref());
                index.insert_unique(
                    hash,
                    seq,
                    Self::rehasher(&self.ring, self.base, &self.hasher),
                );
            }
        }
        self.index = index;
        self.order = Order::Indexed;
    }

    fn find(&self, id: IdRef<'_>, hash: u64) -> bool {
        self.index
            .find(hash, |&seq| {
                self.record(seq).is_some_and(|r| id.matches(&r.id))
            })
            .is_some()
    }

    /// Records `id` as the newest, unless it is already held: then returns
    /// false and changes nothing.
    pub(super) fn insert(&mut self, id: &str, seen: Seen) -> bool {
        let id = IdRef::new(id);
        let newest = match (self.order, id) {
            (Order::Empty, IdRef::Uuid(b)) => Some(u128::from_be_bytes(b)),
            (Order::Ascending(last), IdRef::Uuid(b)) => {
                Some(u128::from_be_bytes(b)).filter(|&n| n > last)
            }
            _ => None,
        };
        if let Some(n) = newest {
            // Greater than every id held: not one of them.
            self.order = Order::Ascending(n);
            self.ring.push_back(Record {
                id: id.to_key(),
                seen,
            });
            return true;
        }
        if self.order != Order::Indexed {
            self.build_index();
        }
        let hash = self.hash(id);
        if self.find(id, hash) {
            return false;
        }
        let seq = self.base.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(Record {
            id: id.to_key(),
            seen,
        });
        let rehash = Self::rehasher(&self.ring, self.base, &self.hasher);
        self.index.insert_unique(hash, seq, rehash);
        true
    }

    /// The oldest record's times.
    pub(super) fn oldest(&self) -> Option<Seen> {
        self.ring.front().map(|r| r.seen)
    }

    /// Drops the oldest id and returns its times.
    pub(super) fn pop_oldest(&mut self) -> Option<Seen> {
        let record = self.ring.front()?;
        let seen = record.seen;
        if self.order == Order::Indexed {
            let (hash, seq) = (self.hash(record.id.as_ref()), self.base);
            if let Ok(entry) = self.index.find_entry(hash, |&s| s == seq) {
                entry.remove();
            }
        }
        self.ring.advance();
        self.base = self.base.wrapping_add(1);
        if self.ring.is_empty() {
            // Give the memory back once a sender has nothing left to
            // remember, and start over in the ascending mode.
            self.index = HashTable::new();
            self.order = Order::Empty;
        }
        Some(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "864240cc-efd7-4b5f-9491-0b08f9a31140";

    fn seen(at: f64) -> Seen {
        Seen { ts: at, at }
    }

    #[test]
    fn uuids_are_packed_and_everything_else_kept_as_sent() {
        assert!(matches!(IdRef::new(A), IdRef::Uuid(_)));
        for other in [
            "864240CC-efd7-4b5f-9491-0b08f9a31140", // uppercase
            "864240cc-efd7-4b5f-9491-0b08f9a3114",  // short
            "864240cc-efd7-4b5f-9491-0b08f9a311400",
            "864240cc0efd7-4b5f-9491-0b08f9a31140",
            "864240cc-efd7-4b5f-9491-0b08f9a3114g",
            "x",
        ] {
            assert!(matches!(IdRef::new(other), IdRef::Other(_)), "{other}");
        }
        let bytes = parse_uuid(A).unwrap();
        assert_eq!(
            crate::conn::uuid_v4(bytes),
            A,
            "formatting gives the id back"
        );
    }

    #[test]
    fn holds_what_was_pushed_until_popped_in_order() {
        let mut r = RecentIds::default();
        let ids = [A, "x", "864240cc-efd7-4b5f-9491-0b08f9a31141", "", "é"];
        for (n, id) in ids.iter().enumerate() {
            assert!(!r.contains(id));
            assert!(r.insert(id, seen(n as f64)));
            assert!(!r.insert(id, seen(99.0)), "{id} is held already");
        }
        assert_eq!(r.len(), 5);
        assert!(ids.iter().all(|id| r.contains(id)));
        assert!(!r.contains("864240cc-efd7-4b5f-9491-0b08f9a31142"));
        assert!(!r.contains("864240CC-efd7-4b5f-9491-0b08f9a31140"));
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(r.oldest(), Some(seen(n as f64)));
            assert_eq!(r.pop_oldest(), Some(seen(n as f64)));
            assert!(!r.contains(id), "{id} popped");
            assert!(ids[n + 1..].iter().all(|id| r.contains(id)));
        }
        assert!(r.is_empty() && r.pop_oldest().is_none());
        // Sequence numbers keep running after the ring emptied.
        assert!(r.insert(A, seen(9.0)));
        assert!(r.contains(A));
    }

    #[test]
    fn many_ids_through_a_sliding_window() {
        let mut r = RecentIds::default();
        let id = |n: u64| format!("{n}");
        for n in 0..5_000u64 {
            assert!(r.insert(&id(n), seen(n as f64)));
            if r.len() > 100 {
                r.pop_oldest();
            }
            assert!(r.contains(&id(n)));
            assert!(n < 100 || !r.contains(&id(n - 100)));
        }
        assert_eq!(r.len(), 100);
        assert!((4_900..5_000).all(|n| r.contains(&id(n))));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = RecentIds {
            base: u32::MAX - 3,
            ..RecentIds::default()
        };
        let id = |n: u64| format!("{n}");
        for n in 0..50u64 {
            assert!(r.insert(&id(n), seen(n as f64)));
            if r.len() > 8 {
                assert_eq!(r.pop_oldest(), Some(seen((n - 8) as f64)));
            }
            assert!(!r.insert(&id(n), seen(0.0)));
        }
        assert!((42..50).all(|n| r.contains(&id(n))));
        assert!((0..42).all(|n| !r.contains(&id(n))));
    }

    /// A UUID made from a counter, as our id generators make them.
    fn counted(n: u64) -> String {
        crate::conn::uuid_v4({
            let mut b = [0xab; 16];
            b[8..].copy_from_slice(&n.to_be_bytes());
            b
        })
    }

    #[test]
    fn ascending_uuids_need_no_index_until_one_comes_out_of_order() {
        let mut r = RecentIds::default();
        for n in 1..=300 {
            assert!(r.insert(&counted(n * 10), seen(n as f64)));
            if r.len() > 100 {
                r.pop_oldest();
            }
        }
        assert!(matches!(r.order, Order::Ascending(_)));
        assert_eq!(r.index.len(), 0);
        // The newest again, an older one still held, one already dropped
        // (the guard's horizon answers for those), one between two held.
        assert!(!r.insert(&counted(3000), seen(0.0)));
        assert_eq!(r.order, Order::Indexed);
        assert_eq!(r.index.len(), 100);
        assert!(!r.insert(&counted(2500), seen(0.0)));
        assert!(r.insert(&counted(5), seen(0.0)));
        assert!(r.insert(&counted(2505), seen(0.0)));
        assert!((201..=300).all(|n| r.contains(&counted(n * 10))));
        // Emptied, it starts over without an index.
        while r.pop_oldest().is_some() {}
        assert_eq!(r.order, Order::Empty);
        assert!(r.insert(&counted(1), seen(0.0)));
        assert!(matches!(r.order, Order::Ascending(_)));
    }

    /// Against a plain model: any mix of ascending, repeated, random and
    /// non-UUID ids, with drops from the front, gives the same answers.
    #[test]
    fn behaves_like_a_plain_ordered_set() {
        let mut r = RecentIds::default();
        let mut model: std::collections::VecDeque<String> = Default::default();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut counter = 0;
        let mut modes = [0; 2];
        for step in 0..20_000 {
            // Phases of our own senders' ids (ascending, rarely a repeat)
            // and of everything mixed.
            let roll = match (step / 2_000) % 2 {
                0 if next() % 200 != 0 => 0,
                0 => 80,
                _ => next() % 100,
            };
            let id = match roll {
                0..60 => {
                    counter += 1 + next() % 3;
                    counted(counter)
                }
                60..75 => counted(next() % (counter + 1)),
                75..85 => model
                    .get((next() as usize) % model.len().max(1))
                    .cloned()
                    .unwrap_or_else(|| "x".into()),
                85..95 => crate::conn::uuid_v4(u128::from(next()).to_be_bytes()),
                _ => format!("other-{}", next() % 50),
            };
            let fresh = !model.contains(&id);
            assert_eq!(r.insert(&id, seen(step as f64)), fresh, "step {step}: {id}");
            if fresh {
                model.push_back(id);
            }
            // Now and then everything expires, and the mode starts over.
            let drain = next() % 300 == 0;
            while model.len() > 64 || ((drain || next() % 50 == 0) && !model.is_empty()) {
                model.pop_front();
                assert!(r.pop_oldest().is_some());
            }
            assert_eq!(r.len(), model.len());
            modes[usize::from(r.order == Order::Indexed)] += 1;
        }
        assert!(model.iter().all(|id| r.contains(id)));
        assert!(
            modes.iter().all(|&n| n > 1_000),
            "both modes exercised: {modes:?}"
        );
    }
}
