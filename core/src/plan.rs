//! The execution plan, computed once from a checked model: which layers run as steps and which
//! are applied by a step before them (fusion), which activation buffers each step reads and
//! writes, and which gradient buffers backward passes between steps. The dynamic executor
//! interprets it; code generation writes it out; both therefore compute the same way.
//!
//! Fusion is decided by data flow: a producer whose output has exactly one consumer, the next
//! layer, may apply that consumer itself. A (dense) convolution, a batch norm or an add applies
//! the ReLU it feeds (a residual block's last ReLU, in training too: one pass over the sum each
//! way instead of two); a convolution then also the max pool that ReLU feeds when the pool's
//! windows tile the convolution's output ([`crate::config::Pool2dConfig::tiles`]); any other
//! max pool fed by a fused ReLU masks the gradient for it instead.
//!
//! Inference has steps of its own ([`Plan::eval_steps`]), over the same buffers: a convolution
//! whose output only an eval-mode batch norm reads applies that batch norm as it stores its
//! output, then the residual add that reads the batch norm (the add's other input read from its
//! buffer) and the ReLU or ReLU6 after them ([`Epilogue`]). Training keeps the convolution's own
//! output, which the batch norm's batch statistics and every backward read, so its steps stay
//! as they are. A concatenation whose inputs dense convolutions make for it alone needs no
//! inference step: they store into their channels of its buffer ([`Slice`]).
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
//! backward reads (a batch norm's output that only an add reads) lives only until its last
//! reader's forward, in a slot later such buffers reuse; every other buffer keeps a slot of its
//! own.
//!
//! A training step may run together with a step next to it where the buffers allow ([`Join`],
//! decided once here from the layers and the gradient buffers assigned): a batch norm stores the
//! residual add after it, a batch norm's input gradient is computed by the convolution before
//! it as it stages its `dy`, and an add writes its two equal input gradients once. The executor
//! and generated code run the joins the plan records; every value is that of the steps apart.

use crate::config::{LayerConfig, Source};
use crate::model::Model;
use crate::shape::Shape;

/// What a step applies besides its own layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// Nothing.
    None,
    /// The ReLU after it (`layer + 1`): a dense convolution, a batch norm or an add applies it
    /// as it stores its output.
    Relu,
    /// The ReLU after it and the max pool after that (`layer + 2`).
    ReluMaxPool,
}

/// The activation an inference step's store applies last ([`Epilogue::clamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clamp {
    /// None.
    None,
    /// `torch.nn.ReLU`: `max(v, 0)`.
    Relu,
    /// `torch.nn.ReLU6`: `min(max(v, 0), 6)`.
    Relu6,
}

/// What a convolution applies as it stores each output value `v` of channel `c` in an inference
/// step, in the order the separate layers compute it: `v * scale[c] + shift[c]` with the eval
/// scale and shift of batch norm `norm`, then `+ r` with `r` the value at the same place of
/// activation buffer `residual` (an add's other input), then the clamp. [`Epilogue::NONE`] for
/// every training step and every other layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epilogue {
    /// The batch norm (layer index) whose eval-mode scale and shift the store applies.
    pub norm: Option<usize>,
    /// The activation buffer the store adds (a two-input add's other input).
    pub residual: Option<usize>,
    /// The ReLU or ReLU6 applied last.
    pub clamp: Clamp,
    /// The channels of a concatenation the step writes in place of a buffer of its own.
    pub slice: Option<Slice>,
}

/// Where an inference step stores into a concatenation's buffer: its output is the channels
/// `offset..offset + its own` of each pixel of `channels` (the concatenation then needs no
/// step: its inputs' producers write its buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The first channel written.
    pub offset: usize,
    /// Channels per pixel of the buffer.
    pub channels: usize,
}

impl Epilogue {
    /// Nothing: the layer's own store.
    pub const NONE: Epilogue = Epilogue {
        norm: None,
        residual: None,
        clamp: Clamp::None,
        slice: None,
    };

    /// Whether the store applies nothing.
    pub fn is_none(&self) -> bool {
        *self == Epilogue::NONE
    }
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

/// What a training step runs together with a step next to it ([`Step::join`]): the values
/// are those of the two steps apart, bit for bit, with fewer passes over memory. Empty in
/// every inference step; a run that must see every input gradient (the search for a
/// non-finite value) runs the steps apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Join {
    /// Forward, on a batch norm's step: the next step is a two-input add reading its output,
    /// which nothing else reads (and no backward: the batch norm applies no ReLU, the add masks
    /// by its own output); the batch norm stores the add's output itself, and the add's step
    /// does not run forward (its backward does).
    pub add: Option<JoinedAdd>,
    /// Backward, on a batch norm's step: the step before it is the convolution that makes its
    /// input, read by nothing else; the batch norm hands it its input gradient, which the
    /// convolution computes as it stages its `dy`. The batch norm's input gradient buffer
    /// ([`Step::dx`]) is neither written nor read.
    pub norm_grad: Option<JoinedNormGrad>,
    /// Backward, on a two-input add's step: the gradient of input `j` (the previous step's
    /// output) is the same values as the other input's, written whole to both; the step is
    /// run writing the other's only, and the previous step reads its `dy` from there
    /// ([`Step::dy`]; nothing writes that buffer before it and the convolution before it
    /// have read it).
    pub same_grad: Option<usize>,
}

impl Join {
    /// No join: the step runs alone.
    pub const NONE: Join = Join {
        add: None,
        norm_grad: None,
        same_grad: None,
    };

    /// Whether the step runs alone.
    pub fn is_none(&self) -> bool {
        *self == Join::NONE
    }
}

/// The residual add a batch norm stores ([`Join::add`]): `relu(bn(x) + r)` (the ReLU when
/// the add applies one) into the add's buffer, the batch norm's own output never written (a
/// sum of two is the same in either order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinedAdd {
    /// Activation buffer of the add's other input (`r`).
    pub residual: usize,
    /// Activation buffer written: the add's output.
    pub output: usize,
    /// Whether the add applies the ReLU after it.
    pub relu: bool,
}

