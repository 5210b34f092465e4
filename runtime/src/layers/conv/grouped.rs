//! Grouped and depthwise convolution (`groups > 1`) as a stencil over the pixel-major layout:
//! each output pixel's channels are one contiguous run, so every kernel tap is a vector
//! multiply-add along the channels (depthwise) or along each group's output channels. No GEMM
//! panel is built: a depthwise convolution reads each input once per tap and is memory-bound.
//!
//! Work is split by output rows (forward), input rows (input gradient, gathered, so no two
//! rows write the same value) and fixed lanes of output rows summed in lane order (weight and
//! bias gradients), and every sum runs in one fixed order with `f32::mul_add`: the results do
//! not depend on the thread count or the vector width.

use rayon::prelude::*;

use super::geometry::Geom;
use crate::param::Param;
use crate::simd::multiversion;
use crate::tensor::{MAX_LANES, Tiling};

/// The scratch of a grouped convolution: the weight transposed for the stencil and the
/// per-lane partial gradients, sized once from the geometry.
#[derive(Clone, Debug)]
pub(super) struct Grouped {
    /// Channel groups.
    groups: usize,
    /// The weight as `[ky][kx][ci < cin / groups][co < cout]`: tap-major, output channels
    /// contiguous.
    wt: Vec<f32>,
    /// Per-lane partial weight gradients, each in `wt`'s layout.
    wgrad: Vec<f32>,
    /// Per-lane partial bias gradients, `[lane][cout]`.
    bgrad: Vec<f32>,
}

/// The shared sizes of one call.
#[derive(Clone, Copy)]
struct Shape {
    g: Geom,
    /// Input channels per group.
    cig: usize,
    /// Output channels per group.
    cog: usize,
}

impl Shape {
    /// Whether every input channel has exactly one filter of its own.
    fn pure_depthwise(&self) -> bool {
        self.cig == 1 && self.cog == 1
    }

    /// Length of one tap's weights in the transposed layout.
    fn tap_len(&self) -> usize {
        self.cig * self.g.cout
    }

    /// The input row and column output `(oy, ox)` reads at tap `(ky, kx)`, if not padding.
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let g = &self.g;
        let iy = (oy * g.sh + ky * g.dh).checked_sub(g.ph)?;
        let ix = (ox * g.sw + kx * g.dw).checked_sub(g.pw)?;
        (iy < g.ih && ix < g.iw).then_some((iy, ix))
    }

    /// The output index along one axis that reads input `i` at tap `k`, if any.
    fn target(
        i: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        out: usize,
    ) -> Option<usize> {
        let t = (i + pad).checked_sub(k * dil)?;
        (t.is_multiple_of(stride) && t / stride < out).then_some(t / stride)
    }
}

multiversion! {
    /// `out[i] += x[i] * w[i]`, each with one rounding.
    fn mul_add_into(out: &mut [f32], x: &[f32], w: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(x).zip(w) {
            *o = a.mul_add(b, *o);
        }
    }
}

multiversion! {
    /// `out[i] += a * w[i]`, each with one rounding.
    fn scaled_add_into(out: &mut [f32], a: f32, w: &[f32]) {
        for (o, &b) in out.iter_mut().zip(w) {
            *o = a.mul_add(b, *o);
        }
    }
}

/// `sum(a[i] * b[i])` in index order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |s, (&x, &y)| x.mul_add(y, s))
}

impl Grouped {
    /// The scratch for convolution `g` with `groups` groups.
    pub(super) fn new(g: &Geom, groups: usize) -> Grouped {
        let len = g.kh * g.kw * (g.cin / groups) * g.cout;
        Grouped {
            groups,
            wt: vec![0.0; len],
            wgrad: vec![0.0; MAX_LANES * len],
            bgrad: vec![0.0; MAX_LANES * g.cout],
        }
    }

    fn shape(&self, g: Geom) -> Shape {
        Shape {
            g,
            cig: g.cin / self.groups,
            cog: g.cout / self.groups,
        }
    }

