//! Evaluation of a network on a labelled dataset, into the library's [`Evaluation`] (mean loss,
//! accuracy, and the confusion matrix that per-class precision and recall come from). Shared by
//! `train`'s validation and `eval`.

use anyhow::Context;
pub use cnnc_data::metrics::Evaluation;
use cnnc_data::{Dataset, Loader, LoaderConfig, Transform};
use cnnc_runtime::{Mode, Network, softmax_cross_entropy};
use ndarray::{Array2, ArrayView2, ArrayView4};

/// Runs `net` in evaluation mode over every image of `dataset` (in order, `batch_size` at a
/// time, or all at once if it holds fewer) prepared by `transform`.
pub fn evaluate(
    net: &mut Network,
    dataset: &Dataset,
    transform: &Transform,
    batch_size: usize,
) -> anyhow::Result<Evaluation> {
    // A batch never holds more than the dataset: buffers are sized by that, not by the flag.
    let batch_size = batch_size.min(dataset.len()).max(1);
    let mut loader = Loader::new(dataset, transform.clone(), LoaderConfig::eval(batch_size))?;
    let outputs = net.classes();
    let image_len = loader.image_len();
    let [c, h, w] = net.input_shape();
    let mut images = vec![0f32; batch_size * image_len];
    let mut labels = vec![0usize; batch_size];
    let mut dlogits = Array2::<f32>::zeros((batch_size, outputs));
    let mut evaluation = Evaluation::new(outputs);
    while let Some(n) = loader.next_batch(&mut images, &mut labels)? {
        let x = ArrayView4::from_shape((n, c, h, w), &images[..n * image_len])
            .context("batch buffer")?;
        let logits = net.forward_view(x, Mode::Eval)?;
        let loss = softmax_cross_entropy(
            logits,
            &labels[..n],
            dlogits.slice_mut(ndarray::s![..n, ..]),
        )?;
        let logits = logits.as_slice().context("logits are contiguous")?;
        evaluation.record(logits, &labels[..n], loss)?;
    }
    Ok(evaluation)
}

/// Number of rows of `logits` (`[labels.len(), classes]`) whose largest value is at the label's
/// index: the library's [`cnnc_data::metrics::count_correct`] over an ndarray view.
pub fn count_correct(logits: ArrayView2<f32>, labels: &[usize]) -> anyhow::Result<u64> {
    let classes = logits.ncols();
    let logits = logits.as_slice().context("logits are contiguous")?;
    Ok(cnnc_data::metrics::count_correct(logits, classes, labels)?)
}
