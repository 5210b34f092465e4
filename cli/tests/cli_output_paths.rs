//! Where `fmt -o`, `codegen -o` and `run --output` write: a regular file is replaced atomically
//! (keeping its permissions, through any symbolic link), a device or a FIFO is written in place
//! (so `-o /dev/stdout` prints and `/dev/null` stays a device), and a directory is refused.

#![cfg(unix)]

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use cnnc_runtime::npy;
use ndarray::ArrayD;
use support::*;

const SEED: &str = "models/custom_cnn.yaml";

/// A tiny spec and a two-sample input for it, for `cnnc run`.
fn run_inputs(dir: &Path) -> (String, String) {
    let spec = tiny_spec(dir, "tiny.cnn", 1, 4);
    let input = dir.join("x.npy");
    let x = ArrayD::from_shape_vec(vec![2, 1, 4, 4], (0..32).map(|v| v as f32).collect())
        .expect("shape");
    npy::write_f32(&input, x.view()).expect("input written");
    (arg(&spec).to_owned(), arg(&input).to_owned())
}

#[test]
fn dev_stdout_prints_for_fmt_codegen_and_run() {
    let formatted = cnnc(&["fmt", SEED]);
    assert_status(&formatted, 0);
    let to_stdout = cnnc(&["fmt", SEED, "-o", "/dev/stdout"]);
    assert_status(&to_stdout, 0);
    assert_eq!(stdout(&to_stdout), stdout(&formatted));

    let generated = cnnc(&["codegen", SEED, "-o", "/dev/stdout"]);
    assert_status(&generated, 0);
    assert!(stdout(&generated).contains("pub struct "));

    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, input) = run_inputs(dir.path());
    let logits = cnnc(&["run", &spec, "--input", &input, "--output", "/dev/stdout"]);
    assert_status(&logits, 0);
    assert!(logits.stdout.starts_with(b"\x93NUMPY"), "an .npy on stdout");
    let kind = fs::symlink_metadata("/dev/stdout").expect("/dev/stdout");
    assert!(kind.file_type().is_symlink(), "/dev/stdout is still a link");
}

#[test]
fn dev_null_stays_a_device() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, input) = run_inputs(dir.path());
    for args in [
        vec!["fmt", SEED, "-o", "/dev/null"],
        vec!["codegen", SEED, "-o", "/dev/null"],
        vec!["run", &spec, "--input", &input, "--output", "/dev/null"],
    ] {
        let output = cnnc(&args);
        assert_status(&output, 0);
        let kind = fs::metadata("/dev/null").expect("/dev/null").file_type();
        assert!(kind.is_char_device(), "{args:?} left /dev/null as {kind:?}");
    }
}

#[test]
fn a_fifo_receives_the_output_and_stays_a_fifo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("spec.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            fs::File::open(fifo)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map(|_| text)
        })
    };
    let output = cnnc(&["fmt", SEED, "-o", arg(&fifo)]);
    assert_status(&output, 0);
    let kind = fs::symlink_metadata(&fifo)
        .expect("still there")
        .file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced by {kind:?}");
    let text = reader.join().expect("reader").expect("read");
    assert_eq!(text, stdout(&cnnc(&["fmt", SEED])));
}

#[test]
fn a_directory_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.yaml");
    fs::create_dir(&out).expect("a directory");
    let output = cnnc(&["fmt", SEED, "-o", arg(&out)]);
    assert_status(&output, 2);
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "error: cannot write `{}`: it is a directory; name a file to write",
            out.display()
        )
    );
    assert_eq!(fs::read_dir(&out).expect("still a folder").count(), 0);
}

#[test]
fn a_symlink_keeps_pointing_at_the_replaced_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = write(dir.path(), "model.rs", "// old\n");
    let link = dir.path().join("link.rs");
    symlink("model.rs", &link).expect("a link");
    let output = cnnc(&["codegen", SEED, "-o", arg(&link)]);
    assert_status(&output, 0);
    let kind = fs::symlink_metadata(&link).expect("link");
    assert!(kind.file_type().is_symlink(), "the link was replaced");
    let code = fs::read_to_string(&target).expect("target");
    assert!(code.contains("pub struct "), "{code}");
}

#[test]
fn a_private_file_stays_private() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, input) = run_inputs(dir.path());
    let out = write(dir.path(), "logits.npy", "old");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = cnnc(&["run", &spec, "--input", &input, "--output", arg(&out)]);
    assert_status(&output, 0);
    let mode = fs::metadata(&out).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert_eq!(npy::read_f32(&out).expect("logits").shape(), [2, 10]);
}
