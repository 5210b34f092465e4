//! `cnnc codegen`: the Rust source of a spec's model, exactly what `cnnc::cnn_model!` expands to
//! (less the deprecated constants through which the macro shows a spec's warnings in `cargo
//! build`; here the warnings go to standard error), formatted and commented with the shape after
//! each layer; printed, or written atomically with `-o`. It builds as a standalone module of any
//! crate that depends on `cnnc`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cnnc_spec::{Diagnostic, Source};

use super::{ColorWhen, EXIT_INVALID, Lang};

/// Arguments of `cnnc codegen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn), or `-` for standard input.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Write the source to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Name of the generated struct, in UpperCamelCase (default: the spec's model name, else
    /// the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// Runs `cnnc codegen`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = super::read_source(&args.spec, args.lang)?;
    let color = args.color.enabled();
    let model = match cnnc_spec::compile(&source) {
        Ok((model, warnings)) => {
            report(&warnings, &source, color);
            model
        }
        Err(diagnostics) => {
            report(&diagnostics, &source, color);
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let requested = args
        .name
        .clone()
        .or_else(|| model.name().map(str::to_owned))
        .unwrap_or_else(|| {
            args.spec.file_stem().map_or_else(
                || "Model".to_owned(),
                |stem| stem.to_string_lossy().into_owned(),
            )
        });
    let generated = cnnc_codegen::type_name(&requested).and_then(|name| {
        cnnc_codegen::to_source(&model, &cnnc_codegen::Options::new(name, source.name()))
    });
    let code = match generated {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: cannot generate Rust from {}: {err}", source.name());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match &args.output {
        Some(path) => cnnc_runtime::fsio::write_atomic(path, code.as_bytes())
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(code.as_bytes())
            .context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints diagnostics to standard error, as `cnnc check` renders them.
fn report(diagnostics: &[Diagnostic], source: &Source, color: bool) {
    let shown = cnnc_spec::Shown::of(diagnostics);
    for diagnostic in shown.shown {
        eprintln!("{}", cnnc_spec::render(diagnostic, source, color));
    }
    if let Some(omitted) = shown.omitted(source) {
        eprintln!("{omitted}");
    }
}
