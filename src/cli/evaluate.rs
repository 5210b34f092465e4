//! Evaluation of a network on a labelled dataset: mean loss, accuracy, and the confusion matrix
//! that per-class precision and recall come from. Shared by `train`'s validation and `eval`.

use anyhow::Context;
use cnnc_data::{Dataset, Loader, LoaderConfig, Transform};
use cnnc_runtime::{Mode, Network, softmax_cross_entropy};
use ndarray::{Array2, ArrayView2, ArrayView4};

/// Results over a whole dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `confusion[true][predicted]`, one row and column per model output.
    pub confusion: Vec<Vec<u64>>,
    /// Sum over images of the cross-entropy loss.
    pub loss_sum: f64,
    /// Images evaluated.
    pub count: u64,
}

impl Evaluation {
    /// Images classified correctly.
    pub fn correct(&self) -> u64 {
        self.confusion
            .iter()
            .enumerate()
            .map(|(k, row)| row[k])
            .sum()
    }

    /// Fraction of images classified correctly.
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.count.max(1) as f64
    }

    /// Mean cross-entropy loss.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// Images whose true class is `k`.
    pub fn support(&self, k: usize) -> u64 {
        self.confusion[k].iter().sum()
    }

    /// Of the images predicted as `k`, the fraction that are `k`; `None` when none is.
    pub fn precision(&self, k: usize) -> Option<f64> {
        let predicted: u64 = self.confusion.iter().map(|row| row[k]).sum();
        (predicted > 0).then(|| self.confusion[k][k] as f64 / predicted as f64)
    }

    /// Of the images of class `k`, the fraction predicted as `k`; `None` when there is none.
    pub fn recall(&self, k: usize) -> Option<f64> {
        let support = self.support(k);
        (support > 0).then(|| self.confusion[k][k] as f64 / support as f64)
    }
}

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
    let mut evaluation = Evaluation {
        confusion: vec![vec![0; outputs]; outputs],
        loss_sum: 0.0,
        count: 0,
    };
    while let Some(n) = loader.next_batch(&mut images, &mut labels)? {
        let x = ArrayView4::from_shape((n, c, h, w), &images[..n * image_len])
            .context("batch buffer")?;
        let logits = net.forward_view(x, Mode::Eval)?;
        let loss = softmax_cross_entropy(
            logits,
            &labels[..n],
            dlogits.slice_mut(ndarray::s![..n, ..]),
        )?;
        evaluation.loss_sum += f64::from(loss) * n as f64;
        evaluation.count += n as u64;
        for (row, &label) in logits.outer_iter().zip(&labels[..n]) {
            evaluation.confusion[label][argmax(row.as_slice().unwrap_or(&[]))] += 1;
        }
    }
    Ok(evaluation)
}

/// Number of rows of `logits` whose largest value is at the label's index.
pub fn count_correct(logits: ArrayView2<f32>, labels: &[usize]) -> u64 {
    logits
        .outer_iter()
        .zip(labels)
        .filter(|(row, label)| row.as_slice().is_some_and(|r| argmax(r) == **label))
        .count() as u64
}

/// Index of the first largest value (`torch.argmax`'s choice); NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
    }

    #[test]
    fn precision_and_recall_from_the_confusion_matrix() {
        let e = Evaluation {
            confusion: vec![vec![3, 1, 0], vec![0, 2, 0], vec![1, 1, 0]],
            loss_sum: 4.0,
            count: 8,
        };
        assert_eq!(e.correct(), 5);
        assert_eq!(e.accuracy(), 5.0 / 8.0);
        assert_eq!(e.loss(), 0.5);
        assert_eq!(e.precision(0), Some(0.75));
        assert_eq!(e.recall(0), Some(0.75));
        assert_eq!(e.precision(1), Some(0.5));
        assert_eq!(e.recall(1), Some(1.0));
        assert_eq!(e.precision(2), None);
        assert_eq!(e.recall(2), Some(0.0));
    }
}
