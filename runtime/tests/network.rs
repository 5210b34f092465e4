//! The dynamic executor: determinism whatever the thread count, seeded init, train/eval
//! behaviour of dropout and batchnorm, saving and restoring dropout streams, buffer reuse across batch sizes, and errors (never panics)
//! on bad definitions and inputs.

mod common;

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, ConvTranspose2dConfig, GroupNormConfig, LayerConfig, LayerDef,
    LinearConfig, NetworkDef, Pool2dConfig, UpsampleConfig, UpsampleMode,
};
use cnnc_runtime::init::dropout_rng;
use cnnc_runtime::layers::{BatchNorm2d, Dropout};
use cnnc_runtime::{Entry, Error, Layer, Mode, Network, Shape, Visit};
use common::{Rand, Record};
use ndarray::{Array2, Array4};

fn layer(name: &str, config: LayerConfig) -> LayerDef {
    LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    }
}

fn conv(cin: usize, cout: usize, k: usize, pad: usize) -> LayerConfig {
    LayerConfig::Conv2d(Conv2dConfig {
        padding: [pad, pad],
        padding_end: [pad, pad],
        ..Conv2dConfig::new(cin, cout, [k, k])
    })
}

fn max_pool(k: usize) -> LayerConfig {
    LayerConfig::MaxPool2d(Pool2dConfig::new([k, k], [k, k], [0, 0]))
}

fn linear(i: usize, o: usize) -> LayerConfig {
    LayerConfig::Linear(LinearConfig {
        in_features: i,
        out_features: o,
        bias: true,
    })
}

/// The seed model's shape at a reduced size, plus batchnorm and dropout.
fn net_def() -> NetworkDef {
    NetworkDef {
        input: [3, 16, 16],
        layers: vec![
            layer("c1", conv(3, 8, 5, 2)),
            layer("bn", LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(8))),
            layer("r1", LayerConfig::Relu),
            layer("p1", max_pool(2)),
            layer("c2", conv(8, 16, 3, 1)),
            layer("r2", LayerConfig::Relu),
            layer("p2", max_pool(2)),
            layer("flat", LayerConfig::FLATTEN),
            layer("fc1", linear(256, 32)),
            layer("drop", LayerConfig::Dropout { p: 0.3 }),
            layer("fc2", linear(32, 10)),
        ],
    }
}

/// [`net_def`] without its dropout layer.
fn net_def_without_dropout() -> NetworkDef {
    let mut def = net_def();
    def.layers
        .retain(|l| !matches!(l.config, LayerConfig::Dropout { .. }));
    def
}

fn data(batch: usize, seed: u64) -> (Array4<f32>, Vec<usize>) {
    let mut rng = Rand(seed);
    let x = Array4::from_shape_vec((batch, 3, 16, 16), rng.vec(batch * 3 * 16 * 16)).unwrap();
    let labels = (0..batch).map(|i| (i * 7 + seed as usize) % 10).collect();
    (x, labels)
}

/// Everything a model holds, as bits: parameters, gradients, buffers, counters.
fn snapshot(net: &mut Network) -> Vec<u32> {
    let mut bits = Vec::new();
    net.visit(&mut |e| match e {
        Entry::Param { param, .. } => {
            bits.extend(param.value.iter().map(|v| v.to_bits()));
            bits.extend(param.grad.iter().map(|v| v.to_bits()));
        }
        Entry::Buffer { value, .. } => bits.extend(value.iter().map(|v| v.to_bits())),
        Entry::Counter { value, .. } => bits.push(*value as u32),
    });
    bits
}

