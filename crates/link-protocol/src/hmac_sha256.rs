//! HMAC-SHA-256 (RFC 2104) on the SHA-256 compression function of `sha2`,
//! for the protocol's default algorithm: every frame a peer writes or reads
//! is MACed here, so this module owns the per-frame cost of signing.
//!
//! A key's inner and outer states (the compression of `key ⊕ ipad` and
//! `key ⊕ opad`) are computed once; a MAC then costs the message's blocks,
//! its padding block(s) and one outer block, with no per-call set-up. A
//! context is a few hundred bytes of plain state: cloning one shares a
//! common prefix (see [`crate::envelope::SharedPrefix`]). Checked against
//! `ring`'s HMAC and RFC 4231's vectors in the tests.

use sha2::block_api::compress256;

/// SHA-256's block size in bytes.
const BLOCK: usize = 64;
/// SHA-256's digest size in bytes.
pub(crate) const DIGEST: usize = 32;
/// FIPS 180-4 §5.3.3: SHA-256's initial hash value.
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 in progress: the chaining state, a partial block, and the length
/// hashed so far (in bytes, for the padding).
#[derive(Clone)]
struct Sha256 {
    state: [u32; 8],
    buf: [u8; BLOCK],
    buffered: usize,
    len: u64,
}

impl Sha256 {
    /// Resumes from `state` after `len` bytes (whole blocks) were hashed.
    fn resume(state: [u32; 8], len: u64) -> Self {
        Self {
            state,
            buf: [0; BLOCK],
            buffered: 0,
            len,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buffered > 0 {
            let take = (BLOCK - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < BLOCK {
                return;
            }
            compress256(&mut self.state, std::slice::from_ref(&self.buf));
            self.buffered = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        if !blocks.is_empty() {
            compress256(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// Pads (FIPS 180-4 §5.1.1) and returns the digest.
    fn finish(self) -> [u8; DIGEST] {
        finish(self.state, &self.buf[..self.buffered], self.len)
    }
}

/// Hashes the last partial block `rest` and the padding into `state`, for a
/// message of `len` bytes in all, and returns the digest.
fn finish(mut state: [u32; 8], rest: &[u8], len: u64) -> [u8; DIGEST] {
    let mut tail = [[0u8; BLOCK]; 2];
    let flat = tail.as_flattened_mut();
    flat[..rest.len()].copy_from_slice(rest);
    flat[rest.len()] = 0x80;
    let blocks = if rest.len() + 1 + 8 <= BLOCK { 1 } else { 2 };
    let end = blocks * BLOCK;
    flat[end - 8..end].copy_from_slice(&(len * 8).to_be_bytes());
    compress256(&mut state, &tail[..blocks]);
    let mut out = [0u8; DIGEST];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// The state after one block of `key ⊕ pad`.
fn keyed_state(key: &[u8; BLOCK], pad: u8) -> [u32; 8] {
    let mut block = [0u8; BLOCK];
    for (b, k) in block.iter_mut().zip(key) {
        *b = k ^ pad;
    }
    let mut state = IV;
    compress256(&mut state, std::slice::from_ref(&block));
    state
}

/// An HMAC-SHA-256 key, as its precomputed inner and outer states.
#[derive(Clone)]
pub(crate) struct MacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl MacKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        // RFC 2104 §2: a key longer than a block is hashed first, a shorter
        // one padded with zeros.
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            let mut h = Sha256::resume(IV, 0);
            h.update(secret);
            key[..DIGEST].copy_from_slice(&h.finish());
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        Self {
            inner: keyed_state(&key, 0x36),
            outer: keyed_state(&key, 0x5c),
        }
    }

    /// The MAC of `msg` in one piece: its whole blocks are hashed where
    /// they lie, nothing is buffered.
    pub(crate) fn mac(&self, msg: &[u8]) -> [u8; DIGEST] {
        let mut state = self.inner;
        let (blocks, rest) = msg.as_chunks::<BLOCK>();
        if !blocks.is_empty() {
            compress256(&mut state, blocks);
        }
        let inner = finish(state, rest, (BLOCK + msg.len()) as u64);
        finish(self.outer, &inner, (BLOCK + DIGEST) as u64)
    }

    pub(crate) fn context(&self) -> MacContext {
        MacContext {
            inner: Sha256::resume(self.inner, BLOCK as u64),
            outer: self.outer,
        }
    }
}

/// An HMAC-SHA-256 computation in progress.
#[derive(Clone)]
pub(crate) struct MacContext {
    inner: Sha256,
    outer: [u32; 8],
}

impl MacContext {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    pub(crate) fn finish(self) -> [u8; DIGEST] {
        let inner = self.inner.finish();
        finish(self.outer, &inner, (BLOCK + DIGEST) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::hmac;

    /// Both ways of computing a MAC, checked against each other.
    fn mac(key: &[u8], msg: &[u8]) -> [u8; DIGEST] {
        let key = MacKey::new(key);
        let mut ctx = key.context();
        ctx.update(msg);
        let tag = ctx.finish();
        assert_eq!(key.mac(msg), tag, "one-shot and incremental differ");
        tag
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231 §4.2–4.8 (test case 5, a truncated tag, is left out).
    #[test]
    fn rfc_4231_vectors() {
        let long_key = [0xaau8; 131];
        let cases: [(&[u8], &[u8], &str); 6] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than \
block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(mac(key, msg).to_vec(), unhex(want));
        }
    }

    /// Every length around the block and padding boundaries, in one piece.
    #[test]
    fn matches_ring_at_every_boundary() {
        let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [1, 32, 63, 64, 65, 200] {
            let key = &msg[..key_len];
            let r = hmac::Key::new(hmac::HMAC_SHA256, key);
            for len in 0..msg.len() {
                let want = hmac::sign(&r, &msg[..len]);
                assert_eq!(
                    &mac(key, &msg[..len])[..],
                    want.as_ref(),
                    "key {key_len} msg {len}"
                );
            }
        }
    }

    proptest! {
        /// Any key, any message, fed in any pieces, cloned midway: ring's tag.
        #[test]
        fn matches_ring_in_pieces(
            key in proptest::collection::vec(any::<u8>(), 0..150),
            msg in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &msg);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(msg.len() + 1)).collect();
            at.sort_unstable();
            let mut ctx = MacKey::new(&key).context();
            let mut from = 0;
            for &to in &at {
                ctx.update(&msg[from..to]);
                // A clone carries on exactly where its original stood.
                ctx = ctx.clone();
                from = to;
            }
            ctx.update(&msg[from..]);
            prop_assert_eq!(&ctx.finish()[..], want.as_ref());
        }
    }
}
