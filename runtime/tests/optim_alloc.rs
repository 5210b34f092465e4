//! Optimizer steps after the first allocate nothing: counted with a global allocator that tallies
//! the allocations of the current thread (so the test harness's own threads do not interfere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cnnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use cnnc_runtime::param::{Entry, Param, Visit};
use ndarray::{ArrayD, IxDyn};

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

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

struct Model {
    params: Vec<(String, Param)>,
    running_mean: ArrayD<f32>,
}

impl Visit for Model {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        for (name, param) in &mut self.params {
            f(Entry::Param { name, param });
        }
        f(Entry::Buffer {
            name: "bn.running_mean",
            value: &mut self.running_mean,
        });
    }
}

#[test]
fn steps_after_the_first_allocate_nothing() {
    let shapes: [&[usize]; 3] = [&[32, 3, 5, 5], &[32], &[10, 64]];
    for config in [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            ..SgdConfig::new(0.01)
        }),
        OptimizerConfig::Sgd(SgdConfig::new(0.01)),
        OptimizerConfig::Adam(AdamConfig {
            amsgrad: true,
            ..AdamConfig::adam(1e-3)
        }),
        OptimizerConfig::Adam(AdamConfig::adamw(1e-3)),
    ] {
        let params = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let grad = ArrayD::from_elem(IxDyn(s), 0.5);
                (
                    format!("p{i}"),
                    Param {
                        value: ArrayD::from_elem(IxDyn(s), 1.0),
                        grad,
                        requires_grad: true,
                    },
                )
            })
            .collect();
        let mut model = Model {
            params,
            running_mean: ArrayD::zeros(IxDyn(&[4])),
        };
        let mut optimizer = config.build().expect("valid config");
        let start = allocations();
        optimizer.step(&mut model).expect("first step");
        let before = allocations();
        assert!(
            before > start,
            "the counter sees the first step size the optimizer's state"
        );
        for _ in 0..3 {
            optimizer.step(&mut model).expect("step");
        }
        assert_eq!(
            allocations() - before,
            0,
            "{config:?} allocated after its first step"
        );
    }
}
