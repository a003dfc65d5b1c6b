//! `cargo +nightly fuzz run client_conn`: see link_fuzz::client_conn.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::client_conn::run(data));
