//! Each layer kind's resolved arguments — the one config type the checker produces, the runtime
//! builds layers from and code generation writes out — and the rules that follow from them: the
//! output shape, the state_dict tensors and the mult-adds. Argument names are PyTorch's.

use std::fmt;

use crate::MAX_POOL_WINDOW;
use crate::geometry::{Pad, conv_output, pool_output, pool_tiles, same_padding};
use crate::kind::{ArgDefault, ArgType, ArgValue, Arity, LayerKind};
use crate::model::{TensorInfo, TensorRole};
use crate::shape::Shape;

/// A 2-D size or offset, `[height, width]`.
pub type Pair = [usize; 2];

/// `Option` as generated code names it, by its absolute path.
const OPTION: &str = "::core::option::Option";

/// One layer, fully resolved (every default applied, every inferred size filled in).
#[derive(Clone, Debug, PartialEq)]
pub enum LayerConfig {
    /// `torch.nn.Conv2d`.
    Conv2d(Conv2dConfig),
    /// `torch.nn.MaxPool2d`.
    MaxPool2d(Pool2dConfig),
    /// `torch.nn.AvgPool2d`.
    AvgPool2d(Pool2dConfig),
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.LeakyReLU(negative_slope)`.
    LeakyRelu {
        /// Slope for negative inputs.
        negative_slope: f32,
    },
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.Tanh`.
    Tanh,
    /// `torch.nn.Flatten(start_dim, end_dim)` (C, H, W order).
    Flatten {
        /// First dimension of the batched tensor `[N, ...]` to flatten, as written.
        start_dim: i64,
        /// Last dimension of the batched tensor `[N, ...]` to flatten, as written.
        end_dim: i64,
    },
    /// `torch.nn.Linear`.
    Linear(LinearConfig),
    /// `torch.nn.Dropout(p)`.
    Dropout {
        /// Probability of zeroing an element in training mode.
        p: f32,
    },
    /// `torch.nn.BatchNorm2d`.
    BatchNorm2d(BatchNorm2dConfig),
    /// `torch.nn.AdaptiveAvgPool2d(output_size)`.
    AdaptiveAvgPool2d {
        /// Output `[height, width]`.
        output_size: Pair,
    },
    /// `torch.nn.AdaptiveMaxPool2d(output_size)`.
    AdaptiveMaxPool2d {
        /// Output `[height, width]`.
        output_size: Pair,
    },
    /// `torch.nn.Upsample(size, scale_factor, mode, align_corners)`, integer factors.
    Upsample(UpsampleConfig),
    /// `torch.nn.ConvTranspose2d`.
    ConvTranspose2d(ConvTranspose2dConfig),
    /// `torch.nn.ReLU6`.
    Relu6,
    /// `torch.nn.SiLU`.
    Silu,
    /// `torch.nn.GELU(approximate)`.
    Gelu {
        /// The exact erf form or the tanh approximation.
        approximate: GeluApproximate,
    },
    /// `torch.nn.Hardswish`.
    Hardswish,
    /// `torch.nn.Hardsigmoid`.
    Hardsigmoid,
    /// `torch.nn.ELU(alpha)`.
    Elu {
        /// Scale of the negative part, `alpha * (exp(x) - 1)`.
        alpha: f32,
    },
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Dropout2d(p)`, on `[C, H, W]` images.
    Dropout2d {
        /// Probability of zeroing a whole channel in training mode.
        p: f32,
    },
    /// `torch.nn.Softmax(dim)`.
    Softmax {
        /// Dimension of the batched tensor `[N, ...]`, as written (negative counts from the end).
        dim: i64,
    },
    /// `torch.nn.LogSoftmax(dim)`.
    LogSoftmax {
        /// Dimension of the batched tensor `[N, ...]`, as written (negative counts from the end).
        dim: i64,
    },
    /// `torch.nn.PReLU(num_parameters)`.
    Prelu {
        /// Learnt slopes: 1, or the input's channel (feature) count.
        num_parameters: usize,
    },
    /// `torch.add` (`a + b + ...`): two or more inputs of one shape, summed.
    Add,
    /// `torch.cat(inputs, dim)`: two or more inputs joined along `dim`.
    Concat(ConcatConfig),
    /// `torch.mul` (`a * b`): two inputs multiplied elementwise, a size-1 dimension of either
    /// broadcast (`[C, 1, 1]` gate times `[C, H, W]` map).
    Mul,
    /// `torch.nn.GroupNorm`.
    GroupNorm(GroupNormConfig),
}

/// Arguments of `torch.cat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcatConfig {
    /// Dimension of the batched tensor `[N, ...]`, as written: it must name dimension 1, the
    /// channels of `[C, H, W]` images or the features of flat inputs (`-3` for images, `-1`
    /// for flat inputs name it too).
    pub dim: i64,
}

impl LayerConfig {
    /// `torch.nn.Flatten()` with its defaults: everything but the batch.
    pub const FLATTEN: LayerConfig = LayerConfig::Flatten {
        start_dim: 1,
        end_dim: -1,
    };
}

/// Arguments of `torch.nn.Upsample`: exactly one of `size` and `scale_factor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpsampleConfig {
    /// Output `[height, width]`.
    pub size: Option<Pair>,
    /// Integer factor `[sh, sw]` by which height and width grow.
    pub scale_factor: Option<Pair>,
    /// How output pixels are computed.
    pub mode: UpsampleMode,
    /// Bilinear only (`None` with `nearest`, as PyTorch requires): whether the corner pixels'
    /// centres map onto each other; `None` means `false`.
    pub align_corners: Option<bool>,
}

impl UpsampleConfig {
    /// `torch.nn.Upsample(scale_factor=...)`, nearest.
    pub fn nearest(scale_factor: Pair) -> Self {
        UpsampleConfig {
            size: None,
            scale_factor: Some(scale_factor),
            mode: UpsampleMode::Nearest,
            align_corners: None,
        }
    }

    /// The output `[height, width]` for an input of `[h, w]`: `size`, or the input times
    /// `scale_factor` (`None` when neither or both are given, or it overflows).
    pub fn output(&self, [h, w]: Pair) -> Option<Pair> {
        match (self.size, self.scale_factor) {
            (Some(size), None) => Some(size),
            (None, Some([sh, sw])) => Some([h.checked_mul(sh)?, w.checked_mul(sw)?]),
            _ => None,
        }
    }

    /// The factor along `axis` that PyTorch's kernels receive: the written `scale_factor`, or
    /// `None` when the output comes from `size` (the kernels then use input / output).
    pub fn factor(&self, axis: usize) -> Option<usize> {
        self.scale_factor.map(|s| s[axis])
    }
}

/// `torch.nn.Upsample`'s `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsampleMode {
    /// `'nearest'`: each output pixel copies the input pixel it falls in.
    Nearest,
    /// `'bilinear'`: each output pixel interpolates the four input pixels around it.
    Bilinear,
}

impl UpsampleMode {
    /// PyTorch's word for it.
    pub const fn word(self) -> &'static str {
        match self {
            UpsampleMode::Nearest => "nearest",
            UpsampleMode::Bilinear => "bilinear",
        }
    }
}

/// Arguments of `torch.nn.ConvTranspose2d`, in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]`.
    pub stride: Pair,
    /// Rows and columns `[ph, pw]` cut from each side of the full output.
    pub padding: Pair,
    /// Rows and columns `[oph, opw]` added at the bottom and right.
    pub output_padding: Pair,
    /// Channel groups: each input channel feeds `out_channels / groups` output channels.
    /// Divides both channel counts.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Dilation `[dh, dw]`.
    pub dilation: Pair,
}

impl ConvTranspose2dConfig {
    /// Output length along `axis` for an input of `input`: PyTorch's
    /// `(in - 1) * s - 2p + d (k - 1) + output_padding + 1`; below 1 means no output.
    pub fn output_len(&self, axis: usize, input: usize) -> i128 {
        let [i, k, s, p, op, d] = [
            input,
            self.kernel_size[axis],
            self.stride[axis],
            self.padding[axis],
            self.output_padding[axis],
            self.dilation[axis],
        ]
        .map(|v| v as i128);
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
    }

    /// Whether `output_padding` is smaller than the stride or the dilation on both axes, as
    /// PyTorch requires.
    pub fn output_padding_fits(&self) -> bool {
        (0..2).all(|a| {
            self.output_padding[a] < self.stride[a] || self.output_padding[a] < self.dilation[a]
        })
    }
}

/// `torch.nn.GELU`'s `approximate`: which formula it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluApproximate {
    /// `'none'`: `x * Φ(x)` through erf, exactly.
    None,
    /// `'tanh'`: `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`.
    Tanh,
}

impl GeluApproximate {
    /// PyTorch's spelling (`none`, `tanh`).
    pub fn word(self) -> &'static str {
        match self {
            GeluApproximate::None => "none",
            GeluApproximate::Tanh => "tanh",
        }
    }
}

/// Arguments of `torch.nn.Conv2d`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]`.
    pub stride: Pair,
    /// Padding `[ph, pw]` before the input: rows on the top, columns on the left.
    pub padding: Pair,
    /// Padding `[ph, pw]` after the input, rows on the bottom and columns on the right: equal
    /// to `padding` except for `padding: same` whose total `dilation * (kernel_size - 1)` is
    /// odd, where PyTorch pads the extra pixel here ([`same_padding`]).
    pub padding_end: Pair,
    /// Dilation `[dh, dw]`.
    pub dilation: Pair,
    /// Channel groups: each output channel sees `in_channels / groups` input channels
    /// (depthwise when it equals `in_channels`). Divides both channel counts.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// What the padding holds.
    pub padding_mode: PaddingMode,
}

/// `torch.nn.Conv2d`'s `padding_mode`: what the `padding` pixels around the input hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PaddingMode {
    /// Zeros (`'zeros'`, PyTorch's default).
    #[default]
    Zeros,
    /// The input mirrored at its edge, the edge itself not repeated (`'reflect'`); the padding
    /// must be smaller than the input.
    Reflect,
    /// The edge pixel repeated (`'replicate'`).
    Replicate,
    /// The input wrapped around (`'circular'`); the padding may not exceed the input.
    Circular,
}

