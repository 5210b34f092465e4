//! Graph-model parity with PyTorch: `SmallGraph` of `tools/make_fixtures.py` (a residual block,
//! a downsampling block with a projection shortcut, a channel concat and a squeeze-and-excitation
//! gate, `tests/fixtures/graph.safetensors`) written out as a `NetworkDef` with inputs, loaded by
//! its state_dict names, gives PyTorch's logits within 1e-5 in eval and train mode, its loss, its
//! gradients within 1e-4 relative and its batchnorm statistics; and training it is bit-identical
//! whatever the thread count.

mod common;

use cnnc_runtime::config::{
    BatchNorm2dConfig, ConcatConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef,
    Source,
};
use cnnc_runtime::{Entry, Mode, Network, Visit};
use common::fixture::{Fixture, assert_close};
use common::{Rand, Record};
use ndarray::Array4;

/// SmallGraph, layer by layer, under PyTorch's state_dict names.
fn small_graph() -> NetworkDef {
    let conv = |cin, cout, k: usize, stride: usize, bias| {
        LayerConfig::Conv2d(Conv2dConfig {
            stride: [stride, stride],
            padding: [k / 2, k / 2],
            padding_end: [k / 2, k / 2],
            bias,
            ..Conv2dConfig::new(cin, cout, [k, k])
        })
    };
    let bn = |n| LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(n));
    let pool = || LayerConfig::AdaptiveAvgPool2d {
        output_size: [1, 1],
    };
    let l = Source::Layer;
    let layers: Vec<(&str, LayerConfig, Vec<Source>)> = vec![
        ("conv1", conv(3, 8, 3, 1, false), vec![]), // 0
        ("bn1", bn(8), vec![]),
        ("relu", LayerConfig::Relu, vec![]), // 2
        ("block.conv1", conv(8, 8, 3, 1, false), vec![]),
        ("block.bn1", bn(8), vec![]),
        ("block.relu", LayerConfig::Relu, vec![]),
        ("block.conv2", conv(8, 8, 3, 1, false), vec![]),
        ("block.bn2", bn(8), vec![]), // 7
        ("block.add", LayerConfig::Add, vec![l(7), l(2)]),
        ("block.relu_out", LayerConfig::Relu, vec![]), // 9: read three times
        ("down.conv1", conv(8, 16, 3, 2, false), vec![]),
        ("down.bn1", bn(16), vec![]),
        ("down.relu", LayerConfig::Relu, vec![]),
        ("down.conv2", conv(16, 16, 3, 1, false), vec![]),
        ("down.bn2", bn(16), vec![]), // 14
        ("down.downsample.0", conv(8, 16, 1, 2, false), vec![l(9)]),
        ("down.downsample.1", bn(16), vec![]), // 16
        ("down.add", LayerConfig::Add, vec![l(14), l(16)]),
        ("down.relu_out", LayerConfig::Relu, vec![]), // 18
        ("side", conv(8, 8, 1, 2, true), vec![l(9)]), // 19
        (
            "cat",
            LayerConfig::Concat(ConcatConfig { dim: 1 }),
            vec![l(18), l(19)],
        ), // 20: [24, 4, 4]
        ("se.avgpool", pool(), vec![]),
        ("se.fc1", conv(24, 6, 1, 1, true), vec![]),
        ("se.relu", LayerConfig::Relu, vec![]), // fused into se.fc1
        ("se.fc2", conv(6, 24, 1, 1, true), vec![]),
        ("se.sigmoid", LayerConfig::Sigmoid, vec![]), // 25
        ("se.mul", LayerConfig::Mul, vec![l(25), l(20)]),
        ("avgpool", pool(), vec![]),
        ("flatten", LayerConfig::FLATTEN, vec![]),
        (
            "fc",
            LayerConfig::Linear(LinearConfig {
                in_features: 24,
                out_features: 10,
                bias: true,
            }),
            vec![],
        ),
    ];
    NetworkDef {
        input: [3, 8, 8],
        layers: layers
            .into_iter()
            .map(|(name, config, inputs)| LayerDef {
                name: name.to_owned(),
                config,
                inputs,
            })
            .collect(),
    }
}

/// The network with the fixture's state_dict, every entry matched by name both ways.
fn loaded(f: &Fixture) -> Network {
    let mut net = Network::new(&small_graph(), 1).unwrap();
    let mut names = Vec::new();
    net.visit(&mut |e| {
        let name = match e {
            Entry::Param { name, param } => {
                let value = f.array(&format!("state.{name}"));
                assert_eq!(value.shape(), param.value.shape(), "{name}");
                param.value = value;
                name
            }
            Entry::Buffer { name, value } => {
                let loaded = f.array(&format!("state.{name}"));
                assert_eq!(loaded.shape(), value.shape(), "{name}");
                *value = loaded;
                name
            }
            Entry::Counter { name, value } => {
                *value = f.i64(&format!("state.{name}"))[0];
                name
            }
        };
        names.push(format!("state.{name}"));
    });
    for name in &names {
        assert!(f.has(name), "{name} is not in PyTorch's state_dict");
    }
    // Every tensor PyTorch saved was loaded: 14 convolution and linear weights and biases, and
    // 6 batchnorms of 5 entries each.
    assert_eq!(names.len(), 14 + 6 * 5, "{names:?}");
    net
}

