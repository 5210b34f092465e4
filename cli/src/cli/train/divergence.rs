//! How `cnnc train` words a run that went wrong numerically: the library's trainer stops a step
//! whose loss, gradients or update is NaN or infinite before the optimizer writes it into the
//! weights ([`cnnc::train::Divergence`]); this names the layer where it started and the
//! checkpoint the folder keeps. (The notice for a loss far above chance is the library's
//! [`cnnc::train::absurd_loss`].)

use std::path::Path;

use cnnc::runtime::Network;
use cnnc::runtime::exec::NonFinite;

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
