//! `torch.nn.Flatten`: turns a pixel-major feature map into a feature vector in PyTorch's
//! `(C, H, W)` order, so the following `Linear` uses PyTorch's weight layout unchanged.

use rayon::prelude::*;

use super::{Layer, check_backward, check_forward};
use crate::error::Result;
use crate::tensor::{Dims, Mode};

/// `torch.nn.Flatten()`: `[N, C, H, W]` to `[N, C*H*W]` (C, H, W order); flat inputs pass through.
#[derive(Debug)]
pub struct Flatten {
    name: String,
    input: Dims,
}

impl Flatten {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, input: Dims) -> Self {
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

    fn input_dims(&self) -> Dims {
        self.input
    }

    fn output_dims(&self) -> Dims {
        Dims::Flat {
            features: self.input.len(),
        }
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        let len = self.input.len();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Dims::Image {
                channels: c,
                height: h,
                width: w,
            } => {
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
            Dims::Flat { .. } => y[..n].copy_from_slice(&x[..n]),
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
        let len = self.input.len();
        if len == 0 {
            return Ok(());
        }
        match self.input {
            Dims::Image {
                channels: c,
                height: h,
                width: w,
            } => {
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
            Dims::Flat { .. } => dx[..n].copy_from_slice(&dy[..n]),
        }
        Ok(())
    }
}
