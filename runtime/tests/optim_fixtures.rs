//! Optimizers and learning-rate schedules against PyTorch, on the fixtures written by
//! `tools/make_fixtures.py` (tests/fixtures/optim.safetensors for optimizers in isolation,
//! tests/fixtures/custom_cnn.safetensors for the seed model's first step).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use cnnc_runtime::optim::{Adam, AdamConfig, OptimizerConfig, Sgd, SgdConfig};
use cnnc_runtime::param::{Entry, Param, Visit};
use cnnc_runtime::schedule::LrSchedule;
use cnnc_runtime::weights::{TensorData, TensorFile, read_tensors};
use ndarray::ArrayD;
use serde_json::Value;

fn fixture(name: &str) -> TensorFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    read_tensors(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn f32_tensor(file: &TensorFile, name: &str) -> ArrayD<f32> {
    match file.tensors.get(name) {
        Some(TensorData::F32(a)) => a.clone(),
        other => panic!("fixture tensor `{name}`: expected F32, found {other:?}"),
    }
}

fn f64_tensor(file: &TensorFile, name: &str) -> ArrayD<f64> {
    match file.tensors.get(name) {
        Some(TensorData::F64(a)) => a.clone(),
        other => panic!("fixture tensor `{name}`: expected F64, found {other:?}"),
    }
}

/// Named parameters plus one buffer that optimizers must leave alone.
struct Params {
    params: Vec<(String, Param)>,
    buffer: ArrayD<f32>,
}

impl Params {
    fn new(file: &TensorFile, names: &[&str], prefix: &str) -> Self {
        let params = names
            .iter()
            .map(|&n| {
                let value = f32_tensor(file, &format!("{prefix}{n}"));
                let grad = ArrayD::zeros(value.raw_dim());
                (
                    n.to_owned(),
                    Param {
                        value,
                        grad,
                        requires_grad: true,
                    },
                )
            })
            .collect();
        Params {
            params,
            buffer: ArrayD::from_elem(ndarray::IxDyn(&[3]), 0.5),
        }
    }
}

impl Visit for Params {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        for (name, param) in &mut self.params {
            f(Entry::Param { name, param });
        }
        f(Entry::Buffer {
            name: "running_mean",
            value: &mut self.buffer,
        });
    }
}

/// Largest difference in units in the last place, and the number of differing elements.
fn ulps(actual: &ArrayD<f32>, expected: &ArrayD<f32>) -> (u32, usize) {
    assert_eq!(actual.shape(), expected.shape());
    let key = |v: f32| {
        let bits = v.to_bits() as i64;
        if bits & 0x8000_0000 != 0 {
            -(bits & 0x7fff_ffff)
        } else {
            bits
        }
    };
    let mut worst = 0;
    let mut differing = 0;
    for (&a, &e) in actual.iter().zip(expected) {
        let d = (key(a) - key(e)).unsigned_abs() as u32;
        worst = worst.max(d);
        differing += usize::from(d > 0);
    }
    (worst, differing)
}

fn assert_close(actual: &ArrayD<f32>, expected: &ArrayD<f32>, rel: f32, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let tol = rel * e.abs().max(1e-3);
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: {a} vs PyTorch {e} (tolerance {tol})"
        );
    }
}

fn config_from_json(spec: &Value) -> OptimizerConfig {
    let num = |key: &str, default: f64| spec.get(key).and_then(Value::as_f64).unwrap_or(default);
    let flag = |key: &str| spec.get(key).and_then(Value::as_bool).unwrap_or(false);
    let lr = num("lr", f64::NAN);
    match spec["optimizer"].as_str() {
        Some("SGD") => OptimizerConfig::Sgd(SgdConfig {
            lr,
            momentum: num("momentum", 0.0),
            dampening: num("dampening", 0.0),
            nesterov: flag("nesterov"),
            weight_decay: num("weight_decay", 0.0),
        }),
        Some(kind @ ("Adam" | "AdamW")) => {
            let base = if kind == "Adam" {
                AdamConfig::adam(lr)
            } else {
                AdamConfig::adamw(lr)
            };
            let betas = spec.get("betas").and_then(Value::as_array);
            let beta = |i: usize, d: f64| betas.and_then(|b| b[i].as_f64()).unwrap_or(d);
            OptimizerConfig::Adam(AdamConfig {
                betas: [beta(0, base.betas[0]), beta(1, base.betas[1])],
                eps: num("eps", base.eps),
                weight_decay: num("weight_decay", base.weight_decay),
                amsgrad: flag("amsgrad"),
                ..base
            })
        }
        other => panic!("unknown optimizer {other:?}"),
    }
}

