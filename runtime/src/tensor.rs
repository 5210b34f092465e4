//! Activation layouts; shapes are [`cnnc_core::Shape`]. PyTorch (and every public API) sees NCHW;
//! inside, image activations are pixel-major (NHWC: one row of channels per pixel) because
//! convolution as GEMM is fastest with M = pixels and N = channels. Also the fixed row tiling that
//! makes parallel work and batch reductions independent of the thread count.

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

use cnnc_core::Shape;

use crate::error::{Error, Result};

/// Training or inference behaviour, as `module.train()` / `module.eval()` select in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dropout active, batchnorm uses and updates batch statistics.
    Train,
    /// Dropout is the identity, batchnorm uses its running statistics.
    Eval,
}

/// Checks that `buf` holds at least `batch` samples of `dims` and returns the used prefix length.
pub(crate) fn check_len(
    layer: &str,
    op: &'static str,
    dims: Shape,
    batch: usize,
    len: usize,
) -> Result<usize> {
    let need = dims.numel() * batch;
    if len < need {
        return Err(Error::shape(
            layer,
            op,
            format!("{need} values (batch {batch} x {dims})"),
            format!("{len} values"),
        ));
    }
    Ok(need)
}

/// Copies an NCHW batch into the runtime's pixel-major layout (`out` holds at least `N*C*H*W`
/// values; the prefix is overwritten).
pub fn nchw_to_internal(x: ArrayView4<f32>, out: &mut [f32]) {
    let (n, c, h, w) = x.dim();
    for (sample, dst) in x.outer_iter().zip(out.chunks_exact_mut(c * h * w)).take(n) {
        // One channel plane at a time from a slice (borrowed unless the layout differs): the
        // n-dimensional indexed iterator cost ~0.1 ms for a batch of 64 CIFAR images.
        let sample = sample.as_standard_layout();
        let planes = sample
            .as_slice()
            .expect("a standard-layout array is contiguous");
        for (ch, plane) in planes.chunks_exact(h * w).enumerate() {
            for (px, &v) in dst[ch..].iter_mut().step_by(c).zip(plane) {
                *px = v;
            }
        }
    }
}

/// Copies `batch` internal-layout samples of `dims` into a PyTorch-layout array: `[N, C, H, W]`
/// for images.
pub fn internal_to_nchw(data: &[f32], dims: Shape, batch: usize) -> Array4<f32> {
    match dims {
        Shape::Chw([c, h, w]) => Array4::from_shape_fn((batch, c, h, w), |(n, ch, y, x)| {
            data[((n * h + y) * w + x) * c + ch]
        }),
        Shape::Flat(features) => Array4::from_shape_fn((batch, features, 1, 1), |(n, f, _, _)| {
            data[n * features + f]
        }),
    }
}

/// Copies a flat `[batch, features]` slice into an array.
pub fn flat_to_array(data: &[f32], features: usize, batch: usize) -> Array2<f32> {
    Array2::from_shape_fn((batch, features), |(n, f)| data[n * features + f])
}

/// Copies a `[batch, features]` view into a contiguous slice.
pub fn array_to_flat(x: ArrayView2<f32>, out: &mut [f32]) {
    for (dst, &v) in out.iter_mut().zip(x.iter()) {
        *dst = v;
    }
}

/// Threads the runtime's parallel loops run on (rayon's global pool: `RAYON_NUM_THREADS`, or one
/// per core). Results never depend on it.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` (a whole forward or backward pass) on a worker of the thread pool, so that the layers'
/// parallel loops inside it hand work to the other workers directly. Called from outside the
/// pool, every loop would instead wake the pool and wait for it: about 14 µs a loop on the 2-core
/// machine of `docs/PERFORMANCE.md`, a tenth of the seed model's latency at batch 1. Runs `f`
/// in place when already on a worker.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Most lanes any parallel layer loop is split into. Lanes are contiguous row ranges, decided from
/// the problem size only, so partial sums per lane (added in lane order) do not depend on how many
/// threads run them.
pub(crate) const MAX_LANES: usize = 8;

/// A fixed split of `rows` rows into at most [`MAX_LANES`] lanes of whole `tile`-row tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    /// Rows per lane (a multiple of the tile; the last lane may hold fewer).
    pub lane_rows: usize,
}

impl Tiling {
    /// Splits `rows` rows (at least one) into tiles of `tile` rows, then the tiles into lanes.
    pub fn new(rows: usize, tile: usize) -> Self {
        let tile = tile.max(1);
        let tiles = rows.div_ceil(tile).max(1);
        let lanes = tiles.min(MAX_LANES);
        Tiling {
            lane_rows: tiles.div_ceil(lanes) * tile,
        }
    }

    /// Number of lanes `rows` rows fill.
    pub fn lanes(&self, rows: usize) -> usize {
        rows.div_ceil(self.lane_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip() {
        let x = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| {
            (n * 1000 + c * 100 + h * 10 + w) as f32
        });
        let mut buf = vec![0.0; x.len()];
        nchw_to_internal(x.view(), &mut buf);
        // Pixel (h=1, w=2) of sample 1 holds its three channels next to each other.
        let at = 4 * 5 * 3 + (5 + 2) * 3;
        assert_eq!(&buf[at..at + 3], &[1012.0, 1112.0, 1212.0]);
        let dims = Shape::Chw([3, 4, 5]);
        assert_eq!(internal_to_nchw(&buf, dims, 2), x);
        // The same values in another memory layout (an NHWC array seen as NCHW) copy the same.
        let nhwc = x
            .clone()
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .into_owned();
        let mut other = vec![0.0; x.len()];
        nchw_to_internal(nhwc.view().permuted_axes([0, 3, 1, 2]), &mut other);
        assert_eq!(other, buf);
    }

    #[test]
    fn tiling_covers_rows_with_bounded_lanes() {
        for rows in [1, 7, 64, 1000, 65536] {
            for tile in [1, 8, 432] {
                let t = Tiling::new(rows, tile);
                let lanes = t.lanes(rows);
                assert!((1..=MAX_LANES).contains(&lanes));
                assert_eq!(t.lane_rows % tile, 0);
                assert!(lanes * t.lane_rows >= rows && (lanes - 1) * t.lane_rows < rows);
            }
        }
    }
}