impl PaddingMode {
    /// Every mode, as the table lists its words.
    pub const ALL: [PaddingMode; 4] = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ];

    /// PyTorch's word for it (`reflect`).
    pub const fn word(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }

    /// The mode PyTorch spells `word`.
    pub fn from_word(word: &str) -> Option<PaddingMode> {
        PaddingMode::ALL.into_iter().find(|m| m.word() == word)
    }

    /// The largest padding PyTorch accepts around an input of `size` along an axis: below
    /// the size for `reflect`, up to it for `circular`, unbounded otherwise.
    pub const fn max_padding(self, size: usize) -> usize {
        match self {
            PaddingMode::Reflect => size.saturating_sub(1),
            PaddingMode::Circular => size,
            PaddingMode::Zeros | PaddingMode::Replicate => usize::MAX,
        }
    }

    /// The input index padded position `i` (counting from the start of `padding` pixels before
    /// the input) reads, along an axis of `size`; `None` for zeros and outside the input.
    pub const fn source(self, i: usize, padding: usize, size: usize) -> Option<usize> {
        let at = i as isize - padding as isize;
        let n = size as isize;
        if at >= 0 && at < n {
            return Some(at as usize);
        }
        let index = match self {
            PaddingMode::Zeros => return None,
            PaddingMode::Reflect => {
                if at < 0 {
                    -at
                } else {
                    2 * (n - 1) - at
                }
            }
            PaddingMode::Replicate => {
                if at < 0 {
                    0
                } else {
                    n - 1
                }
            }
            PaddingMode::Circular => at.rem_euclid(n),
        };
        if index >= 0 && index < n {
            Some(index as usize)
        } else {
            None
        }
    }
}

impl Conv2dConfig {
    /// `torch.nn.Conv2d(in_channels, out_channels, kernel_size)` with PyTorch's defaults for the
    /// rest: stride 1, no padding, dilation 1, one group, a bias, zeros padding. Set the others
    /// with struct update syntax:
    ///
    /// ```
    /// use cnnc_core::config::Conv2dConfig;
    ///
    /// let conv = Conv2dConfig {
    ///     padding: [1, 1],
    ///     padding_end: [1, 1],
    ///     ..Conv2dConfig::new(16, 32, [3, 3])
    /// };
    /// assert_eq!((conv.stride, conv.groups, conv.bias), ([1, 1], 1, true));
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: Pair) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: [1, 1],
            padding: [0, 0],
            padding_end: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
            padding_mode: PaddingMode::Zeros,
        }
    }

    /// The padding along `axis` (0: rows, 1: columns), before and after the input.
    pub fn pad(&self, axis: usize) -> Pad {
        Pad {
            before: self.padding[axis],
            after: self.padding_end[axis],
        }
    }

    /// Rows and columns of padding in all, `[before + after; 2]`: what the output size and the
    /// padded input's size follow from.
    pub fn padding_total(&self) -> Pair {
        [0, 1].map(|axis| self.pad(axis).total())
    }

    /// Whether both sides are padded alike, as every written padding is; only `padding: same`
    /// with an odd total pads one side more.
    pub fn is_symmetric(&self) -> bool {
        self.padding == self.padding_end
    }

    /// `padding: same` for this kernel and dilation on both axes: `padding` and `padding_end`.
    pub fn same_padding(kernel_size: Pair, dilation: Pair) -> [Pair; 2] {
        let pads = [0, 1].map(|axis| same_padding(kernel_size[axis], dilation[axis]));
        [pads.map(|p| p.before), pads.map(|p| p.after)]
    }

    /// Whether the padding is `padding: same`'s for this layer and PyTorch takes it: stride 1
    /// on both axes.
    pub fn is_same_padding(&self) -> bool {
        self.stride == [1, 1]
            && Conv2dConfig::same_padding(self.kernel_size, self.dilation)
                == [self.padding, self.padding_end]
    }

    /// Checks that `groups` divides both channel counts, as PyTorch requires.
    pub fn check_groups(&self) -> Result<(), ShapeError> {
        for (arg, channels) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ] {
            if self.groups == 0 || !channels.is_multiple_of(self.groups) {
                return Err(ShapeError::Groups {
                    arg,
                    channels,
                    groups: self.groups,
                });
            }
        }
        Ok(())
    }

    /// Whether each input channel is convolved on its own (`groups == in_channels`), with
    /// `out_channels / in_channels` filters each: a depthwise convolution.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels
    }
}

/// Arguments of `torch.nn.MaxPool2d` / `torch.nn.AvgPool2d`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2dConfig {
    /// Window `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]` (PyTorch's default is the kernel size; already resolved here).
    pub stride: Pair,
    /// Implicit padding `[ph, pw]` on each side (-inf for max, zeros for avg).
    pub padding: Pair,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// Spacing `[dh, dw]` between window elements (max pooling's; `[1, 1]` for average).
    pub dilation: Pair,
    /// Average pooling divides by the window's size including its padding (else by the input
    /// pixels it covers); `true` for max pooling, where it means nothing.
    pub count_include_pad: bool,
    /// Average pooling divides every window's sum by this instead; `None` for max pooling.
    pub divisor_override: Option<usize>,
}

impl Pool2dConfig {
    /// A window of `kernel_size` moving by `stride` over an input padded by `padding`, with
    /// PyTorch's other defaults (no dilation, floor, padding counted, no divisor override).
    pub fn new(kernel_size: Pair, stride: Pair, padding: Pair) -> Self {
        Pool2dConfig {
            kernel_size,
            stride,
            padding,
            ceil_mode: false,
            dilation: [1, 1],
            count_include_pad: true,
            divisor_override: None,
        }
    }

    /// This config as a Rust expression, naming the type through `path` (see
    /// [`LayerConfig::rust_expr`]).
    pub fn rust_expr(&self, path: &str) -> String {
        let pair = |[a, b]: Pair| format!("[{a}, {b}]");
        format!(
            "{path}::Pool2dConfig {{ kernel_size: {}, stride: {}, padding: {}, ceil_mode: {}, \
             dilation: {}, count_include_pad: {}, divisor_override: {} }}",
            pair(self.kernel_size),
            pair(self.stride),
            pair(self.padding),
            self.ceil_mode,
            pair(self.dilation),
            self.count_include_pad,
            match self.divisor_override {
                Some(d) => format!("{OPTION}::Some({d})"),
                None => format!("{OPTION}::None"),
            }
        )
    }

    /// Whether the windows tile an `[h, w]` input exactly and can be fused into the
    /// convolution before ([`pool_tiles`], and no dilation).
    pub fn tiles(&self, input: Pair) -> bool {
        self.dilation == [1, 1] && pool_tiles(input, self.kernel_size, self.stride, self.padding)
    }
}

/// Arguments of `torch.nn.Linear`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

/// Arguments of `torch.nn.BatchNorm2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2dConfig {
    /// Channels.
    pub num_features: usize,
    /// Added to the variance for numerical stability.
    pub eps: f32,
    /// Running statistics update factor; `None` for PyTorch's cumulative moving average
    /// (factor `1 / num_batches_tracked`).
    pub momentum: Option<f32>,
    /// Whether the layer has a learnable `weight` and `bias` (`[num_features]` each).
    pub affine: bool,
    /// Whether the layer keeps `running_mean`, `running_var` and `num_batches_tracked` and
    /// normalises with them in eval; without them it uses batch statistics in eval too.
    pub track_running_stats: bool,
}

impl BatchNorm2dConfig {
    /// `torch.nn.BatchNorm2d(num_features)` with PyTorch's defaults.
    pub fn new(num_features: usize) -> Self {
        BatchNorm2dConfig {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

/// Arguments of `torch.nn.GroupNorm`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormConfig {
    /// Groups the channels are split into; divides `num_channels`.
    pub num_groups: usize,
    /// Channels.
    pub num_channels: usize,
    /// Added to the variance for numerical stability.
    pub eps: f32,
    /// Whether the layer has a learnable `weight` and `bias` (`[num_channels]` each).
    pub affine: bool,
}

/// Where a layer reads one of its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The model's input.
    Input,
    /// The output of `layers[i]`; `i` is smaller than the reading layer's own index.
    Layer(usize),
}

impl Source {
    /// What layer `index` reads when its inputs are not written: the layer before it, or the
    /// model's input for the first.
    pub const fn previous(index: usize) -> Source {
        match index {
            0 => Source::Input,
            i => Source::Layer(i - 1),
        }
    }
}

/// A named layer, not yet checked: `name` is the state_dict prefix, dotted as PyTorch's module
/// tree names it (`layer1.0.conv1`, `fc1`, `3`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    /// State-dict prefix of this layer's parameters and buffers.
    pub name: String,
    /// What the layer computes.
    pub config: LayerConfig,
    /// Where it reads its inputs, in order. Empty: the previous layer (the model's input for
    /// the first), so a sequential network leaves every one empty.
    pub inputs: Vec<Source>,
}

/// A network as written, not yet checked ([`crate::Model::new`] checks it).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkDef {
    /// Input shape per sample, `[channels, height, width]`.
    pub input: [usize; 3],
    /// The layers, in topological order (each reads only the input and layers before it); the
    /// last one's output is the network's.
    pub layers: Vec<LayerDef>,
}

/// Why a layer's arguments do not fit its input.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeError {
    /// The kind works on `[C, H, W]` images, but the input is flat.
    NeedsImage {
        /// The input.
        found: Shape,
    },
    /// The kind works on flat vectors, but the input is an image.
    NeedsFlat {
        /// The input.
        found: Shape,
    },
    /// An inferable size (`in_channels`, ...) differs from the input's.
    SizeMismatch {
        /// The argument.
        arg: &'static str,
        /// Its value.
        written: usize,
        /// The input's.
        actual: usize,
    },
    /// The kernel or window does not fit the padded input along an axis (0 height, 1 width).
    DoesNotFit {
        /// The axis.
        axis: usize,
    },
    /// A pool's padding is more than half its window (PyTorch refuses it).
    PoolPadding,
    /// A max pool's window has more positions than [`MAX_POOL_WINDOW`].
    PoolWindow,
    /// A convolution's padding is too large for its `padding_mode` along an axis (0 height,
    /// 1 width): `reflect` needs it below the input size, `circular` at most the size.
    ModePadding {
        /// The axis.
        axis: usize,
    },
    /// A convolution's `groups` does not divide its input or output channels.
    Groups {
        /// `in_channels` or `out_channels`.
        arg: &'static str,
        /// Its value.
        channels: usize,
        /// The groups.
        groups: usize,
    },
    /// A `dim` outside the batched input's dimensions, or the batch dimension itself (layers
    /// work on each sample alone).
    BadDim {
        /// The dimension as written.
        dim: i64,
        /// The rank of the batched input `[N, ...]`.
        rank: usize,
    },
    /// A `flatten` whose `start_dim..=end_dim` gives a shape other than `[C, H, W]` or
    /// `[N]` per sample, or that starts after it ends.
    FlattenDims {
        /// `start_dim` as written.
        start_dim: i64,
        /// `end_dim` as written.
        end_dim: i64,
        /// The rank of the batched input `[N, ...]`.
        rank: usize,
    },
    /// An argument is outside its type's range (the table's [`ArgType`]).
    BadArgument {
        /// The argument.
        arg: &'static str,
    },
    /// A layer reads a number of inputs its kind does not take ([`LayerKind::arity`]).
    InputCount {
        /// How many it takes.
        expected: Arity,
        /// How many it was given.
        found: usize,
    },
    /// An `add`'s inputs differ in shape.
    AddShapes {
        /// Every input's shape, in order.
        inputs: Vec<Shape>,
    },
    /// A `concat`'s inputs differ in rank, or images in height and width.
    ConcatShapes {
        /// Every input's shape, in order.
        inputs: Vec<Shape>,
    },
    /// A `mul`'s inputs do not broadcast: a rank differs, or a dimension is neither equal nor 1
    /// in one of them.
    MulShapes {
        /// Every input's shape, in order.
        inputs: Vec<Shape>,
    },
}

