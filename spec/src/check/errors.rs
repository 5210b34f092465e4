//! The checker's diagnostics as data: one variant per distinct diagnostic, carrying the facts
//! (names, numbers, shapes, spans), and [`CheckError::render`], the one place that words them
//! (code, message, labels, notes, help, fix). Detection sites construct a variant and hand it to
//! `Checker::report`; they write no English.
//!
//! To add a diagnostic: add a variant with the facts it needs, then one arm in `render` that
//! picks its [`Code`] (explained in `error_codes/CODE.md`) and words it. A new layer kind's
//! diagnostics go here too.

use cnnc_core::Shape;
use cnnc_core::geometry::Window;

use crate::diag::{Code, Diagnostic, Label};
use crate::span::Span;
use crate::{MAX_DIM, MAX_ELEMENTS, MAX_LAYERS, MAX_POOL_WINDOW};

/// Which layer a diagnostic is about, as messages refer to it.
pub(super) struct Culprit {
    /// "`fc1` (linear)" or "layer 3 (linear)".
    pub title: String,
    /// The layer's state_dict prefix.
    pub name: String,
}

/// Input rows or columns of one axis that no window reads.
pub(super) struct AxisLoss {
    /// "height" or "width".
    pub axis: &'static str,
    /// The window along this axis.
    pub window: Window,
    /// The input size along this axis.
    pub input: usize,
    /// The output size along this axis.
    pub output: usize,
    /// Rows or columns after the last window.
    pub dropped: usize,
    /// Rows or columns between windows.
    pub skipped: usize,
}

