//! Transposed 2-D convolution (`torch.nn.ConvTranspose2d`) on pixel-major activations, in its
//! gather form: each output pixel sums, over the kernel positions whose input pixel exists, that
//! pixel's channels times the weight, so the forward pass is parallel over output rows with no
//! two tasks writing one value. The input gradient is the matching convolution of `dy`, parallel
//! over input rows; the weight gradient is one task per kernel position, each summing over the
//! batch in order. Inner loops run over contiguous output channels.

use cnnc_core::Shape;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{Layer, check_backward, check_forward, check_positive, image_input, visit_weight_bias};
use super::{check_param, visit_weight_bias_ref, zero_param};

use crate::config::ConvTranspose2dConfig;
use crate::error::{Error, Result};
use crate::init::{fan_in_bound, fill_uniform};
use crate::param::{Entry, EntryRef, Param};
use crate::scratch;
use crate::tensor::Mode;

/// Every size of one layer, resolved.
#[derive(Clone, Copy, Debug)]
struct Geom {
    cin: usize,
    cout: usize,
    /// Input channels per group.
    cin_g: usize,
    /// Output channels per group.
    cout_g: usize,
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
    dh: usize,
    dw: usize,
}

impl Geom {
    /// The input index that reaches output index `o` through kernel index `k` along an axis
    /// (`o = i * s - p + k * d`), if there is one.
    fn source(o: usize, k: usize, s: usize, p: usize, d: usize, input: usize) -> Option<usize> {
        let at = (o + p).checked_sub(k * d)?;
        (at % s == 0 && at / s < input).then_some(at / s)
    }

    /// The output index that input index `i` reaches through kernel index `k`, if inside.
    fn target(i: usize, k: usize, s: usize, p: usize, d: usize, output: usize) -> Option<usize> {
        let at = (i * s + k * d).checked_sub(p)?;
        (at < output).then_some(at)
    }

    fn in_len(&self) -> usize {
        self.ih * self.iw * self.cin
    }

    fn out_len(&self) -> usize {
        self.oh * self.ow * self.cout
    }
}

/// `torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding,
/// output_padding, groups, bias, dilation)` on `[N, in_channels, H, W]`, giving
/// `[N, out_channels, (H - 1) s - 2p + d (k - 1) + output_padding + 1, ...]`.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    name: String,
    weight_name: String,
    bias_name: String,
    config: ConvTranspose2dConfig,
    g: Geom,
    /// `[in_channels, out_channels / groups, kh, kw]` (PyTorch's layout for transposed
    /// convolutions).
    weight: Param,
    /// `[out_channels]`, when the layer has a bias.
    bias: Option<Param>,
    /// The weight as `[ky][kx][ci][co within the group]`, rebuilt from `weight` on every pass.
    taps: Vec<f32>,
    /// The weight gradient as `[ky][kx][ci][co within the group]`.
    wgrad: Vec<f32>,
    /// The bias gradient.
    bgrad: Vec<f32>,
}

