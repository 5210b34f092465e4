//! Layers with forward and backward passes over flat buffers in the runtime's internal layout
//! (see [`crate::tensor`]). The dynamic executor keeps a list of them; generated models hold the
//! same structs as fields and call the same methods, so both compute bit-identical results.
//!
//! Conventions shared by every layer:
//! - `x`, `y`, `dy`, `dx` hold `batch` samples of [`Layer::input_shape`] / [`Layer::output_shape`]
//!   (images pixel-major); longer buffers are fine (only the prefix is used), so buffers sized for
//!   the largest batch serve smaller ones.
//! - `backward` must get the `x` and `y` of the latest `forward`; it overwrites `dx` and every
//!   parameter's `grad`. `dx` is `None` when the caller needs no input gradient (the first layer).
//! - Parallel work is split by outputs (pixels, or tiles of a weight gradient, each summed over
//!   the batch in order), or into fixed row lanes (`tensor::Tiling`) whose batch sums
//!   are added in lane order, so results do not depend on the number of threads.

/// The accessors of a layer's `weight: Param`, `bias: Option<Param>` and `stale: Stale` fields,
/// for the layers that pack their weights: the `_mut` ones mark the packed copies stale.
macro_rules! weight_bias_accessors {
    () => {
        /// The weight, in PyTorch's layout.
        pub fn weight(&self) -> &Param {
            &self.weight
        }

        /// The weight, to change (the layer repacks it at its next `&mut` forward or `visit`;
        /// until then `&self` inference packs it into scratch memory on every call).
        pub fn weight_mut(&mut self) -> &mut Param {
            self.stale.mark();
            &mut self.weight
        }

        /// The bias, when the layer has one.
        pub fn bias(&self) -> Option<&Param> {
            self.bias.as_ref()
        }

        /// The bias, to change (repacked as [`Self::weight_mut`] says).
        pub fn bias_mut(&mut self) -> Option<&mut Param> {
            self.stale.mark();
            self.bias.as_mut()
        }
    };
}

mod activation;
mod batchnorm;
mod build;
mod conv;
mod conv_transpose;
mod dropout;
mod flatten;
mod groupnorm;
mod linear;
mod merge;
mod pool;
mod prelu;
mod resample;
mod softmax;

pub use activation::{
    Elu, Gelu, Hardsigmoid, Hardswish, Identity, LeakyRelu, Relu, Relu6, Sigmoid, Silu, Tanh,
};
pub use batchnorm::{BatchNorm2d, NormGrad};
pub use build::{FromConfig, Init, build};
pub use conv::{ChannelStore, Conv2d};
pub use conv_transpose::ConvTranspose2d;
pub use dropout::{Dropout, Dropout2d, MaskUnit, MaskedDropout, PerChannel, PerValue};
pub use flatten::Flatten;
pub use groupnorm::GroupNorm;
pub use linear::Linear;
pub use merge::{Add, Concat, Merge, Mul, build_merge};
pub use pool::{AvgPool2d, MaxPool2d};
pub use prelu::Prelu;
pub use resample::{AdaptiveAvgPool2d, AdaptiveMaxPool2d, Upsample};
pub use softmax::{LogSoftmax, Softmax};

use std::fmt;

use ndarray::ArrayD;

use cnnc_core::{Reads, Shape};

use crate::error::{Error, Result};
use crate::param::{Entry, EntryRef, Param};
use crate::tensor::{Mode, check_len};

/// A layer of a network: one input, one output (a layer reading several is also a [`Merge`]).
///
/// Every layer is `Send + Sync` and clones into an independent copy ([`LayerClone`], so
/// `Box<dyn Layer>` is `Clone`): a model built of layers can be shared between threads for
/// inference ([`Layer::infer`] takes `&self`) and cloned for training apart.
pub trait Layer: Send + Sync + fmt::Debug + LayerClone {
    /// The layer's state_dict prefix (`layer1.0`, `fc1`), used in names and error messages.
    fn name(&self) -> &str;

    /// Per-sample shape of the input.
    fn input_shape(&self) -> Shape;

