//! 2-D convolution (`torch.nn.Conv2d`) as im2col + GEMM on pixel-major activations, built one
//! cache-sized tile of output pixels at a time so the column matrix never leaves L2.

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{
    Layer, check_backward, check_forward, check_param, check_positive, tile_rows, zero_param,
};
use crate::config::Conv2dConfig;
use crate::error::{Error, Result};
use crate::gemm::{MatMut, MatRef, matmul};
use crate::init::{fan_in_bound, fill_uniform};
use crate::param::{Entry, Param};
use crate::tensor::{Dims, MAX_LANES, Mode, Tiling};

/// Every size of one convolution, resolved.
#[derive(Clone, Copy, Debug)]
struct Geom {
    cin: usize,
    ih: usize,
    iw: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

impl Geom {
    /// Columns of the forward im2col matrix: one `(ky, kx, ci)` tap each.
    fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// Columns of the input-gradient gather matrix: one `(ky, kx, co)` tap each.
    fn k_back(&self) -> usize {
        self.kh * self.kw * self.cout
    }

    /// Writes im2col rows `start..start + rows` (output pixels, batch-major) into `col`.
    fn im2col(&self, x: &[f32], start: usize, rows: usize, col: &mut [f32]) {
        let g = *self;
        let k = g.k();
        let seg = g.kw * g.cin;
        for (r, dst) in col[..rows * k].chunks_exact_mut(k).enumerate() {
            let row = start + r;
            let (n, pix) = (row / (g.oh * g.ow), row % (g.oh * g.ow));
            let (oy, ox) = (pix / g.ow, pix % g.ow);
            let image = &x[n * g.ih * g.iw * g.cin..(n + 1) * g.ih * g.iw * g.cin];
            let ix0 = (ox * g.sw) as isize - g.pw as isize;
            for (ky, dst) in dst.chunks_exact_mut(seg).enumerate() {
                let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                if iy < 0 || iy >= g.ih as isize {
                    dst.fill(0.0);
                    continue;
                }
                let line = &image[iy as usize * g.iw * g.cin..(iy as usize + 1) * g.iw * g.cin];
                let last = ix0 + ((g.kw - 1) * g.dw) as isize;
                if g.dw == 1 && ix0 >= 0 && last < g.iw as isize {
                    // The whole kernel row is inside the image: pixels are adjacent in memory.
                    dst.copy_from_slice(&line[ix0 as usize * g.cin..ix0 as usize * g.cin + seg]);
                    continue;
                }
                for (kx, tap) in dst.chunks_exact_mut(g.cin).enumerate() {
                    let ix = ix0 + (kx * g.dw) as isize;
                    if ix < 0 || ix >= g.iw as isize {
                        tap.fill(0.0);
                    } else {
                        tap.copy_from_slice(&line[ix as usize * g.cin..(ix as usize + 1) * g.cin]);
                    }
                }
            }
        }
    }

    /// Writes the input-gradient gather rows `start..start + rows` (input pixels): for each tap
    /// `(ky, kx)`, the `dy` row of the output pixel that read this input pixel through that tap,
    /// or zeros when none did. Multiplying by the `[(ky, kx, co), ci]` weight gives `dx` directly,
    /// so tiles write disjoint rows and need no atomic or ordered scatter.
    fn gather_dy(&self, dy: &[f32], start: usize, rows: usize, out: &mut [f32]) {
        let g = *self;
        let k = g.k_back();
        for (r, dst) in out[..rows * k].chunks_exact_mut(k).enumerate() {
            let row = start + r;
            let (n, pix) = (row / (g.ih * g.iw), row % (g.ih * g.iw));
            let (iy, ix) = (pix / g.iw, pix % g.iw);
            for (ky, dst) in dst.chunks_exact_mut(g.kw * g.cout).enumerate() {
                let oy = source(iy, ky, g.ph, g.dh, g.sh, g.oh);
                for (kx, tap) in dst.chunks_exact_mut(g.cout).enumerate() {
                    match (oy, source(ix, kx, g.pw, g.dw, g.sw, g.ow)) {
                        (Some(oy), Some(ox)) => {
                            let at = ((n * g.oh + oy) * g.ow + ox) * g.cout;
                            tap.copy_from_slice(&dy[at..at + g.cout]);
                        }
                        _ => tap.fill(0.0),
                    }
                }
            }
        }
    }
}

/// The output coordinate whose tap `k` reads input coordinate `i`, if any:
/// `o * stride - pad + k * dilation == i`.
fn source(
    i: usize,
    k: usize,
    pad: usize,
    dilation: usize,
    stride: usize,
    out: usize,
) -> Option<usize> {
    let t = (i + pad).checked_sub(k * dilation)?;
    (t % stride == 0 && t / stride < out).then_some(t / stride)
}

/// Output length of a convolution along one axis, as PyTorch computes it.
pub(crate) fn conv_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (input + 2 * pad).checked_sub(span).map(|d| d / stride + 1)
}

