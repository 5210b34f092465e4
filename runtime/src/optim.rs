//! Optimizers with `torch.optim`'s exact update rules: SGD (momentum, dampening, Nesterov, weight
//! decay), Adam and AdamW (bias correction, optional AMSGrad). They walk a model through
//! [`Visit`], update [`Entry::Param`] values from their gradients and never touch buffers.
//!
//! Arithmetic follows PyTorch's single-tensor CPU implementation operation by operation:
//! hyper-parameters are Python floats (`f64` here), scalar expressions such as the bias
//! corrections are evaluated in `f64`, and each is rounded to `f32` where PyTorch hands it to a
//! tensor kernel. Where PyTorch's vectorised kernels use a fused multiply-add (`add` with
//! `alpha`, `lerp`) so do we; the remaining kernels (`addcmul`, `addcdiv`) round after every
//! operation. On tests/fixtures/optim.safetensors every configuration is bit-identical to PyTorch
//! 2.15 except AMSGrad, one ulp off on one element that PyTorch computes in its scalar tail loop
//! (where its compiler fused `addcmul` too).
//!
//! A step reads each parameter's `grad` (what a backward pass wrote) and skips a frozen parameter
//! ([`Param::requires_grad`] false), as `torch.optim` skips one whose `grad` is `None`:
//!
//! ```
//! use ndarray::ArrayD;
//! use cnnc_runtime::optim::{AdamConfig, Optimizer, OptimizerConfig, SgdConfig};
//! use cnnc_runtime::{Entry, Param, Visit};
//!
//! struct Two { w: Param, frozen: Param }
//! impl Visit for Two {
//!     fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
//!         f(Entry::Param { name: "w", param: &mut self.w });
//!         f(Entry::Param { name: "frozen", param: &mut self.frozen });
//!     }
//! }
//! let mut model = Two {
//!     w: Param::new(ArrayD::from_elem(vec![2], 1.0)),
//!     frozen: Param::new(ArrayD::from_elem(vec![2], 1.0)),
//! };
//! model.frozen.requires_grad = false;
//!
//! // torch.optim.SGD(params, lr=0.1, momentum=0.9)
//! let mut sgd = OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).build()?;
//! for _ in 0..2 {
//!     model.w.grad.fill(0.5); // what each backward pass writes
//!     sgd.step(&mut model)?;
//! }
//! // Step 1: buffer 0.5, w = 1 - 0.05; step 2: buffer 0.9 * 0.5 + 0.5 = 0.95, w -= 0.095.
//! assert!((model.w.value[[0]] - 0.855).abs() < 1e-6);
//! assert_eq!(model.frozen.value[[0]], 1.0, "a frozen parameter is not stepped");
//! // The momentum buffers, as `optimizer.state_dict()` names them, for a checkpoint.
//! let state = sgd.export_state();
//! assert_eq!(state.step, 2);
//! assert_eq!(state.tensors[0].0, "w.momentum_buffer");
//!
//! // torch.optim.AdamW(params, lr=1e-3): decoupled weight decay 0.01.
//! let adamw = OptimizerConfig::Adam(AdamConfig::adamw(1e-3)).build()?;
//! assert_eq!(adamw.lr(), 1e-3);
//! # Ok::<(), cnnc_runtime::optim::OptimError>(())
//! ```

use std::collections::HashMap;

use ndarray::ArrayD;

use crate::param::{Entry, EntryRef, Param, Visit};
use crate::simd::multiversion;

/// Hyper-parameters of `torch.optim.SGD` (same names, same defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor; 0 disables the momentum buffer.
    pub momentum: f64,
    /// Dampening applied to the gradient when it enters the momentum buffer (not on step 1).
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr` (no momentum, no weight decay).
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl Default for SgdConfig {
    /// `torch.optim.SGD`'s defaults (`lr=1e-3`).
    fn default() -> Self {
        SgdConfig::new(1e-3)
    }
}

/// Hyper-parameters of `torch.optim.Adam` and `torch.optim.AdamW` (same names, same defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: [f64; 2],
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay: an L2 penalty added to the gradient (Adam) or a decoupled shrinking of the
    /// weights (AdamW, see `decoupled_weight_decay`).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Decay the weights directly (`param *= 1 - lr * weight_decay`) as AdamW does.
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam(lr=lr)`: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            lr,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled_weight_decay: false,
        }
    }

    /// `torch.optim.AdamW(lr=lr)`: as [`AdamConfig::adam`] with decoupled weight decay 1e-2.
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..AdamConfig::adam(lr)
        }
    }
}

/// Any optimizer configuration, as a training recipe names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.Adam` or `torch.optim.AdamW` (by `decoupled_weight_decay`).
    Adam(AdamConfig),
}

impl OptimizerConfig {
    /// Builds the optimizer, checking the hyper-parameters as PyTorch's constructors do.
    pub fn build(self) -> Result<Box<dyn Optimizer>, OptimError> {
        Ok(match self {
            OptimizerConfig::Sgd(config) => Box::new(Sgd::new(config)?),
            OptimizerConfig::Adam(config) => Box::new(Adam::new(config)?),
        })
    }
}

