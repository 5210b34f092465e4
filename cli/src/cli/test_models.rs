//! Models built through the core API for the unit tests of `summary` and `draw`: a small ResNet
//! whose one block has a projection shortcut, named as torchvision names its modules.

use cnnc_spec::core::{
    BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, Model, NetworkDef, Source,
};

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize) -> LayerConfig {
    LayerConfig::Conv2d(Conv2dConfig {
        stride: [stride, stride],
        padding: [kernel / 2, kernel / 2],
        padding_end: [kernel / 2, kernel / 2],
        bias: false,
        ..Conv2dConfig::new(cin, cout, [kernel, kernel])
    })
}

fn bn(channels: usize) -> LayerConfig {
    LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(channels))
}

/// `conv1 → bn1 → relu → layer1.0 (conv1, bn1, relu, conv2, bn2; downsample.0/.1 from the block
/// input; add; relu) → avgpool → flatten → fc`, on a [3, 8, 8] input.
pub fn tiny_resnet() -> Model {
    let layers: Vec<(&str, LayerConfig, Vec<Source>)> = vec![
        ("conv1", conv(3, 4, 3, 1), vec![]),          // 0
        ("bn1", bn(4), vec![]),                       // 1
        ("relu", LayerConfig::Relu, vec![]),          // 2
        ("layer1.0.conv1", conv(4, 8, 3, 2), vec![]), // 3
        ("layer1.0.bn1", bn(8), vec![]),              // 4
        ("layer1.0.relu", LayerConfig::Relu, vec![]), // 5
        ("layer1.0.conv2", conv(8, 8, 3, 1), vec![]), // 6
        ("layer1.0.bn2", bn(8), vec![]),              // 7
        (
            "layer1.0.downsample.0",
            conv(4, 8, 1, 2),
            vec![Source::Layer(2)],
        ), // 8
        ("layer1.0.downsample.1", bn(8), vec![]),     // 9
        (
            "layer1.0.add",
            LayerConfig::Add,
            vec![Source::Layer(7), Source::Layer(9)],
        ), // 10
        ("layer1.0.relu2", LayerConfig::Relu, vec![]), // 11
        (
            "avgpool",
            LayerConfig::AdaptiveAvgPool2d {
                output_size: [1, 1],
            },
            vec![],
        ), // 12
        ("flatten", LayerConfig::FLATTEN, vec![]),    // 13
        (
            "fc",
            LayerConfig::Linear(LinearConfig {
                in_features: 8,
                out_features: 10,
                bias: true,
            }),
            vec![],
        ), // 14
    ];
    let def = NetworkDef {
        input: [3, 8, 8],
        layers: layers
            .into_iter()
            .map(|(name, config, inputs)| LayerDef {
                name: name.to_owned(),
                config,
                inputs,
            })
            .collect(),
    };
    match Model::new(Some("TinyResNet".to_owned()), def) {
        Ok(model) => model,
        Err(err) => panic!("the test model checks: {err}"),
    }
}
