//! The execution plan, computed once from a checked model: which layers run as steps and which
//! are applied by a step before them (fusion), which activation buffers each step reads and
//! writes, and which gradient buffers backward passes between steps. The dynamic executor
//! interprets it; code generation writes it out; both therefore compute the same way.
//!
//! Fusion is decided by data flow: a producer whose output has exactly one consumer, the next
//! layer, may apply that consumer itself. A (dense) convolution or a batch norm applies the ReLU
//! it feeds; a convolution then also the max pool that ReLU feeds when the pool's windows tile
//! the convolution's output ([`crate::config::Pool2dConfig::tiles`]); any other max pool fed by
//! a fused ReLU masks the gradient for it instead.
//!
//! Buffers follow liveness. Each step's output is an activation buffer of its own
//! ([`Plan::buffers`]); backward reads many of them again, and training keeps those until then
//! (see [`Plan::storage`] below). A gradient buffer holds the gradient of one step's output from
//! the moment its last consumer (in forward order) writes it until that step's backward has read
//! it; then it is free again, which for a chain of steps leaves two, used in turn. A tensor several layers read gets their parts of its gradient
//! summed in one fixed order, the order backward visits them (descending consumer index, a
//! consumer's inputs in order): the first part is written, the others added ([`GradTo`]), so the
//! sum does not depend on the number of threads. A layer whose output nothing reads (and which
//! is not the last) runs forward but not backward ([`Grad::Unused`]).
//!
//! Training stores the activation buffers by liveness too ([`Plan::storage`]): a buffer that no
//! backward reads (a batch norm's output that only an add reads, the add's output that only a
//! ReLU reads, which differentiates from its own output) lives only until its last reader's
//! forward, in a slot later such buffers reuse; every other buffer keeps a slot of its own.

use crate::config::{LayerConfig, Source};
use crate::model::Model;
use crate::shape::Shape;

/// What a step applies besides its own layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// Nothing.
    None,
    /// The ReLU after it (`layer + 1`): a dense convolution or a batch norm applies it as it
    /// stores its output.
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
    /// Nothing reads the step's output (a graph branch that does not reach the model's output):
    /// its backward does not run and its parameters' gradients are zero.
    Unused,
}

/// Where a step's backward puts the gradient of one of its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradTo {
    /// Nowhere: the input is the model's input, or the step does not run backward.
    Discard,
    /// Gradient buffer `n`, overwritten: the first part of the input's gradient.
    Write(usize),
    /// Added to gradient buffer `into`, which holds the parts of later consumers already. A
    /// merge layer adds in place; a one-input layer writes to gradient buffer `scratch` (given
    /// for one-input layers only), which the caller then adds into `into`.
    Add {
        /// The buffer that accumulates the input's gradient.
        into: usize,
        /// Where a one-input layer writes its part first.
        scratch: Option<usize>,
    },
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
    /// Activation buffer of the (first) input (0 is the model input).
    pub input: usize,
    /// Activation buffer of each input of the layer, in order (`[input]` for one-input layers).
    pub inputs: Vec<usize>,
    /// Activation buffer written.
    pub output: usize,
    /// The layer is a max pool fed by a ReLU fused into the step before: its backward masks
    /// the gradient by that ReLU (`Layer::mask_relu_grad`).
    pub masks_relu_grad: bool,
    /// The next step masks the gradient of this step's fused ReLU (`Layer::relu_grad_masked`).
    pub relu_grad_masked: bool,
    /// Where backward reads the gradient of the output.
    pub dy: Grad,
    /// The gradient buffer a one-input layer's backward writes its input gradient to (`None`
    /// when the input is the data, or the step does not run backward): the buffer of
    /// [`GradTo::Write`], or the scratch of [`GradTo::Add`].
    pub dx: Option<usize>,
    /// Where the gradient of each input goes, in the order of [`Step::inputs`].
    pub dxs: Vec<GradTo>,
}

/// What a step's backward reads of the activations around it, as its layer says
/// (`Layer::backward_reads` in the runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reads {
    /// The step's input buffers (all of them, for a merge).
    pub inputs: bool,
    /// The step's output buffer.
    pub output: bool,
}

