//! The convolution's forward pass: the input padded (the whole batch, or in large batches each
//! task its own images; read in place for a layer without padding), then tiles of output pixels from the packed weights (for outputs of at
//! most four pixels an image, tiles of one position across images with only its real taps),
//! stored through the fused ReLU or an inference epilogue, or pooled in bands with the fused
//! max pool.

use super::fused_pool::{FusedPool, pool_bands};
use super::geometry::Geom;
use super::pack::live_cols;
use super::plan::{
    GROUP_TILES, KernelRows, PixelGrid, RowChunks, gcd, pixels_per_task, tile_pixels,
};
use super::tile::TileStore;
use super::{Apply, Conv2d};
use crate::error::Result;
use crate::kernels::gemm::{
    MR, NARROW_MR, NARROW_NR, NR, RunTable, Seg, Start, halves, panels, rows_panel,
    rows_panel_into, rows_panel_narrow, rows_panel_narrow_into,
};
use crate::kernels::window::NONE;
use crate::par;
use crate::scratch;

impl Conv2d {
    /// The forward pass of `batch` images into `y[..ny]`, the padded input in a buffer lent from
    /// the training workspace for the length of the call (or, in large batches, each task's
    /// images in scratch memory of its thread: [`Conv2d::images_per_task`]). With `keep` (eval
    /// mode) it reads the forward panels `&self` inference keeps, packing them if the weights
    /// changed; otherwise (training) the kernel rows it reads, in a buffer lent from the
    /// training workspace (the kept panels, if any, go there after the call).
    pub(super) fn forward_batch(
        &mut self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        keep: bool,
    ) -> Result<()> {
        if batch == 0 {
            return Ok(());
        }
        self.pack()?;
        let lent = if keep {
            self.packed_panels();
            None
        } else {
            // A training forward keeps no panels past the call: those an eval forward or
            // `&self` inference kept go to the workspace after it.
            Some(self.packed.take().unwrap_or_else(|| {
                let len = self.packed_len();
                let mut panels = scratch::lend(len);
                self.pack_forward(&mut panels[..len]);
                panels
            }))
        };
        let store = if self.relu {
            TileStore::Relu
        } else {
            TileStore::Plain
        };
        // The path and the panels' length as chosen with the pool, before it is taken.
        let (winograd, len) = (self.winograd(), self.packed_len());
        let mut pool = self.pool.take();
        let panels = match &lent {
            Some(lent) => &lent[..len],
            None => self.packed_panels(),
        };
        let packed = (panels, &self.bias_row[..]);
        let y = &mut y[..ny];
        let by_task = pool
            .is_none()
            .then(|| self.images_per_task(batch))
            .flatten();
        match by_task {
            // Winograd's tiles read the unpadded input.
            _ if let Some(tiling) = winograd => {
                self.winograd_forward(tiling, x, packed, y, batch, store, pool.as_mut())
            }
            // Without padding the padded input is the input: read in place, not copied.
            _ if self.g.unpadded() => {
                let input = Padded::Batch(x);
                self.convolve_stored(input, packed, y, batch, store, pool.as_mut());
            }
            Some(images) => {
                let input = Padded::ByTask { x, images };
                self.convolve_stored(input, packed, y, batch, store, None);
            }
            None => {
                let xp = self.padded_input(x, batch);
                let input = Padded::Batch(&xp);
                self.convolve_stored(input, packed, y, batch, store, pool.as_mut());
                scratch::give_back(xp);
            }
        }
        self.pool = pool;
        scratch::give_back(lent.unwrap_or_default());
        Ok(())
    }

