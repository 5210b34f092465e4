//! Printing the IR back as text, in either language, in one canonical layout: what `cnnc fmt`
//! writes. Printing then parsing gives back the same IR (spans aside), names and comments
//! included.

use std::fmt::Write;

use crate::ast::{Comments, Ident, Layer, Model, Value, ValueKind};

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
    if !model.blocks.is_empty() {
        out.push_str("blocks:\n");
        for block in &model.blocks {
            comment_lines(&mut out, "  ", &block.comments.leading);
            out.push_str("  ");
            out.push_str(&yaml_str(&block.name.text));
            out.push(':');
            trailing(&mut out, &block.comments.trailing);
            if !block.params.is_empty() {
                out.push_str("    params: {");
                for (i, param) in block.params.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&yaml_str(&param.name.text));
                    out.push_str(": ");
                    match &param.default {
                        Some(default) => yaml_value(&mut out, default),
                        None => out.push('~'),
                    }
                }
                out.push_str("}\n");
            }
            out.push_str("    layers:\n");
            yaml_layers(&mut out, "      ", &block.layers);
        }
    }
    out.push_str("layers:\n");
    yaml_layers(&mut out, "  ", &model.layers);
    comment_lines(&mut out, "", &model.comments.footer);
    out
}

/// `layers` as YAML list items indented by `indent`.
fn yaml_layers(out: &mut String, indent: &str, layers: &[Layer]) {
    for layer in layers {
        comment_lines(out, indent, &layer.comments.leading);
        out.push_str(indent);
        out.push_str("- ");
        yaml_layer(out, indent, layer);
    }
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
    let has_entries = !model.layers.is_empty() || !model.blocks.is_empty();
    if !out.is_empty() && has_entries {
        out.push('\n');
    }
    for block in &model.blocks {
        comment_lines(&mut out, "", &block.comments.leading);
        out.push_str("block ");
        out.push_str(&block.name.text);
        if !block.params.is_empty() {
            out.push('(');
            for (i, param) in block.params.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&param.name.text);
                if let Some(default) = &param.default {
                    out.push('=');
                    dsl_value(&mut out, default);
                }
            }
            out.push(')');
        }
        out.push_str(" {");
        trailing(&mut out, &block.comments.trailing);
        dsl_layers(&mut out, "  ", &block.layers);
        out.push_str("}\n\n");
    }
    dsl_layers(&mut out, "", &model.layers);
    comment_lines(&mut out, "", &model.comments.footer);
    out
}

/// `layers` as DSL lines indented by `indent`.
fn dsl_layers(out: &mut String, indent: &str, layers: &[Layer]) {
    for layer in layers {
        let Comments {
            leading,
            trailing: comment,
        } = &layer.comments;
        comment_lines(out, indent, leading);
        out.push_str(indent);
        if let Some(name) = &layer.name {
            out.push_str(&name.text);
            out.push_str(": ");
        }
        out.push_str(&layer.kind.text);
        if !layer.inputs.is_empty() || !layer.args.is_empty() || layer.repeat.is_some() {
            out.push('(');
            let mut first = true;
            let mut separate = |out: &mut String| {
                if !first {
                    out.push_str(", ");
                }
                first = false;
            };
            for input in &layer.inputs {
                separate(out);
                out.push_str(&input.text);
            }
            for arg in &layer.args {
                separate(out);
                out.push_str(&arg.key.text);
                out.push('=');
                dsl_value(out, &arg.value);
            }
            if let Some(repeat) = &layer.repeat {
                separate(out);
                out.push_str("repeat=");
                dsl_value(out, repeat);
            }
            out.push(')');
        }
        match &layer.body {
            Some(body) => {
                out.push_str(" {");
                trailing(out, comment);
                dsl_layers(out, &format!("{indent}  "), body);
                out.push_str(indent);
                out.push_str("}\n");
            }
            None => trailing(out, comment),
        }
    }
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

/// One entry after its `- `: a flow mapping on one line, or a `sequential` as a block mapping
/// (its `layers` nested below it).
fn yaml_layer(out: &mut String, indent: &str, layer: &Layer) {
    out.push_str(&yaml_str(&layer.kind.text));
    if let Some(body) = &layer.body {
        out.push(':');
        trailing(out, &layer.comments.trailing);
        let inner = format!("{indent}    ");
        if let Some(name) = &layer.name {
            let _ = writeln!(out, "{inner}name: {}", yaml_str(&name.text));
        }
        if !layer.inputs.is_empty() {
            let _ = write!(out, "{inner}inputs: ");
            yaml_inputs(out, &layer.inputs);
            out.push('\n');
        }
        for arg in &layer.args {
            let _ = write!(out, "{inner}{}: ", yaml_str(&arg.key.text));
            yaml_value(out, &arg.value);
            out.push('\n');
        }
        if let Some(repeat) = &layer.repeat {
            let _ = write!(out, "{inner}repeat: ");
            yaml_value(out, repeat);
            out.push('\n');
        }
        let _ = writeln!(out, "{inner}layers:");
        yaml_layers(out, &format!("{inner}  "), body);
        return;
    }
    if layer.name.is_none()
        && layer.inputs.is_empty()
        && layer.args.is_empty()
        && layer.repeat.is_none()
    {
        trailing(out, &layer.comments.trailing);
        return;
    }
    out.push_str(": {");
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !first {
            out.push_str(", ");
        }
        first = false;
    };
    if let Some(name) = &layer.name {
        separate(out);
        out.push_str("name: ");
        out.push_str(&yaml_str(&name.text));
    }
    if !layer.inputs.is_empty() {
        separate(out);
        out.push_str("inputs: ");
        yaml_inputs(out, &layer.inputs);
    }
    for arg in &layer.args {
        separate(out);
        out.push_str(&yaml_str(&arg.key.text));
        out.push_str(": ");
        yaml_value(out, &arg.value);
    }
    if let Some(repeat) = &layer.repeat {
        separate(out);
        out.push_str("repeat: ");
        yaml_value(out, repeat);
    }
    out.push('}');
    trailing(out, &layer.comments.trailing);
}

/// One input as a scalar, several as a flow list; an unnamed entry's position as a number.
fn yaml_inputs(out: &mut String, inputs: &[Ident]) {
    let name = |input: &Ident| {
        let digits = !input.text.is_empty() && input.text.bytes().all(|b| b.is_ascii_digit());
        if digits && (input.text == "0" || !input.text.starts_with('0')) {
            input.text.clone()
        } else {
            yaml_str(&input.text)
        }
    };
    match inputs {
        [one] => out.push_str(&name(one)),
        many => {
            out.push('[');
            for (i, input) in many.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&name(input));
            }
            out.push(']');
        }
    }
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
        ValueKind::Expr(expr) => out.push_str(&expr.to_text()),
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
        ValueKind::Expr(expr) => out.push_str(&expr.to_text()),
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
    // `model` and `input` are words of the DSL only.
    if is_plain_word(s) && (matches!(s, "model" | "input") || !is_reserved(s)) {
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
