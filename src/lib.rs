//! cnnc: a compiler for declarative CNN specs. This facade crate is all a user depends on: it
//! re-exports the [`cnn_model!`] macro and the runtime that generated models run on; with features,
//! the datasets (`data`, `download`) and the spec front-end (`spec`). README.md lists what each
//! feature adds.
//!
//! A spec (YAML or the cnnc DSL) becomes a statically shaped Rust model at compile time; spec
//! errors are compile errors and spec warnings `cargo build` warnings. Training the reference
//! CIFAR-10 network a few steps on random data:
//!
//! ```
//! use cnnc::ndarray::Array4;
//! use cnnc::runtime::optim::{Optimizer, Sgd, SgdConfig};
//! use cnnc::runtime::typed::Images;
//!
//! // `CustomCnn` gets one field per layer, typed activations and plain methods.
//! cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
//!
//! let mut model = CustomCnn::new(42);
//! assert_eq!(CustomCnn::PARAM_COUNT, 145_578);
//! let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.01) })?;
//!
//! // A batch of 8 images [8, 3, 32, 32]; the type checks the dims once.
//! let pixels = Array4::from_shape_fn((8, 3, 32, 32), |(n, c, h, w)| {
//!     ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
//! });
//! let images = Images::<3, 32, 32>::from_nchw(pixels.view())?;
//! let labels = [0, 1, 2, 3, 4, 5, 6, 7];
//!
//! let first = model.train_step(&images, &labels)?;
//! sgd.step(&mut model)?;
//! let mut loss = first;
//! for _ in 0..4 {
//!     loss = model.train_step(&images, &labels)?;
//!     sgd.step(&mut model)?;
//! }
//! assert!(loss < first, "the loss goes down on a fixed batch: {first} -> {loss}");
//!
//! // The untyped entry point checks the input's dims and returns the logits.
//! let logits = model.predict(pixels.view())?;
//! assert_eq!(logits.dim(), (8, CustomCnn::OUTPUT_SIZE));
//! // ... and says what it expected when they are wrong (per sample, in PyTorch's order).
//! let err = model.predict(Array4::zeros((8, 1, 28, 28)).view()).unwrap_err();
//! assert!(err.to_string().contains("inputs of shape [3, 32, 32] per sample"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `data` feature, a dataset feeds the model through the batch loader, and
//! [`metrics`] scores it (`examples/fashion_mnist.rs` is a whole training loop):
//!
//! ```
//! # #[cfg(feature = "data")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cnnc::data::{ImageShape, Loader, LoaderConfig, Transform, fashion_mnist_sample};
//! use cnnc::metrics::Evaluation;
//! use cnnc::runtime::typed::Images;
//!
//! cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
//!
//! let splits = fashion_mnist_sample(std::path::Path::new(cnnc::data::SAMPLE_DIR))?;
//! let test = &splits.test;
//! // 1x28x28 grey images padded and repeated to the model's 3x32x32.
//! let transform = Transform::new(test.shape(), test.normalization(), ImageShape::new(3, 32, 32))?;
//! let mut loader = Loader::new(test, transform, LoaderConfig::eval(100))?;
//!
//! let mut model = CustomCnn::new(0);
//! let (mut pixels, mut labels) = (vec![0.0; 100 * 3 * 32 * 32], vec![0; 100]);
//! let mut evaluation = Evaluation::new(CustomCnn::CLASSES);
//! while let Some(n) = loader.next_batch(&mut pixels, &mut labels)? {
//!     // The loader writes [N, C, H, W]; `from_nchw_slice` reads exactly that.
//!     let images = Images::<3, 32, 32>::from_nchw_slice(&pixels, n)?;
//!     let logits = model.forward(&images)?;
//!     evaluation.record(logits.as_slice(), &labels[..n], 0.0)?;
//! }
//! assert_eq!(evaluation.count, 1000);
//! let untrained = evaluation.accuracy();
//! assert!((0.0..=1.0).contains(&untrained));
//! println!("accuracy {:.2}%, recall of class 0 {:?}", 100.0 * untrained, evaluation.recall(0));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "data"))]
//! # fn main() {}
//! ```

pub use cnnc_macros::cnn_model;
pub use cnnc_runtime::error::Error;
/// The spec front-end: parsing, checking and diagnostics at run time (feature `spec`).
#[cfg(feature = "spec")]
pub use cnnc_spec as spec;

/// ONNX export and import and PyTorch export (feature `interop`).
#[cfg(feature = "interop")]
pub use cnnc_interop as interop;

/// Datasets, transforms and the batch loader (feature `data`; downloads with `download`).
#[cfg(feature = "data")]
pub use cnnc_data as data;

/// Classification metrics: accuracy, mean loss, per-class precision and recall and the confusion
/// matrix, over any model's logits (feature `data`; the same as `cnnc::data::metrics`). `cnnc eval`
/// and `cnnc train` report with these.
#[cfg(feature = "data")]
pub use cnnc_data::metrics;

/// The numeric runtime generated models run on: everything of `cnnc_runtime`, and its datasets as
/// `runtime::data` (feature `data`), where they lived before they got a crate of their own.
pub mod runtime {
    /// Datasets, transforms and the batch loader; the same as [`crate::data`].
    #[cfg(feature = "data")]
    pub use cnnc_data as data;
    pub use cnnc_runtime::*;
}
/// The ndarray version the runtime uses, for building inputs to `predict` and reading results.
pub use ndarray;

/// What code generated by `cnn_model!` names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cnnc_runtime::tensor::on_pool;
    pub use cnnc_runtime::typed::{Workspace, backward, expect_built, forward};
}
