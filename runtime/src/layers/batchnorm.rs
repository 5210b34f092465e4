//! `torch.nn.BatchNorm2d` on pixel-major activations (channels are the contiguous axis). Batch
//! statistics are summed in f64 per fixed row lane and the lanes added in order, so they do not
//! depend on the thread count.

use std::ops::Range;

use cnnc_core::{Reads, Shape};
use ndarray::ArrayD;

use super::{Layer, check_backward, check_forward, check_param, image_input, zero_param};
use crate::config::BatchNorm2dConfig;
use crate::error::{Error, Result};
use crate::par;
use crate::param::{Entry, EntryRef, Param};
use crate::scratch;
use crate::simd::multiversion;
use crate::tensor::{MAX_LANES, Mode, Tiling};

/// Pixels per tile when summing statistics (only the lane split matters for the result).
const STAT_TILE: usize = 64;

/// `torch.nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)`:
/// `[N, C, H, W]` to the same shape. Training normalises with the batch mean and biased variance
/// and, when tracking, increments `num_batches_tracked` and updates `running_mean` /
/// `running_var` (with the unbiased variance) by `momentum`, or by `1 / num_batches_tracked`
/// (a cumulative average) when `momentum` is `None`; evaluation uses the running statistics,
/// or the batch's when the layer does not track them. Without `affine` the weight stays 1 and
/// the bias 0, and neither is a parameter ([`Layer::visit`] yields only what PyTorch's
/// state_dict holds).
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    name: String,
    names: [String; 5],
    config: BatchNorm2dConfig,
    dims: Shape,
    /// `[num_features]`, initialised to 1 (and kept at 1 without `affine`).
    pub weight: Param,
    /// `[num_features]`, initialised to 0 (and kept at 0 without `affine`).
    pub bias: Param,
    /// `[num_features]`, initialised to 0.
    pub running_mean: ArrayD<f32>,
    /// `[num_features]`, initialised to 1.
    pub running_var: ArrayD<f32>,
    /// Training forward passes so far (PyTorch's int64 `num_batches_tracked`).
    pub num_batches_tracked: i64,
    /// Whether the last forward normalised with the batch's statistics (training, or a layer
    /// that does not track running ones).
    batch_stats: bool,
    /// Mean used by the last forward, per channel.
    mean: Vec<f32>,
    /// `1 / sqrt(var + eps)` used by the last forward, per channel.
    invstd: Vec<f32>,
    /// Per-channel `weight * invstd` and `bias - mean * weight * invstd`.
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// Per-lane f64 partial sums, two per channel.
    partials: Vec<f64>,
    /// Per-channel totals of the partial sums.
    sums: Vec<[f64; 2]>,
    /// Per-channel batch mean in f64 (for the variance pass).
    mean64: Vec<f64>,
    /// Per-channel input-gradient coefficients `dx = a * dy + b * (x - mean) + d`: every
    /// channel's `a`, then every `b`, then every `d`.
    coef: Vec<f32>,
    /// Whether the layer applies the ReLU that follows it ([`BatchNorm2d::fuse_relu`]).
    relu: bool,
    /// Whether `backward`'s `dy` arrives masked by that ReLU already ([`Layer::relu_grad_masked`]).
    relu_masked: bool,
}

impl BatchNorm2d {
    /// Builds the layer for per-sample input `input` (an image with `num_features` channels),
    /// initialised as PyTorch does: weight 1, bias 0, running mean 0, running variance 1.
    pub fn new(name: &str, config: &BatchNorm2dConfig, input: Shape) -> Result<Self> {
        let (c, _, _) = image_input(name, "batch_norm2d", input)?;
        if c != config.num_features {
            return Err(Error::config(
                name,
                format!(
                    "batch_norm2d expects {} channels, found {c}",
                    config.num_features
                ),
            ));
        }
        let mut weight = zero_param(&[c]);
        weight.value.fill(1.0);
        Ok(BatchNorm2d {
            name: name.to_owned(),
            names: [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ]
            .map(|s| format!("{name}.{s}")),
            config: config.clone(),
            dims: input,
            weight,
            bias: zero_param(&[c]),
            running_mean: ArrayD::zeros(vec![c]),
            running_var: ArrayD::ones(vec![c]),
            num_batches_tracked: 0,
            batch_stats: false,
            mean: vec![0.0; c],
            invstd: vec![0.0; c],
            scale: vec![0.0; c],
            shift: vec![0.0; c],
            partials: vec![0.0; MAX_LANES * 2 * c],
            sums: vec![[0.0; 2]; c],
            mean64: vec![0.0; c],
            coef: vec![0.0; 3 * c],
            relu: false,
            relu_masked: false,
        })
    }

