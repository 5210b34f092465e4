//! Max and average pooling (`torch.nn.MaxPool2d`, `torch.nn.AvgPool2d`) on pixel-major
//! activations, vectorised along channels. Backward runs one sample per task so overlapping
//! windows add into `dx` in a fixed order.

use cnnc_core::Shape;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_positive, grow, image_input};
use crate::config::Pool2dConfig;
use crate::error::{Error, Result};
use crate::kernels::window::{NONE, Wide, Window};
use crate::scratch;
use crate::tensor::Mode;

/// Output pixels per parallel task in forward passes (results do not depend on it).
const PIXELS_PER_TASK: usize = 256;

/// Every size of one pooling layer, resolved.
#[derive(Clone, Copy, Debug)]
struct Geom {
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    /// Dilation (max pooling's; 1 for average).
    dh: usize,
    dw: usize,
    /// Average pooling's divisor: `None` for the window's size (with its padding when
    /// `count_include_pad`), or the override.
    count_include_pad: bool,
    divisor_override: Option<usize>,
}

/// Output length of a pooling window along one axis: PyTorch's `pooling_output_shape`, including
/// its rule that with `ceil_mode` the last window must start inside the input or left padding.
fn pool_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    cnnc_core::geometry::pool_output(input, kernel, stride, pad, dilation, ceil_mode)
}

impl Geom {
    fn new(layer: &str, kind: &str, config: &Pool2dConfig, input: Shape) -> Result<Self> {
        let (c, ih, iw) = image_input(layer, kind, input)?;
        check_positive(layer, "kernel_size", config.kernel_size)?;
        check_positive(layer, "stride", config.stride)?;
        check_positive(layer, "dilation", config.dilation)?;
        if config.divisor_override == Some(0) {
            return Err(Error::config(layer, "divisor_override must not be 0"));
        }
        for axis in 0..2 {
            if config.padding[axis] > config.kernel_size[axis] / 2 {
                return Err(Error::config(
                    layer,
                    format!(
                        "padding {:?} must be at most half of kernel_size {:?}",
                        config.padding, config.kernel_size
                    ),
                ));
            }
        }
        let out = |axis: usize| {
            pool_out(
                [ih, iw][axis],
                config.kernel_size[axis],
                config.stride[axis],
                config.padding[axis],
                config.dilation[axis],
                config.ceil_mode,
            )
        };
        let (Some(oh), Some(ow)) = (out(0), out(1)) else {
            return Err(Error::config(
                layer,
                format!(
                    "kernel_size {:?} is larger than the padded input [{ih}, {iw}] + 2 * {:?}",
                    config.kernel_size, config.padding
                ),
            ));
        };
        Ok(Geom {
            c,
            ih,
            iw,
            oh,
            ow,
            kh: config.kernel_size[0],
            kw: config.kernel_size[1],
            sh: config.stride[0],
            sw: config.stride[1],
            ph: config.padding[0],
            pw: config.padding[1],
            dh: config.dilation[0],
            dw: config.dilation[1],
            count_include_pad: config.count_include_pad,
            divisor_override: config.divisor_override,
        })
    }

    fn input_shape(&self) -> Shape {
        Shape::Chw([self.c, self.ih, self.iw])
    }

    fn output_shape(&self) -> Shape {
        Shape::Chw([self.c, self.oh, self.ow])
    }

