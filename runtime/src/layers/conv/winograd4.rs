//! The forward pass of a 3 x 3, stride-1, 'same' convolution of few channels as Winograd's
//! F(4 x 4, 3 x 3): each 4 x 4 block of output pixels (a *tile*) from the 6 x 6 input patch
//! around it, in 36 multiplies a channel pair instead of 144 (F(2 x 2, 3 x 3), [`super::winograd`],
//! takes 64 for the same pixels).
//!
//! With 16 or 32 channels a GEMM's reduction is short, so the multiplies saved must also pay for
//! the transforms, which cost in proportion to the channels: F(4 x 4)'s transforms cost about
//! what F(2 x 2)'s do a pixel, and its GEMMs 0.56x theirs. The structure is
//! [`super::winograd`]'s: per block of tiles (its transformed input and products in L2), the
//! input transform `Bᵀ d B` of every tile's patch (channels in the vector lanes, zeros outside
//! the image), for each of the 36 positions a GEMM `[tiles x cin] x [cin x cout]` on the packed
//! micro-kernels (stored straight into the products),
//! then the output transform `Aᵀ m A` plus the bias, stored through the layer's [`TileStore`].
//! A layer of 16 channels in and out ([`narrow`]: ResNet-20's stage 1) runs its GEMMs as
//! [`rows_by_square`] instead (16 x 16 squares of the panels held in registers, no padding
//! columns), over blocks of one tile row that stay in L1.
//!
//! The transforms multiply only by powers of two (exact) and add in one fixed order, the
//! weights are transformed in f64 and rounded once, and the GEMM's chains are the
//! micro-kernels' own: no value depends on the threads or the instruction family. The error
//! is larger than F(2 x 2)'s (the transforms' values grow by up to 10x and 1/6 rounds); see
//! docs/PERFORMANCE.md, session 15.
//!
//! [`Conv2d::winograd4_stored`] convolves an unpadded input with panels packed by [`pack`]:
//! what another 3 x 3 'same' convolution of the same shape (an input gradient's) would call.

use super::Conv2d;
use super::geometry::Geom;
use super::tile::TileStore;
use super::winograd::{for_blocks, gemms};
use crate::kernels::gemm::{MR, NARROW_NR, NR, SQUARE, Tile, panels, rows_by_square};
use crate::scratch;
use crate::simd::multiversion;

/// Values of a transformed tile: 6 x 6.
pub(super) const TAPS: usize = 36;

/// Output pixels a tile has on a side.
pub(super) const SIDE: usize = 4;

/// Most bytes of transformed input and products one block of tiles holds: a quarter of a 1 MiB
/// L2, as [`super::winograd`]'s.
const BLOCK_BYTES: usize = 256 * 1024;

/// Most bytes of transformed input and products a block of the narrow GEMMs' tiles
/// ([`narrow`]) holds: within a 48 KiB L1 with a position's panel, so the products are written
/// and read back there (ResNet-20's stage 1: a tile row of eight tiles, 36 KiB).
const NARROW_BLOCK_BYTES: usize = 40 * 1024;

/// The transformed weight `G g Gᵀ` of one `3 x 3` kernel `g` (row-major), in f64 and rounded
/// once: `G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
/// [1/24, -1/12, 1/6], [0, 0, 1]]`, applied to the kernel's columns, then to the rows of that
/// ([`weight_tiles`] of one kernel).
pub(super) fn weight_tile(g: &[f32]) -> [f32; TAPS] {
    weight_tiles(&std::array::from_fn(|k| [f64::from(g[k])])).map(|[u]| u)
}

