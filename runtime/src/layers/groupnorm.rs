//! `torch.nn.GroupNorm` on pixel-major activations: each sample's channels split into groups,
//! each group normalised by its own mean and variance, in training and eval alike. Statistics
//! are summed in f64 per sample in a fixed order, and the parameter gradients summed over the
//! samples in order, so results do not depend on the thread count.

use std::mem::take;

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_param, grow, image_input, zero_param};
use crate::config::GroupNormConfig;
use crate::error::{Error, Result};
use crate::param::{Entry, EntryRef, Param};
use crate::scratch;
use crate::tensor::Mode;

/// `torch.nn.GroupNorm(num_groups, num_channels, eps, affine)`: `[N, C, H, W]` to the same
/// shape. Each sample's `num_channels / num_groups` consecutive channels form a group,
/// normalised with the group's mean and biased variance, then scaled by the per-channel
/// `weight` and shifted by `bias` (kept at 1 and 0, and not parameters, without `affine`).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    name: String,
    names: [String; 2],
    config: GroupNormConfig,
    dims: Shape,
    /// `[num_channels]`, initialised to 1.
    pub weight: Param,
    /// `[num_channels]`, initialised to 0.
    pub bias: Param,
    /// Per sample and group: the mean and `1 / sqrt(var + eps)` of the last forward.
    stats: Vec<[f64; 2]>,
    /// Per sample and channel: `weight * invstd` and `bias - mean * weight * invstd`.
    affine: Vec<[f32; 2]>,
    /// Per sample and channel: the sums of `dy` and `dy * xhat` for the parameter gradients.
    partials: Vec<[f64; 2]>,
}

impl GroupNorm {
    /// Builds the layer for per-sample input `input` (an image with `num_channels` channels,
    /// a multiple of `num_groups`), initialised as PyTorch does: weight 1, bias 0.
    pub fn new(name: &str, config: &GroupNormConfig, input: Shape) -> Result<Self> {
        let (c, _, _) = image_input(name, "groupnorm", input)?;
        if c != config.num_channels {
            return Err(Error::config(
                name,
                format!(
                    "groupnorm expects {} channels, found {c}",
                    config.num_channels
                ),
            ));
        }
        if config.num_groups == 0 || !c.is_multiple_of(config.num_groups) {
            return Err(Error::config(
                name,
                format!(
                    "groupnorm's num_groups ({}) must divide its {c} channels",
                    config.num_groups
                ),
            ));
        }
        let mut weight = zero_param(&[c]);
        weight.value.fill(1.0);
        Ok(GroupNorm {
            name: name.to_owned(),
            names: ["weight", "bias"].map(|s| format!("{name}.{s}")),
            config: config.clone(),
            dims: input,
            weight,
            bias: zero_param(&[c]),
            stats: Vec::new(),
            affine: Vec::new(),
            partials: Vec::new(),
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &GroupNormConfig {
        &self.config
    }

    fn check_state(&self) -> Result<()> {
        let c = [self.config.num_channels];
        check_param(&self.name, "weight", &self.weight, &c)?;
        check_param(&self.name, "bias", &self.bias, &c)
    }

    /// Channels per group and elements per group of one sample.
    fn group_sizes(&self) -> (usize, usize) {
        let per_group = self.config.num_channels / self.config.num_groups;
        (
            per_group,
            per_group * (self.dims.numel() / self.config.num_channels),
        )
    }
}

impl Layer for GroupNorm {
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
        let (c, groups) = (self.config.num_channels, self.config.num_groups);
        let mut stats = scratch::take(batch * groups, scratch::ANY, [0.0; 2]);
        let mut affine = scratch::take(batch * c, scratch::ANY, [0.0; 2]);
        self.normalize(x, y, batch, &mut stats, &mut affine)
    }

    /// Keeps each sample's statistics for `backward`.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (c, groups) = (self.config.num_channels, self.config.num_groups);
        let (mut stats, mut affine) = (take(&mut self.stats), take(&mut self.affine));
        grow(&mut stats, batch * groups, [0.0; 2]);
        grow(&mut affine, batch * c, [0.0; 2]);
        let result = self.normalize(x, y, batch, &mut stats, &mut affine);
        (self.stats, self.affine) = (stats, affine);
        result
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
        self.check_state()?;
        let (c, groups) = (self.config.num_channels, self.config.num_groups);
        let len = self.dims.numel();
        if len == 0 || batch == 0 {
            return Ok(());
        }
        if self.stats.len() < batch * groups {
            return Err(Error::State(format!(
                "layer `{}`: backward of batch {batch} without a forward of that batch",
                self.name
            )));
        }
        let (per_group, count) = self.group_sizes();
        grow(&mut self.partials, batch * c, [0.0; 2]);
        let (x, dy) = (&x[..n], &dy[..n]);
        let (stats, weight) = (&self.stats, &self.weight.value);
        // Per sample and channel: sum dy and sum dy * xhat, for the parameter gradients.
        self.partials[..batch * c]
            .par_chunks_mut(c)
            .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
            .zip(stats.par_chunks(groups))
            .for_each(|((part, (x, dy)), stats)| {
                part.fill([0.0; 2]);
                for (x, dy) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                    for ch in 0..c {
                        let [mean, invstd] = stats[ch / per_group];
                        let d = f64::from(dy[ch]);
                        let xhat = (f64::from(x[ch]) - mean) * invstd;
                        part[ch][0] += d;
                        part[ch][1] += d * xhat;
                    }
                }
            });
        if self.config.affine {
            for ch in 0..c {
                let [db, dw] = self.partials[..batch * c]
                    .chunks_exact(c)
                    .fold([0.0, 0.0], |[a, b], part| {
                        [a + part[ch][0], b + part[ch][1]]
                    });
                self.bias.grad[ch] = db as f32;
                self.weight.grad[ch] = dw as f32;
            }
        }
        let Some(dx) = dx else { return Ok(()) };
        // Per group: dx = invstd * (w dy - mean(w dy) - xhat * mean(w dy * xhat)).
        dx[..n]
            .par_chunks_mut(len)
            .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
            .zip(stats.par_chunks(groups))
            .zip(self.partials.par_chunks(c))
            .for_each(|(((dx, (x, dy)), stats), part)| {
                for (g, &[mean, invstd]) in stats.iter().enumerate() {
                    let channels = g * per_group..(g + 1) * per_group;
                    let (mut s1, mut s2) = (0.0f64, 0.0f64);
                    for ch in channels.clone() {
                        let w = f64::from(weight[ch]);
                        s1 += w * part[ch][0];
                        s2 += w * part[ch][1];
                    }
                    let (s1, s2) = (s1 / count as f64, s2 / count as f64);
                    for ((dx, x), dy) in dx
                        .chunks_exact_mut(c)
                        .zip(x.chunks_exact(c))
                        .zip(dy.chunks_exact(c))
                    {
                        for ch in channels.clone() {
                            let xhat = (f64::from(x[ch]) - mean) * invstd;
                            let d = f64::from(weight[ch]) * f64::from(dy[ch]);
                            dx[ch] = (invstd * (d - s1 - xhat * s2)) as f32;
                        }
                    }
                }
            });
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        if !self.config.affine {
            return;
        }
        let [w, b] = &self.names;
        f(Entry::Param {
            name: w,
            param: &mut self.weight,
        });
        f(Entry::Param {
            name: b,
            param: &mut self.bias,
        });
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        if !self.config.affine {
            return;
        }
        let [w, b] = &self.names;
        f(EntryRef::Param {
            name: w,
            param: &self.weight,
        });
        f(EntryRef::Param {
            name: b,
            param: &self.bias,
        });
    }
}

