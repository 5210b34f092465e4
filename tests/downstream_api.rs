//! A user's crate on the `cnnc::Model` contract: a copy of `tests/downstream/` (the generated
//! models of `model.cnn`, `tiny.cnn` and `truncated.cnn`) runs its own tests,
//! `tests/downstream/tests/model_api.rs`: one `Arc` of a model predicting from four threads, a
//! generic function over two generated models and the executor, `Box<dyn Model>`, independent
//! clones, named activations against a truncated model, errors in the user's terms; and
//! `tests/downstream/tests/training.rs`: the seed model trained one epoch from the Fashion-MNIST
//! loader to the accuracy `cnnc train` (the binary built beside this test) prints in the same run.
//! The copy and its target directory persist under the test target's temporary directory, so
//! only the first run compiles the dependencies.

#[allow(dead_code)] // only the binary's path: the downstream crate runs it
#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The copy, made once for both tests (which then build it one after the other, cargo locking
/// its target directory).
fn downstream() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(copy)
}

/// A copy of the downstream crate whose `cnnc` dependency points at this repository, locked to the
/// workspace's versions.
fn copy() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = repo.join("tests/downstream");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("downstream-api");
    for sub in ["src", "tests"] {
        std::fs::create_dir_all(dir.join(sub)).expect("crate directory");
    }
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let manifest = manifest.replace(
        "path = \"../..\"",
        &format!("path = {:?}", repo.display().to_string()),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("manifest written");
    for file in [
        "src/main.rs",
        "model.cnn",
        "tiny.cnn",
        "truncated.cnn",
        "tests/model_api.rs",
        "tests/training.rs",
    ] {
        std::fs::copy(template.join(file), dir.join(file)).expect("template copied");
    }
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file copied");
    dir
}

/// Runs the copy's test `name` (with the `cnnc` binary in `CNNC_BIN`), which must report
/// `passed` tests passing.
fn run_test(name: &str, passed: usize) {
    let dir = downstream();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--offline", "--test", name])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CNNC_BIN", cli::cnnc_binary())
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("test result: ok. {passed} passed; 0 failed")),
        "{stdout}"
    );
}

#[test]
fn a_users_crate_shares_clones_and_generalises_over_models() {
    run_test("model_api", 6);
}

#[test]
fn a_users_crate_trains_the_seed_model_to_the_clis_accuracy() {
    run_test("training", 1);
}
