//! `cargo +nightly fuzz run hub_conn`: see link_fuzz::hub_conn.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::hub_conn::run(data));
