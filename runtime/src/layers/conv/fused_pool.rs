//! The max pool a convolution applies after its fused ReLU when the pool's windows tile its
//! output: bands of output rows convolved into a buffer that stays in cache and pooled there.

use rayon::prelude::*;

use super::Conv2d;
use super::geometry::Geom;
use super::plan::{gcd, tile_pixels};
use crate::config::Pool2dConfig;
use crate::kernels::window::{NONE, Tiles, Wide};
use crate::layers::grow;

/// A max pool fused into the convolution after its fused ReLU ([`Conv2d::fuse_max_pool`]):
/// windows of `kh x kw` that tile the output exactly.
#[derive(Clone, Debug)]
pub(super) struct FusedPool {
    pub(super) kh: usize,
    pub(super) kw: usize,
    /// The pooled output's rows and columns.
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Per pooled value of the last forward, its window's position of the maximum ([`NONE`]:
    /// not positive, so the ReLU passes no gradient).
    pub(super) argmax: Vec<u16>,
    /// How many pooled values `argmax` holds.
    pub(super) indexed: usize,
    /// One band of convolution output rows per parallel lane of the forward pass.
    pub(super) bands: Vec<f32>,
}

impl Conv2d {
    /// Makes the layer also apply the max pool that follows its fused ReLU ([`Conv2d::fuse_relu`]
    /// first), when the pool's windows tile the output exactly (`stride == kernel_size`, no
    /// padding, the output's height and width multiples of the kernel's): forward convolves a
    /// band of output rows at a time into a buffer that stays in cache and pools it, so the
    /// convolution's full output never reaches memory, and backward routes the pooled `dy`
    /// straight into the layout its gradients read. The output becomes the pool's. Returns
    /// whether it did; values are the same as the three layers' apart, bit for bit.
    pub fn fuse_max_pool(&mut self, config: &Pool2dConfig) -> bool {
        let [kh, kw] = config.kernel_size;
        let g = self.g;
        let fits = self.relu && config.tiles([g.oh, g.ow]);
        if fits {
            self.pool = Some(FusedPool {
                kh,
                kw,
                oh: g.oh / kh,
                ow: g.ow / kw,
                argmax: Vec::new(),
                indexed: 0,
                bands: Vec::new(),
            });
        }
        fits
    }
}

/// The fused max pool's forward: each task convolves bands of output rows (`convolve(first,
/// end, band)` writes output pixels `first..end`, `n` values each, into `band`) and pools them into
/// `y` (`batch` pooled images), recording where each maximum lies.
pub(super) fn pool_bands(
    pool: &mut FusedPool,
    g: Geom,
    y: &mut [f32],
    batch: usize,
    convolve: &(impl Fn(usize, usize, &mut [f32]) + Sync),
) {
    let (n, ny) = (g.cout, y.len());
    // A band is the output rows of `m` pooled rows, `m` making the band whole tiles, convolved
    // into a buffer of the task's own that stays in cache.
    let (pooled_rows, out_row) = (batch * pool.oh, pool.ow * n);
    let row_pixels = pool.kh * g.ow;
    // Whole tiles per band, unless that leaves fewer than four bands a thread (batch 1):
    // then a band per pooled row, so every thread has work.
    let threads = rayon::current_num_threads();
    let tile = tile_pixels(n);
    let whole = tile / gcd(row_pixels, tile);
    let m = if pooled_rows >= 4 * threads * whole {
        whole
    } else {
        1
    };
    let bands = pooled_rows.div_ceil(m);
    let lanes = (8 * threads).clamp(1, bands);
    let per_lane = bands.div_ceil(lanes) * m;
    grow(&mut pool.bands, lanes * m * row_pixels * n, 0.0);
    grow(&mut pool.argmax, ny, NONE);
    let wide = Wide::detect();
    // The pool's windows over a band, pooled in one call.
    let tiles = Tiles {
        kh: pool.kh,
        kw: pool.kw,
        per_row: pool.ow,
        row: g.ow * n,
        col: n,
        c: n,
    };
    y.par_chunks_mut(per_lane * out_row)
        .zip(pool.argmax[..ny].par_chunks_mut(per_lane * out_row))
        .zip(pool.bands.par_chunks_mut(m * row_pixels * n))
        .enumerate()
        .for_each(|(lane, ((y_lane, argmax), band))| {
            let chunks = y_lane
                .chunks_mut(m * out_row)
                .zip(argmax.chunks_mut(m * out_row));
            for (b, (out, argmax)) in chunks.enumerate() {
                // Pooled rows `first_row..` are output rows `first_row * kh..` in batch order.
                let first_row = lane * per_lane + b * m;
                let rows = out.len() / out_row;
                let first = first_row * row_pixels;
                convolve(first, first + rows * row_pixels, band);
                tiles.max(wide, band, out, argmax, true);
            }
        });
    pool.indexed = ny;
}