/// One diagnostic of the checker, with its facts.
pub(super) enum CheckError {
    /// A model without layers.
    NoLayers {
        /// The model's name, or the start of the file.
        span: Span,
    },
    /// More layers than [`MAX_LAYERS`].
    TooManyLayers {
        /// The first layer past the limit.
        span: Span,
        /// How many layers the model has.
        count: usize,
    },
    /// A model the checker accepted but [`cnnc_core::Model::new`] refused: a bug in cnnc.
    ModelBug {
        /// The first layer.
        span: Span,
        /// The refusal.
        error: String,
        /// The layer it names.
        layer: String,
    },
    /// A spec without `input`.
    MissingInput {
        /// The model's name, or the start of the file.
        span: Span,
    },
    /// An `input` that is not a list.
    InputNotList {
        /// The `input` value.
        span: Span,
        /// What it is instead.
        found: &'static str,
    },
    /// An `input` list of other than three dimensions.
    InputRank {
        /// The `input` value.
        span: Span,
        /// How many it has.
        rank: usize,
    },
    /// An input dimension below 1.
    InputDimBelowOne {
        /// The dimension.
        span: Span,
        /// Its value.
        value: i64,
    },
    /// An input dimension that is not an integer.
    InputDimNotInt {
        /// The dimension.
        span: Span,
        /// What it is instead.
        found: &'static str,
    },
    /// An input with more elements than [`MAX_ELEMENTS`].
    InputTooLarge {
        /// The `input` value.
        span: Span,
        /// Its dimensions.
        dims: [usize; 3],
        /// Their product.
        numel: u64,
    },
    /// A size beyond [`MAX_DIM`].
    DimTooLarge {
        /// The number.
        span: Span,
        /// Its value; `i64::MAX` when the literal did not fit 64 bits.
        value: i64,
        /// The layer it belongs to, if any.
        layer: Option<String>,
    },
    /// A layer name that is not a state_dict prefix.
    InvalidName {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// Two layers with one name.
    DuplicateName {
        /// The second layer's name (or the layer, when unnamed).
        span: Span,
        /// The name.
        name: String,
        /// The first layer's name (or the layer, when unnamed).
        earlier: Span,
        /// The first layer's index when it is unnamed (named by its index).
        earlier_unnamed: Option<usize>,
    },
    /// A layer that needs a flat input receives an image.
    ExpectedFlat {
        /// The layer.
        at: Culprit,
        /// The layer kind's span.
        span: Span,
        /// Where the input's size was set.
        origin: Label,
        /// The input `[C, H, W]`.
        input: [usize; 3],
    },
    /// A layer that needs an image receives a flat vector.
    ExpectedImage {
        /// The layer.
        at: Culprit,
        /// The layer kind's span.
        span: Span,
        /// The input.
        input: Shape,
        /// The kind's keyword.
        keyword: &'static str,
    },
    /// A convolution's bias followed by batchnorm2d.
    BiasBeforeBatchNorm {
        /// The layer.
        at: Culprit,
        /// The `bias` argument's span.
        span: Span,
    },
    /// Pooling padding above half the kernel.
    PoolPaddingTooLarge {
        /// The layer.
        at: Culprit,
        /// The `padding` argument's span.
        span: Span,
        /// The padding along the offending axis.
        padding: usize,
        /// The kernel size along that axis.
        kernel: usize,
    },
    /// A max-pooling window with more positions than its indices can hold.
    PoolWindowTooLarge {
        /// The layer.
        at: Culprit,
        /// The `kernel_size` argument's span.
        span: Span,
        /// The kernel `[kh, kw]`.
        kernel: [usize; 2],
    },
    /// A flatten of an already flat input.
    RedundantFlatten {
        /// The layer.
        at: Culprit,
        /// The layer kind's span.
        span: Span,
        /// The flat input's size.
        features: usize,
    },
    /// An explicit size that disagrees with the input.
    SizeMismatch {
        /// The layer.
        at: Culprit,
        /// The argument, e.g. `in_features`.
        key: String,
        /// The argument's span.
        span: Span,
        /// The value written.
        written: usize,
        /// The size of the input.
        actual: usize,
        /// "channels" or "features".
        unit: String,
        /// Where the input's size was set.
        origin: Label,
        /// How the size came about, when known.
        chain: Option<String>,
        /// The input.
        input: Shape,
    },
    /// A window that does not fit its input.
    OutputTooSmall {
        /// The layer.
        at: Culprit,
        /// The `kernel_size` argument's span.
        span: Span,
        /// "height" or "width".
        axis: &'static str,
        /// The window along that axis.
        window: Window,
        /// The input size along that axis.
        input: usize,
        /// The output size the formula gives.
        output: i128,
    },
    /// Input rows or columns that no window reads.
    DropsInput {
        /// The layer.
        at: Culprit,
        /// The span of the argument to blame.
        span: Span,
        /// The input `[h, w]`.
        input: [usize; 2],
        /// The losses, height first.
        losses: Vec<AxisLoss>,
        /// Whether the layer pools.
        pool: bool,
    },
    /// An output or weight beyond [`MAX_ELEMENTS`].
    TensorTooLarge {
        /// The layer.
        at: Culprit,
        /// The layer's span.
        span: Span,
        /// "output" or "weight".
        what: &'static str,
        /// The tensor's dimensions.
        dims: Vec<usize>,
        /// Their product.
        numel: u64,
    },
}

impl CheckError {
    /// The diagnostic: code, message, labels, notes, help and fix, all worded here.
    pub(super) fn render(self) -> Diagnostic {
        match self {
            CheckError::NoLayers { span } => {
                Diagnostic::error(Code::NoLayers, "the model has no layers", span, "this model")
                    .help("add a `layers` list, e.g. `- conv2d: {out_channels: 32, kernel_size: 3}`")
            }
            CheckError::TooManyLayers { span, count } => Diagnostic::error(
                Code::TooManyLayers,
                format!("the model has {count} layers, more than the limit of {MAX_LAYERS}"),
                span,
                "the first layer past the limit",
            ),
            CheckError::ModelBug { span, error, layer } => Diagnostic::error(
                Code::InvalidValue,
                format!("cnnc bug: the checker accepted a model it cannot build: {error}"),
                span,
                "here",
            )
            .layer(layer),
            CheckError::MissingInput { span } => Diagnostic::error(
                Code::MissingInput,
                "the spec has no `input` shape",
                span,
                "this model",
            )
            .help("add the per-sample input shape [channels, height, width], e.g. `input: [3, 32, 32]`"),
            CheckError::InputNotList { span, found } => bad_input(
                format!("`input` must be a list of three integers, found {found}"),
                span,
            ),
            CheckError::InputRank { span, rank } => bad_input(
                format!("`input` must have three dimensions [C, H, W], found {rank}"),
                span,
            ),
            CheckError::InputDimBelowOne { span, value } => Diagnostic::error(
                Code::BadInput,
                format!("input dimensions must be at least 1, found {value}"),
                span,
                "must be at least 1",
            ),
            CheckError::InputDimNotInt { span, found } => Diagnostic::error(
                Code::BadInput,
                format!("input dimensions must be integers, found {found}"),
                span,
                "expected an integer",
            ),
            CheckError::InputTooLarge { span, dims, numel } => Diagnostic::error(
                Code::TooLarge,
                format!(
                    "the input has {numel} elements per sample, more than the limit of {MAX_ELEMENTS}"
                ),
                span,
                "too large",
            )
            .note(format!("{} = {numel}", dims.map(|d| d.to_string()).join("*"))),
            CheckError::DimTooLarge { span, value, layer } => {
                // Both front-ends saturate integers beyond 64 bits to i64::MAX; the label shows
                // the literal.
                let value = if value == i64::MAX {
                    "the number".to_owned()
                } else {
                    value.to_string()
                };
                let diagnostic = Diagnostic::error(
                    Code::TooLarge,
                    format!("{value} is larger than the size limit of {MAX_DIM}"),
                    span,
                    "too large",
                )
                .note(format!("every size must be at most 2^20 = {MAX_DIM}"));
                match layer {
                    Some(layer) => diagnostic.layer(layer),
                    None => diagnostic,
                }
            }
            CheckError::InvalidName { span, name } => Diagnostic::error(
                Code::InvalidName,
                format!("`{name}` is not a valid layer name"),
                span,
                "not a state_dict prefix",
            )
            .note("a name is one or more dot-separated parts of letters, digits and `_`, like `fc1` or `layer1.0`")
            .layer(name),
            CheckError::DuplicateName { span, name, earlier, earlier_unnamed } => {
                let how = match earlier_unnamed {
                    None => "first used here".to_owned(),
                    Some(j) => format!("layer {j} is unnamed, so it is named `{j}`"),
                };
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("two layers are named `{name}`"),
                    span,
                    "used again here",
                )
                .secondary(earlier, how)
                .note(format!(
                    "parameters are saved as `{name}.weight`, `{name}.bias`, ..., so names must be unique"
                ))
                .help("rename one of the layers")
                .layer(name)
            }
            CheckError::ExpectedFlat { at, span, origin, input: [c, h, w] } => {
                let input = Shape::Chw([c, h, w]);
                Diagnostic::error(
                    Code::ExpectedFlat,
                    format!("{} needs a flat input, but its input is {input}", at.title),
                    span,
                    format!("receives {input}"),
                )
                .secondary(origin.span, origin.text)
                .note(format!("flatten of {input} gives {c}*{h}*{w} = {}", c * h * w))
                .help("insert `flatten` before this layer")
                .layer(at.name)
            }
            CheckError::ExpectedImage { at, span, input, keyword } => Diagnostic::error(
                Code::ExpectedImage,
                format!(
                    "{} needs a [channels, height, width] input, but its input is {input}",
                    at.title
                ),
                span,
                format!("receives {input}"),
            )
            .note(format!(
                "after `flatten` or `linear` the data is a flat vector; `{keyword}` works on images"
            ))
            .help("move this layer before the `flatten`")
            .layer(at.name),
            CheckError::BiasBeforeBatchNorm { at, span } => Diagnostic::new(
                Code::BiasBeforeBatchNorm,
                format!("the bias of {} is cancelled by the batchnorm2d after it", at.title),
                span,
                "this bias has no effect",
            )
            .note("batchnorm2d subtracts the per-channel mean, which removes any per-channel constant")
            .help("set `bias: false` to save the parameters")
            .layer(at.name),
            CheckError::PoolPaddingTooLarge { at, span, padding, kernel } => Diagnostic::error(
                Code::PoolPaddingTooLarge,
                format!("the padding of {} is more than half its kernel size", at.title),
                span,
                format!("padding {padding} > {kernel} / 2"),
            )
            .note(format!(
                "PyTorch requires padding <= kernel_size / 2 (rounded down), here {kernel} / 2 = {}",
                kernel / 2
            ))
            .help(format!("use at most `padding: {}`", kernel / 2))
            .layer(at.name),
            CheckError::PoolWindowTooLarge { at, span, kernel: [kh, kw] } => Diagnostic::error(
                Code::TooLarge,
                format!(
                    "the window of {} has {} positions, more than the limit of {MAX_POOL_WINDOW}",
                    at.title,
                    kh * kw
                ),
                span,
                format!("{kh}*{kw} = {}", kh * kw),
            )
            .note("max pooling records where each window's maximum lies, in 16 bits")
            .help("use a smaller kernel_size, or avgpool2d")
            .layer(at.name),
            CheckError::RedundantFlatten { at, span, features } => Diagnostic::new(
                Code::RedundantFlatten,
                format!("{} does nothing: its input [{features}] is already flat", at.title),
                span,
                "already flat",
            )
            .help("remove this layer")
            .layer(at.name),
            CheckError::SizeMismatch {
                at,
                key,
                span,
                written,
                actual,
                unit,
                origin,
                chain,
                input,
            } => Diagnostic::error(
                Code::SizeMismatch,
                format!("`{key}` of {} is {written}, but its input has {actual} {unit}", at.title),
                span,
                format!("{key} is {written}"),
            )
            .secondary(origin.span, origin.text)
            .note(chain.unwrap_or_else(|| format!("the input of {} is {input}", at.title)))
            .suggest(
                format!("set `{key}: {actual}`, or remove `{key}` to have it inferred"),
                span,
                actual.to_string(),
            )
            .layer(at.name),
            CheckError::OutputTooSmall { at, span, axis, window, input, output } => {
                Diagnostic::error(
                    Code::OutputTooSmall,
                    format!("{} would output a {axis} of {output}", at.title),
                    span,
                    format!(
                        "a window of {} does not fit in {}",
                        window.effective_kernel(),
                        input + 2 * window.padding
                    ),
                )
                .note(format!("output {axis} = {} = {output}", formula(&window, input)))
                .help("use a smaller kernel, stride or dilation, or more padding")
                .layer(at.name)
            }
            CheckError::DropsInput { at, span, input, losses, pool } => {
                drops_input(at, span, input, &losses, pool)
            }
            CheckError::TensorTooLarge { at, span, what, dims, numel } => Diagnostic::error(
                Code::TooLarge,
                format!(
                    "the {what} of {} would have {numel} elements, more than the limit of {MAX_ELEMENTS}",
                    at.title
                ),
                span,
                "too large",
            )
            .note(format!(
                "{} = {numel}",
                dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("*")
            ))
            .layer(at.name),
        }
    }
}

