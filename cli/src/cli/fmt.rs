//! `cnnc fmt`: prints a spec in canonical layout, in its own language or converted to the other
//! (`--to yaml|dsl`), keeping names and comments. Writes standard output, or a file atomically;
//! with `--check`, only says (as a diff) whether specs are already formatted, like `cargo fmt`
//! (several specs and directories then, as a pre-commit hook passes them).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cnnc_runtime::fsio::write_atomic;
use cnnc_spec::{Format, Source};

use super::{ColorWhen, EXIT_INVALID, EXIT_TROUBLE, Lang};

/// Arguments of `cnnc fmt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn), or `-` for standard input; with `--check`, any number of
    /// specs and directories to search for them.
    #[arg(value_name = "SPEC", required = true)]
    pub specs: Vec<PathBuf>,
    /// Language to write (default: the spec's own).
    #[arg(long, value_enum)]
    pub to: Option<Lang>,
    /// Write here instead of standard output (atomically: a synced temporary file, then a rename).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write nothing: exit 1 and print a diff for each spec not in canonical layout.
    #[arg(long, conflicts_with_all = ["output", "to"])]
    pub check: bool,
    /// With `--check`: skip YAML files without a top-level `layers:` key (CI configs and the
    /// like), as a pre-commit hook given every YAML file needs.
    #[arg(long, requires = "check")]
    pub only_specs: bool,
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// Runs `cnnc fmt`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.check {
        return check_all(args);
    }
    let [spec] = args.specs.as_slice() else {
        bail!(
            "`cnnc fmt` formats one spec at a time, and {} were given; pass one, or add `--check` \
             to check several",
            args.specs.len()
        );
    };
    let source = super::read_source(spec, args.lang)?;
    let to = args.to.map_or(source.format(), Format::from);
    let text = match format(&source, to) {
        Ok(text) => text,
        Err(rendered) => {
            let color = args.color.enabled();
            eprintln!("{}\n", cnnc_spec::render_all(&rendered, &source, color));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if text.len() > cnnc_spec::MAX_SOURCE_BYTES {
        // Written, it could be read by no cnnc command.
        eprintln!(
            "error: {} formatted is {} bytes, more than the limit of {} bytes (1 MiB) on a spec; \
             nothing was written: shorten the spec (its comments, names or layers) first",
            source.name(),
            text.len(),
            cnnc_spec::MAX_SOURCE_BYTES
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `cnnc fmt --check`: every spec `args` names (directories searched) checked in turn; the
/// worst outcome decides the exit status (unreadable, then unformatted or unparsable).
fn check_all(args: &Args) -> anyhow::Result<ExitCode> {
    let color = args.color.enabled();
    let mut status = ExitCode::SUCCESS;
    let mut unreadable = false;
    for path in super::collect_specs(&args.specs)? {
        let source = match super::read_source(&path, args.lang) {
            Ok(source) if args.only_specs && !super::is_spec(&source) => continue,
            Ok(source) => source,
            Err(err) => {
                eprintln!("error: {err:#}");
                unreadable = true;
                continue;
            }
        };
        let source_format = source.format();
        match format(&source, source_format) {
            Ok(text) => {
                if check(&source, &text)? != ExitCode::SUCCESS {
                    status = ExitCode::from(EXIT_INVALID);
                }
            }
            Err(rendered) => {
                eprintln!("{}\n", cnnc_spec::render_all(&rendered, &source, color));
                status = ExitCode::from(EXIT_INVALID);
            }
        }
    }
    Ok(if unreadable {
        ExitCode::from(EXIT_TROUBLE)
    } else {
        status
    })
}

/// One spec of `cnnc fmt --check`: success if `formatted` is `source` as it stands, else a unified diff on
/// standard output and [`EXIT_INVALID`].
fn check(source: &Source, formatted: &str) -> anyhow::Result<ExitCode> {
    if source.text() == formatted {
        return Ok(ExitCode::SUCCESS);
    }
    let name = source.name();
    let diff = similar::TextDiff::from_lines(source.text(), formatted);
    let mut stdout = std::io::stdout().lock();
    write!(
        stdout,
        "{}",
        diff.unified_diff()
            .header(name, &format!("{name} (formatted)"))
    )
    .context("cannot write to standard output")?;
    Ok(ExitCode::from(EXIT_INVALID))
}

/// `source` printed in language `to`, or its syntax diagnostics. Shape errors do not stop
/// formatting: only a spec that cannot be read cannot be printed.
pub fn format(source: &Source, to: Format) -> Result<String, Vec<cnnc_spec::Diagnostic>> {
    let model = cnnc_spec::parse(source)?;
    Ok(match to {
        Format::Yaml => cnnc_spec::to_yaml(&model),
        Format::Dsl => cnnc_spec::to_dsl(&model),
    })
}
