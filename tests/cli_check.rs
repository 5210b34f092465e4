//! End-to-end tests of `cnnc check`: exit statuses, directory walking, standard input,
//! `--deny warnings` and the JSON contract.

mod support;

use support::{cnnc, stdout};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cnnc_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cnnc runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("cnnc finishes")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file written");
    path.display().to_string()
}

#[test]
fn example_models_pass() {
    let output = cnnc(&["check", "models/", "--color", "never"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.starts_with("checked "), "{text}");
    assert!(text.trim_end().ends_with("no problems"), "{text}");
}

#[test]
fn errors_exit_1_with_rustc_style_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "input: [3, 32, 32]\nlayers:\n  - flatten\n  - linear: {in_features: 100, out_features: 10}\n",
    );
    let output = cnnc(&["check", &bad, "--color", "never"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output).replace(&bad, "bad.yaml");
    insta::assert_snapshot!(text);
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "odd.cnn",
        "input (1, 15, 15)\nmaxpool2d(kernel_size=2)\n",
    );
    assert_eq!(cnnc(&["check", &spec]).status.code(), Some(0));
    assert_eq!(
        cnnc(&["check", "--deny", "warnings", &spec]).status.code(),
        Some(1)
    );
}

#[test]
fn io_and_usage_problems_exit_2() {
    assert_eq!(cnnc(&["check", "no/such/spec.yaml"]).status.code(), Some(2));
    assert_eq!(cnnc(&["check", "Cargo.toml"]).status.code(), Some(2));
    assert_eq!(cnnc(&["check"]).status.code(), Some(2));
    assert_eq!(
        cnnc(&["check", "--format", "xml", "models"]).status.code(),
        Some(2)
    );
    let output = cnnc(&["check", "no/such/spec.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read spec no/such/spec.yaml"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "checked 0 specs: no problems; 1 spec could not be read"
    );
}

#[test]
fn directories_are_walked_for_both_languages() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("nested")).expect("nested dir");
    write(
        dir.path(),
        "a.yaml",
        "input: [1, 4, 4]\nlayers: [flatten]\n",
    );
    write(dir.path(), "nested/b.cnn", "input (1, 4, 4)\nflatten\n");
    write(dir.path(), "notes.txt", "not a spec");
    let output = cnnc(&["check", &dir.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("checked 2 specs"));
}

#[test]
fn standard_input_in_either_language() {
    let yaml = cnnc_stdin(&["check", "-"], "input: [1, 4, 4]\nlayers:\n  - flatten\n");
    assert_eq!(yaml.status.code(), Some(0), "{}", stdout(&yaml));
    let dsl = cnnc_stdin(&["check", "-"], "# a DSL spec\ninput (1, 4, 4)\nflatten\n");
    assert_eq!(dsl.status.code(), Some(0), "{}", stdout(&dsl));
    let bad = cnnc_stdin(&["check", "--lang", "dsl", "-"], "input (1, 4, 4)\nconv(\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("--> <stdin>:2:6"), "{}", stdout(&bad));
}

#[test]
fn json_has_the_contract_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "bad.cnn",
        "input (3, 32, 32)\nconv2d(out_channels=8, kernal_size=3)\n",
    );
    let output = cnnc(&["check", "--format", "json", &spec]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let diagnostics = json.as_array().expect("an array");
    assert_eq!(diagnostics.len(), 1);
    let d = &diagnostics[0];
    for key in [
        "severity",
        "code",
        "message",
        "file",
        "line",
        "column",
        "end_line",
        "end_column",
        "layer",
        "notes",
        "help",
    ] {
        assert!(d.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "E0202");
    assert_eq!(d["file"], spec.as_str());
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(2), Some(24))
    );
    assert_eq!(
        (d["end_line"].as_u64(), d["end_column"].as_u64()),
        (Some(2), Some(35))
    );
    assert_eq!(d["layer"], "0");
    assert_eq!(d["help"], "did you mean `kernel_size`?");
}

#[test]
fn color_only_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(dir.path(), "bad.cnn", "input (3, 32, 32)\nrelu(x=1)\n");
    let plain = stdout(&cnnc(&["check", &spec]));
    assert!(!plain.contains('\u{1b}'), "piped output must be plain");
    let colored = stdout(&cnnc(&["check", "--color", "always", &spec]));
    assert!(colored.contains('\u{1b}'));
}
