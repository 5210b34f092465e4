//! The machine's peak floating-point rate, measured rather than assumed: what "% of peak" in
//! `cnnc bench` refers to. Every thread of the pool runs the matrix kernels' inner step (twelve
//! independent multiply-add chains on the widest vectors the kernels use, operands in registers or
//! L1) for about 20 ms at once; the best of several rounds is the peak. It is the rate the
//! kernels could reach if memory, loop overhead and scheduling cost nothing.
//!
//! Beside it, how far apart the pool's threads sit: the round trip of a cache line between two
//! of them ([`round_trip`]). On one die it is tens of nanoseconds; across dies (the chiplets of
//! an EPYC or Ryzen, sockets, or a virtual machine whose CPUs the host moves between them) it is
//! several times that, and every buffer one thread writes and another reads pays for it, so
//! timings taken in the two placements differ and should be read apart.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// Exchanges of a cache line timed in one round of [`round_trip`].
const EXCHANGES: u32 = 10_000;

/// The round trip of a cache line between the pool's first two threads: one stores a value, the
/// other sees it and stores the next, and back; the fastest of [`ROUNDS`] rounds of
/// [`EXCHANGES`] each. `None` with one thread, or when the two did not run at once within
/// `patience` (a machine too busy to say).
pub fn round_trip(patience: Duration) -> Option<Duration> {
    round_trip_of(patience, EXCHANGES)
}

/// [`round_trip`] with `exchanges` timed exchanges a round.
fn round_trip_of(patience: Duration, exchanges: u32) -> Option<Duration> {
    if rayon::current_num_threads() < 2 {
        return None;
    }
    (0..ROUNDS)
        .map(|_| exchange(patience, exchanges))
        .min_by_key(|t| t.unwrap_or(Duration::MAX))
        .flatten()
}

/// One round of [`round_trip_of`], on the pool's threads 0 and 1.
fn exchange(patience: Duration, exchanges: u32) -> Option<Duration> {
    let line = Line::new(patience, exchanges);
    let times = rayon::broadcast(|ctx| match ctx.index() {
        0 => line.lead(),
        1 => {
            line.follow();
            None
        }
        _ => None,
    });
    times[0]
}

/// The cache line two threads pass back and forth: the leader stores the odd values and waits
/// for the even ones the follower stores. Either gives up (and tells the other) once the
/// deadline has passed.
struct Line {
    value: AtomicU32,
    gave_up: AtomicBool,
    deadline: Instant,
    /// Timed exchanges.
    exchanges: u32,
}

impl Line {
    fn new(patience: Duration, exchanges: u32) -> Self {
        Line {
            value: AtomicU32::new(0),
            gave_up: AtomicBool::new(false),
            deadline: Instant::now() + patience,
            exchanges,
        }
    }

    /// Spins until the line holds `want`; false once the deadline passed or the other gave up.
    fn wait(&self, want: u32) -> bool {
        let mut spins = 0u32;
        while self.value.load(Ordering::Acquire) != want {
            spin_loop();
            spins = spins.wrapping_add(1);
            // The clock is read rarely, so that it does not add to the latency measured.
            if spins.is_multiple_of(4096)
                && (self.gave_up.load(Ordering::Relaxed) || Instant::now() > self.deadline)
            {
                self.gave_up.store(true, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// The leader's side: one untimed exchange (both threads are running once it has come
    /// back), then `exchanges` timed ones; the time of one.
    fn lead(&self) -> Option<Duration> {
        self.value.store(1, Ordering::Release);
        if !self.wait(2) {
            return None;
        }
        let start = Instant::now();
        for i in 1..=self.exchanges {
            self.value.store(2 * i + 1, Ordering::Release);
            if !self.wait(2 * i + 2) {
                return None;
            }
        }
        Some(start.elapsed() / self.exchanges)
    }

    /// The follower's side.
    fn follow(&self) {
        for i in 0..=self.exchanges {
            if !self.wait(2 * i + 1) {
                return;
            }
            self.value.store(2 * i + 2, Ordering::Release);
        }
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
    fn round_trip_needs_two_threads_and_takes_time() {
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("pool")
        };
        assert_eq!(
            pool(1).install(|| round_trip(Duration::from_secs(10))),
            None
        );
        // Few exchanges and a generous patience: on a loaded machine whose two threads share one
        // CPU each exchange can wait for a time slice (milliseconds), and [`EXCHANGES`] of them
        // would outlast any patience.
        let patience = Duration::from_secs(10);
        let t = pool(2).install(|| round_trip_of(patience, 64));
        let t = t.expect("two threads exchange a cache line");
        assert!(t > Duration::ZERO, "{t:?}");
    }

    #[test]
    fn either_side_gives_up_without_the_other() {
        let patience = Duration::from_millis(20);
        assert_eq!(Line::new(patience, EXCHANGES).lead(), None);
        let start = Instant::now();
        Line::new(patience, EXCHANGES).follow();
        assert!(start.elapsed() >= patience);
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
