//! The checked, fully resolved model that later stages (code generation, the dynamic executor,
//! `summary`) consume without re-deriving anything. The argument structs mirror
//! `cnnc_runtime::config` field for field, so lowering is a 1:1 copy.

use serde::Serialize;

use crate::shape::Shape;
use crate::span::Span;

/// A 2-D size or offset, `[height, width]`.
pub type Pair = [usize; 2];

/// The layer kinds a spec can use, each a PyTorch module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// `torch.nn.Conv2d`.
    Conv2d,
    /// `torch.nn.MaxPool2d`.
    Maxpool2d,
    /// `torch.nn.AvgPool2d`.
    Avgpool2d,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.LeakyReLU`.
    LeakyRelu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.Tanh`.
    Tanh,
    /// `torch.nn.Flatten`.
    Flatten,
    /// `torch.nn.Linear`.
    Linear,
    /// `torch.nn.Dropout`.
    Dropout,
    /// `torch.nn.BatchNorm2d`.
    Batchnorm2d,
}

impl LayerKind {
    /// Every kind, in documentation order.
    pub const ALL: [LayerKind; 11] = [
        LayerKind::Conv2d,
        LayerKind::Maxpool2d,
        LayerKind::Avgpool2d,
        LayerKind::Relu,
        LayerKind::LeakyRelu,
        LayerKind::Sigmoid,
        LayerKind::Tanh,
        LayerKind::Flatten,
        LayerKind::Linear,
        LayerKind::Dropout,
        LayerKind::Batchnorm2d,
    ];

    /// The spelling in specs (`conv2d`, `leaky_relu`).
    pub fn keyword(self) -> &'static str {
        match self {
            LayerKind::Conv2d => "conv2d",
            LayerKind::Maxpool2d => "maxpool2d",
            LayerKind::Avgpool2d => "avgpool2d",
            LayerKind::Relu => "relu",
            LayerKind::LeakyRelu => "leaky_relu",
            LayerKind::Sigmoid => "sigmoid",
            LayerKind::Tanh => "tanh",
            LayerKind::Flatten => "flatten",
            LayerKind::Linear => "linear",
            LayerKind::Dropout => "dropout",
            LayerKind::Batchnorm2d => "batchnorm2d",
        }
    }

    /// The PyTorch class name (`Conv2d`, `LeakyReLU`), as torchinfo prints it.
    pub fn torch_name(self) -> &'static str {
        match self {
            LayerKind::Conv2d => "Conv2d",
            LayerKind::Maxpool2d => "MaxPool2d",
            LayerKind::Avgpool2d => "AvgPool2d",
            LayerKind::Relu => "ReLU",
            LayerKind::LeakyRelu => "LeakyReLU",
            LayerKind::Sigmoid => "Sigmoid",
            LayerKind::Tanh => "Tanh",
            LayerKind::Flatten => "Flatten",
            LayerKind::Linear => "Linear",
            LayerKind::Dropout => "Dropout",
            LayerKind::Batchnorm2d => "BatchNorm2d",
        }
    }

    /// The kind spelt `keyword` in a spec.
    pub fn from_keyword(keyword: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.keyword() == keyword)
    }
}

/// A layer's arguments, every default applied and every inferred size filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerArgs {
    /// `torch.nn.Conv2d`.
    Conv2d(Conv2dArgs),
    /// `torch.nn.MaxPool2d`.
    Maxpool2d(Pool2dArgs),
    /// `torch.nn.AvgPool2d` (count_include_pad=True).
    Avgpool2d(Pool2dArgs),
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
    /// `torch.nn.Flatten` (C, H, W order).
    Flatten,
    /// `torch.nn.Linear`.
    Linear(LinearArgs),
    /// `torch.nn.Dropout(p)`.
    Dropout {
        /// Probability of zeroing an element in training mode.
        p: f32,
    },
    /// `torch.nn.BatchNorm2d`.
    Batchnorm2d(BatchNorm2dArgs),
}

impl LayerArgs {
    /// The kind these arguments belong to.
    pub fn kind(&self) -> LayerKind {
        match self {
            LayerArgs::Conv2d(_) => LayerKind::Conv2d,
            LayerArgs::Maxpool2d(_) => LayerKind::Maxpool2d,
            LayerArgs::Avgpool2d(_) => LayerKind::Avgpool2d,
            LayerArgs::Relu => LayerKind::Relu,
            LayerArgs::LeakyRelu { .. } => LayerKind::LeakyRelu,
            LayerArgs::Sigmoid => LayerKind::Sigmoid,
            LayerArgs::Tanh => LayerKind::Tanh,
            LayerArgs::Flatten => LayerKind::Flatten,
            LayerArgs::Linear(_) => LayerKind::Linear,
            LayerArgs::Dropout { .. } => LayerKind::Dropout,
            LayerArgs::Batchnorm2d(_) => LayerKind::Batchnorm2d,
        }
    }
}

