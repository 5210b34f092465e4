//! Layers that map an image to another size without weights: adaptive pooling
//! (`torch.nn.AdaptiveAvgPool2d`, `torch.nn.AdaptiveMaxPool2d`) and nearest upsampling
//! (`torch.nn.Upsample`), on pixel-major activations. Inner loops run along the channels, which
//! are contiguous; forward passes are parallel over output rows, backward passes over samples,
//! so every input gradient is summed in one fixed order whatever the thread count.

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_positive, grow, image_input};
use crate::error::{Error, Result};
use crate::tensor::Mode;
use cnnc_core::geometry::{adaptive_window, nearest_source};

/// The input and output sizes of one layer, resolved.
#[derive(Clone, Copy, Debug)]
struct Resize {
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
}

impl Resize {
    fn new(layer: &str, kind: &str, input: Shape, output: [usize; 2]) -> Result<Self> {
        let (c, ih, iw) = image_input(layer, kind, input)?;
        check_positive(layer, "output size", output)?;
        let [oh, ow] = output;
        if oh.checked_mul(ow).and_then(|p| p.checked_mul(c)).is_none() {
            return Err(Error::config(
                layer,
                format!("{kind} output [{c}, {oh}, {ow}] is too large"),
            ));
        }
        Ok(Resize { c, ih, iw, oh, ow })
    }

    fn input_shape(&self) -> Shape {
        Shape::Chw([self.c, self.ih, self.iw])
    }

    fn output_shape(&self) -> Shape {
        Shape::Chw([self.c, self.oh, self.ow])
    }

    fn in_len(&self) -> usize {
        self.ih * self.iw * self.c
    }

    fn out_len(&self) -> usize {
        self.oh * self.ow * self.c
    }

    /// The input window of adaptive pooling's output pixel `(oy, ox)`: rows, columns.
    fn window(&self, oy: usize, ox: usize) -> ([usize; 2], [usize; 2]) {
        let (h0, h1) = adaptive_window(oy, self.ih, self.oh);
        let (w0, w1) = adaptive_window(ox, self.iw, self.ow);
        ([h0, h1], [w0, w1])
    }

    /// Calls `row(n, oy, out)` for every output row `out` (all its pixels and channels) of the
    /// `y` of a batch, in parallel.
    fn for_each_row(&self, y: &mut [f32], row: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let row_len = self.ow * self.c;
        if row_len == 0 {
            return;
        }
        let oh = self.oh;
        y.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, out)| row(r / oh, r % oh, out));
    }
}

/// `torch.nn.AdaptiveAvgPool2d(output_size)`: the mean of each window PyTorch's adaptive
/// formula spreads over the input ([`adaptive_window`]), so any output size works.
#[derive(Debug)]
pub struct AdaptiveAvgPool2d {
    name: String,
    r: Resize,
}

impl AdaptiveAvgPool2d {
    /// Builds the layer for per-sample input `input` and output `[height, width]`.
    pub fn new(name: &str, output_size: [usize; 2], input: Shape) -> Result<Self> {
        Ok(AdaptiveAvgPool2d {
            name: name.to_owned(),
            r: Resize::new(name, "adaptive_avg_pool2d", input, output_size)?,
        })
    }
}

impl Layer for AdaptiveAvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let r = self.r;
        r.for_each_row(&mut y[..ny], |n, oy, out| {
            let sample = &x[n * r.in_len()..(n + 1) * r.in_len()];
            for (ox, out) in out.chunks_exact_mut(r.c).enumerate() {
                let ([h0, h1], [w0, w1]) = r.window(oy, ox);
                out.fill(0.0);
                for iy in h0..h1 {
                    let row = &sample[(iy * r.iw + w0) * r.c..(iy * r.iw + w1) * r.c];
                    for px in row.chunks_exact(r.c) {
                        for (s, &v) in out.iter_mut().zip(px) {
                            *s += v;
                        }
                    }
                }
                let count = ((h1 - h0) * (w1 - w0)) as f32;
                for s in out {
                    *s /= count;
                }
            }
        });
        Ok(())
    }

    /// Spreads each output's gradient evenly over its window, as PyTorch does.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let r = self.r;
        if r.in_len() == 0 {
            return Ok(());
        }
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * r.out_len()..(n + 1) * r.out_len()];
                for (o, grad) in dy.chunks_exact(r.c).enumerate() {
                    let ([h0, h1], [w0, w1]) = r.window(o / r.ow, o % r.ow);
                    let count = ((h1 - h0) * (w1 - w0)) as f32;
                    for iy in h0..h1 {
                        let row = &mut dx[(iy * r.iw + w0) * r.c..(iy * r.iw + w1) * r.c];
                        for px in row.chunks_exact_mut(r.c) {
                            for (d, &g) in px.iter_mut().zip(grad) {
                                *d += g / count;
                            }
                        }
                    }
                }
            });
        Ok(())
    }
}

