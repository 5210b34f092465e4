//! `cnnc summary`: a torchinfo-style table of a spec's layers — output shape, parameters and
//! multiply-adds — with totals. When the spec has errors the table runs up to the first failing
//! layer and the diagnostics follow it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cnnc_spec::{CheckedModel, Diagnostic, JsonDiagnostic, Source};
use serde::Serialize;

use super::{ColorWhen, EXIT_INVALID, Lang, OutputFormat};

/// Arguments of `cnnc summary`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn), or `-` for standard input.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// Runs `cnnc summary`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = super::read_source(&args.spec, args.lang)?;
    let stdout = std::io::stdout();
    let ok = summarize(
        &source,
        args.format,
        args.color.enabled(),
        &mut stdout.lock(),
    )?;
    Ok(ExitCode::from(if ok { 0 } else { EXIT_INVALID }))
}

/// Writes the summary of `source` to `out`; `false` when the spec has errors.
pub fn summarize(
    source: &Source,
    format: OutputFormat,
    color: bool,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let (model, diagnostics) = match cnnc_spec::parse(source) {
        Ok(ast) => {
            let checked = cnnc_spec::check(&ast);
            (checked.model, checked.diagnostics)
        }
        Err(diagnostics) => (None, diagnostics),
    };
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    match format {
        OutputFormat::Human => {
            if let Some(model) = &model {
                out.write_all(table(model, ok).as_bytes())?;
            }
            let shown = cnnc_spec::Shown::of(&diagnostics);
            for diagnostic in shown.shown {
                writeln!(out, "\n{}", cnnc_spec::render(diagnostic, source, color))?;
            }
            if let Some(omitted) = shown.omitted(source) {
                writeln!(out, "\n{omitted}")?;
            }
        }
        OutputFormat::Json => {
            let json = SummaryJson::new(model.as_ref(), &diagnostics, source);
            if let Some(omitted) = cnnc_spec::Shown::of(&diagnostics).omitted(source) {
                eprintln!("{omitted}");
            }
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(ok)
}

/// The table. `complete` is false when it stops at a failing layer.
pub fn table(model: &CheckedModel, complete: bool) -> String {
    let rows: Vec<[String; 4]> = model
        .layers()
        .iter()
        .map(|layer| {
            let dash_if_zero = |n: u64| {
                if n == 0 {
                    "--".to_owned()
                } else {
                    thousands(n)
                }
            };
            [
                format!("{} ({})", layer.name(), layer.kind().torch_name()),
                layer.output_shape().to_string(),
                dash_if_zero(layer.params()),
                dash_if_zero(layer.macs()),
            ]
        })
        .collect();
    let header = ["Layer (type)", "Output Shape", "Param #", "Mult-Adds"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line_width = widths.iter().sum::<usize>() + 3 * 4;
    let rule = |c: char| c.to_string().repeat(line_width);
    // Padded by hand: `format!` widths stop at 65,535, and a layer name may be longer.
    let pad = |cell: &str, width: usize, left: bool| {
        let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
        if left {
            format!("{cell}{fill}")
        } else {
            format!("{fill}{cell}")
        }
    };
    let format_row = |row: &[String; 4]| {
        [
            pad(&row[0], widths[0], true),
            pad(&row[1], widths[1], true),
            pad(&row[2], widths[2], false),
            pad(&row[3], widths[3], false),
        ]
        .join("   ")
        .trim_end()
        .to_owned()
    };
    let mut out = String::new();
    let title = model.name().unwrap_or("model");
    out.push_str(&format!(
        "{title}: input {} per sample (batch dimension omitted)\n",
        model.input_shape()
    ));
    out.push_str(&rule('='));
    out.push('\n');
    out.push_str(&format_row(&header.map(str::to_owned)));
    out.push('\n');
    out.push_str(&rule('='));
    out.push('\n');
    for row in &rows {
        out.push_str(&format_row(row));
        out.push('\n');
    }
    if !complete {
        out.push_str("(stopped: the next layer has errors, see below)\n");
    }
    out.push_str(&rule('='));
    out.push('\n');
    let total = model.total_params();
    let trainable = model.trainable_params();
    out.push_str(&format!("Total params: {}\n", thousands(total)));
    out.push_str(&format!("Trainable params: {}\n", thousands(trainable)));
    out.push_str(&format!(
        "Non-trainable params: {}\n",
        thousands(total - trainable)
    ));
    out.push_str(&format!(
        "Total mult-adds (M): {:.2}\n",
        model.total_macs() as f64 / 1e6
    ));
    out.push_str(&rule('-'));
    out.push('\n');
    let megabytes = |bytes: u64| bytes as f64 / 1e6;
    out.push_str(&format!(
        "Input size per sample (MB): {:.2}\n",
        megabytes(model.input_shape().numel() as u64 * 4)
    ));
    out.push_str(&format!(
        "Activation memory per sample (MB): {:.2}\n",
        megabytes(model.activation_bytes())
    ));
    out.push_str(&format!("Params size (MB): {:.2}\n", megabytes(total * 4)));
    out.push_str(&rule('='));
    out.push('\n');
    out
}

/// `145578` → `145,578`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The JSON form of the summary. Key names are a contract.
#[derive(Serialize)]
struct SummaryJson {
    model: Option<String>,
    input_shape: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
    layers: Vec<LayerJson>,
    total_params: u64,
    trainable_params: u64,
    total_macs: u64,
    activation_bytes: u64,
    /// False when the spec has errors (then `layers` stops before the first failing layer).
    complete: bool,
    /// The first [`cnnc_spec::MAX_SHOWN`] diagnostics (the count of the rest goes to standard
    /// error).
    diagnostics: Vec<JsonDiagnostic>,
}

#[derive(Serialize)]
struct LayerJson {
    name: String,
    kind: &'static str,
    output_shape: Vec<usize>,
    params: u64,
    macs: u64,
}

impl SummaryJson {
    fn new(model: Option<&CheckedModel>, diagnostics: &[Diagnostic], source: &Source) -> Self {
        SummaryJson {
            model: model.and_then(|m| m.name().map(str::to_owned)),
            input_shape: model.map(|m| m.input_shape().dims()),
            output_shape: model.map(|m| m.output_shape().dims()),
            layers: model
                .map(|m| {
                    m.layers()
                        .iter()
                        .map(|l| LayerJson {
                            name: l.name().to_owned(),
                            kind: l.kind().keyword(),
                            output_shape: l.output_shape().dims(),
                            params: l.params(),
                            macs: l.macs(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            total_params: model.map_or(0, |m| m.total_params()),
            trainable_params: model.map_or(0, |m| m.trainable_params()),
            total_macs: model.map_or(0, |m| m.total_macs()),
            activation_bytes: model.map_or(0, |m| m.activation_bytes()),
            complete: !diagnostics.iter().any(Diagnostic::is_error),
            diagnostics: cnnc_spec::Shown::of(diagnostics)
                .shown
                .iter()
                .map(|d| JsonDiagnostic::new(d, source))
                .collect(),
        }
    }
}
