//! ONNX import: a model exported by `torch.onnx.export` (eval mode) from operators cnnc has layer
//! kinds for becomes a checked [`Model`], its spec as YAML (a graph spec with `inputs:` where it
//! branches) and its weights under state_dict names. Anything else is refused with the node, its
//! operator and what is supported. Constant computations are folded first (`import/fold.rs`),
//! then the layers torch writes as several nodes are matched exactly (`import/patterns.rs`), then
//! every other node is lowered alone. The file is untrusted: its size, node count, every
//! dimension and every initializer's byte count are checked before anything is allocated from
//! them, folding has a budget, and nodes may only read values produced before them (no cycles).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use cnnc_core::config::{
    BatchNorm2dConfig, ConcatConfig, ConvTranspose2dConfig, GeluApproximate, GroupNormConfig,
};
use cnnc_core::geometry::adaptive_window;
use cnnc_core::kind::{ArgDefault, ArgType, ArgValue};
use cnnc_core::{
    Conv2dConfig, LayerConfig, LayerDef, LinearConfig, MAX_DIM, MAX_ELEMENTS, Model, NetworkDef,
    PaddingMode, Pool2dConfig, Shape, Source, TensorRole,
};
use prost::Message;

use crate::proto::{
    AttributeProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto,
};

mod fold;
mod patterns;

use patterns::{Fused, GroupShape, Pattern};

/// Largest ONNX file read: 1 GiB (protobuf's own limit is 2 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Most nodes in a graph.
pub const MAX_NODES: usize = 100_000;

/// The operators [`import`] understands, as its errors list them.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul (constant weight, then an Add of a constant bias or none: a linear layer)",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean and ReduceMax over height and width, kept (global pools)",
    "Flatten",
    "Reshape (a flatten: [N, -1] or [N, C*H*W])",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip (0..6)",
    "Elu",
    "HardSigmoid",
    "HardSwish",
    "PRelu",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "GELU's erf and tanh formulas (as torch.onnx.export writes them)",
    "SiLU as x * Sigmoid(x)",
    "group norm as Reshape, InstanceNormalization, Reshape, Mul and Add (as torch.onnx.export \
     writes it)",
    "Pad before a Conv (zeros, reflect, edge or wrap, folded into the convolution)",
    "Resize (nearest or linear as nn.Upsample: integer scales, or sizes of height and width)",
    "batch norm on batch statistics as cnnc exports it (ReduceMean, Sub, Mul, ReduceMean, Add, \
     Sqrt, Div, then Mul and Add when affine)",
    "an uneven adaptive pool as cnnc exports it (a Slice and ReduceMean or ReduceMax per window, \
     concatenated)",
    "AveragePool times kh*kw/divisor (divisor_override, as cnnc exports it)",
    "Add",
    "Sum",
    "Mul",
    "Concat (axis 1)",
    "Identity",
    "Dropout",
    "Constant",
];

/// Why an ONNX file cannot be imported.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file has {bytes} bytes; cnnc reads ONNX files up to {MAX_FILE_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// The bytes are not an ONNX protobuf message.
    #[error("not an ONNX model (protobuf: {0})")]
    Decode(String),
    /// The model's structure is outside what cnnc imports (no graph, several inputs, ...).
    #[error("{0}")]
    Structure(String),
    /// A node cnnc cannot import.
    #[error("node `{node}` ({op}): {why}")]
    Node {
        /// The node's name (or its first output's, when unnamed).
        node: String,
        /// Its operator.
        op: String,
        /// What is wrong, and what would work.
        why: String,
    },
    /// An initializer or constant tensor is malformed.
    #[error("tensor `{name}`: {why}")]
    Tensor {
        /// Its name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The layers do not form a model cnnc's checker accepts.
    #[error("the imported layers do not check: {0}")]
    Model(String),
}

/// An imported model: the checked model, its spec and its weights.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The checked model.
    pub model: Model,
    /// The spec, YAML.
    pub yaml: String,
    /// The state_dict: name, PyTorch shape and values, in the model's tensor order
    /// (`num_batches_tracked` is not listed: it is 0).
    pub weights: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Imports the ONNX model in `bytes`, naming it `name` (the spec's `model:`).
pub fn import(bytes: &[u8], name: &str) -> Result<Imported, ImportError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    let proto = ModelProto::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    import_proto(&proto, name)
}

/// A float tensor read from the file: its dimensions and values.
#[derive(Clone, Debug, PartialEq)]
struct Const {
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// What a value of the graph holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Input,
    Layer(usize),
}

/// A layer's state_dict tensors by suffix (`weight`, `bias`, ...).
type Tensors = Vec<(&'static str, Const)>;

/// One node as a layer: its config, the values it reads, its weight's name in the file (for
/// naming), and its state_dict tensors by suffix.
type Lowered<'n> = (
    LayerConfig,
    Vec<Value>,
    Option<&'n str>,
    Vec<(&'static str, Const)>,
);

struct Importer<'a> {
    consts: HashMap<&'a str, Rc<Const>>,
    values: HashMap<&'a str, Value>,
    layers: Vec<LayerDef>,
    weights: Vec<(String, Vec<usize>, Vec<f32>)>,
    names: HashSet<String>,
    /// The input's per-sample shape, then each layer's output shape (`None` after a layer the
    /// checker will refuse).
    input_shape: Shape,
    shapes: Vec<Option<Shape>>,
    /// The graph input's batch size when the file fixes it (a static export).
    batch: Option<usize>,
    /// A `Pad` folded into the `Conv` being lowered: what it pads, how much and how.
    pad: Option<(&'a str, [[usize; 2]; 2], PaddingMode)>,
}

fn structure(why: impl Into<String>) -> ImportError {
    ImportError::Structure(why.into())
}

/// [`import`], from the decoded message.
pub fn import_proto(proto: &ModelProto, name: &str) -> Result<Imported, ImportError> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| structure("the model has no graph"))?;
    if graph.node.len() > MAX_NODES {
        return Err(structure(format!(
            "the graph has {} nodes; cnnc imports up to {MAX_NODES}",
            graph.node.len()
        )));
    }
    let initializer_names: HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializer_names.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(structure(format!(
            "the graph has {} inputs; cnnc models take one image batch [N, C, H, W]",
            inputs.len()
        )));
    };
    let (shape, batch) = input_shape(input)?;
    let [output] = graph.output.as_slice() else {
        return Err(structure(format!(
            "the graph has {} outputs; cnnc models have one",
            graph.output.len()
        )));
    };
    let mut importer = Importer {
        consts: HashMap::new(),
        values: HashMap::new(),
        layers: Vec::new(),
        weights: Vec::new(),
        names: HashSet::new(),
        input_shape: Shape::Chw(shape),
        shapes: Vec::new(),
        batch,
        pad: None,
    };
    for tensor in &graph.initializer {
        if let Some(c) = read_tensor(tensor)? {
            importer.consts.insert(tensor.name.as_str(), Rc::new(c));
        }
    }
    importer.values.insert(input.name.as_str(), Value::Input);
    // Constants first (in order, so a node reads only constants made before it): `Constant`
    // nodes and the computations on constants torch leaves in a graph.
    let mut folded = HashSet::new();
    let mut budget = fold::FOLD_BUDGET;
    for (index, node) in graph.node.iter().enumerate() {
        if importer.constant_node(node, &mut budget)? {
            folded.insert(index);
        }
    }
    let fused = patterns::find(
        &graph.node,
        &[output.name.as_str()],
        &importer.consts,
        &folded,
    )?;
    let inside: HashSet<usize> = fused
        .iter()
        .flat_map(|(root, f)| f.nodes.iter().filter(move |n| *n != root).copied())
        .collect();
    let produced_later: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut fused = fused;
    for (index, node) in graph.node.iter().enumerate() {
        if folded.contains(&index) || inside.contains(&index) {
            continue;
        }
        let pattern = fused.remove(&index);
        let reads: Vec<&str> = match &pattern {
            Some(f) => vec![f.input],
            None => node.input.iter().map(String::as_str).collect(),
        };
        for input in reads.into_iter().filter(|i| !i.is_empty()) {
            let known = importer.values.contains_key(input) || importer.consts.contains_key(input);
            if !known {
                let why = if produced_later.contains(input) {
                    format!(
                        "reads `{input}` before a node produces it: the graph is not \
                         topologically sorted, or has a cycle"
                    )
                } else {
                    format!("reads `{input}`, which no node, initializer or input provides")
                };
                return Err(node_error(node, why));
            }
        }
        match pattern {
            Some(f) => importer.fused(&graph.node, node, f)?,
            None => importer.node(node)?,
        }
    }
    let last = importer.layers.len().checked_sub(1);
    match importer.values.get(output.name.as_str()) {
        Some(Value::Layer(i)) if Some(*i) == last => {}
        _ => {
            return Err(structure(format!(
                "the output `{}` is not computed by the last layer imported",
                output.name
            )));
        }
    }
    let def = NetworkDef {
        input: shape,
        layers: importer.layers,
    };
    let model = Model::new(Some(name.to_owned()), def)
        .map_err(|e| ImportError::Model(format!("layer `{}`: {e}", e.layer())))?;
    let mut weights = importer.weights;
    let order: HashMap<&str, usize> = model
        .tensors()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    weights.sort_by_key(|(n, _, _)| order.get(n.as_str()).copied().unwrap_or(usize::MAX));
    for info in model.tensors() {
        if info.role == TensorRole::NumBatchesTracked {
            continue;
        }
        let found = weights.iter().find(|(n, _, _)| *n == info.name);
        match found {
            Some((_, dims, _)) if *dims == info.shape => {}
            Some((_, dims, _)) => {
                return Err(ImportError::Tensor {
                    name: info.name.clone(),
                    why: format!("has shape {dims:?}; the layer needs {:?}", info.shape),
                });
            }
            None => {
                return Err(ImportError::Tensor {
                    name: info.name.clone(),
                    why: "is missing".to_owned(),
                });
            }
        }
    }
    let yaml = to_yaml(&model);
    Ok(Imported {
        model,
        yaml,
        weights,
    })
}

