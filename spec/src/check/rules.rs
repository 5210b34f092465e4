//! The per-kind rules as the checker applies them: each kind's output from its input, with the
//! diagnostics that explain a shape that does not work (the formula with numbers, the chain of
//! sizes that led there). The sizes themselves come from the shared geometry and layer table.

use cnnc_core::config::{
    Conv2dConfig, ConvTranspose2dConfig, LayerConfig, PaddingMode, flatten_output, softmax_dim,
};
use cnnc_core::geometry::{Pad, Window};
use cnnc_core::{ArgValue, Input, LayerKind, TensorInfo};

use super::errors::{AxisLoss, CheckError, TransposedWindow};
use super::{Checker, Flow, LayerContext};
use crate::{MAX_ELEMENTS, MAX_POOL_WINDOW};
use cnnc_core::Shape;

impl Checker {
    /// Resolves a layer's arguments (the table's defaults, the inferred size) and computes its
    /// output from its input. `None` when the output cannot be known.
    pub(super) fn resolve(
        &mut self,
        cx: &LayerContext<'_>,
        flow: &Flow,
    ) -> Option<(LayerConfig, Shape)> {
        let input = flow.shape;
        // The input the kind works on (the table's), and the size it infers from it, checked
        // against the spec when written.
        let key = cx.kind.inferred_arg();
        let inferred = match (cx.kind.input(), input) {
            (Input::Image, _) => {
                let [c, _, _] = self.image_input(cx, input)?;
                key.map(|key| (key, self.explicit_size(cx, flow, key, c, "channels")))
            }
            (Input::Flat, Shape::Flat(n)) => {
                key.map(|key| (key, self.explicit_size(cx, flow, key, n, "features")))
            }
            (Input::Flat, Shape::Chw([c, h, w])) => {
                self.report(CheckError::ExpectedFlat {
                    at: cx.culprit(),
                    span: cx.layer.kind.span,
                    origin: flow.origin.clone(),
                    input: [c, h, w],
                });
                key.map(|key| (key, cx.args.int(key).unwrap_or(c * h * w)))
            }
            (Input::Any, _) => None,
        };
        let config = LayerConfig::from_args(cx.kind, |key| match inferred {
            Some((inferred, size)) if inferred == key => Some(ArgValue::Int(size)),
            _ => cx.args.value(key),
        })?;
        let output = match (&config, input) {
            (LayerConfig::Conv2d(conv), Shape::Chw([_, h, w])) => {
                self.groups(cx, conv.groups, [conv.in_channels, conv.out_channels])?;
                self.mode_padding(cx, conv, [h, w])?;
                let windows = [0, 1].map(|i| Window {
                    kernel: conv.kernel_size[i],
                    stride: conv.stride[i],
                    padding: conv.pad(i),
                    dilation: conv.dilation[i],
                    ceil_mode: false,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "stride")?;
                if conv.bias && cx.next_kind == Some(LayerKind::BatchNorm2d) {
                    self.report(CheckError::BiasBeforeBatchNorm {
                        at: cx.culprit(),
                        span: cx.span_of("bias"),
                    });
                }
                Shape::Chw([conv.out_channels, oh, ow])
            }
            (
                LayerConfig::MaxPool2d(pool) | LayerConfig::AvgPool2d(pool),
                Shape::Chw([c, h, w]),
            ) => {
                for i in 0..2 {
                    if pool.padding[i] > pool.kernel_size[i] / 2 {
                        self.report(CheckError::PoolPaddingTooLarge {
                            at: cx.culprit(),
                            span: cx.span_of("padding"),
                            padding: pool.padding[i],
                            kernel: pool.kernel_size[i],
                        });
                        break;
                    }
                }
                let [kh, kw] = pool.kernel_size;
                if cx.kind == LayerKind::MaxPool2d && kh * kw > MAX_POOL_WINDOW {
                    self.report(CheckError::PoolWindowTooLarge {
                        at: cx.culprit(),
                        span: cx.span_of("kernel_size"),
                        kernel: [kh, kw],
                    });
                    return None;
                }
                let windows = [0, 1].map(|i| Window {
                    kernel: pool.kernel_size[i],
                    stride: pool.stride[i],
                    padding: Pad::even(pool.padding[i]),
                    dilation: pool.dilation[i],
                    ceil_mode: pool.ceil_mode,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "kernel_size")?;
                Shape::Chw([c, oh, ow])
            }
            (LayerConfig::Flatten { start_dim, end_dim }, _) => {
                let Some(output) = flatten_output(*start_dim, *end_dim, input) else {
                    let span = match softmax_dim(*start_dim, input) {
                        Some(_) if cx.args.span("end_dim").is_some() => cx.span_of("end_dim"),
                        _ => cx.span_of("start_dim"),
                    };
                    self.report(CheckError::FlattenDims {
                        at: cx.culprit(),
                        span,
                        start_dim: *start_dim,
                        end_dim: *end_dim,
                        input,
                    });
                    return None;
                };
                if let Shape::Flat(n) = input
                    && !flow.after_error
                {
                    self.report(CheckError::RedundantFlatten {
                        at: cx.culprit(),
                        span: cx.layer.kind.span,
                        features: n,
                    });
                }
                output
            }
            (LayerConfig::GroupNorm(norm), _) => {
                if !norm.num_channels.is_multiple_of(norm.num_groups.max(1)) {
                    self.report(CheckError::GroupNormGroups {
                        at: cx.culprit(),
                        span: cx.span_of("num_groups"),
                        num_groups: norm.num_groups,
                        channels: norm.num_channels,
                    });
                }
                input
            }
            (LayerConfig::Linear(linear), _) => Shape::Flat(linear.out_features),
            (LayerConfig::ConvTranspose2d(conv), Shape::Chw([_, h, w])) => {
                self.transposed_output(cx, conv, [h, w])?;
                config.output_shape(input).ok()?
            }
            // The upsample's argument conflicts are reported with its arguments.
            (
                LayerConfig::AdaptiveAvgPool2d { .. }
                | LayerConfig::AdaptiveMaxPool2d { .. }
                | LayerConfig::Upsample(_),
                _,
            ) => config.output_shape(input).ok()?,
            (LayerConfig::Prelu { num_parameters }, _) => {
                let (channels, what) = match input {
                    Shape::Chw([c, _, _]) => (c, "channels"),
                    Shape::Flat(n) => (n, "features"),
                };
                if *num_parameters != 1 && *num_parameters != channels {
                    self.report(CheckError::PreluParameters {
                        at: cx.culprit(),
                        span: cx.span_of("num_parameters"),
                        num_parameters: *num_parameters,
                        channels,
                        what,
                    });
                }
                input
            }
            (LayerConfig::Softmax { dim } | LayerConfig::LogSoftmax { dim }, _) => {
                // The output is the input whatever the dim: later layers are still checked.
                if softmax_dim(*dim, input).is_none() {
                    self.report(CheckError::BadDim {
                        at: cx.culprit(),
                        span: cx.span_of("dim"),
                        dim: *dim,
                        input,
                    });
                }
                input
            }
            _ => input,
        };
        self.limits(cx, &output, &config.tensors(cx.name))?;
        if let Some(padded) = config.padded_input(input) {
            let numel = padded.dims().iter().map(|&d| d as u64).product::<u64>();
            if numel > MAX_ELEMENTS {
                self.report(CheckError::TensorTooLarge {
                    at: cx.culprit(),
                    span: cx.span_of("padding"),
                    what: "padded input",
                    dims: padded.dims().to_vec(),
                    numel,
                });
                return None;
            }
        }
        Some((config, output))
    }

    /// A convolution's `groups` must divide both channel counts (PyTorch's `in_channels must
    /// be divisible by groups`); reports each that it does not.
    fn groups(
        &mut self,
        cx: &LayerContext<'_>,
        groups: usize,
        [in_channels, out_channels]: [usize; 2],
    ) -> Option<()> {
        if groups == 0 {
            // Out of its range: reported with the arguments.
            return None;
        }
        let mut ok = true;
        for (arg, channels) in [("in_channels", in_channels), ("out_channels", out_channels)] {
            if channels.is_multiple_of(groups) {
                continue;
            }
            ok = false;
            self.report(CheckError::GroupsMismatch {
                at: cx.culprit(),
                span: cx.span_of("groups"),
                out_channels_span: (arg == "out_channels").then(|| cx.span_of("out_channels")),
                arg,
                channels,
                groups,
                in_channels,
                out_channels,
            });
        }
        ok.then_some(())
    }

    /// A convolution's padding within its `padding_mode`'s limit (PyTorch's): `reflect` pads
    /// less than the input size, `circular` at most the size, on each side (the side after the
    /// input is the larger when `same` pads unevenly).
    fn mode_padding(
        &mut self,
        cx: &LayerContext<'_>,
        conv: &Conv2dConfig,
        input: [usize; 2],
    ) -> Option<()> {
        let mode = conv.padding_mode;
        let Some(axis) = (0..2).find(|&i| conv.padding_end[i] > mode.max_padding(input[i])) else {
            return Some(());
        };
        let (size, padding) = (input[axis], conv.padding_end[axis]);
        self.report(CheckError::ModePaddingTooLarge {
            at: cx.culprit(),
            span: cx.span_of("padding"),
            mode_span: cx.span_of("padding_mode"),
            mode: mode.word(),
            reflect: mode == PaddingMode::Reflect,
            size,
            padding,
            max: mode.max_padding(size),
            dimension: ["height", "width"][axis],
            same: cx.args.value("padding") == Some(ArgValue::Word("same")),
        });
        None
    }

    /// The `[C, H, W]` input of a convolution, pooling or batchnorm layer.
    pub(super) fn image_input(
        &mut self,
        cx: &LayerContext<'_>,
        input: Shape,
    ) -> Option<[usize; 3]> {
        match input {
            Shape::Chw(dims) => Some(dims),
            Shape::Flat(_) => {
                self.report(CheckError::ExpectedImage {
                    at: cx.culprit(),
                    span: cx.layer.kind.span,
                    input,
                    keyword: cx.kind.keyword(),
                });
                None
            }
        }
    }

    /// An inferable size (`in_channels`, `in_features`, `num_features`): the actual one, after
    /// checking an explicit value against it. The explicit value is kept so later layers see
    /// what the spec says.
    fn explicit_size(
        &mut self,
        cx: &LayerContext<'_>,
        flow: &Flow,
        key: &str,
        actual: usize,
        unit: &str,
    ) -> usize {
        let Some(written) = cx.args.int(key) else {
            return actual;
        };
        if written == actual {
            return actual;
        }
        let chain = if unit == "features" {
            flow.feature_chain()
        } else {
            None
        };
        self.report(CheckError::SizeMismatch {
            at: cx.culprit(),
            key: key.to_owned(),
            span: cx.span_of(key),
            written,
            actual,
            unit: unit.to_owned(),
            origin: flow.origin.clone(),
            chain,
            input: flow.shape,
        });
        written
    }

    /// Slides the windows over `[h, w]`; reports an output below 1 (error) or input rows and
    /// columns that no window reaches (one warning, pointing at `blame`).
    fn slide(
        &mut self,
        cx: &LayerContext<'_>,
        windows: &[Window; 2],
        input: [usize; 2],
        blame: &str,
    ) -> Option<[usize; 2]> {
        let mut out = [0usize; 2];
        // Input rows and columns no window reads: after the last window, and between windows
        // when the stride is larger than the kernel's span.
        let mut losses = Vec::new();
        for (i, axis) in ["height", "width"].into_iter().enumerate() {
            let window = windows[i];
            let slide = window.slide(input[i]);
            if slide.output < 1 {
                self.report(CheckError::OutputTooSmall {
                    at: cx.culprit(),
                    span: cx.span_of("kernel_size"),
                    axis,
                    window,
                    input: input[i],
                    output: slide.output,
                });
                return None;
            }
            out[i] = slide.output as usize;
            // A strided 1x1 window subsamples on purpose: ResNet's projection shortcut.
            let pointwise = window.effective_kernel() == 1;
            if window.stride > 1 && !pointwise && (slide.dropped > 0 || slide.skipped > 0) {
                losses.push(AxisLoss {
                    axis,
                    window,
                    input: input[i],
                    output: out[i],
                    dropped: slide.dropped,
                    skipped: slide.skipped,
                });
            }
        }
        if !losses.is_empty() {
            self.report(CheckError::DropsInput {
                at: cx.culprit(),
                span: cx.span_of(blame),
                input,
                losses,
                pool: matches!(cx.kind, LayerKind::MaxPool2d | LayerKind::AvgPool2d),
            });
        }
        Some(out)
    }

    /// Rejects outputs and tensors beyond [`MAX_ELEMENTS`].
    fn limits(
        &mut self,
        cx: &LayerContext<'_>,
        output: &Shape,
        tensors: &[TensorInfo],
    ) -> Option<()> {
        let output_numel = output.dims().iter().map(|&d| d as u64).product::<u64>();
        let (what, numel, dims) = if output_numel > MAX_ELEMENTS {
            ("output", output_numel, output.dims())
        } else if let Some(t) = tensors
            .iter()
            .find(|t| t.shape.iter().map(|&d| d as u64).product::<u64>() > MAX_ELEMENTS)
        {
            (
                "weight",
                t.shape.iter().map(|&d| d as u64).product(),
                t.shape.clone(),
            )
        } else {
            return Some(());
        };
        self.report(CheckError::TensorTooLarge {
            at: cx.culprit(),
            span: cx.layer.span,
            what,
            dims: dims.to_vec(),
            numel,
        });
        None
    }
}

impl Checker {
    /// The arguments of a transposed convolution that PyTorch refuses, and an output below 1,
    /// each as a diagnostic. `None` when any was found.
    fn transposed_output(
        &mut self,
        cx: &LayerContext<'_>,
        conv: &ConvTranspose2dConfig,
        input: [usize; 2],
    ) -> Option<()> {
        self.groups(cx, conv.groups, [conv.in_channels, conv.out_channels])?;
        for (i, axis) in ["height", "width"].into_iter().enumerate() {
            let (op, s, d) = (conv.output_padding[i], conv.stride[i], conv.dilation[i]);
            if op >= s && op >= d {
                self.report(CheckError::OutputPaddingTooLarge {
                    at: cx.culprit(),
                    span: cx.span_of("output_padding"),
                    axis,
                    output_padding: op,
                    stride: s,
                    dilation: d,
                });
                return None;
            }
        }
        for (i, axis) in ["height", "width"].into_iter().enumerate() {
            let output = conv.output_len(i, input[i]);
            if output < 1 {
                self.report(CheckError::TransposedOutputTooSmall {
                    at: cx.culprit(),
                    span: cx.span_of("padding"),
                    axis,
                    input: input[i],
                    window: TransposedWindow {
                        kernel: conv.kernel_size[i],
                        stride: conv.stride[i],
                        padding: conv.padding[i],
                        dilation: conv.dilation[i],
                        output_padding: conv.output_padding[i],
                    },
                    output,
                });
                return None;
            }
        }
        Some(())
    }
}
