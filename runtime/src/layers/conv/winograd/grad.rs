//! The input gradient of a 3 x 3, stride-1, 'same' convolution as Winograd's F(2 x 2, 3 x 3)
//! or F(4 x 4, 3 x 3): `dx` is the 'same' convolution of `dy` (`cout` channels, zeros outside
//! the image) with the flipped, transposed kernel `g'[ci][co][ky][kx] = g[co][ci][2 - ky][2 - kx]`
//! into `cin` channels, so the forward's tiles compute it with the roles of the channels
//! swapped: the input transform of `dy`'s patches ([`super::input_transform`] or
//! [`winograd4::input_transform`]), for each of the 16 or 36 positions a GEMM
//! `[tiles x cout] x [cout x cin]` on the packed micro-kernels with `U' = G g' Gᵀ` ([`pack`]:
//! packed by each backward pass, as the direct path packs its flipped panels), and the output
//! transform stored into `dx`, written or added into what it holds (`dx + part`) as the direct
//! path stores it. As in the forward, each tile's values are computed the same way whatever
//! block or task it falls in and on every instruction family.

use super::super::Conv2d;
use super::super::backward::put;
use super::super::geometry::Geom;
use super::super::winograd4;
use super::{
    BLOCK_BYTES, F4_CHANNELS, MIN_CHANNELS, for_blocks, gemms, input_transform, output_transform,
};
use crate::kernels::gemm::{MR, NR, Tile, panels};
use crate::par;
use crate::scratch;
use crate::simd::multiversion;

/// Which Winograd tiles an input gradient runs: the 3 x 3 kernels' (a 5 x 5 kernel's forward
/// tiles, [`super::Tiling::F2R5`], have no input gradient of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::layers::conv) enum DxTiling {
    /// F(2 x 2, 3 x 3), [`super`]'s transforms.
    F2,
    /// F(4 x 4, 3 x 3), [`winograd4`]'s transforms.
    F4,
}

/// Which Winograd tiles, if any, the input gradient of a convolution of geometry `g` with
/// `groups` runs as: the forward's shape rule ([`super::chosen`]) on the transposed
/// convolution, `cout` channels into `cin`, over the same pixels (a fused max pool does not
/// matter here, as `dy` is routed to its positions when it is staged). F(4 x 4) when both the
/// input and output channels are in [`F4_CHANNELS`] and its tiles fit the image: more than one
/// an image (their transformed weights, packed each pass, cost 2.25x F(2 x 2)'s, and a tile
/// an image does not pay for them) and at most 4/3 of the image's pixels (5 x 5, 6 x 6 and
/// 9 x 9 images waste too much of them). Else F(2 x 2) from [`MIN_CHANNELS`] in and out. With
/// one-thread CPU time at batch 64 (docs/PERFORMANCE.md, session 16), F(4 x 4) took 0.5x to
/// 0.75x the direct input gradient's time at 32 -> 32 16 x 16, 64 -> 64 7 x 7 to 16 x 16, 32 <->
/// 64 8 x 8 and 96 -> 96 8 x 8, and 0.8x to 0.9x F(2 x 2)'s, but at 64 -> 64 4 x 4 1.05x
/// (F(2 x 2): 0.9x), 6 x 6 1.2x and 9 x 9 1.03x; 16 -> 16 32 x 32 1.1x. The one place this
/// path is chosen: from the shape, never from the threads or the instruction family.
pub(in crate::layers::conv) fn chosen(g: &Geom, groups: usize) -> Option<DxTiling> {
    super::chosen(g, groups, false)?;
    let side = winograd4::SIDE;
    let tiles = g.ih.div_ceil(side) * g.iw.div_ceil(side);
    let fits = tiles > 1 && 3 * tiles * side * side <= 4 * g.ih * g.iw;
    if fits && F4_CHANNELS.contains(&g.cin) && F4_CHANNELS.contains(&g.cout) {
        Some(DxTiling::F4)
    } else if g.cin.min(g.cout) >= MIN_CHANNELS {
        Some(DxTiling::F2)
    } else {
        None
    }
}