    /// The window of output pixel `(oy, ox)` of an undilated pool: input rows and columns
    /// clipped to the image, and what PyTorch's average pooling divides by: the override, or
    /// the window clipped to the padded input (`count_include_pad`) or to the input.
    fn window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let y0 = (oy * self.sh) as isize - self.ph as isize;
        let x0 = (ox * self.sw) as isize - self.pw as isize;
        let y1 = (y0 + self.kh as isize).min((self.ih + self.ph) as isize);
        let x1 = (x0 + self.kw as isize).min((self.iw + self.pw) as isize);
        let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
        let (rows, cols) = (
            clip(y0, self.ih)..clip(y1, self.ih),
            clip(x0, self.iw)..clip(x1, self.iw),
        );
        let divisor = match self.divisor_override {
            Some(d) => d,
            None if self.count_include_pad => ((y1 - y0) * (x1 - x0)) as usize,
            None => rows.len() * cols.len(),
        };
        (rows, cols, divisor)
    }

    /// The positions of a dilated window along one axis that lie in the input: the first
    /// one's input index and how many there are (`start + i * dilation`, `i < kernel`).
    fn dilated(start: isize, kernel: usize, dilation: usize, size: usize) -> (usize, usize) {
        let d = dilation as isize;
        // The first i with start + i * d >= 0, and the first with start + i * d >= size.
        let first = if start < 0 { (-start + d - 1) / d } else { 0 };
        let end = ((size as isize - start + d - 1) / d).clamp(0, kernel as isize);
        let count = (end - first).max(0) as usize;
        ((start + first * d).max(0) as usize, count)
    }

    /// The max-pooling window of output pixel `(oy, ox)` within one image, with its dilation:
    /// the offset of its first position and the window from there. Without dilation it is
    /// [`Geom::window`]'s rows and columns.
    fn max_window(&self, oy: usize, ox: usize) -> (usize, Window) {
        let y0 = (oy * self.sh) as isize - self.ph as isize;
        let x0 = (ox * self.sw) as isize - self.pw as isize;
        let (row, rows) = Geom::dilated(y0, self.kh, self.dh, self.ih);
        let (col, cols) = Geom::dilated(x0, self.kw, self.dw, self.iw);
        // An empty window (all of it in the padding) reads nothing: put it at the start.
        let base = if rows == 0 || cols == 0 {
            0
        } else {
            (row * self.iw + col) * self.c
        };
        let window = Window::strided(
            0..rows,
            0..cols,
            self.dh * self.iw * self.c,
            self.dw * self.c,
            self.c,
        );
        (base, window)
    }

    /// Whether no input pixel lies in two windows (the dilated kernel's span at most the
    /// stride on both axes).
    fn windows_disjoint(&self) -> bool {
        self.dh * (self.kh - 1) < self.sh && self.dw * (self.kw - 1) < self.sw
    }

    /// Whether every input pixel lies in some window: windows tile the input exactly from its
    /// corner, with no padding, no gap between windows and no input left past the last one.
    fn windows_cover_input(&self) -> bool {
        self.dh == 1
            && self.dw == 1
            && self.ph == 0
            && self.pw == 0
            && self.kh == self.sh
            && self.kw == self.sw
            && self.oh * self.sh >= self.ih
            && self.ow * self.sw >= self.iw
    }

    /// Runs `pixel(sample, oy, ox, out)` for every output pixel, in parallel chunks.
    fn for_each_output(
        &self,
        y: &mut [f32],
        pixel: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
    ) {
        let g = *self;
        y.par_chunks_mut(PIXELS_PER_TASK * g.c)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, out) in chunk.chunks_exact_mut(g.c).enumerate() {
                    let p = task * PIXELS_PER_TASK + i;
                    let (n, pix) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
                    pixel(n, pix / g.ow, pix % g.ow, out);
                }
            });
    }
}

/// `torch.nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=...)`: `[N, C, H, W]`
/// to `[N, C, H_out, W_out]`; padding acts as -inf, and a window reads every `dilation`-th
/// pixel. Backward routes each output gradient to the first
/// maximum of its window in scan order (rows, then columns), as PyTorch does; NaN counts as a
/// maximum, so it propagates. Like PyTorch's, forward records where each maximum lies and
/// backward reads those positions instead of the input (for the seed model's first pool
/// that halves the memory it reads: 0.74 to 0.38 ms a batch of 64).
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    name: String,
    config: Pool2dConfig,
    g: Geom,
    /// `backward` masks `dx` by the ReLU whose output the input is ([`MaxPool2d::mask_relu_grad`]).
    relu_grad: bool,
    /// Per output value of the last forward, the position its gradient goes to: the window's
    /// scan-order index of the maximum, or [`NONE`].
    argmax: Vec<u16>,
    /// How many output values `argmax` holds.
    indexed: usize,
    /// Scratch output for recomputing `argmax` in `backward` when no forward left it.
    scratch: Vec<f32>,
}

