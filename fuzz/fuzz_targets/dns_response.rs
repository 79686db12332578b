#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| heim_fuzz::dns_response::check(data));
