//! The convolution's gradients: the weight and bias gradients as sums of outer products over
//! each image's pixels, and the input gradient as a convolution of the padded `dy` with the
//! flipped kernel (stride 1), or with its taps of each phase (strided layers).

use rayon::prelude::*;

use super::Conv2d;
use super::pack::{Source, fill_panel, live_tap};
use super::plan::{
    GROUP_TILES, KernelRows, PixelGrid, RowChunks, WGRAD_GROUP_BYTES, WgradBlock, pixels_per_task,
    tile_pixels,
};
use super::tile::{add_pixels, store};
use crate::kernels::gemm::{
    Grid, MR, NARROW_MR, NARROW_NR, NR, NarrowTile, RunTable, SHORT_MR, Seg, ShortTile, Start,
    Tile, panels, rows_panel, rows_panel_narrow, rows_panel_narrow_to, rows_panel_to, sum_outer,
    sum_outer_half, sum_outer_narrow, sum_outer_short,
};
use crate::layers::assign;
use crate::par;
use crate::scratch;
use crate::simd::{Simd, simd};

impl Conv2d {
    /// Weight and bias gradients of `batch` images from the padded input (`x` itself for a
    /// layer without padding, else its copy padded a group of images at a time by the thread
    /// that sums the group, or once into `xp` for a single run of the whole batch) and `dy`:
    /// read in place (`staged` is `None`), or from its copy staged in the layout
    /// [`Geom::staged_dy`](super::geometry::Geom::staged_dy)`(border)` (`staged` is
    /// `Some(border)`).
    ///
    /// The images go in fixed runs ([`wgrad_runs`]: sized by the layer and the batch, never
    /// the threads). Each run's gradient is one chain of multiply-adds from zero over its images
    /// in order and, within an image, over the output pixels in row-major order, into a slot of
    /// its own; the runs' gradients are then added in run order (`((r0 + r1) + r2) + ...`). A
    /// run passes over its images a group at a time ([`wgrad_group_images`]: groups that stay in
    /// L2 while the gradient's tiles pass over them), each tile's chains going on from the
    /// sums the group before stored in the slot, so the groups do not change a value. Each
    /// thread takes a contiguous share of the runs ([`par::chunks_mut`]): its own images, as
    /// every other pass of the step, padded once and read from its own cache. With a single run
    /// the threads split the gradient's rows instead. Either way the values do not depend on
    /// the number of threads.
    pub(super) fn param_grads(
        &mut self,
        x: &[f32],
        dy: &[f32],
        staged: Option<bool>,
        batch: usize,
    ) {
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
        let runs = wgrad_runs(k * cs, per_image, batch);
        let group = wgrad_group_images(per_image);
        let x_image = g.ih * g.iw * g.cin;
        let blocks = &self.wgrad_blocks[..];
        let (b_first, has_bias) = (first, self.bias.is_some());
        // On AVX2 a wide tile is two passes over the group, one for each half of its columns,
        // each reading 64 bytes of every pixel's `dy` (of 128 or 256): they read the group's
        // `dy` from a copy in slices of `NARROW_NR` channels instead ([`slice_dy`]), each half
        // a slice whose pixels follow one another, which streams whole lines from L2. The copy
        // pays where the tiles pass over the group many times (ResNet-20's 3 x 3 layers: 48 to
        // 192 passes, 5-10 % faster), not for a few (its 1 x 1 16 -> 32: 6 passes, 28 % slower).
        let passes = blocks.len() * cs / NARROW_NR;
        let sliced = g.cout > NARROW_NR && passes >= SLICE_PASSES && simd() == Simd::Avx2;
        if runs > 1 {
            // Each run's gradient into its own slot, one chain over the run's images, then the
            // slots added in run order: the threads take contiguous runs (their own images,
            // padded a group at a time, and their own staged `dy`), and no value depends on
            // which.
            let slot = k * cs + g.cout;
            let mut partials = scratch::lend(runs * slot);
            par::chunks_mut(&mut partials[..runs * slot], slot, |ri, part| {
                let run = par::share(batch, ri, runs);
                let (wgrad, bias) = part.split_at_mut(k * cs);
                let count = run.len().div_ceil(group);
                let most = run.len().div_ceil(count);
                // The group's images padded into this thread's buffer (and the `MR` values the
                // kernels may read past them), or read in place without padding.
                let mut padded =
                    (!g.unpadded()).then(|| scratch::take(most * a_image + MR, scratch::ANY, 0.0));
                let mut slices =
                    sliced.then(|| scratch::take(most * g.oh * g.ow * cs, scratch::ANY, 0.0));
                for gi in 0..count {
                    let part = par::share(run.len(), gi, count);
                    let images = run.start + part.start..run.start + part.end;
                    let first = gi == 0;
                    let grid = Grid {
                        images: images.len(),
                        ..grid
                    };
                    let (xp, base) = match padded.as_deref_mut() {
                        Some(buf) => {
                            let src = x[images.start * x_image..images.end * x_image]
                                .chunks_exact(x_image);
                            for (dst, src) in buf.chunks_exact_mut(a_image).zip(src) {
                                g.pad_image(src, dst);
                            }
                            buf[images.len() * a_image..][..MR].fill(0.0);
                            (&buf[..], 0)
                        }
                        None => (x, images.start * a_image),
                    };
                    let b0 = images.start * image + b_first;
                    if let Some(slices) = slices.as_deref_mut() {
                        let at = |n, y, x| n * image + b_first + y * b_row + x * b_col;
                        slice_dy(src, at, images.clone(), (g.oh, g.ow, cs), NARROW_NR, slices);
                        let slice = images.len() * g.oh * g.ow * NARROW_NR;
                        let grid = Grid {
                            b_image: g.oh * g.ow * NARROW_NR,
                            b_row: g.ow * NARROW_NR,
                            b_col: NARROW_NR,
                            ..grid
                        };
                        sum_halves(blocks, wgrad, cs, first, (xp, base), (slices, slice), grid);
                    } else {
                        sum_blocks(
                            blocks,
                            wgrad,
                            cs,
                            g.cout,
                            first,
                            (xp, base),
                            (src, b0),
                            grid,
                        );
                    }
                    if !has_bias {
                        continue;
                    }
                    if first {
                        bias.fill(0.0);
                    }
                    for n in images {
                        for y in 0..g.oh {
                            let line = n * image + b_first + y * b_row;
                            add_pixels(bias, &src[line..line + g.ow * b_col], b_col);
                        }
                    }
                }
            });
            // Run 0's values, then each further run's added: one chain per value.
            let sums = &partials[..runs * slot];
            par::chunks_mut(&mut self.wgrad[..k * cs], SUM_CHUNK, |i, out| {
                let at = i * SUM_CHUNK;
                out.copy_from_slice(&sums[at..at + out.len()]);
                for part in sums.chunks_exact(slot).skip(1) {
                    let part = &part[at..at + out.len()];
                    out.iter_mut().zip(part).for_each(|(o, p)| *o += p);
                }
            });
            if has_bias {
                let bgrad = &mut self.bgrad[..g.cout];
                bgrad.copy_from_slice(&sums[k * cs..slot]);
                for part in sums.chunks_exact(slot).skip(1) {
                    bgrad
                        .iter_mut()
                        .zip(&part[k * cs..])
                        .for_each(|(o, p)| *o += p);
                }
            }
            scratch::give_back(partials);
        } else {
            // One run: the threads split the gradient's rows, each over every image.
            if !g.unpadded() {
                self.xp = self.padded_input(x, batch);
            }
            let xp = if g.unpadded() { x } else { &self.xp[..] };
            let bias = self.bias.is_some().then_some(&mut self.bgrad[..g.cout]);
            let wgrad = &mut self.wgrad[..k * cs];
            let dy = DyRows {
                src,
                first,
                image,
                row: b_row,
                col: b_col,
            };
            grads_by_rows(
                blocks,
                wgrad,
                bias,
                xp,
                dy,
                grid,
                batch,
                (g.oh, g.ow, g.cout),
            );
        }
        if self.weight.requires_grad {
            let wgrad = &self.wgrad[..k * cs];
            let live = |tap: usize| live_tap(&g, tap);
            match self.weight.grad.as_slice_mut() {
                Some(oihw) => to_oihw(wgrad, oihw, g.cin, g.kh * g.kw, cs, live),
                None => {
                    let taps = g.kh * g.kw;
                    let oihw = (0..g.cout).flat_map(|co| {
                        (0..g.cin).flat_map(move |ci| {
                            (0..taps).map(move |tap| {
                                let at = (tap * g.cin + ci) * cs + co;
                                if live(tap) { wgrad[at] } else { 0.0 }
                            })
                        })
                    });
                    assign(&mut self.weight.grad, oihw);
                }
            }
        }
        if let Some(bias) = &mut self.bias
            && bias.requires_grad
        {
            assign(&mut bias.grad, self.bgrad.iter().copied());
        }
    }

