//! Storing finished output tiles (plain, through the fused ReLU, or through an inference
//! epilogue: batch norm, residual add, clamp) and the bias gradient's sums.

use crate::kernels::gemm::{Epilogue, NARROW_NR, NR, Tile};
use crate::simd::multiversion;

/// What a convolution applies to each output value `v` of channel `c` as it stores it in an
/// inference step (the plan's `Epilogue` with its values), in the order the separate layers
/// compute it: `v * scale[c] + shift[c]` (an eval-mode `BatchNorm2d`: a multiply, then an add),
/// then `+ r` with `r` the value at the same place of `residual` (a two-input `Add`), then
/// `min(max(v, lo), hi)` with NaN passing (ReLU: `lo` 0, ReLU6: `lo` 0 and `hi` 6; the
/// infinities for none). Bit for bit what those layers compute from the convolution's output.
#[derive(Clone, Copy, Debug)]
pub struct ChannelStore<'a> {
    /// Per-channel `(scale, shift)`, `[out_channels]` each.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// The buffer added, laid out as the output (`batch` samples, pixel-major).
    pub residual: Option<&'a [f32]>,
    /// Lower bound.
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
    /// `(offset, channels)`: the output is channels `offset..offset + out_channels` of a
    /// buffer of `channels` per pixel (a concatenation's), not a buffer of its own.
    pub slice: Option<(usize, usize)>,
}

impl ChannelStore<'_> {
    /// The clamp, as [`crate::layers::Relu`] and [`crate::layers::Relu6`] compute it.
    #[inline(always)]
    fn clamp(&self, v: f32) -> f32 {
        let v = if v < self.lo { self.lo } else { v };
        if v > self.hi { self.hi } else { v }
    }
}

/// How a dense convolution stores its tiles.
#[derive(Clone, Copy, Debug)]
pub(super) enum TileStore<'a> {
    /// As they are.
    Plain,
    /// Through the ReLU it applies.
    Relu,
    /// Through an inference epilogue.
    Channels(&'a ChannelStore<'a>),
}

impl<'a> TileStore<'a> {
    /// What a kernel that stores a tile straight into the output applies as it stores it
    /// (the same values [`TileStore::store`] stores): `first` is where the tile's first row
    /// starts in a buffer laid out as the output, `panel` the panel of its columns.
    pub(super) fn epilogue(self, first: usize, panel: usize) -> Epilogue<'a> {
        match self {
            TileStore::Plain => Epilogue::default(),
            TileStore::Relu => Epilogue {
                clamp: Some((0.0, f32::INFINITY)),
                ..Epilogue::default()
            },
            TileStore::Channels(map) => {
                let at = panel * NR;
                Epilogue {
                    affine: map
                        .affine
                        .map(|(scale, shift)| (&scale[at..], &shift[at..])),
                    residual: map.residual.map(|r| &r[first + at..]),
                    // Clamping to the infinities leaves every value as it is.
                    clamp: (map.lo > f32::NEG_INFINITY || map.hi < f32::INFINITY)
                        .then_some((map.lo, map.hi)),
                }
            }
        }
    }

    /// Values per output pixel in the buffer stored to, and the first channel written, for a
    /// convolution of `cout` channels.
    pub(super) fn layout(self, cout: usize) -> (usize, usize) {
        match self {
            TileStore::Channels(ChannelStore {
                slice: Some((offset, channels)),
                ..
            }) => (*channels, *offset),
            _ => (cout, 0),
        }
    }

    /// Stores the first `rows` rows and `cols` columns of `tile`, the columns of panel `panel`,
    /// at `out[r * stride + c]`; `first` is where the tile's first row starts in a buffer laid
    /// out as the output (a residual's), its rows `stride` apart there too.
    #[inline(always)]
    pub(super) fn store(
        self,
        tile: &Tile,
        out: &mut [f32],
        [rows, cols, stride]: [usize; 3],
        first: usize,
        panel: usize,
    ) {
        match self {
            TileStore::Plain => store(tile, out, rows, cols, stride),
            TileStore::Relu => store_relu(tile, out, rows, cols, stride),
            TileStore::Channels(map) => {
                let at = panel * NR;
                let affine = map
                    .affine
                    .map(|(scale, shift)| (&scale[at..], &shift[at..]));
                let residual = map.residual.map(|r| &r[first + at..]);
                store_channels(tile, out, [rows, cols, stride], affine, residual, map);
            }
        }
    }
}

