//! Layers that join several inputs (`torch.add`, `torch.cat(dim=1)`, `torch.mul` with
//! broadcasting): what graph models use for shortcuts, skip connections and gates. They share
//! one interface, [`Merge`], through which the executor runs any of them and hands each input's
//! gradient to where the plan says, written or added in place (a tensor read by several layers
//! has its gradient summed in the plan's fixed order). An add may apply the ReLU after it, as a
//! convolution does ([`Add::fuse_relu`]). Work is split by samples, and every sum runs in a
//! fixed order, so results do not depend on the number of threads.

use rayon::prelude::*;

use super::Layer;
use crate::config::LayerConfig;
use crate::error::{Error, Result};
use crate::par;
use crate::simd::multiversion;
use cnnc_core::{Reads, Shape};

/// A layer reading several inputs, each a buffer of `batch` samples in the runtime's layout
/// ([`Layer::input_shape`] is the first input's).
pub trait Merge: Layer {
    /// Per-sample shape of each input, in order.
    fn input_shapes(&self) -> &[Shape];

    /// Computes `y` from the inputs `xs` (one buffer per input, in order). Takes `&self`: a
    /// merge keeps nothing for its backward but its inputs, so it is its own inference.
    fn forward_merge(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()>;

    /// [`Merge::forward_merge`] without the ReLU the layer applies ([`Add::fuse_relu`]): its
    /// own output, for reading a fused layer's activations. The default is `forward_merge`, for
    /// kinds that fuse nothing.
    fn forward_merge_unfused(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()> {
        self.forward_merge(xs, y, batch)
    }

    /// From `dy`, the gradient of the output, computes the gradient of input `input` into `dx`:
    /// overwriting it, or with `add` adding it to what `dx` holds (another reader's part).
    /// `xs` are the inputs of the last forward and `[y, dy]` its output (read only by an add
    /// that applies a ReLU, [`Add::fuse_relu`]) and the output's gradient.
    fn backward_merge(
        &mut self,
        xs: &[&[f32]],
        output: [&[f32]; 2],
        input: usize,
        dx: &mut [f32],
        add: bool,
        batch: usize,
    ) -> Result<()>;

    /// For a layer whose output is the sum of its inputs in order (an add): `Some(relu)`, where
    /// `relu` says whether it applies the ReLU after the sum ([`Add::fuse_relu`]). A training
    /// step may then compute a two-input sum in the pass that makes one of its inputs
    /// ([`BatchNorm2d::forward_add`](super::BatchNorm2d::forward_add)). `None` for every
    /// other kind.
    fn sum_relu(&self) -> Option<bool> {
        None
    }

    /// [`Merge::backward_merge`] for inputs 0 and 1 of a two-input layer at once, into two
    /// distinct buffers `dxs` (each written, or with its `add` added to): the same values, in
    /// one pass over `dy` for kinds that can. The default makes the two calls.
    fn backward_merge_pair(
        &mut self,
        xs: &[&[f32]],
        output: [&[f32]; 2],
        dxs: [&mut [f32]; 2],
        add: [bool; 2],
        batch: usize,
    ) -> Result<()> {
        let [dx0, dx1] = dxs;
        self.backward_merge(xs, output, 0, dx0, add[0], batch)?;
        self.backward_merge(xs, output, 1, dx1, add[1], batch)
    }
}

/// `[C, H, W]`, a flat `[N]` as `[N, 1, 1]`: the same pixel-major layout.
fn chw(shape: Shape) -> [usize; 3] {
    match shape {
        Shape::Chw(d) => d,
        Shape::Flat(n) => [n, 1, 1],
    }
}

/// The part of a merge layer every kind shares: its name and shapes, and the buffer checks.
#[derive(Clone, Debug)]
struct Joint {
    name: String,
    inputs: Vec<Shape>,
    output: Shape,
}

impl Joint {
    /// Checks `config` (of `kind`) against `inputs` by the layer table's shape rule.
    fn new(name: &str, config: &LayerConfig, inputs: &[Shape]) -> Result<Joint> {
        let output = config
            .output_shape_of(inputs)
            .map_err(|e| Error::config(name, format!("{} {e}", config.kind().keyword())))?;
        Ok(Joint {
            name: name.to_owned(),
            inputs: inputs.to_vec(),
            output,
        })
    }

    /// Checks that there is one input buffer per input, each (and `y`) holding `batch`
    /// samples.
    fn check(&self, op: &'static str, xs: &[&[f32]], y: usize, batch: usize) -> Result<()> {
        if xs.len() != self.inputs.len() {
            return Err(Error::shape(
                &self.name,
                op,
                format!("{} inputs", self.inputs.len()),
                format!("{}", xs.len()),
            ));
        }
        for (x, shape) in xs.iter().zip(&self.inputs) {
            crate::tensor::check_len(&self.name, op, *shape, batch, x.len())?;
        }
        crate::tensor::check_len(&self.name, op, self.output, batch, y)?;
        Ok(())
    }

    /// Checks a backward call's buffers; returns the input's per-sample length.
    fn check_backward(
        &self,
        xs: &[&[f32]],
        dy: &[f32],
        input: usize,
        dx: &[f32],
        batch: usize,
    ) -> Result<usize> {
        self.check("backward", xs, dy.len(), batch)?;
        let shape = *self.inputs.get(input).ok_or_else(|| {
            Error::State(format!(
                "layer `{}` has no input {input} to backpropagate to",
                self.name
            ))
        })?;
        crate::tensor::check_len(&self.name, "backward dx", shape, batch, dx.len())?;
        Ok(shape.numel())
    }
}

/// `dst = src` or, with `add`, `dst += src`.
fn put(dst: &mut [f32], src: impl Iterator<Item = f32>, add: bool) {
    if add {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    } else {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s);
    }
}

/// The ReLU a merge kind may apply after it ([`Add::fuse_relu`]); the others apply none.
trait MergeRelu {
    /// Applies the ReLU after the layer; whether the kind can.
    fn fuse(&mut self) -> bool {
        false
    }
    /// `dy` arrives masked by the fused ReLU already.
    fn masked(&mut self) {}
    /// Whether backward masks `dy` by the output (which it then reads).
    fn masks(&self) -> bool {
        false
    }
}

/// Implements [`Layer`] for a merge layer: its name and shapes (the first input's), forward
/// and backward refusing to run on one buffer, its fused ReLU ([`MergeRelu`]) and what
/// backward reads: the inputs as `reads_inputs` says, the output to mask by that ReLU.
macro_rules! merge_layer {
    ($ty:ident, $keyword:literal, reads_inputs: $reads:literal) => {
        impl Layer for $ty {
            fn name(&self) -> &str {
                &self.joint.name
            }

            fn backward_reads(&self) -> Reads {
                Reads {
                    inputs: $reads,
                    output: MergeRelu::masks(self),
                }
            }

            fn fuse_relu(&mut self) -> bool {
                MergeRelu::fuse(self)
            }

            fn relu_grad_masked(&mut self) {
                MergeRelu::masked(self)
            }

            fn input_shape(&self) -> Shape {
                self.joint.inputs[0]
            }

            fn output_shape(&self) -> Shape {
                self.joint.output
            }

            fn batch_grain(&self) -> Option<usize> {
                Some(1)
            }

            fn infer(&self, _: &[f32], _: &mut [f32], _: usize) -> Result<()> {
                Err(one_buffer(&self.joint.name, $keyword))
            }

            fn backward(
                &mut self,
                _: &[f32],
                _: &[f32],
                _: &[f32],
                _: Option<&mut [f32]>,
                _: usize,
            ) -> Result<()> {
                Err(one_buffer(&self.joint.name, $keyword))
            }

            fn as_merge(&mut self) -> Option<&mut dyn Merge> {
                Some(self)
            }

            fn as_merge_ref(&self) -> Option<&dyn Merge> {
                Some(self)
            }
        }
    };
}

fn one_buffer(name: &str, keyword: &str) -> Error {
    Error::State(format!(
        "layer `{name}` ({keyword}) reads several inputs: run it through `Merge`"
    ))
}

/// `torch.add` (`a + b + ...`): the sum of inputs of one shape, added in input order.
#[derive(Clone, Debug)]
pub struct Add {
    joint: Joint,
    /// Whether the layer applies the ReLU that follows it ([`Add::fuse_relu`]).
    relu: bool,
    /// Whether `dy` arrives masked by that ReLU already ([`Add::relu_grad_masked`]).
    relu_masked: bool,
}

impl Add {
    /// Builds the layer for inputs of per-sample shapes `inputs` (two or more, all equal).
    pub fn new(name: &str, inputs: &[Shape]) -> Result<Self> {
        Ok(Add {
            joint: Joint::new(name, &LayerConfig::Add, inputs)?,
            relu: false,
            relu_masked: false,
        })
    }

