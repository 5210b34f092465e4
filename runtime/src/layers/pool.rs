//! Max and average pooling (`torch.nn.MaxPool2d`, `torch.nn.AvgPool2d`) on pixel-major
//! activations, vectorised along channels. Backward runs one sample per task so overlapping
//! windows add into `dx` in a fixed order.

use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_positive, image_input};
use crate::config::Pool2dConfig;
use crate::error::{Error, Result};
use crate::tensor::{Dims, Mode};

/// Output pixels per parallel task in forward passes (results do not depend on it).
const PIXELS_PER_TASK: usize = 256;

/// Every size of one pooling layer, resolved.
#[derive(Clone, Copy, Debug)]
struct Geom {
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
}

/// Output length of a pooling window along one axis: PyTorch's `pooling_output_shape`, including
/// its rule that with `ceil_mode` the last window must start inside the input or left padding.
fn pool_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let extra = if ceil_mode { stride - 1 } else { 0 };
    let span = (input + 2 * pad + extra).checked_sub(kernel)?;
    let mut out = span / stride + 1;
    if ceil_mode && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    Some(out)
}

impl Geom {
    fn new(layer: &str, kind: &str, config: &Pool2dConfig, input: Dims) -> Result<Self> {
        let (c, ih, iw) = image_input(layer, kind, input)?;
        check_positive(layer, "kernel_size", config.kernel_size)?;
        check_positive(layer, "stride", config.stride)?;
        for axis in 0..2 {
            if config.padding[axis] > config.kernel_size[axis] / 2 {
                return Err(Error::config(
                    layer,
                    format!(
                        "padding {:?} must be at most half of kernel_size {:?}",
                        config.padding, config.kernel_size
                    ),
                ));
            }
        }
        let out = |axis: usize| {
            pool_out(
                [ih, iw][axis],
                config.kernel_size[axis],
                config.stride[axis],
                config.padding[axis],
                config.ceil_mode,
            )
        };
        let (Some(oh), Some(ow)) = (out(0), out(1)) else {
            return Err(Error::config(
                layer,
                format!(
                    "kernel_size {:?} is larger than the padded input [{ih}, {iw}] + 2 * {:?}",
                    config.kernel_size, config.padding
                ),
            ));
        };
        Ok(Geom {
            c,
            ih,
            iw,
            oh,
            ow,
            kh: config.kernel_size[0],
            kw: config.kernel_size[1],
            sh: config.stride[0],
            sw: config.stride[1],
            ph: config.padding[0],
            pw: config.padding[1],
        })
    }

    fn input_dims(&self) -> Dims {
        Dims::Image {
            channels: self.c,
            height: self.ih,
            width: self.iw,
        }
    }

    fn output_dims(&self) -> Dims {
        Dims::Image {
            channels: self.c,
            height: self.oh,
            width: self.ow,
        }
    }

    /// The window of output pixel `(oy, ox)`: input rows and columns clipped to the image, and
    /// the size PyTorch's average pooling divides by (the window clipped to the padded input).
    fn window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let y0 = (oy * self.sh) as isize - self.ph as isize;
        let x0 = (ox * self.sw) as isize - self.pw as isize;
        let y1 = (y0 + self.kh as isize).min((self.ih + self.ph) as isize);
        let x1 = (x0 + self.kw as isize).min((self.iw + self.pw) as isize);
        let pool_size = ((y1 - y0) * (x1 - x0)) as usize;
        let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
        (
            clip(y0, self.ih)..clip(y1, self.ih),
            clip(x0, self.iw)..clip(x1, self.iw),
            pool_size,
        )
    }

    /// Whether no input pixel lies in two windows (kernel at most the stride on both axes).
    fn windows_disjoint(&self) -> bool {
        self.kh <= self.sh && self.kw <= self.sw
    }

    /// Whether every input pixel lies in some window: windows tile the input exactly from its
    /// corner, with no padding, no gap between windows and no input left past the last one.
    fn windows_cover_input(&self) -> bool {
        self.ph == 0
            && self.pw == 0
            && self.kh == self.sh
            && self.kw == self.sw
            && self.oh * self.sh >= self.ih
            && self.ow * self.sw >= self.iw
    }

    /// Runs `pixel(sample, oy, ox, out)` for every output pixel, in parallel chunks.
    fn for_each_output(
        &self,
        y: &mut [f32],
        pixel: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
    ) {
        let g = *self;
        y.par_chunks_mut(PIXELS_PER_TASK * g.c)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, out) in chunk.chunks_exact_mut(g.c).enumerate() {
                    let p = task * PIXELS_PER_TASK + i;
                    let (n, pix) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
                    pixel(n, pix / g.ow, pix % g.ow, out);
                }
            });
    }
}

