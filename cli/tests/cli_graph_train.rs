//! End-to-end `cnnc train`, `--resume` and `eval` of a graph spec (a block with a shortcut
//! `add`, repeated; a side branch joined by `concat`; a squeeze-and-excitation `mul`; dropout):
//! it learns, its checkpoint holds the composed state_dict names, a resumed run is bit-identical
//! to a straight one, and evaluating the weights agrees with training's validation.

mod support;

use std::path::Path;

use support::*;

const GRAPH: &str = "model TinyGraph
input (3, 12, 12)

block Basic(planes) {
  conv1: conv2d(out_channels=planes, kernel_size=3, padding=1, bias=false)
  bn1: batchnorm2d
  relu
  conv2: conv2d(out_channels=planes, kernel_size=3, padding=1, bias=false)
  bn2: batchnorm2d
  add(bn2, input)
  relu
}

block Gate(channels, squeeze) {
  pool: adaptive_avg_pool2d(output_size=1)
  fc1: conv2d(out_channels=squeeze, kernel_size=1)
  relu
  fc2: conv2d(out_channels=channels, kernel_size=1)
  gate: sigmoid
  mul(gate, input)
}

stem: conv2d(out_channels=4, kernel_size=3, padding=1)
relu
layer1: sequential {
  Basic(planes=4, repeat=2)
}
side: conv2d(stem, out_channels=2, kernel_size=1)
cat: concat(layer1, side)
se: Gate(channels=6, squeeze=2)
maxpool2d(kernel_size=2)
flatten
dropout(p=0.2)
fc: linear(out_features=10)
";

#[test]
fn a_graph_trains_resumes_bit_identically_and_evaluates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    write_idx(&data, 120, 40, 8);
    let spec = write(dir.path(), "graph.cnn", GRAPH);
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    let flags = ["--batch-size", "7", "--optimizer", "adam", "--lr", "0.01"];
    let with = |epochs: &'static str| [&flags[..], &["--epochs", epochs]].concat();
    assert_status(&train(&spec, &data, &straight, &with("3")), 0);
    assert_status(&train(&spec, &data, &split, &with("1")), 0);
    let resumed = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&split),
        "--epochs",
        "3",
    ]);
    assert_status(&resumed, 0);
    assert!(
        stdout(&resumed).contains("epoch 3/3"),
        "{}",
        stdout(&resumed)
    );
    for file in ["model.safetensors", "optimizer.state"] {
        assert!(
            bytes(&straight, file) == bytes(&split, file),
            "{file} differs after resuming"
        );
    }
    let state = run_state(&straight);
    assert_eq!(state["rng_states"], run_state(&split)["rng_states"]);
    let accuracy = state["history"][2]["val_accuracy"]
        .as_f64()
        .expect("a number");
    assert!(accuracy > 0.3, "the pattern is easy to learn: {accuracy}");

    let weights = straight.join("model.safetensors");
    let file = cnnc::runtime::weights::read_tensors(&weights).expect("weights load");
    for name in [
        "layer1.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "layer1.1.bn2.num_batches_tracked",
        "side.bias",
        "se.fc2.weight",
        "fc.weight",
    ] {
        assert!(
            file.tensors.contains_key(name),
            "{name} is not in the checkpoint"
        );
    }

    let report = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&weights),
        "--format",
        "json",
    ]);
    assert_status(&report, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&report)).expect("JSON");
    assert_eq!(report["accuracy"], state["history"][2]["val_accuracy"]);
    assert_eq!(report["loss"], state["history"][2]["val_loss"]);
    check_spec_file(&spec);
}

/// The spec checks clean: no warning (every output is read).
fn check_spec_file(spec: &Path) {
    let output = cnnc(&["check", arg(spec)]);
    assert_status(&output, 0);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}
