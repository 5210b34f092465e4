//! [`Model`], the contract every runnable cnnc model keeps: the models `cnn_model!` generates and
//! the dynamic executor ([`crate::exec::Network`]). Generic code (an evaluator, a trainer, a
//! server) is written once against it.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayView4};

use cnnc_core::Shape;
pub use cnnc_core::{Clamp, Epilogue, Slice};

use crate::error::{Error, Result};
use crate::layers::{ChannelStore, Layer};
use crate::param::{EntryRef, Visit, VisitRef};
use crate::scratch::{self, Scratch};
use crate::tensor::{flat_to_array, internal_to_nchw, nchw_to_internal, on_pool};
use crate::typed::check_input;
use crate::weights::{LoadError, SaveError};

/// A runnable CNN: inference from a shared reference, training through `&mut`, parameters by
/// PyTorch state_dict name, safetensors save and load.
///
/// **Modes.** [`Model::predict`] and [`Model::activations`] run in evaluation mode (PyTorch's
/// `model.eval()`: dropout is the identity, batch norm uses its running statistics) and change
/// nothing in the model, so one model (an `Arc<M>`) serves predictions from many threads at once
/// without a lock. [`Model::forward_train`] and [`Model::train_step`] run in training mode
/// (`model.train()`: dropout draws masks, batch norm uses and updates batch statistics) and keep
/// what [`Model::backward`] needs; [`Model::backward`] writes every parameter's gradient.
///
/// **Inputs** are PyTorch-layout batches `[N, C, H, W]` ([`Model::input_shape`] per sample; a
/// model taking flat features `[F]` takes `[N, F, 1, 1]`). A batch of the wrong per-sample shape,
/// a label count that is not the batch size, or a NaN or infinite input is an error naming them
/// in these terms ([`crate::Error::InputShape`], [`crate::Error::LabelCount`],
/// [`crate::Error::NonFiniteInput`]), never a panic.
///
/// **Parameters** are visited by state_dict name (`layer1.0.weight`) through [`Visit`] (to
/// change them: optimizers, loading) and [`VisitRef`] (to read them: saving, counting). Every
/// implementor is `Send + Sync`; the concrete ones are also `Clone` (a clone is independent:
/// training one leaves the other as it was). The trait is object safe: `Box<dyn Model>` works.
///
/// ```
/// use cnnc_runtime::Model;
/// use ndarray::ArrayView4;
///
/// /// Accuracy of any model on a labelled batch.
/// fn accuracy<M: Model + ?Sized>(model: &M, x: ArrayView4<f32>, labels: &[usize]) -> f32 {
///     let Ok(logits) = model.predict(x) else { return 0.0 };
///     let hits = logits
///         .rows()
///         .into_iter()
///         .zip(labels)
///         .filter(|(row, label)| {
///             let best = row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
///             best == **label
///         })
///         .count();
///     hits as f32 / labels.len().max(1) as f32
/// }
/// ```
pub trait Model: Visit + VisitRef + Send + Sync {
    /// Inference (evaluation mode) on a batch `[N, C, H, W]`: the logits `[N, output_size]`.
    /// Takes `&self`: concurrent calls from several threads are fine and give the same values as
    /// one at a time.
    fn predict(&self, x: ArrayView4<f32>) -> Result<Array2<f32>>;

    /// Per-sample input shape `[C, H, W]` (`[F, 1, 1]` for a model taking flat features).
    fn input_shape(&self) -> [usize; 3];

    /// Logits per sample.
    fn output_size(&self) -> usize;

    /// The spec's model name (the Rust type's name when the spec gives none).
    fn name(&self) -> &str;