/// `torch.nn.MaxPool2d(kernel_size, stride, padding, ceil_mode=...)`: `[N, C, H, W]` to
/// `[N, C, H_out, W_out]`; padding acts as -inf. Backward routes each output gradient to the first
/// maximum of its window in scan order (rows, then columns), as PyTorch does; NaN counts as a
/// maximum, so it propagates.
#[derive(Debug)]
pub struct MaxPool2d {
    name: String,
    config: Pool2dConfig,
    g: Geom,
    /// `backward` masks `dx` by the ReLU whose output the input is ([`MaxPool2d::mask_relu_grad`]).
    relu_grad: bool,
}

impl MaxPool2d {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, config: &Pool2dConfig, input: Dims) -> Result<Self> {
        let g = Geom::new(name, "max_pool2d", config, input)?;
        Ok(MaxPool2d {
            name: name.to_owned(),
            config: config.clone(),
            g,
            relu_grad: false,
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &Pool2dConfig {
        &self.config
    }

    /// Declares the input to be the output of a ReLU (a fused one: the layer before computes
    /// it), so `backward` gives `dx` as the gradient with respect to the ReLU's input: zero where
    /// the input is not positive. The layer before can then take its `dy` as it is instead of
    /// masking it in another pass over the activations. A position's gradient comes from the
    /// windows whose maximum it is, so the mask is one compare of each window's maximum; the
    /// values are those of the separate ReLU's backward, bit for bit.
    pub fn mask_relu_grad(&mut self) {
        self.relu_grad = true;
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_dims(&self) -> Dims {
        self.g.input_dims()
    }

    fn output_dims(&self) -> Dims {
        self.g.output_dims()
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        max_forward(self.g, x, &mut y[..ny]);
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
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        max_backward(self.g, x, y, dy, &mut dx[..nx], self.relu_grad);
        Ok(())
    }

    fn mask_relu_grad(&mut self) -> bool {
        MaxPool2d::mask_relu_grad(self);
        true
    }
}

/// Max pooling of `x` into every output pixel of `y`, in parallel chunks.
fn max_forward(g: Geom, x: &[f32], y: &mut [f32]) {
    let wide = Wide::detect();
    y.par_chunks_mut(PIXELS_PER_TASK * g.c)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, out) in chunk.chunks_exact_mut(g.c).enumerate() {
                let p = task * PIXELS_PER_TASK + i;
                let (n, pix) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
                let (rows, cols, _) = g.window(pix / g.ow, pix % g.ow);
                let image = &x[n * g.ih * g.iw * g.c..(n + 1) * g.ih * g.iw * g.c];
                Window::new(&g, rows, cols).max(wide, image, out);
            }
        });
}

