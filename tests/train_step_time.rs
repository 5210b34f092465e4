//! The generated ResNet-20 (`cnn_model!`) and the executor take the same time for a training
//! step: both run the plan's steps and its joins (`cnnc_core::Join`). Timing only, so ignored;
//! run in release, one thread for steady figures:
//! `RAYON_NUM_THREADS=1 cargo test --release -p cnnc --test train_step_time -- --ignored --nocapture`.

use std::path::Path;
use std::time::{Duration, Instant};

use cnnc::ndarray::Array4;
use cnnc::runtime::Network;
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(ResNet20, "models/resnet20_cifar.yaml");

type Input = Images<3, 32, 32>;

/// CPU time the process has used, in clock ticks (`/proc/self/stat`'s `utime + stime`; `None`
/// where there is no such file): steadier than wall time on a loaded machine.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces), from the third on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
#[ignore = "timing: run in release with --ignored --nocapture"]
fn generated_resnet20_trains_as_fast_as_the_executor() {
    const BATCH: usize = 64;
    const ROUNDS: usize = 15;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(ResNet20::SOURCE);
    let mut net = Network::from_model(&cnnc::spec::load(&path).unwrap(), 0).unwrap();
    let mut model = ResNet20::new(0);
    let x = Array4::from_shape_fn((BATCH, 3, 32, 32), |(n, c, y, x)| {
        ((n * 131 + c * 71 + y * 37 + x * 17) % 97) as f32 / 48.5 - 1.0
    });
    let labels: Vec<usize> = (0..BATCH).map(|n| n % 10).collect();
    let typed = Input::from_nchw(x.view()).unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_cpu, mut their_cpu) = (0, 0);
    // A step of each first (buffers, packed panels), then the two alternating.
    for round in 0..=ROUNDS {
        let (start, cpu) = (Instant::now(), cpu_ticks());
        let a = net.train_step(x.view(), &labels).unwrap();
        let executor = (start.elapsed(), cpu_ticks().zip(cpu).map(|(b, a)| b - a));
        let (start, cpu) = (Instant::now(), cpu_ticks());
        let b = model.train_step(&typed, &labels).unwrap();
        let generated = (start.elapsed(), cpu_ticks().zip(cpu).map(|(b, a)| b - a));
        assert_eq!(a.to_bits(), b.to_bits(), "the same loss");
        if round > 0 {
            theirs.push(executor.0);
            ours.push(generated.0);
            their_cpu += executor.1.unwrap_or(0);
            our_cpu += generated.1.unwrap_or(0);
        }
    }
    let stats = |t: &mut Vec<Duration>| {
        t.sort();
        (t[0].as_secs_f64() * 1e3, t[t.len() / 2].as_secs_f64() * 1e3)
    };
    let ((exec_min, exec_median), (gen_min, gen_median)) = (stats(&mut theirs), stats(&mut ours));
    println!(
        "ResNet-20 training step, batch {BATCH}, {ROUNDS} rounds: executor {exec_min:.1} ms \
         least / {exec_median:.1} median, generated {gen_min:.1} / {gen_median:.1} \
         (generated / executor, median: {:.3}); CPU ticks over the rounds: executor \
         {their_cpu}, generated {our_cpu}",
        gen_median / exec_median
    );
}
