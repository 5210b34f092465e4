//! The dependency contract of a library build: a crate depending on
//! `cnnc = { default-features = false }` and using `cnn_model!` (a copy of `tests/downstream/`)
//! reaches no image decoder, gzip, spec parser, HTTP/TLS or argument-parsing crate at run time;
//! each feature adds what README.md says it adds and nothing more; and plain `cnnc` (default
//! features: `data`) reaches no HTTPS, TLS or CLI crate, which only the package `cnnc-cli` (the
//! `cnnc` binary, cli/) and the `download` feature bring. Checked with
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
    "ring",
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
/// workspace's versions so that `--offline` finds every crate; with `cnnc`'s default features
/// when `default_features`, else with none (as the template has it).
fn downstream(default_features: bool) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = repo.join("tests/downstream");
    let name = if default_features {
        "downstream-tree-default"
    } else {
        "downstream-tree"
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(dir.join("src")).expect("crate directory");
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let mut manifest = manifest.replace(
        "path = \"../..\"",
        &format!("path = {:?}", repo.display().to_string()),
    );
    assert!(
        manifest.contains(", default-features = false"),
        "{manifest}"
    );
    if default_features {
        manifest = manifest.replace(", default-features = false", "");
    }
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("manifest written");
    for file in ["src/main.rs", "model.cnn"] {
        std::fs::copy(template.join(file), dir.join(file)).expect("template copied");
    }
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file copied");
    dir
}

/// The package names the downstream crate reaches at run time with `features` of `cnnc` enabled.
fn reachable(dir: &Path, features: &[&str]) -> BTreeSet<String> {
    let list: Vec<String> = features.iter().map(|f| format!("cnnc/{f}")).collect();
    let mut args = vec![];
    if !list.is_empty() {
        args = vec!["--features".to_owned(), list.join(",")];
    }
    tree(dir, &args)
}

/// The package names `cargo tree` lists in `dir` (run-time dependencies only) with `args`.
fn tree(dir: &Path, args: &[String]) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal,no-proc-macro"])
        .args(["--prefix", "none", "--format", "{p}"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree {args:?} failed:\n{}",
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
    let dir = downstream(false);

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
            "rustls",
            "ring"
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

    // `interop`: ONNX and PyTorch export and import, without parser or datasets at run time.
    let interop = reachable(&dir, &["interop"]);
    assert_eq!(heavy(&interop), Vec::<&str>::new(), "{interop:?}");
    assert!(interop.contains("cnnc-interop") && interop.contains("prost"));

    // Default features, as `cnnc = "0.1"` gets them: `data`, and no network, TLS or CLI crate.
    let default = reachable(&downstream(true), &[]);
    assert_eq!(heavy(&default), heavy(&data), "{default:?}");
    assert!(default.contains("cnnc-data"), "{default:?}");

    // No library feature brings what only the binary needs.
    let library = [
        ("none", &lean),
        ("default", &default),
        ("data", &data),
        ("download", &download),
        ("spec", &spec),
        ("interop", &interop),
    ];
    for (features, packages) in library {
        let cli: Vec<_> = CLI_ONLY.iter().filter(|c| packages.contains(**c)).collect();
        assert!(cli.is_empty(), "{features}: {cli:?} in {packages:?}");
    }
    // The check can fail: the CLI's own build (the package `cnnc-cli`) reaches them, and HTTPS.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cli = tree(repo, &["-p".to_owned(), "cnnc-cli".to_owned()]);
    assert!(CLI_ONLY.iter().all(|c| cli.contains(*c)), "{cli:?}");
    assert!(
        ["ureq", "rustls"].iter().all(|c| cli.contains(*c)),
        "{cli:?}"
    );
}
