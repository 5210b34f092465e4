//! Running the `cnnc` binary from the library's tests: the CLI is the package `cnnc-cli`, and
//! these tests run the binary cargo built beside them (`cargo test` from the repository root
//! builds it for the CLI's own tests; with `-p cnnc` alone, `cargo build -p cnnc-cli` first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `cnnc` binary in the target directory this test was built into (`target/<profile>/`).
pub fn cnnc_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile.join(format!("cnnc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "no cnnc binary at {}: run `cargo test` from the repository root, or `cargo build -p cnnc-cli`",
        binary.display()
    );
    binary
}

/// Runs `cnnc` with `args` from the repository root.
pub fn cnnc(args: &[&str]) -> Output {
    Command::new(cnnc_binary())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cnnc runs")
}
