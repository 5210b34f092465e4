//! A training run's checkpoint folder, the one `cnnc train` writes and `cnnc train --resume`
//! continues: `model.safetensors` (the weights, loadable by PyTorch with `strict=True`, with
//! cnnc's metadata), `optimizer.state` (the optimizer's tensors, safetensors format under another
//! extension so that the folder holds exactly one `*.safetensors`) and `checkpoint.json` (everything
//! else needed to continue bit-identically: recipe, loader and epoch state, dropout random-stream
//! positions, metrics history). Each file records the optimizer step it belongs to.
//!
//! A save commits the three files together, so that a crash at any moment (SIGKILL, power cut,
//! full disk) leaves either the previous checkpoint or the new one, and `model.safetensors` is
//! always a complete weights file: [`save`] writes, [`recover`] (which [`read_state`] runs
//! first) finishes or drops an interrupted save, [`lock`] keeps two runs out of one folder.
//! The run state's JSON layout and its consistency checks are [`RunState`]'s.
//!
//! A program trains into a folder through a [`Saver`], the [`Observer`] that saves each
//! checkpoint the [`Trainer`](super::Trainer) hands it, and continues one with [`resume`]:
//!
//! ```
//! use std::path::Path;
//! use cnnc::data::{DatasetKind, ImageShape, Loader, SAMPLE_DIR, Transform, fashion_mnist_sample};
//! use cnnc::train::checkpoint::{self, DataInfo, OptimizerName, Recipe, RunState, Saver, Schedule};
//! use cnnc::train::{Outcome, Trainer};
//!
//! cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
//!
//! let splits = fashion_mnist_sample(Path::new(SAMPLE_DIR))?;
//! let train = &splits.train;
//! let transform = Transform::new(train.shape(), train.normalization(), ImageShape::new(3, 32, 32))?;
//! let recipe = Recipe {
//!     optimizer: OptimizerName::Adam, lr: 1e-3, momentum: 0.0, weight_decay: 0.0,
//!     batch_size: 100, seed: 0, augment: false, schedule: Schedule::None, accumulate: 1,
//!     freeze: Vec::new(),
//! };
//! let data = DataInfo::new(DatasetKind::Sample, Path::new(SAMPLE_DIR), &splits, &transform);
//! let loader = Loader::new(train, transform.clone(), recipe.loader_config(train.len()))?;
//! // A spec hash from `checkpoint::spec_hash` lets `cnnc train --resume` continue the run.
//! let state = RunState::new(Path::new("custom_cnn.yaml"), "0", 1, recipe, data, loader.state());
//!
//! // Train one epoch into the folder.
//! let dir = tempfile::tempdir()?;
//! let (config, optimizer) = (state.train_config(), state.recipe.optimizer_config().build()?);
//! let validation = Some((&splits.test, transform.clone()));
//! let model = CustomCnn::new(state.recipe.seed);
//! let mut trainer = Trainer::new(model, optimizer, loader, validation, config);
//! let mut saver = Saver::new(dir.path(), state)?;
//! assert_eq!(trainer.run(&mut saver)?, Outcome::Finished);
//! drop(saver); // lets the folder go
//!
//! // Continue it for a second epoch: weights, optimizer state, loader and history come back.
//! let mut saver = Saver::open(dir.path())?;
//! saver.state.epochs = 2;
//! let state = &saver.state;
//! let (mut model, mut optimizer) = (CustomCnn::new(0), state.recipe.optimizer_config().build()?);
//! let mut loader = Loader::new(train, transform.clone(), state.recipe.loader_config(train.len()))?;
//! checkpoint::resume(dir.path(), state, &mut model, optimizer.as_mut(), &mut loader)?;
//! let validation = Some((&splits.test, transform));
//! let mut trainer = Trainer::new(model, optimizer, loader, validation, state.train_config());
//! trainer.state = state.train_state();
//! trainer.run(&mut saver)?;
//! assert_eq!(saver.state.history.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod commit;
mod error;
mod meta;
mod schema;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cnnc_data::Loader;
use cnnc_runtime::Model;
use cnnc_runtime::fsio::write_atomic;
use cnnc_runtime::optim::{Optimizer, OptimizerState};
use cnnc_runtime::weights::{self, TensorData};

pub use commit::{FolderLock, LOCK_FILE, Recovery, exists, lock, recover, save};
pub use error::CheckpointError;
pub use meta::{WeightsMeta, spec_hash};
pub use schema::{
    DataInfo, FORMAT, OptimizerName, Recipe, RunState, Schedule, non_negative, parse, positive,
    read_file,
};