/// The shared form of the malformed-`input` errors.
fn bad_input(message: String, span: Span) -> Diagnostic {
    Diagnostic::error(
        Code::BadInput,
        message,
        span,
        "expected [channels, height, width]",
    )
    .help("write the per-sample input shape as three positive integers, e.g. [3, 32, 32]")
}

/// The wording of [`CheckError::DropsInput`]: what is lost where, with the formula per axis.
fn drops_input(
    at: Culprit,
    span: Span,
    input: [usize; 2],
    losses: &[AxisLoss],
    pool: bool,
) -> Diagnostic {
    let (mut last, mut between, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    for loss in losses {
        let unit = if loss.axis == "height" {
            "row"
        } else {
            "column"
        };
        let count = |n: usize| {
            let (plural, verb) = if n == 1 { ("", "is") } else { ("s", "are") };
            (format!("{n} {unit}{plural}"), verb)
        };
        let formula = formula(&loss.window, loss.input);
        if loss.dropped > 0 {
            let (what, verb) = count(loss.dropped);
            notes.push(format!(
                "output {} = {formula} = {}: the last {what} of {} {verb} never covered",
                loss.axis, loss.output, loss.input
            ));
            last.push(what);
            lost += loss.dropped;
        }
        if loss.skipped > 0 {
            let (what, verb) = count(loss.skipped);
            notes.push(format!(
                "windows of {} {unit}s start every {} {unit}s: {what} of {} between them {verb} never covered",
                loss.window.effective_kernel(),
                loss.window.stride,
                loss.input,
            ));
            between.push(what);
            lost += loss.skipped;
        }
    }
    let mut parts = Vec::new();
    if !last.is_empty() {
        parts.push(format!("the last {}", last.join(" and ")));
    }
    if !between.is_empty() {
        parts.push(format!("{} between windows", between.join(" and ")));
    }
    let lost_text = parts.join(" and ");
    let verb = if lost == 1 { "is" } else { "are" };
    let mut diagnostic = Diagnostic::new(
        Code::DropsInput,
        format!(
            "{} ignores {lost_text} of its {}×{} input",
            at.title, input[0], input[1]
        ),
        span,
        format!("{lost_text} {verb} dropped"),
    )
    .layer(at.name);
    for note in notes {
        diagnostic = diagnostic.note(note);
    }
    if !between.is_empty() {
        diagnostic.help(
            "use a stride no larger than the kernel size, so that every input row and column is read",
        )
    } else if pool {
        diagnostic
            .note("PyTorch rounds pooling output sizes down; Caffe rounds them up, a classic porting trap")
            .help("set `ceil_mode: true` to keep the edge (as Caffe does), or pad the input")
    } else {
        diagnostic.help("add padding or change the input size so the windows cover it")
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
