//! Evaluation of a network on a labelled dataset: the library's [`cnnc::train::evaluate`] (mean
//! loss, accuracy, and the confusion matrix that per-class precision and recall come from), its
//! errors as the command line reports them. `eval` uses it; `train` validates through the
//! library's trainer, which calls the same function.

use cnnc::data::{Dataset, Transform};
pub use cnnc::metrics::Evaluation;
use cnnc::runtime::Network;
use cnnc::train::TrainError;

/// Runs `net` in evaluation mode over every image of `dataset` (in order, `batch_size` at a
/// time, or all at once if it holds fewer) prepared by `transform`.
pub fn evaluate(
    net: &Network,
    dataset: &Dataset,
    transform: &Transform,
    batch_size: usize,
) -> anyhow::Result<Evaluation> {
    cnnc::train::evaluate(net, dataset, transform, batch_size).map_err(|err| match err {
        TrainError::Runtime(e) => e.into(),
        TrainError::Data(e) => e.into(),
        TrainError::Optim(e) => e.into(),
        TrainError::Diverged(d) => anyhow::anyhow!("{d}"),
        TrainError::Observer(never) => match never {},
    })
}
