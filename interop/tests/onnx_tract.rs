//! Every model in models/ exported to ONNX and run by tract, a second ONNX runtime written in
//! Rust: its logits must match cnnc's executor to 1e-5 (relative to the logits' size), with
//! the seeded weights and with the batch-norm statistics moved off their defaults.

use cnnc_interop::export::{ExportOptions, export};
use cnnc_runtime::{Mode, Network};
use ndarray::Array4;
use tract_onnx::prelude::*;

mod common;

use common::{batch, max_diff, perturb_buffers, specs, weights_of};

const TOLERANCE: f32 = 1e-5;

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
    for spec in specs() {
        let model = cnnc_spec::load(&spec).expect("the shipped spec checks");
        let mut net = Network::from_model(&model, 7).expect("the network builds");
        perturb_buffers(&mut net);
        let bytes = export(&model, &weights_of(&mut net), &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
        let x = batch(model.input());
        let want = net.forward(x.view(), Mode::Eval).expect("cnnc runs");
        let got = tract_logits(&bytes, &x)
            .unwrap_or_else(|e| panic!("tract cannot run {}: {e:?}", spec.display()));
        assert_eq!(got.shape(), want.shape(), "{}", spec.display());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = max_diff(&got, &want);
        assert!(
            diff <= TOLERANCE * scale,
            "{}: tract and cnnc differ by {diff} (logits up to {scale})",
            spec.display()
        );
    }
}
