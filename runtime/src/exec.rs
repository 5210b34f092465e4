//! The dynamic executor: a runnable model built at run time from a checked [`Model`] (what the
//! CLI uses), sequential or any graph of layers. It is a list of the same [`Layer`] structs
//! generated models hold as fields, run as the model's [`Plan`] says (the plan code generation
//! writes out): each step reads its input buffers (several for a [`Merge`](crate::layers::Merge) layer) and writes
//! its own, and backward hands each input's gradient to the buffer the plan names, written or
//! added in the plan's fixed order. Activation buffers are stored as [`Plan::storage`] says (one
//! slot per buffer a backward reads; the others share slots once their readers have run), and
//! they and the gradient buffers are sized for the largest batch seen and reused afterwards.
//! When a training step goes non-finite,
//! [`Network::find_non_finite`] names the layer where it started.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayD, ArrayView2, ArrayView4, ArrayViewMut2};

use cnnc_core::{Fusion, Grad, GradTo, Model, Plan, Reads, Shape, Storage};

use crate::config::{LayerConfig, NetworkDef};
use crate::error::{Error, Result};
use crate::layers::{self, Init, Layer};
use crate::loss::softmax_cross_entropy;
use crate::model::{Planned, StepRef};
use crate::par;
use crate::param::{Entry, EntryRef, Visit, VisitRef};
use crate::tensor::{Mode, nchw_to_internal, on_pool};
use crate::typed::check_input;
use crate::weights::{self, LoadError, SaveError};

/// A network (a chain of layers or a graph) executed step by step as its plan says. Parameters
/// and buffers are visited (see [`Visit`]) in layer order under their PyTorch state_dict names.
///
/// It implements [`crate::Model`]: [`Network::predict`] runs from `&self` (scratch memory per
/// thread), so one network serves several threads; it is `Send + Sync + Clone`, and a clone is
/// independent.
#[derive(Clone, Debug)]
pub struct Network {
    /// The spec's model name (`network` when it has none).
    name: String,
    input: Shape,
    layers: Vec<Box<dyn Layer>>,
    /// Each layer's spec keyword (`conv2d`, `linear`), for messages.
    kinds: Vec<&'static str>,
    /// Which layers run, which they apply (a ReLU by the convolution before it, a max pool after
    /// such a ReLU too), and the buffers each step reads and writes.
    plan: Plan,
    /// Where each of the plan's activation buffers (0 the input, in the internal layout, then
    /// each step's output) is stored: the slots of `acts`.
    storage: Storage,
    /// The slots of the activation buffers.
    acts: Vec<Vec<f32>>,
    /// Where an eval-mode forward stores the activation buffers of the inference steps
    /// ([`Plan::eval_storage`]): their slots are shared by liveness alone, as no backward
    /// reads them.
    eval_storage: Storage,
    /// The slots of the inference steps' buffers: sized by an eval-mode forward, which sizes
    /// none of `acts`, `grads` and `dlogits` (a batch run in groups only the input's and the
    /// output's).
    eval_acts: Vec<Vec<f32>>,
    /// The plan's gradient buffers, each as large as the largest activation.
    grads: Vec<Vec<f32>>,
    /// Gradient of the loss with respect to the logits, `[batch, classes]`.
    dlogits: Vec<f32>,
    /// Largest batch the buffers hold.
    capacity: usize,
    /// Batch and mode of the last forward, which backward needs.
    last: Option<(usize, Mode)>,
    /// Whether `dlogits` holds the gradient for the last forward (a training step or a backward
    /// call followed it), so that backward can be replayed.
    dlogits_ready: bool,
    /// Whether the last forward ran the plan's inference steps in `eval_acts`, which leaves the
    /// training buffers unsized or stale: backward replays the forward first, through the
    /// training steps (from the input `eval_acts` keeps).
    eval_fused: bool,
}

/// The bytes of the buffers a [`Network`] holds ([`Network::buffer_bytes`]): a training
/// forward sizes the training activations and the gradients for its batch, an eval-mode forward
/// only the inference steps' buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferBytes {
    /// The training steps' activation buffers (the slots of [`Plan::storage`]).
    pub training: usize,
    /// The gradient buffers and the gradient of the logits.
    pub gradients: usize,
    /// The inference steps' activation buffers (the slots of [`Plan::eval_storage`]).
    pub inference: usize,
}

/// Where the last training step first produced a NaN or an infinity, as
/// [`Network::find_non_finite`] finds it: the first in forward order, then in backward order.
#[derive(Clone, Debug, PartialEq)]
pub enum NonFinite {
    /// The input batch itself holds a non-finite value.
    Input {
        /// The first non-finite value.
        value: f32,
    },
    /// A layer's output in the forward pass.
    Activations {
        /// Position of the layer in the network.
        index: usize,
        /// The layer's state_dict prefix (`layer2.0`).
        name: String,
        /// The layer's spec keyword (`conv2d`).
        kind: &'static str,
        /// The first non-finite value of the output.
        value: f32,
    },
    /// The gradient of the loss with respect to the logits, although every logit is finite.
    LossGradient {
        /// The first non-finite value.
        value: f32,
    },
    /// A gradient a layer's backward wrote: of one of its parameters, or of its input.
    Gradient {
        /// Position of the layer in the network.
        index: usize,
        /// The layer's state_dict prefix.
        name: String,
        /// The layer's spec keyword.
        kind: &'static str,
        /// The parameter (`fc1.weight`), or `None` for the gradient passed to the layer before.
        param: Option<String>,
        /// The first non-finite value.
        value: f32,
    },
}

impl NonFinite {
    /// The state_dict prefix of the layer at fault, if a layer is.
    pub fn layer(&self) -> Option<&str> {
        match self {
            NonFinite::Activations { name, .. } | NonFinite::Gradient { name, .. } => Some(name),
            NonFinite::Input { .. } | NonFinite::LossGradient { .. } => None,
        }
    }
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NonFinite::Input { value } => write!(f, "the input batch holds {value}"),
            NonFinite::Activations {
                name, kind, value, ..
            } => write!(
                f,
                "layer `{name}` ({kind}) produced non-finite activations ({value}) in the forward \
                 pass"
            ),
            NonFinite::LossGradient { value } => write!(
                f,
                "the loss gradient became {value} although every logit is finite"
            ),
            NonFinite::Gradient {
                name,
                kind,
                param,
                value,
                ..
            } => {
                write!(f, "layer `{name}` ({kind}) produced a non-finite ")?;
                match param {
                    Some(param) => write!(f, "gradient for `{param}`")?,
                    None => write!(f, "input gradient")?,
                }
                write!(f, " ({value}) in the backward pass")
            }
        }
    }
}

