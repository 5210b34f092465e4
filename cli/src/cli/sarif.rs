//! `cnnc check --format sarif`: diagnostics as a SARIF 2.1.0 log, what code-scanning services
//! (GitHub's among them) read to annotate the spec's lines. Rules come from the diagnostic
//! codes and their explanation files; machine-applicable fixes become SARIF fixes.

use cnnc_spec::{Code, Diagnostic, Severity, Source, Span};
use serde_json::{Value, json};

/// The SARIF log of one `cnnc check` run, around its [`result`]s.
pub fn log(results: Vec<Value>) -> Value {
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "cnnc",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": Code::ALL.iter().map(|&code| rule(code)).collect::<Vec<_>>(),
                },
            },
            // Our columns count characters, not SARIF's default UTF-16 code units.
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// A code as a SARIF rule: its title, its explanation's first paragraph, and the whole
/// explanation (Markdown) as help.
fn rule(code: Code) -> Value {
    let explanation = code.explanation();
    let summary = explanation
        .split("\n\n")
        .nth(1)
        .map_or(code.title(), str::trim);
    json!({
        "id": code.as_str(),
        "name": format!("{code:?}"),
        "shortDescription": { "text": code.title() },
        "fullDescription": { "text": summary },
        "help": { "text": explanation, "markdown": explanation },
        "defaultConfiguration": { "level": level(code.severity()) },
    })
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// One diagnostic of `source` as a SARIF result: the culprit as its location, secondary labels as related locations, notes
/// and help after the message, and its fix.
pub fn result(diagnostic: &Diagnostic, source: &Source) -> Value {
    let mut text = diagnostic.message.clone();
    for note in &diagnostic.notes {
        text.push_str(&format!("\nnote: {note}"));
    }
    if let Some(help) = &diagnostic.help {
        text.push_str(&format!("\nhelp: {help}"));
    }
    let mut primary = location(source, diagnostic.span);
    if !diagnostic.label.is_empty() {
        primary["message"] = json!({ "text": diagnostic.label });
    }
    let mut result = json!({
        "ruleId": diagnostic.code.as_str(),
        "ruleIndex": Code::ALL.iter().position(|&c| c == diagnostic.code),
        "level": level(diagnostic.severity),
        "message": { "text": text },
        "locations": [primary],
    });
    if !diagnostic.secondary.is_empty() {
        result["relatedLocations"] = diagnostic
            .secondary
            .iter()
            .enumerate()
            .map(|(id, label)| {
                let mut related = location(source, label.span);
                related["id"] = json!(id);
                related["message"] = json!({ "text": label.text });
                related
            })
            .collect();
    }
    if let Some(fix) = &diagnostic.fix {
        result["fixes"] = json!([{
            "description": { "text": fix.message },
            "artifactChanges": [{
                "artifactLocation": { "uri": uri(source.name()) },
                "replacements": fix.edits.iter().map(|edit| json!({
                    "deletedRegion": region(source, edit.span),
                    "insertedContent": { "text": edit.replacement },
                })).collect::<Vec<_>>(),
            }],
        }]);
    }
    result
}

fn location(source: &Source, span: Span) -> Value {
    json!({
        "physicalLocation": {
            "artifactLocation": { "uri": uri(source.name()) },
            "region": region(source, span),
        },
    })
}

/// Lines and columns from 1; `endColumn` is one past the last character, as in SARIF.
fn region(source: &Source, span: Span) -> Value {
    let start = source.line_col(span.start as usize);
    let end = source.line_col(span.end as usize);
    json!({
        "startLine": start.line,
        "startColumn": start.column,
        "endLine": end.line,
        "endColumn": end.column,
    })
}

/// A path as a relative or absolute URI reference: `/` separators, and every byte outside
/// RFC 3986's unreserved characters percent-encoded (`<stdin>` becomes `%3Cstdin%3E`).
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.replace('\\', "/").bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(uri("models/a b.yaml"), "models/a%20b.yaml");
        assert_eq!(uri("<stdin>"), "%3Cstdin%3E");
        assert_eq!(uri(r"dir\x.cnn"), "dir/x.cnn");
        assert_eq!(uri("é.cnn"), "%C3%A9.cnn");
    }

    #[test]
    fn every_code_is_a_rule_with_its_title() {
        let sarif = log(Vec::new());
        let rules = &sarif["runs"][0]["tool"]["driver"]["rules"];
        assert_eq!(rules.as_array().map(Vec::len), Some(Code::ALL.len()));
        assert_eq!(rules[0]["id"], "E0001");
        assert_eq!(rules[0]["shortDescription"]["text"], Code::ALL[0].title());
    }
}
