//! The checked model: layers whose shapes follow from the input by each kind's rule, each
//! reading the input or earlier layers (a directed acyclic graph in topological order, a chain
//! for a sequential model), built only by [`Model::new`], so every stage after the checker
//! (plan, executor, code generation) reads sources, shapes, tensors and counts without
//! re-deriving or re-validating them.

use std::fmt;

use crate::MAX_ELEMENTS;
use crate::config::{LayerConfig, LayerDef, NetworkDef, ShapeError, Source};
use crate::kind::{Arity, LayerKind};
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
    inputs: Vec<Source>,
    input_shapes: Vec<Shape>,
    output_shape: Shape,
    tensors: Vec<TensorInfo>,
    params: u64,
    macs: u64,
}

impl CheckedLayer {
    /// Whether it reads exactly what it would with its inputs left out: the previous layer's
    /// output, or the model's input for layer 0.
    pub(crate) fn reads_previous(&self, index: usize) -> bool {
        self.inputs == [Source::previous(index)]
    }

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

    /// Where it reads its inputs, in order: resolved (the previous layer when the definition
    /// left them out), never empty.
    pub fn inputs(&self) -> &[Source] {
        &self.inputs
    }

    /// Per-sample shape of each input, in the order of [`CheckedLayer::inputs`].
    pub fn input_shapes(&self) -> &[Shape] {
        &self.input_shapes
    }

    /// Per-sample shape of the (first) input.
    pub fn input_shape(&self) -> Shape {
        self.input_shapes[0]
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
    /// A layer's output, a tensor or a convolution's padded input would have more than
    /// [`MAX_ELEMENTS`] elements, or the output none.
    Size {
        /// The layer's name.
        name: String,
        /// Its output shape.
        output: Shape,
    },
    /// A layer reads a layer that is not before it (itself, a later one, or one that does not
    /// exist): the layers must be in topological order.
    Source {
        /// The reading layer's name.
        name: String,
        /// Its index.
        index: usize,
        /// The source it names.
        source: Source,
    },
    /// A layer reads a number of inputs its kind does not take.
    InputCount {
        /// The layer's name.
        name: String,
        /// Its keyword.
        kind: LayerKind,
        /// How many its kind takes.
        expected: Arity,
        /// How many it reads.
        found: usize,
    },
}

impl ModelError {
    /// The layer at fault, or `network` for the input.
    pub fn layer(&self) -> &str {
        match self {
            ModelError::Input { .. } => "network",
            ModelError::Layer { name, .. }
            | ModelError::Size { name, .. }
            | ModelError::Source { name, .. }
            | ModelError::InputCount { name, .. } => name,
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
                "output {output} is empty, or it, a weight or the padded input has more than \
                 {MAX_ELEMENTS} elements"
            ),
            ModelError::Source { index, source, .. } => match source {
                Source::Layer(i) => write!(
                    f,
                    "layer {index} reads layer {i}, which is not before it (layers must read \
                     only the input and earlier layers)"
                ),
                Source::Input => write!(f, "layer {index} reads an invalid source"),
            },
            ModelError::InputCount {
                kind,
                expected,
                found,
                ..
            } => write!(f, "{} takes {expected}, but reads {found}", kind.keyword()),
        }
    }
}

impl std::error::Error for ModelError {}

