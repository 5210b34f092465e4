//! `cnnc train`: trains a spec's network on a dataset with progress, validation after every
//! epoch, `metrics.csv`, a chart (`metrics.png`, `metrics.svg`) and an atomic checkpoint after
//! every epoch (and on Ctrl-C or SIGTERM); `--resume` continues a checkpoint bit-identically to an
//! uninterrupted run. A step that goes NaN or infinite stops the run before the optimizer writes
//! it into the weights, naming the layer where it started; the last checkpoint stays.
//!
//! This module turns flags and a checkpoint into the library's [`Trainer`] (the loop) and a
//! [`Run`] (what the command shows and writes, in [`trainer`]) and reports how it ended.

mod divergence;
mod interrupt;
mod metrics;
mod recipe;
mod trainer;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc::data::{DatasetKind, Loader};
use cnnc::train::{EVAL_BATCH, Outcome, TrainConfig, Trainer};

use super::checkpoint::{self, DataInfo, FolderLock, MODEL_FILE, OptimizerName, RunState};
use super::dataset::{self, DataArgs};
use super::job::{self, refuse};
use super::model::Spec;
use interrupt::{Interrupt, Signal};
use trainer::{Run, describe_failure};

/// Arguments of `cnnc train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs to train, counting those of a resumed run [default: 5, or the resumed run's].
    #[arg(long)]
    pub epochs: Option<NonZeroUsize>,
    /// Images per training batch [default: 64].
    #[arg(long)]
    pub batch_size: Option<NonZeroUsize>,
    /// Optimizer [default: sgd].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerFlag>,
    /// Learning rate [default: 0.01 for sgd, 0.001 for adam and adamw].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_flag)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_flag)]
    pub momentum: Option<f64>,
    /// Weight decay [default: 0, 0.01 for adamw].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_flag)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule, per epoch [default: none].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// `--schedule step`: epochs between decays [default: a third of --epochs].
    #[arg(long)]
    pub step_size: Option<NonZeroUsize>,
    /// `--schedule step`: decay factor [default: 0.1].
    #[arg(long, allow_negative_numbers = true, value_parser = positive_flag)]
    pub gamma: Option<f64>,
    /// Seed of the initialisation, shuffling and augmentation [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Standard CIFAR augmentation: random crop with 4-pixel padding, horizontal flip.
    #[arg(long)]
    pub augment: bool,
    /// Gradient accumulation: sum the gradients of N batches before each optimizer step (each
    /// batch's mean loss weighted by its share of the step's images) [default: 1].
    #[arg(long, value_name = "N")]
    pub accumulate: Option<NonZeroUsize>,
    /// Keep the parameters PATTERN names as they are (requires_grad = False): a name, a module
    /// prefix (`layer1`) or a glob (`layer1.*`, `*.bias`). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub freeze: Vec<String>,
    /// Folder for the checkpoint, metrics.csv and metrics.png [default: runs/<spec name>, or
    /// the resumed folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run checkpointed in DIR.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Replace a checkpoint already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

/// The optimizers `--optimizer` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerFlag {
    /// `torch.optim.SGD` (with `--momentum`).
    Sgd,
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

impl From<OptimizerFlag> for OptimizerName {
    fn from(flag: OptimizerFlag) -> Self {
        match flag {
            OptimizerFlag::Sgd => OptimizerName::Sgd,
            OptimizerFlag::Adam => OptimizerName::Adam,
            OptimizerFlag::Adamw => OptimizerName::Adamw,
        }
    }
}

/// The schedules `--schedule` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleName {
    /// Constant learning rate.
    None,
    /// Multiply by --gamma every --step-size epochs (StepLR).
    Step,
    /// Cosine annealing to 0 over --epochs (CosineAnnealingLR).
    Cosine,
}

const DEFAULT_EPOCHS: usize = 5;

/// `--lr`, `--momentum` and `--weight-decay`: finite and at least 0.
fn non_negative_flag(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    checkpoint::non_negative(value)
}

/// `--gamma`: finite and above 0.
fn positive_flag(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    checkpoint::positive(value)
}

