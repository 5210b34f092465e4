//! The forward pass of a 5 x 5, stride-1, 'same' (padding 2) convolution as Winograd's
//! F(2 x 2, 5 x 5): each 2 x 2 block of output pixels (a *tile*) from the 6 x 6 input patch
//! around it, in 36 multiplies a channel pair instead of 100.
//!
//! The six interpolation points are F(4 x 4, 3 x 3)'s ([`super::winograd4`]: 0, ±1, ±2, ∞), so
//! the input transform `Bᵀ d B` is its [`winograd4::bt`]; the kernel transform `G g Gᵀ` (6 x 5)
//! and the output transform `Aᵀ m A` (2 x 6) are this module's. The structure is
//! [`super::winograd`]'s: per block of tiles (its transformed input and products in L2), the
//! input transform of every tile's patch (channels in the vector lanes, zeros outside the
//! image), for each of the 36 positions a GEMM `[tiles x cin] x [cin x cout]` on the packed
//! micro-kernels, then the output transform plus the bias, stored through the layer's
//! [`TileStore`] ([`Conv2d::winograd5_stored`]) or, with a fused ReLU and 2 x 2 max pool, through
//! the ReLU into the maximum of the tile's four pixels ([`Conv2d::winograd5_pooled`]): a tile is
//! exactly one pool window, so the convolution's output never reaches memory, and the window's
//! position of the maximum is recorded as the direct path's pool records it
//! ([`super::fused_pool`]), for the (direct) backward.
//!
//! The transforms multiply only by powers of two (exact) and add in one fixed order, the
//! weights are transformed in f64 and rounded once, and the GEMM's chains are the
//! micro-kernels' own: no value depends on the threads or the instruction family.

use super::Conv2d;
use super::fused_pool::FusedPool;
use super::geometry::Geom;
use super::plan::gcd;
use super::tile::TileStore;
use super::winograd::{for_blocks, gemms};
use super::winograd4::{self, LANES, bt};
use crate::kernels::gemm::{MR, NR, Tile, panels};
use crate::kernels::window::NONE;
use crate::layers::grow;
use crate::par;
use crate::scratch;
use crate::simd::multiversion;

/// Values of a transformed tile: 6 x 6.
pub(super) const TAPS: usize = winograd4::TAPS;

/// Output pixels a tile has on a side.
const SIDE: usize = 2;

/// Most bytes of transformed input and products one block of tiles holds: a quarter of a 1 MiB
/// L2, as [`super::winograd`]'s.
const BLOCK_BYTES: usize = 256 * 1024;

/// The transformed weight `G g Gᵀ` of one `5 x 5` kernel `g` (row-major), in f64 and rounded
/// once: `G` has a row per interpolation point `p` (0, 1, -1, 2, -2), `f (1, p, p², p³, p⁴)`
/// with `f` = 1/4, -1/6, -1/6, 1/24, 1/24 ([`winograd4::weight_tile`]'s factors, which go with
/// [`winograd4::bt`]), and `(0, 0, 0, 0, 1)` for ∞; applied to the kernel's columns, then to the rows of
/// that.
pub(super) fn weight_tile(g: &[f32]) -> [f32; TAPS] {
    let g: [f64; 25] = std::array::from_fn(|k| f64::from(g[k]));
    // `G v` of five values.
    let apply = |v: [f64; 5]| {
        let even = v[0] + v[2] + v[4];
        let odd = v[1] + v[3];
        let even2 = v[0] + 4.0 * v[2] + 16.0 * v[4];
        let odd2 = 2.0 * v[1] + 8.0 * v[3];
        [
            v[0] / 4.0,
            -(even + odd) / 6.0,
            -(even - odd) / 6.0,
            (even2 + odd2) / 24.0,
            (even2 - odd2) / 24.0,
            v[4],
        ]
    };
    // `G g`: row `a` of it, over the kernel's columns.
    let cols: [[f64; 6]; 5] = std::array::from_fn(|l| apply(std::array::from_fn(|k| g[5 * k + l])));
    let mut u = [0.0; TAPS];
    for a in 0..6 {
        let row = apply(std::array::from_fn(|l| cols[l][a]));
        for b in 0..6 {
            u[6 * a + b] = row[b] as f32;
        }
    }
    u
}

