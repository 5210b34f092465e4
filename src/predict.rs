//! Turning a model's logits into an answer, as `cnnc predict` does: class probabilities
//! ([`softmax`], computed stably in `f64`) and the most probable classes ([`top_k`]).
//!
//! ```
//! use cnnc::predict::{softmax, top_k};
//!
//! let probabilities = softmax(&[2.0, 0.5, 2.0, -1.0]);
//! assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
//! // Most probable first; a tie goes to the lower class index.
//! let best = top_k(&probabilities, 2);
//! assert_eq!(best.iter().map(|&(class, _)| class).collect::<Vec<_>>(), [0, 2]);
//! assert!((best[0].1 - 0.43996).abs() < 1e-5);
//! ```

/// Probabilities from one sample's logits (PyTorch's `softmax(dim=-1)`), computed in `f64`
/// after subtracting the largest logit, so that large logits neither overflow nor lose the
/// small probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes with their probabilities, most probable first (ties: the lower
/// class index first); all of them when there are fewer than `k`.
pub fn top_k(probabilities: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12 && (p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn top_k_ranks_by_probability() {
        assert_eq!(top_k(&[0.1, 0.6, 0.3], 2), vec![(1, 0.6), (2, 0.3)]);
        assert_eq!(top_k(&[0.5, 0.5], 5).len(), 2);
    }
}
