//! Layers with forward and backward passes over flat buffers in the runtime's internal layout
//! (see [`crate::tensor`]). The dynamic executor keeps a list of them; generated models hold the
//! same structs as fields and call the same methods, so both compute bit-identical results.
//!
//! Conventions shared by every layer:
//! - `x`, `y`, `dy`, `dx` hold `batch` samples of [`Layer::input_dims`] / [`Layer::output_dims`]
//!   (images pixel-major); longer buffers are fine (only the prefix is used), so buffers sized for
//!   the largest batch serve smaller ones.
//! - `backward` must get the `x` and `y` of the latest `forward`; it overwrites `dx` and every
//!   parameter's `grad`. `dx` is `None` when the caller needs no input gradient (the first layer).
//! - Parallel work is split into fixed row lanes ([`crate::tensor::Tiling`]) and batch sums are
//!   added in lane order, so results do not depend on the number of threads.

mod activation;
mod batchnorm;
mod conv;
mod dropout;
mod flatten;
mod linear;
mod pool;

pub use activation::{LeakyRelu, Relu, Sigmoid, Tanh};
pub use batchnorm::BatchNorm2d;
pub use conv::Conv2d;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use linear::Linear;
pub use pool::{AvgPool2d, MaxPool2d};

use std::fmt;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::param::{Entry, Param};
use crate::tensor::{Dims, Mode, check_len};

/// A layer of a sequential network.
pub trait Layer: Send + fmt::Debug {
    /// The layer's state_dict prefix (`layer1.0`, `fc1`), used in names and error messages.
    fn name(&self) -> &str;

    /// Per-sample shape of the input.
    fn input_dims(&self) -> Dims;

    /// Per-sample shape of the output.
    fn output_dims(&self) -> Dims;

    /// Computes `y` from `x` for `batch` samples.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, mode: Mode) -> Result<()>;

    /// From `dy` (gradient of the loss with respect to `y`), writes `dx` (when asked for) and
    /// every parameter's `grad`.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()>;

    /// Yields the layer's parameters and buffers in PyTorch's order (none by default).
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let _ = f;
    }
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
        layer.input_dims(),
        batch,
        x.len(),
    )?;
    let ny = check_len(
        layer.name(),
        "forward output",
        layer.output_dims(),
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
    let (name, input, output) = (layer.name(), layer.input_dims(), layer.output_dims());
    let nx = check_len(name, "backward input", input, batch, x.len())?;
    let ny = check_len(name, "backward output", output, batch, y.len())?;
    check_len(name, "backward dy", output, batch, dy.len())?;
    if let Some(dx) = dx {
        check_len(name, "backward dx", input, batch, dx.len())?;
    }
    Ok((nx, ny))
}

/// A zero-initialised parameter of the given PyTorch shape.
pub(crate) fn zero_param(shape: &[usize]) -> Param {
    Param {
        value: ArrayD::zeros(shape),
        grad: ArrayD::zeros(shape),
    }
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
pub(crate) fn image_input(layer: &str, what: &str, input: Dims) -> Result<(usize, usize, usize)> {
    match input {
        Dims::Image {
            channels,
            height,
            width,
        } => Ok((channels, height, width)),
        Dims::Flat { features } => Err(Error::config(
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

/// Rows per tile so that one tile of a `cols`-wide im2col-style matrix stays in the L2 cache.
pub(crate) fn tile_rows(cols: usize) -> usize {
    /// Floats per tile: 128 KiB, a quarter of a Zen 3 L2, leaving room for GEMM's packed panels.
    const TILE_FLOATS: usize = 32 * 1024;
    (TILE_FLOATS / cols.max(1)).clamp(8, 1024) / 8 * 8
}
