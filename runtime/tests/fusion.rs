//! A ReLU fused into the convolution before it ([`Layer::fuse_relu`]) gives exactly what the two
//! layers give separately: the same output and the same gradients, bit for bit, with and without
//! an input gradient, on every path the convolution takes (strided, dilated, channels that do or
//! do not fill whole panels). And a max pool after the fused ReLU that masks the gradient itself
//! ([`Layer::mask_relu_grad`]), so the convolution takes `dy` as it is, gives what the three
//! layers give separately; so does a max pool the convolution applies itself
//! ([`Layer::fuse_max_pool`]).

mod common;

use cnnc_runtime::config::{Conv2dConfig, Pool2dConfig};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{Conv2d, MaxPool2d, Relu};
use cnnc_runtime::{Entry, Layer, Mode, Visit};
use common::Rand;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Every parameter gradient of `layer`, in visit order.
fn grads(layer: &mut Conv2d) -> Vec<Vec<f32>> {
    struct One<'a>(&'a mut Conv2d);
    impl Visit for One<'_> {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            Layer::visit(self.0, f);
        }
    }
    let mut out = Vec::new();
    One(layer).visit(&mut |e| {
        if let Entry::Param { param, .. } = e {
            out.push(param.grad.iter().copied().collect());
        }
    });
    out
}

/// Bit patterns, so that NaN compares equal to itself and -0.0 differs from 0.0.
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Conv, ReLU and max pool as separate layers, forward on `x`, then backward from `dz` down to
/// the convolution's output: the convolution's output, the pool's, and the gradient with respect
/// to the convolution's output.
fn separate(
    conv: &mut Conv2d,
    relu: &mut Relu,
    pool: &mut MaxPool2d,
    x: &[f32],
    dz: &[f32],
    batch: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let ny = conv.output_shape().numel() * batch;
    let (mut pre, mut post, mut z) = (vec![0.0; ny], vec![0.0; ny], vec![0.0; dz.len()]);
    conv.forward(x, &mut pre, batch, Mode::Train).unwrap();
    relu.forward(&pre, &mut post, batch, Mode::Train).unwrap();
    pool.forward(&post, &mut z, batch, Mode::Train).unwrap();
    let (mut dpost, mut dpre) = (vec![0.0; ny], vec![0.0; ny]);
    pool.backward(&post, &z, dz, Some(&mut dpost), batch)
        .unwrap();
    relu.backward(&pre, &post, &dpost, Some(&mut dpre), batch)
        .unwrap();
    (pre, z, dpre)
}