    /// Trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    fn param_count(&self) -> usize {
        let mut count = 0;
        self.visit_ref(&mut |entry| {
            if let EntryRef::Param { param, .. } = entry {
                count += param.value.len();
            }
        });
        count
    }

    /// Training-mode forward on a batch `[N, C, H, W]`: the logits `[N, output_size]`; the model
    /// keeps what [`Model::backward`] needs.
    fn forward_train(&mut self, x: ArrayView4<f32>) -> Result<Array2<f32>>;

    /// Backpropagates `dlogits` (the gradient of the loss with respect to the logits of the last
    /// [`Model::forward_train`], `[N, output_size]`) and writes every parameter's gradient.
    fn backward(&mut self, dlogits: ArrayView2<f32>) -> Result<()>;

    /// One training step's computation: training forward, softmax cross-entropy (mean) against
    /// `labels` (one class index per sample), backward. Leaves the gradients for an optimizer
    /// and returns the loss.
    fn train_step(&mut self, x: ArrayView4<f32>, labels: &[usize]) -> Result<f32>;

    /// Evaluation-mode forward that returns the outputs of the layers named in `names` (the
    /// spec's layer names, which are the state_dict prefixes: `layer1.0`, `fc1`), in PyTorch's
    /// layout: `[N, C, H, W]` for images, `[N, F]` for features. A layer the model applies
    /// inside the one before it (a ReLU or a max pool fused into a convolution) is readable too:
    /// when such a name is asked for, the forward runs those layers apart, with the same values.
    /// An unknown name is an error listing the valid ones, closest first.
    fn activations(
        &self,
        x: ArrayView4<f32>,
        names: &[&str],
    ) -> Result<BTreeMap<String, ArrayD<f32>>>;

    /// Saves the parameters and buffers as safetensors under their state_dict names
    /// (atomically), with the model's name as metadata.
    fn save(&self, path: &Path) -> Result<(), SaveError>;

    /// Loads parameters and buffers from a safetensors file strictly (every missing, unexpected
    /// or misshapen tensor is reported; the model is untouched on error). Returns the file's
    /// metadata. The model is ready for [`Model::predict`] at full speed afterwards.
    fn load(&mut self, path: &Path) -> Result<BTreeMap<String, String>, LoadError>;

    /// Where every dropout layer's random stream stands, by layer name: what lets a checkpoint
    /// of a model with dropout continue bit-identically. Empty for a model without dropout.
    fn rng_states(&self) -> Vec<(String, u128)>;

    /// Moves every dropout layer's random stream to the position [`Model::rng_states`] gave for
    /// it in a model built from the same spec and seed.
    fn restore_rng_states(&mut self, states: &[(String, u128)]) -> Result<()>;
}

/// One step of a model's plan as the `&self` runner reads it ([`cnnc_core::Step`]'s fields):
/// layer `layer` runs, applying the layers after it up to `last`, reading activation buffers
/// `inputs` and writing buffer `output`; in an inference step, a convolution stores through
/// `epilogue`. Generated models list theirs as a constant.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct StepRef<'a> {
    /// The layer that runs.
    pub layer: usize,
    /// The last layer it applies (itself when it fuses nothing).
    pub last: usize,
    /// The activation buffers it reads (0 is the input).
    pub inputs: &'a [usize],
    /// The activation buffer it writes.
    pub output: usize,
    /// What its convolution applies as it stores ([`Epilogue::NONE`] but in inference steps).
    pub epilogue: Epilogue,
}

/// A model's layers and plan, which [`infer`] and [`activations`] run from `&self`: what the
/// executor and generated models hand over, so both run one implementation.
#[doc(hidden)]
pub trait Planned: Sync {
    /// Layer `index`, in the spec's order (`None` past the last).
    fn layer(&self, index: usize) -> Option<&dyn Layer>;
    /// Number of layers.
    fn layer_count(&self) -> usize;
    /// Number of steps.
    fn step_count(&self) -> usize;
    /// Step `index`, in forward order.
    fn step(&self, index: usize) -> StepRef<'_>;
    /// Number of inference steps ([`cnnc_core::Plan::eval_steps`]); the default, for a plan
    /// whose inference steps are its steps, [`Planned::step_count`].
    fn eval_step_count(&self) -> usize {
        self.step_count()
    }
    /// Inference step `index`, in forward order; the default [`Planned::step`].
    fn eval_step(&self, index: usize) -> StepRef<'_> {
        self.step(index)
    }
    /// Per-sample shape of each activation buffer (0 is the input).
    fn buffer(&self, index: usize) -> Shape;
    /// Number of activation buffers.
    fn buffer_count(&self) -> usize;
    /// The buffer holding the logits.
    fn output_buffer(&self) -> usize;
}

/// Layer `index` of `model`, or an error: the plan names a layer the model does not have.
fn layer_at(model: &(impl Planned + ?Sized), index: usize) -> Result<&dyn Layer> {
    model.layer(index).ok_or_else(|| {
        Error::State(format!(
            "cnnc bug: the plan names layer {index}, past the last"
        ))
    })
}

