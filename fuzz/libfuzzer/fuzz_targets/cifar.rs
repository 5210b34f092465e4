//! libFuzzer entry for [`cnnc_fuzz::cifar`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::cifar(data));