fn node_error(node: &NodeProto, why: impl Into<String>) -> ImportError {
    let name = if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    };
    ImportError::Node {
        node: name,
        op: node.op_type.clone(),
        why: why.into(),
    }
}

/// The input's `[C, H, W]`, and its batch size when the file fixes it.
fn input_shape(
    input: &crate::proto::ValueInfoProto,
) -> Result<([usize; 3], Option<usize>), ImportError> {
    let bad = || {
        structure(format!(
            "the input `{}` is not a float tensor [N, C, H, W] with known C, H and W",
            input.name
        ))
    };
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad());
    };
    if t.elem_type != DataType::Float as i32 {
        return Err(bad());
    }
    let dims = &t.shape.as_ref().ok_or_else(bad)?.dim;
    if dims.len() != 4 {
        return Err(bad());
    }
    let mut out = [0; 3];
    for (slot, dim) in out.iter_mut().zip(&dims[1..]) {
        match dim.value {
            Some(dimension::Value::DimValue(v)) if v >= 1 && v as u64 <= MAX_DIM as u64 => {
                *slot = v as usize;
            }
            _ => return Err(bad()),
        }
    }
    let batch = match dims[0].value {
        Some(dimension::Value::DimValue(n)) => usize::try_from(n).ok(),
        _ => None,
    };
    Ok((out, batch))
}

/// A float (or int64, as float) tensor's values, checked against its dims before any
/// allocation; `None` for other element types (never read as weights).
fn read_tensor(t: &TensorProto) -> Result<Option<Const>, ImportError> {
    let bad = |why: String| ImportError::Tensor {
        name: t.name.clone(),
        why,
    };
    if t.data_location == crate::proto::tensor_proto::DataLocation::External as i32
        || !t.external_data.is_empty()
    {
        return Err(bad(
            "its data is in an external file, which cnnc does not read; save the model with \
             its weights inside"
                .to_owned(),
        ));
    }
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    let mut count: u64 = 1;
    for &d in &t.dims {
        if d < 0 || d as u64 > MAX_DIM as u64 {
            return Err(bad(format!(
                "dimension {d} is out of range (0..={MAX_DIM})"
            )));
        }
        count = count.saturating_mul(d as u64);
        dims.push(d as usize);
    }
    if count > MAX_ELEMENTS {
        return Err(bad(format!(
            "{count} elements, more than cnnc's {MAX_ELEMENTS}"
        )));
    }
    let count = count as usize;
    let size_error = |found: usize, unit: &str| {
        bad(format!(
            "its dims {dims:?} need {count} elements but it holds {found} {unit}",
        ))
    };
    let values = if t.data_type == DataType::Float as i32 {
        if !t.raw_data.is_empty() {
            if t.raw_data.len() != count * 4 {
                return Err(size_error(t.raw_data.len(), "bytes (4 each)"));
            }
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            if t.float_data.len() != count {
                return Err(size_error(t.float_data.len(), "floats"));
            }
            t.float_data.clone()
        }
    } else if t.data_type == DataType::Int64 as i32 {
        if !t.raw_data.is_empty() {
            if t.raw_data.len() != count * 8 {
                return Err(size_error(t.raw_data.len(), "bytes (8 each)"));
            }
            t.raw_data
                .chunks_exact(8)
                .map(|b| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    i64::from_le_bytes(a) as f32
                })
                .collect()
        } else {
            if t.int64_data.len() != count {
                return Err(size_error(t.int64_data.len(), "integers"));
            }
            t.int64_data.iter().map(|&v| v as f32).collect()
        }
    } else {
        return Ok(None);
    };
    Ok(Some(Const { dims, values }))
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name)
        .filter(|a| a.r#type == AttributeType::Int as i32)
        .map_or(default, |a| a.i)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name)
        .filter(|a| a.r#type == AttributeType::Float as i32)
        .map_or(default, |a| a.f)
}

fn attr_string(node: &NodeProto, name: &str, default: &str) -> String {
    attr(node, name)
        .filter(|a| a.r#type == AttributeType::String as i32)
        .map_or_else(
            || default.to_owned(),
            |a| String::from_utf8_lossy(&a.s).into_owned(),
        )
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name)
        .filter(|a| a.r#type == AttributeType::Ints as i32)
        .map(|a| a.ints.clone())
}

/// The axes a `Reduce*` node reduces over a 4-D tensor, negative ones counted from the end,
/// sorted: its constant input 1 (opset 18 on) or its `axes` attribute; `None` when input 1 is
/// not a constant or an axis is out of range.
fn reduced_axes<'c>(
    node: &NodeProto,
    constant: impl Fn(&str) -> Option<&'c Const>,
) -> Option<Vec<i64>> {
    let axes: Vec<i64> = match node.input.get(1).filter(|n| !n.is_empty()) {
        Some(name) => constant(name)?.values.iter().map(|&v| v as i64).collect(),
        None => attr_ints(node, "axes").unwrap_or_default(),
    };
    let mut axes = axes
        .into_iter()
        .map(|a| if a < 0 { a.checked_add(4) } else { Some(a) })
        .map(|a| a.filter(|a| (0..4).contains(a)))
        .collect::<Option<Vec<i64>>>()?;
    axes.sort_unstable();
    Some(axes)
}

