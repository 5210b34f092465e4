//! `torch.nn.Flatten`: turns a pixel-major feature map into a feature vector in PyTorch's
//! `(C, H, W)` order, so the following `Linear` uses PyTorch's weight layout unchanged.

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward};
use crate::error::Result;
use crate::tensor::Mode;

/// `torch.nn.Flatten()`: `[N, C, H, W]` to `[N, C*H*W]` (C, H, W order); flat inputs pass through.
#[derive(Debug)]
pub struct Flatten {
    name: String,
    input: Shape,
}

impl Flatten {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, input: Shape) -> Self {
        Flatten {
            name: name.to_owned(),
            input,
        }
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
        Shape::Flat(self.input.numel())
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        let len = self.input.numel();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Shape::Chw([c, h, w]) => {
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
            Shape::Flat(_) => y[..n].copy_from_slice(&x[..n]),
        }
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
        let len = self.input.numel();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Shape::Chw([c, h, w]) => {
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
            Shape::Flat(_) => dx[..n].copy_from_slice(&dy[..n]),
        }
        Ok(())
    }
}
