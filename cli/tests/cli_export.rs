//! End-to-end tests of `cnnc export`: ONNX files carrying the given weights under their
//! state_dict names, refusals that write nothing, and the PyTorch files, deterministic and
//! snapshotted (tools/onnx_check.py runs them with PyTorch, ONNX Runtime and torchrun).

mod support;

use cnnc::interop::proto::ModelProto;
use cnnc::runtime::weights::{TensorData, read_tensors};
use prost::Message;
use support::*;

const SPEC: &str = "models/custom_cnn.yaml";
const STATE_DICT: &str = "tests/fixtures/custom_cnn_state_dict.safetensors";

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn onnx_export_carries_the_weights_under_state_dict_names() {
    let dir = temp();
    let out = dir.path().join("m.onnx");
    let output = cnnc(&[
        "export",
        SPEC,
        "--to",
        "onnx",
        "-o",
        arg(&out),
        "--weights",
        STATE_DICT,
    ]);
    assert_status(&output, 0);
    let proto = ModelProto::decode(&std::fs::read(&out).expect("written")[..]).expect("decodes");
    let graph = proto.graph.expect("a graph");
    assert_eq!(graph.name, "CustomCNN");
    assert_eq!(graph.input[0].name, "input");
    assert_eq!(graph.output[0].name, "logits");
    let fixture = read_tensors(&std::path::Path::new("..").join(STATE_DICT)).expect("fixture");
    let mut checked = 0;
    for init in &graph.initializer {
        let Some(TensorData::F32(want)) = fixture.tensors.get(&init.name) else {
            continue;
        };
        let got: Vec<f32> = init
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(
            got,
            want.iter().copied().collect::<Vec<_>>(),
            "{}",
            init.name
        );
        let dims: Vec<i64> = want.shape().iter().map(|&d| d as i64).collect();
        assert_eq!(init.dims, dims, "{}", init.name);
        checked += 1;
    }
    assert!(
        checked >= 10,
        "every parameter and running statistic: {checked}"
    );
}

#[test]
fn refusals_name_the_problem_and_write_nothing() {
    let dir = temp();
    let out = dir.path().join("m.onnx");
    let output = cnnc(&[
        "export",
        SPEC,
        "--to",
        "onnx",
        "-o",
        arg(&out),
        "--opset",
        "12",
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("opset 12 is not supported: cnnc writes opsets 14..=21"),
        "{}",
        stderr(&output)
    );
    let uneven = write(
        dir.path(),
        "uneven.cnn",
        "input (1, 5, 5)\npool: adaptive_avg_pool2d(output_size=2)\nflatten\nlinear(out_features=2)\n",
    );
    let output = cnnc(&["export", arg(&uneven), "--to", "onnx", "-o", arg(&out)]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("layer `pool` (adaptive_avg_pool2d) cannot be exported"),
        "{}",
        stderr(&output)
    );
    let folder = dir.path().join("py");
    let output = cnnc(&[
        "export",
        SPEC,
        "--to",
        "pytorch",
        "-o",
        arg(&folder),
        "--weights",
        STATE_DICT,
    ]);
    assert_status(&output, 1);
    assert!(!out.exists() && !folder.exists());
}

#[test]
fn pytorch_export_is_deterministic() {
    let dir = temp();
    let [a, b] = ["a", "b"].map(|name| dir.path().join(name));
    for folder in [&a, &b] {
        let output = cnnc(&[
            "export",
            "models/lenet5.yaml",
            "--to",
            "pytorch",
            "-o",
            arg(folder),
        ]);
        assert_status(&output, 0);
    }
    for file in ["model.py", "train.py"] {
        let text = std::fs::read_to_string(a.join(file)).expect("written");
        assert_eq!(
            text,
            std::fs::read_to_string(b.join(file)).expect("written")
        );
        insta::assert_snapshot!(format!("lenet5_{file}"), text);
    }
}
