//! `cnnc train`'s side of the training loop. The loop itself is the library's
//! [`cnnc::train::Trainer`]; [`Run`] is its observer here: the progress bar or log lines, each
//! epoch's summary line, the checkpoint folder and the metrics files after every epoch, and
//! Ctrl-C or SIGTERM. [`describe_failure`] words how a run that went wrong ends.

use std::path::{Path, PathBuf};

use cnnc::metrics::Evaluation;
use cnnc::runtime::Network;
use cnnc::train::{Cause, Checkpoint, EpochProgress, EpochRecord, Observer, TrainError};

use super::super::checkpoint::{self, RunState};
use super::super::job::refuse;
use super::super::progress::{Progress, Snapshot, clock};
use super::divergence::{Step, diverged};
use super::interrupt::{Interrupt, Signal};
use super::metrics::write_metrics;

/// The observer of a `cnnc train` run.
pub struct Run {
    /// Everything a checkpoint records of the run, kept up to date at each checkpoint.
    pub state: RunState,
    /// The checkpoint folder.
    pub out: PathBuf,
    /// The step of the checkpoint `out` holds for this run, which a failure leaves in place.
    pub saved_step: Option<u64>,
    /// Signals asking the run to stop.
    pub interrupt: Interrupt,
    /// The signal that stopped the run, once one did.
    pub signal: Option<Signal>,
    /// The bar (or log lines) of the epoch in progress.
    progress: Option<Progress>,
}

impl Run {
    /// The observer of a run whose state is `state`, checkpointed in `out`.
    pub fn new(
        state: RunState,
        out: PathBuf,
        saved_step: Option<u64>,
        interrupt: Interrupt,
    ) -> Run {
        Run {
            state,
            out,
            saved_step,
            interrupt,
            signal: None,
            progress: None,
        }
    }

    /// [`checkpoint::save`], saying on failure which checkpoint the folder still holds.
    fn save(
        &mut self,
        net: &mut Network,
        optimizer: &dyn cnnc::runtime::optim::Optimizer,
    ) -> anyhow::Result<()> {
        let out: &Path = &self.out;
        checkpoint::save(out, &mut self.state, net, optimizer).map_err(|err| {
            let what = format!(
                "cannot save the checkpoint of step {} in {}",
                self.state.step,
                out.display()
            );
            // A failed commit says itself what the folder holds.
            if err.downcast_ref::<checkpoint::Committing>().is_some() {
                return err.context(what);
            }
            let kept = match self.saved_step {
                Some(step) => format!("the checkpoint of step {step} is kept"),
                None => "it holds no checkpoint of this run".to_owned(),
            };
            err.context(format!("{what} ({kept})"))
        })
    }
}

impl Observer<Network> for Run {
    type Error = anyhow::Error;

    fn epoch_started(&mut self, epoch: usize, epochs: usize, total: u64, seen: u64) {
        self.progress = Some(Progress::new(epoch, epochs, total, seen));
    }

    fn batch(&mut self, p: &cnnc::train::BatchProgress) {
        if let Some(progress) = &mut self.progress {
            progress.update(Snapshot {
                seen: p.seen,
                loss: p.loss,
                accuracy: p.accuracy,
                rate: p.rate,
            });
        }
    }

    fn epoch_ended(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }

    fn epoch_finished(
        &mut self,
        record: &EpochRecord,
        training: &EpochProgress,
        _validation: &Evaluation,
    ) -> anyhow::Result<()> {
        println!(
            "epoch {}/{}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%  {} ({:.0} img/s)",
            record.epoch,
            self.state.epochs,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.val_loss,
            100.0 * record.val_accuracy,
            clock(record.seconds),
            training.seen as f64 / record.seconds.max(1e-9)
        );
        Ok(())
    }

    fn notice(&mut self, text: &str) {
        eprintln!("notice: {text}");
    }

    fn checkpoint(&mut self, c: Checkpoint<'_, Network>) -> anyhow::Result<()> {
        self.state.record(&c);
        self.save(c.model, c.optimizer)?;
        if c.mid_epoch {
            return Ok(());
        }
        self.saved_step = Some(self.state.step);
        write_metrics(&self.out, &self.state.history).map_err(|err| {
            anyhow::anyhow!(
                "{err:#}; the checkpoint of step {} is saved in {}, and `--resume {}` writes the \
                 metrics again",
                self.state.step,
                self.out.display(),
                self.out.display()
            )
        })
    }

    fn should_stop(&mut self) -> bool {
        self.signal = self.interrupt.requested();
        self.signal.is_some()
    }
}

/// The error that ends a run the library's trainer stopped with `err`, worded for the command
/// line: a divergence names the step, the layer where it started (found by replaying the step on
/// `net`) and the checkpoint the folder keeps.
pub fn describe_failure(
    err: TrainError<anyhow::Error>,
    net: &mut Network,
    run: &Run,
) -> anyhow::Error {
    match err {
        TrainError::Runtime(e) => e.into(),
        TrainError::Data(e) => e.into(),
        TrainError::Optim(e) => e.into(),
        TrainError::Observer(e) => e,
        TrainError::Diverged(d) => {
            let step = Step {
                number: d.step,
                epoch: d.epoch,
                out: &run.out,
                saved: run.saved_step,
            };
            match d.cause {
                Cause::Step { .. } => diverged(net, &step, d.loss),
                Cause::Update { name, value } => refuse(format!(
                    "{}: the update made `{name}` {value} (the step itself was finite); lower \
                     --lr; {}",
                    step.describe(),
                    step.kept()
                )),
            }
        }
    }
}
