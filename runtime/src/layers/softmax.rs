//! `torch.nn.Softmax(dim)` and `torch.nn.LogSoftmax(dim)` along one per-sample dimension, made
//! numerically stable by subtracting each line's maximum first. Samples run in parallel; each
//! line's sums run in a fixed order, so results do not depend on the number of threads.

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward};
use crate::config::softmax_dim;
use crate::error::{Error, Result};

/// How the values of one sample split into lines along the softmax dimension, in the internal
/// layout (images pixel-major, `[H, W, C]`): `outer` blocks of `len * inner` values, each line
/// `len` values `inner` apart.
#[derive(Clone, Copy, Debug)]
struct Lines {
    outer: usize,
    len: usize,
    inner: usize,
}

impl Lines {
    /// The lines of `dims` along PyTorch's `dim` of the batched tensor, or a config error.
    fn new(name: &str, what: &str, dims: Shape, dim: i64) -> Result<Lines> {
        let axis = softmax_dim(dim, dims).ok_or_else(|| {
            Error::config(
                name,
                format!("{what} dim {dim} is not a per-sample dimension of {dims}"),
            )
        })?;
        Ok(match (dims, axis) {
            (Shape::Flat(features), _) => Lines {
                outer: 1,
                len: features,
                inner: 1,
            },
            (Shape::Chw([channels, height, width]), axis) => match axis {
                1 => Lines {
                    outer: height * width,
                    len: channels,
                    inner: 1,
                },
                2 => Lines {
                    outer: 1,
                    len: height,
                    inner: width * channels,
                },
                _ => Lines {
                    outer: height,
                    len: width,
                    inner: channels,
                },
            },
        })
    }

    /// Calls `f(start, stride)` for every line of one sample: its first index and step.
    fn each(&self, mut f: impl FnMut(usize, usize)) {
        for o in 0..self.outer {
            for i in 0..self.inner {
                f(o * self.len * self.inner + i, self.inner);
            }
        }
    }
}

/// Forward of one sample: softmax, or its logarithm, of each line.
fn forward_sample(lines: Lines, log: bool, x: &[f32], y: &mut [f32]) {
    lines.each(|start, stride| {
        let line = || (0..lines.len).map(|k| start + k * stride);
        let max = line().fold(f32::NEG_INFINITY, |m, j| if x[j] > m { x[j] } else { m });
        // A line of -inf (or one holding NaN) stays NaN, as in PyTorch.
        let max = if max.is_finite() { max } else { 0.0 };
        let mut sum = 0.0f32;
        for j in line() {
            let e = (x[j] - max).exp();
            sum += e;
            if !log {
                y[j] = e;
            }
        }
        if log {
            // (x - max) - log(sum), in PyTorch's order: adding max and log(sum) first would
            // round away log(sum) next to a large max.
            let log_sum = sum.ln();
            for j in line() {
                y[j] = (x[j] - max) - log_sum;
            }
        } else {
            for j in line() {
                y[j] /= sum;
            }
        }
    });
}

/// Backward of one sample, from the output: `y * (dy - sum(dy * y))` for softmax,
/// `dy - exp(y) * sum(dy)` for its logarithm.
fn backward_sample(lines: Lines, log: bool, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    lines.each(|start, stride| {
        let line = || (0..lines.len).map(|k| start + k * stride);
        if log {
            let sum: f32 = line().map(|j| dy[j]).sum();
            for j in line() {
                dx[j] = dy[j] - y[j].exp() * sum;
            }
        } else {
            let dot: f32 = line().map(|j| dy[j] * y[j]).sum();
            for j in line() {
                dx[j] = y[j] * (dy[j] - dot);
            }
        }
    });
}

