//! The convolution's forward pass: the input padded once, then tiles of output pixels from the
//! packed weights, stored through the fused ReLU, or pooled in bands with the fused max pool.

use rayon::prelude::*;

use super::fused_pool::{FusedPool, pool_bands};
use super::plan::{KernelRows, PixelGrid, pixels_per_task, tile_pixels};
use super::tile::TileStore;
use super::{Apply, Conv2d};
use crate::error::Result;
use crate::kernels::gemm::{
    MR, NARROW_MR, NR, Start, halves, panels, rows_panel, rows_panel_narrow,
};
use crate::kernels::window::NONE;
use crate::scratch;

impl Conv2d {
    /// The forward pass of `batch` images into `y[..ny]`, the padded input and (unless `&self`
    /// inference has packed them since the weights changed) the kernel rows of the forward
    /// panels it reads in buffers lent from the training workspace for the length of the call.
    pub(super) fn forward_batch(
        &mut self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
    ) -> Result<()> {
        if batch == 0 {
            return Ok(());
        }
        self.pack()?;
        let lent = self.packed.get().is_none().then(|| {
            let len = self.packed_len();
            let mut panels = scratch::lend(len);
            self.pack_read(false, &mut panels[..len]);
            panels
        });
        let xp = self.padded_input(x, batch);
        let mut pool = self.pool.take();
        let panels = match &lent {
            Some(lent) => &lent[..self.packed_len()],
            None => self.packed_panels(),
        };
        let relu = self.relu;
        let packed = (panels, &self.bias_row[..]);
        self.convolve_padded(&xp, packed, &mut y[..ny], batch, relu, pool.as_mut());
        self.pool = pool;
        scratch::give_back(xp);
        scratch::give_back(lent.unwrap_or_default());
        Ok(())
    }

    /// The forward pass from `&self`: the padded input, the fused pool's band buffers and
    /// positions (and, after a change through `weight_mut`, the packed weights) in scratch
    /// memory of the calling thread; `apply` says what it applies besides the convolution.
    pub(super) fn infer_batch(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        apply: Apply<'_>,
    ) -> Result<()> {
        self.check_params()?;
        if batch == 0 {
            return Ok(());
        }
        let g = self.g;
        let (hp, wp) = g.padded_in();
        // The padding stays zero: only buffers last used for this layout are reused as they are.
        let layout = scratch::tag(&[hp, wp, g.cin, g.ph, g.pw]);
        let mut xp = scratch::take(batch * hp * wp * g.cin + MR, layout, 0.0);
        g.pad_input(x, &mut xp, batch);
        let (mut packed, mut bias_row);
        let weights = if self.stale.forward_stale() {
            let len = self.packed_len();
            packed = scratch::take(len, scratch::ANY, 0.0);
            bias_row = scratch::take(self.bias_row.len(), scratch::ANY, 0.0);
            self.pack_into(false, &mut packed[..len]);
            self.bias_into(&mut bias_row[..self.bias_row.len()]);
            (&packed[..len], &bias_row[..self.bias_row.len()])
        } else {
            (self.packed_panels(), &self.bias_row[..])
        };
        let store = match apply {
            Apply::Own if self.relu => TileStore::Relu,
            Apply::Own | Apply::Unfused => TileStore::Plain,
            Apply::Store(map) => TileStore::Channels(map),
        };
        let Some(fused) = self.pool.as_ref().filter(|_| matches!(apply, Apply::Own)) else {
            self.convolve_stored(&xp, weights, &mut y[..ny], batch, store, None);
            return Ok(());
        };
        // Tagged by the layer's geometry, so each call finds the buffers it grew before.
        let own = scratch::tag(&[g.oh, g.ow, g.cout, fused.kh, fused.kw]);
        let (mut argmax, mut bands) = (scratch::take(0, own, NONE), scratch::take(0, own, 0.0));
        let mut pool = FusedPool {
            argmax: std::mem::take(argmax.vec_mut()),
            bands: std::mem::take(bands.vec_mut()),
            indexed: 0,
            ..*fused
        };
        self.convolve_stored(&xp, weights, &mut y[..ny], batch, store, Some(&mut pool));
        (*argmax.vec_mut(), *bands.vec_mut()) = (pool.argmax, pool.bands);
        Ok(())
    }

