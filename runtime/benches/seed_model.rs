//! Throughput of the seed model (PyTorch `CustomCNN`) in the dynamic executor: a training step
//! (forward + loss + backward, batch 64) and inference at batch 64 and 256, reported by criterion
//! as images/s ("elem/s"). For the side-by-side comparison with PyTorch, see `bench/compare.py`
//! and `docs/PERFORMANCE.md` (PyTorch 2.15, 2 threads, quiet machine: ~3,200 training images/s,
//! ~6,400 inference images/s at batch 64, ~3,900 at batch 256).
//!
//! `cargo bench -p cnnc-runtime --bench seed_model`

use cnnc_runtime::config::{
    Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig,
};
use cnnc_runtime::{Mode, Network};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;

fn custom_cnn() -> NetworkDef {
    let layer = |name: &str, config| LayerDef {
        name: name.to_owned(),
        config,
    };
    let conv = |cin, cout| {
        LayerConfig::Conv2d(Conv2dConfig {
            in_channels: cin,
            out_channels: cout,
            kernel_size: [5, 5],
            stride: [1, 1],
            padding: [2, 2],
            dilation: [1, 1],
            bias: true,
        })
    };
    let pool = || {
        LayerConfig::MaxPool2d(Pool2dConfig {
            kernel_size: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            ceil_mode: false,
        })
    };
    let linear = |i, o| {
        LayerConfig::Linear(LinearConfig {
            in_features: i,
            out_features: o,
            bias: true,
        })
    };
    NetworkDef {
        input: [3, 32, 32],
        layers: vec![
            layer("layer1.0", conv(3, 32)),
            layer("layer1.1", LayerConfig::Relu),
            layer("layer1.2", pool()),
            layer("layer2.0", conv(32, 32)),
            layer("layer2.1", LayerConfig::Relu),
            layer("layer2.2", pool()),
            layer("layer3.0", conv(32, 64)),
            layer("layer3.1", LayerConfig::Relu),
            layer("layer3.2", pool()),
            layer("flatten", LayerConfig::Flatten),
            layer("fc1", linear(1024, 64)),
            layer("fc1_relu", LayerConfig::Relu),
            layer("fc2", linear(64, 10)),
        ],
    }
}

/// A deterministic batch of `n` CIFAR-shaped images in `[-1, 1)` and labels.
fn batch(n: usize) -> (Array4<f32>, Vec<usize>) {
    let x = Array4::from_shape_fn((n, 3, 32, 32), |(i, c, h, w)| {
        (((i * 7919 + c * 104_729 + h * 31 + w * 17) % 1000) as f32) / 500.0 - 1.0
    });
    (x, (0..n).map(|i| i % 10).collect())
}

fn seed_model(c: &mut Criterion) {
    let mut group = c.benchmark_group("custom_cnn");
    group.sample_size(20);
    let mut net = Network::new(&custom_cnn(), 0).expect("the seed model is valid");

    let (x, labels) = batch(64);
    group.throughput(Throughput::Elements(64));
    group.bench_function("train_step_b64", |b| {
        b.iter(|| net.train_step(x.view(), &labels).expect("train step"))
    });
    group.bench_function("infer_b64", |b| {
        b.iter(|| {
            net.forward_view(x.view(), Mode::Eval)
                .map(|l| l[[0, 0]])
                .expect("forward")
        })
    });
    let (x, _) = batch(256);
    group.throughput(Throughput::Elements(256));
    group.bench_function("infer_b256", |b| {
        b.iter(|| {
            net.forward_view(x.view(), Mode::Eval)
                .map(|l| l[[0, 0]])
                .expect("forward")
        })
    });
    let (x, _) = batch(1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("infer_b1", |b| {
        b.iter(|| {
            net.forward_view(x.view(), Mode::Eval)
                .map(|l| l[[0, 0]])
                .expect("forward")
        })
    });
    group.finish();
}

criterion_group!(benches, seed_model);
criterion_main!(benches);
