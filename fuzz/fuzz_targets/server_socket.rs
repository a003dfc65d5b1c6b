//! `cargo +nightly fuzz run server_socket`: see link_fuzz::server_socket.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| link_fuzz::server_socket::run(data));
