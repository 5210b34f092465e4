//! The runtime's one error type: every fallible runtime operation (layers, the executor, weights,
//! arrays I/O) reports through [`Error`].

/// Everything that can go wrong in the runtime. Messages are lower-case and name the layer, the
/// operation and the shapes involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or buffer does not have the shape or length an operation needs.
    #[error("layer `{layer}`: {op} expects {expected}, found {found}")]
    Shape {
        /// The layer (state_dict prefix) or function that rejected the tensor.
        layer: String,
        /// What was being done (`forward input`, `backward dy`, ...).
        op: &'static str,
        /// The expected shape or length.
        expected: String,
        /// The shape or length received.
        found: String,
    },
    /// A layer or network description is inconsistent (sizes that do not chain, a zero-sized
    /// output, an option PyTorch rejects).
    #[error("layer `{layer}`: {message}")]
    Config {
        /// The offending layer (state_dict prefix), or `network` for whole-model problems.
        layer: String,
        /// What is wrong, and where possible how to fix it.
        message: String,
    },
    /// A class label is outside `0..classes`.
    #[error("label {label} at batch index {index} is out of range for {classes} classes")]
    Label {
        /// Position of the label in the batch.
        index: usize,
        /// The label found.
        label: usize,
        /// Number of classes (logits per sample).
        classes: usize,
    },
    /// A batch given to a model does not have the model's per-sample input shape.
    #[error(
        "the model takes inputs of shape {expected:?} per sample, but this batch has shape \
         {found:?} ({} samples of {:?})",
        found.first().copied().unwrap_or(0),
        found.get(1..).unwrap_or(&[])
    )]
    InputShape {
        /// The model's per-sample input shape, `[C, H, W]`.
        expected: [usize; 3],
        /// The batch's whole shape, `[N, C, H, W]`.
        found: Vec<usize>,
    },
    /// A flat buffer is too short for the batch it should hold.
    #[error("the buffer holds {found} values, but {batch} samples of shape {shape} need {need}")]
    BufferLength {
        /// Values given.
        found: usize,
        /// Values the batch needs.
        need: usize,
        /// Samples asked for.
        batch: usize,
        /// The per-sample shape, `[C, H, W]` or `[F]`.
        shape: String,
    },
    /// An input value is NaN or infinite.
    #[error(
        "input sample {sample} holds {value} at [{channel}, {row}, {column}] (channel, row, \
         column); inputs must be finite numbers"
    )]
    NonFiniteInput {
        /// Index of the sample in the batch.
        sample: usize,
        /// Where in the sample, in PyTorch's `[C, H, W]` terms.
        channel: usize,
        /// Row.
        row: usize,
        /// Column.
        column: usize,
        /// The value found (NaN, inf or -inf).
        value: f32,
    },
    /// The number of labels is not the number of samples in the batch.
    #[error("{found} labels for a batch of {expected} samples; give one class index per sample")]
    LabelCount {
        /// Samples in the batch.
        expected: usize,
        /// Labels given.
        found: usize,
    },
    /// An activation was asked for by a name that is no layer of the model.
    #[error(
        "no layer named `{name}` in this model; its layers, closest first: {}",
        list_names(valid)
    )]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// The model's layer names (state_dict prefixes), the closest to `name` first.
        valid: Vec<String>,
    },
    /// An operation needs a state it cannot have here (e.g. backward before any forward).
    #[error("{0}")]
    State(String),
    /// A weights file could not be loaded (every problem, by tensor name).
    #[error(transparent)]
    WeightsLoad(#[from] crate::weights::LoadError),
    /// A weights file could not be saved.
    #[error(transparent)]
    WeightsSave(#[from] crate::weights::SaveError),
    /// A `.npy` array could not be read or written.
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    /// An optimizer was misconfigured or does not fit the model.
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
}

/// `` `a`, `b`, `c` `` for at most 12 names, then how many more.
fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

impl Error {
    /// Builds an [`Error::Config`] for `layer`.
    pub(crate) fn config(layer: &str, message: impl Into<String>) -> Self {
        Error::Config {
            layer: layer.to_owned(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Shape`] for `layer`.
    pub(crate) fn shape(
        layer: &str,
        op: &'static str,
        expected: impl ToString,
        found: impl ToString,
    ) -> Self {
        Error::Shape {
            layer: layer.to_owned(),
            op,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// Shorthand for results of runtime operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