/// An encoder-decoder with the resampling layers: pool down, upsample (nearest by a factor,
/// bilinear to a size) and a transposed convolution back, adaptive pools to a non-divisible
/// size and to one pixel.
fn resample_def() -> NetworkDef {
    NetworkDef {
        input: [3, 16, 16],
        layers: vec![
            layer("c1", conv(3, 8, 3, 1)),
            layer("r1", LayerConfig::Relu),
            layer("p1", max_pool(2)),
            layer("up", LayerConfig::Upsample(UpsampleConfig::nearest([2, 3]))),
            layer(
                "bilinear",
                LayerConfig::Upsample(UpsampleConfig {
                    size: Some([13, 19]),
                    scale_factor: None,
                    mode: UpsampleMode::Bilinear,
                    align_corners: None,
                }),
            ),
            layer("c2", conv(8, 8, 3, 1)),
            layer(
                "ct",
                LayerConfig::ConvTranspose2d(ConvTranspose2dConfig {
                    in_channels: 8,
                    out_channels: 8,
                    kernel_size: [3, 3],
                    stride: [2, 2],
                    padding: [1, 1],
                    output_padding: [1, 1],
                    groups: 1,
                    bias: true,
                    dilation: [1, 1],
                }),
            ),
            layer(
                "amax",
                LayerConfig::AdaptiveMaxPool2d {
                    output_size: [5, 7],
                },
            ),
            layer(
                "aavg",
                LayerConfig::AdaptiveAvgPool2d {
                    output_size: [1, 1],
                },
            ),
            layer("flat", LayerConfig::FLATTEN),
            layer("fc", linear(8, 10)),
        ],
    }
}

/// A few steps of plain SGD; returns the losses and logits as bits plus the final state.
fn train(threads: usize, batch: usize) -> Vec<u32> {
    train_def(&net_def(), threads, batch)
}

/// [`train`] for the network `def`: three steps, then the eval logits, `&self` inference
/// (scratch memory per thread) and everything the model holds.
fn train_def(def: &NetworkDef, threads: usize, batch: usize) -> Vec<u32> {
    let make = || Network::new(def, 42).unwrap();
    let data = |step: usize| data(batch, step as u64);
    common::sgd_bits(threads, make, 3, data, Record::Loss, |net, data, bits| {
        let (x, _) = data(9);
        let eval = net.forward(x.view(), Mode::Eval).unwrap();
        bits.extend(eval.iter().map(|v| v.to_bits()));
        bits.extend(net.predict(x.view()).unwrap().iter().map(|v| v.to_bits()));
        bits.extend(snapshot(net));
    })
}

#[test]
fn bit_identical_whatever_the_thread_count() {
    for batch in [1, 5, 64] {
        let one = train(1, batch);
        assert_eq!(one, train(2, batch), "batch {batch}: 1 vs 2 threads");
        assert_eq!(one, train(3, batch), "batch {batch}: 1 vs 3 threads");
    }
}

#[test]
fn resampling_layers_are_bit_identical_whatever_the_thread_count() {
    let def = resample_def();
    for batch in [1, 5, 17] {
        let one = train_def(&def, 1, batch);
        assert_eq!(
            one,
            train_def(&def, 2, batch),
            "batch {batch}: 1 vs 2 threads"
        );
        assert_eq!(
            one,
            train_def(&def, 3, batch),
            "batch {batch}: 1 vs 3 threads"
        );
    }
}

/// The normalisation options: batch norm without affine parameters and with a cumulative
/// average, batch norm without running statistics, group norm, and a one-dim flatten.
fn normalisation_def() -> NetworkDef {
    NetworkDef {
        input: [3, 16, 16],
        layers: vec![
            layer("c1", conv(3, 6, 3, 1)),
            layer(
                "bn1",
                LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                    affine: false,
                    momentum: None,
                    ..BatchNorm2dConfig::new(6)
                }),
            ),
            layer(
                "gn",
                LayerConfig::GroupNorm(GroupNormConfig {
                    num_groups: 3,
                    num_channels: 6,
                    eps: 1e-5,
                    affine: true,
                }),
            ),
            layer("r1", LayerConfig::Relu),
            layer(
                "same",
                LayerConfig::Flatten {
                    start_dim: 2,
                    end_dim: 2,
                },
            ),
            layer(
                "bn2",
                LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                    track_running_stats: false,
                    ..BatchNorm2dConfig::new(6)
                }),
            ),
            layer("p1", max_pool(2)),
            layer("flat", LayerConfig::FLATTEN),
            layer("fc", linear(384, 10)),
        ],
    }
}

