//! `cnnc import`: an ONNX model exported by PyTorch becomes a checked YAML spec (a graph spec
//! where it branches) and, with `--weights-out`, its weights as safetensors under state_dict
//! names. Nothing is written unless the whole model imports and checks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc_interop::import::{MAX_FILE_BYTES, import};
use cnnc_runtime::weights::{TensorData, write_tensors};
use ndarray::{ArrayD, IxDyn};

use super::job::{self, refuse};
use super::model::{WeightsMeta, spec_hash};

/// Arguments of `cnnc import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model (from `torch.onnx.export` in eval mode).
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Where to write the spec (YAML).
    #[arg(short, long, value_name = "SPEC.yaml")]
    pub output: PathBuf,
    /// Where to write the weights (safetensors, state_dict names).
    #[arg(long, value_name = "W.safetensors")]
    pub weights_out: Option<PathBuf>,
    /// The spec's `model:` name [default: the graph's name, else the file name].
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs `cnnc import`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let too_large = |bytes: u64| {
        refuse(format!(
            "cannot import {}: it has {bytes} bytes; cnnc reads ONNX files up to {MAX_FILE_BYTES}",
            path.display()
        ))
    };
    if let Ok(meta) = file.metadata()
        && meta.len() > MAX_FILE_BYTES
    {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let bytes = read_bounded(&args.model)?;
    let stem = args.model.file_stem().map_or_else(
        || "Imported".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    let name = args.name.clone().unwrap_or(stem);
    let imported = import(&bytes, &name)
        .map_err(|err| refuse(format!("cannot import {}: {err}", args.model.display())))?;
    // Everything is computed before the first file is written.
    let weights = match &args.weights_out {
        Some(path) => {
            let mut tensors = Vec::new();
            for info in imported.model.tensors() {
                let tensor = match imported.weights.iter().find(|(n, _, _)| *n == info.name) {
                    Some((_, dims, values)) => TensorData::F32(
                        ArrayD::from_shape_vec(IxDyn(dims), values.clone())
                            .context("an imported tensor's values do not fill its shape")?,
                    ),
                    None => TensorData::I64(ArrayD::from_elem(IxDyn(&[]), 0)),
                };
                tensors.push((info.name.clone(), tensor));
            }
            let meta = WeightsMeta {
                spec_hash: Some(spec_hash(&imported.model)),
                ..WeightsMeta::default()
            };
            Some((path, tensors, meta.to_map()))
        }
        None => None,
    };
    if let Some((path, tensors, meta)) = &weights {
        write_tensors(path, tensors, meta)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    cnnc_runtime::fsio::write_atomic(&args.output, imported.yaml.as_bytes())
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}
