//! The per-kind rules as the checker applies them: each kind's output from its input, with the
//! diagnostics that explain a shape that does not work (the formula with numbers, the chain of
//! sizes that led there). The sizes themselves come from the shared geometry and layer table.

use cnnc_core::config::{Conv2dConfig, LayerConfig, PaddingMode};
use cnnc_core::geometry::Window;
use cnnc_core::{ArgValue, Input, LayerKind, TensorInfo};

use super::{Checker, Flow, LayerContext};
use crate::diag::{Code, Diagnostic};
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
                self.push(
                    Diagnostic::error(
                        Code::ExpectedFlat,
                        format!(
                            "{} needs a flat input, but its input is {input}",
                            cx.title()
                        ),
                        cx.layer.kind.span,
                        format!("receives {input}"),
                    )
                    .secondary(flow.origin.span, flow.origin.text.clone())
                    .note(format!(
                        "flatten of {input} gives {c}*{h}*{w} = {}",
                        c * h * w
                    ))
                    .help("insert `flatten` before this layer")
                    .layer(cx.name),
                );
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
                self.groups(cx, conv)?;
                self.mode_padding(cx, conv, [h, w])?;
                let windows = [0, 1].map(|i| Window {
                    kernel: conv.kernel_size[i],
                    stride: conv.stride[i],
                    padding: conv.padding[i],
                    dilation: conv.dilation[i],
                    ceil_mode: false,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "stride")?;
                if conv.bias && cx.next_kind == Some(LayerKind::BatchNorm2d) {
                    self.push(
                        Diagnostic::new(
                            Code::BiasBeforeBatchNorm,
                            format!("the bias of {} is cancelled by the batchnorm2d after it", cx.title()),
                            cx.span_of("bias"),
                            "this bias has no effect",
                        )
                        .note("batchnorm2d subtracts the per-channel mean, which removes any per-channel constant")
                        .help("set `bias: false` to save the parameters")
                        .layer(cx.name),
                    );
                }
                Shape::Chw([conv.out_channels, oh, ow])
            }
            (
                LayerConfig::MaxPool2d(pool) | LayerConfig::AvgPool2d(pool),
                Shape::Chw([c, h, w]),
            ) => {
                for i in 0..2 {
                    if pool.padding[i] > pool.kernel_size[i] / 2 {
                        self.push(
                            Diagnostic::error(
                                Code::PoolPaddingTooLarge,
                                format!("the padding of {} is more than half its kernel size", cx.title()),
                                cx.span_of("padding"),
                                format!("padding {} > {} / 2", pool.padding[i], pool.kernel_size[i]),
                            )
                            .note(format!(
                                "PyTorch requires padding <= kernel_size / 2 (rounded down), here {} / 2 = {}",
                                pool.kernel_size[i],
                                pool.kernel_size[i] / 2
                            ))
                            .help(format!("use at most `padding: {}`", pool.kernel_size[i] / 2))
                            .layer(cx.name),
                        );
                        break;
                    }
                }
                let [kh, kw] = pool.kernel_size;
                if cx.kind == LayerKind::MaxPool2d && kh * kw > MAX_POOL_WINDOW {
                    self.push(
                        Diagnostic::error(
                            Code::TooLarge,
                            format!(
                                "the window of {} has {} positions, more than the limit of {MAX_POOL_WINDOW}",
                                cx.title(),
                                kh * kw
                            ),
                            cx.span_of("kernel_size"),
                            format!("{kh}*{kw} = {}", kh * kw),
                        )
                        .note("max pooling records where each window's maximum lies, in 16 bits")
                        .help("use a smaller kernel_size, or avgpool2d")
                        .layer(cx.name),
                    );
                    return None;
                }
                let windows = [0, 1].map(|i| Window {
                    kernel: pool.kernel_size[i],
                    stride: pool.stride[i],
                    padding: pool.padding[i],
                    dilation: 1,
                    ceil_mode: pool.ceil_mode,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "kernel_size")?;
                Shape::Chw([c, oh, ow])
            }
            (LayerConfig::Flatten, _) => {
                if let Shape::Flat(n) = input
                    && !flow.after_error
                {
                    self.push(
                        Diagnostic::new(
                            Code::RedundantFlatten,
                            format!(
                                "{} does nothing: its input [{n}] is already flat",
                                cx.title()
                            ),
                            cx.layer.kind.span,
                            "already flat",
                        )
                        .help("remove this layer")
                        .layer(cx.name),
                    );
                }
                Shape::Flat(input.numel())
            }
            (LayerConfig::Linear(linear), _) => Shape::Flat(linear.out_features),
            _ => input,
        };
        self.limits(cx, &output, &config.tensors(cx.name))?;
        Some((config, output))
    }

    /// A convolution's `groups` must divide both channel counts (PyTorch's `in_channels must
    /// be divisible by groups`); reports each that it does not.
    fn groups(&mut self, cx: &LayerContext<'_>, conv: &Conv2dConfig) -> Option<()> {
        if conv.groups == 0 {
            // Out of its range: reported with the arguments.
            return None;
        }
        let mut ok = true;
        for (arg, channels) in [
            ("in_channels", conv.in_channels),
            ("out_channels", conv.out_channels),
        ] {
            if channels.is_multiple_of(conv.groups) {
                continue;
            }
            ok = false;
            let common = gcd(conv.in_channels, conv.out_channels);
            let depthwise = if conv.out_channels.is_multiple_of(conv.in_channels) {
                format!("; depthwise is `groups: {}`", conv.in_channels)
            } else {
                String::new()
            };
            let mut diagnostic = Diagnostic::error(
                Code::GroupsMismatch,
                format!(
                    "`groups` of {} is {}, which does not divide its {arg} ({channels})",
                    cx.title(),
                    conv.groups
                ),
                cx.span_of("groups"),
                format!("{arg} {channels} is not a multiple of {}", conv.groups),
            );
            if arg == "out_channels" {
                diagnostic = diagnostic.secondary(
                    cx.span_of("out_channels"),
                    format!("out_channels is {channels}"),
                );
            }
            self.push(
                diagnostic
                    .note(format!(
                        "each of the {} groups convolves in_channels / groups input channels into out_channels / groups output channels",
                        conv.groups
                    ))
                    .help(format!(
                        "use a `groups` that divides both {} and {}: a divisor of {common}{depthwise}",
                        conv.in_channels, conv.out_channels
                    ))
                    .layer(cx.name),
            );
        }
        ok.then_some(())
    }

    /// A convolution's padding within its `padding_mode`'s limit (PyTorch's): `reflect` pads
    /// less than the input size, `circular` at most the size.
    fn mode_padding(
        &mut self,
        cx: &LayerContext<'_>,
        conv: &Conv2dConfig,
        input: [usize; 2],
    ) -> Option<()> {
        let mode = conv.padding_mode;
        let Some(axis) = (0..2).find(|&i| conv.padding[i] > mode.max_padding(input[i])) else {
            return Some(());
        };
        let (size, padding) = (input[axis], conv.padding[axis]);
        let dimension = ["height", "width"][axis];
        let rule = match mode {
            PaddingMode::Reflect => {
                "reflect padding mirrors the input without repeating its edge, so it must be smaller than the input"
            }
            _ => "circular padding wraps the input around once, so it may not exceed the input",
        };
        self.push(
            Diagnostic::error(
                Code::ModePaddingTooLarge,
                format!(
                    "the padding of {} is too large for `padding_mode: {}` over an input {size} pixels in {dimension}",
                    cx.title(),
                    mode.word()
                ),
                cx.span_of("padding"),
                format!("padding {padding} > {}", mode.max_padding(size)),
            )
            .secondary(cx.span_of("padding_mode"), format!("padding_mode is {}", mode.word()))
            .note(format!("{rule} (PyTorch refuses it too); the input's {dimension} is {size}"))
            .help(format!(
                "use at most `padding: {}` along the {dimension}, or `padding_mode: replicate`",
                mode.max_padding(size)
            ))
            .layer(cx.name),
        );
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
                self.push(
                    Diagnostic::error(
                        Code::ExpectedImage,
                        format!("{} needs a [channels, height, width] input, but its input is {input}", cx.title()),
                        cx.layer.kind.span,
                        format!("receives {input}"),
                    )
                    .note(format!("after `flatten` or `linear` the data is a flat vector; `{}` works on images", cx.kind.keyword()))
                    .help("move this layer before the `flatten`")
                    .layer(cx.name),
                );
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
        let mut diagnostic = Diagnostic::error(
            Code::SizeMismatch,
            format!(
                "`{key}` of {} is {written}, but its input has {actual} {unit}",
                cx.title()
            ),
            cx.span_of(key),
            format!("{key} is {written}"),
        )
        .secondary(flow.origin.span, flow.origin.text.clone());
        let chain = if unit == "features" {
            flow.feature_chain()
        } else {
            None
        };
        diagnostic = diagnostic.note(
            chain.unwrap_or_else(|| format!("the input of {} is {}", cx.title(), flow.shape)),
        );
        self.push(
            diagnostic
                .suggest(
                    format!("set `{key}: {actual}`, or remove `{key}` to have it inferred"),
                    cx.span_of(key),
                    actual.to_string(),
                )
                .layer(cx.name),
        );
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
        let (mut last, mut between, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        let mut lost = 0;
        for (i, axis) in ["height", "width"].into_iter().enumerate() {
            let window = windows[i];
            let slide = window.slide(input[i]);
            let formula = formula(&window, input[i]);
            if slide.output < 1 {
                self.push(
                    Diagnostic::error(
                        Code::OutputTooSmall,
                        format!("{} would output a {axis} of {}", cx.title(), slide.output),
                        cx.span_of("kernel_size"),
                        format!(
                            "a window of {} does not fit in {}",
                            window.effective_kernel(),
                            input[i] + 2 * window.padding
                        ),
                    )
                    .note(format!("output {axis} = {formula} = {}", slide.output))
                    .help("use a smaller kernel, stride or dilation, or more padding")
                    .layer(cx.name),
                );
                return None;
            }
            out[i] = slide.output as usize;
            if window.stride <= 1 {
                continue;
            }
            let unit = if i == 0 { "row" } else { "column" };
            let count = |n: usize| {
                let (plural, verb) = if n == 1 { ("", "is") } else { ("s", "are") };
                (format!("{n} {unit}{plural}"), verb)
            };
            if slide.dropped > 0 {
                let (what, verb) = count(slide.dropped);
                notes.push(format!(
                    "output {axis} = {formula} = {}: the last {what} of {} {verb} never covered",
                    out[i], input[i]
                ));
                last.push(what);
                lost += slide.dropped;
            }
            if slide.skipped > 0 {
                let (what, verb) = count(slide.skipped);
                notes.push(format!(
                    "windows of {} {unit}s start every {} {unit}s: {what} of {} between them {verb} never covered",
                    window.effective_kernel(),
                    window.stride,
                    input[i],
                ));
                between.push(what);
                lost += slide.skipped;
            }
        }
        let mut parts = Vec::new();
        if !last.is_empty() {
            parts.push(format!("the last {}", last.join(" and ")));
        }
        if !between.is_empty() {
            parts.push(format!("{} between windows", between.join(" and ")));
        }
        if !parts.is_empty() {
            let lost_text = parts.join(" and ");
            let verb = if lost == 1 { "is" } else { "are" };
            let mut diagnostic = Diagnostic::new(
                Code::DropsInput,
                format!(
                    "{} ignores {lost_text} of its {}×{} input",
                    cx.title(),
                    input[0],
                    input[1]
                ),
                cx.span_of(blame),
                format!("{lost_text} {verb} dropped"),
            )
            .layer(cx.name);
            for note in notes {
                diagnostic = diagnostic.note(note);
            }
            let pool = matches!(cx.kind, LayerKind::MaxPool2d | LayerKind::AvgPool2d);
            diagnostic = if !between.is_empty() {
                diagnostic.help("use a stride no larger than the kernel size, so that every input row and column is read")
            } else if pool {
                diagnostic
                    .note("PyTorch rounds pooling output sizes down; Caffe rounds them up, a classic porting trap")
                    .help("set `ceil_mode: true` to keep the edge (as Caffe does), or pad the input")
            } else {
                diagnostic.help("add padding or change the input size so the windows cover it")
            };
            self.push(diagnostic);
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
        self.push(
            Diagnostic::error(
                Code::TooLarge,
                format!("the {what} of {} would have {numel} elements, more than the limit of {MAX_ELEMENTS}", cx.title()),
                cx.layer.span,
                "too large",
            )
            .note(format!("{} = {numel}", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("*")))
            .layer(cx.name),
        );
        None
    }
}

/// `floor((32 + 2*2 - 1*(5-1) - 1) / 1) + 1`, the PyTorch output-size formula with numbers.
fn formula(window: &Window, input: usize) -> String {
    let rounding = if window.ceil_mode { "ceil" } else { "floor" };
    format!(
        "{rounding}(({input} + 2*{} - {}*({}-1) - 1) / {}) + 1",
        window.padding, window.dilation, window.kernel, window.stride
    )
}

/// Greatest common divisor (Euclid's).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