    /// Makes the layer apply the ReLU that follows it in the network (`relu(bn(x))`, as each
    /// value is stored) and take `dy` in `backward` as the gradient with respect to the ReLU's
    /// output, masking it by that output as it reads it. The model then skips the ReLU layer,
    /// which saves a pass over the activations each way and their buffer; values are those of a
    /// separate ReLU, bit for bit.
    pub fn fuse_relu(&mut self) {
        self.relu = true;
    }

    /// Declares that `backward`'s `dy` arrives already masked by the fused ReLU (a max pool
    /// after it masks it, see [`crate::layers::MaxPool2d::mask_relu_grad`]), so the layer does
    /// not mask it again.
    pub fn relu_grad_masked(&mut self) {
        self.relu_masked = true;
    }

    /// [`Layer::infer`], through a ReLU when `relu` says so.
    fn infer_relu(&self, x: &[f32], y: &mut [f32], batch: usize, relu: bool) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        self.check_state()?;
        let c = self.config.num_features;
        let eps = f64::from(self.config.eps);
        let mut affine = scratch::take(2 * c, scratch::ANY, 0.0);
        let (scale, shift) = affine.split_at_mut(c);
        if self.config.track_running_stats {
            self.eval_affine(scale, shift)?;
        } else {
            // The batch's statistics, as `forward` computes them, in the thread's scratch.
            let rows = n / c;
            self.check_rows(rows, batch)?;
            let mut partials = scratch::take(MAX_LANES * c, scratch::ANY, [0.0; 2]);
            let mut sums = scratch::take(c, scratch::ANY, [0.0; 2]);
            let mut mean64 = scratch::take(c.div_ceil(2), scratch::ANY, [0.0; 2]);
            let mean64 = &mut mean64.as_flattened_mut()[..c];
            let partials = &mut partials.as_flattened_mut()[..MAX_LANES * 2 * c];
            batch_moments(&x[..n], rows, partials, &mut sums[..c], mean64);
            for ch in 0..c {
                let var = sums[ch][0] / rows as f64;
                let invstd = (1.0 / (var + eps).sqrt()) as f32;
                scale[ch] = invstd * self.weight.value[ch];
                shift[ch] = self.bias.value[ch] - mean64[ch] as f32 * scale[ch];
            }
        }
        scale_shift(scale, &shift[..c], &x[..n], &mut y[..n], relu);
        Ok(())
    }

    /// The eval-mode per-channel `scale` and `shift` (`num_features` values each; the output
    /// is `x * scale + shift`), from the running statistics as [`Layer::infer`] computes them:
    /// what a convolution applies as it stores its output when the plan folds the batch norm
    /// into it. Errors for a layer without running statistics (it normalises by the batch's in
    /// eval too) or with misshapen parameters or buffers.
    pub fn eval_affine(&self, scale: &mut [f32], shift: &mut [f32]) -> Result<()> {
        self.check_state()?;
        let c = self.config.num_features;
        if !self.config.track_running_stats || scale.len() < c || shift.len() < c {
            return Err(Error::State(format!(
                "layer `{}` has no eval-mode scale and shift for {c} channels (running statistics: {})",
                self.name, self.config.track_running_stats
            )));
        }
        let eps = f64::from(self.config.eps);
        for ch in 0..c {
            let invstd = (1.0 / (f64::from(self.running_var[ch]) + eps).sqrt()) as f32;
            scale[ch] = invstd * self.weight.value[ch];
            shift[ch] = self.bias.value[ch] - self.running_mean[ch] * scale[ch];
        }
        Ok(())
    }

    /// [`Layer::forward`], then the two-input add after it and the ReLU after that, in one
    /// pass: `out = relu(bn(x) + residual)` (without `relu`, the sum), the values the three
    /// layers store, bit for bit (a sum of two is the same in either order). The batch norm's
    /// own output is not stored: for a training step where only the add reads it and no
    /// backward does (its backward reads its input, and its output only to mask the gradient by
    /// a ReLU of its own, which it then does not apply). Errors for a layer that applies a ReLU
    /// itself and for a residual shorter than the output.
    pub fn forward_add(
        &mut self,
        x: &[f32],
        residual: &[f32],
        out: &mut [f32],
        batch: usize,
        mode: Mode,
        relu: bool,
    ) -> Result<()> {
        if self.relu {
            return Err(Error::State(format!(
                "cnnc bug: layer `{}` applies a ReLU and cannot add a residual before it",
                self.name
            )));
        }
        let n = batch * self.dims.numel();
        if residual.len() < n {
            return Err(Error::shape(
                &self.name,
                "forward residual",
                format!("{n} values (batch {batch} x {})", self.dims),
                format!("{} values", residual.len()),
            ));
        }
        self.forward_with(x, Some((residual, relu)), out, batch, mode)
    }

    /// [`Layer::forward`], adding `residual` (and applying the ReLU with its flag) as it
    /// stores, when given ([`BatchNorm2d::forward_add`]).
    fn forward_with(
        &mut self,
        x: &[f32],
        residual: Option<(&[f32], bool)>,
        y: &mut [f32],
        batch: usize,
        mode: Mode,
    ) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        self.check_state()?;

        let c = self.config.num_features;
        let rows = n / c;
        let eps = f64::from(self.config.eps);
        let track = self.config.track_running_stats;
        // PyTorch's `bn_training`: batch statistics in training, and in eval too without
        // running ones.
        self.batch_stats = mode == Mode::Train || !track;
        if self.batch_stats {
            self.check_rows(rows, batch)?;
            let (partials, sums) = (&mut self.partials, &mut self.sums);
            batch_moments(&x[..n], rows, partials, sums, &mut self.mean64);
            let mean = &self.mean64;
            // Running statistics move only in training, and only when tracked.
            let update = mode == Mode::Train && track;
            if update {
                self.num_batches_tracked = self.num_batches_tracked.saturating_add(1);
            }
            // PyTorch's `exponential_average_factor`: the momentum, or the cumulative
            // average's 1 / num_batches_tracked.
            let momentum = match self.config.momentum {
                Some(m) => f64::from(m),
                None => 1.0 / self.num_batches_tracked.max(1) as f64,
            };
            for (ch, &m) in mean.iter().enumerate() {
                let var = self.sums[ch][0] / rows as f64;
                let unbiased = self.sums[ch][0] / (rows - 1) as f64;
                self.mean[ch] = m as f32;
                self.invstd[ch] = (1.0 / (var + eps).sqrt()) as f32;
                if update {
                    let rm = &mut self.running_mean[ch];
                    *rm = ((1.0 - momentum) * f64::from(*rm) + momentum * m) as f32;
                    let rv = &mut self.running_var[ch];
                    *rv = ((1.0 - momentum) * f64::from(*rv) + momentum * unbiased) as f32;
                }
            }
        } else {
            for ch in 0..c {
                self.mean[ch] = self.running_mean[ch];
                self.invstd[ch] = (1.0 / (f64::from(self.running_var[ch]) + eps).sqrt()) as f32;
            }
        }
        for ch in 0..c {
            self.scale[ch] = self.invstd[ch] * self.weight.value[ch];
            self.shift[ch] = self.bias.value[ch] - self.mean[ch] * self.scale[ch];
        }
        match residual {
            None => scale_shift(&self.scale, &self.shift, &x[..n], &mut y[..n], self.relu),
            Some((r, relu)) => {
                let (scale, shift) = (&self.scale[..], &self.shift[..]);
                let tile = STAT_TILE * c;
                par::chunks_mut(&mut y[..n], tile, |i, y| {
                    let at = i * tile..i * tile + y.len();
                    normalize_add(y, &x[at.clone()], &r[at], scale, shift, relu);
                });
            }
        }
        Ok(())
    }

    /// [`Layer::backward`] without writing the input gradient: the parameter gradients (from
    /// the two reductions over `dy`), and the input gradient as a [`NormGrad`] that whoever
    /// reads it computes as it reads (a convolution staging its `dy`,
    /// [`Conv2d::backward_from_norm`](super::Conv2d::backward_from_norm)), bit for bit the
    /// values `backward` writes. Saves writing the gradient and reading it back.
    pub fn backward_deferred<'a>(
        &'a mut self,
        x: &'a [f32],
        y: &'a [f32],
        dy: &'a [f32],
        batch: usize,
    ) -> Result<NormGrad<'a>> {
        let (n, _) = check_backward(self, x, y, dy, None, batch)?;
        self.grad_sums(x, y, dy, n, true)
    }

    /// Backward's reductions over the first `n` values: the parameter gradients and, with
    /// `wants_dx`, the per-channel coefficients of the input gradient it returns.
    fn grad_sums<'a>(
        &'a mut self,
        x: &'a [f32],
        y: &'a [f32],
        dy: &'a [f32],
        n: usize,
        wants_dx: bool,
    ) -> Result<NormGrad<'a>> {
        self.check_state()?;
        let c = self.config.num_features;
        let rows = n / c;
        let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
        let (mean, invstd) = (&self.mean, &self.invstd);
        // The gradient with respect to the normalised value: `dy` itself, or through the fused
        // ReLU as `Relu`'s backward computes it (passed where the output is positive).
        let mask = self.relu && !self.relu_masked;
        // Unmasked, the kernels read no output: hand them `dy` in its place, a stream already
        // read, so that a vectorised select costs no pass over memory.
        let y = if mask { y } else { dy };
        channel_sums(&mut self.partials, &mut self.sums, rows, |px, a, b| {
            let at = px.start * c..px.end * c;
            let pixels = [&x[at.clone()], &y[at.clone()], &dy[at]];
            add_grads(a, b, pixels, mean, invstd, mask);
        });
        let sums = &self.sums;
        // The sums serve the input gradient too; a frozen parameter only keeps its gradient.
        if self.config.affine {
            let (weight, bias) = (self.weight.requires_grad, self.bias.requires_grad);
            for (ch, [dy_sum, dy_xhat_sum]) in sums.iter().enumerate() {
                if bias {
                    self.bias.grad[ch] = *dy_sum as f32;
                }
                if weight {
                    self.weight.grad[ch] = *dy_xhat_sum as f32;
                }
            }
        }
        if wants_dx {
            let weight = &self.weight.value;
            let train = self.batch_stats;
            let count = rows as f32;
            // Per channel: dx = a * dy + b * (x - mean) + d, from PyTorch's batch_norm_backward.
            let (ca, rest) = self.coef.split_at_mut(c);
            let (cb, cd) = rest.split_at_mut(c);
            for ch in 0..c {
                let a = invstd[ch] * weight[ch];
                (ca[ch], cb[ch], cd[ch]) = if train {
                    let mean_dy = sums[ch][0] as f32 / count;
                    let k = sums[ch][1] as f32 * invstd[ch] / count;
                    (a, -a * k, -a * mean_dy)
                } else {
                    (a, 0.0, 0.0)
                };
            }
        }
        Ok(NormGrad {
            x,
            y,
            dy,
            mean: &self.mean,
            coef: &self.coef,
            mask,
        })
    }

    /// Refuses batch statistics over a single value per channel, as PyTorch does.
    fn check_rows(&self, rows: usize, batch: usize) -> Result<()> {
        if rows <= 1 {
            return Err(Error::config(
                &self.name,
                format!(
                    "expected more than 1 value per channel when training, got batch {batch} of {}",
                    self.dims
                ),
            ));
        }
        Ok(())
    }

    /// The layer's arguments.
    pub fn config(&self) -> &BatchNorm2dConfig {
        &self.config
    }

    fn check_state(&self) -> Result<()> {
        let c = [self.config.num_features];
        check_param(&self.name, "weight", &self.weight, &c)?;
        check_param(&self.name, "bias", &self.bias, &c)?;
        for (what, buf) in [
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ] {
            if buf.shape() != c {
                return Err(Error::shape(
                    &self.name,
                    "buffer",
                    format!("{what} of shape {c:?}"),
                    format!("{:?}", buf.shape()),
                ));
            }
        }
        Ok(())
    }
}

