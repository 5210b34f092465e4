//! Trains the seed model (`models/custom_cnn.yaml`) on Fashion-MNIST through the public library
//! API alone: the dataset reader and transform, the seeded batch loader, the generated model, SGD,
//! the library's [`Trainer`] and its metrics. It is `cnnc train`'s default recipe (SGD lr 0.01,
//! momentum 0.9, batch 64, seed 0, validation on the test split after each epoch), and gives the
//! same numbers bit for bit (`tests/library_training.rs` checks one epoch against the CLI).
//!
//! ```text
//! cargo run --release --example fashion_mnist                     # the sample in data/, 1 epoch
//! cargo run --release --example fashion_mnist -- /usr/share/datasets/fashion-mnist 5
//! ```
//!
//! With a folder, it reads the full Fashion-MNIST IDX files there (raw or `.gz`); the second
//! argument is the number of epochs.

use std::convert::Infallible;
use std::error::Error;
use std::path::{Path, PathBuf};

use cnnc::data::{
    ImageShape, Loader, LoaderConfig, Transform, fashion_mnist, fashion_mnist_sample,
};
use cnnc::metrics::Evaluation;
use cnnc::runtime::optim::{OptimizerConfig, SgdConfig};
use cnnc::train::{
    BatchProgress, EpochProgress, EpochRecord, Observer, TrainConfig, TrainState, Trainer,
};

cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");

/// Images per training step.
const BATCH: usize = 64;

/// Prints a line every tenth of an epoch and one per finished epoch, and keeps the last
/// validation's confusion matrix for the per-class table.
#[derive(Default)]
pub struct Report {
    /// Print progress lines (the test trains silently).
    pub verbose: bool,
    /// The last epoch's validation.
    pub validation: Option<Evaluation>,
    epochs: usize,
    next_line: u64,
}

impl<M> Observer<M> for Report {
    type Error = Infallible;

    fn epoch_started(&mut self, _epoch: usize, epochs: usize, total: u64, seen: u64) {
        self.epochs = epochs;
        self.next_line = seen + total / 10;
    }

    fn batch(&mut self, p: &BatchProgress) {
        if self.verbose && p.seen >= self.next_line {
            self.next_line += p.total / 10;
            eprintln!(
                "  [{}/{}] loss {:.4} acc {:.2}% {:.0} img/s",
                p.seen,
                p.total,
                p.loss,
                100.0 * p.accuracy,
                p.rate
            );
        }
    }

    fn epoch_finished(
        &mut self,
        r: &EpochRecord,
        _training: &EpochProgress,
        validation: &Evaluation,
    ) -> Result<(), Infallible> {
        if self.verbose {
            println!("{}", epoch_line(r, self.epochs));
        }
        self.validation = Some(validation.clone());
        Ok(())
    }
}

/// `cnnc train`'s summary of epoch `r` of `epochs`, less the time.
pub fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    format!(
        "epoch {}/{epochs}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%",
        r.epoch,
        r.train_loss,
        100.0 * r.train_accuracy,
        r.val_loss,
        100.0 * r.val_accuracy
    )
}

/// Trains a fresh `CustomCnn` (seed 0) for `epochs` epochs on the Fashion-MNIST in `dir` (the
/// shipped sample when `None`), validating after each; reports through `report`.
pub fn train(
    dir: Option<&Path>,
    epochs: usize,
    report: &mut Report,
) -> Result<TrainState, Box<dyn Error>> {
    let splits = match dir {
        Some(dir) => fashion_mnist(dir)?,
        None => fashion_mnist_sample(Path::new(cnnc::data::SAMPLE_DIR))?,
    };
    let [c, h, w] = CustomCnn::INPUT_SHAPE;
    // 1x28x28 grey images become the model's 3x32x32: 2 zero pixels around, the channel repeated.
    let transform = Transform::new(
        splits.train.shape(),
        splits.train.normalization(),
        ImageShape::new(c, h, w),
    )?;

    let seed = 0;
    let lr = 0.01;
    let sgd = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(lr)
    });
    // `for_run` salts the seed as `cnnc train` does, so the batches are the CLI's.
    let loader = Loader::new(
        &splits.train,
        transform.clone(),
        LoaderConfig::for_run(BATCH, seed),
    )?;
    let mut trainer = Trainer::new(
        CustomCnn::new(seed),
        sgd.build()?,
        loader,
        Some((&splits.test, transform)),
        TrainConfig::new(epochs, lr),
    );
    trainer.run(report)?;
    Ok(trainer.state)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from);
    let epochs = match args.next() {
        Some(text) => text
            .to_str()
            .and_then(|t| t.parse().ok())
            .filter(|&n: &usize| n > 0)
            .ok_or("the second argument is the number of epochs, a positive integer")?,
        None => 1,
    };
    let mut report = Report {
        verbose: true,
        ..Report::default()
    };
    train(dir.as_deref(), epochs, &mut report)?;
    if let Some(v) = &report.validation {
        let names = cnnc::data::FASHION_MNIST_CLASSES;
        println!("\nclass        precision  recall");
        for (k, name) in names.iter().enumerate() {
            let percent =
                |x: Option<f64>| x.map_or("--".to_owned(), |x| format!("{:.2}%", 100.0 * x));
            println!(
                "{name:<12} {:>9}  {:>6}",
                percent(v.precision(k)),
                percent(v.recall(k))
            );
        }
    }
    Ok(())
}
