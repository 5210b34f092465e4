//! 2-D convolution (`torch.nn.Conv2d`) as a direct convolution on pixel-major activations: the
//! input is copied once into a zero-padded buffer, and the micro-kernels read each output pixel's
//! receptive field from it in place (one contiguous run per kernel row), so no im2col matrix is
//! built. The input gradient is the same kind of convolution of the padded `dy` with the flipped
//! kernel (stride 1), or a gather of `dy` rows otherwise; the weight gradient sums outer products
//! over the pixels of each image.

use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{
    Layer, Stale, assign, check_backward, check_forward, check_param, check_positive, grow,
    visit_weight_bias, zero_param,
};
use crate::config::{Conv2dConfig, Pool2dConfig};
use crate::error::{Error, Result};
use crate::init::{fan_in_bound, fill_uniform};
use crate::kernels::gemm::{
    Grid, MR, NR, RunTable, Runs, Seg, Start, Tile, panels, rows_panel, sum_outer,
};
use crate::kernels::window::{NONE, Wide, Window};
use crate::param::{Entry, Param};
use crate::simd::multiversion;
use crate::tensor::{Dims, MAX_LANES, Mode, Tiling};

/// Most output pixels per parallel task in the forward and input-gradient passes (in whole tiles;
/// the results do not depend on it).
const PIXELS_PER_TASK: usize = 8 * MR;

/// Pixels per parallel task for `pixels` output pixels: [`PIXELS_PER_TASK`], or fewer (whole
/// tiles) when that would leave fewer than eight tasks per thread, so that small batches (batch 1
/// has 64 pixels in the seed model's last convolution) still spread evenly over the threads.
fn pixels_per_task(pixels: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads();
    pixels
        .div_ceil(MR)
        .div_ceil(tasks)
        .clamp(1, PIXELS_PER_TASK / MR)
        * MR
}

/// Bytes of padded input and `dy` the weight gradient streams per group of images: half of a
/// Zen L2, so they stay there while every gradient tile passes over them.
const WGRAD_GROUP_BYTES: usize = 512 * 1024;

/// Every size of one convolution, resolved.
#[derive(Clone, Copy, Debug)]
struct Geom {
    cin: usize,
    ih: usize,
    iw: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

impl Geom {
    /// The outputs along `axis` (0: rows, 1: columns) that read a real input pixel, not padding,
    /// through kernel tap `tap`: `0 <= o * stride - pad + tap * dilation < input`.
    fn real_outputs(&self, tap: usize, axis: usize) -> Range<usize> {
        let [out, input, stride, pad, dilation] = if axis == 0 {
            [self.oh, self.ih, self.sh, self.ph, self.dh]
        } else {
            [self.ow, self.iw, self.sw, self.pw, self.dw]
        };
        let at = tap * dilation;
        let lo = pad.saturating_sub(at).div_ceil(stride);
        let hi = (input + pad).saturating_sub(at).div_ceil(stride).min(out);
        lo.min(hi)..hi
    }

    /// Reduction length of the forward pass: one `(ky, kx, ci)` tap each.
    fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// `dy`'s channel stride inside the layer: `cout` rounded up to whole panels, so the weight
    /// gradient kernel can read full panel rows of it.
    fn cs(&self) -> usize {
        panels(self.cout) * NR
    }

    /// Reduction length of the input-gradient pass: one `(ky, kx, co)` tap each, `co < cs`.
    fn k_back(&self) -> usize {
        self.kh * self.kw * self.cs()
    }

    /// Padded input size `[height, width]`.
    fn padded_in(&self) -> (usize, usize) {
        (self.ih + 2 * self.ph, self.iw + 2 * self.pw)
    }

    /// The border `[top, left]` of the padded `dy` that turns the input gradient into a stride-1
    /// convolution with the flipped kernel, when the layer allows it.
    fn direct_back(&self) -> Option<(usize, usize)> {
        let top = ((self.kh - 1) * self.dh).checked_sub(self.ph)?;
        let left = ((self.kw - 1) * self.dw).checked_sub(self.pw)?;
        (self.sh == 1 && self.sw == 1).then_some((top, left))
    }

    /// Padded `dy` size `[height, width]` and border `[top, left]`.
    fn padded_dy(&self) -> (usize, usize, usize, usize) {
        let (top, left) = self.direct_back().unwrap_or((0, 0));
        (self.oh + 2 * top, self.ow + 2 * left, top, left)
    }

    /// Runs over a pixel's window in a buffer of `channels`-wide pixels, `width` pixels a row: one
    /// per kernel row when the kernel's columns are adjacent pixels, else one per tap.
    fn runs(&self, channels: usize, width: usize) -> Vec<Seg> {
        let mut runs = Vec::new();
        for ky in 0..self.kh {
            let row = ky * self.dh * width * channels;
            if self.dw == 1 {
                runs.push(Seg {
                    offset: row,
                    len: self.kw * channels,
                });
            } else {
                runs.extend((0..self.kw).map(|kx| Seg {
                    offset: row + kx * self.dw * channels,
                    len: channels,
                }));
            }
        }
        runs
    }

    /// Copies `batch` images of `x` into `xp`, surrounded by `ph`/`pw` zeros.
    fn pad_input(&self, x: &[f32], xp: &mut [f32], batch: usize) {
        let g = *self;
        let (hp, wp) = g.padded_in();
        let (image, padded) = (g.ih * g.iw * g.cin, hp * wp * g.cin);
        xp[..batch * padded]
            .par_chunks_mut(padded)
            .zip(x.par_chunks(image))
            .for_each(|(dst, src)| {
                let line = g.iw * g.cin;
                let rows = inner_rows(dst, wp * g.cin, (g.ph, g.ih), (g.pw * g.cin, line));
                for (middle, line) in rows.zip(src.chunks_exact(line)) {
                    middle.copy_from_slice(line);
                }
            });
    }