#[test]
fn normalisation_options_are_bit_identical_and_hold_pytorchs_tensors() {
    let def = normalisation_def();
    for batch in [1, 5, 17] {
        let one = train_def(&def, 1, batch);
        assert_eq!(
            one,
            train_def(&def, 2, batch),
            "batch {batch}: 1 vs 2 threads"
        );
        assert_eq!(
            one,
            train_def(&def, 3, batch),
            "batch {batch}: 1 vs 3 threads"
        );
    }
    let mut net = Network::new(&def, 1).unwrap();
    let mut names = Vec::new();
    net.visit(&mut |e| {
        names.push(match e {
            Entry::Param { name, .. }
            | Entry::Buffer { name, .. }
            | Entry::Counter { name, .. } => name.to_owned(),
        })
    });
    let expected: Vec<String> = def
        .layers
        .iter()
        .flat_map(|l| l.config.tensors(&l.name))
        .map(|t| t.name)
        .collect();
    assert_eq!(names, expected);
    assert!(names.contains(&"bn1.num_batches_tracked".to_owned()));
    // bn1 has no affine parameters, bn2 no running statistics.
    for absent in [
        "bn1.weight",
        "bn1.bias",
        "bn2.running_mean",
        "bn2.num_batches_tracked",
    ] {
        assert!(!names.iter().any(|n| n == absent), "{absent}");
    }
    assert!(names.iter().any(|n| n == "bn2.weight"));
}

