//! What a forward leaves for `backward` (PyTorch's saved tensors: [`Conv2d`]'s padded input,
//! [`MaxPool2d`]'s positions of the maxima) serves a backward of at most that forward's batch;
//! after a smaller forward on other data, or none, backward computes it again. Either way it
//! gives what a fresh layer gives after a training forward, bit for bit.

mod common;

use cnnc_runtime::config::{Conv2dConfig, Pool2dConfig};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{Conv2d, MaxPool2d};
use cnnc_runtime::{Entry, Layer, Mode, Shape};
use common::Rand;

/// `dx` and every parameter gradient of one backward, as bit patterns.
fn backward(layer: &mut dyn Layer, x: &[f32], y: &[f32], dy: &[f32], batch: usize) -> Vec<u32> {
    let mut dx = vec![0.0; x.len()];
    layer.backward(x, y, dy, Some(&mut dx), batch).unwrap();
    let mut out: Vec<u32> = dx.iter().map(|v| v.to_bits()).collect();
    layer.visit(&mut |e| {
        if let Entry::Param { param, .. } = e {
            out.extend(param.grad.iter().map(|v| v.to_bits()));
        }
    });
    out
}

/// Runs `history` (forwards on other data), then a forward on `x` in `mode` (none if `None`) and
/// a backward, and compares with a fresh layer's training forward and backward on `x`.
fn check(
    build: &dyn Fn() -> Box<dyn Layer>,
    history: &[(Vec<f32>, usize, Mode)],
    mode: Option<Mode>,
) {
    let mut rng = Rand(7);
    let (nin, nout) = {
        let l = build();
        (l.input_shape().numel(), l.output_shape().numel())
    };
    let batch = 3;
    let x = rng.vec(batch * nin);
    let dy = rng.vec(batch * nout);

    let mut fresh = build();
    let mut y = vec![0.0; batch * nout];
    fresh.forward(&x, &mut y, batch, Mode::Train).unwrap();
    let want = backward(fresh.as_mut(), &x, &y, &dy, batch);

    let mut used = build();
    for (other, n, m) in history {
        let mut out = vec![0.0; n * nout];
        used.forward(other, &mut out, *n, *m).unwrap();
    }
    if let Some(mode) = mode {
        let mut y2 = vec![0.0; batch * nout];
        used.forward(&x, &mut y2, batch, mode).unwrap();
        assert_eq!(y, y2);
    }
    assert_eq!(
        backward(used.as_mut(), &x, &y, &dy, batch),
        want,
        "{mode:?}"
    );
}

#[test]
fn backward_after_other_forwards_gives_a_fresh_layers_gradients() {
    let conv = || -> Box<dyn Layer> {
        let config = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(3, 5, [3, 3])
        };
        Box::new(Conv2d::new("conv", &config, [6, 6], &mut init_rng(1)).unwrap())
    };
    let pool = || -> Box<dyn Layer> {
        let config = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        let dims = Shape::Chw([5, 6, 6]);
        Box::new(MaxPool2d::new("pool", &config, dims).unwrap())
    };
    for build in [&conv as &dyn Fn() -> Box<dyn Layer>, &pool] {
        let nin = build().input_shape().numel();
        let mut rng = Rand(11);
        let other = |n: usize, rng: &mut Rand| rng.vec(n * nin);
        // Straight after a forward on `x`: what it saved.
        check(build, &[], Some(Mode::Train));
        check(build, &[], Some(Mode::Eval));
        check(
            build,
            &[(other(5, &mut rng), 5, Mode::Train)],
            Some(Mode::Eval),
        );
        // No forward yet, or the last one smaller and on other data: computed again from `x`.
        check(build, &[], None);
        check(build, &[(other(2, &mut rng), 2, Mode::Train)], None);
    }
}

/// A convolution that applies a max pool keeps no input to find the pool's positions in again:
/// a backward larger than the last forward is refused with an error, not a panic.
#[test]
fn fused_pool_backward_without_its_forward_is_an_error() {
    let config = Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(2, 3, [3, 3])
    };
    let pool = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
    let mut conv = Conv2d::new("conv", &config, [4, 4], &mut init_rng(1)).unwrap();
    conv.fuse_relu();
    assert!(conv.fuse_max_pool(&pool));
    let (nin, nout) = (conv.input_shape().numel(), conv.output_shape().numel());
    let x = Rand(3).vec(2 * nin);
    let (y, dy) = (vec![0.0; 2 * nout], vec![1.0; 2 * nout]);
    let err = conv.backward(&x, &y, &dy, None, 2).unwrap_err().to_string();
    assert!(err.contains("needs a forward"), "{err}");
    let mut out = vec![0.0; nout];
    conv.forward(&x[..nin], &mut out, 1, Mode::Train).unwrap();
    assert!(conv.backward(&x, &y, &dy, None, 2).is_err());
    assert!(conv.backward(&x[..nin], &out, &dy[..nout], None, 1).is_ok());
}