    /// Input gradient of `batch` images from the padded `dy`: its staged copy, or `dy` itself
    /// where the layer reads it without a border
    /// ([`Geom::borderless_dy`](super::geometry::Geom::borderless_dy)). With `add`, each value
    /// is added into what `dx` holds (`dx + part`, as adding the written gradient made it).
    pub(super) fn input_grad(
        &mut self,
        dx: &mut [f32],
        dy: Option<&[f32]>,
        batch: usize,
        add: bool,
    ) {
        let g = self.g;
        let (kb, rows) = (self.back_steps(), batch * g.ih * g.iw);
        let dyp = dy.unwrap_or(&self.dyp[..]);
        let packed_back = &self.packed_back[..];
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
                let taps = kernel_rows.taps();
                let tile = tile_pixels(g.cin);
                let per_task = pixels_per_task(rows, tile);
                let row_chunks = RowChunks::new(kb, g.kh);
                par::chunks_mut(
                    &mut dx[..rows * g.cin],
                    per_task * g.cin,
                    |task, dx_task| {
                        let first = task * per_task;
                        let end = first + dx_task.len() / g.cin;
                        // One tile for the task (the kernels start each from zeros): not a
                        // 1.5 KB array zeroed for every twelve pixels. The tiles find their
                        // pixels from a cursor, without two divisions a tile.
                        // Each tile's offsets go into one array for the task, written as the
                        // kernel reads them (an array returned and copied whole stalled on
                        // store forwarding: a third of this loop's own time).
                        let mut cursor = pixels.cursor(first);
                        if tile == NARROW_MR {
                            // At most 16 input channels: the narrow tiles.
                            let mut acc: NarrowTile = [[0.0; NR]; NARROW_MR];
                            let mut rows_at = [0; NARROW_MR];
                            for t in (first..end).step_by(NARROW_MR) {
                                let span = pixels.tile_rows_into(&mut cursor, &mut rows_at, t, end);
                                let (runs, panel) =
                                    kernel_rows.select(taps(span), runs, packed_back);
                                let out = &mut dx_task[(t - first) * g.cin..];
                                if t + NARROW_MR <= end && g.cin == NARROW_NR {
                                    // A whole tile: stored straight into its pixels.
                                    let at = std::array::from_fn(|i| i * NARROW_NR);
                                    rows_panel_narrow_to(out, &at, add, dyp, &rows_at, runs, panel);
                                    continue;
                                }
                                rows_panel_narrow(
                                    &mut acc,
                                    Start::Zero,
                                    dyp,
                                    &rows_at,
                                    runs,
                                    panel,
                                );
                                store_narrow(&acc, out, end - t, g.cin, add);
                            }
                            return;
                        }
                        if let Some(chunks) = row_chunks {
                            // Panels larger than L1: a group of tiles at a time, a chunk of
                            // kernel rows over each in turn.
                            let mut tiles = [[[0.0; NR]; MR]; GROUP_TILES];
                            let mut rows_at = [[0; MR]; GROUP_TILES];
                            let mut taps = [(0, 0); GROUP_TILES];
                            for group in (first..end).step_by(GROUP_TILES * MR) {
                                let count = (end - group).div_ceil(MR).min(GROUP_TILES);
                                for i in 0..count {
                                    let t = group + i * MR;
                                    let span =
                                        pixels.tile_rows_into(&mut cursor, &mut rows_at[i], t, end);
                                    let hull = kernel_rows.hull(span);
                                    taps[i] = (hull.start, hull.end);
                                }
                                for j in 0..panels(g.cin) {
                                    let panel = &packed_back[j * kb * NR..];
                                    let (tiles, rows_at) = (&mut tiles[..count], &rows_at[..count]);
                                    chunks.tiles(
                                        tiles,
                                        Start::Zero,
                                        dyp,
                                        rows_at,
                                        &taps[..count],
                                        &kernel_rows,
                                        runs,
                                        panel,
                                    );
                                    let cols = NR.min(g.cin - j * NR);
                                    for (i, tile) in tiles.iter().enumerate() {
                                        let t = group + i * MR;
                                        let out = &mut dx_task[(t - first) * g.cin + j * NR..];
                                        let rows = tile.iter().zip(out.chunks_mut(g.cin));
                                        for (row, dst) in rows.take(MR.min(end - t)) {
                                            put(dst, row, cols, add);
                                        }
                                    }
                                }
                            }
                            return;
                        }
                        let mut tile: Tile = [[0.0; NR]; MR];
                        let mut rows_at = [0; MR];
                        for t in (first..end).step_by(MR) {
                            let span = pixels.tile_rows_into(&mut cursor, &mut rows_at, t, end);
                            let taps = taps(span);
                            for j in 0..panels(g.cin) {
                                let panel = &packed_back[j * kb * NR..];
                                let (runs, panel) = kernel_rows.select(taps.clone(), runs, panel);
                                let cols = NR.min(g.cin - j * NR);
                                let out = &mut dx_task[(t - first) * g.cin + j * NR..];
                                if t + MR <= end && cols == NR {
                                    // A whole tile: stored straight into its pixels.
                                    let at = std::array::from_fn(|i| i * g.cin);
                                    rows_panel_to(out, &at, add, dyp, &rows_at, runs, panel);
                                    continue;
                                }
                                rows_panel(&mut tile, Start::Zero, dyp, &rows_at, runs, panel);
                                let rows = tile.iter().zip(out.chunks_mut(g.cin));
                                for (row, dst) in rows.take(MR.min(end - t)) {
                                    put(dst, row, cols, add);
                                }
                            }
                        }
                    },
                );
            }
            None => self.input_grad_phases(dx, dy, batch, add),
        }
    }

    /// [`Conv2d::input_grad`] of a layer whose input gradient is not direct (strided layers):
    /// by phases ([`Geom::phases`](super::geometry::Geom::phases)). The input pixels of one
    /// phase (row and column remainders modulo the stride) are read by the same taps, so their
    /// gradient is a stride-1 convolution of the bordered `dy` with those taps' rows of the
    /// flipped kernel: a 3 x 3 kernel at stride 2 reads 1, 2, 2 or 4 taps, not 9.
    ///
    /// Each chain is that of the flipped kernel over every tap (`(fy, fx, co)` in order)
    /// without the taps that do not read the pixel, whose steps would add `0 * w` to a chain
    /// that starts at `+0` and so change nothing.
    fn input_grad_phases(&mut self, dx: &mut [f32], dy: Option<&[f32]>, batch: usize, add: bool) {
        let g = self.g;
        let cs = g.cs();
        let (hd, wd, top, left) = g.padded_dy();
        let (row_phases, col_phases) = g.phases();
        // Each phase's runs over the padded `dy`, and its panels in `phase_panels`: panel `j`
        // of every phase (`[steps][NR]`, the flipped kernel's rows of its taps in order) in
        // `[cin / NR][phases]`, filled from the weight directly (see below).
        let mut phases = Vec::with_capacity(row_phases.len() * col_phases.len());
        // Each tap of each phase: its kernel position (unflipped) and its first step among
        // all the phases' steps.
        let mut order = Vec::with_capacity(g.kh * g.kw);
        let mut total = 0;
        // A phase's taps that read a real output for some pixel of it: the others read only
        // the border of `dy`, whose zeros add nothing to a chain but (at most) the sign of a
        // zero. ResNet-18's layer4.0.conv1 at 32 x 32 (2 x 2 -> 1 x 1) reads 4 taps, not 9.
        let real = |taps: &[(usize, isize)], count: usize, out: usize| -> Vec<(usize, isize)> {
            let reads = |e: isize| e < out as isize && e + count as isize > 0;
            taps.iter().copied().filter(|&(_, e)| reads(e)).collect()
        };
        for rows in &row_phases {
            let row_taps = real(&rows.taps, rows.count, g.oh);
            for cols in &col_phases {
                let col_taps = real(&cols.taps, cols.count, g.ow);
                let ey0 = row_taps.iter().map(|t| t.1).min().unwrap_or(0);
                let ex0 = col_taps.iter().map(|t| t.1).min().unwrap_or(0);
                let steps = row_taps.len() * col_taps.len() * g.cout;
                let mut segs: Vec<Seg> = Vec::new();
                let mut k = 0;
                for &(ky, ey) in &row_taps {
                    for &(kx, ex) in &col_taps {
                        let offset = ((ey - ey0) as usize * wd + (ex - ex0) as usize) * cs;
                        match segs.last_mut() {
                            // Consecutive in `dy` (its channels fill the pixels): one run.
                            Some(last) if last.offset + last.len == offset => last.len += g.cout,
                            _ => segs.push(Seg {
                                offset,
                                len: g.cout,
                            }),
                        }
                        order.push((ky * g.kw + kx, total + k));
                        k += g.cout;
                    }
                }
                // Pixel `(u, v)` of the phase reads `dy` from row `top + u + ey0`, column
                // `left + v + ex0` on.
                let first_row = (top as isize + ey0) as usize;
                let first_col = (left as isize + ex0) as usize;
                phases.push(Phase {
                    rows: (rows.phase, rows.count),
                    cols: (cols.phase, cols.count),
                    base: (first_row * wd + first_col) * cs,
                    runs: RunTable::new(segs),
                    panels: total,
                    tapless: steps == 0,
                });
                total += steps;
            }
        }
        // Row `step + co` of panel `j` holds the weights of input channels `j * NR..` (zeros
        // past `cin`) for output channel `co` at the step's kernel position: the rows the
        // input-gradient panels hold for that tap, copied from the weight in parallel over the
        // panels rather than packed whole and copied again (ResNet-18's layer4.0.conv1: 4.7 MB).
        let len = panels(g.cin) * total * NR;
        self.phase_panels = scratch::lend(len);
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        let rows: Vec<(usize, usize)> = order.iter().map(|&(tap, step)| (step * NR, tap)).collect();
        // (No taps at all when the stride skips every input pixel: `dx` is then zeros.)
        self.phase_panels[..len]
            .par_chunks_exact_mut(total.max(1) * NR)
            .enumerate()
            .for_each(|(j, panel)| {
                fill_panel(panel, g.cout, &rows, w, Source::input_lanes(&g, j));
            });
        let (dyp, phase_panels) = (dy.unwrap_or(&self.dyp[..]), &self.phase_panels[..]);
        let image = g.ih * g.iw * g.cin;
        let per_task = batch.div_ceil(4 * rayon::current_num_threads()).max(1);
        let tapless = phases.iter().any(|phase| phase.tapless);
        par::chunks_mut(
            &mut dx[..batch * image],
            per_task * image,
            |task, dx_task| {
                let n0 = task * per_task;
                // The pixels no tap reads get the `+0` their empty chains would be, in one
                // sequential pass rather than a tile of zeros for every twelve of them (added
                // phase by phase below: `-0 + +0` is `+0`, so other pixels must not get it).
                if tapless && !add {
                    dx_task.fill(0.0);
                }
                // One tile of each width for the task (the kernels start each from zeros).
                let mut narrow: NarrowTile = [[0.0; NR]; NARROW_MR];
                let mut wide: Tile = [[0.0; NR]; MR];
                for phase in phases.iter().filter(|phase| add || !phase.tapless) {
                    let ((py, nu), (px, nv)) = (phase.rows, phase.cols);
                    let pixels = PixelGrid {
                        h: nu,
                        w: nv,
                        image: hd * wd * cs,
                        row: wd * cs,
                        col: cs,
                    };
                    // The phase's pixels of this task's images, in batch order, and where
                    // each lies in `dx_task`: pixel `(u, v)` of image `n` at `origin` and
                    // `outputs`' offsets (a tile's at once, not four divisions a pixel).
                    let (first, end) =
                        (n0 * nu * nv, n0 * nu * nv + dx_task.len() / image * nu * nv);
                    let outputs = PixelGrid {
                        h: nu,
                        w: nv,
                        image,
                        row: g.sh * g.iw * g.cin,
                        col: g.sw * g.cin,
                    };
                    let origin = (py * g.iw + px) * g.cin;
                    if phase.tapless {
                        // Adding: the empty chains' `+0` into each of the phase's pixels.
                        let (row, col) = (outputs.row, outputs.col);
                        let images = dx_task.len() / image;
                        let pixels = (0..images).flat_map(|n| {
                            (0..nu).flat_map(move |u| (0..nv).map(move |v| (n, u, v)))
                        });
                        for (n, u, v) in pixels {
                            let at = n * image + u * row + v * col;
                            for d in &mut dx_task[origin + at..][..g.cin] {
                                *d += 0.0;
                            }
                        }
                        continue;
                    }
                    let runs = phase.runs.all();
                    let panel = |j: usize| &phase_panels[(j * total + phase.panels) * NR..];
                    // The phase's `dy` from its pixel `(0, 0)`'s reads, its `dx` from that
                    // pixel, so that a tile's offsets go to the kernel as the cursors write them
                    // into the task's arrays (an array mapped whole after scalar stores stalls on
                    // store forwarding).
                    let (src, out) = (&dyp[phase.base..], &mut dx_task[origin..]);
                    // Cursors over the phase's pixels in `dy` and in `dx_task`.
                    let (mut from, mut to) = (pixels.cursor(first), outputs.cursor(0));
                    if g.cin <= NARROW_NR {
                        let (mut rows_at, mut dst) = ([0; NARROW_MR], [0; NARROW_MR]);
                        for t in (first..end).step_by(NARROW_MR) {
                            pixels.tile_rows_into(&mut from, &mut rows_at, t, end);
                            outputs.tile_rows_into(&mut to, &mut dst, t - first, end - first);
                            if t + NARROW_MR <= end && g.cin == NARROW_NR {
                                // A whole tile: stored straight into its pixels.
                                rows_panel_narrow_to(out, &dst, add, src, &rows_at, runs, panel(0));
                                continue;
                            }
                            rows_panel_narrow(
                                &mut narrow,
                                Start::Zero,
                                src,
                                &rows_at,
                                runs,
                                panel(0),
                            );
                            for (row, &at) in narrow.iter().zip(&dst).take(end - t) {
                                put(&mut out[at..], row, g.cin, add);
                            }
                        }
                        continue;
                    }
                    let (mut rows_at, mut dst) = ([0; MR], [0; MR]);
                    for t in (first..end).step_by(MR) {
                        pixels.tile_rows_into(&mut from, &mut rows_at, t, end);
                        outputs.tile_rows_into(&mut to, &mut dst, t - first, end - first);
                        for j in 0..panels(g.cin) {
                            let cols = NR.min(g.cin - j * NR);
                            let out = &mut out[j * NR..];
                            if t + MR <= end && cols == NR {
                                // A whole tile: stored straight into its pixels.
                                rows_panel_to(out, &dst, add, src, &rows_at, runs, panel(j));
                                continue;
                            }
                            rows_panel(&mut wide, Start::Zero, src, &rows_at, runs, panel(j));
                            for (row, &at) in wide.iter().zip(&dst).take(end - t) {
                                put(&mut out[at..], row, cols, add);
                            }
                        }
                    }
                }
            },
        );
    }
}

