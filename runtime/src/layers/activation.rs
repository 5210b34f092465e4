//! Element-wise activations (`torch.nn.ReLU`, `LeakyReLU`, `Sigmoid`, `Tanh`, `ReLU6`, `SiLU`,
//! `GELU`, `Hardswish`, `Hardsigmoid`, `ELU`, `Identity`). They work on any layout, so they never
//! convert; parallel chunks do not change any value, and neither does the vector width of the
//! kernels (selects, compares and single roundings only; SiLU, the exact GELU and ELU use the
//! branch-free `exp`, `erf` and `tanh` of [`crate::kernels::math`]).

use cnnc_core::{Reads, Shape};

use super::{Layer, check_backward, check_forward};
use crate::config::GeluApproximate;
use crate::error::Result;
use crate::kernels::math::{erf, exp, tanh};
use crate::par;
use crate::simd::multiversion;

/// Values per parallel task.
const CHUNK: usize = 16 * 1024;

/// `y[i] = f(x[i])` in parallel chunks.
fn map<P: Pointwise>(layer: &P, x: &[f32], y: &mut [f32]) {
    par::chunks_mut(y, CHUNK, |i, y| {
        layer.f_chunk(&x[i * CHUNK..][..y.len()], y)
    });
}

/// `dx[i] = df(dy[i], saved[i])` in parallel chunks (`saved` is the input or the output).
fn map_grad<P: Pointwise>(layer: &P, dy: &[f32], saved: &[f32], dx: &mut [f32]) {
    par::chunks_mut(dx, CHUNK, |i, dx| {
        let at = i * CHUNK..i * CHUNK + dx.len();
        layer.df_chunk(&dy[at.clone()], &saved[at], dx);
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
    /// [`Pointwise::f`] over a chunk; kinds whose map vectorises override it with a
    /// [`multiversion!`] kernel computing the same values.
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = self.f(x);
        }
    }
    /// [`Pointwise::df`] over a chunk, overridden as [`Pointwise::f_chunk`] is.
    fn df_chunk(&self, dy: &[f32], saved: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &s) in dx.iter_mut().zip(dy).zip(saved) {
            *dx = self.df(dy, s);
        }
    }
}

/// Implements [`Layer`] for a shape-preserving element-wise layer through its [`Pointwise`] maps.
macro_rules! pointwise_layer {
    ($ty:ident) => {
        impl Layer for $ty {
            fn name(&self) -> &str {
                &self.name
            }

            fn input_shape(&self) -> Shape {
                self.dims
            }

            fn output_shape(&self) -> Shape {
                self.dims
            }

            fn batch_grain(&self) -> Option<usize> {
                Some(1)
            }

            fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
                let (n, _) = check_forward(self, x, y, batch)?;
                map(self, &x[..n], &mut y[..n]);
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
                map_grad(self, &dy[..n], saved, &mut dx[..n]);
                Ok(())
            }

            fn backward_reads(&self) -> Reads {
                Reads {
                    inputs: !Self::SAVES_OUTPUT,
                    output: Self::SAVES_OUTPUT,
                }
            }
        }
    };
}

/// `torch.nn.ReLU`: `max(x, 0)` (NaN propagates), any shape. Backward passes `dy` where the output
/// is positive, as PyTorch's `threshold_backward` on the result.
#[derive(Clone, Debug)]
pub struct Relu {
    name: String,
    dims: Shape,
}

impl Relu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape) -> Self {
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
#[derive(Clone, Debug)]
pub struct LeakyRelu {
    name: String,
    dims: Shape,
    negative_slope: f32,
}

impl LeakyRelu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape, negative_slope: f32) -> Self {
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
#[derive(Clone, Debug)]
pub struct Sigmoid {
    name: String,
    dims: Shape,
}

impl Sigmoid {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape) -> Self {
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
#[derive(Clone, Debug)]
pub struct Tanh {
    name: String,
    dims: Shape,
}

impl Tanh {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape) -> Self {
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

/// Declares an element-wise layer struct with a `name` and `dims` and its `new`.
macro_rules! pointwise_struct {
    ($(#[$attr:meta])* $ty:ident) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        pub struct $ty {
            name: String,
            dims: Shape,
        }

        impl $ty {
            /// Builds the layer for per-sample shape `dims`.
            pub fn new(name: &str, dims: Shape) -> Self {
                $ty {
                    name: name.to_owned(),
                    dims,
                }
            }
        }
    };
}

/// `min(max(v, lo), hi)` with NaN passing through, as PyTorch's `clamp`.
#[inline(always)]
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

pointwise_struct!(
    /// `torch.nn.ReLU6`: `min(max(x, 0), 6)` (NaN propagates), any shape. Backward passes `dy`
    /// where `0 < x < 6` and is 0 at and beyond the kinks, as PyTorch's `hardtanh_backward`; it
    /// reads the output, which lies strictly between 0 and 6 exactly where the input does (and
    /// is NaN where it is), so the input need not be kept.
    Relu6
);

multiversion! {
    /// [`Relu6`]'s forward over a chunk.
    fn relu6_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = clamp(x, 0.0, 6.0);
        }
    }
}

multiversion! {
    /// [`Relu6`]'s backward over a chunk, from the output.
    fn relu6_backward(dy: &[f32], y: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = if y <= 0.0 || y >= 6.0 { 0.0 } else { dy };
        }
    }
}

