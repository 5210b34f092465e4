//! The checker's diagnostics as data: one variant per distinct diagnostic, carrying the facts
//! (names, numbers, shapes, spans), and [`CheckError::render`], the one place that words them
//! (code, message, labels, notes, help, fix). Detection sites construct a variant and hand it to
//! `Checker::report`; they write no English.
//!
//! To add a diagnostic: add a variant with the facts it needs, then one arm in `render` that
//! picks its [`Code`] (explained in `error_codes/CODE.md`) and words it. A new layer kind's
//! diagnostics go here too.

use cnnc_core::geometry::Window;
use cnnc_core::{LayerKind, Shape};

use crate::diag::{Code, Diagnostic};
use crate::expr::{EvalError, SyntaxError};
use crate::span::Span;

/// Bound of the layer table's unbounded numbers.
const UNBOUNDED: f64 = f64::MAX;
use crate::{MAX_DIM, MAX_ELEMENTS, MAX_LAYERS, MAX_NESTING, MAX_POOL_WINDOW};

/// Which layer a diagnostic is about, as messages refer to it.
pub(super) struct Culprit {
    /// "`fc1` (linear)" or "layer 3 (linear)".
    pub title: String,
    /// The layer's state_dict prefix.
    pub name: String,
}

/// What last set the channel or feature count, for the secondary label that points at it.
#[derive(Clone)]
pub(super) enum Origin {
    /// The spec's `input` `[C, H, W]`.
    Input([usize; 3]),
    /// A convolution, with how messages refer to it.
    Conv {
        /// "`conv1`" or "layer 0".
        who: String,
        /// Its output channels.
        channels: usize,
    },
    /// A linear layer, with how messages refer to it.
    Linear {
        /// "`fc1`" or "layer 3".
        who: String,
        /// Its output features.
        features: usize,
    },
    /// A merge layer (`add`, `concat`, `mul`).
    Merge {
        /// "`layer1.0.2`".
        who: String,
        /// Its output.
        shape: Shape,
    },
    /// A flatten.
    Flatten {
        /// What it flattens.
        input: Shape,
        /// The features it outputs.
        features: usize,
    },
}

impl Origin {
    /// The label's text.
    fn text(&self) -> String {
        match self {
            Origin::Input(input) => format!("the input is {}", Shape::Chw(*input)),
            Origin::Conv { who, channels } => format!("{who} outputs {channels} channels"),
            Origin::Linear { who, features } => format!("{who} outputs {features} features"),
            Origin::Merge { who, shape } => format!("{who} outputs {shape}"),
            Origin::Flatten { input, features } => {
                format!("flattens {input} into {features} features")
            }
        }
    }
}

/// A step of a [`FeatureChain`].
#[derive(Clone, Copy)]
pub(super) enum Step {
    /// A convolution.
    Conv,
    /// A pooling layer.
    Pool,
}

/// How a flat size came about: the input, the convolutions and poolings with their outputs,
/// and the `[C, H, W]` that was flattened.
pub(super) struct FeatureChain {
    /// The spec's input.
    pub input: [usize; 3],
    /// The convolutions and poolings before the flatten, with their outputs.
    pub steps: Vec<(Step, Shape)>,
    /// The flattened shape.
    pub before: [usize; 3],
}

impl FeatureChain {
    /// E.g. `32 →conv→ 32 →pool→ 16 → … → [64, 4, 4] → 64*4*4 = 1024`, or
    /// `flatten of [3, 4, 4] gives 3*4*4 = 48` without steps.
    fn text(&self) -> String {
        let [c, h, w] = self.before;
        let before = Shape::Chw(self.before);
        if self.steps.is_empty() {
            return format!("flatten of {before} gives {c}*{h}*{w} = {}", c * h * w);
        }
        let hw = |shape: &Shape| match *shape {
            Shape::Chw([_, h, w]) if h == w => h.to_string(),
            Shape::Chw([_, h, w]) => format!("{h}×{w}"),
            Shape::Flat(n) => n.to_string(),
        };
        let mut steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, shape)| {
                let op = match step {
                    Step::Conv => "conv",
                    Step::Pool => "pool",
                };
                format!("→{op}→ {}", hw(shape))
            })
            .collect();
        if steps.len() > 6 {
            steps.splice(2..steps.len() - 2, ["→ …".to_owned()]);
        }
        let mut chain = hw(&Shape::Chw(self.input));
        for step in steps {
            chain.push(' ');
            chain.push_str(&step);
        }
        chain.push_str(&format!(" → {before} → {c}*{h}*{w} = {}", c * h * w));
        chain
    }
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

/// A transposed convolution's arguments along one axis, for its output formula.
pub(super) struct TransposedWindow {
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Rows or columns cut from each side of the full output.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Rows or columns added after the output.
    pub output_padding: usize,
}

/// One branch of a merge: the layers from the common ancestor to one input, with outputs.
pub(super) struct Branch {
    /// Where the branch starts: the common ancestor's name and output (or the input's).
    pub from: (String, Shape),
    /// Each layer on it: its name and output.
    pub steps: Vec<(String, Shape)>,
}

impl Branch {
    /// `` `bn1` [16, 8, 8] → `conv2` [32, 8, 8] → `bn2` [32, 8, 8] ``.
    fn text(&self) -> String {
        let mut parts = vec![format!("{} {}", self.from.0, self.from.1)];
        let mut steps: Vec<String> = self
            .steps
            .iter()
            .map(|(name, shape)| format!("`{name}` {shape}"))
            .collect();
        if steps.len() > 6 {
            steps.splice(2..steps.len() - 2, ["…".to_owned()]);
        }
        parts.extend(steps);
        parts.join(" → ")
    }
}