/// The fewest passes of the AVX2 wide tiles' halves over a group of images for which the weight
/// gradient copies the group's `dy` into slices first ([`slice_dy`]).
const SLICE_PASSES: usize = 32;

/// Copies the `dy` of `images` (`oh x ow` pixels of `cs` values, pixel `(n, y, x)` at `at(n, y,
/// x)` in `src`) into `dst` in slices of `width` channels: slice `h` holds channels `h * width..
/// (h + 1) * width` of every pixel, the pixels in order, `width` values each.
fn slice_dy(
    src: &[f32],
    at: impl Fn(usize, usize, usize) -> usize,
    images: std::ops::Range<usize>,
    (oh, ow, cs): (usize, usize, usize),
    width: usize,
    dst: &mut [f32],
) {
    let slice = images.len() * oh * ow * width;
    let mut p = 0;
    for n in images {
        for y in 0..oh {
            for x in 0..ow {
                let pixel = &src[at(n, y, x)..][..cs];
                for (h, values) in pixel.chunks_exact(width).enumerate() {
                    dst[h * slice + p..][..width].copy_from_slice(values);
                }
                p += width;
            }
        }
    }
}

/// One phase of a strided input gradient (see [`Conv2d::input_grad_phases`]).
struct Phase {
    /// The row phase (input rows `phase + stride * u`) and its number of rows.
    rows: (usize, usize),
    /// The column phase and its number of columns.
    cols: (usize, usize),
    /// Where pixel `(0, 0)` of an image reads the padded `dy` from.
    base: usize,
    /// The taps' runs from there.
    runs: RunTable,
    /// Its first step among all the phases' (where its rows start in each panel of
    /// `phase_panels`).
    panels: usize,
    /// Whether no tap reads its pixels (a 1 x 1 kernel at stride 2 reads one phase of four):
    /// their gradient is zeros.
    tapless: bool,
}