use super::observer::{Checkpoint, EpochRecord, Observer};

/// The weights file in a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.state";
/// The run state file.
pub const STATE_FILE: &str = "checkpoint.json";
/// One row per finished epoch, beside the checkpoint ([`metrics_csv`]).
pub const METRICS_FILE: &str = "metrics.csv";
/// The optimizer state's metadata key for the step it belongs to.
const OPTIMIZER_STEP: &str = "step";
/// The optimizer state's metadata key for Adam's per-parameter steps
/// ([`OptimizerState::param_steps`]): a JSON list of `[name, step]` pairs, absent for SGD and
/// from checkpoints written before them (every parameter is then at the optimizer's step).
const PARAM_STEPS: &str = "param_steps";

/// Reads the run state of the checkpoint in `dir`, after [`recover`]ing the folder (the
/// [`Recovery`] says whether it finished or dropped an interrupted save). The caller holds the
/// folder ([`lock`]) from before this call.
pub fn read_state(dir: &Path) -> Result<(RunState, Recovery), CheckpointError> {
    let recovery = recover(dir)?;
    let path = dir.join(STATE_FILE);
    let text = read_file(&path).map_err(CheckpointError::io(format!(
        "cannot resume from {}: cannot read {}",
        dir.display(),
        path.display()
    )))?;
    Ok((parse(&path, &text)?, recovery))
}

/// Loads the weights and optimizer state of the checkpoint in `dir` into `model` and
/// `optimizer`, checking both belong to the save `state` describes, and moves the model's
/// dropout streams to where the save left them. Returns the weights file's metadata.
pub fn restore<M: Model>(
    dir: &Path,
    state: &RunState,
    model: &mut M,
    optimizer: &mut dyn Optimizer,
) -> Result<WeightsMeta, CheckpointError> {
    let model_path = dir.join(MODEL_FILE);
    let meta = WeightsMeta::from_map(&weights::load(model, &model_path)?);
    let optim_path = dir.join(OPTIMIZER_FILE);
    let file = weights::read_tensors(&optim_path)?;
    let mut tensors = Vec::with_capacity(file.tensors.len());
    for (name, tensor) in file.tensors {
        match tensor {
            TensorData::F32(t) => tensors.push((name, t)),
            other => {
                return Err(CheckpointError::Invalid(format!(
                    "{}: tensor `{name}` is {}, optimizer state is F32",
                    optim_path.display(),
                    other.dtype()
                )));
            }
        }
    }
    let optim_step = file
        .metadata
        .get(OPTIMIZER_STEP)
        .and_then(|s| s.parse::<u64>().ok());
    let mismatched = [
        (model_path.as_path(), meta.step),
        (optim_path.as_path(), optim_step),
    ]
    .into_iter()
    .find(|(_, step)| *step != Some(state.step));
    if let Some((path, step)) = mismatched {
        let found = step.map_or("no step".to_owned(), |s| format!("step {s}"));
        return Err(CheckpointError::Invalid(format!(
            "{} is from {found} but {} is from step {}: the files come from different saves \
             (was one copied in by hand?); the checkpoint cannot be resumed",
            path.display(),
            dir.join(STATE_FILE).display(),
            state.step
        )));
    }
    let param_steps = match file.metadata.get(PARAM_STEPS) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CheckpointError::Invalid(format!(
                "{}: the per-parameter steps (`{PARAM_STEPS}`) are not a list of [name, step] \
                 pairs: {e}",
                optim_path.display()
            ))
        })?,
    };
    let optim_state = OptimizerState {
        optimizer: file.metadata.get("optimizer").cloned().unwrap_or_default(),
        step: state.step,
        param_steps,
        // The file orders tensors by name; the optimizer matches them by name.
        tensors,
    };
    optimizer
        .import_state(model, &optim_state)
        .map_err(|source| CheckpointError::Optimizer {
            path: optim_path,
            source,
        })?;
    let state_path = dir.join(STATE_FILE);
    let mut positions = Vec::with_capacity(state.rng_states.len());
    for (name, position) in &state.rng_states {
        let position = position.parse::<u128>().map_err(|_| {
            CheckpointError::Invalid(format!(
                "{}: the random-stream position of layer `{name}` is `{position}`, not a \
                 non-negative integer",
                state_path.display()
            ))
        })?;
        positions.push((name.clone(), position));
    }
    model.restore_rng_states(&positions).map_err(|e| {
        CheckpointError::Invalid(format!("cannot resume from {}: {e}", state_path.display()))
    })?;
    Ok(meta)
}

