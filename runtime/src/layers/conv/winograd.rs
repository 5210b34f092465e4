//! The forward pass of a 3 x 3, stride-1, 'same' (padding 1) convolution as Winograd's
//! F(2 x 2, 3 x 3): each 2 x 2 block of output pixels (a *tile*) from the 4 x 4 input patch
//! around it, in 16 multiplies a channel pair instead of 36.
//!
//! Per block of tiles (small enough that its transformed input and products stay in L2):
//! the input transform `Bᵀ d B` of every tile's patch (channels in the vector lanes; outside the
//! image the patch reads zeros, so no padded copy is made), then for each of the 16 positions of
//! a transformed tile a GEMM `[tiles x cin] x [cin x cout]` on the packed micro-kernels (the
//! weights transformed once, `G g Gᵀ`, and packed as forward panels are), then the output
//! transform `Aᵀ m A` plus the bias, stored through the layer's [`TileStore`] (the fused ReLU,
//! an inference epilogue, a concatenation's channels). Each tile's values are computed the same
//! way whatever block or task it falls in, so they do not depend on the threads; the transforms
//! are adds and subtracts only, in one order on every instruction family, and the GEMM's chains
//! are the micro-kernels' own, so they do not depend on the SIMD path either.

pub(super) mod grad;

use super::Conv2d;
use super::forward::POSITIONS;
use super::geometry::Geom;
use super::tile::TileStore;
use super::winograd4;
use super::winograd5;
use crate::kernels::gemm::{Epilogue, MR, NR, Runs, Tile, panels, rows_panel_into};
use crate::par;
use crate::scratch;
use crate::simd::multiversion;

/// Values of a transformed tile: 4 x 4.
const TAPS: usize = 16;

/// Most bytes of transformed input and products one block of tiles holds: a quarter of a 1 MiB
/// L2, so both stay there from the input transform through the output transform, with the
/// weights beside them.
const BLOCK_BYTES: usize = 256 * 1024;

/// Fewest input and output channels for which Winograd's F(2 x 2) tiles are faster than the
/// direct convolution: its transforms cost in proportion to the channels, its GEMMs to their
/// product, and with one-thread CPU time at batch 64 (least of 75, five rounds) 64 -> 64 at 8 x 8
/// took 0.83x the direct forward's time (1.14x to 1.30x faster over three runs), 128 -> 128 at
/// 16 x 16 0.58x, 256 -> 256 at 8 x 8 0.74x, where 32 -> 32 at 16 x 16 took 0.9x to 1.04x and
/// 16 -> 16 at 32 x 32 1.4x to 2x (docs/PERFORMANCE.md, session 14). Layers of
/// [`F4_CHANNELS`] take F(4 x 4) instead.
const MIN_CHANNELS: usize = 64;

/// The input and output channels (both) for which Winograd's F(4 x 4) tiles
/// ([`super::winograd4`]) are taken, over F(2 x 2)'s and the direct path's: with one-thread CPU
/// time at batch 64 (least of 75), 32 -> 32 at 16 x 16 took 0.47x to 0.84x the direct
/// forward's time, 64 -> 64 at 8 x 8 to 32 x 32 0.42x to 0.67x (F(2 x 2): 0.68x to 0.81x),
/// 128 -> 128 at 8 x 8 0.43x to 0.52x (F(2 x 2): 0.6x to 0.68x) but at 16 x 16 on AVX-512 0.69x
/// (F(2 x 2): 0.59x), and 16 -> 16 at 32 x 32 0.99x to 1.18x, no gain on the micro-kernels
/// (docs/PERFORMANCE.md, session 15; 16 -> 16 takes F(4 x 4) on narrow GEMMs of its own,
/// [`winograd4::narrow`], session 16). Both, not the fewer: a tile's transformed input and products grow with
/// `cin + cout`, and DenseNet's 128 -> 32 layers on F(4 x 4) moved a badly conditioned gradient
/// past its PyTorch parity tolerance (`cli/tests/graph_models.rs`), so they keep their path.
const F4_CHANNELS: std::ops::Range<usize> = 17..128;

/// Fewest input and output channels (both) for which Winograd's F(2 x 2, 5 x 5) tiles
/// ([`super::winograd5`]) are taken over the direct path's: with one-thread CPU time at batch 64
/// (least of 75, two runs), through the fused ReLU and 2 x 2 pool, 32 -> 32 at 16 x 16 took
/// 0.72x to 0.75x the direct forward's time on AVX-512 and 0.56x to 0.57x on AVX2, 32 -> 64 at
/// 8 x 8 0.67x and 0.51x to 0.53x, 64 -> 64 at 8 x 8 0.55x to 0.57x and 0.48x (unpooled within a
/// few per cent of those), where 16 -> 16 at 32 x 32 took 1.6x and 1.3x (docs/PERFORMANCE.md,
/// session 16).
const F2R5_CHANNELS: usize = 32;

