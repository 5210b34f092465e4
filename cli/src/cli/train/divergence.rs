//! How a run that goes wrong numerically is stopped and told: a step whose loss, gradients or
//! update is NaN or infinite stops the run before the optimizer writes it into the weights,
//! naming the layer where it started; an epoch whose loss is finite but far above chance gets a
//! notice.

use std::path::Path;

use cnnc_runtime::exec::NonFinite;
use cnnc_runtime::{Entry, Network, Visit};

use super::super::job::refuse;

/// A training step, for the messages that stop a run.
pub struct Step<'a> {
    /// Optimizer steps including this one, from 1.
    pub number: u64,
    /// Epoch, from 1.
    pub epoch: usize,
    /// The checkpoint folder.
    pub out: &'a Path,
    /// The step of the checkpoint `out` holds for this run, if any.
    pub saved: Option<u64>,
}

impl Step<'_> {
    /// `training diverged at step 37 (epoch 1)`.
    pub fn describe(&self) -> String {
        format!(
            "training diverged at step {} (epoch {})",
            self.number, self.epoch
        )
    }

    /// What the folder still holds.
    pub fn kept(&self) -> String {
        match self.saved {
            Some(step) => format!(
                "the last checkpoint in {} (step {step}) is kept",
                self.out.display()
            ),
            None => format!(
                "no checkpoint of this run was written to {}",
                self.out.display()
            ),
        }
    }
}

/// The error that stops a run whose step went non-finite (`loss` is the step's), naming the layer
/// where it started.
pub fn diverged(net: &mut Network, step: &Step<'_>, loss: f32) -> anyhow::Error {
    let source = match net.find_non_finite() {
        Ok(Some(found @ NonFinite::Input { .. })) => {
            format!("{found} (the dataset holds a non-finite pixel)")
        }
        Ok(Some(found)) => found.to_string(),
        Ok(None) => "every activation and gradient is finite".to_owned(),
        Err(err) => format!("the layer at fault is unknown ({err})"),
    };
    let loss = if loss.is_finite() {
        format!("the loss was {loss}")
    } else {
        format!("the loss became {loss}")
    };
    refuse(format!(
        "{}: {source}; {loss}; lower --lr; {}",
        step.describe(),
        step.kept()
    ))
}

/// Which numbers of the parameters [`non_finite_entry`] scans.
#[derive(Clone, Copy, PartialEq)]
pub enum Part {
    /// The gradients of the last backward pass.
    Gradients,
    /// The values of parameters and float buffers.
    Values,
}

/// The first parameter (or float buffer, for [`Part::Values`]) holding a NaN or infinity, with
/// that value: the per-step check, one pass over numbers already in memory.
pub fn non_finite_entry(net: &mut Network, part: Part) -> Option<(String, f32)> {
    let mut found = None;
    net.visit(&mut |entry| {
        if found.is_some() {
            return;
        }
        let values = match (entry, part) {
            (Entry::Param { name, param }, Part::Gradients) => Some((name, &param.grad)),
            (Entry::Param { name, param }, Part::Values) => Some((name, &param.value)),
            (Entry::Buffer { name, value }, Part::Values) => Some((name, &*value)),
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