/// Fewest tiles in a block: each position's weights (`cout x cin`) are read once a block, by
/// its tiles' GEMM rows, so a block of a few tiles of many channels reads far more weights than
/// `dy` (256 -> 256 at 4 x 4, batch 64, one thread: 0.76x the direct input gradient's speed
/// with blocks of [`BLOCK_BYTES`], two tiles, 1.26x with 48; 512 -> 512 at 4 x 4 0.7x and
/// 1.29x). 48 tiles of 256 channels, `dy`'s and `dx`'s, hold 1.5 MB: in a 2 MB L2.
const MIN_TILES: usize = 48;

/// Positions of a transformed tile and output pixels a tile has on a side, for `tiling`.
fn taps_side(tiling: DxTiling) -> (usize, usize) {
    match tiling {
        DxTiling::F2 => (super::TAPS, 2),
        DxTiling::F4 => (winograd4::TAPS, winograd4::SIDE),
    }
}

/// Values in the input gradient's Winograd panels for `tiling`: `[panels(cin)][taps][cout][NR]`.
pub(in crate::layers::conv) fn panels_len(g: &Geom, tiling: DxTiling) -> usize {
    taps_side(tiling).0 * panels(g.cin) * g.cout * NR
}

/// Fills `packed` ([`panels_len`] values) with the flipped, transposed weights of `w` (OIHW,
/// 3 x 3) transformed for `tiling`: panel `j`'s position `p` holds row `co`, column `l` =
/// `U'[p]` of input channel `j * NR + l` and output channel `co`, zeros past `cin`. The threads
/// take whole panels (each value is one kernel's transform, wherever it is computed).
fn pack(g: &Geom, w: &[f32], packed: &mut [f32], tiling: DxTiling) {
    let channels = (g.cin, g.cout);
    let len = taps_side(tiling).0 * g.cout * NR;
    par::chunks_mut(
        &mut packed[..panels(g.cin) * len],
        len,
        |j, packed| match tiling {
            DxTiling::F2 => pack_panel2(w, channels, j, packed),
            DxTiling::F4 => pack_panel4(w, channels, j, packed),
        },
    );
}

/// Kernels [`pack`] transforms at once: an AVX-512 register of f64, two AVX2 ones.
const KERNELS: usize = 8;

multiversion! {
    /// [`pack`]'s panel `j` for F(2 x 2) ([`super::weight_tiles`]).
    fn pack_panel2(w: &[f32], channels: (usize, usize), j: usize, packed: &mut [f32]) {
        pack_panel(w, channels, j, packed, super::weight_tiles);
    }
}

multiversion! {
    /// [`pack`]'s panel `j` for F(4 x 4) ([`winograd4::weight_tiles`]).
    fn pack_panel4(w: &[f32], channels: (usize, usize), j: usize, packed: &mut [f32]) {
        pack_panel(w, channels, j, packed, winograd4::weight_tiles);
    }
}

/// [`pack`]'s panel `j` (`T` positions of `cout x NR` values) of `cin -> cout` channels with
/// the kernel transform `tile`, [`KERNELS`] input channels at a time (the lanes past `cin`
/// transform zeros, into the panel's columns past `cin`, which no output reads).
#[inline(always)]
fn pack_panel<const T: usize>(
    w: &[f32],
    (cin, cout): (usize, usize),
    j: usize,
    packed: &mut [f32],
    tile: impl Fn(&[[f64; KERNELS]; 9]) -> [[f32; KERNELS]; T],
) {
    packed.fill(0.0);
    let panel = cout * NR;
    let last = cin.min((j + 1) * NR);
    for co in 0..cout {
        for first in (j * NR..last).step_by(KERNELS) {
            // The kernels turned by half a turn: tap `k` of a flipped one is tap `8 - k`.
            let mut g = [[0.0; KERNELS]; 9];
            let at = (co * cin + first) * 9;
            if let Some(w) =
                w[at..at + 9 * (last - first).min(KERNELS)].first_chunk::<{ 9 * KERNELS }>()
            {
                for (k, g) in g.iter_mut().enumerate() {
                    for (l, g) in g.iter_mut().enumerate() {
                        *g = f64::from(w[9 * l + 8 - k]);
                    }
                }
            } else {
                for l in 0..last - first {
                    for (k, g) in g.iter_mut().enumerate() {
                        g[l] = f64::from(w[at + 9 * l + 8 - k]);
                    }
                }
            }
            let column = co * NR + first - j * NR;
            for (p, u) in tile(&g).iter().enumerate() {
                packed[p * panel + column..][..KERNELS].copy_from_slice(u);
            }
        }
    }
}

