//! Per-thread scratch memory for the `&self` inference path ([`crate::Layer::infer`], a model's
//! `predict`): a thread-local pool of buffers, grown once and reused, with no lock. A buffer is
//! taken out of the pool for the length of one call and goes back when dropped, so nested calls
//! on one thread (rayon may run another model's `predict` on a worker waiting inside a layer)
//! simply take other buffers. Once a thread has served a call of a given shape, the same call
//! allocates nothing.
//!
//! Training's per-call workspaces (a convolution's padded input, its staged `dy`, its weight
//! gradient and input-gradient panels) come from one process-wide pool instead ([`lend`],
//! [`give_back`]): a layer holds them only while its forward or backward runs, so a network
//! needs as many as one layer uses at once, whatever its depth and whichever worker thread runs
//! the pass, rather than one set per layer kept between passes.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::thread::LocalKey;

/// A thread's free buffers of one type, each with the tag of its last user.
type Pool<T> = RefCell<Vec<(u64, Vec<T>)>>;

/// An element type the pool keeps buffers of.
pub(crate) trait Pooled: Copy + 'static {
    /// The thread's free buffers of this type.
    fn pool() -> &'static LocalKey<Pool<Self>>;
}

macro_rules! pooled {
    ($($ty:ty),*) => {$(
        impl Pooled for $ty {
            fn pool() -> &'static LocalKey<Pool<Self>> {
                thread_local! {
                    static POOL: Pool<$ty> = const { RefCell::new(Vec::new()) };
                }
                &POOL
            }
        }
    )*};
}

pooled!(f32, u16, u32, [f32; 2], [f64; 2]);

/// Tag of a buffer whose values no one relies on.
pub(crate) const ANY: u64 = 0;

/// A buffer borrowed from the thread's pool; it goes back when dropped.
#[derive(Debug)]
pub(crate) struct Scratch<T: Pooled> {
    tag: u64,
    buf: Vec<T>,
}

/// A buffer of at least `len` values from the thread's pool.
///
/// With `tag` [`ANY`], the values are whatever the buffer last held: the caller writes every
/// value it reads. With another `tag` (a number standing for a layout, e.g. a convolution's
/// padded input), values the caller never writes (the padding) are `fill`: a buffer last used
/// under the same tag is reused as it is, any other is filled first.
pub(crate) fn take<T: Pooled>(len: usize, tag: u64, fill: T) -> Scratch<T> {
    let found = T::pool().with(|pool| {
        let mut pool = pool.borrow_mut();
        // A buffer of this tag first, then an untagged one, then any other: so buffers keep
        // their tags from call to call and a tagged one is filled only the first time.
        let rank = |entry_tag: u64| {
            if tag != ANY && entry_tag == tag {
                0
            } else if entry_tag == ANY {
                1
            } else {
                2
            }
        };
        // The smallest large enough, else the largest (grown below).
        let fitting = pool
            .iter()
            .enumerate()
            .filter(|(_, (_, b))| b.len() >= len)
            .min_by_key(|(_, (t, b))| (rank(*t), b.len()))
            .map(|(i, _)| i);
        let best = fitting.or_else(|| {
            pool.iter()
                .enumerate()
                .min_by_key(|(_, (t, b))| (rank(*t), std::cmp::Reverse(b.len())))
                .map(|(i, _)| i)
        });
        best.map(|i| pool.swap_remove(i))
    });
    let (old_tag, mut buf) = found.unwrap_or((ANY, Vec::new()));
    if tag != ANY && old_tag != tag {
        // Only what this call uses: a buffer grown by a large batch, refilled whole for every
        // small one, cost batch-1 inference ~5 ms in ResNet-20 (what lies past `len` is filled
        // by `resize` when a later call of this tag needs it).
        buf.truncate(len);
        buf.fill(fill);
    }
    if buf.len() < len {
        buf.resize(len, fill);
    }
    Scratch { tag, buf }
}

impl<T: Pooled> Scratch<T> {
    /// The buffer itself, for code that grows its buffers as it goes (its length is then
    /// whatever that code leaves).
    pub(crate) fn vec_mut(&mut self) -> &mut Vec<T> {
        &mut self.buf
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        let entry = (self.tag, std::mem::take(&mut self.buf));
        // During thread teardown the pool may be gone already; the buffer is then freed.
        let _ = T::pool().try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                pool.push(entry);
            }
        });
    }
}

