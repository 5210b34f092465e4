//! Numeric layer descriptions: what a checked spec lowers into, and what the dynamic executor and
//! generated models are built from. Every size is resolved (nothing inferred here); names are the
//! PyTorch state_dict prefixes of each layer.

/// A 2-D size or offset, `[height, width]`.
pub type Pair = [usize; 2];

/// One layer, fully resolved. Argument names and meanings are PyTorch's.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerConfig {
    /// `torch.nn.Conv2d`.
    Conv2d(Conv2dConfig),
    /// `torch.nn.MaxPool2d`.
    MaxPool2d(Pool2dConfig),
    /// `torch.nn.AvgPool2d` (count_include_pad=True).
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
    /// `torch.nn.Flatten` (C, H, W order).
    Flatten,
    /// `torch.nn.Linear`.
    Linear(LinearConfig),
    /// `torch.nn.Dropout(p)`.
    Dropout {
        /// Probability of zeroing an element in training mode.
        p: f32,
    },
    /// `torch.nn.BatchNorm2d`.
    BatchNorm2d(BatchNorm2dConfig),
}

/// Arguments of `torch.nn.Conv2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Input channels.
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
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2dConfig {
    /// Window `[kh, kw]`.
    pub kernel_size: Pair,
    /// Stride `[sh, sw]` (PyTorch's default is the kernel size; already resolved here).
    pub stride: Pair,
    /// Implicit padding `[ph, pw]` on each side (-inf for max, zeros for avg).
    pub padding: Pair,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

/// Arguments of `torch.nn.Linear`.
#[derive(Clone, Debug, PartialEq)]
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
    /// Running statistics update factor.
    pub momentum: f32,
}

/// A named layer: `name` is the state_dict prefix (`layer1.0`, `fc1`, `3`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    /// State-dict prefix of this layer's parameters and buffers.
    pub name: String,
    /// What the layer computes.
    pub config: LayerConfig,
}

/// A whole sequential network.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkDef {
    /// Input shape per sample, `[channels, height, width]`.
    pub input: [usize; 3],
    /// The layers, in order.
    pub layers: Vec<LayerDef>,
}