    /// Convolves `batch` padded images `xp` with the forward panels and bias row `packed` into
    /// `y`, through the ReLU with `relu`, and through the fused max pool when `pool` is given.
    fn convolve_padded(
        &self,
        xp: &[f32],
        packed: (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        relu: bool,
        pool: Option<&mut FusedPool>,
    ) {
        let store = if relu {
            TileStore::Relu
        } else {
            TileStore::Plain
        };
        self.convolve_stored(xp, packed, y, batch, store, pool);
    }

    /// [`Conv2d::convolve_padded`], storing each tile as `store` says.
    fn convolve_stored(
        &self,
        xp: &[f32],
        (packed, bias_row): (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        store: TileStore<'_>,
        pool: Option<&mut FusedPool>,
    ) {
        let g = self.g;
        let (hp, wp) = g.padded_in();
        let (k, n) = (self.forward_steps(), g.cout);
        let runs = &self.runs;
        let pixels = PixelGrid {
            h: g.oh,
            w: g.ow,
            image: hp * wp * g.cin,
            row: g.sh * wp * g.cin,
            col: g.sw * g.cin,
        };
        // Output row `oy` reads padded input row `oy * sh + ky * dh`; the real ones are
        // `ph..ph + ih`.
        let kernel_rows = KernelRows {
            lo: g.ph,
            hi: g.ph + g.ih,
            stride: g.sh,
            dilation: g.dh,
            kh: g.kh,
        };
        let tile = tile_pixels(n);
        // The bias as a narrow tile's start (the bias row may be narrower than a panel).
        let mut narrow_bias = [0.0; NR];
        let m = bias_row.len().min(NR);
        narrow_bias[..m].copy_from_slice(&bias_row[..m]);
        // Output pixels `first..end` (in batch order) into `out`, `stride` values a pixel (`n`
        // of them this layer's, from `offset` on).
        let (stride, offset) = store.layout(n);
        let convolve = |first: usize, end: usize, out: &mut [f32]| {
            if tile == NARROW_MR {
                // At most 16 channels: twice the pixels a tile, all of its columns real.
                let bias = &narrow_bias;
                for t in (first..end).step_by(NARROW_MR) {
                    let (rows_at, span) = pixels.tile_rows(t, end);
                    let mut tile = [[0.0; NR]; NARROW_MR];
                    let (runs, panel) = kernel_rows.select(kernel_rows.hull(span), runs, packed);
                    rows_panel_narrow(&mut tile, Start::Row(bias), xp, &rows_at, runs, panel);
                    for (h, tile) in halves(&tile).into_iter().enumerate() {
                        let t = t + h * MR;
                        if t < end {
                            let out = &mut out[(t - first) * stride + offset..];
                            store.store(tile, out, [MR.min(end - t), n, stride], t, 0);
                        }
                    }
                }
                return;
            }
            for t in (first..end).step_by(MR) {
                let (rows_at, span) = pixels.tile_rows(t, end);
                let taps = kernel_rows.hull(span);
                for j in 0..panels(n) {
                    let bias = bias_row[j * NR..(j + 1) * NR]
                        .try_into()
                        .expect("NR values");
                    let mut tile = [[0.0; NR]; MR];
                    let panel = &packed[j * k * NR..];
                    let (runs, panel) = kernel_rows.select(taps.clone(), runs, panel);
                    rows_panel(&mut tile, Start::Row(bias), xp, &rows_at, runs, panel);
                    let out = &mut out[(t - first) * stride + offset + j * NR..];
                    let (rows, cols) = (MR.min(end - t), NR.min(n - j * NR));
                    store.store(&tile, out, [rows, cols, stride], t, j);
                }
            }
        };
        let Some(pool) = pool else {
            let per_task = pixels_per_task(batch * g.oh * g.ow, tile);
            y.par_chunks_mut(per_task * stride)
                .enumerate()
                .for_each(|(task, y_task)| {
                    let first = task * per_task;
                    convolve(first, first + y_task.len() / stride, y_task);
                });
            return;
        };
        pool_bands(pool, g, y, batch, &convolve);
    }
}
