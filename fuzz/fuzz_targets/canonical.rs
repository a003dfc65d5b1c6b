//! `cargo +nightly fuzz run canonical`: see link_fuzz::canonical.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::canonical::run(data));
