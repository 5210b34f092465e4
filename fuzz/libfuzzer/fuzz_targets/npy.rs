//! libFuzzer entry for [`cnnc_fuzz::npy`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::npy(data));
