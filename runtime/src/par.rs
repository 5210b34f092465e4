//! The static partition of a pass's items over the threads: thread `t` of `T` always takes the
//! same contiguous share `n * t / T .. n * (t + 1) / T`, so that the images one thread wrote in
//! one pass are the images it reads in the next (from its own cache, not across the host's dies)
//! where rayon's work stealing would hand them to whichever thread came first.
//!
//! Only *which thread* runs an item changes: the items, their boundaries and what each computes
//! stay those of the caller, so no value depends on the number of threads.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

thread_local! {
    /// Whether this thread is already running a share of its own ([`each_part`], [`own`]): a
    /// pass it starts then runs in place, on its own images, rather than waking every thread
    /// (which, from inside another thread's parallel work, would make each wait on the other).
    static OWN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as this thread's own share of some parallel work (a group of images of a batch
/// that several threads run at once): the passes [`chunks_mut`] and [`chunks_mut2`] start inside
/// it run in place, in order, on this thread.
pub fn own<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the thread's flag back as it was, also when `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OWN.with(|own| own.set(self.0));
        }
    }
    let _restore = Restore(OWN.with(|own| own.replace(true)));
    f()
}

/// Whether a pass of `n` chunks runs in place on this thread: with one thread, one chunk, or
/// inside a share of this thread's own.
fn in_place(n: usize, threads: usize) -> bool {
    threads == 1 || n <= 1 || OWN.with(Cell::get)
}

/// The items of `n` that thread `t` of `threads` takes: contiguous, in order, covering `0..n`
/// once over `t = 0..threads`, sizes differing by at most one.
pub fn share(n: usize, t: usize, threads: usize) -> Range<usize> {
    let threads = threads.max(1);
    n * t / threads..n * (t + 1) / threads
}

/// Runs `f(i, chunk)` for the `chunk`-long chunks of `data` (the last may be shorter): thread
/// `t` of the current rayon pool (the global one from outside a pool) the chunks `i` of its
/// [`share`], in order; waits for all. Called from inside the pool (also from inside another
/// call of this), the calling thread runs its own share and takes other work while it waits.
/// With one thread, one chunk, or inside a share of the thread's own ([`own`]), `f` runs in
/// place on every chunk in order, with no list of parts (inference allocates nothing once warm)
/// and no other thread woken.
pub fn chunks_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let threads = rayon::current_num_threads().max(1);
    let n = data.len().div_ceil(chunk);
    if in_place(n, threads) {
        for (i, c) in data.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
        return;
    }
    let parts = split(data, chunk, n, threads);
    each_part(parts, |(first, part)| {
        for (i, c) in part.chunks_mut(chunk).enumerate() {
            f(first + i, c);
        }
    });
}

/// [`chunks_mut`] over two buffers at once, chunk `i` of `a` (`ca` long) with chunk `i` of `b`
/// (`cb` long); the chunks are counted in `a`, and `b` must hold at least as many.
pub fn chunks_mut2<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (ca, cb) = (ca.max(1), cb.max(1));
    let threads = rayon::current_num_threads().max(1);
    let n = a.len().div_ceil(ca);
    let b_len = b.len().min(n * cb);
    if in_place(n, threads) {
        // As in `chunks_mut`.
        for (i, (a, b)) in a.chunks_mut(ca).zip(b[..b_len].chunks_mut(cb)).enumerate() {
            f(i, a, b);
        }
        return;
    }
    let parts = split(a, ca, n, threads)
        .into_iter()
        .zip(split(&mut b[..b_len], cb, n, threads));
    each_part(parts.collect(), |((first, a), (_, b))| {
        for (i, (a, b)) in a.chunks_mut(ca).zip(b.chunks_mut(cb)).enumerate() {
            f(first + i, a, b);
        }
    });
}