/// Runs `cnnc train`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    refuse_files_as_folders(args)?;
    let spec = Spec::load(&args.spec)?;
    let (resumed_lock, saved) = read_resumed(args, &spec)?;
    let epochs = args
        .epochs
        .map(NonZeroUsize::get)
        .or(saved.as_ref().map(|(_, s)| s.epochs))
        .unwrap_or(DEFAULT_EPOCHS);
    let recipe = match &saved {
        None => recipe::fresh_recipe(args, epochs)?,
        Some((dir, state)) => recipe::resumed_recipe(args, &state.recipe, dir)?,
    };

    let kind = match (args.data.dataset, &saved) {
        (Some(name), _) => DatasetKind::from(name),
        (None, Some((_, state))) => state.data.dataset,
        (None, None) => DatasetKind::Sample,
    };
    let data_dir = args
        .data
        .data
        .clone()
        .or_else(|| saved.as_ref().map(|(_, s)| s.data.dir.clone()));
    let loaded = dataset::load(kind, data_dir.as_deref(), &args.data, spec.input())?;
    let (train, test) = (&loaded.splits.train, &loaded.splits.test);
    let data = data_info(kind, &loaded);
    if let Some((dir, state)) = &saved {
        check_same_data(dir, &state.data, &data)?;
    }

    let mut net = spec.network(recipe.seed)?;
    for pattern in &recipe.freeze {
        cnnc::train::freeze(&mut net, pattern)
            .map_err(|e| refuse(format!("--freeze {pattern}: {e}")))?;
    }
    dataset::check_classes(train, net.classes(), &format!("{kind} training data"))?;
    let transform = dataset::transform(train.shape(), train.normalization(), spec.input())?;
    let data = DataInfo {
        bridge: transform.bridge(),
        ..data
    };
    let mut optimizer = recipe.optimizer_config().build()?;
    // Batches larger than the dataset hold the whole dataset: buffers are sized by what a batch
    // can hold, not by the flag.
    if recipe.batch_size > train.len() {
        eprintln!(
            "notice: the batch size {} is larger than the {} training images: each epoch is one \
             batch of {}",
            recipe.batch_size,
            train.len(),
            train.len()
        );
    }
    let loader_config = recipe.loader_config(train.len());
    let mut loader = Loader::new(train, transform.clone(), loader_config)?;

    let out = out_dir(args, &spec, saved.as_ref().map(|(dir, _)| *dir))?;
    // The step of the checkpoint `out` holds for this run, which a failure leaves in place.
    let saved_step = saved
        .as_ref()
        .filter(|(dir, _)| same_path(dir, &out))
        .map(|(_, state)| state.step);
    // Held until the run ends (a second lock on the resumed folder would fail against the first).
    let _locks = (resumed_lock, hold_new_folder(&out, saved_step.is_none())?);
    let mut state = match saved {
        Some((dir, state)) => {
            checkpoint::restore(dir, &state, &mut net, optimizer.as_mut())?;
            loader
                .restore(&state.loader)
                .map_err(|e| refuse(format!("cannot resume {}: {e}", dir.display())))?;
            state
        }
        None => RunState::new(
            &args.spec,
            &spec.hash,
            epochs,
            recipe.clone(),
            data.clone(),
            loader.state(),
        ),
    };
    state.epochs = epochs;
    state.data = data;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if state.epochs_done >= epochs {
        // A run stopped between its last checkpoint and the metrics it writes after it.
        metrics::refresh_metrics(&out, &state.history)?;
        println!(
            "{} has already trained {} epochs; pass --epochs with more to continue",
            out.display(),
            state.epochs_done
        );
        return Ok(ExitCode::SUCCESS);
    }

    let interrupt = Interrupt::install()?;
    // Printed once the signal handlers are in place.
    println!(
        "training {} ({} parameters) on {kind} ({} training, {} validation images) for {epochs} \
         epoch{}: {}; checkpoints in {}",
        spec.checked.name().unwrap_or("the model"),
        super::summary::thousands(net.param_count() as u64),
        train.len(),
        test.len(),
        if epochs == 1 { "" } else { "s" },
        recipe::describe(&recipe),
        out.display()
    );
    let config = TrainConfig {
        epochs,
        lr: recipe.lr,
        schedule: recipe.schedule.lr_schedule(),
        accumulate: NonZeroUsize::new(recipe.accumulate).unwrap_or(NonZeroUsize::MIN),
        eval_batch: EVAL_BATCH,
    };
    let mut trainer = Trainer::new(net, optimizer, loader, Some((test, transform)), config);
    trainer.state = state.train_state();
    let mut run = Run::new(state, out, saved_step, interrupt);
    let outcome = trainer
        .run(&mut run)
        .map_err(|err| describe_failure(err, &mut trainer.model, &run))?;
    Ok(report(args, &run, outcome))
}

/// Refuses `--out` or `--resume` naming a file before anything else.
fn refuse_files_as_folders(args: &Args) -> anyhow::Result<()> {
    for (flag, dir) in [("--out", &args.out), ("--resume", &args.resume)] {
        if let Some(dir) = dir
            && dir.exists()
            && !dir.is_dir()
        {
            anyhow::bail!(
                "{flag} {} is a file, not a folder; name the folder that holds (or will hold) the \
                 checkpoint",
                dir.display()
            );
        }
    }
    Ok(())
}

/// A resumed folder and its run state.
type Saved<'a> = (&'a Path, RunState);

