//! A convolution that adds its input gradient into the sum of its input's gradients as it stores
//! it ([`Conv2d::backward_from_norm_adding`], a residual block's first convolution) gives
//! exactly what writing it and then adding it gave: `sum + part` for each value, bit for bit,
//! with sums that hold `-0` and `+0` (`-0 + +0` is `+0`: pixels no tap reads still get their
//! `+0` added), on every path of the input gradient (direct narrow and wide tiles, strided
//! phases, phases no tap reads, channels that do or do not fill whole panels), and the same
//! parameter gradients.

mod common;

use cnnc_runtime::config::Conv2dConfig;
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{BatchNorm2d, Conv2d};
use cnnc_runtime::{Layer, Mode, Shape};
use common::{Rand, batch_norm, bits, grad_bits};
use proptest::prelude::*;

/// A convolution and the batch norm after it, built alike from `seed` each call.
fn pair(config: &Conv2dConfig, [h, w]: [usize; 2], seed: u64) -> Option<(Conv2d, BatchNorm2d)> {
    let conv = Conv2d::new("conv", config, [h, w], &mut init_rng(seed)).ok()?;
    let Shape::Chw([c, oh, ow]) = conv.output_shape() else {
        return None;
    };
    let bn = batch_norm(c, oh, ow, true, true, &mut Rand(seed ^ 0x5eed));
    Some((conv, bn))
}

