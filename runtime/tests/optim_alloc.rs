//! Optimizer steps after the first allocate nothing: counted with a global allocator that tallies
//! the allocations of the current thread (so the test harness's own threads do not interfere).

mod common;

use cnnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use cnnc_runtime::param::{Entry, Param, Visit};
use common::counting::{Counting, allocations};
use ndarray::{ArrayD, IxDyn};

#[global_allocator]
static GLOBAL: Counting = Counting;

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
        let first = allocations(|| optimizer.step(&mut model).expect("first step"));
        assert!(
            first > 0,
            "the counter sees the first step size the optimizer's state"
        );
        let later = allocations(|| {
            for _ in 0..3 {
                optimizer.step(&mut model).expect("step");
            }
        });
        assert_eq!(later, 0, "{config:?} allocated after its first step");
    }
}
