//! End-to-end tests of `cnnc fmt`: conversion both ways keeps the model, names and comments;
//! `-o` writes the file; unreadable specs are refused.

mod support;

use support::{cnnc, stdout};

#[test]
fn seed_converts_to_its_shipped_twin_and_back() {
    let dsl = cnnc(&["fmt", "--to", "dsl", "models/custom_cnn.yaml"]);
    assert_eq!(dsl.status.code(), Some(0));
    let shipped_dsl = std::fs::read_to_string("../models/custom_cnn.cnn").expect("twin");
    assert_eq!(stdout(&dsl), shipped_dsl);
    let yaml = cnnc(&["fmt", "--to", "yaml", "models/custom_cnn.cnn"]);
    let shipped_yaml = std::fs::read_to_string("../models/custom_cnn.yaml").expect("seed");
    assert_eq!(stdout(&yaml), shipped_yaml);
}

#[test]
fn reformats_in_place_language_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("messy.cnn");
    std::fs::write(
        &path,
        "# a messy spec\nmodel   Messy\ninput [1,8,8]   # one channel\nc1 : conv2d( out_channels = 4 ,kernel_size=[3,3], )\nFLATTEN_ME: flatten # squash\nlinear(out_features=2,bias=False)\n",
    )
    .expect("spec written");
    let out = dir.path().join("clean.cnn");
    let path_text = path.display().to_string();
    let out_text = out.display().to_string();
    let status = cnnc(&["fmt", &path_text, "-o", &out_text]).status;
    assert_eq!(status.code(), Some(0));
    let clean = std::fs::read_to_string(&out).expect("output written");
    insta::assert_snapshot!(clean);
    // No temporary file is left behind.
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(leftovers, 2);
}

#[test]
fn refuses_specs_with_syntax_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "input: [3, 32\n").expect("spec written");
    let output = cnnc(&["fmt", "--to", "dsl", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[E0001]"));
}

#[test]
fn check_passes_formatted_specs_and_diffs_the_rest_without_writing() {
    for seed in ["models/custom_cnn.yaml", "models/custom_cnn.cnn"] {
        let output = cnnc(&["fmt", "--check", seed]);
        assert_eq!(output.status.code(), Some(0), "{seed}");
        assert!(stdout(&output).is_empty(), "{seed}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("messy.cnn");
    let messy = "input [1,8,8]\nflatten\nlinear(out_features=2)\n";
    std::fs::write(&path, messy).expect("spec written");
    let name = path.display().to_string();
    let output = cnnc(&["fmt", "--check", &name]);
    assert_eq!(output.status.code(), Some(1));
    let diff = stdout(&output);
    assert!(
        diff.starts_with(&format!("--- {name}\n+++ {name} (formatted)\n")),
        "{diff}"
    );
    assert!(
        diff.contains("\n-input [1,8,8]\n+input (1, 8, 8)\n+\n flatten\n"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("spec"), messy);
    // Checking cannot be combined with writing or converting.
    let output = cnnc(&["fmt", "--check", "--to", "yaml", &name]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn check_takes_several_specs_and_directories_as_pre_commit_passes_them() {
    // Every shipped model is formatted, found through its directory.
    let output = cnnc(&["fmt", "--check", "models", "models/custom_cnn.cnn"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let dir = tempfile::tempdir().expect("temp dir");
    let messy = dir.path().join("messy.cnn");
    std::fs::write(&messy, "input [1,8,8]\nflatten\n").expect("spec written");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "input: [1, 8, 8\n").expect("spec written");
    let (messy, broken) = (messy.display().to_string(), broken.display().to_string());
    let output = cnnc(&["fmt", "--check", "models/lenet5.yaml", &messy, &broken]);
    assert_eq!(output.status.code(), Some(1));
    let diff = stdout(&output);
    assert!(diff.starts_with(&format!("--- {messy}\n")), "{diff}");
    assert!(!diff.contains("lenet5"), "{diff}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[E0001]"));
    // An unreadable spec outranks an unformatted one.
    let output = cnnc(&["fmt", "--check", &messy, "no/such/spec.cnn"]);
    assert_eq!(output.status.code(), Some(2));
    // Without --check, one spec at a time.
    let output = cnnc(&["fmt", "models/lenet5.cnn", "models/lenet5.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("one spec at a time"));
}

#[test]
fn a_byte_order_mark_keeps_the_first_lines_comment_in_both_languages() {
    for (spec, to) in [
        ("spec/tests/corpus/valid/byte_order_mark.yaml", "yaml"),
        ("spec/tests/corpus/valid/byte_order_mark.cnn", "yaml"),
        ("spec/tests/corpus/valid/byte_order_mark.yaml", "dsl"),
    ] {
        let output = cnnc(&["fmt", "--to", to, spec]);
        assert_eq!(output.status.code(), Some(0), "{spec}");
        let text = stdout(&output);
        assert!(
            text.starts_with("# Saved by an editor that writes a byte order mark.\nmodel"),
            "{spec} to {to}: {text}"
        );
    }
}

#[test]
fn syntax_errors_are_capped_like_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("many.yaml");
    let keys: String = (0..300).map(|i| format!("k{i}: 1\n")).collect();
    std::fs::write(&path, format!("input: [1, 8, 8]\nlayers: [relu]\n{keys}"))
        .expect("spec written");
    let output = cnnc(&["fmt", "--color", "never", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(text.matches("error[E0006]").count(), 100);
    assert!(text.contains("note: 200 more errors in"), "{text}");
}
