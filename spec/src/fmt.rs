//! Printing the IR back as text, in either language, in one canonical layout: what `cnnc fmt`
//! writes. Printing then parsing gives back the same IR (spans aside), names and comments
//! included.

use std::fmt::Write;

use crate::ast::{Comments, Layer, Model, Value, ValueKind};

/// The model as a canonical YAML spec.
pub fn to_yaml(model: &Model) -> String {
    let mut out = String::new();
    comment_lines(&mut out, "", &model.comments.header);
    if let Some(name) = &model.name {
        out.push_str("model: ");
        out.push_str(&yaml_str(&name.text));
        trailing(&mut out, &model.comments.name);
    }
    if let Some(input) = &model.input {
        out.push_str("input: ");
        yaml_value(&mut out, input);
        trailing(&mut out, &model.comments.input);
    }
    out.push_str("layers:\n");
    for layer in &model.layers {
        comment_lines(&mut out, "  ", &layer.comments.leading);
        out.push_str("  - ");
        yaml_layer(&mut out, layer);
        trailing(&mut out, &layer.comments.trailing);
    }
    comment_lines(&mut out, "", &model.comments.footer);
    out
}

/// The model as a canonical DSL spec.
pub fn to_dsl(model: &Model) -> String {
    let mut out = String::new();
    comment_lines(&mut out, "", &model.comments.header);
    if let Some(name) = &model.name {
        out.push_str("model ");
        if is_plain_word(&name.text) && !is_reserved(&name.text) {
            out.push_str(&name.text);
        } else {
            let _ = write!(out, "\"{}\"", name.text.replace('"', "'"));
        }
        trailing(&mut out, &model.comments.name);
    }
    if let Some(input) = &model.input {
        out.push_str("input ");
        dsl_value(&mut out, input);
        trailing(&mut out, &model.comments.input);
    }
    if !out.is_empty() && !model.layers.is_empty() {
        out.push('\n');
    }
    for layer in &model.layers {
        let Comments {
            leading,
            trailing: comment,
        } = &layer.comments;
        comment_lines(&mut out, "", leading);
        if let Some(name) = &layer.name {
            out.push_str(&name.text);
            out.push_str(": ");
        }
        out.push_str(&layer.kind.text);
        if !layer.args.is_empty() {
            out.push('(');
            for (i, arg) in layer.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&arg.key.text);
                out.push('=');
                dsl_value(&mut out, &arg.value);
            }
            out.push(')');
        }
        trailing(&mut out, comment);
    }
    comment_lines(&mut out, "", &model.comments.footer);
    out
}

fn comment_lines(out: &mut String, indent: &str, lines: &[String]) {
    for line in lines {
        out.push_str(indent);
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn trailing(out: &mut String, comment: &Option<String>) {
    if let Some(comment) = comment {
        out.push_str("  #");
        if !comment.is_empty() {
            out.push(' ');
            out.push_str(comment);
        }
    }
    out.push('\n');
}

fn yaml_layer(out: &mut String, layer: &Layer) {
    out.push_str(&yaml_str(&layer.kind.text));
    if layer.name.is_none() && layer.args.is_empty() {
        return;
    }
    out.push_str(": {");
    let mut first = true;
    if let Some(name) = &layer.name {
        out.push_str("name: ");
        out.push_str(&yaml_str(&name.text));
        first = false;
    }
    for arg in &layer.args {
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(&yaml_str(&arg.key.text));
        out.push_str(": ");
        yaml_value(out, &arg.value);
    }
    out.push('}');
}

fn yaml_value(out: &mut String, value: &Value) {
    match &value.kind {
        ValueKind::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_value(out, item);
            }
            out.push(']');
        }
        ValueKind::Str(s) => out.push_str(&yaml_str(s)),
        ValueKind::Map => out.push_str("{}"),
        ValueKind::Null => out.push_str("null"),
        other => scalar(out, other),
    }
}

fn dsl_value(out: &mut String, value: &Value) {
    match &value.kind {
        ValueKind::List(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dsl_value(out, item);
            }
            out.push(')');
        }
        ValueKind::Str(s) if is_plain_word(s) && !is_reserved(s) => out.push_str(s),
        ValueKind::Str(s) => {
            let _ = write!(out, "\"{}\"", s.replace('"', "'"));
        }
        ValueKind::Map | ValueKind::Null => out.push_str("null"),
        other => scalar(out, other),
    }
}

/// Numbers and booleans print the same in both languages; floats keep a `.` or exponent so
/// they read back as floats.
fn scalar(out: &mut String, value: &ValueKind) {
    match value {
        ValueKind::Int(i) => {
            let _ = write!(out, "{i}");
        }
        ValueKind::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        ValueKind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        _ => {}
    }
}

/// A YAML scalar for `s`: plain when it would read back as the same string, else quoted.
fn yaml_str(s: &str) -> String {
    if is_plain_word(s) && !is_reserved(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

fn is_plain_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Words YAML or the DSL would read as something other than a string.
fn is_reserved(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "true"
            | "false"
            | "null"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | "nan"
            | "inf"
            | "model"
            | "input"
    )
}
