//! Per-layer parity with PyTorch: every `tests/fixtures/layers/<case>.safetensors` written by
//! `tools/make_fixtures.py` (one layer with non-default options, run forward and backward in
//! PyTorch) is replayed here. Outputs must agree within 1e-5 (absolute, plus 1e-5 relative for
//! large values), gradients within 1e-4 relative.

mod common;

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, ConvTranspose2dConfig, GeluApproximate, GroupNormConfig,
    LinearConfig, PaddingMode, Pool2dConfig, UpsampleConfig, UpsampleMode,
};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Elu,
    Flatten, Gelu, GroupNorm, Hardsigmoid, Hardswish, Identity, LeakyRelu, Linear, LogSoftmax,
    MaxPool2d, Prelu, Relu, Relu6, Sigmoid, Silu, Softmax, Tanh, Upsample,
};
use cnnc_runtime::tensor::internal_to_nchw;
use cnnc_runtime::{Layer, Mode, Param, Shape, softmax_cross_entropy};
use common::fixture::{Fixture, assert_close};
use ndarray::Array2;
use serde_json::Value;

fn pair(config: &Value, key: &str) -> [usize; 2] {
    let v = &config[key];
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

fn usize_of(config: &Value, key: &str) -> usize {
    config[key]
        .as_u64()
        .unwrap_or_else(|| panic!("config {key}")) as usize
}

/// Per-sample dims of an input of PyTorch shape `shape` (batch first).
fn dims_of(shape: &[usize]) -> Shape {
    match shape {
        [_, c, h, w] => Shape::Chw([*c, *h, *w]),
        [_, f] => Shape::Flat(*f),
        other => panic!("unexpected input shape {other:?}"),
    }
}

/// Overwrites a parameter with a fixture tensor.
fn set(param: &mut Param, f: &Fixture, key: &str) {
    param.value = f.array(key);
}

/// Back from the internal layout to PyTorch's, as flat values.
fn to_torch(data: &[f32], dims: Shape, batch: usize) -> Vec<f32> {
    match dims {
        Shape::Chw(_) => internal_to_nchw(data, dims, batch)
            .iter()
            .copied()
            .collect(),
        Shape::Flat(_) => data.to_vec(),
    }
}

fn run_case(name: &str) {
    let f = Fixture::load(&format!("layers/{name}.safetensors"));
    let config: Value = serde_json::from_str(&f.meta("config")).unwrap();
    let kind = config["kind"].as_str().unwrap();
    if kind == "CrossEntropyLoss" {
        return cross_entropy_case(&f);
    }
    let (_, in_shape) = f.f32("input");
    let batch = in_shape[0];
    let input = dims_of(&in_shape);
    let mut rng = init_rng(0);
    let pool = || Pool2dConfig {
        kernel_size: pair(&config, "kernel_size"),
        stride: pair(&config, "stride"),
        padding: pair(&config, "padding"),
        ceil_mode: config["ceil_mode"].as_bool().unwrap(),
        // Older fixtures wrote none of these: PyTorch's defaults.
        dilation: config
            .get("dilation")
            .map_or([1, 1], |_| pair(&config, "dilation")),
        count_include_pad: config
            .get("count_include_pad")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        divisor_override: config
            .get("divisor_override")
            .and_then(Value::as_u64)
            .map(|d| d as usize),
    };
    let mut mode = Mode::Train;
    let mut layer: Box<dyn Layer> = match kind {
        "Conv2d" => {
            let c = Conv2dConfig {
                in_channels: usize_of(&config, "in_channels"),
                out_channels: usize_of(&config, "out_channels"),
                kernel_size: pair(&config, "kernel_size"),
                stride: pair(&config, "stride"),
                padding: pair(&config, "padding"),
                // Written only for `padding='same'` with an odd total (PyTorch's own pixels).
                padding_end: pair(
                    &config,
                    if config.get("padding_end").is_some() {
                        "padding_end"
                    } else {
                        "padding"
                    },
                ),
                dilation: pair(&config, "dilation"),
                groups: config
                    .get("groups")
                    .and_then(|g| g.as_u64())
                    .map_or(1, |g| g as usize),
                bias: config["bias"].as_bool().unwrap(),
                padding_mode: config
                    .get("padding_mode")
                    .and_then(|m| m.as_str())
                    .map_or(PaddingMode::Zeros, |m| PaddingMode::from_word(m).unwrap()),
            };
            let mut conv = Conv2d::new(name, &c, [in_shape[2], in_shape[3]], &mut rng).unwrap();
            set(conv.weight_mut(), &f, "param.weight");
            if let Some(b) = conv.bias_mut() {
                set(b, &f, "param.bias");
            }
            Box::new(conv)
        }
        "MaxPool2d" => Box::new(MaxPool2d::new(name, &pool(), input).unwrap()),
        "AvgPool2d" => Box::new(AvgPool2d::new(name, &pool(), input).unwrap()),
        "ReLU" => Box::new(Relu::new(name, input)),
        "LeakyReLU" => Box::new(LeakyRelu::new(
            name,
            input,
            config["negative_slope"].as_f64().unwrap() as f32,
        )),
        "Sigmoid" => Box::new(Sigmoid::new(name, input)),
        "Tanh" => Box::new(Tanh::new(name, input)),
        "Flatten" => Box::new(
            Flatten::with_dims(
                name,
                input,
                config["start_dim"].as_i64().unwrap(),
                config["end_dim"].as_i64().unwrap(),
            )
            .unwrap(),
        ),
        "Linear" => {
            let c = LinearConfig {
                in_features: usize_of(&config, "in_features"),
                out_features: usize_of(&config, "out_features"),
                bias: config["bias"].as_bool().unwrap(),
            };
            let mut linear = Linear::new(name, &c, input, &mut rng).unwrap();
            set(linear.weight_mut(), &f, "param.weight");
            if let Some(b) = linear.bias_mut() {
                set(b, &f, "param.bias");
            }
            Box::new(linear)
        }
        "BatchNorm2d" => {
            // Fixtures before these options wrote neither: PyTorch's defaults.
            let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(true);
            let c = BatchNorm2dConfig {
                num_features: usize_of(&config, "num_features"),
                eps: config["eps"].as_f64().unwrap() as f32,
                // JSON null: PyTorch's momentum=None, the cumulative average.
                momentum: config["momentum"].as_f64().map(|m| m as f32),
                affine: flag("affine"),
                track_running_stats: flag("track_running_stats"),
            };
            let mut bn = BatchNorm2d::new(name, &c, input).unwrap();
            if c.affine {
                set(&mut bn.weight, &f, "param.weight");
                set(&mut bn.bias, &f, "param.bias");
            }
            if c.track_running_stats {
                bn.running_mean = f.array("param.running_mean");
                bn.running_var = f.array("param.running_var");
                bn.num_batches_tracked = f.i64("param.num_batches_tracked")[0];
            }
            if !config["training"].as_bool().unwrap() {
                mode = Mode::Eval;
            }
            Box::new(bn)
        }
        "GroupNorm" => {
            let c = GroupNormConfig {
                num_groups: usize_of(&config, "num_groups"),
                num_channels: usize_of(&config, "num_channels"),
                eps: config["eps"].as_f64().unwrap() as f32,
                affine: config["affine"].as_bool().unwrap(),
            };
            let mut gn = GroupNorm::new(name, &c, input).unwrap();
            if c.affine {
                set(&mut gn.weight, &f, "param.weight");
                set(&mut gn.bias, &f, "param.bias");
            }
            Box::new(gn)
        }
        "AdaptiveAvgPool2d" => {
            Box::new(AdaptiveAvgPool2d::new(name, pair(&config, "output_size"), input).unwrap())
        }
        "AdaptiveMaxPool2d" => {
            Box::new(AdaptiveMaxPool2d::new(name, pair(&config, "output_size"), input).unwrap())
        }
        "ConvTranspose2d" => {
            let c = ConvTranspose2dConfig {
                in_channels: usize_of(&config, "in_channels"),
                out_channels: usize_of(&config, "out_channels"),
                kernel_size: pair(&config, "kernel_size"),
                stride: pair(&config, "stride"),
                padding: pair(&config, "padding"),
                output_padding: pair(&config, "output_padding"),
                groups: usize_of(&config, "groups"),
                bias: config["bias"].as_bool().unwrap(),
                dilation: pair(&config, "dilation"),
            };
            let mut conv = ConvTranspose2d::new(name, &c, input, &mut rng).unwrap();
            set(conv.weight_mut(), &f, "param.weight");
            if let Some(b) = conv.bias_mut() {
                set(b, &f, "param.bias");
            }
            Box::new(conv)
        }
        "Upsample" => {
            // JSON null: not given.
            let optional_pair = |key: &str| (!config[key].is_null()).then(|| pair(&config, key));
            let c = UpsampleConfig {
                size: config.get("size").and_then(|_| optional_pair("size")),
                scale_factor: optional_pair("scale_factor"),
                mode: match config["mode"].as_str() {
                    Some("nearest") => UpsampleMode::Nearest,
                    Some("bilinear") => UpsampleMode::Bilinear,
                    other => panic!("{name}: mode {other:?}"),
                },
                align_corners: config.get("align_corners").and_then(Value::as_bool),
            };
            Box::new(Upsample::with_config(name, &c, input).unwrap())
        }
        "ReLU6" => Box::new(Relu6::new(name, input)),
        "SiLU" => Box::new(Silu::new(name, input)),
        "GELU" => {
            let approximate = match config["approximate"].as_str() {
                Some("none") => GeluApproximate::None,
                Some("tanh") => GeluApproximate::Tanh,
                other => panic!("{name}: approximate {other:?}"),
            };
            Box::new(Gelu::new(name, input, approximate))
        }
        "Hardswish" => Box::new(Hardswish::new(name, input)),
        "Hardsigmoid" => Box::new(Hardsigmoid::new(name, input)),
        "ELU" => Box::new(Elu::new(
            name,
            input,
            config["alpha"].as_f64().unwrap() as f32,
        )),
        "Identity" => Box::new(Identity::new(name, input)),
        "PReLU" => {
            let mut prelu = Prelu::new(name, input, usize_of(&config, "num_parameters")).unwrap();
            set(&mut prelu.weight, &f, "param.weight");
            Box::new(prelu)
        }
        "Softmax" => Box::new(Softmax::new(name, input, config["dim"].as_i64().unwrap()).unwrap()),
        "LogSoftmax" => {
            Box::new(LogSoftmax::new(name, input, config["dim"].as_i64().unwrap()).unwrap())
        }
        other => panic!("{name}: no runtime layer for fixture kind {other}"),
    };

    let x = f.internal("input");
    let out_dims = layer.output_shape();
    let mut y = vec![0.0; out_dims.numel() * batch];
    layer.forward(&x, &mut y, batch, mode).unwrap();
    let (want, _) = f.f32("output");
    assert_close(
        &format!("{name} output"),
        &to_torch(&y, out_dims, batch),
        &want,
        1e-5,
        1e-5,
    );

    let mut dy = f.internal("grad_output");
    if let Shape::Flat(_) = out_dims {
        // Flat outputs are already in PyTorch's order (internal() only converts 4-D tensors).
        dy = f.f32("grad_output").0;
    }
    let mut dx = vec![0.0; x.len()];
    layer.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
    let (want, _) = f.f32("grad_input");
    assert_close(
        &format!("{name} grad_input"),
        &to_torch(&dx, input, batch),
        &want,
        1e-6,
        1e-4,
    );

    let mut checked = 0;
    layer.visit(&mut |e| match e {
        cnnc_runtime::Entry::Param { name: full, param } => {
            let short = full.rsplit('.').next().unwrap();
            let (want, shape) = f.f32(&format!("grad.{short}"));
            assert_eq!(param.grad.shape(), &shape[..], "{full}");
            let got: Vec<f32> = param.grad.iter().copied().collect();
            assert_close(&format!("{full} grad"), &got, &want, 1e-6, 1e-4);
            checked += 1;
        }
        cnnc_runtime::Entry::Buffer { name: full, value } => {
            let short = full.rsplit('.').next().unwrap();
            let key = format!("after.{short}");
            if f.has(&key) {
                let got: Vec<f32> = value.iter().copied().collect();
                assert_close(
                    &format!("{full} after the step"),
                    &got,
                    &f.f32(&key).0,
                    1e-6,
                    1e-5,
                );
                checked += 1;
            }
        }
        cnnc_runtime::Entry::Counter { name: full, value } => {
            let short = full.rsplit('.').next().unwrap();
            let key = format!("after.{short}");
            if f.has(&key) {
                assert_eq!(*value, f.i64(&key)[0], "{full}");
                checked += 1;
            }
        }
    });
    let grads = ["grad.weight", "grad.bias"]
        .iter()
        .filter(|k| f.has(k))
        .count();
    let after = [
        "after.running_mean",
        "after.running_var",
        "after.num_batches_tracked",
    ]
    .iter()
    .filter(|k| f.has(k))
    .count();
    assert_eq!(
        checked,
        grads + after,
        "{name}: every fixture gradient and buffer is compared"
    );
}

fn cross_entropy_case(f: &Fixture) {
    let (logits, shape) = f.f32("input");
    let logits = Array2::from_shape_vec((shape[0], shape[1]), logits).unwrap();
    let labels: Vec<usize> = f.i64("labels").iter().map(|&l| l as usize).collect();
    let mut grad = Array2::zeros(logits.dim());
    let loss = softmax_cross_entropy(logits.view(), &labels, grad.view_mut()).unwrap();
    assert_close(
        "cross_entropy loss",
        &[loss],
        &f.f32("output").0,
        1e-5,
        1e-6,
    );
    let scale = f.f32("grad_output").0[0];
    let got: Vec<f32> = grad.iter().map(|g| g * scale).collect();
    assert_close(
        "cross_entropy grad_input",
        &got,
        &f.f32("grad_input").0,
        1e-7,
        1e-4,
    );
}

/// Every case file in `tests/fixtures/layers/`, so a new fixture cannot be silently skipped.
#[test]
fn every_layer_case_matches_pytorch() {
    let dir = common::fixture::path("layers");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run tools/make_fixtures.py", dir.display()))
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".safetensors")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "expected the full set of layer fixtures, found {names:?}"
    );
    for name in &names {
        run_case(name);
    }
}
