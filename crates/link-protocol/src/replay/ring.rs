//! A first-in first-out ring kept in fixed-size chunks.
//!
//! A replay cache holds up to 10 000 ids per sender, so a `VecDeque` of its
//! records ends up as a 16 384-slot buffer reached by doubling: each step
//! allocates fresh memory (which the kernel must zero on first touch) and
//! copies everything over. Here the records live in chunks of [`CHUNK`]:
//! pushing never moves a record, a full cache allocates nothing (the chunk
//! drained at the front is reused at the back), and the memory held is
//! the records rounded up to a chunk, not to a power of two. The first
//! chunk grows like a `Vec` from one record, so a sender with one id (an
//! idle peer's hello) costs one record and one chunk slot.

use std::collections::VecDeque;

/// Records per chunk.
pub(super) const CHUNK: usize = 256;

#[derive(Debug)]
pub(super) struct Ring<T> {
    /// Every chunk but the last holds exactly `CHUNK` items.
    chunks: VecDeque<Vec<T>>,
    /// Items at the start of the front chunk that were popped already.
    head: usize,
    len: usize,
    /// The last chunk drained at the front, kept for the next push.
    spare: Option<Vec<T>>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
            spare: None,
        }
    }
}

impl<T> Ring<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th item, oldest first.
    pub(super) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let at = self.head + i;
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub(super) fn push_back(&mut self, item: T) {
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = match self.spare.take() {
                Some(mut c) => {
                    c.clear();
                    c
                }
                // The first chunk grows as needed, from one record (most
                // senders are peers that sent a hello and went idle); later
                // ones are full size.
                None if self.chunks.is_empty() => {
                    self.chunks.reserve_exact(1);
                    Vec::with_capacity(1)
                }
                None => Vec::with_capacity(CHUNK),
            };
            self.chunks.push_back(chunk);
        }
        if let Some(c) = self.chunks.back_mut() {
            c.push(item);
            self.len += 1;
        }
    }

    /// Drops the oldest item (it stays allocated until its chunk is reused
    /// or freed).
    pub(super) fn advance(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head += 1;
        if self.len == 0 {
            // Give the memory back once there is nothing left to remember.
            *self = Self::default();
        } else if self.head == CHUNK {
            self.head = 0;
            self.spare = self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_across_chunks() {
        let mut r = Ring::default();
        let (mut next_in, mut next_out) = (0usize, 0usize);
        // Grow past three chunks, then slide a window of 700 for a while.
        for step in 0..5_000 {
            r.push_back(next_in);
            next_in += 1;
            if r.len() > 700 || (step % 3 == 0 && step > 2_000) {
                assert_eq!(r.front(), Some(&next_out));
                r.advance();
                next_out += 1;
            }
            assert_eq!(r.len(), next_in - next_out);
            assert_eq!(r.get(r.len() - 1), Some(&(next_in - 1)));
            assert_eq!(r.get(r.len()), None);
        }
        for (i, want) in (next_out..next_in).enumerate() {
            assert_eq!(r.get(i), Some(&want));
        }
        // Chunks are reused, not piled up: the held ones cover the items.
        assert!(r.chunks.len() <= r.len() / CHUNK + 2);
        while !r.is_empty() {
            assert_eq!(r.front(), Some(&next_out));
            r.advance();
            next_out += 1;
        }
        assert!(r.chunks.is_empty() && r.spare.is_none() && r.front().is_none());
        r.advance();
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_small_ring_holds_a_small_chunk() {
        let mut r = Ring::default();
        for i in 0..3u64 {
            r.push_back(i);
        }
        assert!(r.chunks[0].capacity() < CHUNK);
    }

    #[test]
    fn a_ring_of_one_holds_one_slot() {
        let mut r = Ring::default();
        r.push_back(7u64);
        assert_eq!((r.chunks.capacity(), r.chunks[0].capacity()), (1, 1));
        r.push_back(8);
        assert_eq!(r.get(1), Some(&8));
    }
}
