//! `cnnc fmt`: prints a spec in canonical layout, in its own language or converted to the other
//! (`--to yaml|dsl`), keeping names and comments. Writes standard output, or a file atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc_spec::{Format, Source};

use super::{ColorWhen, EXIT_INVALID, Lang};

/// Arguments of `cnnc fmt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn), or `-` for standard input.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Language to write (default: the spec's own).
    #[arg(long, value_enum)]
    pub to: Option<Lang>,
    /// Write here instead of standard output (atomically: a temporary file, then a rename).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// Runs `cnnc fmt`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = super::read_source(&args.spec, args.lang)?;
    let to = args.to.map_or(source.format(), Format::from);
    let text = match format(&source, to) {
        Ok(text) => text,
        Err(rendered) => {
            let color = args.color.enabled();
            for diagnostic in rendered {
                eprintln!("{}\n", cnnc_spec::render(&diagnostic, &source, color));
            }
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match &args.output {
        Some(path) => write_atomically(path, &text)?,
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
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

/// Writes `text` to a temporary file beside `path`, then renames it over `path`, so readers
/// never see a half-written spec.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|err| {
        let _ = std::fs::remove_file(&temp);
        anyhow::anyhow!("cannot replace {}: {err}", path.display())
    })
}