    /// Per-sample shape of the output.
    fn output_shape(&self) -> Shape;

    /// Inference: computes `y` from `x` for `batch` samples in evaluation mode (PyTorch's
    /// `model.eval()`: dropout is the identity, batch norm uses its running statistics), changing
    /// nothing in the layer. Scratch memory comes from a per-thread pool (grown once, then
    /// reused), so concurrent calls on one layer from several threads are fine. The values are
    /// those of [`Layer::forward`] in [`Mode::Eval`], bit for bit.
    ///
    /// Layers that pack their weights read packed weights here: [`Linear`] packs them when built
    /// and repacks them whenever the parameters may have changed through [`Layer::visit`]
    /// (optimizer steps, weight loading), before `visit` returns; [`Conv2d`] packs them at the
    /// first `infer` after such a change and keeps them for the calls after (a training step
    /// holds no packed copy), so serving after loading and predicting after a training step read
    /// packed weights from their second call on. After a change through `weight_mut` or
    /// `bias_mut`, which cannot repack when the change is made, `infer` packs into scratch memory
    /// on every call (correct, slower) until the next `&mut` forward or `visit`.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()>;

    /// [`Layer::infer`] without the layers this one applies (a ReLU, [`Layer::fuse_relu`], and a
    /// max pool, [`Layer::fuse_max_pool`]): the layer's own output, of the shape the next
    /// layer's input has, for reading a fused layer's activations. The default is
    /// [`Layer::infer`], for layers that fuse nothing.
    fn infer_unfused(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        self.infer(x, y, batch)
    }

    /// [`Layer::infer`] of a convolution storing each output through `store` (an inference
    /// step's epilogue: the batch norm, residual add and ReLU after it in the plan), in place of
    /// what it applies itself. The default refuses: only [`Conv2d`] stores so.
    fn infer_store(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        store: &ChannelStore<'_>,
    ) -> Result<()> {
        let _ = (x, y, batch, store);
        Err(Error::State(format!(
            "cnnc bug: layer `{}` cannot apply the layers after it as it stores",
            self.name()
        )))
    }

    /// How many samples [`Layer::infer`] must be given together for its values to be the whole
    /// batch's: a batch cut into groups of a multiple of this many samples (the last group
    /// larger) gives, group by group, bit for bit what the whole batch gives. `Some(1)` where
    /// each sample's values are its own; `None` (the default) where that is not known, and
    /// inference then runs whole batches (see [`crate::model::infer`]).
    fn batch_grain(&self) -> Option<usize> {
        None
    }

    /// The layer as a batch norm, whose eval-mode factors an inference epilogue reads
    /// ([`BatchNorm2d::eval_affine`]); `None` for every other kind.
    fn as_batch_norm(&self) -> Option<&BatchNorm2d> {
        None
    }

    /// The layer as a batch norm, whose backward a training step may defer into the
    /// convolution before it ([`BatchNorm2d::backward_deferred`]); `None` for every other kind.
    fn as_batch_norm_mut(&mut self) -> Option<&mut BatchNorm2d> {
        None
    }

    /// The layer as a convolution, which may stage a batch norm's input gradient as its `dy`
    /// ([`Conv2d::backward_from_norm`]); `None` for every other kind.
    fn as_conv_mut(&mut self) -> Option<&mut Conv2d> {
        None
    }

