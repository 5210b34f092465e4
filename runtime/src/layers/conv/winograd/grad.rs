//! The input gradient of a 3 x 3, stride-1, 'same' convolution as Winograd's F(2 x 2, 3 x 3):
//! `dx` is the 'same' convolution of `dy` (`cout` channels, zeros outside the image) with the
//! flipped, transposed kernel `g'[ci][co][ky][kx] = g[co][ci][2 - ky][2 - kx]` into `cin`
//! channels, so the forward's tiles compute it with the roles of the channels swapped: the
//! input transform of `dy`'s patches ([`input_transform`]), for each of the 16 positions a GEMM
//! `[tiles x cout] x [cout x cin]` on the packed micro-kernels with `U' = G g' Gᵀ`
//! ([`pack`]: packed by each backward pass, as the direct path packs its flipped panels), and
//! the output transform ([`output_transform`]) stored into `dx`, written or added into what it
//! holds (`dx + part`) as the direct path stores it. As in the forward, each tile's values are
//! computed the same way whatever block or task it falls in and on every instruction family.

use super::super::Conv2d;
use super::super::backward::put;
use super::super::geometry::Geom;
use super::{
    BLOCK_BYTES, MIN_CHANNELS, TAPS, for_blocks, gemms, input_transform, output_transform,
    weight_tile,
};
use crate::kernels::gemm::{MR, NR, Tile, panels};
use crate::par;
use crate::scratch;

/// Whether the input gradient of a convolution of geometry `g` with `groups` runs as
/// Winograd's F(2 x 2, 3 x 3): the forward's shape rule ([`super::chosen`]) on the transposed
/// convolution, `cout` channels into `cin`, over the same pixels (the rule is symmetric in the
/// channels; a fused max pool does not matter here, as `dy` is routed to its positions when it
/// is staged), with F(2 x 2)'s [`MIN_CHANNELS`] in and out whichever tiles the forward takes
/// (F(4 x 4)'s input gradient is not built). The one place this path is chosen: from the
/// shape, never from the threads or the instruction family.
pub(in crate::layers::conv) fn chosen(g: &Geom, groups: usize) -> bool {
    super::chosen(g, groups, false).is_some() && g.cin.min(g.cout) >= MIN_CHANNELS
}

/// Fewest tiles in a block: each position's weights (`cout x cin`) are read once a block, by
/// its tiles' GEMM rows, so a block of a few tiles of many channels reads far more weights than
/// `dy` (256 -> 256 at 4 x 4, batch 64, one thread: 0.76x the direct input gradient's speed
/// with blocks of [`BLOCK_BYTES`], two tiles, 1.26x with 48; 512 -> 512 at 4 x 4 0.7x and
/// 1.29x). 48 tiles of 256 channels, `dy`'s and `dx`'s, hold 1.5 MB: in a 2 MB L2.
const MIN_TILES: usize = 48;

/// Values in the input gradient's Winograd panels: `[panels(cin)][TAPS][cout][NR]`.
pub(in crate::layers::conv) fn panels_len(g: &Geom) -> usize {
    TAPS * panels(g.cin) * g.cout * NR
}

/// Fills `packed` ([`panels_len`] values) with the transformed flipped, transposed weights of
/// `w` (OIHW, 3 x 3): panel `j`'s position `p` holds row `co`, column `l` = `U'[p]` of input
/// channel `j * NR + l` and output channel `co`, zeros past `cin`. The threads take whole
/// panels (each value is one kernel's transform, wherever it is computed).
fn pack(g: &Geom, w: &[f32], packed: &mut [f32]) {
    let (cin, cout) = (g.cin, g.cout);
    let panel = cout * NR;
    par::chunks_mut(&mut packed[..panels_len(g)], TAPS * panel, |j, packed| {
        packed.fill(0.0);
        for co in 0..cout {
            for ci in j * NR..cin.min((j + 1) * NR) {
                let at = (co * cin + ci) * 9;
                // The kernel turned by half a turn: tap `k` of the flipped one is tap `8 - k`.
                let flipped: [f32; 9] = std::array::from_fn(|k| w[at + 8 - k]);
                let l = ci - j * NR;
                for (p, &v) in weight_tile(&flipped).iter().enumerate() {
                    packed[p * panel + co * NR + l] = v;
                }
            }
        }
    });
}

/// The input gradient's Winograd layout: tiles an image, and the widths of a transformed
/// `dy` row and a product row.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Tile rows and columns an image.
    th: usize,
    tw: usize,
    /// Values of one position of a tile's transformed `dy`: `dy`'s pixel width.
    ds: usize,
    /// Values of one position's products of a tile: whole panels of `cin`.
    cs: usize,
}

impl Conv2d {
    /// Fills `packed` ([`panels_len`] values) with the layer's input-gradient Winograd panels.
    pub(in crate::layers::conv) fn pack_winograd_back(&self, packed: &mut [f32]) {
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        pack(&self.g, w, packed);
    }

