//! How the convolution's work is cut: pixels per parallel task, where a tile's pixels lie, which
//! kernel rows a tile skips because they read only padding, and the weight gradient's row blocks.

use std::ops::Range;

use super::geometry::Geom;
use crate::kernels::gemm::{MR, NARROW_MR, NARROW_NR, NR, RunTable, Runs, Start, Tile, rows_panel};

/// Most output pixels per parallel task in the forward and input-gradient passes (in whole tiles;
/// the results do not depend on it).
pub(super) const PIXELS_PER_TASK: usize = 8 * MR;

/// Pixels per parallel task for `pixels` output pixels in tiles of `tile` pixels (`MR` or
/// `NARROW_MR`, which divide it): [`PIXELS_PER_TASK`], or fewer (whole tiles) when that would
/// leave fewer than eight tasks per thread, so that small batches (batch 1 has 64 pixels in the
/// seed model's last convolution) still spread evenly over the threads.
pub(super) fn pixels_per_task(pixels: usize, tile: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads();
    pixels
        .div_ceil(tile)
        .div_ceil(tasks)
        .clamp(1, PIXELS_PER_TASK / tile)
        * tile
}

/// The pixels of one output tile of a layer whose tiles are `columns` wide: `NARROW_MR` when
/// they fit the narrow kernels' [`NARROW_NR`] columns, else `MR`.
pub(super) fn tile_pixels(columns: usize) -> usize {
    if columns <= NARROW_NR { NARROW_MR } else { MR }
}

/// Bytes of padded input and `dy` the weight gradient streams per group of images: half of a
/// Zen L2, so they stay there while every gradient tile passes over them.
pub(super) const WGRAD_GROUP_BYTES: usize = 512 * 1024;

/// Where the pixels of a batch of `h x w` images start in a buffer: pixel `x` of row `y` of image
/// `n` at `n * image + y * row + x * col`.
#[derive(Clone, Copy, Debug)]
pub(super) struct PixelGrid {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) image: usize,
    pub(super) row: usize,
    pub(super) col: usize,
}

impl PixelGrid {
    /// Offsets of the `R` pixels `first..first + R` (in batch order; the last one repeated
    /// past `end`), with two divisions per tile rather than two per pixel, and the lowest and
    /// highest image row among them. (The layers walk their tiles with
    /// [`PixelGrid::tile_rows_into`]; the tests check that walk against this.)
    #[cfg(test)]
    pub(super) fn tile_rows<const R: usize>(
        &self,
        first: usize,
        end: usize,
    ) -> ([usize; R], (usize, usize)) {
        let mut rows = [0; R];
        let span = self.tile_rows_into(&mut self.cursor(first), &mut rows, first, end);
        (rows, span)
    }

    /// Image, row and column of pixel `first` (in batch order).
    pub(super) fn cursor(&self, first: usize) -> [usize; 3] {
        let (n, pix) = (first / (self.h * self.w), first % (self.h * self.w));
        [n, pix / self.w, pix % self.w]
    }

    /// [`PixelGrid::tile_rows`] from `cursor`, pixel `first`'s place ([`PixelGrid::cursor`]),
    /// which it leaves at pixel `first + R` when that is before `end`, into `rows`, the array
    /// a task's tiles reuse: the tiles of a task in order find their pixels without the two
    /// divisions a tile, and the kernel reads the offsets where they were written (a tile's
    /// offsets written as scalars and then copied whole into the array the kernel reads stalled
    /// on store forwarding: ~2 % of a forward's time, a third of the input gradient's own).
    #[inline(always)]
    pub(super) fn tile_rows_into<const R: usize>(
        &self,
        cursor: &mut [usize; 3],
        rows: &mut [usize; R],
        first: usize,
        end: usize,
    ) -> (usize, usize) {
        let [mut n, mut y, mut x] = *cursor;
        if x + R < self.w && first + R < end {
            // Inside one image row (most tiles of a wide image): consecutive columns.
            let at = n * self.image + y * self.row + x * self.col;
            for (i, row) in rows.iter_mut().enumerate() {
                *row = at + i * self.col;
            }
            cursor[2] = x + R;
            return (y, y);
        }
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
        *cursor = [n, y, x];
        span
    }
}

