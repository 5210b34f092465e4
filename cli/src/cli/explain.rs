//! `cnnc explain CODE`: prints a diagnostic code's explanation (what it means, how to fix it, an
//! example), as `rustc --explain` does; `cnnc explain` alone lists the codes. The texts live in `spec/src/error_codes/`, the same
//! source `docs/diagnostics.md` is generated from.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cnnc_spec::Code;

/// Arguments of `cnnc explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A diagnostic code, like `E0301` (as printed in `error[E0301]`); without one, every code
    /// is listed with its title.
    #[arg(value_name = "CODE")]
    pub code: Option<String>,
}

/// Runs `cnnc explain`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let text = match &args.code {
        Some(code) => find(code)?.explanation().to_owned(),
        None => list(),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// `E0001  YAML syntax error`, one line per code.
fn list() -> String {
    Code::ALL
        .iter()
        .map(|code| format!("{}  {}\n", code.as_str(), code.title()))
        .collect()
}

/// The code `text` names, or an error that suggests the code meant and says where the codes
/// are listed.
pub fn find(text: &str) -> anyhow::Result<Code> {
    if let Some(code) = Code::parse(text) {
        return Ok(code);
    }
    // The text is the user's: quote it escaped and short.
    let shown: String = text.escape_debug().take(40).collect();
    let hint = match Code::closest(text) {
        Some(code) => format!("did you mean `{}` ({})?", code.as_str(), code.title()),
        None => format!(
            "codes look like `E0301`; they run from {} to {} (see docs/diagnostics.md)",
            Code::ALL.first().map_or("", |c| c.as_str()),
            Code::ALL.last().map_or("", |c| c.as_str()),
        ),
    };
    bail!("no diagnostic code `{shown}`: {hint}")
}
