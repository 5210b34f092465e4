//! Data copied into the layouts the kernels read: the zero-padded input, the staged (widened,
//! masked, bordered) `dy`, and `dy` routed through the fused pool's positions.

use rayon::prelude::*;

use super::fused_pool::FusedPool;
use super::geometry::Geom;
use crate::kernels::window::{Wide, Window};

impl Geom {
    /// Copies `batch` images of `x` into `xp`, surrounded by `ph`/`pw` zeros.
    pub(super) fn pad_input(&self, x: &[f32], xp: &mut [f32], batch: usize) {
        let g = *self;
        let (hp, wp) = g.padded_in();
        let (image, padded) = (g.ih * g.iw * g.cin, hp * wp * g.cin);
        xp[..batch * padded]
            .par_chunks_mut(padded)
            .zip(x.par_chunks(image))
            .for_each(|(dst, src)| g.pad_image(src, dst));
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
    /// [`Geom::staged_dy`]`(border)` whose other values are zeros. With `relu_out` (the output of
    /// a fused ReLU), only where that output is positive: the gradient before the ReLU.
    pub(super) fn stage_dy(
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
