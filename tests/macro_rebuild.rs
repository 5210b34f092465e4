//! Editing a spec re-runs the build of a crate that uses `cnn_model!` on it: a copy of
//! `tests/downstream/` is built, its spec edited (to a valid and to an invalid model) and built
//! again. The copy and its target directory persist under the test target's temporary directory,
//! so only the first run compiles the dependencies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const SEED_PARAMS: usize = 145_578;

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args(args)
        .arg("--quiet")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("cargo runs");
    eprintln!(
        "cargo {} took {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the downstream crate whose `cnnc` dependency points at this repository.
fn downstream() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = repo.join("tests/downstream");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("downstream");
    std::fs::create_dir_all(dir.join("src")).expect("crate directory");
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let manifest = manifest.replace(
        "path = \"../..\"",
        &format!("path = {:?}", repo.display().to_string()),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("manifest written");
    for file in ["src/main.rs", "model.cnn"] {
        std::fs::copy(template.join(file), dir.join(file)).expect("template copied");
    }
    dir
}

#[test]
fn editing_the_spec_rebuilds_the_crate() {
    let dir = downstream();
    let spec = dir.join("model.cnn");
    let seed = std::fs::read_to_string(&spec).expect("spec");

    let run = cargo(&dir, &["run"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout),
        format!("params {SEED_PARAMS} logits (2, 10)\n")
    );

    // fc1 with 32 outputs instead of 64: 1024*32 + 32 + 32*10 + 10 parameters in the head.
    let smaller = seed.replace("out_features=64", "out_features=32");
    assert_ne!(smaller, seed);
    std::fs::write(&spec, &smaller).expect("spec edited");
    let run = cargo(&dir, &["run"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let params = SEED_PARAMS - (1024 * 64 + 64 + 64 * 10 + 10) + (1024 * 32 + 32 + 32 * 10 + 10);
    assert_eq!(
        text(&run.stdout),
        format!("params {params} logits (2, 10)\n")
    );

    // A broken spec fails the build with the diagnostic `cnnc check` prints...
    std::fs::write(&spec, seed.replace("in_features=1024", "in_features=1000"))
        .expect("spec broken");
    let build = cargo(&dir, &["build"]);
    assert!(!build.status.success());
    let stderr = text(&build.stderr);
    assert!(
        stderr.contains("[E0301]") && stderr.contains("model.cnn:20:"),
        "{stderr}"
    );

    // ...and fixing it is noticed too.
    std::fs::write(&spec, &seed).expect("spec restored");
    let run = cargo(&dir, &["run"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout),
        format!("params {SEED_PARAMS} logits (2, 10)\n")
    );
}