    /// Computes `y` from `x` for `batch` samples in `mode`, keeping what [`Layer::backward`]
    /// needs. The default, for layers that keep nothing and behave the same in both modes, is
    /// [`Layer::infer`].
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, mode: Mode) -> Result<()> {
        let _ = mode;
        self.infer(x, y, batch)
    }

    /// From `dy` (gradient of the loss with respect to `y`), writes `dx` (when asked for) and
    /// every parameter's `grad`. `x` and `y` are those of the layer's last forward, whose work a
    /// layer may reuse, as PyTorch's saved tensors: [`Dropout`] its mask (of the last training
    /// forward), [`MaxPool2d`] where each maximum lies (computed again when that forward had
    /// fewer than `batch` samples). A buffer [`Layer::backward_reads`] says it does not read
    /// holds other values.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()>;

    /// What `backward` reads of the activations: its input `x`, its output `y` (both unless the
    /// layer says otherwise). A training network reuses the memory of a buffer no backward
    /// reads ([`cnnc_core::Plan::storage`]), so a layer answering `false` must not read it:
    /// `backward` then gets a buffer of at least the right length holding other values. Asked
    /// once fusion is set up. A layer whose forward draws random numbers (dropout) answers
    /// `output: true`: an output that is not kept is computed again by
    /// [`crate::Network::find_non_finite`], which must give the same values.
    fn backward_reads(&self) -> Reads {
        Reads::ALL
    }

    /// Asks the layer to apply the ReLU that follows it in the network as it writes its output,
    /// and to take `dy` in `backward` as the gradient with respect to the ReLU's output, so the
    /// model can skip the ReLU layer. Returns whether it did; the default does not. A layer that
    /// does gives the same values as with a separate ReLU, bit for bit (see [`Conv2d::fuse_relu`]).
    fn fuse_relu(&mut self) -> bool {
        false
    }

    /// Asks the layer, which applies a fused ReLU ([`Layer::fuse_relu`]), to apply the max pool
    /// (`config`) that follows that ReLU as well, its output becoming the pool's; the model then
    /// skips the pool too. Returns whether it did; the default does not. A layer that does gives
    /// the same values as the separate layers, bit for bit (see [`Conv2d::fuse_max_pool`]).
    fn fuse_max_pool(&mut self, config: &crate::config::Pool2dConfig) -> bool {
        let _ = config;
        false
    }

    /// Tells the layer that its input is the output of a ReLU fused into the layer before
    /// ([`Layer::fuse_relu`]), and asks it to give `dx` in `backward` as the gradient with
    /// respect to that ReLU's input, so the layer before need not mask its `dy` in a pass of its
    /// own. Returns whether it does (the default does not); if so, the model tells the layer
    /// before with [`Layer::relu_grad_masked`]. Values are the same either way, bit for bit (see
    /// [`MaxPool2d::mask_relu_grad`]).
    fn mask_relu_grad(&mut self) -> bool {
        false
    }

    /// Tells a layer that fused a ReLU ([`Layer::fuse_relu`]) that the next layer masks the
    /// gradient itself ([`Layer::mask_relu_grad`]): `dy` in `backward` is already the gradient
    /// with respect to the ReLU's input. The default ignores it: masking twice changes nothing.
    fn relu_grad_masked(&mut self) {}

    /// The layer as a [`Merge`] when it reads several inputs (`add`, `concat`, `mul`), which
    /// runs through that interface instead of [`Layer::forward`] and [`Layer::backward`];
    /// `None` (the default) for a one-input layer.
    fn as_merge(&mut self) -> Option<&mut dyn Merge> {
        None
    }

    /// Yields the layer's parameters and buffers in PyTorch's order (none by default).
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let _ = f;
    }

    /// [`Layer::visit`] without `&mut`: the same entries, to read.
    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        let _ = f;
    }

    /// The layer as a [`Merge`] for `&self` use ([`Merge::forward_merge`]); `None` (the default)
    /// for a one-input layer.
    fn as_merge_ref(&self) -> Option<&dyn Merge> {
        None
    }

    /// Where the layer's random stream stands, in 32-bit words from its start, for layers that
    /// draw random numbers in training ([`Dropout`]); `None` (the default) for the others. With
    /// [`Layer::set_rng_state`] it lets a checkpoint continue bit-identically.
    fn rng_state(&self) -> Option<u128> {
        None
    }

    /// Moves the layer's random stream to `state` (from [`Layer::rng_state`] of a layer built
    /// with the same seed). Errors on layers without a random stream (the default) and on
    /// positions past the stream's end.
    fn set_rng_state(&mut self, state: u128) -> Result<()> {
        let _ = state;
        Err(Error::State(format!(
            "layer `{}` has no random stream to restore",
            self.name()
        )))
    }
}