/// A batch norm's input gradient, computed where it is read
/// ([`BatchNorm2d::backward_deferred`]): `dx = a * g + b * (x - mean) + d` per channel of each
/// pixel, `g` being `dy` (or `dy` masked by the fused ReLU's output).
#[derive(Clone, Copy, Debug)]
pub struct NormGrad<'a> {
    /// The batch norm's input, `[pixels][channels]`.
    x: &'a [f32],
    /// Its output (read only to mask `dy` by the fused ReLU; `dy` again otherwise).
    y: &'a [f32],
    /// The gradient of its output.
    dy: &'a [f32],
    /// The batch mean of each channel.
    mean: &'a [f32],
    /// Every channel's `a`, then every `b`, then every `d`.
    coef: &'a [f32],
    /// Whether `dy` passes only where `y` is positive.
    mask: bool,
}

impl NormGrad<'_> {
    /// The number of values (the batch's pixels times the channels).
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Channels per pixel.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Writes the gradient of values `at..at + out.len()` into `out`; `at` and `out.len()` are
    /// whole pixels. Each value is computed alone, so any split gives the same values.
    pub fn write(&self, at: usize, out: &mut [f32]) {
        let r = at..at + out.len();
        let (x, y, dy) = (&self.x[r.clone()], &self.y[r.clone()], &self.dy[r]);
        input_grad(out, x, y, dy, self.mean, self.coef, self.mask);
    }
}

