//! trybuild cases for `cnn_model!` (under `macros/tests/ui/`): compile errors with committed
//! `.stderr` (a bad spec file, a bad inline spec, a wrong input type, a missing file, a graph
//! merge of mismatched shapes: `add` of two shapes, `concat` of two sizes) and a
//! compile-pass case expanding every model in `models/`.

use std::path::{Path, PathBuf};

/// trybuild compiles the cases in its own crate, `<target>/tests/trybuild/cnnc/`, which is then
/// the `CARGO_MANIFEST_DIR` that spec paths are relative to. The spec files the cases name are
/// copied there under the same relative paths they have in this repository.
fn stage_specs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the temporary directory lies in the target directory")
        .join("tests/trybuild/cnnc");
    for dir in ["models", "macros/tests/ui"] {
        let target: PathBuf = project.join(dir);
        std::fs::create_dir_all(&target).expect("trybuild project directory");
        for entry in std::fs::read_dir(root.join(dir)).expect("spec directory") {
            let path = entry.expect("directory entry").path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "cnn")
            ) {
                let name = path.file_name().expect("a file name");
                std::fs::copy(&path, target.join(name)).expect("spec copied");
            }
        }
    }
}

#[test]
fn ui() {
    stage_specs();
    let cases = trybuild::TestCases::new();
    cases.compile_fail("macros/tests/ui/fail/*.rs");
    cases.pass("macros/tests/ui/pass/*.rs");
}
