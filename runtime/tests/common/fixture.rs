//! Reads the PyTorch parity fixtures written by `tools/make_fixtures.py` (committed under
//! `tests/fixtures/`), with the `safetensors` crate directly.

use std::path::PathBuf;

use cnnc_runtime::tensor::nchw_to_internal;
use ndarray::{ArrayView4, IxDyn};
use safetensors::{Dtype, SafeTensors};

/// Path of a fixture file relative to `tests/fixtures/`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// One fixture file, read into memory.
pub struct Fixture {
    pub name: String,
    bytes: Vec<u8>,
}

impl Fixture {
    /// Reads `tests/fixtures/<name>`; a missing fixture fails the test (regenerate with
    /// `tools/make_fixtures.py`).
    pub fn load(name: &str) -> Self {
        let p = path(name);
        let bytes = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{}: {e}; run tools/make_fixtures.py", p.display()));
        Fixture {
            name: name.to_owned(),
            bytes,
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Whether the file holds tensor `key`.
    pub fn has(&self, key: &str) -> bool {
        self.tensors().names().contains(&key)
    }

    /// Tensor `key` (f32) as values in PyTorch's order and its shape.
    pub fn f32(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let t = self
            .tensors()
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
        assert_eq!(t.dtype(), Dtype::F32, "{}: {key}", self.name);
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, t.shape().to_vec())
    }

    /// Tensor `key` (i64) as values.
    pub fn i64(&self, key: &str) -> Vec<i64> {
        let t = self
            .tensors()
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
        assert_eq!(t.dtype(), Dtype::I64, "{}: {key}", self.name);
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// Tensor `key` as an ndarray of its shape.
    pub fn array(&self, key: &str) -> ndarray::ArrayD<f32> {
        let (v, shape) = self.f32(key);
        ndarray::ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    }

    /// Tensor `key`, 4-D NCHW, in the runtime's internal layout; other ranks unchanged.
    pub fn internal(&self, key: &str) -> Vec<f32> {
        let (v, shape) = self.f32(key);
        if shape.len() != 4 {
            return v;
        }
        let view = ArrayView4::from_shape((shape[0], shape[1], shape[2], shape[3]), &v).unwrap();
        let mut out = vec![0.0; v.len()];
        nchw_to_internal(view, &mut out);
        out
    }

    /// Metadata entry `key` of the file.
    pub fn meta(&self, key: &str) -> String {
        let (_, metadata) = SafeTensors::read_metadata(&self.bytes).unwrap();
        metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_else(|| panic!("{}: no metadata `{key}`", self.name))
    }
}

/// Asserts `|a - b| <= abs + rel * |b|` elementwise, naming the first mismatch.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], abs: f32, rel: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        let err = (a - b).abs();
        assert!(
            err <= abs + rel * b.abs(),
            "{what}[{i}]: {a} vs PyTorch {b} (error {err})"
        );
    }
}
