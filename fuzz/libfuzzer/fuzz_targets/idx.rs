//! libFuzzer entry for [`cnnc_fuzz::idx`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::idx(data));
