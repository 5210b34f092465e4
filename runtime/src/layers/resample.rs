//! Layers that map an image to another size without weights: adaptive pooling
//! (`torch.nn.AdaptiveAvgPool2d`, `torch.nn.AdaptiveMaxPool2d`) and nearest and bilinear
//! upsampling (`torch.nn.Upsample`), on pixel-major activations. Inner loops run along the
//! channels, which are contiguous, through the vectorised window and channel-run kernels of
//! [`crate::kernels::window`] that the pools use too; forward passes are parallel over output
//! rows, backward passes over samples, so every input gradient is summed in one fixed order
//! whatever the thread count.

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_positive, grow, image_input};
use crate::config::{UpsampleConfig, UpsampleMode};
use crate::error::{Error, Result};
use crate::kernels::window::{self, NONE, Wide, Window};
use crate::scratch;
use crate::tensor::Mode;
use cnnc_core::geometry::{adaptive_window, linear_source, nearest_sized_source};

/// The input and output sizes of one layer, resolved.
#[derive(Clone, Copy, Debug)]
struct Resize {
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
}

impl Resize {
    fn new(layer: &str, kind: &str, input: Shape, output: [usize; 2]) -> Result<Self> {
        let (c, ih, iw) = image_input(layer, kind, input)?;
        check_positive(layer, "output size", output)?;
        let [oh, ow] = output;
        if oh.checked_mul(ow).and_then(|p| p.checked_mul(c)).is_none() {
            return Err(Error::config(
                layer,
                format!("{kind} output [{c}, {oh}, {ow}] is too large"),
            ));
        }
        Ok(Resize { c, ih, iw, oh, ow })
    }

    fn input_shape(&self) -> Shape {
        Shape::Chw([self.c, self.ih, self.iw])
    }

    fn output_shape(&self) -> Shape {
        Shape::Chw([self.c, self.oh, self.ow])
    }

    fn in_len(&self) -> usize {
        self.ih * self.iw * self.c
    }

    fn out_len(&self) -> usize {
        self.oh * self.ow * self.c
    }

    /// The input window of adaptive pooling's output pixel `(oy, ox)` in one sample, over
    /// `c` channels from the first.
    fn window(&self, oy: usize, ox: usize, c: usize) -> Window {
        let (h0, h1) = adaptive_window(oy, self.ih, self.oh);
        let (w0, w1) = adaptive_window(ox, self.iw, self.ow);
        Window::strided(h0..h1, w0..w1, self.iw * self.c, self.c, c)
    }

    /// Calls `row(n, oy, out)` for every output row `out` (all its pixels and channels) of the
    /// `y` of a batch, in parallel.
    fn for_each_row(&self, y: &mut [f32], row: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let row_len = self.ow * self.c;
        if row_len == 0 {
            return;
        }
        let oh = self.oh;
        y.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, out)| row(r / oh, r % oh, out));
    }
}

/// `torch.nn.AdaptiveAvgPool2d(output_size)`: the mean of each window PyTorch's adaptive
/// formula spreads over the input ([`adaptive_window`]), so any output size works.
#[derive(Clone, Debug)]
pub struct AdaptiveAvgPool2d {
    name: String,
    r: Resize,
}

impl AdaptiveAvgPool2d {
    /// Builds the layer for per-sample input `input` and output `[height, width]`.
    pub fn new(name: &str, output_size: [usize; 2], input: Shape) -> Result<Self> {
        Ok(AdaptiveAvgPool2d {
            name: name.to_owned(),
            r: Resize::new(name, "adaptive_avg_pool2d", input, output_size)?,
        })
    }
}

impl Layer for AdaptiveAvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_grain(&self) -> Option<usize> {
        Some(1)
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let r = self.r;
        r.for_each_row(&mut y[..ny], |n, oy, out| {
            let sample = &x[n * r.in_len()..(n + 1) * r.in_len()];
            for (ox, out) in out.chunks_exact_mut(r.c).enumerate() {
                let window = r.window(oy, ox, r.c);
                window.mean(sample, out, window.len() as f32);
            }
        });
        Ok(())
    }

    /// Spreads each output's gradient evenly over its window, as PyTorch does.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let r = self.r;
        if r.in_len() == 0 {
            return Ok(());
        }
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * r.out_len()..(n + 1) * r.out_len()];
                for (o, grad) in dy.chunks_exact(r.c).enumerate() {
                    let window = r.window(o / r.ow, o % r.ow, r.c);
                    window.spread(grad, window.len() as f32, dx);
                }
            });
        Ok(())
    }
}

