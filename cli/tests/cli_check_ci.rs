//! `cnnc check --format sarif` and `--format github`, the formats CI services read: the SARIF
//! log validates against the published SARIF 2.1.0 schema (vendored in `tests/schemas/`), and
//! both carry each diagnostic's place, code, message, secondary labels and fix.

mod support;

use serde_json::Value;
use support::{assert_status, cnnc, stdout, write};

/// Specs with an error carrying a fix and a secondary label, a warning, and a DSL parse error.
const SPECS: [&str; 3] = [
    "spec/tests/corpus/invalid/in_features_mismatch.yaml",
    "spec/tests/corpus/warn/redundant_flatten.cnn",
    "spec/tests/corpus/invalid/dsl_unclosed_paren.cnn",
];

fn sarif(paths: &[&str]) -> (Value, i32) {
    let mut args = vec!["check", "--format", "sarif"];
    args.extend_from_slice(paths);
    let output = cnnc(&args);
    let log = serde_json::from_str(&stdout(&output)).expect("the SARIF log is JSON");
    (log, output.status.code().unwrap_or(-1))
}

fn sarif_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("tests/schemas/sarif-schema-2.1.0.json")
        .expect("vendored SARIF schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::draft4::new(&schema).expect("the SARIF schema compiles")
}

fn assert_valid_sarif(log: &Value) {
    let errors: Vec<String> = sarif_schema()
        .iter_errors(log)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn sarif_validates_and_carries_places_related_locations_and_fixes() {
    let (log, status) = sarif(&SPECS);
    assert_eq!(status, 1);
    assert_valid_sarif(&log);
    let run = &log["runs"][0];
    // Every code is a rule, and each result's ruleIndex points at its rule.
    let explain = stdout(&cnnc(&["explain"]));
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(
        rules.len(),
        explain.lines().filter(|l| !l.is_empty()).count()
    );
    let mut results = run["results"].as_array().expect("results").clone();
    for result in &mut results {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        // Indices move when codes are added; the ids they point at are checked above.
        result.as_object_mut().map(|r| r.remove("ruleIndex"));
    }
    insta::assert_json_snapshot!(results);
    // The schema is live: a level SARIF does not have is refused.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!sarif_schema().is_valid(&broken));
}

#[test]
fn sarif_of_clean_specs_has_no_results_and_a_valid_log() {
    let (log, status) = sarif(&["models/custom_cnn.yaml", "models/lenet5.cnn"]);
    assert_eq!(status, 0);
    assert_valid_sarif(&log);
    assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
    assert_eq!(log["version"], "2.1.0");
}

#[test]
fn sarif_percent_encodes_file_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "odd name,1.cnn",
        "input (1, 8, 8)\nflatten\nflatten\n",
    );
    let path = spec.display().to_string();
    let (log, status) = sarif(&[&path]);
    assert_eq!(status, 0);
    assert_valid_sarif(&log);
    let uri = &log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
        ["uri"];
    assert!(
        uri.as_str()
            .is_some_and(|u| u.ends_with("/odd%20name%2C1.cnn")),
        "{uri}"
    );
}

#[test]
fn github_annotations_name_the_place_and_code() {
    let mut args = vec!["check", "--format", "github"];
    args.extend_from_slice(&SPECS);
    let output = cnnc(&args);
    assert_status(&output, 1);
    insta::assert_snapshot!(stdout(&output));
}

#[test]
fn github_properties_escape_commas_and_colons() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "a,b:c%.cnn",
        "input (1, 8, 8)\nflatten\nflatten\n",
    );
    let output = cnnc(&["check", "--format", "github", support::arg(&spec)]);
    assert_status(&output, 0);
    let text = stdout(&output);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("::warning file="), "{first}");
    assert!(first.contains("/a%2Cb%3Ac%25.cnn,line=3,col=1,"), "{first}");
    assert!(first.contains(",title=W0002::"), "{first}");
}

#[test]
fn only_specs_skips_other_yaml_as_a_pre_commit_hook_passes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workflow = write(
        dir.path(),
        "ci.yml",
        "on: push\njobs:\n  lint: {runs-on: x}\n",
    );
    let spec = write(
        dir.path(),
        "net.yaml",
        "\u{feff}input: [1, 8, 8]\nlayers :\n  - flatten\n  - linear: {out_features: 2}\n",
    );
    let dsl = write(dir.path(), "net.cnn", "input (1, 8, 8)\nflatten\n");
    let paths = [
        support::arg(&workflow),
        support::arg(&spec),
        support::arg(&dsl),
    ];
    let mut args = vec!["check", "--only-specs"];
    args.extend_from_slice(&paths);
    let output = cnnc(&args);
    assert_status(&output, 0);
    assert!(stdout(&output).ends_with("checked 2 specs: no problems\n"));
    // Without the flag the workflow is read as a spec, and fails.
    let output = cnnc(&args[..1].iter().chain(&paths).copied().collect::<Vec<_>>());
    assert_status(&output, 1);
    // fmt --check skips it the same way (the spec is unformatted: `layers :`).
    let mut args = vec!["fmt", "--check", "--only-specs", support::arg(&workflow)];
    assert_status(&cnnc(&args), 0);
    args.push(support::arg(&spec));
    let output = cnnc(&args);
    assert_status(&output, 1);
    assert!(!stdout(&output).contains("ci.yml"));
}

#[test]
fn pre_commit_hooks_pass_the_shipped_specs_and_skip_other_yaml() {
    let text = std::fs::read_to_string("../.pre-commit-hooks.yaml").expect("hooks file");
    let hooks: Vec<Value> = serde_saphyr::from_str(&text).expect("hooks are YAML");
    let ids: Vec<&str> = hooks.iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "cnnc-check",
            "cnnc-fmt",
            "cnnc-check-system",
            "cnnc-fmt-system"
        ]
    );
    for hook in &hooks {
        let entry = hook["entry"].as_str().expect("entry");
        let mut args: Vec<&str> = entry.split(' ').collect();
        assert_eq!(args.remove(0), "cnnc", "{entry}");
        // What pre-commit passes: spec files, and YAML that is no spec (this very file).
        args.extend([
            "models/custom_cnn.yaml",
            "models/lenet5.cnn",
            ".pre-commit-hooks.yaml",
        ]);
        assert_status(&cnnc(&args), 0);
        let files = hook["files"].as_str().expect("files");
        assert_eq!(files, r"\.(cnn|ya?ml)$", "{entry}");
    }
}

#[test]
fn github_annotations_show_control_characters_and_never_start_a_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "evil.yaml",
        "input: [1, 8, 8]\nlayers:\n  - \"ev\\e[2Jil\\n::error::x\"\n",
    );
    let output = cnnc(&["check", "--format", "github", support::arg(&spec)]);
    assert_status(&output, 1);
    let text = stdout(&output);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("::")).count(),
        1,
        "{text}"
    );
    assert!(text.contains("ev\u{241b}[2Jil"), "{text}");
}