/// Evaluation-mode inference on a checked batch: every step of `model` from `&self`, its
/// activation buffers in the calling worker's scratch memory. The logits `[N, outputs]`.
#[doc(hidden)]
pub fn infer(
    model: &(impl Planned + ?Sized),
    expected: [usize; 3],
    x: ArrayView4<f32>,
) -> Result<Array2<f32>> {
    check_input(&x, expected)?;
    run_grouped(model, Input::Nchw(x))
}

/// [`infer`] on a batch already in the runtime's layout (`batch` samples of the first buffer's
/// shape, pixel-major), as typed activations hold it.
#[doc(hidden)]
pub fn infer_internal(
    model: &(impl Planned + ?Sized),
    x: &[f32],
    batch: usize,
) -> Result<Array2<f32>> {
    run_grouped(model, Input::Internal(x, batch))
}

/// Most bytes of one activation buffer a group of [`run_grouped`] holds: a quarter of a 1 MiB
/// L2, so that the buffers a step reads and writes stay there from one step to the next.
const GROUP_BYTES: usize = 256 * 1024;

/// Most bytes of parameters a network that runs in groups holds: every group reads all of them
/// again, which costs little while they stay in the L3 cache (ResNet-20's 1.1 MB) and more than
/// the groups save when they do not (ResNet-18's 45 MB: grouped, its inference took ~25 % more
/// CPU time).
const GROUP_WEIGHT_BYTES: usize = 4 << 20;

/// Images per group when a batch of `batch` runs the whole network a group of images at a time
/// ([`run_grouped`]), or `None` to run it a step at a time over the whole batch: a multiple of
/// every step's [`Layer::batch_grain`] (so each step's values are the whole batch's, bit for
/// bit) whose largest buffer holds at most [`GROUP_BYTES`] (or one grain), at least four groups
/// a thread, for a network of at most [`GROUP_WEIGHT_BYTES`] of parameters.
pub(crate) fn group_images(model: &(impl Planned + ?Sized), batch: usize) -> Option<usize> {
    let (mut grain, mut largest, mut weights) = (1, 0, 0);
    for s in 0..model.eval_step_count() {
        let step = model.eval_step(s);
        let layer = model.layer(step.layer)?;
        let layer_grain = layer.batch_grain()?;
        layer.visit_ref(&mut |entry| {
            if let EntryRef::Param { param, .. } = entry {
                weights += param.value.len() * std::mem::size_of::<f32>();
            }
        });
        if weights > GROUP_WEIGHT_BYTES {
            return None;
        }
        grain = grain / gcd(grain, layer_grain) * layer_grain;
        for &b in step.inputs.iter().chain([&step.output]) {
            largest = largest.max(model.buffer(b).numel() * std::mem::size_of::<f32>());
        }
    }
    let groups_of = |bytes: usize| {
        let group = bytes.checked_mul(grain)?;
        Some((GROUP_BYTES / group.max(1)).max(1))
    };
    let images = grain * groups_of(largest)?;
    (batch / images >= 4 * rayon::current_num_threads()).then_some(images)
}

