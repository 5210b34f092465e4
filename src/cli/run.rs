//! `cnnc run`: one forward pass of a spec's network over an NCHW `.npy` batch, writing the logits
//! as `.npy`. Without `--weights` the network has the seeded default initialisation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cnnc_runtime::{Mode, npy};
use ndarray::{Array2, Axis, Ix4, s};

use super::job::{self, refuse};
use super::model::{Spec, load_weights};

/// Arguments of `cnnc run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Weights (safetensors, PyTorch state_dict names) [default: the seeded initialisation].
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// Input batch, float32 [N, C, H, W] (other numeric dtypes are converted when exact).
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Where to write the logits, float32 [N, classes].
    #[arg(long, value_name = "Y.npy")]
    pub output: PathBuf,
    /// Training-mode forward (dropout active, batchnorm on batch statistics).
    #[arg(long)]
    pub train: bool,
    /// Seed of the default initialisation and of dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Samples per forward pass in evaluation mode, where samples do not interact: bounds memory on
/// large inputs. Training mode runs the whole batch at once, as batch statistics require.
const EVAL_CHUNK: usize = 256;

/// Runs `cnnc run`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let mut net = spec.network(args.seed)?;
    if let Some(weights) = &args.weights {
        load_weights(&mut net, weights, &spec)?;
    }
    let input = npy::read_f32(&args.input)?;
    let [c, h, w] = spec.def.input;
    let shape = input.shape().to_vec();
    let shape_error = || {
        refuse(format!(
            "{} holds an array of shape {:?}; {} takes [N, {c}, {h}, {w}] (NCHW float32)",
            args.input.display(),
            shape,
            args.spec.display()
        ))
    };
    if shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
        return Err(shape_error());
    }
    let input = input
        .into_dimensionality::<Ix4>()
        .map_err(|_| shape_error())?;
    let n = input.len_of(Axis(0));
    let mut logits = Array2::<f32>::zeros((n, net.classes()));
    let (mode, chunk) = if args.train {
        (Mode::Train, n)
    } else {
        (Mode::Eval, EVAL_CHUNK)
    };
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let out = net.forward_view(input.slice(s![start..end, .., .., ..]), mode)?;
        logits.slice_mut(s![start..end, ..]).assign(&out);
    }
    npy::write_f32(&args.output, logits.view().into_dyn())
        .with_context(|| format!("cannot write the logits to {}", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}
