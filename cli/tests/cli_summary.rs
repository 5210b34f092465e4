//! End-to-end tests of `cnnc summary`: the table and JSON for the seed model, and the partial
//! table with the error under it.

mod support;

use support::{cnnc, stdout};

#[test]
fn seed_model_table() {
    let output = cnnc(&["summary", "models/custom_cnn.yaml"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("Total params: 145,578"));
    insta::assert_snapshot!(text);
}

#[test]
fn seed_model_json() {
    let output = cnnc(&["summary", "--format", "json", "models/custom_cnn.cnn"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json["total_params"], 145_578);
    assert_eq!(json["trainable_params"], 145_578);
    assert_eq!(json["input_shape"], serde_json::json!([3, 32, 32]));
    assert_eq!(json["output_shape"], serde_json::json!([10]));
    let layers = json["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 13);
    for key in ["name", "kind", "output_shape", "params", "macs"] {
        assert!(layers[0].get(key).is_some(), "missing layer key {key}");
    }
    insta::assert_json_snapshot!(json);
}

#[test]
fn table_stops_at_the_failing_layer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("half.cnn");
    std::fs::write(
        &path,
        "model Half\ninput (3, 32, 32)\nconv2d(out_channels=8, kernel_size=3)\nrelu\nfc: linear(out_features=10)\nlinear(out_features=2)\n",
    )
    .expect("spec written");
    let path = path.display().to_string();
    let output = cnnc(&["summary", "--color", "never", &path]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output).replace(&path, "half.cnn");
    insta::assert_snapshot!(text);
}

#[test]
fn depth_collapses_groups_into_sums() {
    let output = cnnc(&["summary", "--depth", "1", "models/custom_cnn.yaml"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    // A collapsed group sums its layers: layer1.0's convolution is all of layer1's parameters.
    assert!(
        text.contains("layer1 (group, 3 layers)   [32, 16, 16]     2,432   2,490,368"),
        "{text}"
    );
    assert!(!text.contains("Conv2d"), "{text}");
    assert!(text.contains("Total params: 145,578"));
    insta::assert_snapshot!(text);

    let refused = cnnc(&["summary", "--depth", "0", "models/custom_cnn.yaml"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn graph_spec_table_and_json() {
    let spec = "tests/fixtures/grads/small_graph.cnn";
    let output = cnnc(&["summary", spec]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    // PyTorch's `sum(p.numel() for p in SmallGraph().parameters())`.
    assert!(text.contains("Total params: 5,736"), "{text}");
    assert!(
        text.contains("Inputs"),
        "a branching model names its inputs"
    );
    insta::assert_snapshot!(text);

    let collapsed = stdout(&cnnc(&["summary", "--depth", "1", spec]));
    assert!(collapsed.contains("down (group, 9 layers)"), "{collapsed}");
    assert!(!collapsed.contains("downsample"), "{collapsed}");
    assert!(collapsed.contains("Total params: 5,736"));

    let json = cnnc(&["summary", "--format", "json", spec]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(json["total_params"], 5_736);
    let layer = |name: &str| {
        json["layers"]
            .as_array()
            .and_then(|layers| layers.iter().find(|l| l["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("layer {name}"))
    };
    assert_eq!(layer("conv1")["inputs"], serde_json::json!(["input"]));
    assert_eq!(
        layer("down.add")["inputs"],
        serde_json::json!(["down.bn2", "down.downsample.1"])
    );
    assert_eq!(
        layer("down.downsample.0")["inputs"],
        serde_json::json!(["block.relu_out"])
    );
    assert_eq!(
        layer("se.mul")["inputs"],
        serde_json::json!(["se.sigmoid", "cat"])
    );
}
