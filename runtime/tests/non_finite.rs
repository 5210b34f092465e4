//! `Network::find_non_finite`: after a training step that went NaN or infinite, it names the first
//! layer at fault and the pass (forward activations or backward gradients), and leaves the
//! network as the step left it.

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Source,
};
use cnnc_runtime::exec::NonFinite;
use cnnc_runtime::{Entry, Error, Network, Visit};
use ndarray::{Array4, ArrayD};

fn layer(name: &str, config: LayerConfig) -> LayerDef {
    LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    }
}

fn conv(cin: usize, cout: usize) -> LayerConfig {
    LayerConfig::Conv2d(Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(cin, cout, [3, 3])
    })
}

fn linear(i: usize, o: usize) -> LayerConfig {
    LayerConfig::Linear(LinearConfig {
        in_features: i,
        out_features: o,
        bias: true,
    })
}

/// Two convolutions and a classifier, named like the seed model's layers.
fn conv_net() -> Network {
    let def = NetworkDef {
        input: [1, 6, 6],
        layers: vec![
            layer("layer1.0", conv(1, 2)),
            layer("layer1.1", LayerConfig::Relu),
            layer("layer2.0", conv(2, 2)),
            layer("layer2.1", LayerConfig::Relu),
            layer("flatten", LayerConfig::FLATTEN),
            layer("fc1", linear(2 * 6 * 6, 3)),
        ],
    };
    Network::new(&def, 7).expect("a valid network")
}

/// Sets parameter `name` to `f(index, old value)` element by element.
fn set(net: &mut Network, name: &str, f: impl Fn(usize, f32) -> f32) {
    let mut found = false;
    net.visit(&mut |entry| {
        if let Entry::Param { name: n, param } = entry
            && n == name
        {
            param
                .value
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = f(i, *v));
            found = true;
        }
    });
    assert!(found, "no parameter {name}");
}

/// Every parameter's value and gradient, bit for bit.
fn snapshot(net: &mut Network) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut all = Vec::new();
    net.visit(&mut |entry| {
        if let Entry::Param { name, param } = entry {
            all.push((name.to_owned(), bits(&param.value), bits(&param.grad)));
        }
    });
    all
}

fn batch(value: f32) -> Array4<f32> {
    Array4::from_shape_fn((2, 1, 6, 6), |(n, _, y, x)| {
        value * ((n + y * 6 + x) % 5) as f32 / 4.0
    })
}

#[test]
fn a_nan_weight_is_traced_to_its_layer_in_the_forward_pass() {
    for (planted, index, kind) in [("layer2.0.weight", 2, "conv2d"), ("fc1.bias", 5, "linear")] {
        let mut net = conv_net();
        set(&mut net, planted, |i, v| if i == 1 { f32::NAN } else { v });
        let loss = net.train_step(batch(1.0).view(), &[0, 2]).expect("a step");
        assert!(loss.is_nan(), "{planted}: loss {loss}");
        let before = snapshot(&mut net);
        let found = net.find_non_finite().expect("a diagnosis");
        let layer = planted.rsplit_once('.').map(|(layer, _)| layer);
        match &found {
            Some(NonFinite::Activations {
                index: i,
                name,
                kind: k,
                value,
            }) => {
                assert_eq!((*i, Some(name.as_str()), *k), (index, layer, kind));
                assert!(value.is_nan());
            }
            other => panic!("{planted}: {other:?}"),
        }
        let text = found.map(|f| f.to_string()).unwrap_or_default();
        assert!(
            text.starts_with(&format!(
                "layer `{}` ({kind}) produced non-finite activations (NaN) in the forward pass",
                layer.unwrap_or_default()
            )),
            "{text}"
        );
        assert!(
            snapshot(&mut net) == before,
            "{planted}: the diagnosis changed the network"
        );
    }
}

/// A batch norm the plan joins to the add after it (`Join::add`) never writes its own output
/// in training; the search computes it again, so a NaN it makes is its own, not the add's.
/// With a grouped convolution before it, the batch norm's buffer keeps a slot of its own (the
/// inference step writes it), which the training step leaves as it was.
#[test]
fn a_batch_norm_that_stores_its_add_is_named_for_its_own_nan() {
    for groups in [1, 2] {
        let mut mid = conv(2, 2);
        if let LayerConfig::Conv2d(c) = &mut mid {
            c.groups = groups;
        }
        let def = NetworkDef {
            input: [1, 6, 6],
            layers: vec![
                layer("stem", conv(1, 2)),
                layer("mid", mid),
                layer("bn", LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(2))),
                LayerDef {
                    inputs: vec![Source::Layer(2), Source::Layer(0)],
                    ..layer("add", LayerConfig::Add)
                },
                layer("flatten", LayerConfig::FLATTEN),
                layer("fc", linear(2 * 6 * 6, 3)),
            ],
        };
        let mut net = Network::new(&def, 3).expect("a valid network");
        let plan = cnnc_core::Plan::new(&cnnc_core::Model::new(None, def).expect("a valid model"));
        assert!(plan.step_of(2).join.add.is_some(), "groups {groups}");
        set(
            &mut net,
            "bn.weight",
            |i, v| if i == 1 { f32::NAN } else { v },
        );
        let loss = net.train_step(batch(1.0).view(), &[0, 2]).expect("a step");
        assert!(loss.is_nan(), "groups {groups}: loss {loss}");
        match net.find_non_finite().expect("a diagnosis") {
            Some(NonFinite::Activations { index, kind, .. }) => {
                assert_eq!((index, kind), (2, "batchnorm2d"), "groups {groups}");
            }
            other => panic!("groups {groups}: {other:?}"),
        }
    }
}

