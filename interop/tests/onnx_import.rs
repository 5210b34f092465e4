//! ONNX import: cnnc's own exports read back to the same layers, names and weights; and hostile
//! files (garbage, protobuf nesting bombs, huge dims, short data, cycles, missing initializers,
//! too many nodes, unsupported operators) refused with errors naming what is wrong, within
//! bounded memory.

use std::collections::BTreeMap;
use std::path::Path;

use cnnc_interop::export::{ExportOptions, export, export_proto};
use cnnc_interop::import::{ImportError, Imported, MAX_NODES, import, import_proto};
use cnnc_interop::proto::{ModelProto, NodeProto, TensorProto, tensor_proto::DataType};
use cnnc_runtime::weights::{TensorData, state_dict};
use cnnc_runtime::{Entry, Mode, Network, Visit};
use ndarray::{Array2, Array4};
use prost::Message;

mod common;

use common::{batch, max_diff, perturb_buffers, specs, weights_of};

fn exported(spec: &str) -> (cnnc_spec::CheckedModel, BTreeMap<String, Vec<f32>>, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(spec);
    let model = cnnc_spec::load(&path).expect("the spec checks");
    let mut net = Network::from_model(&model, 3).expect("the network builds");
    let weights: BTreeMap<String, Vec<f32>> = state_dict(&mut net)
        .into_iter()
        .filter_map(|(name, t)| match t {
            TensorData::F32(a) => Some((name, a.iter().copied().collect())),
            _ => None,
        })
        .collect();
    let bytes = export(&model, &weights, &ExportOptions::default()).expect("exports");
    (model, weights, bytes)
}

#[test]
fn cnnc_exports_import_back_to_the_same_model_and_weights() {
    for spec in [
        "models/activations.yaml",
        "models/custom_cnn.yaml",
        "models/lenet5.yaml",
        "models/mobilenet_style.yaml",
        "models/strided.yaml",
        "models/unet_small.yaml",
        "models/vgg_small.yaml",
    ] {
        let (model, weights, bytes) = exported(spec);
        let imported =
            import(&bytes, model.name().unwrap_or("M")).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(imported.model.input(), model.input(), "{spec}");
        let layers = |m: &cnnc_core::Model| -> Vec<(String, cnnc_core::LayerConfig)> {
            m.layers()
                .iter()
                .map(|l| (l.name().to_owned(), l.config().clone()))
                .collect()
        };
        // Dropout is an identity in eval mode and is not exported.
        let mut want = layers(&model);
        want.retain(|(_, c)| c.kind() != cnnc_core::LayerKind::Dropout);
        assert_eq!(layers(&imported.model), want, "{spec}");
        for (name, dims, values) in &imported.weights {
            assert_eq!(Some(values), weights.get(name), "{spec}: {name}");
            let info = imported
                .model
                .tensors()
                .find(|t| t.name == *name)
                .expect("a tensor of the model");
            assert_eq!(*dims, info.shape, "{spec}: {name}");
        }
        assert!(imported.yaml.starts_with("# Imported from ONNX"), "{spec}");
    }
}

#[test]
fn an_unsupported_operator_names_the_node_and_what_is_supported() {
    // Circular padding before opset 19 is written with Slice and Concat, which no cnnc layer is.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/corners.yaml");
    let model = cnnc_spec::load(&path).expect("the spec checks");
    let mut net = Network::from_model(&model, 3).expect("the network builds");
    let bytes = export(&model, &weights_of(&mut net), &ExportOptions::default()).expect("exports");
    let err = import(&bytes, "M").expect_err("Slice is not a layer");
    assert!(
        matches!(&err, ImportError::Node { op, why, .. } if op == "Slice" && why.contains("cnnc imports Conv")),
        "{err}"
    );
}

/// The imported model run by cnnc's executor on `x` with the imported weights.
fn run_imported(imported: &Imported, x: &Array4<f32>) -> Array2<f32> {
    let mut net = Network::from_model(&imported.model, 0).expect("the network builds");
    let mut loaded = 0;
    net.visit(&mut |entry| {
        let (name, value) = match entry {
            Entry::Param { name, param } => (name, &mut param.value),
            Entry::Buffer { name, value } => (name, value),
            Entry::Counter { .. } => return,
        };
        let (_, _, values) = imported
            .weights
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no weights for {name}"));
        assert_eq!(value.len(), values.len(), "{name}");
        value.iter_mut().zip(values).for_each(|(v, w)| *v = *w);
        loaded += 1;
    });
    assert_eq!(
        loaded,
        imported.weights.len(),
        "every imported tensor is loaded"
    );
    net.forward(x.view(), Mode::Eval).expect("cnnc runs")
}