impl MaxPool2d {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, config: &Pool2dConfig, input: Shape) -> Result<Self> {
        let g = Geom::new(name, "max_pool2d", config, input)?;
        if g.kh * g.kw >= usize::from(NONE) {
            return Err(Error::config(
                name,
                format!(
                    "kernel_size {:?} has {} positions; max_pool2d takes at most {}",
                    config.kernel_size,
                    g.kh * g.kw,
                    NONE - 1
                ),
            ));
        }
        Ok(MaxPool2d {
            name: name.to_owned(),
            config: config.clone(),
            g,
            relu_grad: false,
            argmax: Vec::new(),
            indexed: 0,
            scratch: Vec::new(),
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &Pool2dConfig {
        &self.config
    }

    /// Declares the input to be the output of a ReLU (a fused one: the layer before computes
    /// it), so `backward` gives `dx` as the gradient with respect to the ReLU's input: zero where
    /// the input is not positive. The layer before can then take its `dy` as it is instead of
    /// masking it in another pass over the activations. A position's gradient comes from the
    /// windows whose maximum it is, so the mask is one compare of each window's maximum; the
    /// values are those of the separate ReLU's backward, bit for bit.
    pub fn mask_relu_grad(&mut self) {
        self.relu_grad = true;
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    /// Each window lies in one sample.
    fn batch_grain(&self) -> Option<usize> {
        Some(1)
    }

    fn input_shape(&self) -> Shape {
        self.g.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.g.output_shape()
    }

    /// Also records where each maximum lies (PyTorch's saved indices), for `backward`.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let mut argmax = scratch::take(ny, scratch::ANY, NONE);
        max_forward(self.g, x, &mut y[..ny], &mut argmax[..ny], self.relu_grad);
        Ok(())
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        grow(&mut self.argmax, ny, NONE);
        let argmax = &mut self.argmax[..ny];
        max_forward(self.g, x, &mut y[..ny], argmax, self.relu_grad);
        self.indexed = ny;
        Ok(())
    }

    /// Routes each output value's gradient to the position of its window's maximum that the
    /// last forward recorded (the first in scan order; the last NaN if there is one), as PyTorch
    /// does with the indices its forward saves. If that forward had fewer than `batch` samples,
    /// it finds the positions in `x` again first.
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
        if self.indexed < ny {
            grow(&mut self.argmax, ny, NONE);
            grow(&mut self.scratch, ny, 0.0);
            let (scratch, argmax) = (&mut self.scratch[..ny], &mut self.argmax[..ny]);
            max_forward(self.g, x, scratch, argmax, self.relu_grad);
        }
        max_backward(self.g, &self.argmax[..ny], dy, &mut dx[..nx]);
        Ok(())
    }

    fn mask_relu_grad(&mut self) -> bool {
        MaxPool2d::mask_relu_grad(self);
        true
    }
}

/// Max pooling of `x` into every output pixel of `y`, and where each maximum lies into `argmax`
/// (`relu`: [`NONE`] where the maximum is not positive), in parallel chunks.
fn max_forward(g: Geom, x: &[f32], y: &mut [f32], argmax: &mut [u16], relu: bool) {
    let wide = Wide::detect();
    y.par_chunks_mut(PIXELS_PER_TASK * g.c)
        .zip(argmax.par_chunks_mut(PIXELS_PER_TASK * g.c))
        .enumerate()
        .for_each(|(task, (chunk, argmax))| {
            let pixels = chunk
                .chunks_exact_mut(g.c)
                .zip(argmax.chunks_exact_mut(g.c));
            for (i, (out, argmax)) in pixels.enumerate() {
                let p = task * PIXELS_PER_TASK + i;
                let (n, pix) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
                let (base, window) = g.max_window(pix / g.ow, pix % g.ow);
                let image = &x[n * g.ih * g.iw * g.c..(n + 1) * g.ih * g.iw * g.c];
                window.max(wide, &image[base..], out, argmax, relu);
            }
        });
}

/// Max pooling's backward from the positions in `argmax`, one sample per task.
fn max_backward(g: Geom, argmax: &[u16], dy: &[f32], dx: &mut [f32]) {
    let wide = Wide::detect();
    let (in_len, out_len) = (g.ih * g.iw * g.c, g.oh * g.ow * g.c);
    let disjoint = g.windows_disjoint();
    dx.par_chunks_mut(in_len).enumerate().for_each(|(n, dx)| {
        let argmax = &argmax[n * out_len..(n + 1) * out_len];
        let dy = &dy[n * out_len..(n + 1) * out_len];
        // Disjoint windows write each `dx` element once, so only pixels no window covers need
        // the zero fill.
        if !(disjoint && g.windows_cover_input()) {
            dx.fill(0.0);
        }
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (base, window) = g.max_window(oy, ox);
                let at = (oy * g.ow + ox) * g.c;
                let (argmax, dy) = (&argmax[at..at + g.c], &dy[at..at + g.c]);
                if disjoint {
                    window.store(wide, argmax, dy, &mut dx[base..]);
                } else {
                    window.add(argmax, dy, &mut dx[base..]);
                }
            }
        }
    });
}

