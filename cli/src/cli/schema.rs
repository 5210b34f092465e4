//! `cnnc schema`: prints the JSON Schema of YAML specs, generated from the layer table
//! ([`cnnc_spec::json_schema`]); `editors/cnnc.schema.json` is its output, kept current by a test.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `cnnc schema`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `cnnc schema`.
pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(&cnnc_spec::json_schema())
        .context("cannot serialise the schema")?;
    text.push('\n');
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
