//! A ReLU fused into the convolution before it ([`Layer::fuse_relu`]) gives exactly what the two
//! layers give separately: the same output and the same gradients, bit for bit, with and without
//! an input gradient, on every path the convolution takes (strided, dilated, channels that do or
//! do not fill whole panels).

mod common;

use cnnc_runtime::config::Conv2dConfig;
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{Conv2d, Relu};
use cnnc_runtime::{Entry, Layer, Mode, Visit};
use common::Rand;
use proptest::prelude::*;

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn fused_relu_is_bit_identical_to_a_separate_relu(
        cin in 1..5usize, cout in prop_oneof![1..5usize, Just(32usize), Just(40usize)],
        k in 1..4usize, stride in 1..3usize, pad in 0..3usize, dilation in 1..3usize,
        h in 3..9usize, w in 3..9usize, bias: bool, batch in 1..4usize, with_dx: bool, seed: u64,
    ) {
        let config = Conv2dConfig {
            in_channels: cin, out_channels: cout, kernel_size: [k, k], stride: [stride, stride],
            padding: [pad, pad], dilation: [dilation, dilation], bias,
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut plain = built.unwrap();
        let mut fused = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed)).unwrap();
        prop_assert!(Layer::fuse_relu(&mut fused));
        let mut relu = Relu::new("relu", plain.output_dims());

        let mut rng = Rand(seed);
        let (nx, ny) = (plain.input_dims().len() * batch, plain.output_dims().len() * batch);
        let x = rng.vec(nx);
        let dy = rng.vec(ny);

        let (mut pre, mut post, mut got) = (vec![0.0; ny], vec![0.0; ny], vec![0.0; ny]);
        plain.forward(&x, &mut pre, batch, Mode::Train).unwrap();
        relu.forward(&pre, &mut post, batch, Mode::Train).unwrap();
        fused.forward(&x, &mut got, batch, Mode::Train).unwrap();
        prop_assert_eq!(bits(&post), bits(&got));

        let mut dpre = vec![0.0; ny];
        relu.backward(&pre, &post, &dy, Some(&mut dpre), batch).unwrap();
        let (mut dx_plain, mut dx_fused) = (vec![0.0; nx], vec![0.0; nx]);
        let (want_dx, got_dx) = if with_dx {
            (Some(&mut dx_plain[..]), Some(&mut dx_fused[..]))
        } else {
            (None, None)
        };
        plain.backward(&x, &pre, &dpre, want_dx, batch).unwrap();
        fused.backward(&x, &got, &dy, got_dx, batch).unwrap();
        prop_assert_eq!(bits(&dx_plain), bits(&dx_fused));
        let (want, found) = (grads(&mut plain), grads(&mut fused));
        prop_assert_eq!(want.len(), found.len());
        for (a, b) in want.iter().zip(&found) {
            prop_assert_eq!(bits(a), bits(b));
        }
    }
}
