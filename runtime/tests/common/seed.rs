//! The seed model (PyTorch `CustomCNN`) written out by hand as the spec checker lowers
//! `models/custom_cnn.yaml`: the runtime knows nothing of specs, so its tests and benchmarks
//! share this one copy (the benchmark includes it with `#[path]`).

use cnnc_runtime::config::{
    Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Pool2dConfig,
};

/// The seed network: 3 × [conv 5×5 pad 2 → ReLU → max-pool 2], flatten, fc1, ReLU, fc2.
pub fn custom_cnn() -> NetworkDef {
    let layer = |name: &str, config| LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    };
    let conv = |cin, cout| {
        LayerConfig::Conv2d(Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            ..Conv2dConfig::new(cin, cout, [5, 5])
        })
    };
    let pool = || LayerConfig::MaxPool2d(Pool2dConfig::new([2, 2], [2, 2], [0, 0]));
    let linear = |i, o| {
        LayerConfig::Linear(LinearConfig {
            in_features: i,
            out_features: o,
            bias: true,
        })
    };
    NetworkDef {
        input: [3, 32, 32],
        layers: vec![
            layer("layer1.0", conv(3, 32)),
            layer("layer1.1", LayerConfig::Relu),
            layer("layer1.2", pool()),
            layer("layer2.0", conv(32, 32)),
            layer("layer2.1", LayerConfig::Relu),
            layer("layer2.2", pool()),
            layer("layer3.0", conv(32, 64)),
            layer("layer3.1", LayerConfig::Relu),
            layer("layer3.2", pool()),
            layer("flatten", LayerConfig::FLATTEN),
            layer("fc1", linear(1024, 64)),
            layer("fc1_relu", LayerConfig::Relu),
            layer("fc2", linear(64, 10)),
        ],
    }
}
