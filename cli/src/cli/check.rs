//! `cnnc check`: the lint. Parses and checks every spec given, printing each diagnostic rustc
//! style, as one JSON array, as a SARIF log or as GitHub workflow commands (at most
//! [`cnnc_spec::MAX_SHOWN`] per spec, the rest counted); with `--fix`, first applies the fixes
//! the diagnostics carry, like `cargo fix`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cnnc_spec::{Diagnostic, JsonDiagnostic, Shown, Source};

use super::{ColorWhen, EXIT_INVALID, EXIT_TROUBLE, Lang, github, sarif};

/// Arguments of `cnnc check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files, directories to search for .yaml/.yml/.cnn files, or `-` for standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    pub format: CheckFormat,
    /// Treat these lints as errors (`warnings`: all warnings).
    #[arg(long, value_enum, value_name = "LINT")]
    pub deny: Vec<Deny>,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
    /// Apply the machine-applicable fixes first (replacing each file atomically, keeping its
    /// mode), then report what is left.
    #[arg(long)]
    pub fix: bool,
    /// Skip YAML files without a top-level `layers:` key (CI configs and the like), as a
    /// pre-commit hook given every YAML file needs.
    #[arg(long)]
    pub only_specs: bool,
}

/// `cnnc check --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// Text for people, rustc style.
    Human,
    /// One JSON array of diagnostics, for tools.
    Json,
    /// A SARIF 2.1.0 log, for code-scanning services.
    Sarif,
    /// GitHub Actions workflow commands, shown as annotations on the lines.
    Github,
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
        if args.fix && path == Path::new("-") {
            bail!("`--fix` rewrites files and cannot fix standard input; pass the spec's path");
        }
        let read = super::read_source(&path, args.lang);
        if args.only_specs && read.as_ref().is_ok_and(|source| !super::is_spec(source)) {
            continue;
        }
        let read = read.and_then(|source| {
            if args.fix {
                fix(&path, source)
            } else {
                Ok(source)
            }
        });
        match read {
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
    // The analysis `cnnc lsp` publishes, so editor and command line never disagree.
    super::lsp::analysis::analyze(source).diagnostics
}

/// Checks `sources` and writes the report to `out`: rendered diagnostics and a closing count
/// line (which also counts the `unreadable` specs), one JSON array or SARIF log of all
/// diagnostics, or one workflow command per diagnostic and the count line.
pub fn report(
    sources: &[Source],
    unreadable: usize,
    format: CheckFormat,
    color: bool,
    out: &mut dyn Write,
) -> std::io::Result<Tally> {
    let mut tally = Tally {
        unreadable,
        ..Tally::default()
    };
    let mut json = Vec::new();
    let mut sarif = Vec::new();
    for source in sources {
        tally.specs += 1;
        let diagnostics = diagnose(source);
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        tally.errors += errors;
        tally.warnings += diagnostics.len() - errors;
        let shown = Shown::of(&diagnostics);
        for diagnostic in shown.shown {
            match format {
                CheckFormat::Human => {
                    writeln!(out, "{}\n", cnnc_spec::render(diagnostic, source, color))?
                }
                CheckFormat::Json => json.push(JsonDiagnostic::new(diagnostic, source)),
                CheckFormat::Sarif => sarif.push(sarif::result(diagnostic, source)),
                CheckFormat::Github => writeln!(out, "{}", github::annotation(diagnostic, source))?,
            }
        }
        if let Some(omitted) = shown.omitted(source) {
            match format {
                CheckFormat::Human => writeln!(out, "{omitted}\n")?,
                // Standard output stays one JSON document; the count goes beside it.
                CheckFormat::Json | CheckFormat::Sarif => eprintln!("{omitted}"),
                CheckFormat::Github => writeln!(out, "{omitted}")?,
            }
        }
    }
    match format {
        CheckFormat::Human | CheckFormat::Github => writeln!(out, "{}", closing_line(&tally))?,
        CheckFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
        CheckFormat::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif::log(sarif))?;
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

/// Most rounds of fixing: a fix can uncover another (the DSL parser stops at its first error).
const MAX_FIX_ROUNDS: usize = 16;

/// `cnnc check --fix` on one spec: applies every fix its diagnostics carry, round after round
/// until none is left, writes the result over `path` if anything changed, says what was fixed on
/// standard error, and returns the fixed source for checking. Fixes whose edits overlap are
/// refused, leaving the file as it was.
fn fix(path: &Path, source: Source) -> anyhow::Result<Source> {
    let mut current = source;
    let mut fixed: Vec<String> = Vec::new();
    for _ in 0..MAX_FIX_ROUNDS {
        let diagnostics = diagnose(&current);
        let (text, count) = cnnc_spec::apply_fixes(&current, &diagnostics)
            .with_context(|| format!("cannot fix {}", current.name()))?;
        if count == 0 || text == current.text() {
            break;
        }
        fixed.extend(diagnostics.iter().filter_map(|d| {
            let fix = d.fix.as_ref()?;
            let line = current.line_col(d.span.start as usize).line;
            Some(format!("  line {line}: {}", fix.message))
        }));
        current = Source::new(current.name().to_owned(), text, current.format());
    }
    if fixed.is_empty() {
        return Ok(current);
    }
    if current.text().len() > cnnc_spec::MAX_SOURCE_BYTES {
        bail!(
            "cannot fix {}: the fixed spec would be larger than the limit of {} bytes",
            current.name(),
            cnnc_spec::MAX_SOURCE_BYTES
        );
    }
    // Atomic, keeping the file's permissions, replacing a symlink's target.
    cnnc_runtime::fsio::write_atomic(path, current.text().as_bytes())
        .with_context(|| format!("cannot write the fixed spec to {}", path.display()))?;
    let plural = if fixed.len() == 1 { "" } else { "es" };
    let count = fixed.len();
    // As many lines as diagnostics are shown, then a count.
    if count > cnnc_spec::MAX_SHOWN {
        fixed.truncate(cnnc_spec::MAX_SHOWN);
        fixed.push(format!("  and {} more", count - cnnc_spec::MAX_SHOWN));
    }
    eprintln!(
        "fixed {} ({count} fix{plural}):\n{}",
        current.name(),
        fixed.join("\n")
    );
    Ok(current)
}