    /// The layout of a staged `dy` ([`Geom::stage_dy`]): `[height, width, top, left]`, with the
    /// border of [`Geom::padded_dy`] or without one.
    fn staged_dy(&self, border: bool) -> (usize, usize, usize, usize) {
        if border {
            self.padded_dy()
        } else {
            (self.oh, self.ow, 0, 0)
        }
    }

    /// Copies `batch` images of `dy` into `dyp`: channels widened to `cs`, inside the layout of
    /// [`Geom::staged_dy`]`(border)` whose other values are zeros. With `relu_out` (the output of
    /// a fused ReLU), only where that output is positive: the gradient before the ReLU.
    fn stage_dy(
        &self,
        dy: &[f32],
        relu_out: Option<&[f32]>,
        dyp: &mut [f32],
        batch: usize,
        border: bool,
    ) {
        let g = *self;
        let (hd, wd, top, left) = g.staged_dy(border);
        let (cs, image, staged) = (g.cs(), g.oh * g.ow * g.cout, hd * wd * g.cs());
        dyp[..batch * staged]
            .par_chunks_mut(staged)
            .enumerate()
            .for_each(|(n, dst)| {
                // A copy of a whole row where the channels fill the panels and no mask applies.
                let line = g.ow * g.cout;
                let rows = inner_rows(dst, wd * cs, (top, g.oh), (left * cs, g.ow * cs));
                for (y, middle) in rows.enumerate() {
                    let at = n * image + y * line;
                    let src = &dy[at..at + line];
                    match relu_out.map(|out| &out[at..at + line]) {
                        None if cs == g.cout => middle.copy_from_slice(src),
                        mask => {
                            for (p, px) in middle.chunks_exact_mut(cs).enumerate() {
                                let (px, widened) = px.split_at_mut(g.cout);
                                let src = &src[p * g.cout..(p + 1) * g.cout];
                                match mask {
                                    Some(mask) => {
                                        let mask = &mask[p * g.cout..(p + 1) * g.cout];
                                        for ((o, &d), &y) in px.iter_mut().zip(src).zip(mask) {
                                            *o = if y > 0.0 { d } else { 0.0 };
                                        }
                                    }
                                    None => px.copy_from_slice(src),
                                }
                                widened.fill(0.0);
                            }
                        }
                    }
                }
            });
    }

    /// [`Geom::stage_dy`] for a layer with a fused max pool: `dy` (pooled, `batch` images) goes
    /// to the positions `pool.argmax` names, into the layout of [`Geom::staged_dy`]`(border)`
    /// whose other values are zeros. The windows tile the output and each is written whole (the
    /// pooled value or zero), as the pool's own backward writes them, so only the border, and
    /// widened channels, need zeros first.
    fn unpool_dy(&self, pool: &FusedPool, dy: &[f32], dyp: &mut [f32], batch: usize, border: bool) {
        let g = *self;
        let (hd, wd, top, left) = g.staged_dy(border);
        let (cs, pooled, staged) = (g.cs(), pool.oh * pool.ow * g.cout, hd * wd * g.cs());
        let wide = Wide::detect();
        dyp[..batch * staged]
            .par_chunks_mut(staged)
            .enumerate()
            .for_each(|(n, dst)| {
                for middle in inner_rows(dst, wd * cs, (top, g.oh), (left * cs, g.ow * cs)) {
                    if cs != g.cout {
                        middle.fill(0.0);
                    }
                }
                let at = n * pooled;
                let (argmax, dy) = (&pool.argmax[at..at + pooled], &dy[at..at + pooled]);
                let pixels = argmax.chunks_exact(g.cout).zip(dy.chunks_exact(g.cout));
                for (p, (argmax, dy)) in pixels.enumerate() {
                    let (py, px) = (p / pool.ow, p % pool.ow);
                    let rows = top + py * pool.kh..top + (py + 1) * pool.kh;
                    let cols = left + px * pool.kw..left + (px + 1) * pool.kw;
                    let window = Window::strided(rows, cols, wd * cs, cs, g.cout);
                    window.store(wide, argmax, dy, dst);
                }
            });
    }

    /// Writes the input-gradient gather rows `start..start + rows` (input pixels) into `out`: for
    /// each flipped tap `(kh - 1 - ky, kw - 1 - kx)`, the padded `dy` row of the output pixel
    /// that read this input pixel through tap `(ky, kx)`, or zeros when none did. For strided
    /// layers, where the input gradient is no plain convolution.
    fn gather_dy(&self, dyp: &[f32], start: usize, rows: usize, out: &mut [f32]) {
        let g = *self;
        let cs = g.cs();
        for (r, dst) in out[..rows * g.k_back()]
            .chunks_exact_mut(g.k_back())
            .enumerate()
        {
            let row = start + r;
            let (n, pix) = (row / (g.ih * g.iw), row % (g.ih * g.iw));
            let (iy, ix) = (pix / g.iw, pix % g.iw);
            for (fy, dst) in dst.chunks_exact_mut(g.kw * cs).enumerate() {
                let oy = source(iy, g.kh - 1 - fy, g.ph, g.dh, g.sh, g.oh);
                for (fx, tap) in dst.chunks_exact_mut(cs).enumerate() {
                    match (oy, source(ix, g.kw - 1 - fx, g.pw, g.dw, g.sw, g.ow)) {
                        (Some(oy), Some(ox)) => {
                            let at = ((n * g.oh + oy) * g.ow + ox) * cs;
                            tap.copy_from_slice(&dyp[at..at + cs]);
                        }
                        _ => tap.fill(0.0),
                    }
                }
            }
        }
    }
}

/// The output coordinate whose tap `k` reads input coordinate `i`, if any:
/// `o * stride - pad + k * dilation == i`.
fn source(
    i: usize,
    k: usize,
    pad: usize,
    dilation: usize,
    stride: usize,
    out: usize,
) -> Option<usize> {
    let t = (i + pad).checked_sub(k * dilation)?;
    (t % stride == 0 && t / stride < out).then_some(t / stride)
}

/// The inner rows of an image buffer whose border is zeros: rows of `row` values, the inner ones
/// `top..top + rows`, each inner part `left..left + width`. Zeros everything else (each value
/// written once) and yields the inner parts, for the caller to fill.
fn inner_rows(
    dst: &mut [f32],
    row: usize,
    (top, rows): (usize, usize),
    (left, width): (usize, usize),
) -> impl Iterator<Item = &mut [f32]> {
    let (first, end) = (top * row, (top + rows) * row);
    let (head, rest) = dst.split_at_mut(first);
    let (inner, tail) = rest.split_at_mut(end - first);
    head.fill(0.0);
    tail.fill(0.0);
    inner.chunks_exact_mut(row).map(move |line| {
        let (before, rest) = line.split_at_mut(left);
        let (middle, after) = rest.split_at_mut(width);
        before.fill(0.0);
        after.fill(0.0);
        middle
    })
}

/// Output length of a convolution along one axis, as PyTorch computes it.
pub(crate) fn conv_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (input + 2 * pad).checked_sub(span).map(|d| d / stride + 1)
}

