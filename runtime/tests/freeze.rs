//! Freezing parameters by name (`requires_grad`) and gradient accumulation over micro-batches, on
//! a network with every parametric layer kind (convolution, grouped convolution, transposed
//! convolution, batch and group norm, PReLU, linear): frozen parameters stay bit for bit, the
//! others train exactly as when the frozen ones are simply not updated, and two half-batches
//! accumulated give the gradients of the whole batch.

mod common;

use cnnc_runtime::accumulate::GradAccumulator;
use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, ConvTranspose2dConfig, GroupNormConfig, LayerConfig, LayerDef,
    LinearConfig, NetworkDef, Pool2dConfig,
};
use cnnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use cnnc_runtime::{Entry, Error, Network, Visit, param};
use common::Rand;
use ndarray::{Array4, ArrayD, s};

fn layer(name: &str, config: LayerConfig) -> LayerDef {
    LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    }
}

fn conv(cin: usize, cout: usize, groups: usize) -> LayerConfig {
    LayerConfig::Conv2d(Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        groups,
        ..Conv2dConfig::new(cin, cout, [3, 3])
    })
}

/// Every parametric kind, `with_batchnorm` or without (whose batch statistics make a split batch
/// differ from the whole).
fn def(with_batchnorm: bool) -> NetworkDef {
    let mut layers = vec![layer("c1", conv(3, 4, 1))];
    if with_batchnorm {
        layers.push(layer(
            "bn",
            LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(4)),
        ));
    }
    layers.extend([
        layer("r1", LayerConfig::Relu),
        layer("dw", conv(4, 4, 4)),
        layer(
            "gn",
            LayerConfig::GroupNorm(GroupNormConfig {
                num_groups: 2,
                num_channels: 4,
                eps: 1e-5,
                affine: true,
            }),
        ),
        layer("pr", LayerConfig::Prelu { num_parameters: 4 }),
        layer(
            "ct",
            LayerConfig::ConvTranspose2d(ConvTranspose2dConfig {
                in_channels: 4,
                out_channels: 4,
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                output_padding: [0, 0],
                groups: 1,
                bias: true,
                dilation: [1, 1],
            }),
        ),
        layer(
            "pool",
            LayerConfig::MaxPool2d(Pool2dConfig::new([4, 4], [4, 4], [0, 0])),
        ),
        layer("flat", LayerConfig::FLATTEN),
        layer(
            "fc",
            LayerConfig::Linear(LinearConfig {
                in_features: 64,
                out_features: 10,
                bias: true,
            }),
        ),
    ]);
    NetworkDef {
        input: [3, 8, 8],
        layers,
    }
}

fn data(batch: usize, seed: u64) -> (Array4<f32>, Vec<usize>) {
    let mut rng = Rand(seed);
    let x = Array4::from_shape_vec((batch, 3, 8, 8), rng.vec(batch * 3 * 8 * 8)).unwrap();
    let labels = (0..batch).map(|i| (i * 7 + seed as usize) % 10).collect();
    (x, labels)
}

/// Every parameter's value and gradient, by name.
fn params(net: &mut Network) -> Vec<(String, ArrayD<f32>, ArrayD<f32>)> {
    let mut all = Vec::new();
    net.visit(&mut |e| {
        if let Entry::Param { name, param } = e {
            all.push((name.to_owned(), param.value.clone(), param.grad.clone()));
        }
    });
    all
}

/// One of each parametric kind frozen, whole layers and single tensors.
const FROZEN: [&str; 7] = [
    "c1",
    "bn.weight",
    "dw.*",
    "gn.bias",
    "pr",
    "ct.weight",
    "fc.bias",
];

fn optimizers() -> [OptimizerConfig; 2] {
    [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            ..SgdConfig::new(0.05)
        }),
        OptimizerConfig::Adam(AdamConfig::adamw(0.01)),
    ]
}

