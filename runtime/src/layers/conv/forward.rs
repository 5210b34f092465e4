//! The convolution's forward pass: the input padded once, then tiles of output pixels from the
//! packed weights, stored through the fused ReLU, or pooled in bands with the fused max pool.

use rayon::prelude::*;

use super::Conv2d;
use super::fused_pool::pool_bands;
use super::plan::{KernelRows, PixelGrid, pixels_per_task};
use super::tile::{store, store_relu};
use crate::error::Result;
use crate::kernels::gemm::{MR, NR, Start, panels, rows_panel};
use crate::layers::grow;

impl Conv2d {
    /// The forward pass of `batch` images into `y[..ny]`, leaving the padded input for
    /// `backward`.
    pub(super) fn forward_batch(
        &mut self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
    ) -> Result<()> {
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
        pool_bands(pool, g, &mut y[..ny], batch, &convolve);
        Ok(())
    }
}
