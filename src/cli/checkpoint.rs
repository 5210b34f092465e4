//! A training run's checkpoint folder: `model.safetensors` (the weights, loadable by PyTorch with
//! `strict=True`, with cnnc's metadata), `optimizer.state` (the optimizer's tensors, safetensors
//! format under another extension so that the folder holds exactly one `*.safetensors`) and
//! `checkpoint.json` (everything else needed to continue bit-identically: recipe, loader and
//! epoch state, dropout random-stream positions, metrics history). Each file records the optimizer
//! step it belongs to.
//!
//! A save commits the three files together, so that a crash at any moment (SIGKILL, power cut,
//! full disk) leaves either the previous checkpoint or the new one, and `model.safetensors` is
//! always a complete weights file: each file is first written in full as `.NAME.pending` (through
//! a synced temporary file and a rename), then the pending files are renamed over the committed
//! ones in the fixed order model, optimizer, `checkpoint.json`. [`recover`], run before the folder
//! is read, finishes a save whose three pending files all exist for one step (the renames still
//! to do) and otherwise deletes the partial save's files, leaving the previous checkpoint.
//!
//! A run holds its folder ([`lock`]) from before it reads or recovers it until it ends, so that
//! two runs never write, or recover, one folder at once.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc_runtime::Network;
use cnnc_runtime::data::{Bridge, DatasetKind, ImageShape, LoaderState, Normalization};
use cnnc_runtime::fsio::{is_temp_file_of, sync_dir, write_atomic};
use cnnc_runtime::optim::{Optimizer, OptimizerState};
use cnnc_runtime::weights::{self, TensorData};
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
/// The optimizer state's metadata key for the step it belongs to.
const OPTIMIZER_STEP: &str = "step";
/// The checkpoint's files in the order a save commits them: the run state last, so that a
/// committed `checkpoint.json` always describes committed weights and optimizer state.
const FILES: [&str; 3] = [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE];
/// Other files `cnnc train` writes into the folder (whose temporary files [`recover`] removes).
const OTHER_FILES: [&str; 2] = ["metrics.csv", "metrics.png"];

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

/// The file a training run locks in its folder ([`lock`]).
pub const LOCK_FILE: &str = ".cnnc-train.lock";

/// A training run's hold on its folder, released when dropped or when the process ends, however
/// it ends (an advisory lock on [`LOCK_FILE`], which stays behind, empty).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Takes `dir` for this run, creating the folder if `create`. Refuses while another `cnnc train`
/// holds it: two runs writing one folder would mix their checkpoints, and one's recovery could
/// delete the other's save in progress.
pub fn lock(dir: &Path, create: bool) -> anyhow::Result<FolderLock> {
    if create {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(FolderLock { _file: file }),
        // A usage problem, as a folder that already holds a checkpoint is: exit 2.
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "{} is in use by another `cnnc train` (it holds {}); wait for that run to end, or \
             choose another --out",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Whether `dir` already holds (part of) a checkpoint, committed or completely written by a save
/// that was stopped before committing it.
pub fn exists(dir: &Path) -> bool {
    FILES.iter().any(|f| dir.join(f).exists()) || pending(dir, STATE_FILE).exists()
}

/// Where a save writes `name` before committing it: `.NAME.pending`, hidden and not ending in
/// `.safetensors`, so that the folder still holds exactly one `*.safetensors`.
fn pending(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.pending"))
}

/// Saves a checkpoint into `dir` (weights, optimizer state and the run state, with the network's
/// dropout stream positions recorded into it), replacing the previous one as a whole: see the
/// module documentation. On an error while writing (a full disk), the new files are removed and
/// the previous checkpoint is left as it was.
pub fn save(
    dir: &Path,
    state: &mut RunState,
    net: &mut Network,
    optimizer: &dyn Optimizer,
) -> anyhow::Result<()> {
    state.rng_states = net
        .rng_states()
        .into_iter()
        .map(|(name, position)| (name, position.to_string()))
        .collect();
    if let Err(err) = stage(dir, state, net, optimizer) {
        for name in FILES {
            // Best effort: what could not be written matters more than a leftover.
            let _ = std::fs::remove_file(pending(dir, name));
        }
        return Err(err);
    }
    commit(dir).context(Committing)
}

/// The context of a [`save`] that failed after every file of the new checkpoint was written:
/// the folder then holds the new checkpoint in full, which [`recover`] commits.
#[derive(Debug)]
pub struct Committing;

impl fmt::Display for Committing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the new checkpoint is written in full; `--resume` finishes committing it")
    }
}

/// Writes the three files of a save as pending files, each complete and synced.
fn stage(
    dir: &Path,
    state: &RunState,
    net: &mut Network,
    optimizer: &dyn Optimizer,
) -> anyhow::Result<()> {
    weights::save(
        net,
        &pending(dir, MODEL_FILE),
        &state.weights_meta().to_map(),
    )?;
    let optim = optimizer.export_state();
    let tensors: Vec<(String, TensorData)> = optim
        .tensors
        .into_iter()
        .map(|(name, t)| (name, TensorData::F32(t)))
        .collect();
    let metadata = BTreeMap::from([
        ("optimizer".to_owned(), optim.optimizer),
        (OPTIMIZER_STEP.to_owned(), optim.step.to_string()),
    ]);
    weights::write_tensors(&pending(dir, OPTIMIZER_FILE), &tensors, &metadata)?;
    let json = serde_json::to_vec_pretty(state).context("cannot encode the run state")?;
    let path = pending(dir, STATE_FILE);
    write_atomic(&path, &json).with_context(|| format!("cannot write `{}`", path.display()))
}