/// Max pooling's backward: routes `dy` into `dx`, one sample per task (`relu`: masked by the ReLU
/// the input is the output of, see [`MaxPool2d::mask_relu_grad`]).
fn max_backward(g: Geom, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32], relu: bool) {
    let wide = Wide::detect();
    let (in_len, out_len) = (g.ih * g.iw * g.c, g.oh * g.ow * g.c);
    dx.par_chunks_mut(in_len).enumerate().for_each(|(n, dx)| {
        let x = &x[n * in_len..(n + 1) * in_len];
        let y = &y[n * out_len..(n + 1) * out_len];
        let dy = &dy[n * out_len..(n + 1) * out_len];
        let disjoint = g.windows_disjoint();
        // Disjoint windows write each `dx` element once, so only pixels no window covers need
        // the zero fill.
        if !(disjoint && g.windows_cover_input()) {
            dx.fill(0.0);
        }
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (rows, cols, _) = g.window(oy, ox);
                let at = (oy * g.ow + ox) * g.c;
                let (y, dy) = (&y[at..at + g.c], &dy[at..at + g.c]);
                // Not `any`: a fold without an early exit vectorises.
                if disjoint && !y.iter().fold(false, |nan, m| nan | m.is_nan()) {
                    Window::new(&g, rows, cols).store(wide, x, y, dy, dx, relu);
                } else {
                    if disjoint {
                        // The rare NaN maximum: the general path adds into zeros.
                        for iy in rows.clone() {
                            let at = (iy * g.iw + cols.start) * g.c;
                            dx[at..at + cols.len() * g.c].fill(0.0);
                        }
                    }
                    route_max(&g, x, y, dy, rows, cols, dx, relu);
                }
            }
        }
    });
}

/// Whether the CPU runs the AVX-512 window kernels (detected once per pass).
#[derive(Clone, Copy)]
struct Wide(bool);

impl Wide {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        return Wide(crate::simd::simd() == crate::simd::Simd::Avx512);
        #[cfg(not(target_arch = "x86_64"))]
        Wide(false)
    }
}

/// One pooling window in an image, all channels: position `(iy, ix)` of `rows x cols` holds its
/// `c` channels at `iy * row + ix * c` in the image's values.
#[derive(Clone, Copy)]
struct Window {
    rows: (usize, usize),
    cols: (usize, usize),
    row: usize,
    c: usize,
}

impl Window {
    fn new(g: &Geom, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Self {
        Window {
            rows: (rows.start, rows.end),
            cols: (cols.start, cols.end),
            row: g.iw * g.c,
            c: g.c,
        }
    }

    /// Offsets of the window's positions in scan order (rows, then columns).
    fn offsets(self) -> impl Iterator<Item = usize> {
        (self.rows.0..self.rows.1).flat_map(move |iy| {
            (self.cols.0..self.cols.1).map(move |ix| iy * self.row + ix * self.c)
        })
    }

    /// Panics unless every position's channels lie in `len` values.
    fn check(self, len: usize) {
        let end = (self.rows.1 > self.rows.0 && self.cols.1 > self.cols.0)
            .then(|| (self.rows.1 - 1) * self.row + self.cols.1 * self.c);
        assert!(end.unwrap_or(0) <= len, "pool window runs past its image");
    }

    /// `out[ch]` = the maximum of channel `ch` over the window; NaN wins, as in PyTorch.
    fn max(self, wide: Wide, x: &[f32], out: &mut [f32]) {
        self.check(x.len());
        assert_eq!(out.len(), self.c, "one output pixel");
        #[cfg(target_arch = "x86_64")]
        if wide.0 {
            // SAFETY: `check` bounds every read, `out` holds `c` values, and `wide` says the CPU
            // has AVX-512F.
            return unsafe { avx512::max(self, x.as_ptr(), out.as_mut_ptr()) };
        }
        let _ = wide;
        out.fill(f32::NEG_INFINITY);
        for at in self.offsets() {
            for (m, &v) in out.iter_mut().zip(&x[at..at + self.c]) {
                // A select, not a branch, so the channel loop vectorises.
                *m = if v > *m || v.is_nan() { v } else { *m };
            }
        }
    }

    /// Stores the window's `dx` (the window overlaps no other): at the first position holding
    /// the maximum `y` (none is NaN), `0.0 + dy` (`relu`: zero unless `y` is positive, see
    /// [`masked`]); zeros elsewhere. The sum is what [`route_max`]'s add into zeros gives (it
    /// turns -0.0 into 0.0), so both paths give the same bits.
    fn store(self, wide: Wide, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32], relu: bool) {
        self.check(x.len().min(dx.len()));
        assert!(y.len() == self.c && dy.len() == self.c, "one output pixel");
        #[cfg(target_arch = "x86_64")]
        if wide.0 {
            // SAFETY: `check` bounds every access to `x` and `dx`, `y` and `dy` hold `c` values,
            // and `wide` says the CPU has AVX-512F.
            return unsafe {
                avx512::store_window(
                    self,
                    x.as_ptr(),
                    y.as_ptr(),
                    dy.as_ptr(),
                    dx.as_mut_ptr(),
                    relu,
                )
            };
        }
        let _ = wide;
        for c0 in (0..self.c).step_by(ROUTE_BLOCK) {
            let width = ROUTE_BLOCK.min(self.c - c0);
            let (y, dy) = (&y[c0..c0 + width], &dy[c0..c0 + width]);
            // Per channel, all ones once its gradient has been stored.
            let mut taken = [0u32; ROUTE_BLOCK];
            for at in self.offsets() {
                let at = at + c0;
                let lanes = dx[at..at + width]
                    .iter_mut()
                    .zip(&x[at..at + width])
                    .zip(y.iter().zip(dy).zip(&mut taken));
                for ((d, &v), ((&m, &grad), t)) in lanes {
                    let hit = v == m && *t == 0;
                    *d = if hit {
                        0.0 + masked(grad, m, relu)
                    } else {
                        0.0
                    };
                    *t |= u32::from(hit);
                }
            }
        }
    }
}

