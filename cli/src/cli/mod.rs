//! Pieces the commands share: reading specs (files, directories, standard input), colour and
//! output-format flags, and turning a command's outcome into an exit status.

pub mod bench;
pub mod chart;
pub mod check;
pub mod checkpoint;
pub mod codegen;
pub mod dataset;
pub mod draw;
pub mod eval;
pub mod evaluate;
pub mod explain;
pub mod export;
pub mod fmt;
pub mod github;
pub mod hierarchy;
pub mod import;
pub mod job;
pub mod layout;
pub mod lsp;
pub mod model;
pub mod predict;
pub mod progress;
pub mod run;
pub mod sarif;
pub mod schema;
pub mod summary;
pub mod terminal;
#[cfg(test)]
mod test_models;
pub mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cnnc_spec::{Format, Source};

/// Exit status: the spec has errors (or denied warnings).
pub const EXIT_INVALID: u8 = 1;
/// Exit status: a usage or I/O problem.
pub const EXIT_TROUBLE: u8 = 2;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Text for people, rustc style.
    Human,
    /// JSON for tools.
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour when standard output is a terminal (and `NO_COLOR` is unset).
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl ColorWhen {
    /// Whether to emit ANSI styles on standard output.
    pub fn enabled(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

/// `--lang` for standard input, whose language no extension tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// YAML.
    Yaml,
    /// The cnnc DSL.
    Dsl,
}

impl From<Lang> for Format {
    fn from(lang: Lang) -> Format {
        match lang {
            Lang::Yaml => Format::Yaml,
            Lang::Dsl => Format::Dsl,
        }
    }
}

/// The exit status for a command's result; errors are printed to standard error.
pub fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", terminal::printable(&format!("{err:#}")));
            ExitCode::from(EXIT_TROUBLE)
        }
    }
}

/// Reads the spec at `path` (`-` is standard input, in `lang` or else guessed), refusing files
/// over the size limit before reading them whole.
pub fn read_source(path: &Path, lang: Option<Lang>) -> anyhow::Result<Source> {
    if path == Path::new("-") {
        let name = "<stdin>";
        let text = cnnc_spec::read_text_from(std::io::stdin().lock(), Path::new(name))?;
        let format = lang.map_or_else(|| sniff(&text), Format::from);
        return Ok(Source::new(name.to_owned(), text, format));
    }
    let format = match lang {
        Some(lang) => lang.into(),
        None => Format::from_path(path).with_context(|| {
            format!(
                "cannot tell the language of {}: expected a .yaml, .yml or .cnn file",
                path.display()
            )
        })?,
    };
    let text = cnnc_spec::read_text(path)?;
    Ok(Source::new(path.display().to_string(), text, format))
}

/// Whether `source` is a spec rather than some other YAML file: DSL text always is, YAML when
/// a line starts with the top-level `layers:` key (the rule `cnnc lsp` and editors use too).
/// `--only-specs` skips the rest, so a hook can pass every YAML file of a repository.
pub fn is_spec(source: &Source) -> bool {
    source.format() == Format::Dsl
        || source
            .text()
            .strip_prefix('\u{feff}')
            .unwrap_or(source.text())
            .lines()
            .any(|line| {
                line.strip_prefix("layers")
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
}

/// Standard input without `--lang`: YAML if its first line of content is a YAML key.
fn sniff(text: &str) -> Format {
    let first = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'));
    match first {
        Some(line)
            if ["model:", "input:", "layers:"]
                .iter()
                .any(|k| line.starts_with(k)) =>
        {
            Format::Yaml
        }
        _ => Format::Dsl,
    }
}

/// The spec files `paths` name: files as given, directories walked (sorted) for `.yaml`,
/// `.yml` and `.cnn` files, `-` kept for standard input.
pub fn collect_specs(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut specs = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, 0, &mut specs)?;
        } else {
            specs.push(path.clone());
        }
    }
    Ok(specs)
}

fn walk(dir: &Path, depth: usize, specs: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    // Deep enough for any real tree, and a stop for symlink cycles.
    if depth > 32 {
        bail!("{} is nested too deeply", dir.display());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, depth + 1, specs)?;
        } else if Format::from_path(&entry).is_some() {
            specs.push(entry);
        }
    }
    Ok(())
}
