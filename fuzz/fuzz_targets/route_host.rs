#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| heim_fuzz::route_host::check(data));