/// One diagnostic of the checker, with its facts.
pub(super) enum CheckError {
    /// A block name that is not an identifier.
    InvalidBlockName {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// Two blocks with one name.
    DuplicateBlock {
        /// The second.
        span: Span,
        /// The first.
        first: Span,
        /// The name.
        name: String,
    },
    /// A block named like a layer kind or `sequential`.
    BlockShadowsKind {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// A repeated entry with a plain name: every copy would have it.
    RepeatedName {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// Expansion past [`MAX_LAYERS`] layers or its step budget.
    ExpansionTooLarge {
        /// The entry being expanded when the limit was reached.
        span: Span,
        /// Layers expanded so far.
        layers: usize,
    },
    /// Blocks and groups nested beyond the depth limit.
    NestingTooDeep {
        /// The instance one level too deep.
        span: Span,
    },
    /// Arguments other than `name`, `inputs` and `repeat` on a `sequential`.
    GroupArguments {
        /// The first such key.
        span: Span,
        /// Its text.
        key: String,
    },
    /// A group or block instance given several inputs.
    GroupInputs {
        /// The second input.
        span: Span,
        /// `sequential` or the block's name.
        what: String,
        /// How many.
        count: usize,
    },
    /// A block that instantiates itself.
    RecursiveBlock {
        /// The instance.
        span: Span,
        /// The block.
        name: String,
        /// The block's declaration.
        definition: Span,
        /// The blocks being instantiated, outermost first.
        chain: Vec<String>,
    },
    /// A `repeat` that is not an integer from 1 to the layer limit.
    BadRepeat {
        /// The value.
        span: Span,
        /// What it is.
        found: String,
    },
    /// A name template `{...}` that does not parse.
    TemplateSyntax {
        /// What is wrong.
        error: SyntaxError,
    },
    /// An input naming the entry itself.
    SelfReference {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// An input naming a later entry.
    LaterReference {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
        /// The later entry's position in its sequence.
        position: usize,
    },
    /// An input naming nothing in scope.
    UnknownReference {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
        /// The nearest name in scope.
        best: Option<String>,
        /// The latest names in scope, newest first.
        known: Vec<String>,
    },
    /// An instance argument the block does not take.
    UnknownParam {
        /// The key.
        span: Span,
        /// Its text.
        key: String,
        /// The block.
        block: String,
        /// Its declaration.
        definition: Span,
        /// Its parameters.
        params: Vec<String>,
        /// The nearest parameter.
        best: Option<String>,
    },
    /// A required block parameter not given.
    MissingParam {
        /// The instance's kind.
        span: Span,
        /// The parameter.
        key: String,
        /// The block.
        block: String,
        /// The parameter's declaration.
        definition: Span,
    },
    /// An expression without a value.
    Eval {
        /// Why.
        error: EvalError,
        /// The expression, canonical.
        text: String,
        /// The names in scope.
        names: Vec<String>,
    },
    /// A layer given a number of inputs its kind does not take.
    InputCount {
        /// The layer.
        at: Culprit,
        /// The layer kind's span.
        span: Span,
        /// "exactly 1 input", "at least 2 inputs".
        expected: String,
        /// How many it reads.
        found: usize,
    },
    /// Merge inputs that do not fit: different shapes for `add`, different height and width
    /// for `concat`, no broadcast for `mul`.
    MergeMismatch {
        /// The layer.
        at: Culprit,
        /// The layer kind's span.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// Each input: where it is named, its name and its shape.
        inputs: Vec<(Span, String, Shape)>,
        /// Each input's branch back to their common ancestor.
        branches: Vec<Branch>,
    },
    /// A block or group without entries: it has no output.
    EmptyBody {
        /// The block's name or the group.
        span: Span,
        /// "block `B`" or "this `sequential`".
        what: String,
    },
    /// An entry whose output nothing reads.
    UnusedOutput {
        /// The layer.
        span: Span,
        /// Its name.
        name: String,
    },
    /// A layer kind that does not exist.
    UnknownLayer {
        /// The kind as written.
        span: Span,
        /// Its text.
        kind: String,
        /// The layer.
        layer: String,
        /// The nearest kind's keyword or block name, if any is near.
        closest: Option<String>,
        /// The PyTorch module it names, if one cnnc lacks: its class and what it computes.
        unsupported: Option<(&'static str, &'static str)>,
    },
    /// An argument the kind does not take.
    UnknownArgument {
        /// The key.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The key as written.
        key: String,
        /// The layer.
        layer: String,
        /// The nearest argument name, if any is near.
        best: Option<&'static str>,
    },
    /// An argument given twice.
    DuplicateArgument {
        /// The second key.
        span: Span,
        /// The first key.
        first: Span,
        /// The key.
        key: String,
        /// The layer.
        layer: String,
    },
    /// A required argument left out.
    MissingArgument {
        /// The layer kind as written.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The argument.
        key: &'static str,
        /// The layer.
        layer: String,
    },
    /// An argument of the wrong type.
    WrongType {
        /// The value.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The argument.
        key: &'static str,
        /// What it must be, e.g. "an integer".
        expected: &'static str,
        /// What it is.
        found: &'static str,
        /// The length of a list given for a pair.
        list_len: Option<usize>,
        /// The layer.
        layer: String,
    },
    /// A pair holding something other than integers.
    PairItemNotInt {
        /// The item.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The argument.
        key: &'static str,
        /// What the item is.
        found: &'static str,
        /// The layer.
        layer: String,
    },
    /// A word other than `same` or `valid` for a convolution's `padding`.
    PaddingWord {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
        /// The layer.
        layer: String,
    },
    /// `padding: same` of a strided convolution.
    SamePaddingStrided {
        /// The value.
        span: Span,
        /// The `stride` argument's span.
        stride: Span,
        /// The total padding per axis `same` would need.
        total: [usize; 2],
        /// The layer.
        layer: String,
    },
    /// A convolution's `groups` that does not divide its input or output channels.
    GroupsMismatch {
        /// The layer.
        at: Culprit,
        /// The `groups` argument's span.
        span: Span,
        /// The `out_channels` argument's span, when it is that count that groups miss.
        out_channels_span: Option<Span>,
        /// `in_channels` or `out_channels`.
        arg: &'static str,
        /// Its value.
        channels: usize,
        /// The groups.
        groups: usize,
        /// The convolution's input channels.
        in_channels: usize,
        /// Its output channels.
        out_channels: usize,
    },
    /// A convolution's padding beyond what its `padding_mode` allows for the input.
    ModePaddingTooLarge {
        /// The layer.
        at: Culprit,
        /// The `padding` argument's span.
        span: Span,
        /// The `padding_mode` argument's span.
        mode_span: Span,
        /// The mode, as written.
        mode: &'static str,
        /// Whether the mode is `reflect` (else `circular`).
        reflect: bool,
        /// The input's size along the axis.
        size: usize,
        /// The padding along the axis (after the input, the larger side, for `same`).
        padding: usize,
        /// The most padding the mode allows there.
        max: usize,
        /// "height" or "width".
        dimension: &'static str,
        /// Whether the padding is written `same` (then the kernel and dilation set it).
        same: bool,
    },
    /// A number outside its argument's range (or outside it once stored as f32).
    OutOfRange {
        /// The value.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The argument.
        key: &'static str,
        /// The range's lower bound, `-UNBOUNDED` when none.
        min: f64,
        /// The range's upper bound, [`UNBOUNDED`] when none.
        max: f64,
        /// Whether `min` itself is excluded.
        min_exclusive: bool,
        /// The value written.
        value: f64,
        /// The value as stored in 32 bits, when only that is out of range.
        stored: Option<f64>,
        /// The layer.
        layer: String,
    },
    /// An integer size below its minimum.
    BelowMin {
        /// The number.
        span: Span,
        /// The argument.
        key: String,
        /// The minimum.
        min: usize,
        /// The value written.
        value: i64,
        /// The layer.
        layer: String,
    },
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
        origin: (Span, Origin),
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
    /// A word argument that is not one of its kind's options (or not a word).
    BadChoice {
        /// The value.
        span: Span,
        /// The layer kind.
        kind: LayerKind,
        /// The argument.
        key: &'static str,
        /// Its options, from the layer table.
        words: &'static [&'static str],
        /// The word written, or what was written instead of a word.
        found: Result<String, &'static str>,
        /// The layer.
        layer: String,
    },
    /// A softmax `dim` outside the batched input's dimensions, or the batch itself.
    BadDim {
        /// The layer.
        at: Culprit,
        /// The `dim` argument's span.
        span: Span,
        /// The dim as written.
        dim: i64,
        /// The per-sample input.
        input: Shape,
    },
    /// A `flatten` whose `start_dim..=end_dim` cnnc cannot represent: the batch, out of range,
    /// a start after the end, or a partial flatten that is neither `[C, H, W]` nor flat.
    FlattenDims {
        /// The layer.
        at: Culprit,
        /// The span of the argument at fault (`start_dim` or `end_dim`), or of the kind.
        span: Span,
        /// `start_dim` as written.
        start_dim: i64,
        /// `end_dim` as written.
        end_dim: i64,
        /// The per-sample input.
        input: Shape,
    },
    /// An `upsample` with neither or both of `size` and `scale_factor`, or `align_corners`
    /// with mode `nearest`.
    UpsampleArguments {
        /// The layer's name.
        layer: String,
        /// The span of the argument at fault (or of the kind when one is missing).
        span: Span,
        /// `Some(other)`: both given, `other` the span of `scale_factor`; `None`: neither, or
        /// `align_corners` with `nearest` when `align_corners` is set.
        both: Option<Span>,
        /// `align_corners` set with mode `nearest`.
        align_corners: bool,
    },
    /// A `groupnorm` whose `num_groups` does not divide its channels.
    GroupNormGroups {
        /// The layer.
        at: Culprit,
        /// The `num_groups` argument's span.
        span: Span,
        /// Its value.
        num_groups: usize,
        /// The input's channels.
        channels: usize,
    },
    /// A PReLU `num_parameters` neither 1 nor the channel (feature) count.
    PreluParameters {
        /// The layer.
        at: Culprit,
        /// The argument's span.
        span: Span,
        /// Its value.
        num_parameters: usize,
        /// The input's channels or features.
        channels: usize,
        /// "channels" or "features".
        what: &'static str,
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
        origin: (Span, Origin),
        /// How the size came about, when known.
        chain: Option<FeatureChain>,
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
    /// A transposed convolution's `output_padding` not smaller than its stride or dilation
    /// along an axis (PyTorch refuses it).
    OutputPaddingTooLarge {
        /// The layer.
        at: Culprit,
        /// The `output_padding` argument's span.
        span: Span,
        /// "height" or "width".
        axis: &'static str,
        /// `output_padding`, `stride` and `dilation` along that axis.
        output_padding: usize,
        /// The stride along that axis.
        stride: usize,
        /// The dilation along that axis.
        dilation: usize,
    },
    /// A transposed convolution whose padding cuts more than its full output along an axis.
    TransposedOutputTooSmall {
        /// The layer.
        at: Culprit,
        /// The `padding` argument's span.
        span: Span,
        /// "height" or "width".
        axis: &'static str,
        /// The input size along that axis.
        input: usize,
        /// The arguments along that axis: kernel, stride, padding, dilation, output_padding.
        window: TransposedWindow,
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
        /// "output", "weight" or "padded input".
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
            CheckError::InvalidBlockName { span, name } => Diagnostic::error(
                Code::InvalidName,
                format!("`{name}` is not a valid block name"),
                span,
                "not an identifier",
            )
            .note("a block name is a letter or `_` followed by letters, digits and `_`, like `BasicBlock`"),
            CheckError::DuplicateBlock { span, first, name } => Diagnostic::error(
                Code::DuplicateName,
                format!("two blocks are named `{name}`"),
                span,
                "declared again here",
            )
            .secondary(first, "first declared here")
            .help("rename one of the blocks"),
            CheckError::BlockShadowsKind { span, name } => Diagnostic::error(
                Code::DuplicateName,
                format!("block `{name}` has the name of a layer kind"),
                span,
                "a layer kind",
            )
            .note(format!("`{name}` in a layer list would be ambiguous"))
            .help("give the block a name of its own, like `MyBlock`"),
            CheckError::RepeatedName { span, name } => Diagnostic::error(
                Code::DuplicateName,
                format!("every copy of this repeated entry would be named `{name}`"),
                span,
                "the same name for each copy",
            )
            .help(format!(
                "put the copy's index in the name, like `{name}{{i}}` or `{name}{{i + 1}}`, or leave the name out to number the copies"
            )),
            CheckError::ExpansionTooLarge { span, layers } => Diagnostic::error(
                Code::ExpansionTooLarge,
                format!("the spec expands to more than {MAX_LAYERS} layers"),
                span,
                "the limit is reached here",
            )
            .note(format!(
                "{layers} layers had been expanded; blocks and `repeat` multiply: 4 blocks of 10 copies of 10 layers are 400"
            ))
            .help("check the `repeat` counts and how deeply blocks instantiate one another"),
            CheckError::NestingTooDeep { span } => Diagnostic::error(
                Code::ExpansionTooLarge,
                format!("blocks and groups are nested more than {MAX_NESTING} deep"),
                span,
                "too deep",
            )
            .help("ResNet and DenseNet nest three deep: a group of block instances of layers"),
            CheckError::GroupArguments { span, key } => Diagnostic::error(
                Code::UnknownArgument,
                format!("`sequential` has no argument `{key}`"),
                span,
                "unknown argument",
            )
            .note("a `sequential` takes `name`, `inputs`, `repeat` and its layers"),
            CheckError::GroupInputs { span, what, count } => Diagnostic::error(
                Code::InputCount,
                format!("`{what}` reads one input, but {count} are given"),
                span,
                "a second input",
            )
            .note("inside, `input` names the one input of the group or block")
            .help("merge the inputs first (`add`, `concat`), then feed the result"),
            CheckError::RecursiveBlock { span, name, definition, chain } => {
                let mut path = chain.clone();
                path.push(name.clone());
                Diagnostic::error(
                    Code::RecursiveBlock,
                    format!("block `{name}` instantiates itself"),
                    span,
                    "recursive instance",
                )
                .secondary(definition, format!("`{name}` is declared here"))
                .note(format!("the instances go {}", path.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(" → ")))
                .help("a block cannot contain itself, directly or through other blocks: the network would be infinite")
            }
            CheckError::BadRepeat { span, found } => {
                let diagnostic = Diagnostic::error(
                    Code::InvalidValue,
                    format!("`repeat` must be an integer from 1 to {MAX_LAYERS}, found {found}"),
                    span,
                    "not a repetition count",
                );
                if found == "0" {
                    diagnostic.help("remove the entry instead of repeating it 0 times")
                } else {
                    diagnostic.note(format!("a model has at most {MAX_LAYERS} layers"))
                }
            }
            CheckError::TemplateSyntax { error } => {
                crate::front_errors::FrontError::BadExpression { error }.render()
            }
            CheckError::SelfReference { span, name } => Diagnostic::error(
                Code::ForwardReference,
                format!("`{name}` reads its own output"),
                span,
                "a cycle",
            )
            .note("a network computes each entry from earlier ones; an entry reading itself has no value to start from")
            .help("name an earlier entry, or `input`"),
            CheckError::LaterReference { span, name, position } => Diagnostic::error(
                Code::ForwardReference,
                format!("`{name}` is defined after the entry that reads it"),
                span,
                "not yet computed here",
            )
            .note(format!("`{name}` is entry {position} of this sequence; entries read only earlier ones, so the network has no cycles"))
            .help(format!("move `{name}` before this entry")),
            CheckError::UnknownReference { span, name, best, known } => {
                let diagnostic = Diagnostic::error(
                    Code::UnknownReference,
                    format!("no entry named `{name}` in this scope"),
                    span,
                    "unknown name",
                );
                let diagnostic = if known.is_empty() {
                    diagnostic.note("nothing precedes this entry: only `input` can be read here")
                } else {
                    diagnostic.note(format!(
                        "earlier entries here: {}; `input` is the enclosing block's or group's input",
                        known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    ))
                };
                match best {
                    Some(best) => diagnostic.suggest(format!("did you mean `{best}`?"), span, best),
                    None => diagnostic.help("inputs name earlier entries of the same block or sequence, or a dotted path into one (`enc1.2`)"),
                }
            }
            CheckError::UnknownParam { span, key, block, definition, params, best } => {
                let diagnostic = Diagnostic::error(
                    Code::UnknownArgument,
                    format!("block `{block}` has no parameter `{key}`"),
                    span,
                    "unknown parameter",
                )
                .secondary(definition, format!("`{block}` is declared here"));
                let list = if params.is_empty() {
                    format!("`{block}` takes no parameters")
                } else {
                    format!("`{block}` takes {}", params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))
                };
                match best {
                    Some(best) => diagnostic.note(list).suggest(format!("did you mean `{best}`?"), span, best),
                    None => diagnostic.note(list),
                }
            }
            CheckError::MissingParam { span, key, block, definition } => Diagnostic::error(
                Code::MissingArgument,
                format!("block `{block}` needs `{key}`"),
                span,
                format!("`{key}` missing"),
            )
            .secondary(definition, "declared without a default here")
            .help(format!("give it: `{block}: {{{key}: ...}}` / `{block}({key}=...)`")),
            CheckError::Eval { error, text, names } => {
                let in_scope = if names.is_empty() {
                    "no names are in scope here".to_owned()
                } else {
                    format!("in scope: {}", names.iter().rev().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
                };
                match error {
                    EvalError::UnknownName { span, name } => {
                        let best = crate::suggest::closest(&name, names.iter().map(String::as_str)).map(str::to_owned);
                        let diagnostic = Diagnostic::error(
                            Code::BadExpressionValue,
                            format!("unknown name `{name}` in `{text}`"),
                            span,
                            "not a parameter",
                        )
                        .note(in_scope);
                        match best {
                            Some(best) => diagnostic.suggest(format!("did you mean `{best}`?"), span, best),
                            None => diagnostic.help("expressions use the block's parameters and `i`, the copy's index under `repeat`"),
                        }
                    }
                    EvalError::NotInteger { span, name, found } => Diagnostic::error(
                        Code::BadExpressionValue,
                        format!("`{name}` is {found}, not an integer, in `{text}`"),
                        span,
                        found.to_owned(),
                    )
                    .note("arithmetic works on integers only"),
                    EvalError::DivisionByZero { span, divisor } => Diagnostic::error(
                        Code::BadExpressionValue,
                        format!("division by zero in `{text}`"),
                        span,
                        "divides by zero",
                    )
                    .secondary(divisor, "this is 0"),
                    EvalError::Overflow { span } => Diagnostic::error(
                        Code::BadExpressionValue,
                        format!("`{text}` overflows 64-bit integers"),
                        span,
                        "too large",
                    ),
                }
            }
            CheckError::InputCount { at, span, expected, found } => Diagnostic::error(
                Code::InputCount,
                format!("{} takes {expected}, but reads {found}", at.title),
                span,
                format!("{found} input{}", if found == 1 { "" } else { "s" }),
            )
            .help(if found == 1 {
                "name its inputs: `inputs: [a, b]` / `add(a, b)`".to_owned()
            } else {
                "a layer other than a merge reads one input: merge them first with `add` or `concat`".to_owned()
            })
            .layer(at.name),
            CheckError::MergeMismatch { at, span, kind, inputs, branches } => {
                let shapes = inputs.iter().map(|(_, _, s)| s.to_string()).collect::<Vec<_>>().join(" and ");
                let (message, note) = match kind {
                    LayerKind::Concat => (
                        format!("{} joins inputs of different heights and widths: {shapes}", at.title),
                        "concat stacks channels: every input must have the same height and width (and rank)",
                    ),
                    LayerKind::Mul => (
                        format!("{} multiplies inputs that do not broadcast: {shapes}", at.title),
                        "each dimension must be equal or 1 in one of them, as in PyTorch: [C, 1, 1] × [C, H, W]",
                    ),
                    _ => (
                        format!("{} adds inputs of different shapes: {shapes}", at.title),
                        "add sums element by element: every input must have the same shape",
                    ),
                };
                let mut diagnostic = Diagnostic::error(Code::MergeMismatch, message, span, "inputs do not fit");
                for (input_span, name, shape) in &inputs {
                    diagnostic = diagnostic.secondary(*input_span, format!("`{name}` is {shape}"));
                }
                diagnostic = diagnostic.note(note);
                for (i, branch) in branches.iter().enumerate() {
                    diagnostic = diagnostic.note(format!("input {}: {}", i + 1, branch.text()));
                }
                let help = match kind {
                    LayerKind::Concat => "resize one branch (a stride, a pool or padding) so the heights and widths agree",
                    _ => "project the shortcut (a 1x1 conv2d with the same stride, then batchnorm2d) to the other branch's shape",
                };
                diagnostic.help(help).layer(at.name)
            }
            CheckError::EmptyBody { span, what } => Diagnostic::error(
                Code::BadStructure,
                format!("{what} has no layers"),
                span,
                "empty",
            )
            .note("a block's or group's output is its last entry's, so it needs at least one")
            .help("add its layers, or remove it"),
            CheckError::UnusedOutput { span, name } => Diagnostic::new(
                Code::UnusedOutput,
                format!("the output of `{name}` is never used"),
                span,
                "computed, then dropped",
            )
            .note("only the last entry's output leaves the network; nothing reads this one")
            .help("read it (`inputs: [...]`), or remove the entry"),
            CheckError::UnknownLayer { span, kind, layer, closest, unsupported } => {
                let diagnostic = Diagnostic::error(
                    Code::UnknownLayer,
                    format!("unknown layer kind `{kind}`"),
                    span,
                    "not a layer kind",
                )
                .layer(layer);
                match (closest, unsupported) {
                    // A PyTorch module cnnc lacks: the nearest spelling computes something else.
                    (closest, Some((class, what))) => {
                        let diagnostic = diagnostic.note(format!(
                            "`{kind}` is PyTorch's `{class}`, which {what}; cnnc does not support it yet"
                        ));
                        match closest.as_deref().and_then(LayerKind::from_keyword) {
                            Some(near) => diagnostic.note(format!(
                                "`{}` is not a substitute: it computes {}",
                                near.keyword(),
                                near.computes()
                            )),
                            None => diagnostic,
                        }
                    }
                    (Some(best), None) => {
                        diagnostic.suggest(format!("did you mean `{best}`?"), span, best)
                    }
                    (None, None) => diagnostic.note(format!(
                        "the layer kinds are {}",
                        LayerKind::ALL
                            .map(|k| format!("`{}`", k.keyword()))
                            .join(", ")
                    )),
                }
            }
            CheckError::UnknownArgument { span, kind, key, layer, best } => {
                let diagnostic = Diagnostic::error(
                    Code::UnknownArgument,
                    format!("`{}` has no argument `{key}`", kind.keyword()),
                    span,
                    "unknown argument",
                )
                .layer(layer);
                let spec = kind.args();
                let upsample = kind == LayerKind::Upsample && key == "recompute_scale_factor";
                let diagnostic = if upsample {
                    diagnostic.note(
                        "cnnc's scale factors are integers, so there is nothing to recompute; \
                         for other ratios give `size`",
                    )
                } else {
                    diagnostic
                };
                match best {
                    Some(best) => diagnostic.suggest(format!("did you mean `{best}`?"), span, best),
                    None if spec.is_empty() => diagnostic.note(format!(
                        "`{}` takes no arguments other than `name`",
                        kind.keyword()
                    )),
                    None => diagnostic.note(format!(
                        "`{}` takes {}",
                        kind.keyword(),
                        spec.iter()
                            .map(|s| format!("`{}`", s.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            CheckError::DuplicateArgument { span, first, key, layer } => Diagnostic::error(
                Code::DuplicateArgument,
                format!("argument `{key}` is given twice"),
                span,
                "given again here",
            )
            .secondary(first, "first given here")
            .layer(layer),
            CheckError::MissingArgument { span, kind, key, layer } => Diagnostic::error(
                Code::MissingArgument,
                format!("`{}` needs `{key}`", kind.keyword()),
                span,
                format!("`{key}` missing"),
            )
            .help(format!("add `{key}`, e.g. `{key}: {}`", example(key)))
            .layer(layer),
            CheckError::WrongType { span, kind, key, expected, found, list_len, layer } => {
                let diagnostic = Diagnostic::error(
                    Code::WrongType,
                    format!("`{key}` of `{}` must be {expected}, found {found}", kind.keyword()),
                    span,
                    format!("expected {expected}"),
                )
                .layer(layer);
                match list_len {
                    Some(len) => {
                        diagnostic.note(format!("found a list of {len} values; a pair has 2"))
                    }
                    None => diagnostic,
                }
            }
            CheckError::PairItemNotInt { span, kind, key, found, layer } => Diagnostic::error(
                Code::WrongType,
                format!("`{key}` of `{}` must hold integers, found {found}", kind.keyword()),
                span,
                "expected an integer",
            )
            .layer(layer),
            CheckError::PaddingWord { span, found, layer } => CheckError::WrongType {
                span,
                kind: LayerKind::Conv2d,
                key: "padding",
                expected: "an integer or a [height, width] pair",
                found,
                list_len: None,
                layer,
            }
            .render()
            .note("PyTorch's padding modes `same` and `valid` are the words it also takes"),
            CheckError::SamePaddingStrided { span, stride, total, layer } => Diagnostic::error(
                Code::InvalidValue,
                "`padding: same` of `conv2d` needs stride 1",
                span,
                "not supported for strided convolutions",
            )
            .secondary(stride, "stride above 1")
            .note("PyTorch refuses padding='same' for strided convolutions: the output could not keep the input's size")
            .help(format!(
                "write the padding in pixels, e.g. `padding: [{}, {}]`",
                total[0] / 2,
                total[1] / 2
            ))
            .layer(layer),
            CheckError::GroupsMismatch {
                at,
                span,
                out_channels_span,
                arg,
                channels,
                groups,
                in_channels,
                out_channels,
            } => {
                let common = gcd(in_channels, out_channels);
                let depthwise = if out_channels.is_multiple_of(in_channels) {
                    format!("; depthwise is `groups: {in_channels}`")
                } else {
                    String::new()
                };
                let mut diagnostic = Diagnostic::error(
                    Code::GroupsMismatch,
                    format!(
                        "`groups` of {} is {groups}, which does not divide its {arg} ({channels})",
                        at.title
                    ),
                    span,
                    format!("{arg} {channels} is not a multiple of {groups}"),
                );
                if let Some(out_span) = out_channels_span {
                    diagnostic = diagnostic.secondary(out_span, format!("out_channels is {channels}"));
                }
                diagnostic
                    .note(format!(
                        "each of the {groups} groups convolves in_channels / groups input channels into out_channels / groups output channels"
                    ))
                    .help(format!(
                        "use a `groups` that divides both {in_channels} and {out_channels}: a divisor of {common}{depthwise}"
                    ))
                    .layer(at.name)
            }
            CheckError::ModePaddingTooLarge {
                at,
                span,
                mode_span,
                mode,
                reflect,
                size,
                padding,
                max,
                dimension,
                same,
            } => {
                let rule = if reflect {
                    "reflect padding mirrors the input without repeating its edge, so it must be smaller than the input"
                } else {
                    "circular padding wraps the input around once, so it may not exceed the input"
                };
                Diagnostic::error(
                    Code::ModePaddingTooLarge,
                    format!(
                        "the padding of {} is too large for `padding_mode: {mode}` over an input {size} pixels in {dimension}",
                        at.title
                    ),
                    span,
                    format!("padding {padding} > {max}"),
                )
                .secondary(mode_span, format!("padding_mode is {mode}"))
                .note(format!("{rule} (PyTorch refuses it too); the input's {dimension} is {size}"))
                .help(if same {
                    format!(
                        "`same` pads dilation * (kernel_size - 1) in all, the larger half after the input: use a smaller kernel_size or dilation along the {dimension}, or `padding_mode: replicate`"
                    )
                } else {
                    format!(
                        "use at most `padding: {max}` along the {dimension}, or `padding_mode: replicate`"
                    )
                })
                .layer(at.name)
            }
            CheckError::OutOfRange {
                span,
                kind,
                key,
                min,
                max,
                min_exclusive,
                value,
                stored,
                layer,
            } => {
                let range = match (min_exclusive, max == UNBOUNDED, min == -UNBOUNDED) {
                    (_, true, true) => "a finite number".to_owned(),
                    (true, true, false) => format!("greater than {min}"),
                    (false, true, false) => format!("at least {min}"),
                    _ => format!("between {min} and {max}"),
                };
                let diagnostic = Diagnostic::error(
                    Code::InvalidValue,
                    format!(
                        "`{key}` of `{}` must be {range}, found {}",
                        kind.keyword(),
                        number(value)
                    ),
                    span,
                    format!("must be {range}"),
                )
                .layer(layer);
                match stored {
                    Some(stored) => diagnostic.note(format!(
                        "cnnc computes in 32-bit floats, where {} is {}",
                        number(value),
                        number(stored)
                    )),
                    None => diagnostic,
                }
            }
            CheckError::BelowMin { span, key, min, value, layer } => {
                let diagnostic = Diagnostic::error(
                    Code::InvalidValue,
                    format!("`{key}` must be at least {min}, found {value}"),
                    span,
                    format!("must be at least {min}"),
                )
                .layer(layer);
                if key == "stride" {
                    diagnostic.note("a stride of 0 would never move the window")
                } else {
                    diagnostic
                }
            }
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
                .secondary(origin.0, origin.1.text())
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
            CheckError::BadChoice { span, kind, key, words, found, layer } => {
                let one_of = words
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let keyword = kind.keyword();
                match found {
                    Ok(word) => Diagnostic::error(
                        Code::InvalidValue,
                        format!("`{key}` of `{keyword}` must be {one_of}, found `{word}`"),
                        span,
                        format!("must be {one_of}"),
                    ),
                    Err(what) => Diagnostic::error(
                        Code::WrongType,
                        format!("`{key}` of `{keyword}` must be {one_of}, found {what}"),
                        span,
                        format!("expected {one_of}"),
                    ),
                }
                .layer(layer)
            }
            CheckError::BadDim { at, span, dim, input } => {
                let rank = cnnc_core::config::batched_rank(input) as i64;
                let (batched, help) = match input {
                    Shape::Flat(n) => (format!("[N, {n}]"), "use `dim: 1` (or -1), the features".to_owned()),
                    Shape::Chw([c, h, w]) => (
                        format!("[N, {c}, {h}, {w}]"),
                        "use a dim from 1 to 3: 1 (or -3) the channels, 2 (or -2) the height, 3 (or -1) the width"
                            .to_owned(),
                    ),
                };
                let diagnostic = if dim == 0 || dim == -rank {
                    Diagnostic::error(
                        Code::BadDim,
                        format!("`dim` of {} is {dim}, the batch dimension of its input {batched}", at.title),
                        span,
                        "the batch dimension",
                    )
                    .note("cnnc runs each sample through the layer on its own, so it cannot normalise across the batch")
                } else {
                    Diagnostic::error(
                        Code::BadDim,
                        format!("`dim` of {} is {dim}, but its input {batched} has dims 0 to {}", at.title, rank - 1),
                        span,
                        "out of range",
                    )
                    .note(format!(
                        "dims count the batch and negative ones count from the end, as in PyTorch: -1 is dim {}",
                        rank - 1
                    ))
                };
                diagnostic.help(help).layer(at.name)
            }
            CheckError::FlattenDims { at, span, start_dim, end_dim, input } => {
                flatten_dims(at, span, [start_dim, end_dim], input)
            }
            CheckError::UpsampleArguments { layer, span, both, align_corners } => {
                let diagnostic = if align_corners {
                    Diagnostic::error(
                        Code::UpsampleArguments,
                        "`upsample` sets `align_corners` with mode `nearest`",
                        span,
                        "only for bilinear",
                    )
                    .note("align_corners says how bilinear interpolation lines up the corner pixels; PyTorch refuses it with nearest")
                    .help("remove `align_corners`, or use `mode: bilinear`")
                } else if let Some(other) = both {
                    Diagnostic::error(
                        Code::UpsampleArguments,
                        "`upsample` gives both `size` and `scale_factor`",
                        span,
                        "size given here",
                    )
                    .secondary(other, "and scale_factor here")
                    .note("the output size comes from one of them; PyTorch refuses both")
                    .help("keep one: `size` for an exact output, `scale_factor` for a multiple of the input")
                } else {
                    Diagnostic::error(
                        Code::UpsampleArguments,
                        "`upsample` gives neither `size` nor `scale_factor`",
                        span,
                        "no output size",
                    )
                    .help("add `scale_factor: 2` (an integer, or [h, w]) or `size: [h, w]`")
                };
                diagnostic.layer(layer)
            }
            CheckError::GroupNormGroups { at, span, num_groups, channels } => {
                let divisors: Vec<String> =
                    (1..=channels).filter(|d| channels.is_multiple_of(*d)).map(|d| d.to_string()).collect();
                let help = match divisors.len() {
                    n if n <= 8 => format!("use a `num_groups` that divides {channels}: {}", divisors.join(", ")),
                    _ => format!("use a `num_groups` that divides {channels}, such as 1, 2 or {channels}"),
                };
                Diagnostic::error(
                    Code::GroupsMismatch,
                    format!("`num_groups` of {} is {num_groups}, which does not divide its {channels} channels", at.title),
                    span,
                    format!("{channels} channels are not a multiple of {num_groups}"),
                )
                .note("GroupNorm splits the channels into num_groups groups of equal size, each normalised on its own; PyTorch requires num_channels divisible by num_groups")
                .help(help)
                .layer(at.name)
            }
            CheckError::PreluParameters { at, span, num_parameters, channels, what } => Diagnostic::error(
                Code::SizeMismatch,
                format!("`num_parameters` of {} is {num_parameters}, but its input has {channels} {what}", at.title),
                span,
                format!("expected 1 or {channels}"),
            )
            .note("PReLU learns one slope shared by all channels, or one per channel")
            .help(format!("use `num_parameters: {channels}`, or 1"))
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
            .secondary(origin.0, origin.1.text())
            .note(chain.map_or_else(
                || format!("the input of {} is {input}", at.title),
                |chain| chain.text(),
            ))
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
                        input + window.padding.total()
                    ),
                )
                .note(format!("output {axis} = {} = {output}", formula(&window, input)))
                .help("use a smaller kernel, stride or dilation, or more padding")
                .layer(at.name)
            }
            CheckError::OutputPaddingTooLarge {
                at,
                span,
                axis,
                output_padding: op,
                stride: s,
                dilation: d,
            } => Diagnostic::error(
                Code::InvalidValue,
                format!(
                    "the output_padding of {} is not smaller than its stride or dilation",
                    at.title
                ),
                span,
                format!("{op} >= stride {s} and >= dilation {d} ({axis})"),
            )
            .note("PyTorch requires output_padding < stride or output_padding < dilation on each axis")
            .help(format!("use at most `output_padding: {}`", s.max(d) - 1))
            .layer(at.name),
            CheckError::TransposedOutputTooSmall { at, span, axis, input, window: w, output } => {
                Diagnostic::error(
                    Code::OutputTooSmall,
                    format!("{} would output a {axis} of {output}", at.title),
                    span,
                    "the padding cuts more than the full output",
                )
                .note(format!(
                    "output {axis} = ({input} - 1)*{} - 2*{} + {}*({} - 1) + {} + 1 = {output}",
                    w.stride, w.padding, w.dilation, w.kernel, w.output_padding
                ))
                .help("use less padding, or a larger kernel or stride")
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

/// A number as messages show it: as written when short, else in exponent form (`1e300`).
fn number(v: f64) -> String {
    let plain = v.to_string();
    if plain.len() > 16 {
        format!("{v:e}")
    } else {
        plain
    }
}

/// A plausible value for a required argument, for help lines.
fn example(key: &str) -> &'static str {
    match key {
        "kernel_size" => "3",
        "out_channels" => "32",
        "out_features" => "10",
        "scale_factor" => "2",
        _ => "1",
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
        "{rounding}(({input} + {} - {}*({}-1) - 1) / {}) + 1",
        window.padding, window.dilation, window.kernel, window.stride
    )
}

/// Greatest common divisor (Euclid's).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Words a `flatten` whose dims cnnc cannot represent ([`CheckError::FlattenDims`]).
fn flatten_dims(at: Culprit, span: Span, [start, end]: [i64; 2], input: Shape) -> Diagnostic {
    let rank = cnnc_core::config::batched_rank(input);
    let dims: Vec<String> = std::iter::once("N".to_owned())
        .chain(input.dims().iter().map(|d| d.to_string()))
        .collect();
    let batched = format!("[{}]", dims.join(", "));
    let resolved = |d: i64| {
        if d < 0 {
            d.saturating_add(rank as i64)
        } else {
            d
        }
    };
    let (s, e) = (resolved(start), resolved(end));
    let range = |d: i64| (0..rank as i64).contains(&d);
    let rule = "cnnc's layers take [C, H, W] images or flat [features] per sample, so a flatten \
                must flatten all of dims 1 to the last (the default) or a single dim (which \
                changes nothing)";
    let (message, label, note) = if !range(s) || !range(e) {
        let (which, d) = if range(s) {
            ("end_dim", end)
        } else {
            ("start_dim", start)
        };
        (
            format!(
                "`{which}` of {} is {d}, but its input {batched} has dims 0 to {}",
                at.title,
                rank - 1
            ),
            "out of range".to_owned(),
            format!(
                "dims count the batch and negative ones count from the end, as in PyTorch: -1 is dim {}",
                rank - 1
            ),
        )
    } else if s == 0 {
        (
            format!(
                "{} would flatten the batch dimension of its input {batched}",
                at.title
            ),
            "flattens the batch".to_owned(),
            "cnnc runs each sample through the layer on its own, so it cannot merge samples"
                .to_owned(),
        )
    } else if s > e {
        (
            format!(
                "{} has `start_dim` {start} after its `end_dim` {end}",
                at.title
            ),
            format!("dim {s} is after dim {e}"),
            "PyTorch refuses it too: start_dim cannot come after end_dim".to_owned(),
        )
    } else {
        let merged = dims[s as usize..=e as usize].join("*");
        let mut shape: Vec<String> = dims[..s as usize].to_vec();
        shape.push(merged);
        shape.extend(dims[e as usize + 1..].iter().cloned());
        (
            format!(
                "{} would reshape its input {batched} into [{}]",
                at.title,
                shape.join(", ")
            ),
            "a partial flatten".to_owned(),
            rule.to_owned(),
        )
    };
    let help = match input {
        Shape::Chw(_) => "leave out `start_dim` and `end_dim` to flatten C, H and W into features",
        Shape::Flat(_) => "the input is already flat: remove this layer",
    };
    Diagnostic::error(Code::FlattenDims, message, span, label)
        .note(note)
        .help(help)
        .layer(at.name)
}
