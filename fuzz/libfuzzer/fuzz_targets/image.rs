//! libFuzzer entry for [`cnnc_fuzz::image`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::image(data));