/// What went wrong in an optimizer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptimError {
    /// A hyper-parameter PyTorch would reject.
    #[error("invalid {optimizer} configuration: {reason}")]
    Config {
        /// `sgd`, `adam` or `adamw`.
        optimizer: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A parameter's gradient does not have the parameter's shape.
    #[error("parameter `{name}` has shape {value:?} but its gradient has shape {grad:?}")]
    GradShape {
        /// State-dict name of the parameter.
        name: String,
        /// Shape of the value.
        value: Vec<usize>,
        /// Shape of the gradient.
        grad: Vec<usize>,
    },
    /// A parameter or gradient is not stored in standard (C-contiguous) layout.
    #[error("parameter `{name}`: the optimizer needs its value and gradient in standard layout")]
    Layout {
        /// State-dict name of the parameter.
        name: String,
    },
    /// The model's parameters are not the ones this optimizer's state was made for.
    #[error("the model's parameters do not match the optimizer state: {reason}")]
    ModelChanged {
        /// The first difference found.
        reason: String,
    },
    /// An imported optimizer state does not fit this optimizer and model; lists every problem.
    #[error("cannot import {optimizer} state: {}", join(problems))]
    State {
        /// `sgd`, `adam` or `adamw`.
        optimizer: &'static str,
        /// Every problem found.
        problems: Vec<String>,
    },
}

fn join(problems: &[String]) -> String {
    problems.join("; ")
}

/// An optimizer's state in a form a checkpoint can store: named `f32` tensors and step counts.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// `sgd`, `adam` or `adamw`: state only imports into the same kind of optimizer.
    pub optimizer: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// Adam's per-parameter step (PyTorch's `state[p]["step"]`), by parameter name in visit
    /// order: a parameter's step advances only on the steps that update it, so one frozen for a
    /// while and then unfrozen has fewer than [`OptimizerState::step`], and its bias correction
    /// restarts as PyTorch's does. Empty for SGD (which has none) and in states saved before
    /// per-parameter steps were kept: importing one, every parameter's step is `step`.
    pub param_steps: Vec<(String, u64)>,
    /// Per-parameter tensors named `<parameter>.<slot>`, with PyTorch's slot names
    /// (`momentum_buffer`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`), each of the parameter's
    /// shape, in visit order.
    pub tensors: Vec<(String, ArrayD<f32>)>,
}

/// A `torch.optim`-style optimizer over a [`Visit`] model.
pub trait Optimizer {
    /// Applies one update to every parameter of `model` from its current gradient. The first
    /// call sizes the optimizer's state from the model; later calls allocate nothing and fail if
    /// the model's parameters (names, order, shapes) changed. Nothing is updated on error.
    fn step(&mut self, model: &mut dyn Visit) -> Result<(), OptimError>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate for the following steps (what a schedule does between epochs).
    fn set_lr(&mut self, lr: f64);
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// A copy of the optimizer's state, for a checkpoint.
    fn export_state(&self) -> OptimizerState;
    /// Replaces the optimizer's state with `state`, checked against `model`'s parameters. On
    /// error every problem is listed and the optimizer is left unchanged.
    fn import_state(
        &mut self,
        model: &mut dyn Visit,
        state: &OptimizerState,
    ) -> Result<(), OptimError>;
}

/// Per-parameter state buffers, in visit order, each as long as its parameter.
#[derive(Clone, Debug, Default)]
struct Slots {
    /// Parameter names and shapes, recorded at the first step.
    params: Vec<(String, Vec<usize>)>,
    /// `buffers[i][k]`: slot `k` of parameter `i`.
    buffers: Vec<Vec<Vec<f32>>>,
    /// `steps[i]`: the updates parameter `i` has had (Adam's per-parameter step; SGD keeps none).
    steps: Vec<u64>,
}

impl Slots {
    fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Checks that `model`'s parameters can be stepped: gradient shapes and layouts, and, once
    /// the state exists, the same names and shapes in the same order. Collects names and shapes
    /// only when `record` is set (the first step), so later steps allocate nothing.
    fn check(
        &self,
        model: &mut dyn Visit,
        record: bool,
    ) -> Result<Vec<(String, Vec<usize>)>, OptimError> {
        let mut seen = Vec::new();
        let mut index = 0;
        let mut error = None;
        model.visit_read(&mut |entry| {
            let EntryRef::Param { name, param } = entry else {
                return;
            };
            if error.is_some() {
                return;
            }
            error = check_param(name, param).err().or_else(|| {
                if record {
                    seen.push((name.to_owned(), param.value.shape().to_vec()));
                    None
                } else {
                    self.check_known(index, name, param.value.shape())
                }
            });
            index += 1;
        });
        if let Some(error) = error {
            return Err(error);
        }
        if !record && index != self.params.len() {
            return Err(OptimError::ModelChanged {
                reason: format!(
                    "the optimizer holds state for {} parameters, the model has {index}",
                    self.params.len()
                ),
            });
        }
        Ok(seen)
    }

    fn check_known(&self, index: usize, name: &str, shape: &[usize]) -> Option<OptimError> {
        let reason = match self.params.get(index) {
            None => format!("unexpected parameter `{name}` at position {index}"),
            Some((known, _)) if known != name => {
                format!("expected `{known}` at position {index}, found `{name}`")
            }
            Some((_, known)) if known.as_slice() != shape => {
                format!("`{name}` had shape {known:?}, now {shape:?}")
            }
            Some(_) => return None,
        };
        Some(OptimError::ModelChanged { reason })
    }

