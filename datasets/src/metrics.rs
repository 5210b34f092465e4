//! Classification metrics over a model's logits: accuracy, mean loss, per-class precision and
//! recall, and the confusion matrix they come from. What `cnnc eval` prints and `cnnc train`
//! validates with; logits are plain row-major `[N, classes]` slices, so any model's output (an
//! `ndarray` view's `as_slice()`, a typed `Features`' `as_slice()`) fits.
//!
//! ```
//! use cnnc_data::metrics::Evaluation;
//!
//! let mut eval = Evaluation::new(3);
//! // Two samples, three classes: sample 0 predicts class 1 (true 1), sample 1 class 0 (true 2).
//! let logits = [0.1, 2.0, -1.0, 3.0, 0.0, 1.0];
//! eval.record(&logits, &[1, 2], 0.5)?;
//! assert_eq!(eval.correct(), 1);
//! assert_eq!(eval.accuracy(), 0.5);
//! assert_eq!(eval.confusion[2][0], 1, "rows: true class, columns: predicted");
//! assert_eq!(eval.recall(1), Some(1.0));
//! assert_eq!(eval.precision(0), Some(0.0));
//! assert_eq!(eval.precision(2), None, "nothing was predicted as class 2");
//! assert_eq!(eval.loss(), 0.5);
//! # Ok::<(), cnnc_data::DataError>(())
//! ```

use super::DataError;

/// Results accumulated over batches: the confusion matrix and the summed loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `confusion[true][predicted]`, one row and column per model output.
    pub confusion: Vec<Vec<u64>>,
    /// Sum over samples of the cross-entropy loss.
    pub loss_sum: f64,
    /// Samples recorded.
    pub count: u64,
}

impl Evaluation {
    /// Nothing recorded yet, for a model with `classes` outputs.
    pub fn new(classes: usize) -> Self {
        Evaluation {
            confusion: vec![vec![0; classes]; classes],
            loss_sum: 0.0,
            count: 0,
        }
    }

    /// Number of classes (model outputs).
    pub fn classes(&self) -> usize {
        self.confusion.len()
    }

    /// Adds one batch: `logits` row-major `[labels.len(), classes]`, one true class per sample,
    /// and the batch's mean loss. Refuses, changing nothing, logits of another size and labels
    /// outside `0..classes`.
    pub fn record(
        &mut self,
        logits: &[f32],
        labels: &[usize],
        mean_loss: f32,
    ) -> Result<(), DataError> {
        let classes = self.classes();
        check_batch(logits, classes, labels)?;
        let n = labels.len();
        self.loss_sum += f64::from(mean_loss) * n as f64;
        self.count += n as u64;
        for (row, &label) in logits.chunks_exact(classes.max(1)).zip(labels) {
            self.confusion[label][argmax(row)] += 1;
        }
        Ok(())
    }

    /// Samples classified correctly (the confusion matrix's diagonal).
    pub fn correct(&self) -> u64 {
        self.confusion
            .iter()
            .enumerate()
            .map(|(k, row)| row[k])
            .sum()
    }

    /// Fraction of samples classified correctly; 0 before any is recorded.
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.count.max(1) as f64
    }

    /// Mean cross-entropy loss; 0 before any sample is recorded.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// Samples whose true class is `k` (0 for a class the model does not have).
    pub fn support(&self, k: usize) -> u64 {
        self.confusion.get(k).map_or(0, |row| row.iter().sum())
    }

    /// Of the samples predicted as `k`, the fraction that are `k`; `None` when none is.
    pub fn precision(&self, k: usize) -> Option<f64> {
        let predicted: u64 = self.confusion.iter().filter_map(|row| row.get(k)).sum();
        (predicted > 0).then(|| self.confusion[k][k] as f64 / predicted as f64)
    }

    /// Of the samples of class `k`, the fraction predicted as `k`; `None` when there is none.
    pub fn recall(&self, k: usize) -> Option<f64> {
        let support = self.support(k);
        (support > 0).then(|| self.confusion[k][k] as f64 / support as f64)
    }
}

/// Checks that `logits` holds one row of `classes` per label and every label is a class.
fn check_batch(logits: &[f32], classes: usize, labels: &[usize]) -> Result<(), DataError> {
    if Some(logits.len()) != labels.len().checked_mul(classes) {
        return Err(DataError::invalid(
            "metrics",
            format!(
                "{} logits for {} labels of {classes} classes; expected {} (one row of \
                 {classes} per sample)",
                logits.len(),
                labels.len(),
                labels.len().saturating_mul(classes)
            ),
        ));
    }
    if let Some((index, label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(DataError::invalid(
            "metrics",
            format!("label {label} at batch index {index} is out of range for {classes} classes"),
        ));
    }
    Ok(())
}

/// Number of samples whose largest logit is at their label's index; `logits` is row-major
/// `[labels.len(), classes]`. Refuses logits of another size.
pub fn count_correct(logits: &[f32], classes: usize, labels: &[usize]) -> Result<u64, DataError> {
    check_batch(logits, classes, labels)?;
    Ok(logits
        .chunks_exact(classes.max(1))
        .zip(labels)
        .filter(|&(row, &label)| argmax(row) == label)
        .count() as u64)
}

/// Index of the first largest value (`torch.argmax`'s choice); NaN never wins. 0 for an empty
/// slice.
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
        assert_eq!(argmax(&[]), 0);
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
        assert_eq!(e.support(7), 0);
    }

    #[test]
    fn batches_accumulate_and_bad_ones_change_nothing() {
        let mut e = Evaluation::new(2);
        e.record(&[1.0, 0.0, 0.0, 1.0], &[0, 0], 0.25).unwrap();
        e.record(&[0.0, 1.0], &[1], 1.0).unwrap();
        assert_eq!(e.confusion, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!(e.count, 3);
        assert_eq!(e.loss_sum, 1.5);
        let before = e.clone();
        let err = e.record(&[0.0, 1.0, 2.0], &[1], 1.0).unwrap_err();
        assert!(err.to_string().contains("3 logits for 1 labels"), "{err}");
        let err = e.record(&[0.0, 1.0], &[2], 1.0).unwrap_err();
        assert!(
            err.to_string().contains("label 2 at batch index 0"),
            "{err}"
        );
        assert_eq!(e, before);
        assert_eq!(count_correct(&[0.0, 1.0, 1.0, 0.0], 2, &[1, 1]).unwrap(), 1);
        assert!(count_correct(&[0.0], 2, &[1]).is_err());
    }
}
