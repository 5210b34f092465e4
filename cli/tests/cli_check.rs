//! End-to-end tests of `cnnc check`: exit statuses, directory walking, standard input,
//! `--deny warnings`, the JSON contract, `--fix`, the cap on diagnostics printed, and
//! `cnnc explain`.

mod support;

use support::{cnnc, stderr, stdout};

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
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    // A command that refuses standard input may exit before reading it: the pipe is then closed.
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "stdin written: {e}"
        );
    }
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

/// Copies a corpus spec into `dir`, returning its new path.
fn corpus_copy(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(Path::new("../spec/tests/corpus").join(name))
        .expect("corpus spec readable");
    let file = Path::new(name).file_name().expect("a file name");
    write(dir, &file.to_string_lossy(), &text)
}

#[test]
fn fix_makes_the_fixable_corpus_specs_check_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in [
        "invalid/in_features_mismatch.yaml",
        "invalid/in_channels_mismatch.cnn",
        "invalid/num_features_mismatch.yaml",
        "invalid/unknown_argument.yaml",
        "invalid/unknown_layer_conv.yaml",
        "invalid/unknown_top_level_key.yaml",
        "invalid/dsl_colon_argument.cnn",
    ] {
        let spec = corpus_copy(dir.path(), name);
        let before = std::fs::read_to_string(&spec).expect("spec readable");
        let output = cnnc(&["check", "--fix", "--color", "never", &spec]);
        let report = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {report}{}",
            stdout(&output)
        );
        assert!(
            report.starts_with(&format!("fixed {spec} (")),
            "{name}: {report}"
        );
        assert!(stdout(&output).contains("no problems"), "{name}");
        let after = std::fs::read_to_string(&spec).expect("spec readable");
        assert_ne!(before, after, "{name} unchanged");
        // Fixed for good: a plain check agrees, and a second --fix has nothing to do.
        assert_eq!(cnnc(&["check", &spec]).status.code(), Some(0), "{name}");
        let again = cnnc(&["check", "--fix", &spec]);
        assert_eq!(stderr(&again), "", "{name}");
    }
}

#[test]
fn fix_says_what_it_fixed_and_reports_what_is_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "two.yaml",
        "input: [3, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernal_size: 3}\n  - flatten\n  - linear: {in_features: 7, out_features: 2}\n  - dropout: {p: 2}\n",
    );
    let output = cnnc(&["check", "--fix", "--color", "never", &spec]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "fixed {spec} (2 fixes):\n  line 3: did you mean `kernel_size`?\n  line 5: set `in_features: 144`, or remove `in_features` to have it inferred\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&spec).expect("spec readable"),
        "input: [3, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernel_size: 3}\n  - flatten\n  - linear: {in_features: 144, out_features: 2}\n  - dropout: {p: 2}\n"
    );
    // What no fix covers is reported as by a plain check.
    let text = stdout(&output);
    assert!(text.contains("error[E0206]"), "{text}");
    assert!(
        text.trim_end().ends_with("checked 1 spec: 1 error"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn fix_keeps_the_mode_and_replaces_a_symlinks_target() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = corpus_copy(dir.path(), "invalid/unknown_argument.yaml");
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = dir.path().join("link.yaml");
    symlink(&spec, &link).expect("symlink");
    let output = cnnc(&["check", "--fix", &link.display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    let mode = std::fs::metadata(&spec).expect("spec").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    assert!(
        std::fs::read_to_string(&spec)
            .expect("spec")
            .contains("kernel_size: 3")
    );
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn fix_refuses_standard_input() {
    let output = cnnc_stdin(&["check", "--fix", "-"], "input (1, 4, 4)\nflatten\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot fix standard input"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn json_carries_the_fix_as_edits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "bad.cnn",
        "input (3, 32, 32)\nconv2d(out_channels=8, kernal_size=3)\n",
    );
    let output = cnnc(&["check", "--format", "json", &spec]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(
        json[0]["fix"],
        serde_json::json!({
            "message": "did you mean `kernel_size`?",
            "edits": [{
                "line": 2, "column": 24, "end_line": 2, "end_column": 35,
                "byte_start": 41, "byte_end": 52, "replacement": "kernel_size"
            }]
        })
    );
}

#[test]
fn explain_prints_every_codes_explanation() {
    for &code in cnnc_spec::Code::ALL {
        let output = cnnc(&["explain", code.as_str()]);
        assert_eq!(output.status.code(), Some(0), "{code:?}");
        assert_eq!(stdout(&output), code.explanation(), "{code:?}");
        let lower = cnnc(&["explain", &code.as_str().to_lowercase()]);
        assert_eq!(stdout(&lower), code.explanation(), "{code:?}");
    }
}

#[test]
fn explain_alone_lists_every_code() {
    let output = cnnc(&["explain"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), cnnc_spec::Code::ALL.len());
    assert!(text.contains("E0301  size mismatch\n"), "{text}");
}

#[test]
fn explain_suggests_the_code_meant() {
    let output = cnnc(&["explain", "E301"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim_end(),
        "error: no diagnostic code `E301`: did you mean `E0301` (size mismatch)?"
    );
    let output = cnnc(&["explain", "\u{1b}[31mred"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("codes look like `E0301`"), "{text}");
}

#[test]
fn many_errors_print_the_first_hundred_and_a_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: String = (0..250).map(|i| format!(", a{i}=1")).collect();
    let spec = write(
        dir.path(),
        "many.cnn",
        &format!("input (1, 8, 8)\nconv2d(out_channels=2, kernel_size=3{args})\n"),
    );
    let output = cnnc(&["check", "--color", "never", &spec]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert_eq!(text.matches("error[E0202]").count(), 100);
    let tail: Vec<&str> = text.trim_end().lines().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            "checked 1 spec: 250 errors",
            "",
            &format!(
                "note: 150 more errors in {spec} not shown (only the first 100 diagnostics of a spec are printed)"
            ),
        ]
    );
    let json = cnnc(&["check", "--format", "json", &spec]);
    let array: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(array.as_array().map(Vec::len), Some(100));
    assert!(
        stderr(&json).starts_with("note: 150 more errors"),
        "{}",
        stderr(&json)
    );
}