    /// The forward pass from `&self`: the padded input, the fused pool's band buffers and
    /// positions (and, after a change through `weight_mut`, the packed weights) in scratch
    /// memory of the calling thread; `apply` says what it applies besides the convolution.
    pub(super) fn infer_batch(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        apply: Apply<'_>,
    ) -> Result<()> {
        self.check_params()?;
        if batch == 0 {
            return Ok(());
        }
        let g = self.g;
        let (hp, wp) = g.padded_in();
        let fused = self.pool.as_ref().filter(|_| matches!(apply, Apply::Own));
        let winograd = self.winograd();
        // Large batches without a fused pool: each task pads its own images.
        let by_task = fused
            .is_none()
            .then(|| self.images_per_task(batch))
            .flatten();
        let xp;
        let input = match by_task {
            // Without padding the padded input is the input: read in place, not copied; and
            // Winograd's tiles read the unpadded input.
            _ if g.unpadded() || winograd.is_some() => Padded::Batch(x),
            Some(images) => Padded::ByTask { x, images },
            None => {
                // The padding stays zero: only buffers last used for this layout are reused as
                // they are. The tail after the images held a larger batch's pixels: zeros again.
                let layout = scratch::tag(&[hp, wp, g.cin, g.ph, g.pw]);
                let len = batch * hp * wp * g.cin;
                let mut padded = scratch::take(len + MR, layout, 0.0);
                g.pad_input(x, &mut padded, batch);
                padded[len..len + MR].fill(0.0);
                xp = padded;
                Padded::Batch(&xp)
            }
        };
        let (mut packed, mut bias_row);
        let weights = if self.stale.forward_stale() {
            let len = self.packed_len();
            packed = scratch::take(len, scratch::ANY, 0.0);
            bias_row = scratch::take(self.bias_row.len(), scratch::ANY, 0.0);
            self.pack_forward(&mut packed[..len]);
            self.bias_into(&mut bias_row[..self.bias_row.len()]);
            (&packed[..len], &bias_row[..self.bias_row.len()])
        } else {
            (self.packed_panels(), &self.bias_row[..])
        };
        let store = match apply {
            Apply::Own if self.relu => TileStore::Relu,
            Apply::Own | Apply::Unfused => TileStore::Plain,
            Apply::Store(map) => TileStore::Channels(map),
        };
        let Some(fused) = fused else {
            if let Some(tiling) = winograd {
                self.winograd_forward(tiling, x, weights, &mut y[..ny], batch, store, None);
                return Ok(());
            }
            self.convolve_stored(input, weights, &mut y[..ny], batch, store, None);
            return Ok(());
        };
        // Tagged by the layer's geometry, so each call finds the buffers it grew before.
        let own = scratch::tag(&[g.oh, g.ow, g.cout, fused.kh, fused.kw]);
        let (mut argmax, mut bands) = (scratch::take(0, own, NONE), scratch::take(0, own, 0.0));
        let mut pool = FusedPool {
            argmax: std::mem::take(argmax.vec_mut()),
            bands: std::mem::take(bands.vec_mut()),
            indexed: 0,
            ..*fused
        };
        let y = &mut y[..ny];
        match winograd {
            Some(tiling) => {
                self.winograd_forward(tiling, x, weights, y, batch, store, Some(&mut pool))
            }
            None => self.convolve_stored(input, weights, y, batch, store, Some(&mut pool)),
        }
        (*argmax.vec_mut(), *bands.vec_mut()) = (pool.argmax, pool.bands);
        Ok(())
    }

    /// Images per parallel task when each task pads its own (so they stay in the cache of the
    /// thread that reads them), or `None` to pad the whole batch first: tasks of whole tiles
    /// (the same tiles as the batch's, so the same kernel rows skipped and the same values) of
    /// at most [`TASK_BYTES`] padded, at least four a thread.
    fn images_per_task(&self, batch: usize) -> Option<usize> {
        let g = self.g;
        let (hp, wp) = g.padded_in();
        let (pixels, tile) = (g.oh * g.ow, tile_pixels(g.cout));
        // Tiles of one position across images need a tile's worth of images.
        let images = if self.positions.is_empty() {
            tile / gcd(pixels, tile)
        } else {
            MR
        };
        let bytes = images * hp * wp * g.cin * std::mem::size_of::<f32>();
        let tasks = batch / images;
        (bytes <= TASK_BYTES && tasks >= 4 * rayon::current_num_threads()).then_some(images)
    }