/// `torch.nn.AdaptiveMaxPool2d(output_size)`: the maximum of each adaptive window
/// ([`adaptive_window`]); the gradient goes to the first maximum in scan order (the last NaN if
/// there is one), as PyTorch's saved indices send it.
#[derive(Clone, Debug)]
pub struct AdaptiveMaxPool2d {
    name: String,
    r: Resize,
    /// Per output value of the last forward, the index of its maximum in the sample's plane
    /// (`iy * width + ix`).
    argmax: Vec<u32>,
    /// How many output values `argmax` holds.
    indexed: usize,
    /// Scratch output for recomputing `argmax` in `backward` when no forward left it.
    scratch: Vec<f32>,
}

impl AdaptiveMaxPool2d {
    /// Builds the layer for per-sample input `input` and output `[height, width]`.
    pub fn new(name: &str, output_size: [usize; 2], input: Shape) -> Result<Self> {
        let r = Resize::new(name, "adaptive_max_pool2d", input, output_size)?;
        if u32::try_from(r.ih.saturating_mul(r.iw)).is_err() {
            return Err(Error::config(
                name,
                format!(
                    "adaptive_max_pool2d input plane {}x{} has more than 2^32 positions",
                    r.ih, r.iw
                ),
            ));
        }
        Ok(AdaptiveMaxPool2d {
            name: name.to_owned(),
            r,
            argmax: Vec::new(),
            indexed: 0,
            scratch: Vec::new(),
        })
    }
}

/// Channels [`Window::max`] takes at a time for adaptive max pooling (its positions on the
/// stack).
const MAX_BLOCK: usize = 64;

/// Adaptive max pooling of `x` into `y`, and where each maximum lies into `argmax`.
fn adaptive_max_forward(r: Resize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let row_len = r.ow * r.c;
    if row_len == 0 {
        return;
    }
    let wide = Wide::detect();
    y.par_chunks_mut(row_len)
        .zip(argmax.par_chunks_mut(row_len))
        .enumerate()
        .for_each(|(row, (out, arg))| {
            let (n, oy) = (row / r.oh, row % r.oh);
            let sample = &x[n * r.in_len()..(n + 1) * r.in_len()];
            for (ox, (out, arg)) in out
                .chunks_exact_mut(r.c)
                .zip(arg.chunks_exact_mut(r.c))
                .enumerate()
            {
                let window = r.window(oy, ox, r.c);
                // Windows with fewer positions than a u16 names go through the window kernel
                // (the same first maximum, or last NaN, in scan order), channels in blocks.
                if window.len() < usize::from(NONE) {
                    let mut at = [0u16; MAX_BLOCK];
                    for c0 in (0..r.c).step_by(MAX_BLOCK) {
                        let cb = (r.c - c0).min(MAX_BLOCK);
                        let block = r.window(oy, ox, cb);
                        let (out, arg) = (&mut out[c0..c0 + cb], &mut arg[c0..c0 + cb]);
                        block.max(wide, &sample[c0..], out, &mut at[..cb], false);
                        for (a, &p) in arg.iter_mut().zip(&at[..cb]) {
                            let (iy, ix) = block.position(usize::from(p));
                            // Fits: the plane's size was checked against u32 at construction.
                            *a = (iy * r.iw + ix) as u32;
                        }
                    }
                    continue;
                }
                let (h0, h1) = adaptive_window(oy, r.ih, r.oh);
                let (w0, w1) = adaptive_window(ox, r.iw, r.ow);
                out.fill(f32::NEG_INFINITY);
                // Fits: the plane's size was checked against u32 when the layer was built.
                arg.fill((h0 * r.iw + w0) as u32);
                for iy in h0..h1 {
                    for ix in w0..w1 {
                        let at = iy * r.iw + ix;
                        let px = &sample[at * r.c..(at + 1) * r.c];
                        for ((m, a), &v) in out.iter_mut().zip(arg.iter_mut()).zip(px) {
                            if v > *m || v.is_nan() {
                                *m = v;
                                *a = at as u32;
                            }
                        }
                    }
                }
            }
        });
}

