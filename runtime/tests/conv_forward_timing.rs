//! Times the training forward of ResNet-20's convolutions at batch 64, one layer of each kind,
//! for A/B comparisons between builds (it calls only [`Layer::forward`], so the same file builds
//! against older code): the least of 40 passes, in the thread's CPU time with one thread (a
//! loaded machine's preemptions drop out) and in wall time with more.
//! `cargo test -p cnnc-runtime --release --test conv_forward_timing -- --ignored --nocapture`
//! (set `RAYON_NUM_THREADS`, and `CNNC_SIMD=avx2` for the AVX2 path).

mod common;

use std::time::{Duration, Instant};

use cnnc_runtime::config::Conv2dConfig;
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::Conv2d;
use cnnc_runtime::{Layer, Mode};
use common::Rand;

/// The calling thread's CPU time.
fn thread_time() -> Duration {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid `timespec` for the call to fill.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

/// `struct timespec` on Linux x86-64.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

#[test]
#[ignore = "a timing, not a check"]
fn conv_forward_timing() {
    let batch = 64;
    let threads = rayon::current_num_threads();
    let one = threads == 1;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // (name, cin, cout, kernel, stride, padding, input size)
    let layers = [
        ("conv1 (stem, 3 -> 16)", 3, 16, 3, 1, 1, 32),
        ("layer1 3x3 16 -> 16", 16, 16, 3, 1, 1, 32),
        ("layer2.0.conv1 s2 16 -> 32", 16, 32, 3, 2, 1, 32),
        ("layer2.0.downsample 1x1 s2", 16, 32, 1, 2, 0, 32),
        ("layer2 3x3 32 -> 32", 32, 32, 3, 1, 1, 16),
        ("layer3.0.conv1 s2 32 -> 64", 32, 64, 3, 2, 1, 16),
        ("layer3 3x3 64 -> 64", 64, 64, 3, 1, 1, 8),
    ];
    for (name, cin, cout, k, stride, pad, size) in layers {
        let config = Conv2dConfig {
            stride: [stride; 2],
            padding: [pad; 2],
            padding_end: [pad; 2],
            bias: false,
            ..Conv2dConfig::new(cin, cout, [k, k])
        };
        let mut conv = Conv2d::new("conv", &config, [size, size], &mut init_rng(7)).unwrap();
        let (nx, ny) = (
            conv.input_shape().numel() * batch,
            conv.output_shape().numel() * batch,
        );
        let x = Rand(3).vec(nx);
        let mut y = vec![0.0; ny];
        let mut best = Duration::MAX;
        for _ in 0..40 {
            // On a thread of the pool, so that with one thread all the work is on this one.
            let took = pool.install(|| {
                let (wall, cpu) = (Instant::now(), thread_time());
                conv.forward(&x, &mut y, batch, Mode::Train).unwrap();
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
