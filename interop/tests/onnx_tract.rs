//! Every model in models/ exported to ONNX and run by tract, a second ONNX runtime written in
//! Rust: its logits must match cnnc's executor to 1e-5 (relative to the logits' size), with
//! the seeded weights and with the batch-norm statistics moved off their defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnnc_interop::export::{ExportOptions, export};
use cnnc_runtime::weights::{TensorData, state_dict};
use cnnc_runtime::{Entry, Mode, Network, Visit};
use ndarray::Array4;
use tract_onnx::prelude::*;

const TOLERANCE: f32 = 1e-5;

/// The shipped models, and tests/specs/ (PyTorch's corners).
fn models() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut specs = Vec::new();
    for dir in [root.join("../models"), root.join("tests/specs")] {
        specs.extend(
            std::fs::read_dir(&dir)
                .expect("the spec folder is readable")
                .map(|e| e.expect("a directory entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
        );
    }
    specs.sort();
    assert!(specs.len() >= 9, "models/ and tests/specs/ hold the specs");
    specs
}

/// Running statistics that are not the identity, so that exporting them is tested too.
fn perturb_buffers(net: &mut Network) {
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

fn weights(net: &mut Network) -> BTreeMap<String, Vec<f32>> {
    state_dict(net)
        .into_iter()
        .filter_map(|(name, t)| match t {
            TensorData::F32(a) => Some((name, a.iter().copied().collect())),
            _ => None,
        })
        .collect()
}

fn tract_logits(bytes: &[u8], x: &Array4<f32>) -> TractResult<ndarray::ArrayD<f32>> {
    let shape: Vec<usize> = x.shape().to_vec();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor = x.clone().into_dyn().into();
    let out = model.run(tvec!(input.into()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.to_owned())
}

#[test]
fn every_model_matches_tract() {
    for spec in models() {
        let model = cnnc_spec::load(&spec).expect("the shipped spec checks");
        let mut net = Network::from_model(&model, 7).expect("the network builds");
        perturb_buffers(&mut net);
        let bytes = export(&model, &weights(&mut net), &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
        let [c, h, w] = model.input();
        let x = Array4::from_shape_fn((2, c, h, w), |(n, c, y, x)| {
            ((n * 31 + c * 17 + y * 7 + x * 3) % 23) as f32 / 11.0 - 1.0
        });
        let want = net.forward(x.view(), Mode::Eval).expect("cnnc runs");
        let got = tract_logits(&bytes, &x)
            .unwrap_or_else(|e| panic!("tract cannot run {}: {e:?}", spec.display()));
        assert_eq!(got.shape(), want.shape(), "{}", spec.display());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(want.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= TOLERANCE * scale,
            "{}: tract and cnnc differ by {diff} (logits up to {scale})",
            spec.display()
        );
    }
}