/// The first non-finite gradient `layer` (at `index`, of kind `kind`) wrote in backward: its
/// parameters' (in visit order), then `input_grad`.
fn gradient_fault(
    layer: &mut dyn Layer,
    index: usize,
    kind: &'static str,
    input_grad: Option<&[f32]>,
) -> Option<NonFinite> {
    let mut found = None;
    layer.visit(&mut |entry| {
        if let (None, Entry::Param { name, param }) = (&found, entry)
            && let Some(value) = param.grad.iter().copied().find(|v| !v.is_finite())
        {
            found = Some((Some(name.to_owned()), value));
        }
    });
    let (param, value) =
        found.or_else(|| Some((None, first_non_finite(input_grad.unwrap_or_default())?)))?;
    Some(NonFinite::Gradient {
        index,
        name: layer.name().to_owned(),
        kind,
        param,
        value,
    })
}

/// Per-sample length of input `input` of `layer`.
fn layer_input_len(layer: &mut dyn Layer, input: usize) -> usize {
    match layer.as_merge() {
        Some(merge) => merge.input_shapes().get(input).map_or(0, Shape::numel),
        None => layer.input_shape().numel(),
    }
}

/// Sets every parameter gradient of `layer` to zero.
fn zero_grads(layer: &mut dyn Layer) {
    layer.visit(&mut |entry| {
        if let Entry::Param { param, .. } = entry {
            param.grad.fill(0.0);
        }
    });
}

/// Calls `f` with the activation buffers `ids` (stored in the slots `slot` names of `acts`),
/// gathered on the stack for up to 8 inputs (every merge of the shipped models), so steps
/// allocate nothing.
fn with_inputs<R>(
    acts: &[Vec<f32>],
    slot: &[usize],
    ids: &[usize],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> R {
    const INLINE: usize = 8;
    if ids.len() <= INLINE {
        let mut inline: [&[f32]; INLINE] = [&[]; INLINE];
        for (input, &b) in inline.iter_mut().zip(ids) {
            *input = &acts[slot[b]];
        }
        f(&inline[..ids.len()])
    } else {
        let gathered: Vec<&[f32]> = ids.iter().map(|&b| &acts[slot[b]][..]).collect();
        f(&gathered)
    }
}

/// Runs one step's backward from `dy`: writes or adds each input's gradient where the plan
/// says, through a scratch buffer for a one-input layer whose input has another reader.
fn backward_step(
    layer: &mut dyn Layer,
    step: &cnnc_core::Step,
    (acts, slot): (&[Vec<f32>], &[usize]),
    grads: &mut [Vec<f32>],
    dy: &[f32],
    batch: usize,
) -> Result<()> {
    if let Some(merge) = layer.as_merge() {
        let y = &acts[slot[step.output]];
        let target = |to: GradTo| match to {
            GradTo::Discard => None,
            GradTo::Write(b) => Some((b, false)),
            GradTo::Add { into, .. } => Some((into, true)),
        };
        // Two inputs into two buffers: both gradients in one pass (an add reads `dy` once).
        if let [to0, to1] = step.dxs[..]
            && let (Some((b0, add0)), Some((b1, add1))) = (target(to0), target(to1))
            && let Ok([dx0, dx1]) = grads.get_disjoint_mut([b0, b1])
        {
            return with_inputs(acts, slot, &step.inputs, |xs| {
                merge.backward_merge_pair(xs, [y, dy], [dx0, dx1], [add0, add1], batch)
            });
        }
        return with_inputs(acts, slot, &step.inputs, |xs| {
            for (j, to) in step.dxs.iter().enumerate() {
                let (buffer, add) = match *to {
                    GradTo::Discard => continue,
                    GradTo::Write(b) => (b, false),
                    GradTo::Add { into, .. } => (into, true),
                };
                merge.backward_merge(xs, [y, dy], j, &mut grads[buffer], add, batch)?;
            }
            Ok(())
        });
    }
    let (x, y) = (&acts[slot[step.input]], &acts[slot[step.output]]);
    let n = batch * layer.input_shape().numel();
    let to = step.dxs.first().copied().unwrap_or(GradTo::Discard);
    one_input_backward(to, grads, n, |dx| layer.backward(x, y, dy, dx, batch))
}

/// Runs a one-input layer's backward, `run` given where its input gradient goes (its first `n`
/// values) as `to` says: nowhere, a buffer of its own, or a scratch buffer then added into the
/// sum of the input's gradient.
fn one_input_backward(
    to: GradTo,
    grads: &mut [Vec<f32>],
    n: usize,
    run: impl FnOnce(Option<&mut [f32]>) -> Result<()>,
) -> Result<()> {
    match to {
        GradTo::Discard => run(None),
        GradTo::Write(b) => run(Some(&mut grads[b])),
        GradTo::Add {
            into,
            scratch: Some(scratch),
        } => {
            let [sum, part] = grads.get_disjoint_mut([into, scratch]).map_err(|_| {
                Error::State("cnnc bug: a gradient is added into its own scratch".to_owned())
            })?;
            run(Some(part))?;
            // Each value alone: the same sums in any split.
            const CHUNK: usize = 1 << 14;
            par::chunks_mut(&mut sum[..n], CHUNK, |i, sum| {
                let part = &part[i * CHUNK..][..sum.len()];
                sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
            });
            Ok(())
        }
        GradTo::Add { scratch: None, .. } => Err(Error::State(
            "cnnc bug: a one-input layer's gradient part has no scratch buffer".to_owned(),
        )),
    }
}

/// The first value of `values` that is NaN or infinite.
fn first_non_finite(values: &[f32]) -> Option<f32> {
    values.iter().copied().find(|v| !v.is_finite())
}

/// Wall time one layer took in a profiled training step ([`Network::profile_train_step`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTime {
    /// Time in `forward`.
    pub forward: Duration,
    /// Time in `backward`.
    pub backward: Duration,
}

/// Where a profiled training step's time went ([`Network::profile_train_step`]): each layer's
/// forward and backward, and the phases around them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepProfile {
    /// The mean loss of the batch.
    pub loss: f32,
    /// Each layer's forward and backward time, in layer order.
    pub layers: Vec<LayerTime>,
    /// Checking the batch and copying it into the internal layout (and sizing the buffers).
    pub input: Duration,
    /// The whole forward pass over the layers (their times and what lies between them).
    pub forward: Duration,
    /// The softmax cross-entropy and its gradient with respect to the logits.
    pub loss_time: Duration,
    /// The whole backward pass over the layers.
    pub backward: Duration,
}

