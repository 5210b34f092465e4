//! Finite-difference gradient checks for every layer type and option, on random small shapes
//! (proptest), the merge layers (`add`, `concat`, `mul` with broadcasting), the loss, a whole
//! sequential network and a whole graph network (a shortcut, a concat and a gate).

mod common;

use cnnc_runtime::config::{
    BatchNorm2dConfig, ConcatConfig, Conv2dConfig, ConvTranspose2dConfig, GeluApproximate,
    GroupNormConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig, Source,
    UpsampleConfig, UpsampleMode,
};
use cnnc_runtime::init::{dropout_rng, init_rng};
use cnnc_runtime::layers::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout,
    Dropout2d, Elu, Flatten, Gelu, GroupNorm, Hardsigmoid, Hardswish, Identity, LeakyRelu, Linear,
    LogSoftmax, MaxPool2d, Merge, Prelu, Relu, Relu6, Sigmoid, Silu, Softmax, Tanh, Upsample,
    build_merge,
};
use cnnc_runtime::{Entry, Layer, Mode, Network, Shape, Visit, softmax_cross_entropy};
use common::{Rand, STEP, check_layer, check_plain};
use ndarray::{Array2, Array4};
use proptest::prelude::*;

/// Tolerance for f32 layers checked with step [`STEP`] (relative to `1 + |gradient|`).
const TOL: f64 = 5e-3;

fn image(channels: usize, height: usize, width: usize) -> Shape {
    Shape::Chw([channels, height, width])
}

