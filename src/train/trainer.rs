//! The training loop: a [`Trainer`] trains any [`Model`] epoch by epoch and step by step from a
//! [`Loader`], validates after each epoch, stops a step that goes NaN or infinite before it
//! reaches the weights, accumulates gradients over micro-batches when asked, and tells an
//! [`Observer`] what happens (progress, metrics, checkpoints) and asks it whether to stop.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::time::Instant;

use cnnc_data::metrics::{self, Evaluation};
use cnnc_data::{Batch, Dataset, Loader, LoaderConfig, Transform};
use cnnc_runtime::Model;
use cnnc_runtime::accumulate::GradAccumulator;
use cnnc_runtime::optim::Optimizer;
use cnnc_runtime::schedule::LrSchedule;
use cnnc_runtime::softmax_cross_entropy;
use ndarray::{Array2, ArrayView2, s};

use super::divergence::{Part, absurd_loss, non_finite_entry};
use super::error::{Cause, Divergence, TrainError};
use super::observer::{
    BatchProgress, Checkpoint, EpochProgress, EpochRecord, Observer, TrainState,
};

/// Batch size of validation passes (no gradients are kept, so larger is cheaper).
pub const EVAL_BATCH: usize = 256;

/// The schedule of a run: how long, how fast, how many micro-batches per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs to reach, counting those already in the [`TrainState`] (a resumed run).
    pub epochs: usize,
    /// The base learning rate, which `schedule` scales per epoch.
    pub lr: f64,
    /// The learning rate of each epoch (`torch.optim.lr_scheduler`, stepped per epoch).
    pub schedule: LrSchedule,
    /// Micro-batches (loader batches) per optimizer step: gradient accumulation. 1 steps after
    /// every batch. With `n`, the gradients of `n` batches are summed, each batch's mean loss
    /// weighted by its share of the step's images, so one step follows the mean loss over all
    /// of them as one batch `n` times as large would (PyTorch's `(loss / n).backward()` for
    /// equal batches; batch norm's statistics stay per batch). The epoch's last step takes what
    /// is left.
    pub accumulate: NonZeroUsize,
    /// Images per validation batch.
    pub eval_batch: usize,
}

impl TrainConfig {
    /// `epochs` at a constant learning rate `lr`, one batch per step, validation 256 at a time.
    pub fn new(epochs: usize, lr: f64) -> Self {
        TrainConfig {
            epochs,
            lr,
            schedule: LrSchedule::Constant,
            accumulate: NonZeroUsize::MIN,
            eval_batch: EVAL_BATCH,
        }
    }
}

/// How [`Trainer::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch asked for is trained.
    Finished,
    /// [`Observer::should_stop`] stopped the run, after its checkpoint: within an epoch, or
    /// between two (`mid_epoch` false).
    Stopped {
        /// Whether the run stopped within an epoch.
        mid_epoch: bool,
    },
}

/// A training run: the model, its optimizer, the training batches and the validation data, and
/// where the run stands. The fields are public so that a resumed run can be put together (the
/// model's weights, the optimizer's state, [`Loader::restore`] and `state` from a checkpoint).
pub struct Trainer<'a, M> {
    /// The model trained.
    pub model: M,
    /// Its optimizer, set to the learning rate of each epoch.
    pub optimizer: Box<dyn Optimizer>,
    /// Training batches, where the run stands.
    pub loader: Loader<'a>,
    /// The validation images and how they are prepared for the model; without them an epoch's
    /// validation loss and accuracy are NaN.
    pub validation: Option<(&'a Dataset, Transform)>,
    /// Epochs, learning rates, accumulation.
    pub config: TrainConfig,
    /// Steps, epochs and metrics so far.
    pub state: TrainState,
    /// The gradient sum of the step in progress (accumulation only).
    accumulator: GradAccumulator,
}

/// How one epoch's training pass ended.
enum Pass {
    /// Every batch trained, in this many seconds of the epoch (counting those of a resumed run).
    Done { seconds: f64 },
    /// The observer stopped it; the checkpoint is taken.
    Stopped,
}

