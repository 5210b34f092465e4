//! The machine's peak floating-point rate, measured rather than assumed: what "% of peak" in
//! `cnnc bench` refers to. Every thread of the pool runs the matrix kernels' inner step (twelve
//! independent multiply-add chains on the widest vectors the kernels use, operands in registers or
//! L1) for about 20 ms at once; the best of several rounds is the peak. It is the rate the
//! kernels could reach if memory, loop overhead and scheduling cost nothing.

use std::time::{Duration, Instant};

use crate::kernels::gemm::{fma_loop, isa};

/// A measured peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// Floating-point operations per second over all threads, in GFLOP/s (a multiply-add counts
    /// two).
    pub gflops: f64,
    /// Threads that ran at once (the pool's).
    pub threads: usize,
    /// The instructions measured: `AVX-512`, `AVX2+FMA` or `scalar`, those the kernels use.
    pub isa: &'static str,
}

/// Time one round aims at on each thread.
const ROUND: Duration = Duration::from_millis(20);
/// Rounds timed; the fastest counts.
const ROUNDS: usize = 5;

/// Measures the peak on every thread of the pool (about 150 ms).
pub fn measure() -> Peak {
    // Steps that take about one round on one thread.
    let mut iters: u64 = 1 << 12;
    loop {
        let start = Instant::now();
        std::hint::black_box(fma_loop(iters));
        let took = start.elapsed();
        if took >= ROUND / 4 || iters >= 1 << 40 {
            let scale = ROUND.as_secs_f64() / took.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let threads = rayon::current_num_threads();
    let mut best: f64 = 0.0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let flops: f64 = rayon::broadcast(|_| std::hint::black_box(fma_loop(iters)).0)
            .into_iter()
            .sum();
        best = best.max(flops / start.elapsed().as_secs_f64());
    }
    Peak {
        gflops: best / 1e9,
        threads,
        isa: isa(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_positive_and_names_the_kernels() {
        let peak = measure();
        assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
        assert_eq!(peak.threads, rayon::current_num_threads());
        assert!(["AVX-512", "AVX2+FMA", "scalar"].contains(&peak.isa));
    }

    #[test]
    fn the_loop_counts_two_operations_per_multiply_add() {
        let (flops, value) = fma_loop(10);
        assert_eq!(
            flops,
            (10 * 2 * crate::kernels::gemm::MR * crate::kernels::gemm::NR) as f64
        );
        assert!(value.is_finite());
    }
}