/// A 2-D attribute (`strides`, `dilations`, `kernel_shape`), each value in `min..=MAX_DIM`.
fn pair_attr(
    node: &NodeProto,
    name: &str,
    default: usize,
    min: i64,
) -> Result<[usize; 2], ImportError> {
    match attr_ints(node, name) {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x >= min && x as u64 <= MAX_DIM as u64) => {
            Ok([v[0] as usize, v[1] as usize])
        }
        Some(v) => Err(node_error(
            node,
            format!("`{name}` {v:?} is not two sizes of at least {min}"),
        )),
    }
}

/// `pads` `[top, left, bottom, right]`, which PyTorch's layers (and cnnc's) keep symmetric.
fn pads_attr(node: &NodeProto) -> Result<[usize; 2], ImportError> {
    let auto_pad = attr_string(node, "auto_pad", "NOTSET");
    if auto_pad != "NOTSET" {
        return Err(node_error(
            node,
            format!("auto_pad {auto_pad} is not supported: only explicit `pads`"),
        ));
    }
    match attr_ints(node, "pads") {
        None => Ok([0, 0]),
        Some(p)
            if p.len() == 4
                && p[0] == p[2]
                && p[1] == p[3]
                && p.iter().all(|&x| x >= 0 && x as u64 <= MAX_DIM as u64) =>
        {
            Ok([p[0] as usize, p[1] as usize])
        }
        Some(p) => Err(node_error(
            node,
            format!(
                "pads {p:?} are not the same on both sides of each axis, as PyTorch's layers pad"
            ),
        )),
    }
}

/// A `Conv`'s padding, `[top, left]` and `[bottom, right]`: even `pads`, or PyTorch's
/// `padding='same'` with an odd total (the extra pixel on the bottom and right, stride 1), which
/// `torch.onnx.export` writes as explicit uneven `pads` (dynamo) or `auto_pad: SAME_UPPER`
/// (the TorchScript exporter).
fn conv_pads(
    node: &NodeProto,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<[[usize; 2]; 2], ImportError> {
    let same = Conv2dConfig::same_padding(kernel, dilation);
    let auto_pad = attr_string(node, "auto_pad", "NOTSET");
    match auto_pad.as_str() {
        "VALID" => return Ok([[0, 0]; 2]),
        // SAME_LOWER pads the extra pixel before the input: the same only for even totals.
        "SAME_UPPER" | "SAME_LOWER"
            if stride == [1, 1] && (auto_pad == "SAME_UPPER" || same[0] == same[1]) =>
        {
            return Ok(same);
        }
        "NOTSET" => {}
        _ => {
            return Err(node_error(
                node,
                format!(
                    "auto_pad {auto_pad} is not supported here: PyTorch's padding='same' is \
                     SAME_UPPER with stride 1"
                ),
            ));
        }
    }
    match attr_ints(node, "pads") {
        None => Ok([[0, 0]; 2]),
        Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0 && x as u64 <= MAX_DIM as u64) => {
            let [top, left, bottom, right] = [p[0], p[1], p[2], p[3]].map(|x| x as usize);
            let pads = [[top, left], [bottom, right]];
            if pads[0] == pads[1] || (stride == [1, 1] && pads == same) {
                Ok(pads)
            } else {
                Err(node_error(
                    node,
                    format!(
                        "pads {p:?} are neither the same on both sides of each axis nor \
                         padding='same''s with stride 1, as PyTorch's layers pad"
                    ),
                ))
            }
        }
        Some(p) => Err(node_error(
            node,
            format!("pads {p:?} must be 4 sizes, [top, left, bottom, right]"),
        )),
    }
}

/// `path` made a cnnc layer name: letters, digits, `_` and `.` kept, others `_`.
fn clean_name(path: &str) -> String {
    let name: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_matches('.').to_owned();
    if name.is_empty() || name == "input" {
        format!("{name}_")
    } else {
        name
    }
}

/// The module path of a node named as `torch.onnx.export` names them: each scope is a child's
/// name, extending its parent's when the parent is a container (`/features/features.1/conv/
/// conv.0/conv.0.0/Conv` → `features.1.conv.0.0`, `/layer1/layer1.0/conv1/Conv` →
/// `layer1.0.conv1`).
fn module_path(node: &NodeProto) -> Option<String> {
    let path = node.name.strip_prefix('/')?;
    let mut segments: Vec<&str> = path.split('/').collect();
    segments.pop();
    let mut full = String::new();
    let mut previous = "";
    for seg in segments.into_iter().filter(|s| !s.is_empty()) {
        match seg
            .strip_prefix(previous)
            .filter(|rest| !previous.is_empty() && rest.starts_with('.'))
        {
            Some(rest) => full.push_str(rest),
            None if full.is_empty() => full = seg.to_owned(),
            None => {
                full.push('.');
                full.push_str(seg);
            }
        }
        previous = seg;
    }
    (!full.is_empty()).then_some(full)
}

impl<'a> Importer<'a> {
    fn value(&self, node: &NodeProto, name: &str) -> Result<Value, ImportError> {
        self.values.get(name).copied().ok_or_else(|| {
            node_error(
                node,
                format!("`{name}` is a constant where cnnc needs a computed tensor"),
            )
        })
    }

    fn constant(&self, node: &NodeProto, index: usize) -> Result<Option<&Const>, ImportError> {
        let Some(name) = node.input.get(index).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        self.consts
            .get(name.as_str())
            .map(|c| Some(&**c))
            .ok_or_else(|| {
                node_error(
                    node,
                    format!(
                        "input {index} `{name}` must be an initializer or a constant (a weight), \
                     not a computed tensor"
                    ),
                )
            })
    }

    fn required(&self, node: &NodeProto, index: usize, what: &str) -> Result<&Const, ImportError> {
        self.constant(node, index)?
            .ok_or_else(|| node_error(node, format!("has no {what} (input {index})")))
    }

    /// The layer's name: the state_dict prefix of its weight when the exporter kept it, else its
    /// module path, else the node's name when it is a plain word, else its kind; made unique.
    fn name_for(&mut self, node: &NodeProto, weight: Option<&str>, keyword: &str) -> String {
        let from_weight = weight
            .and_then(|w| w.strip_suffix(".weight"))
            .filter(|w| !w.contains("::"))
            .map(str::to_owned);
        let plain = |n: &String| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        };
        let base = from_weight
            .or_else(|| module_path(node))
            .or_else(|| Some(node.name.clone()).filter(plain))
            .unwrap_or_else(|| keyword.to_owned());
        let base = clean_name(&base);
        let mut name = base.clone();
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn push(
        &mut self,
        node: &'a NodeProto,
        config: LayerConfig,
        sources: &[Value],
        weight: Option<&str>,
        tensors: Vec<(&'static str, Const)>,
    ) -> Result<(), ImportError> {
        let name = self.name_for(node, weight, config.kind().keyword());
        let index = self.layers.len();
        let inputs: Vec<Source> = sources
            .iter()
            .map(|v| match v {
                Value::Input => Source::Input,
                Value::Layer(i) => Source::Layer(*i),
            })
            .collect();
        let default = if index == 0 {
            Source::Input
        } else {
            Source::Layer(index - 1)
        };
        let inputs = if inputs == [default] {
            Vec::new()
        } else {
            inputs
        };
        for (suffix, c) in tensors {
            self.weights
                .push((format!("{name}.{suffix}"), c.dims, c.values));
        }
        let shape = sources
            .iter()
            .map(|v| self.shape_of(*v))
            .collect::<Option<Vec<_>>>()
            .and_then(|shapes| config.output_shape_of(&shapes).ok());
        self.shapes.push(shape);
        self.layers.push(LayerDef {
            name,
            config,
            inputs,
        });
        let [output] = node.output.as_slice() else {
            return Err(node_error(
                node,
                format!("has {} outputs; cnnc reads one", node.output.len()),
            ));
        };
        self.values.insert(output.as_str(), Value::Layer(index));
        Ok(())
    }

    /// The per-sample shape of `value`, when the layers so far check.
    fn shape_of(&self, value: Value) -> Option<Shape> {
        match value {
            Value::Input => Some(self.input_shape),
            Value::Layer(i) => self.shapes.get(i).copied().flatten(),
        }
    }

    /// Records `node`'s output as a constant when it is a `Constant` or computes only on
    /// constants ([`fold::foldable`]); whether it did.
    fn constant_node(
        &mut self,
        node: &'a NodeProto,
        budget: &mut usize,
    ) -> Result<bool, ImportError> {
        let op = node.op_type.as_str();
        let [output] = node.output.as_slice() else {
            return Ok(false);
        };
        if op == "Constant" {
            let value = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| node_error(node, "only `value` tensors are supported"))?;
            if let Some(c) = read_tensor(value)? {
                self.consts.insert(output.as_str(), Rc::new(c));
            }
            return Ok(true);
        }
        let inputs: Vec<Option<Rc<Const>>> = node
            .input
            .iter()
            .map(|i| (!i.is_empty()).then(|| self.consts.get(i.as_str()).cloned()))
            .map(|c| c.map_or(Some(None), |c| c.map(Some)))
            .collect::<Option<_>>()
            .unwrap_or_default();
        if node.input.is_empty() || inputs.len() != node.input.len() {
            return Ok(false);
        }
        let c = match op {
            // The exporter shares one constant under two names.
            "Identity" | "Dropout" => match &inputs[0] {
                Some(c) => Rc::clone(c),
                None => return Ok(false),
            },
            _ if fold::foldable(op) => {
                let refs: Vec<Option<&Const>> = inputs.iter().map(|c| c.as_deref()).collect();
                Rc::new(fold::fold(node, &refs, budget)?)
            }
            _ => return Ok(false),
        };
        self.consts.insert(output.as_str(), c);
        Ok(true)
    }

