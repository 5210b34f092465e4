//! libFuzzer entry for [`cnnc_fuzz::onnx`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnnc_fuzz::onnx(data));