/// Which Winograd tiles a layer's forward runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tiling {
    /// F(2 x 2, 3 x 3): this module's.
    F2,
    /// F(4 x 4, 3 x 3): [`super::winograd4`]'s.
    F4,
    /// F(2 x 2, 5 x 5): [`super::winograd5`]'s.
    F2R5,
}

/// Which Winograd tiles, if any, a convolution of geometry `g` runs its forward as: a dense
/// 3 x 3 kernel, stride 1, dilation 1, padding 1 on every side, with more than [`POSITIONS`]
/// output pixels an image (smaller outputs convolve only their real taps), without a fused max
/// pool (`pooled`; its bands are the direct path's); F(4 x 4) when both the input and the
/// output channels are in [`F4_CHANNELS`] or both are 16 (its narrow GEMMs,
/// [`winograd4::narrow`]), else F(2 x 2) from [`MIN_CHANNELS`] in and out. With
/// [`forward_tiling`] (5 x 5 kernels), the one place the forward's path is chosen: from the
/// layer's shape, never from the threads or the instruction family.
pub(super) fn chosen(g: &Geom, groups: usize, pooled: bool) -> Option<Tiling> {
    let shape = groups == 1
        && !pooled
        && (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
        && (g.ph, g.pw, g.ph_end, g.pw_end) == (1, 1, 1, 1)
        && g.oh * g.ow > POSITIONS;
    if !shape {
        None
    } else if F4_CHANNELS.contains(&g.cin) && F4_CHANNELS.contains(&g.cout) || winograd4::narrow(g)
    {
        Some(Tiling::F4)
    } else if g.cin.min(g.cout) >= MIN_CHANNELS {
        Some(Tiling::F2)
    } else {
        None
    }
}

/// The transformed weight `G g Gᵀ` of one `3 x 3` kernel `g` (row-major), in f64 and rounded
/// once: `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`, applied to the
/// kernel's columns, then to the rows of that ([`weight_tiles`] of one kernel).
fn weight_tile(g: &[f32]) -> [f32; TAPS] {
    weight_tiles(&std::array::from_fn(|k| [f64::from(g[k])])).map(|[u]| u)
}

/// [`weight_tile`] of `L` kernels at once, tap `k` of kernel `l` at `g[k][l]`: the same
/// operations on each lane, so each kernel's values are [`weight_tile`]'s.
#[inline(always)]
pub(super) fn weight_tiles<const L: usize>(g: &[[f64; L]; 9]) -> [[f32; L]; TAPS] {
    // `G v` of three values.
    let apply = |v0: &[f64; L], v1: &[f64; L], v2: &[f64; L]| {
        let mut y = [[0.0; L]; 4];
        for l in 0..L {
            y[0][l] = v0[l];
            y[1][l] = (v0[l] + v1[l] + v2[l]) * 0.5;
            y[2][l] = (v0[l] - v1[l] + v2[l]) * 0.5;
            y[3][l] = v2[l];
        }
        y
    };
    // `G g`: row `a` of it, over the kernel's columns.
    let cols: [[[f64; L]; 4]; 3] = std::array::from_fn(|c| apply(&g[c], &g[3 + c], &g[6 + c]));
    let mut u = [[0.0; L]; TAPS];
    for a in 0..4 {
        let row = apply(&cols[0][a], &cols[1][a], &cols[2][a]);
        for b in 0..4 {
            for l in 0..L {
                u[4 * a + b][l] = row[b][l] as f32;
            }
        }
    }
    u
}

/// The Winograd tiles a layer's forward runs as, if any, with a fused max pool of window `pool`:
/// [`chosen`]'s for 3 x 3 kernels; F(2 x 2, 5 x 5) for a dense 5 x 5 kernel, stride 1,
/// dilation 1, padding 2 on every side, more than [`POSITIONS`] output pixels an image and
/// [`F2R5_CHANNELS`] in and out, without a fused pool or with a 2 x 2 one (a tile is its
/// window).
pub(super) fn forward_tiling(g: &Geom, groups: usize, pool: Option<[usize; 2]>) -> Option<Tiling> {
    let five = groups == 1
        && (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (5, 5, 1, 1, 1, 1)
        && (g.ph, g.pw, g.ph_end, g.pw_end) == (2, 2, 2, 2)
        && g.oh * g.ow > POSITIONS
        && matches!(pool, None | Some([2, 2]))
        && g.cin.min(g.cout) >= F2R5_CHANNELS;
    if five {
        Some(Tiling::F2R5)
    } else {
        chosen(g, groups, pool.is_some())
    }
}

/// Values in a layer's Winograd panels for `tiling`: `[positions][panels(cout)][cin][NR]`.
pub(super) fn panels_len(g: &Geom, tiling: Tiling) -> usize {
    let positions = match tiling {
        Tiling::F2 => TAPS,
        Tiling::F4 => winograd4::TAPS,
        Tiling::F2R5 => winograd5::TAPS,
    };
    positions * panels(g.cout) * g.cin * NR
}

/// Fills `packed` ([`panels_len`] values) with the weights `w` (OIHW, 3 x 3 or, for
/// [`Tiling::F2R5`], 5 x 5) transformed for `tiling`: position `p`'s panel `j` holds row `ci`,
/// column `l` = `U[p]` of output channel `j * NR + l` and input channel `ci`, zeros past `cout`.
pub(super) fn pack(g: &Geom, w: &[f32], packed: &mut [f32], tiling: Tiling) {
    match tiling {
        Tiling::F2 => pack_tiles(g, w, packed, weight_tile),
        Tiling::F4 => pack_tiles(g, w, packed, winograd4::weight_tile),
        Tiling::F2R5 => pack_tiles(g, w, packed, winograd5::weight_tile),
    }
}

/// [`pack`] with the kernel transform `tile` of `T` positions.
fn pack_tiles<const T: usize>(
    g: &Geom,
    w: &[f32],
    packed: &mut [f32],
    tile: fn(&[f32]) -> [f32; T],
) {
    let (cin, cout, taps) = (g.cin, g.cout, g.kh * g.kw);
    let panel = cin * NR;
    let per_tap = panels(cout) * panel;
    packed[..T * per_tap].fill(0.0);
    for co in 0..cout {
        let (j, l) = (co / NR, co % NR);
        for ci in 0..cin {
            let at = (co * cin + ci) * taps;
            let u = tile(&w[at..at + taps]);
            for (p, &v) in u.iter().enumerate() {
                packed[p * per_tap + j * panel + ci * NR + l] = v;
            }
        }
    }
}

/// Runs `block(rows, out, pixel)` over the tile rows of `batch` images of `h x w` pixels cut
/// into tiles of `side x side`, each block at most `block_rows` tile rows (counted over the
/// batch), `out` from the block's first pixel `pixel` (in batch order; `stride` values a
/// pixel). Parallel tasks take whole tile rows, a block's or fewer where that leaves fewer than
/// four tasks a thread; whole images when a tile row's pixels are not a fixed count (`h` not a
/// multiple of `side`, its last tile row shorter).
pub(super) fn for_blocks(
    out: &mut [f32],
    stride: usize,
    (batch, [h, w]): (usize, [usize; 2]),
    side: usize,
    block_rows: usize,
    block: impl Fn(std::ops::Range<usize>, &mut [f32], usize) + Sync,
) {
    let th = h.div_ceil(side);
    let rows = batch * th;
    let want = rows
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(1, block_rows);
    let (task_rows, task_pixels) = if h.is_multiple_of(side) {
        (want, want * side * w)
    } else {
        let images = want.div_ceil(th);
        (images * th, images * h * w)
    };
    let first_pixel = |row: usize| row / th * h * w + (row % th) * side * w;
    par::chunks_mut(out, task_pixels * stride, |task, out| {
        let first = task * task_rows;
        let end = (first + task_rows).min(rows);
        let mut at = first;
        while at < end {
            let stop = (at + block_rows).min(end);
            let pixel = first_pixel(at);
            block(
                at..stop,
                &mut out[(pixel - first_pixel(first)) * stride..],
                pixel,
            );
            at = stop;
        }
    });
}

/// The GEMMs of a block of `tiles` transformed tiles of `taps` positions: for each position `p`
/// and each of the `outs` output panels `j`, `[tiles x k] x [k x NR]` of the rows of `v` (tile
/// `t`'s position `p` at `(t * taps + p) * width`; `runs` says which of its values are reduced)
/// with `panel(p, j)`, into the products `m` (tile `t`'s position `p` at `(t * taps + p) * cs`,
/// panel `j` from column `j * NR`). `m` holds whole GEMM tiles: the rows past the last tile
/// repeat it, into products never read.
pub(super) fn gemms<'p>(
    (v, width): (&[f32], usize),
    (m, cs): (&mut [f32], usize),
    [tiles, taps, outs]: [usize; 3],
    runs: Runs<'_>,
    panel: impl Fn(usize, usize) -> &'p [f32],
) {
    let (zero_bias, none) = ([0.0; NR], Epilogue::default());
    for p in 0..taps {
        for j in 0..outs {
            let panel = panel(p, j);
            for t in (0..tiles).step_by(MR) {
                let out = &mut m[(t * taps + p) * cs + j * NR..];
                let rows = std::array::from_fn(|i| ((t + i).min(tiles - 1) * taps + p) * width);
                rows_panel_into(out, taps * cs, &none, &zero_bias, v, &rows, runs, panel);
            }
        }
    }
}

/// The Winograd layout of a layer's forward: tiles an image, and the width of a product row.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Tile rows and columns an image.
    th: usize,
    tw: usize,
    /// Values of one position's products of a tile: whole panels.
    cs: usize,
}