/// `[1, 2, 2], [3, 2, 2]`: shapes for a message.
fn shape_list(shapes: &[Shape]) -> String {
    shapes
        .iter()
        .map(Shape::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::NeedsImage { found } => {
                write!(
                    f,
                    "needs an image input [channels, height, width], found {found}"
                )
            }
            ShapeError::NeedsFlat { found } => write!(f, "needs a flat input, found {found}"),
            ShapeError::SizeMismatch {
                arg,
                written,
                actual,
            } => write!(f, "{arg} is {written} but the input has {actual}"),
            ShapeError::DoesNotFit { axis } => write!(
                f,
                "the window does not fit the padded input's {}",
                ["height", "width"][*axis % 2]
            ),
            ShapeError::PoolPadding => write!(f, "padding must be at most half of kernel_size"),
            ShapeError::PoolWindow => {
                write!(f, "the window has more than {MAX_POOL_WINDOW} positions")
            }
            ShapeError::ModePadding { axis } => write!(
                f,
                "the padding is too large for the padding mode along the input's {}",
                ["height", "width"][*axis % 2]
            ),
            ShapeError::Groups {
                arg,
                channels,
                groups,
            } => write!(
                f,
                "{arg} ({channels}) is not divisible by groups ({groups})"
            ),
            ShapeError::BadArgument { arg } => write!(f, "`{arg}` is out of range"),
            ShapeError::FlattenDims {
                start_dim,
                end_dim,
                rank,
            } => write!(
                f,
                "flattening dims {start_dim}..={end_dim} of a rank-{rank} batched input gives \
                 neither [N, C, H, W] unchanged nor [N, features]"
            ),
            ShapeError::BadDim { dim, rank } => write!(
                f,
                "dim {dim} is not one of the per-sample dimensions 1..{} (or -{}..-1) of a \
                 rank-{rank} batched input",
                rank - 1,
                rank - 1
            ),
            ShapeError::InputCount { expected, found } => {
                write!(f, "takes {expected}, found {found}")
            }
            ShapeError::AddShapes { inputs } => {
                write!(f, "needs inputs of one shape, found {}", shape_list(inputs))
            }
            ShapeError::ConcatShapes { inputs } => write!(
                f,
                "needs inputs of one rank and, for images, one height and width, found {}",
                shape_list(inputs)
            ),
            ShapeError::MulShapes { inputs } => write!(
                f,
                "needs inputs of one rank whose dimensions are equal or 1, found {}",
                shape_list(inputs)
            ),
        }
    }
}

impl std::error::Error for ShapeError {}

/// Whether `value` has type `ty` and is within its range.
fn fits(ty: ArgType, value: ArgValue) -> bool {
    match (ty, value) {
        (ArgType::Size { min }, ArgValue::Int(v)) => v >= min,
        (ArgType::Pair { min }, ArgValue::Pair(p)) => p.iter().all(|&v| v >= min),
        // A convolution's uneven `padding: same` (`LayerConfig::arg`); its shape rule checks it.
        (ArgType::Pair { .. }, ArgValue::Word("same")) => true,
        (
            ArgType::Float {
                min,
                max,
                min_exclusive,
            },
            ArgValue::Float(v),
        ) => v.is_finite() && v <= max && if min_exclusive { v > min } else { v >= min },
        (ArgType::Bool, ArgValue::Bool(_)) => true,
        // Its range depends on the input: checked by the shape rule.
        (ArgType::Dim, ArgValue::Dim(_)) => true,
        (ArgType::Choice(words), ArgValue::Word(w)) => words.contains(&w),
        (ArgType::Optional(_), ArgValue::None) => true,
        (ArgType::Optional(inner), value) => fits(*inner, value),
        _ => false,
    }
}

fn image(input: Shape) -> Result<[usize; 3], ShapeError> {
    match input {
        Shape::Chw(dims) => Ok(dims),
        Shape::Flat(_) => Err(ShapeError::NeedsImage { found: input }),
    }
}

/// The rank of the batched tensor `[N, ...]` a layer with per-sample input `input` sees: 2 for
/// flat features, 4 for images.
pub fn batched_rank(input: Shape) -> usize {
    match input {
        Shape::Flat(_) => 2,
        Shape::Chw(_) => 4,
    }
}

/// PyTorch's `dim` for a batched input `[N, ...]` of per-sample shape `input`, made
/// non-negative (`-1` is the last): `Some(1..rank)`, or `None` when out of range or the batch
/// dimension 0, which cnnc refuses since its layers work on each sample alone.
pub fn softmax_dim(dim: i64, input: Shape) -> Option<usize> {
    let rank = batched_rank(input) as i64;
    let d = if dim < 0 {
        dim.saturating_add(rank)
    } else {
        dim
    };
    (1..rank).contains(&d).then_some(d as usize)
}

/// The per-sample output of `torch.nn.Flatten(start_dim, end_dim)` on per-sample input
/// `input`, when cnnc can represent it: dims `1..=last` flattened give `[features]`, a single
/// dim (`start_dim == end_dim`) leaves the input unchanged. `None` for a dim out of range, the
/// batch dim 0, a start after the end, or a partial flatten (`[C*H, W]`), which is neither
/// `[C, H, W]` nor flat.
pub fn flatten_output(start_dim: i64, end_dim: i64, input: Shape) -> Option<Shape> {
    let start = softmax_dim(start_dim, input)?;
    let end = softmax_dim(end_dim, input)?;
    if start == end {
        Some(input)
    } else if start == 1 && end == batched_rank(input) - 1 {
        Some(Shape::Flat(input.numel()))
    } else {
        None
    }
}

fn same(arg: &'static str, written: usize, actual: usize) -> Result<(), ShapeError> {
    if written == actual {
        Ok(())
    } else {
        Err(ShapeError::SizeMismatch {
            arg,
            written,
            actual,
        })
    }
}

fn tensor(layer: &str, role: TensorRole, shape: Vec<usize>) -> TensorInfo {
    TensorInfo {
        name: format!("{layer}.{}", role.suffix()),
        role,
        shape,
    }
}

impl LayerConfig {
    /// The kind these arguments belong to.
    pub fn kind(&self) -> LayerKind {
        match self {
            LayerConfig::Conv2d(_) => LayerKind::Conv2d,
            LayerConfig::MaxPool2d(_) => LayerKind::MaxPool2d,
            LayerConfig::AvgPool2d(_) => LayerKind::AvgPool2d,
            LayerConfig::Relu => LayerKind::Relu,
            LayerConfig::LeakyRelu { .. } => LayerKind::LeakyRelu,
            LayerConfig::Sigmoid => LayerKind::Sigmoid,
            LayerConfig::Tanh => LayerKind::Tanh,
            LayerConfig::Flatten { .. } => LayerKind::Flatten,
            LayerConfig::Linear(_) => LayerKind::Linear,
            LayerConfig::Dropout { .. } => LayerKind::Dropout,
            LayerConfig::BatchNorm2d(_) => LayerKind::BatchNorm2d,
            LayerConfig::AdaptiveAvgPool2d { .. } => LayerKind::AdaptiveAvgPool2d,
            LayerConfig::AdaptiveMaxPool2d { .. } => LayerKind::AdaptiveMaxPool2d,
            LayerConfig::Upsample(_) => LayerKind::Upsample,
            LayerConfig::ConvTranspose2d(_) => LayerKind::ConvTranspose2d,
            LayerConfig::Relu6 => LayerKind::Relu6,
            LayerConfig::Silu => LayerKind::Silu,
            LayerConfig::Gelu { .. } => LayerKind::Gelu,
            LayerConfig::Hardswish => LayerKind::Hardswish,
            LayerConfig::Hardsigmoid => LayerKind::Hardsigmoid,
            LayerConfig::Elu { .. } => LayerKind::Elu,
            LayerConfig::Identity => LayerKind::Identity,
            LayerConfig::Dropout2d { .. } => LayerKind::Dropout2d,
            LayerConfig::Softmax { .. } => LayerKind::Softmax,
            LayerConfig::LogSoftmax { .. } => LayerKind::LogSoftmax,
            LayerConfig::Prelu { .. } => LayerKind::Prelu,
            LayerConfig::Add => LayerKind::Add,
            LayerConfig::Concat(_) => LayerKind::Concat,
            LayerConfig::Mul => LayerKind::Mul,
            LayerConfig::GroupNorm(_) => LayerKind::GroupNorm,
        }
    }

