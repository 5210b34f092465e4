//! `checkpoint.json`, the run state of a checkpoint: its JSON layout and the checks that a file
//! read back describes a run cnnc could have written (every field consistent with the others), so
//! that a hand-edited or damaged file is refused naming the file and the field instead of being
//! resumed into a run that is not the one saved.

use std::collections::BTreeMap;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use cnnc_data::{Augment, Bridge, DatasetKind, ImageShape, LoaderConfig, LoaderState};
use cnnc_data::{Normalization, RUN_SEED_SALT, Splits, Transform};
use cnnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use cnnc_runtime::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

use super::super::observer::{Checkpoint, EpochProgress, EpochRecord, TrainState};
use super::super::trainer::{EVAL_BATCH, TrainConfig};
use super::CheckpointError;
use super::meta::WeightsMeta;

/// Version of `checkpoint.json`'s layout.
pub const FORMAT: u32 = 1;

/// The optimizers a recipe names (`cnnc train --optimizer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// `torch.optim.SGD` (with `--momentum`).
    Sgd,
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

impl OptimizerName {
    /// Its name in a recipe and on the command line: `sgd`, `adam`, `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerName::Sgd => "sgd",
            OptimizerName::Adam => "adam",
            OptimizerName::Adamw => "adamw",
        }
    }
}

/// A learning-rate schedule with every parameter resolved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    None,
    /// `StepLR(step_size, gamma)`.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// `CosineAnnealingLR(t_max)` down to 0.
    Cosine {
        /// Epochs from the base rate to 0.
        t_max: usize,
    },
}

/// The hyper-parameters a resumed run must share with the run it continues (`cnnc train`'s
/// flags and their defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The optimizer.
    pub optimizer: OptimizerName,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (0 for Adam and AdamW).
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Images per training batch.
    pub batch_size: usize,
    /// Seed of the initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Random crop and flip.
    pub augment: bool,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Batches whose gradients are summed into each optimizer step (`--accumulate`); 1, and
    /// absent from the file, without accumulation.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub accumulate: usize,
    /// The `--freeze` patterns, in the order given; absent from the file when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// [`Recipe::accumulate`]'s default: one batch per step, as checkpoints before it had.
fn one() -> usize {
    1
}

/// Whether `n` is 1 (a recipe without accumulation writes no `accumulate`).
fn is_one(n: &usize) -> bool {
    *n == 1
}

impl DataInfo {
    /// How the data `now` differs from this, the data a run trained on, in words (`dataset
    /// cifar10 (now fashion-mnist)`, `60000 training images (now 1000)`): empty when a run on
    /// `now` may continue it. The folder it is read from may differ.
    pub fn differences(&self, now: &DataInfo) -> Vec<String> {
        let mut differences = Vec::new();
        if self.dataset != now.dataset {
            differences.push(format!("dataset {} (now {})", self.dataset, now.dataset));
            return differences;
        }
        if self.train_len != now.train_len {
            differences.push(format!(
                "{} training images (now {})",
                self.train_len, now.train_len
            ));
        }
        if self.image_shape != now.image_shape {
            differences.push(format!(
                "{} images (now {})",
                self.image_shape, now.image_shape
            ));
        }
        if self.classes != now.classes {
            differences.push(format!(
                "classes {:?} (now {:?})",
                self.classes, now.classes
            ));
        }
        if self.normalization != now.normalization {
            differences.push("other normalisation statistics".to_owned());
        }
        differences
    }

    /// What a run on `splits` records, read from `dir` as `dataset`, with the images adapted to
    /// the model by `transform` (its [`Transform::bridge`]).
    pub fn new(dataset: DatasetKind, dir: &Path, splits: &Splits, transform: &Transform) -> Self {
        let train = &splits.train;
        DataInfo {
            dataset,
            dir: dir.to_owned(),
            train_len: train.len(),
            test_len: splits.test.len(),
            image_shape: train.shape(),
            classes: train.class_names().to_vec(),
            normalization: train.normalization().clone(),
            bridge: transform.bridge(),
        }
    }
}

impl Recipe {
    /// `cnnc train`'s recipe for `optimizer` when no flag changes it: learning rate 0.01 for SGD
    /// (momentum 0.9) and 0.001 for Adam and AdamW, weight decay 0 (0.01 for AdamW), batches
    /// of 64, seed 0, no augmentation, no schedule, one batch per step, nothing frozen.
    pub fn new(optimizer: OptimizerName) -> Self {
        let sgd = optimizer == OptimizerName::Sgd;
        Recipe {
            optimizer,
            lr: if sgd { 0.01 } else { 1e-3 },
            momentum: if sgd { 0.9 } else { 0.0 },
            weight_decay: if optimizer == OptimizerName::Adamw {
                0.01
            } else {
                0.0
            },
            batch_size: 64,
            seed: 0,
            augment: false,
            schedule: Schedule::None,
            accumulate: 1,
            freeze: Vec::new(),
        }
    }