/// Where the pixels of a batch of `h x w` images start in a buffer: pixel `x` of row `y` of image
/// `n` at `n * image + y * row + x * col`.
#[derive(Clone, Copy, Debug)]
struct PixelGrid {
    h: usize,
    w: usize,
    image: usize,
    row: usize,
    col: usize,
}

impl PixelGrid {
    /// Offsets of the `MR` pixels `first..first + MR` (in batch order; the last one repeated
    /// past `end`), with two divisions per tile rather than two per pixel, and the lowest and
    /// highest image row among them.
    fn tile_rows(&self, first: usize, end: usize) -> ([usize; MR], (usize, usize)) {
        let (mut n, pix) = (first / (self.h * self.w), first % (self.h * self.w));
        let (mut y, mut x) = (pix / self.w, pix % self.w);
        let mut rows = [0; MR];
        let mut span = (y, y);
        for (i, at) in rows.iter_mut().enumerate() {
            *at = n * self.image + y * self.row + x * self.col;
            span = (span.0.min(y), span.1.max(y));
            if first + i + 1 < end {
                x += 1;
                if x == self.w {
                    x = 0;
                    y += 1;
                    if y == self.h {
                        y = 0;
                        n += 1;
                    }
                }
            }
        }
        (rows, span)
    }
}

/// Which kernel rows of a tile read anything but padding: output row `r` reads buffer row
/// `r * stride + ky * dilation`, whose real rows are `lo..hi` (the others are the zero border).
#[derive(Clone, Copy, Debug)]
struct KernelRows {
    lo: usize,
    hi: usize,
    stride: usize,
    dilation: usize,
    kh: usize,
}

impl KernelRows {
    /// The kernel rows that read a real row for some output row in `rows` (lowest, highest),
    /// and those between. The rows outside multiply zeros only: a tile skips them, and the top
    /// and bottom tiles of a 5 x 5 kernel with padding 2 do 20-40 % less work.
    fn hull(&self, (low, high): (usize, usize)) -> Range<usize> {
        let (mut first, mut end) = (self.kh, 0);
        for r in low..=high {
            let start = self
                .lo
                .saturating_sub(r * self.stride)
                .div_ceil(self.dilation);
            let stop = (self.hi.saturating_sub(r * self.stride))
                .div_ceil(self.dilation)
                .min(self.kh);
            if start < stop {
                (first, end) = (first.min(start), end.max(stop));
            }
        }
        first.min(end)..end
    }

    /// The runs and the panel of the kernel rows `taps` (`runs` holds the same number of runs
    /// for every kernel row, and the panel one row per step of the runs).
    fn select<'a>(
        &self,
        taps: Range<usize>,
        runs: &'a RunTable,
        panel: &'a [f32],
    ) -> (Runs<'a>, &'a [f32]) {
        let per_row = runs.len() / self.kh;
        let (runs, before) = runs.view(taps.start * per_row..taps.end * per_row);
        (runs, &panel[before * NR..])
    }
}

/// Stores the first `rows` rows and `cols` columns of `tile` at `out[r * stride + c]`.
fn store(tile: &Tile, out: &mut [f32], rows: usize, cols: usize, stride: usize) {
    for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
        dst[..cols].copy_from_slice(&row[..cols]);
    }
}

multiversion! {
    /// Adds every pixel of `pixels` (`stride` values apart, channels first) into `sums`, one
    /// chain per channel in pixel order: the bias gradient.
    fn add_pixels(sums: &mut [f32], pixels: &[f32], stride: usize) {
        for px in pixels.chunks_exact(stride) {
            for (s, &d) in sums.iter_mut().zip(px) {
                *s += d;
            }
        }
    }
}

multiversion! {
    /// [`store`] through a ReLU: `max(v, 0)` as [`crate::layers::Relu`] computes it (NaN stays
    /// NaN).
    fn store_relu(tile: &Tile, out: &mut [f32], rows: usize, cols: usize, stride: usize) {
        for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
            for (d, &v) in dst[..cols].iter_mut().zip(&row[..cols]) {
                *d = if v < 0.0 { 0.0 } else { v };
            }
        }
    }
}

/// At most `MR` consecutive rows of the weight gradient (reduction steps, `(ky, kx, ci)`), what
/// one gradient tile covers. A block may span runs: each row has its own offset.
#[derive(Clone, Debug)]
struct WgradBlock {
    /// Offset of each row's step in a padded input image (its run's offset plus the steps before
    /// it in the run); rows past `rows` repeat the last.
    offsets: [usize; MR],
    /// Rows in the block, `1..=MR`.
    rows: usize,
    /// The output rows and columns whose input pixel, for at least one of the block's taps, is
    /// not padding. The others multiply only padding's zeros, so the weight gradient skips them:
    /// 28% of the positions for an 8 x 8 image, 5 x 5 kernel and padding 2.
    out_rows: Range<usize>,
    out_cols: Range<usize>,
}

