//! The spec front-ends: any text parses or gets at least one error, every diagnostic's spans lie
//! inside the text and render as text and JSON, and a valid spec printed by `cnnc fmt` (in either
//! language) reads back to the same IR and the same resolved model.

use cnnc_spec::{CheckedModel, CoreModel, Diagnostic, Format, JsonDiagnostic, Model, Source, Span};

/// Bytes as a YAML spec (invalid UTF-8 replaced, as a lossy reader would).
pub fn spec_yaml(data: &[u8]) {
    spec(data, Format::Yaml);
}

/// Bytes as a DSL spec (invalid UTF-8 replaced, as a lossy reader would).
pub fn spec_dsl(data: &[u8]) {
    spec(data, Format::Dsl);
}

fn spec(data: &[u8], format: Format) {
    let text = String::from_utf8_lossy(data);
    let source = Source::new(
        format!("fuzz.{}", format.extension()),
        text.as_ref(),
        format,
    );
    let model = match cnnc_spec::parse(&source) {
        Ok(model) => model,
        Err(diagnostics) => {
            assert!(
                diagnostics.iter().any(Diagnostic::is_error),
                "parsing failed without an error: {diagnostics:?}"
            );
            show(&diagnostics, &source);
            return;
        }
    };
    let checked = cnnc_spec::check(&model);
    show(&checked.diagnostics, &source);
    // `cnnc fmt` prints every spec that parses, valid or not.
    let printed = [
        (cnnc_spec::to_yaml(&model), Format::Yaml),
        (cnnc_spec::to_dsl(&model), Format::Dsl),
    ];
    let Ok((resolved, _)) = checked.into_result() else {
        return;
    };
    for (text, format) in printed {
        let again = Source::new(format!("printed.{}", format.extension()), text, format);
        let reparsed = cnnc_spec::parse(&again).unwrap_or_else(|diagnostics| {
            panic!(
                "`cnnc fmt` printed a spec that does not parse:\n{}\n{}",
                again.text(),
                rendered(&diagnostics, &again)
            )
        });
        assert_eq!(
            cleared(reparsed.clone()),
            cleared(model.clone()),
            "printing changed the IR; printed:\n{}",
            again.text()
        );
        let (rechecked, _) =
            cnnc_spec::check(&reparsed)
                .into_result()
                .unwrap_or_else(|diagnostics| {
                    panic!(
                        "a valid spec printed by `cnnc fmt` no longer checks:\n{}\n{}",
                        again.text(),
                        rendered(&diagnostics, &again)
                    )
                });
        assert_eq!(
            spanless(rechecked),
            spanless(resolved.clone()),
            "printing changed the resolved model; printed:\n{}",
            again.text()
        );
    }
}

/// Checks that every span of `diagnostics` lies inside the text, on character boundaries, and
/// renders each one as `cnnc check` does in both output formats.
fn show(diagnostics: &[Diagnostic], source: &Source) {
    let text = source.text();
    for diagnostic in diagnostics {
        let spans =
            std::iter::once(diagnostic.span).chain(diagnostic.secondary.iter().map(|l| l.span));
        for span in spans {
            assert!(
                within(span, text),
                "{} has span {span:?}, outside the {}-byte text or inside a character",
                diagnostic.code.as_str(),
                text.len()
            );
        }
        let plain = cnnc_spec::render(diagnostic, source, false);
        assert!(
            plain.contains(diagnostic.code.as_str()),
            "rendered without its code: {plain}"
        );
        cnnc_spec::render(diagnostic, source, true);
        let json = JsonDiagnostic::new(diagnostic, source);
        assert!(
            (json.line, json.column) <= (json.end_line, json.end_column),
            "JSON positions run backwards: {json:?}"
        );
        serde_json::to_string(&json).expect("a diagnostic serialises to JSON");
    }
}

fn within(span: Span, text: &str) -> bool {
    let range = span.range();
    range.start <= range.end
        && range.end <= text.len()
        && text.is_char_boundary(range.start)
        && text.is_char_boundary(range.end)
}

fn rendered(diagnostics: &[Diagnostic], source: &Source) -> String {
    diagnostics
        .iter()
        .map(|d| cnnc_spec::render(d, source, false))
        .collect::<Vec<_>>()
        .join("\n")
}

fn cleared(mut model: Model) -> Model {
    model.clear_spans();
    model
}

fn spanless(model: CheckedModel) -> CoreModel {
    model.into_model()
}