/// A checked model: the input, then layers in topological order, each reading the input or
/// earlier layers, whose shapes follow by their kinds' rules; the last layer's output is the
/// model's.
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
        let mut layers: Vec<CheckedLayer> = Vec::with_capacity(def.layers.len());
        for (
            index,
            LayerDef {
                name,
                config,
                inputs,
            },
        ) in def.layers.into_iter().enumerate()
        {
            let inputs = if inputs.is_empty() {
                vec![Source::previous(index)]
            } else {
                inputs
            };
            let mut input_shapes = Vec::with_capacity(inputs.len());
            for &source in &inputs {
                input_shapes.push(match source {
                    Source::Input => Shape::Chw(input),
                    Source::Layer(i) if i < index => layers[i].output_shape,
                    Source::Layer(_) => {
                        return Err(ModelError::Source {
                            name,
                            index,
                            source,
                        });
                    }
                });
            }
            let expected = config.kind().arity();
            if !expected.accepts(inputs.len()) {
                return Err(ModelError::InputCount {
                    name,
                    kind: config.kind(),
                    expected,
                    found: inputs.len(),
                });
            }
            let output = config
                .check_args()
                .and_then(|()| config.output_shape_of(&input_shapes))
                .map_err(|error| ModelError::Layer {
                    name: name.clone(),
                    kind: config.kind(),
                    error,
                })?;
            let tensors = config.tensors(&name);
            let elements =
                |dims: &[usize]| dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
            let padded = input_shapes
                .first()
                .and_then(|&input| config.padded_input(input));
            if output.numel() == 0
                || elements(&output.dims()) > MAX_ELEMENTS
                || tensors.iter().any(|t| elements(&t.shape) > MAX_ELEMENTS)
                || padded.is_some_and(|p| elements(&p.dims()) > MAX_ELEMENTS)
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
                inputs,
                input_shapes,
                output_shape: output,
                tensors,
                params,
                macs,
            });
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

    /// The unchecked description this model was built from, each layer's inputs left empty
    /// where they are the default (the previous layer), as a sequential spec writes them.
    pub fn def(&self) -> NetworkDef {
        NetworkDef {
            input: self.input,
            layers: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerDef {
                    name: l.name.clone(),
                    config: l.config.clone(),
                    inputs: if l.reads_previous(i) {
                        Vec::new()
                    } else {
                        l.inputs.clone()
                    },
                })
                .collect(),
        }
    }

    /// The layers that read each layer's output, ascending and each once (a layer reading the
    /// same output twice, `add(x, x)`, is listed once); empty for the last layer, whose output
    /// is the model's, and for a layer nothing reads.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut consumers = vec![Vec::new(); self.layers.len()];
        for (reader, layer) in self.layers.iter().enumerate() {
            for source in &layer.inputs {
                if let Source::Layer(i) = *source {
                    let list: &mut Vec<usize> = &mut consumers[i];
                    // Readers come in ascending order: a repeat is the last one pushed.
                    if list.last() != Some(&reader) {
                        list.push(reader);
                    }
                }
            }
        }
        consumers
    }

    /// Whether every layer reads just the one before it (the first, the input): a chain, as
    /// every spec before graph specs.
    pub fn is_sequential(&self) -> bool {
        self.layers
            .iter()
            .enumerate()
            .all(|(i, l)| l.reads_previous(i))
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
    use crate::kind::ArgValue;

    fn def(layers: Vec<LayerConfig>) -> NetworkDef {
        NetworkDef {
            input: [1, 4, 4],
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, config)| LayerDef {
                    name: i.to_string(),
                    config,
                    inputs: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn a_padded_input_past_the_limit_is_refused() {
        // `same` keeps a 4x4 output, but a dilation of 2^20 pads it to 2^20 + 4 pixels a side.
        let conv = |dilation| {
            LayerConfig::from_args(LayerKind::Conv2d, |name| match name {
                "in_channels" | "out_channels" => Some(ArgValue::Int(1)),
                "kernel_size" => Some(ArgValue::Int(2)),
                "dilation" => Some(ArgValue::Int(dilation)),
                "padding" => Some(ArgValue::Word("same")),
                _ => None,
            })
            .unwrap()
        };
        assert_eq!(
            conv(3).padded_input(Shape::Chw([1, 4, 4])),
            Some(Shape::Chw([1, 7, 7]))
        );
        assert!(Model::new(None, def(vec![conv(1 << 14)])).is_ok());
        assert!(matches!(
            Model::new(None, def(vec![conv(1 << 20)])),
            Err(ModelError::Size { .. })
        ));
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

    fn conv(cin: usize, cout: usize) -> LayerConfig {
        LayerConfig::Conv2d(crate::config::Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            bias: false,
            ..crate::config::Conv2dConfig::new(cin, cout, [3, 3])
        })
    }

    fn graph(layers: Vec<(LayerConfig, Vec<Source>)>) -> NetworkDef {
        NetworkDef {
            input: [2, 4, 4],
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, (config, inputs))| LayerDef {
                    name: format!("l{i}"),
                    config,
                    inputs,
                })
                .collect(),
        }
    }

    #[test]
    fn a_sequential_model_resolves_its_inputs_to_the_previous_layer() {
        let model = Model::new(
            None,
            def(vec![
                LayerConfig::Relu,
                LayerConfig::FLATTEN,
                LayerConfig::Relu,
            ]),
        )
        .unwrap();
        assert!(model.is_sequential());
        let inputs: Vec<_> = model.layers().iter().map(|l| l.inputs().to_vec()).collect();
        assert_eq!(
            inputs,
            [
                vec![Source::Input],
                vec![Source::Layer(0)],
                vec![Source::Layer(1)]
            ]
        );
        assert_eq!(model.consumers(), [vec![1], vec![2], vec![]]);
        // Written out, the default inputs stay empty, as the spec gave them.
        assert!(model.def().layers.iter().all(|l| l.inputs.is_empty()));
        // Writing the default explicitly makes the same model.
        let mut explicit = model.def();
        explicit.layers[1].inputs = vec![Source::Layer(0)];
        assert_eq!(Model::new(None, explicit).unwrap(), model);
    }

    #[test]
    fn a_residual_block_with_a_concat_and_a_gate_checks() {
        use crate::config::ConcatConfig;
        let model = Model::new(
            None,
            graph(vec![
                (conv(2, 2), vec![]),                                      // 0
                (LayerConfig::Relu, vec![]),                               // 1
                (LayerConfig::Add, vec![Source::Layer(1), Source::Input]), // 2
                (
                    LayerConfig::Concat(ConcatConfig { dim: 1 }),
                    vec![Source::Input, Source::Layer(2), Source::Layer(0)],
                ), // 3: [6, 4, 4]
                (
                    LayerConfig::AdaptiveAvgPool2d {
                        output_size: [1, 1],
                    },
                    vec![],
                ), // 4: [6, 1, 1]
                (LayerConfig::Mul, vec![Source::Layer(4), Source::Layer(3)]), // 5
                (LayerConfig::Add, vec![Source::Layer(5), Source::Layer(5)]), // 6
            ]),
        )
        .unwrap();
        assert!(!model.is_sequential());
        let out: Vec<_> = model.layers().iter().map(|l| l.output_shape()).collect();
        assert_eq!(out[3], Shape::Chw([6, 4, 4]));
        assert_eq!(out[5], Shape::Chw([6, 4, 4]));
        assert_eq!(
            model.layers()[5].input_shapes(),
            [Shape::Chw([6, 1, 1]), Shape::Chw([6, 4, 4])]
        );
        assert_eq!(model.layers()[5].input_shape(), Shape::Chw([6, 1, 1]));
        assert_eq!(
            model.consumers(),
            [
                vec![1, 3],
                vec![2],
                vec![3],
                vec![4, 5],
                vec![5],
                vec![6],
                vec![]
            ]
        );
        assert_eq!(model.output_shape(), Shape::Chw([6, 4, 4]));
        assert_eq!(Model::new(None, model.def()).unwrap(), model);
    }

    #[test]
    fn bad_sources_and_input_counts_are_refused() {
        let err = Model::new(
            None,
            graph(vec![
                (LayerConfig::Relu, vec![]),
                (LayerConfig::Add, vec![Source::Layer(0), Source::Layer(1)]),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ModelError::Source {
                name: "l1".into(),
                index: 1,
                source: Source::Layer(1)
            }
        );
        assert_eq!(err.layer(), "l1");
        let err = Model::new(
            None,
            graph(vec![(LayerConfig::Relu, vec![Source::Layer(7)])]),
        )
        .unwrap_err();
        assert!(matches!(err, ModelError::Source { index: 0, .. }));
        let err = Model::new(None, graph(vec![(LayerConfig::Add, vec![])])).unwrap_err();
        assert_eq!(err.to_string(), "add takes at least 2 inputs, but reads 1");
        let err = Model::new(
            None,
            graph(vec![(
                LayerConfig::Relu,
                vec![Source::Input, Source::Input],
            )]),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ModelError::InputCount {
                expected: Arity::Exactly(1),
                found: 2,
                ..
            }
        ));
        let err = Model::new(
            None,
            graph(vec![
                (conv(2, 3), vec![]),
                (LayerConfig::Add, vec![Source::Layer(0), Source::Input]),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ModelError::Layer {
                name: "l1".into(),
                kind: LayerKind::Add,
                error: ShapeError::AddShapes {
                    inputs: vec![Shape::Chw([3, 4, 4]), Shape::Chw([2, 4, 4])]
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "add needs inputs of one shape, found [3, 4, 4], [2, 4, 4]"
        );
    }
}
