//! Times the training forward and the backward of ResNet-20's convolutions at batch 64, one
//! layer of each kind, and of the seed's (CustomCNN's) three, for A/B comparisons between
//! builds (they call only [`Layer::forward`] and [`Layer::backward`], so the same file builds
//! against older code): the least of 40 passes, in the thread's CPU time with one thread (a
//! loaded machine's preemptions drop out) and in wall time with more.
//! `cargo test -p cnnc-runtime --release --test conv_timing -- --ignored --nocapture`, or name
//! `conv_forward_timing` / `conv_backward_timing` (set `RAYON_NUM_THREADS`, `CNNC_SIMD=avx2`
//! for the AVX2 path, and `CONV_TIMING_ONLY` to time only the layers whose names contain it).
//! `seed_fused_*_timing` time the seed's three as the model runs them, each with its ReLU and
//! 2 x 2 max pool fused (the training forward, `&self` inference and the backward), and
//! `seed_step_timing` the seed's whole training step (with SGD's step) and each layer's part.

mod common;

use std::time::{Duration, Instant};

use cnnc_runtime::config::{Conv2dConfig, Pool2dConfig};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::Conv2d;
use cnnc_runtime::optim::{OptimizerConfig, SgdConfig};
use cnnc_runtime::{Layer, Mode, Network};
use common::Rand;
use common::seed::custom_cnn;
use ndarray::Array4;

const BATCH: usize = 64;

