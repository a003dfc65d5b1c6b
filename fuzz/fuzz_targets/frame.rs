//! `cargo +nightly fuzz run frame`: see link_fuzz::frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::frame::run(data));
