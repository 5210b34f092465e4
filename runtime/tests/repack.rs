//! Layers keep packed copies of their weights and repack them only after the weights may have
//! changed: every way to change them (`weight_mut`, `bias_mut`, `Layer::visit`, which optimizers
//! and weight loading use) must be seen, in the forward and in the input-gradient panels, and by
//! `&self` inference (`Layer::infer`) as well.

mod common;

use cnnc_runtime::config::{Conv2dConfig, LinearConfig};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{Conv2d, Linear};
use cnnc_runtime::{Entry, Layer, Mode, Shape};
use common::Rand;

/// Output and input gradient of `layer` on `x` and `dy`.
fn run(layer: &mut dyn Layer, x: &[f32], dy: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; dy.len()];
    layer.forward(x, &mut y, batch, Mode::Train).unwrap();
    let mut dx = vec![0.0; x.len()];
    layer.backward(x, &y, dy, Some(&mut dx), batch).unwrap();
    (y, dx)
}

/// Adds `delta` to every weight and bias value through [`Layer::visit`].
fn shift_by_visit(layer: &mut dyn Layer, delta: f32) {
    layer.visit(&mut |e| {
        if let Entry::Param { param, .. } = e {
            param.value.mapv_inplace(|v| v + delta);
        }
    });
}

fn conv() -> Conv2d {
    let config = Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(3, 5, [3, 3])
    };
    Conv2d::new("conv", &config, [6, 6], &mut init_rng(7)).unwrap()
}

fn linear() -> Linear {
    let config = LinearConfig {
        in_features: 12,
        out_features: 7,
        bias: true,
    };
    Linear::new("fc", &config, Shape::Flat(12), &mut init_rng(7)).unwrap()
}

/// A layer used once, then changed, computes what a fresh layer with the changed weights does.
fn check<L: Layer>(make: fn() -> L, change: fn(&mut L)) {
    let batch = 2;
    let mut rng = Rand(3);
    let mut used = make();
    let x = rng.vec(used.input_shape().numel() * batch);
    let dy = rng.vec(used.output_shape().numel() * batch);
    let before = run(&mut used, &x, &dy, batch);
    // Inference packs the panels it keeps for later calls: the change must make it drop them.
    let mut inferred = vec![0.0; dy.len()];
    used.infer(&x, &mut inferred, batch).unwrap();
    assert_eq!(inferred, before.0, "inference before the change");
    change(&mut used);
    // `&self` inference first, before any `&mut` forward could repack: it must read the
    // changed weights too (`visit` dropped its panels; after `weight_mut` it packs in scratch).
    used.infer(&x, &mut inferred, batch).unwrap();
    let after = run(&mut used, &x, &dy, batch);
    let mut fresh = make();
    change(&mut fresh);
    let want = run(&mut fresh, &x, &dy, batch);
    assert_ne!(before, want, "the change must matter");
    assert_eq!(after, want);
    assert_eq!(inferred, want.0, "inference from &self after the change");
}

#[test]
fn conv2d_repacks_after_every_kind_of_change() {
    check(conv, |l| l.weight_mut().value.mapv_inplace(|v| v * -2.0));
    check(conv, |l| {
        if let Some(b) = l.bias_mut() {
            b.value.fill(0.25);
        }
    });
    check(conv, |l| shift_by_visit(l, 0.125));
}

#[test]
fn linear_repacks_after_every_kind_of_change() {
    check(linear, |l| l.weight_mut().value.mapv_inplace(|v| v * -2.0));
    check(linear, |l| {
        if let Some(b) = l.bias_mut() {
            b.value.fill(0.25);
        }
    });
    check(linear, |l| shift_by_visit(l, 0.125));
}
