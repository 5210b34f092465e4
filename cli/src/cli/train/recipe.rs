//! The hyper-parameters of a run: a new run's from its flags and the defaults, a resumed run's
//! from its checkpoint (refusing flags that contradict it). The optimizer, loader and
//! learning-rate schedule they make are the library's ([`cnnc::train::checkpoint::Recipe`]).

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::path::Path;

use super::super::checkpoint::{OptimizerName, Recipe, Schedule};
use super::super::job::refuse;
use super::{Args, DEFAULT_EPOCHS, ScheduleName};

/// The recipe of a new run: flags over defaults.
pub fn fresh_recipe(args: &Args, epochs: usize) -> anyhow::Result<Recipe> {
    let optimizer = args.optimizer.map_or(OptimizerName::Sgd, Into::into);
    if optimizer != OptimizerName::Sgd && args.momentum.is_some() {
        anyhow::bail!(
            "--momentum applies to --optimizer sgd; adam and adamw use betas (0.9, 0.999)"
        );
    }
    let defaults = Recipe::new(optimizer);
    let recipe = Recipe {
        lr: args.lr.unwrap_or(defaults.lr),
        momentum: args.momentum.unwrap_or(defaults.momentum),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        batch_size: args
            .batch_size
            .map_or(defaults.batch_size, NonZeroUsize::get),
        seed: args.seed.unwrap_or(defaults.seed),
        augment: args.augment,
        schedule: schedule(args, epochs, None)?,
        accumulate: args.accumulate.map_or(1, NonZeroUsize::get),
        freeze: args.freeze.clone(),
        ..defaults
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
pub fn resumed_recipe(args: &Args, saved: &Recipe, dir: &Path) -> anyhow::Result<Recipe> {
    let mut wanted = saved.clone();
    if let Some(optimizer) = args.optimizer {
        wanted.optimizer = optimizer.into();
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
    if let Some(accumulate) = args.accumulate {
        wanted.accumulate = accumulate.get();
    }
    if !args.freeze.is_empty() {
        wanted.freeze = args.freeze.clone();
    }
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
    differ(
        "--optimizer",
        saved.optimizer.name().to_owned(),
        wanted.optimizer.name().to_owned(),
    );
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
    differ(
        "--accumulate",
        saved.accumulate.to_string(),
        wanted.accumulate.to_string(),
    );
    differ(
        "--freeze",
        describe_freeze(&saved.freeze),
        describe_freeze(&wanted.freeze),
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

/// The schedule in words.
fn describe_schedule(schedule: &Schedule) -> String {
    match *schedule {
        Schedule::None => "none".to_owned(),
        Schedule::Step { step_size, gamma } => format!("step (every {step_size} epochs x{gamma})"),
        Schedule::Cosine { t_max } => format!("cosine (over {t_max} epochs)"),
    }
}

/// The `--freeze` patterns in words.
fn describe_freeze(patterns: &[String]) -> String {
    if patterns.is_empty() {
        "none".to_owned()
    } else {
        patterns.join(" ")
    }
}

/// The recipe in one line, for the first line of a run.
pub fn describe(recipe: &Recipe) -> String {
    let mut text = format!(
        "{} lr {} batch {}",
        recipe.optimizer.name(),
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
    if recipe.accumulate != 1 {
        let _ = write!(text, " accumulating {} batches a step", recipe.accumulate);
    }
    if !recipe.freeze.is_empty() {
        let _ = write!(text, " frozen {}", recipe.freeze.join(" "));
    }
    let _ = write!(text, " seed {}", recipe.seed);
    text
}
