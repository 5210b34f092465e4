//! Gradient accumulation over micro-batches: the gradients of several backward passes summed
//! before one optimizer step, as PyTorch's repeated `loss.backward()` does, for a batch larger
//! than memory allows in one pass.
//!
//! A backward pass overwrites each parameter's `grad`; a [`GradAccumulator`] keeps the running
//! sum beside the model. PyTorch's recipe, `(loss / n).backward()` for each of `n` micro-batches,
//! is `add(model, 1.0 / n)` after each pass, then [`GradAccumulator::apply`] before the
//! optimizer's step. With micro-batches of unequal sizes, weight each by its share of the images
//! (`b_i / total`): the step then equals one step on the whole batch's mean loss, to float
//! rounding (a batch-norm layer's batch statistics are the exception: they are per pass).

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::param::{Entry, EntryRef, Visit, VisitRef};

/// The running, weighted sum of a model's parameter gradients over micro-batches.
///
/// ```
/// use ndarray::ArrayD;
/// use cnnc_runtime::accumulate::GradAccumulator;
/// use cnnc_runtime::{Entry, EntryRef, Param, Visit, VisitRef};
///
/// struct One(Param);
/// impl Visit for One {
///     fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
///         f(Entry::Param { name: "w", param: &mut self.0 });
///     }
/// }
/// impl VisitRef for One {
///     fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
///         f(EntryRef::Param { name: "w", param: &self.0 });
///     }
/// }
/// let mut model = One(Param::new(ArrayD::zeros(vec![1])));
/// let mut sum = GradAccumulator::new();
/// for grad in [1.0, 3.0] {
///     model.0.grad[[0]] = grad; // what each micro-batch's backward writes
///     sum.add(&model, 0.5)?; // (loss / 2).backward()
/// }
/// assert_eq!(sum.passes(), 2);
/// sum.apply(&mut model)?;
/// assert_eq!(model.0.grad[[0]], 2.0);
/// assert_eq!(sum.passes(), 0, "applying starts the next sum");
/// # Ok::<(), cnnc_runtime::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct GradAccumulator {
    /// One sum per parameter, in visit order; sized by the first [`GradAccumulator::add`].
    sums: Vec<ArrayD<f32>>,
    /// Backward passes summed since the last apply.
    passes: usize,
}

impl GradAccumulator {
    /// An empty sum; its buffers are sized by the first [`add`](Self::add) and reused after.
    pub fn new() -> Self {
        GradAccumulator::default()
    }

    /// Backward passes summed since the last [`apply`](Self::apply) (or [`clear`](Self::clear)).
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// Adds `weight` times every parameter gradient of `model` to the sum (the first pass after
    /// an apply replaces it). Frozen parameters add nothing. The model's parameters must be the
    /// ones of the previous passes (same count and shapes, in visit order).
    pub fn add(&mut self, model: &dyn VisitRef, weight: f32) -> Result<()> {
        let first = self.passes == 0;
        let mut index = 0;
        let mut error = None;
        let sums = &mut self.sums;
        model.visit_ref(&mut |entry| {
            let EntryRef::Param { name, param } = entry else {
                return;
            };
            if error.is_some() {
                return;
            }
            if sums.len() == index {
                sums.push(ArrayD::zeros(param.grad.raw_dim()));
            }
            let sum = &mut sums[index];
            index += 1;
            if sum.shape() != param.grad.shape() {
                error = Some(Error::State(format!(
                    "gradient accumulation: parameter `{name}` has shape {:?}, the sum so far {:?}; \
                     the model changed between micro-batches",
                    param.grad.shape(),
                    sum.shape()
                )));
                return;
            }
            if !param.requires_grad {
                return;
            }
            if first {
                sum.zip_mut_with(&param.grad, |s, &g| *s = weight * g);
            } else {
                sum.zip_mut_with(&param.grad, |s, &g| *s = weight.mul_add(g, *s));
            }
        });
        if let Some(error) = error {
            return Err(error);
        }
        if index != self.sums.len() {
            return Err(Error::State(format!(
                "gradient accumulation: the model has {index} parameters, the sum so far {}; \
                 the model changed between micro-batches",
                self.sums.len()
            )));
        }
        self.passes += 1;
        Ok(())
    }

    /// Writes the sum into the parameters' gradients (frozen ones keep theirs), ready for the
    /// optimizer's step, and starts a new sum. Without any pass added it changes nothing.
    pub fn apply(&mut self, model: &mut dyn Visit) -> Result<()> {
        if self.passes == 0 {
            return Ok(());
        }
        let mut sums = self.sums.iter();
        model.visit(&mut |entry| {
            if let Entry::Param { param, .. } = entry
                && let Some(sum) = sums.next()
                && param.requires_grad
                && sum.shape() == param.grad.shape()
            {
                param.grad.assign(sum);
            }
        });
        self.passes = 0;
        Ok(())
    }

    /// Drops the sum so far (the next [`add`](Self::add) starts a new one).
    pub fn clear(&mut self) {
        self.passes = 0;
    }
}

#[cfg(test)]
mod tests {
    use ndarray::arr1;

    use super::*;
    use crate::param::Param;

    struct Two(Param, Param);

    impl Visit for Two {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            f(Entry::Param {
                name: "a",
                param: &mut self.0,
            });
            f(Entry::Param {
                name: "b",
                param: &mut self.1,
            });
        }
    }

    impl VisitRef for Two {
        fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
            f(EntryRef::Param {
                name: "a",
                param: &self.0,
            });
            f(EntryRef::Param {
                name: "b",
                param: &self.1,
            });
        }
    }

    #[test]
    fn sums_weighted_passes_and_skips_frozen_parameters() {
        let mut model = Two(
            Param::new(arr1(&[0.0, 0.0]).into_dyn()),
            Param::new(arr1(&[0.0]).into_dyn()),
        );
        model.1.requires_grad = false;
        model.1.grad[[0]] = 7.0;
        let mut sum = GradAccumulator::new();
        for (weight, grad) in [(0.25, [4.0, 8.0]), (0.75, [4.0, -8.0])] {
            model.0.grad.assign(&arr1(&grad).into_dyn());
            sum.add(&model, weight).unwrap();
        }
        sum.apply(&mut model).unwrap();
        assert_eq!(model.0.grad.as_slice().unwrap(), [4.0, -4.0]);
        assert_eq!(model.1.grad[[0]], 7.0, "a frozen gradient is left alone");
        // The next sum starts afresh.
        model.0.grad.fill(1.0);
        sum.add(&model, 1.0).unwrap();
        sum.apply(&mut model).unwrap();
        assert_eq!(model.0.grad.as_slice().unwrap(), [1.0, 1.0]);
    }

    #[test]
    fn a_changed_model_is_an_error() {
        let mut model = Two(
            Param::new(arr1(&[0.0, 0.0]).into_dyn()),
            Param::new(arr1(&[0.0]).into_dyn()),
        );
        let mut sum = GradAccumulator::new();
        sum.add(&model, 1.0).unwrap();
        model.1 = Param::new(arr1(&[0.0, 0.0, 0.0]).into_dyn());
        let err = sum.add(&model, 1.0).unwrap_err().to_string();
        assert!(err.contains("parameter `b` has shape [3]"), "{err}");
    }
}