    /// [`crate::layers::Layer::batch_grain`] of a dense convolution: the fewest images whose
    /// output pixels are whole tiles (a group of a multiple of them starts on a tile of the whole
    /// batch, so its tiles, and the kernel rows each skips, are the batch's), or a tile's worth
    /// where tiles hold one position across images. `None` with a fused max pool (its bands are
    /// rows of the batch) or grouped weights.
    pub(super) fn dense_grain(&self) -> Option<usize> {
        if self.pool.is_some() || self.grouped.is_some() {
            return None;
        }
        let (pixels, tile) = (self.g.oh * self.g.ow, tile_pixels(self.g.cout));
        Some(if self.positions.is_empty() {
            tile / gcd(pixels, tile)
        } else {
            MR
        })
    }

    /// Convolves `batch` images from `input` with the forward panels and bias row `packed` into
    /// `y`, storing each tile as `store` says, and through the fused max pool when `pool` is
    /// given.
    pub(super) fn convolve_stored(
        &self,
        input: Padded<'_>,
        (packed, bias_row): (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        store: TileStore<'_>,
        pool: Option<&mut FusedPool>,
    ) {
        let g = self.g;
        let (hp, wp) = g.padded_in();
        let (k, n) = (self.forward_steps(), g.cout);
        let runs = &self.runs;
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
        let tile = tile_pixels(n);
        let taps_of = kernel_rows.taps();
        // The bias as a narrow tile's start (the bias row may be narrower than a panel).
        let mut narrow_bias = [0.0; NR];
        let m = bias_row.len().min(NR);
        narrow_bias[..m].copy_from_slice(&bias_row[..m]);
        // Output pixels `first..end` (in batch order) into `out`, `stride` values a pixel (`n`
        // of them this layer's, from `offset` on), from `xp` holding the padded images from
        // pixel `base` on.
        let (stride, offset) = store.layout(n);
        // A fused pool's bands are not whole images; fewer images than a tile's rows would
        // compute mostly repeated rows.
        let by_position = !self.positions.is_empty() && pool.is_none() && batch >= MR;
        let row_chunks = RowChunks::new(k, g.kh);
        let convolve = |xp: &[f32], base: usize, first: usize, end: usize, out: &mut [f32]| {
            if tile == NARROW_MR {
                // At most 16 channels: twice the pixels a tile, all of its columns real.
                let bias = &narrow_bias;
                // Every tile's rows are written whole by the kernel before they are stored.
                let mut tile = [[0.0; NR]; NARROW_MR];
                let mut cursor = pixels.cursor(first - base);
                let mut rows_at = [0; NARROW_MR];
                for t in (first..end).step_by(NARROW_MR) {
                    let span =
                        pixels.tile_rows_into(&mut cursor, &mut rows_at, t - base, end - base);
                    let taps = taps_of(span);
                    let (runs, panel) = kernel_rows.select(taps, runs, packed);
                    if t + NARROW_MR <= end && n == NARROW_NR {
                        // A whole tile: stored straight into its output rows.
                        let out = &mut out[(t - first) * stride + offset..];
                        let epilogue = store.epilogue(t * stride, 0);
                        rows_panel_narrow_into(
                            out, stride, &epilogue, bias, xp, &rows_at, runs, panel,
                        );
                        continue;
                    }
                    rows_panel_narrow(&mut tile, Start::Row(bias), xp, &rows_at, runs, panel);
                    for (h, tile) in halves(&tile).into_iter().enumerate() {
                        let t = t + h * MR;
                        if t < end {
                            let out = &mut out[(t - first) * stride + offset..];
                            let shape = [MR.min(end - t), n, stride];
                            store.store(tile, out, shape, t * stride, 0);
                        }
                    }
                }
                return;
            }
            if by_position {
                // Tiles of one output position across images (`first..end` are whole images),
                // each kernel row's real columns, the chains continued in order.
                let count = self.positions.len();
                let (images, skip) = ((end - first) / count, (first - base) / count);
                for (p, position) in self.positions.iter().enumerate() {
                    let at = (p / g.ow) * pixels.row + (p % g.ow) * pixels.col;
                    for i in (0..images).step_by(MR) {
                        let rows = MR.min(images - i);
                        let rows_at: [usize; MR] = std::array::from_fn(|r| {
                            (skip + i + r.min(rows - 1)) * pixels.image + at
                        });
                        let t = first + i * count + p;
                        for j in 0..panels(n) {
                            let bias = bias_row[j * NR..(j + 1) * NR]
                                .try_into()
                                .expect("NR values");
                            let mut tile = [[0.0; NR]; MR];
                            let panel = &packed[j * k * NR..];
                            let mut start = Start::Row(bias);
                            for (runs, step) in position {
                                let panel = &panel[step * NR..];
                                rows_panel(&mut tile, start, xp, &rows_at, runs.all(), panel);
                                start = Start::Tile;
                            }
                            let out = &mut out[(t - first) * stride + offset + j * NR..];
                            let shape = [rows, NR.min(n - j * NR), count * stride];
                            store.store(&tile, out, shape, t * stride, j);
                        }
                    }
                }
                return;
            }
            if let Some(chunks) = row_chunks {
                // Panels larger than L1: a group of tiles at a time, a chunk of kernel rows
                // over each in turn.
                let mut tiles = [[[0.0; NR]; MR]; GROUP_TILES];
                let mut rows_at = [[0; MR]; GROUP_TILES];
                let mut taps = [(0, 0); GROUP_TILES];
                let mut cursor = pixels.cursor(first - base);
                for group in (first..end).step_by(GROUP_TILES * MR) {
                    let count = (end - group).div_ceil(MR).min(GROUP_TILES);
                    for (i, (rows_at, taps)) in rows_at.iter_mut().zip(&mut taps).enumerate() {
                        let t = group + i * MR;
                        if i < count {
                            let span =
                                pixels.tile_rows_into(&mut cursor, rows_at, t - base, end - base);
                            let hull = taps_of(span);
                            *taps = (hull.start, hull.end);
                        }
                    }
                    for j in 0..panels(n) {
                        let bias = bias_row[j * NR..(j + 1) * NR]
                            .try_into()
                            .expect("NR values");
                        let (tiles, panel) = (&mut tiles[..count], &packed[j * k * NR..]);
                        let (rows_at, taps) = (&rows_at[..count], &taps[..count]);
                        let start = Start::Row(bias);
                        chunks.tiles(tiles, start, xp, rows_at, taps, &kernel_rows, runs, panel);
                        for (i, tile) in tiles.iter().enumerate() {
                            let t = group + i * MR;
                            let out = &mut out[(t - first) * stride + offset + j * NR..];
                            let (rows, cols) = (MR.min(end - t), NR.min(n - j * NR));
                            store.store(tile, out, [rows, cols, stride], t * stride, j);
                        }
                    }
                }
                return;
            }
            let mut tile = [[0.0; NR]; MR];
            let mut cursor = pixels.cursor(first - base);
            let mut rows_at = [0; MR];
            for t in (first..end).step_by(MR) {
                let span = pixels.tile_rows_into(&mut cursor, &mut rows_at, t - base, end - base);
                let taps = taps_of(span);
                for j in 0..panels(n) {
                    let bias = bias_row[j * NR..(j + 1) * NR]
                        .try_into()
                        .expect("NR values");
                    let panel = &packed[j * k * NR..];
                    let (runs, panel) = kernel_rows.select(taps.clone(), runs, panel);
                    let out = &mut out[(t - first) * stride + offset + j * NR..];
                    let (rows, cols) = (MR.min(end - t), NR.min(n - j * NR));
                    if (rows, cols) == (MR, NR) {
                        // A whole tile: stored straight into its output rows.
                        let epilogue = store.epilogue(t * stride, j);
                        rows_panel_into(out, stride, &epilogue, bias, xp, &rows_at, runs, panel);
                        continue;
                    }
                    rows_panel(&mut tile, Start::Row(bias), xp, &rows_at, runs, panel);
                    store.store(&tile, out, [rows, cols, stride], t * stride, j);
                }
            }
        };
        let image = g.oh * g.ow;
        match (input, pool) {
            (Padded::Batch(xp), None) => {
                let per_task = if !by_position {
                    pixels_per_task(batch * image, tile)
                } else {
                    // Whole images, a tile's worth of them.
                    MR * image
                };
                par::chunks_mut(y, per_task * stride, |task, y_task| {
                    let first = task * per_task;
                    convolve(xp, 0, first, first + y_task.len() / stride, y_task);
                });
            }
            (Padded::ByTask { x, images }, None) => {
                let (x_image, padded) = (g.ih * g.iw * g.cin, hp * wp * g.cin);
                par::chunks_mut(y, images * image * stride, |task, y_task| {
                    let from = (task * images * x_image).min(x.len());
                    let x_task = &x[from..(from + images * x_image).min(x.len())];
                    // Every value is written: the images with their borders, then the
                    // tail a tile's loads may run into.
                    let count = y_task.len() / (image * stride);
                    let mut xp = scratch::take(count * padded + MR, scratch::ANY, 0.0);
                    let (xp_images, tail) = xp[..count * padded + MR].split_at_mut(count * padded);
                    for (dst, src) in xp_images
                        .chunks_exact_mut(padded)
                        .zip(x_task.chunks_exact(x_image))
                    {
                        g.pad_image(src, dst);
                    }
                    tail.fill(0.0);
                    let first = task * images * image;
                    convolve(&xp, first, first, first + count * image, y_task);
                });
            }
            (Padded::Batch(xp), Some(pool)) => {
                pool_bands(pool, g, y, batch, &|first, end, out: &mut [f32]| {
                    convolve(xp, 0, first, end, out)
                });
            }
            (Padded::ByTask { x, .. }, Some(pool)) => {
                // Not chosen with a fused pool (its bands are tasks of their own).
                let mut xp = scratch::take(batch * hp * wp * g.cin + MR, scratch::ANY, 0.0);
                g.pad_input(x, &mut xp, batch);
                let len = batch * hp * wp * g.cin;
                xp[len..len + MR].fill(0.0);
                let xp = &xp[..];
                pool_bands(pool, g, y, batch, &|first, end, out: &mut [f32]| {
                    convolve(xp, 0, first, end, out)
                });
            }
        }
    }
}

/// Most output pixels an image for which a layer convolves tiles of one output position across
/// images ([`position_runs`]).
pub(super) const POSITIONS: usize = 4;

/// For a layer whose output has at most [`POSITIONS`] pixels an image (ResNet-18's last two
/// stages at 32 x 32: 3 x 3 kernels over 2 x 2 and 1 x 1 images, where most taps read only
/// padding), for each output position (row-major): for each kernel row that reads a real input
/// row, the run of its real columns (from the image's first padded value) and that run's first
/// step in a forward panel, whose rows are `(ky, kx, ci)`. Skipping the taps that multiply only
/// padding's zeros leaves the sums as they are (each chain adds the real taps' products in the
/// same order). Empty for other layers, for narrow ones (at most 16 channels), and where a
/// kernel row's real columns are not one run (a column dilation) or a position has none.
pub(super) fn position_runs(g: &Geom) -> Vec<Vec<(RunTable, usize)>> {
    let (_, wp) = g.padded_in();
    if g.oh * g.ow > POSITIONS || g.dw != 1 || tile_pixels(g.cout) != MR {
        return Vec::new();
    }
    // Taps `k` whose input position `out * stride + k * dilation - padding` lies in `0..size`.
    let real =
        |taps: usize, out: usize, stride: usize, dilation: usize, pad: usize, size: usize| {
            (0..taps).filter(move |&k| (pad..pad + size).contains(&(out * stride + k * dilation)))
        };
    // The panels hold the kernel columns that read pixels for some output ([`live_cols`]).
    let live = live_cols(g);
    let mut positions = Vec::new();
    for (oy, ox) in (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox))) {
        let columns: Vec<usize> = real(g.kw, ox, g.sw, 1, g.pw, g.iw).collect();
        let (Some(&first), Some(&last)) = (columns.first(), columns.last()) else {
            return Vec::new();
        };
        let rows: Vec<(RunTable, usize)> = real(g.kh, oy, g.sh, g.dh, g.ph, g.ih)
            .map(|ky| {
                // Relative to the output pixel's own first value, as `tile_rows` gives it.
                let run = Seg {
                    offset: (ky * g.dh * wp + first) * g.cin,
                    len: (last + 1 - first) * g.cin,
                };
                let step = (ky * live.len() + first - live.start) * g.cin;
                (RunTable::new(vec![run]), step)
            })
            .collect();
        if rows.is_empty() {
            return Vec::new();
        }
        positions.push(rows);
    }
    positions
}