/// The [`Window`] kernels with AVX-512, 16 channels to a register. Positions go in scan order
/// with every channel of a position before the next, the order the portable loops take, which
/// keeps the reads sequential: taking 16 channels over the whole window at a time instead (a
/// register per block) doubled the time on the seed model's first pool. The last block is masked
/// (masked loads are slow here, so whole blocks use plain ones).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Window;

    /// 16-channel blocks: `(offset, mask)`, the last masked to the channels left.
    fn blocks(c: usize) -> impl Iterator<Item = (usize, __mmask16)> {
        (0..c).step_by(16).map(move |c0| {
            let width = (c - c0).min(16);
            (c0, (((1u32 << width) - 1) & 0xffff) as __mmask16)
        })
    }

    /// Loads the 16 channels from `p` that `k` selects (zeros elsewhere).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(p: *const f32, k: __mmask16) -> __m512 {
        // SAFETY: the caller bounds the lanes `k` selects; masked-off lanes are not read.
        unsafe {
            if k == 0xffff {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(k, p)
            }
        }
    }

    /// Stores the lanes of `v` that `k` selects to `p`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(p: *mut f32, k: __mmask16, v: __m512) {
        // SAFETY: the caller bounds the lanes `k` selects; masked-off lanes are not written.
        unsafe {
            if k == 0xffff {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, k, v)
            }
        }
    }

    /// See [`Window::max`]; `x` and `out` must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max(w: Window, x: *const f32, out: *mut f32) {
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        // SAFETY (all blocks): the caller bounds every position's `c` channels and `out`'s.
        for (c0, k) in blocks(w.c) {
            unsafe { store(out.add(c0), k, low) };
        }
        for at in w.offsets() {
            for (c0, k) in blocks(w.c) {
                unsafe {
                    let (v, m) = (load(x.add(at + c0), k), load(out.add(c0), k));
                    let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m)
                        | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    store(out.add(c0), k, _mm512_mask_mov_ps(m, take, v));
                }
            }
        }
    }

    /// See [`Window::store`]; the pointers must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store_window(
        w: Window,
        x: *const f32,
        y: *const f32,
        dy: *const f32,
        dx: *mut f32,
        relu: bool,
    ) {
        let zero = _mm512_setzero_ps();
        // Per 16-channel block, the channels whose gradient has been stored.
        let mut taken = [0 as __mmask16; super::ROUTE_BLOCK / 16];
        let blocks_at_once = super::ROUTE_BLOCK;
        for b0 in (0..w.c).step_by(blocks_at_once) {
            let c = (w.c - b0).min(blocks_at_once);
            taken.fill(0);
            for at in w.offsets() {
                for ((c0, k), taken) in blocks(c).zip(&mut taken) {
                    let c0 = b0 + c0;
                    // SAFETY: the caller bounds every position's channels, and `y`'s and `dy`'s.
                    unsafe {
                        let m = load(y.add(c0), k);
                        let mut d = load(dy.add(c0), k);
                        if relu {
                            d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, zero), d);
                        }
                        let grad = _mm512_add_ps(zero, d);
                        let v = load(x.add(at + c0), k);
                        let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, m) & !*taken;
                        store(dx.add(at + c0), k, _mm512_maskz_mov_ps(hit, grad));
                        *taken |= hit;
                    }
                }
            }
        }
    }
}