    /// Makes the layer apply the ReLU that follows it in the network (`relu(a + b)`, as each
    /// sum is stored; a residual block's last ReLU) and take `dy` in backward as the gradient
    /// with respect to the ReLU's output, masking it by that output as it passes it to each
    /// input. The model then skips the ReLU layer: a pass over the activations fewer each way,
    /// and one buffer; values are those of a separate ReLU, bit for bit.
    pub fn fuse_relu(&mut self) {
        self.relu = true;
    }

    /// Declares that backward's `dy` arrives already masked by the fused ReLU (a max pool
    /// after it masks it, see [`crate::layers::MaxPool2d::mask_relu_grad`]).
    pub fn relu_grad_masked(&mut self) {
        self.relu_masked = true;
    }

    /// The first `n` values of the output `y` that backward masks `dy` by (checked against
    /// `batch`), or `None` when it masks nothing (no fused ReLU, or `dy` arrives masked).
    fn mask_by<'a>(&self, y: &'a [f32], n: usize, batch: usize) -> Result<Option<&'a [f32]>> {
        if !MergeRelu::masks(self) {
            return Ok(None);
        }
        let output = self.joint.output;
        crate::tensor::check_len(&self.joint.name, "backward y", output, batch, y.len())?;
        Ok(Some(&y[..n]))
    }

    /// `y = xs[0] + xs[1] + ...` in input order, through the ReLU with `relu`.
    fn sum(&self, xs: &[&[f32]], y: &mut [f32], batch: usize, relu: bool) -> Result<()> {
        self.joint.check("forward", xs, y.len(), batch)?;
        let n = batch * self.joint.output.numel();
        par::chunks_mut(&mut y[..n], CHUNK, |chunk, y| {
            let at = chunk * CHUNK;
            y.copy_from_slice(&xs[0][at..at + y.len()]);
            for (k, x) in xs.iter().enumerate().skip(1) {
                let x = &x[at..at + y.len()];
                if relu && k + 1 == xs.len() {
                    // The last sum through the ReLU as `Relu` computes it (NaN stays NaN).
                    y.iter_mut().zip(x).for_each(|(y, &x)| {
                        let v = *y + x;
                        *y = if v < 0.0 { 0.0 } else { v };
                    });
                } else {
                    put(y, x.iter().copied(), true);
                }
            }
        });
        Ok(())
    }
}