/// Clones a layer behind a `Box<dyn Layer>`: implemented for every `Layer + Clone`, so a layer
/// only derives `Clone`.
pub trait LayerClone {
    /// An independent copy of the layer.
    fn box_clone(&self) -> Box<dyn Layer>;
}

impl<T: Layer + Clone + 'static> LayerClone for T {
    fn box_clone(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Layer> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

/// The random-stream positions ([`Layer::rng_state`]) of the layers that have one, by layer
/// name, in layer order: what a checkpoint saves. Generated models pass their layer fields.
pub fn rng_states<'a>(layers: impl IntoIterator<Item = &'a dyn Layer>) -> Vec<(String, u128)> {
    layers
        .into_iter()
        .filter_map(|layer| Some((layer.name().to_owned(), layer.rng_state()?)))
        .collect()
}

/// Restores the positions [`rng_states`] returned into `layers`, matching them by name. Errors
/// when a name is not a layer with a random stream, when one is given twice, or when a layer
/// with a random stream has none in `states` (it would silently restart its stream).
pub fn restore_rng_states<'a>(
    layers: impl IntoIterator<Item = &'a mut dyn Layer>,
    states: &[(String, u128)],
) -> Result<()> {
    let mut used = vec![false; states.len()];
    let mut matched = Vec::new();
    for layer in layers {
        if layer.rng_state().is_none() {
            continue;
        }
        let mut found = states
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| name == layer.name());
        let Some((i, &(_, state))) = found.next() else {
            return Err(Error::State(format!(
                "no random-stream position given for layer `{}`",
                layer.name()
            )));
        };
        if found.next().is_some() {
            return Err(Error::State(format!(
                "the random-stream position of layer `{}` is given twice",
                layer.name()
            )));
        }
        used[i] = true;
        matched.push((layer, state));
    }
    let unknown: Vec<&str> = states
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::State(format!(
            "random-stream positions given for unknown layers (not dropout layers of this \
             network): `{}`",
            unknown.join("`, `")
        )));
    }
    for (layer, state) in matched {
        layer.set_rng_state(state)?;
    }
    Ok(())
}

/// Checks the buffer lengths of a forward call; returns `(input len, output len)` of the batch.
pub(crate) fn check_forward(
    layer: &dyn Layer,
    x: &[f32],
    y: &[f32],
    batch: usize,
) -> Result<(usize, usize)> {
    let nx = check_len(
        layer.name(),
        "forward input",
        layer.input_shape(),
        batch,
        x.len(),
    )?;
    let ny = check_len(
        layer.name(),
        "forward output",
        layer.output_shape(),
        batch,
        y.len(),
    )?;
    Ok((nx, ny))
}

/// Checks the buffer lengths of a backward call; returns `(input len, output len)` of the batch.
pub(crate) fn check_backward(
    layer: &dyn Layer,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: Option<&[f32]>,
    batch: usize,
) -> Result<(usize, usize)> {
    let (name, input, output) = (layer.name(), layer.input_shape(), layer.output_shape());
    let nx = check_len(name, "backward input", input, batch, x.len())?;
    let ny = check_len(name, "backward output", output, batch, y.len())?;
    check_len(name, "backward dy", output, batch, dy.len())?;
    if let Some(dx) = dx {
        check_len(name, "backward dx", input, batch, dx.len())?;
    }
    Ok((nx, ny))
}