    /// Runs `update(value, grad, slots)` on every parameter that requires a gradient, in visit
    /// order: frozen ones keep their value and their slots, as `torch.optim` skips a parameter
    /// whose `grad` is `None`.
    fn for_each(
        &mut self,
        model: &mut dyn Visit,
        mut update: impl FnMut(&mut [f32], &[f32], &mut [Vec<f32>]),
    ) {
        let mut buffers = self.buffers.iter_mut();
        model.visit(&mut |entry| {
            let Entry::Param { param, .. } = entry else {
                return;
            };
            let slots = buffers.next();
            if !param.requires_grad {
                return;
            }
            let (Some(value), Some(grad), Some(slots)) =
                (param.value.as_slice_mut(), param.grad.as_slice(), slots)
            else {
                // `check` ran first and rejected every model that could get here.
                return;
            };
            update(value, grad, slots);
        });
    }

    /// Like [`Slots::for_each`], handing `update` the parameter's step counting this update
    /// (from 1), which advances only for the parameters updated.
    fn for_each_counted(
        &mut self,
        model: &mut dyn Visit,
        mut update: impl FnMut(&mut [f32], &[f32], &mut [Vec<f32>], u64),
    ) {
        let mut buffers = self.buffers.iter_mut().zip(self.steps.iter_mut());
        model.visit(&mut |entry| {
            let Entry::Param { param, .. } = entry else {
                return;
            };
            let slots = buffers.next();
            if !param.requires_grad {
                return;
            }
            let (Some(value), Some(grad), Some((slots, step))) =
                (param.value.as_slice_mut(), param.grad.as_slice(), slots)
            else {
                // `check` ran first and rejected every model that could get here.
                return;
            };
            *step += 1;
            update(value, grad, slots, *step);
        });
    }

    /// The per-parameter steps by name, for [`OptimizerState::param_steps`].
    fn export_steps(&self) -> Vec<(String, u64)> {
        let names = self.params.iter().map(|(name, _)| name.clone());
        names.zip(self.steps.iter().copied()).collect()
    }

    fn export(&self, slot_names: &[&str]) -> Vec<(String, ArrayD<f32>)> {
        let mut tensors = Vec::new();
        for ((name, shape), slots) in self.params.iter().zip(&self.buffers) {
            for (slot, data) in slot_names.iter().zip(slots) {
                // Shapes were recorded from the very arrays the buffers were sized from.
                if let Ok(array) = ArrayD::from_shape_vec(shape.clone(), data.clone()) {
                    tensors.push((format!("{name}.{slot}"), array));
                }
            }
        }
        tensors
    }

    /// Builds the slots `state` describes for `model`, or lists every mismatch.
    fn import(
        model: &mut dyn Visit,
        state: &OptimizerState,
        optimizer: &'static str,
        slot_names: &[&str],
        counted: bool,
    ) -> Result<Slots, OptimError> {
        let mut problems = Vec::new();
        if state.optimizer != optimizer {
            problems.push(format!("the state was saved by `{}`", state.optimizer));
        }
        if !counted && !state.param_steps.is_empty() {
            problems.push(format!("{optimizer} keeps no per-parameter steps"));
        }
        let empty = Slots::default();
        let params = empty.check(model, true)?;
        let mut given: HashMap<&str, &ArrayD<f32>> = HashMap::new();
        for (name, tensor) in &state.tensors {
            if given.insert(name, tensor).is_some() {
                problems.push(format!("tensor `{name}` appears twice"));
            }
        }
        let mut buffers = Vec::with_capacity(params.len());
        // Before the first step PyTorch has no per-parameter state at all.
        let expected: &[&str] = if state.step == 0 { &[] } else { slot_names };
        for (name, shape) in &params {
            let mut slots = Vec::with_capacity(expected.len());
            for slot in expected {
                let key = format!("{name}.{slot}");
                match given.remove(key.as_str()) {
                    None => problems.push(format!("missing tensor `{key}`")),
                    Some(t) if t.shape() != shape.as_slice() => problems.push(format!(
                        "tensor `{key}` has shape {:?}, the parameter has shape {shape:?}",
                        t.shape()
                    )),
                    Some(t) => slots.push(t.iter().copied().collect()),
                }
            }
            buffers.push(slots);
        }
        let mut unexpected: Vec<&str> = given.into_keys().collect();
        unexpected.sort_unstable();
        problems.extend(
            unexpected
                .iter()
                .map(|name| format!("unexpected tensor `{name}`")),
        );
        let steps = match counted {
            true => import_steps(state, &params, &mut problems),
            false => Vec::new(),
        };
        if !problems.is_empty() {
            return Err(OptimError::State {
                optimizer,
                problems,
            });
        }
        if state.step == 0 {
            return Ok(Slots::default());
        }
        Ok(Slots {
            params,
            buffers,
            steps,
        })
    }
}