multiversion! {
    /// `dxs[j] = g` or, with `add[j]`, `dxs[j] += g` for both buffers in one pass, where `g` is
    /// `dy`, or with `mask` `dy` passed through a ReLU whose output is `y`: the values of
    /// [`put`] and [`put_masked`] into each.
    fn put_pair(dxs: [&mut [f32]; 2], y: &[f32], dy: &[f32], mask: bool, add: [bool; 2]) {
        let [dx0, dx1] = dxs;
        let values = dx0.iter_mut().zip(dx1.iter_mut()).zip(y).zip(dy);
        values.for_each(|(((d0, d1), &y), &dy)| {
            let g = if !mask || y > 0.0 { dy } else { 0.0 };
            *d0 = if add[0] { *d0 + g } else { g };
            *d1 = if add[1] { *d1 + g } else { g };
        });
    }
}

multiversion! {
    /// `dst = g` or, with `add`, `dst += g`, where `g` is `dy` passed through a ReLU whose
    /// output is `y` (as `Relu`'s backward computes it: where the output is positive).
    fn put_masked(dst: &mut [f32], y: &[f32], dy: &[f32], add: bool) {
        let values = dst.iter_mut().zip(y).zip(dy);
        if add {
            values.for_each(|((d, &y), &dy)| *d += if y > 0.0 { dy } else { 0.0 });
        } else {
            values.for_each(|((d, &y), &dy)| *d = if y > 0.0 { dy } else { 0.0 });
        }
    }
}

/// Values per parallel task of the element-wise kinds.
const CHUNK: usize = 16 * 1024;

impl Merge for Add {
    fn input_shapes(&self) -> &[Shape] {
        &self.joint.inputs
    }