impl<'a, M: Model> Trainer<'a, M> {
    /// A new run of `model` from its first step, validated on `validation` when given.
    pub fn new(
        model: M,
        optimizer: Box<dyn Optimizer>,
        loader: Loader<'a>,
        validation: Option<(&'a Dataset, Transform)>,
        config: TrainConfig,
    ) -> Self {
        Trainer {
            model,
            optimizer,
            loader,
            validation,
            config,
            state: TrainState::default(),
            accumulator: GradAccumulator::new(),
        }
    }

    /// Trains until the run has done `config.epochs` epochs or the observer stops it.
    pub fn run<O: Observer<M>>(
        &mut self,
        observer: &mut O,
    ) -> Result<Outcome, TrainError<O::Error>> {
        while self.state.epochs_done < self.config.epochs {
            let lr = self
                .config
                .schedule
                .lr(self.config.lr, self.state.epochs_done);
            self.optimizer.set_lr(lr);
            let seconds = match self.train_epoch(observer)? {
                Pass::Done { seconds } => seconds,
                Pass::Stopped => return Ok(Outcome::Stopped { mid_epoch: true }),
            };
            self.finish_epoch(lr, seconds, observer)?;
            if self.state.epochs_done < self.config.epochs && observer.should_stop() {
                return Ok(Outcome::Stopped { mid_epoch: false });
            }
        }
        Ok(Outcome::Finished)
    }

    /// Trains the rest of the current epoch, step by step; takes a checkpoint and stops after
    /// the step the observer asks to stop in.
    fn train_epoch<O: Observer<M>>(
        &mut self,
        observer: &mut O,
    ) -> Result<Pass, TrainError<O::Error>> {
        let started = Instant::now();
        let before = self.state.progress;
        let total = self.loader.dataset().len() as u64;
        let epoch = self.state.epochs_done + 1;
        observer.epoch_started(epoch, self.config.epochs, total, before.seen);
        let result = self.epoch_steps(observer, started, before, total);
        observer.epoch_ended();
        let seconds = before.seconds + started.elapsed().as_secs_f64();
        match result? {
            true => Ok(Pass::Done { seconds }),
            false => {
                self.state.progress.seconds = seconds;
                self.checkpoint(observer, true)?;
                Ok(Pass::Stopped)
            }
        }
    }

    /// The steps of [`Trainer::train_epoch`]: `true` when the epoch is done, `false` when the
    /// observer asked to stop.
    fn epoch_steps<O: Observer<M>>(
        &mut self,
        observer: &mut O,
        started: Instant,
        before: EpochProgress,
        total: u64,
    ) -> Result<bool, TrainError<O::Error>> {
        // Sized by the loader's batch, which is never larger than the dataset.
        let mut batch = self.loader.batch();
        let mut dlogits =
            Array2::<f32>::zeros((self.loader.batch_size(), self.model.output_size()));
        let micro = self.config.accumulate.get();
        loop {
            // The images of this step: `micro` batches, or what is left of the epoch.
            let step_images = self
                .loader
                .remaining()
                .min(micro.saturating_mul(self.loader.batch_size()));
            let (mut trained, mut exhausted) = (0, false);
            while trained < micro {
                if !self.loader.next_into(&mut batch)? {
                    // The loader has moved on to the next epoch: this step is the epoch's last.
                    exhausted = true;
                    break;
                }
                let weight = (micro > 1).then(|| batch.len() as f32 / step_images as f32);
                let (loss, correct) = self.micro_step(&batch, &mut dlogits, weight)?;
                let p = &mut self.state.progress;
                p.loss_sum += f64::from(loss) * batch.len() as f64;
                p.correct += correct;
                p.seen += batch.len() as u64;
                trained += 1;
            }
            if trained == 0 {
                return Ok(true);
            }
            self.optimizer_step()?;
            let p = &self.state.progress;
            let elapsed = started.elapsed().as_secs_f64();
            observer.batch(&BatchProgress {
                seen: p.seen,
                total,
                loss: p.loss_sum / p.seen as f64,
                accuracy: p.correct as f64 / p.seen as f64,
                rate: (p.seen - before.seen) as f64 / elapsed.max(1e-9),
            });
            if exhausted {
                // A stop asked for now comes after the epoch's validation and checkpoint.
                return Ok(true);
            }
            if observer.should_stop() {
                return Ok(false);
            }
        }
    }

    /// The forward and backward pass of one batch: returns its loss and how many images it
    /// classified correctly (before the update). With a `weight` (accumulation) its gradients are
    /// added to the step's sum. A loss or gradient that is not finite stops the run.
    fn micro_step<E>(
        &mut self,
        batch: &Batch,
        dlogits: &mut Array2<f32>,
        weight: Option<f32>,
    ) -> Result<(f32, u64), TrainError<E>> {
        let n = batch.len();
        let labels = batch.labels();
        let logits = self.model.forward_train(batch.images())?;
        let mut dlogits = dlogits.slice_mut(s![..n, ..]);
        let loss = softmax_cross_entropy(logits.view(), labels, dlogits.view_mut())?;
        self.model.backward(dlogits.view())?;
        let gradient = non_finite_entry(&self.model, Part::Gradients);
        if !loss.is_finite() || gradient.is_some() {
            return Err(TrainError::Diverged(Divergence {
                step: self.state.step + 1,
                epoch: self.state.epochs_done + 1,
                loss,
                cause: Cause::Step { gradient },
            }));
        }
        let correct = count_correct(logits.view(), labels)?;
        if let Some(weight) = weight {
            self.accumulator.add(&self.model, weight)?;
        }
        Ok((loss, correct))
    }

    /// Applies the step's (accumulated) gradients; an update that makes a parameter or buffer
    /// non-finite stops the run.
    fn optimizer_step<E>(&mut self) -> Result<(), TrainError<E>> {
        self.accumulator.apply(&mut self.model)?;
        self.optimizer.step(&mut self.model)?;
        if let Some((name, value)) = non_finite_entry(&self.model, Part::Values) {
            return Err(TrainError::Diverged(Divergence {
                step: self.state.step + 1,
                epoch: self.state.epochs_done + 1,
                loss: f32::NAN,
                cause: Cause::Update { name, value },
            }));
        }
        self.state.step += 1;
        Ok(())
    }

    /// Validates the epoch just trained at learning rate `lr` in `seconds`, records it and takes
    /// the checkpoint.
    fn finish_epoch<O: Observer<M>>(
        &mut self,
        lr: f64,
        seconds: f64,
        observer: &mut O,
    ) -> Result<(), TrainError<O::Error>> {
        let validation = match &self.validation {
            Some((test, transform)) => {
                evaluate(&self.model, test, transform, self.config.eval_batch).map_err(widen)?
            }
            None => Evaluation::new(self.model.output_size()),
        };
        let p = self.state.progress;
        let (val_loss, val_accuracy) = match validation.count {
            0 => (f64::NAN, f64::NAN),
            _ => (validation.loss(), validation.accuracy()),
        };
        let record = EpochRecord {
            epoch: self.state.epochs_done + 1,
            step: self.state.step,
            lr,
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_accuracy: p.correct as f64 / p.seen.max(1) as f64,
            val_loss,
            val_accuracy,
            seconds,
        };
        observer
            .epoch_finished(&record, &p, &validation)
            .map_err(TrainError::Observer)?;
        if let Some(notice) = absurd_loss(record.epoch, record.train_loss, self.model.output_size())
        {
            observer.notice(&notice);
        }
        self.state.history.push(record);
        self.state.epochs_done += 1;
        self.state.progress = EpochProgress::default();
        self.checkpoint(observer, false)
    }

    /// Hands the observer a checkpoint of the run as it stands.
    fn checkpoint<O: Observer<M>>(
        &mut self,
        observer: &mut O,
        mid_epoch: bool,
    ) -> Result<(), TrainError<O::Error>> {
        observer
            .checkpoint(Checkpoint {
                model: &mut self.model,
                optimizer: self.optimizer.as_ref(),
                state: &self.state,
                loader: self.loader.state(),
                mid_epoch,
            })
            .map_err(TrainError::Observer)
    }
}

/// An error of [`evaluate`] as one of any observer's [`TrainError`].
fn widen<E>(err: TrainError<Infallible>) -> TrainError<E> {
    match err {
        TrainError::Runtime(e) => TrainError::Runtime(e),
        TrainError::Data(e) => TrainError::Data(e),
        TrainError::Optim(e) => TrainError::Optim(e),
        TrainError::Diverged(d) => TrainError::Diverged(d),
        TrainError::Observer(never) => match never {},
    }
}

/// Runs `model` in evaluation mode ([`Model::predict`]) over every image of `dataset`, in order,
/// `batch_size` at a time (or all at once if it holds fewer), prepared by `transform`: the mean
/// cross-entropy loss, the accuracy and the confusion matrix. What `cnnc eval` and every epoch's
/// validation report.
///
/// ```
/// use cnnc::data::{ImageShape, SAMPLE_DIR, Transform, fashion_mnist_sample};
/// use cnnc::train::evaluate;
///
/// cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
///
/// let splits = fashion_mnist_sample(std::path::Path::new(SAMPLE_DIR))?;
/// let test = &splits.test;
/// let transform = Transform::new(test.shape(), test.normalization(), ImageShape::new(3, 32, 32))?;
/// let scores = evaluate(&CustomCnn::new(0), test, &transform, 256)?;
/// assert_eq!(scores.count, test.len() as u64);
/// assert!((0.0..=1.0).contains(&scores.accuracy()));
/// println!("recall of class 0: {:?}", scores.recall(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn evaluate<M: Model + ?Sized>(
    model: &M,
    dataset: &Dataset,
    transform: &Transform,
    batch_size: usize,
) -> Result<Evaluation, TrainError<Infallible>> {
    // A batch never holds more than the dataset: buffers are sized by that, not by the request.
    let batch_size = batch_size.min(dataset.len()).max(1);
    let mut loader = Loader::new(dataset, transform.clone(), LoaderConfig::eval(batch_size))?;
    let outputs = model.output_size();
    let mut batch = loader.batch();
    let mut dlogits = Array2::<f32>::zeros((batch_size, outputs));
    let mut evaluation = Evaluation::new(outputs);
    while loader.next_into(&mut batch)? {
        let n = batch.len();
        let logits = model.predict(batch.images())?;
        let loss = softmax_cross_entropy(
            logits.view(),
            batch.labels(),
            dlogits.slice_mut(s![..n, ..]),
        )?;
        let logits = logits.as_standard_layout();
        let values = logits.as_slice().unwrap_or_default();
        evaluation.record(values, batch.labels(), loss)?;
    }
    Ok(evaluation)
}

/// Rows of `logits` (`[labels.len(), classes]`) whose largest value is at the label's index.
fn count_correct<E>(logits: ArrayView2<f32>, labels: &[usize]) -> Result<u64, TrainError<E>> {
    let classes = logits.ncols();
    let logits = logits.as_standard_layout();
    let values = logits.as_slice().unwrap_or_default();
    Ok(metrics::count_correct(values, classes, labels)?)
}
