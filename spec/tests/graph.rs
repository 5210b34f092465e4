//! Graph specs: blocks, `sequential` groups, inputs, repetition and arithmetic, in both
//! languages. The pairs under `tests/graph/` parse to one IR and print back canonically.

use std::path::{Path, PathBuf};

use cnnc_spec::{Format, Model, Source};

fn graph_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph")
}

fn source(name: &str) -> Source {
    let path = graph_dir().join(name);
    let text = std::fs::read_to_string(&path).expect("readable spec");
    Source::new(
        name,
        text,
        Format::from_path(&path).expect("spec extension"),
    )
}

fn parsed(source: &Source) -> Model {
    cnnc_spec::parse(source).unwrap_or_else(|diagnostics| {
        panic!(
            "{} does not parse:\n{}",
            source.name(),
            cnnc_spec::render_all(&diagnostics, source, false)
        )
    })
}

fn spanless(mut model: Model) -> Model {
    model.clear_spans();
    model
}

const PAIRS: &[&str] = &["resnet20", "densenet_small"];

#[test]
fn yaml_and_dsl_twins_parse_to_one_ir() {
    for pair in PAIRS {
        let yaml = parsed(&source(&format!("{pair}.yaml")));
        let dsl = parsed(&source(&format!("{pair}.cnn")));
        let (mut yaml, mut dsl) = (spanless(yaml), spanless(dsl));
        // Comments are carried, but the twins' comments may differ in placement.
        yaml.comments = Default::default();
        dsl.comments = Default::default();
        let (yaml, dsl) = (strip_comments(yaml), strip_comments(dsl));
        assert_eq!(
            cnnc_spec::to_yaml(&yaml),
            cnnc_spec::to_yaml(&dsl),
            "{pair}"
        );
        assert!(yaml == dsl, "{pair}: same text, different IR");
    }
}

fn strip_comments(mut model: Model) -> Model {
    fn layers(entries: &mut [cnnc_spec::Layer]) {
        for layer in entries {
            layer.comments = Default::default();
            if let Some(body) = &mut layer.body {
                layers(body);
            }
        }
    }
    model.comments = Default::default();
    for block in &mut model.blocks {
        block.comments = Default::default();
        layers(&mut block.layers);
    }
    layers(&mut model.layers);
    model
}

#[test]
fn graph_specs_print_back_canonically_in_both_languages() {
    for pair in PAIRS {
        for ext in ["yaml", "cnn"] {
            let model = parsed(&source(&format!("{pair}.{ext}")));
            let yaml = cnnc_spec::to_yaml(&model);
            let dsl = cnnc_spec::to_dsl(&model);
            let from_yaml = parsed(&Source::new("printed.yaml", yaml.as_str(), Format::Yaml));
            let from_dsl = parsed(&Source::new("printed.cnn", dsl.as_str(), Format::Dsl));
            assert_eq!(cnnc_spec::to_yaml(&from_dsl), yaml, "{pair}.{ext}\n{dsl}");
            assert_eq!(cnnc_spec::to_dsl(&from_yaml), dsl, "{pair}.{ext}\n{yaml}");
            let original = spanless(model);
            assert_eq!(
                spanless(from_yaml),
                original,
                "{pair}.{ext} via YAML:\n{yaml}"
            );
            assert_eq!(spanless(from_dsl), original, "{pair}.{ext} via DSL:\n{dsl}");
        }
    }
}

fn compiled(name: &str) -> cnnc_spec::CheckedModel {
    let source = source(name);
    let (model, warnings) = cnnc_spec::compile(&source).unwrap_or_else(|diagnostics| {
        panic!(
            "{name} does not check:\n{}",
            cnnc_spec::render_all(&diagnostics, &source, false)
        )
    });
    assert!(
        warnings.is_empty(),
        "{name}:\n{}",
        cnnc_spec::render_all(&warnings, &source, false)
    );
    model
}

fn tensor_names(model: &cnnc_spec::CheckedModel) -> Vec<String> {
    model
        .layers()
        .iter()
        .flat_map(|layer| layer.tensors().iter().map(|t| t.name.clone()))
        .collect()
}