/// tests/torch/ (tools/make_onnx_fixtures.py's files) and the logits torch saved there as
/// `{stem}.logits` (little-endian f32).
fn torch_logits(stem: &str) -> (std::path::PathBuf, Vec<f32>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch");
    let bytes = std::fs::read(dir.join(format!("{stem}.logits"))).expect("the logits");
    let want = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (dir, want)
}

/// torch.onnx.export's patterns (tools/make_onnx_fixtures.py: a Pad before a Conv for reflect,
/// replicate and zero padding, group norm with and without affine, GELU by erf and by tanh,
/// the flatten as a Reshape), from both exporters, import and give PyTorch's logits.
#[test]
fn torch_exports_of_multi_node_layers_import_and_match_torch() {
    let (dir, want) = torch_logits("patterns");
    let x = batch([3, 6, 5]);
    let keys = std::fs::read_to_string(dir.join("patterns.keys")).expect("the keys");
    let keys: Vec<&str> = keys.lines().collect();
    for file in [
        "patterns_legacy.onnx",
        "patterns_legacy_folded.onnx",
        "patterns_dynamo.onnx",
        "patterns_dynamo_opset20.onnx",
    ] {
        let bytes = std::fs::read(dir.join(file)).expect("the fixture");
        let imported = import(&bytes, "Patterns").unwrap_or_else(|e| panic!("{file}: {e}"));
        let kinds: Vec<&str> = imported
            .model
            .layers()
            .iter()
            .map(|l| l.kind().keyword())
            .collect();
        assert_eq!(
            kinds,
            [
                "conv2d",
                "groupnorm",
                "gelu",
                "conv2d",
                "groupnorm",
                "gelu",
                "conv2d",
                "flatten",
                "linear"
            ],
            "{file}"
        );
        let got = run_imported(&imported, &x);
        assert_eq!(got.len(), want.len(), "{file}");
        let diff = max_diff(&got, &want);
        assert!(diff <= 1e-5, "{file}: cnnc and torch differ by {diff}");
        if file == "patterns_legacy.onnx" {
            let names: Vec<&str> = imported
                .weights
                .iter()
                .map(|(n, _, _)| n.as_str())
                .collect();
            assert_eq!(names, keys, "every state_dict name survives");
        }
    }
}

#[test]
fn cnnc_exports_of_gelu_group_norm_and_padding_modes_import_back() {
    // Group norm with and without affine, both GELUs, and every padding mode (wrap needs
    // opset 19).
    let norms = "model: Norms\ninput: [3, 7, 6]\nlayers:\n\
        - conv2d: {out_channels: 4, kernel_size: 3, padding: 1, padding_mode: reflect}\n\
        - groupnorm: {num_groups: 2}\n\
        - gelu: {approximate: tanh}\n\
        - conv2d: {out_channels: 6, kernel_size: 3, padding: [2, 1], padding_mode: replicate}\n\
        - groupnorm: {num_groups: 3, affine: false, eps: 0.001}\n\
        - gelu\n\
        - conv2d: {out_channels: 2, kernel_size: 3, padding: 1, padding_mode: circular}\n\
        - flatten\n\
        - linear: {out_features: 3}\n";
    let norms = cnnc_spec::Source::new("norms.yaml", norms.to_owned(), cnnc_spec::Format::Yaml);
    let norms = cnnc_spec::compile(&norms).expect("the spec checks").0;
    let load = |spec: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(spec);
        cnnc_spec::load(&path).expect("the spec checks")
    };
    for (spec, model, opset) in [
        (
            "modern_activations",
            load("models/modern_activations.yaml"),
            17,
        ),
        (
            "modern_activations",
            load("models/modern_activations.yaml"),
            20,
        ),
        ("norms", norms.clone(), 19),
        ("corners", load("interop/tests/specs/corners.yaml"), 19),
    ] {
        let mut net = Network::from_model(&model, 5).expect("the network builds");
        let weights = weights_of(&mut net);
        let options = ExportOptions {
            opset,
            ..ExportOptions::default()
        };
        let bytes = export(&model, &weights, &options).expect("exports");
        let imported = import(&bytes, "M").unwrap_or_else(|e| panic!("{spec} ({opset}): {e}"));
        // The same kinds (dropout and identity are not exported, adaptive pools over dividing
        // windows come back as plain pools, softmax axes resolved), with the same numbers.
        let kinds = |m: &cnnc_core::Model| -> Vec<&'static str> {
            m.layers()
                .iter()
                .map(|l| match l.kind().keyword() {
                    "adaptive_max_pool2d" => "maxpool2d",
                    "adaptive_avg_pool2d" => "avgpool2d",
                    k => k,
                })
                .filter(|k| !["dropout", "dropout2d", "identity"].contains(k))
                .collect()
        };
        assert_eq!(kinds(&imported.model), kinds(&model), "{spec} ({opset})");
        let x = batch(model.input());
        let want = net.forward(x.view(), Mode::Eval).expect("cnnc runs");
        let got = run_imported(&imported, &x);
        assert_eq!(
            got, want,
            "{spec} ({opset}): the same layers give the same numbers"
        );
    }
}