/// `torch.nn.AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad,
/// divisor_override)`: `[N, C, H, W]` to `[N, C, H_out, W_out]`. Each window's sum is divided by
/// `divisor_override` when given, else by the window's size clipped to the padded input with
/// `count_include_pad` (so padding counts, but a `ceil_mode` window running past the padding
/// does not), else by the input pixels it covers.
#[derive(Clone, Debug)]
pub struct AvgPool2d {
    name: String,
    config: Pool2dConfig,
    g: Geom,
}

impl AvgPool2d {
    /// Builds the layer for per-sample input `input`.
    pub fn new(name: &str, config: &Pool2dConfig, input: Shape) -> Result<Self> {
        if config.dilation != [1, 1] {
            return Err(Error::config(name, "avg_pool2d has no dilation"));
        }
        let g = Geom::new(name, "avg_pool2d", config, input)?;
        Ok(AvgPool2d {
            name: name.to_owned(),
            config: config.clone(),
            g,
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &Pool2dConfig {
        &self.config
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    /// Each window lies in one sample.
    fn batch_grain(&self) -> Option<usize> {
        Some(1)
    }

    fn input_shape(&self) -> Shape {
        self.g.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.g.output_shape()
    }

    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        let g = self.g;
        let in_len = g.ih * g.iw * g.c;
        g.for_each_output(&mut y[..ny], |n, oy, ox, out| {
            let (rows, cols, pool_size) = g.window(oy, ox);
            let window = Window::strided(rows, cols, g.iw * g.c, g.c, g.c);
            window.mean(&x[n * in_len..(n + 1) * in_len], out, pool_size as f32);
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
        let (nx, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        let g = self.g;
        let (in_len, out_len) = (g.ih * g.iw * g.c, g.oh * g.ow * g.c);
        dx[..nx]
            .par_chunks_mut(in_len)
            .enumerate()
            .for_each(|(n, dx)| {
                dx.fill(0.0);
                let dy = &dy[n * out_len..(n + 1) * out_len];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (rows, cols, pool_size) = g.window(oy, ox);
                        let grad = &dy[(oy * g.ow + ox) * g.c..(oy * g.ow + ox + 1) * g.c];
                        let window = Window::strided(rows, cols, g.iw * g.c, g.c, g.c);
                        window.spread(grad, pool_size as f32, dx);
                    }
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        // torch.nn.MaxPool2d(2)(torch.zeros(1, 1, 5, 5)).shape == (1, 1, 2, 2); ceil_mode gives 3.
        assert_eq!(pool_out(5, 2, 2, 0, 1, false), Some(2));
        assert_eq!(pool_out(5, 2, 2, 0, 1, true), Some(3));
        // A ceil window that would start in the right padding is dropped: 4 windows become 3.
        assert_eq!(pool_out(5, 2, 2, 1, 1, true), Some(3));
        assert_eq!(pool_out(6, 3, 2, 1, 1, true), Some(4));
        assert_eq!(pool_out(1, 3, 1, 0, 1, false), None);
    }

    /// Routes `dy = 1` through a 2x2 max pool over one 2x2 channel and returns `dx`.
    fn route(x: [f32; 4]) -> Vec<f32> {
        let config = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        let dims = Shape::Chw([1, 2, 2]);
        let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
        let mut y = [0.0];
        pool.forward(&x, &mut y, 1, Mode::Train).unwrap();
        let mut dx = vec![9.0; 4];
        pool.backward(&x, &y, &[1.0], Some(&mut dx), 1).unwrap();
        dx
    }

    /// The definition of max pooling's backward, written out per output value: `dy` added into
    /// zeros at the window's first maximum, or its last NaN, masked by a ReLU before when `relu`.
    fn reference_backward(g: &Geom, x: &[f32], dy: &[f32], batch: usize, relu: bool) -> Vec<f32> {
        let (in_len, out_len) = (g.ih * g.iw * g.c, g.oh * g.ow * g.c);
        let mut dx = vec![0.0; x.len()];
        for n in 0..batch {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (rows, cols, _) = g.window(oy, ox);
                    for ch in 0..g.c {
                        let mut best: Option<(usize, f32)> = None;
                        for iy in rows.clone() {
                            for ix in cols.clone() {
                                let at = n * in_len + (iy * g.iw + ix) * g.c + ch;
                                let v = x[at];
                                let take = match best {
                                    None => true,
                                    Some((_, m)) => v > m || v.is_nan(),
                                };
                                if take {
                                    best = Some((at, v));
                                }
                            }
                        }
                        if let Some((at, m)) = best
                            && (!relu || m > 0.0)
                        {
                            dx[at] += dy[n * out_len + (oy * g.ow + ox) * g.c + ch];
                        }
                    }
                }
            }
        }
        dx
    }

    /// Backward, disjoint and overlapping windows, after a training forward, after an evaluation
    /// forward (positions found again) and masked by a ReLU, against the definition, on ties, NaN,
    /// -inf, -0.0 gradients, ragged channel counts and uncovered last rows and columns.
    #[test]
    fn backward_routes_as_the_definition_says() {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let cases = [
            (4, 2, 2, 0, false),
            (5, 2, 2, 0, false),
            (5, 2, 2, 0, true),
            (6, 3, 2, 1, false),
            (7, 3, 1, 1, true),
        ];
        for (size, k, stride, pad, ceil_mode) in cases {
            for c in [1, 17, 32, 70] {
                let config = Pool2dConfig {
                    ceil_mode,
                    ..Pool2dConfig::new([k, k], [stride, stride], [pad, pad])
                };
                let dims = Shape::Chw([c, size, size]);
                let batch = 2;
                // Few distinct values, so windows tie often; NaN and -inf here and there.
                let special = [f32::NAN, f32::NEG_INFINITY, -1.0, 0.0, 2.0, 3.0, 0.0, 2.0];
                let x: Vec<f32> = (0..batch * size * size * c)
                    .map(|i| special[(i * 7919 + c) % 11 % special.len()])
                    .collect();
                for relu in [false, true] {
                    for mode in [Mode::Train, Mode::Eval] {
                        let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
                        if relu {
                            pool.mask_relu_grad();
                        }
                        let g = pool.g;
                        let mut y = vec![0.0; batch * g.oh * g.ow * c];
                        pool.forward(&x, &mut y, batch, mode).unwrap();
                        let dy: Vec<f32> = (0..y.len())
                            .map(|i| {
                                if i % 3 == 0 {
                                    -0.0
                                } else {
                                    i as f32 * 0.5 - 7.0
                                }
                            })
                            .collect();
                        let mut dx = vec![9.0; x.len()];
                        pool.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
                        let want = reference_backward(&g, &x, &dy, batch, relu);
                        assert_eq!(
                            bits(&dx),
                            bits(&want),
                            "size {size}, kernel {k}, stride {stride}, {c} channels, relu {relu}, {mode:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_dilated_window_all_in_the_padding_is_minus_infinity_and_drops_its_gradient() {
        // y, i = F.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), return_indices=True) on a 1x3 input:
        // y == [-inf, -inf, -inf] (each window reads rows -1 and 1 of a one-row input), and
        // x.grad after y.backward(ones) is zeros.
        let config = Pool2dConfig {
            dilation: [2, 1],
            ..Pool2dConfig::new([2, 1], [1, 1], [1, 0])
        };
        let dims = Shape::Chw([1, 1, 3]);
        let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
        let x = [1.0, 2.0, 3.0];
        let mut y = [0.0; 3];
        pool.forward(&x, &mut y, 1, Mode::Train).unwrap();
        assert_eq!(y, [f32::NEG_INFINITY; 3]);
        let mut dx = [9.0; 3];
        pool.backward(&x, &y, &[1.0; 3], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [0.0; 3]);
    }

    #[test]
    fn dilated_windows_read_every_dilation_th_pixel() {
        // F.max_pool2d(torch.tensor([5., 1., 0., 2., 7.]).view(1, 1, 1, 5), (1, 2), 1, 0, (1, 3))
        // == [[[[5., 7.]]]]: windows {0, 3} and {1, 4}.
        let config = Pool2dConfig {
            dilation: [1, 3],
            ..Pool2dConfig::new([1, 2], [1, 1], [0, 0])
        };
        let mut pool = MaxPool2d::new("pool", &config, Shape::Chw([1, 1, 5])).unwrap();
        let x = [5.0, 1.0, 0.0, 2.0, 7.0];
        let mut y = [0.0; 2];
        pool.forward(&x, &mut y, 1, Mode::Train).unwrap();
        assert_eq!(y, [5.0, 7.0]);
        let mut dx = [9.0; 5];
        pool.backward(&x, &y, &[1.0, 2.0], Some(&mut dx), 1)
            .unwrap();
        assert_eq!(dx, [1.0, 0.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn max_pool_windows_too_large_for_an_index_are_refused() {
        let config = Pool2dConfig::new([256, 256], [1, 1], [0, 0]);
        let dims = Shape::Chw([1, 256, 256]);
        let err = MaxPool2d::new("pool", &config, dims)
            .unwrap_err()
            .to_string();
        assert!(err.contains("65536 positions"), "{err}");
    }

    #[test]
    fn max_pool_routes_to_the_first_maximum_like_pytorch() {
        // x = torch.tensor([[[[1., 3.], [3., 0.]]]], requires_grad=True); max_pool2d(x, 2).backward()
        // x.grad == [[[[0., 1.], [0., 0.]]]]: ties go to the first in scan order.
        assert_eq!(route([1.0, 3.0, 3.0, 0.0]), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(route([f32::NEG_INFINITY; 4]), [1.0, 0.0, 0.0, 0.0]);
        // NaN wins, and the last NaN in scan order is the one PyTorch records.
        assert_eq!(route([f32::NAN, 1.0, f32::NAN, 0.0]), [0.0, 0.0, 1.0, 0.0]);
    }
}
