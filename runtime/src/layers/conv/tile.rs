//! Storing finished output tiles (plain, through the fused ReLU, or through an inference
//! epilogue: batch norm, residual add, clamp) and the bias gradient's sums.

use crate::kernels::gemm::{NARROW_NR, NR, Tile};
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

impl TileStore<'_> {
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