fn model_of(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, out: &str) -> ModelProto {
    let (model, weights, _) = exported("models/lenet5.yaml");
    let mut proto = export_proto(&model, &weights, &ExportOptions::default()).expect("exports");
    let graph = proto.graph.as_mut().expect("a graph");
    graph.node = nodes;
    graph.initializer = initializers;
    graph.output[0].name = out.to_owned();
    proto
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.to_owned(),
        name: output.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        ..NodeProto::default()
    }
}

fn import_err(proto: &ModelProto) -> String {
    import_proto(proto, "M")
        .expect_err("a hostile model is refused")
        .to_string()
}

#[test]
fn cycles_and_missing_tensors_are_named() {
    let cycle = model_of(
        vec![node("Relu", &["b"], "a"), node("Relu", &["a"], "b")],
        vec![],
        "b",
    );
    assert!(
        import_err(&cycle).contains("reads `b` before a node produces it"),
        "{}",
        import_err(&cycle)
    );
    let missing = model_of(vec![node("Conv", &["input", "w"], "y")], vec![], "y");
    assert_eq!(
        import_err(&missing),
        "node `y` (Conv): reads `w`, which no node, initializer or input provides"
    );
}

#[test]
fn sizes_are_checked_before_allocating() {
    let huge = TensorProto {
        name: "w".into(),
        dims: vec![1 << 20, 1 << 20, 1 << 20],
        data_type: DataType::Float as i32,
        raw_data: vec![0; 16],
        ..TensorProto::default()
    };
    let text = import_err(&model_of(vec![], vec![huge], "input"));
    assert!(text.starts_with("tensor `w`: "), "{text}");
    let short = TensorProto {
        name: "w".into(),
        dims: vec![4, 4],
        data_type: DataType::Float as i32,
        raw_data: vec![0; 60],
        ..TensorProto::default()
    };
    assert_eq!(
        import_err(&model_of(vec![], vec![short], "input")),
        "tensor `w`: its dims [4, 4] need 16 elements but it holds 60 bytes (4 each)"
    );
    let negative = TensorProto {
        name: "w".into(),
        dims: vec![-1],
        data_type: DataType::Float as i32,
        ..TensorProto::default()
    };
    assert!(import_err(&model_of(vec![], vec![negative], "input")).contains("out of range"));
    let many = (0..=MAX_NODES)
        .map(|i| node("Relu", &["input"], &format!("r{i}")))
        .collect();
    assert!(import_err(&model_of(many, vec![], "r0")).contains("nodes; cnnc imports up to"));
}

#[test]
fn garbage_and_nesting_bombs_are_decode_errors() {
    assert!(matches!(
        import(b"\xff\xff\xff\xff not protobuf", "M"),
        Err(ImportError::Decode(_))
    ));
    // GraphProto.node (1) → NodeProto.attribute (5) → AttributeProto.g (6) → ..., 20,000 deep:
    // prost's recursion limit stops it without exhausting the stack.
    let mut bytes: Vec<u8> = Vec::new();
    const DEPTH: usize = 20_000;
    for level in 0..DEPTH {
        let tag = [0x0a, 0x2a, 0x32][(DEPTH - 1 - level) % 3];
        let mut outer = vec![tag];
        prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    let mut model = vec![0x3a]; // ModelProto.graph (7)
    prost::encoding::encode_varint(bytes.len() as u64, &mut model);
    model.extend_from_slice(&bytes);
    assert!(matches!(import(&model, "M"), Err(ImportError::Decode(_))));
    // And a valid message that is not a cnnc model.
    let empty = ModelProto::default().encode_to_vec();
    assert_eq!(
        import(&empty, "M").map(|_| ()),
        Err(ImportError::Structure("the model has no graph".into()))
    );
}

#[test]
fn every_truncation_and_byte_flip_of_the_seeds_is_handled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/onnx");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .expect("the onnx seeds")
        .map(|e| e.expect("an entry").path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 3);
    let mut imported = 0;
    for seed in seeds {
        let bytes = std::fs::read(&seed).expect("a seed");
        imported += usize::from(import(&bytes, "M").is_ok());
        for i in 0..bytes.len() {
            let _ = import(&bytes[..i], "M");
            for flip in [0x01, 0x80, 0xff] {
                let mut mutated = bytes.clone();
                mutated[i] ^= flip;
                let _ = import(&mutated, "M");
            }
        }
    }
    assert_eq!(imported, 3, "every seed imports");
}

fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn ints(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

/// GELU as `torch.onnx.export` (dynamo=False) writes it: x * (erf(x / sqrt 2) + 1) * `half`.
fn gelu_nodes(half: f32) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let nodes = vec![
        node("Div", &["input", "sqrt2"], "div"),
        node("Erf", &["div"], "erf"),
        node("Add", &["erf", "one"], "plus"),
        node("Mul", &["input", "plus"], "xplus"),
        node("Mul", &["xplus", "half"], "y"),
    ];
    let consts = vec![
        floats("sqrt2", &[], &[std::f32::consts::SQRT_2]),
        floats("one", &[], &[1.0]),
        floats("half", &[], &[half]),
    ];
    (nodes, consts)
}

#[test]
fn patterns_match_exactly_or_not_at_all() {
    let (nodes, consts) = gelu_nodes(0.5);
    let imported = import_proto(&model_of(nodes, consts, "y"), "M").expect("a GELU");
    let kinds: Vec<&str> = imported
        .model
        .layers()
        .iter()
        .map(|l| l.kind().keyword())
        .collect();
    assert_eq!(kinds, ["gelu"]);
    // Another constant is another function: the Div is then refused on its own.
    let (nodes, consts) = gelu_nodes(0.4);
    let err = import_proto(&model_of(nodes, consts, "y"), "M").expect_err("not GELU");
    assert!(
        matches!(&err, ImportError::Node { op, why, .. } if op == "Div" && why.contains("unsupported operator")),
        "{err}"
    );
    // An intermediate read twice (here by a second output-side node) breaks the pattern.
    let (mut nodes, consts) = gelu_nodes(0.5);
    nodes.push(node("Add", &["y", "erf"], "z"));
    let err = import_proto(&model_of(nodes, consts, "z"), "M").expect_err("erf is shared");
    assert!(
        matches!(&err, ImportError::Node { op, .. } if op == "Div"),
        "{err}"
    );
}

#[test]
fn matmul_and_add_import_as_a_linear_layer_with_the_weight_transposed() {
    let (model, _, _) = exported("models/lenet5.yaml");
    let [c, h, w] = model.input();
    let features = c * h * w;
    let weight: Vec<f32> = (0..features * 3).map(|i| i as f32).collect();
    let nodes = vec![
        node("Flatten", &["input"], "flat"),
        node("MatMul", &["flat", "w"], "product"),
        node("Add", &["bias", "product"], "y"),
    ];
    let consts = vec![
        floats("w", &[features as i64, 3], &weight),
        floats("bias", &[3], &[1.0, 2.0, 3.0]),
    ];
    let imported = import_proto(&model_of(nodes, consts, "y"), "M").expect("a linear layer");
    let layer = &imported.model.layers()[1];
    assert_eq!(
        layer.config(),
        &cnnc_core::LayerConfig::Linear(cnnc_core::LinearConfig {
            in_features: features,
            out_features: 3,
            bias: true,
        })
    );
    let (_, dims, values) = &imported.weights[0];
    assert_eq!(*dims, [3, features]);
    // PyTorch's weight[o][i] is the MatMul's w[i][o].
    assert_eq!(values[1], weight[3]);
    assert_eq!(values[features], weight[1]);
    assert_eq!(imported.weights[1].2, [1.0, 2.0, 3.0]);
    // A MatMul alone is a linear layer without bias.
    let nodes = vec![
        node("Flatten", &["input"], "flat"),
        node("MatMul", &["flat", "w"], "y"),
    ];
    let consts = vec![floats("w", &[features as i64, 3], &weight)];
    let imported = import_proto(&model_of(nodes, consts, "y"), "M").expect("a linear layer");
    assert!(matches!(
        imported.model.layers()[1].config(),
        cnnc_core::LayerConfig::Linear(l) if !l.bias
    ));
}

