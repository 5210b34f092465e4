//! `cnnc train --accumulate N` and `--freeze PATTERN` end to end: both in `--help` and in the
//! checkpoint's recipe, a resumed accumulating run bit-identical to an uninterrupted one, frozen
//! parameters left as initialised while the rest trains, and each refused where it does not fit
//! (a pattern matching nothing, a resume that changes either).

mod support;

use std::path::Path;

use cnnc_runtime::weights::{TensorData, read_tensors};
use support::*;

/// A 3x12x12 network (unnamed layers: the convolution is `0`, the linear layer `4`) trained on
/// 1x8x8 IDX images in `dir/data`.
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    write_idx(&data, 120, 40, 8);
    (tiny_spec(dir, "tiny.cnn", 3, 12), data)
}

/// The f32 tensor `name` of `dir/model.safetensors`, as bits.
fn tensor(dir: &Path, name: &str) -> Vec<u32> {
    let file = read_tensors(&dir.join("model.safetensors")).expect("the weights read");
    let (_, data) = file
        .tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    match data {
        TensorData::F32(t) => t.iter().map(|v| v.to_bits()).collect(),
        other => panic!("{name} is {}", other.dtype()),
    }
}

#[test]
fn both_flags_are_documented() {
    let help = cnnc(&["train", "--help"]);
    assert_status(&help, 0);
    let text = stdout(&help);
    assert!(text.contains("--accumulate <N>"), "{text}");
    assert!(text.contains("--freeze <PATTERN>"), "{text}");
}

#[test]
fn an_accumulating_run_records_its_steps_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    // 120 images in batches of 7, three a step: 6 steps an epoch (the last of 15 images).
    let flags = ["--batch-size", "7", "--accumulate", "3", "--augment"];
    let with = |epochs: &'static str| [&flags[..], &["--epochs", epochs]].concat();
    let first = train(&spec, &data, &straight, &with("2"));
    assert_status(&first, 0);
    assert!(
        stdout(&first).contains("batch 7") && stdout(&first).contains("accumulating 3 batches"),
        "{}",
        stdout(&first)
    );
    let state = run_state(&straight);
    assert_eq!(state["recipe"]["accumulate"], 3);
    assert_eq!(state["step"], 12);
    assert_eq!(state["history"][0]["step"], 6);

    assert_status(&train(&spec, &data, &split, &with("1")), 0);
    let resumed = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&split),
        "--epochs",
        "2",
    ]);
    assert_status(&resumed, 0);
    for file in ["model.safetensors", "optimizer.state"] {
        assert!(
            bytes(&straight, file) == bytes(&split, file),
            "{file} differs"
        );
    }

    // A count past any dataset makes each epoch one step; nothing is sized by it.
    let huge = dir.path().join("huge");
    let run = train(
        &spec,
        &data,
        &huge,
        &["--epochs", "1", "--accumulate", "18446744073709551615"],
    );
    assert_status(&run, 0);
    assert_eq!(run_state(&huge)["step"], 1);

    let changed = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&split),
        "--epochs",
        "3",
        "--accumulate",
        "2",
    ]);
    assert_status(&changed, 1);
    assert!(
        stderr(&changed).contains("--accumulate 3 (this command: 2)"),
        "{}",
        stderr(&changed)
    );
}

#[test]
fn frozen_parameters_keep_their_initial_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let (slow, fast) = (dir.path().join("slow"), dir.path().join("fast"));
    // Two learning rates: whatever trains ends elsewhere, what is frozen stays where the seed put it.
    for (out, lr) in [(&slow, "0.01"), (&fast, "0.05")] {
        let run = train(
            &spec,
            &data,
            out,
            &[
                "--epochs", "1", "--lr", lr, "--freeze", "0", "--freeze", "*.bias",
            ],
        );
        assert_status(&run, 0);
        assert!(stdout(&run).contains("frozen 0 *.bias"), "{}", stdout(&run));
    }
    for name in ["0.weight", "0.bias", "4.bias"] {
        assert_eq!(tensor(&slow, name), tensor(&fast, name), "{name} moved");
    }
    assert_ne!(tensor(&slow, "4.weight"), tensor(&fast, "4.weight"));
    assert_eq!(
        run_state(&slow)["recipe"]["freeze"],
        serde_json::json!(["0", "*.bias"])
    );

    let resumed = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&slow),
        "--epochs",
        "2",
        "--freeze",
        "4",
    ]);
    assert_status(&resumed, 1);
    assert!(
        stderr(&resumed).contains("--freeze 0 *.bias (this command: 4)"),
        "{}",
        stderr(&resumed)
    );
}

#[test]
fn a_pattern_matching_no_parameter_lists_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let run = train(&spec, &data, &out, &["--freeze", "layer1"]);
    assert_status(&run, 1);
    assert!(
        stderr(&run).contains(
            "error: --freeze layer1: no parameter matches `layer1`; the parameters are 0.weight, \
             0.bias, 4.weight, 4.bias;"
        ),
        "{}",
        stderr(&run)
    );
    assert!(!out.join("model.safetensors").exists());
}
