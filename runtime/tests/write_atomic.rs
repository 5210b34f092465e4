//! `fsio::write_atomic`, through which every output file is written: a failed write leaves the
//! destination as it was and no temporary file behind, and temporary files left by a killed
//! process are never reused.

use std::fs;
use std::path::Path;

use cnnc_runtime::fsio::{is_temp_file_of, write_atomic};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("a folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_rename_removes_the_temporary_file_and_keeps_the_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A non-empty directory cannot be replaced by a file: the rename, the last step, fails.
    let target = dir.path().join("out.bin");
    fs::create_dir(&target).expect("a directory in the way");
    fs::write(target.join("inside"), b"kept").expect("a file inside");
    let error = write_atomic(&target, b"new bytes").expect_err("the rename fails");
    assert_ne!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    assert_eq!(names(dir.path()), ["out.bin"]);
    assert_eq!(fs::read(target.join("inside")).expect("kept"), b"kept");
}

#[test]
fn stale_temporary_files_are_skipped_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("model.safetensors");
    // What a killed process with this process's id would have left, for the first writes.
    let pid = std::process::id();
    let stale: Vec<String> = (0..64)
        .map(|n| format!(".model.safetensors.{pid}.{n}.tmp"))
        .collect();
    for name in &stale {
        fs::write(dir.path().join(name), b"partial").expect("a stale file");
    }
    write_atomic(&target, b"complete").expect("a write past the stale names");
    assert_eq!(fs::read(&target).expect("written"), b"complete");
    for name in &stale {
        assert_eq!(
            fs::read(dir.path().join(name)).expect("still there"),
            b"partial"
        );
    }
    assert_eq!(names(dir.path()).len(), stale.len() + 1);
}

#[test]
fn temporary_file_names_are_recognised_for_their_file_only() {
    // The names write_atomic really uses, as the stale-file test above plants them.
    let pid = std::process::id();
    assert!(is_temp_file_of(
        &format!(".model.safetensors.{pid}.0.tmp"),
        "model.safetensors"
    ));
    assert!(is_temp_file_of(
        "..checkpoint.json.pending.77.4.tmp",
        ".checkpoint.json.pending"
    ));
    for other in [
        ".model.safetensors.1.0.tmp.bak",
        "model.safetensors.1.0.tmp",
        ".model.safetensors.tmp",
        ".model.safetensors.x.0.tmp",
        ".model.safetensors.1.0.2.tmp",
        ".optimizer.state.1.0.tmp",
    ] {
        assert!(!is_temp_file_of(other, "model.safetensors"), "{other}");
    }
}