/// The `--resume` folder, held, and its run state, checked to train `spec`.
fn read_resumed<'a>(
    args: &'a Args,
    spec: &Spec,
) -> anyhow::Result<(Option<FolderLock>, Option<Saved<'a>>)> {
    let Some(dir) = &args.resume else {
        return Ok((None, None));
    };
    // The folder is held before reading it (reading recovers it): a missing one is left for
    // `read_state` to report.
    let lock = match dir.is_dir() {
        true => Some(checkpoint::lock(dir, false)?),
        false => None,
    };
    let state = checkpoint::read_state(dir)?;
    if !spec.is_hash(&state.spec_hash) {
        return Err(refuse(format!(
            "cannot resume {}: it trains {} (architecture {}), which differs from {} \
             (architecture {}); resume with the spec it was started with",
            dir.display(),
            state.spec.display(),
            short(&state.spec_hash),
            args.spec.display(),
            short(&spec.hash)
        )));
    }
    Ok((lock, Some((dir.as_path(), state))))
}

/// What the run trains on, as its checkpoint records it (without the bridge to the model input).
fn data_info(kind: DatasetKind, loaded: &dataset::Loaded) -> DataInfo {
    let train = &loaded.splits.train;
    DataInfo {
        dataset: kind,
        dir: loaded.dir.clone(),
        train_len: train.len(),
        test_len: loaded.splits.test.len(),
        image_shape: train.shape(),
        classes: train.class_names().to_vec(),
        normalization: train.normalization().clone(),
        bridge: None,
    }
}

/// Holds `out` if the run writes a folder other than the one it resumed (`new`), and recovers
/// it: it may hold a crashed run's leftovers (reading the resumed folder recovered that one).
fn hold_new_folder(out: &Path, new: bool) -> anyhow::Result<Option<FolderLock>> {
    if !new {
        return Ok(None);
    }
    let lock = checkpoint::lock(out, true)?;
    let recovery = checkpoint::recover(out)?;
    if recovery != checkpoint::Recovery::Clean {
        eprintln!("notice: {}: {recovery}", out.display());
    }
    Ok(Some(lock))
}

/// Says how the run ended, and the exit status that tells it.
fn report(args: &Args, run: &Run, outcome: Outcome) -> ExitCode {
    let (state, out) = (&run.state, &run.out);
    match outcome {
        Outcome::Finished => {
            if let Some(last) = state.history.last() {
                println!(
                    "done: validation accuracy {:.2}% after {} epoch{}; weights in {}",
                    100.0 * last.val_accuracy,
                    last.epoch,
                    if last.epoch == 1 { "" } else { "s" },
                    out.join(MODEL_FILE).display()
                );
            }
            ExitCode::SUCCESS
        }
        Outcome::Stopped { mid_epoch } => {
            let signal = run.signal.unwrap_or(Signal::Interrupt);
            let when = if mid_epoch {
                format!(
                    "in epoch {} after {} of {} images",
                    state.epochs_done + 1,
                    state.progress.seen,
                    state.data.train_len
                )
            } else {
                format!("after epoch {}", state.epochs_done)
            };
            let by = match signal {
                Signal::Interrupt => String::new(),
                Signal::Terminate => format!(" by {}", signal.name()),
            };
            println!(
                "interrupted{by} {when}; checkpoint saved, continue with: cnnc train {} --resume {}",
                args.spec.display(),
                out.display()
            );
            ExitCode::from(signal.exit_status())
        }
    }
}

/// Refuses to resume over data other than the run's.
fn check_same_data(dir: &Path, saved: &DataInfo, now: &DataInfo) -> anyhow::Result<()> {
    let differences = saved.differences(now);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(refuse(format!(
            "cannot resume {}: its run trained on {} from {}, this data differs: {}",
            dir.display(),
            saved.dataset,
            saved.dir.display(),
            differences.join(", ")
        )))
    }
}

/// The folder to write to; refuses to replace another run's checkpoint unless `--overwrite`.
fn out_dir(args: &Args, spec: &Spec, resumed: Option<&Path>) -> anyhow::Result<PathBuf> {
    let out = match (&args.out, resumed) {
        (Some(out), _) => out.clone(),
        (None, Some(dir)) => return Ok(dir.to_owned()),
        (None, None) => {
            let stem = spec
                .path
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy());
            let base = Path::new("runs").join(stem.as_ref());
            // A fresh folder, so that running the same command twice keeps both runs.
            return Ok((1..)
                .map(|i| match i {
                    1 => base.clone(),
                    i => PathBuf::from(format!("{}-{i}", base.display())),
                })
                .find(|dir| !checkpoint::exists(dir))
                .unwrap_or(base));
        }
    };
    let same_as_resumed = resumed.is_some_and(|dir| same_path(dir, &out));
    if !same_as_resumed && !args.overwrite && checkpoint::exists(&out) {
        anyhow::bail!(
            "{} already holds a checkpoint; continue it with --resume {}, pass --overwrite to \
             replace it, or choose another --out",
            out.display(),
            out.display()
        );
    }
    Ok(out)
}

/// Whether `a` and `b` name one folder.
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The first 12 hex digits of a hash, enough to tell two apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
