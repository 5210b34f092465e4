//! `torch.nn.Flatten`: turns a pixel-major feature map into a feature vector in PyTorch's
//! `(C, H, W)` order, so the following `Linear` uses PyTorch's weight layout unchanged.

use cnnc_core::{Reads, Shape};
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward};
use crate::config::{batched_rank, flatten_output};
use crate::error::{Error, Result};

/// `torch.nn.Flatten(start_dim, end_dim)`: `[N, C, H, W]` to `[N, C*H*W]` (C, H, W order) by
/// default; flat inputs, and a single flattened dim (`start_dim == end_dim`), pass through.
#[derive(Clone, Debug)]
pub struct Flatten {
    name: String,
    input: Shape,
    output: Shape,
}

impl Flatten {
    /// Builds `torch.nn.Flatten()` (everything but the batch) for per-sample input `input`.
    pub fn new(name: &str, input: Shape) -> Self {
        Flatten {
            name: name.to_owned(),
            input,
            output: Shape::Flat(input.numel()),
        }
    }

    /// Builds `torch.nn.Flatten(start_dim, end_dim)` for per-sample input `input`; errors when
    /// the result is neither the input nor flat ([`flatten_output`]).
    pub fn with_dims(name: &str, input: Shape, start_dim: i64, end_dim: i64) -> Result<Self> {
        let output = flatten_output(start_dim, end_dim, input).ok_or_else(|| {
            Error::config(
                name,
                format!(
                    "flatten of dims {start_dim}..={end_dim} of a rank-{} batched {input} input \
                     is neither the input nor flat",
                    batched_rank(input)
                ),
            )
        })?;
        Ok(Flatten {
            name: name.to_owned(),
            input,
            output,
        })
    }

    /// Whether the layer reorders an image into PyTorch's flat `(C, H, W)` order (otherwise it
    /// copies).
    fn reorders(&self) -> bool {
        matches!((self.input, self.output), (Shape::Chw(_), Shape::Flat(_)))
    }
}

impl Layer for Flatten {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.input
    }

    fn output_shape(&self) -> Shape {
        self.output
    }

    fn batch_grain(&self) -> Option<usize> {
        Some(1)
    }

    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        let len = self.input.numel();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Shape::Chw([c, h, w]) if self.reorders() => {
                y[..n]
                    .par_chunks_mut(len)
                    .zip(x[..n].par_chunks(len))
                    .for_each(|(y, x)| {
                        for (pix, px) in x.chunks_exact(c).enumerate() {
                            for (ch, &v) in px.iter().enumerate() {
                                y[ch * h * w + pix] = v;
                            }
                        }
                    });
            }
            _ => y[..n].copy_from_slice(&x[..n]),
        }
        Ok(())
    }

    /// Neither: the gradient is `dy` reordered.
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: false,
            output: false,
        }
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
        let len = self.input.numel();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Shape::Chw([c, h, w]) if self.reorders() => {
                dx[..n]
                    .par_chunks_mut(len)
                    .zip(dy[..n].par_chunks(len))
                    .for_each(|(dx, dy)| {
                        for (pix, px) in dx.chunks_exact_mut(c).enumerate() {
                            for (ch, d) in px.iter_mut().enumerate() {
                                *d = dy[ch * h * w + pix];
                            }
                        }
                    });
            }
            _ => dx[..n].copy_from_slice(&dy[..n]),
        }
        Ok(())
    }
}
