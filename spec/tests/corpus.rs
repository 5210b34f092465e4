//! The spec corpus: every valid spec (the corpus and the example models) checks clean and
//! round-trips between the languages; every invalid spec's diagnostics are snapshotted, as text
//! and as JSON. Snapshots live in `tests/snapshots/`; review them like code.

use std::path::{Path, PathBuf};

use cnnc_spec::{Format, JsonDiagnostic, Model, Source};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Spec files under `dir`, sorted, as sources named relative to `base`.
fn sources(dir: &Path, base: &Path) -> Vec<Source> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| Format::from_path(path).is_some())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no specs in {}", dir.display());
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable spec");
            let name = path
                .strip_prefix(base)
                .unwrap_or(path)
                .display()
                .to_string();
            Source::new(name, text, Format::from_path(path).expect("spec extension"))
        })
        .collect()
}

fn corpus(kind: &str) -> Vec<Source> {
    let base = manifest_dir().join("tests/corpus");
    sources(&base.join(kind), &base)
}

fn valid_specs() -> Vec<Source> {
    let mut all = corpus("valid");
    let root = manifest_dir().join("..");
    all.extend(sources(&root.join("models"), &root));
    all
}

fn parsed(source: &Source) -> Model {
    cnnc_spec::parse(source).unwrap_or_else(|diagnostics| {
        panic!(
            "{} does not parse:\n{}",
            source.name(),
            diagnostics
                .iter()
                .map(|d| cnnc_spec::render(d, source, false))
                .collect::<String>()
        )
    })
}

fn without_spans(mut model: Model) -> Model {
    model.clear_spans();
    model
}

