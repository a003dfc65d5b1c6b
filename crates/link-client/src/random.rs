//! The random numbers the link state machine asks for (reconnect jitter,
//! the random URL order): the operating system's, or a seeded sequence
//! when the configuration asks for one (`random_seed`, for reproducible
//! tests).

/// Values in `[0, 1)`.
pub(crate) type RandomSource = Box<dyn FnMut() -> f64 + Send>;

/// The OS's random numbers, or splitmix64 from `seed`.
pub(crate) fn source(seed: Option<u64>) -> RandomSource {
    match seed {
        Some(mut state) => Box::new(move || {
            // splitmix64 (Steele, Lea, Flood 2014): every seed, including
            // 0, gives a full-period, well-mixed sequence.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            unit(z ^ (z >> 31))
        }),
        None => {
            let rng = ring::rand::SystemRandom::new();
            Box::new(move || {
                let mut b = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&rng, &mut b);
                unit(u64::from_le_bytes(b))
            })
        }
    }
}

/// The top 53 bits of `bits` as a float in `[0, 1)`.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_sequence_in_the_unit_interval() {
        let take = |seed| {
            let mut r = source(Some(seed));
            (0..64).map(|_| r()).collect::<Vec<f64>>()
        };
        let a = take(7);
        assert_eq!(a, take(7), "same seed, same sequence");
        assert_ne!(a, take(8), "another seed, another sequence");
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let mut os = source(None);
        assert!((0..64).map(|_| os()).all(|x| (0.0..1.0).contains(&x)));
    }
}
