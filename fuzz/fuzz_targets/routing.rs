//! `cargo +nightly fuzz run routing`: see link_hub::fuzzing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_hub::fuzzing::routing(data));
