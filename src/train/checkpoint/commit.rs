//! How a checkpoint is written and recovered: a save writes each file in full as `.NAME.pending`
//! (through a synced temporary file and a rename), then renames the pending files over the
//! committed ones in the fixed order model, optimizer, `checkpoint.json`, each rename made durable
//! before the next. [`recover`], run before the folder is read, finishes a save whose three pending
//! files all exist for one step and otherwise deletes the partial save's files, leaving the
//! previous checkpoint. A run holds its folder ([`lock`]) from before it reads or recovers it
//! until it ends, so that two runs never write, or recover, one folder at once.

use std::fmt;
use std::path::{Path, PathBuf};

use cnnc_runtime::Model;
use cnnc_runtime::fsio::{is_temp_file_of, sync_dir, write_atomic};
use cnnc_runtime::optim::Optimizer;
use cnnc_runtime::weights;

use super::meta::WeightsMeta;
use super::schema::{self, RunState};
use super::{CheckpointError, MODEL_FILE, OPTIMIZER_FILE, OPTIMIZER_STEP, STATE_FILE};

/// The checkpoint's files in the order a save commits them: the run state last, so that a
/// committed `checkpoint.json` always describes committed weights and optimizer state.
const FILES: [&str; 3] = [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE];
/// Other files `cnnc train` writes into the folder (whose temporary files [`recover`] removes).
const OTHER_FILES: [&str; 3] = ["metrics.csv", "metrics.png", "metrics.svg"];

/// The file a training run locks in its folder ([`lock`]).
pub const LOCK_FILE: &str = ".cnnc-train.lock";

/// A training run's hold on its folder, released when dropped or when the process ends, however
/// it ends (an advisory lock on [`LOCK_FILE`], which stays behind, empty).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Takes `dir` for this run, creating the folder if `create`. Refuses
/// ([`CheckpointError::InUse`]) while another run (a `cnnc train`, or a program calling this)
/// holds it: two runs writing one folder would mix their checkpoints, and one's recovery could
/// delete the other's save in progress.
pub fn lock(dir: &Path, create: bool) -> Result<FolderLock, CheckpointError> {
    if create {
        std::fs::create_dir_all(dir).map_err(CheckpointError::io(format!(
            "cannot create {}",
            dir.display()
        )))?;
    }
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(CheckpointError::io(format!(
            "cannot open {}",
            path.display()
        )))?;
    match file.try_lock() {
        Ok(()) => Ok(FolderLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(CheckpointError::InUse {
            dir: dir.to_owned(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(CheckpointError::io(format!(
            "cannot lock {}",
            path.display()
        ))(e)),
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

/// Saves a checkpoint into `dir` (weights, optimizer state and the run state, with the model's
/// dropout stream positions recorded into it), replacing the previous one as a whole: see the
/// module documentation. On an error while writing (a full disk), the new files are removed and
/// the previous checkpoint is left as it was; an error after every file was written is
/// [`CheckpointError::Committing`]. The caller holds the folder ([`lock`]).
pub fn save<M: Model>(
    dir: &Path,
    state: &mut RunState,
    model: &mut M,
    optimizer: &dyn Optimizer,
) -> Result<(), CheckpointError> {
    state.rng_states = model
        .rng_states()
        .into_iter()
        .map(|(name, position)| (name, position.to_string()))
        .collect();
    if let Err(err) = stage(dir, state, model, optimizer) {
        for name in FILES {
            // Best effort: what could not be written matters more than a leftover.
            let _ = std::fs::remove_file(pending(dir, name));
        }
        return Err(err);
    }
    commit(dir).map_err(|e| CheckpointError::Committing(Box::new(e)))
}

/// Writes the three files of a save as pending files, each complete and synced.
fn stage<M: Model>(
    dir: &Path,
    state: &RunState,
    model: &mut M,
    optimizer: &dyn Optimizer,
) -> Result<(), CheckpointError> {
    weights::save(
        model,
        &pending(dir, MODEL_FILE),
        &state.weights_meta().to_map(),
    )?;
    let (tensors, metadata) = super::optimizer_file(optimizer);
    weights::write_tensors(&pending(dir, OPTIMIZER_FILE), &tensors, &metadata)?;
    let path = pending(dir, STATE_FILE);
    // Plain data (numbers, strings, maps with string keys) always encodes.
    let json = serde_json::to_vec_pretty(state).map_err(|e| {
        CheckpointError::io("cannot encode the run state".to_owned())(std::io::Error::other(e))
    })?;
    write_atomic(&path, &json).map_err(CheckpointError::io(format!(
        "cannot write `{}`",
        path.display()
    )))
}

/// Renames the pending files still there over the committed ones, in [`FILES`] order, each
/// rename made durable before the next.
fn commit(dir: &Path) -> Result<(), CheckpointError> {
    for name in FILES {
        let from = pending(dir, name);
        if !from.exists() {
            continue;
        }
        let to = dir.join(name);
        std::fs::rename(&from, &to)
            .and_then(|()| sync_dir(dir))
            .map_err(CheckpointError::io(format!(
                "cannot move `{}` to `{}`",
                from.display(),
                to.display()
            )))?;
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
pub fn recover(dir: &Path) -> Result<Recovery, CheckpointError> {
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
        std::fs::remove_file(&path).map_err(CheckpointError::io(format!(
            "cannot remove `{}`",
            path.display()
        )))?;
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
    let text = schema::read_file(&pending(dir, STATE_FILE)).ok()?;
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
fn temporary_files(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let names: Vec<String> = FILES
        .iter()
        .chain(&OTHER_FILES)
        .map(|name| (*name).to_owned())
        .chain(FILES.iter().map(|name| format!(".{name}.pending")))
        .collect();
    let list = || CheckpointError::io(format!("cannot list `{}`", dir.display()));
    let entries = std::fs::read_dir(dir).map_err(list())?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list())?;
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