/// Stores the first `rows` rows and `cols` columns of `tile` at `out[r * stride + c]`. A full
/// panel's or a narrow tile's width is a constant to the copy, which then moves whole vectors
/// instead of calling `memcpy` for each row's 64 or 128 bytes.
pub(super) fn store(tile: &Tile, out: &mut [f32], rows: usize, cols: usize, stride: usize) {
    match cols {
        NR => store_as::<NR>(tile, out, rows, stride),
        NARROW_NR => store_as::<NARROW_NR>(tile, out, rows, stride),
        _ => {
            for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
                dst[..cols].copy_from_slice(&row[..cols]);
            }
        }
    }
}

/// [`store`] of tiles `W` columns wide.
#[inline(always)]
fn store_as<const W: usize>(tile: &Tile, out: &mut [f32], rows: usize, stride: usize) {
    for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
        dst[..W].copy_from_slice(&row[..W]);
    }
}

multiversion! {
    /// Adds every pixel of `pixels` (`stride` values apart, channels first) into `sums`, one
    /// chain per channel in pixel order: the bias gradient.
    pub(super) fn add_pixels(sums: &mut [f32], pixels: &[f32], stride: usize) {
        for px in pixels.chunks_exact(stride) {
            for (s, &d) in sums.iter_mut().zip(px) {
                *s += d;
            }
        }
    }
}

multiversion! {
    /// [`store`] through a ReLU: `max(v, 0)` as [`crate::layers::Relu`] computes it (NaN stays
    /// NaN).
    pub(super) fn store_relu(tile: &Tile, out: &mut [f32], rows: usize, cols: usize, stride: usize) {
        for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
            for (d, &v) in dst[..cols].iter_mut().zip(&row[..cols]) {
                *d = if v < 0.0 { 0.0 } else { v };
            }
        }
    }
}

multiversion! {
    /// [`store`] through a [`ChannelStore`]: `affine` its factors from the tile's first column
    /// on, `residual` its buffer from the tile's first value on. A full panel's or a narrow
    /// tile's width is a constant to the loops, which then run unrolled over whole vectors: the
    /// epilogue took ~10 % of ResNet-20's inference with the width known only at run time.
    fn store_channels(
        tile: &Tile,
        out: &mut [f32],
        shape: [usize; 3],
        affine: Option<(&[f32], &[f32])>,
        residual: Option<&[f32]>,
        map: &ChannelStore,
    ) {
        let [rows, cols, stride] = shape;
        let rows = &tile[..rows.min(tile.len())];
        match cols {
            NR => store_channels_as::<NR>(rows, out, stride, affine, residual, map),
            NARROW_NR => store_channels_as::<NARROW_NR>(rows, out, stride, affine, residual, map),
            _ => store_channels_by(rows, cols, out, stride, affine, residual, map),
        }
    }
}

/// [`store_channels`] for tiles `W` columns wide.
#[inline(always)]
fn store_channels_as<const W: usize>(
    rows: &[[f32; NR]],
    out: &mut [f32],
    stride: usize,
    affine: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
    map: &ChannelStore,
) {
    store_channels_by(rows, W, out, stride, affine, residual, map);
}