/// The greatest common divisor of `a` and `b`.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// [`run`] without wanted layers, in large batches a group of images at a time, the groups in
/// parallel ([`group_images`]; the last group takes the rest): each group's buffers, a fraction
/// of the whole batch's, stay in the cache of the thread running it from one step to the next
/// instead of each step streaming the whole batch through memory. The values are the whole
/// batch's, bit for bit.
fn run_grouped(model: &(impl Planned + ?Sized), x: Input<'_>) -> Result<Array2<f32>> {
    let batch = match x {
        Input::Nchw(x) => x.dim().0,
        Input::Internal(_, batch) => batch,
    };
    let Some(images) = on_pool(|| group_images(model, batch)) else {
        return Ok(run(model, x, &[], None)?.0);
    };
    let groups = batch / images;
    let (sample, classes) = (
        model.buffer(0).numel(),
        model.buffer(model.output_buffer()).numel(),
    );
    let mut logits = Array2::zeros((batch, classes));
    let mut parts = Vec::with_capacity(groups);
    let mut rest = logits
        .as_slice_mut()
        .ok_or_else(|| Error::State("cnnc bug: new logits not contiguous".to_owned()))?;
    for g in 0..groups {
        let n = if g + 1 == groups {
            batch - g * images
        } else {
            images
        };
        let (part, after) = rest.split_at_mut(n * classes);
        parts.push((g, part));
        rest = after;
    }
    let group = |(g, into): (usize, &mut [f32])| {
        let (first, end) = (
            g * images,
            if g + 1 == groups {
                batch
            } else {
                (g + 1) * images
            },
        );
        let part = match x {
            Input::Nchw(x) => Input::Nchw(x.slice_move(ndarray::s![first..end, .., .., ..])),
            Input::Internal(x, _) => {
                let x = x
                    .get(first * sample..end * sample)
                    .ok_or_else(|| Error::BufferLength {
                        found: x.len(),
                        need: end * sample,
                        batch,
                        shape: model.buffer(0).to_string(),
                    })?;
                Input::Internal(x, end - first)
            }
        };
        // The group is this thread's own: its layers' passes run here, not spread again.
        crate::par::own(|| run(model, part, &[], Some(into))).map(|_| ())
    };
    on_pool(|| {
        use rayon::prelude::*;
        parts.into_par_iter().try_for_each(group)
    })?;
    Ok(logits)
}