/// `n` values of `rng`, every third one `-0` and every fifth `+0`.
fn sum_with_zeros(rng: &mut Rand, n: usize) -> Vec<f32> {
    let mut values = rng.vec(n);
    for (i, v) in values.iter_mut().enumerate() {
        if i % 3 == 0 {
            *v = -0.0;
        } else if i % 5 == 0 {
            *v = 0.0;
        }
    }
    values
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn an_input_gradient_added_as_stored_is_the_written_one_added(
        cin in prop_oneof![1..5usize, Just(16usize), Just(32usize), Just(40usize)],
        cout in prop_oneof![1..5usize, Just(16usize), Just(40usize)],
        k in prop_oneof![Just(1usize), Just(3usize)], stride in 1..3usize, pad in 0..2usize,
        h in 2..9usize, w in 2..9usize, batch in 1..4usize, seed: u64,
    ) {
        let config = Conv2dConfig {
            stride: [stride, stride],
            padding: [pad, pad],
            padding_end: [pad, pad],
            bias: false,
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let built = pair(&config, [h, w], seed);
        prop_assume!(built.is_some());
        let (mut conv, mut bn) = built.unwrap();
        let (mut conv2, mut bn2) = pair(&config, [h, w], seed).unwrap();
        let mut rng = Rand(seed);
        let Shape::Chw([_, oh, ow]) = conv.output_shape() else { unreachable!() };
        prop_assume!(batch * oh * ow > 1);
        let (nx, ny) = (conv.input_shape().numel() * batch, conv.output_shape().numel() * batch);
        let x = rng.vec(nx);
        let dz = rng.vec(ny);
        let sum = sum_with_zeros(&mut rng, nx);
        let (mut y, mut z) = (vec![0.0; ny], vec![0.0; ny]);
        conv.forward(&x, &mut y, batch, Mode::Train).unwrap();
        bn.forward(&y, &mut z, batch, Mode::Train).unwrap();
        let (mut y2, mut z2) = (vec![0.0; ny], vec![0.0; ny]);
        conv2.forward(&x, &mut y2, batch, Mode::Train).unwrap();
        bn2.forward(&y2, &mut z2, batch, Mode::Train).unwrap();

        // Written into a buffer of its own (NaN beforehand: every value is written), then added.
        let grad = bn.backward_deferred(&y, &z, &dz, batch).unwrap();
        let mut part = vec![f32::NAN; nx];
        conv.backward_from_norm(&x, &y, &grad, Some(&mut part), batch).unwrap();
        let want: Vec<f32> = sum.iter().zip(&part).map(|(s, p)| s + p).collect();
        // Added as it is stored.
        let grad = bn2.backward_deferred(&y2, &z2, &dz, batch).unwrap();
        let mut got = sum.clone();
        conv2.backward_from_norm_adding(&x, &y2, &grad, &mut got, batch).unwrap();

        prop_assert_eq!(bits(&want), bits(&got));
        prop_assert_eq!(grad_bits(&mut conv), grad_bits(&mut conv2));
    }
}

/// Pixels no tap reads (a 1 x 1 kernel at stride 2 reads one phase of four) get `+0` added:
/// a sum of `-0` there becomes `+0`, as adding the written `+0` made it, and every other value
/// is left as the sum plus its part.
#[test]
fn pixels_no_tap_reads_get_plus_zero_added() {
    let config = Conv2dConfig {
        stride: [2, 2],
        bias: false,
        ..Conv2dConfig::new(16, 32, [1, 1])
    };
    let (mut conv, mut bn) = pair(&config, [6, 6], 3).unwrap();
    let batch = 2;
    let (nx, ny) = (16 * 36 * batch, 32 * 9 * batch);
    let mut rng = Rand(11);
    let x = rng.vec(nx);
    let dz = rng.vec(ny);
    let (mut y, mut z) = (vec![0.0; ny], vec![0.0; ny]);
    conv.forward(&x, &mut y, batch, Mode::Train).unwrap();
    bn.forward(&y, &mut z, batch, Mode::Train).unwrap();
    let grad = bn.backward_deferred(&y, &z, &dz, batch).unwrap();
    let mut got = vec![-0.0f32; nx];
    conv.backward_from_norm_adding(&x, &y, &grad, &mut got, batch)
        .unwrap();
    for (i, v) in got.iter().enumerate() {
        let (pixel, row) = (i / 16 % 36, i / 16 % 36 / 6);
        let read = row % 2 == 0 && pixel % 6 % 2 == 0;
        if !read {
            assert_eq!(v.to_bits(), 0, "value {i} is read by no tap: +0");
        }
    }
}

/// Times (least of 40, alternating) a residual block's first convolution's backward with the
/// input gradient written into a buffer of its own and then added into the sum (as the executor
/// did, the add split over the threads), against added as it is stored: ResNet-20's
/// `layer1.1.conv1` (3 x 3, 16 -> 16, 32 x 32) and `layer2.0.conv1` (stride 2, 16 -> 32), batch
/// 64. `cargo test -p cnnc-runtime --release --test conv_grad_add -- --ignored --nocapture` (set
/// `RAYON_NUM_THREADS`).
#[test]
#[ignore = "a timing, not a check"]
fn added_input_gradient_timing() {
    use rayon::prelude::*;
    use std::time::{Duration, Instant};
    let batch = 64;
    for (cout, stride) in [(16, 1), (32, 2)] {
        let config = Conv2dConfig {
            stride: [stride; 2],
            padding: [1, 1],
            padding_end: [1, 1],
            bias: false,
            ..Conv2dConfig::new(16, cout, [3, 3])
        };
        let (mut conv, mut bn) = pair(&config, [32, 32], 7).unwrap();
        let mut rng = Rand(3);
        let (nx, ny) = (
            conv.input_shape().numel() * batch,
            conv.output_shape().numel() * batch,
        );
        let (x, dz) = (rng.vec(nx), rng.vec(ny));
        let (mut y, mut z) = (vec![0.0; ny], vec![0.0; ny]);
        conv.forward(&x, &mut y, batch, Mode::Train).unwrap();
        bn.forward(&y, &mut z, batch, Mode::Train).unwrap();
        let (mut sum, mut part) = (rng.vec(nx), vec![0.0; nx]);
        let (mut written, mut added) = (Duration::MAX, Duration::MAX);
        for _ in 0..40 {
            let grad = bn.backward_deferred(&y, &z, &dz, batch).unwrap();
            let start = Instant::now();
            conv.backward_from_norm(&x, &y, &grad, Some(&mut part), batch)
                .unwrap();
            sum.par_chunks_mut(1 << 14)
                .zip(part.par_chunks(1 << 14))
                .for_each(|(s, p)| s.iter_mut().zip(p).for_each(|(s, p)| *s += p));
            written = written.min(start.elapsed());
            let grad = bn.backward_deferred(&y, &z, &dz, batch).unwrap();
            let start = Instant::now();
            conv.backward_from_norm_adding(&x, &y, &grad, &mut sum, batch)
                .unwrap();
            added = added.min(start.elapsed());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "16 -> {cout}, stride {stride}: written and added {:.3} ms, added as stored {:.3} ms",
            ms(written),
            ms(added)
        );
    }
}
