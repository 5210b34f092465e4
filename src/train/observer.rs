//! What a [`Trainer`](super::Trainer) tells the program around it while it runs: progress within
//! an epoch, each finished epoch's metrics, notices, and the points where a checkpoint belongs;
//! and how it asks whether to stop. `cnnc train`'s progress bars, log lines, checkpoints and
//! metrics files are one [`Observer`]; [`Quiet`] is another that does nothing.

use std::convert::Infallible;

use cnnc_data::LoaderState;
use cnnc_data::metrics::Evaluation;
use cnnc_runtime::optim::Optimizer;

/// One finished epoch: a row of `cnnc train`'s `metrics.csv` (and of a checkpoint's history).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps taken by its end.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss (each image's loss as its batch computed it, before the update).
    pub train_loss: f64,
    /// Training accuracy (fraction), before the updates.
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation accuracy (fraction).
    pub val_accuracy: f64,
    /// Seconds spent training (and validating), counting those before a resume.
    pub seconds: f64,
}

/// Running sums of the epoch in progress, what a checkpoint taken within an epoch keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochProgress {
    /// Sum of the per-image training loss.
    pub loss_sum: f64,
    /// Images classified correctly (before the update they caused).
    pub correct: u64,
    /// Images seen.
    pub seen: u64,
    /// Seconds spent so far.
    pub seconds: f64,
}

/// Where the run stands: everything of the training loop a checkpoint records (with the
/// loader's state, the model and the optimizer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Sums of the unfinished epoch.
    pub progress: EpochProgress,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
}

/// Progress within an epoch, after each optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchProgress {
    /// Images seen this epoch (counting those before a resume).
    pub seen: u64,
    /// Images in the epoch.
    pub total: u64,
    /// Mean training loss so far this epoch.
    pub loss: f64,
    /// Training accuracy so far this epoch (fraction).
    pub accuracy: f64,
    /// Images per second since this epoch's pass started (or resumed).
    pub rate: f64,
}

/// What a checkpoint needs, handed to [`Observer::checkpoint`] at the moments one belongs: after
/// every epoch and when the run stops on [`Observer::should_stop`].
pub struct Checkpoint<'a, M> {
    /// The model, its weights and dropout streams as of the last optimizer step.
    pub model: &'a mut M,
    /// The optimizer, whose state goes with the weights.
    pub optimizer: &'a dyn Optimizer,
    /// The training loop's state.
    pub state: &'a TrainState,
    /// Where the training loader stands ([`cnnc_data::Loader::restore`] continues from it).
    pub loader: LoaderState,
    /// Whether the run stops within an epoch (a signal) rather than at its end.
    pub mid_epoch: bool,
}

/// Receives a [`Trainer`](super::Trainer)'s events. Every method has a default that does nothing,
/// so an observer implements only what it shows. Events come in this order: per epoch,
/// `epoch_started`, `batch` after each optimizer step, `epoch_ended` (also when an error or a stop
/// ends the pass early), then, for a finished epoch, `epoch_finished`, possibly `notice`, and
/// `checkpoint`.
pub trait Observer<M> {
    /// The observer's own failures (a checkpoint that cannot be written), which stop the run as
    /// [`TrainError::Observer`](super::TrainError::Observer).
    type Error;

    /// The training pass of `epoch` (from 1) of `epochs` starts over `total` images, `seen` of
    /// them done before (a resumed epoch).
    fn epoch_started(&mut self, epoch: usize, epochs: usize, total: u64, seen: u64) {
        let _ = (epoch, epochs, total, seen);
    }

    /// An optimizer step is done.
    fn batch(&mut self, progress: &BatchProgress) {
        let _ = progress;
    }

    /// The epoch's training pass ended (finished, stopped or failed).
    fn epoch_ended(&mut self) {}

    /// An epoch is trained and validated: its record (in the state's history when
    /// [`Observer::checkpoint`] follows), the sums it came from and the validation's confusion
    /// matrix.
    fn epoch_finished(
        &mut self,
        record: &EpochRecord,
        training: &EpochProgress,
        validation: &Evaluation,
    ) -> Result<(), Self::Error> {
        let _ = (record, training, validation);
        Ok(())
    }

    /// Something the user should know that does not stop the run (a loss far above chance).
    fn notice(&mut self, text: &str) {
        let _ = text;
    }

    /// A checkpoint belongs here; `cnnc train` saves its folder. After an epoch's checkpoint
    /// comes the next epoch; after a mid-epoch one the run returns
    /// [`Outcome::Stopped`](super::Outcome::Stopped).
    fn checkpoint(&mut self, checkpoint: Checkpoint<'_, M>) -> Result<(), Self::Error> {
        let _ = checkpoint;
        Ok(())
    }

    /// Asked after every optimizer step and after every epoch: `true` stops the run (Ctrl-C in
    /// `cnnc train`), after a checkpoint. Never asked between the micro-batches of one step, so a
    /// stop never splits an accumulated step.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that shows nothing, keeps nothing and never stops the run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl<M> Observer<M> for Quiet {
    type Error = Infallible;
}
