//! The execution plan, computed once from a checked model: which layers run as steps and which
//! are applied by a step before them (fusion), which activation buffer each step reads and
//! writes, and which gradient buffers backward passes between steps. The dynamic executor
//! interprets it; code generation writes it out; both therefore compute the same way.
//!
//! Fusion is decided by data flow: a producer whose output has exactly one consumer may apply
//! that consumer itself. A convolution applies the ReLU it feeds, and then the max pool that ReLU
//! feeds when the pool's windows tile the convolution's output ([`pool_tiles`]); a max pool fed
//! by a fused ReLU masks the gradient for it instead.
//!
//! Buffers follow liveness. Backward reads every step's input and output again, so in training
//! each step's output keeps a buffer of its own until then; a gradient buffer is free again as
//! soon as the step that reads it is done, which for a chain of steps leaves two, used in turn.

use crate::config::LayerConfig;
use crate::geometry::pool_tiles;
use crate::model::Model;
use crate::shape::Shape;

/// What a step applies besides its own layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// Nothing.
    None,
    /// The ReLU after it (`layer + 1`).
    Relu,
    /// The ReLU after it and the max pool after that (`layer + 2`).
    ReluMaxPool,
}

/// Where a step's backward reads the gradient of its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grad {
    /// The loss gradient with respect to the logits (the last step).
    Logits,
    /// Gradient buffer `n`.
    Buffer(usize),
}

/// One step of the forward pass: a layer, and the layers it applies ([`Fusion`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The layer that runs.
    pub layer: usize,
    /// The layers after it that it applies.
    pub fusion: Fusion,
    /// The last layer it applies (its output is the step's).
    pub last: usize,
    /// Activation buffer read (0 is the model input).
    pub input: usize,
    /// Activation buffer written.
    pub output: usize,
    /// The layer is a max pool fed by a ReLU fused into the step before: its backward masks
    /// the gradient by that ReLU (`Layer::mask_relu_grad`).
    pub masks_relu_grad: bool,
    /// The next step masks the gradient of this step's fused ReLU (`Layer::relu_grad_masked`).
    pub relu_grad_masked: bool,
    /// Where backward reads the gradient of the output.
    pub dy: Grad,
    /// The gradient buffer backward writes the input gradient to (`None` for the first step,
    /// whose input is the data).
    pub dx: Option<usize>,
}

/// The plan of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<Step>,
    /// Per-sample shape of each activation buffer (0 is the input).
    buffers: Vec<Shape>,
    /// Number of gradient buffers backward uses.
    grad_buffers: usize,
    /// Step index of every layer (the step that runs or applies it).
    step_of: Vec<usize>,
}

/// The layers that read each layer's output: in a sequential model, the next one (none for the
/// last, whose output goes to the loss).
fn consumers(model: &Model) -> Vec<Vec<usize>> {
    let n = model.layers().len();
    (0..n)
        .map(|i| if i + 1 < n { vec![i + 1] } else { Vec::new() })
        .collect()
}

impl Plan {
    /// Plans `model`.
    pub fn new(model: &Model) -> Plan {
        let layers = model.layers();
        let consumers = consumers(model);
        let sole = |i: usize| match consumers[i].as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut step_of = vec![0; layers.len()];
        let mut buffers = vec![model.input_shape()];
        let mut i = 0;
        while i < layers.len() {
            let mut fusion = Fusion::None;
            let mut last = i;
            let relu = sole(i).filter(|&r| {
                // A grouped convolution runs its own stencil, which applies no ReLU.
                matches!(layers[i].config(), LayerConfig::Conv2d(c) if c.groups == 1)
                    && matches!(layers[r].config(), LayerConfig::Relu)
            });
            let mut masked_pool = None;
            if let Some(relu) = relu {
                fusion = Fusion::Relu;
                last = relu;
                if let Some(pool) = sole(relu)
                    && let LayerConfig::MaxPool2d(p) = layers[pool].config()
                {
                    let tiles = match layers[i].output_shape() {
                        Shape::Chw([_, h, w]) => {
                            pool_tiles([h, w], p.kernel_size, p.stride, p.padding)
                        }
                        Shape::Flat(_) => false,
                    };
                    if tiles {
                        fusion = Fusion::ReluMaxPool;
                        last = pool;
                    } else {
                        masked_pool = Some(pool);
                    }
                }
            }
            let index = steps.len();
            step_of[i..=last].fill(index);
            let input = steps.last().map_or(0, |s: &Step| s.output);
            buffers.push(layers[last].output_shape());
            steps.push(Step {
                layer: i,
                fusion,
                last,
                input,
                output: buffers.len() - 1,
                masks_relu_grad: steps
                    .last()
                    .is_some_and(|s| s.relu_grad_masked && s.last + 1 == i),
                relu_grad_masked: masked_pool.is_some(),
                dy: Grad::Logits,
                dx: None,
            });
            i = last + 1;
        }
        // Backward visits the steps in reverse; each writes its input gradient to a free buffer,
        // and the buffer it read is free once it is done.
        let mut free: Vec<usize> = Vec::new();
        let mut grad_buffers = 0;
        let mut pending = Grad::Logits;
        for (k, step) in steps.iter_mut().enumerate().rev() {
            step.dy = pending;
            if k > 0 {
                let buffer = free.pop().unwrap_or_else(|| {
                    grad_buffers += 1;
                    grad_buffers - 1
                });
                step.dx = Some(buffer);
                pending = Grad::Buffer(buffer);
            }
            if let Grad::Buffer(read) = step.dy {
                free.insert(0, read);
            }
        }
        // Numbered from the end, so that the first buffer written is the highest (the order
        // generated code has always used).
        let renumber = |b: usize| grad_buffers - 1 - b;
        for step in &mut steps {
            step.dx = step.dx.map(renumber);
            if let Grad::Buffer(b) = step.dy {
                step.dy = Grad::Buffer(renumber(b));
            }
        }
        Plan {
            steps,
            buffers,
            grad_buffers,
            step_of,
        }
    }