impl ConvTranspose2d {
    /// Builds the layer for per-sample input `input`, initialised as PyTorch does: weight and
    /// bias from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` with fan_in computed from the weight's
    /// dimension 1, `out_channels * kh * kw`, drawn from `rng` (weight first).
    pub fn new(
        name: &str,
        config: &ConvTranspose2dConfig,
        input: Shape,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let c = config;
        let (cin, ih, iw) = image_input(name, "conv_transpose2d", input)?;
        if cin != c.in_channels {
            return Err(Error::config(
                name,
                format!(
                    "conv_transpose2d expects {} input channels, found {cin}",
                    c.in_channels
                ),
            ));
        }
        check_positive(name, "kernel_size", c.kernel_size)?;
        check_positive(name, "stride", c.stride)?;
        check_positive(name, "dilation", c.dilation)?;
        if c.groups == 0
            || !c.in_channels.is_multiple_of(c.groups)
            || !c.out_channels.is_multiple_of(c.groups)
        {
            return Err(Error::config(
                name,
                format!(
                    "conv_transpose2d groups ({}) must divide in_channels ({}) and \
                     out_channels ({})",
                    c.groups, c.in_channels, c.out_channels
                ),
            ));
        }
        if !c.output_padding_fits() {
            return Err(Error::config(
                name,
                format!(
                    "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                    c.output_padding, c.stride, c.dilation
                ),
            ));
        }
        let out = |axis: usize, size: usize| {
            usize::try_from(c.output_len(axis, size))
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    Error::config(
                        name,
                        format!(
                            "conv_transpose2d output {} is below 1",
                            ["height", "width"][axis]
                        ),
                    )
                })
        };
        let g = Geom {
            cin,
            cout: c.out_channels,
            cin_g: cin / c.groups,
            cout_g: c.out_channels / c.groups,
            ih,
            iw,
            oh: out(0, ih)?,
            ow: out(1, iw)?,
            kh: c.kernel_size[0],
            kw: c.kernel_size[1],
            sh: c.stride[0],
            sw: c.stride[1],
            ph: c.padding[0],
            pw: c.padding[1],
            dh: c.dilation[0],
            dw: c.dilation[1],
        };
        let taps_len =
            g.kh.checked_mul(g.kw)
                .and_then(|k| k.checked_mul(g.cin))
                .and_then(|k| k.checked_mul(g.cout_g))
                .ok_or_else(|| {
                    Error::config(name, "conv_transpose2d weight is too large".to_owned())
                })?;
        let mut weight = zero_param(&[g.cin, g.cout_g, g.kh, g.kw]);
        let bound = fan_in_bound(g.cout_g * g.kh * g.kw);
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = c.bias.then(|| {
            let mut b = zero_param(&[g.cout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        Ok(ConvTranspose2d {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: c.clone(),
            g,
            weight,
            bias,
            taps: vec![0.0; taps_len],
            wgrad: vec![0.0; taps_len],
            bgrad: vec![0.0; g.cout],
        })
    }

    /// The layer's arguments.
    pub fn config(&self) -> &ConvTranspose2dConfig {
        &self.config
    }

    /// The weight, `[in_channels, out_channels / groups, kh, kw]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The weight, to change.
    pub fn weight_mut(&mut self) -> &mut Param {
        &mut self.weight
    }

    /// The bias, when the layer has one.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The bias, to change.
    pub fn bias_mut(&mut self) -> Option<&mut Param> {
        self.bias.as_mut()
    }

    /// Checks the parameters' shapes (they can be replaced from outside) and lays the weight
    /// out as `[ky][kx][ci][co]` in `taps`.
    fn load_taps(&mut self) -> Result<()> {
        let mut taps = std::mem::take(&mut self.taps);
        let result = self.taps_into(&mut taps);
        self.taps = taps;
        result
    }

    /// [`ConvTranspose2d::load_taps`] into `taps` (at least as long as the weight).
    fn taps_into(&self, taps: &mut [f32]) -> Result<()> {
        let g = self.g;
        check_param(
            &self.name,
            "weight",
            &self.weight,
            &[g.cin, g.cout_g, g.kh, g.kw],
        )?;
        if let Some(b) = &self.bias {
            check_param(&self.name, "bias", b, &[g.cout])?;
        }
        let k = g.kh * g.kw;
        for (i, &v) in self.weight.value.iter().enumerate() {
            // i = ((ci * cout_g + co) * kh + ky) * kw + kx
            let (ci_co, tap) = (i / k, i % k);
            taps[tap * g.cin * g.cout_g + ci_co] = v;
        }
        Ok(())
    }
}

impl Layer for ConvTranspose2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        Shape::Chw([self.g.cin, self.g.ih, self.g.iw])
    }

    fn output_shape(&self) -> Shape {
        Shape::Chw([self.g.cout, self.g.oh, self.g.ow])
    }

    /// Lays the taps out in scratch memory, as `forward` does in the layer's own.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        check_forward(self, x, y, batch)?;
        let mut taps = scratch::take(self.taps.len(), scratch::ANY, 0.0);
        self.taps_into(&mut taps)?;
        self.transpose_convolve(&taps, x, y, batch)
    }

    /// Keeps its taps for `backward`.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        check_forward(self, x, y, batch)?;
        self.load_taps()?;
        self.transpose_convolve(&self.taps, x, y, batch)
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
        self.load_taps()?;
        let g = self.g;
        let block = g.cin * g.cout_g;
        if block == 0 {
            return Ok(());
        }
        // Bias: every output pixel's gradient, summed in order.
        if let Some(b) = &mut self.bias {
            let sum = &mut self.bgrad;
            sum.fill(0.0);
            for px in dy[..batch * g.out_len()].chunks_exact(g.cout) {
                for (s, &v) in sum.iter_mut().zip(px) {
                    *s += v;
                }
            }
            for (gv, &s) in b.grad.iter_mut().zip(sum.iter()) {
                *gv = s;
            }
        }
        // Weight: one task per kernel position, summing over samples and input pixels in order.
        self.wgrad
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(tap, acc)| {
                let (ky, kx) = (tap / g.kw, tap % g.kw);
                acc.fill(0.0);
                for n in 0..batch {
                    let sample = &x[n * g.in_len()..(n + 1) * g.in_len()];
                    let grads = &dy[n * g.out_len()..(n + 1) * g.out_len()];
                    for iy in 0..g.ih {
                        let Some(oy) = Geom::target(iy, ky, g.sh, g.ph, g.dh, g.oh) else {
                            continue;
                        };
                        for ix in 0..g.iw {
                            let Some(ox) = Geom::target(ix, kx, g.sw, g.pw, g.dw, g.ow) else {
                                continue;
                            };
                            let px = &sample[(iy * g.iw + ix) * g.cin..][..g.cin];
                            let grad = &grads[(oy * g.ow + ox) * g.cout..][..g.cout];
                            for (ci, (&xv, a)) in
                                px.iter().zip(acc.chunks_exact_mut(g.cout_g)).enumerate()
                            {
                                let grad = &grad[ci / g.cin_g * g.cout_g..][..g.cout_g];
                                for (a, &d) in a.iter_mut().zip(grad) {
                                    *a += xv * d;
                                }
                            }
                        }
                    }
                }
            });
        let k = g.kh * g.kw;
        for (i, gv) in self.weight.grad.iter_mut().enumerate() {
            let (ci_co, tap) = (i / k, i % k);
            *gv = self.wgrad[tap * block + ci_co];
        }
        // Input: the convolution of `dy` with the same taps, parallel over input rows.
        let Some(dx) = dx else { return Ok(()) };
        let row_len = g.iw * g.cin;
        if row_len == 0 {
            return Ok(());
        }
        let taps = &self.taps;
        dx[..nx]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, dx_row)| {
                let (n, iy) = (r / g.ih, r % g.ih);
                let grads = &dy[n * g.out_len()..(n + 1) * g.out_len()];
                for (ix, d) in dx_row.chunks_exact_mut(g.cin).enumerate() {
                    d.fill(0.0);
                    for ky in 0..g.kh {
                        let Some(oy) = Geom::target(iy, ky, g.sh, g.ph, g.dh, g.oh) else {
                            continue;
                        };
                        for kx in 0..g.kw {
                            let Some(ox) = Geom::target(ix, kx, g.sw, g.pw, g.dw, g.ow) else {
                                continue;
                            };
                            let grad = &grads[(oy * g.ow + ox) * g.cout..][..g.cout];
                            let tap = &taps[(ky * g.kw + kx) * block..][..block];
                            for (ci, (dv, w)) in
                                d.iter_mut().zip(tap.chunks_exact(g.cout_g)).enumerate()
                            {
                                let grad = &grad[ci / g.cin_g * g.cout_g..][..g.cout_g];
                                let mut s = 0.0;
                                for (&wv, &gv) in w.iter().zip(grad) {
                                    s += wv * gv;
                                }
                                *dv += s;
                            }
                        }
                    }
                }
            });
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        visit_weight_bias(f, names, &mut self.weight, self.bias.as_mut());
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        visit_weight_bias_ref(f, names, &self.weight, self.bias.as_ref());
    }
}

