//! Inference from `&self` allocates nothing but its result once warm: the activation buffers and
//! each layer's scratch (the convolutions' padded inputs, the fused pools' bands) come from the
//! thread's scratch pool, grown by the first call and reused after. Counted with a global
//! allocator that tallies the allocations of the current thread, on a one-thread pool so that
//! every layer runs on that thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cnnc_runtime::Network;
use common::seed::custom_cnn;
use ndarray::Array4;

thread_local! {
    // `const` and `Cell<usize>`: no lazy initialisation and no destructor, hence no allocation.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// thread-local integer.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_warm_predict_allocates_only_its_result() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let net = Network::new(&custom_cnn(), 0).unwrap();
        let x = Array4::from_shape_fn((16, 3, 32, 32), |(n, c, h, w)| {
            ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
        });
        let mut first = None;
        let cold = allocations(|| first = Some(net.predict(x.view()).unwrap()));
        let mut second = None;
        let warm = allocations(|| second = Some(net.predict(x.view()).unwrap()));
        assert_eq!(first, second);
        // The logits, the buffers' lengths and the list of borrowed buffers.
        assert!(
            warm <= 3,
            "{warm} allocations once warm (the first call made {cold})"
        );
        assert!(
            cold > warm,
            "the first call fills the pool: {cold} vs {warm}"
        );
    });
}

#[test]
fn batch_norm_without_running_statistics_infers_from_scratch_memory() {
    use cnnc_runtime::Mode;
    use cnnc_runtime::config::{BatchNorm2dConfig, LayerConfig, LayerDef};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        // The seed model with a batch norm on the batch's statistics after its first convolution
        // (fused with the ReLU that follows): PyTorch normalises by the batch in eval mode too.
        let mut def = custom_cnn();
        let config = BatchNorm2dConfig {
            track_running_stats: false,
            ..BatchNorm2dConfig::new(32)
        };
        def.layers.insert(
            1,
            LayerDef {
                name: "layer1.bn".to_owned(),
                config: LayerConfig::BatchNorm2d(config),
                inputs: Vec::new(),
            },
        );
        let mut net = Network::new(&def, 0).unwrap();
        let x = Array4::from_shape_fn((4, 3, 32, 32), |(n, c, h, w)| {
            ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
        });
        let mut first = None;
        let cold = allocations(|| first = Some(net.predict(x.view()).unwrap()));
        let mut second = None;
        let warm = allocations(|| second = Some(net.predict(x.view()).unwrap()));
        assert_eq!(first, second);
        assert!(
            warm <= 3,
            "{warm} allocations once warm (the first call made {cold})"
        );
        // The same numbers as the training forward in eval mode, bit for bit.
        let eval = net.forward(x.view(), Mode::Eval).unwrap();
        assert_eq!(first.unwrap(), eval);
    });
}