/// Applies the plan's fusion to the built layers; a layer that refuses what the plan asks is a
/// bug in cnnc (both read the same geometry).
fn fuse(layers: &mut [Box<dyn Layer>], model: &Model, plan: &Plan) -> Result<()> {
    let refused = |layer: &dyn Layer, what: &str| {
        Error::config(
            layer.name(),
            format!("cnnc bug: the layer does not {what} as the plan says"),
        )
    };
    for step in plan.steps() {
        let layer = &mut layers[step.layer];
        if step.fusion != Fusion::None && !layer.fuse_relu() {
            return Err(refused(&**layer, "apply the ReLU after it"));
        }
        if step.fusion == Fusion::ReluMaxPool {
            let LayerConfig::MaxPool2d(pool) = model.layers()[step.last].config() else {
                return Err(refused(&**layer, "apply a max pool"));
            };
            if !layer.fuse_max_pool(pool) {
                return Err(refused(&**layer, "apply the max pool after it"));
            }
        }
        if step.relu_grad_masked {
            layer.relu_grad_masked();
        }
        if step.masks_relu_grad && !layer.mask_relu_grad() {
            return Err(refused(&**layer, "mask the ReLU gradient"));
        }
    }
    // What the joins the plan records take of the layers.
    for (k, step) in plan.steps().iter().enumerate() {
        if step.join.norm_grad.is_some() {
            let conv = k.checked_sub(1).map(|c| plan.steps()[c].layer);
            let stages = conv.and_then(|c| layers[c].as_conv_mut().map(|c| c.stages_norm_grad()));
            if stages != Some(true) {
                return Err(refused(
                    &*layers[step.layer],
                    "give its input gradient to a convolution",
                ));
            }
        }
        // The batch norm's output, never written, must be read by no backward.
        let add_reads = |k: usize| {
            let add = plan.steps().get(k + 1).map(|s| s.layer);
            add.is_none_or(|a| layers[a].backward_reads().inputs)
        };
        if step.join.add.is_some() && (layers[step.layer].backward_reads().output || add_reads(k)) {
            return Err(refused(&*layers[step.layer], "store the add after it"));
        }
    }
    Ok(())
}

impl Network {
    /// Builds and initialises the network described by `def`: parameters drawn in layer order
    /// from [`init_rng`](crate::init::init_rng)`(seed)` (PyTorch's default init), dropout masks from
    /// [`dropout_rng`](crate::init::dropout_rng)`(seed, layer index)`. Errors (naming the layer) when sizes do not chain,
    /// an option is invalid, or the output is not a flat `[classes]` vector.
    pub fn new(def: &NetworkDef, seed: u64) -> Result<Self> {
        let model = Model::new(None, def.clone())
            .map_err(|err| Error::config(err.layer(), err.to_string()))?;
        Network::from_model(&model, seed)
    }

    /// Builds and initialises a checked model, as [`Network::new`] does.
    pub fn from_model(model: &Model, seed: u64) -> Result<Self> {
        if model.layers().is_empty() {
            return Err(Error::config(
                "network",
                "a network needs at least one layer",
            ));
        }
        if let Shape::Chw(_) = model.output_shape() {
            return Err(Error::config(
                "network",
                format!(
                    "the output must be flat [classes], found an image {}; end with flatten and linear",
                    model.output_shape()
                ),
            ));
        }
        let mut init = Init::new(seed);
        let mut layers = model
            .layers()
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                if layer.kind().is_merge() {
                    return layers::build_merge(layer.name(), layer.config(), layer.input_shapes());
                }
                layers::build(
                    layer.name(),
                    layer.config(),
                    layer.input_shape(),
                    index,
                    &mut init,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let plan = Plan::new(model);
        fuse(&mut layers, model, &plan)?;
        let reads: Vec<Reads> = plan
            .steps()
            .iter()
            .map(|step| layers[step.layer].backward_reads())
            .collect();
        let storage = plan.storage(&reads);
        let eval_storage = plan.eval_storage();
        Ok(Network {
            name: model.name().unwrap_or("network").to_owned(),
            input: model.input_shape(),
            layers,
            kinds: model.layers().iter().map(|l| l.kind().keyword()).collect(),
            acts: vec![Vec::new(); storage.len.len()],
            storage,
            eval_acts: vec![Vec::new(); eval_storage.len.len()],
            eval_storage,
            grads: vec![Vec::new(); plan.grad_buffers()],
            plan,
            dlogits: Vec::new(),
            capacity: 0,
            last: None,
            dlogits_ready: false,
            eval_fused: false,
        })
    }

    /// The layers, in order (for per-layer timing or inspection).
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Whether layer `index` is applied by the layer before it (a ReLU, [`Layer::fuse_relu`], or
    /// a max pool after such a ReLU, [`Layer::fuse_max_pool`]): such a layer is skipped, so it
    /// takes no time of its own.
    pub fn is_fused(&self, index: usize) -> bool {
        index < self.layers.len() && self.plan.is_fused(index)
    }

    /// The layer whose training forward stores the output of layer `index` (a two-input add
    /// that the batch norm before it computes as it stores, [`cnnc_core::Join::add`]): the
    /// add's forward then takes no time of its own, its backward does.
    pub fn stored_by(&self, index: usize) -> Option<usize> {
        let steps = self.plan.steps();
        steps.windows(2).find_map(|pair| {
            let add = pair[0].join.add?;
            (pair[1].layer == index && pair[1].output == add.output).then_some(pair[0].layer)
        })
    }

    /// The buffer holding the network's output (the logits): the inference storage's after an
    /// eval-mode forward.
    fn output(&self) -> &[f32] {
        let output = self.plan.output();
        match self.eval_fused {
            true => &self.eval_acts[self.eval_storage.slot[output]],
            false => self.act(output),
        }
    }

    /// Activation buffer `b` (its values are the last forward's only if `storage.kept[b]` or
    /// no later step has reused its slot).
    fn act(&self, b: usize) -> &[f32] {
        &self.acts[self.storage.slot[b]]
    }

    /// Per-sample input shape `[channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 3] {
        match self.input {
            Shape::Chw([channels, height, width]) => [channels, height, width],
            Shape::Flat(features) => [features, 1, 1],
        }
    }

    /// Where every dropout layer's random stream stands, by layer name (see
    /// [`Layer::rng_state`]): with [`Network::restore_rng_states`], what lets a checkpoint of a
    /// model with dropout continue bit-identically. Empty for a network without dropout.
    pub fn rng_states(&self) -> Vec<(String, u128)> {
        layers::rng_states(self.layers.iter().map(|l| &**l as &dyn Layer))
    }

    /// Moves every dropout layer's random stream to the position [`Network::rng_states`] gave
    /// for it in a network built from the same definition and seed. Errors on names that are not
    /// dropout layers of this network and on dropout layers `states` leaves out, before moving
    /// any stream.
    pub fn restore_rng_states(&mut self, states: &[(String, u128)]) -> Result<()> {
        layers::restore_rng_states(
            self.layers.iter_mut().map(|l| &mut **l as &mut dyn Layer),
            states,
        )
    }

    /// Number of logits per sample.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_shape().numel())
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> usize {
        crate::Model::param_count(self)
    }

    /// The spec's model name (`network` when it has none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Inference (evaluation mode) on an NCHW batch `[N, C, H, W]` from `&self`: the logits
    /// `[N, classes]`. Checks the input's shape and values first (errors name the expected and
    /// found shapes, or the first NaN or infinity). Several threads may call it at once; each
    /// works in scratch memory of its own, so the network is not changed.
    pub fn predict(&self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        crate::model::infer(self, self.input_shape(), x)
    }

    /// Sizes every training buffer (activations, gradients) for batches of up to `max_batch`
    /// samples, so that later training steps with batches this large or smaller allocate
    /// nothing. A training forward calls it as needed, and so does a backward after an
    /// eval-mode forward (which sizes only the inference steps' buffers).
    pub fn reserve(&mut self, max_batch: usize) {
        if max_batch <= self.capacity {
            return;
        }
        for (act, len) in self.acts.iter_mut().zip(&self.storage.len) {
            act.resize(len * max_batch, 0.0);
        }
        for (g, held) in self.grads.iter_mut().zip(self.plan.grad_lens()) {
            g.resize(held * max_batch, 0.0);
        }
        self.dlogits.resize(self.classes() * max_batch, 0.0);
        self.capacity = max_batch;
    }

    /// Runs the network on an NCHW batch `[N, C, H, W]` and returns a view of the logits
    /// `[N, classes]`, kept in the network's own buffer (nothing is allocated once the buffers
    /// hold `N` samples). `mode` selects training or inference behaviour.
    pub fn forward_view(&mut self, x: ArrayView4<f32>, mode: Mode) -> Result<ArrayView2<'_, f32>> {
        self.forward_timed(x, mode, None)?;
        self.logits()
    }

