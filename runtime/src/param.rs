//! Parameters and buffers as optimizers and weights I/O see them: every model (the dynamic
//! executor and generated ones) exposes them through [`Visit`] in a stable order, under PyTorch
//! state_dict names, in PyTorch layouts (OIHW conv weights, `[out, in]` linear weights).

use ndarray::ArrayD;

/// A trainable tensor and its gradient (same shape). Backward passes overwrite `grad`.
#[derive(Clone, Debug)]
pub struct Param {
    /// Current value.
    pub value: ArrayD<f32>,
    /// Gradient of the loss with respect to `value`, written by the last backward pass.
    pub grad: ArrayD<f32>,
}

/// One entry of a model's state, as [`Visit::visit`] yields it.
#[derive(Debug)]
pub enum Entry<'a> {
    /// A trainable parameter (`<layer>.weight`, `<layer>.bias`).
    Param {
        /// Full state_dict name.
        name: &'a str,
        /// The tensor and its gradient.
        param: &'a mut Param,
    },
    /// A float buffer that is saved but not trained (`running_mean`, `running_var`).
    Buffer {
        /// Full state_dict name.
        name: &'a str,
        /// The buffer.
        value: &'a mut ArrayD<f32>,
    },
    /// An integer counter buffer (`num_batches_tracked`, an int64 scalar in PyTorch).
    Counter {
        /// Full state_dict name.
        name: &'a str,
        /// The counter.
        value: &'a mut i64,
    },
}

/// Visits every parameter and buffer of a model, always in the same order (layer order, then
/// PyTorch's order within a layer: weight, bias, running_mean, running_var, num_batches_tracked).
///
/// Generated models and the executor implement it; so can a model of your own, and then the
/// optimizers and the safetensors I/O work on it:
///
/// ```
/// use ndarray::ArrayD;
/// use cnnc_runtime::optim::{Optimizer, Sgd, SgdConfig};
/// use cnnc_runtime::{Entry, Param, Visit};
///
/// /// `y = w * x`, one weight.
/// struct Scale {
///     w: Param,
/// }
///
/// impl Visit for Scale {
///     fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
///         f(Entry::Param { name: "scale.weight", param: &mut self.w });
///     }
/// }
///
/// let mut model = Scale {
///     w: Param { value: ArrayD::from_elem(vec![1], 2.0), grad: ArrayD::zeros(vec![1]) },
/// };
/// model.w.grad[[0]] = 0.5; // what a backward pass writes
/// let mut sgd = Sgd::new(SgdConfig::new(0.1))?;
/// sgd.step(&mut model)?;
/// assert_eq!(model.w.value[[0]], 2.0 - 0.1 * 0.5);
///
/// // Saved under its state_dict name, loaded back strictly.
/// let path = std::env::temp_dir().join("cnnc_visit_doctest.safetensors");
/// cnnc_runtime::weights::save(&mut model, &path, &Default::default())?;
/// model.w.value[[0]] = 0.0;
/// cnnc_runtime::weights::load(&mut model, &path)?;
/// assert_eq!(model.w.value[[0]], 1.95);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Visit {
    /// Calls `f` once per entry.
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>));
}

/// One entry of a model's state seen read-only, as [`VisitRef::visit_ref`] yields it: the same
/// names and order as [`Entry`].
#[derive(Debug)]
pub enum EntryRef<'a> {
    /// A trainable parameter (`<layer>.weight`, `<layer>.bias`).
    Param {
        /// Full state_dict name.
        name: &'a str,
        /// The tensor and its gradient.
        param: &'a Param,
    },
    /// A float buffer that is saved but not trained (`running_mean`, `running_var`).
    Buffer {
        /// Full state_dict name.
        name: &'a str,
        /// The buffer.
        value: &'a ArrayD<f32>,
    },
    /// An integer counter buffer (`num_batches_tracked`).
    Counter {
        /// Full state_dict name.
        name: &'a str,
        /// The counter.
        value: i64,
    },
}

impl EntryRef<'_> {
    /// The entry's full state_dict name.
    pub fn name(&self) -> &str {
        match self {
            EntryRef::Param { name, .. }
            | EntryRef::Buffer { name, .. }
            | EntryRef::Counter { name, .. } => name,
        }
    }
}

/// [`Visit`] without `&mut`: the same entries, in the same order, to read. Saving and counting
/// parameters need nothing more, so they work on a model shared between threads.
pub trait VisitRef {
    /// Calls `f` once per entry.
    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>));
}
