//! Finding the bytes a JSON string cannot hold as they are (`"`, `\` and
//! the controls below 0x20): in eight-byte words (SWAR), where the wire's
//! strings are scanned (`signed_form`), and with a fold the compiler can
//! vectorise where they are written (`canonical::write_str`).

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when `b` is a byte a JSON string must escape.
#[inline]
fn special(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// True when no byte of `bytes` needs an escape.
#[inline]
pub(crate) fn is_plain(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & !special(b))
}

/// The high bit of each byte of `v` that is below `n` (`n` ≤ 0x80). Bits
/// above the lowest one may be false (a borrow runs upward); the lowest
/// set bit always marks the first such byte.
#[inline]
fn below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS
}

/// The high bit of the special bytes of a little-endian word, exact at its
/// lowest set bit (see [`below`]; an equal byte is a byte below 1 after
/// the xor).
#[inline]
fn specials(w: u64) -> u64 {
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
}

/// The index of the first byte of `bytes` that ends a plain run (`"`, `\`
/// or a control), if any.
#[inline]
pub(crate) fn find_special(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let hits = specials(u64::from_le_bytes(w));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| special(b)).map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_special_byte_at_every_offset_and_length() {
        for len in 0..29 {
            let plain = vec![b'a'; len];
            assert_eq!(find_special(&plain), None, "{len}");
            assert!(is_plain(&plain));
            for at in 0..len {
                for s in [b'"', b'\\', 0x00, 0x1F] {
                    let mut b = plain.clone();
                    b[at] = s;
                    // A second special byte later must not win.
                    if at + 1 < len {
                        b[len - 1] = b'"';
                    }
                    assert_eq!(find_special(&b), Some(at), "len {len} at {at} byte {s}");
                    assert!(!is_plain(&b));
                }
            }
        }
        // Bytes at and above 0x20 other than `"` and `\` are plain, UTF-8 too.
        let all: Vec<u8> = (0x20..=0xFF)
            .filter(|b| *b != b'"' && *b != b'\\')
            .collect();
        assert_eq!(find_special(&all), None);
    }
}