/// Values a thread adds up at a time when the weight gradient's runs are summed.
const SUM_CHUNK: usize = 4096;

/// Runs of images a weight gradient of `grad` values sums apart, each into a slot of its own
/// (then added in run order), for `batch` images of `per_image` bytes of padded input and `dy`:
/// as many as keep the slots' bytes at most a [`SLOT_SHARE`]th of the images' (each slot is
/// written once more and read by the adds, where the images' tiles stay in L2), rounded down to
/// even (as many runs for each of two threads), at least two (the work of two threads), at most
/// the groups of about [`WGRAD_GROUP_BYTES`] the images make (rounded up to even) and the
/// images. One run where the gradient is larger than half the images (ResNet-18's layer4 at
/// 32 x 32: its 9.4 MB gradient against 4.2 MB of images, better summed once, the threads
/// splitting its rows) or for a single image. Depends on the layer and the batch only, never
/// on the threads, so neither do the values.
fn wgrad_runs(grad: usize, per_image: usize, batch: usize) -> usize {
    let (images, grad) = (batch * per_image, grad * size_of::<f32>());
    if batch < 2 || images < 2 * grad {
        return 1;
    }
    let groups = batch.div_ceil(wgrad_group_images(per_image));
    let slots = images / (grad * SLOT_SHARE).max(1) / 2 * 2;
    slots.clamp(2, groups.next_multiple_of(2)).min(batch)
}

/// The most bytes of images a weight gradient's slot may stand for: 32 times its own
/// ([`wgrad_runs`]).
const SLOT_SHARE: usize = 32;

/// The images of a group, at most: about [`WGRAD_GROUP_BYTES`] of padded input and `dy`, at
/// least one image. A run's images go in as few groups as hold them, of equal size (within
/// one); the groups do not change a value (a run's chains go on from one group to the next).
fn wgrad_group_images(per_image: usize) -> usize {
    (WGRAD_GROUP_BYTES / per_image.max(1)).max(1)
}

/// Where a weight gradient reads `dy`'s pixels: the buffer, the offset of an image's first pixel
/// and the distances between images, rows and pixels.
#[derive(Clone, Copy)]
struct DyRows<'a> {
    src: &'a [f32],
    first: usize,
    image: usize,
    row: usize,
    col: usize,
}

/// The weight gradient (and the bias's, with `bias`) of all `batch` images as one run: the
/// threads take contiguous runs of the row blocks, each over every image of the padded input
/// `xp`. `(oh, ow, cout)` is the output's size.
#[allow(clippy::too_many_arguments)]
fn grads_by_rows(
    blocks: &[WgradBlock],
    wgrad: &mut [f32],
    bias: Option<&mut [f32]>,
    xp: &[f32],
    dy: DyRows<'_>,
    grid: Grid,
    batch: usize,
    (oh, ow, cout): (usize, usize, usize),
) {
    let cs = grid.b_col;
    let grid = Grid {
        images: batch,
        ..grid
    };
    let mut rows = Vec::with_capacity(blocks.len());
    let mut rest = wgrad;
    for block in blocks {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(block.rows * cs);
        rest = tail;
        rows.push(head);
    }
    if let Some(b) = bias {
        b.fill(0.0);
        for n in 0..batch {
            for y in 0..oh {
                let line = n * dy.image + dy.first + y * dy.row;
                add_pixels(b, &dy.src[line..line + ow * dy.col], dy.col);
            }
        }
    }
    par::chunks_mut(&mut rows, 1, |i, out| {
        let out = &mut *out[0];
        if batch == 0 {
            out.fill(0.0);
            return;
        }
        let block = std::slice::from_ref(&blocks[i]);
        sum_blocks(
            block,
            out,
            cs,
            cout,
            true,
            (xp, 0),
            (dy.src, dy.first),
            grid,
        );
    });
}

/// The gradient of the `grid.images` images of a group into the rows of `blocks` in `wgrad`
/// (`cs` values a row; `cout` of them real), from zeros for a run's `first` group, else going on
/// from the sums those rows hold: one chain per value over the images and, within one, the
/// output pixels in row-major order. The group's padded input is `xp` from `base`, its `dy` is
/// `src` from `b0`.
#[allow(clippy::too_many_arguments)]
fn sum_blocks(
    blocks: &[WgradBlock],
    wgrad: &mut [f32],
    cs: usize,
    cout: usize,
    first: bool,
    (xp, base): (&[f32], usize),
    (src, b0): (&[f32], usize),
    grid: Grid,
) {
    for LiveBlock {
        block,
        row,
        a_rows,
        grid,
        b0: at,
    } in live_blocks(blocks, base, grid)
    {
        let b0 = b0 + at;
        if cout <= NARROW_NR {
            // One narrow tile of `NARROW_MR` rows covers the block's columns; a short one a
            // block of at most `SHORT_MR` rows (the stem's last).
            let out = &mut wgrad[row * cs..];
            let rows = block.rows;
            if rows <= SHORT_MR {
                let a_rows = a_rows[..SHORT_MR].try_into().expect("SHORT_MR rows");
                let kernel = |tile: &mut ShortTile, start: Start<'_>| {
                    sum_outer_short(tile, start, xp, a_rows, src, b0, grid);
                };
                narrow_block(out, rows, cs, first, kernel);
            } else {
                let kernel = |tile: &mut NarrowTile, start: Start<'_>| {
                    sum_outer_narrow(tile, start, xp, &a_rows, src, b0, grid);
                };
                narrow_block(out, rows, cs, first, kernel);
            }
            continue;
        }
        let a_rows: &[usize; MR] = a_rows[..MR].try_into().expect("MR rows");
        for j in 0..cs / NR {
            let out = &mut wgrad[row * cs + j * NR..];
            let mut tile = [[0.0; NR]; MR];
            let start = resume(&mut tile, out, block.rows, NR, cs, first);
            sum_outer(&mut tile, start, xp, a_rows, src, b0 + j * NR, grid);
            store(&tile, out, block.rows, NR, cs);
        }
    }
}