/// Which kernel rows of a tile read anything but padding: output row `r` reads buffer row
/// `r * stride + ky * dilation`, whose real rows are `lo..hi` (the others are the zero border).
#[derive(Clone, Copy, Debug)]
pub(super) struct KernelRows {
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) stride: usize,
    pub(super) dilation: usize,
    pub(super) kh: usize,
}

impl KernelRows {
    /// The kernel rows that read a real row for some output row in `rows` (lowest, highest),
    /// and those between. The rows outside multiply zeros only: a tile skips them, and the top
    /// and bottom tiles of a 5 x 5 kernel with padding 2 do 20-40 % less work.
    pub(super) fn hull(&self, (low, high): (usize, usize)) -> Range<usize> {
        let (mut first, mut end) = (self.kh, 0);
        // Without a dilation (nearly every layer), no division for each tile.
        let taps = |rows: usize| {
            if self.dilation == 1 {
                rows
            } else {
                rows.div_ceil(self.dilation)
            }
        };
        for r in low..=high {
            let start = taps(self.lo.saturating_sub(r * self.stride));
            let stop = taps(self.hi.saturating_sub(r * self.stride)).min(self.kh);
            if start < stop {
                (first, end) = (first.min(start), end.max(stop));
            }
        }
        first.min(end)..end
    }

    /// The output rows whose every kernel row reads a real row (`r * stride >= lo` and
    /// `r * stride + (kh - 1) * dilation < hi`): a tile within them keeps all `kh` rows, the
    /// [`KernelRows::hull`] of any of its spans, without computing it.
    pub(super) fn interior(&self) -> Range<usize> {
        let start = self.lo.div_ceil(self.stride);
        let reach = (self.kh - 1) * self.dilation;
        let end = match self.hi.checked_sub(reach + 1) {
            Some(last) => last / self.stride + 1,
            None => 0,
        };
        start..end.max(start)
    }

    /// The kernel rows a tile spanning output rows `(lowest, highest)` reads: every row for a
    /// tile within the [`KernelRows::interior`] rows (found once, here), else its
    /// [`KernelRows::hull`].
    pub(super) fn taps(&self) -> impl Fn((usize, usize)) -> Range<usize> + '_ {
        let interior = self.interior();
        move |(low, high)| {
            if interior.contains(&low) && interior.contains(&high) {
                0..self.kh
            } else {
                self.hull((low, high))
            }
        }
    }

    /// The runs and the panel of the kernel rows `taps` (`runs` holds the same number of runs
    /// for every kernel row, and the panel one row per step of the runs).
    pub(super) fn select<'a>(
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

/// Most bytes of a panel the tiles read whole (an L1 holds 32 to 48 KiB): a larger one (the
/// seed's 5 x 5 layers over 32 and 64 channels: 100 and 200 KB) is read a chunk of kernel rows
/// at a time over a group of tiles ([`RowChunks`]).
const PANEL_L1_BYTES: usize = 40 * 1024;

/// Most bytes of panel rows in one chunk, unless one kernel row is larger.
const CHUNK_BYTES: usize = 24 * 1024;

/// Tiles a chunk of kernel rows passes over while its panel rows stay in L1.
pub(super) const GROUP_TILES: usize = 8;

/// How a layer whose panels are larger than L1 convolves a group of tiles: each chunk of kernel
/// rows over every tile of the group while its panel rows stay in L1, each tile's chains going
/// on from the chunk before. The steps of each chain are those of a tile computed whole, in the
/// same order, so the values are too.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowChunks {
    /// Kernel rows a chunk.
    rows: usize,
    kh: usize,
}

impl RowChunks {
    /// The chunks for panels of `steps` rows over `kh` kernel rows, or `None` where a panel
    /// fits L1 (or has one kernel row: a 1 x 1 convolution's panel is read whole).
    pub(super) fn new(steps: usize, kh: usize) -> Option<Self> {
        let row_bytes = steps / kh.max(1) * NR * std::mem::size_of::<f32>();
        (kh > 1 && kh * row_bytes > PANEL_L1_BYTES).then(|| RowChunks {
            rows: (CHUNK_BYTES / row_bytes).max(1),
            kh,
        })
    }

