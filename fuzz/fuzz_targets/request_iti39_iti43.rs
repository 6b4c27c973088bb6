//! Fuzz target `request_iti39_iti43`: see [`duo_fuzz::request_iti39_iti43`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::request_iti39_iti43(data));
