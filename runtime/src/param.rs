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
pub trait Visit {
    /// Calls `f` once per entry.
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>));
}
