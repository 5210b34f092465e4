//! `cnnc summary`: a torchinfo-style table of a spec's layers — output shape, parameters and
//! multiply-adds — with totals, as a tree of the groups the dotted names make (`--depth`
//! collapses the deeper ones), and each layer's inputs when the model branches. When the spec
//! has errors the table runs up to the first failing layer and the diagnostics follow it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cnnc_spec::core::Source as LayerSource;
use cnnc_spec::{CoreModel as CheckedModel, Diagnostic, JsonDiagnostic, Source};
use serde::Serialize;

use super::hierarchy::{self, Row};
use super::{ColorWhen, EXIT_INVALID, Lang, OutputFormat};

/// torchinfo's default depth.
pub const DEFAULT_DEPTH: u16 = 3;

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
    /// How deep the table goes into the groups the dotted names make (`layer1.0.conv1` is at
    /// depth 3): a group at this depth is one row with its layers' sums. JSON lists every layer.
    #[arg(long, default_value_t = DEFAULT_DEPTH, value_parser = clap::value_parser!(u16).range(1..))]
    pub depth: u16,
}

/// Runs `cnnc summary`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = super::read_source(&args.spec, args.lang)?;
    let stdout = std::io::stdout();
    let ok = summarize(
        &source,
        args.format,
        args.color.enabled(),
        usize::from(args.depth),
        &mut stdout.lock(),
    )?;
    Ok(ExitCode::from(if ok { 0 } else { EXIT_INVALID }))
}

/// Writes the summary of `source` to `out`, the table `depth` groups deep; `false` when the spec
/// has errors.
pub fn summarize(
    source: &Source,
    format: OutputFormat,
    color: bool,
    depth: usize,
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
                out.write_all(table(model, ok, depth).as_bytes())?;
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
            let json = SummaryJson::new(model.as_deref(), &diagnostics, source);
            if let Some(omitted) = cnnc_spec::Shown::of(&diagnostics).omitted(source) {
                eprintln!("{omitted}");
            }
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(ok)
}

/// The table, `depth` groups deep. `complete` is false when it stops at a failing layer.
pub fn table(model: &CheckedModel, complete: bool, depth: usize) -> String {
    let layers = model.layers();
    let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
    let all = hierarchy::rows(&names);
    let shown: Vec<&Row> = hierarchy::visible(&all, depth).collect();
    let prefixes = hierarchy::prefixes(shown.iter().copied());
    let branches = !model.is_sequential();
    let dash_if_zero = |n: u64| {
        if n == 0 {
            "--".to_owned()
        } else {
            thousands(n)
        }
    };
    let rows: Vec<[String; 5]> = shown
        .iter()
        .zip(&prefixes)
        .map(|(row, prefix)| {
            let members = &layers[row.layers.clone()];
            let what = if row.group {
                match members.len() {
                    1 => "group, 1 layer".to_owned(),
                    n => format!("group, {n} layers"),
                }
            } else {
                members[0].kind().torch_name().to_owned()
            };
            let last = &members[members.len() - 1];
            // As torchinfo: an expanded group's layers have rows of their own below it, so
            // its sums are left to a collapsed one.
            let expanded = row.group && row.depth < depth;
            let sum = |count: fn(&cnnc_spec::CheckedLayer) -> u64| {
                if expanded {
                    "--".to_owned()
                } else {
                    dash_if_zero(members.iter().map(count).sum())
                }
            };
            [
                format!("{prefix}{} ({what})", row.label),
                if branches {
                    inputs_from_outside(model, row.layers.clone()).join(", ")
                } else {
                    String::new()
                },
                last.output_shape().to_string(),
                sum(|l| l.params()),
                sum(|l| l.macs()),
            ]
        })
        .collect();
    let header = [
        "Layer (type)",
        "Inputs",
        "Output Shape",
        "Param #",
        "Mult-Adds",
    ];
    // The inputs column only when the model branches: a sequential table reads as before.
    let columns: &[usize] = if branches {
        &[0, 1, 2, 3, 4]
    } else {
        &[0, 2, 3, 4]
    };
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line_width = columns.iter().map(|&c| widths[c]).sum::<usize>() + 3 * (columns.len() - 1);
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
    let format_row = |row: &[String; 5]| {
        columns
            .iter()
            .map(|&c| pad(&row[c], widths[c], c < 3))
            .collect::<Vec<_>>()
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

/// The names of what layer `index` reads, `input` for the model's input.
fn source_names(model: &CheckedModel, index: usize) -> Vec<String> {
    model.layers()[index]
        .inputs()
        .iter()
        .map(|&source| source_name(model, source))
        .collect()
}

/// The name a source goes by in tables and drawings: the layer's, `input` for the model's.
pub(crate) fn source_name(model: &CheckedModel, source: LayerSource) -> String {
    match source {
        LayerSource::Input => "input".to_owned(),
        LayerSource::Layer(i) => model.layers()[i].name().to_owned(),
    }
}

/// The names of what the layers `range` read from outside it, in order, once each: `input` for
/// the model's input.
fn inputs_from_outside(model: &CheckedModel, range: std::ops::Range<usize>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for index in range.clone() {
        for &source in model.layers()[index].inputs() {
            let inside = matches!(source, LayerSource::Layer(i) if range.contains(&i));
            if !inside && seen.insert(source) {
                names.push(source_name(model, source));
            }
        }
    }
    names
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
    /// Where it reads: earlier layers' names, `input` for the model's input.
    inputs: Vec<String>,
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
                        .enumerate()
                        .map(|(i, l)| LayerJson {
                            name: l.name().to_owned(),
                            kind: l.kind().keyword(),
                            inputs: source_names(m, i),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_models::tiny_resnet;

    #[test]
    fn a_graph_shows_its_inputs_and_collapses_by_depth() {
        let model = tiny_resnet();
        let full = table(&model, true, 3);
        // The shortcut reads the stem's ReLU; the add reads both branches.
        assert!(
            full.contains("├─downsample (group, 2 layers)   relu     "),
            "{full}"
        );
        assert!(
            full.contains("layer1.0.bn2, layer1.0.downsample.1"),
            "{full}"
        );
        insta::assert_snapshot!(full);
        let collapsed = table(&model, true, 2);
        // The block as one row: what it reads from outside, its output, its sums.
        let block = collapsed
            .lines()
            .find(|l| l.starts_with("└─0 (group, 9 layers)"))
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>());
        assert_eq!(
            block,
            Some(vec!["relu", "[8,", "4,", "4]", "944", "14,384"]),
            "{collapsed}"
        );
        insta::assert_snapshot!(collapsed);
        assert!(collapsed.contains(&format!(
            "Total params: {}",
            thousands(model.total_params())
        )));
    }

    #[test]
    fn json_layers_name_their_inputs() {
        let model = tiny_resnet();
        let source = Source::new("tiny.cnn".to_owned(), String::new(), cnnc_spec::Format::Dsl);
        let json =
            serde_json::to_value(SummaryJson::new(Some(&model), &[], &source)).expect("serialises");
        let inputs = |i: usize| json["layers"][i]["inputs"].clone();
        assert_eq!(inputs(0), serde_json::json!(["input"]));
        assert_eq!(inputs(8), serde_json::json!(["relu"]));
        assert_eq!(
            inputs(10),
            serde_json::json!(["layer1.0.bn2", "layer1.0.downsample.1"])
        );
        assert_eq!(json["total_params"], model.total_params());
    }
}
