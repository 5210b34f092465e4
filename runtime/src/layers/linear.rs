//! `torch.nn.Linear` as GEMM on `[batch, features]` rows, reading PyTorch's `[out, in]` weight in
//! place (as the transposed right-hand side) so nothing is repacked.

use rand_chacha::ChaCha8Rng;

use super::{Layer, check_backward, check_forward, check_param, zero_param};
use crate::config::LinearConfig;
use crate::error::{Error, Result};
use crate::gemm::{MatMut, MatRef, matmul};
use crate::init::{fan_in_bound, fill_uniform};
use crate::param::{Entry, Param};
use crate::tensor::{Dims, Mode};

/// `torch.nn.Linear(in_features, out_features, bias=...)`: `[N, in_features]` to
/// `[N, out_features]`, `y = x W^T + b`.
#[derive(Debug)]
pub struct Linear {
    name: String,
    weight_name: String,
    bias_name: String,
    config: LinearConfig,
    /// `[out_features, in_features]`.
    pub weight: Param,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Param>,
    /// The weight, contiguous `[out, in]` (a copy only when `weight.value` is not standard-layout).
    weight_buf: Vec<f32>,
    /// The bias, contiguous (zeros without one).
    bias_row: Vec<f32>,
    /// The weight gradient before it is copied into `weight.grad`.
    wgrad: Vec<f32>,
}

impl Linear {
    /// Builds the layer, initialised as PyTorch does: weight and bias from
    /// `U(-1/sqrt(in_features), 1/sqrt(in_features))` drawn from `rng` (weight first). The input
    /// must be flat with `in_features` features.
    pub fn new(
        name: &str,
        config: &LinearConfig,
        input: Dims,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let (fin, fout) = (config.in_features, config.out_features);
        match input {
            Dims::Flat { features } if features == fin => {}
            Dims::Flat { features } => {
                return Err(Error::config(
                    name,
                    format!("linear expects {fin} input features, found {features}"),
                ));
            }
            Dims::Image { .. } => {
                return Err(Error::config(
                    name,
                    format!(
                        "linear needs a flat input, found an image {input}; add a flatten layer before it"
                    ),
                ));
            }
        }
        if fin == 0 || fout == 0 {
            return Err(Error::config(
                name,
                "in_features and out_features must be positive",
            ));
        }
        let bound = fan_in_bound(fin);
        let mut weight = zero_param(&[fout, fin]);
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = config.bias.then(|| {
            let mut b = zero_param(&[fout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        Ok(Linear {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: config.clone(),
            weight,
            bias,
            weight_buf: vec![0.0; fout * fin],
            bias_row: vec![0.0; fout],
            wgrad: vec![0.0; fout * fin],
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &LinearConfig {
        &self.config
    }

    /// Checks the parameters' shapes and copies the bias into `bias_row` (and the weight into
    /// `weight_buf` if it is not contiguous).
    fn check_and_pack(&mut self) -> Result<()> {
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        check_param(&self.name, "weight", &self.weight, &[fout, fin])?;
        if self.weight.value.as_slice().is_none() {
            for (dst, &v) in self.weight_buf.iter_mut().zip(self.weight.value.iter()) {
                *dst = v;
            }
        }
        match &self.bias {
            Some(b) => {
                check_param(&self.name, "bias", b, &[fout])?;
                for (dst, &v) in self.bias_row.iter_mut().zip(b.value.iter()) {
                    *dst = v;
                }
            }
            None => self.bias_row.fill(0.0),
        }
        Ok(())
    }

    /// The weight as a contiguous `[out, in]` slice.
    fn weight_slice(&self) -> &[f32] {
        self.weight.value.as_slice().unwrap_or(&self.weight_buf)
    }
}

impl Layer for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_dims(&self) -> Dims {
        Dims::Flat {
            features: self.config.in_features,
        }
    }

    fn output_dims(&self) -> Dims {
        Dims::Flat {
            features: self.config.out_features,
        }
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (nx, ny) = check_forward(self, x, y, batch)?;
        self.check_and_pack()?;
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        for row in y[..ny].chunks_exact_mut(fout) {
            row.copy_from_slice(&self.bias_row);
        }
        matmul(
            MatMut::row_major(&mut y[..ny], batch, fout),
            MatRef::row_major(&x[..nx], batch, fin),
            MatRef::row_major(self.weight_slice(), fout, fin).t(),
            true,
        );
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
        let (nx, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        self.check_and_pack()?;
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        let dy = &dy[..ny];
        matmul(
            MatMut::row_major(&mut self.wgrad, fout, fin),
            MatRef::row_major(dy, batch, fout).t(),
            MatRef::row_major(&x[..nx], batch, fin),
            false,
        );
        for (dst, &v) in self.weight.grad.iter_mut().zip(&self.wgrad) {
            *dst = v;
        }
        if let Some(bias) = &mut self.bias {
            for (o, dst) in bias.grad.iter_mut().enumerate() {
                *dst = dy.chunks_exact(fout).fold(0.0, |s, row| s + row[o]);
            }
        }
        if let Some(dx) = dx {
            let w = self.weight.value.as_slice().unwrap_or(&self.weight_buf);
            matmul(
                MatMut::row_major(&mut dx[..nx], batch, fin),
                MatRef::row_major(dy, batch, fout),
                MatRef::row_major(w, fout, fin),
                false,
            );
        }
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        f(Entry::Param {
            name: &self.weight_name,
            param: &mut self.weight,
        });
        if let Some(bias) = &mut self.bias {
            f(Entry::Param {
                name: &self.bias_name,
                param: bias,
            });
        }
    }
}
