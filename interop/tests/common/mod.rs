//! What interop's integration tests share: the shipped specs, a network's weights and
//! perturbed batch-norm statistics, the deterministic batch every fixture uses, and the largest
//! difference of two sets of logits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnnc_runtime::weights::{TensorData, state_dict};
use cnnc_runtime::{Entry, Network, Visit};
use ndarray::Array4;

/// The shipped models (models/) and tests/specs/ (PyTorch's corners), sorted.
pub fn specs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut specs: Vec<PathBuf> = [root.join("../models"), root.join("tests/specs")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("the spec folder is readable"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 9, "models/ and tests/specs/ hold the specs");
    specs
}

/// Running statistics that are not the identity, so that exporting them is tested too.
pub fn perturb_buffers(net: &mut Network) {
    net.visit(&mut |entry| {
        if let Entry::Buffer { name, value } = entry {
            let var = name.ends_with("running_var");
            for (i, v) in value.iter_mut().enumerate() {
                let t = (i % 7) as f32 / 7.0;
                *v = if var { 0.5 + t } else { t - 0.4 };
            }
        }
    });
}

/// The network's float tensors by state_dict name.
pub fn weights_of(net: &mut Network) -> BTreeMap<String, Vec<f32>> {
    state_dict(net)
        .into_iter()
        .filter_map(|(name, t)| match t {
            TensorData::F32(a) => Some((name, a.iter().copied().collect())),
            _ => None,
        })
        .collect()
}

/// The batch `x[n, c, y, x] = ((n*31 + c*17 + y*7 + x*3) % 23) / 11 - 1` of two `input`
/// images, as tools/make_onnx_fixtures.py builds it too.
pub fn batch([c, h, w]: [usize; 3]) -> Array4<f32> {
    Array4::from_shape_fn((2, c, h, w), |(n, c, y, x)| {
        ((n * 31 + c * 17 + y * 7 + x * 3) % 23) as f32 / 11.0 - 1.0
    })
}

/// The largest `|a - b|` over two sets of logits.
pub fn max_diff<'a>(
    got: impl IntoIterator<Item = &'a f32>,
    want: impl IntoIterator<Item = &'a f32>,
) -> f32 {
    got.into_iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}
