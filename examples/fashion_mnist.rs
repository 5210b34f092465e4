//! Trains the seed model (`models/custom_cnn.yaml`) on Fashion-MNIST through the public library
//! API alone: the dataset reader and transform, the seeded batch loader, the generated model, SGD
//! and the metrics. It is `cnnc train`'s default recipe (SGD lr 0.01, momentum 0.9, batch 64, seed
//! 0, validation on the test split after each epoch), and gives the same numbers bit for bit
//! (`tests/library_training.rs` checks one epoch against the CLI).
//!
//! ```text
//! cargo run --release --example fashion_mnist                     # the sample in data/, 1 epoch
//! cargo run --release --example fashion_mnist -- /usr/share/datasets/fashion-mnist 5
//! ```
//!
//! With a folder, it reads the full Fashion-MNIST IDX files there (raw or `.gz`); the second
//! argument is the number of epochs.

use std::error::Error;
use std::path::{Path, PathBuf};

use cnnc::data::{
    Dataset, ImageShape, Loader, LoaderConfig, Transform, fashion_mnist, fashion_mnist_sample,
};
use cnnc::metrics::Evaluation;
use cnnc::ndarray::{Array2, s};
use cnnc::runtime::optim::{Optimizer, Sgd, SgdConfig};
use cnnc::runtime::softmax_cross_entropy;
use cnnc::runtime::typed::{Features, Images};

cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");

/// Images per training step.
const BATCH: usize = 64;
/// Images per validation forward pass (as `cnnc train` validates).
const EVAL_BATCH: usize = 256;

/// One epoch's results.
pub struct Epoch {
    /// Mean training loss and accuracy over the epoch (each batch before its update).
    pub train_loss: f64,
    /// Fraction of training images classified correctly.
    pub train_accuracy: f64,
    /// The test split after the epoch.
    pub validation: Evaluation,
}

/// Trains a fresh `CustomCnn` (seed 0) for `epochs` epochs on the Fashion-MNIST in `dir` (the
/// shipped sample when `None`) and validates after each.
pub fn train(dir: Option<&Path>, epochs: usize) -> Result<Vec<Epoch>, Box<dyn Error>> {
    let splits = match dir {
        Some(dir) => fashion_mnist(dir)?,
        None => fashion_mnist_sample(Path::new(cnnc::data::SAMPLE_DIR))?,
    };
    let [c, h, w] = CustomCnn::INPUT_SHAPE;
    let input = ImageShape::new(c, h, w);
    // 1x28x28 grey images become the model's 3x32x32: 2 zero pixels around, the channel repeated.
    let transform = Transform::new(splits.train.shape(), splits.train.normalization(), input)?;

    let seed = 0;
    let mut model = CustomCnn::new(seed);
    let mut sgd = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    })?;
    let mut loader = Loader::new(
        &splits.train,
        transform.clone(),
        LoaderConfig::for_run(BATCH, seed),
    )?;

    // The loader writes `[B, C, H, W]` floats into buffers we own; `from_nchw_slice` reads
    // exactly that layout into the model's typed input.
    let mut pixels = vec![0f32; BATCH * input.len()];
    let mut labels = vec![0usize; BATCH];
    let mut images = Images::<3, 32, 32>::zeros(BATCH)?;
    let mut history = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        let mut train = Evaluation::new(CustomCnn::CLASSES);
        while let Some(n) = loader.next_batch(&mut pixels, &mut labels)? {
            images.copy_from_nchw_slice(&pixels, n)?;
            // `model.train_step(&images, labels)` does these three steps in one call; spelt out,
            // the logits are at hand for the training accuracy (before the update).
            let (logits, tape) = model.forward_train(&images)?;
            let mut grad = Array2::<f32>::zeros((n, CustomCnn::CLASSES));
            let loss = softmax_cross_entropy(logits.as_array(), &labels[..n], grad.view_mut())?;
            train.record(logits.as_slice(), &labels[..n], loss)?;
            model.backward(tape, &Features::<10>::from_array(grad.view())?)?;
            sgd.step(&mut model)?;
        }
        history.push(Epoch {
            train_loss: train.loss(),
            train_accuracy: train.accuracy(),
            validation: evaluate(&mut model, &splits.test, &transform)?,
        });
    }
    Ok(history)
}

/// Loss, accuracy and confusion matrix of `model` on every image of `dataset`, in order.
pub fn evaluate(
    model: &mut CustomCnn,
    dataset: &Dataset,
    transform: &Transform,
) -> Result<Evaluation, Box<dyn Error>> {
    let batch = EVAL_BATCH.min(dataset.len());
    let mut loader = Loader::new(dataset, transform.clone(), LoaderConfig::eval(batch))?;
    let mut pixels = vec![0f32; batch * loader.image_len()];
    let mut labels = vec![0usize; batch];
    let mut images = Images::<3, 32, 32>::zeros(batch)?;
    let mut evaluation = Evaluation::new(CustomCnn::CLASSES);
    let mut scratch = Array2::<f32>::zeros((batch, CustomCnn::CLASSES));
    while let Some(n) = loader.next_batch(&mut pixels, &mut labels)? {
        images.copy_from_nchw_slice(&pixels, n)?;
        let logits = model.forward(&images)?;
        let loss = softmax_cross_entropy(
            logits.as_array(),
            &labels[..n],
            scratch.slice_mut(s![..n, ..]),
        )?;
        evaluation.record(logits.as_slice(), &labels[..n], loss)?;
    }
    Ok(evaluation)
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
    let history = train(dir.as_deref(), epochs)?;
    for (i, epoch) in history.iter().enumerate() {
        let v = &epoch.validation;
        println!(
            "epoch {}/{epochs}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%",
            i + 1,
            epoch.train_loss,
            100.0 * epoch.train_accuracy,
            v.loss(),
            100.0 * v.accuracy()
        );
    }
    if let Some(last) = history.last() {
        let v = &last.validation;
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