/// [`weight_tile`] of `L` kernels at once, tap `k` of kernel `l` at `g[k][l]`: the same
/// operations on each lane (the divisions too), so each kernel's values are [`weight_tile`]'s.
#[inline(always)]
pub(super) fn weight_tiles<const L: usize>(g: &[[f64; L]; 9]) -> [[f32; L]; TAPS] {
    // `G v` of three values.
    let apply = |v0: &[f64; L], v1: &[f64; L], v2: &[f64; L]| {
        let mut y = [[0.0; L]; 6];
        for l in 0..L {
            let (v0, v1, v2) = (v0[l], v1[l], v2[l]);
            y[0][l] = v0 / 4.0;
            y[1][l] = -(v0 + v1 + v2) / 6.0;
            y[2][l] = -(v0 - v1 + v2) / 6.0;
            y[3][l] = (v0 + 2.0 * v1 + 4.0 * v2) / 24.0;
            y[4][l] = (v0 - 2.0 * v1 + 4.0 * v2) / 24.0;
            y[5][l] = v2;
        }
        y
    };
    // `G g`: row `a` of it, over the kernel's columns.
    let cols: [[[f64; L]; 6]; 3] = std::array::from_fn(|c| apply(&g[c], &g[3 + c], &g[6 + c]));
    let mut u = [[0.0; L]; TAPS];
    for a in 0..6 {
        let row = apply(&cols[0][a], &cols[1][a], &cols[2][a]);
        for b in 0..6 {
            for l in 0..L {
                u[6 * a + b][l] = row[b][l] as f32;
            }
        }
    }
    u
}

/// The F(4 x 4) layout of a layer's forward.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Tile rows and columns an image.
    th: usize,
    tw: usize,
    /// Values of one position's products of a tile: whole panels, or [`NARROW`] for the
    /// narrow GEMMs.
    cs: usize,
}

impl Layout {
    fn new(g: &Geom) -> Self {
        Layout {
            th: g.oh.div_ceil(SIDE),
            tw: g.ow.div_ceil(SIDE),
            cs: if narrow(g) {
                NARROW
            } else {
                panels(g.cout) * NR
            },
        }
    }
}

/// Input and output channels of the narrow GEMMs ([`narrow_gemms`]): one AVX-512 register,
/// two AVX2 ones.
const NARROW: usize = NARROW_NR;

/// Whether a layer's GEMMs are the narrow ones ([`narrow_gemms`]): [`NARROW`] input and output
/// channels, whose 6 x 32 micro-kernel tiles would be half padding columns. Such a layer takes
/// F(4 x 4) too ([`super::winograd::chosen`]).
pub(super) fn narrow(g: &Geom) -> bool {
    (g.cin, g.cout) == (NARROW, NARROW)
}

impl Conv2d {
    /// Convolves `batch` images `x` (unpadded) with the F(4 x 4) panels `packed` ([`pack`]) and
    /// the bias row into `y`, storing each output as `store` says. Parallel tasks take whole
    /// tile rows (whole images when the output height is not a multiple of 4).
    pub(super) fn winograd4_stored(
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
        // Tile rows of the batch a block holds: at least a GEMM tile's rows of tiles.
        let row_bytes = lay.tw * TAPS * (g.cin + lay.cs) * std::mem::size_of::<f32>();
        let bytes = if narrow(&g) {
            NARROW_BLOCK_BYTES
        } else {
            BLOCK_BYTES
        };
        let block_rows = (bytes / row_bytes).max(MR.div_ceil(lay.tw));
        let images = (batch, [g.oh, g.ow]);
        if narrow(&g) {
            // The narrow GEMMs read each position's panel as a square, cut once for all the
            // blocks (36 KiB on this thread's stack: no workspace held from call to call).
            let mut squares = [0.0; TAPS * SQUARE];
            for (row, square) in squares.chunks_exact_mut(NARROW).enumerate() {
                square.copy_from_slice(&packed[row * NR..][..NARROW]);
            }
            for_blocks(y, stride, images, SIDE, block_rows, |rows, out, pixel| {
                self.winograd4_block(x, &squares, bias_row, rows, out, pixel, store, lay);
            });
        } else {
            for_blocks(y, stride, images, SIDE, block_rows, |rows, out, pixel| {
                self.winograd4_block(x, packed, bias_row, rows, out, pixel, store, lay);
            });
        }
    }