/// Per channel, in fixed lanes over the `rows` pixels: `sums[c] = [a, b]`, where `lane(rows,
/// a, b)` adds the terms of pixels `rows` into the lane's f64 sums `a` and `b` (one per channel,
/// each a chain over the pixels in order), and the lanes are added in order. The lanes depend
/// on `rows` alone, so the sums do not depend on the thread count.
fn channel_sums(
    partials: &mut [f64],
    sums: &mut [[f64; 2]],
    rows: usize,
    lane: impl Fn(Range<usize>, &mut [f64], &mut [f64]) + Sync,
) {
    let c = sums.len();
    let tiling = Tiling::new(rows.max(1), STAT_TILE);
    let lanes = if rows == 0 { 0 } else { tiling.lanes(rows) };
    let partials = &mut partials[..lanes * 2 * c];
    par::chunks_mut(partials, 2 * c, |index, part| {
        part.fill(0.0);
        let end = ((index + 1) * tiling.lane_rows).min(rows);
        let (a, b) = part.split_at_mut(c);
        lane(index * tiling.lane_rows..end, a, b);
    });
    for (ch, sum) in sums.iter_mut().enumerate() {
        *sum = partials
            .chunks_exact(2 * c)
            .fold([0.0, 0.0], |[a, b], lane| [a + lane[ch], b + lane[c + ch]]);
    }
}