/// Implements a softmax kind: the struct, its constructor and [`Layer`].
macro_rules! softmax_layer {
    ($(#[$attr:meta])* $ty:ident, $what:literal, $log:expr) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        pub struct $ty {
            name: String,
            dims: Shape,
            dim: i64,
            lines: Lines,
        }

        impl $ty {
            /// Builds the layer for per-sample shape `dims`, along PyTorch's `dim` of the
            /// batched tensor `[N, ...]` (negative counts from the end; 0, the batch, is refused).
            pub fn new(name: &str, dims: Shape, dim: i64) -> Result<Self> {
                Ok($ty {
                    name: name.to_owned(),
                    dims,
                    dim,
                    lines: Lines::new(name, $what, dims, dim)?,
                })
            }

            /// The dimension as written.
            pub fn dim(&self) -> i64 {
                self.dim
            }
        }

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

            fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
                let (n, _) = check_forward(self, x, y, batch)?;
                let per = self.dims.numel().max(1);
                let lines = self.lines;
                y[..n]
                    .par_chunks_mut(per)
                    .zip(x[..n].par_chunks(per))
                    .for_each(|(y, x)| forward_sample(lines, $log, x, y));
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
                let per = self.dims.numel().max(1);
                let lines = self.lines;
                dx[..n]
                    .par_chunks_mut(per)
                    .zip(y[..n].par_chunks(per).zip(dy[..n].par_chunks(per)))
                    .for_each(|(dx, (y, dy))| backward_sample(lines, $log, y, dy, dx));
                Ok(())
            }
        }
    };
}

softmax_layer!(
    /// `torch.nn.Softmax(dim)`: `exp(x - max) / sum(exp(x - max))` along `dim`, any shape;
    /// backward `y * (dy - sum(dy * y))`.
    Softmax,
    "softmax",
    false
);

softmax_layer!(
    /// `torch.nn.LogSoftmax(dim)`: `x - max - log(sum(exp(x - max)))` along `dim`, any shape;
    /// backward `dy - exp(y) * sum(dy)`.
    LogSoftmax,
    "log_softmax",
    true
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Mode;

    #[test]
    fn large_values_stay_finite_and_lines_sum_to_one() {
        let dims = Shape::Flat(3);
        let mut layer = Softmax::new("s", dims, -1).unwrap();
        let x = [1000.0, 1000.0, 0.0, -5.0, 0.0, 5.0];
        let mut y = [0.0; 6];
        layer.forward(&x, &mut y, 2, Mode::Eval).unwrap();
        assert_eq!(&y[..3], &[0.5, 0.5, 0.0]);
        assert!((y[3..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut log = LogSoftmax::new("l", dims, 1).unwrap();
        let mut ly = [0.0; 6];
        log.forward(&x, &mut ly, 2, Mode::Eval).unwrap();
        assert!((ly[0] - 0.5f32.ln()).abs() < 1e-6);
        assert!(ly[2] < -999.0 && ly[2].is_finite());
    }

    #[test]
    fn image_dims_pick_the_internal_stride() {
        // [C=2, H=1, W=3], pixel-major: values (pixel, channel).
        let dims = Shape::Chw([2, 1, 3]);
        let x = [0.0, 1.0, 0.0, 2.0, 0.0, 3.0];
        let mut y = [0.0; 6];
        // Over channels: each pixel's pair sums to 1.
        Softmax::new("s", dims, 1)
            .unwrap()
            .forward(&x, &mut y, 1, Mode::Eval)
            .unwrap();
        for pair in y.chunks(2) {
            assert!((pair[0] + pair[1] - 1.0).abs() < 1e-6);
        }
        // Over the width: each channel's three values sum to 1, and channel 0 is uniform.
        Softmax::new("s", dims, -1)
            .unwrap()
            .forward(&x, &mut y, 1, Mode::Eval)
            .unwrap();
        assert!((y[0] - 1.0 / 3.0).abs() < 1e-6 && (y[2] - y[4]).abs() < 1e-7);
        assert!((y[1] + y[3] + y[5] - 1.0).abs() < 1e-6);
        // Over the height of 1: all ones.
        Softmax::new("s", dims, 2)
            .unwrap()
            .forward(&x, &mut y, 1, Mode::Eval)
            .unwrap();
        assert_eq!(y, [1.0; 6]);
    }

    #[test]
    fn the_batch_dimension_and_out_of_range_dims_are_refused() {
        let dims = Shape::Flat(3);
        for dim in [0, 2, -3] {
            assert!(matches!(
                Softmax::new("s", dims, dim),
                Err(Error::Config { .. })
            ));
        }
    }
}