/// Renames the pending files still there over the committed ones, in [`FILES`] order, each
/// rename made durable before the next.
fn commit(dir: &Path) -> anyhow::Result<()> {
    for name in FILES {
        let from = pending(dir, name);
        if !from.exists() {
            continue;
        }
        let to = dir.join(name);
        std::fs::rename(&from, &to)
            .and_then(|()| sync_dir(dir))
            .with_context(|| format!("cannot move `{}` to `{}`", from.display(), to.display()))?;
    }
    Ok(())
}

/// What [`recover`] did to a checkpoint folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: no save had been interrupted.
    Clean,
    /// A save stopped while committing had written all its files: the commit was finished, and
    /// the checkpoint is the one of this step.
    Completed {
        /// The step of the finished save.
        step: u64,
    },
    /// A save stopped before writing all its files: they were deleted, and the checkpoint is the
    /// previous one (if there was one).
    Discarded,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Clean => write!(f, "no interrupted save"),
            Recovery::Completed { step } => write!(
                f,
                "the run was stopped while saving the checkpoint of step {step}; that save was \
                 complete and is now committed"
            ),
            Recovery::Discarded => write!(
                f,
                "the run was stopped while writing a checkpoint; its partial files were deleted \
                 and the previous checkpoint is used"
            ),
        }
    }
}

/// Brings `dir` back to one consistent checkpoint after a crash: commits a save whose pending
/// files all exist and belong to one step, otherwise deletes pending files; also deletes the
/// temporary files of interrupted writes. Idempotent; a missing folder is [`Recovery::Clean`].
pub fn recover(dir: &Path) -> anyhow::Result<Recovery> {
    if !dir.is_dir() {
        return Ok(Recovery::Clean);
    }
    let mut recovery = match complete_save(dir) {
        Some(step) => {
            commit(dir)?;
            Recovery::Completed { step }
        }
        None => Recovery::Clean,
    };
    let mut leftovers: Vec<PathBuf> = FILES
        .iter()
        .map(|name| pending(dir, name))
        .filter(|path| path.exists())
        .collect();
    leftovers.extend(temporary_files(dir)?);
    for path in leftovers {
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove `{}`", path.display()))?;
        if recovery == Recovery::Clean {
            recovery = Recovery::Discarded;
        }
    }
    Ok(recovery)
}

/// The step of the interrupted save in `dir` if every file of it is there: a pending
/// `checkpoint.json` (written last), and the weights and optimizer state of its step, each either
/// still pending or already committed.
fn complete_save(dir: &Path) -> Option<u64> {
    let text = read_state_file(&pending(dir, STATE_FILE)).ok()?;
    let step = serde_json::from_slice::<RunState>(&text).ok()?.step;
    let metadata = |name: &str| {
        let path = Some(pending(dir, name))
            .filter(|p| p.exists())
            .unwrap_or_else(|| dir.join(name));
        Some(weights::read_tensors(&path).ok()?.metadata)
    };
    let model = WeightsMeta::from_map(&metadata(MODEL_FILE)?).step?;
    let optimizer = metadata(OPTIMIZER_FILE)?
        .get(OPTIMIZER_STEP)?
        .parse::<u64>()
        .ok()?;
    (model == step && optimizer == step).then_some(step)
}

/// The temporary files of writes into `dir` that never finished, for the files `cnnc train`
/// writes there.
fn temporary_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let names: Vec<String> = FILES
        .iter()
        .chain(&OTHER_FILES)
        .map(|name| (*name).to_owned())
        .chain(FILES.iter().map(|name| format!(".{name}.pending")))
        .collect();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list `{}`", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list `{}`", dir.display()))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let ours = names.iter().any(|name| is_temp_file_of(file_name, name));
        if ours {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Reads the run state of the checkpoint in `dir`, after [`recover`]ing the folder (with a notice
/// when it finished or dropped an interrupted save).
pub fn read_state(dir: &Path) -> anyhow::Result<RunState> {
    let recovery = recover(dir)?;
    if recovery != Recovery::Clean {
        eprintln!("notice: {}: {recovery}", dir.display());
    }
    let path = dir.join(STATE_FILE);
    let text = read_state_file(&path).with_context(|| {
        format!(
            "cannot resume from {}: cannot read {}",
            dir.display(),
            path.display()
        )
    })?;
    let state: RunState = serde_json::from_slice(&text).map_err(|e| {
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

/// A run state holds a few numbers per epoch: anything larger than this is not one.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The bytes of a `checkpoint.json`, refusing a file too large to be one before reading it.
fn read_state_file(path: &Path) -> std::io::Result<Vec<u8>> {
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
        return Err(refuse(format!(
            "{} is from {found} but {} is from step {}: the files come from different saves \
             (was one copied in by hand?); the checkpoint cannot be resumed",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_removes_only_the_temporary_files_of_its_own_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = [
            ".model.safetensors.123.0.tmp",
            "..checkpoint.json.pending.77.4.tmp",
            ".metrics.png.9.12.tmp",
        ];
        let others = [
            ".gitignore",
            ".other.1.0.tmp",
            "notes.tmp",
            ".model.safetensors",
            "model.safetensors.1.0.tmp",
        ];
        for name in ours.iter().chain(&others) {
            std::fs::write(dir.path().join(name), b"x").expect("a file");
        }
        let mut found: Vec<String> = temporary_files(dir.path())
            .expect("a listing")
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
            .collect();
        found.sort();
        let mut expected = ours.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(found, expected);
        assert_eq!(recover(dir.path()).expect("recovery"), Recovery::Discarded);
        for name in others {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        assert_eq!(recover(dir.path()).expect("recovery"), Recovery::Clean);
    }
}
