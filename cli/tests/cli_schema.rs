//! `cnnc schema`: the shipped `editors/cnnc.schema.json` is its current output, every shipped
//! YAML model and valid corpus spec validates against it, and specs with an unknown kind or
//! argument, a missing required argument or a value of the wrong type do not.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{cnnc, stdout};

/// The schema as `cnnc schema` prints it.
fn printed_schema() -> String {
    let output = cnnc(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    stdout(&output)
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&printed_schema()).expect("the schema is JSON");
    jsonschema::draft7::new(&schema).expect("the schema is a valid draft-07 schema")
}

/// A YAML spec as the JSON value the YAML language server validates.
fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("the spec is YAML")
}

fn yaml_specs(dir: &str) -> Vec<PathBuf> {
    let mut specs: Vec<_> = std::fs::read_dir(Path::new("..").join(dir))
        .expect("directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    specs.sort();
    specs
}

#[test]
fn the_shipped_schema_is_current() {
    let shipped = std::fs::read_to_string("../editors/cnnc.schema.json").expect("shipped schema");
    assert!(
        shipped == printed_schema(),
        "editors/cnnc.schema.json is stale: run `cargo run -- schema > editors/cnnc.schema.json`"
    );
}

#[test]
fn shipped_models_and_valid_specs_validate() {
    let validator = validator();
    let mut checked = 0;
    for dir in [
        "models",
        "spec/tests/corpus/valid",
        "spec/tests/corpus/warn",
        "spec/tests/graph",
    ] {
        for path in yaml_specs(dir) {
            let text = std::fs::read_to_string(&path).expect("spec");
            let errors: Vec<String> = validator
                .iter_errors(&yaml(&text))
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} specs found");
}

#[test]
fn specs_the_checker_refuses_for_their_shape_do_not_validate() {
    let validator = validator();
    let head = "model: M\ninput: [3, 32, 32]\nlayers:\n";
    for (layers, why) in [
        (
            "  - conv3d: {out_channels: 8, kernel_size: 3}\n",
            "unknown kind",
        ),
        ("  - conv2dd\n", "unknown bare kind"),
        (
            "  - conv2d: {out_channels: 8, kernel_size: 3, strides: 2}\n",
            "unknown argument",
        ),
        ("  - conv2d: {out_channels: 8}\n", "missing kernel_size"),
        ("  - conv2d\n", "a kind that needs arguments written bare"),
        (
            "  - conv2d: {out_channels: eight, kernel_size: 3}\n",
            "a string for a size",
        ),
        (
            "  - conv2d: {out_channels: 0, kernel_size: 3}\n",
            "a zero size",
        ),
        (
            "  - maxpool2d: {kernel_size: [2, 2, 2]}\n",
            "a pair of three",
        ),
        ("  - dropout: {p: 1.5}\n", "p beyond 1"),
        ("  - batchnorm2d: {eps: 0}\n", "eps not above 0"),
        ("  - relu: {name: \"bad name\"}\n", "a name with a space"),
        ("  - relu: {}\n    tanh: {}\n", "two kinds in one layer"),
    ] {
        let spec = yaml(&format!("{head}{layers}"));
        assert!(!validator.is_valid(&spec), "{why} validated: {layers}");
    }
    for (spec, why) in [
        ("model: M\nlayers: [relu]\n", "no input"),
        (
            "input: [3, 32]\nlayers: [relu]\n",
            "a two-dimensional input",
        ),
        (
            "input: [3, 32, 32]\nlayer: [relu]\n",
            "an unknown top-level key",
        ),
    ] {
        assert!(!validator.is_valid(&yaml(spec)), "{why} validated: {spec}");
    }
    // And the forms it should take: bare kinds, null and empty arguments, pairs, names.
    let good = yaml(&format!(
        "{head}  - relu\n  - tanh:\n  - sigmoid: {{}}\n  - conv2d: {{name: c.1, out_channels: 8, kernel_size: [3, 5]}}\n  - leaky_relu: {{negative_slope: -2}}\n  - flatten: {{name: 7}}\n"
    ));
    let errors: Vec<String> = validator
        .iter_errors(&good)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
