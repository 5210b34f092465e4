//! `cnnc train`: trains a spec's network on a dataset with progress, validation after every
//! epoch, `metrics.csv`, a `metrics.png` chart and an atomic checkpoint after every epoch (and on
//! Ctrl-C); `--resume` continues a checkpoint bit-identically to an uninterrupted run. A step that
//! goes NaN or infinite stops the run before the optimizer writes it into the weights, naming the
//! layer where it started; the last checkpoint stays.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use cnnc_runtime::data::{Augment, DatasetKind, Loader, LoaderConfig};
use cnnc_runtime::exec::NonFinite;
use cnnc_runtime::fsio::write_atomic;
use cnnc_runtime::optim::{AdamConfig, Optimizer, OptimizerConfig, SgdConfig};
use cnnc_runtime::schedule::LrSchedule;
use cnnc_runtime::{Entry, Network, Visit};
use ndarray::ArrayView4;

use super::chart;
use super::checkpoint::{
    self, DataInfo, EpochProgress, EpochRecord, MODEL_FILE, OptimizerName, Recipe, RunState,
    Schedule,
};
use super::dataset::{self, DataArgs};
use super::evaluate::{count_correct, evaluate};
use super::job::{self, refuse};
use super::model::Spec;
use super::progress::{Progress, Snapshot, clock};

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
    pub optimizer: Option<OptimizerName>,
    /// Learning rate [default: 0.01 for sgd, 0.001 for adam and adamw].
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay [default: 0, 0.01 for adamw].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule, per epoch [default: none].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// `--schedule step`: epochs between decays [default: a third of --epochs].
    #[arg(long)]
    pub step_size: Option<NonZeroUsize>,
    /// `--schedule step`: decay factor [default: 0.1].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Seed of the initialisation, shuffling and augmentation [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Standard CIFAR augmentation: random crop with 4-pixel padding, horizontal flip.
    #[arg(long)]
    pub augment: bool,
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
const DEFAULT_BATCH: usize = 64;
/// Batch size of validation passes (no gradients are kept, so larger is cheaper).
const EVAL_BATCH: usize = 256;
/// Mixed into `--seed` for the loader, so that shuffling does not reuse the initialisation's
/// random stream.
const LOADER_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
/// Exit status after Ctrl-C (128 + SIGINT), with a resumable checkpoint saved.
const EXIT_INTERRUPTED: u8 = 130;

