//! Finding the bytes a JSON string cannot hold as they are (`"`, `\` and
//! the controls below 0x20): in eight-byte words (SWAR), where the wire's
//! strings are scanned (`signed_form`), and with a fold the compiler can
//! vectorise where they are written (`canonical::write_str`); and counting
//! a signature's hex digits the same way.

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

/// The index of the first byte at or after `from` in `bytes` that ends a
/// plain run (`"`, `\` or a control), and the high bits of the plain bytes
/// before it (zero when they are all ASCII). `None` when no such byte
/// follows: a string that runs off the text.
#[inline]
pub(crate) fn next_special(bytes: &[u8], from: usize) -> Option<(usize, u64)> {
    let mut i = from;
    let mut high = 0;
    while let Some(word) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let hits = specials(w);
        if hits != 0 {
            let k = hits.trailing_zeros() / 8;
            // The bytes below the special one (k < 8, so the shift fits).
            let before = (1u64 << (k * 8)) - 1;
            return Some((i + k as usize, high | (w & HIGHS & before)));
        }
        high |= w & HIGHS;
        i += 8;
    }
    loop {
        let c = *bytes.get(i)?;
        if special(c) {
            return Some((i, high));
        }
        high |= u64::from(c & 0x80);
        i += 1;
    }
}

/// The high bit of each byte of `x` (every byte below 0x80) that lies in
/// `lo..=hi`. No byte's sum carries into the next one, so each is exact.
#[inline]
fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x.wrapping_add(ONES * u64::from(0x80 - lo));
    let above_hi = x.wrapping_add(ONES * u64::from(0x7F - hi));
    at_least_lo & !above_hi & HIGHS
}

/// How many ASCII hex digits (either case) `bytes` ends with, counted
/// eight at a time from the end.
pub(crate) fn trailing_hex_digits(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while let Some(word) = bytes[..end].last_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        let x = w & !HIGHS;
        let hex = (in_range(x, b'0', b'9') | in_range(x | (ONES * 0x20), b'a', b'f')) & !w;
        let not_hex = !hex & HIGHS;
        if not_hex != 0 {
            // Little-endian: the word's last byte is its most significant.
            return bytes.len() - end + (not_hex.leading_zeros() / 8) as usize;
        }
        end -= 8;
    }
    let tail = bytes[..end]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    bytes.len() - end + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_special_byte_at_every_offset_and_length() {
        for len in 0..29 {
            let plain = vec![b'a'; len];
            assert_eq!(next_special(&plain, 0), None, "{len}");
            assert!(is_plain(&plain));
            for at in 0..len {
                for s in [b'"', b'\\', 0x00, 0x1F] {
                    let mut b = plain.clone();
                    b[at] = s;
                    // A second special byte later must not win.
                    if at + 1 < len {
                        b[len - 1] = b'"';
                    }
                    assert_eq!(
                        next_special(&b, 0).map(|(i, _)| i),
                        Some(at),
                        "len {len} at {at} byte {s}"
                    );
                    assert!(!is_plain(&b));
                }
            }
        }
        // Bytes at and above 0x20 other than `"` and `\` are plain, UTF-8 too.
        let all: Vec<u8> = (0x20..=0xFF)
            .filter(|b| *b != b'"' && *b != b'\\')
            .collect();
        assert_eq!(next_special(&all, 0), None);
    }

    #[test]
    fn next_special_finds_the_same_byte_and_sees_non_ascii_before_it() {
        for len in 0..29 {
            for at in 0..len {
                for (fill, ascii) in [(b'a', true), (0xC3, false)] {
                    let mut b = vec![fill; len];
                    b[at] = b'"';
                    for from in 0..=at {
                        let (got, high) = next_special(&b, from).unwrap();
                        assert_eq!(got, at, "len {len} at {at} from {from}");
                        assert_eq!(
                            high == 0,
                            ascii || from == at,
                            "len {len} at {at} from {from}"
                        );
                    }
                    // A non-ASCII byte after the special one is not seen.
                    if at + 1 < len {
                        b[at + 1] = 0xC3;
                        assert_eq!(next_special(&b, at).unwrap(), (at, 0));
                    }
                }
            }
            assert_eq!(next_special(&vec![b'a'; len], 0), None);
        }
    }

    #[test]
    fn trailing_hex_digits_counts_as_is_ascii_hexdigit_does() {
        // Every byte value at every distance from the end of a hex run.
        for len in 0..29 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'f'; len];
                    b[at] = c;
                    let want = b.iter().rev().take_while(|b| b.is_ascii_hexdigit()).count();
                    assert_eq!(
                        trailing_hex_digits(&b),
                        want,
                        "len {len} at {at} byte {c:#x}"
                    );
                }
            }
            assert_eq!(trailing_hex_digits(&vec![b'A'; len]), len);
        }
    }
}