/// Runs backward on both convolutions (`plain` from `(y, dy)`, `fused` from its own) and checks
/// that the input gradients (when asked for) and every parameter gradient agree bit for bit.
fn same_backward(
    (plain, y, dy): (&mut Conv2d, &[f32], &[f32]),
    (fused, fused_y, fused_dy): (&mut Conv2d, &[f32], &[f32]),
    x: &[f32],
    batch: usize,
    with_dx: bool,
) -> Result<(), TestCaseError> {
    let (mut dx_plain, mut dx_fused) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (want_dx, got_dx) = if with_dx {
        (Some(&mut dx_plain[..]), Some(&mut dx_fused[..]))
    } else {
        (None, None)
    };
    plain.backward(x, y, dy, want_dx, batch).unwrap();
    fused.backward(x, fused_y, fused_dy, got_dx, batch).unwrap();
    prop_assert_eq!(bits(&dx_plain), bits(&dx_fused));
    let (want, found) = (grads(plain), grads(fused));
    prop_assert_eq!(want.len(), found.len());
    for (a, b) in want.iter().zip(&found) {
        prop_assert_eq!(bits(a), bits(b));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn fused_relu_is_bit_identical_to_a_separate_relu(
        cin in 1..5usize, cout in prop_oneof![1..5usize, Just(32usize), Just(40usize)],
        k in 1..4usize, stride in 1..3usize, pad in 0..3usize, dilation in 1..3usize,
        h in 3..9usize, w in 3..9usize, bias: bool, batch in 1..4usize, with_dx: bool, seed: u64,
    ) {
        let config = Conv2dConfig {
            stride: [stride, stride],
            padding: [pad, pad],
            padding_end: [pad, pad],
            dilation: [dilation, dilation],
            bias,
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut plain = built.unwrap();
        let mut fused = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed)).unwrap();
        prop_assert!(Layer::fuse_relu(&mut fused));
        let mut relu = Relu::new("relu", plain.output_shape());

        let mut rng = Rand(seed);
        let (nx, ny) = (plain.input_shape().numel() * batch, plain.output_shape().numel() * batch);
        let x = rng.vec(nx);
        let dy = rng.vec(ny);

        let (mut pre, mut post, mut got) = (vec![0.0; ny], vec![0.0; ny], vec![0.0; ny]);
        plain.forward(&x, &mut pre, batch, Mode::Train).unwrap();
        relu.forward(&pre, &mut post, batch, Mode::Train).unwrap();
        fused.forward(&x, &mut got, batch, Mode::Train).unwrap();
        prop_assert_eq!(bits(&post), bits(&got));

        let mut dpre = vec![0.0; ny];
        relu.backward(&pre, &post, &dy, Some(&mut dpre), batch).unwrap();
        same_backward((&mut plain, &pre, &dpre), (&mut fused, &got, &dy), &x, batch, with_dx)?;
    }

    #[test]
    fn max_pool_masking_the_relu_gradient_is_bit_identical_to_separate_layers(
        cin in 1..4usize, cout in prop_oneof![1..5usize, Just(16usize), Just(32usize), Just(70usize)],
        k in 1..4usize, pad in 0..2usize, h in 4..10usize, w in 4..10usize,
        pool_k in 1..4usize, pool_stride in 1..4usize, pool_pad in 0..2usize, ceil_mode: bool,
        batch in 1..3usize, with_dx: bool, seed: u64,
    ) {
        let config = Conv2dConfig {
            padding: [pad, pad],
            padding_end: [pad, pad],
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut plain = built.unwrap();
        let mut fused = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed)).unwrap();
        prop_assert!(Layer::fuse_relu(&mut fused));
        let mut relu = Relu::new("relu", plain.output_shape());
        let pool_config = Pool2dConfig {
            ceil_mode,
            ..Pool2dConfig::new([pool_k, pool_k], [pool_stride, pool_stride], [pool_pad, pool_pad])
        };
        let pool = MaxPool2d::new("pool", &pool_config, plain.output_shape());
        prop_assume!(pool.is_ok());
        let mut pool_plain = pool.unwrap();
        let mut pool_masking = MaxPool2d::new("pool", &pool_config, plain.output_shape()).unwrap();
        prop_assert!(Layer::mask_relu_grad(&mut pool_masking));
        Layer::relu_grad_masked(&mut fused);

        let mut rng = Rand(seed);
        let (nx, ny) = (plain.input_shape().numel() * batch, plain.output_shape().numel() * batch);
        let np = pool_plain.output_shape().numel() * batch;
        let x = rng.vec(nx);
        let dz = rng.vec(np);

        let (pre, z, dpre) = separate(&mut plain, &mut relu, &mut pool_plain, &x, &dz, batch);

        let (mut got, mut got_z, mut dgot) = (vec![0.0; ny], vec![0.0; np], vec![0.0; ny]);
        fused.forward(&x, &mut got, batch, Mode::Train).unwrap();
        pool_masking.forward(&got, &mut got_z, batch, Mode::Train).unwrap();
        prop_assert_eq!(bits(&z), bits(&got_z));
        pool_masking.backward(&got, &got_z, &dz, Some(&mut dgot), batch).unwrap();
        // The pool's `dx` is the ReLU's: the gradient before it.
        prop_assert_eq!(bits(&dpre), bits(&dgot));
        same_backward((&mut plain, &pre, &dpre), (&mut fused, &got, &dgot), &x, batch, with_dx)?;
    }

    #[test]
    fn max_pool_fused_into_the_convolution_is_bit_identical_to_separate_layers(
        cin in 1..4usize, cout in prop_oneof![1..5usize, Just(16usize), Just(32usize), Just(40usize)],
        k in 1..4usize, pad in 0..2usize, pool_k in 1..4usize, rows in 1..4usize, cols in 1..4usize,
        // Small batches take a band per pooled row, larger ones bands of whole tiles.
        batch in prop_oneof![1..4usize, Just(12usize)], with_dx: bool, seed: u64,
    ) {
        // Sizes whose output the pool's windows tile exactly (stride 1: output = input + 2 pad -
        // k + 1).
        let (h, w) = ((rows * pool_k + k - 1).checked_sub(2 * pad), (cols * pool_k + k - 1).checked_sub(2 * pad));
        prop_assume!(h.is_some_and(|h| h > 0) && w.is_some_and(|w| w > 0));
        let (h, w) = (h.unwrap(), w.unwrap());
        let config = Conv2dConfig {
            padding: [pad, pad],
            padding_end: [pad, pad],
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut plain = built.unwrap();
        let mut fused = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed)).unwrap();
        let mut relu = Relu::new("relu", plain.output_shape());
        let pool_config = Pool2dConfig::new([pool_k, pool_k], [pool_k, pool_k], [0, 0]);
        let mut pool = MaxPool2d::new("pool", &pool_config, plain.output_shape()).unwrap();
        prop_assert!(!Layer::fuse_max_pool(&mut fused, &pool_config), "needs the ReLU first");
        prop_assert!(Layer::fuse_relu(&mut fused));
        prop_assert!(Layer::fuse_max_pool(&mut fused, &pool_config));
        prop_assert_eq!(fused.output_shape(), pool.output_shape());

        let mut rng = Rand(seed);
        let nx = plain.input_shape().numel() * batch;
        let np = pool.output_shape().numel() * batch;
        let x = rng.vec(nx);
        let dz = rng.vec(np);

        let (pre, z, dpre) = separate(&mut plain, &mut relu, &mut pool, &x, &dz, batch);
        let mut got = vec![0.0; np];
        fused.forward(&x, &mut got, batch, Mode::Train).unwrap();
        prop_assert_eq!(bits(&z), bits(&got));
        same_backward((&mut plain, &pre, &dpre), (&mut fused, &got, &dz), &x, batch, with_dx)?;
    }

    /// Windows that do not tile the output (a stride other than the kernel, padding, an output
    /// the kernel does not divide) stay a layer of their own.
    #[test]
    fn only_pools_that_tile_the_output_fuse(
        size in 2..9usize, pool_k in 1..4usize, stride in 1..4usize, pad in 0..2usize,
    ) {
        let config = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(2, 3, [3, 3])
        };
        let mut conv = Conv2d::new("conv", &config, [size, size], &mut init_rng(1)).unwrap();
        prop_assert!(Layer::fuse_relu(&mut conv));
        let pool = Pool2dConfig::new([pool_k, pool_k], [stride, stride], [pad, pad]);
        let tiles = stride == pool_k && pad == 0 && size % pool_k == 0;
        prop_assert_eq!(Layer::fuse_max_pool(&mut conv, &pool), tiles);
    }
}