impl Pointwise for Relu6 {
    const SAVES_OUTPUT: bool = true;
    fn f(&self, x: f32) -> f32 {
        clamp(x, 0.0, 6.0)
    }
    fn df(&self, dy: f32, y: f32) -> f32 {
        if y <= 0.0 || y >= 6.0 { 0.0 } else { dy }
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        relu6_forward(x, y);
    }
    fn df_chunk(&self, dy: &[f32], y: &[f32], dx: &mut [f32]) {
        relu6_backward(dy, y, dx);
    }
}

pointwise_layer!(Relu6);

pointwise_struct!(
    /// `torch.nn.Hardsigmoid`: `min(max(x + 3, 0), 6) / 6`, any shape. Backward is `dy / 6`
    /// (times PyTorch's rounded 1/6) where `-3 < x < 3` and 0 at and beyond the kinks, as
    /// PyTorch's `hardsigmoid_backward`.
    Hardsigmoid
);

/// PyTorch's `1.0f / 6.0f`, by which the hard activations' gradients multiply.
const ONE_SIXTH: f32 = 1.0 / 6.0;

fn hardsigmoid(x: f32) -> f32 {
    clamp(x + 3.0, 0.0, 6.0) / 6.0
}

fn hardsigmoid_grad(dy: f32, x: f32) -> f32 {
    if x > -3.0 && x < 3.0 {
        dy * ONE_SIXTH
    } else {
        0.0
    }
}

multiversion! {
    /// [`Hardsigmoid`]'s forward over a chunk.
    fn hardsigmoid_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = hardsigmoid(x);
        }
    }
}

multiversion! {
    /// [`Hardsigmoid`]'s backward over a chunk, from the input.
    fn hardsigmoid_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = hardsigmoid_grad(dy, x);
        }
    }
}

impl Pointwise for Hardsigmoid {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        hardsigmoid(x)
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        hardsigmoid_grad(dy, x)
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        hardsigmoid_forward(x, y);
    }
    fn df_chunk(&self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        hardsigmoid_backward(dy, x, dx);
    }
}

pointwise_layer!(Hardsigmoid);

pointwise_struct!(
    /// `torch.nn.Hardswish`: `x * min(max(x + 3, 0), 6) / 6`, any shape. Backward, as PyTorch's
    /// `hardswish_backward`: 0 below -3, `dy * (x / 3 + 0.5)` from -3 to 3 (both kinks
    /// included), `dy` above.
    Hardswish
);

fn hardswish(x: f32) -> f32 {
    x * clamp(x + 3.0, 0.0, 6.0) / 6.0
}

fn hardswish_grad(dy: f32, x: f32) -> f32 {
    if x < -3.0 {
        0.0
    } else if x <= 3.0 {
        dy * (x / 3.0 + 0.5)
    } else {
        dy
    }
}

multiversion! {
    /// [`Hardswish`]'s forward over a chunk.
    fn hardswish_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = hardswish(x);
        }
    }
}

multiversion! {
    /// [`Hardswish`]'s backward over a chunk, from the input.
    fn hardswish_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = hardswish_grad(dy, x);
        }
    }
}

impl Pointwise for Hardswish {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        hardswish(x)
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        hardswish_grad(dy, x)
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        hardswish_forward(x, y);
    }
    fn df_chunk(&self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        hardswish_backward(dy, x, dx);
    }
}

pointwise_layer!(Hardswish);

pointwise_struct!(
    /// `torch.nn.Identity`: its input, any shape; backward passes `dy`.
    Identity
);