    /// One block of tile rows `rows` (counted over the batch): the input transform, the 36
    /// GEMMs and the output transform into `out`, whose first pixel is the batch's `pixel`.
    /// `packed` holds the panels ([`pack`]), or for the narrow GEMMs ([`narrow`]) their first
    /// [`NARROW`] columns, a square of [`NARROW`] rows a position.
    #[allow(clippy::too_many_arguments)]
    fn winograd4_block(
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
        // The narrow input transform's column transforms after the transformed input.
        let columns = if narrow(&g) {
            (SIDE * tw + 2) * 6 * NARROW
        } else {
            0
        };
        let mut v = scratch::take(tiles * TAPS * cin + columns, scratch::ANY, 0.0);
        let (v, columns) = v[..tiles * TAPS * cin + columns].split_at_mut(tiles * TAPS * cin);
        let mut m = scratch::take(gemm_tiles * TAPS * cs, scratch::ANY, 0.0);
        let zeros = scratch::take(g.iw * cin, scratch::tag(&[g.iw, cin, 0x3_3]), 0.0);
        // The input transform, a tile row at a time: its patches read input rows
        // `4 ty - 1 ..= 4 ty + 4` (zeros outside the image).
        let line = g.iw * cin;
        for (row, v) in v.chunks_exact_mut(tw * TAPS * cin).enumerate() {
            let r = rows.start + row;
            let (n, ty) = (r / lay.th, r % lay.th);
            let x = &x[n * g.ih * line..][..g.ih * line];
            let lines: [&[f32]; 6] = std::array::from_fn(|i| {
                let iy = (SIDE * ty + i).wrapping_sub(1);
                if iy < g.ih {
                    &x[iy * line..][..line]
                } else {
                    &zeros[..line]
                }
            });
            if narrow(&g) {
                narrow_input_transform(&lines, v, columns, g.iw);
            } else {
                input_transform(&lines, v, g.iw, cin);
            }
        }
        // The GEMMs: position `p` of every tile, `[tiles x cin] x [cin x cout]`.
        let per_tap = panels(g.cout) * cin * NR;
        if narrow(&g) {
            narrow_gemms(
                &v[..tiles * TAPS * cin],
                &mut m[..tiles * TAPS * cs],
                packed,
            );
        } else {
            let panel = |p: usize, j: usize| &packed[p * per_tap + j * cin * NR..][..cin * NR];
            let shape = [tiles, TAPS, panels(g.cout)];
            let runs = self.winograd_runs.all();
            gemms((&v[..], cin), (&mut m[..], cs), shape, runs, panel);
        }
        // The output transform: a tile at a time, its four output rows as four tiles of (up
        // to) four pixels, one panel of channels at a time.
        let (stride, offset) = store.layout(g.cout);
        let mut pixels: [Tile; SIDE] = [[[0.0; NR]; MR]; SIDE];
        for row in 0..rows.len() {
            let r = rows.start + row;
            let ty = r % lay.th;
            let high = (g.oh - SIDE * ty).min(SIDE);
            // The tile row's first pixel, relative to `out`.
            let row_pixel = r / lay.th * g.oh * g.ow + SIDE * ty * g.ow - pixel;
            for tx in 0..tw {
                let wide = (g.ow - SIDE * tx).min(SIDE);
                let t = row * tw + tx;
                for j in 0..panels(g.cout) {
                    let cols = NR.min(g.cout - j * NR);
                    let bias = &bias_row[j * NR..];
                    let m = &m[t * TAPS * cs + j * NR..][..(TAPS - 1) * cs + cols];
                    output_transform(m, cs, bias, &mut pixels, cols);
                    for (i, tile) in pixels[..high].iter().enumerate() {
                        let px = row_pixel + i * g.ow + SIDE * tx;
                        let first = (pixel + px) * stride;
                        let at = px * stride + offset + j * NR;
                        store.store(tile, &mut out[at..], [wide, cols, stride], first, j);
                    }
                }
            }
        }
    }
}

/// Channels a transform handles at once: an AVX-512 register, two AVX2 ones.
pub(super) const LANES: usize = 16;

/// The 36 GEMMs of a block of tiles of [`NARROW`] input and output channels ([`narrow`]),
/// without the micro-kernels' padding columns: position `p` of every
/// tile `t` (its input channels at `v[(t * 36 + p) * NARROW..]`) times the square `p` of
/// `squares` (the first [`NARROW`] columns of position `p`'s panel), into
/// `m[(t * 36 + p) * NARROW..]`, on [`rows_by_square`].
fn narrow_gemms(v: &[f32], m: &mut [f32], squares: &[f32]) {
    let tiles = v.len() / (TAPS * NARROW);
    for (p, u) in squares.chunks_exact(SQUARE).take(TAPS).enumerate() {
        let u = u.try_into().expect("SQUARE values");
        rows_by_square::<{ TAPS * NARROW }>(&v[p * NARROW..], u, &mut m[p * NARROW..], tiles);
    }
}