/// The input gradient's Winograd layout: the tiles, tiles an image, and the widths of a
/// transformed `dy` row and a product row.
#[derive(Clone, Copy, Debug)]
struct Layout {
    tiling: DxTiling,
    /// Positions of a transformed tile, and pixels a tile has on a side.
    taps: usize,
    side: usize,
    /// Tile rows and columns an image.
    th: usize,
    tw: usize,
    /// Values of one position of a tile's transformed `dy`: `dy`'s pixel width.
    ds: usize,
    /// Values of one position's products of a tile: whole panels of `cin`.
    cs: usize,
}

impl Conv2d {
    /// Fills `packed` ([`panels_len`] values) with the layer's input-gradient Winograd panels
    /// for `tiling`.
    pub(in crate::layers::conv) fn pack_winograd_back(&self, packed: &mut [f32], tiling: DxTiling) {
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        pack(&self.g, w, packed, tiling);
    }

    /// The input gradient of `batch` images into `dx` from `dy` (`cs` values a pixel, the
    /// image unbordered: the staged copy or `dy` itself) as `tiling`'s tiles with the panels
    /// `packed` ([`pack`]); with `add`, each value added into what `dx` holds. Parallel tasks
    /// take whole tile rows (whole images when the height is not a multiple of the tiles'), as
    /// the forward's do.
    pub(in crate::layers::conv) fn winograd_input_grad(
        &self,
        dx: &mut [f32],
        dy: &[f32],
        (packed, tiling): (&[f32], DxTiling),
        batch: usize,
        add: bool,
    ) {
        let g = self.g;
        let (taps, side) = taps_side(tiling);
        let lay = Layout {
            tiling,
            taps,
            side,
            th: g.ih.div_ceil(side),
            tw: g.iw.div_ceil(side),
            ds: g.cs(),
            cs: panels(g.cin) * NR,
        };
        let row_bytes = lay.tw * taps * (lay.ds + lay.cs) * std::mem::size_of::<f32>();
        let block_rows = (BLOCK_BYTES / row_bytes).max(MIN_TILES.div_ceil(lay.tw));
        let dx = &mut dx[..batch * g.ih * g.iw * g.cin];
        for_blocks(
            dx,
            g.cin,
            (batch, [g.ih, g.iw]),
            side,
            block_rows,
            |rows, out, pixel| {
                self.winograd_grad_block(dy, packed, rows, out, pixel, add, lay);
            },
        );
    }