impl Pointwise for Identity {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        x
    }
    fn df(&self, dy: f32, _x: f32) -> f32 {
        dy
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }
    fn df_chunk(&self, dy: &[f32], _x: &[f32], dx: &mut [f32]) {
        dx.copy_from_slice(dy);
    }
}

pointwise_layer!(Identity);

pointwise_struct!(
    /// `torch.nn.SiLU`: `x / (1 + exp(-x))`, any shape; backward `dy * s * (1 + x * (1 - s))`
    /// with `s = sigmoid(x)`, as PyTorch's `silu_backward`.
    Silu
);

impl Pointwise for Silu {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        silu(x)
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        silu_grad(dy, x)
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        silu_forward(x, y);
    }
    fn df_chunk(&self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        silu_backward(dy, x, dx);
    }
}

pointwise_layer!(Silu);

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[inline(always)]
fn silu_grad(dy: f32, x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-x));
    dy * s * (1.0 + x * (1.0 - s))
}

multiversion! {
    /// [`Silu`]'s forward over a chunk.
    fn silu_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = silu(x);
        }
    }
}

multiversion! {
    /// [`Silu`]'s backward over a chunk, from the input.
    fn silu_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = silu_grad(dy, x);
        }
    }
}

/// `torch.nn.GELU(approximate)`, any shape. `none`: `x * 0.5 * (1 + erf(x / sqrt(2)))`,
/// backward `dy * (cdf + x * pdf)`, the exact derivative; `tanh`: `0.5 * x * (1 + tanh(inner))`
/// with `inner = sqrt(2 / pi) * (x + 0.044715 * x^3)`, backward its exact derivative; both as
/// PyTorch's `gelu` and `gelu_backward` compute them.
#[derive(Clone, Debug)]
pub struct Gelu {
    name: String,
    dims: Shape,
    approximate: GeluApproximate,
}

impl Gelu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape, approximate: GeluApproximate) -> Self {
        Gelu {
            name: name.to_owned(),
            dims,
            approximate,
        }
    }
}

/// `sqrt(2 / pi)`, PyTorch's `M_SQRT2 * M_2_SQRTPI * 0.5`.
const GELU_BETA: f32 = std::f32::consts::SQRT_2 * std::f32::consts::FRAC_2_SQRT_PI * 0.5;
/// The cubic term's factor of the tanh approximation.
const GELU_KAPPA: f32 = 0.044715;

/// The exact (erf) GELU, `x * Φ(x)`.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The exact GELU's gradient, `dy * (Φ(x) + x φ(x))`.
#[inline(always)]
fn gelu_erf_grad(dy: f32, x: f32) -> f32 {
    // 1 / sqrt(2 pi), PyTorch's M_2_SQRTPI * M_SQRT1_2 * 0.5.
    const ALPHA: f32 = std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2 * 0.5;
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = ALPHA * exp(x * x * -0.5);
    dy * (cdf + x * pdf)
}

multiversion! {
    /// The exact [`Gelu`]'s forward over a chunk.
    fn gelu_erf_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu_erf(x);
        }
    }
}

multiversion! {
    /// The exact [`Gelu`]'s backward over a chunk, from the input.
    fn gelu_erf_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = gelu_erf_grad(dy, x);
        }
    }
}

/// The tanh GELU, `0.5 x (1 + tanh(inner))`.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let inner = GELU_BETA * (x + GELU_KAPPA * (x * x * x));
    0.5 * x * (1.0 + tanh(inner))
}

/// The tanh GELU's gradient, its exact derivative as PyTorch's `gelu_backward` writes it.
#[inline(always)]
fn gelu_tanh_grad(dy: f32, x: f32) -> f32 {
    let x_sq = x * x;
    let inner = GELU_BETA * (x + GELU_KAPPA * (x_sq * x));
    let tanh_inner = tanh(inner);
    let left = 0.5 * x;
    let right = 1.0 + tanh_inner;
    let inner_derivative = GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * x_sq);
    let right_derivative = left * (1.0 - tanh_inner * tanh_inner) * inner_derivative;
    dy * (0.5 * right + right_derivative)
}

multiversion! {
    /// The tanh [`Gelu`]'s forward over a chunk.
    fn gelu_tanh_forward(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu_tanh(x);
        }
    }
}

multiversion! {
    /// The tanh [`Gelu`]'s backward over a chunk, from the input.
    fn gelu_tanh_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = gelu_tanh_grad(dy, x);
        }
    }
}