/// Channels whose argmax [`route_max`] tracks at once (a stack array, so nothing is allocated).
const ROUTE_BLOCK: usize = 64;

/// Adds one output pixel's `dy` (all channels) to `dx` at the window position PyTorch's max pool
/// picks: the first maximum in scan order, which is the first position holding the forward
/// output `y` (so an all -inf window routes to its first pixel, as PyTorch's does). Scanning
/// backwards and keeping the last match finds it without branches, so the channel loop
/// vectorises. A NaN output came from the window's last NaN instead. With `relu`, a channel whose
/// maximum is not positive adds zero (see [`MaxPool2d::mask_relu_grad`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn route_max(
    g: &Geom,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    dx: &mut [f32],
    relu: bool,
) {
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    for c0 in (0..g.c).step_by(ROUTE_BLOCK) {
        let width = ROUTE_BLOCK.min(g.c - c0);
        let (y, dy) = (&y[c0..c0 + width], &dy[c0..c0 + width]);
        let mut best = [0usize; ROUTE_BLOCK];
        for iy in rows.clone().rev() {
            for ix in cols.clone().rev() {
                let at = (iy * g.iw + ix) * g.c + c0;
                for ((b, &v), &m) in best.iter_mut().zip(&x[at..at + width]).zip(y) {
                    *b = if v == m { at } else { *b };
                }
            }
        }
        for (j, (&m, &d)) in y.iter().zip(dy).enumerate() {
            let mut from = best[j] + j;
            if m.is_nan() {
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let at = (iy * g.iw + ix) * g.c + c0 + j;
                        if x[at].is_nan() {
                            from = at;
                        }
                    }
                }
            }
            dx[from] += masked(d, m, relu);
        }
    }
}

/// The gradient `d` routed to a window's maximum `m`, masked by the ReLU that produced the
/// input when `relu` is set: zero unless `m` is positive (a ReLU's backward passes `d` only where
/// its output is positive, and the position routed to holds `m`).
#[inline(always)]
fn masked(d: f32, m: f32, relu: bool) -> f32 {
    if !relu || m > 0.0 { d } else { 0.0 }
}

/// `torch.nn.AvgPool2d(kernel_size, stride, padding, ceil_mode=..., count_include_pad=True)`:
/// `[N, C, H, W]` to `[N, C, H_out, W_out]`. Each window divides by its size clipped to the padded
/// input (so padding counts, but a `ceil_mode` window running past the padding does not).
#[derive(Debug)]
pub struct AvgPool2d {
    name: String,
    config: Pool2dConfig,
    g: Geom,
}