/// Each of `params`' step from `state`: its [`OptimizerState::param_steps`] entry, or the
/// optimizer's step for every parameter when the state has none (saved before they were kept).
/// Adds a problem for a parameter missing or listed twice, an unknown name, and a step past the
/// optimizer's.
fn import_steps(
    state: &OptimizerState,
    params: &[(String, Vec<usize>)],
    problems: &mut Vec<String>,
) -> Vec<u64> {
    if state.param_steps.is_empty() {
        return vec![state.step; params.len()];
    }
    let mut given: HashMap<&str, u64> = HashMap::new();
    for (name, step) in &state.param_steps {
        if given.insert(name, *step).is_some() {
            problems.push(format!("the step of `{name}` appears twice"));
        }
        if *step > state.step {
            problems.push(format!(
                "`{name}` is at step {step}, past the optimizer's step {}",
                state.step
            ));
        }
    }
    let mut steps = Vec::with_capacity(params.len());
    for (name, _) in params {
        match given.remove(name.as_str()) {
            Some(step) => steps.push(step),
            None => problems.push(format!("no step for `{name}`")),
        }
    }
    let mut unexpected: Vec<&str> = given.into_keys().collect();
    unexpected.sort_unstable();
    problems.extend(
        unexpected
            .iter()
            .map(|name| format!("a step for unknown parameter `{name}`")),
    );
    steps
}

fn check_param(name: &str, param: &Param) -> Result<(), OptimError> {
    if param.value.shape() != param.grad.shape() {
        return Err(OptimError::GradShape {
            name: name.to_owned(),
            value: param.value.shape().to_vec(),
            grad: param.grad.shape().to_vec(),
        });
    }
    if !param.value.is_standard_layout() || !param.grad.is_standard_layout() {
        return Err(OptimError::Layout {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Validates `model` for a step and, on the first step, sizes `slots` with `count` zeroed buffers
/// per parameter.
fn prepare(slots: &mut Slots, model: &mut dyn Visit, count: usize) -> Result<(), OptimError> {
    let first = slots.is_empty();
    let params = slots.check(model, first)?;
    if first {
        slots.buffers = params
            .iter()
            .map(|(_, shape)| vec![vec![0.0; shape.iter().product()]; count])
            .collect();
        slots.steps = vec![0; params.len()];
        slots.params = params;
    }
    Ok(())
}

fn finite_non_negative(value: f64, what: &str) -> Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be a finite number >= 0, got {value}"))
    }
}

/// `torch.optim.SGD`.
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    steps: u64,
    /// One `momentum_buffer` per parameter when `momentum != 0`.
    slots: Slots,
}

impl Sgd {
    /// Checks `config` as `torch.optim.SGD` does and builds the optimizer.
    pub fn new(config: SgdConfig) -> Result<Self, OptimError> {
        let invalid = |reason| OptimError::Config {
            optimizer: "sgd",
            reason,
        };
        finite_non_negative(config.lr, "lr").map_err(invalid)?;
        finite_non_negative(config.momentum, "momentum").map_err(invalid)?;
        finite_non_negative(config.weight_decay, "weight_decay").map_err(invalid)?;
        if !config.dampening.is_finite() {
            return Err(invalid(format!(
                "dampening must be finite, got {}",
                config.dampening
            )));
        }
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(invalid(
                "nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(Sgd {
            config,
            steps: 0,
            slots: Slots::default(),
        })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    fn slot_names(&self) -> &'static [&'static str] {
        if self.config.momentum != 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        }
    }
}

/// Most elements one task of an optimizer's update covers: parameters this large or larger are
/// updated by several threads at once, in runs of this many (the update is element-wise, so the
/// values do not depend on how it is split). Smaller ones are updated by the calling thread.
const UPDATE_RUN: usize = 1 << 15;

/// Runs `update(values, grads, buffers)` over `value`, `grad` and `buffer` (when there is one)
/// in matching runs of [`UPDATE_RUN`] elements, in parallel when there are several.
fn par_runs(
    value: &mut [f32],
    grad: &[f32],
    buffer: Option<&mut [f32]>,
    update: impl Fn(&mut [f32], &[f32], Option<&mut [f32]>) + Sync,
) {
    use rayon::prelude::*;
    if value.len() <= UPDATE_RUN {
        return update(value, grad, buffer);
    }
    let runs = value
        .par_chunks_mut(UPDATE_RUN)
        .zip(grad.par_chunks(UPDATE_RUN));
    match buffer {
        Some(buffer) => runs
            .zip(buffer.par_chunks_mut(UPDATE_RUN))
            .for_each(|((v, g), b)| update(v, g, Some(b))),
        None => runs.for_each(|(v, g)| update(v, g, None)),
    }
}

multiversion! {
    /// SGD's update of a run of one parameter's elements and of its momentum buffer, when it
    /// has one (`first`: the step that starts the buffers).
    fn sgd_run(value: &mut [f32], grad: &[f32], buffer: Option<&mut [f32]>, c: SgdConfig, first: bool) {
        let weight_decay = c.weight_decay as f32;
        let momentum = c.momentum as f32;
        let keep = (1.0 - c.dampening) as f32;
        let neg_lr = (-c.lr) as f32;
        let plain = c.weight_decay == 0.0 && !c.nesterov && !first;
        match buffer {
            // The common case (momentum, no weight decay, no Nesterov) as a loop of its own, with
            // exactly the operations of the general one below.
            Some(buffer) if plain => {
                for ((p, &g), b) in value.iter_mut().zip(grad).zip(buffer.iter_mut()) {
                    *b = g.mul_add(keep, *b * momentum);
                    *p = b.mul_add(neg_lr, *p);
                }
            }
            mut buffer => {
                for (i, (p, &g)) in value.iter_mut().zip(grad).enumerate() {
                    let mut d = g;
                    if c.weight_decay != 0.0 {
                        d = p.mul_add(weight_decay, d);
                    }
                    if let Some(buffer) = buffer.as_deref_mut() {
                        // PyTorch starts the buffer as a copy of the first gradient, undampened.
                        let b = if first {
                            d
                        } else {
                            d.mul_add(keep, buffer[i] * momentum)
                        };
                        buffer[i] = b;
                        d = if c.nesterov {
                            b.mul_add(momentum, d)
                        } else {
                            b
                        };
                    }
                    *p = d.mul_add(neg_lr, *p);
                }
            }
        }
    }
}