fn batch(f: &Fixture) -> (Array4<f32>, Vec<usize>) {
    let (x, shape) = f.f32("input");
    let x = Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), x).unwrap();
    let labels = f.i64("labels").iter().map(|&l| l as usize).collect();
    (x, labels)
}

#[test]
fn logits_match_pytorch_in_eval_and_train_mode() {
    let f = Fixture::load("graph.safetensors");
    let mut net = loaded(&f);
    let (x, _) = batch(&f);
    let got: Vec<f32> = net
        .forward(x.view(), Mode::Eval)
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_close("logits (eval)", &got, &f.f32("logits_eval").0, 1e-5, 0.0);
    let got: Vec<f32> = net
        .forward(x.view(), Mode::Train)
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_close("logits (train)", &got, &f.f32("logits").0, 1e-5, 0.0);
}

#[test]
fn pytorchs_state_dict_file_loads_strictly_and_saves_back_under_the_same_names() {
    use cnnc_runtime::weights;
    let f = Fixture::load("graph.safetensors");
    let mut net = Network::new(&small_graph(), 9).unwrap();
    weights::load(
        &mut net,
        &common::fixture::path("graph_state_dict.safetensors"),
    )
    .unwrap();
    let (x, _) = batch(&f);
    let got: Vec<f32> = net
        .forward(x.view(), Mode::Eval)
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_close("logits (eval)", &got, &f.f32("logits_eval").0, 1e-5, 0.0);
    // Saved and loaded into a fresh network: the same state, bit for bit.
    let saved = weights::serialize(&weights::state_dict(&mut net), &Default::default());
    let mut fresh = Network::new(&small_graph(), 10).unwrap();
    weights::load_bytes(&mut fresh, &saved, std::path::Path::new("saved")).unwrap();
    let again = fresh.forward(x.view(), Mode::Eval).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(again.as_slice().unwrap()), bits(&got));
}

#[test]
fn loss_gradients_and_batchnorm_statistics_match_pytorch() {
    let f = Fixture::load("graph.safetensors");
    let mut net = loaded(&f);
    let (x, labels) = batch(&f);
    let loss = net.train_step(x.view(), &labels).unwrap();
    assert_close("loss", &[loss], &f.f32("loss").0, 1e-5, 1e-6);
    let (mut grads, mut buffers) = (0, 0);
    net.visit(&mut |e| match e {
        Entry::Param { name, param } => {
            let (want, shape) = f.f32(&format!("grad.{name}"));
            assert_eq!(param.grad.shape(), &shape[..], "{name}");
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let got: Vec<f32> = param.grad.iter().copied().collect();
            assert_close(&format!("grad.{name}"), &got, &want, 1e-5 * scale, 1e-4);
            grads += 1;
        }
        Entry::Buffer { name, value } => {
            let got: Vec<f32> = value.iter().copied().collect();
            assert_close(name, &got, &f.f32(&format!("after.{name}")).0, 1e-6, 1e-5);
            buffers += 1;
        }
        Entry::Counter { value, .. } => assert_eq!(*value, 4),
    });
    assert_eq!((grads, buffers), (14 + 6 * 2, 6 * 2));
}

/// Three SGD steps from the fixture's weights on random batches, as bits.
fn train(threads: usize, batch: usize) -> Vec<u32> {
    let f = Fixture::load("graph.safetensors");
    let mut rng = Rand(batch as u64);
    let data = move |step: usize| {
        let x = Array4::from_shape_vec((batch, 3, 8, 8), rng.vec(batch * 3 * 64)).unwrap();
        let labels: Vec<usize> = (0..batch).map(|i| (i * 7 + step) % 10).collect();
        (x, labels)
    };
    let make = || loaded(&f);
    common::sgd_bits(
        threads,
        make,
        3,
        data,
        Record::GradsAndBuffers,
        |net, data, bits| {
            // Inference from `&self` after the steps, in the pool's scratch memory.
            let (x, _) = data(3);
            bits.extend(net.predict(x.view()).unwrap().iter().map(|v| v.to_bits()));
        },
    )
}

#[test]
fn training_a_graph_is_bit_identical_whatever_the_thread_count() {
    for batch in [1, 6] {
        let one = train(1, batch);
        assert_eq!(one, train(2, batch), "batch {batch}: 1 vs 2 threads");
        assert_eq!(one, train(3, batch), "batch {batch}: 1 vs 3 threads");
    }
}