#[test]
fn a_pad_folds_into_the_convolution_or_is_named() {
    let (model, _, _) = exported("models/lenet5.yaml");
    let [c, _, _] = model.input();
    let conv_weight = floats("w", &[2, c as i64, 3, 3], &vec![0.5; 2 * c * 9]);
    let pad = |mode: &str, pads: &[i64], value: Option<f32>| {
        let mut p = node("Pad", &["input", "pads"], "padded");
        let mut consts = vec![ints("pads", pads), conv_weight.clone()];
        if let Some(v) = value {
            p.input.push("value".into());
            consts.push(floats("value", &[], &[v]));
        }
        p.attribute.push(cnnc_interop::proto::AttributeProto {
            name: "mode".into(),
            r#type: cnnc_interop::proto::attribute_proto::AttributeType::String as i32,
            s: mode.as_bytes().to_vec(),
            ..Default::default()
        });
        let mut conv = node("Conv", &["padded", "w"], "y");
        conv.attribute.push(cnnc_interop::proto::AttributeProto {
            name: "pads".into(),
            r#type: cnnc_interop::proto::attribute_proto::AttributeType::Ints as i32,
            ints: if mode == "constant" {
                vec![1, 1, 1, 1]
            } else {
                vec![0; 4]
            },
            ..Default::default()
        });
        model_of(vec![p, conv], consts, "y")
    };
    let conv = |proto: &ModelProto| match import_proto(proto, "M")
        .map(|m| m.model.layers()[0].config().clone())
    {
        Ok(cnnc_core::LayerConfig::Conv2d(c)) => Ok((c.padding, c.padding_mode)),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    };
    use cnnc_core::PaddingMode;
    assert_eq!(
        conv(&pad("constant", &[0, 0, 2, 1, 0, 0, 2, 1], Some(0.0))),
        Ok(([3, 2], PaddingMode::Zeros))
    );
    assert_eq!(
        conv(&pad("reflect", &[0, 0, 1, 2, 0, 0, 1, 2], None)),
        Ok(([1, 2], PaddingMode::Reflect))
    );
    assert_eq!(
        conv(&pad("edge", &[0, 0, 1, 1, 0, 0, 1, 1], None)),
        Ok(([1, 1], PaddingMode::Replicate))
    );
    let refused = [
        (
            pad("constant", &[0, 0, 1, 1, 0, 0, 1, 1], Some(1.0)),
            "node `padded` (Pad): ",
            "not zeros",
        ),
        // Uneven, but not a 3x3 kernel's padding='same' (which is even).
        (
            pad("reflect", &[0, 0, 1, 1, 0, 0, 2, 1], None),
            "node `y` (Conv): ",
            "neither the same on both sides nor padding='same''s",
        ),
        (
            pad("reflect", &[0, 1, 1, 1, 0, 0, 1, 1], None),
            "node `padded` (Pad): ",
            "pads are",
        ),
    ];
    for (proto, node, why) in refused {
        let err = conv(&proto).expect_err("refused");
        assert!(err.starts_with(node) && err.contains(why), "{err}");
    }
    // A Pad before anything else is refused on its own.
    let nodes = vec![
        node("Pad", &["input", "pads"], "padded"),
        node("Relu", &["padded"], "y"),
    ];
    let err = import_err(&model_of(nodes, vec![ints("pads", &[0; 8])], "y"));
    assert!(err.contains("only as the padding of the one Conv"), "{err}");
}

#[test]
fn a_mean_over_height_and_width_is_a_global_pool() {
    let reduce = |axes: &[i64], keepdims: i64| {
        let mut mean = node("ReduceMean", &["input", "axes"], "y");
        mean.attribute.push(cnnc_interop::proto::AttributeProto {
            name: "keepdims".into(),
            r#type: cnnc_interop::proto::attribute_proto::AttributeType::Int as i32,
            i: keepdims,
            ..Default::default()
        });
        import_proto(&model_of(vec![mean], vec![ints("axes", axes)], "y"), "M")
    };
    let imported = reduce(&[-1, -2], 1).expect("dynamo's AdaptiveAvgPool2d(1)");
    assert_eq!(
        imported.model.layers()[0].config(),
        &cnnc_core::LayerConfig::AdaptiveAvgPool2d {
            output_size: [1, 1]
        }
    );
    for (axes, keepdims) in [([2, 3], 0), ([1, 2], 1), ([i64::MIN, 3], 1)] {
        let err = reduce(&axes, keepdims).expect_err("not a global pool");
        assert!(
            err.to_string()
                .contains("only a reduction over height and width"),
            "{err}"
        );
    }
}