#[test]
fn cumulative_batchnorm_averages_every_batch_equally() {
    // momentum None: after k batches the running mean is the plain mean of the k batch means.
    let config = BatchNorm2dConfig {
        momentum: None,
        ..BatchNorm2dConfig::new(1)
    };
    let dims = Shape::Chw([1, 1, 2]);
    let mut bn = BatchNorm2d::new("bn", &config, dims).unwrap();
    let mut y = [0.0; 2];
    for (k, x) in [[1.0, 3.0], [5.0, 7.0], [0.0, 0.0]].iter().enumerate() {
        bn.forward(x, &mut y, 1, Mode::Train).unwrap();
        assert_eq!(bn.num_batches_tracked, k as i64 + 1);
    }
    // Batch means 2, 6, 0: their average is 8 / 3.
    assert!(
        (bn.running_mean[0] - 8.0 / 3.0).abs() < 1e-6,
        "{}",
        bn.running_mean[0]
    );
    // Eval without running statistics normalises by the batch, as in training.
    let untracked = BatchNorm2dConfig {
        track_running_stats: false,
        ..BatchNorm2dConfig::new(1)
    };
    let mut bn = BatchNorm2d::new("bn", &untracked, dims).unwrap();
    bn.forward(&[1.0, 3.0], &mut y, 1, Mode::Eval).unwrap();
    assert!(
        (y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4,
        "{y:?}"
    );
    assert_eq!(bn.num_batches_tracked, 0);
}

#[test]
fn same_seed_same_model_and_pytorch_init_bounds() {
    let mut a = Network::new(&net_def(), 7).unwrap();
    let mut b = Network::new(&net_def(), 7).unwrap();
    let mut c = Network::new(&net_def(), 8).unwrap();
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
    assert_ne!(snapshot(&mut a), snapshot(&mut c));
    let mut seen = Vec::new();
    a.visit(&mut |e| match e {
        Entry::Param { name, param } => {
            let fan_in = match name {
                "c1.weight" | "c1.bias" => 3 * 25,
                "c2.weight" | "c2.bias" => 8 * 9,
                "fc1.weight" | "fc1.bias" => 256,
                "fc2.weight" | "fc2.bias" => 32,
                "bn.weight" => {
                    assert!(param.value.iter().all(|&v| v == 1.0));
                    return seen.push(name.to_owned());
                }
                "bn.bias" => {
                    assert!(param.value.iter().all(|&v| v == 0.0));
                    return seen.push(name.to_owned());
                }
                other => panic!("unexpected parameter {other}"),
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(param.value.iter().all(|v| v.abs() <= bound), "{name}");
            // Spread over the whole range, not a fraction of it.
            let max = param.value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.5 * bound, "{name}: max {max} of bound {bound}");
            seen.push(name.to_owned());
        }
        Entry::Buffer { name, value } => {
            let want = if name.ends_with("running_mean") {
                0.0
            } else {
                1.0
            };
            assert!(value.iter().all(|&v| v == want), "{name}");
            seen.push(name.to_owned());
        }
        Entry::Counter { name, value } => {
            assert_eq!(*value, 0);
            seen.push(name.to_owned());
        }
    });
    let want = [
        "c1.weight",
        "c1.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
        "c2.weight",
        "c2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ];
    assert_eq!(seen, want);
}

#[test]
fn dropout_scales_in_training_and_is_identity_in_eval() {
    let dims = Shape::Flat(10_000);
    let mut drop = Dropout::new("drop", dims, 0.25, dropout_rng(3, 0)).unwrap();
    let x = vec![1.0f32; 10_000];
    let mut y = vec![0.0; 10_000];
    drop.forward(&x, &mut y, 1, Mode::Eval).unwrap();
    assert_eq!(x, y);
    drop.forward(&x, &mut y, 1, Mode::Train).unwrap();
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    assert!(
        (7_200..7_800).contains(&kept),
        "kept {kept} of 10000 at p = 0.25"
    );
    let first = y.clone();
    drop.forward(&x, &mut y, 1, Mode::Train).unwrap();
    assert_ne!(first, y, "a new mask every training step");
    let mut dx = vec![0.0; 10_000];
    drop.backward(&x, &y, &x, Some(&mut dx), 1).unwrap();
    assert_eq!(dx, y, "backward applies the same mask");
    let mut all = Dropout::new("drop", dims, 1.0, dropout_rng(3, 0)).unwrap();
    all.forward(&x, &mut y, 1, Mode::Train).unwrap();
    assert!(
        y.iter().all(|&v| v == 0.0),
        "p = 1 zeroes everything, like PyTorch"
    );
    assert!(Dropout::new("drop", dims, 1.5, dropout_rng(3, 0)).is_err());
}

/// [`net_def`] with a second dropout layer, so that restoring has two streams to match by name.
fn two_dropout_def() -> NetworkDef {
    let mut def = net_def();
    def.layers
        .insert(8, layer("drop0", LayerConfig::Dropout { p: 0.5 }));
    def
}

/// Copies every parameter, buffer and counter of `from` into `to` (same definition).
fn copy_state(from: &mut Network, to: &mut Network) {
    let mut values = Vec::new();
    from.visit(&mut |e| match e {
        Entry::Param { param, .. } => values.push(param.value.clone()),
        Entry::Buffer { value, .. } => values.push(value.clone()),
        Entry::Counter { value, .. } => values.push(ndarray::arr0(*value as f32).into_dyn()),
    });
    let mut values = values.into_iter();
    to.visit(&mut |e| {
        let v = values.next().unwrap();
        match e {
            Entry::Param { param, .. } => param.value.assign(&v),
            Entry::Buffer { value, .. } => value.assign(&v),
            Entry::Counter { value, .. } => *value = v.sum() as i64,
        }
    });
}

#[test]
fn restored_dropout_streams_continue_bit_identically() {
    let def = two_dropout_def();
    let mut trained = Network::new(&def, 7).unwrap();
    assert!(
        Network::new(&net_def_without_dropout(), 7)
            .unwrap()
            .rng_states()
            .is_empty()
    );
    let fresh: Vec<(String, u128)> = trained.rng_states();
    assert_eq!(
        fresh,
        vec![("drop0".to_owned(), 0), ("drop".to_owned(), 0)],
        "layer order, from the start of each stream"
    );
    for step in 0..2 {
        let (x, labels) = data(5, step);
        trained.train_step(x.view(), &labels).unwrap();
    }
    let states = trained.rng_states();
    assert!(states.iter().all(|(_, pos)| *pos > 0), "{states:?}");

    let (x, labels) = data(5, 2);
    let mut restored = Network::new(&def, 7).unwrap();
    copy_state(&mut trained, &mut restored);
    let mut restarted = Network::new(&def, 7).unwrap();
    copy_state(&mut trained, &mut restarted);
    restored.restore_rng_states(&states).unwrap();
    assert_eq!(restored.rng_states(), states);
    let want = trained.train_step(x.view(), &labels).unwrap();
    assert_eq!(
        restored.train_step(x.view(), &labels).unwrap().to_bits(),
        want.to_bits()
    );
    assert_eq!(snapshot(&mut restored), snapshot(&mut trained));
    // Without the positions, the masks restart and the step differs: the test can fail.
    restarted.train_step(x.view(), &labels).unwrap();
    assert_ne!(snapshot(&mut restarted), snapshot(&mut trained));
}

#[test]
fn restoring_dropout_streams_refuses_unknown_missing_and_repeated_names() {
    let mut net = Network::new(&two_dropout_def(), 7).unwrap();
    let pos = |name: &str, p: u128| (name.to_owned(), p);
    let message = |states: &[(String, u128)]| {
        let mut net = Network::new(&two_dropout_def(), 7).unwrap();
        let err = net.restore_rng_states(states).unwrap_err().to_string();
        assert_eq!(
            net.rng_states(),
            vec![pos("drop0", 0), pos("drop", 0)],
            "nothing moved"
        );
        err
    };
    let unknown = message(&[
        pos("drop0", 4),
        pos("drop", 4),
        pos("fc1", 4),
        pos("ghost", 4),
    ]);
    assert!(
        unknown.contains("unknown layers") && unknown.contains("`fc1`, `ghost`"),
        "{unknown}"
    );
    let missing = message(&[pos("drop", 4)]);
    assert!(missing.contains("layer `drop0`"), "{missing}");
    let twice = message(&[pos("drop0", 4), pos("drop0", 8), pos("drop", 4)]);
    assert!(twice.contains("given twice"), "{twice}");
    let past_end = net
        .restore_rng_states(&[pos("drop0", 1 << 68), pos("drop", 0)])
        .unwrap_err()
        .to_string();
    assert!(past_end.contains("past the stream's end"), "{past_end}");
    let mut relu = cnnc_runtime::layers::Relu::new("r", Shape::Flat(2));
    assert_eq!(relu.rng_state(), None);
    assert!(relu.set_rng_state(3).is_err());
}

#[test]
fn batchnorm_train_uses_batch_stats_and_updates_running_stats_eval_uses_them() {
    let config = BatchNorm2dConfig::new(2);
    let dims = Shape::Chw([2, 1, 2]);
    let mut bn = BatchNorm2d::new("bn", &config, dims).unwrap();
    // Two samples, pixel-major: channel 0 sees 1, 2, 3, 6; channel 1 sees 0, 0, 4, 4.
    let x = [1.0, 0.0, 2.0, 0.0, 3.0, 4.0, 6.0, 4.0];
    let mut y = [0.0; 8];
    bn.forward(&x, &mut y, 2, Mode::Train).unwrap();
    // Channel 0: mean 3, biased var 3.5, unbiased 14/3; channel 1: mean 2, var 4, unbiased 16/3.
    let inv0 = 1.0 / (3.5f32 + 1e-5).sqrt();
    assert!((y[0] - (1.0 - 3.0) * inv0).abs() < 1e-6);
    assert!((y[6] - (6.0 - 3.0) * inv0).abs() < 1e-6);
    assert!((bn.running_mean[0] - 0.3).abs() < 1e-6 && (bn.running_mean[1] - 0.2).abs() < 1e-6);
    assert!((bn.running_var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
    assert!((bn.running_var[1] - (0.9 + 0.1 * 16.0 / 3.0)).abs() < 1e-6);
    assert_eq!(bn.num_batches_tracked, 1);
    bn.forward(&x, &mut y, 2, Mode::Eval).unwrap();
    let rv0 = bn.running_var[0];
    assert!((y[0] - (1.0 - 0.3) / (rv0 + 1e-5).sqrt()).abs() < 1e-6);
    assert_eq!(bn.num_batches_tracked, 1, "eval leaves the counter alone");
    // One value per channel cannot be normalised in training (PyTorch raises too).
    let mut one = [0.0; 2];
    let single = Shape::Chw([2, 1, 1]);
    let mut bn1 = BatchNorm2d::new("bn", &config, single).unwrap();
    assert!(matches!(
        bn1.forward(&[1.0, 2.0], &mut one, 1, Mode::Train),
        Err(Error::Config { .. })
    ));
}

#[test]
fn smaller_batches_reuse_buffers_and_agree_with_a_fresh_network() {
    let (x, _) = data(6, 1);
    let mut big = Network::new(&net_def(), 5).unwrap();
    big.forward(data(32, 2).0.view(), Mode::Eval).unwrap();
    let reused = big.forward(x.view(), Mode::Eval).unwrap();
    let fresh = Network::new(&net_def(), 5)
        .unwrap()
        .forward(x.view(), Mode::Eval)
        .unwrap();
    assert_eq!(reused, fresh);
    assert_eq!(big.logits().unwrap().dim(), (6, 10));
    let empty = Array4::<f32>::zeros((0, 3, 16, 16));
    assert_eq!(
        big.forward(empty.view(), Mode::Eval).unwrap().dim(),
        (0, 10)
    );
}

#[test]
fn bad_definitions_and_inputs_are_errors_not_panics() {
    let mut bad = net_def();
    bad.layers[4] = layer("c2", conv(7, 16, 3, 1));
    assert!(matches!(Network::new(&bad, 0), Err(Error::Config { layer, .. }) if layer == "c2"));
    let mut bad = net_def();
    bad.layers[8] = layer("fc1", linear(255, 32));
    assert!(matches!(Network::new(&bad, 0), Err(Error::Config { layer, .. }) if layer == "fc1"));
    let mut bad = net_def();
    bad.layers[0] = layer("c1", conv(3, 8, 40, 0));
    assert!(matches!(Network::new(&bad, 0), Err(Error::Config { layer, .. }) if layer == "c1"));
    let mut bad = net_def();
    bad.layers.truncate(6);
    assert!(Network::new(&bad, 0).is_err(), "image output");
    let mut bad = net_def();
    bad.layers[3] = layer(
        "p1",
        LayerConfig::MaxPool2d(Pool2dConfig::new([2, 2], [0, 2], [0, 0])),
    );
    assert!(Network::new(&bad, 0).is_err(), "zero stride");
    bad.layers[3] = layer(
        "p1",
        LayerConfig::AvgPool2d(Pool2dConfig::new([2, 2], [2, 2], [2, 2])),
    );
    assert!(
        Network::new(&bad, 0).is_err(),
        "padding over half the kernel"
    );
    assert!(
        Network::new(
            &NetworkDef {
                input: [3, 16, 16],
                layers: vec![]
            },
            0
        )
        .is_err()
    );
    assert!(
        Network::new(
            &NetworkDef {
                input: [0, 16, 16],
                layers: net_def().layers
            },
            0
        )
        .is_err()
    );

    let mut net = Network::new(&net_def(), 0).unwrap();
    assert!(matches!(
        net.backward(Array2::zeros((1, 10)).view()),
        Err(Error::State(_))
    ));
    let wrong = Array4::<f32>::zeros((2, 3, 16, 15));
    assert!(matches!(
        net.forward(wrong.view(), Mode::Eval),
        Err(Error::Shape { .. })
    ));
    let (x, _) = data(2, 0);
    assert!(matches!(
        net.train_step(x.view(), &[0, 10]),
        Err(Error::Label { label: 10, .. })
    ));
    assert!(matches!(
        net.train_step(x.view(), &[0]),
        Err(Error::LabelCount {
            expected: 2,
            found: 1
        })
    ));
    net.forward(x.view(), Mode::Train).unwrap();
    assert!(matches!(
        net.backward(Array2::zeros((3, 10)).view()),
        Err(Error::Shape { .. })
    ));
    // A parameter replaced with the wrong shape is reported, not indexed out of bounds.
    net.visit(&mut |e| {
        if let Entry::Param {
            name: "fc2.weight",
            param,
        } = e
        {
            param.value = ndarray::ArrayD::zeros(vec![3, 3]);
        }
    });
    assert!(matches!(
        net.forward(x.view(), Mode::Eval),
        Err(Error::Shape { .. })
    ));
    // Short buffers handed to a layer directly are errors too.
    let mut relu = cnnc_runtime::layers::Relu::new("r", Shape::Flat(4));
    assert!(
        relu.forward(&[0.0; 3], &mut [0.0; 4], 1, Mode::Eval)
            .is_err()
    );
}
