//! The library alone trains the seed model as `cnnc train` does: `examples/fashion_mnist.rs` (data
//! reader, transform, seeded loader, generated model, SGD, metrics; no CLI code) trains one epoch
//! on the shipped Fashion-MNIST sample and reports the same losses and accuracies as
//! `cnnc train --epochs 1`, to the last printed digit.
//!
//! The CLI is the package `cnnc-cli`: this test runs the `cnnc` binary cargo built beside it
//! (`cargo test` from the repository root builds it for the CLI's own tests; with `-p cnnc` alone,
//! `cargo build -p cnnc-cli` first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(dead_code)]
#[path = "../examples/fashion_mnist.rs"]
mod example;

/// The `cnnc` binary in the target directory this test was built into (`target/<profile>/`).
fn cnnc_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile.join(format!("cnnc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "no cnnc binary at {}: run `cargo test` from the repository root, or `cargo build -p cnnc-cli`",
        binary.display()
    );
    binary
}

/// Runs `cnnc` with `args` from the repository root.
fn cnnc(args: &[&str]) -> Output {
    Command::new(cnnc_binary())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cnnc runs")
}

#[test]
fn the_library_trains_to_the_clis_numbers() {
    let history = example::train(None, 1).expect("the example trains");
    let epoch = &history[0];
    let library = format!(
        "epoch 1/1  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%",
        epoch.train_loss,
        100.0 * epoch.train_accuracy,
        epoch.validation.loss(),
        100.0 * epoch.validation.accuracy()
    );
    assert_eq!(epoch.validation.count, 1000, "the sample's test split");
    assert!(
        epoch.validation.accuracy() > 0.5,
        "one epoch learns something: {library}"
    );

    let out = tempfile::tempdir().expect("temporary folder");
    let run = out.path().join("run");
    let output = cnnc(&[
        "train",
        "models/custom_cnn.yaml",
        "--epochs",
        "1",
        "--out",
        run.to_str().expect("a UTF-8 path"),
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cnnc train failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli = text
        .lines()
        .find(|line| line.starts_with("epoch 1/1  train loss"))
        .unwrap_or_else(|| panic!("an epoch line in:\n{text}"));
    assert!(
        cli.starts_with(&library),
        "library: {library}\ncli:     {cli}"
    );
}