    /// Values of the transposed weight ([`Grouped::forward_with`]'s `wt`).
    pub(super) fn wt_len(&self) -> usize {
        self.wt.len()
    }

    /// Transposes PyTorch's `[co][ci][ky][kx]` weight into `wt`.
    fn pack(wt: &mut [f32], s: Shape, weight: &Param) {
        let (kh, kw, cout) = (s.g.kh, s.g.kw, s.g.cout);
        for (i, &v) in weight.value.iter().enumerate() {
            let kx = i % kw;
            let ky = i / kw % kh;
            let ci = i / (kw * kh) % s.cig;
            let co = i / (kw * kh * s.cig);
            wt[((ky * kw + kx) * s.cig + ci) * cout + co] = v;
        }
    }

    /// `y[..batch]` from `x`: each output pixel starts at the bias and adds every tap.
    pub(super) fn forward(
        &mut self,
        g: Geom,
        weight: &Param,
        bias: Option<&Param>,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
    ) {
        let mut wt = std::mem::take(&mut self.wt);
        self.forward_with(&mut wt, g, weight, bias, x, y, batch);
        self.wt = wt;
    }

    /// [`Grouped::forward`] with the transposed weight in `wt` ([`Grouped::wt_len`] values), so
    /// that `&self` inference can lay it out in scratch memory.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_with(
        &self,
        wt: &mut [f32],
        g: Geom,
        weight: &Param,
        bias: Option<&Param>,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
    ) {
        let s = self.shape(g);
        Self::pack(wt, s, weight);
        let wt = &wt[..];
        let bias = bias.and_then(|b| b.value.as_slice());
        let row_len = g.ow * g.cout;
        let image = g.ih * g.iw * g.cin;
        y[..batch * g.oh * row_len]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, out)| {
                let (n, oy) = (r / g.oh, r % g.oh);
                let x = &x[n * image..(n + 1) * image];
                for (ox, out) in out.chunks_exact_mut(g.cout).enumerate() {
                    match bias {
                        Some(b) => out.copy_from_slice(b),
                        None => out.fill(0.0),
                    }
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let Some((iy, ix)) = s.source(oy, ox, ky, kx) else {
                                continue;
                            };
                            let at = (iy * g.iw + ix) * g.cin;
                            let px = &x[at..at + g.cin];
                            let tap = &wt[(ky * g.kw + kx) * s.tap_len()..][..s.tap_len()];
                            accumulate(s, out, px, tap);
                        }
                    }
                }
            });
    }

    /// Writes `weight.grad`, `bias.grad` and, when asked, `dx` from `dy` for `batch` images.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &mut self,
        g: Geom,
        weight: &mut Param,
        bias: Option<&mut Param>,
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) {
        let s = self.shape(g);
        Self::pack(&mut self.wt, s, weight);
        if let Some(dx) = dx {
            self.input_grad(s, dy, dx, batch);
        }
        // Weight and bias gradients: fixed lanes of output rows, summed in lane order.
        let rows = batch * g.oh;
        let tiling = Tiling::new(rows, 1);
        let lanes = tiling.lanes(rows);
        let len = self.wt.len();
        let row_len = g.ow * g.cout;
        let image = g.ih * g.iw * g.cin;
        self.wgrad[..lanes * len]
            .par_chunks_mut(len)
            .zip(self.bgrad[..lanes * g.cout].par_chunks_mut(g.cout))
            .enumerate()
            .for_each(|(lane, (wg, bg))| {
                wg.fill(0.0);
                bg.fill(0.0);
                let first = lane * tiling.lane_rows;
                for r in first..(first + tiling.lane_rows).min(rows) {
                    let (n, oy) = (r / g.oh, r % g.oh);
                    let x = &x[n * image..(n + 1) * image];
                    let dy_row = &dy[r * row_len..(r + 1) * row_len];
                    for (ox, d) in dy_row.chunks_exact(g.cout).enumerate() {
                        for (b, &v) in bg.iter_mut().zip(d) {
                            *b += v;
                        }
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let Some((iy, ix)) = s.source(oy, ox, ky, kx) else {
                                    continue;
                                };
                                let at = (iy * g.iw + ix) * g.cin;
                                let px = &x[at..at + g.cin];
                                let tap = (ky * g.kw + kx) * s.tap_len();
                                accumulate_grad(s, &mut wg[tap..tap + s.tap_len()], px, d);
                            }
                        }
                    }
                }
            });
        let (kh, kw) = (g.kh, g.kw);
        if let Some(grad) = weight.grad.as_slice_mut() {
            for (i, out) in grad.iter_mut().enumerate() {
                let kx = i % kw;
                let ky = i / kw % kh;
                let ci = i / (kw * kh) % s.cig;
                let co = i / (kw * kh * s.cig);
                let at = ((ky * kw + kx) * s.cig + ci) * g.cout + co;
                *out = (0..lanes).fold(0.0, |sum, lane| sum + self.wgrad[lane * len + at]);
            }
        }
        if let Some(grad) = bias.and_then(|b| b.grad.as_slice_mut()) {
            for (co, out) in grad.iter_mut().enumerate() {
                *out = (0..lanes).fold(0.0, |sum, lane| sum + self.bgrad[lane * g.cout + co]);
            }
        }
    }

    /// `dx` gathered per input pixel from the outputs that read it, taps in order.
    fn input_grad(&self, s: Shape, dy: &[f32], dx: &mut [f32], batch: usize) {
        let g = s.g;
        let wt = &self.wt[..];
        let row_len = g.iw * g.cin;
        let image = g.oh * g.ow * g.cout;
        dx[..batch * g.ih * row_len]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| {
                let (n, iy) = (r / g.ih, r % g.ih);
                let dy = &dy[n * image..(n + 1) * image];
                for (ix, out) in row.chunks_exact_mut(g.cin).enumerate() {
                    out.fill(0.0);
                    for ky in 0..g.kh {
                        let Some(oy) = Shape::target(iy, ky, g.sh, g.ph, g.dh, g.oh) else {
                            continue;
                        };
                        for kx in 0..g.kw {
                            let Some(ox) = Shape::target(ix, kx, g.sw, g.pw, g.dw, g.ow) else {
                                continue;
                            };
                            let at = (oy * g.ow + ox) * g.cout;
                            let d = &dy[at..at + g.cout];
                            let tap = &wt[(ky * g.kw + kx) * s.tap_len()..][..s.tap_len()];
                            if s.pure_depthwise() {
                                mul_add_into(out, d, tap);
                                continue;
                            }
                            for grp in 0..self.groups {
                                let cols = grp * s.cog..(grp + 1) * s.cog;
                                for ci in 0..s.cig {
                                    let w = &tap[ci * g.cout..][cols.clone()];
                                    let o = &mut out[grp * s.cig + ci];
                                    *o += dot(&d[cols.clone()], w);
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// One forward tap of the stencil: `out[co] += px[ci(co)] * tap[ci][co]` over every group.
fn accumulate(s: Shape, out: &mut [f32], px: &[f32], tap: &[f32]) {
    if s.pure_depthwise() {
        mul_add_into(out, px, tap);
        return;
    }
    let cout = s.g.cout;
    for grp in 0..cout / s.cog {
        let cols = grp * s.cog..(grp + 1) * s.cog;
        for ci in 0..s.cig {
            let a = px[grp * s.cig + ci];
            scaled_add_into(&mut out[cols.clone()], a, &tap[ci * cout..][cols.clone()]);
        }
    }
}

/// One weight-gradient tap: `wg[ci][co] += px[ci(co)] * d[co]` over every group.
fn accumulate_grad(s: Shape, wg: &mut [f32], px: &[f32], d: &[f32]) {
    if s.pure_depthwise() {
        mul_add_into(wg, px, d);
        return;
    }
    let cout = s.g.cout;
    for grp in 0..cout / s.cog {
        let cols = grp * s.cog..(grp + 1) * s.cog;
        for ci in 0..s.cig {
            let a = px[grp * s.cig + ci];
            scaled_add_into(&mut wg[ci * cout..][cols.clone()], a, &d[cols.clone()]);
        }
    }
}
