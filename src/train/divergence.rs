//! Numbers that go wrong: the per-step scan for a NaN or infinity in the gradients or in the
//! updated values, and the notice for an epoch whose loss is finite but far above chance.

use cnnc_runtime::{EntryRef, VisitRef};

/// Which numbers of the parameters [`non_finite_entry`] scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The gradients of the last backward pass.
    Gradients,
    /// The values of parameters and float buffers.
    Values,
}

/// The first parameter (or float buffer, for [`Part::Values`]) holding a NaN or infinity, with
/// that value: the per-step check, one pass over numbers already in memory. It only reads, so it
/// visits through [`VisitRef`] (a `&mut` visit would mark the model's packed weights stale).
pub fn non_finite_entry(model: &dyn VisitRef, part: Part) -> Option<(String, f32)> {
    let mut found = None;
    model.visit_ref(&mut |entry| {
        if found.is_some() {
            return;
        }
        let values = match (entry, part) {
            (EntryRef::Param { name, param }, Part::Gradients) => Some((name, &param.grad)),
            (EntryRef::Param { name, param }, Part::Values) => Some((name, &param.value)),
            (EntryRef::Buffer { name, value }, Part::Values) => Some((name, value)),
            _ => None,
        };
        if let Some((name, values)) = values
            && let Some(v) = values.iter().copied().find(|v| !v.is_finite())
        {
            found = Some((name.to_owned(), v));
        }
    });
    found
}

/// An epoch's mean training loss above this many times the loss of a uniform guess (`ln
/// classes`) means the run is diverging: a healthy run starts near 1x and falls.
const ABSURD_LOSS: f64 = 10.0;

/// The notice for an epoch whose mean training `loss` is finite but far above chance over
/// `classes` outputs; `None` for a healthy loss.
pub fn absurd_loss(epoch: usize, loss: f64, classes: usize) -> Option<String> {
    let chance = (classes.max(2) as f64).ln();
    (loss.is_finite() && loss > ABSURD_LOSS * chance).then(|| {
        format!(
            "epoch {epoch}'s training loss {loss:.4e} is more than {ABSURD_LOSS} times that of a \
             uniform guess ({chance:.2} for {classes} classes): training is diverging without \
             overflowing; lower --lr"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_losses_far_above_chance_are_absurd() {
        assert_eq!(absurd_loss(1, 2.30, 10), None);
        assert_eq!(absurd_loss(1, 20.0, 10), None);
        assert_eq!(absurd_loss(1, f64::NAN, 10), None);
        let notice = absurd_loss(2, 1.5e31, 10).expect("a notice");
        assert!(
            notice.starts_with("epoch 2's training loss 1.5000e31 is more than 10 times")
                && notice.ends_with("lower --lr"),
            "{notice}"
        );
    }
}