impl WgradBlock {
    /// The blocks covering the reduction steps of `g` in order, `MR` at a time (fewer in the
    /// last): conv1's 75 steps (5 runs of 15) fill 13 tiles instead of 15.
    fn cover(g: &Geom) -> Vec<Self> {
        let (_, wp) = g.padded_in();
        let steps: Vec<usize> = g
            .runs(g.cin, wp)
            .iter()
            .flat_map(|run| (0..run.len).map(move |p| run.offset + p))
            .collect();
        steps
            .chunks(MR)
            .enumerate()
            .map(|(b, rows)| {
                // Steps are `(ky, kx, ci)` in order, whatever the runs.
                let tap = |s: usize| (s / (g.kw * g.cin), s / g.cin % g.kw);
                let ((ky0, kx0), (ky1, kx1)) = (tap(b * MR), tap(b * MR + rows.len() - 1));
                let (kx_lo, kx_hi) = if ky0 == ky1 {
                    (kx0, kx1)
                } else {
                    (0, g.kw - 1)
                };
                // The hull of the taps' ranges: a larger tap starts and ends earlier.
                let hull = |hi_tap: Range<usize>, lo_tap: Range<usize>| {
                    hi_tap.start..lo_tap.end.max(hi_tap.start)
                };
                WgradBlock {
                    offsets: std::array::from_fn(|i| rows[i.min(rows.len() - 1)]),
                    rows: rows.len(),
                    out_rows: hull(g.real_outputs(ky1, 0), g.real_outputs(ky0, 0)),
                    out_cols: hull(g.real_outputs(kx_hi, 1), g.real_outputs(kx_lo, 1)),
                }
            })
            .collect()
    }
}

/// The greatest common divisor of `a` and `b`.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A max pool fused into the convolution after its fused ReLU ([`Conv2d::fuse_max_pool`]):
/// windows of `kh x kw` that tile the output exactly.
#[derive(Clone, Debug)]
struct FusedPool {
    kh: usize,
    kw: usize,
    /// The pooled output's rows and columns.
    oh: usize,
    ow: usize,
    /// Per pooled value of the last forward, its window's position of the maximum ([`NONE`]:
    /// not positive, so the ReLU passes no gradient).
    argmax: Vec<u16>,
    /// How many pooled values `argmax` holds.
    indexed: usize,
    /// One band of convolution output rows per parallel lane of the forward pass.
    bands: Vec<f32>,
}

/// `torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=...)`
/// on input `[N, in_channels, H, W]` giving `[N, out_channels, H_out, W_out]` (pixel-major inside).
#[derive(Debug)]
pub struct Conv2d {
    name: String,
    weight_name: String,
    bias_name: String,
    config: Conv2dConfig,
    g: Geom,
    /// `[out_channels, in_channels, kh, kw]` (PyTorch's OIHW).
    weight: Param,
    /// `[out_channels]`, when the layer has a bias.
    bias: Option<Param>,
    /// Runs of a forward receptive field in the padded input.
    runs: RunTable,
    /// Runs of an input-gradient receptive field in the padded `dy` (direct path).
    back_runs: RunTable,
    /// One run over a whole gathered row (the strided input gradient).
    gather_run: RunTable,
    /// The weight as forward panels: `[cout / NR][(ky, kx, ci)][NR]`, zero-padded.
    packed: Vec<f32>,
    /// The flipped weight as input-gradient panels: `[cin / NR][(ky, kx, co < cs)][NR]`.
    packed_back: Vec<f32>,
    /// The bias, zero-padded to whole panels (zeros without one).
    bias_row: Vec<f32>,
    /// Whether the layer applies the ReLU that follows it ([`Conv2d::fuse_relu`]).
    relu: bool,
    /// Whether `backward`'s `dy` arrives masked by that ReLU ([`Conv2d::relu_grad_masked`]).
    relu_masked: bool,
    /// The max pool after the ReLU, when the layer applies it too.
    pool: Option<FusedPool>,
    /// Whether `packed` and `packed_back` may be out of date.
    stale: Stale,
    /// The zero-padded input, `[N][H + 2 ph][W + 2 pw][cin]` plus `MR` floats the weight-gradient
    /// kernel may read past the last pixel.
    xp: Vec<f32>,
    /// Images of the last forward's input that `xp` holds, for `backward`.
    padded: usize,
    /// The padded `dy` (see [`Geom::padded_dy`]).
    dyp: Vec<f32>,
    /// Per-lane gather rows for the strided input gradient.
    gathered: Vec<f32>,
    /// Row blocks of the weight gradient, in row order (see [`WgradBlock`]).
    wgrad_blocks: Vec<WgradBlock>,
    /// The weight gradient, `[(ky, kx, ci)][co < cs]`.
    wgrad: Vec<f32>,
    /// The bias gradient.
    bgrad: Vec<f32>,
}