fn optimizers(file: &TensorFile) -> BTreeMap<String, Value> {
    let json = &file.metadata["optimizers"];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("optimizers metadata: {e}"))
}

#[test]
fn every_optimizer_configuration_matches_pytorch_step_by_step() {
    let file = fixture("optim.safetensors");
    let configs = optimizers(&file);
    assert!(
        configs.len() >= 10,
        "the fixture covers every configuration"
    );
    let mut report = Vec::new();
    for (name, spec) in &configs {
        let mut model = Params::new(&file, &["w", "b"], "param.");
        let mut optimizer = config_from_json(spec)
            .build()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mut worst, mut differing) = (0, 0);
        for step in 1..=3 {
            for (p, param) in &mut model.params {
                param.grad = f32_tensor(&file, &format!("grad.{step}.{p}"));
            }
            optimizer
                .step(&mut model)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for (p, param) in &model.params {
                let expected = f32_tensor(&file, &format!("{name}.{step}.{p}"));
                assert_close(
                    &param.value,
                    &expected,
                    1e-6,
                    &format!("{name} step {step} {p}"),
                );
                let (w, d) = ulps(&param.value, &expected);
                worst = worst.max(w);
                differing += d;
            }
        }
        assert!(
            model.buffer.iter().all(|&v| v == 0.5),
            "{name} touched a buffer"
        );
        // PyTorch's optimizer state after step 3, slot by slot.
        let state = optimizer.export_state();
        assert_eq!(state.step, 3);
        let expected: Vec<&String> = file
            .tensors
            .keys()
            .filter(|k| k.starts_with(&format!("{name}.state.")))
            .collect();
        assert_eq!(state.tensors.len(), expected.len(), "{name}: state slots");
        for (slot, tensor) in &state.tensors {
            let torch = f32_tensor(&file, &format!("{name}.state.{slot}"));
            assert_close(tensor, &torch, 1e-6, &format!("{name} state {slot}"));
        }
        // Same operations in the same order as PyTorch: at most an ulp apart (see optim.rs).
        assert!(worst <= 2, "{name}: {worst} ulp from PyTorch");
        report.push(format!(
            "{name}: max {worst} ulp, {differing} values differ"
        ));
    }
    // Visible with --nocapture: how close to bit-exact each configuration is.
    println!("{}", report.join("\n"));
}

#[test]
fn exported_state_resumes_exactly_where_it_left_off() {
    let file = fixture("optim.safetensors");
    for config in [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(0.1)
        }),
        OptimizerConfig::Adam(AdamConfig {
            amsgrad: true,
            ..AdamConfig::adamw(0.01)
        }),
    ] {
        let mut straight = Params::new(&file, &["w", "b"], "param.");
        let mut resumed = Params::new(&file, &["w", "b"], "param.");
        let mut a = config.build().expect("valid config");
        let mut b = config.build().expect("valid config");
        for step in 1..=3 {
            for model in [&mut straight, &mut resumed] {
                for (p, param) in &mut model.params {
                    param.grad = f32_tensor(&file, &format!("grad.{step}.{p}"));
                }
            }
            a.step(&mut straight).expect("step");
            if step == 2 {
                // A fresh optimizer picking up the exported state, as after a checkpoint.
                let state = b.export_state();
                b = config.build().expect("valid config");
                b.import_state(&mut resumed, &state).expect("state fits");
            }
            b.step(&mut resumed).expect("step");
        }
        for ((_, x), (_, y)) in straight.params.iter().zip(&resumed.params) {
            assert_eq!(x.value, y.value);
        }
    }
}