    /// Checks and loads the input, runs every layer (timing them and the input's loading into
    /// `profile` when given) and records the batch and mode for backward.
    fn forward_timed(
        &mut self,
        x: ArrayView4<f32>,
        mode: Mode,
        profile: Option<&mut StepProfile>,
    ) -> Result<()> {
        let start = Instant::now();
        let (batch, c, h, w) = x.dim();
        if [c, h, w] != self.input_shape() {
            return Err(Error::shape(
                "network",
                "forward input",
                format!(
                    "[N, {}, {}, {}]",
                    self.input_shape()[0],
                    self.input_shape()[1],
                    self.input_shape()[2]
                ),
                format!("{:?}", x.shape()),
            ));
        }
        self.last = None;
        self.dlogits_ready = false;
        self.eval_fused = false;
        if mode == Mode::Eval && profile.is_none() {
            return self.forward_eval(x, batch);
        }
        self.reserve(batch);
        nchw_to_internal(x, &mut self.acts[self.storage.slot[0]]);
        // A timed inference runs the inference steps (a convolution applying the eval-mode batch
        // norm, residual add and ReLU after it as it stores) in the training buffers.
        let fused = mode == Mode::Eval && self.plan.eval_steps().len() < self.plan.steps().len();
        let layers_start = Instant::now();
        match profile {
            Some(p) => {
                on_pool(|| self.run_layers(batch, mode, fused, Some(&mut p.layers)))?;
                p.input = layers_start - start;
                p.forward = layers_start.elapsed();
            }
            None => on_pool(|| self.run_layers(batch, mode, fused, None))?,
        }
        self.eval_fused = fused;
        self.last = Some((batch, mode));
        Ok(())
    }

    /// An eval-mode forward of a checked batch: the inference steps in the inference storage
    /// (`eval_acts`), nothing of the training buffers. Large batches run the whole network a
    /// group of images at a time from `&self` ([`crate::model::infer_internal`]), which needs
    /// only the input (kept for a backward's replay) and the logits here; others run a step at
    /// a time over the whole batch in the slots [`Plan::eval_storage`] shares by liveness.
    fn forward_eval(&mut self, x: ArrayView4<f32>, batch: usize) -> Result<()> {
        let (input, output) = (0, self.plan.output());
        let grouped = on_pool(|| crate::model::group_images(&*self, batch)).is_some();
        let too_large =
            || Error::State(format!("a batch of {batch} samples does not fit in memory"));
        let Network {
            eval_storage,
            eval_acts,
            ..
        } = self;
        for (s, &len) in eval_storage.len.iter().enumerate() {
            let held = s == eval_storage.slot[input] || s == eval_storage.slot[output];
            if held || !grouped {
                let need = len.checked_mul(batch).ok_or_else(too_large)?;
                if eval_acts[s].len() < need {
                    eval_acts[s].resize(need, 0.0);
                }
            }
        }
        nchw_to_internal(x, &mut eval_acts[eval_storage.slot[input]]);
        if grouped {
            let x = &self.eval_acts[self.eval_storage.slot[input]][..batch * self.input.numel()];
            let logits = crate::model::infer_internal(&*self, x, batch)?;
            let out = &mut self.eval_acts[self.eval_storage.slot[output]];
            for (dst, &v) in out.iter_mut().zip(logits.iter()) {
                *dst = v;
            }
        } else {
            on_pool(|| self.run_eval_steps(batch))?;
        }
        self.eval_fused = true;
        self.last = Some((batch, Mode::Eval));
        Ok(())
    }

    /// Runs the plan's inference steps over the whole batch in `eval_acts`, from the input in
    /// its slot, as [`crate::model::infer_step`] runs each.
    fn run_eval_steps(&mut self, batch: usize) -> Result<()> {
        let Network {
            layers,
            plan,
            eval_storage,
            eval_acts,
            ..
        } = self;
        let slot = &eval_storage.slot[..];
        let find = |k: usize| layers.get(k).map(|l| &**l);
        for step in plan.eval_steps() {
            // The output's slot, taken out while the inputs' are read (never one of them).
            let mut y = std::mem::take(&mut eval_acts[slot[step.output]]);
            let acts = &*eval_acts;
            let before = |b: usize| (b < step.output).then(|| &acts[slot[b]][..]);
            let result = crate::model::infer_step(&find, &step_ref(step), &before, &mut y, batch);
            eval_acts[slot[step.output]] = y;
            result?;
        }
        Ok(())
    }