/// Most bytes of padded input one task of [`Padded::ByTask`] pads: a third of a 1 MiB L2, so
/// the images stay there while the task's tiles read them.
const TASK_BYTES: usize = 320 * 1024;

/// Where [`Conv2d::convolve_stored`] reads its padded input.
#[derive(Clone, Copy, Debug)]
pub(super) enum Padded<'a> {
    /// The whole batch, padded (with `MR` values after it), or for a layer without padding the
    /// input itself.
    Batch(&'a [f32]),
    /// The batch unpadded: tasks of `images` images, each padding its own into scratch memory
    /// of the thread running it.
    ByTask {
        /// The unpadded input.
        x: &'a [f32],
        /// Images a task.
        images: usize,
    },
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;
    use crate::layers::Layer;
    use crate::layers::conv::tile::ChannelStore;
    use crate::tensor::Mode;

    fn conv(cin: usize, cout: usize, stride: usize, hw: usize) -> Conv2d {
        let config = Conv2dConfig {
            stride: [stride, stride],
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(cin, cout, [3, 3])
        };
        Conv2d::new("conv", &config, [hw, hw], &mut init_rng(7)).expect("a valid convolution")
    }

    /// The convolution of `x` (`[N][H][W][cin]`) by the definition, in f64, and each output's
    /// sum of the products' magnitudes (what its rounding error scales with).
    pub(in crate::layers::conv) fn reference(
        layer: &Conv2d,
        x: &[f32],
        batch: usize,
    ) -> Vec<(f64, f64)> {
        let g = layer.g;
        let w = layer.weight.value.as_standard_layout();
        let w = w.as_slice().expect("contiguous");
        let bias = layer
            .bias
            .as_ref()
            .map(|b| b.value.as_slice().expect("contiguous"));
        let mut y = Vec::new();
        for n in 0..batch {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for co in 0..g.cout {
                        let b = bias.map_or(0.0, |b| f64::from(b[co]));
                        let (mut sum, mut mag) = (b, b.abs());
                        for ((ky, kx), ci) in (0..g.kh)
                            .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
                            .flat_map(|tap| (0..g.cin).map(move |ci| (tap, ci)))
                        {
                            let iy = (oy * g.sh + ky * g.dh).checked_sub(g.ph);
                            let ix = (ox * g.sw + kx * g.dw).checked_sub(g.pw);
                            if let (Some(iy), Some(ix)) = (iy, ix)
                                && iy < g.ih
                                && ix < g.iw
                            {
                                let v = f64::from(x[((n * g.ih + iy) * g.iw + ix) * g.cin + ci]);
                                let wt = f64::from(w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx]);
                                sum += v * wt;
                                mag += (v * wt).abs();
                            }
                        }
                        y.push((sum, mag));
                    }
                }
            }
        }
        y
    }

    /// A layer whose output has at most four pixels an image convolves only its real taps'
    /// kernel rows, a position at a time, and its values are the convolution's, in training and
    /// inference alike, in batches that pad whole and in tasks: a 3 x 3 kernel over a 1 x 1
    /// image (the centre tap), over a 2 x 2 image (four positions of two kernel rows each) and
    /// with stride 2 (one position, two rows), and with a row dilation; a 3 x 3 output has no
    /// positions.
    #[test]
    fn eval_forwards_keep_the_panels_and_training_forwards_do_not() {
        let mut layer = conv(5, 24, 1, 6);
        let batch = 3;
        let x: Vec<f32> = (0..batch * 6 * 6 * 5)
            .map(|i| (i % 11) as f32 - 5.0)
            .collect();
        let mut y = vec![0.0; batch * 6 * 6 * 24];
        let mut again = y.clone();
        layer
            .forward(&x, &mut y, batch, Mode::Eval)
            .expect("forward");
        assert!(
            layer.packed.get().is_some(),
            "an eval forward keeps its panels"
        );
        layer
            .forward(&x, &mut again, batch, Mode::Eval)
            .expect("forward");
        assert_eq!(y, again);
        layer
            .forward(&x, &mut again, batch, Mode::Train)
            .expect("forward");
        assert!(
            layer.packed.get().is_none(),
            "a training forward keeps none"
        );
        assert_eq!(y, again, "kept and lent panels give the same values");
    }

    #[test]
    fn small_outputs_convolve_only_the_real_taps() {
        let cases: [(usize, usize, usize, &[usize]); 5] = [
            (1, 1, 1, &[1]),
            (2, 1, 1, &[2, 2, 2, 2]),
            (2, 2, 1, &[2]),
            (3, 1, 2, &[1]),
            (3, 1, 1, &[]),
        ];
        for (hw, stride, dilation, rows) in cases {
            let config = Conv2dConfig {
                stride: [stride, stride],
                padding: [1, 1],
                padding_end: [1, 1],
                dilation: [dilation, 1],
                ..Conv2dConfig::new(7, 40, [3, 3])
            };
            let hw_in = [hw, if dilation == 1 { hw } else { 1 }];
            let mut layer = Conv2d::new("conv", &config, hw_in, &mut init_rng(9)).expect("valid");
            let found: Vec<usize> = layer.positions.iter().map(Vec::len).collect();
            assert_eq!(found, rows, "{config:?}");
            for batch in [13, 64] {
                let ny = layer.output_shape().numel();
                let x = values(batch * layer.input_shape().numel(), 3);
                let mut y = vec![f32::NAN; batch * ny];
                layer
                    .forward(&x, &mut y, batch, crate::Mode::Eval)
                    .expect("forward");
                let mut inferred = vec![f32::NAN; batch * ny];
                layer.infer(&x, &mut inferred, batch).expect("inference");
                let want = reference(&layer, &x, batch).into_iter().map(|(sum, _)| sum);
                for ((&got, &inf), want) in y.iter().zip(&inferred).zip(want) {
                    assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
                    assert_eq!(got.to_bits(), inf.to_bits());
                }
            }
        }
    }

    /// A layer without padding (ResNet's 1x1 stride-2 shortcut; a 3x3 valid convolution,
    /// narrow; a 3 x 3 kernel over 3 x 3 images, one position) reads its input in place, in
    /// buffers of exactly the batch (no slack after the last image), in small batches and in
    /// those that would pad by task: the convolution's values, the same bits in training, eval
    /// and `&self` inference.
    #[test]
    fn unpadded_layers_read_their_input_in_place() {
        for (cin, cout, kernel, stride, hw) in
            [(16, 32, 1, 2, 8), (5, 12, 3, 1, 6), (7, 40, 3, 1, 3)]
        {
            let config = Conv2dConfig {
                stride: [stride, stride],
                ..Conv2dConfig::new(cin, cout, [kernel, kernel])
            };
            let mut layer =
                Conv2d::new("conv", &config, [hw, hw], &mut init_rng(5)).expect("valid");
            assert!(layer.g.unpadded());
            for batch in [1, 5, 96] {
                let (nx, ny) = (layer.input_shape().numel(), layer.output_shape().numel());
                let x = values(batch * nx, cin + batch);
                let want = reference(&layer, &x, batch).into_iter().map(|(sum, _)| sum);
                let mut train = vec![f32::NAN; batch * ny];
                let mut eval = vec![f32::NAN; batch * ny];
                let mut inferred = vec![f32::NAN; batch * ny];
                layer
                    .forward(&x, &mut train, batch, Mode::Train)
                    .expect("forward");
                layer
                    .forward(&x, &mut eval, batch, Mode::Eval)
                    .expect("forward");
                layer.infer(&x, &mut inferred, batch).expect("inference");
                for (((&t, &e), &i), w) in train.iter().zip(&eval).zip(&inferred).zip(want) {
                    assert!((f64::from(t) - w).abs() < 1e-4, "{t} vs {w}");
                    assert_eq!((t.to_bits(), t.to_bits()), (e.to_bits(), i.to_bits()));
                }
            }
        }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
            .collect()
    }

    /// A batch whose tasks pad their own images gives, bit for bit, what each image gives alone
    /// (padded whole, in tasks of pixels): the plain store and the epilogue (batch norm factors,
    /// a residual read at each pixel's own place, the clamp), for narrow and wide tiles, a
    /// stride, image sizes whose tiles cross images and 2 x 2 outputs (tiles of one position
    /// across images), on one thread and on three.
    #[test]
    fn tasks_padding_their_own_images_match_one_image_at_a_time() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let layers = [(5, 16, 1, 4), (3, 40, 2, 6), (16, 12, 1, 6), (8, 40, 1, 2)];
                for (cin, cout, stride, hw) in layers {
                    let layer = conv(cin, cout, stride, hw);
                    let batch = 96;
                    let images = layer.images_per_task(batch);
                    assert!(images.is_some(), "{cin}->{cout} /{stride} {hw}x{hw}");
                    let (nx, ny) = (layer.input_shape().numel(), layer.output_shape().numel());
                    let x = values(batch * nx, cout);
                    let residual = values(batch * ny, cin);
                    let (scale, shift) = (values(cout, 1), values(cout, 2));
                    let store = ChannelStore {
                        affine: Some((&scale, &shift)),
                        residual: Some(&residual),
                        lo: 0.0,
                        hi: 6.0,
                        slice: None,
                    };
                    let mut whole = vec![f32::NAN; batch * ny];
                    let mut stored = vec![f32::NAN; batch * ny];
                    layer.infer(&x, &mut whole, batch).expect("inference");
                    layer
                        .infer_store(&x, &mut stored, batch, &store)
                        .expect("inference with an epilogue");
                    for n in 0..batch {
                        let x = &x[n * nx..][..nx];
                        let mut one = vec![f32::NAN; ny];
                        layer.infer(x, &mut one, 1).expect("inference");
                        let one_store = ChannelStore {
                            residual: Some(&residual[n * ny..][..ny]),
                            ..store
                        };
                        let mut one_stored = vec![f32::NAN; ny];
                        layer
                            .infer_store(x, &mut one_stored, 1, &one_store)
                            .expect("inference with an epilogue");
                        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        let at = n * ny..(n + 1) * ny;
                        assert_eq!(bits(&whole[at.clone()]), bits(&one), "image {n}");
                        assert_eq!(bits(&stored[at]), bits(&one_stored), "image {n}");
                    }
                }
            });
        }
    }
}