/// The batch mean of each channel of the `rows` pixels of `x` into `mean` (`sums.len()`
/// channels), and the sum of each channel's squared deviations from it into `sums[c][0]`, in the
/// fixed lanes of [`channel_sums`].
fn batch_moments(
    x: &[f32],
    rows: usize,
    partials: &mut [f64],
    sums: &mut [[f64; 2]],
    mean: &mut [f64],
) {
    let c = sums.len();
    channel_sums(partials, sums, rows, |px, a, _| {
        add_values(a, &x[px.start * c..px.end * c]);
    });
    for (m, s) in mean.iter_mut().zip(sums.iter()) {
        *m = s[0] / rows as f64;
    }
    let mean = &*mean;
    channel_sums(partials, sums, rows, |px, a, _| {
        add_squares(a, &x[px.start * c..px.end * c], mean);
    });
}

/// Splits `c` channels into the blocks the statistics kernels keep in registers: the widest of
/// 32, 16, 8, 4 and 1 channels (at most `widest`) that fits what is left, from channel 0 up;
/// calls `block(first channel, width)` for each. A channel's sum stays one chain over the
/// pixels in order whatever its block, so the blocks change no value: they only keep the
/// running sums out of memory, whose store-to-load latency bounded the chains before.
#[inline(always)]
fn for_blocks(c: usize, widest: usize, mut block: impl FnMut(usize, usize)) {
    let mut at = 0;
    while at < c {
        let left = c - at;
        let width = [32, 16, 8, 4]
            .into_iter()
            .find(|&w| w <= left && w <= widest)
            .unwrap_or(1);
        block(at, width);
        at += width;
    }
}

/// Calls `$kernel::<W>($args)` for the block width `$width` ([`for_blocks`]'s).
macro_rules! by_width {
    ($width:expr, $kernel:ident($($arg:expr),* $(,)?)) => {
        match $width {
            32 => $kernel::<32>($($arg),*),
            16 => $kernel::<16>($($arg),*),
            8 => $kernel::<8>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            _ => $kernel::<1>($($arg),*),
        }
    };
}