impl Layout {
    fn new(g: &Geom) -> Self {
        Layout {
            th: g.oh.div_ceil(2),
            tw: g.ow.div_ceil(2),
            cs: panels(g.cout) * NR,
        }
    }
}

impl Conv2d {
    /// Convolves `batch` images `x` (unpadded) with the Winograd panels `packed` and the bias
    /// row into `y`, storing each output as `store` says. Parallel tasks take whole tile rows
    /// (whole images when the output height is odd, as its last tile row is one pixel high).
    pub(super) fn winograd_stored(
        &self,
        x: &[f32],
        (packed, bias_row): (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        store: TileStore<'_>,
    ) {
        let g = self.g;
        let lay = Layout::new(&g);
        let (stride, _) = store.layout(g.cout);
        // Tile rows of the batch a block holds (at least one).
        let row_bytes = lay.tw * TAPS * (g.cin + lay.cs) * std::mem::size_of::<f32>();
        let block_rows = (BLOCK_BYTES / row_bytes).max(1);
        let images = (batch, [g.oh, g.ow]);
        for_blocks(y, stride, images, 2, block_rows, |rows, out, pixel| {
            self.winograd_block(x, packed, bias_row, rows, out, pixel, store, lay);
        });
    }

    /// One block of tile rows `rows` (counted over the batch): the input transform, the 16
    /// GEMMs and the output transform into `out`, whose first pixel is the batch's `pixel`.
    #[allow(clippy::too_many_arguments)]
    fn winograd_block(
        &self,
        x: &[f32],
        packed: &[f32],
        bias_row: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        pixel: usize,
        store: TileStore<'_>,
        lay: Layout,
    ) {
        let g = self.g;
        let (cin, cs, tw) = (g.cin, lay.cs, lay.tw);
        let tiles = rows.len() * tw;
        // Whole GEMM tiles: the rows past the last tile repeat it, into products never read.
        let gemm_tiles = tiles.div_ceil(MR) * MR;
        let mut v = scratch::take(tiles * TAPS * cin, scratch::ANY, 0.0);
        let mut m = scratch::take(gemm_tiles * TAPS * cs, scratch::ANY, 0.0);
        let zeros = scratch::take(g.iw * cin, scratch::tag(&[g.iw, cin, 0x3_3]), 0.0);
        // The input transform, a tile row at a time: its patches read input rows
        // `2 ty - 1 ..= 2 ty + 2` (zeros outside the image).
        let line = g.iw * cin;
        for (row, v) in v[..tiles * TAPS * cin]
            .chunks_exact_mut(tw * TAPS * cin)
            .enumerate()
        {
            let r = rows.start + row;
            let (n, ty) = (r / lay.th, r % lay.th);
            let x = &x[n * g.ih * line..][..g.ih * line];
            let lines: [&[f32]; 4] = std::array::from_fn(|i| {
                let iy = (2 * ty + i).wrapping_sub(1);
                if iy < g.ih {
                    &x[iy * line..][..line]
                } else {
                    &zeros[..line]
                }
            });
            input_transform(&lines, v, g.iw, cin);
        }
        // The GEMMs: position `p` of every tile, `[tiles x cin] x [cin x cout]`.
        let per_tap = panels(g.cout) * cin * NR;
        let panel = |p: usize, j: usize| &packed[p * per_tap + j * cin * NR..][..cin * NR];
        let shape = [tiles, TAPS, panels(g.cout)];
        let runs = self.winograd_runs.all();
        gemms((&v[..], cin), (&mut m[..], cs), shape, runs, panel);
        // The output transform: three tiles of a tile row at a time, as two tiles of six
        // pixels (the top and bottom output rows), one panel of channels at a time.
        let (stride, offset) = store.layout(g.cout);
        let mut top: Tile = [[0.0; NR]; MR];
        let mut bottom: Tile = [[0.0; NR]; MR];
        for row in 0..rows.len() {
            let r = rows.start + row;
            let ty = r % lay.th;
            let high = (g.oh - 2 * ty).min(2);
            // The tile row's first pixel, relative to `out`.
            let row_pixel = r / lay.th * g.oh * g.ow + 2 * ty * g.ow - pixel;
            for tx in (0..tw).step_by(MR / 2) {
                let wide = (g.ow - 2 * tx).min(MR);
                let count = wide.div_ceil(2);
                for j in 0..panels(g.cout) {
                    let cols = NR.min(g.cout - j * NR);
                    let bias = &bias_row[j * NR..];
                    let t = row * tw + tx;
                    let m =
                        &m[t * TAPS * cs + j * NR..][..((count - 1) * TAPS + TAPS - 1) * cs + cols];
                    output_transform(m, cs, bias, &mut top, &mut bottom, count, cols);
                    let px = row_pixel + 2 * tx;
                    let first = (pixel + px) * stride;
                    let at = px * stride + offset + j * NR;
                    store.store(&top, &mut out[at..], [wide, cols, stride], first, j);
                    if high == 2 {
                        let at = at + g.ow * stride;
                        let first = first + g.ow * stride;
                        store.store(&bottom, &mut out[at..], [wide, cols, stride], first, j);
                    }
                }
            }
        }
    }
}

/// Channels a transform handles at once: an AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

multiversion! {
    /// `v = Bᵀ d B` for each channel of the 4 x 4 patch `d` of every tile of a tile row (patch
    /// row `i` from `lines[i]`, an input row of `iw` pixels; column `j` of tile `tx` its pixel
    /// `2 tx + j - 1`, zeros outside), tile `tx`'s position `p` into `v[(tx * 16 + p) * cin..]`:
    /// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`, the rows first, then
    /// the columns, each value a fixed chain of adds.
    fn input_transform(lines: &[&[f32]; 4], v: &mut [f32], iw: usize, cin: usize) {
        for (tx, v) in v.chunks_exact_mut(TAPS * cin).enumerate() {
            // Columns `first..first + 4`; wrapped (huge) where `first` is -1.
            let first = (2 * tx).wrapping_sub(1);
            let inside = tx > 0 && 2 * tx + 2 < iw;
            let mut c = 0;
            while c + LANES <= cin {
                input_lanes::<LANES>(lines, v, first, inside, iw, c, cin);
                c += LANES;
            }
            while c < cin {
                input_lanes::<1>(lines, v, first, inside, iw, c, cin);
                c += 1;
            }
        }
    }
}

/// [`input_transform`] of channels `c..c + L` of the tile whose patch starts at column
/// `first`; `inside`: all four of its columns are in the image.
#[inline(always)]
fn input_lanes<const L: usize>(
    lines: &[&[f32]; 4],
    v: &mut [f32],
    first: usize,
    inside: bool,
    iw: usize,
    c: usize,
    cin: usize,
) {
    let mut x = [[0.0f32; L]; TAPS];
    if inside {
        for (i, line) in lines.iter().enumerate() {
            let line = &line[first * cin + c..][..3 * cin + L];
            for j in 0..4 {
                x[4 * i + j].copy_from_slice(&line[j * cin..][..L]);
            }
        }
    } else {
        for (i, line) in lines.iter().enumerate() {
            for j in 0..4 {
                let col = first.wrapping_add(j);
                if col < iw {
                    x[4 * i + j].copy_from_slice(&line[col * cin + c..][..L]);
                }
            }
        }
    }
    // Bᵀ d: row combinations, per column.
    let mut t = [[0.0f32; L]; TAPS];
    for j in 0..4 {
        for l in 0..L {
            t[j][l] = x[j][l] - x[8 + j][l];
            t[4 + j][l] = x[4 + j][l] + x[8 + j][l];
            t[8 + j][l] = x[8 + j][l] - x[4 + j][l];
            t[12 + j][l] = x[4 + j][l] - x[12 + j][l];
        }
    }
    // (Bᵀ d) B: column combinations, per row.
    for i in 0..4 {
        let r = 4 * i;
        let mut o = [[0.0f32; L]; 4];
        for l in 0..L {
            o[0][l] = t[r][l] - t[r + 2][l];
            o[1][l] = t[r + 1][l] + t[r + 2][l];
            o[2][l] = t[r + 2][l] - t[r + 1][l];
            o[3][l] = t[r + 1][l] - t[r + 3][l];
        }
        for (k, o) in o.iter().enumerate() {
            v[(r + k) * cin + c..][..L].copy_from_slice(o);
        }
    }
}

multiversion! {
    /// `Aᵀ m A + bias` of `count` consecutive tiles' products `m` (tile `k`'s position `p` at
    /// `m[(k * 16 + p) * cs..]`), columns `..cols`: `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`, the
    /// rows first, then the columns, then the bias; tile `k`'s top pixels into `top[2 k]` and
    /// `top[2 k + 1]`, its bottom ones into `bottom`.
    fn output_transform(
        m: &[f32],
        cs: usize,
        bias: &[f32],
        top: &mut Tile,
        bottom: &mut Tile,
        count: usize,
        cols: usize,
    ) {
        for k in 0..count {
            let m = &m[k * TAPS * cs..];
            let mut c = 0;
            while c + LANES <= cols {
                output_lanes::<LANES>(m, cs, bias, top, bottom, 2 * k, c);
                c += LANES;
            }
            while c < cols {
                output_lanes::<1>(m, cs, bias, top, bottom, 2 * k, c);
                c += 1;
            }
        }
    }
}

/// [`output_transform`] of columns `c..c + L` of one tile, into pixels `px` and `px + 1`.
#[inline(always)]
fn output_lanes<const L: usize>(
    m: &[f32],
    cs: usize,
    bias: &[f32],
    top: &mut Tile,
    bottom: &mut Tile,
    px: usize,
    c: usize,
) {
    let m = &m[c..(TAPS - 1) * cs + c + L];
    let mut x = [[0.0f32; L]; TAPS];
    for (p, x) in x.iter_mut().enumerate() {
        x.copy_from_slice(&m[p * cs..][..L]);
    }
    let b: &[f32; L] = bias[c..c + L].try_into().expect("L values");
    // Aᵀ m: row combinations, per column.
    let mut s = [[0.0f32; L]; 8];
    for j in 0..4 {
        for l in 0..L {
            s[j][l] = x[j][l] + x[4 + j][l] + x[8 + j][l];
            s[4 + j][l] = x[4 + j][l] - x[8 + j][l] - x[12 + j][l];
        }
    }
    // (Aᵀ m) A, then the bias.
    for (half, rows) in [(0, &mut *top), (4, &mut *bottom)] {
        let s = &s[half..half + 4];
        let mut o = [[0.0f32; L]; 2];
        for l in 0..L {
            o[0][l] = s[0][l] + s[1][l] + s[2][l] + b[l];
            o[1][l] = s[1][l] - s[2][l] - s[3][l] + b[l];
        }
        rows[px][c..c + L].copy_from_slice(&o[0]);
        rows[px + 1][c..c + L].copy_from_slice(&o[1]);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::forward::Padded;
    use super::super::forward::tests::reference;
    use super::*;
    use crate::config::{Conv2dConfig, Pool2dConfig};
    use crate::init::init_rng;
    use crate::layers::Layer;
    use crate::layers::conv::tile::ChannelStore;
    use crate::tensor::Mode;

    /// A 3 x 3 'same' convolution of `hw` images.
    pub(in crate::layers::conv) fn layer(
        cin: usize,
        cout: usize,
        hw: [usize; 2],
        bias: bool,
        seed: u64,
    ) -> Conv2d {
        let config = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            bias,
            ..Conv2dConfig::new(cin, cout, [3, 3])
        };
        Conv2d::new("conv", &config, hw, &mut init_rng(seed)).expect("a valid convolution")
    }

    pub(in crate::layers::conv) fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed as u64);
                let h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    pub(in crate::layers::conv) fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// Checks one layer over `batch` images: the training forward within a few roundings of the
    /// definition; eval and `&self` inference the same bits; the same bits at 1, 2 and 3
    /// threads; and the epilogue (factors, a residual, a ReLU6 clamp; a concatenation's slice)
    /// stored from the kernel the same bits as applied to the plain output afterwards.
    fn check(cin: usize, cout: usize, hw: [usize; 2], batch: usize, bias: bool) {
        check_tiling(Tiling::F2, 4e-7, cin, cout, hw, batch, bias);
    }

