//! The dependency contract of a library build: a crate depending on
//! `cnnc = { default-features = false }` and using `cnn_model!` (a copy of `tests/downstream/`)
//! reaches no image decoder, gzip, spec parser, HTTP/TLS or argument-parsing crate at run time;
//! each feature adds what README.md says it adds and nothing more. Checked with
//! `cargo tree -e normal,no-proc-macro --offline`: the proc-macro's own build-time dependencies
//! (the parser that checks the spec while compiling) are not part of the user's binary.
//!
//! Offline and quick: `cargo tree` resolves against the workspace's `Cargo.lock` and the crates a
//! build of this workspace has already fetched; nothing is compiled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates a model-only library build must not reach (issue 12, part 4).
const HEAVY: &[&str] = &[
    "image",
    "png",
    "zune-jpeg",
    "flate2",
    "miniz_oxide",
    "pest",
    "serde-saphyr",
    "annotate-snippets",
    "ureq",
    "rustls",
    "clap",
];

/// Crates only the `cnnc` binary needs: no library feature may bring them.
const CLI_ONLY: &[&str] = &[
    "clap",
    "indicatif",
    "plotters",
    "signal-hook",
    "anyhow",
    "lsp-server",
    "lsp-types",
];

/// A copy of the downstream crate whose `cnnc` dependency points at this repository, locked to the
/// workspace's versions so that `--offline` finds every crate.
fn downstream() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = repo.join("tests/downstream");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("downstream-tree");
    std::fs::create_dir_all(dir.join("src")).expect("crate directory");
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let manifest = manifest.replace(
        "path = \"../..\"",
        &format!("path = {:?}", repo.display().to_string()),
    );
    assert!(manifest.contains("default-features = false"), "{manifest}");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("manifest written");
    for file in ["src/main.rs", "model.cnn"] {
        std::fs::copy(template.join(file), dir.join(file)).expect("template copied");
    }
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file copied");
    dir
}

/// The package names the downstream crate reaches at run time with `features` of `cnnc` enabled.
fn reachable(dir: &Path, features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["tree", "--offline", "-e", "normal,no-proc-macro"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(dir);
    if !features.is_empty() {
        let list: Vec<String> = features.iter().map(|f| format!("cnnc/{f}")).collect();
        command.args(["--features", &list.join(",")]);
    }
    let output = command.output().expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree {features:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The crates of `HEAVY` in `packages`.
fn heavy(packages: &BTreeSet<String>) -> Vec<&'static str> {
    HEAVY
        .iter()
        .copied()
        .filter(|name| packages.contains(*name))
        .collect()
}

#[test]
fn each_feature_adds_what_the_readme_says() {
    let dir = downstream();

    let lean = reachable(&dir, &[]);
    assert!(
        lean.contains("cnnc-runtime") && lean.contains("ndarray"),
        "{lean:?}"
    );
    assert_eq!(heavy(&lean), Vec::<&str>::new(), "{lean:?}");
    for ours in ["cnnc-spec", "cnnc-codegen", "cnnc-data"] {
        assert!(!lean.contains(ours), "{ours} in {lean:?}");
    }

    // `data`: the readers and their decoders, but no network and no parser.
    let data = reachable(&dir, &["data"]);
    assert_eq!(
        heavy(&data),
        ["image", "png", "zune-jpeg", "flate2", "miniz_oxide"],
        "{data:?}"
    );
    assert!(data.contains("cnnc-data"));

    // `download`: HTTPS on top of `data`.
    let download = reachable(&dir, &["download"]);
    assert_eq!(
        heavy(&download),
        [
            "image",
            "png",
            "zune-jpeg",
            "flate2",
            "miniz_oxide",
            "ureq",
            "rustls"
        ],
        "{download:?}"
    );

    // `spec`: the front-end at run time, without datasets.
    let spec = reachable(&dir, &["spec"]);
    assert_eq!(
        heavy(&spec),
        ["pest", "serde-saphyr", "annotate-snippets"],
        "{spec:?}"
    );
    assert!(!spec.contains("cnnc-data"), "{spec:?}");

    // No library feature brings what only the binary needs.
    let library = [
        ("none", &lean),
        ("data", &data),
        ("download", &download),
        ("spec", &spec),
    ];
    for (features, packages) in library {
        let cli: Vec<_> = CLI_ONLY.iter().filter(|c| packages.contains(**c)).collect();
        assert!(cli.is_empty(), "{features}: {cli:?} in {packages:?}");
    }
    // The check can fail: the CLI's own build reaches them.
    let cli = reachable(&dir, &["cli"]);
    assert!(CLI_ONLY.iter().all(|c| cli.contains(*c)), "{cli:?}");
}
