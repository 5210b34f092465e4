//! `padding_mode` other than zeros (`reflect`, `replicate`, `circular`): the input is copied once
//! into a buffer that holds the padding as the mode says, and the convolution runs on it with no
//! padding of its own; the input gradient is folded back, each padding pixel's gradient added to
//! the input pixel it copied.

use rayon::prelude::*;

use crate::config::PaddingMode;
use crate::layers::grow;

/// The padded copies of one convolution with a non-zero padding mode.
#[derive(Clone, Debug)]
pub(super) struct ModePad {
    mode: PaddingMode,
    /// Padding `[ph, pw]` on each side.
    padding: [usize; 2],
    /// The input's `[h, w]`.
    input: [usize; 2],
    channels: usize,
    /// The padded input, `[N][h + 2 ph][w + 2 pw][C]`.
    pub(super) x: Vec<f32>,
    /// The gradient with respect to the padded input, same layout.
    pub(super) dx: Vec<f32>,
}

impl ModePad {
    /// The copies for `channels` channels of `input` pixels padded by `padding` in `mode`.
    pub(super) fn new(
        mode: PaddingMode,
        padding: [usize; 2],
        input: [usize; 2],
        channels: usize,
    ) -> ModePad {
        ModePad {
            mode,
            padding,
            input,
            channels,
            x: Vec::new(),
            dx: Vec::new(),
        }
    }

    /// `[h + 2 ph, w + 2 pw]`.
    pub(super) fn padded(&self) -> [usize; 2] {
        [0, 1].map(|i| self.input[i] + 2 * self.padding[i])
    }

    /// The input row (axis 0) or column (axis 1) padded position `i` copies.
    fn source(&self, axis: usize, i: usize) -> usize {
        // The layer checked the padding against the mode's limit, so there always is one.
        self.mode
            .source(i, self.padding[axis], self.input[axis])
            .unwrap_or(0)
    }

    /// Copies `batch` images of `x` into [`ModePad::x`], padded.
    pub(super) fn pad(&mut self, x: &[f32], batch: usize) {
        let mut out = std::mem::take(&mut self.x);
        grow(&mut out, self.padded_len(batch), 0.0);
        self.pad_into(x, &mut out, batch);
        self.x = out;
    }

    /// Values of `batch` padded images.
    pub(super) fn padded_len(&self, batch: usize) -> usize {
        let [hp, wp] = self.padded();
        batch * hp * wp * self.channels
    }

    /// Copies `batch` images of `x` into `out` ([`ModePad::padded_len`] values), padded.
    pub(super) fn pad_into(&self, x: &[f32], out: &mut [f32], batch: usize) {
        let [hp, wp] = self.padded();
        let [h, w] = self.input;
        let c = self.channels;
        let rows: Vec<usize> = (0..hp).map(|py| self.source(0, py)).collect();
        let cols: Vec<usize> = (0..wp).map(|px| self.source(1, px)).collect();
        out[..batch * hp * wp * c]
            .par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(r, row)| {
                let (n, py) = (r / hp, r % hp);
                let src = &x[(n * h + rows[py]) * w * c..][..w * c];
                for (px, pixel) in row.chunks_exact_mut(c).enumerate() {
                    pixel.copy_from_slice(&src[cols[px] * c..][..c]);
                }
            });
    }

    /// Sizes [`ModePad::dx`] for `batch` images.
    pub(super) fn grow_dx(&mut self, batch: usize) {
        let [hp, wp] = self.padded();
        grow(&mut self.dx, batch * hp * wp * self.channels, 0.0);
    }

    /// `dx` for `batch` images from [`ModePad::dx`]: each input pixel's gradient is the sum of
    /// the padded pixels that copied it, in row-major order of the padded image.
    pub(super) fn fold(&self, dx: &mut [f32], batch: usize) {
        let [hp, wp] = self.padded();
        let [h, w] = self.input;
        let c = self.channels;
        let rows: Vec<usize> = (0..hp).map(|py| self.source(0, py)).collect();
        let cols: Vec<usize> = (0..wp).map(|px| self.source(1, px)).collect();
        dx[..batch * h * w * c]
            .par_chunks_mut(h * w * c)
            .zip(self.dx.par_chunks(hp * wp * c))
            .for_each(|(image, padded)| {
                image.fill(0.0);
                for (py, &iy) in rows.iter().enumerate() {
                    for (px, &ix) in cols.iter().enumerate() {
                        let from = &padded[(py * wp + px) * c..][..c];
                        let to = &mut image[(iy * w + ix) * c..][..c];
                        for (t, &f) in to.iter_mut().zip(from) {
                            *t += f;
                        }
                    }
                }
            });
    }
}
