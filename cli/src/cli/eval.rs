//! `cnnc eval`: accuracy, loss, per-class precision and recall and the confusion matrix of
//! trained weights on a dataset's test split, as text or JSON (`accuracy` is a fraction).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cnnc::data::DatasetKind;
use serde::Serialize;

use super::OutputFormat;
use super::dataset::{self, DataArgs};
use super::evaluate::{Evaluation, evaluate};
use super::job;
use super::model::{Spec, load_weights};
use super::table::{self, Align};

/// Arguments of `cnnc eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Weights to evaluate (safetensors, PyTorch state_dict names).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

/// Runs `cnnc eval`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let spec = Spec::load(&args.spec)?;
    let mut net = spec.network(0)?;
    let meta = load_weights(&mut net, &args.weights, &spec)?;
    // Without flags, evaluate on what the weights were trained on.
    if args.data.dataset.is_none()
        && let Some(name) = &meta.unknown_dataset
    {
        anyhow::bail!(
            "{} were trained on the dataset {name:?} (their metadata `cnnc.dataset`), which cnnc \
             does not know; pass --dataset ({}) and --data DIR to choose what to evaluate on",
            args.weights.display(),
            DatasetKind::ALL.map(DatasetKind::name).join(", ")
        );
    }
    let kind = args
        .data
        .dataset
        .map(DatasetKind::from)
        .or(meta.dataset)
        .unwrap_or(DatasetKind::Sample);
    // The folder the weights name is only read from: downloads go where the flags say.
    let recorded = meta
        .data_dir
        .as_deref()
        .filter(|_| Some(kind) == meta.dataset);
    let loaded = match (&args.data.data, recorded) {
        (Some(dir), _) => dataset::load(kind, Some(dir), &args.data, spec.input())?,
        (None, Some(recorded)) => dataset::load_recorded(kind, recorded, &args.data, spec.input())?,
        (None, None) => dataset::load(kind, None, &args.data, spec.input())?,
    };
    let test = &loaded.splits.test;
    dataset::check_classes(test, net.classes(), &format!("{kind} test data"))?;
    let normalization = meta.normalization_for(test);
    let transform = dataset::transform(test.shape(), &normalization, spec.input())?;
    let evaluation = evaluate(&net, test, &transform, args.batch_size)?;
    let classes = dataset::output_names(test.class_names(), net.classes());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        OutputFormat::Human => {
            let shown: Vec<String> = classes
                .iter()
                .map(|c| super::terminal::printable(c))
                .collect();
            out.write_all(human(&evaluation, &shown, kind).as_bytes())?
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &EvalJson::new(&evaluation, &classes, kind))?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text report: summary line, per-class table, confusion matrix.
fn human(e: &Evaluation, classes: &[String], kind: DatasetKind) -> String {
    let percent = |v: Option<f64>| v.map_or("--".to_owned(), |v| format!("{:.2}%", 100.0 * v));
    let width = table::widest(classes).max(5);
    let class_cell = |name: &str| table::pad(name, width, Align::Left);
    let mut text = format!(
        "{kind} test split: accuracy {:.2}% ({}/{}), loss {:.4}\n\n",
        100.0 * e.accuracy(),
        e.correct(),
        e.count,
        e.loss()
    );
    text.push_str(&format!(
        "{}  {:>9}  {:>9}  {:>7}\n",
        class_cell("class"),
        "precision",
        "recall",
        "support"
    ));
    for (k, class) in classes.iter().enumerate() {
        text.push_str(&format!(
            "{}  {:>9}  {:>9}  {:>7}\n",
            class_cell(class),
            percent(e.precision(k)),
            percent(e.recall(k)),
            e.support(k)
        ));
    }
    let cell = e
        .confusion
        .iter()
        .flatten()
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max(classes.len().to_string().len());
    text.push_str("\nconfusion matrix (rows: true class, columns: predicted class)\n");
    text.push_str(&class_cell(""));
    for k in 0..classes.len() {
        text.push_str(&format!("  {k:>cell$}"));
    }
    text.push('\n');
    for (k, row) in e.confusion.iter().enumerate() {
        text.push_str(&class_cell(&format!("{k} {}", classes[k])));
        for n in row {
            text.push_str(&format!("  {n:>cell$}"));
        }
        text.push('\n');
    }
    text
}

/// The JSON report. Key names are a contract: `accuracy` is a fraction in [0, 1].
#[derive(Serialize)]
struct EvalJson {
    dataset: &'static str,
    accuracy: f64,
    loss: f64,
    count: u64,
    correct: u64,
    classes: Vec<String>,
    per_class: Vec<ClassJson>,
    /// `confusion[true][predicted]`.
    confusion: Vec<Vec<u64>>,
}

#[derive(Serialize)]
struct ClassJson {
    class: String,
    /// `null` when nothing was predicted as this class.
    precision: Option<f64>,
    /// `null` when the class has no image.
    recall: Option<f64>,
    support: u64,
}

impl EvalJson {
    fn new(e: &Evaluation, classes: &[String], kind: DatasetKind) -> Self {
        EvalJson {
            dataset: kind.name(),
            accuracy: e.accuracy(),
            loss: e.loss(),
            count: e.count,
            correct: e.correct(),
            classes: classes.to_vec(),
            per_class: classes
                .iter()
                .enumerate()
                .map(|(k, class)| ClassJson {
                    class: class.clone(),
                    precision: e.precision(k),
                    recall: e.recall(k),
                    support: e.support(k),
                })
                .collect(),
            confusion: e.confusion.clone(),
        }
    }
}
