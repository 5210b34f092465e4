//! Builds a runtime layer from its resolved config, as `burn`'s `Conv2dConfig::init` does: the
//! one place that maps each kind of the layer table ([`cnnc_core::kind`]) to the struct that
//! computes it. The dynamic executor and generated models both build their layers here, drawing
//! parameters from the same stream in the same order.

use cnnc_core::Shape;
use rand_chacha::ChaCha8Rng;

use super::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout,
    Dropout2d, Elu, Flatten, Gelu, GroupNorm, Hardsigmoid, Hardswish, Identity, Layer, LeakyRelu,
    Linear, LogSoftmax, MaxPool2d, Prelu, Relu, Relu6, Sigmoid, Silu, Softmax, Tanh, Upsample,
    image_input,
};
use crate::config::LayerConfig;
use crate::error::{Error, Result};
use crate::init::{dropout_rng, init_rng};

/// Where a model's layers draw their initial values: parameters in layer order from
/// [`init_rng`]`(seed)` (PyTorch's default init), dropout masks from [`dropout_rng`]`(seed,
/// layer index)`.
#[derive(Debug)]
pub struct Init {
    seed: u64,
    rng: ChaCha8Rng,
}

impl Init {
    /// The streams of a model built with `seed`.
    pub fn new(seed: u64) -> Self {
        Init {
            seed,
            rng: init_rng(seed),
        }
    }
}

/// A layer struct built from its resolved config.
pub trait FromConfig: Sized {
    /// Builds the layer `name` (its state_dict prefix), at position `index` in its model, for
    /// per-sample input `input`. Errors when `config` is another kind's or does not fit `input`.
    fn from_config(
        name: &str,
        config: &LayerConfig,
        input: Shape,
        index: usize,
        init: &mut Init,
    ) -> Result<Self>;
}

fn wrong_kind(name: &str, config: &LayerConfig, what: &str) -> Error {
    Error::config(
        name,
        format!(
            "a {what} layer cannot be built from a {} config",
            config.kind().keyword()
        ),
    )
}

/// Implements [`FromConfig`] for a layer kind: the pattern its config matches and the
/// constructor call, given `name`, `input`, `index` and `init`.
macro_rules! from_config {
    ($ty:ty, $what:literal, |$name:ident, $input:ident, $index:ident, $init:ident| $($pattern:pat => $build:expr),+ $(,)?) => {
        impl FromConfig for $ty {
            fn from_config(
                $name: &str,
                config: &LayerConfig,
                $input: Shape,
                $index: usize,
                $init: &mut Init,
            ) -> Result<Self> {
                let _ = (&$index, &$init);
                match config {
                    $($pattern => $build,)+
                    #[allow(unreachable_patterns)]
                    other => Err(wrong_kind($name, other, $what)),
                }
            }
        }
    };
}

from_config!(Conv2d, "conv2d", |name, input, index, init| LayerConfig::Conv2d(c) => {
    let (channels, h, w) = image_input(name, "conv2d", input)?;
    if channels != c.in_channels {
        return Err(Error::config(
            name,
            format!("conv2d expects {} input channels, found {channels}", c.in_channels),
        ));
    }
    Conv2d::new(name, c, [h, w], &mut init.rng)
});
from_config!(MaxPool2d, "maxpool2d", |name, input, index, init| LayerConfig::MaxPool2d(c) => {
    MaxPool2d::new(name, c, input)
});
from_config!(AvgPool2d, "avgpool2d", |name, input, index, init| LayerConfig::AvgPool2d(c) => {
    AvgPool2d::new(name, c, input)
});
from_config!(Relu, "relu", |name, input, index, init| LayerConfig::Relu => Ok(Relu::new(name, input)));
from_config!(LeakyRelu, "leaky_relu", |name, input, index, init| LayerConfig::LeakyRelu { negative_slope } => {
    Ok(LeakyRelu::new(name, input, *negative_slope))
});
from_config!(Sigmoid, "sigmoid", |name, input, index, init| LayerConfig::Sigmoid => Ok(Sigmoid::new(name, input)));
from_config!(Tanh, "tanh", |name, input, index, init| LayerConfig::Tanh => Ok(Tanh::new(name, input)));
from_config!(Flatten, "flatten", |name, input, index, init| LayerConfig::Flatten { start_dim, end_dim } => {
    Flatten::with_dims(name, input, *start_dim, *end_dim)
});
from_config!(Linear, "linear", |name, input, index, init| LayerConfig::Linear(c) => {
    Linear::new(name, c, input, &mut init.rng)
});
from_config!(Dropout, "dropout", |name, input, index, init| LayerConfig::Dropout { p } => {
    Dropout::new(name, input, *p, dropout_rng(init.seed, index))
});
from_config!(BatchNorm2d, "batchnorm2d", |name, input, index, init| LayerConfig::BatchNorm2d(c) => {
    BatchNorm2d::new(name, c, input)
});
from_config!(AdaptiveAvgPool2d, "adaptive_avg_pool2d", |name, input, index, init| LayerConfig::AdaptiveAvgPool2d { output_size } => {
    AdaptiveAvgPool2d::new(name, *output_size, input)
});
from_config!(AdaptiveMaxPool2d, "adaptive_max_pool2d", |name, input, index, init| LayerConfig::AdaptiveMaxPool2d { output_size } => {
    AdaptiveMaxPool2d::new(name, *output_size, input)
});
from_config!(Upsample, "upsample", |name, input, index, init| LayerConfig::Upsample(c) => {
    Upsample::with_config(name, c, input)
});
from_config!(ConvTranspose2d, "conv_transpose2d", |name, input, index, init| LayerConfig::ConvTranspose2d(c) => {
    ConvTranspose2d::new(name, c, input, &mut init.rng)
});
from_config!(Relu6, "relu6", |name, input, index, init| LayerConfig::Relu6 => Ok(Relu6::new(name, input)));
from_config!(Silu, "silu", |name, input, index, init| LayerConfig::Silu => Ok(Silu::new(name, input)));
from_config!(Gelu, "gelu", |name, input, index, init| LayerConfig::Gelu { approximate } => Ok(Gelu::new(name, input, *approximate)));
from_config!(Hardswish, "hardswish", |name, input, index, init| LayerConfig::Hardswish => Ok(Hardswish::new(name, input)));
from_config!(Hardsigmoid, "hardsigmoid", |name, input, index, init| LayerConfig::Hardsigmoid => Ok(Hardsigmoid::new(name, input)));
from_config!(Elu, "elu", |name, input, index, init| LayerConfig::Elu { alpha } => Ok(Elu::new(name, input, *alpha)));
from_config!(Identity, "identity", |name, input, index, init| LayerConfig::Identity => Ok(Identity::new(name, input)));
from_config!(Dropout2d, "dropout2d", |name, input, index, init| LayerConfig::Dropout2d { p } => {
    Dropout2d::new(name, input, *p, dropout_rng(init.seed, index))
});
from_config!(Softmax, "softmax", |name, input, index, init| LayerConfig::Softmax { dim } => Softmax::new(name, input, *dim));
from_config!(Prelu, "prelu", |name, input, index, init| LayerConfig::Prelu { num_parameters } => Prelu::new(name, input, *num_parameters));
from_config!(LogSoftmax, "log_softmax", |name, input, index, init| LayerConfig::LogSoftmax { dim } => LogSoftmax::new(name, input, *dim));
from_config!(GroupNorm, "groupnorm", |name, input, index, init| LayerConfig::GroupNorm(c) => {
    GroupNorm::new(name, c, input)
});