/// A block of a weight gradient whose taps read at least one real pixel, cut to those pixels.
struct LiveBlock<'a> {
    block: &'a WgradBlock,
    /// The block's first row in the gradient.
    row: usize,
    /// Where each of its rows' steps starts in the padded input, at the first pixel it reads.
    a_rows: [usize; NARROW_MR],
    /// The grid cut to the output pixels it reads.
    grid: Grid,
    /// The offset of the first of those pixels in `dy`'s grid.
    b0: usize,
}

/// The blocks of `blocks` whose taps read a real pixel of the padded input at `base`, in
/// order. The others read only padding: their gradient is zero, which `to_oihw` writes without
/// reading their rows.
fn live_blocks(
    blocks: &[WgradBlock],
    base: usize,
    grid: Grid,
) -> impl Iterator<Item = LiveBlock<'_>> {
    let starts = blocks.iter().scan(0, |row, block| {
        let first = *row;
        *row += block.rows;
        Some(first)
    });
    blocks
        .iter()
        .zip(starts)
        .filter(|(block, _)| !block.out_rows.is_empty() && !block.out_cols.is_empty())
        .map(move |(block, row)| {
            let (rows, cols) = (block.out_rows.clone(), block.out_cols.clone());
            let skip = rows.start * grid.a_row + cols.start * grid.a_col;
            LiveBlock {
                block,
                row,
                a_rows: block.offsets.map(|o| o + base + skip),
                grid: Grid {
                    rows: rows.len(),
                    cols: cols.len(),
                    ..grid
                },
                b0: rows.start * grid.b_row + cols.start * grid.b_col,
            }
        })
}

/// [`sum_blocks`] for wide tiles on AVX2 from `dy` in slices ([`slice_dy`], `slice` values
/// apart, from the group's first pixel): each half of a tile one [`sum_outer_half`] pass over
/// its slice, from zeros or going on ([`resume`]).
fn sum_halves(
    blocks: &[WgradBlock],
    wgrad: &mut [f32],
    cs: usize,
    first: bool,
    (xp, base): (&[f32], usize),
    (slices, slice): (&[f32], usize),
    grid: Grid,
) {
    for LiveBlock {
        block,
        row,
        a_rows,
        grid,
        b0,
    } in live_blocks(blocks, base, grid)
    {
        let a_rows: &[usize; MR] = a_rows[..MR].try_into().expect("MR rows");
        for h in 0..cs / NARROW_NR {
            let out = &mut wgrad[row * cs + h * NARROW_NR..];
            let mut tile = [[0.0; NR]; MR];
            let start = resume(&mut tile, out, block.rows, NARROW_NR, cs, first);
            sum_outer_half(&mut tile, start, xp, a_rows, slices, h * slice + b0, grid);
            store(&tile, out, block.rows, NARROW_NR, cs);
        }
    }
}

/// One narrow weight-gradient tile of `R` rows over a group of images: `kernel` from zeros or
/// going on ([`resume`]), its first `rows` rows stored into `out` (`cs` apart, their first
/// [`NARROW_NR`] values).
#[inline(always)]
fn narrow_block<const R: usize>(
    out: &mut [f32],
    rows: usize,
    cs: usize,
    first: bool,
    kernel: impl FnOnce(&mut [[f32; NR]; R], Start<'_>),
) {
    let mut tile = [[0.0; NR]; R];
    let start = resume(&mut tile, out, rows, NARROW_NR, cs, first);
    kernel(&mut tile, start);
    for (t, dst) in tile.iter().zip(out.chunks_mut(cs)).take(rows) {
        dst[..NARROW_NR].copy_from_slice(&t[..NARROW_NR]);
    }
}

/// Where a weight-gradient tile's chains start: from zeros for a run's first group
/// ([`Start::Zero`]), else from the sums so far, the first `rows` rows of `out` (`cs` apart,
/// their first `cols` values) loaded into `tile` ([`Start::Tile`]).
#[inline(always)]
fn resume<const R: usize>(
    tile: &mut [[f32; NR]; R],
    out: &[f32],
    rows: usize,
    cols: usize,
    cs: usize,
    first: bool,
) -> Start<'static> {
    if first {
        return Start::Zero;
    }
    for (t, src) in tile.iter_mut().zip(out.chunks(cs)).take(rows) {
        t[..cols].copy_from_slice(&src[..cols]);
    }
    Start::Tile
}

/// Stores the first `rows` rows (at most `NARROW_MR`) of the narrow `tile`, `cols` (at most
/// `NARROW_NR`) columns each, at `out[r * cols + c]`: the pixels of a narrow input gradient
/// (added into them with `add`).
fn store_narrow(tile: &NarrowTile, out: &mut [f32], rows: usize, cols: usize, add: bool) {
    for (row, dst) in tile.iter().zip(out.chunks_mut(cols)).take(rows) {
        put(dst, row, cols, add);
    }
}

/// Copies the first `cols` values of `row` to the start of `dst` (adds them into it with
/// `add`): a whole 16- or 32-wide row as one fixed-size copy (a register or two), not a
/// `memcpy` call for every pixel, which took a sixth of a strided 16-channel input gradient's
/// time.
#[inline(always)]
pub(super) fn put(dst: &mut [f32], row: &[f32; NR], cols: usize, add: bool) {
    if add {
        add_row(dst, row, cols);
    } else if cols == NR
        && let Some(dst) = dst.first_chunk_mut::<NR>()
    {
        *dst = *row;
    } else if cols == NARROW_NR
        && let (Some(dst), Some(row)) = (
            dst.first_chunk_mut::<NARROW_NR>(),
            row.first_chunk::<NARROW_NR>(),
        )
    {
        *dst = *row;
    } else {
        dst[..cols].copy_from_slice(&row[..cols]);
    }
}

/// Adds the first `cols` values of `row` into the start of `dst`, a whole 16- or 32-wide row as
/// fixed-size arrays (vector adds).
#[inline(always)]
fn add_row(dst: &mut [f32], row: &[f32; NR], cols: usize) {
    if cols == NR
        && let Some(dst) = dst.first_chunk_mut::<NR>()
    {
        dst.iter_mut().zip(row).for_each(|(d, r)| *d += r);
    } else if cols == NARROW_NR
        && let (Some(dst), Some(row)) = (
            dst.first_chunk_mut::<NARROW_NR>(),
            row.first_chunk::<NARROW_NR>(),
        )
    {
        dst.iter_mut().zip(row).for_each(|(d, r)| *d += r);
    } else {
        dst[..cols].iter_mut().zip(row).for_each(|(d, r)| *d += r);
    }
}

/// Output channels [`to_oihw`] moves at a time: one cache line of a weight-gradient row.
const OIHW_CHANNELS: usize = 16;

/// Input channels [`to_oihw`] moves at a time.
const OIHW_INPUTS: usize = 8;

/// Kernel positions [`to_oihw`] moves at a time (all of a 3 x 3 kernel's).
const OIHW_TAPS: usize = 9;

