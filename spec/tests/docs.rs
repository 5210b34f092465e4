//! `docs/diagnostics.md` is generated from the explanations in `spec/src/error_codes/` (what
//! `cnnc explain` prints) and the real output of the checker on each code's example; this test
//! regenerates it and fails when the committed file differs. After changing an explanation or a
//! message, run `CNNC_UPDATE_DOCS=1 cargo test -p cnnc-spec --test docs` and review the diff.

use std::path::{Path, PathBuf};

use cnnc_spec::{Code, Format, Source};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An explanation cut into its parts: the text under the title, and the example's file name
/// and text (from the fence `` ```yaml invalid/name.yaml ``), if it has one.
struct Explanation {
    text: &'static str,
    example: Option<(&'static str, &'static str)>,
}

fn explanation(code: Code) -> Explanation {
    let markdown = code.explanation();
    let body = markdown
        .split_once('\n')
        .map_or("", |(_, body)| body)
        .trim_start();
    let Some((text, example)) = body.split_once("\nExample:\n") else {
        return Explanation {
            text: body.trim_end(),
            example: None,
        };
    };
    let fence = example
        .trim_start()
        .strip_prefix("```")
        .unwrap_or_else(|| panic!("{code:?}: the example is not a fenced block"));
    let (info, rest) = fence.split_once('\n').expect("a fence line");
    let name = info
        .split_once(' ')
        .map(|(_, name)| name)
        .unwrap_or_else(|| panic!("{code:?}: the example fence does not name its file"));
    let spec = rest
        .strip_suffix("```\n")
        .unwrap_or_else(|| panic!("{code:?}: the example must end the file"));
    Explanation {
        text: text.trim_end(),
        example: Some((name, spec)),
    }
}

/// The example checked for `code`: its file name and text. Two examples are too large to keep
/// in a file; they are made here, as their explanations describe.
fn example(code: Code) -> (String, String) {
    match (code, explanation(code).example) {
        (_, Some((name, text))) => (name.to_owned(), text.to_owned()),
        (Code::SourceTooLarge, None) => (
            "big.yaml".to_owned(),
            format!("# {}\n", "x".repeat(2_000_000)),
        ),
        (Code::TooManyLayers, None) => (
            "many.cnn".to_owned(),
            format!("input (1, 1, 1)\n{}", "relu\n".repeat(10_001)),
        ),
        (code, None) => panic!("{code:?} has no example"),
    }
}

/// The first diagnostic with `code` for the example, as `cnnc check --color never` prints it.
fn example_output(code: Code, name: &str, text: &str) -> String {
    // As `cnnc` reads a file: never more than the limit and a byte.
    let text: String = if text.len() > cnnc_spec::MAX_SOURCE_BYTES {
        text[..cnnc_spec::MAX_SOURCE_BYTES + 1].to_owned()
    } else {
        text.to_owned()
    };
    let format = Format::from_path(Path::new(name)).expect("a spec extension");
    let source = Source::new(name, text, format);
    let diagnostics = match cnnc_spec::parse(&source) {
        Ok(model) => cnnc_spec::check(&model).diagnostics,
        Err(diagnostics) => diagnostics,
    };
    let diagnostic = diagnostics
        .iter()
        .find(|d| d.code == code)
        .unwrap_or_else(|| panic!("{}: the example {name} does not report it", code.as_str()));
    cnnc_spec::render(diagnostic, &source, false)
}

const INTRO: &str = "\
# cnnc diagnostics

Every diagnostic `cnnc check` can report. Codes are stable: a code never changes meaning,
and new checks get new codes. `E` codes are errors (exit status 1), `W` codes warnings
(exit status 0 unless `--deny warnings`). `cnnc explain CODE` prints a code's explanation.

With `--format json` each diagnostic is an object with the keys `severity`, `code`, `message`,
`file`, `line`, `column`, `end_line`, `end_column` (1-based; columns count characters;
`end_column` is one past the end), `layer` (the layer's state_dict name, or null), `label`,
`notes`, `help` and `fix`. `fix` is null, or the help as edits a tool can apply without asking:
`{\"message\", \"edits\": [{\"line\", \"column\", \"end_line\", \"end_column\", \"byte_start\",
\"byte_end\", \"replacement\"}]}`; `cnnc check --fix` applies them.

At most 100 diagnostics are printed for one spec, in either format (and by `summary`, `fmt` and
`codegen`); a closing line counts the rest (on standard error with `--format json`, so that
standard output stays one JSON array).

This file is generated from `spec/src/error_codes/` by
`CNNC_UPDATE_DOCS=1 cargo test -p cnnc-spec --test docs`.
";

fn generate() -> String {
    let mut doc = format!("{INTRO}\n");
    for &code in Code::ALL {
        let (name, text) = example(code);
        doc.push_str(&format!(
            "## {}: {}\n\n{}\n\n",
            code.as_str(),
            code.title(),
            explanation(code).text
        ));
        if text.len() <= 2000 {
            let lang = if name.ends_with(".yaml") || name.ends_with(".yml") {
                "yaml"
            } else {
                "text"
            };
            doc.push_str(&format!("```{lang}\n{}\n```\n\n", text.trim_end()));
        }
        let output = example_output(code, &name, &text);
        doc.push_str(&format!("```text\n{}\n```\n\n", output.trim_end()));
    }
    doc
}

#[test]
fn diagnostics_doc_is_generated_from_the_explanations() {
    let path = repo().join("docs/diagnostics.md");
    let generated = generate();
    if std::env::var_os("CNNC_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("docs/diagnostics.md written");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("docs/diagnostics.md exists");
    assert!(
        committed == generated,
        "docs/diagnostics.md is out of date: run `CNNC_UPDATE_DOCS=1 cargo test -p cnnc-spec \
         --test docs` and review the diff"
    );
}

#[test]
fn every_code_is_explained_under_its_own_title() {
    for &code in Code::ALL {
        let markdown = code.explanation();
        let heading = format!("# {}: ", code.as_str());
        assert!(markdown.starts_with(&heading), "{code:?}: {markdown}");
        assert!(!code.title().is_empty(), "{code:?}");
        assert!(
            explanation(code).text.len() > 20,
            "{code:?} is not explained"
        );
        example(code);
    }
}

#[test]
fn examples_named_after_corpus_files_are_those_files() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    for &code in Code::ALL {
        let Some((name, text)) = explanation(code).example else {
            continue;
        };
        let path = corpus.join(name);
        if name.starts_with("invalid/") || name.starts_with("warn/") {
            let file = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{code:?}: {}: {e}", path.display()));
            assert_eq!(text, file, "{code:?}: the example differs from {name}");
        }
    }
}

#[test]
fn codes_are_found_from_what_people_type() {
    assert_eq!(Code::parse("E0301"), Some(Code::SizeMismatch));
    assert_eq!(Code::parse("w0002"), Some(Code::RedundantFlatten));
    assert_eq!(Code::parse("E0999"), None);
    assert_eq!(Code::closest("301"), Some(Code::SizeMismatch));
    assert_eq!(Code::closest("E301"), Some(Code::SizeMismatch));
    assert_eq!(Code::closest("0001"), Some(Code::YamlSyntax));
    assert_eq!(Code::closest("hello"), None);
}