    /// Lowers a matched multi-node pattern whose last node is `root`.
    fn fused(
        &mut self,
        nodes: &'a [NodeProto],
        root: &'a NodeProto,
        fused: Fused<'a>,
    ) -> Result<(), ImportError> {
        let x = self.value(root, fused.input)?;
        let (config, weight, tensors) = match fused.pattern {
            Pattern::Gelu(approximate) => (LayerConfig::Gelu { approximate }, None, Vec::new()),
            Pattern::Silu => (LayerConfig::Silu, None, Vec::new()),
            Pattern::GroupNorm {
                groups,
                eps,
                affine,
                shape,
            } => {
                let input = self.shape_of(x);
                let channels = match (&affine, input) {
                    (Some((w, _)), _) => w.values.len(),
                    (None, Some(s)) => s.channels(),
                    (None, None) => {
                        return Err(node_error(
                            root,
                            "group norm of a tensor whose shape is unknown (an earlier layer                              does not check)",
                        ));
                    }
                };
                if let GroupShape::Constant(values) = &shape {
                    let want: Vec<f32> = input
                        .map(|s| s.dims().iter().map(|&d| d as f32).collect())
                        .unwrap_or_default();
                    let batch_ok = values.first().is_some_and(|&n| {
                        n == 0.0 || n == -1.0 || self.batch.is_some_and(|b| n == b as f32)
                    });
                    if !batch_ok || values.get(1..) != Some(&want[..]) {
                        return Err(node_error(
                            root,
                            format!(
                                "group norm's reshape to {values:?} does not restore its                                  input's shape {want:?}"
                            ),
                        ));
                    }
                }
                let config = LayerConfig::GroupNorm(GroupNormConfig {
                    num_groups: groups,
                    num_channels: channels,
                    eps,
                    affine: affine.is_some(),
                });
                let tensors =
                    affine.map_or_else(Vec::new, |(w, b)| vec![("weight", w), ("bias", b)]);
                (config, None, tensors)
            }
            Pattern::Linear { weight, name, bias } => {
                let (config, tensors) = linear_from_matmul(root, weight, bias)?;
                (config, Some(name), tensors)
            }
            Pattern::BatchStatistics {
                eps,
                affine,
                weight,
            } => {
                let channels = match (&affine, self.shape_of(x)) {
                    (Some((w, _)), _) => w.values.len(),
                    (None, Some(s)) => s.channels(),
                    (None, None) => {
                        return Err(node_error(
                            root,
                            "batch norm of a tensor whose shape is unknown (an earlier layer \
                             does not check)",
                        ));
                    }
                };
                let config = LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                    num_features: channels,
                    eps,
                    affine: affine.is_some(),
                    track_running_stats: false,
                    ..BatchNorm2dConfig::new(channels)
                });
                let tensors =
                    affine.map_or_else(Vec::new, |(w, b)| vec![("weight", w), ("bias", b)]);
                (config, weight, tensors)
            }
            Pattern::AdaptivePool { avg, rows, cols } => {
                let windows = |found: &[(usize, usize)], input: usize| {
                    let n = found.len();
                    (0..n).all(|i| found[i] == adaptive_window(i, input, n))
                };
                match self.shape_of(x) {
                    Some(Shape::Chw([_, h, w])) if windows(&rows, h) && windows(&cols, w) => {}
                    _ => {
                        return Err(node_error(
                            root,
                            format!(
                                "its slices (rows {rows:?}, columns {cols:?}) are not an \
                                 adaptive pool's windows of its input {:?}",
                                self.shape_of(x)
                            ),
                        ));
                    }
                }
                let output_size = [rows.len(), cols.len()];
                let config = if avg {
                    LayerConfig::AdaptiveAvgPool2d { output_size }
                } else {
                    LayerConfig::AdaptiveMaxPool2d { output_size }
                };
                (config, None, Vec::new())
            }
            Pattern::ResizeTo { size } => {
                let config = self.upsample(root, ResizeTo::Sizes(size), x)?;
                (LayerConfig::Upsample(config), None, Vec::new())
            }
            Pattern::DivisorPool { pool, divisor } => {
                // The pool as written, then its divisor: its windows are whole, so the mean
                // times kh * kw / divisor is the sum over the divisor.
                self.node(&nodes[pool])?;
                let index = self.layers.len() - 1;
                if let LayerConfig::AvgPool2d(c) = &mut self.layers[index].config {
                    c.divisor_override = Some(divisor);
                }
                let [output] = root.output.as_slice() else {
                    return Err(node_error(root, "has several outputs; cnnc reads one"));
                };
                self.values.insert(output.as_str(), Value::Layer(index));
                return Ok(());
            }
            Pattern::PadConv { padding, mode } => {
                self.pad = Some((fused.input, padding, mode));
                let lowered = self.node(root);
                self.pad = None;
                return lowered;
            }
        };
        self.push(root, config, &[x], weight, tensors)
    }

    /// A `Resize`'s constant `sizes` `[N, C, H, W]`: the channels its input's, the batch the
    /// file's fixed one (a dynamic batch is never a constant).
    fn constant_sizes(
        &self,
        node: &NodeProto,
        sizes: &[f32],
        x: Value,
    ) -> Result<ResizeTo, ImportError> {
        let channels = self.shape_of(x).map(|s| s.channels() as f32);
        let whole = |v: f32| v >= 1.0 && v.fract() == 0.0 && v <= MAX_DIM as f32;
        match sizes {
            [n, c, h, w]
                if self.batch.is_some_and(|b| *n == b as f32)
                    && Some(*c) == channels
                    && whole(*h)
                    && whole(*w) =>
            {
                Ok(ResizeTo::Sizes([*h as usize, *w as usize]))
            }
            _ => Err(node_error(
                node,
                format!(
                    "sizes {sizes:?}: only the input's batch and channels with a new height \
                     and width are supported"
                ),
            )),
        }
    }

    /// `Resize` as cnnc's `upsample`, where ONNX's coordinate transformation gives PyTorch's
    /// `nn.Upsample` exactly: nearest by an integer factor (`asymmetric` rounding down, or
    /// `half_pixel`/`pytorch_half_pixel`, which land on the same pixels for integer factors),
    /// nearest to sizes (`asymmetric`, `floor`), and `linear` as bilinear with `align_corners`
    /// (`align_corners: true`), `half_pixel` (false) or `pytorch_half_pixel` (false, where no
    /// output axis has one pixel from several: there ONNX takes the first input pixel and
    /// PyTorch interpolates the middle). Everything else is an error naming the attribute.
    fn upsample(
        &self,
        node: &NodeProto,
        to: ResizeTo,
        x: Value,
    ) -> Result<cnnc_core::config::UpsampleConfig, ImportError> {
        use cnnc_core::config::{UpsampleConfig, UpsampleMode};
        let refuse = |attribute: &str, why: String| {
            node_error(
                node,
                format!(
                    "{attribute} {why}; cnnc imports a Resize as nn.Upsample: mode nearest \
                     (integer scales with asymmetric + floor, half_pixel or pytorch_half_pixel; \
                     sizes with asymmetric + floor) or linear (align_corners, half_pixel, or \
                     pytorch_half_pixel with no output axis of one pixel), without antialias, \
                     exclude_outside, axes or a keep_aspect_ratio_policy other than stretch"
                ),
            )
        };
        if attr_int(node, "antialias", 0) != 0 {
            return Err(refuse("antialias", "1".to_owned()));
        }
        if attr_int(node, "exclude_outside", 0) != 0 {
            return Err(refuse("exclude_outside", "1".to_owned()));
        }
        if let Some(axes) = attr_ints(node, "axes") {
            return Err(refuse("axes", format!("{axes:?}")));
        }
        let policy = attr_string(node, "keep_aspect_ratio_policy", "stretch");
        if policy != "stretch" && matches!(to, ResizeTo::Sizes(_)) {
            return Err(refuse("keep_aspect_ratio_policy", policy));
        }
        let transform = attr_string(node, "coordinate_transformation_mode", "half_pixel");
        let nearest_mode = attr_string(node, "nearest_mode", "round_prefer_floor");
        let (scale_factor, size) = match to {
            ResizeTo::Scales(s) => (Some(s), None),
            ResizeTo::Sizes(s) => (None, Some(s)),
        };
        let mode = attr_string(node, "mode", "nearest");
        let (mode, align_corners) = match (mode.as_str(), transform.as_str()) {
            ("nearest", "asymmetric") if nearest_mode == "floor" => (UpsampleMode::Nearest, None),
            ("nearest", "asymmetric") => {
                return Err(refuse(
                    "nearest_mode",
                    format!("{nearest_mode} with asymmetric coordinates"),
                ));
            }
            // Integer factors: (dst + 0.5) / s - 0.5 rounds to floor(dst / s) whichever way.
            ("nearest", "half_pixel" | "pytorch_half_pixel") if scale_factor.is_some() => {
                (UpsampleMode::Nearest, None)
            }
            ("linear", "align_corners") => (UpsampleMode::Bilinear, Some(true)),
            ("linear", "half_pixel") => (UpsampleMode::Bilinear, None),
            ("linear", "pytorch_half_pixel") => {
                let input = match self.shape_of(x) {
                    Some(Shape::Chw([_, h, w])) => Some([h, w]),
                    _ => None,
                };
                let output = input.and_then(|[h, w]| {
                    let scaled =
                        |[sh, sw]: [usize; 2]| Some([h.checked_mul(sh)?, w.checked_mul(sw)?]);
                    size.or_else(|| scaled(scale_factor?))
                });
                match input.zip(output) {
                    Some((i, o)) if (0..2).all(|a| o[a] > 1 || i[a] == 1) => {
                        (UpsampleMode::Bilinear, None)
                    }
                    _ => {
                        return Err(refuse(
                            "coordinate_transformation_mode",
                            "pytorch_half_pixel to an output of one pixel from several (ONNX \
                             takes the first, PyTorch the middle)"
                                .to_owned(),
                        ));
                    }
                }
            }
            ("nearest" | "linear", other) => {
                return Err(refuse(
                    "coordinate_transformation_mode",
                    format!("{other} with mode {mode}"),
                ));
            }
            (other, _) => return Err(refuse("mode", other.to_owned())),
        };
        Ok(UpsampleConfig {
            size,
            scale_factor,
            mode,
            align_corners,
        })
    }

    fn node(&mut self, node: &'a NodeProto) -> Result<(), ImportError> {
        let op = node.op_type.as_str();
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(node_error(
                node,
                format!("domain `{}` is not ONNX's standard operators", node.domain),
            ));
        }
        let first = || -> Result<Value, ImportError> {
            let name = node
                .input
                .first()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| node_error(node, "has no input"))?;
            self.value(node, name)
        };
        let simple = |config: LayerConfig| -> Result<(LayerConfig, Vec<Value>), ImportError> {
            Ok((config, vec![first()?]))
        };
        let (config, sources, weight, tensors): Lowered<'_> = match op {
            "Constant" => {
                return Err(node_error(
                    node,
                    "only `value` constants of one output are supported",
                ));
            }
            "Identity" | "Dropout" => {
                let v = first()?;
                if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
                    return Err(node_error(node, "its mask output is not supported"));
                }
                let output = node
                    .output
                    .first()
                    .ok_or_else(|| node_error(node, "has no output"))?;
                self.values.insert(output.as_str(), v);
                return Ok(());
            }
            "Conv" => {
                let w = self.required(node, 1, "weight")?.clone();
                let b = self.constant(node, 2)?.cloned();
                let [out_channels, per_group, kh, kw] = dims4(node, &w)?;
                let groups = usize::try_from(attr_int(node, "group", 1))
                    .ok()
                    .filter(|g| (1..=MAX_DIM).contains(g))
                    .ok_or_else(|| node_error(node, "`group` is out of range"))?;
                let [stride, dilation] = [
                    pair_attr(node, "strides", 1, 1)?,
                    pair_attr(node, "dilations", 1, 1)?,
                ];
                let [mut padding, mut padding_end] = conv_pads(node, [kh, kw], stride, dilation)?;
                let mut padding_mode = PaddingMode::Zeros;
                let mut source = None;
                if let Some((x, pad, mode)) = self.pad {
                    if mode != PaddingMode::Zeros && (padding != [0, 0] || padding_end != [0, 0]) {
                        return Err(node_error(
                            node,
                            "pads both in the Pad before it and itself, which cnnc's padding \
                             modes cannot say",
                        ));
                    }
                    padding = [padding[0] + pad[0][0], padding[1] + pad[0][1]];
                    padding_end = [padding_end[0] + pad[1][0], padding_end[1] + pad[1][1]];
                    let same = Conv2dConfig::same_padding([kh, kw], dilation);
                    if padding != padding_end
                        && (stride != [1, 1] || [padding, padding_end] != same)
                    {
                        return Err(node_error(
                            node,
                            format!(
                                "pads [{}, {}, {}, {}] with the Pad before it, neither the same \
                                 on both sides nor padding='same''s with stride 1",
                                padding[0], padding[1], padding_end[0], padding_end[1]
                            ),
                        ));
                    }
                    padding_mode = mode;
                    source = Some(self.value(node, x)?);
                }
                let config = LayerConfig::Conv2d(Conv2dConfig {
                    in_channels: per_group.saturating_mul(groups),
                    out_channels,
                    kernel_size: [kh, kw],
                    stride,
                    padding,
                    padding_end,
                    dilation,
                    groups,
                    bias: b.is_some(),
                    padding_mode,
                });
                check_kernel(node, [kh, kw])?;
                let mut tensors = vec![("weight", w)];
                tensors.extend(b.map(|b| ("bias", b)));
                (
                    config,
                    vec![source.map_or_else(first, Ok)?],
                    Some(node.input[1].as_str()),
                    tensors,
                )
            }
            "ConvTranspose" => {
                if attr(node, "output_shape").is_some() {
                    return Err(node_error(
                        node,
                        "`output_shape` is not supported; use pads and output_padding",
                    ));
                }
                let w = self.required(node, 1, "weight")?.clone();
                let b = self.constant(node, 2)?.cloned();
                let [in_channels, per_group, kh, kw] = dims4(node, &w)?;
                let groups = usize::try_from(attr_int(node, "group", 1))
                    .ok()
                    .filter(|g| (1..=MAX_DIM).contains(g))
                    .ok_or_else(|| node_error(node, "`group` is out of range"))?;
                check_kernel(node, [kh, kw])?;
                let config = LayerConfig::ConvTranspose2d(ConvTranspose2dConfig {
                    in_channels,
                    out_channels: per_group.saturating_mul(groups),
                    kernel_size: [kh, kw],
                    stride: pair_attr(node, "strides", 1, 1)?,
                    padding: pads_attr(node)?,
                    output_padding: pair_attr(node, "output_padding", 0, 0)?,
                    groups,
                    bias: b.is_some(),
                    dilation: pair_attr(node, "dilations", 1, 1)?,
                });
                let mut tensors = vec![("weight", w)];
                tensors.extend(b.map(|b| ("bias", b)));
                (
                    config,
                    vec![first()?],
                    Some(node.input[1].as_str()),
                    tensors,
                )
            }
            "Gemm" => {
                if attr_int(node, "transA", 0) != 0
                    || attr_float(node, "alpha", 1.0) != 1.0
                    || attr_float(node, "beta", 1.0) != 1.0
                {
                    return Err(node_error(
                        node,
                        "only transA=0, alpha=1 and beta=1 (torch.nn.Linear) are supported",
                    ));
                }
                let mut w = self.required(node, 1, "weight")?.clone();
                let b = self.constant(node, 2)?.cloned();
                let [a, c] = match w.dims.as_slice() {
                    [a, c] => [*a, *c],
                    d => return Err(node_error(node, format!("weight dims {d:?} are not 2-D"))),
                };
                let (out_features, in_features) = if attr_int(node, "transB", 0) == 1 {
                    (a, c)
                } else {
                    // [in, out]: store PyTorch's [out, in].
                    let mut t = vec![0.0; w.values.len()];
                    for i in 0..a {
                        for o in 0..c {
                            t[o * a + i] = w.values[i * c + o];
                        }
                    }
                    w = Const {
                        dims: vec![c, a],
                        values: t,
                    };
                    (c, a)
                };
                if let Some(b) = &b
                    && b.dims != [out_features]
                {
                    return Err(node_error(
                        node,
                        format!("bias dims {:?} are not [{out_features}]", b.dims),
                    ));
                }
                let config = LayerConfig::Linear(LinearConfig {
                    in_features,
                    out_features,
                    bias: b.is_some(),
                });
                let mut tensors = vec![("weight", w)];
                tensors.extend(b.map(|b| ("bias", b)));
                (
                    config,
                    vec![first()?],
                    Some(node.input[1].as_str()),
                    tensors,
                )
            }
            "BatchNormalization" => {
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err(node_error(
                        node,
                        "training_mode=1 is not supported: export in eval mode",
                    ));
                }
                let names = ["weight", "bias", "running_mean", "running_var"];
                let mut tensors = Vec::new();
                for (i, n) in names.into_iter().enumerate() {
                    tensors.push((n, self.required(node, i + 1, n)?.clone()));
                }
                let num_features = tensors[0].1.values.len();
                // ONNX keeps the running statistics' own weight, PyTorch the update's; six
                // decimals undo the float rounding of `1 - momentum` (0.01 → 0.99 → 0.01).
                let momentum = 1.0 - f64::from(attr_float(node, "momentum", 0.9));
                let momentum = format!("{momentum:.6}").parse::<f32>().unwrap_or(0.1);
                let config = LayerConfig::BatchNorm2d(BatchNorm2dConfig {
                    num_features,
                    eps: attr_float(node, "epsilon", 1e-5),
                    momentum: Some(momentum),
                    affine: true,
                    track_running_stats: true,
                });
                (
                    config,
                    vec![first()?],
                    Some(node.input[1].as_str()),
                    tensors,
                )
            }
            "MaxPool" | "AveragePool" => {
                let kernel = pair_attr(node, "kernel_shape", 0, 1)?;
                if op == "AveragePool" && pair_attr(node, "dilations", 1, 1)? != [1, 1] {
                    return Err(node_error(node, "dilated average pools are not supported"));
                }
                let padding = pads_attr(node)?;
                let mut pool =
                    Pool2dConfig::new(kernel, pair_attr(node, "strides", 1, 1)?, padding);
                pool.ceil_mode = attr_int(node, "ceil_mode", 0) == 1;
                if op == "MaxPool" {
                    pool.dilation = pair_attr(node, "dilations", 1, 1)?;
                } else {
                    // Without padding both counts are the same: keep PyTorch's default.
                    pool.count_include_pad =
                        padding == [0, 0] || attr_int(node, "count_include_pad", 0) == 1;
                }
                if node.output.len() > 1 {
                    return Err(node_error(node, "its indices output is not supported"));
                }
                let config = if op == "MaxPool" {
                    LayerConfig::MaxPool2d(pool)
                } else {
                    LayerConfig::AvgPool2d(pool)
                };
                let (c, s) = simple(config)?;
                (c, s, None, Vec::new())
            }
            "GlobalAveragePool" => {
                let (c, s) = simple(LayerConfig::AdaptiveAvgPool2d {
                    output_size: [1, 1],
                })?;
                (c, s, None, Vec::new())
            }
            "ReduceMean" | "ReduceMax" => {
                // torch's dynamo exporter writes `AdaptiveAvgPool2d(1)` as a mean over the
                // height and width that keeps them.
                // Axes given as an input must be a constant.
                self.constant(node, 1)?;
                let axes =
                    reduced_axes(node, |a| self.consts.get(a).map(|c| &**c)).unwrap_or_default();
                if axes != [2, 3] || attr_int(node, "keepdims", 1) != 1 {
                    let batch_norm = if axes.contains(&0) && op == "ReduceMean" {
                        "; a mean over the batch is imported only as batch norm on batch \
                         statistics, exactly as cnnc exports it (ReduceMean over axes [0, 2, 3], \
                         Sub, Mul, ReduceMean, Add of epsilon, Sqrt, Div, then Mul by the \
                         weight and Add of the bias)"
                    } else {
                        ""
                    };
                    return Err(node_error(
                        node,
                        format!(
                            "only a reduction over height and width keeping them (a global \
                             pool) is supported, not axes {axes:?} with keepdims {}{batch_norm}",
                            attr_int(node, "keepdims", 1)
                        ),
                    ));
                }
                let config = if op == "ReduceMean" {
                    LayerConfig::AdaptiveAvgPool2d {
                        output_size: [1, 1],
                    }
                } else {
                    LayerConfig::AdaptiveMaxPool2d {
                        output_size: [1, 1],
                    }
                };
                let (c, s) = simple(config)?;
                (c, s, None, Vec::new())
            }
            "GlobalMaxPool" => {
                let (c, s) = simple(LayerConfig::AdaptiveMaxPool2d {
                    output_size: [1, 1],
                })?;
                (c, s, None, Vec::new())
            }
            "Flatten" => {
                if attr_int(node, "axis", 1) != 1 {
                    return Err(node_error(
                        node,
                        "only axis 1 (torch.flatten(x, 1)) is supported",
                    ));
                }
                let (c, s) = simple(LayerConfig::FLATTEN)?;
                (c, s, None, Vec::new())
            }
            "Reshape" => {
                let shape = self.required(node, 1, "shape")?;
                // A flatten: [N, -1] (N as 0, -1, or the file's fixed batch), or [N, C*H*W].
                let numel = self.shape_of(first()?).map(|s| s.numel() as f32);
                let flat = match shape.values.as_slice() {
                    [n, f] => {
                        let batch = matches!(n, 0.0 | 1.0 | -1.0)
                            || self.batch.is_some_and(|b| *n == b as f32);
                        batch && (*f == -1.0 || Some(*f) == numel)
                    }
                    _ => false,
                };
                if !flat {
                    return Err(node_error(
                        node,
                        format!(
                            "only a reshape to [N, -1] or [N, C*H*W] (a flatten) is supported, \
                             not {:?}",
                            shape.values
                        ),
                    ));
                }
                let (c, s) = simple(LayerConfig::FLATTEN)?;
                (c, s, None, Vec::new())
            }
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" => {
                let config = match op {
                    "Relu" => LayerConfig::Relu,
                    "Sigmoid" => LayerConfig::Sigmoid,
                    "Tanh" => LayerConfig::Tanh,
                    _ => LayerConfig::Hardswish,
                };
                let (c, s) = simple(config)?;
                (c, s, None, Vec::new())
            }
            "LeakyRelu" => {
                let (c, s) = simple(LayerConfig::LeakyRelu {
                    negative_slope: attr_float(node, "alpha", 0.01),
                })?;
                (c, s, None, Vec::new())
            }
            "Elu" => {
                let (c, s) = simple(LayerConfig::Elu {
                    alpha: attr_float(node, "alpha", 1.0),
                })?;
                (c, s, None, Vec::new())
            }
            "HardSigmoid" => {
                let (alpha, beta) = (
                    attr_float(node, "alpha", 0.2),
                    attr_float(node, "beta", 0.5),
                );
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || beta != 0.5 {
                    return Err(node_error(
                        node,
                        format!(
                            "alpha {alpha} and beta {beta} are not PyTorch's Hardsigmoid (1/6, 0.5)"
                        ),
                    ));
                }
                let (c, s) = simple(LayerConfig::Hardsigmoid)?;
                (c, s, None, Vec::new())
            }
            "Clip" => {
                let bound = |i: usize, attr_name: &str, default: f32| -> Result<f32, ImportError> {
                    match self.constant(node, i)? {
                        Some(c) if c.values.len() == 1 => Ok(c.values[0]),
                        Some(_) => Err(node_error(node, "its bounds are not scalars")),
                        None => Ok(attr_float(node, attr_name, default)),
                    }
                };
                let (min, max) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
                if (min, max) != (0.0, 6.0) {
                    return Err(node_error(
                        node,
                        format!("clip to [{min}, {max}]: only [0, 6] (ReLU6) is supported"),
                    ));
                }
                let (c, s) = simple(LayerConfig::Relu6)?;
                (c, s, None, Vec::new())
            }
            "PRelu" => {
                let slope = self.required(node, 1, "slope")?.clone();
                let n = slope.values.len();
                let fits = slope.dims.iter().filter(|&&d| d != 1).count() <= 1;
                if !fits || n == 0 {
                    return Err(node_error(
                        node,
                        format!("slope dims {:?} are not one per channel", slope.dims),
                    ));
                }
                let slope = Const {
                    dims: vec![n],
                    values: slope.values,
                };
                let (c, s) = simple(LayerConfig::Prelu { num_parameters: n })?;
                (c, s, Some(node.input[1].as_str()), vec![("weight", slope)])
            }
            "Softmax" | "LogSoftmax" => {
                let dim = attr_int(node, "axis", -1);
                let config = if op == "Softmax" {
                    LayerConfig::Softmax { dim }
                } else {
                    LayerConfig::LogSoftmax { dim }
                };
                let (c, s) = simple(config)?;
                (c, s, None, Vec::new())
            }
            "Gelu" => {
                let approximate = match attr_string(node, "approximate", "none").as_str() {
                    "none" => GeluApproximate::None,
                    "tanh" => GeluApproximate::Tanh,
                    other => {
                        return Err(node_error(
                            node,
                            format!("approximate `{other}`: only none and tanh exist"),
                        ));
                    }
                };
                let (c, s) = simple(LayerConfig::Gelu { approximate })?;
                (c, s, None, Vec::new())
            }
            "MatMul" => {
                let w = self.required(node, 1, "weight")?.clone();
                let (c, tensors) = linear_from_matmul(node, w, None)?;
                (c, vec![first()?], Some(node.input[1].as_str()), tensors)
            }
            "Pad" => {
                return Err(node_error(
                    node,
                    "a Pad is imported only as the padding of the one Conv that reads it (zeros, \
                     reflect, edge or wrap, of height and width, the same on both sides)",
                ));
            }
            "Upsample" => {
                // The deprecated operator (opsets 7 to 9): its linear mode is `asymmetric`,
                // which PyTorch's bilinear is not.
                let mode = attr_string(node, "mode", "nearest");
                if mode != "nearest" {
                    return Err(node_error(
                        node,
                        format!("mode {mode}: only nearest is supported (bilinear as a `Resize`)"),
                    ));
                }
                let scales = self
                    .constant(node, 1)?
                    .ok_or_else(|| node_error(node, "has no constant `scales`"))?;
                let config = integer_scales(node, &scales.values)
                    .map(cnnc_core::config::UpsampleConfig::nearest)?;
                let (c, s) = simple(LayerConfig::Upsample(config))?;
                (c, s, None, Vec::new())
            }
            "Resize" => {
                let to = match self.constant(node, 2)?.filter(|c| !c.values.is_empty()) {
                    Some(scales) => ResizeTo::Scales(integer_scales(node, &scales.values)?),
                    None => {
                        let sizes = self.constant(node, 3)?.ok_or_else(|| {
                            node_error(node, "has neither constant `scales` nor `sizes`")
                        })?;
                        self.constant_sizes(node, &sizes.values, first()?)?
                    }
                };
                let config = self.upsample(node, to, first()?)?;
                let (c, s) = simple(LayerConfig::Upsample(config))?;
                (c, s, None, Vec::new())
            }
            "Shape" => {
                return Err(node_error(
                    node,
                    "a Shape is imported only inside a Resize's sizes, \
                     Concat(Shape(x)[0..2], [height, width]) with `x` the resized tensor",
                ));
            }
            "Add" | "Sum" | "Mul" | "Concat" => {
                let sources = node
                    .input
                    .iter()
                    .map(|i| self.value(node, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let config = match op {
                    "Mul" => LayerConfig::Mul,
                    "Concat" => {
                        if attr_int(node, "axis", 1) != 1 {
                            return Err(node_error(node, "only axis 1 (channels) is supported"));
                        }
                        LayerConfig::Concat(ConcatConfig { dim: 1 })
                    }
                    _ => LayerConfig::Add,
                };
                (config, sources, None, Vec::new())
            }
            _ => {
                return Err(node_error(
                    node,
                    format!(
                        "unsupported operator; cnnc imports {}",
                        SUPPORTED_OPS.join(", ")
                    ),
                ));
            }
        };
        self.push(node, config, &sources, weight, tensors)
    }
}