impl ConvTranspose2d {
    /// The forward pass of `batch` samples with the weight laid out as `taps`.
    fn transpose_convolve(
        &self,
        taps: &[f32],
        x: &[f32],
        y: &mut [f32],
        batch: usize,
    ) -> Result<()> {
        let ny = batch * self.g.out_len();
        let g = self.g;
        let row_len = g.ow * g.cout;
        if row_len == 0 || g.cin == 0 {
            return Ok(());
        }
        let bias = self.bias.as_ref();
        let block = g.cin * g.cout_g;
        y[..ny]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, out_row)| {
                let (n, oy) = (r / g.oh, r % g.oh);
                let sample = &x[n * g.in_len()..(n + 1) * g.in_len()];
                for (ox, out) in out_row.chunks_exact_mut(g.cout).enumerate() {
                    match bias {
                        Some(b) => {
                            for (o, &v) in out.iter_mut().zip(b.value.iter()) {
                                *o = v;
                            }
                        }
                        None => out.fill(0.0),
                    }
                    for ky in 0..g.kh {
                        let Some(iy) = Geom::source(oy, ky, g.sh, g.ph, g.dh, g.ih) else {
                            continue;
                        };
                        for kx in 0..g.kw {
                            let Some(ix) = Geom::source(ox, kx, g.sw, g.pw, g.dw, g.iw) else {
                                continue;
                            };
                            let px = &sample[(iy * g.iw + ix) * g.cin..][..g.cin];
                            let tap = &taps[(ky * g.kw + kx) * block..][..block];
                            for (ci, (&xv, w)) in
                                px.iter().zip(tap.chunks_exact(g.cout_g)).enumerate()
                            {
                                let out = &mut out[ci / g.cin_g * g.cout_g..][..g.cout_g];
                                for (o, &wv) in out.iter_mut().zip(w) {
                                    *o += xv * wv;
                                }
                            }
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
    use crate::init::init_rng;

    fn config(k: usize, s: usize, p: usize, op: usize) -> ConvTranspose2dConfig {
        ConvTranspose2dConfig {
            in_channels: 1,
            out_channels: 1,
            kernel_size: [k, k],
            stride: [s, s],
            padding: [p, p],
            output_padding: [op, op],
            groups: 1,
            bias: false,
            dilation: [1, 1],
        }
    }

    fn image(c: usize, h: usize, w: usize) -> Shape {
        Shape::Chw([c, h, w])
    }

    #[test]
    fn stride_two_kernel_two_places_each_pixel_in_its_own_block() {
        let mut layer =
            ConvTranspose2d::new("t", &config(2, 2, 0, 0), image(1, 1, 2), &mut init_rng(0))
                .unwrap();
        layer
            .weight_mut()
            .value
            .iter_mut()
            .zip([1.0, 2.0, 3.0, 4.0])
            .for_each(|(w, v)| *w = v);
        assert_eq!(layer.output_shape(), image(1, 2, 4));
        let mut y = [0.0; 8];
        layer.forward(&[1.0, 10.0], &mut y, 1, Mode::Eval).unwrap();
        assert_eq!(y, [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let rng = &mut init_rng(0);
        // output_padding 2 is not below stride 2 nor dilation 1.
        assert!(ConvTranspose2d::new("t", &config(3, 2, 0, 2), image(1, 4, 4), rng).is_err());
        // Padding 3 cuts more than the full output of (1 - 1) * 1 + 3 = 3.
        assert!(ConvTranspose2d::new("t", &config(3, 1, 3, 0), image(1, 1, 1), rng).is_err());
        // groups 2 does not divide one input channel.
        let grouped = ConvTranspose2dConfig {
            groups: 2,
            ..config(3, 1, 0, 0)
        };
        assert!(ConvTranspose2d::new("t", &grouped, image(1, 4, 4), rng).is_err());
    }
}