    /// A convolution of `cin -> cout` channels at `hw`, which takes `tiling`, against the f64
    /// definition within `tolerance` of each output's sum of the products' magnitudes, then
    /// every other path (eval, `&self` inference, the threads, the epilogues) against it.
    pub(in crate::layers::conv) fn check_tiling(
        tiling: Tiling,
        tolerance: f64,
        cin: usize,
        cout: usize,
        hw: [usize; 2],
        batch: usize,
        bias: bool,
    ) {
        let conv = layer(cin, cout, hw, bias, (cin * 31 + cout) as u64);
        check_layer(tiling, tolerance, conv, batch);
    }

    /// [`check_tiling`] of the layer `conv`.
    pub(in crate::layers::conv) fn check_layer(
        tiling: Tiling,
        tolerance: f64,
        mut conv: Conv2d,
        batch: usize,
    ) {
        let (cin, cout, hw) = (conv.g.cin, conv.g.cout, [conv.g.ih, conv.g.iw]);
        assert_eq!(conv.winograd(), Some(tiling), "{cin}->{cout} {hw:?}");
        let (nx, ny) = (conv.input_shape().numel(), conv.output_shape().numel());
        let x = values(batch * nx, cin + 7 * cout);
        let mut y = vec![f32::NAN; batch * ny];
        conv.forward(&x, &mut y, batch, Mode::Train)
            .expect("forward");
        for (&got, (want, mag)) in y.iter().zip(reference(&conv, &x, batch)) {
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= tolerance * mag.max(1.0),
                "{got} vs {want} ({cin}->{cout} {hw:?})"
            );
        }
        let mut eval = vec![f32::NAN; batch * ny];
        conv.forward(&x, &mut eval, batch, Mode::Eval)
            .expect("forward");
        assert_eq!(bits(&eval), bits(&y));
        let (scale, shift) = (values(cout, 1), values(cout, 2));
        let residual = values(batch * ny, 3);
        let clamp = |v: f32| {
            let v = if v < 0.0 { 0.0 } else { v };
            if v > 0.5 { 0.5 } else { v }
        };
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let mut inferred = vec![f32::NAN; batch * ny];
                conv.infer(&x, &mut inferred, batch).expect("inference");
                assert_eq!(bits(&inferred), bits(&y), "{threads} threads");
                let store = ChannelStore {
                    affine: Some((&scale, &shift)),
                    residual: Some(&residual),
                    lo: 0.0,
                    hi: 0.5,
                    slice: None,
                };
                let mut stored = vec![f32::NAN; batch * ny];
                conv.infer_store(&x, &mut stored, batch, &store)
                    .expect("epilogue");
                let want: Vec<f32> = (0..batch * ny)
                    .map(|i| clamp(y[i] * scale[i % cout] + shift[i % cout] + residual[i]))
                    .collect();
                assert_eq!(bits(&stored), bits(&want), "{threads} threads");
                // Channels 3.. of a concatenation of `cout + 5`, through the ReLU only.
                let channels = cout + 5;
                let store = ChannelStore {
                    affine: None,
                    residual: None,
                    lo: 0.0,
                    hi: f32::INFINITY,
                    slice: Some((3, channels)),
                };
                let mut cat = vec![7.0; batch * ny / cout * channels];
                conv.infer_store(&x, &mut cat, batch, &store)
                    .expect("epilogue");
                for (px, cat) in cat.chunks_exact(channels).enumerate() {
                    let own = &y[px * cout..][..cout];
                    let relu: Vec<f32> =
                        own.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
                    assert_eq!(bits(&cat[3..3 + cout]), bits(&relu));
                    assert_eq!(bits(&cat[..3]), bits(&[7.0; 3]));
                    assert_eq!(bits(&cat[3 + cout..]), bits(&[7.0; 2]));
                }
            });
        }
    }

    /// ResNet's shapes and borders: odd heights and widths (a last tile row or column one
    /// pixel wide), images 3 pixels on a side and one pixel high, batch 1, channels off the
    /// lanes and panels, with and without a bias.
    #[test]
    fn winograd_matches_the_definition_on_every_path() {
        for (cin, cout, hw, batch, bias) in [
            (128, 128, [8, 8], 5, false),
            (128, 128, [3, 3], 1, true),
            (131, 134, [5, 7], 3, true),
            (129, 161, [6, 9], 1, false),
            (144, 128, [4, 3], 2, true),
            (128, 130, [11, 2], 2, true),
            (128, 128, [1, 9], 2, false),
        ] {
            check(cin, cout, hw, batch, bias);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`check`] over random shapes: 128 to 139 channels in and 128 to 193 out (partial
        /// panels), images of 1 to 9 rows and 3 to 9 columns of more than four pixels, batches 1
        /// to 4.
        #[test]
        fn winograd_matches_the_definition_over_shapes(
            cin in 128usize..140,
            cout in 128usize..194,
            h in 1usize..8,
            w in 5usize..8,
            batch in 1usize..3,
            bias in proptest::bool::ANY,
        ) {
            check(cin, cout, [h, w], batch, bias);
        }
    }

    /// The path is chosen from the shape alone: a dense 3 x 3 'same' convolution with stride 1
    /// and dilation 1 over more than four pixels an image, without a fused pool.
    #[test]
    fn winograd_is_chosen_from_the_shape() {
        let base = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(128, 128, [3, 3])
        };
        let chosen = |config: &Conv2dConfig, hw: [usize; 2]| {
            Conv2d::new("conv", config, hw, &mut init_rng(1))
                .expect("a valid convolution")
                .winograd()
                == Some(Tiling::F2)
        };
        assert!(chosen(&base, [32, 32]));
        assert!(chosen(&base, [5, 1]));
        assert!(!chosen(&base, [2, 2]), "four pixels: only the real taps");
        assert!(!chosen(
            &Conv2dConfig {
                stride: [2, 2],
                ..base.clone()
            },
            [32, 32]
        ));
        assert!(!chosen(
            &Conv2dConfig {
                dilation: [2, 2],
                padding: [2, 2],
                padding_end: [2, 2],
                ..base.clone()
            },
            [32, 32]
        ));
        assert!(!chosen(
            &Conv2dConfig {
                padding: [0, 0],
                padding_end: [0, 0],
                ..base.clone()
            },
            [32, 32]
        ));
        assert!(!chosen(
            &Conv2dConfig {
                groups: 2,
                ..base.clone()
            },
            [32, 32]
        ));
        assert!(!chosen(&Conv2dConfig::new(128, 128, [5, 5]), [32, 32]));
        let channels = |cin, cout| Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            ..Conv2dConfig::new(cin, cout, [3, 3])
        };
        assert!(chosen(&channels(128, 129), [8, 8]));
        assert!(chosen(&channels(64, 128), [8, 8]));
        assert!(chosen(&channels(128, 64), [8, 8]));
        assert!(
            !chosen(&channels(32, 128), [8, 8]),
            "too few input channels"
        );
        assert!(
            !chosen(&channels(128, 32), [8, 8]),
            "too few output channels"
        );
        let mut pooled = Conv2d::new("conv", &base, [8, 8], &mut init_rng(1)).expect("valid");
        assert_eq!(pooled.winograd(), Some(Tiling::F2));
        pooled.fuse_relu();
        assert!(Layer::fuse_max_pool(
            &mut pooled,
            &Pool2dConfig::new([2, 2], [2, 2], [0, 0])
        ));
        assert_eq!(
            pooled.winograd(),
            None,
            "a fused pool's bands are the direct path's"
        );
    }

    /// A pooled 3 x 3 layer of Winograd's channels (F(4 x 4)'s and F(2 x 2)'s) trains through
    /// the direct path, its panels packed and read for it: the training forward (which takes the
    /// pool out of the layer for the call) the same bits as `&self` inference.
    #[test]
    fn pooled_layers_of_winograd_channels_run_the_direct_path() {
        for channels in [32, 64] {
            let mut conv = layer(channels, channels, [8, 8], true, 3);
            conv.fuse_relu();
            let pool = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
            assert!(Layer::fuse_max_pool(&mut conv, &pool));
            let batch = 2;
            let (nx, ny) = (conv.input_shape().numel(), conv.output_shape().numel());
            let x = values(batch * nx, 9);
            let mut y = vec![f32::NAN; batch * ny];
            conv.forward(&x, &mut y, batch, Mode::Train)
                .expect("forward");
            let mut inferred = vec![f32::NAN; batch * ny];
            conv.infer(&x, &mut inferred, batch).expect("inference");
            assert_eq!(bits(&y), bits(&inferred), "{channels} channels");
        }
    }

    /// The least thread CPU time of `runs` calls of `f`, in ms.
    pub(in crate::layers::conv) fn least_ms(runs: usize, mut f: impl FnMut()) -> f64 {
        fn now() -> std::time::Duration {
            let mut ts = libc_timespec { sec: 0, nsec: 0 };
            // SAFETY: `ts` is a valid `timespec` for the call to fill.
            unsafe { clock_gettime(3, &mut ts) };
            std::time::Duration::new(ts.sec as u64, ts.nsec as u32)
        }
        #[repr(C)]
        struct libc_timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
        }
        (0..runs)
            .map(|_| {
                let start = now();
                f();
                (now() - start).as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// One thread, batch 64: the direct forward and Winograd's of the same layer, alternating,
    /// the least CPU time of 15 calls each, five rounds (`cargo test --release -p cnnc-runtime
    /// --lib winograd_timing -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn winograd_timing() {
        let batch = 64;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        pool.install(|| {
            for (cin, cout, hw) in [
                (16, 16, 32),
                (32, 32, 16),
                (64, 64, 8),
                (64, 64, 32),
                (128, 128, 16),
                (256, 256, 8),
                (512, 512, 4),
            ] {
                let conv = layer(cin, cout, [hw, hw], false, 5);
                let (nx, ny) = (conv.input_shape().numel(), conv.output_shape().numel());
                let x = values(batch * nx, 1);
                let mut y = vec![0.0; batch * ny];
                let direct_len = panels(cout) * conv.forward_steps() * NR;
                let mut direct = vec![0.0; direct_len];
                conv.pack_read(false, &mut direct);
                let mut wino = vec![0.0; panels_len(&conv.g, Tiling::F2)];
                let w = conv.weight.value.as_slice().expect("contiguous");
                pack(&conv.g, w, &mut wino, Tiling::F2);
                let bias = conv.bias_row.clone();
                let (mut old, mut new) = (f64::INFINITY, f64::INFINITY);
                for _ in 0..5 {
                    old = old.min(least_ms(15, || {
                        let xp = conv.padded_input(&x, batch);
                        let input = Padded::Batch(&xp);
                        let store = TileStore::Plain;
                        conv.convolve_stored(input, (&direct, &bias), &mut y, batch, store, None);
                        scratch::give_back(xp);
                    }));
                    new = new.min(least_ms(15, || {
                        let store = TileStore::Plain;
                        conv.winograd_stored(&x, (&wino, &bias), &mut y, batch, store);
                    }));
                }
                println!(
                    "{cin:4} -> {cout:4} {hw:2}x{hw:<2}  direct {old:7.3} ms  winograd {new:7.3} ms  ({:.2}x)",
                    old / new
                );
            }
        });
    }
}
