//! Element-wise activations (`torch.nn.ReLU`, `LeakyReLU`, `Sigmoid`, `Tanh`). They work on any
//! layout, so they never convert; parallel chunks do not change any value.

use rayon::prelude::*;

use super::{Layer, check_backward, check_forward};
use crate::error::Result;
use crate::tensor::{Dims, Mode};

/// Values per parallel task.
const CHUNK: usize = 16 * 1024;

/// `y[i] = f(x[i])` in parallel chunks.
fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x);
            }
        });
}

/// `dx[i] = f(dy[i], saved[i])` in parallel chunks (`saved` is the input or the output).
fn map_grad(dy: &[f32], saved: &[f32], dx: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK).zip(saved.par_chunks(CHUNK)))
        .for_each(|(dx, (dy, s))| {
            for ((dx, &dy), &s) in dx.iter_mut().zip(dy).zip(s) {
                *dx = f(dy, s);
            }
        });
}

/// The scalar maps of an element-wise layer.
trait Pointwise: Sync {
    /// Whether the gradient map reads the output (`true`) or the input (`false`).
    const SAVES_OUTPUT: bool;
    /// `y = f(x)`.
    fn f(&self, x: f32) -> f32;
    /// `dx` from `dy` and the saved input or output.
    fn df(&self, dy: f32, saved: f32) -> f32;
}

/// Implements [`Layer`] for a shape-preserving element-wise layer through its [`Pointwise`] maps.
macro_rules! pointwise_layer {
    ($ty:ident) => {
        impl Layer for $ty {
            fn name(&self) -> &str {
                &self.name
            }

            fn input_dims(&self) -> Dims {
                self.dims
            }

            fn output_dims(&self) -> Dims {
                self.dims
            }

            fn forward(
                &mut self,
                x: &[f32],
                y: &mut [f32],
                batch: usize,
                _mode: Mode,
            ) -> Result<()> {
                let (n, _) = check_forward(self, x, y, batch)?;
                map(&x[..n], &mut y[..n], |x| self.f(x));
                Ok(())
            }

            fn backward(
                &mut self,
                x: &[f32],
                y: &[f32],
                dy: &[f32],
                dx: Option<&mut [f32]>,
                batch: usize,
            ) -> Result<()> {
                let (n, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
                let Some(dx) = dx else { return Ok(()) };
                let saved = if Self::SAVES_OUTPUT { &y[..n] } else { &x[..n] };
                map_grad(&dy[..n], saved, &mut dx[..n], |dy, s| self.df(dy, s));
                Ok(())
            }
        }
    };
}

/// `torch.nn.ReLU`: `max(x, 0)` (NaN propagates), any shape. Backward passes `dy` where the output
/// is positive, as PyTorch's `threshold_backward` on the result.
#[derive(Debug)]
pub struct Relu {
    name: String,
    dims: Dims,
}

impl Relu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Dims) -> Self {
        Relu {
            name: name.to_owned(),
            dims,
        }
    }
}

impl Pointwise for Relu {
    const SAVES_OUTPUT: bool = true;
    fn f(&self, x: f32) -> f32 {
        if x < 0.0 { 0.0 } else { x }
    }
    fn df(&self, dy: f32, y: f32) -> f32 {
        if y > 0.0 { dy } else { 0.0 }
    }
}

pointwise_layer!(Relu);

/// `torch.nn.LeakyReLU(negative_slope)`: `x` if `x > 0` else `negative_slope * x`, any shape.
#[derive(Debug)]
pub struct LeakyRelu {
    name: String,
    dims: Dims,
    negative_slope: f32,
}

impl LeakyRelu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Dims, negative_slope: f32) -> Self {
        LeakyRelu {
            name: name.to_owned(),
            dims,
            negative_slope,
        }
    }
}

impl Pointwise for LeakyRelu {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        if x > 0.0 { x } else { x * self.negative_slope }
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        if x > 0.0 {
            dy
        } else {
            dy * self.negative_slope
        }
    }
}

pointwise_layer!(LeakyRelu);

/// `torch.nn.Sigmoid`: `1 / (1 + exp(-x))`, any shape; backward `dy * y * (1 - y)`.
#[derive(Debug)]
pub struct Sigmoid {
    name: String,
    dims: Dims,
}

impl Sigmoid {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Dims) -> Self {
        Sigmoid {
            name: name.to_owned(),
            dims,
        }
    }
}

impl Pointwise for Sigmoid {
    const SAVES_OUTPUT: bool = true;
    fn f(&self, x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }
    fn df(&self, dy: f32, y: f32) -> f32 {
        dy * (1.0 - y) * y
    }
}

pointwise_layer!(Sigmoid);

/// `torch.nn.Tanh`, any shape; backward `dy * (1 - y^2)`.
#[derive(Debug)]
pub struct Tanh {
    name: String,
    dims: Dims,
}

impl Tanh {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Dims) -> Self {
        Tanh {
            name: name.to_owned(),
            dims,
        }
    }
}

impl Pointwise for Tanh {
    const SAVES_OUTPUT: bool = true;
    fn f(&self, x: f32) -> f32 {
        x.tanh()
    }
    fn df(&self, dy: f32, y: f32) -> f32 {
        dy * (1.0 - y * y)
    }
}

pointwise_layer!(Tanh);
