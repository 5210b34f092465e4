//! The layer table: every layer kind once, with its spelling in specs, its PyTorch class, its
//! arguments as data (what the checker types, what summaries, completion and schemas read) and
//! how it is initialised. A kind's shape rule, tensors and mult-adds sit beside its resolved
//! arguments in [`crate::config`].

use crate::config::Pair;

/// The layer kinds a spec can use, each a PyTorch module. Rust names follow PyTorch's classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// `torch.nn.Conv2d`.
    Conv2d,
    /// `torch.nn.MaxPool2d`.
    MaxPool2d,
    /// `torch.nn.AvgPool2d`.
    AvgPool2d,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.LeakyReLU`.
    LeakyRelu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.Tanh`.
    Tanh,
    /// `torch.nn.Flatten` (C, H, W order; `start_dim`, `end_dim`).
    Flatten,
    /// `torch.nn.Linear`.
    Linear,
    /// `torch.nn.Dropout`.
    Dropout,
    /// `torch.nn.BatchNorm2d`.
    BatchNorm2d,
    /// `torch.nn.AdaptiveAvgPool2d`.
    AdaptiveAvgPool2d,
    /// `torch.nn.AdaptiveMaxPool2d`.
    AdaptiveMaxPool2d,
    /// `torch.nn.Upsample` (modes `nearest` and `bilinear`; `size` or an integer
    /// `scale_factor`).
    Upsample,
    /// `torch.nn.ConvTranspose2d`.
    ConvTranspose2d,
    /// `torch.nn.ReLU6`.
    Relu6,
    /// `torch.nn.SiLU`.
    Silu,
    /// `torch.nn.GELU` (approximate='none').
    Gelu,
    /// `torch.nn.Hardswish`.
    Hardswish,
    /// `torch.nn.Hardsigmoid`.
    Hardsigmoid,
    /// `torch.nn.ELU`.
    Elu,
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Dropout2d`.
    Dropout2d,
    /// `torch.nn.Softmax`.
    Softmax,
    /// `torch.nn.LogSoftmax`.
    LogSoftmax,
    /// `torch.nn.PReLU`.
    Prelu,
    /// `torch.add` (`a + b + ...`): the sum of inputs of one shape.
    Add,
    /// `torch.cat(dim=1)`: the inputs joined along the channels (features).
    Concat,
    /// `torch.mul` (`a * b`): the product of two inputs, broadcast as PyTorch does.
    Mul,
    /// `torch.nn.GroupNorm`.
    GroupNorm,
}

/// How many inputs a layer kind reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many (every single-input layer: 1).
    Exactly(usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    /// Whether a layer of this arity may read `count` inputs.
    pub const fn accepts(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::AtLeast(n) => count >= n,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exactly(1) => write!(f, "exactly 1 input"),
            Arity::Exactly(n) => write!(f, "exactly {n} inputs"),
            Arity::AtLeast(n) => write!(f, "at least {n} inputs"),
        }
    }
}

/// The type and allowed range of an argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgType {
    /// An integer size, at least `min`.
    Size {
        /// Smallest allowed value.
        min: usize,
    },
    /// An integer or `[h, w]` pair, each at least `min`.
    Pair {
        /// Smallest allowed value of each.
        min: usize,
    },
    /// A number within `min..=max`; `min_exclusive` excludes `min` itself.
    Float {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Whether `min` itself is refused.
        min_exclusive: bool,
    },
    /// `true` / `false`.
    Bool,
    /// A dimension of the batched tensor `[N, ...]`, PyTorch's `dim`: negative counts from the
    /// end; its range depends on the input's rank and is checked with the shape.
    Dim,
    /// One of these words (PyTorch's string options, `approximate='tanh'`).
    Choice(&'static [&'static str]),
    /// This type, or `null` (PyTorch's `None`: `momentum=None`, `divisor_override=None`).
    Optional(&'static ArgType),
}

/// What an argument is when a spec leaves it out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgDefault {
    /// The spec must write it.
    Required,
    /// Inferred from the layer's input (`in_channels`, `in_features`, `num_features`).
    Inferred,
    /// This integer, or this value on both axes of a pair.
    Int(usize),
    /// The value of another argument of the layer (a pool's `stride` is its `kernel_size`).
    SameAs(&'static str),
    /// This number.
    Float(f64),
    /// This boolean.
    Bool(bool),
    /// This dimension (PyTorch's `dim`, possibly negative).
    Dim(i64),
    /// This word of a [`ArgType::Choice`].
    Word(&'static str),
    /// `null`, PyTorch's `None`, of an [`ArgType::Optional`].
    None,
}

/// One argument of a layer kind, with PyTorch's name, type and default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArgInfo {
    /// Its name (PyTorch's).
    pub name: &'static str,
    /// Its type and range.
    pub ty: ArgType,
    /// Its value when left out.
    pub default: ArgDefault,
    /// What it means, in one line.
    pub doc: &'static str,
}

impl ArgInfo {
    /// Whether a spec must write it.
    pub const fn is_required(&self) -> bool {
        matches!(self.default, ArgDefault::Required)
    }

    /// Whether it is inferred from the input when left out.
    pub const fn is_inferred(&self) -> bool {
        matches!(self.default, ArgDefault::Inferred)
    }
}

/// A typed argument value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue {
    /// An integer size.
    Int(usize),
    /// A `[h, w]` pair.
    Pair(Pair),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A dimension of the batched tensor, possibly negative.
    Dim(i64),
    /// A word of a [`ArgType::Choice`], as the table spells it.
    Word(&'static str),
    /// `null`, PyTorch's `None`, of an [`ArgType::Optional`].
    None,
}

/// How a kind's parameters and buffers start out (the runtime holds the numeric code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// No parameters and no random numbers.
    None,
    /// PyTorch's default for `Conv2d` and `Linear`: weight, then bias, from
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, drawn in layer order from the model's init stream.
    FanInUniform,
    /// Constants: `BatchNorm2d`'s and `GroupNorm`'s weight 1, bias 0, running mean 0, running
    /// variance 1, no batches tracked; `PReLU`'s slopes 0.25.
    Constant,
    /// No parameters; training masks come from the layer's own stream, seeded by its position.
    DropoutStream,
}

/// The input a kind works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `[C, H, W]` images; an inferred size is the channel count.
    Image,
    /// Flat `[features]`; an inferred size is the feature count.
    Flat,
    /// Either, elementwise.
    Any,
}

/// One entry of the layer table.
#[derive(Clone, Copy, Debug)]
pub struct KindInfo {
    /// The kind.
    pub kind: LayerKind,
    /// Spelling in specs (`maxpool2d`).
    pub keyword: &'static str,
    /// PyTorch class name (`MaxPool2d`), as torchinfo prints it.
    pub torch_name: &'static str,
    /// The runtime's layer struct (`cnnc_runtime::layers::MaxPool2d`), which generated code
    /// names: the kind's Rust name.
    pub layer_type: &'static str,
    /// The input it works on (each of its inputs, for a merge kind).
    pub input: Input,
    /// How many inputs it reads.
    pub arity: Arity,
    /// Arguments, in PyTorch's order (`name` is every layer's and not listed).
    pub args: &'static [ArgInfo],
    /// How its tensors start out.
    pub init: Init,
    /// What it computes, in a few words (for messages, completion and schemas).
    pub computes: &'static str,
}

const fn arg(name: &'static str, ty: ArgType, default: ArgDefault, doc: &'static str) -> ArgInfo {
    ArgInfo {
        name,
        ty,
        default,
        doc,
    }
}

const UNBOUNDED: f64 = f64::MAX;
const SIZE: ArgType = ArgType::Size { min: 1 };
const PAIR: ArgType = ArgType::Pair { min: 1 };
const PADDING: ArgType = ArgType::Pair { min: 0 };
const PROBABILITY: ArgType = ArgType::Float {
    min: 0.0,
    max: 1.0,
    min_exclusive: false,
};

const KERNEL_SIZE: ArgInfo = arg(
    "kernel_size",
    PAIR,
    ArgDefault::Required,
    "window size, an integer or [h, w]",
);
const POOL_STRIDE: ArgInfo = arg(
    "stride",
    PAIR,
    ArgDefault::SameAs("kernel_size"),
    "step between windows (default: kernel_size)",
);
const POOL_PADDING: ArgInfo = arg(
    "padding",
    PADDING,
    ArgDefault::Int(0),
    "implicit padding on each side (at most half the kernel_size)",
);
const CEIL_MODE: ArgInfo = arg(
    "ceil_mode",
    ArgType::Bool,
    ArgDefault::Bool(false),
    "round the output size up instead of down",
);

// The arguments `conv2d` and `conv_transpose2d` share, as PyTorch's `_ConvNd` does.
const CONV_IN_CHANNELS: ArgInfo = arg(
    "in_channels",
    SIZE,
    ArgDefault::Inferred,
    "input channels (inferred from the input)",
);
const CONV_OUT_CHANNELS: ArgInfo = arg(
    "out_channels",
    SIZE,
    ArgDefault::Required,
    "output channels",
);
const CONV_KERNEL_SIZE: ArgInfo = arg(
    "kernel_size",
    PAIR,
    ArgDefault::Required,
    "kernel size, an integer or [h, w]",
);
const CONV_DILATION: ArgInfo = arg(
    "dilation",
    PAIR,
    ArgDefault::Int(1),
    "spacing between kernel elements",
);
/// The convolutions' and `linear`'s `bias`.
const BIAS: ArgInfo = arg(
    "bias",
    ArgType::Bool,
    ArgDefault::Bool(true),
    "whether the layer adds a learnable bias",
);

/// `MaxPool2d`'s arguments, in its order (`return_indices` is not one: cnnc keeps the
/// positions itself).
const MAXPOOL2D: &[ArgInfo] = &[
    KERNEL_SIZE,
    POOL_STRIDE,
    POOL_PADDING,
    arg(
        "dilation",
        PAIR,
        ArgDefault::Int(1),
        "spacing between window elements",
    ),
    CEIL_MODE,
];

/// `AvgPool2d`'s arguments, in its order.
const AVGPOOL2D: &[ArgInfo] = &[
    KERNEL_SIZE,
    POOL_STRIDE,
    POOL_PADDING,
    CEIL_MODE,
    arg(
        "count_include_pad",
        ArgType::Bool,
        ArgDefault::Bool(true),
        "divide by the window's size including its padding (false: only the input pixels it covers)",
    ),
    arg(
        "divisor_override",
        ArgType::Optional(&SIZE),
        ArgDefault::None,
        "divide every window's sum by this instead (null: by the window's size)",
    ),
];

const SOFTMAX: &[ArgInfo] = &[arg(
    "dim",
    ArgType::Dim,
    ArgDefault::Dim(1),
    "dimension of [N, ...] to normalise along (default 1, the channels or features, PyTorch's \
     implicit choice)",
)];

/// The layer table, in documentation order.
pub const TABLE: [KindInfo; 30] = [
    KindInfo {
        kind: LayerKind::Conv2d,
        keyword: "conv2d",
        torch_name: "Conv2d",
        layer_type: "Conv2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[
            CONV_IN_CHANNELS,
            CONV_OUT_CHANNELS,
            CONV_KERNEL_SIZE,
            arg(
                "stride",
                PAIR,
                ArgDefault::Int(1),
                "step between kernel positions",
            ),
            arg(
                "padding",
                PADDING,
                ArgDefault::Int(0),
                "padding on each side, or same (stride 1: the output keeps the input's size; an odd total pads the extra pixel on the bottom and right) or valid (none)",
            ),
            CONV_DILATION,
            arg(
                "groups",
                SIZE,
                ArgDefault::Int(1),
                "blocked connections: in and out channels split into this many groups (depthwise when groups = in_channels)",
            ),
            BIAS,
            arg(
                "padding_mode",
                ArgType::Choice(&["zeros", "reflect", "replicate", "circular"]),
                ArgDefault::Word("zeros"),
                "what the padding holds: zeros, the input reflected, its edge repeated, or wrapped around",
            ),
        ],
        init: Init::FanInUniform,
        computes: "a 2-D convolution of [C, H, W] images",
    },
    KindInfo {
        kind: LayerKind::MaxPool2d,
        keyword: "maxpool2d",
        torch_name: "MaxPool2d",
        layer_type: "MaxPool2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: MAXPOOL2D,
        init: Init::None,
        computes: "the maximum of each window",
    },
    KindInfo {
        kind: LayerKind::AvgPool2d,
        keyword: "avgpool2d",
        torch_name: "AvgPool2d",
        layer_type: "AvgPool2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: AVGPOOL2D,
        init: Init::None,
        computes: "the mean of each window",
    },
    KindInfo {
        kind: LayerKind::Relu,
        keyword: "relu",
        torch_name: "ReLU",
        layer_type: "Relu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "max(x, 0) of each element",
    },
    KindInfo {
        kind: LayerKind::LeakyRelu,
        keyword: "leaky_relu",
        torch_name: "LeakyReLU",
        layer_type: "LeakyRelu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[arg(
            "negative_slope",
            ArgType::Float {
                min: -UNBOUNDED,
                max: UNBOUNDED,
                min_exclusive: false,
            },
            ArgDefault::Float(0.01),
            "slope for negative inputs",
        )],
        init: Init::None,
        computes: "x, or negative_slope * x where x < 0",
    },
    KindInfo {
        kind: LayerKind::Sigmoid,
        keyword: "sigmoid",
        torch_name: "Sigmoid",
        layer_type: "Sigmoid",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "1 / (1 + exp(-x)) of each element",
    },
    KindInfo {
        kind: LayerKind::Tanh,
        keyword: "tanh",
        torch_name: "Tanh",
        layer_type: "Tanh",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "tanh(x) of each element",
    },
    KindInfo {
        kind: LayerKind::Flatten,
        keyword: "flatten",
        torch_name: "Flatten",
        layer_type: "Flatten",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[
            arg(
                "start_dim",
                ArgType::Dim,
                ArgDefault::Dim(1),
                "first dimension of [N, ...] to flatten (default 1: everything but the batch)",
            ),
            arg(
                "end_dim",
                ArgType::Dim,
                ArgDefault::Dim(-1),
                "last dimension of [N, ...] to flatten (default -1, the last)",
            ),
        ],
        init: Init::None,
        computes: "[C, H, W] as [C*H*W] features (dims start_dim to end_dim of [N, ...] merged)",
    },
    KindInfo {
        kind: LayerKind::Linear,
        keyword: "linear",
        torch_name: "Linear",
        layer_type: "Linear",
        input: Input::Flat,
        arity: Arity::Exactly(1),
        args: &[
            arg(
                "in_features",
                SIZE,
                ArgDefault::Inferred,
                "input features (inferred from the input)",
            ),
            arg(
                "out_features",
                SIZE,
                ArgDefault::Required,
                "output features",
            ),
            BIAS,
        ],
        init: Init::FanInUniform,
        computes: "an affine map of flat features",
    },
    KindInfo {
        kind: LayerKind::Dropout,
        keyword: "dropout",
        torch_name: "Dropout",
        layer_type: "Dropout",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[arg(
            "p",
            PROBABILITY,
            ArgDefault::Float(0.5),
            "probability of zeroing an element in training",
        )],
        init: Init::DropoutStream,
        computes: "its input with single elements zeroed at probability p in training",
    },
    KindInfo {
        kind: LayerKind::BatchNorm2d,
        keyword: "batchnorm2d",
        torch_name: "BatchNorm2d",
        layer_type: "BatchNorm2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[
            arg(
                "num_features",
                SIZE,
                ArgDefault::Inferred,
                "channels (inferred from the input)",
            ),
            arg(
                "eps",
                ArgType::Float {
                    min: 0.0,
                    max: UNBOUNDED,
                    min_exclusive: true,
                },
                ArgDefault::Float(1e-5),
                "added to the variance for numerical stability",
            ),
            arg(
                "momentum",
                ArgType::Optional(&PROBABILITY),
                ArgDefault::Float(0.1),
                "running statistics update factor; null for a cumulative average over all batches",
            ),
            arg(
                "affine",
                ArgType::Bool,
                ArgDefault::Bool(true),
                "whether the layer has a learnable per-channel weight and bias",
            ),
            arg(
                "track_running_stats",
                ArgType::Bool,
                ArgDefault::Bool(true),
                "whether the layer keeps running statistics for eval (else it uses batch statistics in eval too)",
            ),
        ],
        init: Init::Constant,
        computes: "each channel normalised by its batch statistics in training, its running ones in eval",
    },
    KindInfo {
        kind: LayerKind::AdaptiveAvgPool2d,
        keyword: "adaptive_avg_pool2d",
        torch_name: "AdaptiveAvgPool2d",
        layer_type: "AdaptiveAvgPool2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[arg(
            "output_size",
            PAIR,
            ArgDefault::Required,
            "output height and width, an integer or [h, w]",
        )],
        init: Init::None,
        computes: "the mean of each of output_size windows spread over the input",
    },
    KindInfo {
        kind: LayerKind::AdaptiveMaxPool2d,
        keyword: "adaptive_max_pool2d",
        torch_name: "AdaptiveMaxPool2d",
        layer_type: "AdaptiveMaxPool2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[arg(
            "output_size",
            PAIR,
            ArgDefault::Required,
            "output height and width, an integer or [h, w]",
        )],
        init: Init::None,
        computes: "the maximum of each of output_size windows spread over the input",
    },
    KindInfo {
        kind: LayerKind::Upsample,
        keyword: "upsample",
        torch_name: "Upsample",
        layer_type: "Upsample",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[
            arg(
                "size",
                ArgType::Optional(&PAIR),
                ArgDefault::None,
                "output height and width, an integer or [h, w] (give this or scale_factor)",
            ),
            arg(
                "scale_factor",
                ArgType::Optional(&PAIR),
                ArgDefault::None,
                "integer factor for height and width, an integer or [h, w] (give this or size)",
            ),
            arg(
                "mode",
                ArgType::Choice(&["nearest", "bilinear"]),
                ArgDefault::Word("nearest"),
                "`nearest` repeats pixels, `bilinear` interpolates between the four nearest",
            ),
            arg(
                "align_corners",
                ArgType::Optional(&ArgType::Bool),
                ArgDefault::None,
                "bilinear only: true maps the corner pixels' centres onto each other, false \
                 (null's meaning) their outer edges",
            ),
        ],
        init: Init::None,
        computes: "the image resized to size (or scale_factor times), by nearest or bilinear interpolation",
    },
    KindInfo {
        kind: LayerKind::ConvTranspose2d,
        keyword: "conv_transpose2d",
        torch_name: "ConvTranspose2d",
        layer_type: "ConvTranspose2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[
            CONV_IN_CHANNELS,
            CONV_OUT_CHANNELS,
            CONV_KERNEL_SIZE,
            arg(
                "stride",
                PAIR,
                ArgDefault::Int(1),
                "step between the input pixels' places in the output",
            ),
            arg(
                "padding",
                PADDING,
                ArgDefault::Int(0),
                "rows and columns cut from each side of the output",
            ),
            arg(
                "output_padding",
                PADDING,
                ArgDefault::Int(0),
                "rows and columns added to one side of the output",
            ),
            arg(
                "groups",
                SIZE,
                ArgDefault::Int(1),
                "channel groups: in and out channels split into this many groups, each input group feeding its own output group",
            ),
            BIAS,
            CONV_DILATION,
        ],
        init: Init::FanInUniform,
        computes: "a transposed 2-D convolution (the input gradient of a convolution)",
    },
    KindInfo {
        kind: LayerKind::Relu6,
        keyword: "relu6",
        torch_name: "ReLU6",
        layer_type: "Relu6",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "min(max(x, 0), 6) of each element",
    },
    KindInfo {
        kind: LayerKind::Silu,
        keyword: "silu",
        torch_name: "SiLU",
        layer_type: "Silu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "x * sigmoid(x) of each element",
    },
    KindInfo {
        kind: LayerKind::Gelu,
        keyword: "gelu",
        torch_name: "GELU",
        layer_type: "Gelu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[arg(
            "approximate",
            ArgType::Choice(&["none", "tanh"]),
            ArgDefault::Word("none"),
            "`none` for the exact erf form, `tanh` for the tanh approximation",
        )],
        init: Init::None,
        computes: "x * Φ(x), Φ the standard normal CDF, of each element",
    },
    KindInfo {
        kind: LayerKind::Hardswish,
        keyword: "hardswish",
        torch_name: "Hardswish",
        layer_type: "Hardswish",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "x * min(max(x + 3, 0), 6) / 6 of each element",
    },
    KindInfo {
        kind: LayerKind::Hardsigmoid,
        keyword: "hardsigmoid",
        torch_name: "Hardsigmoid",
        layer_type: "Hardsigmoid",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "min(max(x + 3, 0), 6) / 6 of each element",
    },
    KindInfo {
        kind: LayerKind::Elu,
        keyword: "elu",
        torch_name: "ELU",
        layer_type: "Elu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[arg(
            "alpha",
            ArgType::Float {
                min: -UNBOUNDED,
                max: UNBOUNDED,
                min_exclusive: false,
            },
            ArgDefault::Float(1.0),
            "scale of the negative part, alpha * (exp(x) - 1)",
        )],
        init: Init::None,
        computes: "x, or alpha * (exp(x) - 1) where x <= 0",
    },
    KindInfo {
        kind: LayerKind::Identity,
        keyword: "identity",
        torch_name: "Identity",
        layer_type: "Identity",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[],
        init: Init::None,
        computes: "its input unchanged",
    },
    KindInfo {
        kind: LayerKind::Dropout2d,
        keyword: "dropout2d",
        torch_name: "Dropout2d",
        layer_type: "Dropout2d",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[arg(
            "p",
            PROBABILITY,
            ArgDefault::Float(0.5),
            "probability of zeroing a whole channel in training",
        )],
        init: Init::DropoutStream,
        computes: "its input with whole channels zeroed at probability p in training",
    },
    KindInfo {
        kind: LayerKind::Softmax,
        keyword: "softmax",
        torch_name: "Softmax",
        layer_type: "Softmax",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: SOFTMAX,
        init: Init::None,
        computes: "exp(x) / sum(exp(x)) along dim",
    },
    KindInfo {
        kind: LayerKind::LogSoftmax,
        keyword: "log_softmax",
        torch_name: "LogSoftmax",
        layer_type: "LogSoftmax",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: SOFTMAX,
        init: Init::None,
        computes: "x - log(sum(exp(x))) along dim",
    },
    KindInfo {
        kind: LayerKind::Prelu,
        keyword: "prelu",
        torch_name: "PReLU",
        layer_type: "Prelu",
        input: Input::Any,
        arity: Arity::Exactly(1),
        args: &[arg(
            "num_parameters",
            SIZE,
            ArgDefault::Int(1),
            "learnt slopes: 1 shared, or one per channel (feature)",
        )],
        init: Init::Constant,
        computes: "x, or a learnt slope times x where x <= 0",
    },
    KindInfo {
        kind: LayerKind::Add,
        keyword: "add",
        torch_name: "add",
        layer_type: "Add",
        input: Input::Any,
        arity: Arity::AtLeast(2),
        args: &[],
        init: Init::None,
        computes: "the elementwise sum of inputs of one shape",
    },
    KindInfo {
        kind: LayerKind::Concat,
        keyword: "concat",
        torch_name: "cat",
        layer_type: "Concat",
        input: Input::Any,
        arity: Arity::AtLeast(2),
        args: &[arg(
            "dim",
            ArgType::Dim,
            ArgDefault::Dim(1),
            "dimension of [N, ...] to join along: 1, the channels of images or the features of \
             flat inputs (the only one supported)",
        )],
        init: Init::None,
        computes: "the inputs joined along the channels (features), in order",
    },
    KindInfo {
        kind: LayerKind::Mul,
        keyword: "mul",
        torch_name: "mul",
        layer_type: "Mul",
        input: Input::Any,
        arity: Arity::Exactly(2),
        args: &[],
        init: Init::None,
        computes: "the elementwise product of two inputs, a size-1 dimension broadcast",
    },
    KindInfo {
        kind: LayerKind::GroupNorm,
        keyword: "groupnorm",
        torch_name: "GroupNorm",
        layer_type: "GroupNorm",
        input: Input::Image,
        arity: Arity::Exactly(1),
        args: &[
            arg(
                "num_groups",
                SIZE,
                ArgDefault::Required,
                "groups the channels are split into, each normalised on its own; divides num_channels",
            ),
            arg(
                "num_channels",
                SIZE,
                ArgDefault::Inferred,
                "channels (inferred from the input)",
            ),
            arg(
                "eps",
                ArgType::Float {
                    min: 0.0,
                    max: UNBOUNDED,
                    min_exclusive: true,
                },
                ArgDefault::Float(1e-5),
                "added to the variance for numerical stability",
            ),
            arg(
                "affine",
                ArgType::Bool,
                ArgDefault::Bool(true),
                "whether the layer has a learnable per-channel weight and bias",
            ),
        ],
        init: Init::Constant,
        computes: "each sample's channel groups normalised by their own mean and variance",
    },
];

impl LayerKind {
    /// Every kind, in documentation order.
    pub const ALL: [LayerKind; TABLE.len()] = {
        let mut all = [LayerKind::Conv2d; TABLE.len()];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].kind;
            i += 1;
        }
        all
    };

    /// This kind's table entry.
    pub const fn info(self) -> &'static KindInfo {
        &TABLE[self as usize]
    }

    /// The spelling in specs (`conv2d`, `leaky_relu`).
    pub const fn keyword(self) -> &'static str {
        self.info().keyword
    }

    /// The PyTorch class name (`Conv2d`, `LeakyReLU`), as torchinfo prints it.
    pub const fn torch_name(self) -> &'static str {
        self.info().torch_name
    }

    /// The runtime's layer struct that computes it (`Relu`).
    pub const fn layer_type(self) -> &'static str {
        self.info().layer_type
    }

    /// The input it works on.
    pub const fn input(self) -> Input {
        self.info().input
    }

    /// The argument inferred from the input when left out (`in_channels`), if any.
    pub fn inferred_arg(self) -> Option<&'static str> {
        self.args().iter().find(|a| a.is_inferred()).map(|a| a.name)
    }

    /// The arguments, in PyTorch's order.
    pub const fn args(self) -> &'static [ArgInfo] {
        self.info().args
    }

    /// What it computes, in a few words.
    pub const fn computes(self) -> &'static str {
        self.info().computes
    }

    /// How many inputs it reads: one for every kind but the merge kinds.
    pub const fn arity(self) -> Arity {
        self.info().arity
    }

    /// Whether it joins several inputs (`add`, `concat`, `mul`).
    pub const fn is_merge(self) -> bool {
        !matches!(self.arity(), Arity::Exactly(1))
    }

    /// How its tensors start out.
    pub const fn init(self) -> Init {
        self.info().init
    }

    /// The argument called `name`.
    pub fn arg(self, name: &str) -> Option<&'static ArgInfo> {
        self.args().iter().find(|a| a.name == name)
    }

    /// The kind spelt `keyword` in a spec.
    pub fn from_keyword(keyword: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.keyword() == keyword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_spelt_once() {
        for (i, info) in TABLE.iter().enumerate() {
            assert_eq!(info.kind as usize, i, "{}", info.keyword);
            assert_eq!(LayerKind::from_keyword(info.keyword), Some(info.kind));
            assert_eq!(format!("{:?}", info.kind), info.layer_type);
        }
        assert_eq!(LayerKind::MaxPool2d.keyword(), "maxpool2d");
        assert_eq!(LayerKind::MaxPool2d.torch_name(), "MaxPool2d");
        assert_eq!(LayerKind::from_keyword("max_pool2d"), None);
    }

    #[test]
    fn only_merge_kinds_read_several_inputs() {
        for info in TABLE {
            let merge = matches!(
                info.kind,
                LayerKind::Add | LayerKind::Concat | LayerKind::Mul
            );
            assert_eq!(info.kind.is_merge(), merge, "{}", info.keyword);
            assert_eq!(info.arity.accepts(1), !merge, "{}", info.keyword);
            assert_eq!(info.arity.accepts(2), merge, "{}", info.keyword);
        }
        assert!(LayerKind::Add.arity().accepts(5));
        assert!(!LayerKind::Mul.arity().accepts(3));
        assert_eq!(Arity::AtLeast(2).to_string(), "at least 2 inputs");
        assert_eq!(Arity::Exactly(1).to_string(), "exactly 1 input");
    }

    #[test]
    fn only_kinds_with_a_fixed_input_infer_a_size() {
        for info in TABLE {
            let inferred = info.args.iter().filter(|a| a.is_inferred()).count();
            assert!(inferred <= 1, "{}", info.keyword);
            if inferred == 1 {
                assert_ne!(info.input, Input::Any, "{}", info.keyword);
            }
        }
    }

    #[test]
    fn defaults_name_arguments_of_the_same_kind() {
        for info in TABLE {
            for a in info.args {
                if let ArgDefault::SameAs(other) = a.default {
                    assert!(
                        info.kind.arg(other).is_some(),
                        "{}.{}",
                        info.keyword,
                        a.name
                    );
                }
            }
        }
    }
}
