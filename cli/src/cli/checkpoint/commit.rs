//! How a checkpoint is written and recovered: a save writes each file in full as `.NAME.pending`
//! (through a synced temporary file and a rename), then renames the pending files over the
//! committed ones in the fixed order model, optimizer, `checkpoint.json`, each rename made durable
//! before the next. [`recover`], run before the folder is read, finishes a save whose three pending
//! files all exist for one step and otherwise deletes the partial save's files, leaving the
//! previous checkpoint. A run holds its folder ([`lock`]) from before it reads or recovers it
//! until it ends, so that two runs never write, or recover, one folder at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc_runtime::Network;
use cnnc_runtime::fsio::{is_temp_file_of, sync_dir, write_atomic};
use cnnc_runtime::optim::Optimizer;
use cnnc_runtime::weights::{self, TensorData};

use super::super::model::WeightsMeta;
use super::schema::{self, RunState};
use super::{MODEL_FILE, OPTIMIZER_FILE, OPTIMIZER_STEP, STATE_FILE};

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
