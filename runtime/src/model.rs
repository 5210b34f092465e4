//! [`Model`], the contract every runnable cnnc model keeps: the models `cnn_model!` generates and
//! the dynamic executor ([`crate::exec::Network`]). Generic code (an evaluator, a trainer, a
//! server) is written once against it.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayView4};

use crate::error::Result;
use crate::param::{EntryRef, Visit, VisitRef};
use crate::weights::{LoadError, SaveError};

/// A runnable CNN: inference from a shared reference, training through `&mut`, parameters by
/// PyTorch state_dict name, safetensors save and load.
///
/// **Modes.** [`Model::predict`] and [`Model::activations`] run in evaluation mode (PyTorch's
/// `model.eval()`: dropout is the identity, batch norm uses its running statistics) and change
/// nothing in the model, so one model (an `Arc<M>`) serves predictions from many threads at once
/// without a lock. [`Model::forward_train`] and [`Model::train_step`] run in training mode
/// (`model.train()`: dropout draws masks, batch norm uses and updates batch statistics) and keep
/// what [`Model::backward`] needs; [`Model::backward`] writes every parameter's gradient.
///
/// **Inputs** are PyTorch-layout batches `[N, C, H, W]` ([`Model::input_shape`] per sample; a
/// model taking flat features `[F]` takes `[N, F, 1, 1]`). A batch of the wrong per-sample shape,
/// a label count that is not the batch size, or a NaN or infinite input is an error naming them
/// in these terms ([`crate::Error::InputShape`], [`crate::Error::LabelCount`],
/// [`crate::Error::NonFiniteInput`]), never a panic.
///
/// **Parameters** are visited by state_dict name (`layer1.0.weight`) through [`Visit`] (to
/// change them: optimizers, loading) and [`VisitRef`] (to read them: saving, counting). Every
/// implementor is `Send + Sync`; the concrete ones are also `Clone` (a clone is independent:
/// training one leaves the other as it was). The trait is object safe: `Box<dyn Model>` works.
///
/// ```
/// use cnnc_runtime::Model;
/// use ndarray::ArrayView4;
///
/// /// Accuracy of any model on a labelled batch.
/// fn accuracy<M: Model + ?Sized>(model: &M, x: ArrayView4<f32>, labels: &[usize]) -> f32 {
///     let Ok(logits) = model.predict(x) else { return 0.0 };
///     let hits = logits
///         .rows()
///         .into_iter()
///         .zip(labels)
///         .filter(|(row, label)| {
///             let best = row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
///             best == **label
///         })
///         .count();
///     hits as f32 / labels.len().max(1) as f32
/// }
/// ```
pub trait Model: Visit + VisitRef + Send + Sync {
    /// Inference (evaluation mode) on a batch `[N, C, H, W]`: the logits `[N, output_size]`.
    /// Takes `&self`: concurrent calls from several threads are fine and give the same values as
    /// one at a time.
    fn predict(&self, x: ArrayView4<f32>) -> Result<Array2<f32>>;

    /// Per-sample input shape `[C, H, W]` (`[F, 1, 1]` for a model taking flat features).
    fn input_shape(&self) -> [usize; 3];

    /// Logits per sample.
    fn output_size(&self) -> usize;

    /// The spec's model name (the Rust type's name when the spec gives none).
    fn name(&self) -> &str;

    /// Trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    fn param_count(&self) -> usize {
        let mut count = 0;
        self.visit_ref(&mut |entry| {
            if let EntryRef::Param { param, .. } = entry {
                count += param.value.len();
            }
        });
        count
    }

    /// Training-mode forward on a batch `[N, C, H, W]`: the logits `[N, output_size]`; the model
    /// keeps what [`Model::backward`] needs.
    fn forward_train(&mut self, x: ArrayView4<f32>) -> Result<Array2<f32>>;

    /// Backpropagates `dlogits` (the gradient of the loss with respect to the logits of the last
    /// [`Model::forward_train`], `[N, output_size]`) and writes every parameter's gradient.
    fn backward(&mut self, dlogits: ArrayView2<f32>) -> Result<()>;

    /// One training step's computation: training forward, softmax cross-entropy (mean) against
    /// `labels` (one class index per sample), backward. Leaves the gradients for an optimizer
    /// and returns the loss.
    fn train_step(&mut self, x: ArrayView4<f32>, labels: &[usize]) -> Result<f32>;

    /// Evaluation-mode forward that returns the outputs of the layers named in `names` (the
    /// spec's layer names, which are the state_dict prefixes: `layer1.0`, `fc1`), in PyTorch's
    /// layout: `[N, C, H, W]` for images, `[N, F]` for features. A layer the model applies
    /// inside the one before it (a ReLU or a max pool fused into a convolution) is readable too:
    /// when such a name is asked for, the forward runs those layers apart, with the same values.
    /// An unknown name is an error listing the valid ones, closest first.
    fn activations(
        &self,
        x: ArrayView4<f32>,
        names: &[&str],
    ) -> Result<BTreeMap<String, ArrayD<f32>>>;

    /// Saves the parameters and buffers as safetensors under their state_dict names
    /// (atomically), with the model's name as metadata.
    fn save(&self, path: &Path) -> Result<(), SaveError>;

    /// Loads parameters and buffers from a safetensors file strictly (every missing, unexpected
    /// or misshapen tensor is reported; the model is untouched on error). Returns the file's
    /// metadata. The model is ready for [`Model::predict`] at full speed afterwards.
    fn load(&mut self, path: &Path) -> Result<BTreeMap<String, String>, LoadError>;

    /// Where every dropout layer's random stream stands, by layer name: what lets a checkpoint
    /// of a model with dropout continue bit-identically. Empty for a model without dropout.
    fn rng_states(&self) -> Vec<(String, u128)>;

    /// Moves every dropout layer's random stream to the position [`Model::rng_states`] gave for
    /// it in a model built from the same spec and seed.
    fn restore_rng_states(&mut self, states: &[(String, u128)]) -> Result<()>;
}
