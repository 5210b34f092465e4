//! The seed model, PyTorch's CustomCNN: both spellings give the same IR, and the resolved model
//! has PyTorch's state_dict names, shapes and parameter count.
//!
//! Expected values from PyTorch 2.15 (`tools/custom_cnn.py`):
//! ```python
//! m = CustomCNN()  # 3 x [Conv2d(5, pad 2) -> ReLU -> MaxPool2d(2)] with 32, 32, 64 channels, fc1 64, fc2 10
//! [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
//! sum(p.numel() for p in m.parameters())  # 145578
//! ```
//! Mult-adds follow torchinfo's rule (a convolution's weight and bias elements times its output
//! positions, a linear layer's weight and bias elements): 2432*1024 + 25632*256 + 51264*64 +
//! 65600 + 650 = 12,399,306.

use cnnc_spec::{
    Conv2dConfig, Format, LayerConfig, LinearConfig, Pool2dConfig, Shape, Source, TensorRole,
};

fn load(file: &str, format: Format) -> Source {
    let path = format!("{}/../models/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("seed model present");
    Source::new(file, text, format)
}

#[test]
fn yaml_and_dsl_seed_give_the_same_ir() {
    let mut yaml = cnnc_spec::parse(&load("custom_cnn.yaml", Format::Yaml)).expect("valid YAML");
    let mut dsl = cnnc_spec::parse(&load("custom_cnn.cnn", Format::Dsl)).expect("valid DSL");
    assert_ne!(yaml, dsl, "spans differ between the files");
    yaml.clear_spans();
    dsl.clear_spans();
    assert_eq!(yaml, dsl);
}

#[test]
fn seed_state_dict_matches_pytorch() {
    let (model, warnings) =
        cnnc_spec::compile(&load("custom_cnn.yaml", Format::Yaml)).expect("valid");
    assert!(warnings.is_empty());
    let state: Vec<(&str, &[usize])> = model
        .tensors()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        state,
        [
            ("layer1.0.weight", &[32, 3, 5, 5][..]),
            ("layer1.0.bias", &[32][..]),
            ("layer2.0.weight", &[32, 32, 5, 5][..]),
            ("layer2.0.bias", &[32][..]),
            ("layer3.0.weight", &[64, 32, 5, 5][..]),
            ("layer3.0.bias", &[64][..]),
            ("fc1.weight", &[64, 1024][..]),
            ("fc1.bias", &[64][..]),
            ("fc2.weight", &[10, 64][..]),
            ("fc2.bias", &[10][..]),
        ]
    );
    assert_eq!(model.total_params(), 145_578);
    assert_eq!(model.trainable_params(), 145_578);
    assert_eq!(model.total_macs(), 12_399_306);
    assert_eq!(model.input_shape(), Shape::Chw([3, 32, 32]));
    assert_eq!(model.output_shape(), Shape::Flat(10));
}

#[test]
fn seed_arguments_are_fully_resolved() {
    let (model, _) = cnnc_spec::compile(&load("custom_cnn.cnn", Format::Dsl)).expect("valid");
    let layer = |name: &str| {
        model
            .layers()
            .iter()
            .find(|l| l.name() == name)
            .unwrap_or_else(|| panic!("no layer {name}"))
    };
    assert_eq!(
        *layer("layer2.0").config(),
        LayerConfig::Conv2d(Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            ..Conv2dConfig::new(32, 32, [5, 5])
        })
    );
    assert_eq!(
        *layer("layer3.2").config(),
        LayerConfig::MaxPool2d(Pool2dConfig::new([2, 2], [2, 2], [0, 0]))
    );
    assert_eq!(
        *layer("fc2").config(),
        LayerConfig::Linear(LinearConfig {
            in_features: 64,
            out_features: 10,
            bias: true,
        })
    );
    assert_eq!(layer("layer3.2").input_shape(), Shape::Chw([64, 8, 8]));
    assert_eq!(layer("9").output_shape(), Shape::Flat(1024));
    let shapes: Vec<Shape> = model.layers().iter().map(|l| l.output_shape()).collect();
    assert_eq!(shapes[2], Shape::Chw([32, 16, 16]));
    assert_eq!(shapes[5], Shape::Chw([32, 8, 8]));
}