/// `data` cut into one part a thread at the shares of its `n` chunks, each with its first
/// chunk's index.
fn split<T>(data: &mut [T], chunk: usize, n: usize, threads: usize) -> Vec<(usize, &mut [T])> {
    let mut rest = data;
    let mut at = 0;
    (0..threads)
        .map(|t| {
            let range = share(n, t, threads);
            let end = (range.end * chunk).min(at + rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(end - at);
            (rest, at) = (tail, end);
            (range.start, head)
        })
        .collect()
}

/// Hands `parts[t]` to thread `t` of the current pool (one part a thread) and runs `f` on it.
fn each_part<P: Send>(parts: Vec<P>, f: impl Fn(P) + Sync) {
    let slots: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    rayon::broadcast(|ctx| {
        let part = slots
            .get(ctx.index())
            .and_then(|slot| slot.lock().ok().and_then(|mut p| p.take()));
        if let Some(part) = part {
            own(|| f(part));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool")
    }

    /// Over sizes below, at and above the thread count, the shares cover every item once, in
    /// order, and differ in size by at most one.
    #[test]
    fn shares_cover_every_item_once() {
        for threads in 1..=5 {
            for n in 0..40 {
                let ranges: Vec<_> = (0..threads).map(|t| share(n, t, threads)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[threads - 1].end, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "{n} items, {threads} threads");
                }
                let (lo, hi) = (n / threads, n.div_ceil(threads));
                assert!(ranges.iter().all(|r| (lo..=hi).contains(&r.len())));
            }
        }
    }

    /// Each chunk runs on the thread whose share holds it, the same thread call after call,
    /// also from inside the pool and nested inside another call; every chunk is visited once.
    #[test]
    fn each_thread_keeps_its_share() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                for n in [0, 1, 2, 5, 64] {
                    for _ in 0..3 {
                        let mut owner = vec![usize::MAX; n];
                        chunks_mut(&mut owner, 1, |_, o| {
                            assert_eq!(o[0], usize::MAX);
                            o[0] = rayon::current_thread_index().expect("a pool thread");
                        });
                        let here = rayon::current_thread_index();
                        for (i, &t) in owner.iter().enumerate() {
                            // A single chunk runs in place, on the calling thread.
                            let on = if n == 1 {
                                here == Some(t)
                            } else {
                                share(n, t, threads).contains(&i)
                            };
                            assert!(on, "item {i} ran on {t}");
                        }
                    }
                    // Nested: each outer chunk runs an inner partition of its own.
                    let mut outer = vec![vec![0usize; 5]; n];
                    chunks_mut(&mut outer, 1, |_, o| {
                        chunks_mut(&mut o[0], 2, |i, c| c.iter_mut().for_each(|v| *v = i + 1));
                    });
                    assert!(outer.iter().all(|o| o == &[1, 1, 2, 2, 3]));
                }
            });
        }
    }

    /// Inside [`own`] a pass runs every chunk in order on the calling thread (a group of images
    /// that is already one thread's work), and after it the chunks spread over the threads again.
    #[test]
    fn a_threads_own_work_runs_its_passes_in_place() {
        pool(2).install(|| {
            let here = rayon::current_thread_index();
            let order = Mutex::new(Vec::new());
            let mut data = vec![0usize; 8];
            own(|| {
                chunks_mut(&mut data, 1, |i, c| {
                    assert_eq!(rayon::current_thread_index(), here);
                    c[0] = i + 1;
                    order.lock().expect("not poisoned").push(i);
                });
            });
            assert_eq!(data, [1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(
                *order.lock().expect("not poisoned"),
                (0..8).collect::<Vec<_>>()
            );
            let mut owner = vec![usize::MAX; 8];
            chunks_mut(&mut owner, 1, |_, o| {
                o[0] = rayon::current_thread_index().expect("a pool thread")
            });
            assert_eq!(owner, [0, 0, 0, 0, 1, 1, 1, 1]);
        });
    }

    /// From outside any pool the global pool runs the shares; with one thread, in place.
    #[test]
    fn runs_outside_a_pool_and_on_one_thread() {
        let mut seen = vec![0; 10];
        chunks_mut(&mut seen, 3, |i, c| c.iter_mut().for_each(|v| *v = i + 1));
        assert_eq!(seen, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]);
        let caller = std::thread::current().id();
        pool(1).install(|| {
            let here = std::thread::current().id();
            assert_ne!(here, caller);
            let mut one = [0; 3];
            chunks_mut(&mut one, 1, |_, _| {
                assert_eq!(std::thread::current().id(), here);
            });
        });
    }

    /// The chunks keep their boundaries and indices (the last one short), also with more
    /// threads than chunks, and the second buffer's chunks pair with the first's.
    #[test]
    fn chunks_keep_their_boundaries() {
        for threads in [1, 2, 3, 7] {
            pool(threads).install(|| {
                for len in [0, 1, 5, 16, 17, 100] {
                    let mut a = vec![usize::MAX; len];
                    chunks_mut(&mut a, 4, |i, c| {
                        assert!(c.len() == 4 || (i + 1) * 4 >= len);
                        c.iter_mut().for_each(|v| *v = i);
                    });
                    assert!(a.iter().enumerate().all(|(j, &v)| v == j / 4), "{len}");
                    let mut b = vec![0usize; len.div_ceil(4) * 2];
                    chunks_mut2(&mut a, 4, &mut b, 2, |i, a, b| {
                        assert!(a.iter().all(|&v| v == i));
                        b.iter_mut().for_each(|v| *v = i + 1);
                    });
                    assert!(b.iter().enumerate().all(|(j, &v)| v == j / 2 + 1), "{len}");
                }
            });
        }
    }
}