/// SGD's update of every parameter (`first`: the step that starts the momentum buffers).
fn sgd_update(slots: &mut Slots, model: &mut dyn Visit, c: SgdConfig, first: bool) {
    slots.for_each(model, |value, grad, slots| {
        let buffer = slots.first_mut().map(|b| b.as_mut_slice());
        par_runs(value, grad, buffer, |v, g, b| sgd_run(v, g, b, c, first));
    });
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Visit) -> Result<(), OptimError> {
        let count = self.slot_names().len();
        prepare(&mut self.slots, model, count)?;
        sgd_update(&mut self.slots, model, self.config, self.steps == 0);
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn export_state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: "sgd".into(),
            step: self.steps,
            param_steps: Vec::new(),
            tensors: self.slots.export(self.slot_names()),
        }
    }

    fn import_state(
        &mut self,
        model: &mut dyn Visit,
        state: &OptimizerState,
    ) -> Result<(), OptimError> {
        self.slots = Slots::import(model, state, "sgd", self.slot_names(), false)?;
        self.steps = state.step;
        Ok(())
    }
}

/// `torch.optim.Adam` and `torch.optim.AdamW`.
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    steps: u64,
    /// `exp_avg`, `exp_avg_sq` and, with AMSGrad, `max_exp_avg_sq` per parameter.
    slots: Slots,
}

impl Adam {
    /// Checks `config` as `torch.optim.Adam` does and builds the optimizer.
    pub fn new(config: AdamConfig) -> Result<Self, OptimError> {
        let name = if config.decoupled_weight_decay {
            "adamw"
        } else {
            "adam"
        };
        let invalid = |reason| OptimError::Config {
            optimizer: name,
            reason,
        };
        finite_non_negative(config.lr, "lr").map_err(invalid)?;
        finite_non_negative(config.eps, "eps").map_err(invalid)?;
        finite_non_negative(config.weight_decay, "weight_decay").map_err(invalid)?;
        for (i, beta) in config.betas.into_iter().enumerate() {
            if !(0.0..1.0).contains(&beta) {
                return Err(invalid(format!("betas[{i}] must be in [0, 1), got {beta}")));
            }
        }
        Ok(Adam {
            config,
            steps: 0,
            slots: Slots::default(),
        })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    fn name(&self) -> &'static str {
        if self.config.decoupled_weight_decay {
            "adamw"
        } else {
            "adam"
        }
    }

    fn slot_names(&self) -> &'static [&'static str] {
        if self.config.amsgrad {
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            &["exp_avg", "exp_avg_sq"]
        }
    }
}

/// `torch.lerp(start, end, weight)` as PyTorch's vectorised CPU kernel computes it.
#[inline(always)]
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(end - start, start)
    } else {
        (weight - 1.0).mul_add(end - start, end)
    }
}

multiversion! {
    /// Adam's (or AdamW's) update of every parameter, each at its own step (PyTorch's
    /// per-parameter `step`, counting this update).
    fn adam_update(slots: &mut Slots, model: &mut dyn Visit, c: AdamConfig) {
        let [beta1, beta2] = c.betas;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let weight_decay = c.weight_decay as f32;
        let (one_minus_beta1, beta2_f32) = ((1.0 - beta1) as f32, beta2 as f32);
        let one_minus_beta2 = (1.0 - beta2) as f32;
        let eps = c.eps as f32;
        let decays = c.weight_decay != 0.0;
        slots.for_each_counted(model, |value, grad, slots, step| {
            let [exp_avg, exp_avg_sq, rest @ ..] = slots else {
                return;
            };
            // PyTorch evaluates these in Python floats from the parameter's float step count.
            let step = step as f64;
            let bias_correction1 = 1.0 - beta1.powf(step);
            let bias_correction2_sqrt = (1.0 - beta2.powf(step)).powf(0.5);
            let neg_step_size = (-(c.lr / bias_correction1)) as f32;
            let bias_correction2_sqrt = bias_correction2_sqrt as f32;
            let mut max_exp_avg_sq = rest.first_mut().map(|m| m.as_mut_slice());
            for (i, (p, &g)) in value.iter_mut().zip(grad).enumerate() {
                let mut g = g;
                if decays && c.decoupled_weight_decay {
                    *p *= decay;
                } else if decays {
                    g = p.mul_add(weight_decay, g);
                }
                exp_avg[i] = lerp(exp_avg[i], g, one_minus_beta1);
                exp_avg_sq[i] = exp_avg_sq[i] * beta2_f32 + one_minus_beta2 * g * g;
                let second = match max_exp_avg_sq.as_deref_mut() {
                    Some(max) => {
                        max[i] = max[i].max(exp_avg_sq[i]);
                        max[i]
                    }
                    None => exp_avg_sq[i],
                };
                let denom = second.sqrt() / bias_correction2_sqrt + eps;
                *p += neg_step_size * exp_avg[i] / denom;
            }
        });
    }
}

