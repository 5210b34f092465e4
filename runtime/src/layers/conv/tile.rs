//! Storing finished output tiles (plain, or through the fused ReLU) and the bias gradient's sums.

use crate::kernels::gemm::Tile;
use crate::simd::multiversion;

/// Stores the first `rows` rows and `cols` columns of `tile` at `out[r * stride + c]`.
pub(super) fn store(tile: &Tile, out: &mut [f32], rows: usize, cols: usize, stride: usize) {
    for (row, dst) in tile.iter().zip(out.chunks_mut(stride)).take(rows) {
        dst[..cols].copy_from_slice(&row[..cols]);
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
