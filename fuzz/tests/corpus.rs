//! Replays every seed (`corpus/<target>/`) and every input the fuzzer once crashed on
//! (`regressions/<target>/`) through its target: what CI runs instead of the fuzzer.

use std::any::Any;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const FOLDERS: [&str; 2] = ["corpus", "regressions"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Files of `folder/<target>/`, sorted; none when the folder does not exist.
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root().join(folder).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn replay(name: &str) {
    let (_, target) = cnnc_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let seeds = inputs("corpus", name);
    assert!(!seeds.is_empty(), "corpus/{name}/ has no seed");
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&inputs("regressions", name)) {
        let bytes = fs::read(path).expect("a readable input");
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| target(&bytes))) {
            failures.push(format!("{}: {}", path.display(), message(&*payload)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spec_yaml() {
    replay("spec_yaml");
}

#[test]
fn spec_dsl() {
    replay("spec_dsl");
}

#[test]
fn safetensors() {
    replay("safetensors");
}

#[test]
fn npy() {
    replay("npy");
}

#[test]
fn idx() {
    replay("idx");
}

#[test]
fn cifar() {
    replay("cifar");
}

#[test]
fn image() {
    replay("image");
}

/// A folder named after no target would silently never run.
#[test]
fn onnx() {
    replay("onnx");
}

#[test]
fn every_folder_names_a_target() {
    for folder in FOLDERS {
        let Ok(entries) = fs::read_dir(root().join(folder)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("a readable folder entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                cnnc_fuzz::TARGETS.iter().any(|(n, _)| *n == name),
                "{folder}/{name} is not a fuzz target"
            );
        }
    }
}
