//! Grouped and depthwise convolution beyond the PyTorch fixtures: equal to a dense convolution
//! with a block-diagonal weight, bit-identical whatever the thread count inside a network,
//! PyTorch's init bound (fan_in = in_channels / groups * kh * kw), and a clear error for a
//! `groups` that does not divide the channels. The network ends in a grouped transposed
//! convolution, so its bit-identity and init bound (fan_in = out_channels / groups * kh * kw)
//! are checked too.

mod common;

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, ConvTranspose2dConfig, LayerConfig, LayerDef, LinearConfig,
    NetworkDef,
};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{BatchNorm2d, Conv2d, Relu6};
use cnnc_runtime::{Entry, Error, Layer, Mode, Network, Visit};
use common::Rand;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        padding_end: [k / 2, k / 2],
        groups,
        ..Conv2dConfig::new(cin, cout, [k, k])
    }
}

/// Forward output, input gradient, weight gradient and bias gradient of `layer` on `x`.
fn run(layer: &mut Conv2d, x: &[f32], batch: usize, seed: u64) -> [Vec<f32>; 4] {
    let ny = layer.output_shape().numel() * batch;
    let mut y = vec![0.0; ny];
    layer.forward(x, &mut y, batch, Mode::Train).unwrap();
    let dy = Rand(seed).vec(ny);
    let mut dx = vec![0.0; x.len()];
    layer.backward(x, &y, &dy, Some(&mut dx), batch).unwrap();
    let wgrad = layer.weight().grad.iter().copied().collect();
    let bgrad = layer.bias().unwrap().grad.iter().copied().collect();
    [y, dx, wgrad, bgrad]
}

#[test]
fn grouped_equals_dense_with_a_block_diagonal_weight() {
    // (in, out, kernel, stride, groups): depthwise, depthwise with a multiplier, grouped.
    for (cin, cout, k, stride, groups) in [
        (24, 24, 3, 1, 24),
        (24, 24, 3, 2, 24),
        (5, 10, 3, 1, 5),
        (6, 9, 3, 2, 3),
        (8, 4, 1, 1, 2),
    ] {
        let (h, w, batch) = (7, 6, 3);
        let mut grouped = Conv2d::new(
            "g",
            &conv(cin, cout, k, stride, groups),
            [h, w],
            &mut init_rng(1),
        )
        .unwrap();
        let mut dense = Conv2d::new(
            "d",
            &conv(cin, cout, k, stride, 1),
            [h, w],
            &mut init_rng(1),
        )
        .unwrap();
        let (cig, cog) = (cin / groups, cout / groups);
        // The dense weight: the grouped one on the diagonal blocks, zeros elsewhere.
        let small = grouped.weight().value.clone();
        let full = &mut dense.weight_mut().value;
        full.fill(0.0);
        for co in 0..cout {
            let group = co / cog;
            for ci in 0..cig {
                for ky in 0..k {
                    for kx in 0..k {
                        full[[co, group * cig + ci, ky, kx]] = small[[co, ci, ky, kx]];
                    }
                }
            }
        }
        let bias = grouped.bias().unwrap().value.clone();
        dense.bias_mut().unwrap().value.assign(&bias);
        let x = Rand(7).vec(cin * h * w * batch);
        let [gy, gdx, gw, gb] = run(&mut grouped, &x, batch, 3);
        let [dy, ddx, dw, db] = run(&mut dense, &x, batch, 3);
        let case = format!("{cin}->{cout} k{k} s{stride} g{groups}");
        common::fixture::assert_close(&format!("{case} output"), &gy, &dy, 1e-5, 1e-5);
        common::fixture::assert_close(&format!("{case} dx"), &gdx, &ddx, 1e-5, 1e-5);
        common::fixture::assert_close(&format!("{case} bias grad"), &gb, &db, 1e-4, 1e-5);
        // Only the diagonal blocks of the dense weight gradient belong to the grouped layer.
        let dw = ndarray::ArrayD::from_shape_vec(dense.weight().grad.shape(), dw).unwrap();
        let mut expected = Vec::new();
        for co in 0..cout {
            let group = co / cog;
            for ci in 0..cig {
                for ky in 0..k {
                    for kx in 0..k {
                        expected.push(dw[[co, group * cig + ci, ky, kx]]);
                    }
                }
            }
        }
        common::fixture::assert_close(&format!("{case} weight grad"), &gw, &expected, 1e-4, 1e-5);
    }
}

