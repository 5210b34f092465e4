//! Grouped and depthwise convolution (`groups > 1`) as a stencil over the pixel-major layout:
//! each output pixel's channels are one contiguous run, so every kernel tap is a vector
//! multiply-add along the channels (depthwise) or along each group's output channels. No GEMM
//! panel is built: a depthwise convolution reads each input once per tap and is memory-bound.
//! Depthwise convolutions (one filter per channel, kernels up to 8 x 8) run the register-blocked
//! stencils of [`crate::kernels::depthwise`]; other groupings the loops below.
//!
//! Work is split by output rows (forward), input rows (input gradient, gathered, so no two
//! rows write the same value) and fixed lanes of output rows summed in lane order (weight and
//! bias gradients), and every sum runs in one fixed order with `f32::mul_add`: the results do
//! not depend on the thread count or the vector width.

use rayon::prelude::*;

use super::geometry::Geom;
pub(crate) use crate::kernels::depthwise::Store;
use crate::kernels::depthwise::{Axis, Depthwise, MAX_TAPS, Path};
use crate::kernels::window;
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
    /// What the forward pass applies as it stores each output (see [`Grouped::set_store`]).
    store: Option<OwnedStore>,
}

/// A [`Store`] a layer keeps ([`Grouped::set_store`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OwnedStore {
    /// Per-channel `(scale, shift)`, `[c]` each.
    pub(crate) affine: Option<(Vec<f32>, Vec<f32>)>,
    /// Lower bound.
    pub(crate) lo: f32,
    /// Upper bound.
    pub(crate) hi: f32,
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

    /// The stencil of a depthwise convolution whose kernel the stencils hold, else `None`.
    fn depthwise(&self) -> Option<Depthwise> {
        let g = &self.g;
        (self.pure_depthwise() && g.kh * g.kw <= MAX_TAPS).then_some(Depthwise {
            c: g.cout,
            rows: Axis {
                input: g.ih,
                output: g.oh,
                kernel: g.kh,
                stride: g.sh,
                pad: g.ph,
                dil: g.dh,
            },
            cols: Axis {
                input: g.iw,
                output: g.ow,
                kernel: g.kw,
                stride: g.sw,
                pad: g.pw,
                dil: g.dw,
            },
        })
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
            store: None,
        }
    }

    /// Makes the forward pass store `clamp(v * scale[c] + shift[c], lo, hi)` in place of each
    /// output `v` (`None`: plain outputs again). For a batch norm in eval mode and a ReLU or
    /// ReLU6 after the convolution, bit for bit what those layers compute from the plain
    /// output (a multiply then an add, as `BatchNorm2d`'s eval forward; the clamp as theirs:
    /// NaN passes, `-0.0` stays): the plan's fusion of conv -> BN -> ReLU6 for inference.
    /// `backward` knows nothing of it: it is the convolution's own gradient, so a model that
    /// trains must clear the store first.
    pub(crate) fn set_store(&mut self, store: Option<OwnedStore>) {
        self.store = store;
    }

    /// The store [`Grouped::set_store`] set, if any.
    pub(super) fn store(&self) -> Option<Store<'_>> {
        self.store.as_ref().map(|s| Store {
            affine: s.affine.as_ref().map(|(a, b)| (&a[..], &b[..])),
            lo: s.lo,
            hi: s.hi,
        })
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
        self.forward_with(&mut wt, g, weight, bias, x, y, batch, self.store());
        self.wt = wt;
    }

    /// [`Grouped::forward`] with the transposed weight in `wt` ([`Grouped::wt_len`] values), so
    /// that `&self` inference can lay it out in scratch memory; each output stored through
    /// `store` when given (the one [`Grouped::set_store`] set, or an inference step's).
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
        store: Option<Store<'_>>,
    ) {
        let s = self.shape(g);
        Self::pack(wt, s, weight);
        let wt = &wt[..];
        let bias = bias.and_then(|b| b.value.as_slice());
        let row_len = g.ow * g.cout;
        let image = g.ih * g.iw * g.cin;
        let store = store.as_ref();
        if let Some(d) = s.depthwise() {
            let path = Path::detect();
            y[..batch * g.oh * row_len]
                .par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(r, out)| {
                    let (n, oy) = (r / g.oh, r % g.oh);
                    let x = &x[n * image..(n + 1) * image];
                    d.forward_row(path, x, wt, bias, store, oy, out);
                });
            return;
        }
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
                    if let Some(store) = store {
                        for (ch, v) in out.iter_mut().enumerate() {
                            *v = store.apply(*v, ch);
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
        let bias = bias.filter(|b| b.requires_grad);
        // Frozen parameters keep their gradients, as PyTorch computes none.
        if !weight.requires_grad && bias.is_none() {
            return;
        }
        // Weight and bias gradients: fixed lanes of output rows, summed in lane order.
        let rows = batch * g.oh;
        let tiling = Tiling::new(rows, 1);
        let lanes = tiling.lanes(rows);
        let len = self.wt.len();
        let row_len = g.ow * g.cout;
        let image = g.ih * g.iw * g.cin;
        let (depthwise, path) = (s.depthwise(), Path::detect());
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
                    if let Some(d) = depthwise {
                        d.weight_grad_row(path, x, dy_row, oy, wg, Some(&mut *bg));
                        continue;
                    }
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
        // The lanes summed into the first, element by element from 0.0 in lane order, as
        // vector adds; then transposed back to PyTorch's layout.
        let wsum = sum_lanes(&mut self.wgrad[..lanes * len], len);
        let (kh, kw) = (g.kh, g.kw);
        if weight.requires_grad
            && let Some(grad) = weight.grad.as_slice_mut()
        {
            for (i, out) in grad.iter_mut().enumerate() {
                let kx = i % kw;
                let ky = i / kw % kh;
                let ci = i / (kw * kh) % s.cig;
                let co = i / (kw * kh * s.cig);
                *out = wsum[((ky * kw + kx) * s.cig + ci) * g.cout + co];
            }
        }
        let bsum = sum_lanes(&mut self.bgrad[..lanes * g.cout], g.cout);
        if let Some(grad) = bias.and_then(|b| b.grad.as_slice_mut()) {
            grad.copy_from_slice(bsum);
        }
    }

    /// `dx` gathered per input pixel from the outputs that read it, taps in order.
    fn input_grad(&self, s: Shape, dy: &[f32], dx: &mut [f32], batch: usize) {
        let g = s.g;
        let wt = &self.wt[..];
        let row_len = g.iw * g.cin;
        let image = g.oh * g.ow * g.cout;
        if let Some(d) = s.depthwise() {
            let path = Path::detect();
            dx[..batch * g.ih * row_len]
                .par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(r, row)| {
                    let (n, iy) = (r / g.ih, r % g.ih);
                    d.input_grad_row(path, &dy[n * image..(n + 1) * image], wt, iy, row);
                });
            return;
        }
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

/// `0.0 + lane 0 + lane 1 + ...` per element of the `len`-value lanes of `lanes`, left in (and
/// returned as) the first lane.
fn sum_lanes(lanes: &mut [f32], len: usize) -> &[f32] {
    let (first, rest) = lanes.split_at_mut(len);
    for v in first.iter_mut() {
        *v += 0.0;
    }
    for lane in rest.chunks_exact(len) {
        window::add(first, lane);
    }
    first
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