    /// The optimizer the recipe asks for (`torch.optim.SGD`, `Adam` or `AdamW`).
    pub fn optimizer_config(&self) -> OptimizerConfig {
        match self.optimizer {
            OptimizerName::Sgd => OptimizerConfig::Sgd(SgdConfig {
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                ..SgdConfig::new(self.lr)
            }),
            OptimizerName::Adam => OptimizerConfig::Adam(AdamConfig {
                weight_decay: self.weight_decay,
                ..AdamConfig::adam(self.lr)
            }),
            OptimizerName::Adamw => OptimizerConfig::Adam(AdamConfig {
                weight_decay: self.weight_decay,
                ..AdamConfig::adamw(self.lr)
            }),
        }
    }

    /// The training loader's configuration over `train_len` images: shuffled from the seed
    /// (salted as every run's is), CIFAR augmentation when asked, and batches no larger than the
    /// dataset (a batch size above it makes one batch of all of it).
    pub fn loader_config(&self, train_len: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.batch_size.min(train_len).max(1),
            shuffle: true,
            augment: self.augment.then(Augment::cifar),
            seed: self.seed ^ RUN_SEED_SALT,
        }
    }
}

impl Schedule {
    /// The trainer's schedule (a step size or `t_max` of 0, which no valid recipe holds, reads
    /// as 1).
    pub fn lr_schedule(&self) -> LrSchedule {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        match *self {
            Schedule::None => LrSchedule::Constant,
            Schedule::Step { step_size, gamma } => LrSchedule::Step {
                step_size: nz(step_size),
                gamma,
            },
            Schedule::Cosine { t_max } => LrSchedule::Cosine {
                t_max: nz(t_max),
                eta_min: 0.0,
            },
        }
    }
}

/// What the run trains on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The dataset.
    pub dataset: DatasetKind,
    /// The folder it was read from.
    pub dir: PathBuf,
    /// Training images.
    pub train_len: usize,
    /// Test (validation) images.
    pub test_len: usize,
    /// Shape of the dataset's images.
    pub image_shape: ImageShape,
    /// Class names.
    pub classes: Vec<String>,
    /// Per-channel normalisation.
    pub normalization: Normalization,
    /// How images are adapted to the model input, if they are.
    pub bridge: Option<Bridge>,
}

/// `checkpoint.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Layout version.
    pub format: u32,
    /// cnnc version that wrote it.
    pub cnnc_version: String,
    /// The spec trained, as given on the command line.
    pub spec: PathBuf,
    /// Hash of the spec's architecture.
    pub spec_hash: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Epochs the run was last asked to reach (a resume without `--epochs` aims for it too).
    pub epochs: usize,
    /// Hyper-parameters.
    pub recipe: Recipe,
    /// Training data.
    pub data: DataInfo,
    /// Where the training loader stands.
    pub loader: LoaderState,
    /// Sums of the unfinished epoch.
    pub progress: EpochProgress,
    /// Where each dropout layer's random stream stands (32-bit words from its start), by layer
    /// name; decimal strings, since the positions need more bits than JSON numbers hold. Absent
    /// from checkpoints written before it existed, which resume only without dropout.
    #[serde(default)]
    pub rng_states: BTreeMap<String, String>,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
}

