//! HMAC keys, signing and constant-time verification (protocol §3.1, §3.3).
//!
//! This module owns the MAC: which hash algorithms exist, the secret key
//! type (a newtype whose `Debug` never prints the secret), lowercase-hex
//! signatures, and strict verification. Verification differs from the
//! reference on purpose (protocol §0.2): the signature text must be exactly the
//! digest length in hex, either case; trailing garbage is refused.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::error::ConfigError;
use crate::hmac_sha256;

/// The HMAC hash algorithm. Both ends must agree; nothing is negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// HMAC-SHA-256, the protocol default (64 hex chars).
    #[default]
    Sha256,
    /// HMAC-SHA-384 (96 hex chars).
    Sha384,
    /// HMAC-SHA-512 (128 hex chars).
    Sha512,
}

impl HashAlgo {
    /// The name used in configuration (`sha256`, `sha384`, `sha512`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha384 => hmac::HMAC_SHA384,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            _ => Err(ConfigError::UnsupportedHash(s.to_owned())),
        }
    }
}

/// A secret HMAC key (the shared secret or a per-peer key), used as its
/// UTF-8 bytes. `Debug` is redacted.
///
/// Clones share the precomputed MAC states: a hub holds a clone for every
/// socket signed under one secret, and each costs a pointer, not the
/// states (about 180 bytes).
#[derive(Clone)]
pub struct Key {
    algo: HashAlgo,
    key: Arc<MacKey>,
    id: KeyId,
}

/// HMAC-SHA-256, the default and the hot path, runs on our precomputed
/// states ([`hmac_sha256`]); SHA-384 and SHA-512 on `ring`.
#[derive(Clone)]
enum MacKey {
    Sha256(hmac_sha256::MacKey),
    Ring(hmac::Key),
}

/// Identifies a [`Key`] and its clones, e.g. to reuse work done under the
/// same key ([`crate::envelope::SharedPrefix`]). It says nothing about the
/// secret: two keys made from the same secret have different ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(u64);

impl KeyId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Key {
    /// Builds a key from a secret string. An empty secret is refused.
    pub fn new(secret: &str, algo: HashAlgo) -> Result<Self, ConfigError> {
        if secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        let key = Arc::new(match algo {
            HashAlgo::Sha256 => MacKey::Sha256(hmac_sha256::MacKey::new(secret.as_bytes())),
            HashAlgo::Sha384 | HashAlgo::Sha512 => {
                MacKey::Ring(hmac::Key::new(algo.ring(), secret.as_bytes()))
            }
        });
        Ok(Self {
            algo,
            key,
            id: KeyId::fresh(),
        })
    }

    /// The hash algorithm of this key.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// This key's identity, shared by its clones.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Starts an incremental MAC over a signing string given in pieces.
    pub fn context(&self) -> SigningContext {
        SigningContext {
            algo: self.algo,
            ctx: match &*self.key {
                MacKey::Sha256(k) => MacContext::Sha256(k.context()),
                MacKey::Ring(k) => MacContext::Ring(hmac::Context::with_key(k)),
            },
        }
    }

    /// Signs `msg` and returns the tag.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        match &*self.key {
            MacKey::Sha256(k) => Signature::from_tag(self.algo, &k.mac(msg)),
            MacKey::Ring(_) => {
                let mut ctx = self.context();
                ctx.update(msg);
                ctx.finish()
            }
        }
    }

    /// Checks `sig_text` against the MAC of `msg` in constant time.
    ///
    /// The text must be exactly `2 × digest_len` hex digits (either case).
    pub fn verify(&self, msg: &[u8], sig_text: &str) -> bool {
        let len = self.algo.digest_len();
        let tag = self.sign(msg);
        // The usual case first: the lowercase hex we would write. Equal
        // texts are hex digits of the right length by construction.
        let mut ours = [0u8; 128];
        if constant_time_eq(
            crate::hex::encode_into(tag.as_bytes(), &mut ours),
            sig_text.as_bytes(),
        ) {
            return true;
        }
        // Upper or mixed case (or not a tag at all): compare the bytes.
        let Some(theirs) = decode_hex_exact(sig_text, len) else {
            return false;
        };
        constant_time_eq(tag.as_bytes(), &theirs[..len])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algo", &self.algo)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An HMAC computation in progress; clone it to share a common prefix.
#[derive(Clone)]
pub struct SigningContext {
    algo: HashAlgo,
    ctx: MacContext,
}

#[derive(Clone)]
enum MacContext {
    Sha256(hmac_sha256::MacContext),
    Ring(hmac::Context),
}

impl SigningContext {
    /// Feeds the next piece of the signing string.
    pub fn update(&mut self, piece: &[u8]) {
        match &mut self.ctx {
            MacContext::Sha256(c) => c.update(piece),
            MacContext::Ring(c) => c.update(piece),
        }
    }

    /// Completes the MAC.
    pub fn finish(self) -> Signature {
        match self.ctx {
            MacContext::Sha256(c) => Signature::from_tag(self.algo, &c.finish()),
            MacContext::Ring(c) => Signature::from_tag(self.algo, c.sign().as_ref()),
        }
    }
}

impl fmt::Debug for SigningContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningContext")
            .field("algo", &self.algo)
            .finish_non_exhaustive()
    }
}