/// A depthwise-separable network: stem, depthwise (strided), pointwise, grouped, grouped
/// transposed, classifier.
fn separable() -> NetworkDef {
    let layer = |name: &str, config| LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    };
    let bn = |n| LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(n));
    NetworkDef {
        input: [3, 12, 12],
        layers: vec![
            layer("stem", LayerConfig::Conv2d(conv(3, 24, 3, 1, 1))),
            layer("stem_bn", bn(24)),
            layer("r0", LayerConfig::Relu),
            layer("dw", LayerConfig::Conv2d(conv(24, 24, 3, 2, 24))),
            layer("r1", LayerConfig::Relu),
            layer("pw", LayerConfig::Conv2d(conv(24, 32, 1, 1, 1))),
            layer("dw2", LayerConfig::Conv2d(conv(32, 64, 3, 1, 32))),
            layer("grouped", LayerConfig::Conv2d(conv(64, 16, 3, 2, 4))),
            layer("r2", LayerConfig::Relu),
            layer(
                "up",
                LayerConfig::ConvTranspose2d(ConvTranspose2dConfig {
                    in_channels: 16,
                    out_channels: 8,
                    kernel_size: [3, 3],
                    stride: [2, 2],
                    padding: [1, 1],
                    output_padding: [1, 1],
                    groups: 4,
                    bias: true,
                    dilation: [1, 1],
                }),
            ),
            layer("flat", LayerConfig::FLATTEN),
            layer(
                "fc",
                LayerConfig::Linear(LinearConfig {
                    in_features: 8 * 6 * 6,
                    out_features: 10,
                    bias: true,
                }),
            ),
        ],
    }
}

fn train(threads: usize, batch: usize) -> Vec<u32> {
    common::train_bits(&separable(), [3, 12, 12], 10, threads, batch)
}

#[test]
fn bit_identical_whatever_the_thread_count() {
    for batch in [1, 5, 19] {
        let one = train(1, batch);
        assert_eq!(one, train(2, batch), "batch {batch}: 1 vs 2 threads");
        assert_eq!(one, train(3, batch), "batch {batch}: 1 vs 3 threads");
    }
}

#[test]
fn init_bound_uses_the_channels_of_one_group() {
    let mut net = Network::new(&separable(), 11).unwrap();
    net.visit(&mut |e| {
        if let Entry::Param { name, param } = e {
            let fan_in = match name {
                "dw.weight" | "dw.bias" => 9,
                "dw2.weight" | "dw2.bias" => 9,
                "grouped.weight" | "grouped.bias" => 16 * 9,
                "up.weight" | "up.bias" => 2 * 9,
                _ => return,
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max = param.value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound, "{name}: {max} > {bound}");
            if name.ends_with("weight") {
                assert!(
                    max > 0.7 * bound,
                    "{name}: {max} spans too little of {bound}"
                );
            }
        }
    });
}

#[test]
fn groups_that_do_not_divide_the_channels_are_an_error() {
    for (cin, cout, groups) in [(6, 8, 4), (8, 6, 4), (4, 4, 0)] {
        let err = Conv2d::new(
            "c",
            &conv(cin, cout, 3, 1, groups),
            [5, 5],
            &mut init_rng(0),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains("groups"), "{err}");
    }
}