/// `torch.nn.AdaptiveMaxPool2d(output_size)`: the maximum of each adaptive window
/// ([`adaptive_window`]); the gradient goes to the first maximum in scan order (the last NaN if
/// there is one), as PyTorch's saved indices send it.
#[derive(Debug)]
pub struct AdaptiveMaxPool2d {
    name: String,
    r: Resize,
    /// Per output value of the last forward, the index of its maximum in the sample's plane
    /// (`iy * width + ix`).
    argmax: Vec<u32>,
    /// How many output values `argmax` holds.
    indexed: usize,
    /// Scratch output for recomputing `argmax` in `backward` when no forward left it.
    scratch: Vec<f32>,
}

impl AdaptiveMaxPool2d {
    /// Builds the layer for per-sample input `input` and output `[height, width]`.
    pub fn new(name: &str, output_size: [usize; 2], input: Shape) -> Result<Self> {
        let r = Resize::new(name, "adaptive_max_pool2d", input, output_size)?;
        if u32::try_from(r.ih.saturating_mul(r.iw)).is_err() {
            return Err(Error::config(
                name,
                format!(
                    "adaptive_max_pool2d input plane {}x{} has more than 2^32 positions",
                    r.ih, r.iw
                ),
            ));
        }
        Ok(AdaptiveMaxPool2d {
            name: name.to_owned(),
            r,
            argmax: Vec::new(),
            indexed: 0,
            scratch: Vec::new(),
        })
    }
}

/// Adaptive max pooling of `x` into `y`, and where each maximum lies into `argmax`.
fn adaptive_max_forward(r: Resize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let row_len = r.ow * r.c;
    if row_len == 0 {
        return;
    }
    y.par_chunks_mut(row_len)
        .zip(argmax.par_chunks_mut(row_len))
        .enumerate()
        .for_each(|(row, (out, arg))| {
            let (n, oy) = (row / r.oh, row % r.oh);
            let sample = &x[n * r.in_len()..(n + 1) * r.in_len()];
            for (ox, (out, arg)) in out
                .chunks_exact_mut(r.c)
                .zip(arg.chunks_exact_mut(r.c))
                .enumerate()
            {
                let ([h0, h1], [w0, w1]) = r.window(oy, ox);
                out.fill(f32::NEG_INFINITY);
                // Fits: the plane's size was checked against u32 when the layer was built.
                arg.fill((h0 * r.iw + w0) as u32);
                for iy in h0..h1 {
                    for ix in w0..w1 {
                        let at = iy * r.iw + ix;
                        let px = &sample[at * r.c..(at + 1) * r.c];
                        for ((m, a), &v) in out.iter_mut().zip(arg.iter_mut()).zip(px) {
                            if v > *m || v.is_nan() {
                                *m = v;
                                *a = at as u32;
                            }
                        }
                    }
                }
            }
        });
}

impl Layer for AdaptiveMaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    /// Also records where each maximum lies, for `backward`.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        grow(&mut self.argmax, ny, 0);
        adaptive_max_forward(self.r, x, &mut y[..ny], &mut self.argmax[..ny]);
        self.indexed = ny;
        Ok(())
    }

    /// Routes each output's gradient to its window's maximum; finds the maxima in `x` again
    /// when the last forward had fewer than `batch` samples.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let r = self.r;
        if self.indexed < ny {
            grow(&mut self.argmax, ny, 0);
            grow(&mut self.scratch, ny, 0.0);
            adaptive_max_forward(r, x, &mut self.scratch[..ny], &mut self.argmax[..ny]);
        }
        if r.in_len() == 0 {
            return Ok(());
        }
        let argmax = &self.argmax[..ny];
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let span = n * r.out_len()..(n + 1) * r.out_len();
                for (grad, arg) in dy[span.clone()]
                    .chunks_exact(r.c)
                    .zip(argmax[span].chunks_exact(r.c))
                {
                    for (ch, (&g, &a)) in grad.iter().zip(arg).enumerate() {
                        dx[a as usize * r.c + ch] += g;
                    }
                }
            });
        Ok(())
    }
}

/// `torch.nn.Upsample(scale_factor, mode="nearest")` with integer factors: output pixel
/// `(oy, ox)` copies input pixel ([`nearest_source`]) `(oy / sh, ox / sw)`.
#[derive(Debug)]
pub struct Upsample {
    name: String,
    scale_factor: [usize; 2],
    r: Resize,
}

