//! What goes wrong with a checkpoint folder: I/O, another run holding it, files that no save
//! could have written, weights or optimizer state that do not fit the model.

use std::fmt;
use std::path::PathBuf;

use cnnc_runtime::optim::OptimError;
use cnnc_runtime::weights::{LoadError, SaveError};

/// Why a checkpoint could not be written, read or resumed. Every message names the file.
#[derive(Debug)]
pub enum CheckpointError {
    /// Reading, writing, renaming or listing failed; `context` says what was being done to
    /// which path (`cannot write \`.checkpoint.json.pending\``).
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another training run holds the folder ([`super::lock`]).
    InUse {
        /// The folder.
        dir: PathBuf,
        /// The lock file the other run holds.
        lock: PathBuf,
    },
    /// A file holds what no save could have written (damaged, edited by hand, or from another
    /// save than the others), or what does not fit the model: the message says which and how.
    Invalid(String),
    /// The weights file could not be read or does not fit the model.
    Weights(LoadError),
    /// The weights could not be written.
    Save(SaveError),
    /// The optimizer state in `path` does not fit the optimizer or the model.
    Optimizer {
        /// `optimizer.state`.
        path: PathBuf,
        /// Every problem found.
        source: OptimError,
    },
    /// Every file of the new checkpoint was written, and committing them failed: the folder holds
    /// the new checkpoint in full, which [`super::recover`] (run before the folder is read again)
    /// commits.
    Committing(Box<CheckpointError>),
}

impl CheckpointError {
    /// An I/O error with what was being done.
    pub(super) fn io(context: String) -> impl FnOnce(std::io::Error) -> CheckpointError {
        move |source| CheckpointError::Io { context, source }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io { context, .. } => f.write_str(context),
            CheckpointError::InUse { dir, lock } => write!(
                f,
                "{} is in use by another training run (it holds {}); wait for that run to end, \
                 or choose another folder",
                dir.display(),
                lock.display()
            ),
            CheckpointError::Invalid(message) => f.write_str(message),
            CheckpointError::Weights(e) => e.fmt(f),
            CheckpointError::Save(e) => e.fmt(f),
            CheckpointError::Optimizer { path, .. } => {
                write!(f, "cannot restore the optimizer from {}", path.display())
            }
            CheckpointError::Committing(_) => f.write_str(
                "the new checkpoint is written in full; recovering the folder (`recover`, or \
                 resuming it) finishes committing it",
            ),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io { source, .. } => Some(source),
            CheckpointError::Optimizer { source, .. } => Some(source),
            CheckpointError::Committing(inner) => Some(inner.as_ref()),
            CheckpointError::Weights(e) => e.source(),
            CheckpointError::Save(e) => e.source(),
            CheckpointError::InUse { .. } | CheckpointError::Invalid(_) => None,
        }
    }
}

impl From<LoadError> for CheckpointError {
    fn from(e: LoadError) -> Self {
        CheckpointError::Weights(e)
    }
}

impl From<SaveError> for CheckpointError {
    fn from(e: SaveError) -> Self {
        CheckpointError::Save(e)
    }
}