/// Arguments of `torch.nn.Conv2d`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conv2dArgs {
    /// Input channels (inferred when not written).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]`.
    pub stride: Pair,
    /// Zero padding `[ph, pw]` on each side.
    pub padding: Pair,
    /// Dilation `[dh, dw]`.
    pub dilation: Pair,
    /// Whether the layer has a bias.
    pub bias: bool,
}

/// Arguments of `torch.nn.MaxPool2d` / `torch.nn.AvgPool2d`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pool2dArgs {
    /// Window `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]` (defaults to the kernel size, already applied).
    pub stride: Pair,
    /// Implicit padding `[ph, pw]` on each side.
    pub padding: Pair,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

/// Arguments of `torch.nn.Linear`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinearArgs {
    /// Input features (inferred when not written).
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

/// Arguments of `torch.nn.BatchNorm2d`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchNorm2dArgs {
    /// Channels (inferred when not written).
    pub num_features: usize,
    /// Added to the variance for numerical stability.
    pub eps: f32,
    /// Running statistics update factor.
    pub momentum: f32,
}

/// What a state_dict entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorRole {
    /// Trainable `weight`.
    Weight,
    /// Trainable `bias`.
    Bias,
    /// BatchNorm `running_mean` buffer.
    RunningMean,
    /// BatchNorm `running_var` buffer.
    RunningVar,
    /// BatchNorm `num_batches_tracked` buffer (an int64 scalar in PyTorch).
    NumBatchesTracked,
}

impl TensorRole {
    /// The state_dict suffix (`weight`, `running_mean`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            TensorRole::Weight => "weight",
            TensorRole::Bias => "bias",
            TensorRole::RunningMean => "running_mean",
            TensorRole::RunningVar => "running_var",
            TensorRole::NumBatchesTracked => "num_batches_tracked",
        }
    }

    /// Whether an optimizer updates it (parameters) or not (buffers).
    pub fn is_trainable(self) -> bool {
        matches!(self, TensorRole::Weight | TensorRole::Bias)
    }
}

/// One state_dict entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// Full state_dict name, `<layer>.<suffix>` (`layer1.0.weight`).
    pub name: String,
    /// What it is for.
    pub role: TensorRole,
    /// PyTorch layout: conv weight `[out, in, kh, kw]`, linear weight `[out, in]`, vectors
    /// `[n]`, and `[]` for the `num_batches_tracked` scalar.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One checked layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckedLayer {
    /// State-dict prefix: the explicit name, or the layer's index (`"3"`) like `nn.Sequential`.
    pub name: String,
    /// What the layer computes.
    pub kind: LayerKind,
    /// Resolved arguments.
    pub args: LayerArgs,
    /// Per-sample input shape.
    pub input_shape: Shape,
    /// Per-sample output shape.
    pub output_shape: Shape,
    /// Parameters then buffers, in PyTorch's state_dict order.
    pub tensors: Vec<TensorInfo>,
    /// Trainable parameter count (PyTorch's `sum(p.numel() for p in m.parameters())`).
    pub params: u64,
    /// Multiply-adds per sample, counted as torchinfo does: a convolution's weight and bias
    /// elements times its output positions, a linear layer's weight and bias elements, a
    /// batchnorm's `2 * num_features`, and 0 for the rest.
    pub macs: u64,
    /// Where the layer is written.
    #[serde(skip)]
    pub span: Span,
}

/// A checked model: every layer resolved, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckedModel {
    /// The `model` name, if given.
    pub name: Option<String>,
    /// Per-sample input shape `[C, H, W]`.
    pub input: [usize; 3],
    /// The layers. When checking failed this is the prefix that could be resolved.
    pub layers: Vec<CheckedLayer>,
}

impl CheckedModel {
    /// Per-sample input shape.
    pub fn input_shape(&self) -> Shape {
        Shape::Chw(self.input)
    }

    /// Per-sample output shape (of the last resolved layer).
    pub fn output_shape(&self) -> Shape {
        self.layers
            .last()
            .map_or(self.input_shape(), |layer| layer.output_shape)
    }

    /// Total parameter count.
    pub fn total_params(&self) -> u64 {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Trainable parameter count (every parameter is trainable; buffers are not counted).
    pub fn trainable_params(&self) -> u64 {
        self.total_params()
    }

    /// Total multiply-adds per sample.
    pub fn total_macs(&self) -> u64 {
        self.layers
            .iter()
            .fold(0, |sum, l| sum.saturating_add(l.macs))
    }

    /// Bytes of f32 activations one sample produces in a forward pass (every layer's output).
    pub fn activation_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.output_shape.numel() as u64 * 4)
            .sum()
    }

    /// Every state_dict entry of the model, in order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.layers.iter().flat_map(|l| &l.tensors)
    }
}