impl Pointwise for Gelu {
    const SAVES_OUTPUT: bool = false;
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        match self.approximate {
            GeluApproximate::None => gelu_erf_forward(x, y),
            GeluApproximate::Tanh => gelu_tanh_forward(x, y),
        }
    }
    fn df_chunk(&self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        match self.approximate {
            GeluApproximate::None => gelu_erf_backward(dy, x, dx),
            GeluApproximate::Tanh => gelu_tanh_backward(dy, x, dx),
        }
    }
    fn f(&self, x: f32) -> f32 {
        match self.approximate {
            GeluApproximate::None => gelu_erf(x),
            GeluApproximate::Tanh => gelu_tanh(x),
        }
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        match self.approximate {
            GeluApproximate::None => gelu_erf_grad(dy, x),
            GeluApproximate::Tanh => gelu_tanh_grad(dy, x),
        }
    }
}

pointwise_layer!(Gelu);

/// `torch.nn.ELU(alpha)`: `x` where `x > 0`, else `alpha * (exp(x) - 1)`, any shape. Backward
/// `dy` where `x > 0`, else `dy * alpha * exp(x)` (so `alpha * dy` at 0), as PyTorch's
/// `elu_backward` on the input.
#[derive(Clone, Debug)]
pub struct Elu {
    name: String,
    dims: Shape,
    alpha: f32,
}

impl Elu {
    /// Builds the layer for per-sample shape `dims`.
    pub fn new(name: &str, dims: Shape, alpha: f32) -> Self {
        Elu {
            name: name.to_owned(),
            dims,
            alpha,
        }
    }
}

impl Pointwise for Elu {
    const SAVES_OUTPUT: bool = false;
    fn f(&self, x: f32) -> f32 {
        elu(self.alpha, x)
    }
    fn df(&self, dy: f32, x: f32) -> f32 {
        elu_grad(self.alpha, dy, x)
    }
    fn f_chunk(&self, x: &[f32], y: &mut [f32]) {
        elu_forward(self.alpha, x, y);
    }
    fn df_chunk(&self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        elu_backward(self.alpha, dy, x, dx);
    }
}

pointwise_layer!(Elu);

#[inline(always)]
fn elu(alpha: f32, x: f32) -> f32 {
    // Both sides computed and one selected, so the loop has no branch.
    let negative = (exp(x) - 1.0) * alpha;
    if x <= 0.0 { negative } else { x }
}

#[inline(always)]
fn elu_grad(alpha: f32, dy: f32, x: f32) -> f32 {
    let negative = dy * alpha * exp(x);
    if x <= 0.0 { negative } else { dy }
}

multiversion! {
    /// [`Elu`]'s forward over a chunk.
    fn elu_forward(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = elu(alpha, x);
        }
    }
}