/// Builds the layer `config` describes, as the dynamic executor holds it.
pub fn build(
    name: &str,
    config: &LayerConfig,
    input: Shape,
    index: usize,
    init: &mut Init,
) -> Result<Box<dyn Layer>> {
    fn boxed<T: FromConfig + Layer + 'static>(
        name: &str,
        config: &LayerConfig,
        input: Shape,
        index: usize,
        init: &mut Init,
    ) -> Result<Box<dyn Layer>> {
        Ok(Box::new(T::from_config(name, config, input, index, init)?))
    }
    let build = match config {
        LayerConfig::Conv2d(_) => boxed::<Conv2d>,
        LayerConfig::MaxPool2d(_) => boxed::<MaxPool2d>,
        LayerConfig::AvgPool2d(_) => boxed::<AvgPool2d>,
        LayerConfig::Relu => boxed::<Relu>,
        LayerConfig::LeakyRelu { .. } => boxed::<LeakyRelu>,
        LayerConfig::Sigmoid => boxed::<Sigmoid>,
        LayerConfig::Tanh => boxed::<Tanh>,
        LayerConfig::Flatten { .. } => boxed::<Flatten>,
        LayerConfig::Linear(_) => boxed::<Linear>,
        LayerConfig::Dropout { .. } => boxed::<Dropout>,
        LayerConfig::BatchNorm2d(_) => boxed::<BatchNorm2d>,
        LayerConfig::AdaptiveAvgPool2d { .. } => boxed::<AdaptiveAvgPool2d>,
        LayerConfig::AdaptiveMaxPool2d { .. } => boxed::<AdaptiveMaxPool2d>,
        LayerConfig::Upsample(_) => boxed::<Upsample>,
        LayerConfig::ConvTranspose2d(_) => boxed::<ConvTranspose2d>,
        LayerConfig::Relu6 => boxed::<Relu6>,
        LayerConfig::Silu => boxed::<Silu>,
        LayerConfig::Gelu { .. } => boxed::<Gelu>,
        LayerConfig::Hardswish => boxed::<Hardswish>,
        LayerConfig::Hardsigmoid => boxed::<Hardsigmoid>,
        LayerConfig::Elu { .. } => boxed::<Elu>,
        LayerConfig::Identity => boxed::<Identity>,
        LayerConfig::Dropout2d { .. } => boxed::<Dropout2d>,
        LayerConfig::Softmax { .. } => boxed::<Softmax>,
        LayerConfig::LogSoftmax { .. } => boxed::<LogSoftmax>,
        LayerConfig::Prelu { .. } => boxed::<Prelu>,
        LayerConfig::GroupNorm(_) => boxed::<GroupNorm>,
        LayerConfig::Add | LayerConfig::Concat(_) | LayerConfig::Mul => {
            return Err(Error::config(
                name,
                format!(
                    "{} reads several inputs; build it with `build_merge`",
                    config.kind().keyword()
                ),
            ));
        }
    };
    build(name, config, input, index, init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_of_another_kind_is_an_error() {
        let dims = Shape::Flat(4);
        let err = Relu::from_config("r", &LayerConfig::Tanh, dims, 0, &mut Init::new(0));
        assert!(matches!(err, Err(Error::Config { .. })));
        let built = build("r", &LayerConfig::Relu, dims, 0, &mut Init::new(0)).unwrap();
        assert_eq!(built.name(), "r");
    }
}