    /// The input gradient of `batch` images into `dx` from `dy` (`cs` values a pixel, the
    /// image unbordered: the staged copy or `dy` itself) with the panels `packed`
    /// ([`pack`]); with `add`, each value added into what `dx` holds. Parallel tasks take
    /// whole tile rows (whole images when the height is odd), as the forward's do.
    pub(in crate::layers::conv) fn winograd_input_grad(
        &self,
        dx: &mut [f32],
        dy: &[f32],
        packed: &[f32],
        batch: usize,
        add: bool,
    ) {
        let g = self.g;
        let lay = Layout {
            th: g.ih.div_ceil(2),
            tw: g.iw.div_ceil(2),
            ds: g.cs(),
            cs: panels(g.cin) * NR,
        };
        let row_bytes = lay.tw * TAPS * (lay.ds + lay.cs) * std::mem::size_of::<f32>();
        let block_rows = (BLOCK_BYTES / row_bytes).max(MIN_TILES.div_ceil(lay.tw));
        let dx = &mut dx[..batch * g.ih * g.iw * g.cin];
        for_blocks(
            dx,
            g.cin,
            (batch, [g.ih, g.iw]),
            2,
            block_rows,
            |rows, out, pixel| {
                self.winograd_grad_block(dy, packed, rows, out, pixel, add, lay);
            },
        );
    }

    /// One block of tile rows `rows` (counted over the batch) of the input gradient: the input
    /// transform of `dy`, the 16 GEMMs and the output transform into `out`, whose first pixel
    /// is the batch's `pixel`.
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
        let (ds, cs, tw) = (lay.ds, lay.cs, lay.tw);
        let tiles = rows.len() * tw;
        let gemm_tiles = tiles.div_ceil(MR) * MR;
        let mut v = scratch::take(tiles * TAPS * ds, scratch::ANY, 0.0);
        let mut m = scratch::take(gemm_tiles * TAPS * cs, scratch::ANY, 0.0);
        let line = g.ow * ds;
        let zeros = scratch::take(line, scratch::tag(&[g.ow, ds, 0x3_3]), 0.0);
        // The input transform of `dy`, a tile row at a time: its patches read `dy` rows
        // `2 ty - 1 ..= 2 ty + 2` (zeros outside the image), all `ds` values of each pixel.
        for (row, v) in v[..tiles * TAPS * ds]
            .chunks_exact_mut(tw * TAPS * ds)
            .enumerate()
        {
            let r = rows.start + row;
            let (n, ty) = (r / lay.th, r % lay.th);
            let dy = &dy[n * g.oh * line..][..g.oh * line];
            let lines: [&[f32]; 4] = std::array::from_fn(|i| {
                let iy = (2 * ty + i).wrapping_sub(1);
                if iy < g.oh {
                    &dy[iy * line..][..line]
                } else {
                    &zeros[..line]
                }
            });
            input_transform(&lines, v, g.ow, ds);
        }
        // The GEMMs: position `p` of every tile, `[tiles x cout] x [cout x cin]` (the first
        // `cout` of each row's `ds` values).
        let panel_len = g.cout * NR;
        let panel = |p: usize, j: usize| &packed[(j * TAPS + p) * panel_len..][..panel_len];
        let shape = [tiles, TAPS, panels(g.cin)];
        let runs = self.winograd_back_runs.all();
        gemms((&v[..], ds), (&mut m[..], cs), shape, runs, panel);
        let zero = [0.0; NR];
        // The output transform (adding zeros for the bias), three tiles of a tile row at a
        // time, stored or added into `dx` a pixel row of each at a time.
        let mut top: Tile = [[0.0; NR]; MR];
        let mut bottom: Tile = [[0.0; NR]; MR];
        for row in 0..rows.len() {
            let r = rows.start + row;
            let ty = r % lay.th;
            let high = (g.ih - 2 * ty).min(2);
            let row_pixel = r / lay.th * g.ih * g.iw + 2 * ty * g.iw - pixel;
            for tx in (0..tw).step_by(MR / 2) {
                let wide = (g.iw - 2 * tx).min(MR);
                let count = wide.div_ceil(2);
                for j in 0..panels(g.cin) {
                    let cols = NR.min(g.cin - j * NR);
                    let t = row * tw + tx;
                    let m =
                        &m[t * TAPS * cs + j * NR..][..((count - 1) * TAPS + TAPS - 1) * cs + cols];
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

    /// Winograd's input gradient of `layer` from the unbordered `dy`.
    fn winograd(layer: &Conv2d, dy: &[f32], dx: &mut [f32], batch: usize, add: bool) {
        let mut packed = vec![f32::NAN; panels_len(&layer.g)];
        layer.pack_winograd_back(&mut packed);
        layer.winograd_input_grad(dx, dy, &packed, batch, add);
    }

    /// Checks one layer over `batch` images: Winograd's input gradient within a few roundings
    /// of the definition (as the direct one is); the same bits at 1, 2 and 3 threads; and,
    /// added into a `dx` that holds values, the bits of those values plus the written gradient.
    fn check(cin: usize, cout: usize, hw: [usize; 2], batch: usize) {
        let mut conv = layer(cin, cout, hw, false, (cin * 37 + cout) as u64);
        assert!(conv.winograd_dx(), "{cin}->{cout} {hw:?}");
        let nx = batch * conv.g.ih * conv.g.iw * cin;
        let (dy, dyp) = dy_of(&conv, batch, cin + 5 * cout);
        let mut dx = vec![f32::NAN; nx];
        winograd(&conv, &dy, &mut dx, batch, false);
        let mut old = vec![f32::NAN; nx];
        direct(&mut conv, &dyp, &mut old, batch, false);
        for ((&got, &was), (want, mag)) in dx.iter().zip(&old).zip(reference(&conv, &dy, batch)) {
            for v in [got, was] {
                let err = (f64::from(v) - want).abs();
                assert!(
                    err <= 4e-7 * mag.max(1.0),
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
                winograd(&conv, &dy, &mut again, batch, false);
                assert_eq!(bits(&again), bits(&dx), "{threads} threads");
                let mut added = held.clone();
                winograd(&conv, &dy, &mut added, batch, true);
                let want: Vec<f32> = held.iter().zip(&dx).map(|(h, d)| h + d).collect();
                assert_eq!(bits(&added), bits(&want), "{threads} threads");
            });
        }
    }

    /// ResNet's shapes and borders: odd heights and widths (a last tile row or column one
    /// pixel wide), an image one pixel high, batch 1, channels off the lanes and panels
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
            check(cin, cout, hw, batch);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 16,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`check`] over random shapes: 64 to 129 channels in (partial panels of `dx`) and 64
        /// to 79 out, images of 1 to 9 rows and 3 to 9 columns of more than four pixels,
        /// batches 1 to 4.
        #[test]
        fn winograd_input_grad_matches_the_definition_over_shapes(
            cin in 64usize..130,
            cout in 64usize..80,
            h in 1usize..10,
            w in 5usize..10,
            batch in 1usize..5,
        ) {
            check(cin, cout, [h, w], batch);
        }
    }

    /// The input gradient's path is the forward's shape rule on the transposed convolution, a
    /// fused max pool aside.
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
        assert!(conv(64, 64, 1, [8, 8]).winograd_dx());
        assert!(conv(128, 64, 1, [4, 4]).winograd_dx());
        assert!(!conv(64, 64, 1, [2, 2]).winograd_dx(), "four pixels");
        assert!(!conv(64, 64, 2, [8, 8]).winograd_dx(), "strided");
        assert!(
            !conv(32, 64, 1, [8, 8]).winograd_dx(),
            "too few input channels"
        );
        assert!(
            !conv(64, 32, 1, [8, 8]).winograd_dx(),
            "too few output channels"
        );
        let f4 = conv(32, 32, 1, [16, 16]);
        assert!(
            f4.winograd() == Some(super::super::Tiling::F4) && !f4.winograd_dx(),
            "F(4 x 4)'s forward keeps the direct input gradient"
        );
        let mut pooled = conv(64, 64, 1, [8, 8]);
        pooled.fuse_relu();
        let pool = crate::config::Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        assert!(crate::layers::Layer::fuse_max_pool(&mut pooled, &pool));
        assert!(pooled.winograd().is_none() && pooled.winograd_dx());
    }

