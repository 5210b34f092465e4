//! libFuzzer entry for [`cnnc_fuzz::safetensors`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::safetensors(data));