impl Upsample {
    /// Builds the layer for per-sample input `input`, growing it by `scale_factor` `[sh, sw]`.
    pub fn new(name: &str, scale_factor: [usize; 2], input: Shape) -> Result<Self> {
        let (_, ih, iw) = image_input(name, "upsample", input)?;
        check_positive(name, "scale_factor", scale_factor)?;
        let too_large = || Error::config(name, "upsample output is too large".to_owned());
        let oh = ih.checked_mul(scale_factor[0]).ok_or_else(too_large)?;
        let ow = iw.checked_mul(scale_factor[1]).ok_or_else(too_large)?;
        Ok(Upsample {
            name: name.to_owned(),
            scale_factor,
            r: Resize::new(name, "upsample", input, [oh, ow])?,
        })
    }

    /// The factor `[sh, sw]` by which height and width grow.
    pub fn scale_factor(&self) -> [usize; 2] {
        self.scale_factor
    }
}

impl Layer for Upsample {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.r.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.r.output_shape()
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let (r, [sh, sw]) = (self.r, self.scale_factor);
        r.for_each_row(&mut y[..ny], |n, oy, out| {
            let iy = nearest_source(oy, r.ih, sh);
            let row = &x[(n * r.ih + iy) * r.iw * r.c..(n * r.ih + iy + 1) * r.iw * r.c];
            for (ox, out) in out.chunks_exact_mut(r.c).enumerate() {
                let ix = nearest_source(ox, r.iw, sw);
                out.copy_from_slice(&row[ix * r.c..(ix + 1) * r.c]);
            }
        });
        Ok(())
    }

    /// Sums the gradients of every copy of an input pixel, in output scan order.
    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let (r, [sh, sw]) = (self.r, self.scale_factor);
        if r.in_len() == 0 || r.out_len() == 0 {
            return Ok(());
        }
        dx[..nx]
            .par_chunks_mut(r.in_len())
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * r.out_len()..(n + 1) * r.out_len()];
                for (oy, grads) in dy.chunks_exact(r.ow * r.c).enumerate() {
                    let iy = nearest_source(oy, r.ih, sh);
                    let row = &mut dx[iy * r.iw * r.c..(iy + 1) * r.iw * r.c];
                    for (ox, grad) in grads.chunks_exact(r.c).enumerate() {
                        let ix = nearest_source(ox, r.iw, sw);
                        for (d, &g) in row[ix * r.c..(ix + 1) * r.c].iter_mut().zip(grad) {
                            *d += g;
                        }
                    }
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(c: usize, h: usize, w: usize) -> Shape {
        Shape::Chw([c, h, w])
    }

    #[test]
    fn adaptive_avg_pool_of_one_pixel_is_the_mean() {
        // One channel, 2x3 input (pixel-major), pooled to 1x1.
        let mut pool = AdaptiveAvgPool2d::new("p", [1, 1], image(1, 2, 3)).unwrap();
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0];
        pool.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(y, [3.5]);
        let mut dx = [0.0; 6];
        pool.backward(&x, &y, &[6.0], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [1.0; 6]);
    }

    #[test]
    fn adaptive_max_pool_routes_to_the_first_maximum() {
        // Two channels, 1x3 input pooled to 1x2: windows [0, 2) and [1, 3).
        let mut pool = AdaptiveMaxPool2d::new("p", [1, 2], image(2, 1, 3)).unwrap();
        let x = [5.0, 1.0, 5.0, 2.0, 0.0, 3.0];
        let mut y = [0.0; 4];
        pool.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(y, [5.0, 2.0, 5.0, 3.0]);
        let mut dx = [0.0; 6];
        pool.backward(&x, &y, &[1.0, 10.0, 100.0, 1000.0], Some(&mut dx), 1)
            .unwrap();
        assert_eq!(dx, [1.0, 0.0, 100.0, 10.0, 0.0, 1000.0]);
    }

    #[test]
    fn upsample_repeats_pixels_and_sums_their_gradients() {
        let mut up = Upsample::new("u", [2, 3], image(1, 1, 2)).unwrap();
        assert_eq!(up.output_shape(), image(1, 2, 6));
        let x = [1.0, 2.0];
        let mut y = [0.0; 12];
        up.forward(&x, &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(
            y,
            [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        let mut dx = [0.0; 2];
        up.backward(&x, &y, &[1.0; 12], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [6.0, 6.0]);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert!(Upsample::new("u", [usize::MAX, 1], image(1, 2, 2)).is_err());
        assert!(Upsample::new("u", [0, 1], image(1, 2, 2)).is_err());
        assert!(AdaptiveAvgPool2d::new("p", [0, 1], image(1, 2, 2)).is_err());
    }
}
