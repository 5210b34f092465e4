//! Softmax cross-entropy, `torch.nn.CrossEntropyLoss()` (mean reduction), computed stably through
//! log-sum-exp together with its gradient.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::error::{Error, Result};

/// `torch.nn.functional.cross_entropy(logits, labels)` with mean reduction: returns the loss and
/// writes `dlogits = (softmax(logits) - onehot(labels)) / N` (same `[N, classes]` shape).
///
/// Errors when shapes disagree or a label is not below the number of classes. An empty batch has
/// loss NaN, as in PyTorch.
///
/// ```
/// use cnnc_runtime::softmax_cross_entropy;
/// use ndarray::{Array2, array};
///
/// // Two samples, three classes: confident and right, then unsure.
/// let logits = array![[4.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]];
/// let mut dlogits = Array2::zeros((2, 3));
/// let loss = softmax_cross_entropy(logits.view(), &[0, 2], dlogits.view_mut())?;
/// // (-ln softmax(4, 0, 0)[0] - ln(1/3)) / 2
/// let expected = ((1.0 + 2.0 * (-4.0f32).exp()).ln() + 3.0f32.ln()) / 2.0;
/// assert!((loss - expected).abs() < 1e-6);
/// assert!(dlogits[[0, 0]] < 0.0 && dlogits[[1, 2]] < 0.0, "the gradient raises the true class");
/// // One label per sample, each below the number of classes.
/// assert!(softmax_cross_entropy(logits.view(), &[0], dlogits.view_mut()).is_err());
/// assert!(softmax_cross_entropy(logits.view(), &[0, 3], dlogits.view_mut()).is_err());
/// # Ok::<(), cnnc_runtime::Error>(())
/// ```
pub fn softmax_cross_entropy(
    logits: ArrayView2<f32>,
    labels: &[usize],
    mut dlogits: ArrayViewMut2<f32>,
) -> Result<f32> {
    let (n, classes) = logits.dim();
    if labels.len() != n {
        return Err(Error::LabelCount {
            expected: n,
            found: labels.len(),
        });
    }
    if dlogits.dim() != (n, classes) {
        return Err(Error::shape(
            "cross_entropy",
            "loss gradient",
            format!("[{n}, {classes}] (the logits' shape)"),
            format!("{:?}", dlogits.shape()),
        ));
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(Error::Label {
            index,
            label,
            classes,
        });
    }
    let mut total = 0.0f64;
    let scale = 1.0 / n as f32;
    for ((row, mut grad), &label) in logits
        .outer_iter()
        .zip(dlogits.outer_iter_mut())
        .zip(labels)
    {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for (g, &v) in grad.iter_mut().zip(row.iter()) {
            *g = (v - max).exp();
            sum += *g;
        }
        let log_sum = sum.ln() + max;
        total += f64::from(log_sum - row[label]);
        let inv = scale / sum;
        grad.mapv_inplace(|e| e * inv);
        grad[label] -= scale;
    }
    Ok((total / n as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn matches_pytorch_on_a_small_batch() {
        // import torch; x = torch.tensor([[1., 2., 3.], [1000., 0., -1000.]], requires_grad=True)
        // l = torch.nn.functional.cross_entropy(x, torch.tensor([2, 1])); l.backward()
        // l = 500.2038, x.grad = [[0.0450, 0.1224, -0.1674], [0.5, -0.5, 0.0]]
        let x = array![[1.0f32, 2.0, 3.0], [1000.0, 0.0, -1000.0]];
        let mut g = Array2::zeros((2, 3));
        let loss = softmax_cross_entropy(x.view(), &[2, 1], g.view_mut()).unwrap();
        assert!((loss - 500.2038).abs() < 1e-3, "{loss}");
        let want = array![[0.0450f32, 0.1224, -0.1674], [0.5, -0.5, 0.0]];
        for (a, b) in g.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-4, "{g}");
        }
    }

    #[test]
    fn rejects_out_of_range_labels_and_wrong_shapes() {
        let x = Array2::<f32>::zeros((2, 3));
        let mut g = Array2::zeros((2, 3));
        assert!(matches!(
            softmax_cross_entropy(x.view(), &[0, 3], g.view_mut()),
            Err(Error::Label {
                index: 1,
                label: 3,
                classes: 3
            })
        ));
        let err = softmax_cross_entropy(x.view(), &[0], g.view_mut()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 labels for a batch of 2 samples; give one class index per sample"
        );
        let mut short = Array2::zeros((2, 2));
        assert!(matches!(
            softmax_cross_entropy(x.view(), &[0, 1], short.view_mut()),
            Err(Error::Shape { .. })
        ));
    }
}