/// The `B` values at channel `at` of a pixel (or of a per-channel slice).
#[inline(always)]
fn block<T: Copy, const B: usize>(values: &[T], at: usize) -> [T; B] {
    let mut out = [values[at]; B];
    out.copy_from_slice(&values[at..at + B]);
    out
}

/// [`add_values`] for channels `at..at + B` of every pixel of `x` (`c` channels each).
#[inline(always)]
fn values_block<const B: usize>(sums: &mut [f64], x: &[f32], c: usize, at: usize) {
    let mut acc: [f64; B] = block(sums, at);
    for px in x.chunks_exact(c) {
        let v: [f32; B] = block(px, at);
        for ch in 0..B {
            acc[ch] += f64::from(v[ch]);
        }
    }
    sums[at..at + B].copy_from_slice(&acc);
}

/// [`add_squares`] for channels `at..at + B` of every pixel of `x` (`c` channels each).
#[inline(always)]
fn squares_block<const B: usize>(sums: &mut [f64], x: &[f32], mean: &[f64], c: usize, at: usize) {
    let mut acc: [f64; B] = block(sums, at);
    let m: [f64; B] = block(mean, at);
    for px in x.chunks_exact(c) {
        let v: [f32; B] = block(px, at);
        for ch in 0..B {
            let d = f64::from(v[ch]) - m[ch];
            acc[ch] += d * d;
        }
    }
    sums[at..at + B].copy_from_slice(&acc);
}

multiversion! {
    /// Adds each pixel of `x` (`sums.len()` channels each) into `sums`: the mean's sums.
    fn add_values(sums: &mut [f64], x: &[f32]) {
        let c = sums.len();
        for_blocks(c, 32, |at, width| by_width!(width, values_block(sums, x, c, at)));
    }
}

multiversion! {
    /// Adds each pixel's squared deviation from `mean` into `sums`: the variance's sums.
    fn add_squares(sums: &mut [f64], x: &[f32], mean: &[f64]) {
        let c = sums.len();
        for_blocks(c, 32, |at, width| by_width!(width, squares_block(sums, x, mean, c, at)));
    }
}

/// [`add_grads`] for channels `at..at + B`; `stats` holds the channels' mean and `invstd`.
#[inline(always)]
fn grads_block<const B: usize>(
    sums: [&mut [f64]; 2],
    pixels: [&[f32]; 3],
    stats: [&[f32]; 2],
    mask: bool,
    at: usize,
) {
    let [dy_sums, dy_xhat_sums] = sums;
    let [x, y, dy] = pixels;
    let c = dy_sums.len();
    let mut acc: [f64; B] = block(dy_sums, at);
    let mut acc_xhat: [f64; B] = block(dy_xhat_sums, at);
    // Widened once: `f64::from` is exact, so the products are those of the scalar form.
    let mean: [f64; B] = block::<f32, B>(stats[0], at).map(f64::from);
    let invstd: [f64; B] = block::<f32, B>(stats[1], at).map(f64::from);
    let rows = x
        .chunks_exact(c)
        .zip(y.chunks_exact(c))
        .zip(dy.chunks_exact(c));
    for ((x, y), dy) in rows {
        let (x, y, dy): ([f32; B], [f32; B], [f32; B]) =
            (block(x, at), block(y, at), block(dy, at));
        for ch in 0..B {
            let g = if !mask || y[ch] > 0.0 { dy[ch] } else { 0.0 };
            let d = f64::from(g);
            acc[ch] += d;
            acc_xhat[ch] += d * (f64::from(x[ch]) - mean[ch]) * invstd[ch];
        }
    }
    dy_sums[at..at + B].copy_from_slice(&acc);
    dy_xhat_sums[at..at + B].copy_from_slice(&acc_xhat);
}

multiversion! {
    /// Adds each pixel's gradient `g` into `dy_sums` and `g * (x - mean) * invstd` into
    /// `dy_xhat_sums`, where `[x, y, dy]` are the layer's input, output and output gradient and
    /// `g` is `dy`, or with `mask` `dy` passed through the fused ReLU whose output is `y` (as
    /// `Relu`'s backward computes it).
    fn add_grads(
        dy_sums: &mut [f64],
        dy_xhat_sums: &mut [f64],
        pixels: [&[f32]; 3],
        mean: &[f32],
        invstd: &[f32],
        mask: bool,
    ) {
        let c = dy_sums.len();
        for_blocks(c, 16, |at, width| {
            let sums = [&mut *dy_sums, &mut *dy_xhat_sums];
            by_width!(width, grads_block(sums, pixels, [mean, invstd], mask, at))
        });
    }
}