impl Optimizer for Adam {
    fn step(&mut self, model: &mut dyn Visit) -> Result<(), OptimError> {
        let count = self.slot_names().len();
        prepare(&mut self.slots, model, count)?;
        adam_update(&mut self.slots, model, self.config);
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn export_state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: self.name().into(),
            step: self.steps,
            param_steps: self.slots.export_steps(),
            tensors: self.slots.export(self.slot_names()),
        }
    }

    fn import_state(
        &mut self,
        model: &mut dyn Visit,
        state: &OptimizerState,
    ) -> Result<(), OptimError> {
        self.slots = Slots::import(model, state, self.name(), self.slot_names(), true)?;
        self.steps = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn, arr1};

    use super::*;

    /// One parameter `p` and one counter, enough for hand-computed updates.
    struct One {
        param: Param,
        steps: i64,
    }

    impl One {
        fn new(value: &[f32]) -> Self {
            let value = arr1(value).into_dyn();
            One {
                param: Param::new(value),
                steps: 0,
            }
        }

        fn step(&mut self, optimizer: &mut dyn Optimizer, grad: &[f32]) -> Vec<f32> {
            self.param.grad = arr1(grad).into_dyn();
            optimizer.step(self).expect("valid step");
            self.param.value.iter().copied().collect()
        }
    }

    impl Visit for One {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            f(Entry::Param {
                name: "p",
                param: &mut self.param,
            });
            f(Entry::Counter {
                name: "n",
                value: &mut self.steps,
            });
        }
    }

    fn sgd(config: SgdConfig) -> Sgd {
        Sgd::new(config).expect("valid config")
    }

    // Values below are exact in binary, so each expected result is exact too.
    #[test]
    fn sgd_momentum_starts_its_buffer_as_the_first_gradient() {
        let mut model = One::new(&[1.0]);
        let mut opt = sgd(SgdConfig {
            momentum: 0.5,
            ..SgdConfig::new(0.5)
        });
        assert_eq!(model.step(&mut opt, &[1.0]), [0.5]); // buf = 1
        assert_eq!(model.step(&mut opt, &[1.0]), [-0.25]); // buf = 0.5 * 1 + 1
        assert_eq!(model.steps, 0, "counters are buffers, not parameters");
    }

    #[test]
    fn sgd_nesterov_looks_ahead_along_the_buffer() {
        let mut model = One::new(&[1.0]);
        let config = SgdConfig {
            momentum: 0.5,
            nesterov: true,
            ..SgdConfig::new(0.5)
        };
        let mut opt = sgd(config);
        assert_eq!(model.step(&mut opt, &[1.0]), [0.25]); // d = 1 + 0.5 * 1
        assert_eq!(model.step(&mut opt, &[1.0]), [-0.625]); // buf = 1.5, d = 1 + 0.75
    }

    #[test]
    fn sgd_dampening_spares_the_first_step() {
        let mut model = One::new(&[0.0]);
        let config = SgdConfig {
            momentum: 0.5,
            dampening: 0.5,
            ..SgdConfig::new(1.0)
        };
        let mut opt = sgd(config);
        assert_eq!(model.step(&mut opt, &[2.0]), [-2.0]); // buf = 2, undampened
        assert_eq!(model.step(&mut opt, &[2.0]), [-4.0]); // buf = 0.5 * 2 + 0.5 * 2
    }

    #[test]
    fn sgd_weight_decay_adds_the_l2_gradient() {
        let mut model = One::new(&[2.0, -4.0]);
        let mut opt = sgd(SgdConfig {
            weight_decay: 0.25,
            ..SgdConfig::new(0.5)
        });
        assert_eq!(model.step(&mut opt, &[0.0, 1.0]), [1.75, -4.0]);
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_about_lr() {
        let mut model = One::new(&[1.0, 1.0, 1.0]);
        let mut opt = Adam::new(AdamConfig::adam(0.125)).expect("valid config");
        let after = model.step(&mut opt, &[4.0, -0.5, 0.0]);
        // Bias correction turns m and v into g and g^2, so the step is lr * g / (|g| + eps).
        assert!((after[0] - 0.875).abs() < 1e-6, "{after:?}");
        assert!((after[1] - 1.125).abs() < 1e-6, "{after:?}");
        assert_eq!(after[2], 1.0);
    }

    #[test]
    fn adamw_decays_weights_directly_and_adam_through_the_gradient() {
        let mut model = One::new(&[2.0]);
        let config = AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::adamw(0.25)
        };
        let mut opt = Adam::new(config).expect("valid config");
        assert_eq!(model.step(&mut opt, &[0.0]), [1.75]); // 2 * (1 - 0.25 * 0.5), no Adam move
        let mut model = One::new(&[2.0]);
        let config = AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::adam(0.25)
        };
        let mut opt = Adam::new(config).expect("valid config");
        let after = model.step(&mut opt, &[0.0]); // gradient 0 + 0.5 * 2 = 1: moves by lr
        assert!((after[0] - 1.75).abs() < 1e-6, "{after:?}");
    }

    #[test]
    fn amsgrad_keeps_the_largest_second_moment() {
        let config = AdamConfig {
            amsgrad: true,
            betas: [0.5, 0.5],
            ..AdamConfig::adam(0.1)
        };
        let mut opt = Adam::new(config).expect("valid config");
        let mut model = One::new(&[0.0]);
        model.step(&mut opt, &[2.0]);
        model.step(&mut opt, &[0.0]);
        let state = opt.export_state();
        let slot = |name: &str| {
            let (_, t) = state
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .expect("slot exported");
            t[[0]]
        };
        assert_eq!(slot("p.exp_avg_sq"), 1.0); // 0.5 * (0.5 * 4)
        assert_eq!(slot("p.max_exp_avg_sq"), 2.0);
    }

    #[test]
    fn a_bad_gradient_updates_nothing() {
        let mut model = One::new(&[1.0, 2.0]);
        let mut opt = sgd(SgdConfig::new(1.0));
        model.param.grad = ArrayD::zeros(IxDyn(&[3]));
        let error = opt.step(&mut model).expect_err("wrong gradient shape");
        assert_eq!(
            error.to_string(),
            "parameter `p` has shape [2] but its gradient has shape [3]"
        );
        assert_eq!(
            model.param.value.iter().copied().collect::<Vec<_>>(),
            [1.0, 2.0]
        );
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn a_changed_model_is_refused_after_the_first_step() {
        let mut opt = Adam::new(AdamConfig::adam(0.1)).expect("valid config");
        One::new(&[1.0, 2.0]).step(&mut opt, &[1.0, 1.0]);
        let mut bigger = One::new(&[1.0, 2.0, 3.0]);
        bigger.param.grad = ArrayD::zeros(IxDyn(&[3]));
        let error = opt.step(&mut bigger).expect_err("shape changed");
        assert!(matches!(error, OptimError::ModelChanged { .. }), "{error}");
    }

    #[test]
    fn importing_mismatched_state_lists_every_problem() {
        let mut model = One::new(&[1.0, 2.0]);
        let mut opt = Adam::new(AdamConfig::adam(0.1)).expect("valid config");
        let state = OptimizerState {
            optimizer: "sgd".into(),
            step: 4,
            param_steps: Vec::new(),
            tensors: vec![
                ("p.exp_avg".into(), ArrayD::zeros(IxDyn(&[3]))),
                ("q.exp_avg".into(), ArrayD::zeros(IxDyn(&[2]))),
            ],
        };
        let error = opt.import_state(&mut model, &state).expect_err("mismatch");
        let OptimError::State { problems, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            problems,
            &[
                "the state was saved by `sgd`",
                "tensor `p.exp_avg` has shape [3], the parameter has shape [2]",
                "missing tensor `p.exp_avg_sq`",
                "unexpected tensor `q.exp_avg`",
            ]
        );
        assert_eq!(opt.steps(), 0, "a failed import changes nothing");
    }

    /// Parameters `a` and `b`, one value each.
    struct Pair {
        a: Param,
        b: Param,
    }

    impl Pair {
        fn new() -> Self {
            let one = || Param::new(arr1(&[1.0f32]).into_dyn());
            Pair { a: one(), b: one() }
        }

        /// One step with gradients `ga` and `gb` (what a backward pass writes).
        fn step(&mut self, optimizer: &mut dyn Optimizer, ga: f32, gb: f32) -> [f32; 2] {
            self.a.grad.fill(ga);
            self.b.grad.fill(gb);
            optimizer.step(self).expect("valid step");
            [self.a.value[[0]], self.b.value[[0]]]
        }
    }

    impl Visit for Pair {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            f(Entry::Param {
                name: "a",
                param: &mut self.a,
            });
            f(Entry::Param {
                name: "b",
                param: &mut self.b,
            });
        }
    }

    /// `b` frozen for three steps of `a`, then unfrozen: the optimizer and its state.
    fn unfrozen_after_three_steps() -> (Pair, Adam) {
        let mut model = Pair::new();
        let mut opt = Adam::new(AdamConfig::adam(0.1)).expect("valid config");
        model.b.requires_grad = false;
        for _ in 0..3 {
            model.step(&mut opt, 0.5, 0.0);
        }
        model.b.requires_grad = true;
        (model, opt)
    }

    #[test]
    fn adam_bias_correction_counts_each_parameters_own_steps() {
        // torch.optim.Adam keeps `state[p]["step"]` per parameter and advances it only when `p`
        // has a gradient: a parameter unfrozen after 3 steps takes its first step as step 1,
        // `lr * g / (|g| + eps)` (bias correction turns m and v into g and g^2), not as step 4
        // (`lr * (0.1 g / (1 - 0.9^4)) / (sqrt(0.001 g^2 / (1 - 0.999^4)) + eps)`, ~0.058).
        // PyTorch 2.15:
        //   a, b = (torch.nn.Parameter(torch.ones(1)) for _ in range(2))
        //   opt = torch.optim.Adam([a, b], lr=0.1); b.requires_grad_(False)
        //   for _ in range(3): a.grad = torch.full((1,), 0.5); opt.step()
        //   b.requires_grad_(True); a.grad = torch.full((1,), 0.5); b.grad = torch.full((1,), 0.25)
        //   opt.step()  # b: 0.9000000357627869, state steps 4 and 1
        let (mut model, mut opt) = unfrozen_after_three_steps();
        let [_, b] = model.step(&mut opt, 0.5, 0.25);
        let mut alone = One::new(&[1.0]);
        let fresh = alone.step(
            &mut Adam::new(AdamConfig::adam(0.1)).expect("valid"),
            &[0.25],
        );
        assert_eq!(b, fresh[0], "the first step of `b` is a fresh parameter's");
        assert_eq!(b, 0.900_000_04, "PyTorch's value");
        let state = opt.export_state();
        assert_eq!(state.step, 4);
        assert_eq!(
            state.param_steps,
            [("a".to_owned(), 4), ("b".to_owned(), 1)]
        );
    }

    #[test]
    fn per_parameter_steps_round_trip_and_old_states_read_the_global_step() {
        let (mut model, mut opt) = unfrozen_after_three_steps();
        model.step(&mut opt, 0.5, 0.25);
        let state = opt.export_state();
        let mut copy = (
            Pair::new(),
            Adam::new(AdamConfig::adam(0.1)).expect("valid"),
        );
        copy.0.a.value.assign(&model.a.value);
        copy.0.b.value.assign(&model.b.value);
        copy.1
            .import_state(&mut copy.0, &state)
            .expect("state fits");
        assert_eq!(copy.1.export_state(), state);
        let continued = model.step(&mut opt, -0.5, 0.125);
        assert_eq!(copy.0.step(&mut copy.1, -0.5, 0.125), continued);

        // A state saved before per-parameter steps: every parameter at the optimizer's step.
        let old = OptimizerState {
            param_steps: Vec::new(),
            ..state.clone()
        };
        let mut resumed = Adam::new(AdamConfig::adam(0.1)).expect("valid");
        resumed
            .import_state(&mut Pair::new(), &old)
            .expect("old state");
        assert_eq!(
            resumed.export_state().param_steps,
            [("a".to_owned(), 4), ("b".to_owned(), 4)]
        );

        // Steps that do not fit the model are refused, every problem named.
        let bad = OptimizerState {
            param_steps: vec![
                ("a".to_owned(), 5),
                ("a".to_owned(), 1),
                ("c".to_owned(), 1),
            ],
            ..state.clone()
        };
        let error = resumed
            .import_state(&mut Pair::new(), &bad)
            .expect_err("bad steps");
        let OptimError::State { problems, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            problems,
            &[
                "`a` is at step 5, past the optimizer's step 4",
                "the step of `a` appears twice",
                "no step for `b`",
                "a step for unknown parameter `c`",
            ]
        );
        let sgd_state = OptimizerState {
            optimizer: "sgd".into(),
            tensors: Vec::new(),
            ..state
        };
        let error = sgd(SgdConfig::new(0.1))
            .import_state(&mut Pair::new(), &sgd_state)
            .expect_err("sgd has no steps");
        assert!(
            error
                .to_string()
                .contains("sgd keeps no per-parameter steps"),
            "{error}"
        );
    }

    /// A model whose one parameter is several update runs long, counting its `&mut` visits
    /// (reads go through `visit_read`, which it overrides as the executor does).
    struct Large {
        param: Param,
        visits: usize,
    }

    impl Visit for Large {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            self.visits += 1;
            f(Entry::Param {
                name: "w",
                param: &mut self.param,
            });
        }

        fn visit_read(&mut self, f: &mut dyn FnMut(EntryRef<'_>)) {
            f(EntryRef::Param {
                name: "w",
                param: &self.param,
            });
        }
    }

    /// `torch.optim.SGD`'s update of one element, written out as the single-tensor loop does.
    fn sgd_reference(p: &mut f32, g: f32, buf: &mut f32, c: SgdConfig, first: bool) {
        let mut d = g;
        if c.weight_decay != 0.0 {
            d = p.mul_add(c.weight_decay as f32, d);
        }
        if c.momentum != 0.0 {
            *buf = if first {
                d
            } else {
                d.mul_add((1.0 - c.dampening) as f32, *buf * c.momentum as f32)
            };
            d = if c.nesterov {
                buf.mul_add(c.momentum as f32, d)
            } else {
                *buf
            };
        }
        *p = d.mul_add((-c.lr) as f32, *p);
    }

    #[test]
    fn sgd_updates_long_parameters_in_parallel_runs_bit_for_bit() {
        let n = 3 * UPDATE_RUN + 17;
        let configs = [
            SgdConfig {
                momentum: 0.9,
                ..SgdConfig::new(0.01)
            },
            SgdConfig {
                momentum: 0.8,
                dampening: 0.25,
                weight_decay: 5e-4,
                ..SgdConfig::new(0.1)
            },
            SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-3,
                ..SgdConfig::new(0.05)
            },
            SgdConfig::new(0.3),
        ];
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 250.0 - 2.0;
        let grad = |step: usize, i: usize| ((i * 104_729 + step * 31) % 997) as f32 / 500.0 - 1.0;
        for config in configs {
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                let mut model = Large {
                    param: Param::new(ArrayD::from_shape_fn(IxDyn(&[n]), |i| value(i[0]))),
                    visits: 0,
                };
                let mut expected: Vec<f32> = (0..n).map(value).collect();
                let mut buffers = vec![0.0; n];
                let mut opt = sgd(config);
                for step in 0..3 {
                    model.param.grad = ArrayD::from_shape_fn(IxDyn(&[n]), |i| grad(step, i[0]));
                    pool.install(|| opt.step(&mut model)).expect("valid step");
                    for (i, (p, b)) in expected.iter_mut().zip(&mut buffers).enumerate() {
                        sgd_reference(p, grad(step, i), b, config, step == 0);
                    }
                    let got = model.param.value.as_slice().expect("contiguous");
                    let same = got
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{config:?}, {threads} thread(s), step {step}");
                }
                assert_eq!(model.visits, 3, "one changing visit a step, reads apart");
            }
        }
    }
}