    /// The steps, in forward order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Per-sample shape of each activation buffer; buffer 0 holds the input.
    pub fn buffers(&self) -> &[Shape] {
        &self.buffers
    }

    /// Number of gradient buffers, each as large as the largest activation.
    pub fn grad_buffers(&self) -> usize {
        self.grad_buffers
    }

    /// The step that runs or applies layer `layer`.
    pub fn step_of(&self, layer: usize) -> &Step {
        &self.steps[self.step_of[layer]]
    }

    /// Whether layer `layer` is applied by a step of an earlier layer (skipped when running).
    pub fn is_fused(&self, layer: usize) -> bool {
        self.step_of(layer).layer != layer
    }

    /// The activation buffer holding the model's output.
    pub fn output(&self) -> usize {
        self.buffers.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Conv2dConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig};

    fn conv(cin: usize) -> LayerConfig {
        LayerConfig::Conv2d(Conv2dConfig {
            in_channels: cin,
            out_channels: 2,
            kernel_size: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
            bias: true,
            padding_mode: Default::default(),
        })
    }

    fn pool(k: usize, s: usize) -> LayerConfig {
        LayerConfig::MaxPool2d(Pool2dConfig {
            kernel_size: [k, k],
            stride: [s, s],
            padding: [0, 0],
            ceil_mode: false,
        })
    }

    fn plan(layers: Vec<LayerConfig>) -> Plan {
        let def = NetworkDef {
            input: [1, 8, 8],
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, config)| LayerDef {
                    name: i.to_string(),
                    config,
                    inputs: vec![],
                })
                .collect(),
        };
        Plan::new(&Model::new(None, def).unwrap())
    }

    fn linear(n: usize) -> LayerConfig {
        LayerConfig::Linear(LinearConfig {
            in_features: n,
            out_features: 3,
            bias: true,
        })
    }

    #[test]
    fn conv_relu_tiling_pool_is_one_step() {
        let plan = plan(vec![
            conv(1),
            LayerConfig::Relu,
            pool(2, 2),
            LayerConfig::Flatten,
            linear(32),
        ]);
        let steps = plan.steps();
        assert_eq!(steps.len(), 3);
        assert_eq!((steps[0].fusion, steps[0].last), (Fusion::ReluMaxPool, 2));
        assert!(plan.is_fused(1) && plan.is_fused(2) && !plan.is_fused(3));
        assert_eq!(plan.buffers()[1], Shape::Chw([2, 4, 4]));
        assert_eq!((steps[1].input, steps[1].output), (1, 2));
        // Backward: the last step reads the logits' gradient, then buffers alternate.
        assert_eq!((steps[2].dy, steps[2].dx), (Grad::Logits, Some(1)));
        assert_eq!((steps[1].dy, steps[1].dx), (Grad::Buffer(1), Some(0)));
        assert_eq!((steps[0].dy, steps[0].dx), (Grad::Buffer(0), None));
        assert_eq!(plan.grad_buffers(), 2);
    }

    #[test]
    fn an_overlapping_pool_masks_the_fused_relu_instead() {
        let plan = plan(vec![
            conv(1),
            LayerConfig::Relu,
            pool(3, 1),
            LayerConfig::Flatten,
            linear(72),
        ]);
        let steps = plan.steps();
        assert_eq!(steps[0].fusion, Fusion::Relu);
        assert!(steps[0].relu_grad_masked);
        assert!(steps[1].masks_relu_grad && steps[1].layer == 2);
        assert!(!steps[2].masks_relu_grad);
    }

    #[test]
    fn relu_after_anything_else_runs_alone() {
        let plan = plan(vec![LayerConfig::Flatten, LayerConfig::Relu, linear(64)]);
        assert_eq!(plan.steps().len(), 3);
        assert!(plan.steps().iter().all(|s| s.fusion == Fusion::None));
        assert_eq!(plan.output(), 3);
    }
}