impl Layer for AdaptiveMaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    /// Also records where each maximum lies, for `backward`.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let mut argmax = scratch::take(ny, scratch::ANY, 0);
        adaptive_max_forward(self.r, x, &mut y[..ny], &mut argmax[..ny]);
        Ok(())
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        grow(&mut self.argmax, ny, 0);
        adaptive_max_forward(self.r, x, &mut y[..ny], &mut self.argmax[..ny]);
        self.indexed = ny;
        Ok(())
    }

    /// Routes each output's gradient to its window's maximum; finds the maxima in `x` again
    /// when the last forward had fewer than `batch` samples.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let r = self.r;
        if self.indexed < ny {
            grow(&mut self.argmax, ny, 0);
            grow(&mut self.scratch, ny, 0.0);
            adaptive_max_forward(r, x, &mut self.scratch[..ny], &mut self.argmax[..ny]);
        }
        if r.in_len() == 0 {
            return Ok(());
        }
        let argmax = &self.argmax[..ny];
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let span = n * r.out_len()..(n + 1) * r.out_len();
                for (grad, arg) in dy[span.clone()]
                    .chunks_exact(r.c)
                    .zip(argmax[span].chunks_exact(r.c))
                {
                    for (ch, (&g, &a)) in grad.iter().zip(arg).enumerate() {
                        dx[a as usize * r.c + ch] += g;
                    }
                }
            });
        Ok(())
    }
}

/// One output row's (or column's) sources: the input indices `i0`, `i1` and their weights
/// (nearest: `i0` alone).
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// `torch.nn.Upsample(size, scale_factor, mode, align_corners)` with integer factors. Nearest:
/// output pixel `(oy, ox)` copies the input pixel [`nearest_sized_source`] names (`(oy / sh, ox
/// / sw)` for a factor). Bilinear: it interpolates the four input pixels [`linear_source`]
/// names, with PyTorch's weights for both `align_corners` settings.
#[derive(Clone, Debug)]
pub struct Upsample {
    name: String,
    config: UpsampleConfig,
    r: Resize,
    /// The sources of each output row and each output column, computed once.
    rows: Vec<Tap>,
    cols: Vec<Tap>,
}

impl Upsample {
    /// Builds `torch.nn.Upsample(scale_factor=...)` (nearest) for per-sample input `input`,
    /// growing it by `scale_factor` `[sh, sw]`.
    pub fn new(name: &str, scale_factor: [usize; 2], input: Shape) -> Result<Self> {
        Upsample::with_config(name, &UpsampleConfig::nearest(scale_factor), input)
    }

