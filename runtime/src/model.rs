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
    Ok(run(model, Input::Nchw(x), &[])?.0)
}

/// [`infer`] on a batch already in the runtime's layout (`batch` samples of the first buffer's
/// shape, pixel-major), as typed activations hold it.
#[doc(hidden)]
pub fn infer_internal(
    model: &(impl Planned + ?Sized),
    x: &[f32],
    batch: usize,
) -> Result<Array2<f32>> {
    Ok(run(model, Input::Internal(x, batch), &[])?.0)
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
    Ok(run(model, Input::Nchw(x), &wanted)?.1)
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
    // The buffers the steps read or write (the ones inference steps replace stay empty).
    let mut lens = vec![0; model.buffer_count()];
    let first = [0];
    for s in 0..count {
        let step = step_at(s);
        let read = step.inputs.iter().chain(&step.epilogue.residual);
        for &b in read.chain([&step.output]).chain(&first) {
            if b < lens.len() {
                lens[b] = len(model.buffer(b))?;
            }
        }
    }
    on_pool(|| {
        let mut acts: Vec<Scratch<f32>> = lens
            .iter()
            .map(|&n| scratch::take(n, scratch::ANY, 0.0))
            .collect();
        match x {
            Input::Nchw(x) => nchw_to_internal(x, &mut acts[0]),
            Input::Internal(x, _) => {
                let n = lens[0];
                let x = x.get(..n).ok_or_else(|| Error::BufferLength {
                    found: x.len(),
                    need: n,
                    batch,
                    shape: model.buffer(0).to_string(),
                })?;
                acts[0][..n].copy_from_slice(x);
            }
        }
        let mut found = BTreeMap::new();
        for s in 0..count {
            let step = step_at(s);
            let (before, after) = acts.split_at_mut(step.output);
            let y = &mut after[0][..lens[step.output]];
            let before = &*before;
            infer_step(
                &|i| model.layer(i),
                &step,
                &|b| before.get(b).map(|v| &v[..]),
                y,
                batch,
            )?;
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
                x.vec_mut().extend_from_slice(&before[step.inputs[0]]);
                for (i, &want) in wanted.iter().enumerate().take(step.last).skip(step.layer) {
                    let shape = layer_at(model, i + 1)?.input_shape();
                    let mut out = scratch::take(len(shape)?, scratch::ANY, 0.0);
                    let out_values = &mut out[..len(shape)?];
                    let layer = layer_at(model, i)?;
                    if let (true, Some(merge)) = (i == step.layer, layer.as_merge_ref()) {
                        // A merge that applies a ReLU (an add's) reads all its inputs.
                        let xs: Vec<&[f32]> = step.inputs.iter().map(|&b| &before[b][..]).collect();
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
        }
        let out = model.buffer(model.output_buffer()).numel();
        let logits = flat_to_array(&acts[model.output_buffer()], out, batch);
        Ok((logits, found))
    })
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
