//! The library alone trains the seed model as `cnnc train` does: `examples/fashion_mnist.rs` (data
//! reader, transform, seeded loader, generated model, SGD, metrics; no CLI code) trains one epoch
//! on the shipped Fashion-MNIST sample and reports the same losses and accuracies as
//! `cnnc train --epochs 1`, to the last printed digit.

mod support;

#[allow(dead_code)]
#[path = "../examples/fashion_mnist.rs"]
mod example;

use support::{assert_status, cnnc, stdout};

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
    assert_status(&output, 0);
    let text = stdout(&output);
    let cli = text
        .lines()
        .find(|line| line.starts_with("epoch 1/1  train loss"))
        .unwrap_or_else(|| panic!("an epoch line in:\n{text}"));
    assert!(
        cli.starts_with(&library),
        "library: {library}\ncli:     {cli}"
    );
}