    /// One thread, batch 64: the direct input gradient (packing its panels) and Winograd's
    /// (packing its own) of the same layer, alternating, the least CPU time of 15 calls each,
    /// five rounds (`cargo test --release -p cnnc-runtime --lib winograd_input_grad_timing --
    /// --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn winograd_input_grad_timing() {
        let batch = 64;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        pool.install(|| {
            for (c, hw) in [(64, 8), (64, 16), (128, 4), (128, 8), (256, 4), (256, 8), (512, 4)] {
                let mut conv = layer(c, c, [hw, hw], false, 5);
                let (dy, dyp) = dy_of(&conv, batch, 1);
                let mut dx = vec![0.0; batch * hw * hw * c];
                conv.dyp = dyp;
                conv.packed_back = vec![0.0; panels(c) * conv.back_steps() * NR];
                let mut packed = vec![0.0; panels_len(&conv.g)];
                let (mut old, mut new) = (f64::INFINITY, f64::INFINITY);
                for _ in 0..5 {
                    old = old.min(least_ms(15, || {
                        let mut packed_back = std::mem::take(&mut conv.packed_back);
                        conv.pack_read(true, &mut packed_back);
                        conv.packed_back = packed_back;
                        conv.input_grad(&mut dx, None, batch, false);
                    }));
                    new = new.min(least_ms(15, || {
                        conv.pack_winograd_back(&mut packed);
                        conv.winograd_input_grad(&mut dx, &dy, &packed, batch, false);
                    }));
                }
                println!(
                    "{c:4} -> {c:4} {hw:2}x{hw:<2}  direct {old:7.3} ms  winograd {new:7.3} ms  ({:.2}x)",
                    old / new
                );
            }
        });
    }
}
