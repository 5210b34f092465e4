//! Throughput of the seed model (PyTorch `CustomCNN`) in the dynamic executor: a training step
//! (forward + loss + backward, batch 64) and inference at batch 64 and 256, reported by criterion
//! as images/s ("elem/s"). For the side-by-side comparison with PyTorch, see `bench/compare.py`
//! and `docs/PERFORMANCE.md` (PyTorch 2.15, 2 threads, on the project's machine: 2,000-3,450
//! training images/s, ~6,200-6,900 inference images/s at batch 64, ~3,500-4,200 at batch 256).
//!
//! `cargo bench -p cnnc-runtime --bench seed_model`

#[path = "../tests/common/seed.rs"]
mod seed;

use cnnc_runtime::{Mode, Network};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;
use seed::custom_cnn;

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