/// What a `Resize` resizes to: integer scales of height and width, or output sizes.
#[derive(Clone, Copy, Debug)]
enum ResizeTo {
    Scales([usize; 2]),
    Sizes([usize; 2]),
}

/// `scales` `[1, 1, sh, sw]` with integer factors, as cnnc's `scale_factor`.
fn integer_scales(node: &NodeProto, v: &[f32]) -> Result<[usize; 2], ImportError> {
    let integral = |x: f32| x >= 1.0 && x.fract() == 0.0 && x <= MAX_DIM as f32;
    match v {
        [1.0, 1.0, h, w] if integral(*h) && integral(*w) => Ok([*h as usize, *w as usize]),
        _ => Err(node_error(
            node,
            format!("scales {v:?}: only integer factors of height and width are supported"),
        )),
    }
}

/// `MatMul(x, W)` with `W` `[in, out]` (then `+ bias` `[out]`) as `nn.Linear`, whose weight
/// is `W` transposed.
fn linear_from_matmul(
    node: &NodeProto,
    w: Const,
    bias: Option<Const>,
) -> Result<(LayerConfig, Tensors), ImportError> {
    let [in_features, out_features] = match w.dims.as_slice() {
        [a, b] => [*a, *b],
        d => {
            return Err(node_error(
                node,
                format!("weight dims {d:?} are not [in, out] (a linear layer)"),
            ));
        }
    };
    let mut t = vec![0.0; w.values.len()];
    for i in 0..in_features {
        for o in 0..out_features {
            t[o * in_features + i] = w.values[i * out_features + o];
        }
    }
    let config = LayerConfig::Linear(LinearConfig {
        in_features,
        out_features,
        bias: bias.is_some(),
    });
    let mut tensors = vec![(
        "weight",
        Const {
            dims: vec![out_features, in_features],
            values: t,
        },
    )];
    tensors.extend(bias.map(|b| ("bias", b)));
    Ok((config, tensors))
}

