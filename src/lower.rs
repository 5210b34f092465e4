//! Lowers a checked spec into the runtime's numeric layer descriptions: the one bridge between
//! `cnnc-spec` (which knows nothing of numerics) and `cnnc-runtime` (which knows nothing of
//! parsing). Every size is already resolved by the checker, so this is a field-for-field copy.

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig,
};
use cnnc_spec::{CheckedModel, LayerArgs, Pool2dArgs};

/// The runtime description of a checked model (the dynamic executor builds from it).
pub fn network_def(model: &CheckedModel) -> NetworkDef {
    NetworkDef {
        input: model.input,
        layers: model
            .layers
            .iter()
            .map(|layer| LayerDef {
                name: layer.name.clone(),
                config: layer_config(&layer.args),
            })
            .collect(),
    }
}

fn layer_config(args: &LayerArgs) -> LayerConfig {
    match args {
        LayerArgs::Conv2d(a) => LayerConfig::Conv2d(Conv2dConfig {
            in_channels: a.in_channels,
            out_channels: a.out_channels,
            kernel_size: a.kernel_size,
            stride: a.stride,
            padding: a.padding,
            dilation: a.dilation,
            bias: a.bias,
        }),
        LayerArgs::Maxpool2d(a) => LayerConfig::MaxPool2d(pool(a)),
        LayerArgs::Avgpool2d(a) => LayerConfig::AvgPool2d(pool(a)),
        LayerArgs::Relu => LayerConfig::Relu,
        LayerArgs::LeakyRelu { negative_slope } => LayerConfig::LeakyRelu {
            negative_slope: *negative_slope,
        },
        LayerArgs::Sigmoid => LayerConfig::Sigmoid,
        LayerArgs::Tanh => LayerConfig::Tanh,
        LayerArgs::Flatten => LayerConfig::Flatten,
        LayerArgs::Linear(a) => LayerConfig::Linear(LinearConfig {
            in_features: a.in_features,
            out_features: a.out_features,
            bias: a.bias,
        }),
        LayerArgs::Dropout { p } => LayerConfig::Dropout { p: *p },
        LayerArgs::Batchnorm2d(a) => LayerConfig::BatchNorm2d(BatchNorm2dConfig {
            num_features: a.num_features,
            eps: a.eps,
            momentum: a.momentum,
        }),
    }
}

fn pool(a: &Pool2dArgs) -> Pool2dConfig {
    Pool2dConfig {
        kernel_size: a.kernel_size,
        stride: a.stride,
        padding: a.padding,
        ceil_mode: a.ceil_mode,
    }
}