/// The F(2 x 2, 5 x 5) layout of a layer's forward.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Tile rows and columns an image.
    th: usize,
    tw: usize,
    /// Values of one position's products of a tile: whole panels.
    cs: usize,
    /// Tile rows of the batch a block holds: whole GEMM tiles of tiles where the block's bytes
    /// allow, and at least a GEMM tile's rows of tiles.
    block_rows: usize,
}

impl Layout {
    fn new(g: &Geom) -> Self {
        let (tw, cs) = (g.ow.div_ceil(SIDE), panels(g.cout) * NR);
        let row_bytes = tw * TAPS * (g.cin + cs) * std::mem::size_of::<f32>();
        let (most, whole) = (BLOCK_BYTES / row_bytes, MR / gcd(MR, tw));
        let block_rows = if most >= whole {
            most / whole * whole
        } else {
            most.max(MR.div_ceil(tw))
        };
        Layout {
            th: g.oh.div_ceil(SIDE),
            tw,
            cs,
            block_rows,
        }
    }
}

impl Conv2d {
    /// Convolves `batch` images `x` (unpadded) with the F(2 x 2, 5 x 5) panels `packed`
    /// ([`super::winograd::pack`]) and the bias row into `y`, storing each output as `store`
    /// says. Parallel tasks take whole tile rows (whole images when the output height is odd,
    /// as its last tile row is one pixel high).
    pub(super) fn winograd5_stored(
        &self,
        x: &[f32],
        (packed, bias_row): (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        store: TileStore<'_>,
    ) {
        let g = self.g;
        let lay = Layout::new(&g);
        let (stride, offset) = store.layout(g.cout);
        let images = (batch, [g.oh, g.ow]);
        for_blocks(
            y,
            stride,
            images,
            SIDE,
            lay.block_rows,
            |rows, out, pixel| {
                let m = self.winograd5_products(x, packed, rows.clone(), lay);
                // The output transform: three tiles of a tile row at a time, as two tiles of six
                // pixels (the top and bottom output rows), one panel of channels at a time.
                let mut top: Tile = [[0.0; NR]; MR];
                let mut bottom: Tile = [[0.0; NR]; MR];
                for row in 0..rows.len() {
                    let r = rows.start + row;
                    let ty = r % lay.th;
                    let high = (g.oh - SIDE * ty).min(SIDE);
                    // The tile row's first pixel, relative to `out`.
                    let row_pixel = r / lay.th * g.oh * g.ow + SIDE * ty * g.ow - pixel;
                    for tx in (0..lay.tw).step_by(MR / SIDE) {
                        let wide = (g.ow - SIDE * tx).min(MR);
                        let count = wide.div_ceil(SIDE);
                        for j in 0..panels(g.cout) {
                            let cols = NR.min(g.cout - j * NR);
                            let bias = &bias_row[j * NR..];
                            let t = row * lay.tw + tx;
                            let len = ((count - 1) * TAPS + TAPS - 1) * lay.cs + cols;
                            let m = &m[t * TAPS * lay.cs + j * NR..][..len];
                            output_transform(m, lay.cs, bias, [&mut top, &mut bottom], count, cols);
                            let px = row_pixel + SIDE * tx;
                            let first = (pixel + px) * stride;
                            let at = px * stride + offset + j * NR;
                            store.store(&top, &mut out[at..], [wide, cols, stride], first, j);
                            if high == SIDE {
                                let at = at + g.ow * stride;
                                let first = first + g.ow * stride;
                                store.store(
                                    &bottom,
                                    &mut out[at..],
                                    [wide, cols, stride],
                                    first,
                                    j,
                                );
                            }
                        }
                    }
                }
            },
        );
    }

    /// [`Conv2d::winograd5_stored`] through the ReLU and the fused 2 x 2 max pool `pool` (the
    /// output's height and width even, so a tile is a window): `y` the pooled output, and
    /// `pool.argmax` each window's position of its maximum, as [`super::fused_pool`] records
    /// it. Parallel tasks take whole pooled rows.
    pub(super) fn winograd5_pooled(
        &self,
        x: &[f32],
        (packed, bias_row): (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        pool: &mut FusedPool,
    ) {
        let g = self.g;
        let lay = Layout::new(&g);
        debug_assert_eq!(
            (pool.kh, pool.kw, pool.oh, pool.ow),
            (SIDE, SIDE, lay.th, lay.tw)
        );
        let ny = y.len();
        grow(&mut pool.argmax, ny, NONE);
        // Pooled row `r` of the batch is tile row `r`; tasks of whole blocks, or fewer rows
        // where that leaves fewer than four tasks a thread.
        let (rows, row_len) = (batch * lay.th, lay.tw * g.cout);
        let task_rows = rows
            .div_ceil(4 * rayon::current_num_threads())
            .clamp(1, lay.block_rows);
        let task_len = task_rows * row_len;
        let argmax = &mut pool.argmax[..ny];
        par::chunks_mut2(y, task_len, argmax, task_len, |task, y, argmax| {
            let first = task * task_rows;
            let rows = first..(first + task_rows).min(rows);
            let m = self.winograd5_products(x, packed, rows.clone(), lay);
            for (row, (y, argmax)) in y
                .chunks_exact_mut(row_len)
                .zip(argmax.chunks_exact_mut(row_len))
                .enumerate()
            {
                for tx in 0..lay.tw {
                    let t = row * lay.tw + tx;
                    for j in 0..panels(g.cout) {
                        let cols = NR.min(g.cout - j * NR);
                        let bias = &bias_row[j * NR..];
                        let m = &m[t * TAPS * lay.cs + j * NR..][..(TAPS - 1) * lay.cs + cols];
                        let at = tx * g.cout + j * NR;
                        let (y, argmax) = (&mut y[at..at + cols], &mut argmax[at..at + cols]);
                        pool_transform(m, lay.cs, bias, y, argmax);
                    }
                }
            }
        });
        pool.indexed = ny;
    }

    /// The transformed input of the tile rows `rows` (counted over the batch) and its 36
    /// GEMMs: the products, tile `t`'s position `p` at `(t * 36 + p) * lay.cs`.
    fn winograd5_products(
        &self,
        x: &[f32],
        packed: &[f32],
        rows: std::ops::Range<usize>,
        lay: Layout,
    ) -> scratch::Scratch<f32> {
        let g = self.g;
        let (cin, cs, tw) = (g.cin, lay.cs, lay.tw);
        let tiles = rows.len() * tw;
        // Whole GEMM tiles: the rows past the last tile repeat it, into products never read.
        let gemm_tiles = tiles.div_ceil(MR) * MR;
        let mut v = scratch::take(tiles * TAPS * cin, scratch::ANY, 0.0);
        let mut m = scratch::take(gemm_tiles * TAPS * cs, scratch::ANY, 0.0);
        let zeros = scratch::take(g.iw * cin, scratch::tag(&[g.iw, cin, 0x3_3]), 0.0);
        let mut cols = scratch::take((SIDE * tw + 4) * 6 * cin, scratch::ANY, 0.0);
        // The input transform, a tile row at a time: its patches read input rows
        // `2 ty - 2 ..= 2 ty + 3` (zeros outside the image).
        let line = g.iw * cin;
        for (row, v) in v[..tiles * TAPS * cin]
            .chunks_exact_mut(tw * TAPS * cin)
            .enumerate()
        {
            let r = rows.start + row;
            let (n, ty) = (r / lay.th, r % lay.th);
            let x = &x[n * g.ih * line..][..g.ih * line];
            let lines: [&[f32]; 6] = std::array::from_fn(|i| {
                let iy = (SIDE * ty + i).wrapping_sub(2);
                if iy < g.ih {
                    &x[iy * line..][..line]
                } else {
                    &zeros[..line]
                }
            });
            input_transform(&lines, &mut cols, v, g.iw, cin);
        }
        // The GEMMs: position `p` of every tile, `[tiles x cin] x [cin x cout]`.
        let per_tap = panels(g.cout) * cin * NR;
        let panel = |p: usize, j: usize| &packed[p * per_tap + j * cin * NR..][..cin * NR];
        let shape = [tiles, TAPS, panels(g.cout)];
        let runs = self.winograd_runs.all();
        gemms((&v[..], cin), (&mut m[..], cs), shape, runs, panel);
        m
    }
}

multiversion! {
    /// `v = Bᵀ d B` ([`winograd4::bt`]) for each channel of the 6 x 6 patch `d` of every tile of
    /// a tile row (patch row `i` from `lines[i]`, an input row of `iw` pixels; column `j` of
    /// tile `tx` its pixel `2 tx + j - 2`, zeros outside), tile `tx`'s position `p` into
    /// `v[(tx * 36 + p) * cin..]`: the rows first, each input column's once into `cols`
    /// (`(2 tiles + 4) * 6 * cin` values: column `x`'s row `k` at `((x + 2) * 6 + k) * cin`; the
    /// columns outside the image zeros, as their transform is), then the columns of each tile's
    /// six.
    fn input_transform(lines: &[&[f32]; 6], cols: &mut [f32], v: &mut [f32], iw: usize, cin: usize) {
        let column = 6 * cin;
        let tiles = v.len() / (TAPS * cin);
        cols[..2 * column].fill(0.0);
        cols[(iw + 2) * column..(SIDE * tiles + 4) * column].fill(0.0);
        for ix in 0..iw {
            let out = &mut cols[(ix + 2) * column..][..column];
            let at = ix * cin;
            let row = |i: usize| &lines[i][at..at + cin];
            let rows = [row(0), row(1), row(2), row(3), row(4), row(5)];
            let mut c = 0;
            while c + LANES <= cin {
                bt_lanes::<LANES>(rows, out, cin, c);
                c += LANES;
            }
            while c < cin {
                bt_lanes::<1>(rows, out, cin, c);
                c += 1;
            }
        }
        for (tx, v) in v.chunks_exact_mut(TAPS * cin).enumerate() {
            let cols = &cols[SIDE * tx * column..][..6 * column];
            for k in 0..6 {
                let col = |j: usize| &cols[(6 * j + k) * cin..][..cin];
                let rows = [col(0), col(1), col(2), col(3), col(4), col(5)];
                let out = &mut v[6 * k * cin..][..column];
                let mut c = 0;
                while c + LANES <= cin {
                    bt_lanes::<LANES>(rows, out, cin, c);
                    c += LANES;
                }
                while c < cin {
                    bt_lanes::<1>(rows, out, cin, c);
                    c += 1;
                }
            }
        }
    }
}

/// [`winograd4::bt`] of channels `c..c + L` of the six vectors `x`, value `q` into
/// `out[q * cin + c..]`.
#[inline(always)]
fn bt_lanes<const L: usize>(x: [&[f32]; 6], out: &mut [f32], cin: usize, c: usize) {
    let lanes = |i: usize| -> &[f32; L] { x[i][c..c + L].try_into().expect("L values") };
    let x = [lanes(0), lanes(1), lanes(2), lanes(3), lanes(4), lanes(5)];
    for (q, y) in bt(x).iter().enumerate() {
        out[q * cin + c..][..L].copy_from_slice(y);
    }
}

/// `Aᵀ m` of six vectors: `Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]]` (row `k` the
/// points' `k`-th powers), as sums and differences scaled by two (exact) and added in this
/// order, as [`winograd4`]'s first and last rows.
#[inline(always)]
fn at<const L: usize>(m: [&[f32; L]; 6]) -> [[f32; L]; 2] {
    let mut y = [[0.0f32; L]; 2];
    for l in 0..L {
        let (s12, d12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (s34, d34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        y[0][l] = m[0][l] + s12 + s34;
        y[1][l] = d12 + 2.0 * d34 + m[5][l];
    }
    y
}

/// `Aᵀ m A + bias` of columns `c..c + L` of one tile's products `m` (position `p` at
/// `m[p * cs..]`): the rows first, then the columns, then the bias; output pixel `(i, j)` of the
/// tile at `[i][j]`.
#[inline(always)]
fn output_lanes<const L: usize>(
    m: &[f32],
    cs: usize,
    bias: &[f32],
    c: usize,
) -> [[[f32; L]; 2]; 2] {
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
    let mut o = [
        at([&s[0][0], &s[1][0], &s[2][0], &s[3][0], &s[4][0], &s[5][0]]),
        at([&s[0][1], &s[1][1], &s[2][1], &s[3][1], &s[4][1], &s[5][1]]),
    ];
    for o in o.iter_mut().flatten() {
        for (o, &b) in o.iter_mut().zip(b) {
            *o += b;
        }
    }
    o
}

multiversion! {
    /// `Aᵀ m A + bias` ([`output_lanes`]) of `count` consecutive tiles' products `m` (tile `k`'s
    /// position `p` at `m[(k * 36 + p) * cs..]`), columns `..cols`: tile `k`'s top pixels into
    /// `rows[0][2 k]` and `rows[0][2 k + 1]`, its bottom ones into `rows[1]`.
    fn output_transform(
        m: &[f32],
        cs: usize,
        bias: &[f32],
        rows: [&mut Tile; 2],
        count: usize,
        cols: usize,
    ) {
        let [top, bottom] = rows;
        for k in 0..count {
            let m = &m[k * TAPS * cs..];
            let mut c = 0;
            while c < cols {
                if c + LANES <= cols {
                    let o = output_lanes::<LANES>(m, cs, bias, c);
                    for (rows, o) in [(&mut *top, o[0]), (&mut *bottom, o[1])] {
                        rows[2 * k][c..c + LANES].copy_from_slice(&o[0]);
                        rows[2 * k + 1][c..c + LANES].copy_from_slice(&o[1]);
                    }
                    c += LANES;
                } else {
                    let o = output_lanes::<1>(m, cs, bias, c);
                    for (rows, o) in [(&mut *top, o[0]), (&mut *bottom, o[1])] {
                        rows[2 * k][c] = o[0][0];
                        rows[2 * k + 1][c] = o[1][0];
                    }
                    c += 1;
                }
            }
        }
    }
}

multiversion! {
    /// The fused ReLU and 2 x 2 max pool of one tile ([`output_lanes`]) into `y` and `argmax`
    /// (`y.len()` columns): each pixel through the ReLU as [`crate::layers::Relu`] computes it,
    /// then the window's maximum and its position in scan order as
    /// [`crate::kernels::window`]'s pool finds them (the first of equal values, a NaN taken),
    /// [`NONE`] where the maximum is not positive.
    fn pool_transform(m: &[f32], cs: usize, bias: &[f32], y: &mut [f32], argmax: &mut [u16]) {
        let cols = y.len();
        let mut c = 0;
        while c + LANES <= cols {
            pool_lanes::<LANES>(m, cs, bias, y, argmax, c);
            c += LANES;
        }
        while c < cols {
            pool_lanes::<1>(m, cs, bias, y, argmax, c);
            c += 1;
        }
    }
}

/// [`pool_transform`] of columns `c..c + L`.
#[inline(always)]
fn pool_lanes<const L: usize>(
    m: &[f32],
    cs: usize,
    bias: &[f32],
    y: &mut [f32],
    argmax: &mut [u16],
    c: usize,
) {
    let [[p0, p1], [p2, p3]] = output_lanes::<L>(m, cs, bias, c);
    let (y, argmax) = (&mut y[c..c + L], &mut argmax[c..c + L]);
    let relu = |v: f32| if v < 0.0 { 0.0 } else { v };
    for l in 0..L {
        // The first pixel is always taken over the pool's starting -inf (after the ReLU it is
        // not less than zero, or NaN); each later one where greater, or NaN.
        let (mut best, mut at) = (relu(p0[l]), 0);
        for (p, v) in [(1, p1[l]), (2, p2[l]), (3, p3[l])] {
            let v = relu(v);
            let take = v > best || v.is_nan();
            best = if take { v } else { best };
            at = if take { p } else { at };
        }
        y[l] = best;
        argmax[l] = if best > 0.0 { at } else { NONE };
    }
}

#[cfg(test)]
mod tests {
    use super::super::forward::Padded;
    use super::super::forward::tests::reference;
    use super::super::winograd::tests::{bits, check_layer, least_ms, values};
    use super::super::winograd::{self, Tiling};
    use super::*;
    use crate::config::{Conv2dConfig, Pool2dConfig};
    use crate::init::init_rng;
    use crate::layers::Layer;
    use crate::tensor::Mode;

    /// A 5 x 5 'same' convolution of `hw` images.
    fn layer(cin: usize, cout: usize, hw: [usize; 2], bias: bool, seed: u64) -> Conv2d {
        let config = Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            bias,
            ..Conv2dConfig::new(cin, cout, [5, 5])
        };
        Conv2d::new("conv", &config, hw, &mut init_rng(seed)).expect("a valid convolution")
    }

    /// [`layer`] fusing its ReLU and a 2 x 2 max pool.
    fn pooled(cin: usize, cout: usize, hw: [usize; 2], bias: bool, seed: u64) -> Conv2d {
        let mut conv = layer(cin, cout, hw, bias, seed);
        conv.fuse_relu();
        let pool = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        assert!(Layer::fuse_max_pool(&mut conv, &pool), "{hw:?}");
        conv
    }

    /// The error bound against the f64 definition, relative to each output's sum of the
    /// products' magnitudes: F(4 x 4, 3 x 3)'s, whose transforms are as large.
    const TOLERANCE: f64 = 1e-5;

    fn check(cin: usize, cout: usize, hw: [usize; 2], batch: usize, bias: bool) {
        let conv = layer(cin, cout, hw, bias, (cin * 31 + cout) as u64);
        check_layer(Tiling::F2R5, TOLERANCE, conv, batch);
    }

    /// The separate ReLU and 2 x 2 max pool of `z` (`batch` images of `h x w` pixels, `c`
    /// channels), as [`crate::kernels::window`]'s fused pool computes them: the pooled values
    /// and each window's position of its maximum.
    fn relu_pool(z: &[f32], batch: usize, [h, w]: [usize; 2], c: usize) -> (Vec<f32>, Vec<u16>) {
        let (mut y, mut argmax) = (Vec::new(), Vec::new());
        for n in 0..batch {
            for py in 0..h / 2 {
                for px in 0..w / 2 {
                    for ch in 0..c {
                        let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                        for (p, (dy, dx)) in
                            [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate()
                        {
                            let v = z[((n * h + 2 * py + dy) * w + 2 * px + dx) * c + ch];
                            let v = if v < 0.0 { 0.0 } else { v };
                            if v > best || v.is_nan() {
                                (best, at) = (v, p as u16);
                            }
                        }
                        y.push(best);
                        argmax.push(if best > 0.0 { at } else { NONE });
                    }
                }
            }
        }
        (y, argmax)
    }

    /// Checks one pooled layer over `batch` images: the pooled values and positions the same
    /// bits as the unpooled F(2 x 2, 5 x 5) output (checked against the definition) through a
    /// separate ReLU and pool, in a training forward, an eval one and `&self` inference, at
    /// 1, 2 and 3 threads (and the unfused inference the unpooled output's bits); and the
    /// backward runs from the recorded positions.
    fn check_pooled(cin: usize, cout: usize, hw: [usize; 2], batch: usize, bias: bool) {
        let seed = (cin * 31 + cout) as u64;
        let mut conv = pooled(cin, cout, hw, bias, seed);
        assert_eq!(conv.winograd(), Some(Tiling::F2R5), "{cin}->{cout} {hw:?}");
        let mut plain = layer(cin, cout, hw, bias, seed);
        let (nx, nz) = (plain.input_shape().numel(), plain.output_shape().numel());
        let x = values(batch * nx, cin + 7 * cout);
        let mut z = vec![f32::NAN; batch * nz];
        plain
            .forward(&x, &mut z, batch, Mode::Train)
            .expect("forward");
        for (&got, (want, mag)) in z.iter().zip(reference(&plain, &x, batch)) {
            let err = (f64::from(got) - want).abs();
            assert!(err <= TOLERANCE * mag.max(1.0), "{got} vs {want}");
        }
        let (want, want_at) = relu_pool(&z, batch, hw, cout);
        let ny = conv.output_shape().numel();
        assert_eq!(batch * ny, want.len());
        for mode in [Mode::Train, Mode::Eval] {
            let mut y = vec![f32::NAN; batch * ny];
            conv.forward(&x, &mut y, batch, mode).expect("forward");
            assert_eq!(bits(&y), bits(&want), "{mode:?} {cin}->{cout} {hw:?}");
            let pool = conv.pool.as_ref().expect("a fused pool");
            assert_eq!(pool.indexed, batch * ny);
            assert_eq!(pool.argmax[..batch * ny], want_at[..], "{mode:?}");
        }
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let mut y = vec![f32::NAN; batch * ny];
                conv.infer(&x, &mut y, batch).expect("inference");
                assert_eq!(bits(&y), bits(&want), "{threads} threads");
                let mut y = vec![f32::NAN; batch * ny];
                conv.forward(&x, &mut y, batch, Mode::Train)
                    .expect("forward");
                assert_eq!(bits(&y), bits(&want), "{threads} threads");
                let pool = conv.pool.as_ref().expect("a fused pool");
                assert_eq!(pool.argmax[..batch * ny], want_at[..], "{threads} threads");
                // Without its ReLU and pool (the plan's unfused inference): the plain layer's.
                let mut unfused = vec![f32::NAN; batch * nz];
                conv.infer_unfused(&x, &mut unfused, batch)
                    .expect("inference");
                assert_eq!(bits(&unfused), bits(&z), "{threads} threads");
            });
        }
        let dy = values(batch * ny, 5);
        let mut dx = vec![f32::NAN; batch * nx];
        conv.backward(&x, &want, &dy, Some(&mut dx), batch)
            .expect("backward");
        assert!(dx.iter().all(|v| v.is_finite()));
    }

    /// The seed's shapes and borders: heights and widths that are odd (a last tile row or
    /// column one pixel wide), images 3 pixels on a side and one pixel high, batch 1, channels
    /// off the lanes and panels, with and without a bias, through every epilogue.
    #[test]
    fn winograd5_matches_the_definition_on_every_path() {
        for (cin, cout, hw, batch, bias) in [
            (32, 32, [16, 16], 2, true),
            (32, 64, [8, 8], 3, true),
            (33, 33, [3, 3], 1, true),
            (33, 40, [5, 7], 3, true),
            (48, 63, [6, 9], 1, false),
            (63, 32, [4, 3], 2, true),
            (32, 34, [11, 2], 2, true),
            (40, 32, [1, 9], 2, false),
            (128, 97, [4, 4], 1, true),
        ] {
            check(cin, cout, hw, batch, bias);
        }
    }

    /// The seed's pooled layers and odd channel counts, batch 1.
    #[test]
    fn winograd5_pools_as_the_separate_layers() {
        for (cin, cout, hw, batch, bias) in [
            (32, 32, [16, 16], 2, true),
            (32, 64, [8, 8], 3, true),
            (33, 33, [2, 6], 1, true),
            (47, 97, [6, 4], 2, false),
            (40, 35, [10, 10], 1, true),
        ] {
            check_pooled(cin, cout, hw, batch, bias);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 16,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`check`] and [`check_pooled`] over random shapes: 32 to 79 channels in and out
        /// (partial lanes and panels), images of 1 to 12 rows and 5 to 12 columns (even for the
        /// pool), batches 1 to 3.
        #[test]
        fn winograd5_matches_the_definition_over_shapes(
            cin in 32usize..80,
            cout in 32usize..80,
            h in 1usize..13,
            w in 5usize..13,
            batch in 1usize..4,
            bias in proptest::bool::ANY,
        ) {
            check(cin, cout, [h, w], batch, bias);
            let [h, w] = [2 * h.div_ceil(2), 2 * w.div_ceil(2)];
            check_pooled(cin, cout, [h, w], batch, bias);
        }
    }

    /// A dense 5 x 5 'same' convolution with stride 1 and dilation 1, of 32 channels and more
    /// in and out, over more than four pixels an image, without a pool or with a 2 x 2 one,
    /// takes F(2 x 2, 5 x 5); the seed's first layer (3 channels in) and other shapes do not.
    #[test]
    fn winograd5_is_chosen_from_the_shape() {
        let chosen = |config: &Conv2dConfig, hw: [usize; 2], pool: Option<usize>| {
            let mut conv = Conv2d::new("conv", config, hw, &mut init_rng(1)).expect("valid");
            if let Some(k) = pool {
                conv.fuse_relu();
                let pool = Pool2dConfig::new([k, k], [k, k], [0, 0]);
                assert!(Layer::fuse_max_pool(&mut conv, &pool));
            }
            conv.winograd() == Some(Tiling::F2R5)
        };
        let base = Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            ..Conv2dConfig::new(32, 32, [5, 5])
        };
        let channels = |cin, cout| Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            ..Conv2dConfig::new(cin, cout, [5, 5])
        };
        assert!(chosen(&base, [16, 16], Some(2)));
        assert!(chosen(&channels(32, 64), [8, 8], Some(2)));
        assert!(chosen(&base, [16, 16], None));
        assert!(chosen(&base, [5, 1], None));
        assert!(chosen(&channels(32, 300), [8, 8], None));
        assert!(
            !chosen(&channels(3, 32), [32, 32], Some(2)),
            "the seed's first"
        );
        assert!(!chosen(&channels(16, 16), [32, 32], Some(2)));
        assert!(!chosen(&channels(31, 64), [8, 8], None));
        assert!(!chosen(&channels(64, 31), [8, 8], None));
        assert!(!chosen(&base, [12, 12], Some(3)), "a 3 x 3 window");
        assert!(
            !chosen(&base, [2, 2], None),
            "four pixels: only the real taps"
        );
        for config in [
            Conv2dConfig {
                stride: [2, 2],
                ..base.clone()
            },
            Conv2dConfig {
                dilation: [2, 2],
                padding: [4, 4],
                padding_end: [4, 4],
                ..base.clone()
            },
            Conv2dConfig {
                padding: [0, 0],
                padding_end: [0, 0],
                ..base.clone()
            },
            Conv2dConfig {
                padding: [2, 1],
                padding_end: [2, 3],
                ..base.clone()
            },
            Conv2dConfig {
                groups: 2,
                ..base.clone()
            },
            Conv2dConfig {
                padding: [1, 1],
                padding_end: [1, 1],
                ..Conv2dConfig::new(32, 32, [3, 3])
            },
        ] {
            assert!(!chosen(&config, [16, 16], None), "{config:?}");
        }
    }

    /// One thread, batch 64: the direct forward and F(2 x 2, 5 x 5)'s of the same layer, each
    /// with its fused ReLU and 2 x 2 max pool (as the seed runs them) and without, alternating,
    /// the least CPU time of 15 calls each, five rounds (`cargo test --release -p cnnc-runtime
    /// --lib winograd5_timing -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn winograd5_timing() {
        let batch = 64;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        pool.install(|| {
            for (cin, cout, hw) in [
                (16, 16, 32),
                (32, 32, 16),
                (32, 64, 8),
                (64, 64, 8),
                (64, 64, 16),
            ] {
                let conv = pooled(cin, cout, [hw, hw], true, 5);
                let nx = conv.input_shape().numel();
                let (ny, nz) = (nx / cin * cout / 4, nx / cin * cout);
                let x = values(batch * nx, 1);
                let (mut y, mut z) = (vec![0.0; batch * ny], vec![0.0; batch * nz]);
                let direct_len = panels(cout) * conv.forward_steps() * NR;
                let mut direct = vec![0.0; direct_len];
                conv.pack_read(false, &mut direct);
                let mut wino = vec![0.0; winograd::panels_len(&conv.g, Tiling::F2R5)];
                let w = conv.weight.value.as_slice().expect("contiguous");
                winograd::pack(&conv.g, w, &mut wino, Tiling::F2R5);
                let bias = conv.bias_row.clone();
                let mut fused = conv.pool.clone().expect("a fused pool");
                let mut best = [f64::INFINITY; 4];
                for _ in 0..5 {
                    best[0] = best[0].min(least_ms(15, || {
                        let xp = conv.padded_input(&x, batch);
                        let input = Padded::Batch(&xp);
                        let (store, pool) = (TileStore::Relu, Some(&mut fused));
                        conv.convolve_stored(input, (&direct, &bias), &mut y, batch, store, pool);
                        scratch::give_back(xp);
                    }));
                    best[1] = best[1].min(least_ms(15, || {
                        conv.winograd5_pooled(&x, (&wino, &bias), &mut y, batch, &mut fused);
                    }));
                    best[2] = best[2].min(least_ms(15, || {
                        let xp = conv.padded_input(&x, batch);
                        let input = Padded::Batch(&xp);
                        let store = TileStore::Plain;
                        conv.convolve_stored(input, (&direct, &bias), &mut z, batch, store, None);
                        scratch::give_back(xp);
                    }));
                    best[3] = best[3].min(least_ms(15, || {
                        let store = TileStore::Plain;
                        conv.winograd5_stored(&x, (&wino, &bias), &mut z, batch, store);
                    }));
                }
                let [dp, wp, d, w] = best;
                println!(
                    "{cin:3} -> {cout:3} {hw:2}x{hw:<2}  pooled: direct {dp:7.3} ms  F(2x2, 5x5) {wp:7.3} ms ({:.2}x)  unpooled: direct {d:7.3} ms  F(2x2, 5x5) {w:7.3} ms ({:.2}x)",
                    dp / wp,
                    d / w
                );
            }
        });
    }
}