impl RunState {
    /// A new run's state before its first step: `spec` is the spec file trained (as the user
    /// named it) and `spec_hash` its identity ([`super::spec_hash`] for `cnnc train` to resume
    /// it), `loader` the training loader's [`cnnc_data::Loader::state`].
    pub fn new(
        spec: &Path,
        spec_hash: &str,
        epochs: usize,
        recipe: Recipe,
        data: DataInfo,
        loader: LoaderState,
    ) -> Self {
        RunState {
            format: FORMAT,
            cnnc_version: env!("CARGO_PKG_VERSION").to_owned(),
            spec: spec.to_owned(),
            spec_hash: spec_hash.to_owned(),
            step: 0,
            epochs_done: 0,
            epochs,
            recipe,
            data,
            loader,
            progress: EpochProgress::default(),
            rng_states: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// The training loop's part of the state, for [`Trainer::state`](super::super::Trainer).
    pub fn train_state(&self) -> TrainState {
        TrainState {
            step: self.step,
            epochs_done: self.epochs_done,
            progress: self.progress,
            history: self.history.clone(),
        }
    }

    /// Takes where the run stands from a [`Checkpoint`] the trainer hands its observer: the
    /// training loop's state and the loader's. [`super::save`] then writes it.
    pub fn record<M>(&mut self, checkpoint: &Checkpoint<'_, M>) {
        self.step = checkpoint.state.step;
        self.epochs_done = checkpoint.state.epochs_done;
        self.progress = checkpoint.state.progress;
        self.history.clone_from(&checkpoint.state.history);
        self.loader = checkpoint.loader;
    }

    /// The trainer's configuration for this run: [`RunState::epochs`] and the recipe's
    /// learning rate, schedule and accumulation.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            lr: self.recipe.lr,
            schedule: self.recipe.schedule.lr_schedule(),
            accumulate: NonZeroUsize::new(self.recipe.accumulate).unwrap_or(NonZeroUsize::MIN),
            eval_batch: EVAL_BATCH,
        }
    }

    /// The metadata stored in the weights file.
    pub fn weights_meta(&self) -> WeightsMeta {
        WeightsMeta {
            spec_hash: Some(self.spec_hash.clone()),
            classes: Some(self.data.classes.clone()),
            normalization: Some(self.data.normalization.clone()),
            dataset: Some(self.data.dataset),
            unknown_dataset: None,
            data_dir: Some(self.data.dir.clone()),
            image_shape: Some(self.data.image_shape),
            step: Some(self.step),
        }
    }
}

/// A run state holds a few numbers per epoch: anything larger than this is not one.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The bytes of a `checkpoint.json`, refusing a file too large to be one before reading it.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_STATE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is {len} bytes, more than a run state can be ({MAX_STATE_BYTES} bytes)"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The run state in `bytes`, read from `path`: refused ([`CheckpointError::Invalid`]) unless
/// it is a `checkpoint.json` of this format whose fields fit together ([`RunState::problems`]).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<RunState, CheckpointError> {
    let state: RunState = serde_json::from_slice(bytes).map_err(|e| {
        CheckpointError::Invalid(format!(
            "{} is not a cnnc checkpoint state: {e}",
            path.display()
        ))
    })?;
    if state.format != FORMAT {
        return Err(CheckpointError::Invalid(format!(
            "{} has checkpoint format {}, this cnnc reads format {FORMAT}",
            path.display(),
            state.format
        )));
    }
    let problems = state.problems();
    if !problems.is_empty() {
        return Err(CheckpointError::Invalid(format!(
            "{} does not describe a run cnnc could have saved (was it edited by hand?): {}; \
             restore the file from a copy, or start a new run",
            path.display(),
            problems.join("; ")
        )));
    }
    Ok(state)
}

/// `Err` with the rule unless `value` is finite and at least 0: learning rates, momentum, weight
/// decay, sums and times.
pub fn non_negative(value: f64) -> Result<f64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a finite number >= 0, got {value}"))
    }
}

/// `Err` with the rule unless `value` is finite and above 0: a decay factor.
pub fn positive(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a finite number > 0, got {value}"))
    }
}

impl RunState {
    /// What in this state contradicts the rules of its values or the rest of it, each naming the
    /// field (`loader.position`): a state cnnc saved has none.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, text: String| problems.push(format!("`{field}` {text}"));
        let recipe = &self.recipe;
        for (field, value) in [
            ("recipe.lr", recipe.lr),
            ("recipe.momentum", recipe.momentum),
            ("recipe.weight_decay", recipe.weight_decay),
            ("progress.loss_sum", self.progress.loss_sum),
            ("progress.seconds", self.progress.seconds),
        ] {
            if let Err(rule) = non_negative(value) {
                problem(field, rule);
            }
        }
        let at_least_one =
            |value: usize| (value == 0).then(|| "is 0, must be at least 1".to_owned());
        let mut counts = vec![
            ("epochs", at_least_one(self.epochs)),
            ("recipe.batch_size", at_least_one(recipe.batch_size)),
            ("recipe.accumulate", at_least_one(recipe.accumulate)),
            ("data.train_len", at_least_one(self.data.train_len)),
        ];
        match recipe.schedule {
            Schedule::None => {}
            Schedule::Step { step_size, gamma } => {
                counts.push(("recipe.schedule.step_size", at_least_one(step_size)));
                if let Err(rule) = positive(gamma) {
                    problem("recipe.schedule.gamma", rule);
                }
            }
            Schedule::Cosine { t_max } => {
                counts.push(("recipe.schedule.t_max", at_least_one(t_max)))
            }
        }
        for (field, text) in counts {
            if let Some(text) = text {
                problem(field, text);
            }
        }

