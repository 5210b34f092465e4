//! `#` comments, which neither parser keeps: found by scanning the text line by line and attached
//! to the IR by line number, so `cnnc fmt` can carry them across languages.

use crate::ast::{Layer, Model};
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

/// The lines an entry (a block or a layer) covers, with its nested entries.
struct Lines {
    start: usize,
    end: usize,
    children: Vec<Lines>,
}

impl Lines {
    fn of(span: Span, children: &[Layer], line_of: &dyn Fn(u32) -> usize) -> Lines {
        Lines {
            start: line_of(span.start),
            end: line_of(span.end.saturating_sub(1).max(span.start)),
            children: children
                .iter()
                .map(|layer| Lines::of(layer.span, layer.body.as_deref().unwrap_or(&[]), line_of))
                .collect(),
        }
    }
}

/// Where a comment goes: a path of entry indices, and whether it trails the entry's line.
enum Target {
    Entry(Vec<usize>, bool),
    Name,
    Input,
    Header,
    Footer,
}

/// The path to the innermost entry holding `line` at the end of code (`trailing`), or the
/// entry a whole-line comment at `line` is placed before: the first entry ending at or after
/// it, descending into a group that contains it. Entries are in line order (their first and
/// last lines never decrease): binary searches keep many comments on many layers from being
/// quadratic.
fn locate(entries: &[Lines], line: usize, trailing: bool) -> Option<Vec<usize>> {
    let i = entries.partition_point(|e| e.end < line);
    let entry = entries.get(i)?;
    if trailing && entry.start > line {
        return None;
    }
    let mut path = vec![i];
    if entry.start < line
        && let Some(rest) = locate(&entry.children, line, trailing)
    {
        path.extend(rest);
    }
    Some(path)
}

/// Attaches the comments of `source` to `model`: a whole-line comment goes to the entry that
/// follows it (or contains it), a comment after code to the innermost entry on that line; the
/// rest to the model's header, `model`/`input` lines or footer.
pub(crate) fn attach(model: &mut Model, source: &Source, style: Style) {
    let comments = scan(source.text(), style);
    if comments.is_empty() {
        return;
    }
    let line_of = |offset: u32| source.line_col(offset as usize).line;
    // Blocks and layers in line order, as (is a block, index).
    let mut order: Vec<(bool, usize, u32)> = model
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (true, i, b.span.start))
        .chain(
            model
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| (false, i, l.span.start)),
        )
        .collect();
    order.sort_by_key(|&(_, _, start)| start);
    let entries: Vec<Lines> = order
        .iter()
        .map(|&(is_block, i, _)| {
            if is_block {
                let block = &model.blocks[i];
                Lines::of(block.span, &block.layers, &line_of)
            } else {
                let layer = &model.layers[i];
                Lines::of(layer.span, layer.body.as_deref().unwrap_or(&[]), &line_of)
            }
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
    let last_entry = entries.iter().map(|e| e.end).max();
    let mut name_taken = model.comments.name.is_some();
    let mut input_taken = model.comments.input.is_some();
    for comment in comments {
        let line = comment.line;
        let target = if comment.own_line {
            None
        } else if let Some(path) = locate(&entries, line, true) {
            Some(Target::Entry(path, true))
        } else if name_line == Some(line) && !name_taken {
            name_taken = true;
            Some(Target::Name)
        } else if input_lines.is_some_and(|(s, e)| s <= line && line <= e) && !input_taken {
            input_taken = true;
            Some(Target::Input)
        } else {
            None
        };
        let target = target.unwrap_or_else(|| match last_entry {
            Some(last) if line > last => Target::Footer,
            Some(_) if line > header_end => Target::Entry(
                locate(&entries, line, false).unwrap_or_else(|| vec![0]),
                false,
            ),
            _ => Target::Header,
        });
        let text = comment.text;
        match target {
            Target::Name => model.comments.name = Some(text),
            Target::Input => model.comments.input = Some(text),
            Target::Header => model.comments.header.push(text),
            Target::Footer => model.comments.footer.push(text),
            Target::Entry(path, trailing) => {
                let Some((&top, rest)) = path.split_first() else {
                    continue;
                };
                let (is_block, i, _) = order[top];
                let (comments, mut children) = if is_block {
                    let block = &mut model.blocks[i];
                    (&mut block.comments, Some(&mut block.layers))
                } else {
                    let layer = &mut model.layers[i];
                    (&mut layer.comments, layer.body.as_mut())
                };
                let mut comments = comments;
                for &child in rest {
                    let Some(layer) = children.and_then(|c| c.get_mut(child)) else {
                        break;
                    };
                    comments = &mut layer.comments;
                    children = layer.body.as_mut();
                }
                if trailing {
                    comments.trailing = Some(match comments.trailing.take() {
                        Some(previous) => format!("{previous} {text}"),
                        None => text,
                    });
                } else {
                    comments.leading.push(text);
                }
            }
        }
    }
}