/// A computed MAC tag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    algo: HashAlgo,
    bytes: [u8; 64],
}

impl Signature {
    /// A tag of `algo`'s digest length.
    fn from_tag(algo: HashAlgo, tag: &[u8]) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..tag.len()].copy_from_slice(tag);
        Self { algo, bytes }
    }

    /// The raw tag bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algo.digest_len()]
    }

    /// Appends the lowercase hex form (what goes in `sig`) to `out`.
    pub fn write_hex(&self, out: &mut String) {
        let mut buf = [0u8; 128];
        let hex = crate::hex::encode_into(self.as_bytes(), &mut buf);
        // Every byte written is an ASCII hex digit, so this never fails.
        out.push_str(std::str::from_utf8(hex).unwrap_or_default());
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        let mut s = String::new();
        self.write_hex(&mut s);
        s
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Whether two tags of one length are equal, in time independent of where
/// they differ: their differences are OR-ed together word by word, and only
/// that one word is compared (through `subtle`, which keeps the compiler
/// from turning it into an early exit).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, ra) = a.as_chunks::<8>();
    let (wb, rb) = b.as_chunks::<8>();
    let words = wa.iter().zip(wb).fold(0u64, |d, (x, y)| {
        d | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y))
    });
    let bytes = ra.iter().zip(rb).fold(0u8, |d, (x, y)| d | (x ^ y));
    bool::from((words | u64::from(bytes)).ct_eq(&0))
}

/// Decodes exactly `len` bytes of hex; anything else (odd length, extra or
/// missing digits, non-hex) gives `None`.
fn decode_hex_exact(text: &str, len: usize) -> Option<[u8; 64]> {
    let mut out = [0u8; 64];
    let ok = len <= 64 && crate::hex::decode_into(text.as_bytes(), &mut out[..len]);
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str =
        r#"{"data":{"a":1},"from":null,"id":"x","to":null,"ts":1000,"type":"t","v":1}"#;
    const SIG: &str = "4f9134cd8bc1091eb4009d54260df36fe1406c453af246c4d8415d908ee7cd0f";

    #[test]
    fn signs_spec_vector_one() {
        let key = Key::new("k", HashAlgo::Sha256).unwrap();
        assert_eq!(key.sign(CANON.as_bytes()).to_hex(), SIG);
    }

    #[test]
    fn verify_is_strict_about_hex() {
        let key = Key::new("k", HashAlgo::Sha256).unwrap();
        assert!(key.verify(CANON.as_bytes(), SIG));
        assert!(key.verify(CANON.as_bytes(), &SIG.to_uppercase()));
        assert!(
            !key.verify(CANON.as_bytes(), &format!("{SIG}zz")),
            "trailing garbage (protocol §0.2)"
        );
        assert!(!key.verify(CANON.as_bytes(), &format!("{SIG}ab")));
        assert!(!key.verify(CANON.as_bytes(), &SIG[..62]));
        assert!(!key.verify(CANON.as_bytes(), ""));
        let mut flipped = SIG.to_owned();
        flipped.replace_range(0..1, "5");
        assert!(!key.verify(CANON.as_bytes(), &flipped));
    }

    #[test]
    fn a_difference_anywhere_in_the_tag_is_refused() {
        for algo in [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512] {
            let key = Key::new("k", algo).unwrap();
            let tag = key.sign(CANON.as_bytes());
            assert!(key.verify(CANON.as_bytes(), &tag.to_hex()), "{algo}");
            for i in 0..algo.digest_len() {
                let mut bytes = tag.as_bytes().to_vec();
                bytes[i] ^= 0x01;
                assert!(!constant_time_eq(tag.as_bytes(), &bytes), "{algo} byte {i}");
                let other: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!key.verify(CANON.as_bytes(), &other), "{algo} byte {i}");
            }
        }
        assert!(constant_time_eq(b"0123456789", b"0123456789"));
        assert!(!constant_time_eq(b"0123456789", b"0123456788"));
        assert!(!constant_time_eq(b"01234567", b"012345678"));
    }

    #[test]
    fn debug_redacts_secret() {
        let key = Key::new("super-secret-value", HashAlgo::Sha512).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("super-secret-value"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn hash_names_parse() {
        assert_eq!("SHA384".parse::<HashAlgo>().unwrap(), HashAlgo::Sha384);
        assert!(matches!(
            "md5".parse::<HashAlgo>(),
            Err(ConfigError::UnsupportedHash(_))
        ));
        assert!(matches!(
            Key::new("", HashAlgo::Sha256),
            Err(ConfigError::EmptySecret)
        ));
    }
}
