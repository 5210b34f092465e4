//! Fuzz targets for every parser cnnc runs on files it is handed: the YAML and DSL spec
//! front-ends, safetensors weights, `.npy` arrays, IDX and CIFAR-10 datasets, PNG/JPEG images, and
//! ONNX models.
//!
//! Each target takes arbitrary bytes, runs the real code path on them and asserts what must hold
//! beyond "no panic": spans inside the text, a valid spec printing and reading back to the same
//! model, weights that load saving and loading back bit for bit, dataset sizes that agree with
//! their headers. libFuzzer drives them from `fuzz/libfuzzer` (nightly); on stable, the test
//! `tests/corpus.rs` replays the seed and regression corpora through them.

mod data;
mod onnx;
mod spec;
mod tensors;

pub use data::{cifar, idx, image, npy};
pub use onnx::onnx;
pub use spec::{spec_dsl, spec_yaml};
pub use tensors::safetensors;

/// A fuzz target: runs one parser on arbitrary bytes, panicking only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target with its name, which is also its corpus folder (`corpus/<name>/`,
/// `regressions/<name>/`) and its libFuzzer binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("spec_yaml", spec_yaml),
    ("spec_dsl", spec_dsl),
    ("safetensors", safetensors),
    ("npy", npy),
    ("idx", idx),
    ("cifar", cifar),
    ("image", image),
    ("onnx", onnx),
];