    /// Runs every layer forward on `acts[0]` (with `fused`, the plan's inference steps), adding
    /// each layer's time to `times` when given.
    fn run_layers(
        &mut self,
        batch: usize,
        mode: Mode,
        fused: bool,
        mut times: Option<&mut [LayerTime]>,
    ) -> Result<()> {
        let Network {
            layers,
            plan,
            storage,
            acts,
            ..
        } = self;
        let slot = &storage.slot[..];
        let steps = if fused {
            plan.eval_steps()
        } else {
            plan.steps()
        };
        let mut k = 0;
        while k < steps.len() {
            let step = &steps[k];
            k += 1;
            let i = step.layer;
            let start = Instant::now();
            // A batch norm the plan joins to the add after it stores the sum instead.
            if let Some(add) = step.join.add {
                let mut out = std::mem::take(&mut acts[slot[add.output]]);
                let (x, r) = (&acts[slot[step.input]], &acts[slot[add.residual]]);
                let result = match layers[i].as_batch_norm_mut() {
                    Some(norm) => norm.forward_add(x, r, &mut out, batch, mode, add.relu),
                    None => Err(Error::State(
                        "cnnc bug: a batch norm's add without the batch norm".to_owned(),
                    )),
                };
                acts[slot[add.output]] = out;
                result?;
                if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(i)) {
                    t.forward += start.elapsed();
                }
                k += 1;
                continue;
            }
            // The output's slot, taken out while the inputs' are read (never one of them).
            let mut y = std::mem::take(&mut acts[slot[step.output]]);
            let result = if !step.epilogue.is_none() {
                let find = |k: usize| layers.get(k).map(|l| &**l);
                // The buffers before the output by number, in their slots (what an inference
                // step reads keeps a slot of its own: `Plan::storage`).
                let acts = &*acts;
                let before = |b: usize| (b < step.output).then(|| &acts[slot[b]][..]);
                crate::model::infer_step(&find, &step_ref(step), &before, &mut y, batch)
            } else {
                match layers[i].as_merge() {
                    Some(merge) => with_inputs(acts, slot, &step.inputs, |xs| {
                        merge.forward_merge(xs, &mut y, batch)
                    }),
                    None => layers[i].forward(&acts[slot[step.input]], &mut y, batch, mode),
                }
            };
            acts[slot[step.output]] = y;
            result?;
            if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(i)) {
                t.forward += start.elapsed();
            }
        }
        Ok(())
    }

    /// Runs the network on an NCHW batch and returns the logits `[N, classes]` as a new array.
    pub fn forward(&mut self, x: ArrayView4<f32>, mode: Mode) -> Result<Array2<f32>> {
        Ok(self.forward_view(x, mode)?.to_owned())
    }

    /// The logits of the last forward, `[N, classes]`.
    pub fn logits(&self) -> Result<ArrayView2<'_, f32>> {
        let (batch, _) = self
            .last
            .ok_or_else(|| Error::State("no forward pass has run yet".to_owned()))?;
        let classes = self.classes();
        let out = &self.output()[..batch * classes];
        ArrayView2::from_shape((batch, classes), out)
            .map_err(|e| Error::State(format!("logits buffer: {e}")))
    }

    /// Backpropagates `dlogits` (gradient of the loss with respect to the last forward's logits,
    /// `[N, classes]`) and overwrites every parameter's `grad`.
    pub fn backward(&mut self, dlogits: ArrayView2<f32>) -> Result<()> {
        let (batch, _) = self
            .last
            .ok_or_else(|| Error::State("backward needs a forward pass first".to_owned()))?;
        let classes = self.classes();
        if dlogits.dim() != (batch, classes) {
            return Err(Error::shape(
                "network",
                "backward (the gradient of the loss with respect to the logits)",
                format!("[{batch}, {classes}]"),
                format!("{:?}", dlogits.shape()),
            ));
        }
        self.unfuse(batch)?;
        for (dst, &v) in self.dlogits.iter_mut().zip(dlogits.iter()) {
            *dst = v;
        }
        self.dlogits_ready = true;
        self.backward_from_buffer(batch, None, false)?;
        Ok(())
    }

    /// After an eval-mode forward (the inference steps in the inference storage), sizes the
    /// training buffers and runs the training steps (in eval mode) over the same input, so that
    /// every buffer backward reads holds its layer's output (the same values: both plans
    /// compute them bit for bit alike).
    fn unfuse(&mut self, batch: usize) -> Result<()> {
        if self.eval_fused {
            self.reserve(batch);
            let n = batch * self.input.numel();
            let input = &self.eval_acts[self.eval_storage.slot[0]][..n];
            self.acts[self.storage.slot[0]][..n].copy_from_slice(input);
            on_pool(|| self.run_layers(batch, Mode::Eval, false, None))?;
            self.eval_fused = false;
        }
        Ok(())
    }

    /// The bytes of activation and gradient buffers the network holds now: what its forwards
    /// and backwards have sized (see [`BufferBytes`]).
    pub fn buffer_bytes(&self) -> BufferBytes {
        let bytes = |buffers: &[Vec<f32>]| {
            buffers
                .iter()
                .map(|b| b.capacity() * std::mem::size_of::<f32>())
                .sum()
        };
        BufferBytes {
            training: bytes(&self.acts),
            gradients: bytes(&self.grads) + self.dlogits.capacity() * std::mem::size_of::<f32>(),
            inference: bytes(&self.eval_acts),
        }
    }

    /// Backward from `self.dlogits`, adding each layer's time to `times` when given. With
    /// `check`, stops at the first layer that writes a non-finite gradient and returns it.
    fn backward_from_buffer(
        &mut self,
        batch: usize,
        times: Option<&mut [LayerTime]>,
        check: bool,
    ) -> Result<Option<NonFinite>> {
        on_pool(|| self.backward_layers(batch, times, check))
    }

    /// The body of [`Network::backward_from_buffer`], on a worker of the thread pool.
    fn backward_layers(
        &mut self,
        batch: usize,
        mut times: Option<&mut [LayerTime]>,
        check: bool,
    ) -> Result<Option<NonFinite>> {
        let Network {
            layers,
            kinds,
            plan,
            storage,
            acts,
            grads,
            dlogits,
            ..
        } = self;
        let activations = (&acts[..], &storage.slot[..]);
        let steps = plan.steps();
        let mut k = steps.len();
        while k > 0 {
            k -= 1;
            let step = &steps[k];
            let i = step.layer;
            let start = Instant::now();
            // The joins the plan records, except when checking (which reads every input
            // gradient): a batch norm's input gradient computed by the convolution before it.
            if let (Some(join), Grad::Buffer(a), false) = (step.join.norm_grad, step.dy, check) {
                let Some(prev) = k.checked_sub(1).map(|c| &steps[c]) else {
                    return Err(Error::State(
                        "cnnc bug: a batch norm's joined gradient has no convolution".to_owned(),
                    ));
                };
                let dy = std::mem::take(&mut grads[a]);
                let slot = &storage.slot[..];
                let (x, y) = (&acts[slot[step.input]], &acts[slot[step.output]]);
                let (head, tail) = layers.split_at_mut(i);
                let (Some(norm), Some(conv)) =
                    (tail[0].as_batch_norm_mut(), head[prev.layer].as_conv_mut())
                else {
                    return Err(Error::State(
                        "cnnc bug: a joined batch norm gradient without its layers".to_owned(),
                    ));
                };
                let mut norm_time = Duration::ZERO;
                let result = norm.backward_deferred(x, y, &dy, batch).and_then(|grad| {
                    norm_time = start.elapsed();
                    let (cx, cy) = (&acts[slot[prev.input]], &acts[slot[prev.output]]);
                    let n = batch * conv.input_shape().numel();
                    match join.conv_dx {
                        // Added into the sum as the convolution stores it: no scratch buffer.
                        GradTo::Add { into, .. } => {
                            let sum = &mut grads[into][..];
                            conv.backward_from_norm_adding(cx, cy, &grad, sum, batch)
                        }
                        to => one_input_backward(to, grads, n, |dx| {
                            conv.backward_from_norm(cx, cy, &grad, dx, batch)
                        }),
                    }
                });
                grads[a] = dy;
                if let Some(pair) = join.swap {
                    let [x, y] = grads.get_disjoint_mut(pair).map_err(|_| {
                        Error::State("cnnc bug: a gradient buffer trades places with itself".into())
                    })?;
                    std::mem::swap(x, y);
                }
                result?;
                if let Some(t) = times.as_deref_mut() {
                    t[i].backward += norm_time;
                    t[prev.layer].backward += start.elapsed() - norm_time;
                }
                k -= 1;
                continue;
            }
            // The gradient of the output, taken out of its buffer while the inputs' are written
            // (the plan never names it as one of them) and put back after.
            let mut dy_buffer = match step.dy {
                Grad::Logits => std::mem::take(dlogits),
                Grad::Buffer(a) => std::mem::take(&mut grads[a]),
                Grad::Unused => {
                    // Nothing reads this output: no gradient reaches the layer's parameters.
                    zero_grads(&mut *layers[i]);
                    continue;
                }
            };
            // An add whose two input gradients are the same values writes one buffer, which
            // the step before reads.
            let result = match step.join.same_grad.filter(|_| !check) {
                Some(same) => {
                    let y = &acts[storage.slot[step.output]];
                    let other = usize::from(same == 0);
                    let theirs = match step.dxs.get(other) {
                        Some(&GradTo::Write(b)) => Ok(b),
                        _ => Err(Error::State(
                            "cnnc bug: a shared add gradient is not written whole".to_owned(),
                        )),
                    };
                    let merge = layers[i].as_merge().ok_or_else(|| {
                        Error::State("cnnc bug: a shared add gradient without the add".to_owned())
                    });
                    theirs.and_then(|theirs| {
                        merge.and_then(|merge| {
                            with_inputs(activations.0, activations.1, &step.inputs, |xs| {
                                let dx = &mut grads[theirs];
                                merge.backward_merge(xs, [y, &dy_buffer], other, dx, false, batch)
                            })
                        })
                    })
                }
                None => backward_step(&mut *layers[i], step, activations, grads, &dy_buffer, batch),
            };
            match step.dy {
                Grad::Logits => std::mem::swap(dlogits, &mut dy_buffer),
                Grad::Buffer(a) => std::mem::swap(&mut grads[a], &mut dy_buffer),
                Grad::Unused => {}
            }
            result?;
            if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(i)) {
                t.backward += start.elapsed();
            }
            if check {
                let layer = &mut *layers[i];
                let mut input_grad = None;
                for (j, to) in step.dxs.iter().enumerate() {
                    let written = match *to {
                        GradTo::Discard => continue,
                        GradTo::Write(b) | GradTo::Add { into: b, .. } => b,
                    };
                    let grad = &grads[written][..batch * layer_input_len(layer, j)];
                    if first_non_finite(grad).is_some() {
                        input_grad = Some(grad);
                        break;
                    }
                }
                if let Some(found) = gradient_fault(layer, i, kinds[i], input_grad) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Locates the first NaN or infinity of the last training step (a forward followed by
    /// [`Network::train_step`]'s loss or by [`Network::backward`]): in the input batch, then in
    /// each layer's output in forward order, then in the loss gradient, then in each layer's
    /// parameter and input gradients in backward order. An output no backward reads, whose slot
    /// a later step reused (or which a batch norm joined to the add after it never wrote), is
    /// computed again from its inputs by a copy of its layer; backward is replayed without the
    /// plan's joins to see the input gradients (which the step does not keep): it rewrites the
    /// same parameter gradients and leaves every value and buffer as it was. `Ok(None)` when all
    /// of them are finite (a loss
    /// that overflowed on finite logits). Meant to be called once a cheap check (the loss, the
    /// parameter gradients) has failed, before the optimizer step.
    pub fn find_non_finite(&mut self) -> Result<Option<NonFinite>> {
        let (batch, mode) = self
            .last
            .ok_or_else(|| Error::State("no training step has run yet".to_owned()))?;
        self.unfuse(batch)?;
        let input_len = batch * self.input.numel();
        if let Some(value) = first_non_finite(&self.act(0)[..input_len]) {
            return Ok(Some(NonFinite::Input { value }));
        }
        // Outputs whose slots later steps reused, computed again.
        let mut replayed: Vec<Option<Vec<f32>>> = vec![None; self.plan.buffers().len()];
        for step in self.plan.steps() {
            let (index, layer) = (step.layer, &self.layers[step.layer]);
            let len = batch * layer.output_shape().numel();
            // An output no backward reads whose slot a later step reused, or that the step
            // did not write (a batch norm that stored the add after it).
            if !self.storage.kept[step.output] || step.join.add.is_some() {
                let again = self.replay(step, batch, mode, &replayed)?;
                replayed[step.output] = Some(again);
            }
            let output = replayed[step.output]
                .as_deref()
                .unwrap_or_else(|| self.act(step.output));
            if let Some(value) = first_non_finite(&output[..len]) {
                return Ok(Some(NonFinite::Activations {
                    index,
                    name: layer.name().to_owned(),
                    kind: self.kinds[index],
                    value,
                }));
            }
        }
        if !self.dlogits_ready {
            return Ok(None);
        }
        let logits_len = batch * self.classes();
        if let Some(value) = first_non_finite(&self.dlogits[..logits_len]) {
            return Ok(Some(NonFinite::LossGradient { value }));
        }
        self.backward_from_buffer(batch, None, true)
    }

    /// The output `step` wrote in the last forward (of `batch` samples in `mode`), computed again
    /// by a copy of its layer (so that nothing the forward updates, batch norm's running
    /// statistics say, changes) from its inputs: their slots, or `replayed` for those whose
    /// slots were reused. Only for a layer whose output no backward reads, which never draws
    /// random numbers (dropout keeps its output).
    fn replay(
        &self,
        step: &cnnc_core::Step,
        batch: usize,
        mode: Mode,
        replayed: &[Option<Vec<f32>>],
    ) -> Result<Vec<f32>> {
        let input = |b: usize| replayed[b].as_deref().unwrap_or_else(|| self.act(b));
        let mut layer = self.layers[step.layer].clone();
        let mut y = vec![0.0; batch * layer.output_shape().numel()];
        match layer.as_merge() {
            Some(merge) => {
                let xs: Vec<&[f32]> = step.inputs.iter().map(|&b| input(b)).collect();
                merge.forward_merge(&xs, &mut y, batch)?;
            }
            None => layer.forward(input(step.input), &mut y, batch, mode)?,
        }
        Ok(y)
    }

    /// One training step's computation: forward in training mode, softmax cross-entropy (mean)
    /// against `labels` (one class index per sample), backward. Leaves the gradients in every
    /// parameter's `grad` for an optimizer and returns the loss. Allocates nothing once the buffers
    /// hold the batch.
    pub fn train_step(&mut self, x: ArrayView4<f32>, labels: &[usize]) -> Result<f32> {
        self.step(x, labels, None)
    }

    /// [`Network::train_step`], also returning the wall time of every layer's forward and
    /// backward call (in layer order) and of the phases around them: what `cnnc bench` reports
    /// to show where a step goes.
    pub fn profile_train_step(
        &mut self,
        x: ArrayView4<f32>,
        labels: &[usize],
    ) -> Result<StepProfile> {
        let mut profile = StepProfile {
            layers: vec![LayerTime::default(); self.layers.len()],
            ..StepProfile::default()
        };
        profile.loss = self.step(x, labels, Some(&mut profile))?;
        Ok(profile)
    }

    /// A training step's computation, timing the layers and phases into `profile` when given.
    fn step(
        &mut self,
        x: ArrayView4<f32>,
        labels: &[usize],
        mut profile: Option<&mut StepProfile>,
    ) -> Result<f32> {
        let batch = x.dim().0;
        self.forward_timed(x, Mode::Train, profile.as_deref_mut())?;
        let loss_start = Instant::now();
        let classes = self.classes();
        let logits_len = batch * classes;
        let logits = &self.acts[self.storage.slot[self.plan.output()]][..logits_len];
        let dlogits = &mut self.dlogits;
        let shape_err = |e: ndarray::ShapeError| Error::State(format!("logits buffer: {e}"));
        let loss = softmax_cross_entropy(
            ArrayView2::from_shape((batch, classes), logits).map_err(shape_err)?,
            labels,
            ArrayViewMut2::from_shape((batch, classes), &mut dlogits[..logits_len])
                .map_err(shape_err)?,
        )?;
        self.dlogits_ready = true;
        let backward_start = Instant::now();
        let times = profile.as_deref_mut().map(|p| &mut p.layers[..]);
        self.backward_from_buffer(batch, times, false)?;
        if let Some(p) = profile {
            p.loss_time = backward_start - loss_start;
            p.backward = backward_start.elapsed();
        }
        Ok(loss)
    }
}

impl Visit for Network {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        for layer in &mut self.layers {
            layer.visit(f);
        }
    }

    /// Reads through [`VisitRef`]: the layers repack nothing.
    fn visit_read(&mut self, f: &mut dyn FnMut(EntryRef<'_>)) {
        self.visit_ref(f);
    }
}

impl VisitRef for Network {
    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        for layer in &self.layers {
            layer.visit_ref(f);
        }
    }
}

/// A plan's step as the `&self` runner reads it.
fn step_ref(step: &cnnc_core::Step) -> StepRef<'_> {
    StepRef {
        layer: step.layer,
        last: step.last,
        inputs: &step.inputs,
        output: step.output,
        epilogue: step.epilogue,
    }
}