/// A layer to time: (name, cin, cout, kernel, stride, padding, input size, whether its backward
/// computes an input gradient).
type Timed = (&'static str, usize, usize, usize, usize, usize, usize, bool);

/// One of each kind of ResNet-20's convolutions, then the seed's (CustomCNN's, with bias in the
/// model; these without).
const LAYERS: [Timed; 10] = [
    ("conv1 (stem, 3 -> 16)", 3, 16, 3, 1, 1, 32, false),
    ("layer1 3x3 16 -> 16", 16, 16, 3, 1, 1, 32, true),
    ("layer2.0.conv1 s2 16 -> 32", 16, 32, 3, 2, 1, 32, true),
    ("layer2.0.downsample 1x1 s2", 16, 32, 1, 2, 0, 32, true),
    ("layer2 3x3 32 -> 32", 32, 32, 3, 1, 1, 16, true),
    ("layer3.0.conv1 s2 32 -> 64", 32, 64, 3, 2, 1, 16, true),
    ("layer3 3x3 64 -> 64", 64, 64, 3, 1, 1, 8, true),
    ("seed layer1.0 5x5 3 -> 32", 3, 32, 5, 1, 2, 32, false),
    ("seed layer2.0 5x5 32 -> 32", 32, 32, 5, 1, 2, 16, true),
    ("seed layer3.0 5x5 32 -> 64", 32, 64, 5, 1, 2, 8, true),
];

/// ResNet-18's at a 32 x 32 input: the stem and the small-spatial layers of layer3 and layer4
/// (`r18_forward_timing`, `r18_backward_timing`).
const R18: [Timed; 7] = [
    ("r18 conv1 7x7 s2 3 -> 64", 3, 64, 7, 2, 3, 32, false),
    ("r18 layer3.0.conv1 s2 128->256", 128, 256, 3, 2, 1, 4, true),
    ("r18 layer3.0.downsample 1x1 s2", 128, 256, 1, 2, 0, 4, true),
    ("r18 layer3 3x3 256 at 2x2", 256, 256, 3, 1, 1, 2, true),
    ("r18 layer4.0.conv1 s2 256->512", 256, 512, 3, 2, 1, 2, true),
    ("r18 layer4.0.downsample 1x1 s2", 256, 512, 1, 2, 0, 2, true),
    ("r18 layer4 3x3 512 at 1x1", 512, 512, 3, 1, 1, 1, true),
];

/// The seed's convolutions (with bias, as in the model), each fusing its ReLU and 2 x 2 max pool.
const SEED: [Timed; 3] = [
    ("seed layer1.0 + relu + pool", 3, 32, 5, 1, 2, 32, false),
    ("seed layer2.0 + relu + pool", 32, 32, 5, 1, 2, 16, true),
    ("seed layer3.0 + relu + pool", 32, 64, 5, 1, 2, 8, true),
];

/// The calling thread's CPU time.
fn thread_time() -> Duration {
    cpu_time(CLOCK_THREAD_CPUTIME_ID)
}

/// The CPU time of `clock`.
fn cpu_time(clock: i32) -> Duration {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid `timespec` for the call to fill.
    unsafe { clock_gettime(clock, &mut ts) };
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

/// `struct timespec` on Linux x86-64.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Prints, for each of `layers` (fusing a ReLU and a 2 x 2 max pool with `fused`), the least
/// time of 40 calls of `pass` on the layer, its input `x`, its output `y` (forwarded once first)
/// and a `dy`, whether it computes an input gradient.
fn time_layers(
    layers: &[Timed],
    fused: bool,
    mut pass: impl FnMut(&mut Conv2d, &[f32], &mut [f32], &[f32], bool) + Send,
) {
    let threads = rayon::current_num_threads();
    let one = threads == 1;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let only = std::env::var("CONV_TIMING_ONLY").unwrap_or_default();
    for &(name, cin, cout, k, stride, pad, size, with_dx) in layers {
        if !name.contains(only.as_str()) {
            continue;
        }
        let config = Conv2dConfig {
            stride: [stride; 2],
            padding: [pad; 2],
            padding_end: [pad; 2],
            bias: fused,
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let mut conv = Conv2d::new("conv", &config, [size, size], &mut init_rng(7)).unwrap();
        if fused {
            conv.fuse_relu();
            assert!(conv.fuse_max_pool(&Pool2dConfig::new([2, 2], [2, 2], [0, 0])));
        }
        let (nx, ny) = (
            conv.input_shape().numel() * BATCH,
            conv.output_shape().numel() * BATCH,
        );
        let mut rng = Rand(3);
        let (x, dy) = (rng.vec(nx), rng.vec(ny));
        let mut y = vec![0.0; ny];
        conv.forward(&x, &mut y, BATCH, Mode::Train).unwrap();
        let mut best = Duration::MAX;
        for _ in 0..40 {
            // On a thread of the pool, so that with one thread all the work is on this one.
            let took = pool.install(|| {
                let (wall, cpu) = (Instant::now(), thread_time());
                pass(&mut conv, &x, &mut y, &dy, with_dx);
                if one {
                    thread_time() - cpu
                } else {
                    wall.elapsed()
                }
            });
            best = best.min(took);
        }
        println!("{name:30} {:.3} ms", best.as_secs_f64() * 1e3);
    }
}

#[test]
#[ignore = "a timing, not a check"]
fn conv_forward_timing() {
    time_layers(&LAYERS, false, |conv, x, y, _, _| {
        conv.forward(x, y, BATCH, Mode::Train).unwrap()
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn conv_backward_timing() {
    let mut dx = vec![0.0; LAYERS.iter().map(|l| l.1 * l.6 * l.6).max().unwrap_or(0) * BATCH];
    time_layers(&LAYERS, false, move |conv, x, y, dy, with_dx| {
        let dx = with_dx.then_some(&mut dx[..x.len()]);
        conv.backward(x, y, dy, dx, BATCH).unwrap();
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn r18_forward_timing() {
    time_layers(&R18, false, |conv, x, y, _, _| {
        conv.forward(x, y, BATCH, Mode::Train).unwrap()
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn r18_backward_timing() {
    let mut dx = vec![0.0; R18.iter().map(|l| l.1 * l.6 * l.6).max().unwrap_or(0) * BATCH];
    time_layers(&R18, false, move |conv, x, y, dy, with_dx| {
        let dx = with_dx.then_some(&mut dx[..x.len()]);
        conv.backward(x, y, dy, dx, BATCH).unwrap();
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn seed_fused_forward_timing() {
    time_layers(&SEED, true, |conv, x, y, _, _| {
        conv.forward(x, y, BATCH, Mode::Train).unwrap()
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn seed_fused_infer_timing() {
    time_layers(&SEED, true, |conv, x, y, _, _| {
        conv.infer(x, y, BATCH).unwrap()
    });
}

#[test]
#[ignore = "a timing, not a check"]
fn seed_fused_backward_timing() {
    let mut dx = vec![0.0; SEED.iter().map(|l| l.1 * l.6 * l.6).max().unwrap_or(0) * BATCH];
    time_layers(&SEED, true, move |conv, x, y, dy, with_dx| {
        let dx = with_dx.then_some(&mut dx[..x.len()]);
        conv.backward(x, y, dy, dx, BATCH).unwrap();
    });
}

/// The seed's training step at batch 64 (`Network::train_step` and SGD's step with momentum
/// 0.9, as `cnnc bench` times it): the least and the median of 40 steps, in the process's CPU
/// time with one thread (every thread's, so the work the pool's thread does counts) and in
/// wall time with more; then each layer's forward and backward, the least wall time over 40
/// profiled steps (with one thread the least drops out the preemptions of a loaded machine).
#[test]
#[ignore = "a timing, not a check"]
fn seed_step_timing() {
    const STEPS: usize = 40;
    let one = rayon::current_num_threads() == 1;
    let mut net = Network::new(&custom_cnn(), 0).unwrap();
    let mut sgd = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    })
    .build()
    .unwrap();
    let x = Array4::from_shape_fn((BATCH, 3, 32, 32), |(i, c, h, w)| {
        (((i * 7919 + c * 104_729 + h * 31 + w * 17) % 1000) as f32) / 500.0 - 1.0
    });
    let labels: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
    let mut steps = Vec::with_capacity(STEPS);
    for round in 0..=STEPS {
        let (wall, cpu) = (Instant::now(), cpu_time(CLOCK_PROCESS_CPUTIME_ID));
        net.train_step(x.view(), &labels).unwrap();
        sgd.step(&mut net).unwrap();
        let took = if one {
            cpu_time(CLOCK_PROCESS_CPUTIME_ID) - cpu
        } else {
            wall.elapsed()
        };
        // The first step sizes the buffers.
        if round > 0 {
            steps.push(took);
        }
    }
    steps.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let clock = if one { "CPU" } else { "wall" };
    println!(
        "seed step ({clock}): least {:.3} ms, median {:.3} ms",
        ms(steps[0]),
        ms(steps[STEPS / 2])
    );
    let layers = net.layers().len();
    let mut best = vec![(Duration::MAX, Duration::MAX); layers];
    for _ in 0..STEPS {
        let profile = net.profile_train_step(x.view(), &labels).unwrap();
        sgd.step(&mut net).unwrap();
        for (best, time) in best.iter_mut().zip(&profile.layers) {
            *best = (best.0.min(time.forward), best.1.min(time.backward));
        }
    }
    for (layer, (forward, backward)) in net.layers().iter().zip(best) {
        if forward + backward > Duration::from_micros(1) {
            let name = layer.name();
            println!(
                "{name:12} forward {:.3} ms, backward {:.3} ms",
                ms(forward),
                ms(backward)
            );
        }
    }
}