fn dims4(node: &NodeProto, w: &Const) -> Result<[usize; 4], ImportError> {
    match w.dims.as_slice() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        d => Err(node_error(
            node,
            format!("weight dims {d:?} are not [out, in, kh, kw]"),
        )),
    }
}

fn check_kernel(node: &NodeProto, weight: [usize; 2]) -> Result<(), ImportError> {
    match attr_ints(node, "kernel_shape") {
        Some(k) if k != [weight[0] as i64, weight[1] as i64] => Err(node_error(
            node,
            format!("kernel_shape {k:?} differs from the weight's {weight:?}"),
        )),
        _ => Ok(()),
    }
}

/// The spec of `model` in YAML: every layer named, its arguments that differ from their
/// defaults, and `inputs:` where it does not read the layer before it.
pub fn to_yaml(model: &Model) -> String {
    let [c, h, w] = model.input();
    let mut out = String::new();
    let _ = writeln!(out, "# Imported from ONNX by `cnnc import`.");
    let _ = writeln!(
        out,
        "model: {}",
        yaml_scalar(model.name().unwrap_or("Imported"))
    );
    let _ = writeln!(out, "input: [{c}, {h}, {w}]");
    let _ = writeln!(out, "layers:");
    let names: Vec<&str> = model.layers().iter().map(|l| l.name()).collect();
    for (index, layer) in model.layers().iter().enumerate() {
        let kind = layer.kind();
        let config = layer.config();
        let mut fields = vec![format!("name: {}", yaml_scalar(layer.name()))];
        for info in kind.args() {
            if matches!(info.default, ArgDefault::Inferred) {
                continue;
            }
            let Some(v) = config.arg(info.name) else {
                continue;
            };
            let default = match info.default {
                ArgDefault::Required | ArgDefault::Inferred => None,
                ArgDefault::Int(d) => Some(match info.ty {
                    ArgType::Pair { .. } => ArgValue::Pair([d, d]),
                    _ => ArgValue::Int(d),
                }),
                ArgDefault::SameAs(other) => config.arg(other),
                ArgDefault::Float(d) => Some(ArgValue::Float(f64::from(d as f32))),
                ArgDefault::Bool(d) => Some(ArgValue::Bool(d)),
                ArgDefault::Dim(d) => Some(ArgValue::Dim(d)),
                ArgDefault::Word(d) => Some(ArgValue::Word(d)),
                ArgDefault::None => Some(ArgValue::None),
            };
            if default == Some(v) {
                continue;
            }
            let value = match v {
                ArgValue::Int(n) => n.to_string(),
                ArgValue::Pair([a, b]) if a == b => a.to_string(),
                ArgValue::Pair([a, b]) => format!("[{a}, {b}]"),
                ArgValue::Float(x) => format!("{:?}", x as f32),
                ArgValue::Bool(b) => b.to_string(),
                ArgValue::Dim(d) => d.to_string(),
                ArgValue::Word(w) => w.to_owned(),
                ArgValue::None => "null".to_owned(),
            };
            fields.push(format!("{}: {value}", info.name));
        }
        let default = if index == 0 {
            Source::Input
        } else {
            Source::Layer(index - 1)
        };
        if layer.inputs() != [default] {
            let refs: Vec<String> = layer
                .inputs()
                .iter()
                .map(|s| match s {
                    Source::Input => "input".to_owned(),
                    Source::Layer(i) => yaml_scalar(names[*i]),
                })
                .collect();
            fields.push(format!("inputs: [{}]", refs.join(", ")));
        }
        let _ = writeln!(out, "  - {}: {{{}}}", kind.keyword(), fields.join(", "));
    }
    out
}

