//! Fuzz target `mitz_closed_answer`: see [`duo_fuzz::mitz_closed_answer`] for the input shape and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duo_fuzz::mitz_closed_answer(data));