    /// Tiles `tiles` (at most [`GROUP_TILES`]) of one panel: tile `i` from `start` over the
    /// kernel rows `taps[i]` of `panel` (whose runs are `runs`, [`KernelRows::select`]), its
    /// rows at `rows_at[i]` in `a`. A tile without taps is its start.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tiles(
        self,
        tiles: &mut [Tile],
        start: Start<'_>,
        a: &[f32],
        rows_at: &[[usize; MR]],
        taps: &[(usize, usize)],
        kernel_rows: &KernelRows,
        runs: &RunTable,
        panel: &[f32],
    ) {
        for chunk in (0..self.kh).step_by(self.rows) {
            let chunk = chunk..(chunk + self.rows).min(self.kh);
            for ((tile, rows_at), &(lo, hi)) in tiles.iter_mut().zip(rows_at).zip(taps) {
                let read = lo.max(chunk.start)..hi.min(chunk.end);
                if read.is_empty() && !(lo == hi && chunk.start == 0) {
                    continue;
                }
                // The chunk with the tile's first kernel row starts its chains.
                let from = if chunk.start <= lo {
                    start
                } else {
                    Start::Tile
                };
                let (runs, panel) = kernel_rows.select(read, runs, panel);
                rows_panel(tile, from, a, rows_at, runs, panel);
            }
        }
    }
}

/// At most `MR` consecutive rows of the weight gradient (reduction steps, `(ky, kx, ci)`), what
/// one gradient tile covers; `NARROW_MR` when the layer's `cout` fits a narrow tile. A block may
/// span runs: each row has its own offset.
#[derive(Clone, Debug)]
pub(super) struct WgradBlock {
    /// Offset of each row's step in a padded input image (its run's offset plus the steps before
    /// it in the run); rows past `rows` repeat the last.
    pub(super) offsets: [usize; NARROW_MR],
    /// Rows in the block, `1..=MR` (`1..=NARROW_MR` for a narrow layer).
    pub(super) rows: usize,
    /// The output rows and columns whose input pixel, for at least one of the block's taps, is
    /// not padding. The others multiply only padding's zeros, so the weight gradient skips them:
    /// 28% of the positions for an 8 x 8 image, 5 x 5 kernel and padding 2.
    pub(super) out_rows: Range<usize>,
    pub(super) out_cols: Range<usize>,
}

