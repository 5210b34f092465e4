//! Data copied into the layouts the kernels read: the zero-padded input, the staged (widened,
//! masked, bordered) `dy`, and `dy` routed through the fused pool's positions.

use super::fused_pool::FusedPool;
use super::geometry::Geom;
use super::{Conv2d, NormGrad, check_backward};
use crate::error::{Error, Result};
use crate::kernels::window::{Tiles, Wide};
use crate::par;

impl Geom {
    /// Copies `batch` images of `x` into `xp`, surrounded by `ph`/`pw` zeros.
    pub(super) fn pad_input(&self, x: &[f32], xp: &mut [f32], batch: usize) {
        let g = *self;
        let (hp, wp) = g.padded_in();
        let (image, padded) = (g.ih * g.iw * g.cin, hp * wp * g.cin);
        par::chunks_mut(&mut xp[..batch * padded], padded, |n, dst| {
            g.pad_image(&x[n * image..][..image], dst);
        });
    }

    /// Copies one image `x` into `xp`, surrounded by `ph`/`pw` zeros.
    pub(super) fn pad_image(&self, x: &[f32], xp: &mut [f32]) {
        let (line, wp) = (self.iw * self.cin, self.padded_in().1);
        let rows = inner_rows(
            xp,
            wp * self.cin,
            (self.ph, self.ih),
            (self.pw * self.cin, line),
        );
        for (middle, line) in rows.zip(x.chunks_exact(line)) {
            middle.copy_from_slice(line);
        }
    }

    /// Copies `batch` images of `dy` into `dyp`: channels widened to `cs`, inside the layout of
    /// [`Geom::staged_dy`]`(border)` whose other values are zeros. With `norm`, the values are
    /// that batch norm's input gradient, computed here (`dy` is not read). With `relu_out` (the
    /// output of a fused ReLU), only where that output is positive: the gradient before the
    /// ReLU.
    pub(super) fn stage_dy(
        &self,
        dy: &[f32],
        norm: Option<&NormGrad<'_>>,
        relu_out: Option<&[f32]>,
        dyp: &mut [f32],
        batch: usize,
        border: bool,
    ) {
        let g = *self;
        let (hd, wd, top, left) = g.staged_dy(border);
        let (cs, image, staged) = (g.cs(), g.oh * g.ow * g.cout, hd * wd * g.cs());
        par::chunks_mut(&mut dyp[..batch * staged], staged, |n, dst| {
            let line = g.ow * g.cout;
            let rows = inner_rows(dst, wd * cs, (top, g.oh), (left * cs, g.ow * cs));
            for (y, middle) in rows.enumerate() {
                let at = n * image + y * line;
                // The row's values, into its pixels (widened, each pixel's first `cout`).
                if cs == g.cout {
                    match norm {
                        Some(norm) => norm.write(at, middle),
                        None => middle.copy_from_slice(&dy[at..at + line]),
                    }
                } else {
                    for (p, px) in middle.chunks_exact_mut(cs).enumerate() {
                        let (px, widened) = px.split_at_mut(g.cout);
                        let from = at + p * g.cout;
                        match norm {
                            Some(norm) => norm.write(from, px),
                            None => px.copy_from_slice(&dy[from..from + g.cout]),
                        }
                        widened.fill(0.0);
                    }
                }
                let Some(mask) = relu_out.map(|out| &out[at..at + line]) else {
                    continue;
                };
                let pixels = middle.chunks_exact_mut(cs).zip(mask.chunks_exact(g.cout));
                for (px, mask) in pixels {
                    for (o, &y) in px.iter_mut().zip(mask) {
                        if y <= 0.0 || y.is_nan() {
                            *o = 0.0;
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
    pub(super) fn unpool_dy(
        &self,
        pool: &FusedPool,
        dy: &[f32],
        dyp: &mut [f32],
        batch: usize,
        border: bool,
    ) {
        let g = *self;
        let (hd, wd, top, left) = g.staged_dy(border);
        let (cs, pooled, staged) = (g.cs(), pool.oh * pool.ow * g.cout, hd * wd * g.cs());
        let wide = Wide::detect();
        par::chunks_mut(&mut dyp[..batch * staged], staged, |n, dst| {
            for middle in inner_rows(dst, wd * cs, (top, g.oh), (left * cs, g.ow * cs)) {
                if cs != g.cout {
                    middle.fill(0.0);
                }
            }
            let at = n * pooled;
            let (argmax, dy) = (&pool.argmax[at..at + pooled], &dy[at..at + pooled]);
            let tiles = Tiles {
                kh: pool.kh,
                kw: pool.kw,
                per_row: pool.ow,
                row: wd * cs,
                col: cs,
                c: g.cout,
            };
            tiles.store(wide, argmax, dy, &mut dst[(top * wd + left) * cs..]);
        });
    }
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

impl Conv2d {
    /// Whether [`Conv2d::backward_from_norm`] can take this layer's `dy` from a batch norm: a
    /// dense convolution padded with zeros, without a fused pool (whose positions route `dy`).
    pub fn stages_norm_grad(&self) -> bool {
        self.grouped.is_none() && self.mode_pad.is_none() && self.pool.is_none()
    }

    /// [`Layer::backward`](super::Layer::backward) where `dy` is batch norm `norm`'s input
    /// gradient, computed as it is staged (the batch norm's backward deferred it:
    /// [`BatchNorm2d::backward_deferred`](super::BatchNorm2d::backward_deferred)): the same
    /// values as the batch norm writing it and this layer reading it, without that buffer's
    /// write and read. Errors for a layer [`Conv2d::stages_norm_grad`] refuses (a bug in the
    /// caller) and for a gradient of another size than the output.
    pub fn backward_from_norm(
        &mut self,
        x: &[f32],
        y: &[f32],
        norm: &NormGrad<'_>,
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        self.backward_norm_grad(x, y, norm, dx, batch, false)
    }

    /// [`Conv2d::backward_from_norm`] adding the input gradient into `sum` (the gradient of an
    /// input with another reader, e.g. a residual block's input) as it stores each tile, rather
    /// than writing it into a buffer of its own that is then added into `sum`: each value
    /// becomes `sum + part` as that addition made it, without the part's write and read.
    pub fn backward_from_norm_adding(
        &mut self,
        x: &[f32],
        y: &[f32],
        norm: &NormGrad<'_>,
        sum: &mut [f32],
        batch: usize,
    ) -> Result<()> {
        self.backward_norm_grad(x, y, norm, Some(sum), batch, true)
    }

    /// [`Conv2d::backward_from_norm`], the input gradient added into `dx` with `add_dx`.
    fn backward_norm_grad(
        &mut self,
        x: &[f32],
        y: &[f32],
        norm: &NormGrad<'_>,
        dx: Option<&mut [f32]>,
        batch: usize,
        add_dx: bool,
    ) -> Result<()> {
        if !self.stages_norm_grad() {
            return Err(Error::State(format!(
                "cnnc bug: layer `{}` cannot stage a batch norm's gradient",
                self.name
            )));
        }
        // The output stands in for `dy`, which is not read: only its length is checked.
        let (_, ny) = check_backward(self, x, y, y, dx.as_deref(), batch)?;
        if norm.len() != ny || norm.channels() != self.g.cout {
            return Err(Error::shape(
                &self.name,
                "backward output gradient (a batch norm's input gradient)",
                format!("{ny} values of {} channels", self.g.cout),
                format!("{} values of {} channels", norm.len(), norm.channels()),
            ));
        }
        self.backward_padded(x, y, &[], dx, batch, ny, Some(norm), add_dx)
    }
}