/// torch.onnx.export's resizes (tools/make_onnx_fixtures.py's `Resizes`: bilinear by scales
/// and to sizes, `align_corners` true and false, an output of one row, nearest by a factor and
/// to a size), from the legacy exporter at opsets 17 and 20 and the dynamo one at 18 and 20,
/// import as `upsample` layers and give PyTorch's logits.
#[test]
fn torch_exports_of_bilinear_and_nearest_resizes_import_and_match_torch() {
    let (dir, want) = torch_logits("resizes");
    let x = batch([3, 6, 5]);
    for file in [
        "resizes_legacy_opset17.onnx",
        "resizes_legacy_opset20.onnx",
        "resizes_dynamo_opset18.onnx",
        "resizes_dynamo_opset20.onnx",
    ] {
        let bytes = std::fs::read(dir.join(file)).expect("the fixture");
        let imported = import(&bytes, "Resizes").unwrap_or_else(|e| panic!("{file}: {e}"));
        let upsamples: Vec<String> = imported
            .model
            .layers()
            .iter()
            .filter_map(|l| match l.config() {
                cnnc_core::LayerConfig::Upsample(c) => Some(format!(
                    "{} {:?} {:?} {:?}",
                    c.mode.word(),
                    c.scale_factor,
                    c.size,
                    c.align_corners
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            upsamples,
            [
                "bilinear Some([2, 3]) None None",
                "bilinear None Some([7, 9]) Some(true)",
                "bilinear Some([2, 2]) None Some(true)",
                "bilinear None Some([5, 11]) None",
                "nearest Some([2, 2]) None None",
                "nearest None Some([6, 3]) None",
                "bilinear None Some([1, 3]) None",
                "bilinear None Some([3, 3]) Some(true)",
            ],
            "{file}"
        );
        let got = run_imported(&imported, &x);
        assert_eq!(got.len(), want.len(), "{file}");
        let diff = max_diff(&got, &want);
        assert!(diff <= 1e-5, "{file}: cnnc and torch differ by {diff}");
    }
}

/// Every spec cnnc ships (models/ and tests/specs/), exported at opset 17 and at 19, imports
/// back to a model whose logits equal the original's (1e-5 of the largest logit) and whose
/// layers are the same kinds, up to what ONNX cannot say apart: dropout, identity and a
/// flatten that changes nothing are not exported, an adaptive pool over dividing windows comes
/// back as a plain pool. The one export that does not import is circular padding before
/// opset 19 (`corners.yaml`, `same_padding.yaml`), written as slices and concatenations.
#[test]
fn every_shipped_spec_exports_and_imports_back_to_the_same_logits() {
    let specs = specs();
    assert!(specs.len() >= 19, "models/ and tests/specs/ hold the specs");
    let kinds = |m: &cnnc_core::Model| -> Vec<&'static str> {
        m.layers()
            .iter()
            .filter(|l| l.output_shape() != l.input_shape())
            .map(|l| match l.config() {
                cnnc_core::LayerConfig::AdaptiveMaxPool2d { .. } => "pool",
                cnnc_core::LayerConfig::AdaptiveAvgPool2d { .. } => "pool",
                cnnc_core::LayerConfig::MaxPool2d(_) | cnnc_core::LayerConfig::AvgPool2d(_) => {
                    "pool"
                }
                c => c.kind().keyword(),
            })
            .collect()
    };
    for spec in &specs {
        let model = cnnc_spec::load(spec).expect("the shipped spec checks");
        let mut net = Network::from_model(&model, 7).expect("the network builds");
        perturb_buffers(&mut net);
        let weights = weights_of(&mut net);
        let x = batch(model.input());
        let want = net.forward(x.view(), Mode::Eval).expect("cnnc runs");
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let name = spec.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for opset in [17, 19] {
            // Circular padding before opset 19 is slices and concatenations, which do not
            // import (`an_unsupported_operator_names_the_node_and_what_is_supported`).
            if ["corners.yaml", "same_padding.yaml"].contains(&name) && opset < 19 {
                continue;
            }
            let options = ExportOptions {
                opset,
                ..ExportOptions::default()
            };
            let bytes = export(&model, &weights, &options).expect("exports");
            let imported =
                import(&bytes, "M").unwrap_or_else(|e| panic!("{name} (opset {opset}): {e}"));
            assert_eq!(
                kinds(&imported.model),
                kinds(&model),
                "{name} (opset {opset})"
            );
            let got = run_imported(&imported, &x);
            assert_eq!(got.shape(), want.shape(), "{name} (opset {opset})");
            let diff = max_diff(&got, &want);
            assert!(
                diff <= 1e-5 * scale,
                "{name} (opset {opset}): the import differs by {diff} (logits up to {scale})"
            );
        }
    }
}

/// cnnc's exports of batch norm on batch statistics (with and without affine), of bilinear and
/// nearest upsampling (by factors and to sizes, both `align_corners`, one output row) and of
/// uneven adaptive pools import back to the same layers, names and weights, at opset 17
/// (reductions' axes as attributes) and 18 (as inputs).
#[test]
fn cnnc_exports_of_batch_statistics_resizes_and_uneven_pools_import_back_exactly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/export_gaps.yaml");
    let model = cnnc_spec::load(&path).expect("the spec checks");
    let mut net = Network::from_model(&model, 3).expect("the network builds");
    let weights = weights_of(&mut net);
    let layers = |m: &cnnc_core::Model| -> Vec<(String, cnnc_core::LayerConfig)> {
        m.layers()
            .iter()
            .map(|l| (l.name().to_owned(), l.config().clone()))
            .collect()
    };
    for opset in [17, 18] {
        let options = ExportOptions {
            opset,
            ..ExportOptions::default()
        };
        let bytes = export(&model, &weights, &options).expect("exports");
        let imported = import(&bytes, "ExportGaps").unwrap_or_else(|e| panic!("{opset}: {e}"));
        assert_eq!(layers(&imported.model), layers(&model), "opset {opset}");
        let names: Vec<&str> = imported
            .weights
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "stem.weight",
                "bn.weight",
                "bn.bias",
                "head.weight",
                "head.bias"
            ],
            "opset {opset}"
        );
        for (name, _, values) in &imported.weights {
            assert_eq!(Some(values), weights.get(name), "{name}");
        }
        let spec = cnnc_spec::Source::new("gaps.yaml", imported.yaml, cnnc_spec::Format::Yaml);
        let again = cnnc_spec::compile(&spec)
            .expect("the imported spec checks")
            .0;
        assert_eq!(layers(&again), layers(&model), "opset {opset}: the YAML");
    }
}

