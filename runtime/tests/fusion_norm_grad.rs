//! A batch norm's input gradient computed by the convolution before it as it stages its `dy`
//! ([`BatchNorm2d::backward_deferred`], [`Conv2d::backward_from_norm`]) gives exactly what the
//! batch norm writing it and the convolution reading it give: the same parameter gradients of
//! both layers and the same input gradient, bit for bit, on every path the convolution's
//! backward takes (strided, channels that do or do not fill whole panels, with and without an
//! input gradient, a ReLU fused into the convolution), for a batch norm in training or eval
//! mode, with its own fused ReLU or without. Whole networks, where the executor defers every
//! such gradient, are checked against PyTorch and across thread counts in `parity_graph.rs`.

mod common;

use cnnc_runtime::config::Conv2dConfig;
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{BatchNorm2d, Conv2d};
use cnnc_runtime::{Layer, Mode, Shape};
use common::{Rand, batch_norm, bits, grad_bits};
use proptest::prelude::*;

/// A convolution and the batch norm after it, built alike from `seed` each call.
fn pair(
    config: &Conv2dConfig,
    [h, w]: [usize; 2],
    (conv_relu, bn_relu): (bool, bool),
    seed: u64,
) -> Option<(Conv2d, BatchNorm2d)> {
    let mut conv = Conv2d::new("conv", config, [h, w], &mut init_rng(seed)).ok()?;
    if conv_relu {
        assert!(Layer::fuse_relu(&mut conv));
    }
    let Shape::Chw([c, oh, ow]) = conv.output_shape() else {
        return None;
    };
    let mut bn = batch_norm(c, oh, ow, true, true, &mut Rand(seed ^ 0x5eed));
    if bn_relu {
        bn.fuse_relu();
    }
    Some((conv, bn))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_staged_norm_gradient_is_bit_identical_to_the_written_one(
        cin in 1..5usize, cout in prop_oneof![1..5usize, Just(16usize), Just(32usize), Just(40usize)],
        k in prop_oneof![Just(1usize), Just(3usize)], stride in 1..3usize, pad in 0..2usize,
        h in 2..9usize, w in 2..9usize, bias: bool, batch in 1..4usize, train: bool,
        conv_relu: bool, bn_relu: bool, with_dx: bool, seed: u64,
    ) {
        let config = Conv2dConfig {
            stride: [stride, stride],
            padding: [pad, pad],
            padding_end: [pad, pad],
            bias,
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let built = pair(&config, [h, w], (conv_relu, bn_relu), seed);
        prop_assume!(built.is_some());
        let (mut conv, mut bn) = built.unwrap();
        let (mut conv2, mut bn2) = pair(&config, [h, w], (conv_relu, bn_relu), seed).unwrap();
        prop_assert!(conv2.stages_norm_grad());
        let mode = if train { Mode::Train } else { Mode::Eval };
        let mut rng = Rand(seed);
        let Shape::Chw([_, oh, ow]) = conv.output_shape() else { unreachable!() };
        // Batch statistics need more than one value per channel.
        prop_assume!(!train || batch * oh * ow > 1);
        let (nx, ny) = (conv.input_shape().numel() * batch, conv.output_shape().numel() * batch);
        let x = rng.vec(nx);
        let dz = rng.vec(ny);
        let (mut y, mut z) = (vec![0.0; ny], vec![0.0; ny]);
        conv.forward(&x, &mut y, batch, mode).unwrap();
        bn.forward(&y, &mut z, batch, mode).unwrap();
        let (mut y2, mut z2) = (vec![0.0; ny], vec![0.0; ny]);
        conv2.forward(&x, &mut y2, batch, mode).unwrap();
        bn2.forward(&y2, &mut z2, batch, mode).unwrap();
        prop_assert_eq!(bits(&z), bits(&z2));

        // Written: the batch norm's input gradient into a buffer, the convolution reading it.
        let mut dy = vec![0.0; ny];
        bn.backward(&y, &z, &dz, Some(&mut dy), batch).unwrap();
        let (mut dx, mut dx2) = (vec![0.0; nx], vec![0.0; nx]);
        let (want_dx, got_dx) = if with_dx {
            (Some(&mut dx[..]), Some(&mut dx2[..]))
        } else {
            (None, None)
        };
        conv.backward(&x, &y, &dy, want_dx, batch).unwrap();
        // Deferred: computed as the convolution stages it.
        let grad = bn2.backward_deferred(&y2, &z2, &dz, batch).unwrap();
        conv2.backward_from_norm(&x, &y2, &grad, got_dx, batch).unwrap();

        prop_assert_eq!(bits(&dx), bits(&dx2));
        prop_assert_eq!(grad_bits(&mut conv), grad_bits(&mut conv2));
        prop_assert_eq!(grad_bits(&mut bn), grad_bits(&mut bn2));
    }
}

/// A gradient of another layer's size is refused with the layer's name, not read past its end.
#[test]
fn a_norm_gradient_of_another_size_is_refused() {
    let config = Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(2, 4, [3, 3])
    };
    let (mut conv, _) = pair(&config, [4, 4], (false, false), 1).unwrap();
    let (_, mut other) = pair(&Conv2dConfig::new(2, 4, [3, 3]), [4, 4], (false, false), 1).unwrap();
    let (batch, n) = (2, 2 * 4 * 2 * 2);
    let (y, dz) = (vec![0.5; n], vec![0.25; n]);
    let mut z = vec![0.0; n];
    other.forward(&y, &mut z, batch, Mode::Train).unwrap();
    let grad = other.backward_deferred(&y, &z, &dz, batch).unwrap();
    let (x, conv_y) = (vec![0.0; batch * 2 * 16], vec![0.0; batch * 4 * 16]);
    let err = conv
        .backward_from_norm(&x, &conv_y, &grad, None, batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv") && err.contains("batch norm"), "{err}");
}

/// Times (least of 60, alternating) a stage-1 ResNet-20 pair's backward (3x3 convolution,
/// 16 -> 16 channels, 32 x 32, batch 64, and its batch norm, with and without a fused ReLU):
/// the batch norm writing its input gradient and the convolution reading it, against the
/// convolution staging it. `cargo test -p cnnc-runtime --release --test fusion_norm_grad --
/// --ignored --nocapture` (set `RAYON_NUM_THREADS`).
#[test]
#[ignore = "a timing, not a check"]
fn staged_norm_gradient_timing() {
    use std::time::{Duration, Instant};
    let config = Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        bias: false,
        ..Conv2dConfig::new(16, 16, [3, 3])
    };
    let batch = 64;
    for bn_relu in [false, true] {
        let (mut conv, mut bn) = pair(&config, [32, 32], (false, bn_relu), 7).unwrap();
        let mut rng = Rand(3);
        let (nx, ny) = (16 * 32 * 32 * batch, 16 * 32 * 32 * batch);
        let x = rng.vec(nx);
        let dz = rng.vec(ny);
        let (mut y, mut z) = (vec![0.0; ny], vec![0.0; ny]);
        conv.forward(&x, &mut y, batch, Mode::Train).unwrap();
        bn.forward(&y, &mut z, batch, Mode::Train).unwrap();
        let (mut dy, mut dx) = (vec![0.0; ny], vec![0.0; nx]);
        let (mut written, mut staged) = ([Duration::MAX; 2], [Duration::MAX; 2]);
        for _ in 0..60 {
            let start = Instant::now();
            bn.backward(&y, &z, &dz, Some(&mut dy), batch).unwrap();
            let mid = Instant::now();
            conv.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
            let end = Instant::now();
            written[0] = written[0].min(mid - start);
            written[1] = written[1].min(end - mid);
            let start = Instant::now();
            let grad = bn.backward_deferred(&y, &z, &dz, batch).unwrap();
            let mid = Instant::now();
            conv.backward_from_norm(&x, &y, &grad, Some(&mut dx), batch)
                .unwrap();
            let end = Instant::now();
            staged[0] = staged[0].min(mid - start);
            staged[1] = staged[1].min(end - mid);
        }
        let ms = |d: [Duration; 2]| d.map(|d| d.as_secs_f64() * 1e3);
        println!(
            "bn relu {bn_relu}: written bn {:.3} + conv {:.3} ms; staged bn {:.3} + conv {:.3} ms",
            ms(written)[0],
            ms(written)[1],
            ms(staged)[0],
            ms(staged)[1]
        );
    }
}
