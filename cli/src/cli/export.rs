//! `cnnc export`: a spec's model, with its trained or seeded weights, as an ONNX file for ONNX
//! Runtime and friends (`--to onnx`), or as a PyTorch module and torchrun training script
//! (`--to pytorch`). The translation lives in `cnnc-interop`; this is the file handling.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cnnc_interop::export::{DEFAULT_OPSET, ExportOptions};
use cnnc_runtime::weights::{TensorData, state_dict};

use super::job::{self, refuse};
use super::model::{Spec, load_weights};

/// What `cnnc export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// An ONNX model file (standard operators, eval semantics).
    Onnx,
    /// A directory with `model.py` (an `nn.Module`) and `train.py` (torchrun + DDP).
    Pytorch,
}

/// Arguments of `cnnc export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// What to write.
    #[arg(long, value_enum)]
    pub to: Target,
    /// Where: the .onnx file (`--to onnx`) or the directory (`--to pytorch`).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Weights (safetensors, PyTorch state_dict names) [default: the seeded initialisation].
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// ONNX opset of the default domain (14 to 21).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    pub opset: i64,
    /// Seed of the default initialisation, when no weights are given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `cnnc export`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let graph_name = spec
        .checked
        .name()
        .map(str::to_owned)
        .unwrap_or_else(|| stem(&spec));
    match args.to {
        Target::Onnx => {
            let mut net = spec.network(args.seed)?;
            if let Some(weights) = &args.weights {
                load_weights(&mut net, weights, &spec)?;
            }
            let weights: BTreeMap<String, Vec<f32>> = state_dict(&mut net)
                .into_iter()
                .filter_map(|(name, tensor)| match tensor {
                    TensorData::F32(values) => Some((name, values.iter().copied().collect())),
                    TensorData::F64(_) | TensorData::I64(_) => None,
                })
                .collect();
            let options = ExportOptions {
                opset: args.opset,
                graph_name,
                ..ExportOptions::default()
            };
            let bytes = cnnc_interop::export::export(&spec.checked, &weights, &options)
                .map_err(|err| refuse(format!("cannot export {}: {err}", args.spec.display())))?;
            cnnc_runtime::fsio::write_atomic(&args.output, &bytes)
                .with_context(|| format!("cannot write `{}`", args.output.display()))?;
        }
        Target::Pytorch => {
            if args.weights.is_some() {
                return Err(refuse(
                    "--weights is for --to onnx: model.py loads a cnnc safetensors file itself \
                     (`load_state_dict(safetensors.torch.load_file(W), strict=True)`)",
                ));
            }
            let options = cnnc_interop::pytorch::PytorchOptions {
                model_name: graph_name,
                spec_file: args.spec.display().to_string(),
                spec_hash: spec.hash.clone(),
            };
            let files = cnnc_interop::pytorch::export(&spec.checked, &options);
            std::fs::create_dir_all(&args.output)
                .with_context(|| format!("cannot create `{}`", args.output.display()))?;
            for (file, text) in files {
                let path = args.output.join(file);
                cnnc_runtime::fsio::write_atomic(&path, text.as_bytes())
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stem(spec: &Spec) -> String {
    spec.path
        .file_stem()
        .map_or_else(|| "Model".to_owned(), |s| s.to_string_lossy().into_owned())
}
