//! The small, real Fashion-MNIST sample committed in the repository (`data/fashion-mnist-sample/`):
//! the first 600 training and first 100 test images of each class, in the original gzip IDX files,
//! so that training works on a fresh machine without network. `tools/make_sample.py` regenerates it.

use std::path::Path;

use super::idx::fashion_mnist;
use super::{DataError, Splits};

/// The sample's folder in the source tree this crate was built from.
pub const SAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fashion-mnist-sample");

/// Training images per class in the sample.
pub const SAMPLE_TRAIN_PER_CLASS: usize = 600;

/// Test images per class in the sample.
pub const SAMPLE_TEST_PER_CLASS: usize = 100;

/// Loads the Fashion-MNIST sample from `dir` (normally [`SAMPLE_DIR`]) and checks it is the
/// class-balanced sample, so that a wrong folder is not silently taken for it.
pub fn fashion_mnist_sample(dir: &Path) -> Result<Splits, DataError> {
    let splits = fashion_mnist(dir)?;
    for (dataset, per_class, name) in [
        (&splits.train, SAMPLE_TRAIN_PER_CLASS, "training"),
        (&splits.test, SAMPLE_TEST_PER_CLASS, "test"),
    ] {
        let counts = dataset.class_counts();
        if counts.iter().any(|&c| c != per_class) {
            return Err(DataError::invalid(
                "fashion-mnist sample",
                format!(
                    "{} holds {counts:?} {name} images per class, expected {per_class} of each; \
                     regenerate it with tools/make_sample.py or pass --dataset fashion-mnist",
                    dir.display()
                ),
            ));
        }
    }
    Ok(splits)
}