impl Planned for Network {
    fn layer(&self, index: usize) -> Option<&dyn Layer> {
        self.layers.get(index).map(|l| &**l)
    }

    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn step_count(&self) -> usize {
        self.plan.steps().len()
    }

    fn step(&self, index: usize) -> StepRef<'_> {
        step_ref(&self.plan.steps()[index])
    }

    fn eval_step_count(&self) -> usize {
        self.plan.eval_steps().len()
    }

    fn eval_step(&self, index: usize) -> StepRef<'_> {
        step_ref(&self.plan.eval_steps()[index])
    }

    fn buffer(&self, index: usize) -> Shape {
        self.plan.buffers()[index]
    }

    fn buffer_count(&self) -> usize {
        self.plan.buffers().len()
    }

    fn output_buffer(&self) -> usize {
        self.plan.output()
    }
}

impl crate::Model for Network {
    fn predict(&self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        Network::predict(self, x)
    }

    fn input_shape(&self) -> [usize; 3] {
        Network::input_shape(self)
    }

    fn output_size(&self) -> usize {
        self.classes()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn forward_train(&mut self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        check_input(&x, Network::input_shape(self))?;
        Network::forward(self, x, Mode::Train)
    }

    fn backward(&mut self, dlogits: ArrayView2<f32>) -> Result<()> {
        Network::backward(self, dlogits)
    }

    fn train_step(&mut self, x: ArrayView4<f32>, labels: &[usize]) -> Result<f32> {
        check_input(&x, Network::input_shape(self))?;
        Network::train_step(self, x, labels)
    }

    fn activations(
        &self,
        x: ArrayView4<f32>,
        names: &[&str],
    ) -> Result<BTreeMap<String, ArrayD<f32>>> {
        crate::model::activations(self, Network::input_shape(self), x, names)
    }

    fn save(&self, path: &Path) -> Result<(), SaveError> {
        let metadata = BTreeMap::from([("model".to_owned(), self.name.clone())]);
        weights::save_ref(self, path, &metadata)
    }

    fn load(&mut self, path: &Path) -> Result<BTreeMap<String, String>, LoadError> {
        weights::load(self, path)
    }

    fn rng_states(&self) -> Vec<(String, u128)> {
        Network::rng_states(self)
    }

    fn restore_rng_states(&mut self, states: &[(String, u128)]) -> Result<()> {
        Network::restore_rng_states(self, states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        BatchNorm2dConfig, Conv2dConfig, LayerDef, LinearConfig, Pool2dConfig, Source,
    };

    /// A layer of a test network: `inputs` empty reads the layer before.
    fn layer(name: &str, config: LayerConfig, inputs: Vec<Source>) -> LayerDef {
        LayerDef {
            name: name.to_owned(),
            config,
            inputs,
        }
    }

    /// A residual block after a pool: the stem's gradient (8 x 8 pixels) is four times the
    /// block's (4 x 4). Each gradient buffer is as long as the largest gradient that passes
    /// through it, so only one holds the stem's; a training step runs with them.
    #[test]
    fn gradient_buffers_are_sized_by_what_they_hold() {
        let conv = |cin, cout| {
            LayerConfig::Conv2d(Conv2dConfig {
                padding: [1, 1],
                padding_end: [1, 1],
                ..Conv2dConfig::new(cin, cout, [3, 3])
            })
        };
        let pool = LayerConfig::MaxPool2d(Pool2dConfig::new([2, 2], [2, 2], [0, 0]));
        let def = NetworkDef {
            input: [4, 8, 8],
            layers: vec![
                layer("stem", conv(4, 8), vec![]),
                layer("pool", pool, vec![]),
                layer("conv", conv(8, 8), vec![]),
                layer("relu", LayerConfig::Relu, vec![]),
                layer(
                    "add",
                    LayerConfig::Add,
                    vec![Source::Layer(3), Source::Layer(1)],
                ),
                layer("flat", LayerConfig::FLATTEN, vec![]),
                layer(
                    "fc",
                    LayerConfig::Linear(LinearConfig {
                        in_features: 128,
                        out_features: 3,
                        bias: true,
                    }),
                    vec![],
                ),
            ],
        };
        let mut net = Network::new(&def, 1).expect("a valid network");
        let sizes = net.plan.grad_lens().to_vec();
        assert!(sizes.len() >= 2, "{sizes:?}");
        assert_eq!(sizes.iter().max(), Some(&(8 * 8 * 8)), "{sizes:?}");
        let stem = sizes.iter().filter(|&&s| s == 8 * 8 * 8).count();
        assert_eq!(
            stem, 1,
            "only the pool's input gradient is 8 x 8: {sizes:?}"
        );
        for step in net.plan.steps() {
            for (to, &input) in step.dxs.iter().zip(&step.inputs) {
                if let GradTo::Write(b) | GradTo::Add { into: b, .. } = *to {
                    assert!(sizes[b] >= net.plan.buffers()[input].numel());
                }
            }
        }
        let batch = 2;
        let x = ndarray::Array4::from_shape_fn((batch, 4, 8, 8), |(n, c, y, x)| {
            ((n * 31 + c * 7 + y * 3 + x) % 11) as f32 / 5.0 - 1.0
        });
        net.train_step(x.view(), &[0, 2]).expect("a training step");
        for (g, &s) in net.grads.iter().zip(&sizes) {
            assert_eq!(g.len(), s * batch);
        }
    }

    /// A residual block (`conv → bn → relu`, twice, the second batch norm added to the block's
    /// input, then a ReLU): the plan joins every batch norm to the convolution before it in
    /// backward, the second to the add in forward, and shares the add's two gradients; the
    /// executor's gradients with the joins are those of the plan's steps one by one (backward
    /// replayed as a check runs it, without any of the three), bit for bit.
    #[test]
    fn the_joined_steps_give_the_gradients_of_the_plans_steps() {
        let conv = |cin, cout| {
            LayerConfig::Conv2d(Conv2dConfig {
                padding: [1, 1],
                padding_end: [1, 1],
                bias: false,
                ..Conv2dConfig::new(cin, cout, [3, 3])
            })
        };
        let bn = || LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(8));
        let def = NetworkDef {
            input: [3, 6, 6],
            layers: vec![
                layer("stem", conv(3, 8), vec![]),
                layer("bn0", bn(), vec![]),
                layer("relu0", LayerConfig::Relu, vec![]),
                layer("conv1", conv(8, 8), vec![]),
                layer("bn1", bn(), vec![]),
                layer("relu1", LayerConfig::Relu, vec![]),
                layer("conv2", conv(8, 8), vec![]),
                layer("bn2", bn(), vec![]),
                layer(
                    "add",
                    LayerConfig::Add,
                    vec![Source::Layer(7), Source::Layer(2)],
                ),
                layer("relu", LayerConfig::Relu, vec![]),
                layer("flat", LayerConfig::FLATTEN, vec![]),
                layer(
                    "fc",
                    LayerConfig::Linear(LinearConfig {
                        in_features: 288,
                        out_features: 3,
                        bias: true,
                    }),
                    vec![],
                ),
            ],
        };
        let mut net = Network::new(&def, 3).expect("a valid network");
        let batch = 3;
        let steps = net.plan.steps();
        let of = |layer: usize| &steps[steps.iter().position(|s| s.layer == layer).unwrap()];
        for norm in [1, 4, 7] {
            assert!(of(norm).join.norm_grad.is_some(), "bn {norm}");
        }
        let add = of(7).join.add.expect("bn2 stores the add");
        assert!(add.relu);
        assert!(of(8).join.same_grad.is_some());

        let x = ndarray::Array4::from_shape_fn((batch, 3, 6, 6), |(n, c, y, x)| {
            ((n * 31 + c * 7 + y * 3 + x) % 11) as f32 / 5.0 - 1.0
        });
        let grad_bits = |net: &mut Network| {
            let mut out = Vec::new();
            net.visit(&mut |e| {
                if let Entry::Param { param, .. } = e {
                    out.extend(param.grad.iter().map(|v| v.to_bits()));
                }
            });
            out
        };
        net.train_step(x.view(), &[0, 2, 1])
            .expect("a training step");
        let joined = grad_bits(&mut net);
        assert!(joined.iter().any(|&b| b != 0));
        let found = net
            .backward_from_buffer(batch, None, true)
            .expect("the plan's steps one by one");
        assert!(found.is_none());
        assert_eq!(grad_bits(&mut net), joined);
    }
}