    /// One block of tile rows `rows` (counted over the batch) of the input gradient: the input
    /// transform of `dy`, the GEMMs and the output transform into `out`, whose first pixel is
    /// the batch's `pixel`.
    #[allow(clippy::too_many_arguments)]
    fn winograd_grad_block(
        &self,
        dy: &[f32],
        packed: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        pixel: usize,
        add: bool,
        lay: Layout,
    ) {
        let g = self.g;
        let (ds, cs, tw, taps, side) = (lay.ds, lay.cs, lay.tw, lay.taps, lay.side);
        let tiles = rows.len() * tw;
        let gemm_tiles = tiles.div_ceil(MR) * MR;
        let mut v = scratch::take(tiles * taps * ds, scratch::ANY, 0.0);
        let mut m = scratch::take(gemm_tiles * taps * cs, scratch::ANY, 0.0);
        let line = g.ow * ds;
        let zeros = scratch::take(line, scratch::tag(&[g.ow, ds, 0x3_3]), 0.0);
        // The input transform of `dy`, a tile row at a time: its patches read `dy` rows
        // `side ty - 1 ..= side ty + side` (zeros outside the image), all `ds` values of each
        // pixel.
        for (row, v) in v[..tiles * taps * ds]
            .chunks_exact_mut(tw * taps * ds)
            .enumerate()
        {
            let r = rows.start + row;
            let (n, ty) = (r / lay.th, r % lay.th);
            let dy = &dy[n * g.oh * line..][..g.oh * line];
            let lines: [&[f32]; 6] = std::array::from_fn(|i| {
                let iy = (side * ty + i).wrapping_sub(1);
                if iy < g.oh && i < side + 2 {
                    &dy[iy * line..][..line]
                } else {
                    &zeros[..line]
                }
            });
            match lay.tiling {
                DxTiling::F2 => {
                    let lines = lines.first_chunk().expect("four rows");
                    input_transform(lines, v, g.ow, ds);
                }
                DxTiling::F4 => winograd4::input_transform(&lines, v, g.ow, ds),
            }
        }
        // The GEMMs: position `p` of every tile, `[tiles x cout] x [cout x cin]` (the first
        // `cout` of each row's `ds` values).
        let panel_len = g.cout * NR;
        let panel = |p: usize, j: usize| &packed[(j * taps + p) * panel_len..][..panel_len];
        let shape = [tiles, taps, panels(g.cin)];
        let runs = self.winograd_back_runs.all();
        gemms((&v[..], ds), (&mut m[..], cs), shape, runs, panel);
        // The output transform (adding zeros for the bias), stored or added into `dx` a pixel
        // row at a time.
        let zero = [0.0; NR];
        for row in 0..rows.len() {
            let r = rows.start + row;
            let ty = r % lay.th;
            let high = (g.ih - side * ty).min(side);
            // The tile row's first pixel, relative to `out`.
            let row_pixel = r / lay.th * g.ih * g.iw + side * ty * g.iw - pixel;
            match lay.tiling {
                DxTiling::F2 => {
                    self.f2_row(&m[row * tw * taps * cs..], row_pixel, high, out, add, lay);
                }
                DxTiling::F4 => {
                    let mut pixels: [Tile; winograd4::SIDE] = [[[0.0; NR]; MR]; winograd4::SIDE];
                    for tx in 0..tw {
                        let wide = (g.iw - side * tx).min(side);
                        let m = &m[(row * tw + tx) * taps * cs..];
                        for j in 0..panels(g.cin) {
                            let cols = NR.min(g.cin - j * NR);
                            let m = &m[j * NR..][..(taps - 1) * cs + cols];
                            winograd4::output_transform(m, cs, &zero, &mut pixels, cols);
                            let at = (row_pixel + side * tx) * g.cin + j * NR;
                            for (i, tile) in pixels[..high].iter().enumerate() {
                                let out = &mut out[at + i * g.iw * g.cin..];
                                for (src, dst) in tile.iter().zip(out.chunks_mut(g.cin)).take(wide)
                                {
                                    put(dst, src, cols, add);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// F(2 x 2)'s output transform of one tile row's products `m` (adding zeros for the bias),
    /// three tiles at a time, stored or added into `out` from pixel `row_pixel`, `high` pixel
    /// rows of it.
    fn f2_row(
        &self,
        m: &[f32],
        row_pixel: usize,
        high: usize,
        out: &mut [f32],
        add: bool,
        lay: Layout,
    ) {
        let g = self.g;
        let (cs, taps) = (lay.cs, lay.taps);
        let zero = [0.0; NR];
        let mut top: Tile = [[0.0; NR]; MR];
        let mut bottom: Tile = [[0.0; NR]; MR];
        for tx in (0..lay.tw).step_by(MR / 2) {
            let wide = (g.iw - 2 * tx).min(MR);
            let count = wide.div_ceil(2);
            for j in 0..panels(g.cin) {
                let cols = NR.min(g.cin - j * NR);
                let m =
                    &m[tx * taps * cs + j * NR..][..((count - 1) * taps + taps - 1) * cs + cols];
                output_transform(m, cs, &zero, &mut top, &mut bottom, count, cols);
                let at = (row_pixel + 2 * tx) * g.cin + j * NR;
                for (half, tile) in [&top, &bottom].into_iter().enumerate().take(high) {
                    let out = &mut out[at + half * g.iw * g.cin..];
                    for (src, dst) in tile.iter().zip(out.chunks_mut(g.cin)).take(wide) {
                        put(dst, src, cols, add);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bits, layer, least_ms, values};
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;
    use crate::kernels::gemm::panels;

    /// `dy` of `batch` images of `layer`'s output, `cs` values a pixel (zeros past `cout`),
    /// unbordered; and its copy bordered for the direct input gradient.
    fn dy_of(layer: &Conv2d, batch: usize, seed: usize) -> (Vec<f32>, Vec<f32>) {
        let g = layer.g;
        let cs = g.cs();
        let raw = values(batch * g.oh * g.ow * g.cout, seed);
        let mut dy = vec![0.0; batch * g.oh * g.ow * cs];
        for (dst, src) in dy.chunks_exact_mut(cs).zip(raw.chunks_exact(g.cout)) {
            dst[..g.cout].copy_from_slice(src);
        }
        let (hd, wd, top, left) = g.padded_dy();
        let mut dyp = vec![0.0; batch * hd * wd * cs];
        for n in 0..batch {
            for y in 0..g.oh {
                let src = &dy[((n * g.oh + y) * g.ow) * cs..][..g.ow * cs];
                dyp[((n * hd + top + y) * wd + left) * cs..][..g.ow * cs].copy_from_slice(src);
            }
        }
        (dy, dyp)
    }

    /// The input gradient by its definition in f64, with each value's sum of the products'
    /// magnitudes.
    fn reference(layer: &Conv2d, dy: &[f32], batch: usize) -> Vec<(f64, f64)> {
        let g = layer.g;
        let cs = g.cs();
        let w = layer.weight.value.as_standard_layout();
        let w = w.as_slice().expect("contiguous");
        let mut dx = vec![(0.0, 0.0); batch * g.ih * g.iw * g.cin];
        for n in 0..batch {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                        let (iy, ix) = ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                        if iy >= g.ih || ix >= g.iw {
                            continue;
                        }
                        for co in 0..g.cout {
                            let d = f64::from(dy[((n * g.oh + oy) * g.ow + ox) * cs + co]);
                            for ci in 0..g.cin {
                                let wt = f64::from(w[(co * g.cin + ci) * 9 + ky * 3 + kx]);
                                let v = &mut dx[((n * g.ih + iy) * g.iw + ix) * g.cin + ci];
                                v.0 += d * wt;
                                v.1 += (d * wt).abs();
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    /// The direct input gradient of `layer` from the bordered `dyp`.
    fn direct(layer: &mut Conv2d, dyp: &[f32], dx: &mut [f32], batch: usize, add: bool) {
        let len = panels(layer.g.cin) * layer.back_steps() * NR;
        let mut packed_back = vec![0.0; len];
        layer.pack_read(true, &mut packed_back);
        layer.packed_back = packed_back;
        layer.dyp = dyp.to_vec();
        layer.input_grad(dx, None, batch, add);
    }

    /// Winograd's input gradient of `layer` as `tiling`'s tiles from the unbordered `dy`.
    fn winograd(
        layer: &Conv2d,
        tiling: DxTiling,
        dy: &[f32],
        dx: &mut [f32],
        batch: usize,
        add: bool,
    ) {
        let mut packed = vec![f32::NAN; panels_len(&layer.g, tiling)];
        layer.pack_winograd_back(&mut packed, tiling);
        layer.winograd_input_grad(dx, dy, (&packed, tiling), batch, add);
    }

    /// Checks one layer over `batch` images (whichever tiles its shape chooses): Winograd's
    /// input gradient as `tiling`'s tiles within `tolerance` of each value's sum of the products' magnitudes of
    /// the definition (the direct one within a few roundings); the same bits at 1, 2 and 3
    /// threads; and, added into a `dx` that holds values, the bits of those values plus the
    /// written gradient.
    fn check_tiling(
        tiling: DxTiling,
        tolerance: f64,
        cin: usize,
        cout: usize,
        hw: [usize; 2],
        batch: usize,
    ) {
        let mut conv = layer(cin, cout, hw, false, (cin * 37 + cout) as u64);
        let nx = batch * conv.g.ih * conv.g.iw * cin;
        let (dy, dyp) = dy_of(&conv, batch, cin + 5 * cout);
        let mut dx = vec![f32::NAN; nx];
        winograd(&conv, tiling, &dy, &mut dx, batch, false);
        let mut old = vec![f32::NAN; nx];
        direct(&mut conv, &dyp, &mut old, batch, false);
        for ((&got, &was), (want, mag)) in dx.iter().zip(&old).zip(reference(&conv, &dy, batch)) {
            for (v, tolerance) in [(got, tolerance), (was, 4e-7)] {
                let err = (f64::from(v) - want).abs();
                assert!(
                    err <= tolerance * mag.max(1.0),
                    "{v} vs {want} ({cin}->{cout} {hw:?})"
                );
            }
        }
        let held = values(nx, 11);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let mut again = vec![f32::NAN; nx];
                winograd(&conv, tiling, &dy, &mut again, batch, false);
                assert_eq!(bits(&again), bits(&dx), "{threads} threads");
                let mut added = held.clone();
                winograd(&conv, tiling, &dy, &mut added, batch, true);
                let want: Vec<f32> = held.iter().zip(&dx).map(|(h, d)| h + d).collect();
                assert_eq!(bits(&added), bits(&want), "{threads} threads");
            });
        }
    }

    /// [`check_tiling`] of a layer on F(2 x 2), within a few roundings of the definition.
    fn check2(cin: usize, cout: usize, hw: [usize; 2], batch: usize) {
        check_tiling(DxTiling::F2, 4e-7, cin, cout, hw, batch);
    }

    /// [`check_tiling`] of a layer on F(4 x 4), within the forward's tolerance (its
    /// transforms' values grow by up to 10x).
    fn check4(cin: usize, cout: usize, hw: [usize; 2], batch: usize) {
        check_tiling(DxTiling::F4, 1e-5, cin, cout, hw, batch);
    }

    /// ResNet's shapes and borders: odd heights and widths (a last tile row or column one to
    /// three pixels wide), an image one pixel high, batch 1, channels off the lanes and panels
    /// (`dy` then wider than `cout`).
    #[test]
    fn winograd_input_grad_matches_the_definition() {
        for (cin, cout, hw, batch) in [
            (64, 64, [8, 8], 5),
            (64, 64, [3, 3], 1),
            (67, 70, [5, 7], 3),
            (97, 65, [6, 9], 1),
            (64, 80, [4, 3], 2),
            (66, 64, [11, 2], 2),
            (64, 64, [1, 9], 2),
            (128, 128, [4, 4], 3),
        ] {
            check2(cin, cout, hw, batch);
        }
        for (cin, cout, hw, batch) in [
            (64, 64, [8, 8], 5),
            (32, 32, [16, 16], 2),
            (64, 64, [3, 3], 1),
            (67, 70, [5, 7], 3),
            (97, 65, [6, 9], 1),
            (17, 40, [11, 2], 2),
            (20, 33, [1, 9], 2),
            (127, 17, [4, 3], 2),
            (32, 127, [8, 8], 1),
            (40, 48, [13, 16], 1),
            (64, 33, [15, 13], 1),
            (33, 64, [3, 16], 2),
        ] {
            check4(cin, cout, hw, batch);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 16,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`check2`] over random shapes: 64 to 129 channels in (partial panels of `dx`) and 64
        /// to 79 out, images of 1 to 9 rows and 5 to 9 columns, batches 1 to 4.
        #[test]
        fn winograd_input_grad_matches_the_definition_over_shapes(
            cin in 64usize..130,
            cout in 64usize..80,
            h in 1usize..10,
            w in 5usize..10,
            batch in 1usize..5,
        ) {
            check2(cin, cout, [h, w], batch);
        }

        /// [`check4`] over random shapes: 17 to 79 channels in and out (partial lanes and
        /// panels), images of 1 to 13 rows and 5 to 13 columns, batches 1 to 4.
        #[test]
        fn winograd4_input_grad_matches_the_definition_over_shapes(
            cin in 17usize..80,
            cout in 17usize..80,
            h in 1usize..14,
            w in 5usize..14,
            batch in 1usize..5,
        ) {
            check4(cin, cout, [h, w], batch);
        }
    }

    /// The packed panels hold each flipped, transposed kernel's transform as the one-kernel
    /// [`super::super::weight_tile`] and [`winograd4::weight_tile`] compute it (the lanes do
    /// what one kernel does), zeros past `cin`.
    #[test]
    fn winograd_input_grad_panels_are_the_kernels_transforms() {
        for (cin, cout) in [(17, 5), (70, 33), (8, 9), (64, 64)] {
            let conv = layer(cin, cout, [8, 8], false, 3);
            let w = conv.weight.value.as_standard_layout();
            let w = w.as_slice().expect("contiguous");
            for tiling in [DxTiling::F2, DxTiling::F4] {
                let (taps, _) = taps_side(tiling);
                let mut packed = vec![f32::NAN; panels_len(&conv.g, tiling)];
                conv.pack_winograd_back(&mut packed, tiling);
                for (co, ci) in
                    (0..cout).flat_map(|co| (0..panels(cin) * NR).map(move |ci| (co, ci)))
                {
                    let at = (co * cin + ci) * 9;
                    let flipped: [f32; 9] =
                        std::array::from_fn(|k| if ci < cin { w[at + 8 - k] } else { 0.0 });
                    let want = match tiling {
                        DxTiling::F2 => super::super::weight_tile(&flipped).to_vec(),
                        DxTiling::F4 => winograd4::weight_tile(&flipped).to_vec(),
                    };
                    for (p, want) in want.into_iter().enumerate() {
                        let got = packed[((ci / NR * taps + p) * cout + co) * NR + ci % NR];
                        if ci < cin {
                            assert_eq!(got.to_bits(), want.to_bits(), "{tiling:?} {co} {ci} {p}");
                        } else {
                            assert_eq!(got, 0.0, "{tiling:?} {co} {ci} {p}");
                        }
                    }
                }
            }
        }
    }

    /// The input gradient's tiles are the forward's shape rule on the transposed convolution,
    /// a fused max pool aside.
    #[test]
    fn winograd_input_grad_is_chosen_from_the_shape() {
        let conv = |cin, cout, stride, hw| {
            let config = Conv2dConfig {
                stride: [stride, stride],
                padding: [1, 1],
                padding_end: [1, 1],
                ..Conv2dConfig::new(cin, cout, [3, 3])
            };
            Conv2d::new("conv", &config, hw, &mut init_rng(1)).expect("a valid convolution")
        };
        let (f2, f4) = (Some(DxTiling::F2), Some(DxTiling::F4));
        assert_eq!(conv(32, 32, 1, [16, 16]).winograd_dx(), f4);
        assert_eq!(conv(64, 64, 1, [8, 8]).winograd_dx(), f4);
        assert_eq!(conv(64, 64, 1, [7, 7]).winograd_dx(), f4);
        assert_eq!(conv(17, 127, 1, [4, 8]).winograd_dx(), f4);
        assert_eq!(conv(64, 32, 1, [14, 14]).winograd_dx(), f4);
        assert_eq!(
            conv(64, 64, 1, [4, 4]).winograd_dx(),
            f2,
            "one tile an image"
        );
        assert_eq!(
            conv(64, 64, 1, [6, 6]).winograd_dx(),
            f2,
            "tiles of 64 pixels"
        );
        assert_eq!(
            conv(64, 64, 1, [9, 9]).winograd_dx(),
            f2,
            "tiles of 144 pixels"
        );
        assert_eq!(conv(32, 32, 1, [4, 4]).winograd_dx(), None);
        assert_eq!(conv(32, 32, 1, [1, 16]).winograd_dx(), None);
        assert_eq!(conv(128, 64, 1, [4, 4]).winograd_dx(), f2);
        assert_eq!(conv(128, 128, 1, [8, 8]).winograd_dx(), f2);
        assert_eq!(conv(64, 64, 1, [2, 2]).winograd_dx(), None, "four pixels");
        assert_eq!(conv(64, 64, 2, [8, 8]).winograd_dx(), None, "strided");
        assert_eq!(conv(16, 16, 1, [32, 32]).winograd_dx(), None);
        assert_eq!(conv(16, 64, 1, [8, 8]).winograd_dx(), None);
        assert_eq!(conv(32, 128, 1, [8, 8]).winograd_dx(), None);
        assert_eq!(
            conv(128, 32, 1, [14, 14]).winograd_dx(),
            None,
            "DenseNet's: direct"
        );
        let mut pooled = conv(64, 64, 1, [8, 8]);
        pooled.fuse_relu();
        let pool = crate::config::Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        assert!(crate::layers::Layer::fuse_max_pool(&mut pooled, &pool));
        assert!(pooled.winograd().is_none() && pooled.winograd_dx() == f4);
    }

    /// One thread, batch 64: the direct input gradient (packing its panels), F(2 x 2)'s and
    /// F(4 x 4)'s (packing their own) of the same layer, alternating, the least CPU time of 15
    /// calls each, five rounds (`cargo test --release -p cnnc-runtime --lib
    /// winograd_input_grad_timing -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn winograd_input_grad_timing() {
        let batch = 64;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        pool.install(|| {
            for (cin, cout, hw) in [
                (32, 32, 4),
                (32, 32, 7),
                (64, 64, 4),
                (64, 64, 6),
                (64, 64, 7),
                (64, 64, 9),
                (16, 16, 32),
                (16, 32, 16),
                (32, 16, 16),
                (32, 32, 16),
                (32, 64, 8),
                (64, 32, 8),
                (64, 64, 8),
                (64, 64, 16),
                (96, 96, 8),
                (128, 128, 4),
                (128, 128, 8),
            ] {
                let mut conv = layer(cin, cout, [hw, hw], false, 5);
                let (dy, dyp) = dy_of(&conv, batch, 1);
                let mut dx = vec![0.0; batch * hw * hw * cin];
                conv.dyp = dyp;
                conv.packed_back = vec![0.0; panels(cin) * conv.back_steps() * NR];
                let mut f2 = vec![0.0; panels_len(&conv.g, DxTiling::F2)];
                let mut f4 = vec![0.0; panels_len(&conv.g, DxTiling::F4)];
                let mut best = [f64::INFINITY; 3];
                for _ in 0..5 {
                    best[0] = best[0].min(least_ms(15, || {
                        let mut packed_back = std::mem::take(&mut conv.packed_back);
                        conv.pack_read(true, &mut packed_back);
                        conv.packed_back = packed_back;
                        conv.input_grad(&mut dx, None, batch, false);
                    }));
                    let (_, tiled) = best.split_at_mut(1);
                    for ((best, tiling), packed) in tiled
                        .iter_mut()
                        .zip([DxTiling::F2, DxTiling::F4])
                        .zip([&mut f2, &mut f4])
                    {
                        *best = best.min(least_ms(15, || {
                            conv.pack_winograd_back(packed, tiling);
                            conv.winograd_input_grad(&mut dx, &dy, (packed, tiling), batch, false);
                        }));
                    }
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
