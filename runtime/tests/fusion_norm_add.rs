//! A batch norm that adds the residual and applies the add's ReLU as it stores
//! ([`BatchNorm2d::forward_add`]) gives exactly what the batch norm and the add give as separate
//! layers: the same sum, bit for bit, with the batch norm as either input of the add, with and
//! without the ReLU, in training and in evaluation, and the same running statistics after.
//! Whole networks, where the executor applies it to every such pair, are checked against
//! PyTorch and across thread counts in `parity_graph.rs`.

mod common;

use cnnc_runtime::layers::{Add, Merge};
use cnnc_runtime::{Layer, Mode};
use common::{Rand, batch_norm, bits};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_sum_stored_by_the_batch_norm_is_bit_identical_to_the_adds(
        c in prop_oneof![1..5usize, Just(16usize), Just(64usize)], h in 1..9usize, w in 1..9usize,
        batch in 1..5usize, train: bool, relu: bool, norm_first: bool, seed: u64,
    ) {
        prop_assume!(!train || batch * h * w > 1);
        let mode = if train { Mode::Train } else { Mode::Eval };
        let mut rng = Rand(seed);
        let mut plain = batch_norm(c, h, w, true, true, &mut Rand(seed ^ 1));
        let mut fused = batch_norm(c, h, w, true, true, &mut Rand(seed ^ 1));
        let shape = plain.output_shape();
        let mut add = Add::new("add", &[shape, shape]).unwrap();
        if relu {
            prop_assert!(Layer::fuse_relu(&mut add));
        }
        prop_assert_eq!(add.sum_relu(), Some(relu));
        let n = shape.numel() * batch;
        let (x, mut r) = (rng.vec(n), rng.vec(n));
        // Sums that cancel to zero and a NaN, where the ReLU's edge cases lie.
        r[0] = f32::NAN;

        let (mut y, mut want) = (vec![0.0; n], vec![0.0; n]);
        plain.forward(&x, &mut y, batch, mode).unwrap();
        if n > 1 {
            r[1] = -y[1];
        }
        let xs: [&[f32]; 2] = if norm_first { [&y, &r] } else { [&r, &y] };
        add.forward_merge(&xs, &mut want, batch).unwrap();
        let mut got = vec![0.0; n];
        fused.forward_add(&x, &r, &mut got, batch, mode, relu).unwrap();
        prop_assert_eq!(bits(&want), bits(&got));
        prop_assert_eq!(bits(plain.running_mean.as_slice().unwrap()), bits(fused.running_mean.as_slice().unwrap()));
        prop_assert_eq!(bits(plain.running_var.as_slice().unwrap()), bits(fused.running_var.as_slice().unwrap()));
        prop_assert_eq!(plain.num_batches_tracked, fused.num_batches_tracked);
    }
}

/// A residual shorter than the output, and a batch norm that applies a ReLU of its own (which
/// would come before the add), are refused with the layer's name.
#[test]
fn a_short_residual_or_a_relu_of_its_own_is_refused() {
    let mut bn = batch_norm(2, 3, 3, true, true, &mut Rand(1));
    let (batch, n) = (2, 2 * 2 * 9);
    let (x, mut out) = (vec![0.5; n], vec![0.0; n]);
    let err = bn
        .forward_add(&x, &x[..n - 1], &mut out, batch, Mode::Train, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn") && err.contains("residual"), "{err}");
    bn.fuse_relu();
    let err = bn
        .forward_add(&x, &x, &mut out, batch, Mode::Train, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn") && err.contains("ReLU"), "{err}");
}

/// Times (least of 60, alternating) a stage-1 ResNet-20 block's tail in training (batch norm
/// over 16 channels of 32 x 32, batch 64, then the add and its ReLU): the two layers apart
/// against the batch norm storing the sum. `cargo test -p cnnc-runtime --release --test
/// fusion_norm_add -- --ignored --nocapture` (set `RAYON_NUM_THREADS`).
#[test]
#[ignore = "a timing, not a check"]
fn norm_add_timing() {
    use std::time::{Duration, Instant};
    let (c, h, w, batch) = (16, 32, 32, 64);
    let mut bn = batch_norm(c, h, w, true, true, &mut Rand(1));
    let shape = bn.output_shape();
    let mut add = Add::new("add", &[shape, shape]).unwrap();
    assert!(Layer::fuse_relu(&mut add));
    let n = shape.numel() * batch;
    let mut rng = Rand(2);
    let (x, r) = (rng.vec(n), rng.vec(n));
    let (mut y, mut out) = (vec![0.0; n], vec![0.0; n]);
    let (mut apart, mut fused) = (Duration::MAX, Duration::MAX);
    for _ in 0..60 {
        let start = Instant::now();
        bn.forward(&x, &mut y, batch, Mode::Train).unwrap();
        add.forward_merge(&[&y, &r], &mut out, batch).unwrap();
        apart = apart.min(start.elapsed());
        let start = Instant::now();
        bn.forward_add(&x, &r, &mut out, batch, Mode::Train, true)
            .unwrap();
        fused = fused.min(start.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "batch norm + add + ReLU: apart {:.3} ms, in one pass {:.3} ms",
        ms(apart),
        ms(fused)
    );
}