    fn forward_merge(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()> {
        self.sum(xs, y, batch, self.relu)
    }

    fn forward_merge_unfused(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()> {
        self.sum(xs, y, batch, false)
    }

    fn sum_relu(&self) -> Option<bool> {
        Some(self.relu)
    }

    fn backward_merge(
        &mut self,
        xs: &[&[f32]],
        [y, dy]: [&[f32]; 2],
        input: usize,
        dx: &mut [f32],
        add: bool,
        batch: usize,
    ) -> Result<()> {
        let len = self.joint.check_backward(xs, dy, input, dx, batch)?;
        let n = batch * len;
        if let Some(y) = self.mask_by(y, n, batch)? {
            par::chunks_mut(&mut dx[..n], CHUNK, |chunk, dx| {
                let at = chunk * CHUNK..chunk * CHUNK + dx.len();
                put_masked(dx, &y[at.clone()], &dy[at], add);
            });
            return Ok(());
        }
        par::chunks_mut(&mut dx[..n], CHUNK, |chunk, dx| {
            let dy = &dy[chunk * CHUNK..][..dx.len()];
            put(dx, dy.iter().copied(), add);
        });
        Ok(())
    }

    fn backward_merge_pair(
        &mut self,
        xs: &[&[f32]],
        [y, dy]: [&[f32]; 2],
        dxs: [&mut [f32]; 2],
        add: [bool; 2],
        batch: usize,
    ) -> Result<()> {
        let [dx0, dx1] = dxs;
        let len = self.joint.check_backward(xs, dy, 0, dx0, batch)?;
        self.joint.check_backward(xs, dy, 1, dx1, batch)?;
        let n = batch * len;
        let mask = self.mask_by(y, n, batch)?;
        let masks = mask.is_some();
        // Unmasked, the kernel reads no output: `dy` stands in for it.
        let y = mask.unwrap_or(&dy[..n]);
        par::chunks_mut2(
            &mut dx0[..n],
            CHUNK,
            &mut dx1[..n],
            CHUNK,
            |chunk, dx0, dx1| {
                let at = chunk * CHUNK..chunk * CHUNK + dx0.len();
                put_pair([dx0, dx1], &y[at.clone()], &dy[at], masks, add);
            },
        );
        Ok(())
    }
}

impl MergeRelu for Add {
    fn fuse(&mut self) -> bool {
        Add::fuse_relu(self);
        true
    }
    fn masked(&mut self) {
        Add::relu_grad_masked(self);
    }
    fn masks(&self) -> bool {
        self.relu && !self.relu_masked
    }
}

merge_layer!(Add, "add", reads_inputs: false);

/// `torch.cat(inputs, dim=1)`: the inputs joined along the channels of `[C, H, W]` images
/// (each pixel's channel row is the inputs' rows in order, as the pixel-major layout stores
/// them) or the features of flat inputs.
#[derive(Clone, Debug)]
pub struct Concat {
    joint: Joint,
    /// Channels (features) of each input.
    widths: Vec<usize>,
}

impl Concat {
    /// Builds the layer for inputs of per-sample shapes `inputs` (two or more, one rank, images
    /// of one height and width), joined along `config`'s `dim`.
    pub fn new(name: &str, config: &cnnc_core::ConcatConfig, inputs: &[Shape]) -> Result<Self> {
        let joint = Joint::new(name, &LayerConfig::Concat(config.clone()), inputs)?;
        let widths = inputs.iter().map(|&s| chw(s)[0]).collect();
        Ok(Concat { joint, widths })
    }

    /// Pixels per sample (1 for flat inputs) and the output's channels.
    fn rows(&self) -> (usize, usize) {
        let [c, h, w] = chw(self.joint.output);
        (h * w, c)
    }
}

impl Merge for Concat {
    fn input_shapes(&self) -> &[Shape] {
        &self.joint.inputs
    }

    fn forward_merge(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()> {
        self.joint.check("forward", xs, y.len(), batch)?;
        let (pixels, channels) = self.rows();
        let widths = &self.widths;
        y[..batch * pixels * channels]
            .par_chunks_mut(pixels * channels)
            .enumerate()
            .for_each(|(n, y)| {
                for (p, row) in y.chunks_exact_mut(channels).enumerate() {
                    let mut at = 0;
                    for (x, &c) in xs.iter().zip(widths) {
                        let from = (n * pixels + p) * c;
                        row[at..at + c].copy_from_slice(&x[from..from + c]);
                        at += c;
                    }
                }
            });
        Ok(())
    }

    fn backward_merge(
        &mut self,
        xs: &[&[f32]],
        [_, dy]: [&[f32]; 2],
        input: usize,
        dx: &mut [f32],
        add: bool,
        batch: usize,
    ) -> Result<()> {
        let len = self.joint.check_backward(xs, dy, input, dx, batch)?;
        let (pixels, channels) = self.rows();
        let c = self.widths[input];
        let offset: usize = self.widths[..input].iter().sum();
        dx[..batch * len]
            .par_chunks_mut(len)
            .zip(dy[..batch * pixels * channels].par_chunks(pixels * channels))
            .for_each(|(dx, dy)| {
                for (row, dy) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(channels)) {
                    put(row, dy[offset..offset + c].iter().copied(), add);
                }
            });
        Ok(())
    }
}

impl MergeRelu for Concat {}

merge_layer!(Concat, "concat", reads_inputs: false);

/// `torch.mul` (`a * b`): the product of two inputs of one rank, a dimension of size 1 in one
/// of them broadcast along the other's (a `[C, 1, 1]` gate times a `[C, H, W]` map, in either
/// order). The gradient of a broadcast input sums its positions in a fixed order (pixels, then
/// channels, ascending).
#[derive(Clone, Debug)]
pub struct Mul {
    joint: Joint,
}

impl Mul {
    /// Builds the layer for two inputs of per-sample shapes `inputs`.
    pub fn new(name: &str, inputs: &[Shape]) -> Result<Self> {
        Ok(Mul {
            joint: Joint::new(name, &LayerConfig::Mul, inputs)?,
        })
    }
}

/// Where input `shape` (broadcast to the output) keeps position `(h, w, c)` of a sample:
/// its strides along the output's height, width and channels, 0 along a broadcast dimension.
fn strides(shape: Shape) -> [usize; 3] {
    let [c, h, w] = chw(shape);
    [
        if h > 1 { w * c } else { 0 },
        if w > 1 { c } else { 0 },
        usize::from(c > 1),
    ]
}

impl Merge for Mul {
    fn input_shapes(&self) -> &[Shape] {
        &self.joint.inputs
    }

    fn forward_merge(&self, xs: &[&[f32]], y: &mut [f32], batch: usize) -> Result<()> {
        self.joint.check("forward", xs, y.len(), batch)?;
        let out = self.joint.output.numel();
        let [la, lb] = [0, 1].map(|i| self.joint.inputs[i].numel());
        let [c, h, w] = chw(self.joint.output);
        let [sa, sb] = [0, 1].map(|i| strides(self.joint.inputs[i]));
        y[..batch * out]
            .par_chunks_mut(out)
            .enumerate()
            .for_each(|(n, y)| {
                let a = &xs[0][n * la..(n + 1) * la];
                let b = &xs[1][n * lb..(n + 1) * lb];
                if la == out && lb == out {
                    put(y, a.iter().zip(b).map(|(a, b)| a * b), false);
                    return;
                }
                let mut o = 0;
                for i in 0..h {
                    for j in 0..w {
                        for k in 0..c {
                            let ia = i * sa[0] + j * sa[1] + k * sa[2];
                            let ib = i * sb[0] + j * sb[1] + k * sb[2];
                            y[o] = a[ia] * b[ib];
                            o += 1;
                        }
                    }
                }
            });
        Ok(())
    }

    fn backward_merge(
        &mut self,
        xs: &[&[f32]],
        [_, dy]: [&[f32]; 2],
        input: usize,
        dx: &mut [f32],
        add: bool,
        batch: usize,
    ) -> Result<()> {
        let len = self.joint.check_backward(xs, dy, input, dx, batch)?;
        let other = 1 - input;
        let out = self.joint.output.numel();
        let lo = self.joint.inputs[other].numel();
        let [c, h, w] = chw(self.joint.output);
        let [ci, hi, wi] = chw(self.joint.inputs[input]);
        let so = strides(self.joint.inputs[other]);
        dx[..batch * len]
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(n, dx)| {
                let dy = &dy[n * out..(n + 1) * out];
                let b = &xs[other][n * lo..(n + 1) * lo];
                if len == out && lo == out {
                    put(dx, dy.iter().zip(b).map(|(d, b)| d * b), add);
                    return;
                }
                // Each element of the input sums the output positions it was broadcast to.
                let span = |size: usize, own: usize, at: usize| {
                    if own > 1 { at..at + 1 } else { 0..size }
                };
                let mut e = 0;
                for a in 0..hi {
                    for bj in 0..wi {
                        for k in 0..ci {
                            let mut sum = 0.0f32;
                            for i in span(h, hi, a) {
                                for j in span(w, wi, bj) {
                                    for kk in span(c, ci, k) {
                                        let o = (i * w + j) * c + kk;
                                        sum += dy[o] * b[i * so[0] + j * so[1] + kk * so[2]];
                                    }
                                }
                            }
                            if add {
                                dx[e] += sum;
                            } else {
                                dx[e] = sum;
                            }
                            e += 1;
                        }
                    }
                }
            });
        Ok(())
    }
}

impl MergeRelu for Mul {}

merge_layer!(Mul, "mul", reads_inputs: true);

/// Builds the merge layer `config` describes (an `add`, `concat` or `mul`) for inputs of
/// per-sample shapes `inputs`, as the dynamic executor holds it.
pub fn build_merge(name: &str, config: &LayerConfig, inputs: &[Shape]) -> Result<Box<dyn Layer>> {
    Ok(match config {
        LayerConfig::Add => Box::new(Add::new(name, inputs)?),
        LayerConfig::Concat(c) => Box::new(Concat::new(name, c, inputs)?),
        LayerConfig::Mul => Box::new(Mul::new(name, inputs)?),
        other => {
            return Err(Error::config(
                name,
                format!(
                    "{} reads one input; build it with `build`",
                    other.kind().keyword()
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(c: usize, h: usize, w: usize) -> Shape {
        Shape::Chw([c, h, w])
    }

    #[test]
    fn concat_interleaves_each_pixels_channels() {
        // Two 1x2 images of 1 and 2 channels, batch 1, pixel-major.
        let mut cat = Concat::new(
            "cat",
            &cnnc_core::ConcatConfig { dim: 1 },
            &[image(1, 1, 2), image(2, 1, 2)],
        )
        .unwrap();
        let (a, b) = ([1.0, 2.0], [10.0, 11.0, 20.0, 21.0]);
        let mut y = [0.0; 6];
        cat.forward_merge(&[&a, &b], &mut y, 1).unwrap();
        assert_eq!(y, [1.0, 10.0, 11.0, 2.0, 20.0, 21.0]);
        let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut db = [100.0; 4];
        cat.backward_merge(&[&a, &b], [&y, &dy], 1, &mut db, true, 1)
            .unwrap();
        assert_eq!(db, [102.0, 103.0, 105.0, 106.0]);
        let mut da = [0.0; 2];
        cat.backward_merge(&[&a, &b], [&y, &dy], 0, &mut da, false, 1)
            .unwrap();
        assert_eq!(da, [1.0, 4.0]);
    }

    #[test]
    fn mul_broadcasts_a_gate_in_either_order() {
        // A 2-channel gate times a 2x1 map of 2 channels, batch 1.
        let gate = [2.0, 3.0];
        let map = [1.0, 10.0, 4.0, 40.0];
        for (order, inputs) in [
            (0, [image(2, 1, 1), image(2, 2, 1)]),
            (1, [image(2, 2, 1), image(2, 1, 1)]),
        ] {
            let mut mul = Mul::new("m", &inputs).unwrap();
            let xs: [&[f32]; 2] = if order == 0 {
                [&gate, &map]
            } else {
                [&map, &gate]
            };
            let mut y = [0.0; 4];
            mul.forward_merge(&xs, &mut y, 1).unwrap();
            assert_eq!(y, [2.0, 30.0, 8.0, 120.0]);
            let dy = [1.0, 1.0, 0.5, 2.0];
            let mut dgate = [0.0; 2];
            mul.backward_merge(&xs, [&y, &dy], order, &mut dgate, false, 1)
                .unwrap();
            // Summed over the pixels: 1*1 + 0.5*4, 1*10 + 2*40.
            assert_eq!(dgate, [3.0, 90.0]);
            let mut dmap = [0.0; 4];
            mul.backward_merge(&xs, [&y, &dy], 1 - order, &mut dmap, false, 1)
                .unwrap();
            assert_eq!(dmap, [2.0, 3.0, 1.0, 6.0]);
        }
    }

    #[test]
    fn add_sums_and_refuses_wrong_buffers() {
        let mut add = Add::new("a", &[Shape::Flat(2); 3]).unwrap();
        let mut y = [0.0; 2];
        add.forward_merge(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]], &mut y, 1)
            .unwrap();
        assert_eq!(y, [9.0, 12.0]);
        let err = add.forward_merge(&[&[1.0, 2.0]], &mut y, 1).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let err = add
            .forward_merge(&[&[1.0], &[3.0, 4.0], &[5.0, 6.0]], &mut y, 1)
            .unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(Add::new("a", &[Shape::Flat(2), Shape::Flat(3)]).is_err());
        assert!(
            add.forward(&[0.0; 2], &mut y, 1, crate::tensor::Mode::Eval)
                .is_err()
        );
    }

    #[test]
    fn an_add_with_its_relu_is_the_add_then_the_relu_bit_for_bit() {
        use crate::layers::Relu;
        let shape = image(3, 2, 2);
        let n = 2 * shape.numel();
        // Sums of every sign, exact zeros and a NaN among them.
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos() * 2.0).collect();
        b[3] = -a[3];
        b[7] = f32::NAN;
        let dy: Vec<f32> = (0..n).map(|i| i as f32 - 9.5).collect();
        let mut plain = Add::new("a", &[shape; 2]).unwrap();
        let mut relu = Relu::new("r", shape);
        let (mut sum, mut y) = (vec![0.0; n], vec![0.0; n]);
        plain.forward_merge(&[&a, &b], &mut sum, 2).unwrap();
        relu.forward(&sum, &mut y, 2, crate::tensor::Mode::Train)
            .unwrap();
        let mut g = vec![0.0; n];
        relu.backward(&sum, &y, &dy, Some(&mut g), 2).unwrap();
        let mut fused = Add::new("a", &[shape; 2]).unwrap();
        assert!(Layer::fuse_relu(&mut fused));
        assert!(fused.backward_reads().output);
        let mut fused_y = vec![0.0; n];
        fused.forward_merge(&[&a, &b], &mut fused_y, 2).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused_y), bits(&y));
        // Written to one input, added to what the other's buffer holds.
        for (input, add) in [(0, false), (1, true)] {
            let base: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let (mut expected, mut found) = (base.clone(), base.clone());
            plain
                .backward_merge(&[&a, &b], [&sum, &g], input, &mut expected, add, 2)
                .unwrap();
            fused
                .backward_merge(&[&a, &b], [&fused_y, &dy], input, &mut found, add, 2)
                .unwrap();
            assert_eq!(bits(&found), bits(&expected), "input {input}");
        }
        // A pool after the ReLU masks the gradient instead: `dy` passes as it is.
        Layer::relu_grad_masked(&mut fused);
        assert!(!fused.backward_reads().output);
        let mut dx = vec![0.0; n];
        fused
            .backward_merge(&[&a, &b], [&[], &g], 0, &mut dx, false, 2)
            .unwrap();
        assert_eq!(bits(&dx), bits(&g));
    }

    #[test]
    fn both_gradients_in_one_pass_are_the_two_calls_bit_for_bit() {
        let shape = image(3, 5, 7);
        let n = 2 * shape.numel();
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos() * 2.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).sin()).collect();
        let base = |k: usize| -> Vec<f32> { (0..n).map(|i| (i * k) as f32 * 0.01).collect() };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for relu in [false, true] {
            let mut add = Add::new("a", &[shape; 2]).unwrap();
            if relu {
                add.fuse_relu();
            }
            let mut y = vec![0.0; n];
            add.forward_merge(&[&a, &b], &mut y, 2).unwrap();
            for flags in [[false, false], [false, true], [true, false], [true, true]] {
                let (mut one, mut two) = (base(1), base(2));
                for (input, dx) in [&mut one, &mut two].into_iter().enumerate() {
                    add.backward_merge(&[&a, &b], [&y, &dy], input, dx, flags[input], 2)
                        .unwrap();
                }
                let (mut pair0, mut pair1) = (base(1), base(2));
                add.backward_merge_pair(&[&a, &b], [&y, &dy], [&mut pair0, &mut pair1], flags, 2)
                    .unwrap();
                assert_eq!(bits(&pair0), bits(&one), "relu {relu}, {flags:?}");
                assert_eq!(bits(&pair1), bits(&two), "relu {relu}, {flags:?}");
            }
        }
    }
}