#[test]
fn frozen_parameters_stay_and_the_others_train_as_if_they_were_not_updated() {
    for config in optimizers() {
        let mut frozen = Network::new(&def(true), 7).unwrap();
        let mut names = Vec::new();
        for pattern in FROZEN {
            names.extend(param::freeze(&mut frozen, pattern).unwrap());
        }
        assert_eq!(names, param::frozen(&mut frozen));
        assert_eq!(names.len(), 9, "{names:?}");
        let mut reference = Network::new(&def(true), 7).unwrap();
        let initial = params(&mut frozen);
        let (mut a, mut b) = (config.build().unwrap(), config.build().unwrap());
        for step in 0..3 {
            let (x, labels) = data(6, step);
            let la = frozen.train_step(x.view(), &labels).unwrap();
            a.step(&mut frozen).unwrap();
            let lb = reference.train_step(x.view(), &labels).unwrap();
            b.step(&mut reference).unwrap();
            assert_eq!(la.to_bits(), lb.to_bits(), "step {step}");
            // The reference updates every parameter; put the frozen ones back.
            reference.visit(&mut |e| {
                if let Entry::Param { name, param } = e
                    && names.iter().any(|n| n == name)
                {
                    let (_, value, _) = initial.iter().find(|(n, ..)| n == name).unwrap();
                    param.value.assign(value);
                }
            });
        }
        let (after, expected) = (params(&mut frozen), params(&mut reference));
        for ((name, value, grad), (_, want, _)) in after.iter().zip(&expected) {
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(value), bits(want), "{name} ({config:?})");
            if names.contains(name) {
                let (_, start, _) = initial.iter().find(|(n, ..)| n == name).unwrap();
                assert_eq!(bits(value), bits(start), "{name} moved");
                assert!(
                    grad.iter().all(|&g| g == 0.0),
                    "{name}'s gradient is written"
                );
            } else {
                assert!(grad.iter().any(|&g| g != 0.0), "{name} gets no gradient");
            }
        }
        // The optimizer's buffers of a frozen parameter were never touched.
        for (name, tensor) in a.export_state().tensors {
            if names.iter().any(|n| name.starts_with(&format!("{n}."))) {
                assert!(tensor.iter().all(|&v| v == 0.0), "{name}");
            }
        }
    }
}

#[test]
fn unfreezing_trains_again_and_a_pattern_matching_nothing_lists_the_names() {
    let mut net = Network::new(&def(false), 1).unwrap();
    assert_eq!(
        param::freeze(&mut net, "*.bias").unwrap().len(),
        5,
        "every bias"
    );
    assert_eq!(
        param::unfreeze(&mut net, "fc").unwrap(),
        ["fc.weight", "fc.bias"]
    );
    let err = param::freeze(&mut net, "layer1.*").unwrap_err();
    assert!(matches!(err, Error::NoParamMatches { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with("no parameter matches `layer1.*`; the parameters are c1.weight, c1.bias,")
            && text.contains("fc.weight, fc.bias;"),
        "{text}"
    );
    // `fc` is not a prefix of `fcx`-like names, nor a glob.
    assert!(param::freeze(&mut net, "f").is_err());
}

#[test]
fn two_accumulated_half_batches_give_the_whole_batch_gradients() {
    let (x, labels) = data(8, 3);
    let mut whole = Network::new(&def(false), 5).unwrap();
    let mut split = Network::new(&def(false), 5).unwrap();
    whole.train_step(x.view(), &labels).unwrap();
    let mut sum = GradAccumulator::new();
    for half in [0..4, 4..8] {
        split
            .train_step(x.slice(s![half.clone(), .., .., ..]), &labels[half])
            .unwrap();
        sum.add(&split, 0.5).unwrap();
    }
    sum.apply(&mut split).unwrap();
    for ((name, _, want), (_, _, got)) in params(&mut whole).iter().zip(&params(&mut split)) {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (w, g) in want.iter().zip(got) {
            assert!((w - g).abs() <= 1e-5 * scale, "{name}: {w} vs {g}");
        }
    }
    // One step of each lands on the same weights, to float rounding.
    let config = OptimizerConfig::Sgd(SgdConfig::new(0.1));
    config.build().unwrap().step(&mut whole).unwrap();
    config.build().unwrap().step(&mut split).unwrap();
    for ((name, want, _), (_, got, _)) in params(&mut whole).iter().zip(&params(&mut split)) {
        for (w, g) in want.iter().zip(got) {
            assert!(
                (w - g).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}: {w} vs {g}"
            );
        }
    }
}