/// Where the convolution before a batch norm puts its own input gradient when it computes the
/// batch norm's as it stages its `dy` ([`Join::norm_grad`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinedNormGrad {
    /// The convolution's [`Step::dxs`]`[0]`, except that a buffer the plan names which is the
    /// one the batch norm's `dy` is read from (still read while the convolution stages it) is
    /// replaced by the batch norm's own gradient buffer, unused now.
    pub conv_dx: GradTo,
    /// The two buffers that then trade places, `[the batch norm's dy, its own gradient]`,
    /// when the convolution wrote its gradient whole where later steps do not look for it;
    /// only buffers of one length ([`Plan::grad_lens`]) trade.
    pub swap: Option<[usize; 2]>,
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
    /// What the convolution applies as it stores its output: in [`Plan::eval_steps`] only
    /// ([`Epilogue::NONE`] in every training step).
    pub epilogue: Epilogue,
    /// What the step runs together with a step next to it: in [`Plan::steps`] only
    /// ([`Join::NONE`] in every inference step).
    pub join: Join,
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
    /// The steps of inference: `steps`, with a convolution's eval-mode epilogue ([`Epilogue`])
    /// in place of the steps it applies.
    eval_steps: Vec<Step>,
    /// Per-sample shape of each activation buffer (0 is the input).
    buffers: Vec<Shape>,
    /// Number of gradient buffers backward uses.
    grad_buffers: usize,
    /// Per-sample length of each gradient buffer.
    grad_lens: Vec<usize>,
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
            let applies_relu = dense_conv
                || matches!(
                    layers[i].config(),
                    LayerConfig::BatchNorm2d(_) | LayerConfig::Add
                );
            let relu = next_sole(i)
                .filter(|&r| applies_relu && matches!(layers[r].config(), LayerConfig::Relu));
            let mut masked_pool = None;
            if let Some(relu) = relu {
                fusion = Fusion::Relu;
                last = relu;
                if let Some(pool) = next_sole(relu)
                    && let LayerConfig::MaxPool2d(p) = layers[pool].config()
                {
                    // Only a convolution pools as it stores; a batch norm's or an add's pool
                    // masks the ReLU's gradient instead.
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
                epilogue: Epilogue::NONE,
                join: Join::NONE,
            });
            i = last + 1;
        }
        let grad_buffers = plan_gradients(model, &mut steps, &step_of);
        let grad_lens = grad_lens(&steps, &buffers, grad_buffers);
        join_steps(model, &mut steps, &grad_lens);
        let eval_steps = plan_eval(model, &steps, &step_of);
        Plan {
            steps,
            eval_steps,
            buffers,
            grad_buffers,
            grad_lens,
            step_of,
        }
    }

    /// The steps, in forward order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The steps of inference (evaluation mode), in forward order: [`Plan::steps`], where a
    /// convolution applies the eval-mode batch norm, residual add and ReLU after it
    /// ([`Step::epilogue`]) in place of their steps. They read and write the same buffers, and
    /// leave the buffers of the steps they replace unwritten. Backward and named activations
    /// use [`Plan::steps`].
    pub fn eval_steps(&self) -> &[Step] {
        &self.eval_steps
    }

    /// Per-sample shape of each activation buffer; buffer 0 holds the input.
    pub fn buffers(&self) -> &[Shape] {
        &self.buffers
    }

    /// Number of gradient buffers.
    pub fn grad_buffers(&self) -> usize {
        self.grad_buffers
    }

    /// The length per sample of each gradient buffer: the largest gradient it holds (an input
    /// gradient a step writes or adds there, or an output gradient a backward reads from it).
    /// ResNet-18 at 32 x 32 needs two buffers as large as the stem's 4 MiB gradient, and a
    /// third only for the residual branches, whose largest gradient is a quarter of that.
    pub fn grad_lens(&self) -> &[usize] {
        &self.grad_lens
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

    /// Stores the activation buffers for training (and for the inference steps, whose buffers
    /// keep slots of their own), given what each step's backward reads
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
        // An inference step with an epilogue reads and writes at other moments than the training
        // steps it replaces (the residual read by the convolution, a concatenation's buffer
        // written by its producers): what it touches keeps a slot of its own, so the training
        // slots serve the inference steps too.
        for step in self.eval_steps.iter().filter(|s| !s.epilogue.is_none()) {
            let touched = step.inputs.iter().chain(&step.epilogue.residual);
            for &b in touched.chain([&step.output]) {
                kept[b] = true;
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

    /// Stores the activation buffers for inference alone ([`Plan::eval_steps`], no backward):
    /// the model's input and output keep a slot of their own; any other buffer takes a shared
    /// slot at the first step that writes it (a concatenation's buffer is written by each of its
    /// producers) and frees it after the last step that reads or writes it (a step's residual
    /// counts as read), so a step never writes where it reads. A free slot goes to the next
    /// buffer as in [`Plan::storage`]. The buffers of the steps the inference steps replace
    /// take no slot (slot 0, never touched).
    pub fn eval_storage(&self) -> Storage {
        let n = self.buffers.len();
        let mut kept = vec![false; n];
        kept[0] = true;
        kept[self.output()] = true;
        let mut last_use = vec![None; n];
        for (k, step) in self.eval_steps.iter().enumerate() {
            let touched = step.inputs.iter().chain(&step.epilogue.residual);
            for &b in touched.chain([&step.output]) {
                last_use[b] = Some(k);
            }
        }
        let mut slot: Vec<Option<usize>> = vec![None; n];
        let mut len: Vec<usize> = Vec::new();
        for b in (0..n).filter(|&b| kept[b]) {
            slot[b] = Some(len.len());
            len.push(self.buffers[b].numel());
        }
        let mut free: Vec<usize> = Vec::new();
        for (k, step) in self.eval_steps.iter().enumerate() {
            let out = step.output;
            if slot[out].is_none() {
                let need = self.buffers[out].numel();
                let fitting = free
                    .iter()
                    .enumerate()
                    .filter(|&(_, &s)| len[s] >= need)
                    .min_by_key(|&(_, &s)| len[s]);
                let best =
                    fitting.or_else(|| free.iter().enumerate().max_by_key(|&(_, &s)| len[s]));
                slot[out] = Some(match best.map(|(i, _)| i) {
                    Some(i) => {
                        let s = free.swap_remove(i);
                        len[s] = len[s].max(need);
                        s
                    }
                    None => {
                        len.push(need);
                        len.len() - 1
                    }
                });
            }
            let touched = step.inputs.iter().chain(&step.epilogue.residual);
            for &b in touched.chain([&out]) {
                if let Some(s) = slot[b]
                    && !kept[b]
                    && last_use[b] == Some(k)
                    && !free.contains(&s)
                {
                    free.push(s);
                }
            }
        }
        Storage {
            slot: slot.into_iter().map(|s| s.unwrap_or(0)).collect(),
            len,
            kept,
        }
    }
}

/// The steps of inference: `steps`, where a convolution whose output feeds an eval-mode batch
/// norm, a two-input add or a ReLU/ReLU6 (each the next layer and the previous one's only
/// reader) applies them as it stores ([`Epilogue`]); the steps of the layers it applies drop out.
/// A dense convolution that applies a ReLU in training already keeps that step; a grouped one
/// applies no residual (its stencil's store is per channel).
fn plan_eval(model: &Model, steps: &[Step], step_of: &[usize]) -> Vec<Step> {
    let layers = model.layers();
    let consumers = model.consumers();
    let next_sole = |i: usize| match consumers[i].as_slice() {
        [only] if *only == i + 1 => Some(*only),
        _ => None,
    };
    let mut eval = Vec::with_capacity(steps.len());
    let mut k = 0;
    while k < steps.len() {
        let step = &steps[k];
        let fused = match layers[step.layer].config() {
            LayerConfig::Conv2d(c) if step.fusion == Fusion::None => {
                epilogue(model, step.layer, c.groups == 1, &next_sole)
            }
            _ => None,
        };
        // The layers applied end a training step (so the buffer the step writes is the one
        // later steps read), and their buffers: the residual is an earlier step's output.
        let fused = fused.and_then(|(mut epilogue, last, other)| {
            let end = step_of[last];
            if steps[end].last != last {
                return None;
            }
            epilogue.residual = other.map(|source| match source {
                Source::Input => 0,
                Source::Layer(j) => steps[step_of[j]].output,
            });
            Some((epilogue, end))
        });
        match fused {
            Some((epilogue, end)) => {
                eval.push(Step {
                    last: steps[end].last,
                    output: steps[end].output,
                    epilogue,
                    join: Join::NONE,
                    ..step.clone()
                });
                k = end + 1;
            }
            None => {
                eval.push(Step {
                    join: Join::NONE,
                    ..step.clone()
                });
                k += 1;
            }
        }
    }
    concat_in_place(model, &mut eval);
    eval
}

/// Removes every concatenation whose inputs dense convolutions produce for it alone: each of
/// those steps stores into its channels of the concatenation's buffer instead ([`Slice`]),
/// applying the ReLU it fuses through its epilogue. A convolution that pools, or adds a
/// residual (laid out with its own channels), keeps its buffer, and so does the concatenation.
fn concat_in_place(model: &Model, eval: &mut Vec<Step>) {
    let layers = model.layers();
    let consumers = model.consumers();
    let mut k = 0;
    while k < eval.len() {
        let concat = &eval[k];
        let width = |shape: Shape| match shape {
            Shape::Chw([c, _, _]) => Some(c),
            Shape::Flat(_) => None,
        };
        let total = width(layers[concat.layer].output_shape());
        let producers: Option<Vec<usize>> = match (layers[concat.layer].config(), total) {
            (LayerConfig::Concat(_), Some(_)) => layers[concat.layer]
                .inputs()
                .iter()
                .map(|source| {
                    let Source::Layer(j) = *source else {
                        return None;
                    };
                    let p = eval[..k].iter().position(|s| s.last == j)?;
                    let step = &eval[p];
                    let dense = matches!(layers[step.layer].config(), LayerConfig::Conv2d(c) if c.groups == 1);
                    let alone = consumers[j] == [concat.layer];
                    let plain = step.fusion != Fusion::ReluMaxPool
                        && step.epilogue.residual.is_none()
                        && step.epilogue.slice.is_none();
                    (dense && alone && plain).then_some(p)
                })
                .collect(),
            _ => None,
        };
        // Each input from a step of its own (not one tensor twice).
        let distinct = |p: &Vec<usize>| p.iter().enumerate().all(|(i, a)| !p[..i].contains(a));
        let (Some(producers), Some(total)) = (producers.filter(distinct), total) else {
            k += 1;
            continue;
        };
        let output = concat.output;
        let mut offset = 0;
        for p in producers {
            let step = &mut eval[p];
            if step.fusion == Fusion::Relu {
                step.epilogue.clamp = Clamp::Relu;
            }
            step.epilogue.slice = Some(Slice {
                offset,
                channels: total,
            });
            step.output = output;
            offset += width(layers[step.last].output_shape()).unwrap_or(0);
        }
        eval.remove(k);
    }
}

/// The epilogue convolution `conv` applies in inference (a dense one, a residual add too), the
/// last layer it applies and the residual add's other input; `None` when it applies nothing.
fn epilogue(
    model: &Model,
    conv: usize,
    dense: bool,
    next_sole: &impl Fn(usize) -> Option<usize>,
) -> Option<(Epilogue, usize, Option<Source>)> {
    let layers = model.layers();
    let mut epilogue = Epilogue::NONE;
    let mut last = conv;
    let mut other = None;
    if let Some(bn) = next_sole(last)
        && let LayerConfig::BatchNorm2d(c) = layers[bn].config()
        && c.track_running_stats
    {
        epilogue.norm = Some(bn);
        last = bn;
    }
    if let Some(add) = next_sole(last).filter(|_| dense)
        && let LayerConfig::Add = layers[add].config()
        && let [a, b] = layers[add].inputs()
    {
        // The add's other input: a source other than the layer it follows.
        let (ours, theirs) = if *a == Source::Layer(last) {
            (a, b)
        } else {
            (b, a)
        };
        if *ours == Source::Layer(last) && *theirs != Source::Layer(last) {
            other = Some(*theirs);
            last = add;
        }
    }
    if let Some(act) = next_sole(last) {
        epilogue.clamp = match layers[act].config() {
            LayerConfig::Relu => Clamp::Relu,
            LayerConfig::Relu6 => Clamp::Relu6,
            _ => Clamp::None,
        };
        if epilogue.clamp != Clamp::None {
            last = act;
        }
    }
    (last != conv).then_some((epilogue, last, other))
}

/// The length per sample of each of the `count` gradient buffers `steps` use
/// ([`Plan::grad_lens`]), activation buffer `b` holding `buffers[b]`.
fn grad_lens(steps: &[Step], buffers: &[Shape], count: usize) -> Vec<usize> {
    let numel = |b: usize| buffers.get(b).map_or(0, Shape::numel);
    let mut held = vec![0; count];
    let mut hold = |buffer: usize, len: usize| {
        if let Some(h) = held.get_mut(buffer) {
            *h = (*h).max(len);
        }
    };
    for step in steps {
        for (to, &input) in step.dxs.iter().zip(&step.inputs) {
            match *to {
                GradTo::Discard => {}
                GradTo::Write(b) => hold(b, numel(input)),
                GradTo::Add { into, scratch } => {
                    hold(into, numel(input));
                    if let Some(s) = scratch {
                        hold(s, numel(input));
                    }
                }
            }
        }
        if let Grad::Buffer(a) = step.dy {
            hold(a, numel(step.output));
        }
    }
    held
}

/// Whether `step` writes or adds anything to gradient buffer `buffer` in backward.
fn writes_grad(step: &Step, buffer: usize) -> bool {
    step.dx == Some(buffer)
        || step.dxs.iter().any(|to| match *to {
            GradTo::Discard => false,
            GradTo::Write(b) => b == buffer,
            GradTo::Add { into, scratch } => into == buffer || scratch == Some(buffer),
        })
}

/// Decides every training step's [`Join`]: first the adds whose two input gradients are the
/// same (the batch norm before such an add then reads its `dy` from the buffer the add
/// writes), then the batch norms whose input gradient the convolution before them computes,
/// then the batch norms that store the add after them. `lens` are the gradient buffers'
/// lengths ([`Plan::grad_lens`]: they hold what the steps joined read and write too).
fn join_steps(model: &Model, steps: &mut [Step], lens: &[usize]) {
    let layers = model.layers();
    let is = |step: &Step, kind: fn(&LayerConfig) -> bool| kind(layers[step.layer].config());
    let is_norm = |c: &LayerConfig| matches!(c, LayerConfig::BatchNorm2d(_));
    let is_add = |c: &LayerConfig| matches!(c, LayerConfig::Add);
    for k in 1..steps.len() {
        if let Some((j, theirs)) = same_grad(steps, k).filter(|_| is(&steps[k], is_add)) {
            steps[k].join.same_grad = Some(j);
            steps[k - 1].dy = Grad::Buffer(theirs);
        }
    }
    for k in 1..steps.len() {
        let (prev, step) = (&steps[k - 1], &steps[k]);
        let stages = match layers[prev.layer].config() {
            // What `Conv2d::backward_from_norm` takes: a dense convolution padded with zeros
            // (or not at all), without a pool whose positions route its `dy`.
            LayerConfig::Conv2d(c) => {
                c.groups == 1
                    && (c.padding_mode == crate::config::PaddingMode::Zeros
                        || c.padding_total() == [0, 0])
                    && prev.fusion != Fusion::ReluMaxPool
            }
            _ => false,
        };
        if stages && is(step, is_norm) {
            steps[k].join.norm_grad = norm_grad(prev, step, lens);
        }
    }
    for k in 0..steps.len().saturating_sub(1) {
        let (step, add) = (&steps[k], &steps[k + 1]);
        let out = step.output;
        let residual = match add.inputs[..] {
            [a, b] if a == out && b != out => b,
            [a, b] if b == out && a != out => a,
            _ => continue,
        };
        // The batch norm applies no ReLU (its backward reads its input only), and nothing but
        // the add reads its output (the add's backward masks by its own output).
        let alone = step.fusion == Fusion::None
            && steps.iter().filter(|s| s.inputs.contains(&out)).count() == 1;
        if alone && is(step, is_norm) && is(add, is_add) {
            steps[k].join.add = Some(JoinedAdd {
                residual,
                output: add.output,
                relu: add.fusion == Fusion::Relu,
            });
        }
    }
}

/// For add step `k`: when it writes its gradient whole into both inputs' buffers, the step
/// before it makes one of them and reads its `dy` from that buffer, and neither that step nor
/// the one before it (a convolution that may compute its input gradient with it) writes the
/// other input's buffer, that input's index and the other's buffer, where the step before may
/// read its `dy` instead.
fn same_grad(steps: &[Step], k: usize) -> Option<(usize, usize)> {
    let (step, prev) = (&steps[k], &steps[k.checked_sub(1)?]);
    let (&[GradTo::Write(b0), GradTo::Write(b1)], &[i0, i1]) = (&step.dxs[..], &step.inputs[..])
    else {
        return None;
    };
    let (j, mine, theirs) = match (i0 == prev.output, i1 == prev.output) {
        (true, false) => (0, b0, b1),
        (false, true) => (1, b1, b0),
        _ => return None,
    };
    let readers = &steps[k.saturating_sub(2)..k];
    (prev.dy == Grad::Buffer(mine) && !readers.iter().any(|s| writes_grad(s, theirs)))
        .then_some((j, theirs))
}

/// The [`JoinedNormGrad`] of batch norm step `step` after convolution step `prev` (one that
/// can stage it), when the convolution makes the batch norm's input and the batch norm writes
/// its whole gradient into the buffer the convolution reads its `dy` from (so nothing else
/// reads that input); `None` when the convolution's own input gradient would need a buffer of
/// another length.
fn norm_grad(prev: &Step, step: &Step, lens: &[usize]) -> Option<JoinedNormGrad> {
    let (&[GradTo::Write(b)], Grad::Buffer(from), Grad::Buffer(a)) =
        (&step.dxs[..], prev.dy, step.dy)
    else {
        return None;
    };
    if b != from || prev.output != step.input || prev.layer >= step.layer {
        return None;
    }
    let (conv_dx, swap) = match prev.dxs.first().copied().unwrap_or(GradTo::Discard) {
        GradTo::Write(t) if t == a => (GradTo::Write(b), Some([a, b])),
        GradTo::Add {
            into,
            scratch: Some(s),
        } if s == a => (
            GradTo::Add {
                into,
                scratch: Some(b),
            },
            None,
        ),
        to => (to, None),
    };
    // The buffer written instead holds as much as the plan's (they trade places for good).
    let fits = match prev.dxs.first() {
        Some(&GradTo::Write(t))
        | Some(&GradTo::Add {
            scratch: Some(t), ..
        }) => t != a || lens.get(a) == lens.get(b),
        _ => true,
    };
    fits.then_some(JoinedNormGrad { conv_dx, swap })
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
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(cin, 2, [3, 3])
        })
    }

    fn pool(k: usize, s: usize) -> LayerConfig {
        LayerConfig::MaxPool2d(Pool2dConfig::new([k, k], [s, s], [0, 0]))
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
    fn an_add_applies_the_relu_after_it_in_training() {
        let plan = basic_block(bn(2));
        let add = plan.step_of(5);
        assert_eq!((add.layer, add.fusion, add.last), (5, Fusion::Relu, 6));
        assert!(plan.is_fused(6) && !add.relu_grad_masked);
        // Its output is the ReLU's, which the head reads; the head's backward writes its
        // gradient, which the add masks by that output and hands to the batch norm (the
        // model's input gets none).
        assert_eq!(plan.step_of(7).input, add.output);
        assert!(matches!(add.dy, Grad::Buffer(_)));
        assert!(matches!(add.dxs[..], [GradTo::Write(_), GradTo::Discard]));
    }

    #[test]
    fn a_pool_after_an_adds_relu_masks_its_gradient() {
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                         // 0
                (LayerConfig::Add, vec![Source::Layer(0), Source::Input]), // 1
                (LayerConfig::Relu, vec![]),                               // 2
                (pool(2, 2), vec![]),                                      // 3
                (LayerConfig::FLATTEN, vec![]),                            // 4
                (linear(32), vec![]),                                      // 5
            ],
        );
        let steps = plan.steps();
        assert_eq!(
            (steps[1].layer, steps[1].fusion, steps[1].last),
            (1, Fusion::Relu, 2)
        );
        assert!(steps[1].relu_grad_masked);
        assert!(steps[2].masks_relu_grad && steps[2].layer == 3);
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

    fn dw(c: usize) -> LayerConfig {
        let LayerConfig::Conv2d(mut config) = conv(c) else {
            unreachable!()
        };
        config.out_channels = c;
        config.groups = c;
        LayerConfig::Conv2d(config)
    }

    fn bn_untracked(c: usize) -> LayerConfig {
        let mut config = crate::config::BatchNorm2dConfig::new(c);
        config.track_running_stats = false;
        LayerConfig::BatchNorm2d(config)
    }

    /// A basic block: conv, bn, relu, conv, bn, add(bn, block input), relu; then a head.
    fn basic_block(second_bn: LayerConfig) -> Plan {
        graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                         // 0
                (bn(2), vec![]),                                           // 1
                (LayerConfig::Relu, vec![]),                               // 2
                (conv(2), vec![]),                                         // 3
                (second_bn, vec![]),                                       // 4
                (LayerConfig::Add, vec![Source::Layer(4), Source::Input]), // 5
                (LayerConfig::Relu, vec![]),                               // 6
                (LayerConfig::FLATTEN, vec![]),                            // 7
                (linear(128), vec![]),                                     // 8
            ],
        )
    }

    #[test]
    fn inference_folds_batch_norm_residual_add_and_relu_into_the_convolution() {
        let plan = basic_block(bn(2));
        // Training keeps every convolution's own output for the batch norm after it.
        let train: Vec<usize> = plan.steps().iter().map(|s| s.layer).collect();
        assert_eq!(train, [0, 1, 3, 4, 5, 7, 8]);
        assert!(plan.steps().iter().all(|s| s.epilogue.is_none()));
        let eval = plan.eval_steps();
        let layers: Vec<(usize, usize)> = eval.iter().map(|s| (s.layer, s.last)).collect();
        assert_eq!(layers, [(0, 2), (3, 6), (7, 7), (8, 8)]);
        assert_eq!(
            eval[0].epilogue,
            Epilogue {
                norm: Some(1),
                residual: None,
                clamp: Clamp::Relu,
                slice: None
            }
        );
        assert_eq!(
            eval[1].epilogue,
            Epilogue {
                norm: Some(4),
                residual: Some(0),
                clamp: Clamp::Relu,
                slice: None
            }
        );
        // Each writes the buffer of the last training step it replaces, and reads what the
        // training steps read.
        assert_eq!(
            (eval[0].inputs.as_slice(), eval[0].output),
            ([0].as_slice(), 2)
        );
        assert_eq!(eval[1].inputs, [2]);
        assert_eq!(eval[1].output, plan.step_of(6).output);
        assert_eq!(eval[2].input, plan.step_of(6).output);
        assert_eq!(eval.last().map(|s| s.output), Some(plan.output()));
    }

    #[test]
    fn a_batch_norm_without_running_statistics_is_not_folded() {
        // It normalises by the batch's statistics in eval too, which need the whole output.
        let plan = basic_block(bn_untracked(2));
        let eval: Vec<(usize, usize)> = plan
            .eval_steps()
            .iter()
            .map(|s| (s.layer, s.last))
            .collect();
        assert_eq!(eval, [(0, 2), (3, 3), (4, 4), (5, 6), (7, 7), (8, 8)]);
        assert!(plan.eval_steps()[1].epilogue.is_none());
    }

    #[test]
    fn the_projection_shortcut_adds_the_residual_branch_as_it_stores() {
        // conv2, bn2, then the 1x1 shortcut and its bn, add(bn2, shortcut), relu.
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                            // 0
                (bn(2), vec![]),                                              // 1
                (conv(2), vec![Source::Input]),                               // 2
                (bn(2), vec![]),                                              // 3
                (LayerConfig::Add, vec![Source::Layer(1), Source::Layer(3)]), // 4
                (LayerConfig::Relu, vec![]),                                  // 5
                (LayerConfig::FLATTEN, vec![]),                               // 6
                (linear(128), vec![]),                                        // 7
            ],
        );
        let eval = plan.eval_steps();
        let spans: Vec<(usize, usize)> = eval.iter().map(|s| (s.layer, s.last)).collect();
        assert_eq!(spans, [(0, 1), (2, 5), (6, 6), (7, 7)]);
        assert_eq!(eval[1].inputs, [0]);
        assert_eq!(
            eval[1].epilogue,
            Epilogue {
                norm: Some(3),
                residual: Some(eval[0].output),
                clamp: Clamp::Relu,
                slice: None
            }
        );
    }

    #[test]
    fn what_is_read_elsewhere_is_not_folded() {
        let plan = graph(
            [2, 8, 8],
            vec![
                // The convolution's output is read by the batch norm and the add.
                (conv(2), vec![]),                                            // 0
                (bn(2), vec![]),                                              // 1
                (LayerConfig::Add, vec![Source::Layer(1), Source::Layer(0)]), // 2
                // The batch norm's output is read by the ReLU and the add after it.
                (conv(2), vec![]),                                            // 3
                (bn(2), vec![]),                                              // 4
                (LayerConfig::Relu, vec![]),                                  // 5
                (LayerConfig::Add, vec![Source::Layer(5), Source::Layer(4)]), // 6
                // An add of the batch norm with itself.
                (conv(2), vec![]),                                            // 7
                (bn(2), vec![]),                                              // 8
                (LayerConfig::Add, vec![Source::Layer(8), Source::Layer(8)]), // 9
                // An add of three.
                (conv(2), vec![]), // 10
                (bn(2), vec![]),   // 11
                (
                    LayerConfig::Add,
                    vec![Source::Layer(11), Source::Layer(9), Source::Input],
                ), // 12
                (LayerConfig::FLATTEN, vec![]), // 13
                (linear(128), vec![]), // 14
            ],
        );
        let spans: Vec<(usize, usize)> = plan
            .eval_steps()
            .iter()
            .map(|s| (s.layer, s.last))
            .collect();
        assert_eq!(
            spans,
            [
                (0, 0),
                (1, 1),
                (2, 2),
                (3, 4),
                (5, 5),
                (6, 6),
                (7, 8),
                (9, 9),
                (10, 11),
                (12, 12),
                (13, 13),
                (14, 14)
            ]
        );
        let norms: Vec<Option<usize>> = plan.eval_steps().iter().map(|s| s.epilogue.norm).collect();
        assert_eq!(norms[3], Some(4));
        assert!(
            plan.eval_steps()
                .iter()
                .all(|s| s.epilogue.residual.is_none())
        );
    }

    #[test]
    fn a_depthwise_convolution_folds_batch_norm_and_relu6_but_no_add() {
        let plan = graph(
            [2, 8, 8],
            vec![
                (dw(2), vec![]),                                              // 0
                (bn(2), vec![]),                                              // 1
                (LayerConfig::Relu6, vec![]),                                 // 2
                (dw(2), vec![]),                                              // 3
                (bn(2), vec![]),                                              // 4
                (LayerConfig::Add, vec![Source::Layer(4), Source::Layer(2)]), // 5
                (LayerConfig::FLATTEN, vec![]),                               // 6
                (linear(128), vec![]),                                        // 7
            ],
        );
        let eval = plan.eval_steps();
        let spans: Vec<(usize, usize)> = eval.iter().map(|s| (s.layer, s.last)).collect();
        assert_eq!(spans, [(0, 2), (3, 4), (5, 5), (6, 6), (7, 7)]);
        assert_eq!(eval[0].epilogue.clamp, Clamp::Relu6);
        assert_eq!(eval[1].epilogue.residual, None);
        assert_eq!(
            eval[2].inputs,
            [plan.step_of(4).output, plan.step_of(2).output]
        );
    }

    #[test]
    fn a_chain_without_batch_norm_folds_nothing_new() {
        let plan = plan(vec![
            conv(1),
            LayerConfig::Relu,
            pool(2, 2),
            LayerConfig::FLATTEN,
            linear(32),
        ]);
        assert_eq!(plan.eval_steps(), plan.steps());
    }

    fn concat() -> LayerConfig {
        LayerConfig::Concat(crate::config::ConcatConfig { dim: 1 })
    }

    #[test]
    fn convolutions_made_for_a_concatenation_store_into_its_channels() {
        // A fire module: squeeze, then two expand convolutions (one with BN) concatenated.
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                    // 0 squeeze
                (LayerConfig::Relu, vec![]),                          // 1
                (conv(2), vec![Source::Layer(1)]),                    // 2 expand a
                (LayerConfig::Relu, vec![]),                          // 3
                (conv(2), vec![Source::Layer(1)]),                    // 4 expand b
                (bn(2), vec![]),                                      // 5
                (concat(), vec![Source::Layer(3), Source::Layer(5)]), // 6
                (LayerConfig::FLATTEN, vec![]),                       // 7
                (linear(256), vec![]),                                // 8
            ],
        );
        let eval = plan.eval_steps();
        let spans: Vec<(usize, usize)> = eval.iter().map(|s| (s.layer, s.last)).collect();
        assert_eq!(spans, [(0, 1), (2, 3), (4, 5), (7, 7), (8, 8)]);
        let cat = plan.step_of(6).output;
        assert_eq!((eval[1].output, eval[2].output), (cat, cat));
        assert_eq!(
            eval[1].epilogue,
            Epilogue {
                clamp: Clamp::Relu,
                slice: Some(Slice {
                    offset: 0,
                    channels: 4
                }),
                ..Epilogue::NONE
            }
        );
        assert_eq!(eval[2].epilogue.norm, Some(5));
        assert_eq!(
            eval[2].epilogue.slice,
            Some(Slice {
                offset: 2,
                channels: 4
            })
        );
        assert_eq!(eval[3].inputs, [cat]);
        // Training keeps the concatenation's step.
        assert_eq!(plan.step_of(6).layer, 6);
    }

    #[test]
    fn a_concatenation_of_anything_else_keeps_its_step() {
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                            // 0, also read by 4
                (conv(2), vec![Source::Input]),                               // 1
                (concat(), vec![Source::Layer(0), Source::Layer(1)]),         // 2
                (conv(4), vec![]),                                            // 3
                (LayerConfig::Add, vec![Source::Layer(0), Source::Layer(0)]), // 4
                (conv(2), vec![Source::Layer(4)]),                            // 5
                (concat(), vec![Source::Layer(5), Source::Layer(5)]),         // 6: one tensor twice
                (conv(4), vec![]),                                            // 7
                (concat(), vec![Source::Layer(7), Source::Input]),            // 8: the input
                (dw(4), vec![]),                                              // 9
                (conv(4), vec![]),                                            // 10
                (concat(), vec![Source::Layer(9), Source::Layer(10)]),        // 11: a depthwise
                (LayerConfig::FLATTEN, vec![]),                               // 12
            ],
        );
        let eval = plan.eval_steps();
        for c in [2, 6, 8, 11] {
            assert!(eval.iter().any(|s| s.layer == c), "concat {c} kept");
        }
        assert!(eval.iter().all(|s| s.epilogue.slice.is_none()));
    }

    #[test]
    fn what_an_inference_step_touches_keeps_a_slot_of_its_own() {
        // The projection shortcut's batch norm is read only by the add: in training its output
        // is transient, but the inference step of the other branch reads it as its residual,
        // later than the training steps would, so it must not share a slot.
        let layers = vec![
            (conv(2), vec![]),                                            // 0
            (bn(2), vec![]),                                              // 1
            (conv(2), vec![Source::Input]),                               // 2
            (bn(2), vec![]),                                              // 3
            (LayerConfig::Add, vec![Source::Layer(1), Source::Layer(3)]), // 4
            (LayerConfig::FLATTEN, vec![]),                               // 5
            (linear(128), vec![]),                                        // 6
        ];
        let configs: Vec<LayerConfig> = layers.iter().map(|(c, _)| c.clone()).collect();
        let plan = graph([2, 8, 8], layers);
        let storage = plan.storage(&reads(&plan, &configs));
        let residual = plan.step_of(1).output;
        let folded: Vec<&Step> = plan
            .eval_steps()
            .iter()
            .filter(|s| !s.epilogue.is_none())
            .collect();
        assert!(folded.iter().any(|s| s.epilogue.residual == Some(residual)));
        for step in folded {
            let touched = step.inputs.iter().chain(&step.epilogue.residual);
            for &b in touched.chain([&step.output]) {
                assert!(storage.kept[b], "buffer {b} of {step:?}");
                let sharing = storage
                    .slot
                    .iter()
                    .filter(|&&s| s == storage.slot[b])
                    .count();
                assert_eq!(sharing, 1, "buffer {b}");
            }
        }
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
                LayerConfig::Add => Reads {
                    inputs: false,
                    output: step.fusion != Fusion::None,
                },
                LayerConfig::Flatten { .. } => Reads {
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
        let layers = residual_blocks(2, |_| false);
        let configs: Vec<LayerConfig> = layers.iter().map(|(c, _)| c.clone()).collect();
        let plan = graph([2, 8, 8], layers);
        let storage = plan.storage(&reads(&plan, &configs));
        let steps = plan.steps();
        // Per block: conv, bn+relu, conv, bn, add+relu; then flatten, linear.
        assert_eq!(steps.len(), 12);
        let transient: Vec<usize> = (0..plan.buffers().len())
            .filter(|&b| !storage.kept[b])
            .collect();
        // Each block's second batch norm, read only by the add (whose backward reads its own
        // output, to mask the gradient by the ReLU it applies).
        assert_eq!(transient, [4, 9]);
        // One shared slot serves both, besides one per kept buffer.
        let kept = storage.kept.iter().filter(|&&k| k).count();
        assert_eq!(storage.len.len(), kept + 1);
        assert_eq!(storage.slot[4], storage.slot[9]);
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

    /// Checks `plan.eval_storage()`: no two buffers whose lives overlap (from the first
    /// inference step writing one, the input from the start, to the last step touching it, the
    /// output to the end) share a slot, every slot holds its buffers, and the input and output
    /// keep slots of their own. Returns the number of slots.
    fn check_eval_storage(plan: &Plan) -> usize {
        let storage = plan.eval_storage();
        let n = plan.buffers().len();
        let mut life: Vec<Option<(usize, usize)>> = vec![None; n];
        life[0] = Some((0, 0));
        for (k, step) in plan.eval_steps().iter().enumerate() {
            let touched = step.inputs.iter().chain(&step.epilogue.residual);
            for &b in touched.chain([&step.output]) {
                let (start, _) = life[b].unwrap_or((k, k));
                life[b] = Some((start, k));
            }
        }
        life[plan.output()] = life[plan.output()].map(|(start, _)| (start, usize::MAX));
        for a in 0..n {
            let Some((a0, a1)) = life[a] else { continue };
            assert!(
                storage.len[storage.slot[a]] >= plan.buffers()[a].numel(),
                "buffer {a}"
            );
            for (b, other) in life.iter().enumerate().skip(a + 1) {
                let Some((b0, b1)) = *other else { continue };
                if a0 <= b1 && b0 <= a1 {
                    assert_ne!(storage.slot[a], storage.slot[b], "buffers {a} and {b}");
                }
            }
        }
        assert_eq!(storage.kept.iter().filter(|&&k| k).count(), 2);
        assert!(storage.kept[0] && storage.kept[plan.output()]);
        storage.len.len()
    }

    #[test]
    fn inference_shares_slots_by_liveness_alone() {
        // Two residual blocks: conv, bn + relu, conv, bn, add, relu; the second with a
        // projection shortcut whose batch norm is the residual of the other branch.
        let blocks = graph([2, 8, 8], residual_blocks(2, |b| b == 1));
        assert!(blocks.eval_steps().len() < blocks.steps().len());
        let slots = check_eval_storage(&blocks);
        // The input and the logits, and three shared slots (a block's input, its branch and
        // the projection's output live at once), however deep the network.
        assert_eq!(slots, 5);
        // A chain without folds shares two slots between its steps.
        let chain = plan(vec![conv(1), pool(2, 2), LayerConfig::FLATTEN, linear(32)]);
        assert_eq!(check_eval_storage(&chain), 4);
        // The convolutions of a concatenation write its buffer, which lives from the first.
        let fire = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),
                (LayerConfig::Relu, vec![]),
                (conv(2), vec![Source::Layer(1)]),
                (LayerConfig::Relu, vec![]),
                (conv(2), vec![Source::Layer(1)]),
                (bn(2), vec![]),
                (concat(), vec![Source::Layer(3), Source::Layer(5)]),
                (LayerConfig::FLATTEN, vec![]),
                (linear(256), vec![]),
            ],
        );
        check_eval_storage(&fire);
    }

    /// `blocks` residual blocks (`conv → bn → relu → conv → bn`, the add of the last batch norm
    /// and the shortcut, its ReLU), the shortcut of block `b` a projection (`conv → bn` of the
    /// block's input) where `projection(b)`, else the input itself; then the classifier.
    fn residual_blocks(
        blocks: usize,
        projection: impl Fn(usize) -> bool,
    ) -> Vec<(LayerConfig, Vec<Source>)> {
        let mut layers: Vec<(LayerConfig, Vec<Source>)> = Vec::new();
        for block in 0..blocks {
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
            let shortcut = if projection(block) {
                layers.push((conv(2), vec![input]));
                layers.push((bn(2), vec![]));
                Source::Layer(at + 6)
            } else {
                input
            };
            layers.push((LayerConfig::Add, vec![Source::Layer(at + 4), shortcut]));
            layers.push((LayerConfig::Relu, vec![]));
        }
        layers.push((LayerConfig::FLATTEN, vec![]));
        layers.push((linear(128), vec![]));
        layers
    }

    /// A stem (`conv → bn → relu`, layers 0–2), a residual block on it (`conv → bn → relu →
    /// conv → bn`, 3–7), the add of the block's last batch norm and the stem (8) and its ReLU
    /// (9), then `tail` (each reading the layer before unless it names its inputs) and the
    /// classifier.
    fn residual_block(tail: Vec<(LayerConfig, Vec<Source>)>) -> Plan {
        let mut layers = vec![
            (conv(2), vec![]),
            (bn(2), vec![]),
            (LayerConfig::Relu, vec![]),
            (conv(2), vec![]),
            (bn(2), vec![]),
            (LayerConfig::Relu, vec![]),
            (conv(2), vec![]),
            (bn(2), vec![]),
            (LayerConfig::Add, vec![Source::Layer(7), Source::Layer(2)]),
            (LayerConfig::Relu, vec![]),
        ];
        layers.extend(tail);
        layers.push((LayerConfig::FLATTEN, vec![]));
        layers.push((linear(128), vec![]));
        graph([2, 8, 8], layers)
    }

    /// The join on the step of layer `layer`.
    fn join_of(plan: &Plan, layer: usize) -> Join {
        plan.step_of(layer).join
    }

    #[test]
    fn a_residual_block_joins_its_batch_norms_and_its_add() {
        let plan = residual_block(vec![]);
        // Every batch norm gives its input gradient to the convolution before it.
        for norm in [1, 4, 7] {
            let join = join_of(&plan, norm).norm_grad.expect("a joined gradient");
            // Where the convolution's input gradient goes: the plan's, or the batch norm's own
            // buffer (which then trades places with the one its `dy` is read from).
            let conv = &plan.steps()[plan.step_of[norm] - 1];
            let norm_step = plan.step_of(norm);
            match join.swap {
                Some([a, b]) => {
                    assert_eq!(norm_step.dy, Grad::Buffer(a));
                    assert_eq!(norm_step.dx, Some(b));
                    assert_eq!(conv.dxs[0], GradTo::Write(a));
                    assert_eq!(join.conv_dx, GradTo::Write(b));
                    assert_eq!(plan.grad_lens()[a], plan.grad_lens()[b]);
                }
                None if norm == 1 => assert_eq!(join.conv_dx, GradTo::Discard),
                None => assert!(
                    join.conv_dx == conv.dxs[0]
                        || matches!(join.conv_dx, GradTo::Add { scratch, .. } if scratch == norm_step.dx),
                    "{join:?}"
                ),
            }
        }
        // The block's last batch norm stores the add and its ReLU; the others apply a ReLU.
        let add = join_of(&plan, 7)
            .add
            .expect("the add stored by the batch norm");
        assert_eq!(add.residual, plan.step_of(2).output);
        assert_eq!(add.output, plan.step_of(8).output);
        assert!(add.relu);
        assert_eq!((join_of(&plan, 1).add, join_of(&plan, 4).add), (None, None));
        // The add writes the stem's gradient only; the batch norm reads its `dy` there.
        let add_step = plan.step_of(8);
        assert_eq!(add_step.join.same_grad, Some(0));
        let GradTo::Write(theirs) = add_step.dxs[1] else {
            panic!("the stem's gradient is written whole: {:?}", add_step.dxs)
        };
        assert_eq!(plan.step_of(7).dy, Grad::Buffer(theirs));
        // Inference steps join nothing.
        assert!(plan.eval_steps().iter().all(|s| s.join.is_none()));
    }

    #[test]
    fn an_output_another_step_reads_is_not_joined() {
        // The block's last batch norm read by a second add too: it stores its own output.
        let plan = residual_block(vec![(
            LayerConfig::Add,
            vec![Source::Layer(9), Source::Layer(7)],
        )]);
        assert_eq!(join_of(&plan, 7).add, None);
        // The stem read by the block's first convolution and the add; a third reader after the
        // add adds its part first: the add adds its own, and shares nothing.
        let plan = residual_block(vec![(
            LayerConfig::Add,
            vec![Source::Layer(9), Source::Layer(2)],
        )]);
        assert!(matches!(plan.step_of(8).dxs[1], GradTo::Add { .. }));
        assert_eq!(join_of(&plan, 8).same_grad, None);
        // A convolution whose output a second layer reads keeps the batch norm's gradient
        // apart (the batch norm's part is added to the other's).
        let plan = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                            // 0
                (bn(2), vec![]),                                              // 1
                (LayerConfig::Add, vec![Source::Layer(1), Source::Layer(0)]), // 2
                (LayerConfig::FLATTEN, vec![]),                               // 3
                (linear(128), vec![]),                                        // 4
            ],
        );
        assert_eq!(join_of(&plan, 1).norm_grad, None);
        assert!(join_of(&plan, 1).add.is_some());
    }

    #[test]
    fn a_relu_between_stops_the_join() {
        // `bn → relu → add`: the batch norm applies the ReLU, so the add reads the ReLU's
        // output; it is not stored by the batch norm.
        let block = graph(
            [2, 8, 8],
            vec![
                (conv(2), vec![]),                                         // 0
                (bn(2), vec![]),                                           // 1
                (LayerConfig::Relu, vec![]),                               // 2
                (LayerConfig::Add, vec![Source::Layer(2), Source::Input]), // 3
                (LayerConfig::FLATTEN, vec![]),                            // 4
                (linear(128), vec![]),                                     // 5
            ],
        );
        assert_eq!(block.step_of(1).fusion, Fusion::Relu);
        assert_eq!(join_of(&block, 1).add, None);
        // `dwconv → relu → bn`: a grouped convolution applies no ReLU, so the ReLU's step
        // lies between it and the batch norm, which takes its own gradient.
        let chain = plan(vec![
            conv(1),
            dw(2),
            LayerConfig::Relu,
            bn(2),
            LayerConfig::FLATTEN,
            linear(128),
        ]);
        assert_eq!(chain.steps()[2].layer, 2);
        assert_eq!(join_of(&chain, 3).norm_grad, None);
    }

    #[test]
    fn a_batch_norm_without_a_convolution_that_stages_before_it_takes_its_own_gradient() {
        // After a pool, after the model's input, after a grouped convolution: no join.
        for layers in [
            vec![conv(1), pool(2, 2), bn(2), LayerConfig::FLATTEN, linear(32)],
            vec![bn(1), conv(1), LayerConfig::FLATTEN, linear(128)],
            vec![conv(1), dw(2), bn(2), LayerConfig::FLATTEN, linear(128)],
        ] {
            let chain = plan(layers);
            assert!(
                chain.steps().iter().all(|s| s.join.norm_grad.is_none()),
                "{:?}",
                chain.steps()
            );
        }
        // A convolution that applies a max pool routes its `dy` through the pool's positions.
        let chain = plan(vec![
            conv(1),
            conv(2),
            LayerConfig::Relu,
            pool(2, 2),
            bn(2),
            LayerConfig::FLATTEN,
            linear(32),
        ]);
        assert_eq!(chain.steps()[1].fusion, Fusion::ReluMaxPool);
        assert_eq!(join_of(&chain, 4).norm_grad, None);
    }

    #[test]
    fn buffers_trade_places_only_at_one_length() {
        // `conv → conv → bn → flatten → linear`: the second convolution's input gradient goes
        // where the batch norm's `dy` is read from, so it takes the batch norm's own buffer,
        // and the two trade places, both as long as the activations.
        let strided = |stride: usize| {
            LayerConfig::Conv2d(Conv2dConfig {
                padding: [1, 1],
                padding_end: [1, 1],
                stride: [stride, stride],
                ..Conv2dConfig::new(2, 2, [3, 3])
            })
        };
        let plan = graph(
            [1, 8, 8],
            vec![
                (conv(1), vec![]),
                (strided(1), vec![]),
                (bn(2), vec![]),
                (LayerConfig::FLATTEN, vec![]),
                (linear(128), vec![]),
            ],
        );
        let join = join_of(&plan, 2).norm_grad.expect("a joined gradient");
        let norm = plan.step_of(2);
        let (Grad::Buffer(a), Some(b)) = (norm.dy, norm.dx) else {
            panic!("{norm:?}")
        };
        assert_eq!(plan.step_of(1).dxs[0], GradTo::Write(a));
        assert_eq!(join.conv_dx, GradTo::Write(b));
        assert_eq!(join.swap, Some([a, b]));
        // Strided, the convolution's input gradient (8 x 8) is four times the batch norm's
        // (4 x 4): the buffers differ in length, and the batch norm takes its own gradient.
        let plan = graph(
            [1, 8, 8],
            vec![
                (conv(1), vec![]),
                (strided(2), vec![]),
                (bn(2), vec![]),
                (LayerConfig::FLATTEN, vec![]),
                (linear(32), vec![]),
            ],
        );
        let norm = plan.step_of(2);
        let (Grad::Buffer(a), Some(b)) = (norm.dy, norm.dx) else {
            panic!("{norm:?}")
        };
        assert_eq!(plan.step_of(1).dxs[0], GradTo::Write(a));
        assert_ne!(plan.grad_lens()[a], plan.grad_lens()[b]);
        assert_eq!(join_of(&plan, 2).norm_grad, None);
    }
}
