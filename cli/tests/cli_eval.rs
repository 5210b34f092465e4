//! End-to-end tests of `cnnc eval`: the JSON contract (`accuracy` a fraction) agreeing with
//! training's own validation, the text report, the dataset taken from the weights' metadata, and
//! refusals of weights and data that do not fit.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// A trained tiny model: (spec, data dir, weights).
fn trained(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    write_idx(&data, 120, 40, 8);
    let spec = tiny_spec(dir, "tiny.cnn", 1, 8);
    let out = dir.join("run");
    let flags = [&FAST[..], &["--epochs", "2"]].concat();
    assert_status(&train(&spec, &data, &out, &flags), 0);
    (spec, data, out.join("model.safetensors"))
}

#[test]
fn json_report_agrees_with_training_validation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, _, weights) = trained(dir.path());
    // No --dataset/--data: the weights' metadata says what they were trained on.
    let output = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&weights),
        "--format",
        "json",
    ]);
    assert_status(&output, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&accuracy));
    assert_eq!(report["count"], 40);
    assert_eq!(
        accuracy,
        report["correct"].as_f64().expect("correct") / 40.0
    );
    let state = run_state(weights.parent().expect("run dir"));
    assert_eq!(report["accuracy"], state["history"][1]["val_accuracy"]);
    assert_eq!(report["loss"], state["history"][1]["val_loss"]);

    let confusion = report["confusion"].as_array().expect("confusion");
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion
        .iter()
        .flat_map(|row| row.as_array().expect("row"))
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 40);
    let per_class = report["per_class"].as_array().expect("per_class");
    assert_eq!(per_class[3]["class"], "3");
    assert_eq!(per_class[3]["support"], 4);
}

#[test]
fn text_report_has_table_and_confusion_matrix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data, weights) = trained(dir.path());
    let output = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&weights),
        "--dataset",
        "mnist",
        "--data",
        arg(&data),
    ]);
    assert_status(&output, 0);
    let text = stdout(&output);
    assert!(text.starts_with("mnist test split: accuracy "), "{text}");
    assert!(
        text.contains("class  precision     recall  support"),
        "{text}"
    );
    assert!(text.contains("confusion matrix (rows: true class, columns: predicted class)"));
    assert_eq!(text.lines().count(), 2 + 11 + 2 + 11);
}

#[test]
fn weights_and_data_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data, weights) = trained(dir.path());
    let wider = tiny_spec(dir.path(), "wider.cnn", 1, 10);
    let output = cnnc(&["eval", arg(&wider), "--weights", arg(&weights)]);
    assert_status(&output, 1);
    assert!(
        stderr(&output)
            .contains("tensor `4.weight` has shape [10, 64], the model expects [10, 100]"),
        "{}",
        stderr(&output)
    );

    let cifar = dir.path().join("cifar");
    write_cifar(&cifar, 3);
    let output = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&weights),
        "--dataset",
        "cifar10",
        "--data",
        arg(&cifar),
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("3 channels cannot be turned into 1"),
        "{}",
        stderr(&output)
    );

    let missing = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&dir.path().join("none.safetensors")),
        "--data",
        arg(&data),
    ]);
    assert_status(&missing, 2);
}