/// Yields a weight and its optional bias in PyTorch's order, under `names` (`[weight, bias]`).
pub(crate) fn visit_weight_bias(
    f: &mut dyn FnMut(Entry<'_>),
    names: [&str; 2],
    weight: &mut Param,
    bias: Option<&mut Param>,
) {
    f(Entry::Param {
        name: names[0],
        param: weight,
    });
    if let Some(bias) = bias {
        f(Entry::Param {
            name: names[1],
            param: bias,
        });
    }
}

/// Yields a weight and its optional bias read-only, as [`visit_weight_bias`] does.
pub(crate) fn visit_weight_bias_ref(
    f: &mut dyn FnMut(EntryRef<'_>),
    names: [&str; 2],
    weight: &Param,
    bias: Option<&Param>,
) {
    f(EntryRef::Param {
        name: names[0],
        param: weight,
    });
    if let Some(bias) = bias {
        f(EntryRef::Param {
            name: names[1],
            param: bias,
        });
    }
}

/// Writes `values` into `array` in its logical order: through its slice when its layout is the
/// standard one (as a layer's own arrays are; iterating the n-dimensional array costs ~5 ns a
/// value, ~0.3 ms a training step for the seed model), else value by value.
pub(crate) fn assign(array: &mut ArrayD<f32>, values: impl Iterator<Item = f32>) {
    match array.as_slice_mut() {
        Some(slice) => slice.iter_mut().zip(values).for_each(|(d, v)| *d = v),
        None => array.iter_mut().zip(values).for_each(|(d, v)| *d = v),
    }
}

/// Grows `buf` to at least `len` values, new ones `fill` (buffers only ever grow, so
/// steady-state steps do not allocate).
pub(crate) fn grow<T: Copy>(buf: &mut Vec<T>, len: usize, fill: T) {
    if buf.len() < len {
        buf.resize(len, fill);
    }
}

/// A zero-initialised parameter of the given PyTorch shape.
pub(crate) fn zero_param(shape: &[usize]) -> Param {
    Param::new(ArrayD::zeros(shape))
}

/// Checks that a parameter (value and grad) still has the shape the layer was built with: weights
/// can be replaced from outside (loading, optimizers), and a wrong shape must be an error.
pub(crate) fn check_param(layer: &str, name: &str, param: &Param, shape: &[usize]) -> Result<()> {
    for (what, tensor) in [("value", &param.value), ("grad", &param.grad)] {
        if tensor.shape() != shape {
            return Err(Error::Shape {
                layer: layer.to_owned(),
                op: "parameter",
                expected: format!("{name} {what} of shape {shape:?}"),
                found: format!("{:?}", tensor.shape()),
            });
        }
    }
    Ok(())
}

/// The image dims of a layer's input, or a config error naming what needs them.
pub(crate) fn image_input(layer: &str, what: &str, input: Shape) -> Result<(usize, usize, usize)> {
    match input {
        Shape::Chw([channels, height, width]) => Ok((channels, height, width)),
        Shape::Flat(features) => Err(Error::config(
            layer,
            format!(
                "{what} needs an image input [channels, height, width], found flat [{features}]"
            ),
        )),
    }
}

/// Checks a 2-D size argument is positive in both directions.
pub(crate) fn check_positive(layer: &str, what: &str, pair: [usize; 2]) -> Result<()> {
    if pair.contains(&0) {
        return Err(Error::config(
            layer,
            format!("{what} must be positive, found {pair:?}"),
        ));
    }
    Ok(())
}

/// Which of a layer's two packed copies of its weight (forward and input-gradient panels) may be
/// out of date. Every way to the weight's values that can change them (`Layer::visit`, which
/// optimizers and weight loading use, and the layers' `weight_mut` and `bias_mut`) marks both,
/// and packing (for a convolution, forgetting its forward panels) clears one; so a layer
/// repacks after its weights may have changed and not on every call. At batch 1, repacking, or even comparing the weights with the packed copy, cost
/// more than the multiplication (a tenth of the seed model's latency).
#[derive(Clone, Debug)]
pub(crate) struct Stale([bool; 2]);

impl Default for Stale {
    fn default() -> Self {
        Stale([true; 2])
    }
}

impl Stale {
    /// Marks both copies out of date.
    pub fn mark(&mut self) {
        self.0 = [true; 2];
    }

    /// Whether the forward copy is out of date (read by `&self` inference, which cannot repack).
    pub fn forward_stale(&self) -> bool {
        self.0[0]
    }

    /// Whether copy `back` (the input-gradient panels) or the forward one is out of date; it
    /// counts as packed from now on.
    pub fn take(&mut self, back: bool) -> bool {
        std::mem::replace(&mut self.0[usize::from(back)], false)
    }
}
