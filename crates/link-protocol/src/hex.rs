//! Hex digits to and from bytes: the one decoder behind signature checks
//! and the replay cache's UUID packing, and the one lowercase encoder behind
//! every `sig` written or checked.

/// Each byte's two lowercase hex digits.
const DIGIT_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xF]];
        i += 1;
    }
    t
};

/// Writes the lowercase hex digits of `bytes` into `out[..2 × bytes.len()]`
/// and returns that part (`out` must be long enough).
pub(crate) fn encode_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a [u8] {
    let out = &mut out[..bytes.len() * 2];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&DIGIT_PAIRS[usize::from(b)]);
    }
    out
}

/// Decodes `digits` (two per byte, either case) into `out`; false when
/// `digits` is not exactly `2 × out.len()` hex digits (`out` is then
/// unspecified).
///
/// Branch-free, one digit at a time (a loop the compiler vectorises): each
/// digit's value, and one OR over all digits telling whether any was not
/// hex; then the values are paired up.
pub(crate) fn decode_into(digits: &[u8], out: &mut [u8]) -> bool {
    const MAX: usize = 128;
    if digits.len() != out.len() * 2 || digits.len() > MAX {
        return false;
    }
    let mut values = [0u8; MAX];
    let mut bad = 0u8;
    for (v, &c) in values.iter_mut().zip(digits) {
        let digit = c.wrapping_sub(b'0');
        let letter = (c | 0x20).wrapping_sub(b'a');
        let (is_digit, is_letter) = (digit < 10, letter < 6);
        bad |= u8::from(!(is_digit | is_letter));
        *v = if is_digit {
            digit
        } else {
            letter.wrapping_add(10)
        };
    }
    for (o, pair) in out.iter_mut().zip(values[..digits.len()].chunks_exact(2)) {
        *o = (pair[0] << 4) | (pair[1] & 0x0F);
    }
    bad == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_a_hex_digit_or_refused() {
        for c in 0..=255u8 {
            let want = char::from(c)
                .to_digit(16)
                .filter(|_| c.is_ascii_hexdigit())
                .map(|v| v as u8);
            // As the high digit before a '0', and as the low digit after an 'f'.
            let mut out = [0u8; 1];
            let got = decode_into(&[c, b'0'], &mut out).then_some(out[0]);
            assert_eq!(got, want.map(|v| v << 4), "{c:#04x} high");
            let got = decode_into(&[b'f', c], &mut out).then_some(out[0]);
            assert_eq!(got, want.map(|v| 0xF0 | v), "{c:#04x} low");
        }
    }

    #[test]
    fn encodes_every_byte_and_decodes_back() {
        let all: Vec<u8> = (0..=255).collect();
        let mut text = [0u8; 512];
        let hex = encode_into(&all, &mut text).to_vec();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want.as_bytes());
        // decode_into takes at most 64 bytes' worth at a time.
        for (digits, bytes) in hex.chunks(128).zip(all.chunks(64)) {
            let mut back = [0u8; 64];
            assert!(decode_into(digits, &mut back));
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn pairs_and_lengths() {
        let mut out = [0u8; 12];
        assert!(decode_into(b"0123456789abcdefABCDEF00", &mut out));
        assert_eq!(
            out,
            [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0x00
            ]
        );
        assert!(!decode_into(b"012", &mut [0u8; 1]));
        assert!(!decode_into(b"", &mut [0u8; 1]));
        assert!(decode_into(b"", &mut []));
        assert!(!decode_into(&[b'0'; 130], &mut [0u8; 65]));
    }
}