multiversion! {
    /// `y = x * scale + shift` per channel of each pixel, through the fused ReLU with `relu` (as
    /// `Relu` computes it: NaN stays NaN).
    fn normalize(y: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], relu: bool) {
        let c = scale.len();
        for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for (((y, &x), &scale), &shift) in y.iter_mut().zip(x).zip(scale).zip(shift) {
                let v = x * scale + shift;
                *y = if relu && v < 0.0 { 0.0 } else { v };
            }
        }
    }
}

multiversion! {
    /// `y = x * scale + shift + r` per channel of each pixel, through the ReLU with `relu` (as
    /// an add that applies one computes it: NaN stays NaN).
    fn normalize_add(y: &mut [f32], x: &[f32], r: &[f32], scale: &[f32], shift: &[f32], relu: bool) {
        let c = scale.len();
        let pixels = y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(r.chunks_exact(c));
        for ((y, x), r) in pixels {
            let values = y.iter_mut().zip(x).zip(r).zip(scale).zip(shift);
            for ((((y, &x), &r), &scale), &shift) in values {
                let v = x * scale + shift + r;
                *y = if relu && v < 0.0 { 0.0 } else { v };
            }
        }
    }
}

multiversion! {
    /// `dx = a * g + b * (x - mean) + d` per channel of each pixel, `coef` holding every
    /// channel's `a`, then `b`, then `d`; `g` is `dy`, or with `mask` `dy` passed through the
    /// fused ReLU whose output is `y`.
    fn input_grad(dx: &mut [f32], x: &[f32], y: &[f32], dy: &[f32], mean: &[f32], coef: &[f32], mask: bool) {
        let c = mean.len();
        let (ca, rest) = coef.split_at(c);
        let (cb, cd) = rest.split_at(c);
        // Every slice `c` long, so that the loop below needs no bounds checks.
        let (cb, cd) = (&cb[..c], &cd[..c]);
        let pixels = dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(y.chunks_exact(c)).zip(dy.chunks_exact(c));
        for (((dx, x), y), dy) in pixels {
            let (dx, x, y, dy) = (&mut dx[..c], &x[..c], &y[..c], &dy[..c]);
            for ch in 0..c {
                let g = if !mask || y[ch] > 0.0 { dy[ch] } else { 0.0 };
                dx[ch] = ca[ch] * g + cb[ch] * (x[ch] - mean[ch]) + cd[ch];
            }
        }
    }
}

impl Layer for BatchNorm2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.dims
    }

    fn output_shape(&self) -> Shape {
        self.dims
    }

    /// Per sample with running statistics; without, eval mode normalises by the batch's.
    fn batch_grain(&self) -> Option<usize> {
        self.config.track_running_stats.then_some(1)
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, mode: Mode) -> Result<()> {
        self.forward_with(x, None, y, batch, mode)
    }

    /// With running statistics, their scale and shift computed as [`Layer::forward`] does in
    /// eval mode, into scratch memory. Without (`track_running_stats: false`, where PyTorch
    /// normalises by the batch's statistics in eval mode too), the batch's statistics as
    /// `forward` computes them, also in scratch memory: no call allocates once warm.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        self.infer_relu(x, y, batch, self.relu)
    }

    /// Without the fused ReLU: the batch norm's own output.
    fn infer_unfused(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        self.infer_relu(x, y, batch, false)
    }

    /// The input, and the output only to mask `dy` by the fused ReLU.
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: true,
            output: self.relu && !self.relu_masked,
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
        let wants_dx = dx.is_some();
        let grad = self.grad_sums(x, y, dy, n, wants_dx)?;
        if let Some(dx) = dx {
            let tile = STAT_TILE * grad.mean.len();
            par::chunks_mut(&mut dx[..n], tile, |t, dx| grad.write(t * tile, dx));
        }
        Ok(())
    }

    fn fuse_relu(&mut self) -> bool {
        BatchNorm2d::fuse_relu(self);
        true
    }

    fn relu_grad_masked(&mut self) {
        BatchNorm2d::relu_grad_masked(self);
    }

    fn as_batch_norm(&self) -> Option<&BatchNorm2d> {
        Some(self)
    }

    fn as_batch_norm_mut(&mut self) -> Option<&mut BatchNorm2d> {
        Some(self)
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let [w, b, rm, rv, nbt] = &self.names;
        if self.config.affine {
            f(Entry::Param {
                name: w,
                param: &mut self.weight,
            });
            f(Entry::Param {
                name: b,
                param: &mut self.bias,
            });
        }
        if !self.config.track_running_stats {
            return;
        }
        f(Entry::Buffer {
            name: rm,
            value: &mut self.running_mean,
        });
        f(Entry::Buffer {
            name: rv,
            value: &mut self.running_var,
        });
        f(Entry::Counter {
            name: nbt,
            value: &mut self.num_batches_tracked,
        });
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        let [w, b, rm, rv, nbt] = &self.names;
        if self.config.affine {
            f(EntryRef::Param {
                name: w,
                param: &self.weight,
            });
            f(EntryRef::Param {
                name: b,
                param: &self.bias,
            });
        }
        if !self.config.track_running_stats {
            return;
        }
        f(EntryRef::Buffer {
            name: rm,
            value: &self.running_mean,
        });
        f(EntryRef::Buffer {
            name: rv,
            value: &self.running_var,
        });
        f(EntryRef::Counter {
            name: nbt,
            value: self.num_batches_tracked,
        });
    }
}

