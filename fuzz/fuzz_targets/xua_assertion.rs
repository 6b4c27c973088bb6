//! Fuzz target `xua_assertion`: see [`duo_fuzz::xua_assertion`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::xua_assertion(data));