fn string_attr(name: &str, value: &str) -> cnnc_interop::proto::AttributeProto {
    cnnc_interop::proto::AttributeProto {
        name: name.into(),
        r#type: cnnc_interop::proto::attribute_proto::AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> cnnc_interop::proto::AttributeProto {
    cnnc_interop::proto::AttributeProto {
        name: name.into(),
        r#type: cnnc_interop::proto::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A `Resize` imports where ONNX's coordinates are PyTorch's and is refused naming the node
/// and the attribute elsewhere: cubic, antialias, exclude_outside, linear `asymmetric`,
/// nearest `asymmetric` rounding to nearest, fractional scales, and `pytorch_half_pixel` to an
/// output of one row (where ONNX reads the first input row and PyTorch the middle).
#[test]
fn resize_attributes_import_where_torch_agrees_or_are_named() {
    let (model, _, _) = exported("models/lenet5.yaml");
    let [c, h, _] = model.input();
    assert!(h > 1, "the input has several rows");
    // By scales, or (`sizes` given) to [1 or 2 rows, 3 columns].
    let resize = |attrs: Vec<(&str, &str)>, ints: Vec<(&str, i64)>, to: Result<[f32; 2], i64>| {
        let mut r = node("Resize", &["input", "", "scales"], "y");
        let mut consts = vec![];
        match to {
            Ok([sh, sw]) => consts.push(floats("scales", &[4], &[1.0, 1.0, sh, sw])),
            Err(rows) => {
                r.input = vec!["input".into(), String::new(), String::new(), "sizes".into()];
                consts.push(self::ints("sizes", &[1, c as i64, rows, 3]));
            }
        }
        r.attribute
            .extend(attrs.iter().map(|(name, value)| string_attr(name, value)));
        r.attribute
            .extend(ints.iter().map(|(name, value)| int_attr(name, *value)));
        // The graph's batch is 1 for the constant sizes' batch to be the file's.
        let mut proto = model_of(vec![r], consts, "y");
        let graph = proto.graph.as_mut().expect("a graph");
        let Some(cnnc_interop::proto::type_proto::Value::TensorType(t)) = graph.input[0]
            .r#type
            .as_mut()
            .and_then(|t| t.value.as_mut())
        else {
            panic!("a tensor input")
        };
        t.shape.as_mut().expect("a shape").dim[0].value =
            Some(cnnc_interop::proto::tensor_shape_proto::dimension::Value::DimValue(1));
        match import_proto(&proto, "M") {
            Ok(m) => match m.model.layers()[0].config() {
                cnnc_core::LayerConfig::Upsample(u) => Ok(format!(
                    "{} {:?} {:?} {:?}",
                    u.mode.word(),
                    u.scale_factor,
                    u.size,
                    u.align_corners
                )),
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e.to_string()),
        }
    };
    let linear = |transform: &'static str| {
        vec![
            ("mode", "linear"),
            ("coordinate_transformation_mode", transform),
        ]
    };
    let accepted = [
        (
            resize(linear("half_pixel"), vec![], Ok([2.0, 3.0])),
            "bilinear Some([2, 3]) None None",
        ),
        (
            resize(linear("align_corners"), vec![], Err(1)),
            "bilinear None Some([1, 3]) Some(true)",
        ),
        (
            resize(linear("pytorch_half_pixel"), vec![], Err(2)),
            "bilinear None Some([2, 3]) None",
        ),
        // ONNX's defaults: nearest, half_pixel, round_prefer_floor: PyTorch's pixels for an
        // integer factor.
        (
            resize(vec![], vec![], Ok([2.0, 2.0])),
            "nearest Some([2, 2]) None None",
        ),
        (
            resize(
                vec![
                    ("coordinate_transformation_mode", "asymmetric"),
                    ("nearest_mode", "floor"),
                ],
                vec![],
                Err(2),
            ),
            "nearest None Some([2, 3]) None",
        ),
        // cubic_coeff_a and nearest_mode do not apply to linear; exclude_outside 0 is ONNX's own.
        (
            resize(
                [linear("half_pixel"), vec![("nearest_mode", "ceil")]].concat(),
                vec![("exclude_outside", 0), ("antialias", 0)],
                Ok([1.0, 2.0]),
            ),
            "bilinear Some([1, 2]) None None",
        ),
    ];
    for (got, want) in accepted {
        assert_eq!(got.as_deref(), Ok(want));
    }
    let refused = [
        (
            resize(vec![("mode", "cubic")], vec![], Ok([2.0, 2.0])),
            "mode cubic",
        ),
        (
            resize(linear("half_pixel"), vec![("antialias", 1)], Ok([2.0, 2.0])),
            "antialias 1",
        ),
        (
            resize(
                linear("half_pixel"),
                vec![("exclude_outside", 1)],
                Ok([2.0, 2.0]),
            ),
            "exclude_outside 1",
        ),
        (
            resize(linear("asymmetric"), vec![], Ok([2.0, 2.0])),
            "coordinate_transformation_mode asymmetric with mode linear",
        ),
        (
            resize(linear("tf_crop_and_resize"), vec![], Ok([2.0, 2.0])),
            "coordinate_transformation_mode tf_crop_and_resize",
        ),
        (
            resize(
                vec![("coordinate_transformation_mode", "asymmetric")],
                vec![],
                Ok([2.0, 2.0]),
            ),
            "nearest_mode round_prefer_floor with asymmetric",
        ),
        (
            resize(
                vec![("coordinate_transformation_mode", "align_corners")],
                vec![],
                Ok([2.0, 2.0]),
            ),
            "coordinate_transformation_mode align_corners with mode nearest",
        ),
        // Nearest to sizes: only asymmetric + floor lands on PyTorch's pixels at any ratio.
        (
            resize(vec![], vec![], Err(2)),
            "coordinate_transformation_mode half_pixel",
        ),
        (
            resize(linear("half_pixel"), vec![], Ok([1.5, 2.0])),
            "only integer factors",
        ),
        (
            resize(linear("pytorch_half_pixel"), vec![], Err(1)),
            "pytorch_half_pixel to an output of one pixel",
        ),
    ];
    for (got, why) in refused {
        let err = got.expect_err(why);
        assert!(
            err.starts_with("node `y` (Resize): ") && err.contains(why),
            "{why}: {err}"
        );
    }
}

/// cnnc's batch-statistics batch norm export with one piece changed is refused, naming a node
/// of it, never imported as something else.
#[test]
fn near_misses_of_batch_statistics_are_refused() {
    let bn = |square: [&str; 2], axes: &[i64], eps: f32| {
        let nodes = vec![
            node("ReduceMean", &["input", "axes"], "mean"),
            node("Sub", &["input", "mean"], "centered"),
            node("Mul", &[square[0], square[1]], "squared"),
            node("ReduceMean", &["squared", "axes"], "var"),
            node("Add", &["var", "eps"], "var_eps"),
            node("Sqrt", &["var_eps"], "std"),
            node("Div", &["centered", "std"], "y"),
        ];
        let consts = vec![ints("axes", axes), floats("eps", &[], &[eps])];
        import_proto(&model_of(nodes, consts, "y"), "M")
    };
    let imported = bn(["centered", "centered"], &[0, 2, 3], 1e-3).expect("batch norm");
    match imported.model.layers()[0].config() {
        cnnc_core::LayerConfig::BatchNorm2d(c) => {
            assert!(
                !c.track_running_stats && !c.affine && c.eps == 1e-3,
                "{c:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Negative axes are the same axes.
    assert!(bn(["centered", "centered"], &[0, -2, -1], 1e-5).is_ok());
    for (square, axes, eps) in [
        (["centered", "input"], &[0, 2, 3][..], 1e-5),
        (["centered", "centered"], &[0, 2][..], 1e-5),
        (["centered", "centered"], &[0, 2, 3][..], 0.0),
    ] {
        let err = bn(square, axes, eps)
            .expect_err("not batch norm")
            .to_string();
        assert!(
            err.starts_with("node `mean` (ReduceMean): ")
                && err.contains("a mean over the batch is imported only as batch norm"),
            "{square:?} {axes:?} {eps}: {err}"
        );
    }
}
