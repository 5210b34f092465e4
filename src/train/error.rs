//! What stops a training run: an error of the runtime, the data or the optimizer, a step that
//! went NaN or infinite ([`Divergence`]), or an error of the [`Observer`](super::Observer).

use std::fmt;

use cnnc_data::DataError;
use cnnc_runtime::optim::OptimError;

/// Why [`Trainer::run`](super::Trainer::run) stopped early. `E` is the observer's own error type.
#[derive(Debug)]
pub enum TrainError<E> {
    /// The model refused a batch or a pass (shapes, labels, state).
    Runtime(cnnc_runtime::Error),
    /// The loader could not produce a batch.
    Data(DataError),
    /// The optimizer does not fit the model.
    Optim(OptimError),
    /// A step went NaN or infinite; the weights hold the last finite update.
    Diverged(Divergence),
    /// The observer failed (writing a checkpoint, say).
    Observer(E),
}

/// A step whose numbers went non-finite: nothing of it reached the weights, except for
/// [`Cause::Update`], where the optimizer's update itself overflowed.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// The optimizer step, from 1.
    pub step: u64,
    /// The epoch, from 1.
    pub epoch: usize,
    /// The loss of the micro-batch that failed (finite for [`Cause::Update`]).
    pub loss: f32,
    /// What went non-finite.
    pub cause: Cause,
}

/// What [`Divergence`] found non-finite.
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    /// The loss, or the gradient of this parameter, with the value found. The weights are
    /// untouched; for the executor, `Network::find_non_finite` names the layer where it started.
    Step {
        /// The first parameter whose gradient is not finite, and its value (none when only the
        /// loss is).
        gradient: Option<(String, f32)>,
    },
    /// The optimizer's update made this parameter (or buffer) non-finite, from a finite step.
    Update {
        /// The parameter's name.
        name: String,
        /// The value it got.
        value: f32,
    },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "training diverged at step {} (epoch {}): ",
            self.step, self.epoch
        )?;
        match &self.cause {
            Cause::Step { gradient: None } => write!(f, "the loss became {}", self.loss),
            Cause::Step {
                gradient: Some((name, value)),
            } => write!(
                f,
                "the gradient of `{name}` became {value} (the loss was {})",
                self.loss
            ),
            Cause::Update { name, value } => write!(
                f,
                "the update made `{name}` {value} (the step itself was finite)"
            ),
        }?;
        f.write_str("; lower the learning rate")
    }
}

impl<E: fmt::Display> fmt::Display for TrainError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Runtime(e) => e.fmt(f),
            TrainError::Data(e) => e.fmt(f),
            TrainError::Optim(e) => e.fmt(f),
            TrainError::Diverged(d) => d.fmt(f),
            TrainError::Observer(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TrainError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the message is the wrapped error's own.
            TrainError::Runtime(e) => e.source(),
            TrainError::Data(e) => e.source(),
            TrainError::Optim(e) => e.source(),
            TrainError::Diverged(_) => None,
            TrainError::Observer(e) => e.source(),
        }
    }
}

impl<E> From<cnnc_runtime::Error> for TrainError<E> {
    fn from(e: cnnc_runtime::Error) -> Self {
        TrainError::Runtime(e)
    }
}

impl<E> From<DataError> for TrainError<E> {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

impl<E> From<OptimError> for TrainError<E> {
    fn from(e: OptimError) -> Self {
        TrainError::Optim(e)
    }
}
