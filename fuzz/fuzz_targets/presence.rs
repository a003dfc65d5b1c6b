//! `cargo +nightly fuzz run presence`: see link_fuzz::presence.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::presence::run(data));