multiversion! {
    /// [`Elu`]'s backward over a chunk, from the input.
    fn elu_backward(alpha: f32, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = elu_grad(alpha, dy, x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Mode;

    const ALL: Shape = Shape::Flat(9);

    fn run(layer: &mut dyn Layer, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut y = vec![0.0; x.len()];
        layer.forward(x, &mut y, 1, Mode::Train).unwrap();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 + i as f32).collect();
        let mut dx = vec![0.0; x.len()];
        layer.backward(x, &y, &dy, Some(&mut dx), 1).unwrap();
        let unit: Vec<f32> = dx.iter().zip(&dy).map(|(dx, dy)| dx / dy).collect();
        (y, unit)
    }

    /// The kinks, as PyTorch defines their derivatives.
    const KINKS: [f32; 9] = [-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0, 6.0, 7.0];

    #[test]
    fn relu6_clamps_and_passes_gradient_strictly_inside() {
        let (y, g) = run(&mut Relu6::new("r", ALL), &KINKS);
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 1.5, 3.0, 4.0, 6.0, 6.0]);
        assert_eq!(g, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn hard_activations_follow_pytorch_at_their_kinks() {
        let (y, g) = run(&mut Hardsigmoid::new("h", ALL), &KINKS);
        assert_eq!(y, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]);
        let sixth = 1.0 / 6.0;
        assert_eq!(g, [0.0, 0.0, sixth, sixth, sixth, 0.0, 0.0, 0.0, 0.0]);
        let (y, g) = run(&mut Hardswish::new("h", ALL), &KINKS);
        assert_eq!(y, [-0.0, -0.0, -0.375, 0.0, 1.125, 3.0, 4.0, 6.0, 7.0]);
        assert_eq!(g, [0.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn elu_gradient_at_zero_is_alpha() {
        let (y, g) = run(&mut Elu::new("e", ALL, 0.5), &KINKS);
        assert_eq!(y[3], 0.0);
        assert_eq!(g[3], 0.5);
        assert!((y[0] - 0.5 * ((-4.0f32).exp() - 1.0)).abs() < 1e-7);
        assert_eq!(g[6], 1.0);
    }

    /// The vector kernels (the widest this CPU runs) give the scalar maps' bits, on values
    /// across every branch of `exp` and `erf`, the clamps, infinities and NaN.
    #[test]
    fn vector_kernels_give_the_scalar_bits() {
        let mut x: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0237).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 87.5, -90.0, 200.0, f32::INFINITY]);
        x.extend([f32::NEG_INFINITY, f32::NAN, 0.999_999_9, 1.0, 1.000_000_1]);
        let dy: Vec<f32> = (0..x.len()).map(|i| 0.5 - (i % 7) as f32 * 0.3).collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        type Backward<'a> = &'a dyn Fn(&[f32], &[f32], &mut [f32]);
        let check = |name: &str,
                     forward: &dyn Fn(&[f32], &mut [f32]),
                     backward: Backward,
                     f: &dyn Fn(f32) -> f32,
                     df: &dyn Fn(f32, f32) -> f32| {
            let mut y = vec![0.0; x.len()];
            forward(&x, &mut y);
            let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
            assert_eq!(bits(&y), bits(&want), "{name} forward");
            let mut dx = vec![0.0; x.len()];
            backward(&dy, &x, &mut dx);
            let want: Vec<f32> = dy.iter().zip(&x).map(|(&g, &v)| df(g, v)).collect();
            assert_eq!(bits(&dx), bits(&want), "{name} backward");
        };
        check("silu", &silu_forward, &silu_backward, &silu, &silu_grad);
        check(
            "gelu",
            &gelu_erf_forward,
            &gelu_erf_backward,
            &gelu_erf,
            &gelu_erf_grad,
        );
        check(
            "gelu tanh",
            &gelu_tanh_forward,
            &gelu_tanh_backward,
            &gelu_tanh,
            &gelu_tanh_grad,
        );
        check(
            "elu",
            &|x, y| elu_forward(0.7, x, y),
            &|dy, x, dx| elu_backward(0.7, dy, x, dx),
            &|v| elu(0.7, v),
            &|g, v| elu_grad(0.7, g, v),
        );
    }

    #[test]
    fn erf_matches_reference_values() {
        // From Python's math.erf.
        for (x, want) in [
            (0.5f32, 0.520_499_877_8f64),
            (1.0, 0.842_700_792_9),
            (1.99, 0.995_111_413_2),
            (2.0, 0.995_322_265_0),
            (3.0, 0.999_977_909_5),
        ] {
            assert!((f64::from(erf(x)) - want).abs() < 1e-7, "erf({x})");
            assert!((f64::from(erf(-x)) + want).abs() < 1e-7, "erf(-{x})");
        }
        // Within an ulp near 0, where the error bound above says little.
        let small = erf(1e-3);
        assert!(
            (f64::from(small) / 0.001_128_378_8 - 1.0).abs() < 2e-7,
            "{small}"
        );
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
    }

    #[test]
    fn nan_propagates_through_the_clamps() {
        for layer in [
            &mut Relu6::new("r", ALL) as &mut dyn Layer,
            &mut Hardsigmoid::new("h", ALL),
            &mut Hardswish::new("h", ALL),
        ] {
            let mut x = KINKS;
            x[4] = f32::NAN;
            let (y, _) = run(layer, &x);
            assert!(y[4].is_nan(), "{}", layer.name());
        }
    }

    #[test]
    fn vector_kernels_match_the_scalar_maps() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let dy: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        fn check<P: Pointwise>(p: &P, x: &[f32], dy: &[f32]) {
            let mut y = vec![0.0; x.len()];
            p.f_chunk(x, &mut y);
            let mut dx = vec![0.0; x.len()];
            p.df_chunk(dy, x, &mut dx);
            for i in 0..x.len() {
                assert_eq!(y[i].to_bits(), p.f(x[i]).to_bits());
                assert_eq!(dx[i].to_bits(), p.df(dy[i], x[i]).to_bits());
            }
        }
        check(&Relu6::new("r", ALL), &x, &dy);
        check(&Hardsigmoid::new("h", ALL), &x, &dy);
        check(&Hardswish::new("h", ALL), &x, &dy);
        check(&Identity::new("i", ALL), &x, &dy);
    }
}
