//! Fuzz target `mtom_multipart`: see [`duo_fuzz::mtom_multipart`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::mtom_multipart(data));
