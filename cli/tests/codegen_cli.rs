//! End-to-end tests of `cnnc codegen`: the seed model's source (an insta snapshot, and the copy in
//! `tests/generated/` that `codegen_module.rs` builds), a graph model's (committed there too),
//! writing with `-o`, and spec errors.

mod support;

use support::cnnc;

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn seed_model_source() {
    let output = cnnc(&["codegen", "models/custom_cnn.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let source = text(&output.stdout);
    assert!(source.contains("pub struct CustomCNN"));
    assert!(source.contains("// layer3.0: conv2d [32, 8, 8] -> [64, 8, 8]\n"));
    assert!(
        source.contains("// layer3.2: maxpool2d [64, 8, 8] -> [64, 4, 4], fused into layer3.0\n")
    );
    insta::assert_snapshot!(source);
}

/// `tests/generated/custom_cnn.rs` is built by `codegen_module.rs`; it must be today's output.
/// Regenerate it with `cnnc codegen models/custom_cnn.yaml -o tests/generated/custom_cnn.rs`.
#[test]
fn committed_module_is_current() {
    let output = cnnc(&["codegen", "models/custom_cnn.yaml"]);
    let committed = include_str!("../../tests/generated/custom_cnn.rs");
    assert!(
        text(&output.stdout) == committed,
        "tests/generated/custom_cnn.rs is stale"
    );
}

/// `tests/generated/graph_mix.rs`, a graph model's source (a residual add, a concat and a
/// squeeze-and-excitation mul), is built by `codegen_module.rs`; it must be today's output.
/// Regenerate it with `cnnc codegen tests/generated/graph_mix.cnn -o tests/generated/graph_mix.rs`.
#[test]
fn committed_graph_module_is_current() {
    let output = cnnc(&["codegen", "tests/generated/graph_mix.cnn"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let source = text(&output.stdout);
    assert!(source.contains("// res: add(conv_a, act) [8, 8, 8], [8, 8, 8] -> [8, 8, 8]\n"));
    assert!(
        source == include_str!("../../tests/generated/graph_mix.rs"),
        "tests/generated/graph_mix.rs is stale"
    );
    let yaml = text(&cnnc(&["codegen", "tests/generated/graph_mix.yaml"]).stdout);
    assert_eq!(yaml.replace("graph_mix.yaml", "graph_mix.cnn"), source);
}

#[test]
fn both_languages_give_the_same_model() {
    let yaml = text(&cnnc(&["codegen", "models/vgg_small.yaml"]).stdout);
    let dsl = text(&cnnc(&["codegen", "models/vgg_small.cnn"]).stdout);
    assert!(yaml.contains("pub struct VGGSmall"));
    assert_eq!(yaml.replace("vgg_small.yaml", "vgg_small.cnn"), dsl);
}

#[test]
fn output_flag_writes_the_same_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lenet.rs");
    let path_text = path.display().to_string();
    let written = cnnc(&[
        "codegen",
        "models/lenet5.cnn",
        "--name",
        "le_net",
        "-o",
        &path_text,
    ]);
    assert_eq!(written.status.code(), Some(0), "{}", text(&written.stderr));
    assert!(written.stdout.is_empty());
    let printed = cnnc(&["codegen", "models/lenet5.cnn", "--name", "le_net"]);
    let file = std::fs::read_to_string(&path).expect("written file");
    assert_eq!(file, text(&printed.stdout));
    assert!(file.contains("pub struct LeNet"));
    // Only the finished file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    let missing_dir = dir.path().join("no/such/dir/x.rs").display().to_string();
    assert_eq!(
        cnnc(&["codegen", "models/lenet5.cnn", "-o", &missing_dir])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn spec_errors_exit_1_with_the_check_diagnostics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.cnn");
    std::fs::write(
        &bad,
        "input (3, 32, 32)\nflatten\nfc: linear(in_features=100, out_features=10)\n",
    )
    .expect("spec written");
    let bad = bad.display().to_string();
    let output = cnnc(&["codegen", "--color", "never", &bad]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let check = cnnc(&["check", "--color", "never", &bad]);
    let (codegen_err, check_out) = (
        text(&output.stderr),
        text(&check.stdout) + &text(&check.stderr),
    );
    assert!(codegen_err.contains("error[E0301]"), "{codegen_err}");
    assert!(
        check_out.contains(codegen_err.trim()),
        "check printed:\n{check_out}\ncodegen:\n{codegen_err}"
    );

    let image = dir.path().join("image.cnn");
    std::fs::write(
        &image,
        "input (1, 8, 8)\nconv2d(out_channels=2, kernel_size=3)\n",
    )
    .expect("spec written");
    let output = cnnc(&["codegen", &image.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("end it with flatten and linear"),
        "{}",
        text(&output.stderr)
    );
}