/// [`restore`], then the training loader moved to where the save left it: everything but the
/// [`Trainer`](super::Trainer)'s own state ([`RunState::train_state`]) for a resumed run.
pub fn resume<M: Model>(
    dir: &Path,
    state: &RunState,
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    loader: &mut Loader<'_>,
) -> Result<WeightsMeta, CheckpointError> {
    let meta = restore(dir, state, model, optimizer)?;
    loader
        .restore(&state.loader)
        .map_err(|e| CheckpointError::Invalid(format!("cannot resume {}: {e}", dir.display())))?;
    Ok(meta)
}

/// The tensors and metadata of `optimizer.state`.
fn optimizer_file(
    optimizer: &dyn Optimizer,
) -> (Vec<(String, TensorData)>, BTreeMap<String, String>) {
    let optim = optimizer.export_state();
    let tensors = optim
        .tensors
        .into_iter()
        .map(|(name, t)| (name, TensorData::F32(t)))
        .collect();
    let mut metadata = BTreeMap::from([
        ("optimizer".to_owned(), optim.optimizer),
        (OPTIMIZER_STEP.to_owned(), optim.step.to_string()),
    ]);
    if !optim.param_steps.is_empty() {
        // Names and numbers always encode.
        let steps = serde_json::to_string(&optim.param_steps).unwrap_or_default();
        metadata.insert(PARAM_STEPS.to_owned(), steps);
    }
    (tensors, metadata)
}

/// `metrics.csv` of a run whose finished epochs are `history`: a header, then one row per epoch
/// (`epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds`), as `cnnc train`
/// writes it.
pub fn metrics_csv(history: &[EpochRecord]) -> String {
    let mut csv =
        String::from("epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n");
    for r in history {
        // Writing to a String cannot fail.
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.3}",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            r.train_accuracy,
            r.val_loss,
            r.val_accuracy,
            r.seconds
        );
    }
    csv
}

/// The [`Observer`] that keeps a run's checkpoint folder: it holds the folder ([`lock`], after
/// [`recover`]ing it) while it lives, [`save`]s every checkpoint the trainer hands it and, after
/// each epoch's, rewrites [`METRICS_FILE`], as `cnnc train` does (without its progress bars and
/// charts).
#[derive(Debug)]
pub struct Saver {
    /// The folder.
    pub dir: PathBuf,
    /// The run's state, up to date as of the last checkpoint.
    pub state: RunState,
    /// What recovering the folder did when the saver took it.
    pub recovery: Recovery,
    _lock: FolderLock,
}

impl Saver {
    /// Takes `dir` (creating it) for the run `state` describes: a new run's
    /// ([`RunState::new`]) or the one [`read_state`] read from it. Refuses a folder another run
    /// holds.
    pub fn new(dir: &Path, state: RunState) -> Result<Saver, CheckpointError> {
        let lock = lock(dir, true)?;
        let recovery = recover(dir)?;
        Ok(Saver {
            dir: dir.to_owned(),
            state,
            recovery,
            _lock: lock,
        })
    }
}

impl Saver {
    /// Takes the checkpoint folder `dir` to continue its run: holds it, recovers it and reads
    /// its run state ([`read_state`]). [`resume`] then restores the model, optimizer and loader.
    pub fn open(dir: &Path) -> Result<Saver, CheckpointError> {
        if !dir.is_dir() {
            let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder");
            let context = format!("cannot resume from {}", dir.display());
            return Err(CheckpointError::io(context)(missing));
        }
        let lock = lock(dir, false)?;
        let (state, recovery) = read_state(dir)?;
        Ok(Saver {
            dir: dir.to_owned(),
            state,
            recovery,
            _lock: lock,
        })
    }
}

impl<M: Model> Observer<M> for Saver {
    type Error = CheckpointError;

    fn checkpoint(&mut self, checkpoint: Checkpoint<'_, M>) -> Result<(), CheckpointError> {
        self.state.record(&checkpoint);
        let (model, optimizer) = (checkpoint.model, checkpoint.optimizer);
        save(&self.dir, &mut self.state, model, optimizer)?;
        if checkpoint.mid_epoch {
            return Ok(());
        }
        let path = self.dir.join(METRICS_FILE);
        let csv = metrics_csv(&self.state.history);
        write_atomic(&path, csv.as_bytes()).map_err(CheckpointError::io(format!(
            "cannot write `{}`",
            path.display()
        )))
    }
}
