//! A training run's checkpoint folder: `model.safetensors` (the weights, loadable by PyTorch with
//! `strict=True`, with cnnc's metadata), `optimizer.state` (the optimizer's tensors, safetensors
//! format under another extension so that the folder holds exactly one `*.safetensors`) and
//! `checkpoint.json` (everything else needed to continue bit-identically: recipe, loader and
//! epoch state, dropout random-stream positions, metrics history). Every file is written atomically; each records the optimizer
//! step it belongs to, so files from two different saves are never mixed up on resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc_runtime::Network;
use cnnc_runtime::data::{Bridge, DatasetKind, ImageShape, LoaderState, Normalization};
use cnnc_runtime::optim::{Optimizer, OptimizerState};
use cnnc_runtime::weights::{self, TensorData, write_atomic};
use serde::{Deserialize, Serialize};

use super::job::refuse;
use super::model::WeightsMeta;

/// The weights file in a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.state";
/// The run state file.
pub const STATE_FILE: &str = "checkpoint.json";
/// Version of `checkpoint.json`'s layout.
const FORMAT: u32 = 1;

/// The optimizers `--optimizer` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// `torch.optim.SGD` (with `--momentum`).
    Sgd,
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
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

/// The hyper-parameters a resumed run must share with the run it continues.
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

/// One finished epoch, a row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps taken by its end.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (fraction).
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation accuracy (fraction).
    pub val_accuracy: f64,
    /// Seconds spent (training and validation).
    pub seconds: f64,
}

/// Running sums of the epoch in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// A new run's state before its first step.
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

    /// The metadata stored in the weights file.
    pub fn weights_meta(&self) -> WeightsMeta {
        WeightsMeta {
            spec_hash: Some(self.spec_hash.clone()),
            classes: Some(self.data.classes.clone()),
            normalization: Some(self.data.normalization.clone()),
            dataset: Some(self.data.dataset),
            data_dir: Some(self.data.dir.clone()),
            image_shape: Some(self.data.image_shape),
            step: Some(self.step),
        }
    }
}

/// Whether `dir` already holds (part of) a checkpoint.
pub fn exists(dir: &Path) -> bool {
    [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Saves a checkpoint into `dir`: weights, then optimizer state, then the run state (with the
/// network's dropout stream positions recorded into it), each atomically.
pub fn save(
    dir: &Path,
    state: &mut RunState,
    net: &mut Network,
    optimizer: &dyn Optimizer,
) -> anyhow::Result<()> {
    weights::save(net, &dir.join(MODEL_FILE), &state.weights_meta().to_map())?;
    let optim = optimizer.export_state();
    let tensors: Vec<(String, TensorData)> = optim
        .tensors
        .into_iter()
        .map(|(name, t)| (name, TensorData::F32(t)))
        .collect();
    let metadata = BTreeMap::from([
        ("optimizer".to_owned(), optim.optimizer),
        ("step".to_owned(), optim.step.to_string()),
    ]);
    weights::write_tensors(&dir.join(OPTIMIZER_FILE), &tensors, &metadata)?;
    state.rng_states = net
        .rng_states()
        .into_iter()
        .map(|(name, position)| (name, position.to_string()))
        .collect();
    let json = serde_json::to_vec_pretty(state).context("cannot encode the run state")?;
    let path = dir.join(STATE_FILE);
    write_atomic(&path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads the run state of the checkpoint in `dir`.
pub fn read_state(dir: &Path) -> anyhow::Result<RunState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot resume from {}: cannot read {}",
            dir.display(),
            path.display()
        )
    })?;
    let state: RunState = serde_json::from_str(&text).map_err(|e| {
        refuse(format!(
            "{} is not a cnnc checkpoint state: {e}",
            path.display()
        ))
    })?;
    if state.format != FORMAT {
        return Err(refuse(format!(
            "{} has checkpoint format {}, this cnnc reads format {FORMAT}",
            path.display(),
            state.format
        )));
    }
    Ok(state)
}

/// Loads the weights and optimizer state of the checkpoint in `dir` into `net` and `optimizer`,
/// checking both belong to the save `state` describes.
pub fn restore(
    dir: &Path,
    state: &RunState,
    net: &mut Network,
    optimizer: &mut dyn Optimizer,
) -> anyhow::Result<()> {
    let model_path = dir.join(MODEL_FILE);
    let meta = WeightsMeta::from_map(&weights::load(net, &model_path)?);
    let optim_path = dir.join(OPTIMIZER_FILE);
    let file = weights::read_tensors(&optim_path)?;
    let mut tensors = Vec::with_capacity(file.tensors.len());
    for (name, tensor) in file.tensors {
        match tensor {
            TensorData::F32(t) => tensors.push((name, t)),
            other => {
                return Err(refuse(format!(
                    "{}: tensor `{name}` is {}, optimizer state is F32",
                    optim_path.display(),
                    other.dtype()
                )));
            }
        }
    }
    let optim_step = file
        .metadata
        .get("step")
        .and_then(|s| s.parse::<u64>().ok());
    let mismatched = [
        (model_path.as_path(), meta.step),
        (optim_path.as_path(), optim_step),
    ]
    .into_iter()
    .find(|(_, step)| *step != Some(state.step));
    if let Some((path, step)) = mismatched {
        let found = step.map_or("no step".to_owned(), |s| format!("step {s}"));
        return Err(refuse(format!(
            "{} is from {found} but {} is from step {}: the run was stopped while saving; \
             the checkpoint cannot be resumed",
            path.display(),
            dir.join(STATE_FILE).display(),
            state.step
        )));
    }
    let optim_state = OptimizerState {
        optimizer: file.metadata.get("optimizer").cloned().unwrap_or_default(),
        step: state.step,
        // The file orders tensors by name; the optimizer matches them by name.
        tensors,
    };
    optimizer
        .import_state(net, &optim_state)
        .with_context(|| format!("cannot restore the optimizer from {}", optim_path.display()))?;
    let state_path = dir.join(STATE_FILE);
    let mut positions = Vec::with_capacity(state.rng_states.len());
    for (name, position) in &state.rng_states {
        let position = position.parse::<u128>().map_err(|_| {
            refuse(format!(
                "{}: the random-stream position of layer `{name}` is `{position}`, not a \
                 non-negative integer",
                state_path.display()
            ))
        })?;
        positions.push((name.clone(), position));
    }
    net.restore_rng_states(&positions)
        .map_err(|e| refuse(format!("cannot resume from {}: {e}", state_path.display())))?;
    Ok(())
}