#[test]
fn a_gradient_that_overflows_is_traced_to_its_layer_in_the_backward_pass() {
    // Forward stays finite: fc1 maps the all-4 input to ones, fc2 turns the first one into
    // 1e38 (the largest logit f32 holds comfortably). Backward does not: fc2 hands 1e38 back to
    // fc1, whose weight gradient is that times the input, 4e38, past f32's range.
    let def = NetworkDef {
        input: [1, 2, 2],
        layers: vec![
            layer("flatten", LayerConfig::FLATTEN),
            layer("fc1", linear(4, 3)),
            layer("act", LayerConfig::Relu),
            layer("fc2", linear(3, 2)),
        ],
    };
    let mut net = Network::new(&def, 0).expect("a valid network");
    set(&mut net, "fc1.weight", |_, _| 1.0 / 16.0);
    set(&mut net, "fc1.bias", |_, _| 0.0);
    set(
        &mut net,
        "fc2.weight",
        |i, _| if i == 0 { 1e38 } else { 0.0 },
    );
    set(&mut net, "fc2.bias", |_, _| 0.0);
    let x = Array4::from_elem((1, 1, 2, 2), 4.0);
    let loss = net.train_step(x.view(), &[1]).expect("a step");
    assert_eq!(loss, 1e38, "the loss itself is finite");
    let before = snapshot(&mut net);
    let found = net.find_non_finite().expect("a diagnosis");
    assert_eq!(
        found,
        Some(NonFinite::Gradient {
            index: 1,
            name: "fc1".to_owned(),
            kind: "linear",
            param: Some("fc1.weight".to_owned()),
            value: f32::INFINITY,
        })
    );
    assert_eq!(found.as_ref().and_then(NonFinite::layer), Some("fc1"));
    assert_eq!(
        found.map(|f| f.to_string()).unwrap_or_default(),
        "layer `fc1` (linear) produced a non-finite gradient for `fc1.weight` (inf) in the \
         backward pass"
    );
    assert!(
        snapshot(&mut net) == before,
        "replaying backward rewrote other gradients"
    );
}

#[test]
fn a_non_finite_input_is_reported_as_the_input() {
    let mut net = conv_net();
    let mut x = batch(1.0);
    x[[1, 0, 3, 4]] = f32::NEG_INFINITY;
    net.train_step(x.view(), &[0, 1]).expect("a step");
    assert_eq!(
        net.find_non_finite().expect("a diagnosis"),
        Some(NonFinite::Input {
            value: f32::NEG_INFINITY
        })
    );
}

#[test]
fn a_healthy_step_has_nothing_to_report_and_is_left_alone() {
    let mut net = conv_net();
    assert!(matches!(net.find_non_finite(), Err(Error::State(_))));
    let loss = net.train_step(batch(1.0).view(), &[0, 1]).expect("a step");
    assert!(loss.is_finite());
    let before = snapshot(&mut net);
    assert_eq!(net.find_non_finite().expect("a diagnosis"), None);
    assert!(snapshot(&mut net) == before);
}

#[test]
fn an_output_whose_memory_a_later_layer_reused_is_computed_again() {
    // fc1's and fc2's outputs are read only by ReLUs, which differentiate from their own
    // outputs: no backward reads them, so fc2's output is written where fc1's was. A NaN from
    // fc2 must not be blamed on fc1.
    let def = NetworkDef {
        input: [1, 6, 6],
        layers: vec![
            layer("flatten", LayerConfig::FLATTEN),
            layer("fc1", linear(36, 8)),
            layer("relu1", LayerConfig::Relu),
            layer("fc2", linear(8, 8)),
            layer("relu2", LayerConfig::Relu),
            layer("fc3", linear(8, 3)),
        ],
    };
    let mut net = Network::new(&def, 7).expect("a valid network");
    set(
        &mut net,
        "fc2.bias",
        |i, v| if i == 1 { f32::NAN } else { v },
    );
    let loss = net.train_step(batch(1.0).view(), &[0, 2]).expect("a step");
    assert!(loss.is_nan(), "loss {loss}");
    let before = snapshot(&mut net);
    match net.find_non_finite().expect("a diagnosis") {
        Some(NonFinite::Activations {
            index, name, value, ..
        }) => {
            assert_eq!((index, name.as_str()), (3, "fc2"));
            assert!(value.is_nan());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        snapshot(&mut net) == before,
        "the diagnosis changed the network"
    );
}