impl WgradBlock {
    /// The blocks covering the reduction steps of `g` in order, a tile's rows at a time (fewer
    /// in the last; see [`tile_pixels`]): conv1's 75 steps (5 runs of 15) fill 13 tiles instead
    /// of 15.
    pub(super) fn cover(g: &Geom) -> Vec<Self> {
        let per_block = tile_pixels(g.cout);
        let (_, wp) = g.padded_in();
        let steps: Vec<usize> = g
            .runs(g.cin, wp)
            .iter()
            .flat_map(|run| (0..run.len).map(move |p| run.offset + p))
            .collect();
        steps
            .chunks(per_block)
            .enumerate()
            .map(|(b, rows)| {
                // Steps are `(ky, kx, ci)` in order, whatever the runs.
                let tap = |s: usize| (s / (g.kw * g.cin), s / g.cin % g.kw);
                let first = b * per_block;
                let ((ky0, kx0), (ky1, kx1)) = (tap(first), tap(first + rows.len() - 1));
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
pub(super) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::Seg;

    /// Walking a task's tiles from a cursor gives each tile the pixels and rows that finding it
    /// from its first pixel gives, and those are each pixel's own place (the last repeated past
    /// the end), over image sizes, tasks that start and end anywhere, tiles within one image
    /// row and tiles that cross rows and images.
    #[test]
    fn a_cursor_finds_each_tiles_pixels_as_a_fresh_start_does() {
        for (h, w) in [(1, 1), (2, 3), (4, 4), (5, 7), (3, 13), (32, 32)] {
            let grid = PixelGrid {
                h,
                w,
                image: 1000,
                row: 37,
                col: 3,
            };
            let pixels = 5 * h * w;
            for first in [0, 1, w, h * w - 1, 2 * h * w + 1] {
                for end in [first + 1, first + 11, first + 12, first + 13, pixels] {
                    let (mut cursor, mut rows_at) = (grid.cursor(first), [0; 12]);
                    for t in (first..end).step_by(12) {
                        let span = grid.tile_rows_into(&mut cursor, &mut rows_at, t, end);
                        let walked = (rows_at, span);
                        assert_eq!(walked, grid.tile_rows::<12>(t, end), "{h}x{w} {t} {end}");
                        // Each pixel by its own divisions.
                        let place = |p: usize| {
                            let (n, pix) = (p / (h * w), p % (h * w));
                            (n * 1000 + pix / w * 37 + pix % w * 3, pix / w)
                        };
                        let pixels: Vec<_> = (0..12).map(|i| place((t + i).min(end - 1))).collect();
                        let rows: Vec<usize> = pixels.iter().map(|p| p.0).collect();
                        let low = pixels.iter().map(|p| p.1).min();
                        let high = pixels.iter().map(|p| p.1).max();
                        assert_eq!(walked.0.to_vec(), rows, "{h}x{w} {t} {end}");
                        assert_eq!(Some(walked.1), low.zip(high), "{h}x{w} {t} {end}");
                    }
                }
            }
        }
    }

    /// A group of tiles convolved a chunk of kernel rows at a time gives each tile the bits of
    /// the tile convolved whole over its kernel rows, whatever the chunk: from a bias row or
    /// zeros, over tiles whose kernel rows start and end anywhere (none at all included).
    #[test]
    fn chunks_of_kernel_rows_give_the_whole_tiles_bits() {
        let (kh, per_row, width) = (5, 3, 40);
        let segs: Vec<Seg> = (0..kh * per_row)
            .map(|r| Seg {
                offset: r / per_row * width + r % per_row * 11,
                len: 7 + r % 3,
            })
            .collect();
        let steps = segs.iter().map(|s| s.len).sum::<usize>();
        let runs = RunTable::new(segs);
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104_729) % 1999) as f32 / 999.5 - 1.0)
                .collect()
        };
        let (a, panel) = (values(64 * 64, 1), values(steps * NR, 2));
        let bias: [f32; NR] = values(NR, 3).try_into().expect("NR values");
        let kernel_rows = KernelRows {
            lo: 0,
            hi: kh,
            stride: 1,
            dilation: 1,
            kh,
        };
        let taps = [(0, 5), (1, 4), (2, 3), (0, 0), (3, 5), (0, 2), (4, 5)];
        let rows_at: Vec<[usize; MR]> = (0..taps.len())
            .map(|t| std::array::from_fn(|i| (t * 37 + i * 13) % 200))
            .collect();
        for start in [Start::Row(&bias), Start::Zero] {
            let want: Vec<Tile> = taps
                .iter()
                .zip(&rows_at)
                .map(|(&(lo, hi), rows_at)| {
                    let mut tile = [[f32::NAN; NR]; MR];
                    let (runs, panel) = kernel_rows.select(lo..hi, &runs, &panel);
                    rows_panel(&mut tile, start, &a, rows_at, runs, panel);
                    tile
                })
                .collect();
            for rows in 1..=kh {
                let mut tiles = vec![[[f32::NAN; NR]; MR]; taps.len()];
                let chunks = RowChunks { rows, kh };
                chunks.tiles(
                    &mut tiles,
                    start,
                    &a,
                    &rows_at,
                    &taps,
                    &kernel_rows,
                    &runs,
                    &panel,
                );
                for (i, (got, want)) in tiles.iter().zip(&want).enumerate() {
                    let bits = |t: &Tile| {
                        t.as_flattened()
                            .iter()
                            .map(|v| v.to_bits())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(bits(got), bits(want), "tile {i}, {rows} rows a chunk");
                }
            }
        }
    }

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
                            let interior = rows.interior();
                            for r in 0..12 {
                                let whole = rows.hull((r, r)) == (0..kh);
                                assert_eq!(interior.contains(&r), whole, "{rows:?}, row {r}");
                            }
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