/// A plain YAML scalar when safe (names are letters, digits, `_` and `.`), else quoted.
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if plain {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{ExportOptions, export};

    #[test]
    fn a_graph_imports_back_with_its_sources() {
        let model = crate::export::graph_tests::graph();
        let bytes =
            export(&model, &Default::default(), &ExportOptions::default()).expect("exports");
        let imported = import(&bytes, "G").expect("imports");
        let sources = |m: &Model| -> Vec<(String, LayerConfig, Vec<Source>)> {
            m.layers()
                .iter()
                .map(|l| (l.name().to_owned(), l.config().clone(), l.inputs().to_vec()))
                .collect()
        };
        let mut want = sources(&model);
        // A three-way add is exported as two ONNX Adds, and imported as two adds.
        want.splice(
            3..4,
            [
                (
                    "sum".into(),
                    LayerConfig::Add,
                    vec![Source::Layer(2), Source::Layer(2)],
                ),
                (
                    "sum_1".into(),
                    LayerConfig::Add,
                    vec![Source::Layer(3), Source::Layer(2)],
                ),
            ],
        );
        want[5].2 = vec![Source::Layer(4), Source::Layer(4)];
        want[6].2 = vec![Source::Layer(5)];
        assert_eq!(sources(&imported.model), want);
        insta::assert_snapshot!(imported.yaml, @r"
        # Imported from ONNX by `cnnc import`.
        model: G
        input: [2, 3, 3]
        layers:
          - relu: {name: a}
          - add: {name: b.add, inputs: [a, input]}
          - concat: {name: b.cat, inputs: [b.add, a, input]}
          - add: {name: sum, inputs: [b.cat, b.cat]}
          - add: {name: sum_1, inputs: [sum, b.cat]}
          - mul: {name: mul, inputs: [sum_1, sum_1]}
          - flatten: {name: flat}
        ");
    }

    #[test]
    fn module_paths_follow_torch_scopes() {
        let path = |name: &str| {
            module_path(&NodeProto {
                name: name.into(),
                ..NodeProto::default()
            })
        };
        assert_eq!(
            path("/layer1/layer1.0/conv1/Conv").as_deref(),
            Some("layer1.0.conv1")
        );
        assert_eq!(
            path("/features/features.1/conv/conv.0/conv.0.0/Conv").as_deref(),
            Some("features.1.conv.0.0")
        );
        assert_eq!(path("/Flatten"), None);
        assert_eq!(path("conv1"), None);
    }
}
