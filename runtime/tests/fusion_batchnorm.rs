//! A ReLU fused into the batch norm before it ([`Layer::fuse_relu`]) gives exactly what the two
//! layers give separately: the same output and the same gradients (weight, bias and input), bit
//! for bit, in training and in evaluation, with and without an input gradient, and with `dy`
//! arriving already masked by a max pool ([`Layer::relu_grad_masked`]); `&self` inference too
//! ([`Layer::infer`], and [`Layer::infer_unfused`] without the ReLU). Whole networks whose
//! plans fuse them are checked against PyTorch and across thread counts in `parity_graph.rs`.

mod common;

use cnnc_runtime::layers::Relu;
use cnnc_runtime::{Layer, Mode};
use common::{Rand, batch_norm, bits, grad_bits};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn fused_relu_is_bit_identical_to_a_separate_relu(
        c in prop_oneof![1..5usize, Just(16usize), Just(64usize)], h in 1..9usize, w in 1..9usize,
        batch in 1..5usize, train: bool, affine: bool, track: bool, with_dx: bool,
        premasked: bool, seed: u64,
    ) {
        let mode = if train { Mode::Train } else { Mode::Eval };
        prop_assume!(batch * h * w > 1 || (mode == Mode::Eval && track));
        let mut rng = Rand(seed);
        let mut plain = batch_norm(c, h, w, affine, track, &mut Rand(seed));
        let mut fused = batch_norm(c, h, w, affine, track, &mut Rand(seed));
        prop_assert!(Layer::fuse_relu(&mut fused));
        if premasked {
            Layer::relu_grad_masked(&mut fused);
        }
        let mut relu = Relu::new("relu", plain.output_shape());
        let n = c * h * w * batch;
        let x = rng.vec(n);
        let dz = rng.vec(n);

        let (mut pre, mut post, mut got) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        plain.forward(&x, &mut pre, batch, mode).unwrap();
        relu.forward(&pre, &mut post, batch, mode).unwrap();
        fused.forward(&x, &mut got, batch, mode).unwrap();
        prop_assert_eq!(bits(&post), bits(&got));
        if mode == Mode::Eval {
            // `&self` inference: through the fused ReLU, and without it for reading activations.
            let mut inferred = vec![0.0; n];
            fused.infer(&x, &mut inferred, batch).unwrap();
            prop_assert_eq!(bits(&post), bits(&inferred));
            fused.infer_unfused(&x, &mut inferred, batch).unwrap();
            prop_assert_eq!(bits(&pre), bits(&inferred));
        }
        prop_assert_eq!(bits(plain.running_mean.as_slice().unwrap()), bits(fused.running_mean.as_slice().unwrap()));
        prop_assert_eq!(bits(plain.running_var.as_slice().unwrap()), bits(fused.running_var.as_slice().unwrap()));

        // The gradient with respect to the batch norm's output, as the separate ReLU passes it.
        let mut dpre = vec![0.0; n];
        relu.backward(&pre, &post, &dz, Some(&mut dpre), batch).unwrap();
        // What the fused layer reads: the ReLU's output gradient, or (a max pool masked it) the
        // ReLU's input gradient already.
        let fused_dy = if premasked { &dpre } else { &dz };
        let (mut dx_plain, mut dx_fused) = (vec![0.0; n], vec![0.0; n]);
        let (want_dx, got_dx) = if with_dx {
            (Some(&mut dx_plain[..]), Some(&mut dx_fused[..]))
        } else {
            (None, None)
        };
        plain.backward(&x, &pre, &dpre, want_dx, batch).unwrap();
        fused.backward(&x, &got, fused_dy, got_dx, batch).unwrap();
        prop_assert_eq!(bits(&dx_plain), bits(&dx_fused));
        prop_assert_eq!(grad_bits(&mut plain), grad_bits(&mut fused));
    }
}

#[test]
fn a_nan_passes_the_fused_relu_as_it_passes_a_separate_one() {
    let mut rng = Rand(7);
    let mut plain = batch_norm(3, 2, 2, true, true, &mut Rand(7));
    let mut fused = batch_norm(3, 2, 2, true, true, &mut Rand(7));
    fused.fuse_relu();
    let mut relu = Relu::new("relu", plain.output_shape());
    let mut x = rng.vec(24);
    x[4] = f32::NAN;
    x[9] = -1e30;
    let (mut pre, mut post, mut got) = (vec![0.0; 24], vec![0.0; 24], vec![0.0; 24]);
    plain.forward(&x, &mut pre, 2, Mode::Eval).unwrap();
    relu.forward(&pre, &mut post, 2, Mode::Eval).unwrap();
    fused.forward(&x, &mut got, 2, Mode::Eval).unwrap();
    assert!(got[4].is_nan());
    assert_eq!(bits(&post), bits(&got));
}
