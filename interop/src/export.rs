//! ONNX export: a checked model and its state_dict → an ONNX `ModelProto` of standard operators,
//! in eval semantics (batch norm on running statistics, dropout as identity). The graph input is
//! `input` `[N, C, H, W]` with a symbolic batch `N`, the output `logits`, and the initializers
//! carry the state_dict's names and PyTorch's shapes, so tools that key on parameter names (and
//! `cnnc import`) find them.

use std::collections::BTreeMap;

use cnnc_core::config::{GeluApproximate, Source, softmax_dim};
use cnnc_core::geometry::{adaptive_window, pool_output};
use cnnc_core::{LayerConfig, Model, PaddingMode, Pool2dConfig, Shape, TensorRole};
use prost::Message;

use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The opset written when none is asked for.
pub const DEFAULT_OPSET: i64 = 17;
/// The opsets the exporter writes: from 14 (`HardSwish`) to 21.
pub const OPSETS: std::ops::RangeInclusive<i64> = 14..=21;
/// Name of the graph input.
pub const INPUT: &str = "input";
/// Name of the graph output.
pub const OUTPUT: &str = "logits";
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "N";
/// Most output rows (and columns) of an adaptive pool whose windows do not divide its input:
/// each is one `Slice` and one reduction in the exported graph.
pub const MAX_ADAPTIVE_SLICES: usize = 256;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExportError {
    /// The opset asked for is outside [`OPSETS`].
    #[error("opset {opset} is not supported: cnnc writes opsets {}..={}", OPSETS.start(), OPSETS.end())]
    Opset {
        /// The opset asked for.
        opset: i64,
    },
    /// A layer has no exact equivalent in standard ONNX operators.
    #[error("layer `{layer}` ({kind}) cannot be exported: {why}")]
    Unsupported {
        /// The layer's name.
        layer: String,
        /// Its keyword.
        kind: &'static str,
        /// Why, and what would work.
        why: String,
    },
    /// The state_dict lacks a tensor of the model.
    #[error("the weights have no tensor `{name}`")]
    MissingWeight {
        /// The state_dict name.
        name: String,
    },
    /// A tensor of the state_dict has the wrong number of elements.
    #[error("the weights' tensor `{name}` has {found} elements; the model needs {expected}")]
    WeightSize {
        /// The state_dict name.
        name: String,
        /// Elements the model's shape has.
        expected: usize,
        /// Elements found.
        found: usize,
    },
}

/// What [`export`] writes besides the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The default-domain opset (one of [`OPSETS`]).
    pub opset: i64,
    /// The graph's name (the spec's `model:`).
    pub graph_name: String,
    /// `producer_version` written into the file.
    pub producer_version: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: DEFAULT_OPSET,
            graph_name: "cnnc".to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The ONNX IR version that goes with `opset` (ONNX's versioning table).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Exports `model` with the parameters and buffers in `weights` (state_dict name → values in
/// PyTorch's layout) as the bytes of an ONNX file.
pub fn export(
    model: &Model,
    weights: &BTreeMap<String, Vec<f32>>,
    options: &ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    Ok(export_proto(model, weights, options)?.encode_to_vec())
}

/// [`export`], as the protobuf message.
pub fn export_proto(
    model: &Model,
    weights: &BTreeMap<String, Vec<f32>>,
    options: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    if !OPSETS.contains(&options.opset) {
        return Err(ExportError::Opset {
            opset: options.opset,
        });
    }
    let mut graph = Builder {
        opset: options.opset,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    for tensor in model.tensors() {
        if tensor.role == TensorRole::NumBatchesTracked {
            continue;
        }
        let values = weights
            .get(&tensor.name)
            .ok_or_else(|| ExportError::MissingWeight {
                name: tensor.name.clone(),
            })?;
        if values.len() != tensor.numel() {
            return Err(ExportError::WeightSize {
                name: tensor.name.clone(),
                expected: tensor.numel(),
                found: values.len(),
            });
        }
        graph.initializers.push(f32_tensor(
            &tensor.name,
            &tensor.shape.iter().map(|&d| d as i64).collect::<Vec<_>>(),
            values,
        ));
    }
    let layers = model.layers();
    let mut outputs: Vec<String> = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let inputs: Vec<String> = layer
            .inputs()
            .iter()
            .map(|source| match source {
                Source::Input => INPUT.to_owned(),
                Source::Layer(i) => outputs[*i].clone(),
            })
            .collect();
        let output = if index + 1 == layers.len() {
            OUTPUT.to_owned()
        } else {
            format!("/{}/output", layer.name())
        };
        graph.layer(layer, &inputs, &output)?;
        outputs.push(output);
    }
    if layers.is_empty() {
        graph.node("Identity", "identity", &[INPUT], &[OUTPUT], Vec::new());
    }
    let [c, h, w] = model.input();
    let output_dims = model.output_shape().dims();
    let graph = GraphProto {
        name: options.graph_name.clone(),
        node: graph.nodes,
        initializer: graph.initializers,
        input: vec![value_info(INPUT, &[c, h, w])],
        output: vec![value_info(OUTPUT, &output_dims)],
        ..GraphProto::default()
    };
    Ok(ModelProto {
        ir_version: ir_version(options.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: options.opset,
        }],
        producer_name: "cnnc".to_owned(),
        producer_version: options.producer_version.clone(),
        graph: Some(graph),
        ..ModelProto::default()
    })
}

/// A float tensor `[N, dims...]` with the symbolic batch dimension first.
fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let batch = tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(
            BATCH.to_owned(),
        )),
        ..Default::default()
    };
    let mut dim = vec![batch];
    dim.extend(dims.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float initializer, little-endian raw data as `torch.onnx.export` writes it.
fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..AttributeProto::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..AttributeProto::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..AttributeProto::default()
    }
}