    /// Builds the layer `config` describes for per-sample input `input`.
    pub fn with_config(name: &str, config: &UpsampleConfig, input: Shape) -> Result<Self> {
        let (_, ih, iw) = image_input(name, "upsample", input)?;
        if let Some(factor) = config.scale_factor {
            check_positive(name, "scale_factor", factor)?;
        }
        if config.mode == UpsampleMode::Nearest && config.align_corners.is_some() {
            return Err(Error::config(
                name,
                "align_corners can only be set with mode bilinear",
            ));
        }
        let [oh, ow] = config.output([ih, iw]).ok_or_else(|| {
            Error::config(
                name,
                "upsample needs exactly one of size and scale_factor, and an output that fits",
            )
        })?;
        let r = Resize::new(name, "upsample", input, [oh, ow])?;
        let align = config.align_corners.unwrap_or(false);
        let taps = |axis: usize, input: usize, output: usize| -> Vec<Tap> {
            let factor = config.factor(axis);
            (0..output)
                .map(|dst| match config.mode {
                    UpsampleMode::Nearest => {
                        let i0 = nearest_sized_source(dst, input, output, factor);
                        Tap {
                            i0,
                            i1: i0,
                            w0: 1.0,
                            w1: 0.0,
                        }
                    }
                    UpsampleMode::Bilinear => {
                        let (i0, i1, w0, w1) = linear_source(dst, input, output, factor, align);
                        Tap { i0, i1, w0, w1 }
                    }
                })
                .collect()
        };
        Ok(Upsample {
            name: name.to_owned(),
            config: config.clone(),
            rows: taps(0, ih, oh),
            cols: taps(1, iw, ow),
            r,
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &UpsampleConfig {
        &self.config
    }
}

impl Layer for Upsample {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let (r, rows, cols) = (self.r, &self.rows, &self.cols);
        let row_of = |n: usize, iy: usize| {
            let at = (n * r.ih + iy) * r.iw * r.c;
            &x[at..at + r.iw * r.c]
        };
        match self.config.mode {
            UpsampleMode::Nearest => r.for_each_row(&mut y[..ny], |n, oy, out| {
                let row = row_of(n, rows[oy].i0);
                for (out, tap) in out.chunks_exact_mut(r.c).zip(cols) {
                    out.copy_from_slice(&row[tap.i0 * r.c..(tap.i0 + 1) * r.c]);
                }
            }),
            UpsampleMode::Bilinear => r.for_each_row(&mut y[..ny], |n, oy, out| {
                let ty = rows[oy];
                let (top, bottom) = (row_of(n, ty.i0), row_of(n, ty.i1));
                for (out, tx) in out.chunks_exact_mut(r.c).zip(cols) {
                    let (a, b) = (tx.i0 * r.c, tx.i1 * r.c);
                    window::lerp2(
                        out,
                        (&top[a..a + r.c], &top[b..b + r.c]),
                        (&bottom[a..a + r.c], &bottom[b..b + r.c]),
                        (ty.w0, ty.w1),
                        (tx.w0, tx.w1),
                    );
                }
            }),
        }
        Ok(())
    }

    /// Adds each output gradient into the input pixels it came from (by their weights), in
    /// output scan order, one sample per task.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let (r, rows, cols) = (self.r, &self.rows, &self.cols);
        if r.in_len() == 0 || r.out_len() == 0 {
            return Ok(());
        }
        let bilinear = self.config.mode == UpsampleMode::Bilinear;
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * r.out_len()..(n + 1) * r.out_len()];
                let row_len = r.iw * r.c;
                for (ty, grads) in rows.iter().zip(dy.chunks_exact(r.ow * r.c)) {
                    for (tx, grad) in cols.iter().zip(grads.chunks_exact(r.c)) {
                        if !bilinear {
                            let at = ty.i0 * row_len + tx.i0 * r.c;
                            window::add(&mut dx[at..at + r.c], grad);
                            continue;
                        }
                        let corners = [
                            (ty.i0, tx.i0, ty.w0 * tx.w0),
                            (ty.i0, tx.i1, ty.w0 * tx.w1),
                            (ty.i1, tx.i0, ty.w1 * tx.w0),
                            (ty.i1, tx.i1, ty.w1 * tx.w1),
                        ];
                        for (iy, ix, weight) in corners {
                            let at = iy * row_len + ix * r.c;
                            window::add_scaled(&mut dx[at..at + r.c], grad, weight);
                        }
                    }
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(c: usize, h: usize, w: usize) -> Shape {
        Shape::Chw([c, h, w])
    }

    #[test]
    fn adaptive_avg_pool_of_one_pixel_is_the_mean() {
        // One channel, 2x3 input (pixel-major), pooled to 1x1.
        let mut pool = AdaptiveAvgPool2d::new("p", [1, 1], image(1, 2, 3)).unwrap();
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0];
        pool.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(y, [3.5]);
        let mut dx = [0.0; 6];
        pool.backward(&x, &y, &[6.0], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [1.0; 6]);
    }

    #[test]
    fn adaptive_max_pool_routes_to_the_first_maximum() {
        // Two channels, 1x3 input pooled to 1x2: windows [0, 2) and [1, 3).
        let mut pool = AdaptiveMaxPool2d::new("p", [1, 2], image(2, 1, 3)).unwrap();
        let x = [5.0, 1.0, 5.0, 2.0, 0.0, 3.0];
        let mut y = [0.0; 4];
        pool.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(y, [5.0, 2.0, 5.0, 3.0]);
        let mut dx = [0.0; 6];
        pool.backward(&x, &y, &[1.0, 10.0, 100.0, 1000.0], Some(&mut dx), 1)
            .unwrap();
        assert_eq!(dx, [1.0, 0.0, 100.0, 10.0, 0.0, 1000.0]);
    }

    /// The window kernels (blocks of 64 channels, AVX-512 where the CPU has it) against the
    /// definition per channel: overlapping non-divisible windows, ragged channel counts, NaN,
    /// infinities, ties and `-0.0`; outputs, positions and gradients bit for bit.
    #[test]
    fn adaptive_pools_match_their_definition_bit_for_bit() {
        let special = [
            f32::NAN,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            2.0,
            2.0,
            -3.5,
            0.1,
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for c in [1, 17, 64, 70, 130] {
            let (ih, iw, oh, ow, batch) = (5, 7, 3, 4, 2);
            let x: Vec<f32> = (0..batch * ih * iw * c)
                .map(|i| special[(i * 7919 + c) % 31 % special.len()])
                .collect();
            let dy: Vec<f32> = (0..batch * oh * ow * c)
                .map(|i| (i % 13) as f32 * 0.3 - 1.7)
                .collect();
            let (mut want_y, mut want_dx) = (vec![0.0; dy.len()], vec![0.0f32; x.len()]);
            let (mut avg_y, mut avg_dx) = (vec![0.0; dy.len()], vec![0.0f32; x.len()]);
            for n in 0..batch {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (h0, h1) = adaptive_window(oy, ih, oh);
                        let (w0, w1) = adaptive_window(ox, iw, ow);
                        let count = ((h1 - h0) * (w1 - w0)) as f32;
                        for ch in 0..c {
                            let (mut m, mut at, mut sum) = (f32::NEG_INFINITY, h0 * iw + w0, 0.0);
                            for iy in h0..h1 {
                                for ix in w0..w1 {
                                    let v = x[((n * ih + iy) * iw + ix) * c + ch];
                                    sum += v;
                                    if v > m || v.is_nan() {
                                        (m, at) = (v, iy * iw + ix);
                                    }
                                }
                            }
                            let o = ((n * oh + oy) * ow + ox) * c + ch;
                            (want_y[o], avg_y[o]) = (m, sum / count);
                            want_dx[(n * ih * iw + at) * c + ch] += dy[o];
                            for iy in h0..h1 {
                                for ix in w0..w1 {
                                    avg_dx[((n * ih + iy) * iw + ix) * c + ch] += dy[o] / count;
                                }
                            }
                        }
                    }
                }
            }
            let mut pool = AdaptiveMaxPool2d::new("p", [oh, ow], image(c, ih, iw)).unwrap();
            let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
            pool.forward(&x, &mut y, batch, Mode::Train).unwrap();
            pool.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
            assert_eq!(bits(&y), bits(&want_y), "max, {c} channels");
            assert_eq!(bits(&dx), bits(&want_dx), "max gradient, {c} channels");
            let mut pool = AdaptiveAvgPool2d::new("p", [oh, ow], image(c, ih, iw)).unwrap();
            pool.forward(&x, &mut y, batch, Mode::Train).unwrap();
            pool.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
            assert_eq!(bits(&y), bits(&avg_y), "avg, {c} channels");
            assert_eq!(bits(&dx), bits(&avg_dx), "avg gradient, {c} channels");
        }
    }

    #[test]
    fn upsample_repeats_pixels_and_sums_their_gradients() {
        let mut up = Upsample::new("u", [2, 3], image(1, 1, 2)).unwrap();
        assert_eq!(up.output_shape(), image(1, 2, 6));
        let x = [1.0, 2.0];
        let mut y = [0.0; 12];
        up.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(
            y,
            [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        let mut dx = [0.0; 2];
        up.backward(&x, &y, &[1.0; 12], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [6.0, 6.0]);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert!(Upsample::new("u", [usize::MAX, 1], image(1, 2, 2)).is_err());
        assert!(Upsample::new("u", [0, 1], image(1, 2, 2)).is_err());
        assert!(AdaptiveAvgPool2d::new("p", [0, 1], image(1, 2, 2)).is_err());
    }
}
