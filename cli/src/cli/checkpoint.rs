//! A training run's checkpoint folder as `cnnc train` reports it. The format, the commit protocol,
//! the recovery of an interrupted save and the folder lock are the library's
//! ([`cnnc::train::checkpoint`]); this module words their errors for the command line (the
//! flags to use, and exit 1 for a checkpoint that cannot be resumed, 2 for I/O and usage) and
//! prints the notices the library returns.

use std::fmt;
use std::path::Path;

use cnnc::runtime::Network;
use cnnc::runtime::optim::Optimizer;
use cnnc::train::checkpoint::{self as lib, CheckpointError};

pub use cnnc::train::EpochRecord;
pub use lib::{
    DataInfo, FolderLock, MODEL_FILE, OptimizerName, Recipe, Recovery, RunState, Schedule, exists,
    non_negative, positive,
};

use super::job::refuse;

/// The library's error as the command line reports it: the same messages, in the chain of
/// causes [`super::job::status`] reads the exit status from.
fn cli_error(err: CheckpointError) -> anyhow::Error {
    match err {
        CheckpointError::Io { context, source } => anyhow::Error::new(source).context(context),
        // A usage problem, as a folder that already holds a checkpoint is: exit 2.
        CheckpointError::InUse { dir, lock } => anyhow::anyhow!(
            "{} is in use by another `cnnc train` (it holds {}); wait for that run to end, or \
             choose another --out",
            dir.display(),
            lock.display()
        ),
        CheckpointError::Invalid(message) => refuse(message),
        CheckpointError::Weights(e) => e.into(),
        CheckpointError::Save(e) => e.into(),
        CheckpointError::Optimizer { path, source } => anyhow::Error::new(source).context(format!(
            "cannot restore the optimizer from {}",
            path.display()
        )),
        CheckpointError::Committing(inner) => cli_error(*inner).context(Committing),
    }
}

/// The context of a [`save`] that failed after every file of the new checkpoint was written:
/// the folder then holds the new checkpoint in full, which `--resume` commits.
#[derive(Debug)]
pub struct Committing;

impl fmt::Display for Committing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the new checkpoint is written in full; `--resume` finishes committing it")
    }
}

/// [`lib::lock`]: takes `dir` for this run, creating the folder if `create`.
pub fn lock(dir: &Path, create: bool) -> anyhow::Result<FolderLock> {
    lib::lock(dir, create).map_err(cli_error)
}

/// [`lib::recover`]: brings `dir` back to one consistent checkpoint after a crash.
pub fn recover(dir: &Path) -> anyhow::Result<Recovery> {
    lib::recover(dir).map_err(cli_error)
}

/// Reads the run state of the checkpoint in `dir`, after recovering the folder (with a notice
/// when it finished or dropped an interrupted save).
pub fn read_state(dir: &Path) -> anyhow::Result<RunState> {
    let (state, recovery) = lib::read_state(dir).map_err(cli_error)?;
    if recovery != Recovery::Clean {
        eprintln!("notice: {}: {recovery}", dir.display());
    }
    Ok(state)
}

/// [`lib::restore`]: the weights and optimizer state of the checkpoint in `dir` into `net` and
/// `optimizer`, and the dropout streams' positions.
pub fn restore(
    dir: &Path,
    state: &RunState,
    net: &mut Network,
    optimizer: &mut dyn Optimizer,
) -> anyhow::Result<()> {
    lib::restore(dir, state, net, optimizer).map_err(cli_error)?;
    Ok(())
}

/// [`lib::save`]: a checkpoint into `dir`, replacing the previous one as a whole.
pub fn save(
    dir: &Path,
    state: &mut RunState,
    net: &mut Network,
    optimizer: &dyn Optimizer,
) -> anyhow::Result<()> {
    lib::save(dir, state, net, optimizer).map_err(cli_error)
}