impl<T: Pooled> Deref for Scratch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T: Pooled> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}

/// A tag for a layout described by `parts` (sizes), for [`take`]: equal parts give equal tags.
pub(crate) fn tag(parts: &[usize]) -> u64 {
    // FNV-1a over the sizes; never ANY.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &p in parts {
        for b in (p as u64).to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// Free buffers lent for the length of one pass ([`lend`], [`give_back`]).
struct Workspace(Mutex<Vec<Vec<f32>>>);

/// The process-wide training workspace.
static WORKSPACE: Workspace = Workspace(Mutex::new(Vec::new()));

impl Workspace {
    /// See [`lend`].
    fn lend(&self, len: usize) -> Vec<f32> {
        let found = {
            let mut free = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let fitting = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            let best = fitting.or_else(|| {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, b)| b.len())
                    .map(|(i, _)| i)
            });
            best.map(|i| free.swap_remove(i))
        };
        match found {
            Some(buf) if buf.len() >= len => buf,
            // Dropped before the larger one is allocated, so the two are never held at once.
            Some(short) => {
                drop(short);
                vec![0.0; len]
            }
            None => vec![0.0; len],
        }
    }

    /// See [`give_back`].
    fn give_back(&self, buf: Vec<f32>) {
        if !buf.is_empty() {
            let mut free = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            free.push(buf);
        }
    }
}

/// Lends a buffer of at least `len` values from the process-wide training workspace, to be
/// handed back with [`give_back`] when the pass that uses it ends. Its values are whatever it
/// last held: the caller writes every value it reads. The shortest free buffer that is long
/// enough is lent; when none is, the longest is replaced by one of `len` zeros (memory the system
/// maps lazily), so once a training step of a given batch size has run, the next allocates
/// nothing.
pub(crate) fn lend(len: usize) -> Vec<f32> {
    WORKSPACE.lend(len)
}

/// Hands a buffer from [`lend`] back to the workspace (an empty one is simply dropped).
pub(crate) fn give_back(buf: Vec<f32>) {
    WORKSPACE.give_back(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_tagged_ones_keep_their_fill() {
        let t = tag(&[3, 4]);
        let ptr = {
            let mut a = take::<f32>(16, t, 0.0);
            assert!(a.iter().all(|&v| v == 0.0));
            a[0] = 5.0; // a value the same layout would write again
            a.as_ptr()
        };
        // The same layout gets the same buffer back, as it left it.
        let b = take::<f32>(8, t, 0.0);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b[0], 5.0);
        drop(b);
        // Another layout gets it filled.
        let c = take::<f32>(8, tag(&[9]), 0.0);
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&v| v == 0.0));
        // Nested takes get distinct buffers.
        let d = take::<f32>(8, ANY, 0.0);
        assert_ne!(c.as_ptr(), d.as_ptr());
    }

    #[test]
    fn the_workspace_lends_the_shortest_buffer_that_fits_and_replaces_the_longest() {
        let pool = Workspace(Mutex::new(Vec::new()));
        let a = pool.lend(100);
        assert!(a.len() == 100 && a.iter().all(|&v| v == 0.0));
        let b = pool.lend(300);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        pool.give_back(a);
        pool.give_back(b);
        // Both back: a request the shorter one meets gets it, the next the longer one.
        let first = pool.lend(50);
        let second = pool.lend(101);
        assert_eq!((first.as_ptr(), second.as_ptr()), (pa, pb));
        assert_eq!((first.len(), second.len()), (100, 300));
        pool.give_back(first);
        // None fits: the longest free one is replaced, so the pool holds one buffer, not two.
        let grown = pool.lend(1000);
        assert_eq!(grown.len(), 1000);
        assert!(pool.0.lock().unwrap().is_empty());
        pool.give_back(grown);
        pool.give_back(second);
        pool.give_back(Vec::new());
        assert_eq!(pool.0.lock().unwrap().len(), 2);
    }
}
