//! End-to-end tests of `cnnc import`: a cnnc export read back as a spec that checks and weights
//! that run to the same logits; refusals (unsupported operators, oversized files) that write
//! nothing. tools/onnx_check.py imports PyTorch's own exports (the seed, ResNet-18, MobileNetV2).

mod support;

use cnnc::runtime::npy;
use ndarray::{ArrayD, IxDyn};
use support::*;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn an_export_imports_to_a_spec_and_weights_with_the_same_logits() {
    let dir = temp();
    let onnx = dir.path().join("m.onnx");
    let spec = dir.path().join("m.yaml");
    let weights = dir.path().join("m.safetensors");
    let original = "tests/fixtures/custom_cnn_state_dict.safetensors";
    let export = [
        "export",
        "models/custom_cnn.yaml",
        "--to",
        "onnx",
        "-o",
        arg(&onnx),
        "--weights",
        original,
    ];
    assert_status(&cnnc(&export), 0);
    let import = [
        "import",
        arg(&onnx),
        "-o",
        arg(&spec),
        "--weights-out",
        arg(&weights),
    ];
    assert_status(&cnnc(&import), 0);
    assert_status(&cnnc(&["check", arg(&spec)]), 0);
    let values: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 13) as f32 / 7.0 - 1.0)
        .collect();
    let x = dir.path().join("x.npy");
    let input = ArrayD::from_shape_vec(IxDyn(&[2, 3, 32, 32]), values).expect("shape");
    npy::write_f32(&x, input.view()).expect("written");
    let run = |spec: &str, weights: &str, out: &str| {
        let out = dir.path().join(out);
        let args = [
            "run",
            spec,
            "--weights",
            weights,
            "--input",
            arg(&x),
            "--output",
            arg(&out),
        ];
        assert_status(&cnnc(&args), 0);
        npy::read_f32(&out).expect("logits")
    };
    let want = run("models/custom_cnn.yaml", original, "a.npy");
    let got = run(arg(&spec), arg(&weights), "b.npy");
    assert_eq!(got, want, "the same layers and weights give the same bits");
}

#[test]
fn refusals_write_nothing() {
    let dir = temp();
    let onnx = dir.path().join("m.onnx");
    let spec = dir.path().join("m.yaml");
    let weights = dir.path().join("m.safetensors");
    let export = [
        "export",
        "models/modern_activations.yaml",
        "--to",
        "onnx",
        "-o",
        arg(&onnx),
    ];
    assert_status(&cnnc(&export), 0);
    let import = [
        "import",
        arg(&onnx),
        "-o",
        arg(&spec),
        "--weights-out",
        arg(&weights),
    ];
    let output = cnnc(&import);
    assert_status(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("cannot import") && text.contains("unsupported operator; cnnc imports Conv"),
        "{text}"
    );
    assert!(!spec.exists() && !weights.exists());
    // A file over the size limit is refused from its length, before it is read.
    let big = dir.path().join("big.onnx");
    let file = std::fs::File::create(&big).expect("created");
    file.set_len(cnnc::interop::import::MAX_FILE_BYTES + 1)
        .expect("a sparse file");
    let output = cnnc(&["import", arg(&big), "-o", arg(&spec)]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("cnnc reads ONNX files up to"),
        "{}",
        stderr(&output)
    );
    assert!(!spec.exists());
}
