//! The training loop: a [`Trainer`] holds a run's network, optimizer, loader and checkpointed
//! state, and trains epoch by epoch and step by step, validating after each epoch, saving a
//! checkpoint and the metrics, and stopping cleanly on a signal. It knows nothing of command-line
//! flags: `cnnc train` sets it up and reports how it ended.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cnnc_data::{Dataset, Loader, Transform};
use cnnc_runtime::Network;
use cnnc_runtime::optim::Optimizer;
use cnnc_runtime::schedule::LrSchedule;
use ndarray::ArrayView4;

use super::super::checkpoint::{self, EpochProgress, EpochRecord, RunState};
use super::super::evaluate::{count_correct, evaluate};
use super::super::job::refuse;
use super::super::progress::{Progress, Snapshot, clock};
use super::divergence::{Part, Step, absurd_loss, diverged, non_finite_entry};
use super::interrupt::{Interrupt, Signal};
use super::metrics::write_metrics;

/// Batch size of validation passes (no gradients are kept, so larger is cheaper).
const EVAL_BATCH: usize = 256;

/// A training run in progress.
pub struct Trainer<'a> {
    /// The network trained.
    pub net: Network,
    /// Its optimizer, set to the learning rate of each epoch.
    pub optimizer: Box<dyn Optimizer>,
    /// Training batches, where the run stands.
    pub loader: Loader<'a>,
    /// The validation images and how they are prepared for the network.
    pub validation: (&'a Dataset, Transform),
    /// Everything a checkpoint records of the run.
    pub state: RunState,
    /// The learning rate of each epoch.
    pub schedule: LrSchedule,
    /// The checkpoint folder.
    pub out: PathBuf,
    /// The step of the checkpoint `out` holds for this run, which a failure leaves in place.
    pub saved_step: Option<u64>,
    /// Signals asking the run to stop.
    pub interrupt: Interrupt,
}

/// How [`Trainer::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch asked for is trained.
    Finished,
    /// A signal stopped the run, with a checkpoint saved: within an epoch, or after the epoch
    /// `mid_epoch` is `false` for.
    Interrupted {
        /// The signal.
        signal: Signal,
        /// Whether it stopped the run within an epoch.
        mid_epoch: bool,
    },
}

/// How one epoch's training pass ended.
enum Pass {
    /// Every batch trained, in this many seconds of the epoch (counting those of a resumed run).
    Done { seconds: f64 },
    /// A signal stopped it; the checkpoint is saved.
    Stopped(Signal),
}

