//! The `cnnc` command-line tool: a thin dispatcher, one module per command under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Compiler for declarative CNN specs.
#[derive(Parser)]
#[command(name = "cnnc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check specs for errors and warnings (exit 0: none, 1: errors, 2: usage or I/O).
    Check(cli::check::Args),
    /// Explain a diagnostic code (`cnnc explain E0301`).
    Explain(cli::explain::Args),
    /// Print a per-layer table of shapes, parameters and multiply-adds.
    Summary(cli::summary::Args),
    /// Draw a spec's network as SVG: a layered graph, its groups as boxes, shapes on the edges.
    Draw(cli::draw::Args),
    /// Re-format a spec, or convert it between YAML and the DSL.
    Fmt(cli::fmt::Args),
    /// Run a spec's network on an NCHW .npy batch and write the logits as .npy.
    Run(cli::run::Args),
    /// Train a spec's network on a dataset, with checkpoints, metrics and resume.
    Train(cli::train::Args),
    /// Evaluate trained weights: accuracy, per-class precision/recall, confusion matrix.
    Eval(cli::eval::Args),
    /// Classify PNG/JPEG images: the top-k classes with probabilities.
    Predict(cli::predict::Args),
    /// Print the Rust source of a spec's model: what `cnnc::cnn_model!` expands to.
    Codegen(cli::codegen::Args),
    /// Measure training and inference speed and peak memory (JSON for tools with --format json).
    Bench(cli::bench::Args),
    /// Print the JSON Schema of YAML specs (for editors' YAML language server).
    Schema(cli::schema::Args),
    /// Export a spec's model as ONNX (`--to onnx`) or a PyTorch module and torchrun script.
    Export(cli::export::Args),
    /// Import an ONNX model exported by PyTorch as a spec and its weights.
    Import(cli::import::Args),
    /// Serve editors over the Language Server Protocol on standard input and output.
    Lsp(cli::lsp::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that run a network refuse a bad `CNNC_SIMD` before they start.
    let computes = matches!(
        cli.command,
        Command::Run(_)
            | Command::Train(_)
            | Command::Eval(_)
            | Command::Predict(_)
            | Command::Bench(_)
    );
    if computes && let Err(err) = cli::bench::check_simd() {
        return cli::exit(Err(err));
    }
    let result = match cli.command {
        Command::Check(args) => cli::check::run(&args),
        Command::Explain(args) => cli::explain::run(&args),
        Command::Summary(args) => cli::summary::run(&args),
        Command::Draw(args) => cli::draw::run(&args),
        Command::Fmt(args) => cli::fmt::run(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Train(args) => cli::train::run(&args),
        Command::Eval(args) => cli::eval::run(&args),
        Command::Predict(args) => cli::predict::run(&args),
        Command::Codegen(args) => cli::codegen::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Schema(args) => cli::schema::run(&args),
        Command::Export(args) => cli::export::run(&args),
        Command::Import(args) => cli::import::run(&args),
        Command::Lsp(args) => cli::lsp::run(&args),
    };
    cli::exit(result)
}
