#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trailsight_fuzz::config(data));
