//! A user's crate on the `cnnc::Model` contract: a copy of `tests/downstream/` (the generated
//! models of `model.cnn`, `tiny.cnn` and `truncated.cnn`) runs its own tests,
//! `tests/downstream/tests/model_api.rs`: one `Arc` of a model predicting from four threads, a
//! generic function over two generated models and the executor, `Box<dyn Model>`, independent
//! clones, named activations against a truncated model, errors in the user's terms. The copy and
//! its target directory persist under the test target's temporary directory, so only the first
//! run compiles the dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of the downstream crate whose `cnnc` dependency points at this repository, locked to the
/// workspace's versions.
fn downstream() -> PathBuf {
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
    ] {
        std::fs::copy(template.join(file), dir.join(file)).expect("template copied");
    }
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file copied");
    dir
}

#[test]
fn a_users_crate_shares_clones_and_generalises_over_models() {
    let dir = downstream();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--offline", "--test", "model_api"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("test result: ok. 6 passed; 0 failed"),
        "{stdout}"
    );
}