#[test]
fn resnet20_expands_to_torchvision_names_and_parameter_count() {
    for name in ["resnet20.yaml", "resnet20.cnn"] {
        let model = compiled(name);
        assert_eq!(model.total_params(), 272_474, "{name}");
        let names = tensor_names(&model);
        for expected in [
            "conv1.weight",
            "bn1.running_mean",
            "layer1.0.conv1.weight",
            "layer1.2.bn2.num_batches_tracked",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "layer3.2.conv2.weight",
            "fc.bias",
        ] {
            assert!(names.iter().any(|n| n == expected), "{name}: no {expected}");
        }
        assert!(!model.is_sequential());
    }
    let yaml = compiled("resnet20.yaml").into_model();
    let dsl = compiled("resnet20.cnn").into_model();
    assert_eq!(yaml, dsl);
}

#[test]
fn dense_blocks_concatenate_and_name_their_layers_from_templates() {
    let model = compiled("densenet_small.cnn");
    let names = tensor_names(&model);
    assert!(
        names
            .iter()
            .any(|n| n == "features.denseblock1.denselayer3.norm1.running_mean")
    );
    assert!(
        names
            .iter()
            .any(|n| n == "features.transition1.conv.weight")
    );
    // 16 + 3 * 8 channels after the first dense block, halved by the transition.
    let transition = model
        .layers()
        .iter()
        .find(|l| l.name() == "features.transition1.conv")
        .expect("the transition's convolution");
    assert_eq!(
        transition.output_shape(),
        cnnc_spec::Shape::Chw([20, 32, 32])
    );
    let yaml = compiled("densenet_small.yaml").into_model();
    let layer_names = |m: &cnnc_spec::CoreModel| {
        m.layers()
            .iter()
            .map(|l| format!("{} {:?}", l.name(), l.inputs()))
            .collect::<Vec<_>>()
    };
    assert_eq!(layer_names(&model), layer_names(&yaml));
    assert_eq!(model.into_model(), yaml);
}

#[test]
fn defaults_may_use_earlier_parameters_and_copies_their_index() {
    let text = "input (3, 8, 8)\n\
                block Bottleneck(planes, out=planes * 4) {\n\
                \x20 conv: conv2d(out_channels=out, kernel_size=1)\n\
                }\n\
                stage{i}: Bottleneck(planes=(i + 1) * 2, repeat=2)\n\
                flatten\n";
    let source = Source::new("b.cnn", text, Format::Dsl);
    let (model, _) = cnnc_spec::compile(&source).expect("valid");
    let convs: Vec<(String, cnnc_spec::Shape)> = model
        .layers()
        .iter()
        .filter(|l| l.kind() == cnnc_spec::LayerKind::Conv2d)
        .map(|l| (l.name().to_owned(), l.output_shape()))
        .collect();
    assert_eq!(
        convs,
        [
            ("stage0.conv".to_owned(), cnnc_spec::Shape::Chw([8, 8, 8])),
            ("stage1.conv".to_owned(), cnnc_spec::Shape::Chw([16, 8, 8])),
        ]
    );
}

#[test]
fn only_plain_yaml_scalars_are_arithmetic() {
    let text = "input: [1, 4, 4]\nlayers:\n  - conv2d: {out_channels: 2 * 2, kernel_size: 1, padding_mode: \"a-b\"}\n";
    let model = cnnc_spec::parse(&Source::new("q.yaml", text, Format::Yaml)).expect("parses");
    let args = &model.layers[0].args;
    assert!(matches!(args[0].value.kind, cnnc_spec::ValueKind::Expr(_)));
    assert_eq!(
        args[2].value.kind,
        cnnc_spec::ValueKind::Str("a-b".to_owned())
    );
    // Printed and read back in either language, the string stays a string.
    let dsl = cnnc_spec::to_dsl(&model);
    let back = cnnc_spec::parse(&Source::new("q.cnn", dsl.as_str(), Format::Dsl)).expect("parses");
    let yaml = cnnc_spec::to_yaml(&back);
    let again =
        cnnc_spec::parse(&Source::new("q2.yaml", yaml.as_str(), Format::Yaml)).expect("parses");
    assert_eq!(spanless(again), spanless(model));
}