/// Runs `cnnc train`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    // The resumed folder is held before reading it (reading recovers it): a missing one is left
    // for `read_state` to report.
    let resumed_lock = match &args.resume {
        Some(dir) if dir.is_dir() => Some(checkpoint::lock(dir, false)?),
        _ => None,
    };
    let saved = match &args.resume {
        Some(dir) => Some((dir.as_path(), checkpoint::read_state(dir)?)),
        None => None,
    };
    if let Some((dir, state)) = &saved
        && state.spec_hash != spec.hash
    {
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
    let epochs = args
        .epochs
        .map(NonZeroUsize::get)
        .or(saved.as_ref().map(|(_, s)| s.epochs))
        .unwrap_or(DEFAULT_EPOCHS);
    let recipe = match &saved {
        None => fresh_recipe(args, epochs)?,
        Some((dir, state)) => resumed_recipe(args, &state.recipe, dir)?,
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
    let loaded = dataset::load(kind, data_dir.as_deref(), &args.data)?;
    let (train, test) = (&loaded.splits.train, &loaded.splits.test);
    let data = DataInfo {
        dataset: kind,
        dir: loaded.dir.clone(),
        train_len: train.len(),
        test_len: test.len(),
        image_shape: train.shape(),
        classes: train.class_names().to_vec(),
        normalization: train.normalization().clone(),
        bridge: None,
    };
    if let Some((dir, state)) = &saved {
        check_same_data(dir, &state.data, &data)?;
    }

    let mut net = spec.network(recipe.seed)?;
    dataset::check_classes(train, net.classes(), &format!("{kind} training data"))?;
    let transform = dataset::transform(train.shape(), train.normalization(), spec.input())?;
    let data = DataInfo {
        bridge: transform.bridge(),
        ..data
    };
    let mut optimizer = build_optimizer(&recipe)?;
    let loader_config = LoaderConfig {
        batch_size: recipe.batch_size,
        shuffle: true,
        augment: recipe.augment.then(Augment::cifar),
        seed: recipe.seed ^ LOADER_SEED_SALT,
    };
    let mut loader = Loader::new(train, transform.clone(), loader_config)?;

    let out = out_dir(args, &spec, saved.as_ref().map(|(dir, _)| *dir))?;
    // The step of the checkpoint `out` holds for this run, which a failure leaves in place.
    let mut saved_step = saved
        .as_ref()
        .filter(|(dir, _)| same_path(dir, &out))
        .map(|(_, state)| state.step);
    // Held until the run ends (a second lock on the resumed folder would fail against the first).
    let _locks = match saved_step {
        Some(_) => (resumed_lock, None),
        None => (resumed_lock, Some(checkpoint::lock(&out, true)?)),
    };
    if saved_step.is_none() {
        // Reading the resumed folder recovered it; a new one may hold a crashed run's leftovers.
        let recovery = checkpoint::recover(&out)?;
        if recovery != checkpoint::Recovery::Clean {
            eprintln!("notice: {}: {recovery}", out.display());
        }
    }
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
        refresh_metrics(&out, &state.history)?;
        println!(
            "{} has already trained {} epochs; pass --epochs with more to continue",
            out.display(),
            state.epochs_done
        );
        return Ok(ExitCode::SUCCESS);
    }

    let stop = interrupt_flag()?;
    println!(
        "training {} ({} parameters) on {kind} ({} training, {} validation images) for {epochs} \
         epoch{}: {}; checkpoints in {}",
        spec.checked.name.as_deref().unwrap_or("the model"),
        super::summary::thousands(net.param_count() as u64),
        train.len(),
        test.len(),
        if epochs == 1 { "" } else { "s" },
        describe(&recipe),
        out.display()
    );

    let schedule = lr_schedule(&recipe.schedule);
    let [c, h, w] = spec.def.input;
    let image_len = loader.image_len();
    let batch = recipe.batch_size;
    let mut images = vec![0f32; batch * image_len];
    let mut labels = vec![0usize; batch];
    let train_len = train.len() as u64;
    while state.epochs_done < epochs {
        let epoch = state.epochs_done;
        let lr = schedule.lr(recipe.lr, epoch);
        optimizer.set_lr(lr);
        let started = Instant::now();
        let seconds_before = state.progress.seconds;
        let seen_before = state.progress.seen;
        let mut progress = Progress::new(epoch + 1, epochs, train_len, seen_before);
        while let Some(n) = loader.next_batch(&mut images, &mut labels)? {
            let x = ArrayView4::from_shape((n, c, h, w), &images[..n * image_len])
                .context("batch buffer")?;
            let loss = net.train_step(x, &labels[..n])?;
            let step = Step {
                number: state.step + 1,
                epoch: epoch + 1,
                out: &out,
                saved: saved_step,
            };
            if !loss.is_finite() || non_finite_entry(&mut net, Part::Gradients).is_some() {
                progress.finish();
                return Err(diverged(&mut net, &step, loss));
            }
            let correct = count_correct(net.logits()?, &labels[..n]);
            optimizer.step(&mut net)?;
            if let Some((name, value)) = non_finite_entry(&mut net, Part::Values) {
                progress.finish();
                return Err(refuse(format!(
                    "{}: the update made `{name}` {value} (the step itself was finite); lower \
                     --lr; {}",
                    step.describe(),
                    step.kept()
                )));
            }
            state.step += 1;
            let p = &mut state.progress;
            p.loss_sum += f64::from(loss) * n as f64;
            p.correct += correct;
            p.seen += n as u64;
            let elapsed = started.elapsed().as_secs_f64();
            progress.update(Snapshot {
                seen: p.seen,
                loss: p.loss_sum / p.seen as f64,
                accuracy: p.correct as f64 / p.seen as f64,
                rate: (p.seen - seen_before) as f64 / elapsed.max(1e-9),
            });
            if stop.load(Ordering::Relaxed) {
                progress.finish();
                state.progress.seconds = seconds_before + elapsed;
                state.loader = loader.state();
                save(&out, &mut state, &mut net, optimizer.as_ref(), saved_step)?;
                println!(
                    "interrupted in epoch {} after {} of {train_len} images; checkpoint saved, \
                     continue with: cnnc train {} --resume {}",
                    epoch + 1,
                    state.progress.seen,
                    args.spec.display(),
                    out.display()
                );
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
        progress.finish();
        let validation = evaluate(&mut net, test, &transform, EVAL_BATCH)?;
        let p = state.progress;
        let record = EpochRecord {
            epoch: epoch + 1,
            step: state.step,
            lr,
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_accuracy: p.correct as f64 / p.seen.max(1) as f64,
            val_loss: validation.loss(),
            val_accuracy: validation.accuracy(),
            seconds: seconds_before + started.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {}/{epochs}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%  {} ({:.0} img/s)",
            record.epoch,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.val_loss,
            100.0 * record.val_accuracy,
            clock(record.seconds),
            p.seen as f64 / record.seconds.max(1e-9)
        );
        state.history.push(record);
        state.epochs_done += 1;
        state.progress = EpochProgress::default();
        state.loader = loader.state();
        save(&out, &mut state, &mut net, optimizer.as_ref(), saved_step)?;
        saved_step = Some(state.step);
        write_metrics(&out, &state.history)?;
        if stop.load(Ordering::Relaxed) && state.epochs_done < epochs {
            println!(
                "interrupted after epoch {}; checkpoint saved, continue with: cnnc train {} \
                 --resume {}",
                state.epochs_done,
                args.spec.display(),
                out.display()
            );
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    }
    if let Some(last) = state.history.last() {
        println!(
            "done: validation accuracy {:.2}% after {} epoch{}; weights in {}",
            100.0 * last.val_accuracy,
            last.epoch,
            if last.epoch == 1 { "" } else { "s" },
            out.join(MODEL_FILE).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The recipe of a new run: flags over defaults.
fn fresh_recipe(args: &Args, epochs: usize) -> anyhow::Result<Recipe> {
    let optimizer = args.optimizer.unwrap_or(OptimizerName::Sgd);
    if optimizer != OptimizerName::Sgd && args.momentum.is_some() {
        anyhow::bail!(
            "--momentum applies to --optimizer sgd; adam and adamw use betas (0.9, 0.999)"
        );
    }
    let recipe = Recipe {
        optimizer,
        lr: args.lr.unwrap_or(match optimizer {
            OptimizerName::Sgd => 0.01,
            OptimizerName::Adam | OptimizerName::Adamw => 1e-3,
        }),
        momentum: match optimizer {
            OptimizerName::Sgd => args.momentum.unwrap_or(0.9),
            OptimizerName::Adam | OptimizerName::Adamw => 0.0,
        },
        weight_decay: args.weight_decay.unwrap_or(match optimizer {
            OptimizerName::Adamw => 0.01,
            OptimizerName::Sgd | OptimizerName::Adam => 0.0,
        }),
        batch_size: args.batch_size.map_or(DEFAULT_BATCH, NonZeroUsize::get),
        seed: args.seed.unwrap_or(0),
        augment: args.augment,
        schedule: schedule(args, epochs, None)?,
    };
    Ok(recipe)
}

/// The schedule the flags ask for; `saved` supplies what they leave open on a resume.
fn schedule(args: &Args, epochs: usize, saved: Option<Schedule>) -> anyhow::Result<Schedule> {
    let name = args.schedule.or(match saved {
        None | Some(Schedule::None) => None,
        Some(Schedule::Step { .. }) => Some(ScheduleName::Step),
        Some(Schedule::Cosine { .. }) => Some(ScheduleName::Cosine),
    });
    let step_flags = args.step_size.is_some() || args.gamma.is_some();
    Ok(match name.unwrap_or(ScheduleName::None) {
        ScheduleName::Step => {
            let (saved_size, saved_gamma) = match saved {
                Some(Schedule::Step { step_size, gamma }) => (Some(step_size), Some(gamma)),
                _ => (None, None),
            };
            Schedule::Step {
                step_size: args
                    .step_size
                    .map(NonZeroUsize::get)
                    .or(saved_size)
                    .unwrap_or((epochs / 3).max(1)),
                gamma: args.gamma.or(saved_gamma).unwrap_or(0.1),
            }
        }
        _ if step_flags => anyhow::bail!("--step-size and --gamma apply to --schedule step"),
        ScheduleName::None => Schedule::None,
        ScheduleName::Cosine => match saved {
            Some(cosine @ Schedule::Cosine { .. }) => cosine,
            _ => Schedule::Cosine { t_max: epochs },
        },
    })
}

/// The resumed run's recipe, refusing flags that contradict it (every difference listed).
fn resumed_recipe(args: &Args, saved: &Recipe, dir: &Path) -> anyhow::Result<Recipe> {
    let mut wanted = saved.clone();
    if let Some(optimizer) = args.optimizer {
        wanted.optimizer = optimizer;
    }
    if let Some(lr) = args.lr {
        wanted.lr = lr;
    }
    if let Some(momentum) = args.momentum {
        wanted.momentum = momentum;
    }
    if let Some(weight_decay) = args.weight_decay {
        wanted.weight_decay = weight_decay;
    }
    if let Some(batch) = args.batch_size {
        wanted.batch_size = batch.get();
    }
    if let Some(seed) = args.seed {
        wanted.seed = seed;
    }
    wanted.augment |= args.augment;
    let t_max = match saved.schedule {
        Schedule::Cosine { t_max } => t_max,
        _ => args.epochs.map_or(DEFAULT_EPOCHS, NonZeroUsize::get),
    };
    wanted.schedule = schedule(args, t_max, Some(saved.schedule))?;
    let mut differences = Vec::new();
    let mut differ = |flag: &str, was: String, now: String| {
        if was != now {
            differences.push(format!("{flag} {was} (this command: {now})"));
        }
    };
    differ("--optimizer", name(saved.optimizer), name(wanted.optimizer));
    differ("--lr", saved.lr.to_string(), wanted.lr.to_string());
    differ(
        "--momentum",
        saved.momentum.to_string(),
        wanted.momentum.to_string(),
    );
    differ(
        "--weight-decay",
        saved.weight_decay.to_string(),
        wanted.weight_decay.to_string(),
    );
    differ(
        "--batch-size",
        saved.batch_size.to_string(),
        wanted.batch_size.to_string(),
    );
    differ("--seed", saved.seed.to_string(), wanted.seed.to_string());
    differ(
        "--augment",
        saved.augment.to_string(),
        wanted.augment.to_string(),
    );
    differ(
        "--schedule",
        describe_schedule(&saved.schedule),
        describe_schedule(&wanted.schedule),
    );
    if !differences.is_empty() {
        return Err(refuse(format!(
            "cannot resume {}: its run used {}; drop these flags to continue it, or start a new \
             run with another --out",
            dir.display(),
            differences.join(", ")
        )));
    }
    Ok(wanted)
}

/// Refuses to resume over data other than the run's.
fn check_same_data(dir: &Path, saved: &DataInfo, now: &DataInfo) -> anyhow::Result<()> {
    let mut differences = Vec::new();
    if saved.dataset != now.dataset {
        differences.push(format!("dataset {} (now {})", saved.dataset, now.dataset));
    } else {
        if saved.train_len != now.train_len {
            differences.push(format!(
                "{} training images (now {})",
                saved.train_len, now.train_len
            ));
        }
        if saved.image_shape != now.image_shape {
            differences.push(format!(
                "{} images (now {})",
                saved.image_shape, now.image_shape
            ));
        }
        if saved.classes != now.classes {
            differences.push(format!(
                "classes {:?} (now {:?})",
                saved.classes, now.classes
            ));
        }
        if saved.normalization != now.normalization {
            differences.push("other normalisation statistics".to_owned());
        }
    }
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

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A flag set by Ctrl-C: the loop finishes its step, saves and exits. A second Ctrl-C while the
/// flag is set exits at once (every file is written atomically, so nothing is left half-written).
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::SIGINT;
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        SIGINT,
        i32::from(EXIT_INTERRUPTED),
        Arc::clone(&flag),
    )
    .context("cannot install the Ctrl-C handler")?;
    signal_hook::flag::register(SIGINT, Arc::clone(&flag))
        .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

fn build_optimizer(recipe: &Recipe) -> anyhow::Result<Box<dyn Optimizer>> {
    let config = match recipe.optimizer {
        OptimizerName::Sgd => OptimizerConfig::Sgd(SgdConfig {
            momentum: recipe.momentum,
            weight_decay: recipe.weight_decay,
            ..SgdConfig::new(recipe.lr)
        }),
        OptimizerName::Adam => OptimizerConfig::Adam(AdamConfig {
            weight_decay: recipe.weight_decay,
            ..AdamConfig::adam(recipe.lr)
        }),
        OptimizerName::Adamw => OptimizerConfig::Adam(AdamConfig {
            weight_decay: recipe.weight_decay,
            ..AdamConfig::adamw(recipe.lr)
        }),
    };
    Ok(config.build()?)
}

fn lr_schedule(schedule: &Schedule) -> LrSchedule {
    let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
    match *schedule {
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

/// A training step, for the messages that stop a run.
struct Step<'a> {
    /// Optimizer steps including this one, from 1.
    number: u64,
    /// Epoch, from 1.
    epoch: usize,
    /// The checkpoint folder.
    out: &'a Path,
    /// The step of the checkpoint `out` holds for this run, if any.
    saved: Option<u64>,
}

impl Step<'_> {
    /// `training diverged at step 37 (epoch 1)`.
    fn describe(&self) -> String {
        format!(
            "training diverged at step {} (epoch {})",
            self.number, self.epoch
        )
    }

    /// What the folder still holds.
    fn kept(&self) -> String {
        match self.saved {
            Some(step) => format!(
                "the last checkpoint in {} (step {step}) is kept",
                self.out.display()
            ),
            None => format!(
                "no checkpoint of this run was written to {}",
                self.out.display()
            ),
        }
    }
}

/// The error that stops a run whose step went non-finite (`loss` is the step's), naming the layer
/// where it started.
fn diverged(net: &mut Network, step: &Step<'_>, loss: f32) -> anyhow::Error {
    let source = match net.find_non_finite() {
        Ok(Some(found @ NonFinite::Input { .. })) => {
            format!("{found} (the dataset holds a non-finite pixel)")
        }
        Ok(Some(found)) => found.to_string(),
        Ok(None) => "every activation and gradient is finite".to_owned(),
        Err(err) => format!("the layer at fault is unknown ({err})"),
    };
    let loss = if loss.is_finite() {
        format!("the loss was {loss}")
    } else {
        format!("the loss became {loss}")
    };
    refuse(format!(
        "{}: {source}; {loss}; lower --lr; {}",
        step.describe(),
        step.kept()
    ))
}

/// Which numbers of the parameters [`non_finite_entry`] scans.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    /// The gradients of the last backward pass.
    Gradients,
    /// The values of parameters and float buffers.
    Values,
}

/// The first parameter (or float buffer, for [`Part::Values`]) holding a NaN or infinity, with
/// that value: the per-step check, one pass over numbers already in memory.
fn non_finite_entry(net: &mut Network, part: Part) -> Option<(String, f32)> {
    let mut found = None;
    net.visit(&mut |entry| {
        if found.is_some() {
            return;
        }
        let values = match (entry, part) {
            (Entry::Param { name, param }, Part::Gradients) => Some((name, &param.grad)),
            (Entry::Param { name, param }, Part::Values) => Some((name, &param.value)),
            (Entry::Buffer { name, value }, Part::Values) => Some((name, &*value)),
            _ => None,
        };
        if let Some((name, values)) = values
            && let Some(v) = values.iter().copied().find(|v| !v.is_finite())
        {
            found = Some((name.to_owned(), v));
        }
    });
    found
}

/// [`checkpoint::save`], saying on failure which checkpoint `out` still holds.
fn save(
    out: &Path,
    state: &mut RunState,
    net: &mut Network,
    optimizer: &dyn Optimizer,
    saved: Option<u64>,
) -> anyhow::Result<()> {
    checkpoint::save(out, state, net, optimizer).map_err(|err| {
        let what = format!(
            "cannot save the checkpoint of step {} in {}",
            state.step,
            out.display()
        );
        // A failed commit says itself what the folder holds.
        if err.downcast_ref::<checkpoint::Committing>().is_some() {
            return err.context(what);
        }
        let kept = match saved {
            Some(step) => format!("the checkpoint of step {step} is kept"),
            None => "it holds no checkpoint of this run".to_owned(),
        };
        err.context(format!("{what} ({kept})"))
    })
}

/// Rewrites `metrics.png` and `metrics.csv` if the CSV does not show the whole history.
fn refresh_metrics(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let path = out.join("metrics.csv");
    let expected = metrics_csv(history).into_bytes();
    // Compare lengths first: the file need not be read unless it could be the expected one.
    let same_len = std::fs::metadata(&path).is_ok_and(|m| m.len() == expected.len() as u64);
    if history.is_empty() || (same_len && std::fs::read(&path).is_ok_and(|b| b == expected)) {
        return Ok(());
    }
    write_metrics(out, history)
}

/// `metrics.csv`: one row per finished epoch.
fn metrics_csv(history: &[EpochRecord]) -> String {
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

/// `metrics.png` and `metrics.csv` from the whole history, each written atomically; the CSV
/// last, since [`refresh_metrics`] trusts both when the CSV is up to date.
fn write_metrics(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    for (name, bytes) in [
        ("metrics.png", chart::png(history)?),
        ("metrics.csv", metrics_csv(history).into_bytes()),
    ] {
        let path = out.join(name);
        write_atomic(&path, &bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}

fn name(optimizer: OptimizerName) -> String {
    match optimizer {
        OptimizerName::Sgd => "sgd",
        OptimizerName::Adam => "adam",
        OptimizerName::Adamw => "adamw",
    }
    .to_owned()
}

fn describe_schedule(schedule: &Schedule) -> String {
    match *schedule {
        Schedule::None => "none".to_owned(),
        Schedule::Step { step_size, gamma } => format!("step (every {step_size} epochs x{gamma})"),
        Schedule::Cosine { t_max } => format!("cosine (over {t_max} epochs)"),
    }
}

fn describe(recipe: &Recipe) -> String {
    let mut text = format!(
        "{} lr {} batch {}",
        name(recipe.optimizer),
        recipe.lr,
        recipe.batch_size
    );
    if recipe.optimizer == OptimizerName::Sgd && recipe.momentum != 0.0 {
        let _ = write!(text, " momentum {}", recipe.momentum);
    }
    if recipe.weight_decay != 0.0 {
        let _ = write!(text, " weight decay {}", recipe.weight_decay);
    }
    if recipe.schedule != Schedule::None {
        let _ = write!(text, " schedule {}", describe_schedule(&recipe.schedule));
    }
    if recipe.augment {
        text.push_str(" augmented");
    }
    let _ = write!(text, " seed {}", recipe.seed);
    text
}

/// The first 12 hex digits of a hash, enough to tell two apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
