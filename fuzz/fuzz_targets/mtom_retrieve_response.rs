//! Fuzz target `mtom_retrieve_response`: see [`duo_fuzz::mtom_retrieve_response`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::mtom_retrieve_response(data));
