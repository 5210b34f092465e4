//! libFuzzer entry for [`cnnc_fuzz::spec_yaml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::spec_yaml(data));
