//! `#` comments, which neither parser keeps: found by scanning the text line by line and attached
//! to the IR by line number, so `cnnc fmt` can carry them across languages.

use crate::ast::Model;
use crate::diag::{Code, Diagnostic};
use crate::front_errors::FrontError;
use crate::span::{Source, Span};

/// A carriage return that does not end a line, as a `code` syntax error. YAML reads one as a line
/// break, but comments are found (and diagnostics placed) line by line on `\n`, so such text is
/// refused in both languages rather than misread.
pub(crate) fn lone_carriage_return(text: &str, code: Code) -> Option<Diagnostic> {
    let at = text
        .match_indices('\r')
        .map(|(at, _)| at)
        .find(|&at| !text[at + 1..].starts_with('\n'))?;
    Some(
        FrontError::LoneCarriageReturn {
            code,
            span: Span::new(at, at + 1),
        }
        .render(),
    )
}

/// Where a `#` may start a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// YAML: at the start of a line or after whitespace, outside quotes.
    Yaml,
    /// DSL: anywhere outside a quoted string.
    Dsl,
}

/// A comment found in the text.
struct LineComment {
    /// 1-based line.
    line: usize,
    /// Text after the `#`, trimmed.
    text: String,
    /// Whether nothing but whitespace precedes it on its line.
    own_line: bool,
}

fn scan(text: &str, style: Style) -> Vec<LineComment> {
    // A byte order mark is not part of the first line's text: `\u{feff}# title` is a comment.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (at, c) in line.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                // A YAML apostrophe inside a plain word (`don't`) does not open a quote.
                None if (c == '"' || c == '\'')
                    && (style == Style::Dsl
                        || previous.is_whitespace()
                        || "[{,:".contains(previous)) =>
                {
                    quote = Some(c);
                }
                None if c == '#' && (style == Style::Dsl || previous.is_whitespace()) => {
                    found.push(LineComment {
                        line: index + 1,
                        text: line[at + 1..].trim().to_owned(),
                        own_line: line[..at].trim().is_empty(),
                    });
                    break;
                }
                None => {}
            }
            previous = c;
        }
    }
    found
}

/// Attaches the comments of `source` to `model`: a whole-line comment goes to the layer that
/// follows it (or contains it), a comment after code to the layer on that line; the rest to the
/// model's header, `model`/`input` lines or footer.
pub(crate) fn attach(model: &mut Model, source: &Source, style: Style) {
    let comments = scan(source.text(), style);
    if comments.is_empty() {
        return;
    }
    let line_of = |offset: u32| source.line_col(offset as usize).line;
    let layer_lines: Vec<(usize, usize)> = model
        .layers
        .iter()
        .map(|layer| {
            (
                line_of(layer.span.start),
                line_of(layer.span.end.saturating_sub(1).max(layer.span.start)),
            )
        })
        .collect();
    let name_line = model.name.as_ref().map(|name| line_of(name.span.start));
    let input_lines = model.input.as_ref().map(|input| {
        (
            line_of(input.span.start),
            line_of(input.span.end.saturating_sub(1).max(input.span.start)),
        )
    });
    let header_end = name_line.max(input_lines.map(|(_, end)| end)).unwrap_or(0);
    let last_layer = layer_lines.last().map(|&(_, end)| end);
    for comment in comments {
        let line = comment.line;
        if !comment.own_line {
            // Layers are in line order (their first and last lines never decrease): binary
            // searches keep many comments on many layers from being quadratic. The first layer
            // ending at or after the line holds it if it starts at or before it.
            let first_ending = layer_lines.partition_point(|&(_, e)| e < line);
            if let Some(i) =
                Some(first_ending).filter(|&i| layer_lines.get(i).is_some_and(|&(s, _)| s <= line))
            {
                let trailing = &mut model.layers[i].comments.trailing;
                *trailing = Some(match trailing.take() {
                    Some(previous) => format!("{previous} {}", comment.text),
                    None => comment.text,
                });
                continue;
            }
            if name_line == Some(line) && model.comments.name.is_none() {
                model.comments.name = Some(comment.text);
                continue;
            }
            if input_lines.is_some_and(|(s, e)| s <= line && line <= e)
                && model.comments.input.is_none()
            {
                model.comments.input = Some(comment.text);
                continue;
            }
        }
        match last_layer {
            Some(last) if line > last => model.comments.footer.push(comment.text),
            Some(_) if line > header_end => {
                let i = layer_lines.partition_point(|&(_, end)| end < line);
                let i = if i < layer_lines.len() { i } else { 0 };
                model.layers[i].comments.leading.push(comment.text);
            }
            _ => model.comments.header.push(comment.text),
        }
    }
}