    /// The value of argument `name` (one of [`LayerKind::args`]).
    pub fn arg(&self, name: &str) -> Option<ArgValue> {
        use ArgValue::{Bool, Float, Int, Pair};
        Some(match (self, name) {
            (LayerConfig::Conv2d(c), _) => match name {
                "in_channels" => Int(c.in_channels),
                "out_channels" => Int(c.out_channels),
                "kernel_size" => Pair(c.kernel_size),
                "stride" => Pair(c.stride),
                // Only `same` pads unevenly, and the word says how (so it stays in the
                // canonical form, as PyTorch's repr keeps `padding=same`).
                "padding" if !c.is_symmetric() => ArgValue::Word("same"),
                "padding" => Pair(c.padding),
                "dilation" => Pair(c.dilation),
                "groups" => Int(c.groups),
                "bias" => Bool(c.bias),
                "padding_mode" => ArgValue::Word(c.padding_mode.word()),
                _ => return None,
            },
            (LayerConfig::MaxPool2d(c) | LayerConfig::AvgPool2d(c), _) => {
                let avg = matches!(self, LayerConfig::AvgPool2d(_));
                match name {
                    "kernel_size" => Pair(c.kernel_size),
                    "stride" => Pair(c.stride),
                    "padding" => Pair(c.padding),
                    "ceil_mode" => Bool(c.ceil_mode),
                    "dilation" if !avg => Pair(c.dilation),
                    "count_include_pad" if avg => Bool(c.count_include_pad),
                    "divisor_override" if avg => c.divisor_override.map_or(ArgValue::None, Int),
                    _ => return None,
                }
            }
            (LayerConfig::LeakyRelu { negative_slope }, "negative_slope") => {
                Float(f64::from(*negative_slope))
            }
            (LayerConfig::Dropout { p }, "p") => Float(f64::from(*p)),
            (LayerConfig::Linear(c), _) => match name {
                "in_features" => Int(c.in_features),
                "out_features" => Int(c.out_features),
                "bias" => Bool(c.bias),
                _ => return None,
            },
            (LayerConfig::BatchNorm2d(c), _) => match name {
                "num_features" => Int(c.num_features),
                "eps" => Float(f64::from(c.eps)),
                "momentum" => c.momentum.map_or(ArgValue::None, |m| Float(f64::from(m))),
                "affine" => Bool(c.affine),
                "track_running_stats" => Bool(c.track_running_stats),
                _ => return None,
            },
            (
                LayerConfig::AdaptiveAvgPool2d { output_size }
                | LayerConfig::AdaptiveMaxPool2d { output_size },
                "output_size",
            ) => Pair(*output_size),
            (LayerConfig::Upsample(c), _) => match name {
                "size" => c.size.map_or(ArgValue::None, Pair),
                "scale_factor" => c.scale_factor.map_or(ArgValue::None, Pair),
                "mode" => ArgValue::Word(c.mode.word()),
                "align_corners" => c.align_corners.map_or(ArgValue::None, Bool),
                _ => return None,
            },
            (LayerConfig::ConvTranspose2d(c), _) => match name {
                "in_channels" => Int(c.in_channels),
                "out_channels" => Int(c.out_channels),
                "kernel_size" => Pair(c.kernel_size),
                "stride" => Pair(c.stride),
                "padding" => Pair(c.padding),
                "output_padding" => Pair(c.output_padding),
                "groups" => Int(c.groups),
                "bias" => Bool(c.bias),
                "dilation" => Pair(c.dilation),
                _ => return None,
            },
            (LayerConfig::Elu { alpha }, "alpha") => Float(f64::from(*alpha)),
            (LayerConfig::Dropout2d { p }, "p") => Float(f64::from(*p)),
            (LayerConfig::Gelu { approximate }, "approximate") => {
                ArgValue::Word(approximate.word())
            }
            (LayerConfig::Prelu { num_parameters }, "num_parameters") => Int(*num_parameters),
            (LayerConfig::Softmax { dim } | LayerConfig::LogSoftmax { dim }, "dim") => {
                ArgValue::Dim(*dim)
            }
            (LayerConfig::Concat(c), "dim") => ArgValue::Dim(c.dim),
            (LayerConfig::Flatten { start_dim, .. }, "start_dim") => ArgValue::Dim(*start_dim),
            (LayerConfig::Flatten { end_dim, .. }, "end_dim") => ArgValue::Dim(*end_dim),
            (LayerConfig::GroupNorm(c), _) => match name {
                "num_groups" => Int(c.num_groups),
                "num_channels" => Int(c.num_channels),
                "eps" => Float(f64::from(c.eps)),
                "affine" => Bool(c.affine),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Builds a `kind` layer from its written arguments (`written(name)`), applying the table's
    /// defaults. Inferred arguments must be given. `None` when a required one is missing or a
    /// value has the wrong type.
    pub fn from_args(
        kind: LayerKind,
        written: impl Fn(&str) -> Option<ArgValue>,
    ) -> Option<LayerConfig> {
        let value = |name: &str| -> Option<ArgValue> {
            let info = kind.arg(name)?;
            written(name).or(match info.default {
                ArgDefault::Required | ArgDefault::Inferred => None,
                ArgDefault::Int(v) => Some(match info.ty {
                    ArgType::Pair { .. } => ArgValue::Pair([v, v]),
                    _ => ArgValue::Int(v),
                }),
                ArgDefault::SameAs(other) => written(other),
                ArgDefault::Float(v) => Some(ArgValue::Float(v)),
                ArgDefault::Bool(v) => Some(ArgValue::Bool(v)),
                ArgDefault::Dim(v) => Some(ArgValue::Dim(v)),
                ArgDefault::Word(v) => Some(ArgValue::Word(v)),
                ArgDefault::None => Some(ArgValue::None),
            })
        };
        let int = |name| match value(name)? {
            ArgValue::Int(v) => Some(v),
            _ => None,
        };
        let pair = |name| match value(name)? {
            ArgValue::Pair(v) => Some(v),
            ArgValue::Int(v) => Some([v, v]),
            _ => None,
        };
        // Resolved numbers are f32, as PyTorch stores them.
        let float = |name| match value(name)? {
            ArgValue::Float(v) => Some(v as f32),
            _ => None,
        };
        // `Some(None)` for a `null` (PyTorch's `None`).
        let optional_float = |name| match value(name)? {
            ArgValue::Float(v) => Some(Some(v as f32)),
            ArgValue::None => Some(None),
            _ => None,
        };
        let bool = |name| match value(name)? {
            ArgValue::Bool(v) => Some(v),
            _ => None,
        };
        let dim = |name| match value(name)? {
            ArgValue::Dim(v) => Some(v),
            _ => None,
        };
        // A max pool has no count_include_pad or divisor_override, an average pool no
        // dilation: those take the values that mean nothing.
        let pool = |avg: bool| {
            Some(Pool2dConfig {
                kernel_size: pair("kernel_size")?,
                stride: pair("stride")?,
                padding: pair("padding")?,
                ceil_mode: bool("ceil_mode")?,
                dilation: if avg { [1, 1] } else { pair("dilation")? },
                count_include_pad: !avg || bool("count_include_pad")?,
                divisor_override: if avg {
                    match value("divisor_override")? {
                        ArgValue::Int(v) => Some(v),
                        ArgValue::None => None,
                        _ => return None,
                    }
                } else {
                    None
                },
            })
        };
        Some(match kind {
            LayerKind::Conv2d => {
                let [kernel_size, stride, dilation] =
                    [pair("kernel_size")?, pair("stride")?, pair("dilation")?];
                // `same` (stride 1 only, as PyTorch) resolves to pixels here, once the kernel
                // and dilation are known.
                let [padding, padding_end] = match value("padding")? {
                    ArgValue::Word("same") if stride == [1, 1] => {
                        Conv2dConfig::same_padding(kernel_size, dilation)
                    }
                    ArgValue::Word("valid") => [[0, 0]; 2],
                    _ => [pair("padding")?; 2],
                };
                LayerConfig::Conv2d(Conv2dConfig {
                    in_channels: int("in_channels")?,
                    out_channels: int("out_channels")?,
                    kernel_size,
                    stride,
                    padding,
                    padding_end,
                    dilation,
                    groups: int("groups")?,
                    bias: bool("bias")?,
                    padding_mode: match value("padding_mode")? {
                        ArgValue::Word(w) => PaddingMode::from_word(w)?,
                        _ => return None,
                    },
                })
            }
            LayerKind::MaxPool2d => LayerConfig::MaxPool2d(pool(false)?),
            LayerKind::AvgPool2d => LayerConfig::AvgPool2d(pool(true)?),
            LayerKind::Relu => LayerConfig::Relu,
            LayerKind::LeakyRelu => LayerConfig::LeakyRelu {
                negative_slope: float("negative_slope")?,
            },
            LayerKind::Sigmoid => LayerConfig::Sigmoid,
            LayerKind::Tanh => LayerConfig::Tanh,
            LayerKind::Flatten => LayerConfig::Flatten {
                start_dim: dim("start_dim")?,
                end_dim: dim("end_dim")?,
            },
            LayerKind::Linear => LayerConfig::Linear(LinearConfig {
                in_features: int("in_features")?,
                out_features: int("out_features")?,
                bias: bool("bias")?,
            }),
            LayerKind::Dropout => LayerConfig::Dropout { p: float("p")? },
            LayerKind::BatchNorm2d => LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                num_features: int("num_features")?,
                eps: float("eps")?,
                momentum: optional_float("momentum")?,
                affine: bool("affine")?,
                track_running_stats: bool("track_running_stats")?,
            }),
            LayerKind::AdaptiveAvgPool2d => LayerConfig::AdaptiveAvgPool2d {
                output_size: pair("output_size")?,
            },
            LayerKind::AdaptiveMaxPool2d => LayerConfig::AdaptiveMaxPool2d {
                output_size: pair("output_size")?,
            },
            LayerKind::Upsample => {
                let optional_pair = |name| match value(name)? {
                    ArgValue::Pair(v) => Some(Some(v)),
                    ArgValue::Int(v) => Some(Some([v, v])),
                    ArgValue::None => Some(None),
                    _ => None,
                };
                LayerConfig::Upsample(UpsampleConfig {
                    size: optional_pair("size")?,
                    scale_factor: optional_pair("scale_factor")?,
                    mode: match value("mode")? {
                        ArgValue::Word("nearest") => UpsampleMode::Nearest,
                        ArgValue::Word("bilinear") => UpsampleMode::Bilinear,
                        _ => return None,
                    },
                    align_corners: match value("align_corners")? {
                        ArgValue::Bool(b) => Some(b),
                        ArgValue::None => None,
                        _ => return None,
                    },
                })
            }
            LayerKind::ConvTranspose2d => LayerConfig::ConvTranspose2d(ConvTranspose2dConfig {
                in_channels: int("in_channels")?,
                out_channels: int("out_channels")?,
                kernel_size: pair("kernel_size")?,
                stride: pair("stride")?,
                padding: pair("padding")?,
                output_padding: pair("output_padding")?,
                groups: int("groups")?,
                bias: bool("bias")?,
                dilation: pair("dilation")?,
            }),
            LayerKind::Relu6 => LayerConfig::Relu6,
            LayerKind::Silu => LayerConfig::Silu,
            LayerKind::Gelu => LayerConfig::Gelu {
                approximate: match value("approximate")? {
                    ArgValue::Word("none") => GeluApproximate::None,
                    ArgValue::Word("tanh") => GeluApproximate::Tanh,
                    _ => return None,
                },
            },
            LayerKind::Hardswish => LayerConfig::Hardswish,
            LayerKind::Hardsigmoid => LayerConfig::Hardsigmoid,
            LayerKind::Elu => LayerConfig::Elu {
                alpha: float("alpha")?,
            },
            LayerKind::Identity => LayerConfig::Identity,
            LayerKind::Dropout2d => LayerConfig::Dropout2d { p: float("p")? },
            LayerKind::Softmax => LayerConfig::Softmax { dim: dim("dim")? },
            LayerKind::LogSoftmax => LayerConfig::LogSoftmax { dim: dim("dim")? },
            LayerKind::Prelu => LayerConfig::Prelu {
                num_parameters: int("num_parameters")?,
            },
            LayerKind::Add => LayerConfig::Add,
            LayerKind::Concat => LayerConfig::Concat(ConcatConfig { dim: dim("dim")? }),
            LayerKind::Mul => LayerConfig::Mul,
            LayerKind::GroupNorm => LayerConfig::GroupNorm(GroupNormConfig {
                num_groups: int("num_groups")?,
                num_channels: int("num_channels")?,
                eps: float("eps")?,
                affine: bool("affine")?,
            }),
        })
    }

    /// This config as a Rust expression, naming the types through `path` (the module of
    /// [`LayerConfig`] as the code that reads it sees it, `::cnnc::runtime::config`): what code
    /// generation writes into a generated model's constructor. Numbers keep their exact value.
    pub fn rust_expr(&self, path: &str) -> String {
        let pair = |[a, b]: Pair| format!("[{a}, {b}]");
        // Debug is the shortest text that reads back as the same f32, with a `.` or exponent.
        let float = |v: f32| format!("{v:?}");
        let variant = format!("{path}::LayerConfig::{:?}", self.kind());
        let option = |v: Option<String>| match v {
            Some(v) => format!("{OPTION}::Some({v})"),
            None => format!("{OPTION}::None"),
        };
        match self {
            LayerConfig::Conv2d(c) => format!(
                "{variant}({path}::Conv2dConfig {{ in_channels: {}, out_channels: {}, \
                 kernel_size: {}, stride: {}, padding: {}, padding_end: {}, dilation: {}, \
                 groups: {}, bias: {}, padding_mode: {path}::PaddingMode::{:?} }})",
                c.in_channels,
                c.out_channels,
                pair(c.kernel_size),
                pair(c.stride),
                pair(c.padding),
                pair(c.padding_end),
                pair(c.dilation),
                c.groups,
                c.bias,
                c.padding_mode
            ),
            LayerConfig::MaxPool2d(c) | LayerConfig::AvgPool2d(c) => {
                format!("{variant}({})", c.rust_expr(path))
            }
            LayerConfig::LeakyRelu { negative_slope } => {
                format!("{variant} {{ negative_slope: {} }}", float(*negative_slope))
            }
            LayerConfig::Linear(c) => format!(
                "{variant}({path}::LinearConfig {{ in_features: {}, out_features: {}, bias: {} }})",
                c.in_features, c.out_features, c.bias
            ),
            LayerConfig::Dropout { p } => format!("{variant} {{ p: {} }}", float(*p)),
            LayerConfig::BatchNorm2d(c) => format!(
                "{variant}({path}::BatchNorm2dConfig {{ num_features: {}, eps: {}, momentum: {}, \
                 affine: {}, track_running_stats: {} }})",
                c.num_features,
                float(c.eps),
                option(c.momentum.map(float)),
                c.affine,
                c.track_running_stats
            ),
            LayerConfig::GroupNorm(c) => format!(
                "{variant}({path}::GroupNormConfig {{ num_groups: {}, num_channels: {}, eps: {}, \
                 affine: {} }})",
                c.num_groups,
                c.num_channels,
                float(c.eps),
                c.affine
            ),
            LayerConfig::Flatten { start_dim, end_dim } => {
                format!("{variant} {{ start_dim: {start_dim}, end_dim: {end_dim} }}")
            }
            LayerConfig::Relu | LayerConfig::Sigmoid | LayerConfig::Tanh => variant,
            LayerConfig::AdaptiveAvgPool2d { output_size }
            | LayerConfig::AdaptiveMaxPool2d { output_size } => {
                format!("{variant} {{ output_size: {} }}", pair(*output_size))
            }
            LayerConfig::Upsample(c) => format!(
                "{variant}({path}::UpsampleConfig {{ size: {}, scale_factor: {}, mode: \
                 {path}::UpsampleMode::{:?}, align_corners: {} }})",
                option(c.size.map(pair)),
                option(c.scale_factor.map(pair)),
                c.mode,
                option(c.align_corners.map(|b| b.to_string()))
            ),
            LayerConfig::ConvTranspose2d(c) => format!(
                "{variant}({path}::ConvTranspose2dConfig {{ in_channels: {}, out_channels: {}, \
                 kernel_size: {}, stride: {}, padding: {}, output_padding: {}, groups: {}, \
                 bias: {}, dilation: {} }})",
                c.in_channels,
                c.out_channels,
                pair(c.kernel_size),
                pair(c.stride),
                pair(c.padding),
                pair(c.output_padding),
                c.groups,
                c.bias,
                pair(c.dilation)
            ),
            LayerConfig::Elu { alpha } => format!("{variant} {{ alpha: {} }}", float(*alpha)),
            LayerConfig::Dropout2d { p } => format!("{variant} {{ p: {} }}", float(*p)),
            LayerConfig::Gelu { approximate } => {
                format!("{variant} {{ approximate: {path}::GeluApproximate::{approximate:?} }}")
            }
            LayerConfig::Softmax { dim } | LayerConfig::LogSoftmax { dim } => {
                format!("{variant} {{ dim: {dim} }}")
            }
            LayerConfig::Prelu { num_parameters } => {
                format!("{variant} {{ num_parameters: {num_parameters} }}")
            }
            LayerConfig::Concat(c) => {
                format!("{variant}({path}::ConcatConfig {{ dim: {} }})", c.dim)
            }
            LayerConfig::Relu6
            | LayerConfig::Silu
            | LayerConfig::Hardswish
            | LayerConfig::Hardsigmoid
            | LayerConfig::Identity
            | LayerConfig::Add
            | LayerConfig::Mul => variant,
        }
    }

    /// The padded copy of `input` a layer keeps, `[C, H + padding, W + padding]`, for a
    /// convolution with padding (the runtime pads its input once, forward, and keeps it for
    /// backward); `None` for the other kinds. `padding: same` with a large dilation keeps the
    /// output small while this grows, so it has its own size limit.
    pub fn padded_input(&self, input: Shape) -> Option<Shape> {
        match (self, input) {
            (LayerConfig::Conv2d(c), Shape::Chw([channels, h, w]))
                if c.padding_total() != [0, 0] =>
            {
                let [ph, pw] = c.padding_total();
                Some(Shape::Chw([
                    channels,
                    h.saturating_add(ph),
                    w.saturating_add(pw),
                ]))
            }
            _ => None,
        }
    }

    /// Checks every argument against its type's range in the table.
    pub fn check_args(&self) -> Result<(), ShapeError> {
        for info in self.kind().args() {
            if !self.arg(info.name).is_some_and(|v| fits(info.ty, v)) {
                return Err(ShapeError::BadArgument { arg: info.name });
            }
        }
        Ok(())
    }

    /// The per-sample output for `inputs`, one shape per input in order: PyTorch's shape rule
    /// for this kind, of any arity ([`LayerKind::arity`]).
    pub fn output_shape_of(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let expected = self.kind().arity();
        if !expected.accepts(inputs.len()) {
            return Err(ShapeError::InputCount {
                expected,
                found: inputs.len(),
            });
        }
        let first = inputs[0];
        match self {
            LayerConfig::Add => {
                if inputs.iter().any(|&s| s != first) {
                    return Err(ShapeError::AddShapes {
                        inputs: inputs.to_vec(),
                    });
                }
                Ok(first)
            }
            LayerConfig::Concat(c) => {
                if softmax_dim(c.dim, first) != Some(1) {
                    return Err(ShapeError::BadDim {
                        dim: c.dim,
                        rank: batched_rank(first),
                    });
                }
                let mismatch = || ShapeError::ConcatShapes {
                    inputs: inputs.to_vec(),
                };
                match first {
                    Shape::Chw([_, h, w]) => {
                        let mut channels = 0usize;
                        for &s in inputs {
                            match s {
                                Shape::Chw([c, sh, sw]) if [sh, sw] == [h, w] => {
                                    channels = channels.saturating_add(c);
                                }
                                _ => return Err(mismatch()),
                            }
                        }
                        Ok(Shape::Chw([channels, h, w]))
                    }
                    Shape::Flat(_) => {
                        let mut features = 0usize;
                        for &s in inputs {
                            match s {
                                Shape::Flat(n) => features = features.saturating_add(n),
                                Shape::Chw(_) => return Err(mismatch()),
                            }
                        }
                        Ok(Shape::Flat(features))
                    }
                }
            }
            LayerConfig::Mul => {
                let (a, b) = (first.dims(), inputs[1].dims());
                let broadcast = a.len() == b.len()
                    && a.iter().zip(&b).all(|(&x, &y)| x == y || x == 1 || y == 1);
                if !broadcast {
                    return Err(ShapeError::MulShapes {
                        inputs: inputs.to_vec(),
                    });
                }
                let out: Vec<usize> = a.iter().zip(&b).map(|(&x, &y)| x.max(y)).collect();
                Ok(match out[..] {
                    [c, h, w] => Shape::Chw([c, h, w]),
                    _ => Shape::Flat(out[0]),
                })
            }
            _ => self.output_shape(first),
        }
    }

    /// The per-sample output for `input`: PyTorch's shape rule for this kind, for a kind that
    /// reads one input (a merge kind's rule is [`LayerConfig::output_shape_of`]).
    pub fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        Ok(match self {
            LayerConfig::Conv2d(c) => {
                let [channels, h, w] = image(input)?;
                same("in_channels", c.in_channels, channels)?;
                c.check_groups()?;
                if !c.is_symmetric() && !c.is_same_padding() {
                    return Err(ShapeError::BadArgument { arg: "padding" });
                }
                for (axis, size) in [h, w].into_iter().enumerate() {
                    // The side after the input is the larger.
                    if c.padding_end[axis] > c.padding_mode.max_padding(size) {
                        return Err(ShapeError::ModePadding { axis });
                    }
                }
                let out = |axis: usize, size: usize| {
                    conv_output(
                        size,
                        c.kernel_size[axis],
                        c.stride[axis],
                        c.pad(axis),
                        c.dilation[axis],
                    )
                    .ok_or(ShapeError::DoesNotFit { axis })
                };
                Shape::Chw([c.out_channels, out(0, h)?, out(1, w)?])
            }
            LayerConfig::MaxPool2d(c) | LayerConfig::AvgPool2d(c) => {
                let [channels, h, w] = image(input)?;
                if (0..2).any(|i| c.padding[i] > c.kernel_size[i] / 2) {
                    return Err(ShapeError::PoolPadding);
                }
                let avg = matches!(self, LayerConfig::AvgPool2d(_));
                if avg && c.dilation != [1, 1] {
                    return Err(ShapeError::BadArgument { arg: "dilation" });
                }
                if !avg && (!c.count_include_pad || c.divisor_override.is_some()) {
                    return Err(ShapeError::BadArgument {
                        arg: "count_include_pad",
                    });
                }
                let [kh, kw] = c.kernel_size;
                if matches!(self, LayerConfig::MaxPool2d(_))
                    && kh.saturating_mul(kw) > MAX_POOL_WINDOW
                {
                    return Err(ShapeError::PoolWindow);
                }
                let out = |axis: usize, size: usize| {
                    pool_output(
                        size,
                        c.kernel_size[axis],
                        c.stride[axis],
                        c.padding[axis],
                        c.dilation[axis],
                        c.ceil_mode,
                    )
                    .ok_or(ShapeError::DoesNotFit { axis })
                };
                Shape::Chw([channels, out(0, h)?, out(1, w)?])
            }
            LayerConfig::BatchNorm2d(c) => {
                let [channels, _, _] = image(input)?;
                same("num_features", c.num_features, channels)?;
                input
            }
            LayerConfig::Linear(c) => match input {
                Shape::Flat(n) => {
                    same("in_features", c.in_features, n)?;
                    Shape::Flat(c.out_features)
                }
                Shape::Chw(_) => return Err(ShapeError::NeedsFlat { found: input }),
            },
            LayerConfig::AdaptiveAvgPool2d { output_size }
            | LayerConfig::AdaptiveMaxPool2d { output_size } => {
                // Any output size works, larger than the input too: PyTorch's windows then
                // overlap, each keeping at least one element.
                let [channels, _, _] = image(input)?;
                Shape::Chw([channels, output_size[0], output_size[1]])
            }
            LayerConfig::Upsample(c) => {
                let [channels, h, w] = image(input)?;
                if c.mode == UpsampleMode::Nearest && c.align_corners.is_some() {
                    return Err(ShapeError::BadArgument {
                        arg: "align_corners",
                    });
                }
                // Exactly one of size and scale_factor; a product past usize saturates, and
                // the size limits refuse it.
                let [oh, ow] = match (c.size, c.scale_factor) {
                    (Some(size), None) => size,
                    (None, Some([sh, sw])) => [h.saturating_mul(sh), w.saturating_mul(sw)],
                    _ => return Err(ShapeError::BadArgument { arg: "size" }),
                };
                Shape::Chw([channels, oh, ow])
            }
            LayerConfig::ConvTranspose2d(c) => {
                let [channels, h, w] = image(input)?;
                same("in_channels", c.in_channels, channels)?;
                for (arg, channels) in [
                    ("in_channels", c.in_channels),
                    ("out_channels", c.out_channels),
                ] {
                    if c.groups == 0 || !channels.is_multiple_of(c.groups) {
                        return Err(ShapeError::Groups {
                            arg,
                            channels,
                            groups: c.groups,
                        });
                    }
                }
                if !c.output_padding_fits() {
                    return Err(ShapeError::BadArgument {
                        arg: "output_padding",
                    });
                }
                let out = |axis: usize, size: usize| {
                    usize::try_from(c.output_len(axis, size))
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or(ShapeError::DoesNotFit { axis })
                };
                Shape::Chw([c.out_channels, out(0, h)?, out(1, w)?])
            }
            LayerConfig::Flatten { start_dim, end_dim } => {
                flatten_output(*start_dim, *end_dim, input).ok_or(ShapeError::FlattenDims {
                    start_dim: *start_dim,
                    end_dim: *end_dim,
                    rank: batched_rank(input),
                })?
            }
            LayerConfig::GroupNorm(c) => {
                let [channels, _, _] = image(input)?;
                same("num_channels", c.num_channels, channels)?;
                if c.num_groups == 0 || !channels.is_multiple_of(c.num_groups) {
                    return Err(ShapeError::Groups {
                        arg: "num_channels",
                        channels,
                        groups: c.num_groups,
                    });
                }
                input
            }
            LayerConfig::Relu
            | LayerConfig::LeakyRelu { .. }
            | LayerConfig::Sigmoid
            | LayerConfig::Tanh
            | LayerConfig::Dropout { .. } => input,
            LayerConfig::Relu6
            | LayerConfig::Silu
            | LayerConfig::Gelu { .. }
            | LayerConfig::Hardswish
            | LayerConfig::Hardsigmoid
            | LayerConfig::Elu { .. }
            | LayerConfig::Identity => input,
            LayerConfig::Dropout2d { .. } => {
                image(input)?;
                input
            }
            LayerConfig::Prelu { num_parameters } => {
                let channels = match input {
                    Shape::Chw([c, _, _]) => c,
                    Shape::Flat(n) => n,
                };
                if *num_parameters != 1 {
                    same("num_parameters", *num_parameters, channels)?;
                }
                input
            }
            LayerConfig::Add | LayerConfig::Concat(_) | LayerConfig::Mul => {
                return Err(ShapeError::InputCount {
                    expected: self.kind().arity(),
                    found: 1,
                });
            }
            LayerConfig::Softmax { dim } | LayerConfig::LogSoftmax { dim } => {
                match softmax_dim(*dim, input) {
                    Some(_) => input,
                    None => {
                        return Err(ShapeError::BadDim {
                            dim: *dim,
                            rank: batched_rank(input),
                        });
                    }
                }
            }
        })
    }

    /// The layer's state_dict entries under prefix `layer`: parameters then buffers, in
    /// PyTorch's order and layout.
    pub fn tensors(&self, layer: &str) -> Vec<TensorInfo> {
        match self {
            LayerConfig::Conv2d(c) => {
                let [kh, kw] = c.kernel_size;
                let mut tensors = vec![tensor(
                    layer,
                    TensorRole::Weight,
                    vec![c.out_channels, c.in_channels / c.groups.max(1), kh, kw],
                )];
                if c.bias {
                    tensors.push(tensor(layer, TensorRole::Bias, vec![c.out_channels]));
                }
                tensors
            }
            LayerConfig::ConvTranspose2d(c) => {
                let [kh, kw] = c.kernel_size;
                let mut tensors = vec![tensor(
                    layer,
                    TensorRole::Weight,
                    vec![c.in_channels, c.out_channels / c.groups.max(1), kh, kw],
                )];
                if c.bias {
                    tensors.push(tensor(layer, TensorRole::Bias, vec![c.out_channels]));
                }
                tensors
            }
            LayerConfig::Linear(c) => {
                let mut tensors = vec![tensor(
                    layer,
                    TensorRole::Weight,
                    vec![c.out_features, c.in_features],
                )];
                if c.bias {
                    tensors.push(tensor(layer, TensorRole::Bias, vec![c.out_features]));
                }
                tensors
            }
            LayerConfig::BatchNorm2d(c) => {
                let n = c.num_features;
                let mut tensors = Vec::new();
                if c.affine {
                    tensors.push(tensor(layer, TensorRole::Weight, vec![n]));
                    tensors.push(tensor(layer, TensorRole::Bias, vec![n]));
                }
                if c.track_running_stats {
                    tensors.push(tensor(layer, TensorRole::RunningMean, vec![n]));
                    tensors.push(tensor(layer, TensorRole::RunningVar, vec![n]));
                    tensors.push(tensor(layer, TensorRole::NumBatchesTracked, Vec::new()));
                }
                tensors
            }
            LayerConfig::GroupNorm(c) if c.affine => {
                let n = c.num_channels;
                vec![
                    tensor(layer, TensorRole::Weight, vec![n]),
                    tensor(layer, TensorRole::Bias, vec![n]),
                ]
            }
            LayerConfig::Prelu { num_parameters } => {
                vec![tensor(layer, TensorRole::Weight, vec![*num_parameters])]
            }
            _ => Vec::new(),
        }
    }

    /// Multiply-adds per sample producing `output`, counted as torchinfo does: a convolution's
    /// weight and bias elements times its output positions, a linear layer's weight and bias
    /// elements, a batchnorm's or groupnorm's weight and bias (`2 * channels` when affine), a
    /// PReLU's slopes, and 0 for the rest.
    pub fn macs(&self, output: Shape) -> u64 {
        let params = || -> u64 {
            self.tensors("")
                .iter()
                .filter(|t| t.role.is_trainable())
                .map(|t| t.numel() as u64)
                .sum()
        };
        match (self, output) {
            (LayerConfig::Conv2d(_) | LayerConfig::ConvTranspose2d(_), Shape::Chw([_, h, w])) => {
                params().saturating_mul((h as u64).saturating_mul(w as u64))
            }
            (
                LayerConfig::Linear(_)
                | LayerConfig::BatchNorm2d(_)
                | LayerConfig::GroupNorm(_)
                | LayerConfig::Prelu { .. },
                _,
            ) => params(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_table() {
        let written = |name: &str| match name {
            "kernel_size" => Some(ArgValue::Int(3)),
            _ => None,
        };
        let Some(LayerConfig::MaxPool2d(pool)) =
            LayerConfig::from_args(LayerKind::MaxPool2d, written)
        else {
            panic!("a pool");
        };
        assert_eq!(pool.stride, [3, 3]);
        assert_eq!(pool.padding, [0, 0]);
        assert!(!pool.ceil_mode);
        // in_channels is inferred: the caller must give it.
        assert_eq!(LayerConfig::from_args(LayerKind::Conv2d, written), None);
        let bn = LayerConfig::from_args(LayerKind::BatchNorm2d, |n| {
            (n == "num_features").then_some(ArgValue::Int(8))
        });
        assert_eq!(
            bn,
            Some(LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(8)))
        );
        let flatten = LayerConfig::from_args(LayerKind::Flatten, |_| None);
        assert_eq!(flatten, Some(LayerConfig::FLATTEN));
    }

    #[test]
    fn arguments_read_back_as_written() {
        for kind in LayerKind::ALL {
            fn of(ty: ArgType) -> ArgValue {
                match ty {
                    ArgType::Size { .. } => ArgValue::Int(4),
                    ArgType::Pair { .. } => ArgValue::Pair([2, 2]),
                    ArgType::Float { .. } => ArgValue::Float(0.25),
                    ArgType::Bool => ArgValue::Bool(false),
                    ArgType::Dim => ArgValue::Dim(-1),
                    ArgType::Choice(words) => ArgValue::Word(words[words.len() - 1]),
                    ArgType::Optional(_) => ArgValue::None,
                }
            }
            let sample = |name: &str| Some(of(kind.arg(name)?.ty));
            let config = LayerConfig::from_args(kind, sample).unwrap();
            assert_eq!(config.kind(), kind);
            for info in kind.args() {
                assert_eq!(
                    config.arg(info.name),
                    sample(info.name),
                    "{kind:?}.{}",
                    info.name
                );
            }
            assert_eq!(config.check_args(), Ok(()), "{kind:?}");
        }
    }

    /// `conv2d` from its written arguments: 4 channels in, 2 out, `kernel_size` and the rest.
    fn conv_of(args: &[(&str, ArgValue)]) -> Option<LayerConfig> {
        LayerConfig::from_args(LayerKind::Conv2d, |name| match name {
            "in_channels" => Some(ArgValue::Int(4)),
            "out_channels" => Some(ArgValue::Int(2)),
            _ => args.iter().find(|(n, _)| *n == name).map(|&(_, v)| v),
        })
    }

    #[test]
    fn same_padding_pads_the_odd_pixel_after_the_input() {
        use ArgValue::{Pair, Word};
        let same = Word("same");
        // Kernel [2, 4], dilation [1, 3]: totals 1 and 9, as PyTorch's
        // `_reversed_padding_repeated_twice == [4, 5, 0, 1]`.
        let Some(LayerConfig::Conv2d(c)) = conv_of(&[
            ("kernel_size", Pair([2, 4])),
            ("dilation", Pair([1, 3])),
            ("padding", same),
        ]) else {
            panic!("a convolution");
        };
        assert_eq!((c.padding, c.padding_end), ([0, 4], [1, 5]));
        assert_eq!(c.padding_total(), [1, 9]);
        assert!(!c.is_symmetric() && c.is_same_padding());
        let conv = LayerConfig::Conv2d(c.clone());
        assert_eq!(
            conv.output_shape(Shape::Chw([4, 7, 12])),
            Ok(Shape::Chw([2, 7, 12]))
        );
        // It reads back as the word, and the word builds it again.
        assert_eq!(conv.arg("padding"), Some(same));
        assert_eq!(conv.check_args(), Ok(()));
        let again = conv_of(&[
            ("kernel_size", Pair([2, 4])),
            ("dilation", Pair([1, 3])),
            ("padding", conv.arg("padding").unwrap()),
        ]);
        assert_eq!(again.as_ref(), Some(&conv));
        // An odd total pads evenly and reads back as pixels, as it always did.
        let odd = conv_of(&[("kernel_size", Pair([3, 5])), ("padding", same)]).unwrap();
        assert_eq!(odd.arg("padding"), Some(Pair([1, 2])));
        assert_eq!(
            odd,
            conv_of(&[("kernel_size", Pair([3, 5])), ("padding", Pair([1, 2]))]).unwrap()
        );
        // PyTorch refuses `same` for a strided convolution.
        let strided = [
            ("kernel_size", Pair([2, 2])),
            ("stride", Pair([2, 2])),
            ("padding", same),
        ];
        assert_eq!(conv_of(&strided), None);
        // Uneven padding other than `same`'s is no convolution PyTorch can write.
        let mut odd_one = c.clone();
        odd_one.padding_end = [2, 5];
        assert_eq!(
            LayerConfig::Conv2d(odd_one).output_shape(Shape::Chw([4, 7, 12])),
            Err(ShapeError::BadArgument { arg: "padding" })
        );
        let mut strided = c.clone();
        strided.stride = [1, 2];
        assert_eq!(
            LayerConfig::Conv2d(strided).output_shape(Shape::Chw([4, 7, 12])),
            Err(ShapeError::BadArgument { arg: "padding" })
        );
        // `reflect` pads at most size - 1 on each side: the larger side, after, decides.
        let reflect = |h| {
            let mut c = c.clone();
            c.kernel_size = [4, 1];
            c.dilation = [1, 1];
            [c.padding, c.padding_end] = Conv2dConfig::same_padding(c.kernel_size, c.dilation);
            c.padding_mode = PaddingMode::Reflect;
            LayerConfig::Conv2d(c).output_shape(Shape::Chw([4, h, 5]))
        };
        assert_eq!(reflect(3), Ok(Shape::Chw([2, 3, 5])));
        assert_eq!(reflect(2), Err(ShapeError::ModePadding { axis: 0 }));
    }

    #[test]
    fn rust_expressions_read_back_as_the_config() {
        // The Debug text of a config is the expression without the paths.
        let configs = [
            LayerConfig::LeakyRelu {
                negative_slope: -0.2,
            },
            LayerConfig::Dropout { p: 1e-5 },
            LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(3)),
            LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                momentum: None,
                affine: false,
                ..BatchNorm2dConfig::new(3)
            }),
            LayerConfig::GroupNorm(GroupNormConfig {
                num_groups: 2,
                num_channels: 6,
                eps: 1e-3,
                affine: false,
            }),
            LayerConfig::AvgPool2d(Pool2dConfig {
                count_include_pad: false,
                divisor_override: Some(3),
                ..Pool2dConfig::new([3, 3], [2, 2], [1, 1])
            }),
            LayerConfig::MaxPool2d(Pool2dConfig {
                dilation: [2, 1],
                ceil_mode: true,
                ..Pool2dConfig::new([3, 3], [1, 1], [0, 0])
            }),
            LayerConfig::FLATTEN,
            LayerConfig::Flatten {
                start_dim: 2,
                end_dim: 2,
            },
            LayerConfig::Relu,
            LayerConfig::Elu { alpha: 0.5 },
            LayerConfig::Gelu {
                approximate: GeluApproximate::Tanh,
            },
            LayerConfig::Dropout2d { p: 0.125 },
            LayerConfig::Upsample(UpsampleConfig::nearest([2, 3])),
            LayerConfig::Upsample(UpsampleConfig {
                size: Some([7, 9]),
                scale_factor: None,
                mode: UpsampleMode::Bilinear,
                align_corners: Some(false),
            }),
            LayerConfig::Softmax { dim: -1 },
            LayerConfig::LogSoftmax { dim: 2 },
            LayerConfig::Add,
            LayerConfig::Mul,
            LayerConfig::Concat(ConcatConfig { dim: -3 }),
        ];
        for config in configs {
            let expr = config.rust_expr("c");
            let expected = format!("{config:?}")
                .replace("BatchNorm2dConfig", "c::BatchNorm2dConfig")
                .replace("ConcatConfig", "c::ConcatConfig")
                .replace("GroupNormConfig", "c::GroupNormConfig")
                .replace("Pool2dConfig", "c::Pool2dConfig")
                .replace("UpsampleConfig", "c::UpsampleConfig")
                .replace(" mode: ", " mode: c::UpsampleMode::")
                .replace("Some(", "::core::option::Option::Some(")
                .replace(": None", ": ::core::option::Option::None")
                .replace("approximate: ", "approximate: c::GeluApproximate::");
            assert_eq!(expr, format!("c::LayerConfig::{expected}"));
        }
    }

