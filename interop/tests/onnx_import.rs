//! ONNX import: cnnc's own exports read back to the same layers, names and weights; and hostile
//! files (garbage, protobuf nesting bombs, huge dims, short data, cycles, missing initializers,
//! too many nodes, unsupported operators) refused with errors naming what is wrong, within
//! bounded memory.

use std::collections::BTreeMap;
use std::path::Path;

use cnnc_interop::export::{ExportOptions, export, export_proto};
use cnnc_interop::import::{ImportError, MAX_NODES, import, import_proto};
use cnnc_interop::proto::{ModelProto, NodeProto, TensorProto, tensor_proto::DataType};
use cnnc_runtime::Network;
use cnnc_runtime::weights::{TensorData, state_dict};
use prost::Message;

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
    // GELU before opset 20 is written with Erf, which no cnnc layer is alone.
    let (_, _, bytes) = exported("models/modern_activations.yaml");
    let err = import(&bytes, "M").expect_err("Erf is not a layer");
    let text = err.to_string();
    assert!(
        matches!(&err, ImportError::Node { op, .. } if op == "Div" || op == "Erf" || op == "Mul"),
        "{text}"
    );
}

/// A model of one input `[N, 1, 4, 4]`, `nodes`, `initializers` and output `out`.
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