/// ONNX `pads` for symmetric 2-D padding: `[top, left, bottom, right]`.
fn pads(padding: [usize; 2]) -> [usize; 4] {
    [padding[0], padding[1], padding[0], padding[1]]
}

/// The nodes and initializers of the graph being written.
struct Builder {
    opset: i64,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder {
    fn node<S: AsRef<str>>(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[S],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            op_type: op.to_owned(),
            name: name.to_owned(),
            input: inputs.iter().map(|s| s.as_ref().to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute,
            ..NodeProto::default()
        });
    }

    /// A node inside a layer: `op` on `inputs`, named as the value it writes (`/{layer}/{what}`,
    /// as torch names its nodes); returns that value.
    fn inner<S: AsRef<str>>(
        &mut self,
        op: &str,
        value: String,
        inputs: &[S],
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.node(op, &value, inputs, &[&value], attribute);
        value
    }

    fn constant_f32(&mut self, name: String, dims: &[i64], values: &[f32]) -> String {
        self.initializers.push(f32_tensor(&name, dims, values));
        name
    }

    fn constant_i64(&mut self, name: String, values: &[i64]) -> String {
        self.initializers
            .push(i64_tensor(&name, &[values.len() as i64], values));
        name
    }

    /// Writes the nodes of one layer reading `inputs` and producing `output`.
    fn layer(
        &mut self,
        layer: &cnnc_core::CheckedLayer,
        inputs: &[String],
        output: &str,
    ) -> Result<(), ExportError> {
        let name = layer.name();
        let x = inputs[0].as_str();
        let scoped = |what: &str| format!("/{name}/{what}");
        let unsupported = |why: String| ExportError::Unsupported {
            layer: name.to_owned(),
            kind: layer.kind().keyword(),
            why,
        };
        let input_shape = layer.input_shape();
        match layer.config() {
            LayerConfig::Conv2d(c) => {
                let mut x = x.to_owned();
                // `[top, left, bottom, right]`: `same` with an odd total pads the bottom and
                // right one more.
                let [[top, left], [bottom, right]] = [c.padding, c.padding_end];
                let mut conv_pads = [top, left, bottom, right];
                if c.padding_mode != PaddingMode::Zeros && c.padding_total() != [0, 0] {
                    let padded = scoped("pad");
                    let padding = [c.padding, c.padding_end];
                    self.pad_mode(name, &x, &padded, padding, c.padding_mode, input_shape);
                    x = padded;
                    conv_pads = [0; 4];
                }
                let mut node_inputs = vec![x, format!("{name}.weight")];
                if c.bias {
                    node_inputs.push(format!("{name}.bias"));
                }
                self.node(
                    "Conv",
                    name,
                    &node_inputs,
                    &[output],
                    vec![
                        ints("kernel_shape", &c.kernel_size),
                        ints("strides", &c.stride),
                        ints("pads", &conv_pads),
                        ints("dilations", &c.dilation),
                        int("group", c.groups as i64),
                    ],
                );
            }
            LayerConfig::ConvTranspose2d(c) => {
                let mut node_inputs = vec![x.to_owned(), format!("{name}.weight")];
                if c.bias {
                    node_inputs.push(format!("{name}.bias"));
                }
                self.node(
                    "ConvTranspose",
                    name,
                    &node_inputs,
                    &[output],
                    vec![
                        ints("kernel_shape", &c.kernel_size),
                        ints("strides", &c.stride),
                        ints("pads", &pads(c.padding)),
                        ints("output_padding", &c.output_padding),
                        ints("dilations", &c.dilation),
                        int("group", c.groups as i64),
                    ],
                );
            }
            LayerConfig::MaxPool2d(c) | LayerConfig::AvgPool2d(c) => {
                self.pool(layer, x, output, c)?;
            }
            LayerConfig::AdaptiveAvgPool2d { output_size }
            | LayerConfig::AdaptiveMaxPool2d { output_size } => {
                let avg = matches!(layer.config(), LayerConfig::AdaptiveAvgPool2d { .. });
                let [_, h, w] = chw(input_shape);
                if *output_size == [1, 1] {
                    let op = if avg {
                        "GlobalAveragePool"
                    } else {
                        "GlobalMaxPool"
                    };
                    self.node(op, name, &[x], &[output], Vec::new());
                } else if h % output_size[0] == 0 && w % output_size[1] == 0 {
                    let kernel = [h / output_size[0], w / output_size[1]];
                    let op = if avg { "AveragePool" } else { "MaxPool" };
                    self.node(
                        op,
                        name,
                        &[x],
                        &[output],
                        vec![ints("kernel_shape", &kernel), ints("strides", &kernel)],
                    );
                } else if output_size.iter().all(|&o| o <= MAX_ADAPTIVE_SLICES) {
                    self.adaptive_pool(name, x, output, avg, [h, w], *output_size);
                } else {
                    return Err(unsupported(format!(
                        "its {h}x{w} input does not divide into {}x{} equal windows, and each \
                         uneven window is its own Slice: cnnc exports up to \
                         {MAX_ADAPTIVE_SLICES} rows and columns",
                        output_size[0], output_size[1]
                    )));
                }
            }
            LayerConfig::BatchNorm2d(c) => {
                if !c.track_running_stats {
                    self.batch_statistics_norm(name, x, output, c);
                    return Ok(());
                }
                let [scale, bias] = self.affine(name, c.affine, c.num_features);
                let mut attrs = vec![float("epsilon", c.eps)];
                if let Some(m) = c.momentum {
                    attrs.push(float("momentum", 1.0 - m));
                }
                self.node(
                    "BatchNormalization",
                    name,
                    &[
                        x.to_owned(),
                        scale,
                        bias,
                        format!("{name}.running_mean"),
                        format!("{name}.running_var"),
                    ],
                    &[output],
                    attrs,
                );
            }
            LayerConfig::GroupNorm(c) => self.group_norm(name, x, output, c, input_shape),
            LayerConfig::Linear(c) => {
                let mut node_inputs = vec![x.to_owned(), format!("{name}.weight")];
                if c.bias {
                    node_inputs.push(format!("{name}.bias"));
                }
                self.node(
                    "Gemm",
                    name,
                    &node_inputs,
                    &[output],
                    vec![int("transB", 1)],
                );
            }
            LayerConfig::Flatten { .. } => {
                let dims = layer.output_shape().dims();
                if layer.output_shape() == input_shape {
                    self.node("Identity", name, &[x], &[output], Vec::new());
                } else if dims.len() == 1 {
                    self.node("Flatten", name, &[x], &[output], vec![int("axis", 1)]);
                } else {
                    // A partial flatten (start_dim or end_dim set): the batch copied (0), then
                    // the per-sample output's dims.
                    let mut shape = vec![0i64];
                    shape.extend(dims.iter().map(|&d| d as i64));
                    let shape = self.constant_i64(scoped("shape"), &shape);
                    self.node(
                        "Reshape",
                        name,
                        &[x.to_owned(), shape],
                        &[output],
                        Vec::new(),
                    );
                }
            }
            LayerConfig::Relu => self.node("Relu", name, &[x], &[output], Vec::new()),
            LayerConfig::LeakyRelu { negative_slope } => self.node(
                "LeakyRelu",
                name,
                &[x],
                &[output],
                vec![float("alpha", *negative_slope)],
            ),
            LayerConfig::Sigmoid => self.node("Sigmoid", name, &[x], &[output], Vec::new()),
            LayerConfig::Tanh => self.node("Tanh", name, &[x], &[output], Vec::new()),
            LayerConfig::Dropout { .. } | LayerConfig::Dropout2d { .. } | LayerConfig::Identity => {
                self.node("Identity", name, &[x], &[output], Vec::new());
            }
            LayerConfig::Upsample(c) => self.resize(name, x, output, c, layer.output_shape()),
            LayerConfig::Relu6 => {
                let min = self.constant_f32(scoped("min"), &[], &[0.0]);
                let max = self.constant_f32(scoped("max"), &[], &[6.0]);
                self.node(
                    "Clip",
                    name,
                    &[x.to_owned(), min, max],
                    &[output],
                    Vec::new(),
                );
            }
            LayerConfig::Silu => {
                let sigmoid = scoped("sigmoid");
                self.node("Sigmoid", &sigmoid, &[x], &[&sigmoid], Vec::new());
                self.node("Mul", name, &[x, &sigmoid], &[output], Vec::new());
            }
            LayerConfig::Gelu { approximate } => self.gelu(name, x, output, *approximate),
            LayerConfig::Hardswish => self.node("HardSwish", name, &[x], &[output], Vec::new()),
            LayerConfig::Hardsigmoid => self.node(
                "HardSigmoid",
                name,
                &[x],
                &[output],
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
            LayerConfig::Elu { alpha } => {
                self.node("Elu", name, &[x], &[output], vec![float("alpha", *alpha)]);
            }
            LayerConfig::Softmax { dim } | LayerConfig::LogSoftmax { dim } => {
                let op = if matches!(layer.config(), LayerConfig::Softmax { .. }) {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                let axis = softmax_dim(*dim, input_shape).ok_or_else(|| {
                    unsupported(format!("dim {dim} is not a per-sample dimension"))
                })?;
                self.node(op, name, &[x], &[output], vec![int("axis", axis as i64)]);
            }
            LayerConfig::Add => {
                // Left to right, as `a + b + c` adds in PyTorch.
                let mut sum = inputs[0].clone();
                for (i, next) in inputs.iter().enumerate().skip(1) {
                    let out = if i + 1 == inputs.len() {
                        output.to_owned()
                    } else {
                        scoped(&format!("sum{i}"))
                    };
                    let node = if i + 1 == inputs.len() {
                        name.to_owned()
                    } else {
                        out.clone()
                    };
                    self.node("Add", &node, &[sum, next.clone()], &[&out], Vec::new());
                    sum = out;
                }
            }
            LayerConfig::Concat(_) => {
                // The checked model allows only dimension 1: channels or features.
                self.node("Concat", name, inputs, &[output], vec![int("axis", 1)]);
            }
            LayerConfig::Mul => self.node("Mul", name, inputs, &[output], Vec::new()),
            LayerConfig::Prelu { num_parameters } => {
                // PyTorch keeps one slope per channel, `[C]`; ONNX broadcasts from the right,
                // so image inputs see the slopes as `[C, 1, 1]`.
                let weight = format!("{name}.weight");
                let slope = match input_shape {
                    Shape::Chw(_) if *num_parameters > 1 => {
                        let shape = self
                            .constant_i64(scoped("slope_shape"), &[*num_parameters as i64, 1, 1]);
                        self.inner("Reshape", scoped("slope"), &[weight, shape], Vec::new())
                    }
                    _ => weight,
                };
                self.node("PRelu", name, &[x.to_owned(), slope], &[output], Vec::new());
            }
        }
        Ok(())
    }

    /// A max or average pool. PyTorch's `ceil_mode` adds a last, partial window, but never one
    /// starting in the right padding (then it counts as the floor rule does), so where PyTorch
    /// adds a window ONNX's ceil rule counts the same, and both clip the window to the padded
    /// input. Only when one axis gains a window and the other drops one do the rules differ:
    /// a max pool then gets explicit end padding (-inf, ignored by the maximum) instead; an
    /// average pool, whose divisor would change, is refused.
    fn pool(
        &mut self,
        layer: &cnnc_core::CheckedLayer,
        x: &str,
        output: &str,
        c: &Pool2dConfig,
    ) -> Result<(), ExportError> {
        let name = layer.name();
        let avg = layer.kind() == cnnc_core::LayerKind::AvgPool2d;
        let [_, h, w] = chw(layer.input_shape());
        let mut pad = pads(c.padding);
        let mut ceil = false;
        let mut onnx_ceil_agrees = true;
        let mut end_pads = pad;
        for (axis, size) in [h, w].into_iter().enumerate() {
            let (k, s, p, d) = (
                c.kernel_size[axis],
                c.stride[axis],
                c.padding[axis],
                c.dilation[axis],
            );
            let span = (size + 2 * p).saturating_sub(d * (k - 1) + 1);
            let floor = span / s + 1;
            let torch = pool_output(size, k, s, p, d, c.ceil_mode).unwrap_or(floor);
            onnx_ceil_agrees &= span.div_ceil(s) + 1 == torch;
            if torch > floor {
                ceil = true;
                // Enough end padding that the floor rule counts PyTorch's windows.
                end_pads[axis + 2] = ((torch - 1) * s + d * (k - 1) + 1).saturating_sub(size + p);
            }
        }
        if ceil && !onnx_ceil_agrees {
            if avg {
                return Err(ExportError::Unsupported {
                    layer: name.to_owned(),
                    kind: layer.kind().keyword(),
                    why: "with ceil_mode it adds a partial window along one axis and drops one \
                          starting in the padding along the other, which ONNX's AveragePool \
                          cannot say at once; use ceil_mode: false or change the padding"
                        .to_owned(),
                });
            }
            pad = end_pads;
            ceil = false;
        }
        let mut attrs = vec![
            ints("kernel_shape", &c.kernel_size),
            ints("strides", &c.stride),
            ints("pads", &pad),
            int("ceil_mode", i64::from(ceil)),
        ];
        if !avg {
            attrs.push(ints("dilations", &c.dilation));
            self.node("MaxPool", name, &[x], &[output], attrs);
            return Ok(());
        }
        let Some(divisor) = c.divisor_override else {
            attrs.push(int("count_include_pad", i64::from(c.count_include_pad)));
            self.node("AveragePool", name, &[x], &[output], attrs);
            return Ok(());
        };
        if ceil {
            return Err(ExportError::Unsupported {
                layer: name.to_owned(),
                kind: layer.kind().keyword(),
                why: "divisor_override with a partial ceil_mode window has no ONNX form; use \
                      ceil_mode: false"
                    .to_owned(),
            });
        }
        // Every window is whole (padding counted), so the mean times kh*kw / divisor is the
        // sum over the divisor.
        attrs.push(int("count_include_pad", 1));
        let mean = self.inner("AveragePool", format!("/{name}/mean"), &[x], attrs);
        let window = (c.kernel_size[0] * c.kernel_size[1]) as f32;
        let factor = self.constant_f32(format!("/{name}/factor"), &[], &[window / divisor as f32]);
        self.node("Mul", name, &[mean, factor], &[output], Vec::new());
        Ok(())
    }

    /// A normalisation's `[scale, bias]` inputs: its `weight` and `bias` when affine, else
    /// constant ones and zeros.
    fn affine(&mut self, name: &str, affine: bool, channels: usize) -> [String; 2] {
        if affine {
            return [format!("{name}.weight"), format!("{name}.bias")];
        }
        let dims = [channels as i64];
        [
            self.constant_f32(format!("/{name}/ones"), &dims, &vec![1.0; channels]),
            self.constant_f32(format!("/{name}/zeros"), &dims, &vec![0.0; channels]),
        ]
    }

    /// GroupNorm as `torch.onnx.export` writes it before opset 21: the channels regrouped as
    /// `[N, G, C/G * H * W]`, InstanceNormalization over each group, back to `[N, C, H, W]`,
    /// then the per-channel weight and bias.
    fn group_norm(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        c: &cnnc_core::config::GroupNormConfig,
        input: Shape,
    ) {
        let v = |what: &str| format!("/{name}/{what}");
        let groups = c.num_groups as i64;
        let grouped = self.constant_i64(v("grouped_shape"), &[0, groups, -1]);
        let grouped = self.inner(
            "Reshape",
            v("grouped"),
            &[x.to_owned(), grouped],
            Vec::new(),
        );
        let ones = self.constant_f32(v("ones"), &[groups], &vec![1.0; c.num_groups]);
        let zeros = self.constant_f32(v("zeros"), &[groups], &vec![0.0; c.num_groups]);
        let normalized = self.inner(
            "InstanceNormalization",
            v("normalized"),
            &[grouped, ones, zeros],
            vec![float("epsilon", c.eps)],
        );
        let mut shape = vec![0i64];
        shape.extend(input.dims().iter().map(|&d| d as i64));
        let shape = self.constant_i64(v("shape"), &shape);
        let (node, back) = layer_end(name, "ungrouped", output, c.affine);
        self.node("Reshape", &node, &[normalized, shape], &[&back], Vec::new());
        if c.affine {
            // [C] broadcast over [N, C, H, W] (or [N, C]) as [C, 1, 1] (or [C]).
            self.per_channel_affine(name, &back, output, c.num_channels, input.dims().len());
        }
    }

    /// `reflect` / `replicate` / `circular` padding as its own node before the convolution:
    /// `padding` is `[ph, pw]` before the input and `[ph, pw]` after it.
    fn pad_mode(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        padding: [[usize; 2]; 2],
        mode: PaddingMode,
        input: Shape,
    ) {
        let [[ph, pw], [ph_end, pw_end]] = padding.map(|p| p.map(|p| p as i64));
        let onnx_mode = match mode {
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "edge",
            PaddingMode::Circular | PaddingMode::Zeros => "wrap",
        };
        if mode == PaddingMode::Circular && self.opset < 19 {
            // `wrap` arrived in opset 19: wrap around with slices and concatenations.
            let [_, h, w] = chw(input).map(|d| d as i64);
            let rows = self.wrap(name, x, 2, [ph, ph_end], h, "rows");
            self.wrap_into(name, &rows, 3, [pw, pw_end], w, "cols", output);
            return;
        }
        let pads = self.constant_i64(
            format!("/{name}/pads"),
            &[0, 0, ph, pw, 0, 0, ph_end, pw_end],
        );
        self.node(
            "Pad",
            &format!("/{name}/pad"),
            &[x.to_owned(), pads],
            &[output],
            vec![string("mode", onnx_mode)],
        );
    }

    fn wrap(
        &mut self,
        name: &str,
        x: &str,
        axis: i64,
        pad: [i64; 2],
        size: i64,
        what: &str,
    ) -> String {
        let out = format!("/{name}/wrap_{what}");
        self.wrap_into(name, x, axis, pad, size, what, &out);
        out
    }

    /// `cat(x[size - before:], x, x[:after])` along `axis`: circular padding of `pad`,
    /// `[before, after]`.
    #[allow(clippy::too_many_arguments)]
    fn wrap_into(
        &mut self,
        name: &str,
        x: &str,
        axis: i64,
        [before, after]: [i64; 2],
        size: i64,
        what: &str,
        output: &str,
    ) {
        if before == 0 && after == 0 {
            self.node(
                "Identity",
                &format!("/{name}/wrap_{what}"),
                &[x],
                &[output],
                Vec::new(),
            );
            return;
        }
        let axes = self.constant_i64(format!("/{name}/wrap_{what}/axes"), &[axis]);
        let mut slice = |part: &str, start: i64, end: i64| {
            let starts = self.constant_i64(format!("/{name}/wrap_{what}/{part}/starts"), &[start]);
            let ends = self.constant_i64(format!("/{name}/wrap_{what}/{part}/ends"), &[end]);
            self.inner(
                "Slice",
                format!("/{name}/wrap_{what}/{part}"),
                &[x.to_owned(), starts, ends, axes.clone()],
                Vec::new(),
            )
        };
        // An empty side (`same` with a total of 1) gets no slice.
        let mut parts = Vec::new();
        if before > 0 {
            parts.push(slice("head", size - before, size));
        }
        parts.push(x.to_owned());
        if after > 0 {
            parts.push(slice("tail", 0, after));
        }
        self.node(
            "Concat",
            &format!("/{name}/wrap_{what}/concat"),
            &parts,
            &[output],
            vec![int("axis", axis)],
        );
    }

    /// A `Reduce*` over `axes` keeping them: the axes an attribute before opset 18, an input
    /// from it.
    fn reduce(&mut self, op: &str, node: &str, x: &str, axes: &[i64], output: &str) {
        if self.opset >= 18 {
            let axes = self.constant_i64(format!("{node}/axes"), axes);
            self.node(
                op,
                node,
                &[x.to_owned(), axes],
                &[output],
                vec![int("keepdims", 1)],
            );
        } else {
            let attr = AttributeProto {
                name: "axes".to_owned(),
                r#type: AttributeType::Ints as i32,
                ints: axes.to_vec(),
                ..AttributeProto::default()
            };
            self.node(op, node, &[x], &[output], vec![attr, int("keepdims", 1)]);
        }
    }

    /// Batch norm without running statistics, which normalises by the batch's own in eval too:
    /// `(x - mean) / sqrt(var + eps)` over batch, height and width (the biased variance), then
    /// the weight and bias per channel.
    fn batch_statistics_norm(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        c: &cnnc_core::config::BatchNorm2dConfig,
    ) {
        let v = |what: &str| format!("/{name}/{what}");
        let axes = [0, 2, 3];
        self.reduce("ReduceMean", &v("mean"), x, &axes, &v("mean"));
        let centered = self.inner("Sub", v("centered"), &[x.to_owned(), v("mean")], Vec::new());
        let square = [centered.clone(), centered.clone()];
        let squared = self.inner("Mul", v("squared"), &square, Vec::new());
        self.reduce("ReduceMean", &v("var"), &squared, &axes, &v("var"));
        let eps = self.constant_f32(v("eps"), &[], &[c.eps]);
        let var_eps = self.inner("Add", v("var_eps"), &[v("var"), eps], Vec::new());
        let std = self.inner("Sqrt", v("std"), &[var_eps], Vec::new());
        let (node, normalized) = layer_end(name, "normalized", output, c.affine);
        self.node("Div", &node, &[centered, std], &[&normalized], Vec::new());
        if c.affine {
            self.per_channel_affine(name, &normalized, output, c.num_features, 3);
        }
    }

    /// `x * weight + bias` with the layer's `[C]` weight and bias reshaped to broadcast over an
    /// input of `rank` per-sample dims (`[C, 1, 1]` for images).
    fn per_channel_affine(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        channels: usize,
        rank: usize,
    ) {
        let v = |what: &str| format!("/{name}/{what}");
        let mut per_channel = vec![channels as i64];
        per_channel.extend(std::iter::repeat_n(1, rank - 1));
        let pc = self.constant_i64(v("channel_shape"), &per_channel);
        let [weight, bias] = ["weight", "bias"].map(|part| {
            self.inner(
                "Reshape",
                v(part),
                &[format!("{name}.{part}"), pc.clone()],
                Vec::new(),
            )
        });
        let scaled = self.inner("Mul", v("scaled"), &[x.to_owned(), weight], Vec::new());
        self.node("Add", name, &[scaled, bias], &[output], Vec::new());
    }

    /// An adaptive pool whose windows do not divide the input: PyTorch's window of each output
    /// row (`adaptive_window`) sliced and reduced over the height, the rows concatenated, then
    /// the same for the columns. Every window is a rectangle of such rows and columns, so the
    /// maximum of the column maxima is the window's maximum, and the mean of the column means
    /// (each over the same rows) its mean.
    fn adaptive_pool(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        avg: bool,
        input: [usize; 2],
        output_size: [usize; 2],
    ) {
        let op = if avg { "ReduceMean" } else { "ReduceMax" };
        let mut current = x.to_owned();
        for (axis, what) in [(2usize, "rows"), (3, "cols")] {
            let (size, out) = (input[axis - 2], output_size[axis - 2]);
            let target = if axis == 3 {
                output.to_owned()
            } else {
                format!("/{name}/{what}")
            };
            let axes = self.constant_i64(format!("/{name}/{what}/axes"), &[axis as i64]);
            let mut parts = Vec::with_capacity(out);
            for i in 0..out {
                let (start, end) = adaptive_window(i, size, out);
                let v = |what2: &str| format!("/{name}/{what}/{i}/{what2}");
                let starts = self.constant_i64(v("starts"), &[start as i64]);
                let ends = self.constant_i64(v("ends"), &[end as i64]);
                let slice = self.inner(
                    "Slice",
                    v("slice"),
                    &[current.clone(), starts, ends, axes.clone()],
                    Vec::new(),
                );
                self.reduce(op, &v("reduce"), &slice, &[axis as i64], &v("reduce"));
                parts.push(v("reduce"));
            }
            let node = if axis == 3 {
                name.to_owned()
            } else {
                format!("/{name}/{what}")
            };
            self.node(
                "Concat",
                &node,
                &parts,
                &[&target],
                vec![int("axis", axis as i64)],
            );
            current = target;
        }
    }

    /// `upsample` as ONNX's `Resize`: by a `scale_factor`, constant `scales`; to a `size`, the
    /// `sizes` of the batch and channels read from the input's `Shape` and the output's height
    /// and width. Nearest: `asymmetric` source coordinates rounded down, PyTorch's
    /// `floor(dst * in / out)`. Bilinear: `align_corners`, or `half_pixel` (PyTorch's
    /// `(dst + 0.5) * in / out - 0.5`, clamped at the edges, as `torch.onnx.export` writes it;
    /// `pytorch_half_pixel` would map an output of one pixel to the first input pixel, which
    /// PyTorch does not).
    fn resize(
        &mut self,
        name: &str,
        x: &str,
        output: &str,
        c: &cnnc_core::config::UpsampleConfig,
        out_shape: Shape,
    ) {
        let v = |what: &str| format!("/{name}/{what}");
        let inputs = match c.scale_factor {
            Some([sh, sw]) => {
                let roi = self.constant_f32(v("roi"), &[0], &[]);
                let scales =
                    self.constant_f32(v("scales"), &[4], &[1.0, 1.0, sh as f32, sw as f32]);
                vec![x.to_owned(), roi, scales]
            }
            None => {
                let [_, oh, ow] = chw(out_shape);
                let shape = self.inner("Shape", v("shape"), &[x], Vec::new());
                let starts = self.constant_i64(v("nc/starts"), &[0]);
                let ends = self.constant_i64(v("nc/ends"), &[2]);
                let nc = self.inner("Slice", v("nc"), &[shape, starts, ends], Vec::new());
                let hw = self.constant_i64(v("hw"), &[oh as i64, ow as i64]);
                let sizes = self.inner("Concat", v("sizes"), &[nc, hw], vec![int("axis", 0)]);
                vec![x.to_owned(), String::new(), String::new(), sizes]
            }
        };
        let attrs = match c.mode {
            cnnc_core::config::UpsampleMode::Nearest => vec![
                string("mode", "nearest"),
                string("coordinate_transformation_mode", "asymmetric"),
                string("nearest_mode", "floor"),
            ],
            cnnc_core::config::UpsampleMode::Bilinear => {
                let transform = if c.align_corners == Some(true) {
                    "align_corners"
                } else {
                    "half_pixel"
                };
                vec![
                    string("mode", "linear"),
                    string("coordinate_transformation_mode", transform),
                ]
            }
        };
        self.node("Resize", name, &inputs, &[output], attrs);
    }

    /// GELU: ONNX's `Gelu` from opset 20, else its formula in elementary operators, as
    /// `torch.onnx.export` writes it.
    fn gelu(&mut self, name: &str, x: &str, output: &str, approximate: GeluApproximate) {
        if self.opset >= 20 {
            self.node(
                "Gelu",
                name,
                &[x],
                &[output],
                vec![string("approximate", approximate.word())],
            );
            return;
        }
        let v = |what: &str| format!("/{name}/{what}");
        let half = self.constant_f32(v("half"), &[], &[0.5]);
        let one = self.constant_f32(v("one"), &[], &[1.0]);
        let inner = match approximate {
            GeluApproximate::None => {
                // 0.5 * x * (1 + erf(x / sqrt(2)))
                let sqrt2 = self.constant_f32(v("sqrt2"), &[], &[std::f32::consts::SQRT_2]);
                let div = self.inner("Div", v("div"), &[x.to_owned(), sqrt2], Vec::new());
                self.inner("Erf", v("erf"), &[div], Vec::new())
            }
            GeluApproximate::Tanh => {
                // 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
                let c = self.constant_f32(v("coef"), &[], &[0.044715]);
                let k = self.constant_f32(
                    v("sqrt_2_over_pi"),
                    &[],
                    &[(2.0 / std::f64::consts::PI).sqrt() as f32],
                );
                let x2 = self.inner("Mul", v("x2"), &[x, x], Vec::new());
                let x3 = self.inner("Mul", v("x3"), &[x2, x.to_owned()], Vec::new());
                let cx3 = self.inner("Mul", v("cx3"), &[x3, c], Vec::new());
                let sum = self.inner("Add", v("sum"), &[x.to_owned(), cx3], Vec::new());
                let scaled = self.inner("Mul", v("scaled"), &[sum, k], Vec::new());
                self.inner("Tanh", v("tanh"), &[scaled], Vec::new())
            }
        };
        let one_plus = self.inner("Add", v("one_plus"), &[inner, one], Vec::new());
        let xhalf = self.inner("Mul", v("xhalf"), &[x.to_owned(), half], Vec::new());
        self.node("Mul", name, &[xhalf, one_plus], &[output], Vec::new());
    }
}

/// The node name and value of a layer's step that is its last unless `more` nodes follow:
/// the layer's own `name` writing `output`, or `/{name}/{what}` for both.
fn layer_end(name: &str, what: &str, output: &str, more: bool) -> (String, String) {
    if more {
        let value = format!("/{name}/{what}");
        (value.clone(), value)
    } else {
        (name.to_owned(), output.to_owned())
    }
}

/// The `[C, H, W]` of an image input; pools and convolutions only ever see images (the checked
/// model guarantees it), so a flat shape reads as `[n, 1, 1]`.
fn chw(shape: Shape) -> [usize; 3] {
    match shape {
        Shape::Chw(d) => d,
        Shape::Flat(n) => [n, 1, 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_core::{LayerDef, NetworkDef};

    fn model(input: [usize; 3], layers: Vec<LayerConfig>) -> Model {
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, config)| LayerDef {
                name: format!("l{i}"),
                config,
                inputs: Vec::new(),
            })
            .collect();
        Model::new(Some("T".into()), NetworkDef { input, layers }).expect("a valid model")
    }

    fn zeros(model: &Model) -> BTreeMap<String, Vec<f32>> {
        model
            .tensors()
            .map(|t| (t.name.clone(), vec![0.0; t.numel()]))
            .collect()
    }

    fn ops(proto: &ModelProto) -> Vec<&str> {
        let graph = proto.graph.as_ref().expect("a graph");
        graph.node.iter().map(|n| n.op_type.as_str()).collect()
    }

    fn linear(in_features: usize, out_features: usize) -> LayerConfig {
        LayerConfig::Linear(cnnc_core::LinearConfig {
            in_features,
            out_features,
            bias: true,
        })
    }

    #[test]
    fn writes_the_contract_names_and_a_symbolic_batch() {
        let m = model([1, 4, 4], vec![LayerConfig::FLATTEN, linear(16, 3)]);
        let proto = export_proto(&m, &zeros(&m), &ExportOptions::default()).expect("exports");
        let graph = proto.graph.as_ref().expect("a graph");
        assert_eq!(graph.input[0].name, INPUT);
        assert_eq!(graph.output[0].name, OUTPUT);
        assert_eq!(ops(&proto), ["Flatten", "Gemm"]);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["l1.weight", "l1.bias"]);
        assert_eq!(graph.initializer[0].dims, [3, 16]);
        assert_eq!(proto.opset_import[0].version, DEFAULT_OPSET);
        let Some(type_proto::Value::TensorType(t)) = graph.input[0]
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
        else {
            panic!("the input is a tensor");
        };
        let first = &t.shape.as_ref().expect("a shape").dim[0];
        assert_eq!(
            first.value,
            Some(tensor_shape_proto::dimension::Value::DimParam(BATCH.into()))
        );
        // The bytes decode back to the same message.
        let bytes = export(&m, &zeros(&m), &ExportOptions::default()).expect("exports");
        assert_eq!(ModelProto::decode(&bytes[..]).ok(), Some(proto));
    }

    #[test]
    fn refuses_what_it_cannot_write_exactly() {
        let m = model([1, 4, 4], vec![LayerConfig::FLATTEN, linear(16, 3)]);
        let opset = ExportOptions {
            opset: 13,
            ..ExportOptions::default()
        };
        assert_eq!(
            export(&m, &zeros(&m), &opset),
            Err(ExportError::Opset { opset: 13 })
        );
        let mut missing = zeros(&m);
        missing.remove("l1.bias");
        assert_eq!(
            export(&m, &missing, &ExportOptions::default()),
            Err(ExportError::MissingWeight {
                name: "l1.bias".into()
            })
        );
        let mut short = zeros(&m);
        short.insert("l1.weight".into(), vec![0.0; 5]);
        assert!(matches!(
            export(&m, &short, &ExportOptions::default()),
            Err(ExportError::WeightSize {
                expected: 48,
                found: 5,
                ..
            })
        ));
        let uneven = model(
            [2, 5, 5],
            vec![LayerConfig::AdaptiveAvgPool2d {
                output_size: [MAX_ADAPTIVE_SLICES + 1, 2],
            }],
        );
        let err = export(&uneven, &zeros(&uneven), &ExportOptions::default())
            .expect_err("too many uneven windows");
        assert!(
            err.to_string().starts_with(
                "layer `l0` (adaptive_avg_pool2d) cannot be exported: its 5x5 input does not \
                 divide into 257x2 equal windows"
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_an_average_pool_whose_ceil_mode_onnx_cannot_say() {
        // Height 6 (kernel 3): one more, partial window than the floor rule; width 5 (kernel
        // 2): PyTorch drops the window that would start in the padding, ONNX's ceil rule not.
        let pool = |input| {
            model(
                input,
                vec![LayerConfig::AvgPool2d(Pool2dConfig {
                    ceil_mode: true,
                    ..Pool2dConfig::new([3, 2], [2, 2], [1, 1])
                })],
            )
        };
        let odd = pool([1, 6, 5]);
        assert!(matches!(
            export(&odd, &zeros(&odd), &ExportOptions::default()),
            Err(ExportError::Unsupported { .. })
        ));
        let even = pool([1, 6, 6]);
        let proto = export_proto(&even, &zeros(&even), &ExportOptions::default());
        assert_eq!(proto.map(|p| ops(&p).join(" ")), Ok("AveragePool".into()));
        // A max pool says the same with explicit end padding: 6 rows padded to 1 + 6 + 2.
        let max = model(
            [1, 6, 5],
            vec![LayerConfig::MaxPool2d(Pool2dConfig {
                ceil_mode: true,
                ..Pool2dConfig::new([3, 2], [2, 2], [1, 1])
            })],
        );
        let proto = export_proto(&max, &zeros(&max), &ExportOptions::default()).expect("exports");
        let node = &proto.graph.expect("a graph").node[0];
        let pads = node
            .attribute
            .iter()
            .find(|a| a.name == "pads")
            .expect("pads");
        assert_eq!(pads.ints, [1, 1, 2, 1]);
    }

    #[test]
    fn uneven_adaptive_pools_slice_each_window_and_batch_statistics_reduce() {
        let m = model(
            [2, 5, 4],
            vec![
                LayerConfig::AdaptiveMaxPool2d {
                    output_size: [2, 1],
                },
                LayerConfig::BatchNorm2d(cnnc_core::config::BatchNorm2dConfig {
                    num_features: 2,
                    eps: 1e-5,
                    momentum: Some(0.1),
                    affine: false,
                    track_running_stats: false,
                }),
            ],
        );
        let at = |opset| {
            let options = ExportOptions {
                opset,
                ..ExportOptions::default()
            };
            export_proto(&m, &zeros(&m), &options).expect("exports")
        };
        let proto = at(17);
        assert_eq!(
            ops(&proto).join(" "),
            "Slice ReduceMax Slice ReduceMax Concat Slice ReduceMax Concat \
             ReduceMean Sub Mul ReduceMean Add Sqrt Div"
        );
        // PyTorch's rows 0..3 and 2..5 of 5: overlapping windows.
        let graph = proto.graph.as_ref().expect("a graph");
        let int = |name: &str| {
            let t = graph
                .initializer
                .iter()
                .find(|t| t.name == name)
                .expect(name);
            i64::from_le_bytes(t.raw_data[..8].try_into().expect("8 bytes"))
        };
        assert_eq!(
            [int("/l0/rows/0/ends"), int("/l0/rows/1/starts")],
            [3, 2],
            "rows 0..3 and 2..5"
        );
        // From opset 18 the reductions read their axes as an input.
        let proto = at(18);
        let reduce = &proto.graph.as_ref().expect("a graph").node[1];
        assert_eq!(reduce.input.len(), 2);
        assert!(reduce.attribute.iter().all(|a| a.name != "axes"));
    }

    #[test]
    fn global_pools_and_eval_dropout() {
        let m = model(
            [2, 6, 6],
            vec![
                LayerConfig::Dropout2d { p: 0.5 },
                LayerConfig::AdaptiveAvgPool2d {
                    output_size: [1, 1],
                },
                LayerConfig::AdaptiveMaxPool2d {
                    output_size: [1, 1],
                },
            ],
        );
        let proto = export_proto(&m, &zeros(&m), &ExportOptions::default()).expect("exports");
        assert_eq!(
            ops(&proto),
            ["Identity", "GlobalAveragePool", "GlobalMaxPool"]
        );
    }

    #[test]
    fn circular_padding_wraps_by_slices_before_opset_19() {
        let conv = LayerConfig::Conv2d(cnnc_core::Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            bias: false,
            padding_mode: PaddingMode::Circular,
            ..cnnc_core::Conv2dConfig::new(1, 1, [3, 3])
        });
        let m = model([1, 4, 4], vec![conv]);
        let at = |opset| {
            let options = ExportOptions {
                opset,
                ..ExportOptions::default()
            };
            let proto = export_proto(&m, &zeros(&m), &options).expect("exports");
            ops(&proto).join(" ")
        };
        assert_eq!(
            at(17),
            "Slice Slice Concat Slice Slice Concat Conv",
            "rows, then columns"
        );
        assert_eq!(at(19), "Pad Conv");
    }
}

#[cfg(test)]
pub(crate) mod graph_tests {
    use super::*;
    use cnnc_core::config::ConcatConfig;
    use cnnc_core::{LayerDef, NetworkDef};

    fn layer(name: &str, config: LayerConfig, inputs: Vec<Source>) -> LayerDef {
        LayerDef {
            name: name.into(),
            config,
            inputs,
        }
    }

    /// `a` = relu(input); `b.add` = a + input; `b.cat` = cat(b.add, a, input); `mul`; flatten.
    pub(crate) fn graph() -> Model {
        let def = NetworkDef {
            input: [2, 3, 3],
            layers: vec![
                layer("a", LayerConfig::Relu, vec![]),
                layer(
                    "b.add",
                    LayerConfig::Add,
                    vec![Source::Layer(0), Source::Input],
                ),
                layer(
                    "b.cat",
                    LayerConfig::Concat(ConcatConfig { dim: 1 }),
                    vec![Source::Layer(1), Source::Layer(0), Source::Input],
                ),
                layer(
                    "sum",
                    LayerConfig::Add,
                    vec![Source::Layer(2), Source::Layer(2), Source::Layer(2)],
                ),
                layer(
                    "mul",
                    LayerConfig::Mul,
                    vec![Source::Layer(3), Source::Layer(3)],
                ),
                layer("flat", LayerConfig::FLATTEN, vec![]),
            ],
        };
        Model::new(Some("G".into()), def).expect("a valid graph")
    }

    #[test]
    fn merges_read_their_sources() {
        let m = graph();
        let proto = export_proto(&m, &BTreeMap::new(), &ExportOptions::default()).expect("exports");
        let nodes: Vec<String> = proto
            .graph
            .expect("a graph")
            .node
            .iter()
            .map(|n| {
                format!(
                    "{}({}) -> {}",
                    n.op_type,
                    n.input.join(", "),
                    n.output.join(", ")
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                "Relu(input) -> /a/output",
                "Add(/a/output, input) -> /b.add/output",
                "Concat(/b.add/output, /a/output, input) -> /b.cat/output",
                "Add(/b.cat/output, /b.cat/output) -> /sum/sum1",
                "Add(/sum/sum1, /b.cat/output) -> /sum/output",
                "Mul(/sum/output, /sum/output) -> /mul/output",
                "Flatten(/mul/output) -> logits",
            ]
        );
    }
}