    // F.pad(torch.arange(4.).view(1, 1, 4), (3, 3), mode=m) for m in reflect, replicate,
    // circular (PyTorch 2.15): [3, 2, 1, 0, 1, 2, 3, 2, 1, 0], [0, 0, 0, 0, 1, 2, 3, 3, 3, 3],
    // [1, 2, 3, 0, 1, 2, 3, 0, 1, 2].
    #[test]
    fn padding_modes_read_pytorchs_positions() {
        let read = |mode: PaddingMode| -> Vec<Option<usize>> {
            (0..10).map(|i| mode.source(i, 3, 4)).collect()
        };
        let some = |v: [usize; 10]| v.map(Some).to_vec();
        assert_eq!(
            read(PaddingMode::Reflect),
            some([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
        );
        assert_eq!(
            read(PaddingMode::Replicate),
            some([0, 0, 0, 0, 1, 2, 3, 3, 3, 3])
        );
        assert_eq!(
            read(PaddingMode::Circular),
            some([1, 2, 3, 0, 1, 2, 3, 0, 1, 2])
        );
        assert_eq!(PaddingMode::Zeros.source(2, 3, 4), None);
        assert_eq!(PaddingMode::Zeros.source(3, 3, 4), Some(0));
        assert_eq!(PaddingMode::Reflect.max_padding(4), 3);
        assert_eq!(PaddingMode::Circular.max_padding(4), 4);
        for mode in PaddingMode::ALL {
            assert_eq!(PaddingMode::from_word(mode.word()), Some(mode));
        }
    }

    #[test]
    fn shape_rules() {
        let conv = LayerConfig::Conv2d(Conv2dConfig {
            in_channels: 3,
            out_channels: 8,
            kernel_size: [5, 5],
            stride: [1, 1],
            padding: [2, 2],
            padding_end: [2, 2],
            dilation: [1, 1],
            groups: 1,
            bias: true,
            padding_mode: Default::default(),
        });
        assert_eq!(
            conv.output_shape(Shape::Chw([3, 32, 32])),
            Ok(Shape::Chw([8, 32, 32]))
        );
        assert_eq!(
            conv.output_shape(Shape::Chw([1, 32, 32])),
            Err(ShapeError::SizeMismatch {
                arg: "in_channels",
                written: 3,
                actual: 1
            })
        );
        assert_eq!(
            conv.macs(Shape::Chw([8, 32, 32])),
            (8 * 3 * 25 + 8) * 32 * 32
        );
        assert!(matches!(
            LayerConfig::FLATTEN.output_shape(Shape::Chw([2, 3, 4])),
            Ok(Shape::Flat(24))
        ));
    }

    #[test]
    fn merge_shape_rules() {
        let image = |c, h, w| Shape::Chw([c, h, w]);
        assert_eq!(
            LayerConfig::Add.output_shape_of(&[image(2, 3, 3); 3]),
            Ok(image(2, 3, 3))
        );
        let mixed = [image(2, 3, 3), image(2, 3, 4)];
        assert_eq!(
            LayerConfig::Add.output_shape_of(&mixed),
            Err(ShapeError::AddShapes {
                inputs: mixed.to_vec()
            })
        );
        assert_eq!(
            LayerConfig::Add.output_shape_of(&[image(2, 3, 3)]),
            Err(ShapeError::InputCount {
                expected: Arity::AtLeast(2),
                found: 1
            })
        );
        let cat = |dim| LayerConfig::Concat(ConcatConfig { dim });
        assert_eq!(
            cat(1).output_shape_of(&[image(2, 3, 3), image(5, 3, 3), image(1, 3, 3)]),
            Ok(image(8, 3, 3))
        );
        assert_eq!(
            cat(-3).output_shape_of(&[image(2, 3, 3), image(5, 3, 3)]),
            Ok(image(7, 3, 3))
        );
        assert_eq!(
            cat(-1).output_shape_of(&[Shape::Flat(4), Shape::Flat(6)]),
            Ok(Shape::Flat(10))
        );
        assert_eq!(
            cat(2).output_shape_of(&[image(2, 3, 3), image(2, 3, 3)]),
            Err(ShapeError::BadDim { dim: 2, rank: 4 })
        );
        for inputs in [
            vec![image(2, 3, 3), image(2, 4, 3)],
            vec![image(2, 3, 3), Shape::Flat(18)],
            vec![Shape::Flat(18), image(2, 3, 3)],
        ] {
            assert_eq!(
                cat(1).output_shape_of(&inputs),
                Err(ShapeError::ConcatShapes { inputs })
            );
        }
        let mul = |a, b| LayerConfig::Mul.output_shape_of(&[a, b]);
        assert_eq!(mul(image(4, 1, 1), image(4, 5, 6)), Ok(image(4, 5, 6)));
        assert_eq!(mul(image(4, 5, 6), image(4, 1, 1)), Ok(image(4, 5, 6)));
        assert_eq!(mul(image(1, 5, 6), image(4, 5, 1)), Ok(image(4, 5, 6)));
        assert_eq!(mul(Shape::Flat(1), Shape::Flat(7)), Ok(Shape::Flat(7)));
        assert_eq!(
            mul(image(3, 1, 1), image(4, 5, 6)),
            Err(ShapeError::MulShapes {
                inputs: vec![image(3, 1, 1), image(4, 5, 6)]
            })
        );
        assert!(matches!(
            mul(Shape::Flat(4), image(4, 1, 1)),
            Err(ShapeError::MulShapes { .. })
        ));
        assert_eq!(
            mul(image(3, 1, 1), image(4, 5, 6)).unwrap_err().to_string(),
            "needs inputs of one rank whose dimensions are equal or 1, found [3, 1, 1], [4, 5, 6]"
        );
        // A merge kind's single-input rule is an arity error, never a shape.
        assert!(matches!(
            LayerConfig::Mul.output_shape(image(1, 1, 1)),
            Err(ShapeError::InputCount { found: 1, .. })
        ));
        for merge in [LayerConfig::Add, cat(1), LayerConfig::Mul] {
            assert!(merge.tensors("m").is_empty());
            assert_eq!(merge.macs(image(4, 5, 6)), 0);
        }
    }

    #[test]
    fn flatten_keeps_only_shapes_cnnc_can_represent() {
        let image = Shape::Chw([2, 3, 4]);
        assert_eq!(flatten_output(1, -1, image), Some(Shape::Flat(24)));
        assert_eq!(flatten_output(-3, 3, image), Some(Shape::Flat(24)));
        // A single dim flattens nothing.
        assert_eq!(flatten_output(2, 2, image), Some(image));
        assert_eq!(flatten_output(-1, -1, image), Some(image));
        // [C*H, W], [C, H*W]: neither an image nor flat.
        assert_eq!(flatten_output(1, 2, image), None);
        assert_eq!(flatten_output(2, 3, image), None);
        // The batch, a start after the end, out of range.
        assert_eq!(flatten_output(0, -1, image), None);
        assert_eq!(flatten_output(3, 1, image), None);
        assert_eq!(flatten_output(1, 4, image), None);
        assert_eq!(flatten_output(1, -1, Shape::Flat(5)), Some(Shape::Flat(5)));
        assert_eq!(flatten_output(1, 2, Shape::Flat(5)), None);
        assert_eq!(
            LayerConfig::Flatten {
                start_dim: 2,
                end_dim: 3
            }
            .output_shape(image),
            Err(ShapeError::FlattenDims {
                start_dim: 2,
                end_dim: 3,
                rank: 4
            })
        );
    }

    #[test]
    fn normalisation_tensors_follow_affine_and_tracking() {
        let names = |c: &LayerConfig| -> Vec<String> {
            c.tensors("bn").into_iter().map(|t| t.name).collect()
        };
        let bn = BatchNorm2dConfig::new(4);
        assert_eq!(names(&LayerConfig::BatchNorm2d(bn.clone())).len(), 5);
        let plain = LayerConfig::BatchNorm2d(BatchNorm2dConfig {
            affine: false,
            ..bn.clone()
        });
        assert_eq!(
            names(&plain),
            [
                "bn.running_mean",
                "bn.running_var",
                "bn.num_batches_tracked"
            ]
        );
        assert_eq!(plain.macs(Shape::Chw([4, 5, 5])), 0);
        let untracked = LayerConfig::BatchNorm2d(BatchNorm2dConfig {
            track_running_stats: false,
            ..bn
        });
        assert_eq!(names(&untracked), ["bn.weight", "bn.bias"]);
        assert_eq!(untracked.macs(Shape::Chw([4, 5, 5])), 8);
        let gn = GroupNormConfig {
            num_groups: 2,
            num_channels: 6,
            eps: 1e-5,
            affine: true,
        };
        let layer = LayerConfig::GroupNorm(gn.clone());
        assert_eq!(names(&layer), ["bn.weight", "bn.bias"]);
        assert_eq!(layer.macs(Shape::Chw([6, 3, 3])), 12);
        let input = Shape::Chw([6, 3, 3]);
        assert_eq!(layer.output_shape(input), Ok(input));
        assert_eq!(
            LayerConfig::GroupNorm(GroupNormConfig {
                num_groups: 4,
                ..gn.clone()
            })
            .output_shape(input),
            Err(ShapeError::Groups {
                arg: "num_channels",
                channels: 6,
                groups: 4
            })
        );
        let plain = LayerConfig::GroupNorm(GroupNormConfig {
            affine: false,
            ..gn
        });
        assert!(names(&plain).is_empty());
    }

    #[test]
    fn softmax_dims_count_the_batch() {
        let image = Shape::Chw([2, 3, 4]);
        assert_eq!(softmax_dim(1, image), Some(1));
        assert_eq!(softmax_dim(-1, image), Some(3));
        assert_eq!(softmax_dim(-3, image), Some(1));
        assert_eq!(softmax_dim(0, image), None);
        assert_eq!(softmax_dim(-4, image), None);
        assert_eq!(softmax_dim(4, image), None);
        assert_eq!(softmax_dim(-1, Shape::Flat(5)), Some(1));
        assert_eq!(softmax_dim(2, Shape::Flat(5)), None);
        assert_eq!(softmax_dim(i64::MIN, Shape::Flat(5)), None);
        assert_eq!(softmax_dim(i64::MAX, Shape::Flat(5)), None);
        let softmax = LayerConfig::Softmax { dim: 2 };
        assert_eq!(softmax.output_shape(image), Ok(image));
        assert_eq!(
            softmax.output_shape(Shape::Flat(5)),
            Err(ShapeError::BadDim { dim: 2, rank: 2 })
        );
    }

    #[test]
    fn resampling_shape_rules() {
        let input = Shape::Chw([3, 5, 7]);
        let adaptive = LayerConfig::AdaptiveMaxPool2d {
            output_size: [9, 2],
        };
        assert_eq!(adaptive.output_shape(input), Ok(Shape::Chw([3, 9, 2])));
        assert_eq!(adaptive.macs(Shape::Chw([3, 9, 2])), 0);
        let up = LayerConfig::Upsample(UpsampleConfig::nearest([2, 3]));
        assert_eq!(up.output_shape(input), Ok(Shape::Chw([3, 10, 21])));
        let sized = UpsampleConfig {
            size: Some([8, 3]),
            scale_factor: None,
            mode: UpsampleMode::Bilinear,
            align_corners: Some(true),
        };
        let layer = LayerConfig::Upsample(sized.clone());
        assert_eq!(layer.output_shape(input), Ok(Shape::Chw([3, 8, 3])));
        let refused = |c: UpsampleConfig| LayerConfig::Upsample(c).output_shape(input);
        assert_eq!(
            refused(UpsampleConfig {
                scale_factor: Some([2, 2]),
                ..sized.clone()
            }),
            Err(ShapeError::BadArgument { arg: "size" })
        );
        assert_eq!(
            refused(UpsampleConfig {
                mode: UpsampleMode::Nearest,
                ..sized
            }),
            Err(ShapeError::BadArgument {
                arg: "align_corners"
            })
        );
        assert!(matches!(
            up.output_shape(Shape::Flat(4)),
            Err(ShapeError::NeedsImage { .. })
        ));
        let convt = ConvTranspose2dConfig {
            in_channels: 3,
            out_channels: 4,
            kernel_size: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            output_padding: [1, 1],
            groups: 1,
            bias: true,
            dilation: [1, 1],
        };
        // (5 - 1) * 2 - 2 + 2 + 1 + 1 = 10, (7 - 1) * 2 - 2 + 2 + 1 + 1 = 14.
        let layer = LayerConfig::ConvTranspose2d(convt.clone());
        assert_eq!(layer.output_shape(input), Ok(Shape::Chw([4, 10, 14])));
        assert_eq!(layer.tensors("t")[0].shape, vec![3, 4, 3, 3]);
        assert_eq!(
            layer.macs(Shape::Chw([4, 10, 14])),
            (3 * 4 * 9 + 4) * 10 * 14
        );
        let refused =
            |c: ConvTranspose2dConfig| LayerConfig::ConvTranspose2d(c).output_shape(input);
        assert_eq!(
            refused(ConvTranspose2dConfig {
                output_padding: [2, 0],
                ..convt.clone()
            }),
            Err(ShapeError::BadArgument {
                arg: "output_padding"
            })
        );
        assert_eq!(
            refused(ConvTranspose2dConfig {
                groups: 3,
                ..convt.clone()
            }),
            Err(ShapeError::Groups {
                arg: "out_channels",
                channels: 4,
                groups: 3
            })
        );
        // Depthwise-style: groups 3 divides 3 inputs and 6 outputs.
        let grouped = ConvTranspose2dConfig {
            groups: 3,
            out_channels: 6,
            ..convt.clone()
        };
        assert_eq!(
            LayerConfig::ConvTranspose2d(grouped).output_shape(input),
            Ok(Shape::Chw([6, 10, 14]))
        );
        assert_eq!(
            refused(ConvTranspose2dConfig {
                padding: [9, 1],
                ..convt
            }),
            Err(ShapeError::DoesNotFit { axis: 0 })
        );
    }
}
