//! A training run's checkpoint folder: `model.safetensors` (the weights, loadable by PyTorch with
//! `strict=True`, with cnnc's metadata), `optimizer.state` (the optimizer's tensors, safetensors
//! format under another extension so that the folder holds exactly one `*.safetensors`) and
//! `checkpoint.json` (everything else needed to continue bit-identically: recipe, loader and
//! epoch state, dropout random-stream positions, metrics history). Each file records the optimizer
//! step it belongs to.
//!
//! A save commits the three files together, so that a crash at any moment (SIGKILL, power cut,
//! full disk) leaves either the previous checkpoint or the new one, and `model.safetensors` is
//! always a complete weights file. Two parts: [`schema`], the JSON layout of `checkpoint.json` and
//! the checks that a file read back is consistent; [`commit`], the protocol that writes, commits,
//! recovers and locks a folder. This module reads a checkpoint back into a run.

mod commit;
mod schema;

use std::path::Path;

use anyhow::Context;
use cnnc_runtime::Network;
use cnnc_runtime::optim::{Optimizer, OptimizerState};
use cnnc_runtime::weights::{self, TensorData};

pub use commit::{Committing, FolderLock, Recovery, exists, lock, recover, save};
pub use schema::{
    DataInfo, EpochRecord, OptimizerName, Recipe, RunState, Schedule, non_negative, positive,
};

use super::job::refuse;
use super::model::WeightsMeta;

/// The weights file in a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.state";
/// The run state file.
pub const STATE_FILE: &str = "checkpoint.json";
/// The optimizer state's metadata key for the step it belongs to.
const OPTIMIZER_STEP: &str = "step";

/// Reads the run state of the checkpoint in `dir`, after [`recover`]ing the folder (with a notice
/// when it finished or dropped an interrupted save).
pub fn read_state(dir: &Path) -> anyhow::Result<RunState> {
    let recovery = recover(dir)?;
    if recovery != Recovery::Clean {
        eprintln!("notice: {}: {recovery}", dir.display());
    }
    let path = dir.join(STATE_FILE);
    let text = schema::read_file(&path).with_context(|| {
        format!(
            "cannot resume from {}: cannot read {}",
            dir.display(),
            path.display()
        )
    })?;
    schema::parse(&path, &text)
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
        param_steps: Vec::new(),
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