/// `torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=...)`
/// on input `[N, in_channels, H, W]` giving `[N, out_channels, H_out, W_out]` (pixel-major inside).
#[derive(Debug)]
pub struct Conv2d {
    name: String,
    weight_name: String,
    bias_name: String,
    config: Conv2dConfig,
    g: Geom,
    /// `[out_channels, in_channels, kh, kw]` (PyTorch's OIHW).
    pub weight: Param,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Param>,
    /// The weight as the forward GEMM's right side: `[(ky, kx, ci), co]`.
    packed: Vec<f32>,
    /// The weight as the input-gradient GEMM's right side: `[(ky, kx, co), ci]`.
    packed_back: Vec<f32>,
    /// The bias, contiguous (zeros without one).
    bias_row: Vec<f32>,
    /// Per-lane column tiles.
    scratch: Vec<f32>,
    /// Per-lane partial weight gradients, `[(ky, kx, ci), co]` each.
    wgrad_lanes: Vec<f32>,
    /// Per-lane partial bias gradients.
    bgrad_lanes: Vec<f32>,
}

impl Conv2d {
    /// Builds the layer for inputs of spatial size `input_hw`, initialised as PyTorch does:
    /// weight and bias from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, fan_in = in_channels * kh * kw,
    /// drawn from `rng` (weight first).
    pub fn new(
        name: &str,
        config: &Conv2dConfig,
        input_hw: [usize; 2],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let c = config;
        check_positive(name, "kernel_size", c.kernel_size)?;
        check_positive(name, "stride", c.stride)?;
        check_positive(name, "dilation", c.dilation)?;
        if c.in_channels == 0 || c.out_channels == 0 {
            return Err(Error::config(
                name,
                "in_channels and out_channels must be positive",
            ));
        }
        let out = |axis: usize| {
            conv_out(
                input_hw[axis],
                c.kernel_size[axis],
                c.stride[axis],
                c.padding[axis],
                c.dilation[axis],
            )
        };
        let (Some(oh), Some(ow)) = (out(0), out(1)) else {
            return Err(Error::config(
                name,
                format!(
                    "kernel {:?} with dilation {:?} is larger than the padded input {:?} + 2 * {:?}",
                    c.kernel_size, c.dilation, input_hw, c.padding
                ),
            ));
        };
        let g = Geom {
            cin: c.in_channels,
            ih: input_hw[0],
            iw: input_hw[1],
            cout: c.out_channels,
            oh,
            ow,
            kh: c.kernel_size[0],
            kw: c.kernel_size[1],
            sh: c.stride[0],
            sw: c.stride[1],
            ph: c.padding[0],
            pw: c.padding[1],
            dh: c.dilation[0],
            dw: c.dilation[1],
        };
        let mut weight = zero_param(&[g.cout, g.cin, g.kh, g.kw]);
        let bound = fan_in_bound(g.k());
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = c.bias.then(|| {
            let mut b = zero_param(&[g.cout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        let lane_scratch = (tile_rows(g.k()) * g.k()).max(tile_rows(g.k_back()) * g.k_back());
        Ok(Conv2d {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: c.clone(),
            g,
            weight,
            bias,
            packed: vec![0.0; g.k() * g.cout],
            packed_back: vec![0.0; g.k_back() * g.cin],
            bias_row: vec![0.0; g.cout],
            scratch: vec![0.0; MAX_LANES * lane_scratch],
            wgrad_lanes: vec![0.0; MAX_LANES * g.k() * g.cout],
            bgrad_lanes: vec![0.0; MAX_LANES * g.cout],
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// Checks the parameters' shapes and copies them into the GEMM layouts.
    fn pack(&mut self) -> Result<()> {
        let g = self.g;
        check_param(
            &self.name,
            "weight",
            &self.weight,
            &[g.cout, g.cin, g.kh, g.kw],
        )?;
        // `iter` walks the logical OIHW order whatever the memory layout.
        for (i, &v) in self.weight.value.iter().enumerate() {
            let (co, ci, ky, kx) = (
                i / (g.cin * g.kh * g.kw),
                i / (g.kh * g.kw) % g.cin,
                i / g.kw % g.kh,
                i % g.kw,
            );
            let tap = ky * g.kw + kx;
            self.packed[(tap * g.cin + ci) * g.cout + co] = v;
            self.packed_back[(tap * g.cout + co) * g.cin + ci] = v;
        }
        match &self.bias {
            Some(b) => {
                check_param(&self.name, "bias", b, &[g.cout])?;
                for (dst, &v) in self.bias_row.iter_mut().zip(b.value.iter()) {
                    *dst = v;
                }
            }
            None => self.bias_row.fill(0.0),
        }
        Ok(())
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_dims(&self) -> Dims {
        Dims::Image {
            channels: self.g.cin,
            height: self.g.ih,
            width: self.g.iw,
        }
    }

    fn output_dims(&self) -> Dims {
        Dims::Image {
            channels: self.g.cout,
            height: self.g.oh,
            width: self.g.ow,
        }
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        if batch == 0 {
            return Ok(());
        }
        self.pack()?;
        let g = self.g;
        let (k, n) = (g.k(), g.cout);
        let rows = batch * g.oh * g.ow;
        let tiling = Tiling::new(rows, tile_rows(k));
        let lane_scratch = self.scratch.len() / MAX_LANES;
        let (packed, bias_row) = (&self.packed[..], &self.bias_row[..]);
        y[..ny]
            .par_chunks_mut(tiling.lane_rows * n)
            .zip(self.scratch.par_chunks_mut(lane_scratch))
            .enumerate()
            .for_each(|(lane, (y_lane, col))| {
                for (t, y_tile) in y_lane.chunks_mut(tiling.tile * n).enumerate() {
                    let tile_rows = y_tile.len() / n;
                    g.im2col(x, lane * tiling.lane_rows + t * tiling.tile, tile_rows, col);
                    for row in y_tile.chunks_exact_mut(n) {
                        row.copy_from_slice(bias_row);
                    }
                    matmul(
                        MatMut::row_major(y_tile, tile_rows, n),
                        MatRef::row_major(col, tile_rows, k),
                        MatRef::row_major(packed, k, n),
                        true,
                    );
                }
            });
        Ok(())
    }

    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        self.pack()?;
        let g = self.g;
        let (k, n) = (g.k(), g.cout);
        let lane_scratch = self.scratch.len() / MAX_LANES;

        // Weight and bias gradients: each lane sums its own rows, then lanes are added in order.
        let rows = batch * g.oh * g.ow;
        let tiling = Tiling::new(rows.max(1), tile_rows(k));
        let lanes = if rows == 0 { 0 } else { tiling.lanes(rows) };
        self.wgrad_lanes[..lanes * k * n]
            .par_chunks_mut(k * n)
            .zip(self.bgrad_lanes[..lanes * n].par_chunks_mut(n))
            .zip(self.scratch.par_chunks_mut(lane_scratch))
            .zip(dy[..ny].par_chunks(tiling.lane_rows * n))
            .enumerate()
            .for_each(|(lane, (((wgrad, bgrad), col), dy_lane))| {
                bgrad.fill(0.0);
                for (t, dy_tile) in dy_lane.chunks(tiling.tile * n).enumerate() {
                    let tile_rows = dy_tile.len() / n;
                    g.im2col(x, lane * tiling.lane_rows + t * tiling.tile, tile_rows, col);
                    matmul(
                        MatMut::row_major(wgrad, k, n),
                        MatRef::row_major(col, tile_rows, k).t(),
                        MatRef::row_major(dy_tile, tile_rows, n),
                        t > 0,
                    );
                    for row in dy_tile.chunks_exact(n) {
                        for (b, &d) in bgrad.iter_mut().zip(row) {
                            *b += d;
                        }
                    }
                }
            });
        let wgrad_lanes = &self.wgrad_lanes[..lanes * k * n];
        for (i, dst) in self.weight.grad.iter_mut().enumerate() {
            let (co, ci, ky, kx) = (
                i / (g.cin * g.kh * g.kw),
                i / (g.kh * g.kw) % g.cin,
                i / g.kw % g.kh,
                i % g.kw,
            );
            let at = ((ky * g.kw + kx) * g.cin + ci) * n + co;
            *dst = wgrad_lanes
                .chunks_exact(k * n)
                .fold(0.0, |s, lane| s + lane[at]);
        }
        if let Some(bias) = &mut self.bias {
            let bgrad_lanes = &self.bgrad_lanes[..lanes * n];
            for (co, dst) in bias.grad.iter_mut().enumerate() {
                *dst = bgrad_lanes
                    .chunks_exact(n)
                    .fold(0.0, |s, lane| s + lane[co]);
            }
        }

        // Input gradient: disjoint rows of input pixels, one gather + GEMM per tile.
        if let Some(dx) = dx {
            let kb = g.k_back();
            let rows = batch * g.ih * g.iw;
            if rows == 0 {
                return Ok(());
            }
            let tiling = Tiling::new(rows, tile_rows(kb));
            let packed_back = &self.packed_back[..];
            dx[..nx]
                .par_chunks_mut(tiling.lane_rows * g.cin)
                .zip(self.scratch.par_chunks_mut(lane_scratch))
                .enumerate()
                .for_each(|(lane, (dx_lane, gathered))| {
                    for (t, dx_tile) in dx_lane.chunks_mut(tiling.tile * g.cin).enumerate() {
                        let tile_rows = dx_tile.len() / g.cin;
                        g.gather_dy(
                            dy,
                            lane * tiling.lane_rows + t * tiling.tile,
                            tile_rows,
                            gathered,
                        );
                        matmul(
                            MatMut::row_major(dx_tile, tile_rows, g.cin),
                            MatRef::row_major(gathered, tile_rows, kb),
                            MatRef::row_major(packed_back, kb, g.cin),
                            false,
                        );
                    }
                });
        }
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        f(Entry::Param {
            name: &self.weight_name,
            param: &mut self.weight,
        });
        if let Some(bias) = &mut self.bias {
            f(Entry::Param {
                name: &self.bias_name,
                param: bias,
            });
        }
    }
}