/// `Bᵀ x` of six vectors: `Bᵀ = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
/// [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`, as differences scaled by
/// powers of two (exact) and added in this order.
#[inline(always)]
pub(super) fn bt<const L: usize>(x: [&[f32; L]; 6]) -> [[f32; L]; 6] {
    let mut y = [[0.0f32; L]; 6];
    for l in 0..L {
        let a = x[4][l] - 4.0 * x[2][l];
        let b = x[3][l] - 4.0 * x[1][l];
        let c = x[4][l] - x[2][l];
        let d = 2.0 * (x[3][l] - x[1][l]);
        y[0][l] = 4.0 * (x[0][l] - x[2][l]) + c;
        y[1][l] = a + b;
        y[2][l] = a - b;
        y[3][l] = c + d;
        y[4][l] = c - d;
        y[5][l] = 4.0 * (x[1][l] - x[3][l]) + (x[5][l] - x[3][l]);
    }
    y
}

/// `Aᵀ m` of six vectors: `Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1]]`, as sums and differences scaled by powers of two (exact) and added in
/// this order.
#[inline(always)]
fn at<const L: usize>(m: [&[f32; L]; 6]) -> [[f32; L]; 4] {
    let mut y = [[0.0f32; L]; 4];
    for l in 0..L {
        let (s12, d12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (s34, d34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        y[0][l] = m[0][l] + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + m[5][l];
    }
    y
}

multiversion! {
    /// `v = Bᵀ d B` ([`bt`]) for each channel of the 6 x 6 patch `d` of every tile of a tile row
    /// (patch row `i` from `lines[i]`, an input row of `iw` pixels; column `j` of tile `tx` its
    /// pixel `4 tx + j - 1`, zeros outside), tile `tx`'s position `p` into
    /// `v[(tx * 36 + p) * cin..]`: the rows first, then the columns.
    pub(super) fn input_transform(lines: &[&[f32]; 6], v: &mut [f32], iw: usize, cin: usize) {
        for (tx, v) in v.chunks_exact_mut(TAPS * cin).enumerate() {
            // Columns `first..first + 6`; wrapped (huge) where `first` is -1.
            let first = (SIDE * tx).wrapping_sub(1);
            let inside = tx > 0 && SIDE * tx + SIDE < iw;
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

multiversion! {
    /// [`input_transform`] of a tile row of [`NARROW`] channels ([`narrow`]), the same values:
    /// each input column's `Bᵀ` over the six rows once (zeros outside the image), which the
    /// two tiles whose patches share the column both read (into `t`, `(4 tw + 2) x 6`
    /// vectors), then each tile's `B` over its six columns of that.
    fn narrow_input_transform(lines: &[&[f32]; 6], v: &mut [f32], t: &mut [f32], iw: usize) {
        let tw = v.len() / (TAPS * NARROW);
        // Column `c` of the tile row's patches is input column `c - 1`.
        let cols = SIDE * tw + 2;
        let t = &mut t[..cols * 6 * NARROW];
        let zero = [0.0f32; NARROW];
        for (c, t) in t.chunks_exact_mut(6 * NARROW).enumerate() {
            let col = c.wrapping_sub(1);
            let x: [&[f32; NARROW]; 6] = std::array::from_fn(|i| {
                if col < iw {
                    lines[i][col * NARROW..][..NARROW].try_into().expect("NARROW values")
                } else {
                    &zero
                }
            });
            for (t, y) in t.chunks_exact_mut(NARROW).zip(bt(x)) {
                t.copy_from_slice(&y);
            }
        }
        for (tx, v) in v.chunks_exact_mut(TAPS * NARROW).enumerate() {
            let t = &t[SIDE * tx * 6 * NARROW..][..6 * 6 * NARROW];
            for k in 0..6 {
                let row: [&[f32; NARROW]; 6] = std::array::from_fn(|j| {
                    t[(6 * j + k) * NARROW..][..NARROW].try_into().expect("NARROW values")
                });
                for (q, o) in bt(row).iter().enumerate() {
                    v[(6 * k + q) * NARROW..][..NARROW].copy_from_slice(o);
                }
            }
        }
    }
}

/// [`input_transform`] of channels `c..c + L` of the tile whose patch starts at column
/// `first`; `inside`: all six of its columns are in the image.
#[inline(always)]
fn input_lanes<const L: usize>(
    lines: &[&[f32]; 6],
    v: &mut [f32],
    first: usize,
    inside: bool,
    iw: usize,
    c: usize,
    cin: usize,
) {
    let zero = [0.0f32; L];
    // Patch row `i`, column `j` at `x[6 * i + j]`.
    let mut x = [&zero; TAPS];
    for (i, line) in lines.iter().enumerate() {
        for j in 0..6 {
            let col = first.wrapping_add(j);
            if inside || col < iw {
                x[6 * i + j] = line[col * cin + c..][..L].try_into().expect("L values");
            }
        }
    }
    // Bᵀ d: row combinations, per column (`t[j][k]`: row `k` of column `j`).
    let t = [
        bt([x[0], x[6], x[12], x[18], x[24], x[30]]),
        bt([x[1], x[7], x[13], x[19], x[25], x[31]]),
        bt([x[2], x[8], x[14], x[20], x[26], x[32]]),
        bt([x[3], x[9], x[15], x[21], x[27], x[33]]),
        bt([x[4], x[10], x[16], x[22], x[28], x[34]]),
        bt([x[5], x[11], x[17], x[23], x[29], x[35]]),
    ];
    // (Bᵀ d) B: column combinations, per row.
    for k in 0..6 {
        let o = bt([&t[0][k], &t[1][k], &t[2][k], &t[3][k], &t[4][k], &t[5][k]]);
        for (q, o) in o.iter().enumerate() {
            v[(6 * k + q) * cin + c..][..L].copy_from_slice(o);
        }
    }
}

multiversion! {
    /// `Aᵀ m A + bias` ([`at`]) of one tile's products `m` (position `p` at `m[p * cs..]`),
    /// columns `..cols`: the rows first, then the columns, then the bias; output row `i`'s
    /// pixels into `pixels[i][..4]`.
    pub(super) fn output_transform(m: &[f32], cs: usize, bias: &[f32], pixels: &mut [Tile; SIDE], cols: usize) {
        let mut c = 0;
        while c + LANES <= cols {
            output_lanes::<LANES>(m, cs, bias, pixels, c);
            c += LANES;
        }
        while c < cols {
            output_lanes::<1>(m, cs, bias, pixels, c);
            c += 1;
        }
    }
}

/// [`output_transform`] of columns `c..c + L`.
#[inline(always)]
fn output_lanes<const L: usize>(
    m: &[f32],
    cs: usize,
    bias: &[f32],
    pixels: &mut [Tile; SIDE],
    c: usize,
) {
    let m = &m[c..(TAPS - 1) * cs + c + L];
    let mut x = [&[0.0f32; L]; TAPS];
    for (p, x) in x.iter_mut().enumerate() {
        *x = m[p * cs..][..L].try_into().expect("L values");
    }
    let b: &[f32; L] = bias[c..c + L].try_into().expect("L values");
    // Aᵀ m: row combinations, per column (`s[j][k]`: row `k` of column `j`).
    let s = [
        at([x[0], x[6], x[12], x[18], x[24], x[30]]),
        at([x[1], x[7], x[13], x[19], x[25], x[31]]),
        at([x[2], x[8], x[14], x[20], x[26], x[32]]),
        at([x[3], x[9], x[15], x[21], x[27], x[33]]),
        at([x[4], x[10], x[16], x[22], x[28], x[34]]),
        at([x[5], x[11], x[17], x[23], x[29], x[35]]),
    ];
    // (Aᵀ m) A, then the bias.
    for (k, pixels) in pixels.iter_mut().enumerate() {
        let o = at([&s[0][k], &s[1][k], &s[2][k], &s[3][k], &s[4][k], &s[5][k]]);
        for (q, o) in o.iter().enumerate() {
            for (px, (&o, &b)) in pixels[q][c..c + L].iter_mut().zip(o.iter().zip(b)) {
                *px = o + b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::forward::Padded;
    use super::super::winograd::tests::{layer, least_ms, values};
    use super::super::winograd::{self, Tiling};
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;
    use crate::layers::Layer;

    fn check(cin: usize, cout: usize, hw: [usize; 2], batch: usize, bias: bool) {
        winograd::tests::check_tiling(Tiling::F4, 1e-5, cin, cout, hw, batch, bias);
    }

    /// ResNet-20's shapes and borders: heights and widths that are not multiples of 4 (a last
    /// tile row or column one to three pixels wide), images 3 pixels on a side and one pixel
    /// high, batch 1, channels off the lanes and panels, with and without a bias.
    #[test]
    fn winograd4_matches_the_definition_on_every_path() {
        for (cin, cout, hw, batch, bias) in [
            (32, 32, [16, 16], 3, false),
            (32, 32, [8, 8], 1, true),
            (17, 17, [3, 3], 1, true),
            (33, 40, [5, 7], 3, true),
            (24, 63, [6, 9], 1, false),
            (64, 64, [8, 8], 2, true),
            (100, 127, [5, 6], 1, true),
            (63, 20, [4, 3], 2, true),
            (32, 34, [11, 2], 2, true),
            (20, 32, [1, 9], 2, false),
            (16, 16, [32, 32], 2, false),
            (16, 16, [7, 5], 3, true),
            (16, 16, [1, 9], 1, true),
            (16, 16, [3, 3], 1, false),
            (16, 16, [13, 6], 2, true),
        ] {
            check(cin, cout, hw, batch, bias);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`check`] over random shapes: 17 to 79 channels in and out (partial lanes and
        /// panels), images of 1 to 13 rows and 5 to 13 columns, batches 1 to 4.
        #[test]
        fn winograd4_matches_the_definition_over_shapes(
            cin in 17usize..80,
            cout in 17usize..80,
            h in 1usize..14,
            w in 5usize..14,
            batch in 1usize..5,
            bias in proptest::bool::ANY,
        ) {
            check(cin, cout, [h, w], batch, bias);
        }

        /// [`check`] of the narrow GEMMs (16 -> 16) over random shapes: images of 1 to 13 rows
        /// and 5 to 13 columns (tile groups cut short, borders), batches 1 to 4.
        #[test]
        fn winograd4_narrow_matches_the_definition_over_shapes(
            h in 1usize..14,
            w in 5usize..14,
            batch in 1usize..5,
            bias in proptest::bool::ANY,
        ) {
            check(16, 16, [h, w], batch, bias);
        }
    }

    /// The narrow input transform is [`input_transform`]'s, bit for bit: tile rows of one to
    /// four tiles over images whose width is a multiple of 4 or not, a row of zeros among the
    /// lines.
    #[test]
    fn narrow_input_transform_is_input_transforms() {
        for (iw, tw) in [(32, 8), (5, 2), (7, 2), (4, 1), (9, 3)] {
            let data = values(5 * iw * NARROW, iw);
            let zeros = vec![0.0; iw * NARROW];
            let lines: [&[f32]; 6] = std::array::from_fn(|i| match i {
                0 => &zeros[..],
                i => &data[(i - 1) * iw * NARROW..][..iw * NARROW],
            });
            let mut want = vec![f32::NAN; tw * TAPS * NARROW];
            input_transform(&lines, &mut want, iw, NARROW);
            let mut got = vec![f32::NAN; tw * TAPS * NARROW];
            let mut columns = vec![f32::NAN; (4 * tw + 2) * 6 * NARROW];
            narrow_input_transform(&lines, &mut got, &mut columns, iw);
            assert_eq!(
                super::super::winograd::tests::bits(&got),
                super::super::winograd::tests::bits(&want),
                "{iw}"
            );
        }
    }

    /// Channels choose the tiles: F(4 x 4) when both the input and output channels are 17 to
    /// 127 or both are 16, else F(2 x 2) from 64 in and out, else the direct path; the other
    /// conditions are F(2 x 2)'s.
    #[test]
    fn winograd4_is_chosen_from_the_channels() {
        let chosen = |cin, cout, hw: [usize; 2]| {
            let config = Conv2dConfig {
                padding: [1, 1],
                padding_end: [1, 1],
                ..Conv2dConfig::new(cin, cout, [3, 3])
            };
            Conv2d::new("conv", &config, hw, &mut init_rng(1))
                .expect("a valid convolution")
                .winograd()
        };
        assert_eq!(chosen(32, 32, [16, 16]), Some(Tiling::F4));
        assert_eq!(chosen(17, 63, [5, 1]), Some(Tiling::F4));
        assert_eq!(chosen(64, 32, [8, 8]), Some(Tiling::F4));
        assert_eq!(chosen(32, 64, [8, 8]), Some(Tiling::F4));
        assert_eq!(chosen(64, 64, [8, 8]), Some(Tiling::F4));
        assert_eq!(chosen(127, 17, [8, 8]), Some(Tiling::F4));
        assert_eq!(chosen(127, 300, [8, 8]), Some(Tiling::F2));
        assert_eq!(chosen(128, 128, [8, 8]), Some(Tiling::F2));
        assert_eq!(chosen(128, 64, [8, 8]), Some(Tiling::F2));
        assert_eq!(chosen(128, 32, [14, 14]), None, "DenseNet's: direct");
        assert_eq!(
            chosen(16, 16, [32, 32]),
            Some(Tiling::F4),
            "the narrow GEMMs"
        );
        assert_eq!(chosen(16, 16, [5, 1]), Some(Tiling::F4));
        assert_eq!(
            chosen(16, 16, [2, 2]),
            None,
            "four pixels: only the real taps"
        );
        assert_eq!(chosen(16, 32, [32, 32]), None);
        assert_eq!(chosen(32, 16, [32, 32]), None);
        assert_eq!(chosen(15, 15, [32, 32]), None);
        assert_eq!(
            chosen(32, 32, [2, 2]),
            None,
            "four pixels: only the real taps"
        );
        let strided = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            stride: [2, 2],
            ..Conv2dConfig::new(32, 32, [3, 3])
        };
        let conv = Conv2d::new("conv", &strided, [16, 16], &mut init_rng(1)).expect("valid");
        assert_eq!(conv.winograd(), None);
    }

    /// One thread, batch 64: the direct forward, F(2 x 2)'s and F(4 x 4)'s of the same layer,
    /// alternating, the least CPU time of 15 calls each, five rounds (`cargo test --release -p
    /// cnnc-runtime --lib winograd4_timing -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn winograd4_timing() {
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
                (64, 64, 16),
                (64, 64, 32),
                (96, 96, 8),
                (128, 128, 8),
                (128, 128, 16),
            ] {
                let conv = layer(cin, cout, [hw, hw], false, 5);
                let (nx, ny) = (conv.input_shape().numel(), conv.output_shape().numel());
                let x = values(batch * nx, 1);
                let mut y = vec![0.0; batch * ny];
                let direct_len = panels(cout) * conv.forward_steps() * NR;
                let mut direct = vec![0.0; direct_len];
                conv.pack_read(false, &mut direct);
                let w = conv.weight.value.as_slice().expect("contiguous");
                let mut f2 = vec![0.0; winograd::panels_len(&conv.g, Tiling::F2)];
                winograd::pack(&conv.g, w, &mut f2, Tiling::F2);
                let mut f4 = vec![0.0; winograd::panels_len(&conv.g, Tiling::F4)];
                winograd::pack(&conv.g, w, &mut f4, Tiling::F4);
                let bias = conv.bias_row.clone();
                let mut best = [f64::INFINITY; 3];
                for _ in 0..5 {
                    best[0] = best[0].min(least_ms(15, || {
                        let xp = conv.padded_input(&x, batch);
                        let input = Padded::Batch(&xp);
                        let store = TileStore::Plain;
                        conv.convolve_stored(input, (&direct, &bias), &mut y, batch, store, None);
                        scratch::give_back(xp);
                    }));
                    best[1] = best[1].min(least_ms(15, || {
                        let store = TileStore::Plain;
                        conv.winograd_stored(&x, (&f2, &bias), &mut y, batch, store);
                    }));
                    best[2] = best[2].min(least_ms(15, || {
                        let store = TileStore::Plain;
                        conv.winograd4_stored(&x, (&f4, &bias), &mut y, batch, store);
                    }));
                }
                let [d, f2, f4] = best;
                println!(
                    "{cin:4} -> {cout:4} {hw:2}x{hw:<2}  direct {d:7.3} ms  F(2x2) {f2:7.3} ms ({:.2}x)  F(4x4) {f4:7.3} ms ({:.2}x)",
                    d / f2,
                    d / f4
                );
            }
        });
    }
}
