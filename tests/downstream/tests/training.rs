//! A user's crate trains the seed model (`model.cnn`, PyTorch's CustomCNN) on Fashion-MNIST
//! through the public API alone (issue 13): the sample's reader, the transform to the model's
//! input, the seeded loader, SGD and the library's `Trainer`, one epoch with `cnnc train`'s
//! default recipe, reaching the accuracy `cnnc train --epochs 1` prints in the same run (within
//! 0.5 point; in fact to the last printed digit). Needs the `data` feature, which this crate
//! enables for its tests only (a dev-dependency), so its normal build stays lean.
//!
//! Run by the repository's `tests/downstream_api.rs`, which passes the `cnnc` binary it built
//! in `CNNC_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cnnc::Model;
use cnnc::data::{ImageShape, Loader, LoaderConfig, SAMPLE_DIR, Transform, fashion_mnist_sample};
use cnnc::runtime::optim::{OptimizerConfig, SgdConfig};
use cnnc::train::{EVAL_BATCH, Outcome, Quiet, TrainConfig, Trainer};

cnnc::cnn_model!(pub Seed, "model.cnn");

/// The validation accuracy (percent, as printed) of `cnnc train model.cnn --epochs 1`.
fn cli_accuracy() -> f64 {
    let binary = std::env::var_os("CNNC_BIN").map(PathBuf::from).expect(
        "CNNC_BIN names the cnnc binary: run this through the repository's tests/downstream_api.rs",
    );
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-run");
    // A fresh folder each time: `cnnc train` refuses to overwrite a run.
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(binary)
        .args(["train", "model.cnn", "--epochs", "1", "--out"])
        .arg(&out)
        .current_dir(crate_dir)
        .output()
        .expect("cnnc runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cnnc train failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .find(|line| line.starts_with("epoch 1/1  train loss"))
        .unwrap_or_else(|| panic!("an epoch line in:\n{text}"));
    // `epoch 1/1  train loss 0.9 acc 66.00%  val loss 0.7 acc 74.20%  0:05 (1200 img/s)`
    line.split("acc ")
        .nth(2)
        .and_then(|rest| rest.split('%').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("a validation accuracy in {line}"))
}

#[test]
fn one_epoch_from_the_loader_reaches_the_clis_accuracy() -> Result<(), Box<dyn std::error::Error>> {
    let splits = fashion_mnist_sample(Path::new(SAMPLE_DIR))?;
    let [c, h, w] = Seed::INPUT_SHAPE;
    // 1x28x28 grey images padded and repeated to the model's 3x32x32, normalised as trained.
    let transform = Transform::new(
        splits.train.shape(),
        splits.train.normalization(),
        ImageShape::new(c, h, w),
    )?;
    // `cnnc train`'s defaults: SGD lr 0.01 momentum 0.9, batch 64, seed 0 (salted as a run's).
    let sgd = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    });
    let loader = Loader::new(&splits.train, transform.clone(), LoaderConfig::for_run(64, 0))?;
    let mut trainer = Trainer::new(
        Seed::new(0),
        sgd.build()?,
        loader,
        Some((&splits.test, transform.clone())),
        TrainConfig::new(1, 0.01),
    );
    assert_eq!(trainer.run(&mut Quiet)?, Outcome::Finished);
    let library = 100.0 * trainer.state.history[0].val_accuracy;

    // The trained model through the `Model` trait: the loader's batches feed `predict` as they
    // are, and score what the trainer's validation scored.
    let model: &dyn Model = &trainer.model;
    let mut test = Loader::new(&splits.test, transform, LoaderConfig::eval(EVAL_BATCH))?;
    let mut batch = test.batch();
    let (mut correct, mut seen) = (0, 0);
    while test.next_into(&mut batch)? {
        let logits = model.predict(batch.images())?;
        for (row, &label) in logits.rows().into_iter().zip(batch.labels()) {
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            correct += usize::from(best == label);
        }
        seen += batch.len();
    }
    assert_eq!(seen, splits.test.len());
    let predicted = 100.0 * correct as f64 / seen as f64;
    assert!((predicted - library).abs() < 1e-9, "{predicted} vs {library}");

    let cli = cli_accuracy();
    assert!(
        (library - cli).abs() <= 0.5,
        "the library's epoch reached {library:.2}%, `cnnc train` {cli:.2}%"
    );
    assert!(library > 50.0, "one epoch learns: {library:.2}%");
    Ok(())
}