        let len = self.data.train_len;
        let (loader, progress) = (&self.loader, &self.progress);
        if loader.dataset_len != len {
            problem(
                "loader.dataset_len",
                format!("is {}, but `data.train_len` is {len}", loader.dataset_len),
            );
        }
        if loader.epoch != self.epochs_done as u64 {
            problem(
                "loader.epoch",
                format!(
                    "is {}, but `epochs_done` is {}",
                    loader.epoch, self.epochs_done
                ),
            );
        }
        if self.history.len() != self.epochs_done {
            problem(
                "history",
                format!(
                    "holds {} epochs, but `epochs_done` is {}",
                    self.history.len(),
                    self.epochs_done
                ),
            );
        }
        if recipe.batch_size == 0 || recipe.accumulate == 0 || len == 0 {
            return problems;
        }

        // What the loader has handed out this epoch; the checks below count from it, so a wrong
        // position is reported alone. Every `accumulate` batches are one optimizer step (a run
        // stops only between steps), and batches never hold more than the dataset.
        let position = loader.position;
        let per_batch = recipe.batch_size.min(len);
        let batch = per_batch.saturating_mul(recipe.accumulate);
        let unit = if recipe.accumulate == 1 {
            "batches".to_owned()
        } else {
            format!("steps ({} batches each)", recipe.accumulate)
        };
        if position > len {
            problem(
                "loader.position",
                format!("is {position}, past the end of the {len} training images"),
            );
            return problems;
        }
        if position % batch != 0 && position != len {
            problem(
                "loader.position",
                format!("is {position}, not a whole number of {unit} of {batch}"),
            );
            return problems;
        }
        if progress.seen != position as u64 {
            problem(
                "progress.seen",
                format!(
                    "is {}, but the loader has handed out {position} images of this epoch \
                     (`loader.position`)",
                    progress.seen
                ),
            );
        }
        if progress.correct > progress.seen {
            problem(
                "progress.correct",
                format!(
                    "is {}, more than the {} images seen",
                    progress.correct, progress.seen
                ),
            );
        }
        let per_epoch = len.div_ceil(batch) as u64;
        let expected = (self.epochs_done as u64)
            .checked_mul(per_epoch)
            .and_then(|steps| steps.checked_add(position.div_ceil(batch) as u64));
        if expected != Some(self.step) {
            problem(
                "step",
                format!(
                    "is {}, but {} finished epochs of {per_epoch} {unit} and {} {unit} of the \
                     epoch in progress make {}",
                    self.step,
                    self.epochs_done,
                    position.div_ceil(batch),
                    expected.map_or("more than can be counted".to_owned(), |s| s.to_string())
                ),
            );
        }
        for (i, record) in self.history.iter().enumerate() {
            let expected_step = (i as u64 + 1).checked_mul(per_epoch);
            if record.epoch != i + 1 || Some(record.step) != expected_step {
                problem(
                    &format!("history[{i}]"),
                    format!(
                        "is epoch {} ending at step {}, expected epoch {} ending at step {}",
                        record.epoch,
                        record.step,
                        i + 1,
                        expected_step.unwrap_or(u64::MAX)
                    ),
                );
                break;
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of 100 images in batches of 30 (4 steps an epoch, the last of 10 images), stopped
    /// after one epoch and two batches of the next.
    fn stopped_run() -> RunState {
        let json = serde_json::json!({
            "format": 1, "cnnc_version": "0.1.0", "spec": "t.cnn", "spec_hash": "00",
            "step": 6, "epochs_done": 1, "epochs": 3,
            "recipe": {
                "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
                "batch_size": 30, "seed": 0, "augment": false,
                "schedule": { "kind": "step", "step_size": 1, "gamma": 0.5 }
            },
            "data": {
                "dataset": "sample", "dir": "data", "train_len": 100, "test_len": 10,
                "image_shape": { "channels": 1, "height": 4, "width": 4 },
                "classes": ["a", "b"], "normalization": { "mean": [0.5], "std": [0.25] },
                "bridge": null
            },
            "loader": {
                "seed": 7, "epoch": 1, "position": 60, "dataset_len": 100, "augment_words": 0
            },
            "progress": { "loss_sum": 30.0, "correct": 40, "seen": 60, "seconds": 1.5 },
            "history": [{
                "epoch": 1, "step": 4, "lr": 0.01, "train_loss": 0.7, "train_accuracy": 0.6,
                "val_loss": 0.8, "val_accuracy": 0.5, "seconds": 2.0
            }]
        });
        serde_json::from_value(json).expect("a run state")
    }

    #[test]
    fn a_state_cnnc_saves_has_no_problem() {
        assert_eq!(stopped_run().problems(), Vec::<String>::new());
        // Stopped after the short last batch, before the epoch was closed.
        let mut state = stopped_run();
        (state.loader.position, state.progress.seen, state.step) = (100, 100, 8);
        assert_eq!(state.problems(), Vec::<String>::new());
        // A batch larger than the dataset is one batch of all of it.
        let mut state = stopped_run();
        state.recipe.batch_size = usize::MAX;
        (state.loader.position, state.progress.seen, state.step) = (0, 0, 1);
        (state.progress.correct, state.progress.loss_sum) = (0, 0.0);
        state.history[0].step = 1;
        assert_eq!(state.problems(), Vec::<String>::new());
    }

    #[test]
    fn steps_count_accumulated_batches() {
        // 100 images, batches of 30, two per step: steps of 60 images, 2 an epoch.
        let mut state = stopped_run();
        state.recipe.accumulate = 2;
        state.step = 3;
        state.history[0].step = 2;
        assert_eq!(state.problems(), Vec::<String>::new());
        // A stop between the two batches of a step is not one cnnc makes.
        (state.loader.position, state.progress.seen) = (30, 30);
        (state.progress.correct, state.progress.loss_sum) = (20, 15.0);
        assert_eq!(
            state.problems(),
            ["`loader.position` is 30, not a whole number of steps (2 batches each) of 60"]
        );
        state.recipe.accumulate = 0;
        assert_eq!(
            state.problems(),
            ["`recipe.accumulate` is 0, must be at least 1"]
        );
        // Written only when it is not 1, read as 1 when absent.
        let mut state = stopped_run();
        assert_eq!(state.recipe.accumulate, 1);
        let json = serde_json::to_string(&state.recipe).expect("serialisable");
        assert!(
            !json.contains("accumulate") && !json.contains("freeze"),
            "{json}"
        );
        state.recipe.accumulate = 4;
        state.recipe.freeze = vec!["layer1".to_owned()];
        let json = serde_json::to_string(&state.recipe).expect("serialisable");
        assert!(
            json.contains(r#""accumulate":4,"freeze":["layer1"]"#),
            "{json}"
        );
    }

    #[test]
    fn each_field_that_does_not_fit_is_named() {
        let problems = |edit: fn(&mut RunState)| {
            let mut state = stopped_run();
            edit(&mut state);
            state.problems()
        };
        assert_eq!(
            problems(|s| s.loader.position = 45),
            ["`loader.position` is 45, not a whole number of batches of 30"]
        );
        assert_eq!(
            problems(|s| s.progress.correct = 61),
            ["`progress.correct` is 61, more than the 60 images seen"]
        );
        assert_eq!(
            problems(|s| s.history.clear()),
            ["`history` holds 0 epochs, but `epochs_done` is 1"]
        );
        assert_eq!(
            problems(|s| s.history[0].step = 5),
            ["`history[0]` is epoch 1 ending at step 5, expected epoch 1 ending at step 4"]
        );
        assert_eq!(
            problems(|s| s.loader.epoch = 0),
            ["`loader.epoch` is 0, but `epochs_done` is 1"]
        );
        assert_eq!(
            problems(|s| s.recipe.schedule = Schedule::Cosine { t_max: 0 }),
            ["`recipe.schedule.t_max` is 0, must be at least 1"]
        );
        assert_eq!(
            problems(|s| {
                s.recipe.weight_decay = f64::INFINITY;
                s.epochs = 0;
            }),
            [
                "`recipe.weight_decay` must be a finite number >= 0, got inf",
                "`epochs` is 0, must be at least 1"
            ]
        );
        // Counts that overflow are reported, not wrapped.
        assert_eq!(
            problems(|s| {
                s.epochs_done = usize::MAX;
                s.loader.epoch = u64::MAX;
                s.history.clear();
            })
            .last()
            .map(String::as_str),
            Some(
                "`step` is 6, but 18446744073709551615 finished epochs of 4 batches and 2 \
                 batches of the epoch in progress make more than can be counted"
            )
        );
    }
}
