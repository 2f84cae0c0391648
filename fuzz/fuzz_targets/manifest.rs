#![no_main]
libfuzzer_sys::fuzz_target!(init: mgm_fuzz::init(), |data: &[u8]| mgm_fuzz::manifest(data));
