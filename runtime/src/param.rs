//! Parameters and buffers as optimizers and weights I/O see them: every model (the dynamic
//! executor and generated ones) exposes them through [`Visit`] in a stable order, under PyTorch
//! state_dict names, in PyTorch layouts (OIHW conv weights, `[out, in]` linear weights).
//! Parameters can be frozen by name ([`freeze`]): PyTorch's `requires_grad = False`.

use ndarray::ArrayD;

use crate::error::{Error, Result};

/// A trainable tensor and its gradient (same shape). Backward passes overwrite `grad`.
#[derive(Clone, Debug)]
pub struct Param {
    /// Current value.
    pub value: ArrayD<f32>,
    /// Gradient of the loss with respect to `value`, written by the last backward pass.
    pub grad: ArrayD<f32>,
    /// Whether backward computes `grad` and optimizers update `value` (PyTorch's
    /// `requires_grad`). A frozen parameter's layer skips its gradient (which stays as it was,
    /// zero after [`freeze`]) and optimizers leave it, and its momentum or moment buffers, as
    /// they are, as `torch.optim` skips a parameter whose `grad` is `None`. Input gradients
    /// still flow through its layer.
    pub requires_grad: bool,
}

impl Param {
    /// A trainable parameter holding `value`, its gradient zero.
    pub fn new(value: ArrayD<f32>) -> Param {
        Param {
            grad: ArrayD::zeros(value.raw_dim()),
            value,
            requires_grad: true,
        }
    }
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
///     w: Param::new(ArrayD::from_elem(vec![1], 2.0)),
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

    /// Calls `f` once per entry for a caller that only reads them (an optimizer checking the
    /// model before it changes anything): the entries of [`Visit::visit`], in its order. The
    /// default calls `visit`; a model whose `visit` also does work for the changes `f` may make
    /// (the executor's and generated models' layers repack or forget their packed weights)
    /// overrides it to skip that work.
    fn visit_read(&mut self, f: &mut dyn FnMut(EntryRef<'_>)) {
        self.visit(&mut |entry| f(entry.read()));
    }
}

impl Entry<'_> {
    /// The entry, read-only.
    pub fn read(&self) -> EntryRef<'_> {
        match self {
            Entry::Param { name, param } => EntryRef::Param { name, param },
            Entry::Buffer { name, value } => EntryRef::Buffer { name, value },
            Entry::Counter { name, value } => EntryRef::Counter {
                name,
                value: **value,
            },
        }
    }
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

/// Whether the state_dict name `name` matches `pattern`: a glob where `*` stands for any run of
/// characters, dots included (`layer1.*`, `*.bias`), or a module prefix (`layer1` matches
/// `layer1.0.conv1.weight`, not `layer10.weight`), or the whole name.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name == pattern
            || name
                .strip_prefix(pattern)
                .is_some_and(|rest| rest.starts_with('.'));
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

/// `*`-only glob matching, iterative with one backtracking point (linear in practice, never
/// exponential).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Sets `requires_grad` on every parameter of `model` whose name matches `pattern` (see
/// [`name_matches`]) and returns their names, in visit order; a frozen parameter's gradient is
/// zeroed. A pattern that matches no parameter is an error listing the model's parameter names.
///
/// ```
/// use ndarray::ArrayD;
/// use cnnc_runtime::{Entry, Param, Visit, param};
///
/// struct Two { conv: Param, fc: Param }
/// impl Visit for Two {
///     fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
///         f(Entry::Param { name: "conv1.weight", param: &mut self.conv });
///         f(Entry::Param { name: "fc.weight", param: &mut self.fc });
///     }
/// }
/// let p = || Param::new(ArrayD::zeros(vec![2]));
/// let mut model = Two { conv: p(), fc: p() };
/// assert_eq!(param::freeze(&mut model, "conv1")?, ["conv1.weight"]);
/// assert!(!model.conv.requires_grad && model.fc.requires_grad);
/// let err = param::freeze(&mut model, "layer9.*").unwrap_err();
/// assert!(err.to_string().contains("conv1.weight, fc.weight"), "{err}");
/// # Ok::<(), cnnc_runtime::Error>(())
/// ```
pub fn freeze(model: &mut dyn Visit, pattern: &str) -> Result<Vec<String>> {
    set_requires_grad(model, pattern, false)
}

/// Undoes [`freeze`]: the matching parameters train again (their gradient is written by the next
/// backward pass).
pub fn unfreeze(model: &mut dyn Visit, pattern: &str) -> Result<Vec<String>> {
    set_requires_grad(model, pattern, true)
}

/// Sets `requires_grad` to `value` on the parameters matching `pattern`; see [`freeze`].
pub fn set_requires_grad(model: &mut dyn Visit, pattern: &str, value: bool) -> Result<Vec<String>> {
    let mut matched = Vec::new();
    let mut names = Vec::new();
    model.visit(&mut |entry| {
        let Entry::Param { name, param } = entry else {
            return;
        };
        if name_matches(pattern, name) {
            param.requires_grad = value;
            if !value {
                param.grad.fill(0.0);
            }
            matched.push(name.to_owned());
        } else if matched.is_empty() {
            names.push(name.to_owned());
        }
    });
    if matched.is_empty() {
        return Err(Error::NoParamMatches {
            pattern: pattern.to_owned(),
            names,
        });
    }
    Ok(matched)
}

/// The names of `model`'s frozen parameters, in visit order.
pub fn frozen(model: &mut dyn Visit) -> Vec<String> {
    let mut names = Vec::new();
    model.visit(&mut |entry| {
        if let Entry::Param { name, param } = entry
            && !param.requires_grad
        {
            names.push(name.to_owned());
        }
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_prefixes_and_globs() {
        assert!(name_matches("fc.weight", "fc.weight"));
        assert!(name_matches("layer1", "layer1.0.conv1.weight"));
        assert!(!name_matches("layer1", "layer10.weight"));
        assert!(name_matches("layer1.*", "layer1.0.conv1.weight"));
        assert!(!name_matches("layer1.*", "layer1"));
        assert!(name_matches("*.bias", "layer1.0.bn1.bias"));
        assert!(!name_matches("*.bias", "fc.weight"));
        assert!(name_matches("*conv*", "layer2.1.conv2.weight"));
        assert!(name_matches("*", "anything"));
        assert!(!name_matches("fc", "fc2.weight"));
    }
}