fn rendered(source: &Source) -> String {
    let diagnostics = match cnnc_spec::parse(source) {
        Ok(model) => cnnc_spec::check(&model).diagnostics,
        Err(diagnostics) => diagnostics,
    };
    diagnostics
        .iter()
        .map(|d| cnnc_spec::render(d, source, false))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn corpus_is_big_enough() {
    assert!(valid_specs().len() >= 10);
    assert!(corpus("invalid").len() >= 25);
    let invalid = corpus("invalid");
    assert!(invalid.iter().any(|s| s.format() == Format::Yaml));
    assert!(invalid.iter().any(|s| s.format() == Format::Dsl));
}

#[test]
fn valid_specs_check_without_diagnostics() {
    for source in valid_specs() {
        let checked = cnnc_spec::check(&parsed(&source));
        assert!(
            checked.diagnostics.is_empty(),
            "{}:\n{}",
            source.name(),
            rendered(&source)
        );
        let model = checked.model.expect("a resolved model");
        assert!(!model.layers().is_empty());
    }
}

#[test]
fn valid_specs_round_trip_between_languages() {
    for source in valid_specs() {
        let model = parsed(&source);
        let yaml = cnnc_spec::to_yaml(&model);
        let dsl = cnnc_spec::to_dsl(&model);
        let from_yaml = parsed(&Source::new("yaml", yaml.as_str(), Format::Yaml));
        let from_dsl = parsed(&Source::new("dsl", dsl.as_str(), Format::Dsl));
        // Printing is canonical: printing what was printed changes nothing.
        assert_eq!(cnnc_spec::to_yaml(&from_dsl), yaml, "{}", source.name());
        assert_eq!(cnnc_spec::to_dsl(&from_yaml), dsl, "{}", source.name());
        let original = without_spans(model);
        assert_eq!(
            without_spans(from_yaml),
            original,
            "{} via YAML",
            source.name()
        );
        assert_eq!(
            without_spans(from_dsl),
            original,
            "{} via DSL",
            source.name()
        );
    }
}

#[test]
fn every_example_model_has_an_identical_twin() {
    let root = manifest_dir().join("..");
    let models = sources(&root.join("models"), &root);
    let yaml: Vec<&Source> = models
        .iter()
        .filter(|s| s.format() == Format::Yaml)
        .collect();
    assert!(yaml.len() >= 5, "expected the seed and four more examples");
    for source in yaml {
        let twin_name = source.name().replace(".yaml", ".cnn");
        let twin = models
            .iter()
            .find(|s| s.name() == twin_name)
            .unwrap_or_else(|| panic!("{} has no DSL twin {twin_name}", source.name()));
        assert_eq!(
            without_spans(parsed(source)),
            without_spans(parsed(twin)),
            "{} and {twin_name} differ",
            source.name()
        );
        let a = cnnc_spec::compile(source).expect("valid").0;
        let b = cnnc_spec::compile(twin).expect("valid").0;
        assert_eq!(
            a.layers()
                .iter()
                .map(|l| (l.name(), l.config(), l.output_shape()))
                .collect::<Vec<_>>(),
            b.layers()
                .iter()
                .map(|l| (l.name(), l.config(), l.output_shape()))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn invalid_specs_render_their_errors() {
    for source in corpus("invalid") {
        let text = rendered(&source);
        assert!(text.contains("error["), "{} has no error", source.name());
        let file = source.name().replace(['/', '.'], "_");
        insta::assert_snapshot!(format!("invalid_{file}").as_str(), text);
    }
}

#[test]
fn warned_specs_render_their_warnings() {
    for source in corpus("warn") {
        let text = rendered(&source);
        assert!(
            text.contains("warning["),
            "{} has no warning",
            source.name()
        );
        assert!(!text.contains("error["), "{} has an error", source.name());
        let file = source.name().replace(['/', '.'], "_");
        insta::assert_snapshot!(format!("warn_{file}").as_str(), text);
    }
}

#[test]
fn invalid_specs_as_json() {
    let mut lines = Vec::new();
    for source in corpus("invalid").iter().chain(&corpus("warn")) {
        let diagnostics = match cnnc_spec::parse(source) {
            Ok(model) => cnnc_spec::check(&model).diagnostics,
            Err(diagnostics) => diagnostics,
        };
        for diagnostic in &diagnostics {
            let json = JsonDiagnostic::new(diagnostic, source);
            lines.push(serde_json::to_string(&json).expect("serializable"));
        }
    }
    insta::assert_snapshot!("json_diagnostics", lines.join("\n"));
}

#[test]
fn byte_order_marks_are_skipped_in_both_languages() {
    let valid = corpus("valid");
    let find = |name: &str| {
        valid
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("{name} in the corpus"))
    };
    let yaml = find("valid/byte_order_mark.yaml");
    let dsl = find("valid/byte_order_mark.cnn");
    assert!(yaml.text().starts_with('\u{feff}') && dsl.text().starts_with('\u{feff}'));
    let from_yaml = parsed(yaml);
    assert_eq!(without_spans(parsed(dsl)), without_spans(from_yaml.clone()));
    // The first line's comment is kept, and printing drops the mark.
    let printed = cnnc_spec::to_yaml(&from_yaml);
    assert!(
        printed.starts_with("# Saved by an editor that writes a byte order mark.\nmodel: Bom\n"),
        "{printed}"
    );
}

/// Applies every fix, round after round, as `cnnc check --fix` does.
fn fixed(source: &Source) -> Source {
    let mut current = source.clone();
    for _ in 0..16 {
        let diagnostics = match cnnc_spec::parse(&current) {
            Ok(model) => cnnc_spec::check(&model).diagnostics,
            Err(diagnostics) => diagnostics,
        };
        let (text, count) = cnnc_spec::apply_fixes(&current, &diagnostics)
            .unwrap_or_else(|e| panic!("{}: {e}", source.name()));
        if count == 0 {
            break;
        }
        current = Source::new(current.name(), text, current.format());
    }
    current
}

#[test]
fn fixes_make_the_fixable_specs_check_clean() {
    let mut clean = Vec::new();
    for source in corpus("invalid") {
        let after = fixed(&source);
        let diagnostics = match cnnc_spec::parse(&after) {
            Ok(model) => cnnc_spec::check(&model).diagnostics,
            Err(diagnostics) => diagnostics,
        };
        if diagnostics.is_empty() {
            clean.push(source.name().to_owned());
        }
        // A fix never adds an error the spec did not have.
        assert!(
            diagnostics.iter().all(|d| d.fix.is_none()),
            "{}: a fix is left unapplied",
            source.name()
        );
    }
    assert_eq!(
        clean,
        [
            "invalid/dsl_colon_argument.cnn",
            "invalid/dsl_invisible_character.cnn",
            "invalid/dsl_no_break_space.cnn",
            "invalid/graph_bad_expression.yaml",
            "invalid/in_channels_mismatch.cnn",
            "invalid/in_features_mismatch.yaml",
            "invalid/num_features_mismatch.yaml",
            "invalid/size_chain_elided.cnn",
            "invalid/sizes_from_input_and_linear.cnn",
            "invalid/unknown_argument.yaml",
            "invalid/unknown_layer_conv.yaml",
            "invalid/unknown_top_level_key.yaml",
        ]
    );
}

#[test]
fn a_huge_invalid_name_is_quoted_short() {
    let name = "a-".repeat(50_000);
    let text = format!("input: [1, 8, 8]\nlayers:\n  - relu: {{name: \"{name}\"}}\n");
    let source = Source::new("long_name.yaml", text, Format::Yaml);
    let output = rendered(&source);
    assert!(output.len() < 1_000, "{} bytes", output.len());
    insta::assert_snapshot!(output);
}
