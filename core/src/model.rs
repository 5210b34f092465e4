//! The checked model: layers whose shapes chain from the input by each kind's rule, built only
//! by [`Model::new`], so every stage after the checker (plan, executor, code generation) reads
//! shapes, tensors and counts without re-deriving or re-validating them.

use std::fmt;

use crate::MAX_ELEMENTS;
use crate::config::{LayerConfig, LayerDef, NetworkDef, ShapeError};
use crate::kind::LayerKind;
use crate::shape::Shape;

/// What a state_dict entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One checked layer: its arguments, and what follows from them and its input.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedLayer {
    name: String,
    config: LayerConfig,
    input_shape: Shape,
    output_shape: Shape,
    tensors: Vec<TensorInfo>,
    params: u64,
    macs: u64,
}

impl CheckedLayer {
    /// State-dict prefix: the explicit name, or the layer's index (`"3"`) like `nn.Sequential`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the layer computes.
    pub fn kind(&self) -> LayerKind {
        self.config.kind()
    }

    /// Resolved arguments.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> Shape {
        self.input_shape
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> Shape {
        self.output_shape
    }

    /// Parameters then buffers, in PyTorch's state_dict order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Trainable parameter count (PyTorch's `sum(p.numel() for p in m.parameters())`).
    pub fn params(&self) -> u64 {
        self.params
    }

    /// Multiply-adds per sample, as torchinfo counts them ([`LayerConfig::macs`]).
    pub fn macs(&self) -> u64 {
        self.macs
    }
}

/// Why [`Model::new`] refuses a network.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelError {
    /// An input dimension is 0.
    Input {
        /// The input shape.
        input: [usize; 3],
    },
    /// A layer's arguments do not fit its input.
    Layer {
        /// Its name.
        name: String,
        /// Its keyword.
        kind: LayerKind,
        /// What does not fit.
        error: ShapeError,
    },
    /// A layer's output or a tensor would have more than [`MAX_ELEMENTS`] elements, or none.
    Size {
        /// The layer's name.
        name: String,
        /// Its output shape.
        output: Shape,
    },
}

impl ModelError {
    /// The layer at fault, or `network` for the input.
    pub fn layer(&self) -> &str {
        match self {
            ModelError::Input { .. } => "network",
            ModelError::Layer { name, .. } | ModelError::Size { name, .. } => name,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Input { input } => write!(f, "input shape {input:?} must be positive"),
            ModelError::Layer { kind, error, .. } => write!(f, "{} {error}", kind.keyword()),
            ModelError::Size { output, .. } => write!(
                f,
                "output {output} is empty, or it or a weight has more than {MAX_ELEMENTS} elements"
            ),
        }
    }
}

impl std::error::Error for ModelError {}

/// A checked sequential model: the input, then layers whose shapes chain by their kinds' rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    name: Option<String>,
    input: [usize; 3],
    layers: Vec<CheckedLayer>,
}

impl Model {
    /// Checks `def` and resolves every layer's shapes, tensors and counts. The only way to make
    /// a [`Model`]; a model with no layers, or one ending in an image, is a valid model (a
    /// feature extractor) that runnable models refuse.
    pub fn new(name: Option<String>, def: NetworkDef) -> Result<Model, ModelError> {
        let input = def.input;
        if input.contains(&0) {
            return Err(ModelError::Input { input });
        }
        let mut shape = Shape::Chw(input);
        let mut layers = Vec::with_capacity(def.layers.len());
        for LayerDef { name, config } in def.layers {
            let output = config
                .check_args()
                .and_then(|()| config.output_shape(shape))
                .map_err(|error| ModelError::Layer {
                    name: name.clone(),
                    kind: config.kind(),
                    error,
                })?;
            let tensors = config.tensors(&name);
            let elements =
                |dims: &[usize]| dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
            if output.numel() == 0
                || elements(&output.dims()) > MAX_ELEMENTS
                || tensors.iter().any(|t| elements(&t.shape) > MAX_ELEMENTS)
            {
                return Err(ModelError::Size { name, output });
            }
            let params = tensors
                .iter()
                .filter(|t| t.role.is_trainable())
                .map(|t| t.numel() as u64)
                .sum();
            let macs = config.macs(output);
            layers.push(CheckedLayer {
                name,
                config,
                input_shape: shape,
                output_shape: output,
                tensors,
                params,
                macs,
            });
            shape = output;
        }
        Ok(Model {
            name,
            input,
            layers,
        })
    }

    /// The spec's `model` name, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Per-sample input `[C, H, W]`.
    pub fn input(&self) -> [usize; 3] {
        self.input
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[CheckedLayer] {
        &self.layers
    }

    /// The unchecked description this model was built from.
    pub fn def(&self) -> NetworkDef {
        NetworkDef {
            input: self.input,
            layers: self
                .layers
                .iter()
                .map(|l| LayerDef {
                    name: l.name.clone(),
                    config: l.config.clone(),
                })
                .collect(),
        }
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> Shape {
        Shape::Chw(self.input)
    }

    /// Per-sample output shape (of the last layer; the input's when there is none).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LinearConfig;

    fn def(layers: Vec<LayerConfig>) -> NetworkDef {
        NetworkDef {
            input: [1, 4, 4],
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, config)| LayerDef {
                    name: i.to_string(),
                    config,
                })
                .collect(),
        }
    }

    #[test]
    fn shapes_chain_and_counts_follow() {
        let linear = LinearConfig {
            in_features: 16,
            out_features: 3,
            bias: true,
        };
        let model = Model::new(
            None,
            def(vec![LayerConfig::FLATTEN, LayerConfig::Linear(linear)]),
        )
        .unwrap();
        assert_eq!(model.output_shape(), Shape::Flat(3));
        assert_eq!(model.total_params(), 16 * 3 + 3);
        assert_eq!(model.layers()[1].tensors()[0].name, "1.weight");
        assert_eq!(Model::new(None, model.def()).unwrap(), model);
    }

    #[test]
    fn inconsistent_networks_are_refused() {
        let linear = LinearConfig {
            in_features: 15,
            out_features: 3,
            bias: true,
        };
        let err = Model::new(
            None,
            def(vec![LayerConfig::FLATTEN, LayerConfig::Linear(linear)]),
        )
        .unwrap_err();
        assert_eq!(err.layer(), "1");
        assert_eq!(
            err.to_string(),
            "linear in_features is 15 but the input has 16"
        );
        let err = Model::new(None, def(vec![LayerConfig::Dropout { p: 1.5 }])).unwrap_err();
        assert!(matches!(
            err,
            ModelError::Layer {
                error: ShapeError::BadArgument { arg: "p" },
                ..
            }
        ));
        let mut bad = def(vec![]);
        bad.input = [0, 1, 1];
        assert!(Model::new(None, bad).is_err());
        // Sizes whose product overflows are refused, not a panic.
        let huge = LinearConfig {
            in_features: 16,
            out_features: usize::MAX / 2,
            bias: true,
        };
        let err = Model::new(
            None,
            def(vec![LayerConfig::FLATTEN, LayerConfig::Linear(huge)]),
        );
        assert!(matches!(err, Err(ModelError::Size { .. })));
    }
}
