//! Fuzz target `request_iti18_iti38`: see [`duo_fuzz::request_iti18_iti38`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::request_iti18_iti38(data));
