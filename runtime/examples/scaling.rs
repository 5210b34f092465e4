//! Images/s of the seed model (PyTorch's `CustomCNN`) in the dynamic executor at batch sizes 1 to
//! 256: inference, and training (forward, loss and backward; no optimizer update). Run it once per
//! thread count, for the scaling table of `docs/PERFORMANCE.md`:
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p cnnc-runtime --example scaling
//! RAYON_NUM_THREADS=2 cargo run --release -p cnnc-runtime --example scaling
//! ```
//!
//! Each figure is the median of enough runs to fill about a second.

#[path = "../tests/common/seed.rs"]
mod seed;

use std::time::{Duration, Instant};

use cnnc_runtime::{Mode, Network};
use ndarray::Array4;

/// Median wall time of `f`, over runs filling about a second, after three untimed ones.
fn median(mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < Duration::from_secs(1) && times.len() < 2000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let mut net = Network::new(&seed::custom_cnn(), 0).expect("the seed model is valid");
    println!(
        "{} thread(s)\n| batch | infer images/s | ms | train images/s | ms |\n| ---: | ---: | ---: | ---: | ---: |",
        rayon::current_num_threads()
    );
    for batch in [1, 8, 16, 32, 64, 128, 256] {
        let x = Array4::from_shape_fn((batch, 3, 32, 32), |(i, c, h, w)| {
            (((i * 7919 + c * 104_729 + h * 31 + w * 17) % 1000) as f32) / 500.0 - 1.0
        });
        let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
        let infer = median(|| {
            net.forward_view(x.view(), Mode::Eval).expect("forward");
        });
        let train = median(|| {
            net.train_step(x.view(), &labels).expect("train step");
        });
        let rate = |d: Duration| batch as f64 / d.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {batch} | {:.0} | {:.3} | {:.0} | {:.2} |",
            rate(infer),
            ms(infer),
            rate(train),
            ms(train)
        );
    }
}
