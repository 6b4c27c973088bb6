//! Fuzz target `request_rad69_rad75`: see [`duo_fuzz::request_rad69_rad75`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::request_rad69_rad75(data));
