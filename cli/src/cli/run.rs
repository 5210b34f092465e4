//! `cnnc run`: one forward pass of a spec's network over an NCHW `.npy` batch, writing the logits
//! as `.npy`; with `--labels` and `--grads`, also the gradients of the mean cross-entropy loss
//! with respect to every parameter, as safetensors under state_dict names (how parity with
//! another framework is checked from outside, and a debugging aid when porting a model). Without
//! `--weights` the network has the seeded default initialisation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc_runtime::loss::softmax_cross_entropy;
use cnnc_runtime::param::{Entry, Visit};
use cnnc_runtime::weights::{self, TensorData};
use cnnc_runtime::{Mode, Network, npy};
use ndarray::{Array2, Array4, Axis, Ix4, s};

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
    /// Where to write the logits, float32 [N, classes] (needed unless --grads is given).
    #[arg(long, value_name = "Y.npy", required_unless_present = "grads")]
    pub output: Option<PathBuf>,
    /// Training mode, as PyTorch's `model.train()`: dropout active, batch norm normalising with
    /// the batch's own statistics (the running statistics it updates are not saved). Without it,
    /// `model.eval()`: no dropout, batch norm on its running statistics.
    #[arg(long)]
    pub train: bool,
    /// Class index of each input sample, [N] integers in 0..classes (int64, as `torch.randint`
    /// gives): the targets of the loss whose gradients --grads writes.
    #[arg(long, value_name = "T.npy", requires = "grads")]
    pub labels: Option<PathBuf>,
    /// Write the gradients of the mean cross-entropy loss
    /// (`torch.nn.functional.cross_entropy(logits, labels)`) with respect to every parameter
    /// to this safetensors file, under state_dict names (`conv1.weight`), in the mode --train
    /// chooses; prints the loss. Needs --labels.
    #[arg(long, value_name = "G.safetensors", requires = "labels")]
    pub grads: Option<PathBuf>,
    /// Seed of the default initialisation and of dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Samples per forward pass in evaluation mode, where samples do not interact: bounds memory on
/// large inputs. Training mode, and any pass whose gradients are wanted, runs the whole batch at
/// once, as batch statistics and a mean loss over the batch require.
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
    let input = read_input(&args.input, &spec)?;
    let n = input.len_of(Axis(0));
    let mode = if args.train { Mode::Train } else { Mode::Eval };
    // Both are set together: clap's `requires` ties them.
    let wanted = args.labels.as_deref().zip(args.grads.as_deref());
    let labels = match wanted {
        Some((labels, _)) => Some(read_labels(labels, n, net.classes(), &args.input)?),
        None => None,
    };
    let chunk = if args.train || labels.is_some() {
        n
    } else {
        EVAL_CHUNK
    };
    let mut logits = Array2::<f32>::zeros((n, net.classes()));
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let out = net.forward_view(input.slice(s![start..end, .., .., ..]), mode)?;
        logits.slice_mut(s![start..end, ..]).assign(&out);
    }
    if let (Some(labels), Some((_, grads_path))) = (&labels, wanted) {
        let mut dlogits = Array2::<f32>::zeros(logits.dim());
        let loss = softmax_cross_entropy(logits.view(), labels, dlogits.view_mut())?;
        net.backward(dlogits.view())?;
        let metadata = BTreeMap::from([
            ("format".to_owned(), "pt".to_owned()),
            ("cnnc.loss".to_owned(), loss.to_string()),
            ("cnnc.mode".to_owned(), mode_name(mode).to_owned()),
            ("cnnc.spec_hash".to_owned(), spec.hash.clone()),
        ]);
        weights::write_tensors(grads_path, &gradients(&mut net), &metadata).with_context(|| {
            format!(
                "cannot write the gradients of {} to {}",
                args.spec.display(),
                grads_path.display()
            )
        })?;
        println!("loss {loss}");
    }
    if let Some(output) = &args.output {
        npy::write_f32(output, logits.view().into_dyn())
            .with_context(|| format!("cannot write the logits to {}", output.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the input batch, refusing one that does not fit the spec's input.
fn read_input(path: &Path, spec: &Spec) -> anyhow::Result<Array4<f32>> {
    let input = npy::read_f32(path)?;
    let [c, h, w] = spec.def.input;
    let shape = input.shape().to_vec();
    let shape_error = || {
        refuse(format!(
            "{} holds an array of shape {:?}; {} takes [N, {c}, {h}, {w}] (NCHW float32)",
            path.display(),
            shape,
            spec.path.display()
        ))
    };
    if shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
        return Err(shape_error());
    }
    input
        .into_dimensionality::<Ix4>()
        .map_err(|_| shape_error())
}

/// Reads `path` as one class index per sample of the `n` in `input`, each below `classes`.
fn read_labels(path: &Path, n: usize, classes: usize, input: &Path) -> anyhow::Result<Vec<usize>> {
    let array = npy::read_f32(path)?;
    if array.shape() != [n] {
        return Err(refuse(format!(
            "{} holds an array of shape {:?}; the {n} samples of {} need {n} labels, shape [{n}] \
             (numpy: `labels.reshape(-1).astype(np.int64)`)",
            path.display(),
            array.shape(),
            input.display()
        )));
    }
    array
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            if value.fract() == 0.0 && value >= 0.0 && (value as usize) < classes {
                Ok(value as usize)
            } else {
                Err(refuse(format!(
                    "{}: label {value} at index {index} is not a class index; the model has \
                     {classes} outputs, so labels are integers from 0 to {} (int64, as \
                     `torch.randint(0, {classes}, (N,))` gives)",
                    path.display(),
                    classes.saturating_sub(1)
                )))
            }
        })
        .collect()
}

/// Every parameter's gradient from the last backward pass, under its state_dict name, in
/// state_dict order.
fn gradients(net: &mut Network) -> Vec<(String, TensorData)> {
    let mut grads = Vec::new();
    net.visit(&mut |entry| {
        if let Entry::Param { name, param } = entry {
            grads.push((name.to_owned(), TensorData::F32(param.grad.clone())));
        }
    });
    grads
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Train => "train",
        Mode::Eval => "eval",
    }
}