#[test]
fn schedules_match_pytorch_lr_schedulers() {
    let file = fixture("optim.safetensors");
    let specs: BTreeMap<String, Value> =
        serde_json::from_str(&file.metadata["schedules"]).expect("schedules metadata");
    for (name, spec) in &specs {
        let size = |key: &str| {
            let n = spec[key].as_u64().and_then(|n| usize::try_from(n).ok());
            n.and_then(NonZeroUsize::new)
                .unwrap_or_else(|| panic!("{name}: {key}"))
        };
        let schedule = match spec["scheduler"].as_str() {
            Some("StepLR") => LrSchedule::Step {
                step_size: size("step_size"),
                gamma: spec["gamma"].as_f64().expect("gamma"),
            },
            Some("CosineAnnealingLR") => LrSchedule::Cosine {
                t_max: size("T_max"),
                eta_min: spec["eta_min"].as_f64().expect("eta_min"),
            },
            other => panic!("unknown scheduler {other:?}"),
        };
        let base = spec["base_lr"].as_f64().expect("base_lr");
        let torch = f64_tensor(&file, &format!("schedule.{name}"));
        for (epoch, &expected) in torch.iter().enumerate() {
            let lr = schedule.lr(base, epoch);
            // PyTorch steps its schedulers recursively; the closed form differs by rounding only.
            assert!(
                (lr - expected).abs() <= 1e-12 * expected,
                "{name} epoch {epoch}: {lr} vs {expected}"
            );
        }
    }
}

const CNN_PARAMS: [&str; 10] = [
    "layer1.0.weight",
    "layer1.0.bias",
    "layer2.0.weight",
    "layer2.0.bias",
    "layer3.0.weight",
    "layer3.0.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
];

/// The seed model's first step from PyTorch's own gradients. (The fixture's weights after 3 steps
/// need the model's forward and backward; the layers' tests check those.)
#[test]
fn first_step_on_the_seed_model_matches_pytorch_momentum_and_adam_updates() {
    let file = fixture("custom_cnn.safetensors");
    let run = |config: OptimizerConfig| {
        let mut model = Params::new(&file, &CNN_PARAMS, "state.");
        for (name, param) in &mut model.params {
            param.grad = f32_tensor(&file, &format!("grad.{name}"));
        }
        let mut optimizer = config.build().expect("valid config");
        optimizer.step(&mut model).expect("step");
        model
    };
    // After one step PyTorch's SGD with momentum moves by lr * grad exactly (the buffer starts
    // as the gradient), and Adam by lr * g / (|g| + eps) with both bias corrections applied.
    let sgd = run(OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    }));
    let adam = run(OptimizerConfig::Adam(AdamConfig::adam(1e-3)));
    for (i, name) in CNN_PARAMS.iter().enumerate() {
        let w0 = f32_tensor(&file, &format!("state.{name}"));
        let g = f32_tensor(&file, &format!("grad.{name}"));
        let sgd_expected = &w0 - &(&g * 0.01f32);
        assert_close(&sgd.params[i].1.value, &sgd_expected, 1e-6, name);
        let adam_expected = ndarray::Zip::from(&w0)
            .and(&g)
            .map_collect(|&w, &g| w - 1e-3 * g / (g.abs() + 1e-8));
        assert_close(&adam.params[i].1.value, &adam_expected, 1e-5, name);
    }
}

#[test]
fn optimizers_reject_what_pytorch_rejects() {
    assert!(
        Sgd::new(SgdConfig {
            nesterov: true,
            ..SgdConfig::new(0.1)
        })
        .is_err()
    );
    let damped = SgdConfig {
        nesterov: true,
        momentum: 0.9,
        dampening: 0.1,
        ..SgdConfig::new(0.1)
    };
    assert!(Sgd::new(damped).is_err());
    assert!(Sgd::new(SgdConfig::new(-0.1)).is_err());
    assert!(Sgd::new(SgdConfig::new(f64::NAN)).is_err());
    assert!(
        Adam::new(AdamConfig {
            betas: [1.0, 0.999],
            ..AdamConfig::adam(1e-3)
        })
        .is_err()
    );
    assert!(
        Adam::new(AdamConfig {
            eps: -1.0,
            ..AdamConfig::adam(1e-3)
        })
        .is_err()
    );
    assert!(Adam::new(AdamConfig::adamw(1e-3)).is_ok());
}