impl Reads {
    /// Both: what a layer is assumed to read unless it says otherwise.
    pub const ALL: Reads = Reads {
        inputs: true,
        output: true,
    };
}

/// Where a training pass stores each activation buffer of a plan ([`Plan::storage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// The slot of each activation buffer.
    pub slot: Vec<usize>,
    /// Per-sample length of each slot: the largest buffer it holds.
    pub len: Vec<usize>,
    /// Whether each activation buffer keeps its values until backward (its slot is its own);
    /// the others are overwritten once their last reader's forward has run.
    pub kept: Vec<bool>,
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

impl Plan {
    /// Plans `model`.
    pub fn new(model: &Model) -> Plan {
        let layers = model.layers();
        let consumers = model.consumers();
        // The one layer reading layer `i`, when it is the next one: what a step may apply.
        let next_sole = |i: usize| match consumers[i].as_slice() {
            [only] if *only == i + 1 => Some(*only),
            _ => None,
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut step_of = vec![0; layers.len()];
        let mut buffers = vec![model.input_shape()];
        let mut i = 0;
        while i < layers.len() {
            let mut fusion = Fusion::None;
            let mut last = i;
            // A grouped convolution runs its own stencil, which applies no ReLU.
            let dense_conv = matches!(layers[i].config(), LayerConfig::Conv2d(c) if c.groups == 1);
            let applies_relu =
                dense_conv || matches!(layers[i].config(), LayerConfig::BatchNorm2d(_));
            let relu = next_sole(i)
                .filter(|&r| applies_relu && matches!(layers[r].config(), LayerConfig::Relu));
            let mut masked_pool = None;
            if let Some(relu) = relu {
                fusion = Fusion::Relu;
                last = relu;
                if let Some(pool) = next_sole(relu)
                    && let LayerConfig::MaxPool2d(p) = layers[pool].config()
                {
                    // Only a convolution pools as it stores; a batch norm's pool masks the
                    // ReLU's gradient instead.
                    let tiles = match layers[i].output_shape() {
                        Shape::Chw([_, h, w]) => dense_conv && p.tiles([h, w]),
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
            // A layer read from outside its step is its step's last (fusion needs a sole
            // reader), so every source is a step's output or the model's input.
            let inputs: Vec<usize> = layers[i]
                .inputs()
                .iter()
                .map(|source| match *source {
                    Source::Input => 0,
                    Source::Layer(j) => steps[step_of[j]].output,
                })
                .collect();
            buffers.push(layers[last].output_shape());
            steps.push(Step {
                layer: i,
                fusion,
                last,
                input: inputs[0],
                inputs,
                output: buffers.len() - 1,
                masks_relu_grad: steps
                    .last()
                    .is_some_and(|s| s.relu_grad_masked && s.last + 1 == i),
                relu_grad_masked: masked_pool.is_some(),
                dy: Grad::Logits,
                dx: None,
                dxs: Vec::new(),
            });
            i = last + 1;
        }
        let grad_buffers = plan_gradients(model, &mut steps, &step_of);
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

    /// Stores the activation buffers for training, given what each step's backward reads
    /// (`reads[k]` for step `k`; a missing entry counts as [`Reads::ALL`]). The model's input and
    /// output, and every buffer a backward that runs reads, keep a slot of their own; any other
    /// buffer takes a shared slot when its step writes it and frees it once the last step
    /// reading it has run forward (after that step took its own output's slot, so a step never
    /// writes where it reads). A free slot goes to the next buffer if it is large enough (the
    /// smallest such), else the largest free one grows.
    pub fn storage(&self, reads: &[Reads]) -> Storage {
        let n = self.buffers.len();
        let mut kept = vec![false; n];
        kept[0] = true;
        kept[self.output()] = true;
        let mut last_read = vec![None; n];
        for (k, step) in self.steps.iter().enumerate() {
            let r = match step.dy {
                // Its backward does not run.
                Grad::Unused => Reads {
                    inputs: false,
                    output: false,
                },
                _ => reads.get(k).copied().unwrap_or(Reads::ALL),
            };
            kept[step.output] |= r.output;
            for &b in &step.inputs {
                kept[b] |= r.inputs;
                last_read[b] = Some(k);
            }
        }
        let mut slot = vec![0; n];
        let mut len: Vec<usize> = Vec::new();
        for b in (0..n).filter(|&b| kept[b]) {
            slot[b] = len.len();
            len.push(self.buffers[b].numel());
        }
        let mut free: Vec<usize> = Vec::new();
        for (k, step) in self.steps.iter().enumerate() {
            let out = step.output;
            if !kept[out] {
                let need = self.buffers[out].numel();
                let fitting = free
                    .iter()
                    .enumerate()
                    .filter(|&(_, &s)| len[s] >= need)
                    .min_by_key(|&(_, &s)| len[s]);
                let best =
                    fitting.or_else(|| free.iter().enumerate().max_by_key(|&(_, &s)| len[s]));
                slot[out] = match best.map(|(i, _)| i) {
                    Some(i) => {
                        let s = free.swap_remove(i);
                        len[s] = len[s].max(need);
                        s
                    }
                    None => {
                        len.push(need);
                        len.len() - 1
                    }
                };
                // A buffer nothing reads is free at once.
                if last_read[out].is_none() {
                    free.push(slot[out]);
                }
            }
            for &b in &step.inputs {
                if !kept[b] && last_read[b] == Some(k) && !free.contains(&slot[b]) {
                    free.push(slot[b]);
                }
            }
        }
        Storage { slot, len, kept }
    }
}

/// Assigns every step's gradient buffers (`dy`, `dx`, `dxs`) by liveness in backward order;
/// returns how many buffers there are.
fn plan_gradients(model: &Model, steps: &mut [Step], step_of: &[usize]) -> usize {
    let layers = model.layers();
    // Whether a step's output reaches the model's output (the last step's does).
    let mut live = vec![false; steps.len()];
    if let Some(last) = live.last_mut() {
        *last = true;
    }
    for k in (0..steps.len()).rev() {
        if live[k] {
            for source in layers[steps[k].layer].inputs() {
                if let Source::Layer(j) = *source {
                    live[step_of[j]] = true;
                }
            }
        }
    }
    // The gradient buffer of each step's output, from its first part until its backward.
    let mut grad_of: Vec<Option<usize>> = vec![None; steps.len()];
    let mut free: Vec<usize> = Vec::new();
    let mut count = 0;
    let mut take = |free: &mut Vec<usize>| {
        free.pop().unwrap_or_else(|| {
            count += 1;
            count - 1
        })
    };
    let last_step = steps.len().saturating_sub(1);
    for k in (0..steps.len()).rev() {
        let step = &mut steps[k];
        if !live[k] {
            step.dy = Grad::Unused;
            step.dxs = vec![GradTo::Discard; step.inputs.len()];
            continue;
        }
        step.dy = match grad_of[k] {
            _ if k == last_step => Grad::Logits,
            Some(b) => Grad::Buffer(b),
            // Unreachable: a live step's output is read by a live step, which gave it a buffer.
            None => Grad::Unused,
        };
        let one_input = layers[step.layer].inputs().len() == 1;
        let mut scratches = Vec::new();
        step.dxs = layers[step.layer]
            .inputs()
            .iter()
            .map(|source| match *source {
                Source::Input => GradTo::Discard,
                Source::Layer(j) => {
                    let s = step_of[j];
                    match grad_of[s] {
                        None => {
                            let b = take(&mut free);
                            grad_of[s] = Some(b);
                            GradTo::Write(b)
                        }
                        Some(into) => {
                            let scratch = one_input.then(|| take(&mut free));
                            scratches.extend(scratch);
                            GradTo::Add { into, scratch }
                        }
                    }
                }
            })
            .collect();
        step.dx = match step.dxs[0] {
            GradTo::Write(b) => Some(b),
            GradTo::Add { scratch, .. } => scratch,
            GradTo::Discard => None,
        };
        free.extend(scratches);
        if let Grad::Buffer(read) = step.dy {
            free.insert(0, read);
        }
    }
    // Numbered from the end, so that the first buffer written is the highest (the order
    // generated code has always used).
    let renumber = |b: usize| count - 1 - b;
    for step in steps.iter_mut() {
        step.dx = step.dx.map(renumber);
        if let Grad::Buffer(b) = step.dy {
            step.dy = Grad::Buffer(renumber(b));
        }
        for to in &mut step.dxs {
            *to = match *to {
                GradTo::Discard => GradTo::Discard,
                GradTo::Write(b) => GradTo::Write(renumber(b)),
                GradTo::Add { into, scratch } => GradTo::Add {
                    into: renumber(into),
                    scratch: scratch.map(renumber),
                },
            };
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Conv2dConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig};

    fn graph(input: [usize; 3], layers: Vec<(LayerConfig, Vec<Source>)>) -> Plan {
        let def = NetworkDef {
            input,
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, (config, inputs))| LayerDef {
                    name: i.to_string(),
                    config,
                    inputs,
                })
                .collect(),
        };
        Plan::new(&Model::new(None, def).unwrap())
    }

    fn conv(cin: usize) -> LayerConfig {
        LayerConfig::Conv2d(Conv2dConfig {
            in_channels: cin,
            out_channels: 2,
            kernel_size: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            padding_end: [1, 1],
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
            dilation: [1, 1],
            count_include_pad: true,
            divisor_override: None,
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
            LayerConfig::FLATTEN,
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
            LayerConfig::FLATTEN,
            linear(72),
        ]);
        let steps = plan.steps();
        assert_eq!(steps[0].fusion, Fusion::Relu);
        assert!(steps[0].relu_grad_masked);
        assert!(steps[1].masks_relu_grad && steps[1].layer == 2);
        assert!(!steps[2].masks_relu_grad);
    }

    fn bn(c: usize) -> LayerConfig {
        LayerConfig::BatchNorm2d(crate::config::BatchNorm2dConfig::new(c))
    }

    #[test]
    fn a_batch_norm_applies_the_relu_after_it_but_no_pool() {
        let plan = plan(vec![
            conv(1),
            bn(2),
            LayerConfig::Relu,
            pool(2, 2),
            LayerConfig::FLATTEN,
            linear(32),
        ]);
        let steps = plan.steps();
        assert_eq!(steps.len(), 5);
        assert_eq!((steps[0].fusion, steps[0].last), (Fusion::None, 0));
        assert_eq!(
            (steps[1].layer, steps[1].fusion, steps[1].last),
            (1, Fusion::Relu, 2)
        );
        assert!(plan.is_fused(2) && !plan.is_fused(3));
        // The pool tiles, but only a convolution pools as it stores: it masks the gradient.
        assert!(steps[1].relu_grad_masked);
        assert!(steps[2].masks_relu_grad && steps[2].layer == 3);
        assert_eq!(plan.buffers()[2], Shape::Chw([2, 8, 8]));
    }

    #[test]
    fn relu_after_anything_else_runs_alone() {
        let plan = plan(vec![LayerConfig::FLATTEN, LayerConfig::Relu, linear(64)]);
        assert_eq!(plan.steps().len(), 3);
        assert!(plan.steps().iter().all(|s| s.fusion == Fusion::None));
        assert_eq!(plan.output(), 3);
    }

    #[test]
    fn a_sequential_plan_writes_every_input_gradient_once() {
        let plan = plan(vec![conv(1), LayerConfig::FLATTEN, linear(128)]);
        for (k, step) in plan.steps().iter().enumerate() {
            assert_eq!(step.inputs, [step.input]);
            let expected = step.dx.map_or(GradTo::Discard, GradTo::Write);
            assert_eq!(step.dxs, [expected], "step {k}");
        }
    }

    #[test]
    fn a_shortcut_adds_its_gradient_to_the_branchs() {
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                            // 0
                (LayerConfig::Relu, vec![]),                                  // 1, fused
                (conv(2), vec![]),                                            // 2
                (LayerConfig::Add, vec![Source::Layer(2), Source::Layer(1)]), // 3
                (LayerConfig::FLATTEN, vec![]),                               // 4
                (linear(128), vec![]),                                        // 5
            ],
        );
        let steps = plan.steps();
        assert_eq!(steps.len(), 5);
        assert_eq!((steps[0].fusion, steps[0].last), (Fusion::Relu, 1));
        assert_eq!(steps[2].inputs, [2, 1]);
        assert_eq!(plan.step_of(3).layer, 3);
        // Backward: the add writes the gradients of both its inputs; the convolution reading
        // the ReLU's output is its second reader in backward order, so its part is added.
        assert_eq!(steps[4].dy, Grad::Logits);
        assert_eq!(steps[4].dxs, [GradTo::Write(2)]);
        assert_eq!(steps[3].dy, Grad::Buffer(2));
        assert_eq!(steps[3].dxs, [GradTo::Write(1)]);
        assert_eq!(steps[2].dy, Grad::Buffer(1));
        assert_eq!(steps[2].dxs, [GradTo::Write(2), GradTo::Write(0)]);
        assert_eq!(steps[1].dy, Grad::Buffer(2));
        assert_eq!(
            steps[1].dxs,
            [GradTo::Add {
                into: 0,
                scratch: Some(1)
            }]
        );
        assert_eq!(steps[1].dx, Some(1));
        assert_eq!(steps[0].dy, Grad::Buffer(0));
        assert_eq!(
            (steps[0].dxs.as_slice(), steps[0].dx),
            ([GradTo::Discard].as_slice(), None)
        );
        assert_eq!(plan.grad_buffers(), 3);
    }

    #[test]
    fn a_layer_read_twice_by_one_merge_adds_in_place() {
        let plan = graph(
            [1, 4, 4],
            vec![
                (LayerConfig::FLATTEN, vec![]),
                (LayerConfig::Mul, vec![Source::Layer(0), Source::Layer(0)]),
            ],
        );
        let steps = plan.steps();
        assert_eq!(
            steps[1].dxs,
            [
                GradTo::Write(0),
                GradTo::Add {
                    into: 0,
                    scratch: None
                }
            ]
        );
        assert_eq!(steps[0].dy, Grad::Buffer(0));
    }

    #[test]
    fn a_branch_nothing_reads_runs_no_backward() {
        let plan = graph(
            [1, 4, 4],
            vec![
                (LayerConfig::FLATTEN, vec![]),
                (linear(16), vec![]),                        // dead
                (LayerConfig::Relu, vec![Source::Layer(1)]), // dead
                (linear(16), vec![Source::Layer(0)]),
            ],
        );
        let steps = plan.steps();
        assert_eq!(steps[1].dy, Grad::Unused);
        assert_eq!(steps[2].dy, Grad::Unused);
        assert_eq!(steps[2].dxs, [GradTo::Discard]);
        assert_eq!(steps[1].dx, None);
        assert_eq!(steps[3].dxs, [GradTo::Write(0)]);
        assert_eq!(steps[0].dy, Grad::Buffer(0));
        assert_eq!(plan.grad_buffers(), 1);
    }

    #[test]
    fn fusion_needs_the_next_layer_to_be_the_only_reader() {
        // The convolution's output is read by the ReLU and the add: nothing fuses.
        let plan = graph(
            [1, 8, 8],
            vec![
                (conv(1), vec![]),
                (LayerConfig::Relu, vec![]),
                (LayerConfig::Add, vec![Source::Layer(1), Source::Layer(0)]),
            ],
        );
        assert!(plan.steps().iter().all(|s| s.fusion == Fusion::None));
        // The ReLU reads the convolution, but not as the next layer: nothing fuses either.
        let plan = graph(
            [1, 8, 8],
            vec![
                (conv(1), vec![]),
                (LayerConfig::Identity, vec![Source::Input]),
                (LayerConfig::Relu, vec![Source::Layer(0)]),
                (
                    LayerConfig::Concat(crate::config::ConcatConfig { dim: 1 }),
                    vec![Source::Layer(2), Source::Layer(1)],
                ),
            ],
        );
        assert_eq!(plan.steps().len(), 4);
        assert_eq!(plan.steps()[2].inputs, [1]);
    }

    /// What the runtime's layers say their backward reads, by kind and fusion.
    fn reads(plan: &Plan, layers: &[LayerConfig]) -> Vec<Reads> {
        plan.steps()
            .iter()
            .map(|step| match &layers[step.layer] {
                LayerConfig::Conv2d(_) | LayerConfig::BatchNorm2d(_) => Reads {
                    inputs: true,
                    output: step.fusion != Fusion::None,
                },
                LayerConfig::Add | LayerConfig::Flatten { .. } => Reads {
                    inputs: false,
                    output: false,
                },
                LayerConfig::Relu => Reads {
                    inputs: false,
                    output: true,
                },
                _ => Reads::ALL,
            })
            .collect()
    }

    #[test]
    fn buffers_no_backward_reads_share_slots_and_the_rest_keep_their_own() {
        // Two residual blocks: conv, bn + relu, conv, bn, add, relu.
        let mut layers: Vec<(LayerConfig, Vec<Source>)> = Vec::new();
        for block in 0..2 {
            let input = match block {
                0 => Source::Input,
                _ => Source::Layer(layers.len() - 1),
            };
            let at = layers.len();
            layers.push((conv(2), vec![input]));
            layers.push((bn(2), vec![]));
            layers.push((LayerConfig::Relu, vec![]));
            layers.push((conv(2), vec![]));
            layers.push((bn(2), vec![]));
            let sum = vec![Source::Layer(at + 4), input];
            layers.push((LayerConfig::Add, sum));
            layers.push((LayerConfig::Relu, vec![]));
        }
        layers.push((LayerConfig::FLATTEN, vec![]));
        layers.push((linear(128), vec![]));
        let configs: Vec<LayerConfig> = layers.iter().map(|(c, _)| c.clone()).collect();
        let plan = graph([2, 8, 8], layers);
        let storage = plan.storage(&reads(&plan, &configs));
        let steps = plan.steps();
        // Per block: conv, bn+relu, conv, bn, add, relu; then flatten, linear.
        assert_eq!(steps.len(), 14);
        let transient: Vec<usize> = (0..plan.buffers().len())
            .filter(|&b| !storage.kept[b])
            .collect();
        // Each block's second batch norm (read only by the add) and its add (read only by a
        // ReLU, which differentiates from its output).
        assert_eq!(transient, [4, 5, 10, 11]);
        // Two shared slots serve all four, besides one per kept buffer.
        let kept = storage.kept.iter().filter(|&&k| k).count();
        assert_eq!(storage.len.len(), kept + 2);
        assert_eq!(storage.slot[4], storage.slot[10]);
        assert_eq!(storage.slot[5], storage.slot[11]);
        assert_ne!(storage.slot[4], storage.slot[5]);
        // Kept buffers have slots of their own, of their own length.
        for b in (0..plan.buffers().len()).filter(|&b| storage.kept[b]) {
            let sharing = storage
                .slot
                .iter()
                .filter(|&&s| s == storage.slot[b])
                .count();
            assert_eq!(sharing, 1, "buffer {b}");
            assert_eq!(storage.len[storage.slot[b]], plan.buffers()[b].numel());
        }
        // No step writes a slot it reads.
        for step in steps {
            for &b in &step.inputs {
                assert_ne!(storage.slot[b], storage.slot[step.output], "{step:?}");
            }
        }
        // Layers that say nothing keep every buffer.
        let all = plan.storage(&[]);
        assert!(all.kept.iter().all(|&k| k));
        assert_eq!(all.len.len(), plan.buffers().len());
    }

    #[test]
    fn an_output_only_a_relu_reads_is_not_kept() {
        // flatten (read by nothing that keeps it) -> relu -> flatten -> linear: the first
        // flatten's output is only read by the ReLU, which reads its own output.
        let plan = plan(vec![
            LayerConfig::FLATTEN,
            LayerConfig::Relu,
            LayerConfig::FLATTEN,
            linear(64),
        ]);
        let configs = [
            LayerConfig::FLATTEN,
            LayerConfig::Relu,
            LayerConfig::FLATTEN,
            linear(64),
        ];
        let storage = plan.storage(&reads(&plan, &configs));
        assert_eq!(storage.kept, [true, false, true, true, true]);
        assert_eq!(storage.len.len(), 5);
        assert_eq!(storage.len[storage.slot[1]], 64);
    }
}