impl GroupNorm {
    /// The forward pass of `batch` samples, each sample's statistics into `stats` (at least
    /// `batch * num_groups` long) and its per-channel scale and shift into `affine`.
    fn normalize(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        stats: &mut [[f64; 2]],
        affine: &mut [[f32; 2]],
    ) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        self.check_state()?;
        let (c, groups) = (self.config.num_channels, self.config.num_groups);
        let len = self.dims.numel();
        if len == 0 || batch == 0 {
            return Ok(());
        }
        let (per_group, count) = self.group_sizes();
        let eps = f64::from(self.config.eps);
        let (weight, bias) = (&self.weight.value, &self.bias.value);
        y[..n]
            .par_chunks_mut(len)
            .zip(x[..n].par_chunks(len))
            .zip(stats.par_chunks_mut(groups))
            .zip(affine.par_chunks_mut(c))
            .for_each(|(((y, x), stats), affine)| {
                // Two passes in f64, pixel by pixel: the mean, then the biased variance.
                for (g, stat) in stats.iter_mut().enumerate() {
                    let channels = g * per_group..(g + 1) * per_group;
                    let mut sum = 0.0;
                    for px in x.chunks_exact(c) {
                        sum += px[channels.clone()]
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>();
                    }
                    let mean = sum / count as f64;
                    let mut var = 0.0;
                    for px in x.chunks_exact(c) {
                        var += px[channels.clone()]
                            .iter()
                            .map(|&v| (f64::from(v) - mean).powi(2))
                            .sum::<f64>();
                    }
                    *stat = [mean, 1.0 / (var / count as f64 + eps).sqrt()];
                }
                for (ch, a) in affine.iter_mut().enumerate() {
                    let [mean, invstd] = stats[ch / per_group];
                    let scale = (invstd as f32) * weight[ch];
                    *a = [scale, bias[ch] - mean as f32 * scale];
                }
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for ch in 0..c {
                        let [scale, shift] = affine[ch];
                        y[ch] = x[ch] * scale + shift;
                    }
                }
            });
        Ok(())
    }
}