impl Trainer<'_> {
    /// Trains until the run has done `state.epochs` epochs or a signal stops it.
    pub fn run(&mut self) -> anyhow::Result<Outcome> {
        while self.state.epochs_done < self.state.epochs {
            let lr = self
                .schedule
                .lr(self.state.recipe.lr, self.state.epochs_done);
            self.optimizer.set_lr(lr);
            let seconds = match self.train_epoch()? {
                Pass::Done { seconds } => seconds,
                Pass::Stopped(signal) => {
                    return Ok(Outcome::Interrupted {
                        signal,
                        mid_epoch: true,
                    });
                }
            };
            self.finish_epoch(lr, seconds)?;
            if let Some(signal) = self.interrupt.requested()
                && self.state.epochs_done < self.state.epochs
            {
                return Ok(Outcome::Interrupted {
                    signal,
                    mid_epoch: false,
                });
            }
        }
        Ok(Outcome::Finished)
    }

    /// Trains the rest of the current epoch, batch by batch, showing progress; saves a checkpoint
    /// and stops after the step a signal arrives in.
    fn train_epoch(&mut self) -> anyhow::Result<Pass> {
        let started = Instant::now();
        let before = self.state.progress;
        let total = self.loader.dataset().len() as u64;
        let epoch = self.state.epochs_done + 1;
        let mut progress = Progress::new(epoch, self.state.epochs, total, before.seen);
        let batch = self.loader.batch_size();
        // Sized by the loader's batch, which is never larger than the dataset.
        let mut images = vec![0f32; batch * self.loader.image_len()];
        let mut labels = vec![0usize; batch];
        while let Some(n) = self.loader.next_batch(&mut images, &mut labels)? {
            let (loss, correct) = match self.step(&images, &labels[..n]) {
                Ok(result) => result,
                Err(err) => {
                    progress.finish();
                    return Err(err);
                }
            };
            let p = &mut self.state.progress;
            p.loss_sum += f64::from(loss) * n as f64;
            p.correct += correct;
            p.seen += n as u64;
            let elapsed = started.elapsed().as_secs_f64();
            progress.update(Snapshot {
                seen: p.seen,
                loss: p.loss_sum / p.seen as f64,
                accuracy: p.correct as f64 / p.seen as f64,
                rate: (p.seen - before.seen) as f64 / elapsed.max(1e-9),
            });
            if let Some(signal) = self.interrupt.requested() {
                progress.finish();
                self.state.progress.seconds = before.seconds + elapsed;
                self.state.loader = self.loader.state();
                self.save()?;
                return Ok(Pass::Stopped(signal));
            }
        }
        progress.finish();
        Ok(Pass::Done {
            seconds: before.seconds + started.elapsed().as_secs_f64(),
        })
    }

    /// One optimizer step on the batch of `labels.len()` images at the start of `images`:
    /// returns its loss and how many images it classified correctly (before the update). A
    /// step whose loss, gradients or update is not finite stops the run before it reaches the
    /// weights.
    fn step(&mut self, images: &[f32], labels: &[usize]) -> anyhow::Result<(f32, u64)> {
        let n = labels.len();
        let [c, h, w] = self.net.input_shape();
        let x = ArrayView4::from_shape((n, c, h, w), &images[..n * c * h * w])
            .context("batch buffer")?;
        let loss = self.net.train_step(x, labels)?;
        let step = Step {
            number: self.state.step + 1,
            epoch: self.state.epochs_done + 1,
            out: &self.out,
            saved: self.saved_step,
        };
        if !loss.is_finite() || non_finite_entry(&mut self.net, Part::Gradients).is_some() {
            return Err(diverged(&mut self.net, &step, loss));
        }
        let correct = count_correct(self.net.logits()?, labels)?;
        self.optimizer.step(&mut self.net)?;
        if let Some((name, value)) = non_finite_entry(&mut self.net, Part::Values) {
            return Err(refuse(format!(
                "{}: the update made `{name}` {value} (the step itself was finite); lower --lr; {}",
                step.describe(),
                step.kept()
            )));
        }
        self.state.step += 1;
        Ok((loss, correct))
    }

    /// Validates the epoch just trained at learning rate `lr` in `seconds`, records it, saves
    /// the checkpoint and writes the metrics.
    fn finish_epoch(&mut self, lr: f64, seconds: f64) -> anyhow::Result<()> {
        let (test, transform) = &self.validation;
        let validation = evaluate(&mut self.net, test, transform, EVAL_BATCH)?;
        let p = self.state.progress;
        let record = EpochRecord {
            epoch: self.state.epochs_done + 1,
            step: self.state.step,
            lr,
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_accuracy: p.correct as f64 / p.seen.max(1) as f64,
            val_loss: validation.loss(),
            val_accuracy: validation.accuracy(),
            seconds,
        };
        println!(
            "epoch {}/{}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%  {} ({:.0} img/s)",
            record.epoch,
            self.state.epochs,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.val_loss,
            100.0 * record.val_accuracy,
            clock(record.seconds),
            p.seen as f64 / record.seconds.max(1e-9)
        );
        if let Some(notice) = absurd_loss(record.epoch, record.train_loss, self.net.classes()) {
            eprintln!("notice: {notice}");
        }
        self.state.history.push(record);
        self.state.epochs_done += 1;
        self.state.progress = EpochProgress::default();
        self.state.loader = self.loader.state();
        self.save()?;
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

    /// [`checkpoint::save`], saying on failure which checkpoint the folder still holds.
    fn save(&mut self) -> anyhow::Result<()> {
        let out: &Path = &self.out;
        checkpoint::save(out, &mut self.state, &mut self.net, self.optimizer.as_ref()).map_err(
            |err| {
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
            },
        )
    }
}