/// A batch to run: PyTorch's layout (checked by the caller), or the runtime's.
#[derive(Clone, Copy)]
enum Input<'a> {
    Nchw(ArrayView4<'a, f32>),
    Internal(&'a [f32], usize),
}

/// [`infer`], also returning the outputs of the layers named in `names` in PyTorch's layout.
#[doc(hidden)]
pub fn activations(
    model: &(impl Planned + ?Sized),
    expected: [usize; 3],
    x: ArrayView4<f32>,
    names: &[&str],
) -> Result<BTreeMap<String, ArrayD<f32>>> {
    let mut wanted = vec![false; model.layer_count()];
    for name in names {
        match (0..model.layer_count())
            .find(|&i| layer_at(model, i).is_ok_and(|l| l.name() == *name))
        {
            Some(i) => wanted[i] = true,
            None => return Err(unknown_layer(model, name)),
        }
    }
    check_input(&x, expected)?;
    Ok(run(model, Input::Nchw(x), &wanted, None)?.1)
}

/// The error for `name`, listing the model's layer names, the closest first.
fn unknown_layer(model: &(impl Planned + ?Sized), name: &str) -> Error {
    let mut valid: Vec<(usize, usize, String)> = (0..model.layer_count())
        .filter_map(|i| {
            let layer = model.layer(i)?.name();
            Some((distance(name, layer), i, layer.to_owned()))
        })
        .collect();
    valid.sort();
    Error::UnknownLayer {
        name: name.to_owned(),
        valid: valid.into_iter().map(|(_, _, n)| n).collect(),
    }
}

/// Levenshtein distance between `a` and `b`, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `batch` samples of `shape` in the runtime's layout, copied into PyTorch's.
fn to_torch(data: &[f32], shape: Shape, batch: usize) -> ArrayD<f32> {
    match shape {
        Shape::Chw(_) => internal_to_nchw(data, shape, batch).into_dyn(),
        Shape::Flat(features) => flat_to_array(data, features, batch).into_dyn(),
    }
}

/// Named activations, in PyTorch's layout.
type Activations = BTreeMap<String, ArrayD<f32>>;

/// Runs every step of `model` on `x` in evaluation mode, from `&self`; returns the logits and
/// the outputs of the layers `wanted` marks. Without any, it runs the inference steps (a
/// convolution applying the batch norm, add and ReLU after it, [`Epilogue`]); with some, the
/// training steps, whose every step output lies in a buffer. A wanted layer that a step applies
/// inside its first layer (a fused ReLU or max pool, or that first layer itself) is computed
/// apart from the step's input: the first layer without what it fuses
/// ([`Layer::infer_unfused`]), then each applied layer on its own, which gives the fused step's
/// values bit for bit.
fn run(
    model: &(impl Planned + ?Sized),
    x: Input<'_>,
    wanted: &[bool],
    into: Option<&mut [f32]>,
) -> Result<(Array2<f32>, Activations)> {
    let batch = match x {
        Input::Nchw(x) => x.dim().0,
        Input::Internal(_, batch) => batch,
    };
    let len = |shape: Shape| {
        shape.numel().checked_mul(batch).ok_or_else(|| {
            Error::State(format!("a batch of {batch} samples does not fit in memory"))
        })
    };
    let eval = !wanted.contains(&true);
    let (count, step_at) = if eval {
        (
            model.eval_step_count(),
            Planned::eval_step as fn(&_, usize) -> StepRef<'_>,
        )
    } else {
        (
            model.step_count(),
            Planned::step as fn(&_, usize) -> StepRef<'_>,
        )
    };
    let step_at = |s: usize| step_at(model, s);
    // The buffers the steps read or write (the ones inference steps replace stay empty), and
    // the last step that reads each. A group of [`run_grouped`] (`into` given) takes each
    // output from the thread's pool just before its step and hands a buffer back after its
    // last reader, so that outputs reuse buffers still in the cache: the few in use stay in the
    // thread's L2. (A whole batch takes every buffer first: handed back and taken again in
    // other sizes, the pool's buffers would settle only after a few calls, each allocating.)
    let recycle = eval && into.is_some();
    let mut lens = vec![(0, usize::MAX); model.buffer_count()];
    let first = [0];
    for s in 0..count {
        let step = step_at(s);
        let read = step.inputs.iter().chain(&step.epilogue.residual);
        for &b in read.clone().chain([&step.output]).chain(&first) {
            if b < lens.len() {
                lens[b].0 = len(model.buffer(b))?;
            }
        }
        for &b in read.filter(|_| recycle) {
            if let Some((_, last)) = lens.get_mut(b) {
                *last = s;
            }
        }
    }
    let missing = |b: usize| {
        Error::State(format!(
            "cnnc bug: buffer {b} is read before a step writes it"
        ))
    };
    on_pool(|| {
        // Buffer 0, the input: read in place where its layout is the runtime's (a batch already
        // converted, or one channel), else converted into scratch.
        let n = lens[0].0;
        let mut converted: Scratch<f32>;
        let input: &[f32] = match x {
            Input::Nchw(x) => match x.to_slice() {
                Some(x) if x.len() == n && same_layout(model.buffer(0)) => x,
                _ => {
                    converted = scratch::take(n, scratch::ANY, 0.0);
                    nchw_to_internal(x, &mut converted[..n]);
                    &converted[..n]
                }
            },
            Input::Internal(x, _) => x.get(..n).ok_or_else(|| Error::BufferLength {
                found: x.len(),
                need: n,
                batch,
                shape: model.buffer(0).to_string(),
            })?,
        };
        let mut acts: Vec<Option<Scratch<f32>>> = lens
            .iter()
            .enumerate()
            .map(|(b, &(n, _))| (!recycle && b > 0).then(|| scratch::take(n, scratch::ANY, 0.0)))
            .collect();
        let mut found = BTreeMap::new();
        for s in 0..count {
            let step = step_at(s);
            let (before, after) = acts.split_at_mut(step.output);
            let n = lens[step.output].0;
            let y = &mut after[0].get_or_insert_with(|| scratch::take(n, scratch::ANY, 0.0))[..n];
            let before = &*before;
            let read = |b: usize| match b {
                0 => Some(input),
                _ => before.get(b).and_then(|v| v.as_deref()),
            };
            infer_step(&|i| model.layer(i), &step, &read, y, batch)?;
            let last = layer_at(model, step.last)?;
            if wanted.get(step.last) == Some(&true) {
                found.insert(
                    last.name().to_owned(),
                    to_torch(y, last.output_shape(), batch),
                );
            }
            if step.last > step.layer
                && wanted
                    .get(step.layer..step.last)
                    .is_some_and(|w| w.contains(&true))
            {
                // The layers the step applies, apart: each output has the next one's input
                // shape.
                let mut x = scratch::take(0, scratch::ANY, 0.0);
                x.vec_mut().clear();
                let first = step.inputs[0];
                x.vec_mut()
                    .extend_from_slice(read(first).ok_or_else(|| missing(first))?);
                for (i, &want) in wanted.iter().enumerate().take(step.last).skip(step.layer) {
                    let shape = layer_at(model, i + 1)?.input_shape();
                    let mut out = scratch::take(len(shape)?, scratch::ANY, 0.0);
                    let out_values = &mut out[..len(shape)?];
                    let layer = layer_at(model, i)?;
                    if let (true, Some(merge)) = (i == step.layer, layer.as_merge_ref()) {
                        // A merge that applies a ReLU (an add's) reads all its inputs.
                        let xs: Vec<&[f32]> = step
                            .inputs
                            .iter()
                            .map(|&b| read(b).ok_or_else(|| missing(b)))
                            .collect::<Result<_>>()?;
                        merge.forward_merge_unfused(&xs, out_values, batch)?;
                    } else if i == step.layer {
                        layer.infer_unfused(&x, out_values, batch)?;
                    } else {
                        layer.infer(&x, out_values, batch)?;
                    }
                    if want {
                        let name = layer.name().to_owned();
                        found.insert(name, to_torch(out_values, shape, batch));
                    }
                    x = out;
                }
            }
            for &b in step.inputs.iter().chain(&step.epilogue.residual) {
                if lens.get(b).is_some_and(|&(_, last)| last == s) && b != model.output_buffer() {
                    acts[b] = None;
                }
            }
        }
        let output = model.output_buffer();
        let logits = acts.get(output).and_then(|v| v.as_deref());
        let logits = logits.ok_or_else(|| missing(output))?;
        let out = model.buffer(output).numel();
        let logits = match into {
            Some(into) => {
                let n = into.len();
                into.copy_from_slice(logits.get(..n).ok_or_else(|| missing(output))?);
                Array2::zeros((0, out))
            }
            None => flat_to_array(logits, out, batch),
        };
        Ok((logits, found))
    })
}

/// Whether samples of `shape` in PyTorch's layout are in the runtime's (pixel-major) too: one
/// channel, or one pixel.
fn same_layout(shape: Shape) -> bool {
    match shape {
        Shape::Chw([c, h, w]) => c == 1 || h * w == 1,
        Shape::Flat(_) => true,
    }
}

/// Runs one step of a plan from `&self` in evaluation mode into `y`: a merge from its input
/// buffers, a convolution through its [`Epilogue`] (the batch norm's eval scale and shift
/// computed here, in scratch memory), any other layer's [`Layer::infer`]. `before` finds a
/// buffer before the step's output by number (every buffer a step reads comes before the one it
/// writes; `None` past them); `layers` finds a layer by index.
#[doc(hidden)]
pub fn infer_step<'m, 'b>(
    layers: &dyn Fn(usize) -> Option<&'m dyn Layer>,
    step: &StepRef<'_>,
    before: &dyn Fn(usize) -> Option<&'b [f32]>,
    y: &mut [f32],
    batch: usize,
) -> Result<()> {
    let layer_at = |index: usize| {
        layers(index).ok_or_else(|| {
            Error::State(format!(
                "cnnc bug: the plan names layer {index}, past the last"
            ))
        })
    };
    let buffer = |b: usize| {
        before(b).ok_or_else(|| {
            Error::State(format!(
                "cnnc bug: step {} reads buffer {b}, not written before its output",
                step.layer
            ))
        })
    };
    let layer = layer_at(step.layer)?;
    if let Some(merge) = layer.as_merge_ref() {
        // The inputs gathered on the stack (every merge of the shipped models has at most 8),
        // so a step allocates nothing.
        const INLINE: usize = 8;
        let mut inline: [&[f32]; INLINE] = [&[]; INLINE];
        let gathered: Vec<&[f32]>;
        let xs = if step.inputs.len() <= INLINE {
            for (slot, &b) in inline.iter_mut().zip(step.inputs) {
                *slot = buffer(b)?;
            }
            &inline[..step.inputs.len()]
        } else {
            gathered = step
                .inputs
                .iter()
                .map(|&b| buffer(b))
                .collect::<Result<_>>()?;
            &gathered[..]
        };
        return merge.forward_merge(xs, y, batch);
    }
    let x = buffer(step.inputs.first().copied().unwrap_or(0))?;
    let epilogue = step.epilogue;
    if epilogue.is_none() {
        return layer.infer(x, y, batch);
    }
    let norm = match epilogue.norm {
        Some(norm) => Some(layer_at(norm)?.as_batch_norm().ok_or_else(|| {
            Error::State(format!(
                "cnnc bug: the plan folds layer {norm} into `{}` as a batch norm",
                layer.name()
            ))
        })?),
        None => None,
    };
    let c = norm.map_or(0, |bn| bn.config().num_features);
    let mut factors = scratch::take(2 * c, scratch::ANY, 0.0);
    let affine = match norm {
        Some(bn) => {
            let (scale, shift) = factors[..2 * c].split_at_mut(c);
            bn.eval_affine(scale, shift)?;
            Some(factors[..2 * c].split_at(c))
        }
        None => None,
    };
    let residual = epilogue.residual.map(buffer).transpose()?;
    let (lo, hi) = match epilogue.clamp {
        Clamp::None => (f32::NEG_INFINITY, f32::INFINITY),
        Clamp::Relu => (0.0, f32::INFINITY),
        Clamp::Relu6 => (0.0, 6.0),
    };
    let store = ChannelStore {
        affine,
        residual,
        lo,
        hi,
        slice: epilogue.slice.map(|s| (s.offset, s.channels)),
    };
    layer.infer_store(x, y, batch, &store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;
    use crate::config::{
        BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef,
        Pool2dConfig, Source,
    };
    use crate::tensor::Mode;
    use ndarray::{Array4, ShapeBuilder, s};

    /// A residual network over 3 x 16 x 16 images: a 16-channel stage (narrow tiles of 12
    /// pixels), a stride-2 32-channel one (tiles of 6), a 2 x 2 one of 40 channels (tiles of one
    /// position across six images, its weights in `groups` groups), batch norms, an add, a pool
    /// and a linear head of `outputs`; with `pool`, a max pool after the stem.
    fn resnet(pool: bool, groups: usize, outputs: usize) -> NetworkDef {
        let conv = |cin, cout, stride| {
            LayerConfig::Conv2d(Conv2dConfig {
                stride: [stride, stride],
                padding: [1, 1],
                padding_end: [1, 1],
                ..Conv2dConfig::new(cin, cout, [3, 3])
            })
        };
        let mut layers = Vec::new();
        let mut push = |name: &str, config, inputs: Vec<Source>| {
            layers.push(LayerDef {
                name: name.to_owned(),
                config,
                inputs,
            });
            layers.len() - 1
        };
        let bn = |c| LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(c));
        push("stem", conv(3, 16, 1), vec![]);
        push("stem_bn", bn(16), vec![]);
        let mut stem = push("stem_relu", LayerConfig::Relu, vec![]);
        let hw = if pool {
            let config = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
            stem = push("pool", LayerConfig::MaxPool2d(config), vec![]);
            8
        } else {
            16
        };
        push("conv", conv(16, 16, 1), vec![]);
        let norm = push("bn", bn(16), vec![]);
        push(
            "add",
            LayerConfig::Add,
            vec![Source::Layer(norm), Source::Layer(stem)],
        );
        push("relu", LayerConfig::Relu, vec![]);
        push("down", conv(16, 32, 2), vec![]);
        push("down_bn", bn(32), vec![]);
        push("down_relu", LayerConfig::Relu, vec![]);
        let small = match conv(32, 40, hw / 4) {
            LayerConfig::Conv2d(c) => LayerConfig::Conv2d(Conv2dConfig { groups, ..c }),
            other => other,
        };
        push("small", small, vec![]);
        push("small_bn", bn(40), vec![]);
        push(
            "gap",
            LayerConfig::AdaptiveAvgPool2d {
                output_size: [1, 1],
            },
            vec![],
        );
        push("flat", LayerConfig::FLATTEN, vec![]);
        let fc = LinearConfig {
            in_features: 40,
            out_features: outputs,
            bias: true,
        };
        push("fc", LayerConfig::Linear(fc), vec![]);
        NetworkDef {
            input: [3, 16, 16],
            layers,
        }
    }

    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(f)
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Groups are a multiple of every step's grain (six: the 2 x 2 layer's tiles of six
    /// images), only in batches of at least four groups a thread, and never for a network with a
    /// layer whose grain is not known (a grouped convolution) or with more parameters than
    /// every group can read again cheaply.
    #[test]
    fn groups_are_whole_grains_in_large_batches_only() {
        let net = Network::new(&resnet(false, 1, 5), 3).expect("a valid network");
        for threads in [1, 3] {
            let images = on_threads(threads, || group_images(&net, 4096));
            let images = images.expect("large batches run in groups");
            assert_eq!(images % 6, 0, "{images} images a group");
            let small = on_threads(threads, || group_images(&net, 4 * threads * images - 1));
            assert_eq!(small, None, "fewer than four groups a thread");
        }
        let pooled = Network::new(&resnet(true, 1, 5), 3).expect("a valid network");
        assert!(on_threads(1, || group_images(&pooled, 4096)).is_some());
        let grouped = Network::new(&resnet(false, 2, 5), 3).expect("a valid network");
        assert_eq!(on_threads(1, || group_images(&grouped, 4096)), None);
        // A head of 40 x 30,000 weights: 4.8 MB.
        let wide = Network::new(&resnet(false, 1, 30_000), 3).expect("a valid network");
        assert_eq!(on_threads(1, || group_images(&wide, 4096)), None);
    }

    /// A one-channel batch in PyTorch's layout is the runtime's too: inference reads it in
    /// place, to the values it gives when it converts the same batch from another memory order.
    #[test]
    fn a_one_channel_batch_is_read_in_place() {
        let conv = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(1, 4, [3, 3])
        };
        let layer = |name: &str, config| LayerDef {
            name: name.to_owned(),
            config,
            inputs: vec![],
        };
        let fc = LinearConfig {
            in_features: 4 * 6 * 6,
            out_features: 3,
            bias: true,
        };
        let def = NetworkDef {
            input: [1, 6, 6],
            layers: vec![
                layer("conv", LayerConfig::Conv2d(conv)),
                layer("relu", LayerConfig::Relu),
                layer("flat", LayerConfig::FLATTEN),
                layer("fc", LayerConfig::Linear(fc)),
            ],
        };
        assert!(same_layout(Shape::Chw([1, 6, 6])) && !same_layout(Shape::Chw([2, 6, 6])));
        let net = Network::new(&def, 1).expect("a valid network");
        let x = Array4::from_shape_fn((5, 1, 6, 6), |(n, _, y, x)| {
            ((n * 13 + y * 5 + x * 3) % 11) as f32 / 5.0 - 1.0
        });
        let mut fortran = Array4::zeros((5, 1, 6, 6).f());
        fortran.assign(&x);
        assert!(x.as_slice().is_some() && fortran.as_slice().is_none());
        let in_place = net.predict(x.view()).expect("inference");
        let converted = net.predict(fortran.view()).expect("inference");
        let bits_of = |a: &Array2<f32>| bits(a.as_slice().expect("contiguous"));
        assert_eq!(bits_of(&in_place), bits_of(&converted));
        assert!(in_place.iter().any(|&v| v != 0.0));
    }

    /// Inference in groups gives, bit for bit, what each image gives alone (a batch of one, run
    /// a step at a time), from `&self` and through the executor's eval forward, on one thread
    /// and on three; the last group takes the images left over.
    #[test]
    fn grouped_inference_matches_one_image_at_a_time() {
        let mut net = Network::new(&resnet(true, 1, 5), 3).expect("a valid network");
        let batch = on_threads(3, || group_images(&net, 4096)).expect("groups") * 12 + 5;
        let x = Array4::from_shape_fn((batch, 3, 16, 16), |(n, c, y, x)| {
            ((n * 31 + c * 7 + y * 5 + x * 3) % 23) as f32 / 11.0 - 1.0
        });
        let alone: Vec<u32> = (0..batch)
            .flat_map(|n| {
                let logits = net
                    .predict(x.slice(s![n..n + 1, .., .., ..]))
                    .expect("inference");
                bits(logits.as_slice().expect("contiguous"))
            })
            .collect();
        for threads in [1, 3] {
            let (grouped, forward) = on_threads(threads, || {
                assert!(group_images(&net, batch).is_some());
                let grouped = net.predict(x.view()).expect("inference");
                let forward = net.forward(x.view(), Mode::Eval).expect("forward");
                (grouped, forward)
            });
            assert_eq!(bits(grouped.as_slice().expect("contiguous")), alone);
            assert_eq!(bits(forward.as_slice().expect("contiguous")), alone);
        }
    }
}