impl Conv2d {
    /// Builds the layer for inputs of spatial size `input_hw`, initialised as PyTorch does:
    /// weight and bias from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, fan_in = in_channels * kh * kw,
    /// drawn from `rng` (weight first).
    pub fn new(
        name: &str,
        config: &Conv2dConfig,
        input_hw: [usize; 2],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let c = config;
        check_positive(name, "kernel_size", c.kernel_size)?;
        check_positive(name, "stride", c.stride)?;
        check_positive(name, "dilation", c.dilation)?;
        if c.in_channels == 0 || c.out_channels == 0 {
            return Err(Error::config(
                name,
                "in_channels and out_channels must be positive",
            ));
        }
        let out = |axis: usize| {
            conv_out(
                input_hw[axis],
                c.kernel_size[axis],
                c.stride[axis],
                c.padding[axis],
                c.dilation[axis],
            )
        };
        let (Some(oh), Some(ow)) = (out(0), out(1)) else {
            return Err(Error::config(
                name,
                format!(
                    "kernel {:?} with dilation {:?} is larger than the padded input {:?} + 2 * {:?}",
                    c.kernel_size, c.dilation, input_hw, c.padding
                ),
            ));
        };
        let g = Geom {
            cin: c.in_channels,
            ih: input_hw[0],
            iw: input_hw[1],
            cout: c.out_channels,
            oh,
            ow,
            kh: c.kernel_size[0],
            kw: c.kernel_size[1],
            sh: c.stride[0],
            sw: c.stride[1],
            ph: c.padding[0],
            pw: c.padding[1],
            dh: c.dilation[0],
            dw: c.dilation[1],
        };
        let mut weight = zero_param(&[g.cout, g.cin, g.kh, g.kw]);
        let bound = fan_in_bound(g.k());
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = c.bias.then(|| {
            let mut b = zero_param(&[g.cout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        let (_, wp) = g.padded_in();
        let (_, wd, _, _) = g.padded_dy();
        let gathered = if g.direct_back().is_some() {
            0
        } else {
            MAX_LANES * PIXELS_PER_TASK * g.k_back()
        };
        Ok(Conv2d {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: c.clone(),
            g,
            weight,
            bias,
            runs: RunTable::new(g.runs(g.cin, wp)),
            back_runs: RunTable::new(g.runs(g.cs(), wd)),
            gather_run: RunTable::new(vec![Seg {
                offset: 0,
                len: g.k_back(),
            }]),
            packed: vec![0.0; panels(g.cout) * g.k() * NR],
            packed_back: vec![0.0; panels(g.cin) * g.k_back() * NR],
            bias_row: vec![0.0; g.cs()],
            relu: false,
            relu_masked: false,
            pool: None,
            stale: Stale::default(),
            xp: Vec::new(),
            padded: 0,
            dyp: Vec::new(),
            gathered: vec![0.0; gathered],
            wgrad_blocks: WgradBlock::cover(&g),
            wgrad: vec![0.0; g.k() * g.cs()],
            bgrad: vec![0.0; g.cout],
        })
    }

    weight_bias_accessors!();

    /// The layer's arguments.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// Makes the layer apply the ReLU that follows it in the network: its output becomes
    /// `relu(conv(x))`, computed as each output tile is stored, and `backward` takes `dy` as the
    /// gradient with respect to that output. The model then skips the ReLU layer (it still
    /// exists, for names), which saves a pass over the activations each way and their buffer.
    /// Values are the same as with a separate ReLU, bit for bit.
    pub fn fuse_relu(&mut self) {
        self.relu = true;
    }

    /// Makes the layer also apply the max pool that follows its fused ReLU ([`Conv2d::fuse_relu`]
    /// first), when the pool's windows tile the output exactly (`stride == kernel_size`, no
    /// padding, the output's height and width multiples of the kernel's): forward convolves a
    /// band of output rows at a time into a buffer that stays in cache and pools it, so the
    /// convolution's full output never reaches memory, and backward routes the pooled `dy`
    /// straight into the layout its gradients read. The output becomes the pool's. Returns
    /// whether it did; values are the same as the three layers' apart, bit for bit.
    pub fn fuse_max_pool(&mut self, config: &Pool2dConfig) -> bool {
        let [kh, kw] = config.kernel_size;
        let g = self.g;
        let fits = self.relu
            && kh > 0
            && kw > 0
            && config.stride == config.kernel_size
            && config.padding == [0, 0]
            && g.oh.is_multiple_of(kh)
            && g.ow.is_multiple_of(kw)
            && kh * kw < usize::from(NONE);
        if fits {
            self.pool = Some(FusedPool {
                kh,
                kw,
                oh: g.oh / kh,
                ow: g.ow / kw,
                argmax: Vec::new(),
                indexed: 0,
                bands: Vec::new(),
            });
        }
        fits
    }

    /// Declares that `backward`'s `dy` arrives already masked by the fused ReLU (the next layer
    /// masks it, see [`crate::layers::MaxPool2d::mask_relu_grad`]), so the layer does not mask it
    /// again: when it needs no input gradient and its channels fill whole panels, the weight
    /// gradient then reads `dy` where it lies, without staging it.
    pub fn relu_grad_masked(&mut self) {
        self.relu_masked = true;
    }

    /// Checks the parameters' shapes and copies them into the forward panels (`back`: the
    /// input-gradient panels instead).
    fn pack(&mut self, back: bool) -> Result<()> {
        let g = self.g;
        check_param(
            &self.name,
            "weight",
            &self.weight,
            &[g.cout, g.cin, g.kh, g.kw],
        )?;
        let (k, kb, cs) = (g.k(), g.k_back(), g.cs());
        if self.stale.take(back) {
            // The logical OIHW order as one slice (borrowed unless the layout differs).
            let weight = self.weight.value.as_standard_layout();
            let w = weight
                .as_slice()
                .expect("a standard-layout array is contiguous");
            let at = |co: usize, ci: usize, ky: usize, kx: usize| {
                w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx]
            };
            // Written in the panels' order, reading the weights (in cache) out of order:
            // scattered writes to the panels cost ~0.3 ms a step for the seed model.
            if back {
                // Panel `j` of input channels; row `tap * cs + co`, `tap` over the flipped kernel.
                for (j, panel) in self.packed_back.chunks_exact_mut(kb * NR).enumerate() {
                    for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                        let (tap, co) = (r / cs, r % cs);
                        let (ky, kx) = (g.kh - 1 - tap / g.kw, g.kw - 1 - tap % g.kw);
                        for (l, dst) in row.iter_mut().enumerate() {
                            let ci = j * NR + l;
                            *dst = if ci < g.cin && co < g.cout {
                                at(co, ci, ky, kx)
                            } else {
                                0.0
                            };
                        }
                    }
                }
            } else {
                // Panel `j` of output channels; row `(ky * kw + kx) * cin + ci`.
                for (j, panel) in self.packed.chunks_exact_mut(k * NR).enumerate() {
                    for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                        let (tap, ci) = (r / g.cin, r % g.cin);
                        let (ky, kx) = (tap / g.kw, tap % g.kw);
                        for (l, dst) in row.iter_mut().enumerate() {
                            let co = j * NR + l;
                            *dst = if co < g.cout { at(co, ci, ky, kx) } else { 0.0 };
                        }
                    }
                }
            }
        }
        match &self.bias {
            Some(b) => {
                check_param(&self.name, "bias", b, &[g.cout])?;
                for (dst, &v) in self.bias_row.iter_mut().zip(b.value.iter()) {
                    *dst = v;
                }
            }
            None => self.bias_row.fill(0.0),
        }
        Ok(())
    }

    /// Weight and bias gradients of `batch` images from the padded input and `dy`: read in place
    /// (`staged` is `None`), or from its copy staged in the layout [`Geom::staged_dy`]`(border)`
    /// (`staged` is `Some(border)`).
    ///
    /// Every gradient element is one chain of multiply-adds over the images in order and, within
    /// an image, over the output pixels in row-major order. The threads split the gradient's
    /// tiles between them, never the images, so no partial sums are added up afterwards and the
    /// values do not depend on the number of threads. The images go in groups that stay in L2
    /// while each tile of a thread passes over them.
    fn param_grads(&mut self, dy: &[f32], staged: Option<bool>, batch: usize) {
        let g = self.g;
        let (k, cs) = (g.k(), g.cs());
        let (hp, wp) = g.padded_in();
        // Where `dy`'s pixels are read from: the buffer, the length of an image in it, the
        // distance between rows and between pixels, and the offset of an image's first pixel.
        let (src, image, b_row, b_col, first) = match staged {
            None => (dy, g.oh * g.ow * cs, g.ow * cs, cs, 0),
            Some(border) => {
                let (hd, wd, top, left) = g.staged_dy(border);
                let first = (top * wd + left) * cs;
                (&self.dyp[..], hd * wd * cs, wd * cs, cs, first)
            }
        };
        let a_image = hp * wp * g.cin;
        let grid = Grid {
            images: 0,
            rows: g.oh,
            cols: g.ow,
            a_image,
            a_row: g.sh * wp * g.cin,
            a_col: g.sw * g.cin,
            b_image: image,
            b_row,
            b_col,
        };
        let per_image = (hp * wp * g.cin + image) * size_of::<f32>();
        let group = (WGRAD_GROUP_BYTES / per_image).clamp(1, batch.max(1));
        let (xp, blocks) = (&self.xp[..], &self.wgrad_blocks[..]);
        let bias = self.bias.is_some().then_some(&mut self.bgrad[..]);
        // Each thread owns a contiguous range of row blocks (and the rows they cover).
        let threads = rayon::current_num_threads().clamp(1, blocks.len().max(1));
        let mut shares = Vec::with_capacity(threads);
        let mut rest = &mut self.wgrad[..k * cs];
        let mut bias = bias;
        for t in 0..threads {
            let range = blocks.len() * t / threads..blocks.len() * (t + 1) / threads;
            let rows: usize = blocks[range.clone()].iter().map(|b| b.rows).sum();
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(rows * cs);
            rest = tail;
            shares.push((&blocks[range], head, bias.take()));
        }
        shares
            .into_par_iter()
            .for_each(|(blocks, wgrad, mut bias)| {
                if batch == 0 {
                    wgrad.fill(0.0);
                }
                if let Some(b) = bias.as_deref_mut() {
                    b.fill(0.0);
                }
                for n0 in (0..batch).step_by(group) {
                    let images = n0..(n0 + group).min(batch);
                    let grid = Grid {
                        images: images.len(),
                        ..grid
                    };
                    let mut row = 0;
                    for block in blocks {
                        let (rows, cols) = (block.out_rows.clone(), block.out_cols.clone());
                        let skip = rows.start * grid.a_row + cols.start * grid.a_col;
                        let a_rows = block.offsets.map(|o| o + n0 * a_image + skip);
                        let grid = Grid {
                            rows: rows.len(),
                            cols: cols.len(),
                            ..grid
                        };
                        for j in 0..cs / NR {
                            let out = &mut wgrad[row * cs + j * NR..];
                            let mut tile = [[0.0; NR]; MR];
                            let start = if n0 == 0 {
                                Start::Zero
                            } else {
                                for (t, src) in tile.iter_mut().zip(out.chunks(cs)).take(block.rows)
                                {
                                    t.copy_from_slice(&src[..NR]);
                                }
                                Start::Tile
                            };
                            let b0 = n0 * image
                                + first
                                + j * NR
                                + rows.start * b_row
                                + cols.start * b_col;
                            sum_outer(&mut tile, start, xp, &a_rows, src, b0, grid);
                            store(&tile, out, block.rows, NR, cs);
                        }
                        row += block.rows;
                    }
                    if let Some(b) = bias.as_deref_mut() {
                        for n in images {
                            for y in 0..g.oh {
                                let line = n * image + first + y * b_row;
                                add_pixels(
                                    &mut b[..g.cout],
                                    &src[line..line + g.ow * b_col],
                                    b_col,
                                );
                            }
                        }
                    }
                }
            });
        let wgrad = &self.wgrad[..k * cs];
        let taps = g.kh * g.kw;
        let oihw = (0..g.cout).flat_map(|co| {
            (0..g.cin)
                .flat_map(move |ci| (0..taps).map(move |tap| wgrad[(tap * g.cin + ci) * cs + co]))
        });
        assign(&mut self.weight.grad, oihw);
        if let Some(bias) = &mut self.bias {
            assign(&mut bias.grad, self.bgrad.iter().copied());
        }
    }

    /// Input gradient of `batch` images from the padded `dy`.
    fn input_grad(&mut self, dx: &mut [f32], batch: usize) {
        let g = self.g;
        let (kb, rows) = (g.k_back(), batch * g.ih * g.iw);
        let (packed_back, dyp) = (&self.packed_back[..], &self.dyp[..]);
        match g.direct_back() {
            Some(_) => {
                let (hd, wd, top, _) = g.padded_dy();
                let runs = &self.back_runs;
                let cs = g.cs();
                let pixels = PixelGrid {
                    h: g.ih,
                    w: g.iw,
                    image: hd * wd * cs,
                    row: wd * cs,
                    col: cs,
                };
                // The flipped kernel's row `fy` at input row `iy` reads padded `dy` row
                // `iy + fy * dh`; the real ones start after the border.
                let kernel_rows = KernelRows {
                    lo: top,
                    hi: top + g.oh,
                    stride: 1,
                    dilation: g.dh,
                    kh: g.kh,
                };
                let per_task = pixels_per_task(rows);
                dx[..rows * g.cin]
                    .par_chunks_mut(per_task * g.cin)
                    .enumerate()
                    .for_each(|(task, dx_task)| {
                        let first = task * per_task;
                        let end = first + dx_task.len() / g.cin;
                        for t in (first..end).step_by(MR) {
                            let (rows_at, span) = pixels.tile_rows(t, end);
                            let taps = kernel_rows.hull(span);
                            for j in 0..panels(g.cin) {
                                let mut tile = [[0.0; NR]; MR];
                                let panel = &packed_back[j * kb * NR..];
                                let (runs, panel) = kernel_rows.select(taps.clone(), runs, panel);
                                rows_panel(&mut tile, Start::Zero, dyp, &rows_at, runs, panel);
                                let cols = NR.min(g.cin - j * NR);
                                let out = &mut dx_task[(t - first) * g.cin + j * NR..];
                                store(&tile, out, MR.min(end - t), cols, g.cin);
                            }
                        }
                    });
            }
            None => {
                // Each lane gathers into its own scratch, one task of pixels at a time.
                let whole = self.gather_run.all();
                let tiling = Tiling::new(rows, PIXELS_PER_TASK);
                dx[..rows * g.cin]
                    .par_chunks_mut(tiling.lane_rows * g.cin)
                    .zip(self.gathered.par_chunks_mut(PIXELS_PER_TASK * kb))
                    .enumerate()
                    .for_each(|(lane, (dx_lane, gathered))| {
                        for (task, dx_task) in
                            dx_lane.chunks_mut(PIXELS_PER_TASK * g.cin).enumerate()
                        {
                            let first = lane * tiling.lane_rows + task * PIXELS_PER_TASK;
                            let pixels = dx_task.len() / g.cin;
                            g.gather_dy(dyp, first, pixels, gathered);
                            for t in (0..pixels).step_by(MR) {
                                let rows_at = std::array::from_fn(|i| (t + i).min(pixels - 1) * kb);
                                for j in 0..panels(g.cin) {
                                    let mut tile = [[0.0; NR]; MR];
                                    let panel = &packed_back[j * kb * NR..];
                                    rows_panel(
                                        &mut tile,
                                        Start::Zero,
                                        gathered,
                                        &rows_at,
                                        whole,
                                        panel,
                                    );
                                    let cols = NR.min(g.cin - j * NR);
                                    let out = &mut dx_task[t * g.cin + j * NR..];
                                    store(&tile, out, MR.min(pixels - t), cols, g.cin);
                                }
                            }
                        }
                    });
            }
        }
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_dims(&self) -> Dims {
        Dims::Image {
            channels: self.g.cin,
            height: self.g.ih,
            width: self.g.iw,
        }
    }

    fn output_dims(&self) -> Dims {
        let (height, width) = match &self.pool {
            Some(pool) => (pool.oh, pool.ow),
            None => (self.g.oh, self.g.ow),
        };
        Dims::Image {
            channels: self.g.cout,
            height,
            width,
        }
    }

    /// Leaves its padded input for `backward`.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        self.padded = 0;
        if batch == 0 {
            return Ok(());
        }
        self.pack(false)?;
        let g = self.g;
        let (hp, wp) = g.padded_in();
        grow(&mut self.xp, batch * hp * wp * g.cin + MR, 0.0);
        g.pad_input(x, &mut self.xp, batch);
        self.padded = batch;
        let (k, n) = (g.k(), g.cout);
        let (xp, packed, bias_row, runs, relu) = (
            &self.xp[..],
            &self.packed[..],
            &self.bias_row[..],
            &self.runs,
            self.relu,
        );
        let pixels = PixelGrid {
            h: g.oh,
            w: g.ow,
            image: hp * wp * g.cin,
            row: g.sh * wp * g.cin,
            col: g.sw * g.cin,
        };
        // Output row `oy` reads padded input row `oy * sh + ky * dh`; the real ones are
        // `ph..ph + ih`.
        let kernel_rows = KernelRows {
            lo: g.ph,
            hi: g.ph + g.ih,
            stride: g.sh,
            dilation: g.dh,
            kh: g.kh,
        };
        // Output pixels `first..end` (in batch order) into `out`, `n` values a pixel.
        let convolve = |first: usize, end: usize, out: &mut [f32]| {
            for t in (first..end).step_by(MR) {
                let (rows_at, span) = pixels.tile_rows(t, end);
                let taps = kernel_rows.hull(span);
                for j in 0..panels(n) {
                    let bias = bias_row[j * NR..(j + 1) * NR]
                        .try_into()
                        .expect("NR values");
                    let mut tile = [[0.0; NR]; MR];
                    let panel = &packed[j * k * NR..];
                    let (runs, panel) = kernel_rows.select(taps.clone(), runs, panel);
                    rows_panel(&mut tile, Start::Row(bias), xp, &rows_at, runs, panel);
                    let out = &mut out[(t - first) * n + j * NR..];
                    let (rows, cols) = (MR.min(end - t), NR.min(n - j * NR));
                    if relu {
                        store_relu(&tile, out, rows, cols, n);
                    } else {
                        store(&tile, out, rows, cols, n);
                    }
                }
            }
        };
        let Some(pool) = &mut self.pool else {
            let per_task = pixels_per_task(batch * g.oh * g.ow);
            y[..ny]
                .par_chunks_mut(per_task * n)
                .enumerate()
                .for_each(|(task, y_task)| {
                    let first = task * per_task;
                    convolve(first, first + y_task.len() / n, y_task);
                });
            return Ok(());
        };
        // With a fused max pool: each task convolves bands of output rows (those of `m` pooled
        // rows, `m` making the band whole tiles) into a buffer of its own that stays in cache,
        // then pools it.
        let (pooled_rows, out_row) = (batch * pool.oh, pool.ow * n);
        let row_pixels = pool.kh * g.ow;
        // Whole tiles per band, unless that leaves fewer than four bands a thread (batch 1):
        // then a band per pooled row, so every thread has work.
        let threads = rayon::current_num_threads();
        let whole = MR / gcd(row_pixels, MR);
        let m = if pooled_rows >= 4 * threads * whole {
            whole
        } else {
            1
        };
        let bands = pooled_rows.div_ceil(m);
        let lanes = (8 * threads).clamp(1, bands);
        let per_lane = bands.div_ceil(lanes) * m;
        grow(&mut pool.bands, lanes * m * row_pixels * n, 0.0);
        grow(&mut pool.argmax, ny, NONE);
        let wide = Wide::detect();
        let (kh, kw) = (pool.kh, pool.kw);
        y[..ny]
            .par_chunks_mut(per_lane * out_row)
            .zip(pool.argmax[..ny].par_chunks_mut(per_lane * out_row))
            .zip(pool.bands.par_chunks_mut(m * row_pixels * n))
            .enumerate()
            .for_each(|(lane, ((y_lane, argmax), band))| {
                let chunks = y_lane
                    .chunks_mut(m * out_row)
                    .zip(argmax.chunks_mut(m * out_row));
                for (b, (out, argmax)) in chunks.enumerate() {
                    // Pooled rows `first_row..` are output rows `first_row * kh..` in batch order.
                    let first_row = lane * per_lane + b * m;
                    let rows = out.len() / out_row;
                    let first = first_row * row_pixels;
                    convolve(first, first + rows * row_pixels, band);
                    for (p, (out, argmax)) in out
                        .chunks_exact_mut(n)
                        .zip(argmax.chunks_exact_mut(n))
                        .enumerate()
                    {
                        let (r, px) = (p / pool.ow, p % pool.ow);
                        let window = Window::strided(
                            r * kh..(r + 1) * kh,
                            px * kw..(px + 1) * kw,
                            g.ow * n,
                            n,
                            n,
                        );
                        window.max(wide, band, out, argmax, true);
                    }
                }
            });
        pool.indexed = ny;
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
        let (_, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        if let Some(pool) = &self.pool
            && pool.indexed < ny
        {
            return Err(Error::State(format!(
                "layer `{}`: backward for a batch of {batch} needs a forward of at least as many samples first (its fused max pool's positions)",
                self.name
            )));
        }
        self.pack(true)?;
        let g = self.g;
        // The last forward's padded input, unless it had fewer images.
        if self.padded < batch {
            let (hp, wp) = g.padded_in();
            grow(&mut self.xp, batch * hp * wp * g.cin + MR, 0.0);
            g.pad_input(x, &mut self.xp, batch);
        }
        // `dy` is staged (widened to whole panels, masked by a fused ReLU, bordered for the
        // input gradient; with a fused pool, routed to the positions its forward picked) unless
        // the weight gradient can read it as it is.
        let mask = self.relu && !self.relu_masked;
        let staged = (self.pool.is_some() || dx.is_some() || mask || g.cout != g.cs())
            .then_some(dx.is_some());
        if let Some(border) = staged {
            let (hd, wd, _, _) = g.staged_dy(border);
            grow(&mut self.dyp, batch * hd * wd * g.cs(), 0.0);
            match &self.pool {
                Some(pool) => g.unpool_dy(pool, &dy[..ny], &mut self.dyp, batch, border),
                None => g.stage_dy(dy, mask.then_some(y), &mut self.dyp, batch, border),
            }
        }
        self.param_grads(dy, staged, batch);
        if let Some(dx) = dx {
            self.input_grad(dx, batch);
        }
        Ok(())
    }

    fn fuse_relu(&mut self) -> bool {
        Conv2d::fuse_relu(self);
        true
    }

    fn fuse_max_pool(&mut self, config: &Pool2dConfig) -> bool {
        Conv2d::fuse_max_pool(self, config)
    }

    fn relu_grad_masked(&mut self) {
        Conv2d::relu_grad_masked(self);
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        self.stale.mark();
        visit_weight_bias(f, names, &mut self.weight, self.bias.as_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel rows a tile keeps are exactly those that read a real row for one of its output
    /// rows, over strides, dilations, borders and every span of rows.
    #[test]
    fn kernel_rows_keep_exactly_the_rows_that_read_real_values() {
        for kh in 1..6 {
            for stride in 1..4 {
                for dilation in 1..4 {
                    for lo in 0..5 {
                        for real in 1..7 {
                            let rows = KernelRows {
                                lo,
                                hi: lo + real,
                                stride,
                                dilation,
                                kh,
                            };
                            let reads_real = |r: usize, ky: usize| {
                                (lo..lo + real).contains(&(r * stride + ky * dilation))
                            };
                            for low in 0..8 {
                                for high in low..8 {
                                    let hull = rows.hull((low, high));
                                    let needed: Vec<usize> = (0..kh)
                                        .filter(|&ky| (low..=high).any(|r| reads_real(r, ky)))
                                        .collect();
                                    match (needed.first(), needed.last()) {
                                        (Some(&a), Some(&b)) => assert_eq!(
                                            hull,
                                            a..b + 1,
                                            "{rows:?}, output rows {low}..={high}"
                                        ),
                                        _ => assert!(hull.is_empty(), "{rows:?}, {low}..={high}"),
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
