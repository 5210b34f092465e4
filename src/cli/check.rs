//! `cnnc check`: the lint. Parses and checks every spec given, printing each diagnostic rustc
//! style or as one JSON array.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cnnc_spec::{Diagnostic, JsonDiagnostic, Source};

use super::{ColorWhen, EXIT_INVALID, EXIT_TROUBLE, Lang, OutputFormat};

/// Arguments of `cnnc check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files, directories to search for .yaml/.yml/.cnn files, or `-` for standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// Treat these lints as errors (`warnings`: all warnings).
    #[arg(long, value_enum, value_name = "LINT")]
    pub deny: Vec<Deny>,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// What `--deny` can promote to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Deny {
    /// Every warning.
    Warnings,
}

/// Counts over all checked specs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Specs checked.
    pub specs: usize,
    /// Errors found.
    pub errors: usize,
    /// Warnings found.
    pub warnings: usize,
    /// Specs that could not be read (each already reported).
    pub unreadable: usize,
}

/// Runs `cnnc check`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    let mut unreadable = 0;
    for path in super::collect_specs(&args.paths)? {
        match super::read_source(&path, args.lang) {
            Ok(source) => sources.push(source),
            Err(err) => {
                eprintln!("error: {err:#}");
                unreadable += 1;
            }
        }
    }
    let stdout = std::io::stdout();
    let tally = report(
        &sources,
        unreadable,
        args.format,
        args.color.enabled(),
        &mut stdout.lock(),
    )?;
    let denied = args.deny.contains(&Deny::Warnings) && tally.warnings > 0;
    Ok(ExitCode::from(if unreadable > 0 {
        EXIT_TROUBLE
    } else if tally.errors > 0 || denied {
        EXIT_INVALID
    } else {
        0
    }))
}

/// Every diagnostic of one spec, parse and check together.
pub fn diagnose(source: &Source) -> Vec<Diagnostic> {
    match cnnc_spec::parse(source) {
        Ok(model) => cnnc_spec::check(&model).diagnostics,
        Err(diagnostics) => diagnostics,
    }
}

/// Checks `sources` and writes the report to `out`: rendered diagnostics and a closing count
/// line (which also counts the `unreadable` specs), or one JSON array of all diagnostics.
pub fn report(
    sources: &[Source],
    unreadable: usize,
    format: OutputFormat,
    color: bool,
    out: &mut dyn Write,
) -> std::io::Result<Tally> {
    let mut tally = Tally {
        unreadable,
        ..Tally::default()
    };
    let mut json = Vec::new();
    for source in sources {
        tally.specs += 1;
        for diagnostic in diagnose(source) {
            if diagnostic.is_error() {
                tally.errors += 1;
            } else {
                tally.warnings += 1;
            }
            match format {
                OutputFormat::Human => {
                    writeln!(out, "{}\n", cnnc_spec::render(&diagnostic, source, color))?
                }
                OutputFormat::Json => json.push(JsonDiagnostic::new(&diagnostic, source)),
            }
        }
    }
    match format {
        OutputFormat::Human => writeln!(out, "{}", closing_line(&tally))?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(tally)
}

/// `checked 3 specs: 1 error, 2 warnings`.
fn closing_line(tally: &Tally) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let findings = match (tally.errors, tally.warnings) {
        (0, 0) => "no problems".to_owned(),
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    };
    let unreadable = match tally.unreadable {
        0 => String::new(),
        n => format!("; {} could not be read", plural(n, "spec")),
    };
    format!(
        "checked {}: {findings}{unreadable}",
        plural(tally.specs, "spec")
    )
}