/// A depthwise convolution that applies an eval-mode batch norm's scale and shift and a ReLU6
/// as it stores (`Conv2d::fuse_channel_store`, for the plan's conv -> BN -> ReLU6 fusion) gives
/// the three layers' outputs bit for bit, strided or not, with ragged channel counts.
#[test]
fn depthwise_store_applies_batch_norm_and_relu6_bit_for_bit() {
    for (c, stride) in [(24, 1), (40, 2), (7, 1)] {
        let (h, w, batch) = (6, 7, 3);
        let config = conv(c, c, 3, stride, c);
        let mut plain = Conv2d::new("dw", &config, [h, w], &mut init_rng(3)).unwrap();
        let mut fused = Conv2d::new("dw", &config, [h, w], &mut init_rng(3)).unwrap();
        let out = plain.output_shape();
        let mut bn = BatchNorm2d::new("bn", &BatchNorm2dConfig::new(c), out).unwrap();
        // Statistics and affine factors far from the defaults, so scale and shift matter.
        let mut rng = Rand(11);
        bn.visit(&mut |e| match e {
            Entry::Param { param, .. } => param.value.iter_mut().for_each(|v| *v = rng.vec(1)[0]),
            Entry::Buffer { name, value } => value.iter_mut().for_each(|v| {
                let r = rng.vec(1)[0];
                *v = if name.ends_with("running_var") {
                    0.2 + r.abs()
                } else {
                    3.0 * r
                };
            }),
            _ => {}
        });
        let (mut scale, mut shift) = (vec![0.0f32; c], vec![0.0f32; c]);
        let (mut mean, mut var, mut gamma, mut beta) = (vec![], vec![], vec![], vec![]);
        bn.visit(&mut |e| match e {
            Entry::Param { name, param } if name.ends_with("weight") => {
                gamma = param.value.iter().copied().collect()
            }
            Entry::Param { param, .. } => beta = param.value.iter().copied().collect(),
            Entry::Buffer { name, value } if name.ends_with("running_mean") => {
                mean = value.iter().copied().collect()
            }
            Entry::Buffer { value, .. } => var = value.iter().copied().collect(),
            _ => {}
        });
        // BatchNorm2d's eval factors, as it computes them.
        for ch in 0..c {
            let invstd = (1.0 / (f64::from(var[ch]) + f64::from(1e-5f32)).sqrt()) as f32;
            scale[ch] = invstd * gamma[ch];
            shift[ch] = beta[ch] - mean[ch] * scale[ch];
        }
        assert!(fused.fuse_channel_store(Some((scale, shift)), 0.0, 6.0));
        let mut relu6 = Relu6::new("r", out);
        let x: Vec<f32> = Rand(5)
            .vec(batch * c * h * w)
            .iter()
            .map(|v| 40.0 * v)
            .collect();
        let n = out.numel() * batch;
        let (mut y, mut z, mut want) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        plain.forward(&x, &mut y, batch, Mode::Eval).unwrap();
        bn.forward(&y, &mut z, batch, Mode::Eval).unwrap();
        relu6.forward(&z, &mut want, batch, Mode::Eval).unwrap();
        let mut got = vec![f32::NAN; n];
        fused.forward(&x, &mut got, batch, Mode::Eval).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{c} channels, stride {stride}");
        let mut inferred = vec![f32::NAN; n];
        fused.infer(&x, &mut inferred, batch).unwrap();
        assert_eq!(
            bits(&inferred),
            bits(&want),
            "infer, {c} channels, stride {stride}"
        );
        assert!(want.contains(&6.0) && want.contains(&0.0));
        assert!(fused.fuse_channel_store(None, f32::NEG_INFINITY, f32::INFINITY));
        fused.forward(&x, &mut got, batch, Mode::Eval).unwrap();
        assert_eq!(bits(&got), bits(&y), "store turned off");
    }
    let mut dense = Conv2d::new("d", &conv(4, 4, 3, 1, 1), [5, 5], &mut init_rng(1)).unwrap();
    assert!(!dense.fuse_channel_store(None, 0.0, 6.0));
}