impl AvgPool2d {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, config: &Pool2dConfig, input: Dims) -> Result<Self> {
        let g = Geom::new(name, "avg_pool2d", config, input)?;
        Ok(AvgPool2d {
            name: name.to_owned(),
            config: config.clone(),
            g,
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &Pool2dConfig {
        &self.config
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_dims(&self) -> Dims {
        self.g.input_dims()
    }

    fn output_dims(&self) -> Dims {
        self.g.output_dims()
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let g = self.g;
        g.for_each_output(&mut y[..ny], |n, oy, ox, out| {
            let (rows, cols, pool_size) = g.window(oy, ox);
            out.fill(0.0);
            for iy in rows {
                for ix in cols.clone() {
                    let at = ((n * g.ih + iy) * g.iw + ix) * g.c;
                    for (s, &v) in out.iter_mut().zip(&x[at..at + g.c]) {
                        *s += v;
                    }
                }
            }
            let scale = pool_size as f32;
            for s in out {
                *s /= scale;
            }
        });
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
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let g = self.g;
        let (in_len, out_len) = (g.ih * g.iw * g.c, g.oh * g.ow * g.c);
        dx[..nx]
            .par_chunks_mut(in_len)
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * out_len..(n + 1) * out_len];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (rows, cols, pool_size) = g.window(oy, ox);
                        let grad = &dy[(oy * g.ow + ox) * g.c..(oy * g.ow + ox + 1) * g.c];
                        for iy in rows {
                            for ix in cols.clone() {
                                let at = (iy * g.iw + ix) * g.c;
                                for (d, &v) in dx[at..at + g.c].iter_mut().zip(grad) {
                                    *d += v / pool_size as f32;
                                }
                            }
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

    #[test]
    fn output_sizes_follow_pytorch() {
        // torch.nn.MaxPool2d(2)(torch.zeros(1, 1, 5, 5)).shape == (1, 1, 2, 2); ceil_mode gives 3.
        assert_eq!(pool_out(5, 2, 2, 0, false), Some(2));
        assert_eq!(pool_out(5, 2, 2, 0, true), Some(3));
        // A ceil window that would start in the right padding is dropped: 4 windows become 3.
        assert_eq!(pool_out(5, 2, 2, 1, true), Some(3));
        assert_eq!(pool_out(6, 3, 2, 1, true), Some(4));
        assert_eq!(pool_out(1, 3, 1, 0, false), None);
    }

    /// Routes `dy = 1` through a 2x2 max pool over one 2x2 channel and returns `dx`.
    fn route(x: [f32; 4]) -> Vec<f32> {
        let config = Pool2dConfig {
            kernel_size: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            ceil_mode: false,
        };
        let dims = Dims::Image {
            channels: 1,
            height: 2,
            width: 2,
        };
        let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
        let mut y = [0.0];
        pool.forward(&x, &mut y, 1, Mode::Train).unwrap();
        let mut dx = vec![9.0; 4];
        pool.backward(&x, &y, &[1.0], Some(&mut dx), 1).unwrap();
        dx
    }

    /// The disjoint-window fast path against the general one (zero fill, then add), on ties,
    /// NaN, -0.0 gradients, more channels than one route block and an uncovered last row and
    /// column.
    #[test]
    fn disjoint_windows_store_the_same_bits_as_the_general_path() {
        for (size, ceil_mode) in [(4, false), (5, false), (5, true)] {
            let g_c = ROUTE_BLOCK + 6;
            let config = Pool2dConfig {
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                ceil_mode,
            };
            let dims = Dims::Image {
                channels: g_c,
                height: size,
                width: size,
            };
            let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
            let g = pool.g;
            let batch = 2;
            // Few distinct values, so windows tie often; a NaN in a couple of channels.
            let mut x: Vec<f32> = (0..batch * size * size * g_c)
                .map(|i| ((i * 7919) % 5) as f32)
                .collect();
            x[3] = f32::NAN;
            x[g_c * size + 3] = f32::NAN;
            let mut y = vec![0.0; batch * g.oh * g.ow * g_c];
            pool.forward(&x, &mut y, batch, Mode::Train).unwrap();
            let dy: Vec<f32> = (0..y.len())
                .map(|i| {
                    if i % 3 == 0 {
                        -0.0
                    } else {
                        i as f32 * 0.5 - 7.0
                    }
                })
                .collect();
            let mut dx = vec![9.0; x.len()];
            pool.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();

            let (in_len, out_len) = (size * size * g_c, g.oh * g.ow * g_c);
            let mut want = vec![0.0; x.len()];
            for n in 0..batch {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (rows, cols, _) = g.window(oy, ox);
                        let at = n * out_len + (oy * g.ow + ox) * g_c;
                        route_max(
                            &g,
                            &x[n * in_len..(n + 1) * in_len],
                            &y[at..at + g_c],
                            &dy[at..at + g_c],
                            rows,
                            cols,
                            &mut want[n * in_len..(n + 1) * in_len],
                            false,
                        );
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dx), bits(&want), "size {size}, ceil_mode {ceil_mode}");
        }
    }

    /// The window kernels (AVX-512 where the CPU has it, and the portable loops) against the
    /// definition written out per channel: ragged channel counts, NaN, infinities, -0.0 and ties.
    #[test]
    fn window_kernels_match_their_definition() {
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            2.0,
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let wides: Vec<Wide> = [Wide(false), Wide::detect()].into_iter().collect();
        for c in [1, 5, 16, 17, 32, 70] {
            let (iw, ih) = (4, 3);
            let g = Geom {
                c,
                ih,
                iw,
                oh: 1,
                ow: 1,
                kh: 3,
                kw: 3,
                sh: 3,
                sw: 3,
                ph: 0,
                pw: 0,
            };
            let x: Vec<f32> = (0..ih * iw * c)
                .map(|i| special[(i * 7919 + c) % special.len()])
                .collect();
            let (rows, cols) = (0..3, 1..4);
            let window = Window::new(&g, rows.clone(), cols.clone());
            let positions: Vec<usize> = rows
                .flat_map(|iy| cols.clone().map(move |ix| (iy * iw + ix) * c))
                .collect();
            let mut want_max = vec![f32::NEG_INFINITY; c];
            for &at in &positions {
                for (m, &v) in want_max.iter_mut().zip(&x[at..]) {
                    if v > *m || v.is_nan() {
                        *m = v;
                    }
                }
            }
            let dy: Vec<f32> = (0..c).map(|i| [-0.0, 1.5, -2.0][i % 3]).collect();
            for &wide in &wides {
                let mut got = vec![7.0; c];
                window.max(wide, &x, &mut got);
                assert_eq!(bits(&got), bits(&want_max), "max, {c} channels");
                // `store` takes windows without NaN maxima (NaN goes to `route_max`).
                let y: Vec<f32> = want_max
                    .iter()
                    .map(|&m| if m.is_nan() { 1.0 } else { m })
                    .collect();
                for relu in [false, true] {
                    let mut want = vec![9.0; x.len()];
                    for &at in &positions {
                        want[at..at + c].fill(0.0);
                    }
                    for ch in 0..c {
                        if let Some(&at) = positions.iter().find(|&&at| x[at + ch] == y[ch]) {
                            want[at + ch] = 0.0 + masked(dy[ch], y[ch], relu);
                        }
                    }
                    let mut got = vec![9.0; x.len()];
                    window.store(wide, &x, &y, &dy, &mut got, relu);
                    assert_eq!(bits(&got), bits(&want), "store, {c} channels, relu {relu}");
                }
            }
        }
    }

    #[test]
    fn max_pool_routes_to_the_first_maximum_like_pytorch() {
        // x = torch.tensor([[[[1., 3.], [3., 0.]]]], requires_grad=True); max_pool2d(x, 2).backward()
        // x.grad == [[[[0., 1.], [0., 0.]]]]: ties go to the first in scan order.
        assert_eq!(route([1.0, 3.0, 3.0, 0.0]), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(route([f32::NEG_INFINITY; 4]), [1.0, 0.0, 0.0, 0.0]);
        // NaN wins, and the last NaN in scan order is the one PyTorch records.
        assert_eq!(route([f32::NAN, 1.0, f32::NAN, 0.0]), [0.0, 0.0, 1.0, 0.0]);
    }
}