/// Writes the weight gradient `wgrad` (`[(tap, ci)][co < cs]`) into `oihw` in PyTorch's layout
/// (`[co][ci][tap]`, `taps` kernel positions), zeros for the positions `live` says read only
/// padding (whose rows of `wgrad` it does not read: the weight gradient skips them). Each thread takes a range of output channels;
/// for [`OIHW_INPUTS`] input channels at a time it moves blocks of [`OIHW_CHANNELS`] output
/// channels through a small buffer, so the gradient rows it reads stay in cache across its
/// blocks and it writes runs of `OIHW_INPUTS * taps` values. Element by element in PyTorch's
/// order, the 9.4 MB gradient of a 512-channel 3 x 3 convolution took ~13x as long (a page
/// apart on every read).
fn to_oihw(
    wgrad: &[f32],
    oihw: &mut [f32],
    cin: usize,
    taps: usize,
    cs: usize,
    live: impl Fn(usize) -> bool + Sync,
) {
    let row = cin * taps;
    if row == 0 {
        return;
    }
    let cout = oihw.len() / row;
    let live: Vec<bool> = (0..taps).map(live).collect();
    let threads = rayon::current_num_threads().max(1);
    let per_thread = cout.div_ceil(threads).div_ceil(OIHW_CHANNELS) * OIHW_CHANNELS;
    oihw.par_chunks_mut(per_thread.max(1) * row)
        .enumerate()
        .for_each(|(part, rows)| {
            let first = part * per_thread.max(1);
            let channels = rows.len() / row;
            let mut block = [[0.0; OIHW_INPUTS * OIHW_TAPS]; OIHW_CHANNELS];
            for c0 in (0..cin).step_by(OIHW_INPUTS) {
                let inputs = OIHW_INPUTS.min(cin - c0);
                for t0 in (0..taps).step_by(OIHW_TAPS) {
                    let ts = OIHW_TAPS.min(taps - t0);
                    let live = &live[t0..t0 + ts];
                    // The positions that read only padding are zeros in every block of this
                    // `(c0, t0)`: written once here, not for every block of output channels
                    // (8 of 9 positions of ResNet-18's layer4 at 32 x 32).
                    if live.contains(&false) {
                        block.iter_mut().for_each(|values| values.fill(0.0));
                    }
                    for l0 in (0..channels).step_by(OIHW_CHANNELS) {
                        let lanes = OIHW_CHANNELS.min(channels - l0);
                        for (tap, _) in live.iter().enumerate().filter(|(_, live)| **live) {
                            for c in 0..inputs {
                                let at = ((t0 + tap) * cin + c0 + c) * cs + first + l0;
                                for (l, &v) in wgrad[at..][..lanes].iter().enumerate() {
                                    block[l][c * ts + tap] = v;
                                }
                            }
                        }
                        for (l, values) in block.iter().enumerate().take(lanes) {
                            let line = &mut rows[(l0 + l) * row..][..row];
                            if ts == taps {
                                let run = inputs * taps;
                                line[c0 * taps..][..run].copy_from_slice(&values[..run]);
                            } else {
                                for c in 0..inputs {
                                    let at = (c0 + c) * taps + t0;
                                    line[at..][..ts].copy_from_slice(&values[c * ts..][..ts]);
                                }
                            }
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;
    use crate::layers::Layer;
    use crate::tensor::Mode;

    /// One-row images with padding 1: the top and bottom kernel rows read only padding. The
    /// batch is large enough that the images go in two runs of several groups, which skip those
    /// rows' (zero) tiles; every gradient element must still be its sum.
    #[test]
    fn weight_gradient_over_image_groups_keeps_padding_rows_zero() {
        let (cin, cout, width, batch) = (64, 8, 40, 64);
        let config = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(cin, cout, [3, 3])
        };
        let mut layer = Conv2d::new("conv", &config, [1, width], &mut init_rng(5)).expect("valid");
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        // Pixel-major: `[n][x][c]`.
        let x: Vec<f32> = (0..batch * width * cin).map(value).collect();
        let dy: Vec<f32> = (0..batch * width * cout)
            .map(|i| value(i * 3 + 1))
            .collect();
        let mut y = vec![0.0; dy.len()];
        layer
            .forward(&x, &mut y, batch, Mode::Train)
            .expect("forward");
        layer.backward(&x, &y, &dy, None, batch).expect("backward");
        let grad = layer.weight().grad.as_slice().expect("contiguous");
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (mut sum, mut scale) = (0.0f64, 0.0f64);
                        for n in 0..batch {
                            for ox in 0..width {
                                let ix = (ox + kx).wrapping_sub(1);
                                if ky == 1 && ix < width {
                                    let a = x[(n * width + ix) * cin + ci];
                                    let p =
                                        f64::from(a) * f64::from(dy[(n * width + ox) * cout + co]);
                                    (sum, scale) = (sum + p, scale + p.abs());
                                }
                            }
                        }
                        let got = grad[((co * cin + ci) * 3 + ky) * 3 + kx];
                        if ky != 1 {
                            assert_eq!(got.to_bits(), 0, "({co}, {ci}, {ky}, {kx}) reads padding");
                        } else {
                            let error = (f64::from(got) - sum).abs();
                            assert!(
                                error <= 2e-5 * scale,
                                "({co}, {ci}, {ky}, {kx}): {got} vs {sum}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Over images so small that most kernel positions read only padding (1 x 1 and 2 x 2, as
    /// in ResNet-18's layer3 and layer4, at strides 1 and 2), the weight gradient of those
    /// positions is written as exact zeros without being computed and the input gradient reads
    /// only the kernel rows and columns packed for it (as does the forward pass): all must match
    /// a plain sum over the definition, with the workspace's buffers and the gradient holding
    /// NaN beforehand. Wide tiles (40 -> 36) and narrow ones (3 -> 16 and 7 -> 16: the 27 and
    /// 63 reduction steps end in a block of 3 rows, the short narrow tile), and images of 5 x 7.
    #[test]
    fn gradients_over_tiny_images_skip_padding_only_taps() {
        let batch = 5;
        let shapes = [
            ([1, 1], 1),
            ([2, 2], 1),
            ([2, 2], 2),
            ([1, 3], 1),
            ([3, 1], 2),
            ([5, 7], 1),
            ([5, 7], 2),
        ];
        let channels = [(40, 36), (3, 16), (7, 16)];
        for ((input, stride), (cin, cout)) in shapes
            .into_iter()
            .flat_map(|shape| channels.map(|c| (shape, c)))
        {
            let config = Conv2dConfig {
                stride: [stride; 2],
                padding: [1, 1],
                padding_end: [1, 1],
                bias: false,
                ..Conv2dConfig::new(cin, cout, [3, 3])
            };
            let mut layer = Conv2d::new("conv", &config, input, &mut init_rng(9)).expect("valid");
            let g = layer.g;
            let Poisoned { x, dy, y, dx, w } = forward_backward(&mut layer, batch);
            let grad = layer.weight().grad.as_slice().expect("contiguous");
            // Sums in f64 and the sums of the products' magnitudes, by the definition:
            // output `(oy, ox)` reads input `(oy * s - 1 + ky, ox * s - 1 + kx)`.
            let mut want_w = vec![(0.0f64, 0.0f64); cout * cin * 9];
            let mut want_x = vec![(0.0f64, 0.0f64); x.len()];
            let mut want_y = vec![(0.0f64, 0.0f64); y.len()];
            for n in 0..batch {
                for (oy, ox) in (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox))) {
                    for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                        let (iy, ix) = (
                            (oy * stride + ky).wrapping_sub(1),
                            (ox * stride + kx).wrapping_sub(1),
                        );
                        if iy >= g.ih || ix >= g.iw {
                            continue;
                        }
                        for co in 0..cout {
                            let d = f64::from(dy[((n * g.oh + oy) * g.ow + ox) * cout + co]);
                            for ci in 0..cin {
                                let at = ((n * g.ih + iy) * g.iw + ix) * cin + ci;
                                let k = (co * cin + ci) * 9 + ky * 3 + kx;
                                let (pw, px) = (f64::from(x[at]) * d, f64::from(w[k]) * d);
                                want_w[k] = (want_w[k].0 + pw, want_w[k].1 + pw.abs());
                                want_x[at] = (want_x[at].0 + px, want_x[at].1 + px.abs());
                                let py = f64::from(w[k]) * f64::from(x[at]);
                                let o = ((n * g.oh + oy) * g.ow + ox) * cout + co;
                                want_y[o] = (want_y[o].0 + py, want_y[o].1 + py.abs());
                            }
                        }
                    }
                }
            }
            let case = (input, stride, cin, cout);
            for (k, (&got, &(sum, scale))) in grad.iter().zip(&want_w).enumerate() {
                if live_tap(&g, k % 9) {
                    let error = (f64::from(got) - sum).abs();
                    assert!(error <= 2e-5 * scale, "{case:?} weight {k}: {got} vs {sum}");
                } else {
                    assert_eq!(got.to_bits(), 0, "{case:?} weight {k} reads only padding");
                }
            }
            for (i, (&got, &(sum, scale))) in y.iter().zip(&want_y).enumerate() {
                let error = (f64::from(got) - sum).abs();
                assert!(error <= 2e-5 * scale, "{case:?} y {i}: {got} vs {sum}");
            }
            for (i, (&got, &(sum, scale))) in dx.iter().zip(&want_x).enumerate() {
                let error = (f64::from(got) - sum).abs();
                assert!(error <= 2e-5 * scale, "{case:?} dx {i}: {got} vs {sum}");
            }
        }
    }

    /// The weight gradient of wide layers (more than 16 output channels: on AVX2 each half of
    /// a tile reads the group's `dy` sliced 16 channels at a time, where the tiles pass over it
    /// often enough) over several runs of images, the last partial, runs of several groups, at strides 1 and 2, with
    /// a partial last block of rows and a partial panel of columns, one-row images, and a 1 x 1
    /// layer (few passes: not sliced): every element is the definition's chain of `mul_add`s
    /// over the images, rows and columns in order, bit for bit (the padding's zeros add nothing
    /// to a chain that is not `-0`, and none is here).
    #[test]
    fn wide_weight_gradient_is_one_chain_over_the_positions() {
        let batch = 5;
        for (cin, cout, kernel, stride, pad, input) in [
            (16, 40, 3, 1, 1, [24, 24]),
            (16, 32, 3, 2, 1, [23, 23]),
            (7, 33, 3, 1, 1, [31, 30]),
            (16, 64, 3, 1, 1, [1, 40]),
            (8, 64, 1, 2, 0, [30, 30]),
            // Images of 450 KB: a group holds one, so each of the two runs' chains goes on
            // from one group (image) to the next.
            (32, 32, 3, 1, 1, [40, 40]),
        ] {
            let config = Conv2dConfig {
                stride: [stride; 2],
                padding: [pad; 2],
                padding_end: [pad; 2],
                bias: false,
                ..Conv2dConfig::new(cin, cout, [kernel, kernel])
            };
            let mut layer = Conv2d::new("conv", &config, input, &mut init_rng(5)).expect("valid");
            let g = layer.g;
            let Poisoned { x, dy, .. } = forward_backward(&mut layer, batch);
            let grad = layer.weight().grad.as_slice().expect("contiguous");
            // The gradient over the images in `runs` runs (`par::share`), each one chain from
            // zero, the runs added in order: the layer's for one of the run counts.
            let want = |k: usize, runs: usize| {
                let (co, ci, ky, kx) = (
                    k / (cin * kernel * kernel),
                    k / (kernel * kernel) % cin,
                    k / kernel % kernel,
                    k % kernel,
                );
                let chain = |images: std::ops::Range<usize>| {
                    let mut want = 0.0f32;
                    for n in images {
                        for (oy, ox) in (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox))) {
                            let (iy, ix) = (
                                (oy * stride + ky).wrapping_sub(pad),
                                (ox * stride + kx).wrapping_sub(pad),
                            );
                            let v = if iy < g.ih && ix < g.iw {
                                x[((n * g.ih + iy) * g.iw + ix) * cin + ci]
                            } else {
                                0.0
                            };
                            let d = dy[((n * g.oh + oy) * g.ow + ox) * cout + co];
                            want = v.mul_add(d, want);
                        }
                    }
                    want
                };
                let sums = (0..runs).map(|r| chain(crate::par::share(batch, r, runs)));
                sums.reduce(|a, b| a + b).unwrap_or(0.0)
            };
            let case = (cin, cout, kernel, stride, input);
            let matches = (1..=batch).any(|runs| {
                grad.iter()
                    .enumerate()
                    .all(|(k, &got)| got.to_bits() == want(k, runs).to_bits())
            });
            assert!(
                matches,
                "{case:?}: no grouping of the chains gives the gradient"
            );
        }
    }

    /// Every gradient of a 1 x 1 convolution without padding, which reads its input and `dy`
    /// in place (no padded copy, no bordered `dy`) and at stride 2 fills the pixels no tap reads
    /// with zeros apart from the phase that reads them: the weight, bias and input gradients
    /// match sums over the definition, over narrow and wide channel counts, odd image sizes
    /// (the last row and column at stride 2), strides 1 and 2, and a fused ReLU (whose mask
    /// stages `dy` after all), with the workspace's buffers, `dx` and the gradients holding NaN
    /// beforehand.
    #[test]
    fn pointwise_gradients_read_input_and_dy_in_place() {
        let batch = 3;
        for (cin, cout) in [(16, 32), (8, 16), (40, 36), (3, 70)] {
            for (stride, relu) in [
                ([1, 1], false),
                ([2, 2], false),
                ([2, 2], true),
                ([2, 1], false),
            ] {
                let config = Conv2dConfig {
                    stride,
                    bias: true,
                    ..Conv2dConfig::new(cin, cout, [1, 1])
                };
                let input = [5, 7];
                let mut layer =
                    Conv2d::new("conv", &config, input, &mut init_rng(3)).expect("valid");
                if relu {
                    layer.fuse_relu();
                }
                let g = layer.g;
                let Poisoned { x, dy, y, dx, w } = forward_backward(&mut layer, batch);
                let grad = layer.weight().grad.as_slice().expect("contiguous");
                let bias = layer
                    .bias()
                    .expect("a bias")
                    .grad
                    .as_slice()
                    .expect("contiguous");
                // Sums in f64 and the sums of the products' magnitudes; `dy` through the
                // ReLU's mask where one is fused.
                let mut want_w = vec![(0.0f64, 0.0f64); cout * cin];
                let mut want_b = vec![(0.0f64, 0.0f64); cout];
                let mut want_x = vec![(0.0f64, 0.0f64); x.len()];
                for n in 0..batch {
                    for (oy, ox) in (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox))) {
                        let (iy, ix) = (oy * g.sh, ox * g.sw);
                        for (co, bias) in want_b.iter_mut().enumerate() {
                            let o = ((n * g.oh + oy) * g.ow + ox) * cout + co;
                            let d = if relu && y[o] <= 0.0 {
                                0.0
                            } else {
                                f64::from(dy[o])
                            };
                            *bias = (bias.0 + d, bias.1 + d.abs());
                            for ci in 0..cin {
                                let at = ((n * g.ih + iy) * g.iw + ix) * cin + ci;
                                let k = co * cin + ci;
                                let (pw, px) = (f64::from(x[at]) * d, f64::from(w[k]) * d);
                                want_w[k] = (want_w[k].0 + pw, want_w[k].1 + pw.abs());
                                want_x[at] = (want_x[at].0 + px, want_x[at].1 + px.abs());
                            }
                        }
                    }
                }
                let case = (cin, cout, stride, relu);
                let close = |got: f32, (sum, scale): (f64, f64)| {
                    (f64::from(got) - sum).abs() <= 2e-5 * scale
                };
                for (k, (&got, &want)) in grad.iter().zip(&want_w).enumerate() {
                    assert!(close(got, want), "{case:?} weight {k}: {got} vs {want:?}");
                }
                for (co, (&got, &want)) in bias.iter().zip(&want_b).enumerate() {
                    assert!(close(got, want), "{case:?} bias {co}: {got} vs {want:?}");
                }
                for (i, (&got, &want)) in dx.iter().zip(&want_x).enumerate() {
                    assert!(close(got, want), "{case:?} dx {i}: {got} vs {want:?}");
                    if want.1 == 0.0 {
                        assert_eq!(got.to_bits(), 0, "{case:?} dx {i} is read by no tap");
                    }
                }
            }
        }
    }

    /// A convolution's input, `dy`, output, input gradient and weights after a training forward
    /// and backward of [`forward_backward`].
    struct Poisoned {
        x: Vec<f32>,
        dy: Vec<f32>,
        y: Vec<f32>,
        dx: Vec<f32>,
        w: Vec<f32>,
    }

    /// A training forward and backward of `batch` images of fixed values through `layer`, with
    /// the workspace's buffers, the weight gradient and `dx` holding NaN beforehand (so that a
    /// value the backward fails to write shows).
    fn forward_backward(layer: &mut Conv2d, batch: usize) -> Poisoned {
        let g = layer.g;
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let x: Vec<f32> = (0..batch * g.ih * g.iw * g.cin).map(value).collect();
        let dy: Vec<f32> = (0..batch * g.oh * g.ow * g.cout)
            .map(|i| value(i * 3 + 1))
            .collect();
        let poisoned: Vec<Vec<f32>> = (0..6).map(|_| vec![f32::NAN; 1 << 16]).collect();
        poisoned.into_iter().for_each(scratch::give_back);
        let mut y = vec![0.0; dy.len()];
        layer
            .forward(&x, &mut y, batch, Mode::Train)
            .expect("forward");
        layer.weight_mut().grad.fill(f32::NAN);
        let mut dx = vec![f32::NAN; x.len()];
        layer
            .backward(&x, &y, &dy, Some(&mut dx), batch)
            .expect("backward");
        let w = layer
            .weight()
            .value
            .as_slice()
            .expect("contiguous")
            .to_vec();
        Poisoned { x, dy, y, dx, w }
    }

    /// The weight and bias gradients of `batch` images of fixed values through a fresh layer
    /// of `config` over `input`-sized images, on a pool of `threads` threads.
    fn grads_on(
        config: &Conv2dConfig,
        input: [usize; 2],
        batch: usize,
        threads: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        pool.install(|| {
            let mut layer = Conv2d::new("conv", config, input, &mut init_rng(7)).expect("valid");
            let g = layer.g;
            let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
            let x: Vec<f32> = (0..batch * g.ih * g.iw * g.cin).map(value).collect();
            let dy: Vec<f32> = (0..batch * g.oh * g.ow * g.cout)
                .map(|i| value(i * 3 + 1))
                .collect();
            let mut y = vec![0.0; dy.len()];
            layer
                .forward(&x, &mut y, batch, Mode::Train)
                .expect("forward");
            layer.backward(&x, &y, &dy, None, batch).expect("backward");
            let w = layer.weight().grad.as_slice().expect("contiguous").to_vec();
            let b = layer
                .bias()
                .map(|b| b.grad.as_slice().expect("contiguous").to_vec())
                .unwrap_or_default();
            (w, b)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Over shapes and batch sizes (batches that are not a multiple of the runs, single
        /// runs, gradients larger than the images), the weight and bias gradients summed by
        /// runs of images are the same bits at 1, 2 and 3 threads (the tests above check the
        /// values against their sums).
        #[test]
        fn weight_gradient_groups_do_not_depend_on_threads(
            cin in 1usize..40,
            cout in 1usize..40,
            kernel in 1usize..4,
            size in 1usize..9,
            stride in 1usize..3,
            pad in 0usize..2,
            batch in 1usize..20,
            bias in proptest::bool::ANY,
        ) {
            let config = Conv2dConfig {
                stride: [stride; 2],
                padding: [pad; 2],
                padding_end: [pad; 2],
                bias,
                ..Conv2dConfig::new(cin, cout, [kernel; 2])
            };
            let input = [size + kernel - 1, size + kernel];
            let (w1, b1) = grads_on(&config, input, batch, 1);
            for threads in [2, 3] {
                let (w, b) = grads_on(&config, input, batch, threads);
                let same = |a: &[f32], b: &[f32]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                };
                proptest::prop_assert!(same(&w, &w1), "weight at {threads} threads");
                proptest::prop_assert!(same(&b, &b1), "bias at {threads} threads");
            }
            proptest::prop_assert!(w1.iter().chain(&b1).all(|v| v.is_finite()));
        }
    }

    /// The runs depend on the layer and the batch only: as many as keep the slots at most a
    /// 32nd of the images, even, at least two, at most the half-L2 groups and the images; one
    /// run when the gradient is larger than half the batch's images (ResNet-18's layer4) or the
    /// batch is a single image.
    #[test]
    fn weight_gradient_runs_follow_layer_and_batch() {
        // ResNet-20's stages at batch 64 (padded input and staged `dy`): stage 1's 9 KB
        // gradient in 22 runs (one for each group of three images), stage 2's 37 KB in 4,
        // stage 3's 147 KB in 2.
        let stage1 = (34 * 34 * 16 + 34 * 34 * 16) * 4;
        let stage2 = (18 * 18 * 32 + 18 * 18 * 32) * 4;
        let stage3 = (10 * 10 * 64 + 10 * 10 * 64) * 4;
        assert_eq!(wgrad_runs(16 * 9 * 16, stage1, 64), 22);
        assert_eq!(wgrad_runs(32 * 9 * 32, stage2, 64), 4);
        assert_eq!(wgrad_runs(64 * 9 * 64, stage3, 64), 2);
        // The seed's layer2.0 (5 x 5, 32 -> 32 at 16 x 16): a 102 KB gradient, two runs of
        // seven groups.
        let seed2 = (20 * 20 * 32 + 20 * 20 * 32) * 4;
        assert_eq!(wgrad_runs(800 * 32, seed2, 64), 2);
        assert_eq!(wgrad_group_images(seed2), 5);
        // Five images of three a group: two runs; three images, two runs; one image, one.
        assert_eq!(wgrad_runs(16 * 9 * 16, stage1, 5), 2);
        assert_eq!(wgrad_runs(16 * 9 * 16, stage1, 3), 2);
        assert_eq!(wgrad_runs(16 * 9 * 16, stage1, 1), 1);
        // ResNet-18's layer4 at 32 x 32 input (2 x 2 images): its 9.4 MB gradient in one run.
        let layer4 = (4 * 4 * 512 + 4 * 4 * 512) * 4;
        assert_eq!(wgrad_runs(512 * 9 * 512, layer4, 64), 1);
        assert_eq!(wgrad_runs(100, 4, 0), 1);
    }

    /// The blocked transposition puts gradient `(tap, ci, co)` at PyTorch's `[co][ci][tap]`,
    /// for channel counts on and off its block of output channels.
    #[test]
    fn weight_gradient_reaches_pytorch_layout() {
        for (cin, cout, taps) in [
            (3, 5usize, 9usize),
            (7, 40, 4),
            (1, 16, 1),
            (2, 33, 6),
            (9, 70, 25),
        ] {
            let cs = cout.div_ceil(NR) * NR;
            let wgrad: Vec<f32> = (0..taps * cin * cs).map(|i| i as f32).collect();
            let mut oihw = vec![f32::NAN; cout * cin * taps];
            to_oihw(&wgrad, &mut oihw, cin, taps, cs, |_| true);
            for co in 0..cout {
                for ci in 0..cin {
                    for tap in 0..taps {
                        assert_eq!(
                            oihw[(co * cin + ci) * taps + tap],
                            wgrad[(tap * cin + ci) * cs + co],
                            "{cin}->{cout}, {taps} taps: ({co}, {ci}, {tap})"
                        );
                    }
                }
            }
        }
    }
}