fn pool_config(k: [usize; 2], s: [usize; 2], p: [usize; 2], ceil_mode: bool) -> Pool2dConfig {
    Pool2dConfig {
        ceil_mode,
        ..Pool2dConfig::new(k, s, [p[0].min(k[0] / 2), p[1].min(k[1] / 2)])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn conv2d(
        cin in 1..4usize, cout in 1..4usize, kh in 1..4usize, kw in 1..4usize,
        sh in 1..3usize, sw in 1..3usize, ph in 0..3usize, pw in 0..3usize,
        dh in 1..3usize, dw in 1..3usize, h in 1..8usize, w in 1..8usize,
        bias: bool, batch in 1..3usize, seed: u64,
    ) {
        let config = Conv2dConfig {
            stride: [sh, sw],
            padding: [ph, pw],
            padding_end: [ph, pw],
            dilation: [dh, dw],
            bias,
            ..Conv2dConfig::new(cin, cout, [kh, kw])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn conv2d_padding_modes(
        mode in 1..4usize, groups in 1..3usize, k in 1..4usize, s in 1..3usize,
        ph in 0..4usize, pw in 0..4usize, h in 1..6usize, w in 1..6usize, batch in 1..3usize,
        seed: u64,
    ) {
        let padding_mode = cnnc_runtime::config::PaddingMode::ALL[mode];
        let config = Conv2dConfig {
            stride: [s, s],
            padding: [ph, pw],
            padding_end: [ph, pw],
            groups,
            padding_mode,
            ..Conv2dConfig::new(2 * groups, 2 * groups, [k, k])
        };
        // Padding beyond the mode's limit is refused, as PyTorch refuses it.
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn conv2d_same_padding(
        mode in 0..4usize, groups in 1..3usize, kh in 1..5usize, kw in 1..5usize,
        dh in 1..3usize, dw in 1..3usize, h in 1..7usize, w in 1..7usize, batch in 1..3usize,
        seed: u64,
    ) {
        // `padding: same`: an odd total pads the extra pixel after the input, dense and
        // grouped, in every padding mode.
        let [padding, padding_end] = Conv2dConfig::same_padding([kh, kw], [dh, dw]);
        let config = Conv2dConfig {
            padding,
            padding_end,
            dilation: [dh, dw],
            groups,
            padding_mode: cnnc_runtime::config::PaddingMode::ALL[mode],
            ..Conv2dConfig::new(2 * groups, 2 * groups, [kh, kw])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        prop_assert_eq!(layer.output_shape(), layer.input_shape());
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn grouped_conv2d(
        groups in 1..4usize, cig in 1..3usize, cog in 1..3usize, kh in 1..4usize, kw in 1..4usize,
        sh in 1..3usize, sw in 1..3usize, ph in 0..3usize, pw in 0..3usize,
        dh in 1..3usize, dw in 1..3usize, h in 1..8usize, w in 1..8usize,
        bias: bool, batch in 1..3usize, seed: u64,
    ) {
        // groups * cig input channels; cig = cog = 1 is depthwise.
        let config = Conv2dConfig {
            stride: [sh, sw],
            padding: [ph, pw],
            padding_end: [ph, pw],
            dilation: [dh, dw],
            groups,
            bias,
            ..Conv2dConfig::new(groups * cig, groups * cog, [kh, kw])
        };
        let built = Conv2d::new("conv", &config, [h, w], &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn max_pool2d(
        c in 1..3usize, kh in 1..4usize, kw in 1..4usize, sh in 1..3usize, sw in 1..3usize,
        ph in 0..2usize, pw in 0..2usize, h in 1..7usize, w in 1..7usize,
        ceil_mode: bool, batch in 1..3usize, seed: u64,
    ) {
        let config = pool_config([kh, kw], [sh, sw], [ph, pw], ceil_mode);
        let built = MaxPool2d::new("pool", &config, image(c, h, w));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.spaced(layer.input_shape().numel() * batch, 0.05);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn dilated_max_pool2d(
        c in 1..3usize, kh in 1..4usize, kw in 1..4usize, sh in 1..4usize, sw in 1..4usize,
        ph in 0..2usize, pw in 0..2usize, dh in 1..4usize, dw in 1..4usize, h in 1..9usize,
        w in 1..9usize, ceil_mode: bool, batch in 1..3usize, seed: u64,
    ) {
        let config = Pool2dConfig {
            dilation: [dh, dw],
            ..pool_config([kh, kw], [sh, sw], [ph, pw], ceil_mode)
        };
        let built = MaxPool2d::new("pool", &config, image(c, h, w));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.spaced(layer.input_shape().numel() * batch, 0.05);
        // A window whose every position falls in the padding gives -inf, as in PyTorch (its
        // gradient goes nowhere): no finite difference measures it.
        let mut y = vec![0.0; layer.output_shape().numel() * batch];
        layer.forward(&x, &mut y, batch, Mode::Train).unwrap();
        prop_assume!(y.iter().all(|v| v.is_finite()));
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn avg_pool2d(
        c in 1..3usize, kh in 1..4usize, kw in 1..4usize, sh in 1..3usize, sw in 1..3usize,
        ph in 0..2usize, pw in 0..2usize, h in 1..7usize, w in 1..7usize,
        ceil_mode: bool, count_include_pad: bool, divisor in 0..4usize, batch in 1..3usize,
        seed: u64,
    ) {
        let config = Pool2dConfig {
            count_include_pad,
            divisor_override: (divisor > 0).then_some(divisor),
            ..pool_config([kh, kw], [sh, sw], [ph, pw], ceil_mode)
        };
        let built = AvgPool2d::new("pool", &config, image(c, h, w));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn conv_transpose2d(
        cin in 1..4usize, cout in 1..4usize, kh in 1..4usize, kw in 1..4usize,
        sh in 1..3usize, sw in 1..3usize, ph in 0..3usize, pw in 0..3usize,
        oph in 0..2usize, opw in 0..2usize, dh in 1..3usize, dw in 1..3usize,
        h in 1..6usize, w in 1..6usize, bias: bool, batch in 1..3usize, groups in 1..3usize,
        seed: u64,
    ) {
        let (cin, cout) = (cin * groups, cout * groups);
        let config = ConvTranspose2dConfig {
            in_channels: cin, out_channels: cout, kernel_size: [kh, kw], stride: [sh, sw],
            padding: [ph, pw], output_padding: [oph, opw], groups, bias, dilation: [dh, dw],
        };
        let built = ConvTranspose2d::new("convt", &config, image(cin, h, w), &mut init_rng(seed));
        prop_assume!(built.is_ok());
        let mut layer = built.unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn adaptive_pools(
        c in 1..3usize, h in 1..7usize, w in 1..7usize, oh in 1..8usize, ow in 1..8usize,
        batch in 1..3usize, seed: u64,
    ) {
        let dims = image(c, h, w);
        let mut rng = Rand(seed);
        let x = rng.spaced(dims.numel() * batch, 0.05);
        let mut avg = AdaptiveAvgPool2d::new("avg", [oh, ow], dims).unwrap();
        check_plain(&mut avg, &x, batch, &mut rng, TOL, Mode::Train);
        let mut max = AdaptiveMaxPool2d::new("max", [oh, ow], dims).unwrap();
        check_plain(&mut max, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn upsample(
        c in 1..3usize, h in 1..5usize, w in 1..5usize, sh in 1..4usize, sw in 1..4usize,
        batch in 1..3usize, seed: u64,
    ) {
        let mut layer = Upsample::new("up", [sh, sw], image(c, h, w)).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn upsample_by_size_and_bilinear(
        c in 1..3usize, h in 1..5usize, w in 1..5usize, oh in 1..8usize, ow in 1..8usize,
        by_size: bool, bilinear: bool, align: bool, batch in 1..3usize, seed: u64,
    ) {
        let config = UpsampleConfig {
            size: by_size.then_some([oh, ow]),
            scale_factor: (!by_size).then_some([1 + oh % 3, 1 + ow % 3]),
            mode: if bilinear { UpsampleMode::Bilinear } else { UpsampleMode::Nearest },
            align_corners: bilinear.then_some(align),
        };
        let mut layer = Upsample::with_config("up", &config, image(c, h, w)).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(layer.input_shape().numel() * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn activations(c in 1..4usize, h in 1..5usize, w in 1..5usize, slope in -0.5f32..0.5, seed: u64) {
        let dims = image(c, h, w);
        let mut rng = Rand(seed);
        let x = rng.spaced(dims.numel() * 2, 0.05);
        check_plain(&mut Relu::new("relu", dims), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut LeakyRelu::new("leaky", dims, slope), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Sigmoid::new("sigmoid", dims), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Tanh::new("tanh", dims), &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn modern_activations(c in 1..4usize, h in 1..5usize, w in 1..5usize, alpha in 0.1f32..2.0, seed: u64) {
        let dims = image(c, h, w);
        let mut rng = Rand(seed);
        // Multiples of 0.11 stay at least 0.03 from every kink (0, ±3, 6): farther than STEP.
        let x = rng.spaced(dims.numel() * 2, 0.11);
        check_plain(&mut Relu6::new("relu6", dims), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Silu::new("silu", dims), &x, 2, &mut rng, TOL, Mode::Train);
        for approximate in [GeluApproximate::None, GeluApproximate::Tanh] {
            check_plain(&mut Gelu::new("gelu", dims, approximate), &x, 2, &mut rng, TOL, Mode::Train);
        }
        check_plain(&mut Hardswish::new("hardswish", dims), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Hardsigmoid::new("hardsigmoid", dims), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Elu::new("elu", dims, alpha), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut Identity::new("identity", dims), &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn flatten(c in 1..4usize, h in 1..5usize, w in 1..5usize, seed: u64) {
        let mut rng = Rand(seed);
        let mut layer = Flatten::new("flatten", image(c, h, w));
        let x = rng.vec(c * h * w * 2);
        check_plain(&mut layer, &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn linear(fin in 1..8usize, fout in 1..8usize, bias: bool, batch in 1..4usize, seed: u64) {
        let config = LinearConfig { in_features: fin, out_features: fout, bias };
        let mut layer = Linear::new("fc", &config, Shape::Flat(fin), &mut init_rng(seed)).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(fin * batch);
        check_plain(&mut layer, &x, batch, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn dropout_with_fixed_mask(p in 0.0f32..0.9, c in 1..4usize, h in 1..5usize, seed: u64) {
        let dims = image(c, h, 3);
        let mut layer = Dropout::new("drop", dims, p, dropout_rng(seed, 0)).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(dims.numel() * 2);
        // Draw the mask once, then hold it fixed for the analytic and numeric gradients.
        let mut y = vec![0.0; x.len()];
        layer.forward(&x, &mut y, 2, Mode::Train).unwrap();
        check_layer(&mut layer, &x, 2, &mut rng, TOL, |l, x, y| l.forward_same_mask(x, y, 2).unwrap());
    }

    #[test]
    fn prelu(c in 1..4usize, h in 1..4usize, per_channel: bool, flat: bool, seed: u64) {
        let dims = if flat { Shape::Flat(c * h) } else { image(c, h, 2) };
        let n = if per_channel { dims.channels() } else { 1 };
        let mut layer = Prelu::new("prelu", dims, n).unwrap();
        let mut rng = Rand(seed);
        let slopes = rng.vec(n);
        layer.weight.value.iter_mut().zip(slopes).for_each(|(w, s)| *w = s);
        let x = rng.spaced(dims.numel() * 2, 0.05);
        check_plain(&mut layer, &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn softmax_along_every_dim(c in 1..4usize, h in 1..4usize, w in 1..4usize, dim in -3i64..4, flat: bool, seed: u64) {
        let dims = if flat { Shape::Flat(c * h * w) } else { image(c, h, w) };
        // Flat: 1 or -1; images: every per-sample dim, 0 (the batch) standing for 1.
        let dim = if flat { 1 - 2 * (dim & 1) } else if dim == 0 { 1 } else { dim };
        let mut rng = Rand(seed);
        let x = rng.vec(dims.numel() * 2);
        check_plain(&mut Softmax::new("softmax", dims, dim).unwrap(), &x, 2, &mut rng, TOL, Mode::Train);
        check_plain(&mut LogSoftmax::new("log_softmax", dims, dim).unwrap(), &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn dropout2d_with_fixed_mask(p in 0.0f32..0.9, c in 1..5usize, h in 1..5usize, seed: u64) {
        let dims = image(c, h, 3);
        let mut layer = Dropout2d::new("drop", dims, p, dropout_rng(seed, 0)).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(dims.numel() * 2);
        let mut y = vec![0.0; x.len()];
        layer.forward(&x, &mut y, 2, Mode::Train).unwrap();
        check_layer(&mut layer, &x, 2, &mut rng, TOL, |l, x, y| l.forward_same_mask(x, y, 2).unwrap());
    }

    #[test]
    fn batch_norm2d(c in 1..4usize, h in 1..4usize, w in 1..4usize, batch in 1..4usize, train: bool, seed: u64) {
        prop_assume!(!train || batch * h * w > 1);
        let config = BatchNorm2dConfig::new(c);
        let mut layer = BatchNorm2d::new("bn", &config, image(c, h, w)).unwrap();
        let mut rng = Rand(seed);
        // Non-trivial affine parameters and running statistics.
        for (v, r) in layer.weight.value.iter_mut().zip(rng.vec(c)) { *v = 1.0 + r; }
        for (v, r) in layer.bias.value.iter_mut().zip(rng.vec(c)) { *v = r; }
        for (v, r) in layer.running_mean.iter_mut().zip(rng.vec(c)) { *v = r; }
        for (v, r) in layer.running_var.iter_mut().zip(rng.vec(c)) { *v = 1.5 + r; }
        // Distinct values: two nearly equal values in a channel of two make its variance tiny
        // and the normalisation so steep that finite differences measure nothing (a case
        // proptest found: c = 2, 1 x 1 images, batch 2).
        let x = rng.spaced(c * h * w * batch, 0.4);
        let mode = if train { Mode::Train } else { Mode::Eval };
        // Normalising by batch statistics amplifies rounding when a channel has few values.
        check_plain(&mut layer, &x, batch, &mut rng, 2e-2, mode);
    }

    #[test]
    fn batch_norm2d_options(
        c in 1..4usize, h in 1..4usize, w in 1..4usize, batch in 1..4usize, affine: bool,
        track: bool, cumulative: bool, train: bool, seed: u64,
    ) {
        // Without running statistics, eval normalises by the batch's too.
        let batch_stats = train || !track;
        prop_assume!(!batch_stats || batch * h * w > 1);
        let config = BatchNorm2dConfig {
            affine,
            track_running_stats: track,
            momentum: if cumulative { None } else { Some(0.1) },
            ..BatchNorm2dConfig::new(c)
        };
        let mut layer = BatchNorm2d::new("bn", &config, image(c, h, w)).unwrap();
        let mut rng = Rand(seed);
        if affine {
            for (v, r) in layer.weight.value.iter_mut().zip(rng.vec(c)) { *v = 1.0 + r; }
            for (v, r) in layer.bias.value.iter_mut().zip(rng.vec(c)) { *v = r; }
        }
        for (v, r) in layer.running_mean.iter_mut().zip(rng.vec(c)) { *v = r; }
        for (v, r) in layer.running_var.iter_mut().zip(rng.vec(c)) { *v = 1.5 + r; }
        let x = rng.spaced(c * h * w * batch, 0.4);
        let mode = if train { Mode::Train } else { Mode::Eval };
        check_plain(&mut layer, &x, batch, &mut rng, 2e-2, mode);
    }

    #[test]
    fn group_norm(
        groups in 1..4usize, per_group in 1..3usize, h in 1..4usize, w in 1..4usize,
        batch in 1..3usize, affine: bool, train: bool, seed: u64,
    ) {
        prop_assume!(per_group * h * w > 1);
        let c = groups * per_group;
        let config = GroupNormConfig { num_groups: groups, num_channels: c, eps: 1e-5, affine };
        let mut layer = GroupNorm::new("gn", &config, image(c, h, w)).unwrap();
        let mut rng = Rand(seed);
        for (v, r) in layer.weight.value.iter_mut().zip(rng.vec(c)) { *v = 1.0 + r; }
        for (v, r) in layer.bias.value.iter_mut().zip(rng.vec(c)) { *v = r; }
        // Distinct values, as for batch norm: a group of nearly equal values is too steep to
        // measure by finite differences.
        let x = rng.spaced(c * h * w * batch, 0.4);
        let mode = if train { Mode::Train } else { Mode::Eval };
        check_plain(&mut layer, &x, batch, &mut rng, 2e-2, mode);
    }

    #[test]
    fn flatten_with_dims(c in 1..4usize, h in 1..4usize, w in 1..4usize, dim in 1i64..4, all: bool, seed: u64) {
        // All of C, H, W (reordered into PyTorch's order), or one dim (a copy).
        let (start, end) = if all { (1, -1) } else { (dim, dim) };
        let mut layer = Flatten::with_dims("flat", image(c, h, w), start, end).unwrap();
        let mut rng = Rand(seed);
        let x = rng.vec(c * h * w * 2);
        check_plain(&mut layer, &x, 2, &mut rng, TOL, Mode::Train);
    }

    #[test]
    fn cross_entropy(n in 1..5usize, classes in 1..6usize, seed: u64) {
        let mut rng = Rand(seed);
        let logits = Array2::from_shape_vec((n, classes), rng.vec(n * classes).iter().map(|v| 4.0 * v).collect()).unwrap();
        let labels: Vec<usize> = (0..n).map(|_| (rng.unit() * classes as f32) as usize % classes).collect();
        let mut grad = Array2::zeros((n, classes));
        softmax_cross_entropy(logits.view(), &labels, grad.view_mut()).unwrap();
        let mut scratch = Array2::zeros((n, classes));
        for i in 0..n {
            for j in 0..classes {
                let mut at = |d: f32| {
                    let mut l = logits.clone();
                    l[[i, j]] += d;
                    f64::from(softmax_cross_entropy(l.view(), &labels, scratch.view_mut()).unwrap())
                };
                let numeric = (at(STEP) - at(-STEP)) / (2.0 * f64::from(STEP));
                prop_assert!((f64::from(grad[[i, j]]) - numeric).abs() < 2e-3, "[{i},{j}] {} vs {numeric}", grad[[i, j]]);
            }
        }
    }
}

/// Checks every input gradient of a merge layer against central finite differences of
/// `sum(forward(xs) * r)`, written and added onto values already there.
fn check_merge(config: &LayerConfig, inputs: &[Shape], batch: usize, seed: u64) {
    let mut layer = build_merge("m", config, inputs).unwrap();
    let merge = layer.as_merge().unwrap();
    let mut rng = Rand(seed);
    let mut xs: Vec<Vec<f32>> = inputs.iter().map(|s| rng.vec(s.numel() * batch)).collect();
    let out_len = merge.output_shape().numel() * batch;
    let r = rng.vec(out_len);
    let loss_at = |merge: &mut dyn Merge, xs: &[Vec<f32>]| {
        let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let mut y = vec![0.0; out_len];
        merge.forward_merge(&views, &mut y, batch).unwrap();
        y.iter()
            .zip(&r)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>()
    };
    loss_at(merge, &xs);
    // The output, which an add that applies a ReLU masks the gradient by.
    let mut y = vec![0.0; out_len];
    let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    merge.forward_merge(&views, &mut y, batch).unwrap();
    for input in 0..inputs.len() {
        let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let mut dx = vec![0.0; xs[input].len()];
        merge
            .backward_merge(&views, [&y, &r], input, &mut dx, false, batch)
            .unwrap();
        let base = rng.vec(dx.len());
        let mut added = base.clone();
        merge
            .backward_merge(&views, [&y, &r], input, &mut added, true, batch)
            .unwrap();
        for i in 0..dx.len() {
            // Adding gives the written part plus what was there, to rounding.
            assert!((added[i] - base[i] - dx[i]).abs() <= 1e-6 * (1.0 + dx[i].abs()));
            let orig = xs[input][i];
            xs[input][i] = orig + STEP;
            let up = loss_at(merge, &xs);
            xs[input][i] = orig - STEP;
            let down = loss_at(merge, &xs);
            xs[input][i] = orig;
            let numeric = (up - down) / (2.0 * f64::from(STEP));
            let err = (f64::from(dx[i]) - numeric).abs();
            assert!(
                err <= TOL * (1.0 + numeric.abs()),
                "input {input}[{i}]: analytic {} vs finite difference {numeric}",
                dx[i]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn add(count in 2..4usize, c in 1..4usize, h in 1..4usize, w in 1..4usize, flat: bool,
           batch in 1..3usize, seed: u64) {
        let shape = if flat { Shape::Flat(c * h) } else { Shape::Chw([c, h, w]) };
        check_merge(&LayerConfig::Add, &vec![shape; count], batch, seed);
    }

    #[test]
    fn concat(widths in proptest::collection::vec(1..4usize, 2..4), h in 1..4usize,
              w in 1..4usize, flat: bool, batch in 1..3usize, seed: u64) {
        let inputs: Vec<Shape> = widths
            .iter()
            .map(|&c| if flat { Shape::Flat(c) } else { Shape::Chw([c, h, w]) })
            .collect();
        check_merge(&LayerConfig::Concat(ConcatConfig { dim: 1 }), &inputs, batch, seed);
    }

    #[test]
    fn mul(c in 1..4usize, h in 1..4usize, w in 1..4usize, broadcast in 0..64usize,
           batch in 1..3usize, seed: u64) {
        // Each of the six dimensions (three per input) is the full size or 1, one input's
        // bits picking which; a dimension broadcast in both is 1 in the output.
        let pick = |bits: usize| {
            let d = |bit: usize, n: usize| if bits & (1 << bit) != 0 { 1 } else { n };
            Shape::Chw([d(0, c), d(1, h), d(2, w)])
        };
        let inputs = [pick(broadcast & 7), pick(broadcast >> 3)];
        check_merge(&LayerConfig::Mul, &inputs, batch, seed);
        check_merge(&LayerConfig::Mul, &[Shape::Flat(1), Shape::Flat(c)], batch, seed);
    }
}

/// A network using every parametric layer and most options, small enough to check exhaustively.
fn mixed_net() -> NetworkDef {
    let layer = |name: &str, config| LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    };
    NetworkDef {
        input: [2, 7, 6],
        layers: vec![
            layer(
                "conv1",
                LayerConfig::Conv2d(Conv2dConfig {
                    padding: [1, 1],
                    padding_end: [1, 1],
                    ..Conv2dConfig::new(2, 3, [3, 2])
                }),
            ),
            layer("bn1", LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(3))),
            layer("act1", LayerConfig::Tanh),
            layer(
                "pool1",
                LayerConfig::MaxPool2d(pool_config([2, 2], [2, 2], [1, 0], true)),
            ),
            layer(
                "conv2",
                LayerConfig::Conv2d(Conv2dConfig {
                    stride: [1, 2],
                    padding: [1, 1],
                    padding_end: [1, 1],
                    dilation: [2, 1],
                    bias: false,
                    ..Conv2dConfig::new(3, 4, [2, 2])
                }),
            ),
            layer(
                "act2",
                LayerConfig::LeakyRelu {
                    negative_slope: 0.1,
                },
            ),
            layer(
                "pool2",
                LayerConfig::AvgPool2d(pool_config([2, 2], [1, 1], [1, 1], false)),
            ),
            layer("flatten", LayerConfig::FLATTEN),
            layer(
                "fc1",
                LayerConfig::Linear(LinearConfig {
                    in_features: 0,
                    out_features: 5,
                    bias: true,
                }),
            ),
            layer("act3", LayerConfig::Sigmoid),
            layer(
                "fc2",
                LayerConfig::Linear(LinearConfig {
                    in_features: 5,
                    out_features: 3,
                    bias: true,
                }),
            ),
        ],
    }
}

/// Fills in `fc1.in_features` from the flatten output, as the spec checker would.
fn resolved_mixed_net() -> NetworkDef {
    let mut def = mixed_net();
    let mut probe = def.clone();
    probe.layers.truncate(8);
    let features = Network::new(&probe, 0).unwrap().classes();
    if let LayerConfig::Linear(c) = &mut def.layers[8].config {
        c.in_features = features;
    }
    def
}

/// Step of the whole-network check: batchnorm over 3 samples makes the loss strongly curved in
/// the first convolution's weights, so the central difference needs a smaller step than layers do.
const NET_STEP: f32 = 2e-3;

#[test]
fn whole_network_gradients_match_finite_differences() {
    let def = resolved_mixed_net();
    let mut net = Network::new(&def, 3).unwrap();
    let mut rng = Rand(11);
    let x = Array4::from_shape_vec((3, 2, 7, 6), rng.vec(3 * 2 * 7 * 6)).unwrap();
    let labels = [0, 2, 1];
    net.train_step(x.view(), &labels).unwrap();
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    net.visit(&mut |e| {
        if let Entry::Param { name, param } = e {
            grads.push((name.to_owned(), param.grad.iter().copied().collect()));
        }
    });
    let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
    let want = [
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "conv2.weight",
    ];
    assert_eq!(
        names,
        [
            &want[..],
            &["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        ]
        .concat()
    );
    check_directions(&mut net, &x, &labels, &grads, &mut rng);
}

/// Checks each parameter tensor's gradient in `grads` (from the last training step on `x`)
/// against central differences of the loss along random directions.
fn check_directions(
    net: &mut Network,
    x: &Array4<f32>,
    labels: &[usize],
    grads: &[(String, Vec<f32>)],
    rng: &mut Rand,
) {
    let loss_at = |net: &mut Network| {
        let logits = net.forward(x.view(), Mode::Train).unwrap();
        let mut g = Array2::zeros(logits.dim());
        f64::from(softmax_cross_entropy(logits.view(), labels, g.view_mut()).unwrap())
    };
    // Directional derivatives, one parameter tensor at a time: a per-element check would be
    // dominated by f32 rounding (the gradients of a mean loss go down to 1e-4) and by max-pool and
    // leaky-ReLU kinks the step crosses; a random direction sums many elements, so the signal
    // dwarfs both while a wrong gradient anywhere in the tensor still shows.
    for (p, (name, grad)) in grads.iter().enumerate() {
        for _ in 0..3 {
            let dir = rng.vec(grad.len());
            let analytic: f64 = grad
                .iter()
                .zip(&dir)
                .map(|(&g, &d)| f64::from(g) * f64::from(d))
                .sum();
            let nudge = |net: &mut Network, scale: f32| {
                let mut k = 0;
                net.visit(&mut |e| {
                    if let Entry::Param { param, .. } = e {
                        if k == p {
                            for (v, d) in param.value.iter_mut().zip(&dir) {
                                *v += scale * d;
                            }
                        }
                        k += 1;
                    }
                });
            };
            let before: Vec<f32> = {
                let mut v = Vec::new();
                let mut k = 0;
                net.visit(&mut |e| {
                    if let Entry::Param { param, .. } = e {
                        if k == p {
                            v = param.value.iter().copied().collect();
                        }
                        k += 1;
                    }
                });
                v
            };
            nudge(net, NET_STEP);
            let up = loss_at(net);
            nudge(net, -2.0 * NET_STEP);
            let down = loss_at(net);
            let mut k = 0;
            net.visit(&mut |e| {
                if let Entry::Param { param, .. } = e {
                    if k == p {
                        param
                            .value
                            .iter_mut()
                            .zip(&before)
                            .for_each(|(v, b)| *v = *b);
                    }
                    k += 1;
                }
            });
            let numeric = (up - down) / (2.0 * f64::from(NET_STEP));
            let err = (analytic - numeric).abs();
            assert!(
                err <= 2e-2 * numeric.abs() + 5e-5,
                "{name}: directional derivative {analytic} vs {numeric}"
            );
        }
    }
}

/// Gradients of every parameter after one training step, by state_dict name.
fn param_grads(net: &mut Network) -> Vec<(String, Vec<f32>)> {
    let mut grads = Vec::new();
    net.visit(&mut |e| {
        if let Entry::Param { name, param } = e {
            grads.push((name.to_owned(), param.grad.iter().copied().collect()));
        }
    });
    grads
}

/// A small graph: a residual block whose input three layers read (so one-input layers add their
/// gradient parts through the scratch buffer), a concat of the block with its input, and a
/// squeeze-and-excitation gate multiplying the map by per-channel weights.
pub fn graph_net() -> NetworkDef {
    let layer = |name: &str, config, inputs: Vec<Source>| LayerDef {
        name: name.to_owned(),
        config,
        inputs,
    };
    let conv = |cin, cout, k: usize, bias| {
        LayerConfig::Conv2d(Conv2dConfig {
            padding: [k / 2, k / 2],
            padding_end: [k / 2, k / 2],
            bias,
            ..Conv2dConfig::new(cin, cout, [k, k])
        })
    };
    let bn = |n| LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(n));
    let linear = |i, o| {
        LayerConfig::Linear(LinearConfig {
            in_features: i,
            out_features: o,
            bias: true,
        })
    };
    let l = Source::Layer;
    NetworkDef {
        input: [2, 5, 4],
        layers: vec![
            layer("stem", conv(2, 3, 3, true), vec![]),         // 0
            layer("stem_act", LayerConfig::Tanh, vec![]),       // 1
            layer("block.conv1", conv(3, 3, 3, false), vec![]), // 2
            layer("block.bn1", bn(3), vec![]),                  // 3
            layer("block.act", LayerConfig::Sigmoid, vec![]),   // 4
            layer("block.conv2", conv(3, 3, 1, true), vec![]),  // 5
            layer("block.add", LayerConfig::Add, vec![l(5), l(1)]), // 6
            layer("side", LayerConfig::Tanh, vec![l(1)]),       // 7
            layer(
                "cat",
                LayerConfig::Concat(ConcatConfig { dim: 1 }),
                vec![l(6), l(7), Source::Input],
            ), // 8: [8, 5, 4]
            layer(
                "se.pool",
                LayerConfig::AdaptiveAvgPool2d {
                    output_size: [1, 1],
                },
                vec![],
            ), // 9
            layer("se.fc", conv(8, 8, 1, true), vec![]),        // 10
            layer("se.gate", LayerConfig::Sigmoid, vec![]),     // 11
            layer("se.mul", LayerConfig::Mul, vec![l(8), l(11)]), // 12
            layer("flatten", LayerConfig::FLATTEN, vec![]),     // 13
            layer("fc", linear(8 * 5 * 4, 3), vec![]),          // 14
        ],
    }
}

#[test]
fn graph_network_gradients_match_finite_differences() {
    let mut net = Network::new(&graph_net(), 5).unwrap();
    let mut rng = Rand(17);
    let x = Array4::from_shape_vec((3, 2, 5, 4), rng.vec(3 * 2 * 5 * 4)).unwrap();
    let labels = [2, 0, 1];
    net.train_step(x.view(), &labels).unwrap();
    let grads = param_grads(&mut net);
    let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "stem.weight",
            "stem.bias",
            "block.conv1.weight",
            "block.bn1.weight",
            "block.bn1.bias",
            "block.conv2.weight",
            "block.conv2.bias",
            "se.fc.weight",
            "se.fc.bias",
            "fc.weight",
            "fc.bias"
        ]
    );
    check_directions(&mut net, &x, &labels, &grads, &mut rng);
}

#[test]
fn a_branch_nothing_reads_gets_zero_gradients() {
    let mut def = graph_net();
    // A linear head on the flattened map that nothing reads, before the real head.
    def.layers.insert(
        14,
        LayerDef {
            name: "unused".into(),
            config: LayerConfig::Linear(LinearConfig {
                in_features: 8 * 5 * 4,
                out_features: 2,
                bias: true,
            }),
            inputs: vec![],
        },
    );
    def.layers[15].inputs = vec![Source::Layer(13)];
    let mut net = Network::new(&def, 5).unwrap();
    let mut rng = Rand(3);
    let x = Array4::from_shape_vec((2, 2, 5, 4), rng.vec(2 * 2 * 5 * 4)).unwrap();
    net.train_step(x.view(), &[0, 1]).unwrap();
    let grads = param_grads(&mut net);
    for (name, grad) in &grads {
        let zero = grad.iter().all(|&g| g == 0.0);
        assert_eq!(zero, name.starts_with("unused."), "{name}");
    }
}

#[test]
fn a_concat_of_more_inputs_than_gathered_on_the_stack_runs_and_backpropagates() {
    // Nine convolutions of the input joined by one concat: more inputs than the executor
    // gathers inline.
    let conv = LayerConfig::Conv2d(Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(1, 1, [3, 3])
    });
    let mut layers: Vec<LayerDef> = (0..9)
        .map(|i| LayerDef {
            name: format!("branch{i}"),
            config: conv.clone(),
            inputs: vec![Source::Input],
        })
        .collect();
    let tail = [
        (
            "cat",
            LayerConfig::Concat(ConcatConfig { dim: 1 }),
            (0..9).map(Source::Layer).collect(),
        ),
        ("flatten", LayerConfig::FLATTEN, vec![]),
        (
            "fc",
            LayerConfig::Linear(LinearConfig {
                in_features: 9 * 9,
                out_features: 3,
                bias: true,
            }),
            vec![],
        ),
    ];
    layers.extend(tail.into_iter().map(|(name, config, inputs)| LayerDef {
        name: name.to_owned(),
        config,
        inputs,
    }));
    let def = NetworkDef {
        input: [1, 3, 3],
        layers,
    };
    let mut net = Network::new(&def, 2).unwrap();
    let mut rng = Rand(5);
    let x = Array4::from_shape_vec((2, 1, 3, 3), rng.vec(2 * 9)).unwrap();
    let labels = [1, 2];
    net.train_step(x.view(), &labels).unwrap();
    let grads = param_grads(&mut net);
    assert_eq!(grads.len(), 9 * 2 + 2);
    check_directions(&mut net, &x, &labels, &grads, &mut rng);
}

/// The input gradient of a 3x3 'same' convolution of 64 channels in and out, the shape whose
/// input gradient runs as Winograd's F(2x2, 3x3) (over more than four pixels an image): 3 x 5
/// images (a last tile one pixel high and wide), batch 2, `dy` read where it lies (no ReLU or
/// batch norm to stage it through), against central differences of `sum(y * r)` at every
/// fifth input value.
#[test]
fn winograd_input_gradient_matches_finite_differences() {
    let config = Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        bias: true,
        ..Conv2dConfig::new(64, 64, [3, 3])
    };
    let (batch, mut rng) = (2, Rand(16));
    let mut layer = Conv2d::new("conv", &config, [3, 5], &mut init_rng(16)).unwrap();
    let x = rng.vec(layer.input_shape().numel() * batch);
    let r = rng.vec(layer.output_shape().numel() * batch);
    let loss = |layer: &mut Conv2d, x: &[f32]| {
        let mut y = vec![0.0; r.len()];
        layer.forward(x, &mut y, batch, Mode::Train).unwrap();
        let sum: f64 = y
            .iter()
            .zip(&r)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        (sum, y)
    };
    let (_, y) = loss(&mut layer, &x);
    let mut dx = vec![f32::NAN; x.len()];
    layer.backward(&x, &y, &r, Some(&mut dx), batch).unwrap();
    let mut xp = x.clone();
    for i in (0..x.len()).step_by(5) {
        xp[i] = x[i] + STEP;
        let (up, _) = loss(&mut layer, &xp);
        xp[i] = x[i] - STEP;
        let (down, _) = loss(&mut layer, &xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * f64::from(STEP));
        let err = (f64::from(dx[i]) - numeric).abs();
        assert!(
            err <= TOL * (1.0 + numeric.abs()),
            "dx[{i}]: {} vs {numeric}",
            dx[i]
        );
    }
}