/// `y = x * scale + shift` per channel, over whole pixels (`scale.len()` channels each), through
/// the fused ReLU with `relu`.
fn scale_shift(scale: &[f32], shift: &[f32], x: &[f32], y: &mut [f32], relu: bool) {
    let c = scale.len();
    let tile = STAT_TILE * c;
    par::chunks_mut(y, tile, |i, y| {
        normalize(y, &x[i * tile..][..y.len()], scale, shift, relu);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of every magnitude and sign, so that any change in the order of a chain shows.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let unit = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                unit * [1e-3, 1.0, 37.0, 1e4][(state % 4) as usize]
            })
            .collect()
    }

    #[test]
    fn the_blocked_sums_are_the_per_channel_chains_bit_for_bit() {
        // Widths that fill each block size, leave every kind of tail, and the shipped models'.
        for c in [1, 3, 4, 5, 8, 13, 16, 17, 24, 32, 33, 48, 64, 70, 96] {
            let pixels = 37;
            let (x, y, dy) = (
                values(pixels * c, 1),
                values(pixels * c, 2),
                values(pixels * c, 3),
            );
            let mean64: Vec<f64> = values(c, 4).iter().map(|&v| f64::from(v)).collect();
            let (mean, invstd) = (values(c, 5), values(c, 6));
            // Each channel's chain over the pixels in order, as the kernels promise.
            let chain = |term: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
                (0..c)
                    .map(|ch| (0..pixels).fold(0.5, |s, p| s + term(p, ch)))
                    .collect()
            };
            let mut sums = vec![0.5; c];
            add_values(&mut sums, &x);
            let expected = chain(&|p, ch| f64::from(x[p * c + ch]));
            assert_eq!(sums, expected, "values, {c} channels");
            let mut sums = vec![0.5; c];
            add_squares(&mut sums, &x, &mean64);
            let expected = chain(&|p, ch| {
                let d = f64::from(x[p * c + ch]) - mean64[ch];
                d * d
            });
            assert_eq!(sums, expected, "squares, {c} channels");
            for mask in [false, true] {
                let g = |p: usize, ch: usize| {
                    let i = p * c + ch;
                    f64::from(if !mask || y[i] > 0.0 { dy[i] } else { 0.0 })
                };
                let (mut a, mut b) = (vec![0.5; c], vec![0.5; c]);
                add_grads(&mut a, &mut b, [&x, &y, &dy], &mean, &invstd, mask);
                assert_eq!(a, chain(&g), "dy sums, {c} channels, mask {mask}");
                let xhat = chain(&|p, ch| {
                    let centred = f64::from(x[p * c + ch]) - f64::from(mean[ch]);
                    g(p, ch) * centred * f64::from(invstd[ch])
                });
                assert_eq!(b, xhat, "dy * xhat sums, {c} channels, mask {mask}");
            }
        }
    }
}