#[test]
fn unnamed_layers_are_named_like_nn_sequential() {
    let text = "input (1, 8, 8)\nconv2d(out_channels=4, kernel_size=3)\nrelu\nbatchnorm2d\nflatten\nlinear(out_features=2)\n";
    let (model, _) = cnnc_spec::compile(&Source::new("seq.cnn", text, Format::Dsl)).expect("valid");
    let names: Vec<(&str, TensorRole)> =
        model.tensors().map(|t| (t.name.as_str(), t.role)).collect();
    assert_eq!(
        names,
        [
            ("0.weight", TensorRole::Weight),
            ("0.bias", TensorRole::Bias),
            ("2.weight", TensorRole::Weight),
            ("2.bias", TensorRole::Bias),
            ("2.running_mean", TensorRole::RunningMean),
            ("2.running_var", TensorRole::RunningVar),
            ("2.num_batches_tracked", TensorRole::NumBatchesTracked),
            ("4.weight", TensorRole::Weight),
            ("4.bias", TensorRole::Bias),
        ]
    );
    // Buffers are not parameters: 4*9+4 + 2*4 + 2*144+2.
    assert_eq!(model.total_params(), 40 + 8 + 290);
}

#[test]
fn dsl_spans_are_byte_offsets_into_the_text() {
    let text = "input (1, 8, 8)\nfc: linear(in_features=7, out_features=2)\n";
    let source = Source::new("t.cnn", text, Format::Dsl);
    let diagnostics = cnnc_spec::check(&cnnc_spec::parse(&source).expect("parses")).diagnostics;
    let wrong = diagnostics
        .iter()
        .find(|d| d.code == cnnc_spec::Code::ExpectedFlat)
        .expect("linear on an image");
    assert_eq!(source.slice(wrong.span), "linear");
    assert_eq!(wrong.layer.as_deref(), Some("fc"));
    // Shifting by an embedding offset moves every span.
    let shifted = wrong.clone().shifted(100);
    assert_eq!(shifted.span.start, wrong.span.start + 100);
}

#[test]
fn comments_attach_to_the_layer_they_describe() {
    let text = "# header\ninput (1, 4, 4)  # one channel\n# first\nrelu\n# second\nflatten  # flat\n# the end\n";
    let model = cnnc_spec::parse(&Source::new("c.cnn", text, Format::Dsl)).expect("parses");
    assert_eq!(model.comments.header, ["header"]);
    assert_eq!(model.comments.input.as_deref(), Some("one channel"));
    assert_eq!(model.layers[0].comments.leading, ["first"]);
    assert_eq!(model.layers[1].comments.leading, ["second"]);
    assert_eq!(model.layers[1].comments.trailing.as_deref(), Some("flat"));
    assert_eq!(model.comments.footer, ["the end"]);
    let yaml = cnnc_spec::to_yaml(&model);
    let back =
        cnnc_spec::parse(&Source::new("c.yaml", yaml.as_str(), Format::Yaml)).expect("parses");
    assert_eq!(cnnc_spec::to_dsl(&back), cnnc_spec::to_dsl(&model));
    assert_eq!(back.layers[1].comments, model.layers[1].comments);
}

/// The seed model's canonical form, what checkpoints are keyed on: the same from both files, and
/// pinned here, because any change to it makes every saved checkpoint of the model unresumable.
#[test]
fn seed_canonical_form_is_stable() {
    let form = |file: &str, format: Format| {
        let (model, _) = cnnc_spec::compile(&load(file, format)).expect("valid");
        cnnc_spec::core::canon::canonical(&model)
    };
    let yaml = form("custom_cnn.yaml", Format::Yaml);
    assert_eq!(yaml, form("custom_cnn.cnn", Format::Dsl));
    assert_eq!(
        yaml,
        "cnnc-model v1\n\
         input 3 32 32\n\
         layer1.0 conv2d in_channels=3 out_channels=32 kernel_size=5 padding=2\n\
         layer1.1 relu\n\
         layer1.2 maxpool2d kernel_size=2\n\
         layer2.0 conv2d in_channels=32 out_channels=32 kernel_size=5 padding=2\n\
         layer2.1 relu\n\
         layer2.2 maxpool2d kernel_size=2\n\
         layer3.0 conv2d in_channels=32 out_channels=64 kernel_size=5 padding=2\n\
         layer3.1 relu\n\
         layer3.2 maxpool2d kernel_size=2\n\
         9 flatten\n\
         fc1 linear in_features=1024 out_features=64\n\
         11 relu\n\
         fc2 linear in_features=64 out_features=10\n"
    );
}