/// [`store_channels`] for tiles `cols` columns wide: the choice between the epilogue's forms
/// made once a tile, each row's values in the separate layers' order.
#[inline(always)]
fn store_channels_by(
    rows: &[[f32; NR]],
    cols: usize,
    out: &mut [f32],
    stride: usize,
    affine: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
    map: &ChannelStore,
) {
    match (affine, residual) {
        (Some((scale, shift)), Some(res)) => {
            let (scale, shift) = (&scale[..cols], &shift[..cols]);
            for (r, row) in rows.iter().enumerate() {
                let (row, res) = (&row[..cols], &res[r * stride..][..cols]);
                let dst = &mut out[r * stride..][..cols];
                for c in 0..cols {
                    dst[c] = map.clamp(row[c] * scale[c] + shift[c] + res[c]);
                }
            }
        }
        (Some((scale, shift)), None) => {
            let (scale, shift) = (&scale[..cols], &shift[..cols]);
            for (r, row) in rows.iter().enumerate() {
                let row = &row[..cols];
                let dst = &mut out[r * stride..][..cols];
                for c in 0..cols {
                    dst[c] = map.clamp(row[c] * scale[c] + shift[c]);
                }
            }
        }
        (None, Some(res)) => {
            for (r, row) in rows.iter().enumerate() {
                let (row, res) = (&row[..cols], &res[r * stride..][..cols]);
                let dst = &mut out[r * stride..][..cols];
                for c in 0..cols {
                    dst[c] = map.clamp(row[c] + res[c]);
                }
            }
        }
        (None, None) => {
            for (r, row) in rows.iter().enumerate() {
                let row = &row[..cols];
                let dst = &mut out[r * stride..][..cols];
                for c in 0..cols {
                    dst[c] = map.clamp(row[c]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{
        MR, NARROW_MR, NarrowTile, RunTable, Seg, Start, halves, rows_panel, rows_panel_into,
        rows_panel_narrow, rows_panel_narrow_into,
    };

    fn values(len: usize, seed: usize) -> Vec<f32> {
        let special = [f32::NAN, -0.0, 0.0, 6.0, -3.0];
        (0..len)
            .map(|i| match (i * 13 + seed * 7) % 31 {
                k if k < special.len() => special[k],
                _ => ((i * 7 + seed * 13) % 23) as f32 / 4.0 - 3.0,
            })
            .collect()
    }

    /// A kernel storing straight into the output through [`TileStore::epilogue`] stores, bit
    /// for bit, what [`TileStore::store`] stores from the kernel's tile: plain, through the
    /// ReLU, and through the epilogue's forms (factors, a residual read at the tile's own
    /// place, a ReLU6, no clamp, into a concatenation's slice), for a wide tile of a panel
    /// past the first and for a narrow tile.
    #[test]
    fn storing_from_the_kernel_stores_what_the_tile_store_stores() {
        let a = values(2000, 1);
        let runs = RunTable::new(vec![Seg { offset: 3, len: 40 }]);
        let panel = values(2 * 40 * NR, 2);
        let (scale, shift) = (values(64, 3), values(64, 4));
        let residual = values(40 * 100, 5);
        let rows: [usize; NARROW_MR] = std::array::from_fn(|i| 37 * i + (i % 3) * 400);
        for (slice, clamp) in [
            (None, (0.0, f32::INFINITY)),
            (Some((8, 80)), (0.0, 6.0)),
            (None, (f32::NEG_INFINITY, f32::INFINITY)),
        ] {
            for (affine, res) in [(true, true), (true, false), (false, true), (false, false)] {
                let map = ChannelStore {
                    affine: affine.then_some((&scale[..], &shift[..])),
                    residual: res.then_some(&residual[..]),
                    lo: clamp.0,
                    hi: clamp.1,
                    slice,
                };
                for store in [TileStore::Plain, TileStore::Relu, TileStore::Channels(&map)] {
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    // Wide: 64 channels, the second panel of tile 5.
                    let (stride, offset) = store.layout(64);
                    let (t, j) = (5, 1);
                    let bias: [f32; NR] = values(NR, 6 + j).try_into().expect("NR values");
                    let panel = &panel[j * 40 * NR..];
                    let at = t * stride + offset + j * NR;
                    let (mut old, mut new) = (vec![7.0; 20 * stride], vec![7.0; 20 * stride]);
                    let mut tile = [[0.0; NR]; MR];
                    let wide = rows[..MR].try_into().expect("MR rows");
                    rows_panel(&mut tile, Start::Row(&bias), &a, wide, runs.all(), panel);
                    store.store(&tile, &mut old[at..], [MR, NR, stride], t * stride, j);
                    let epilogue = store.epilogue(t * stride, j);
                    let out = &mut new[at..];
                    rows_panel_into(out, stride, &epilogue, &bias, &a, wide, runs.all(), panel);
                    assert_eq!(bits(&new), bits(&old), "wide {store:?}");
                    // Narrow: 16 channels, tile 7, stored as its two halves.
                    let (stride, offset) = store.layout(16);
                    let t = 7;
                    let at = t * stride + offset;
                    let (mut old, mut new) = (vec![7.0; 30 * stride], vec![7.0; 30 * stride]);
                    let mut tile: NarrowTile = [[0.0; NR]; NARROW_MR];
                    rows_panel_narrow(&mut tile, Start::Row(&bias), &a, &rows, runs.all(), panel);
                    for (h, half) in halves(&tile).into_iter().enumerate() {
                        let t = t + h * MR;
                        let out = &mut old[t * stride + offset..];
                        store.store(half, out, [MR, 16, stride], t * stride, 0);
                    }
                    let epilogue = store.epilogue(t * stride, 0);
                    let out = &mut new[at..];
                    rows_panel_narrow_into(
                        out,
                        stride,
                        &epilogue,
                        &bias,
                        &a,
                        &rows,
                        runs.all(),
                        panel,
                    );
                    assert_eq!(bits(&new), bits(&old), "narrow {store:?}");
                }
            }
        }
    }
}
