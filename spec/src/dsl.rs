//! The DSL front-end: a pest grammar (`dsl.pest`) with one entry per line (blocks and
//! `sequential` groups in braces), lowered to the same IR as YAML. Takes plain text and returns byte spans into it, so the `cnn_model!` macro can map
//! them back onto its tokens.

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest_derive::Parser;

use crate::MAX_NESTING;
use crate::ast::{Arg, Block, Ident, Layer, Model, ModelComments, Param, Value, ValueKind};
use crate::comments;
use crate::diag::{Code, Diagnostic};
use crate::expr;
use crate::front_errors::{Found, FrontError, SyntaxHint};
use crate::span::{Format, Source, Span};

#[derive(Parser)]
#[grammar = "dsl.pest"]
struct DslParser;

/// Parses DSL text into the IR. Spans are byte offsets into `text`.
pub fn parse_dsl(text: &str) -> Result<Model, Vec<Diagnostic>> {
    let refused = comments::lone_carriage_return(text, Code::DslSyntax)
        .or_else(|| control_character(text))
        .or_else(|| nesting_error(text));
    if let Some(diagnostic) = refused {
        return Err(vec![diagnostic]);
    }
    // A byte order mark (editors on Windows write one) is blanked to three spaces, its length in
    // bytes, so every span still points into `text`; YAML skips it too.
    let blanked;
    let grammar_text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            blanked = format!("   {rest}");
            blanked.as_str()
        }
        None => text,
    };
    // Collect the rules tried at the failure point, so errors name the expected token.
    pest::set_error_detail(true);
    let file = match DslParser::parse(Rule::file, grammar_text) {
        Ok(mut pairs) => pairs.next(),
        Err(err) => return Err(vec![syntax_error(&err, text)]),
    };
    let mut model = Model {
        name: None,
        input: None,
        blocks: Vec::new(),
        layers: Vec::new(),
        comments: ModelComments::default(),
        span: Span::new(0, text.len()),
    };
    let mut errors = Vec::new();
    for pair in file.into_iter().flat_map(Pair::into_inner) {
        match pair.as_rule() {
            Rule::header_model => {
                model.name = pair
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::model_name)
                    .map(|p| Ident {
                        text: p.as_str().trim_matches('"').to_owned(),
                        span: span_of(&p),
                    });
            }
            Rule::header_input => {
                model.input = pair
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::list)
                    .map(|p| value(p, &mut errors));
            }
            Rule::layer => model.layers.push(layer(pair, &mut errors)),
            Rule::block => model.blocks.push(block(pair, &mut errors)),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors.into_iter().map(FrontError::render).collect());
    }
    let source = Source::new("", text, Format::Dsl);
    comments::attach(&mut model, &source, comments::Style::Dsl);
    Ok(model)
}

/// The span of a rule without the implicit whitespace pest counts after its last part.
fn trimmed_span(pair: &Pair<'_, Rule>) -> Span {
    let end = pair
        .clone()
        .into_inner()
        .map(|part| part.as_span().end())
        .max()
        .unwrap_or(pair.as_span().end());
    Span::new(pair.as_span().start(), end)
}

fn block(pair: Pair<'_, Rule>, errors: &mut Vec<FrontError>) -> Block {
    let span = trimmed_span(&pair);
    let mut block = Block {
        name: Ident {
            text: String::new(),
            span,
        },
        params: Vec::new(),
        layers: Vec::new(),
        comments: Default::default(),
        span,
    };
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::block_name => block.name = ident(&part),
            Rule::params => {
                for param in part.into_inner() {
                    let mut inner = param.into_inner();
                    if let Some(key) = inner.next() {
                        block.params.push(Param {
                            name: ident(&key),
                            default: inner.next().map(|v| value(v, errors)),
                        });
                    }
                }
            }
            Rule::body => block.layers = body(part, errors),
            _ => {}
        }
    }
    block
}

fn body(pair: Pair<'_, Rule>, errors: &mut Vec<FrontError>) -> Vec<Layer> {
    pair.into_inner()
        .filter(|p| p.as_rule() == Rule::layer)
        .map(|p| layer(p, errors))
        .collect()
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    Span::new(span.start(), span.end())
}

fn ident(pair: &Pair<'_, Rule>) -> Ident {
    Ident {
        text: pair.as_str().to_owned(),
        span: span_of(pair),
    }
}

fn layer(pair: Pair<'_, Rule>, errors: &mut Vec<FrontError>) -> Layer {
    // pest's implicit whitespace after the kind (tried before the optional arguments) belongs
    // to the rule's span; the layer itself ends with its last part.
    let span = trimmed_span(&pair);
    let mut layer = Layer::new(
        Ident {
            text: String::new(),
            span,
        },
        span,
    );
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::layer_name => layer.name = Some(ident(&part)),
            Rule::kind => layer.kind = ident(&part),
            Rule::args => {
                let mut first_keyword = None;
                for arg in part.into_inner() {
                    if arg.as_rule() == Rule::reference {
                        if let Some(keyword) = first_keyword {
                            errors.push(FrontError::PositionalAfterKeyword {
                                span: span_of(&arg),
                                keyword,
                            });
                        }
                        layer.inputs.push(ident(&arg));
                        continue;
                    }
                    first_keyword.get_or_insert(span_of(&arg));
                    let mut inner = arg.into_inner();
                    let (Some(key), Some(val)) = (inner.next(), inner.next()) else {
                        continue;
                    };
                    let key = ident(&key);
                    let val = value(val, errors);
                    match key.text.as_str() {
                        "repeat" if layer.repeat.is_none() => layer.repeat = Some(val),
                        _ => layer.args.push(Arg { key, value: val }),
                    }
                }
            }
            Rule::body => {
                if layer.kind.text != "sequential" {
                    errors.push(FrontError::BodyNotSequential {
                        span: trimmed_span(&part),
                        kind: layer.kind.text.clone(),
                    });
                }
                layer.body = Some(body(part, errors));
            }
            _ => {}
        }
    }
    if layer.kind.text == "sequential" && layer.body.is_none() {
        errors.push(FrontError::SequentialWithoutLayers { span });
        layer.body = Some(Vec::new());
    }
    layer
}

fn value(pair: Pair<'_, Rule>, errors: &mut Vec<FrontError>) -> Value {
    let span = span_of(&pair);
    let text = pair.as_str();
    let kind = match pair.as_rule() {
        Rule::list => ValueKind::List(pair.into_inner().map(|v| value(v, errors)).collect()),
        Rule::expr => match expr::parse(text, span.start as usize) {
            Ok(parsed) => expr::into_value(parsed),
            Err(error) => {
                errors.push(FrontError::BadExpression { error });
                ValueKind::Str(text.to_owned())
            }
        },
        // Beyond every size limit; the checker reports it as too large.
        Rule::int => ValueKind::Int(text.parse().unwrap_or(if text.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        })),
        Rule::float => ValueKind::Float(text.parse().unwrap_or(f64::NAN)),
        Rule::boolean => ValueKind::Bool(text.eq_ignore_ascii_case("true")),
        Rule::string => ValueKind::Str(text.trim_matches('"').to_owned()),
        // YAML's `null` (what `cnnc fmt` writes), or Python's `None`: `momentum=None`.
        Rule::word if text == "null" || text == "None" => ValueKind::Null,
        _ => ValueKind::Str(text.to_owned()),
    };
    Value { kind, span }
}

/// The first character YAML refuses anywhere: a control character other than tab, line breaks
/// and NEL (U+0085), or a noncharacter U+FFFE/U+FFFF. A DSL comment holding one could not be
/// carried over to YAML by `cnnc fmt`.
fn control_character(text: &str) -> Option<Diagnostic> {
    let (at, c) = text.char_indices().find(|&(_, c)| {
        (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{85}'))
            || matches!(c, '\u{fffe}' | '\u{ffff}')
    })?;
    Some(
        FrontError::ControlCharacter {
            span: Span::new(at, at + c.len_utf8()),
            c,
        }
        .render(),
    )
}

/// Whether `c` shows as nothing (or as a plain space) in an editor, so quoting it in a message
/// would show nothing: spaces other than ` `, zero-width and direction marks, byte order marks.
fn invisible(c: char) -> bool {
    (c.is_whitespace() && c != ' ')
        || c.is_control()
        || matches!(
            c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
        )
}

/// Brackets nested deeper than [`MAX_NESTING`], found before parsing so that the recursive
/// grammar never sees them. Brackets in comments and strings do not count.
fn nesting_error(text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    // The character that ends the comment (`\n`) or string (`"`) being skipped, if any.
    let mut skip_until = None;
    for (at, c) in text.char_indices() {
        if let Some(end) = skip_until {
            // Strings end at a line break too, as the grammar has them.
            if c == end || c == '\n' {
                skip_until = None;
            }
            continue;
        }
        match c {
            '#' => skip_until = Some('\n'),
            '"' => skip_until = Some('"'),
            '(' | '[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        FrontError::BracketsTooDeep {
                            span: Span::new(at, at + 1),
                        }
                        .render(),
                    );
                }
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// What a grammar rule is called in messages.
fn describe(rule: &Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::header_model | Rule::kw_model => "`model NAME`",
        Rule::header_input | Rule::kw_input => "`input (C, H, W)`",
        Rule::block | Rule::kw_block => "`block Name(params) { ... }`",
        Rule::block_name => "a block name",
        Rule::params | Rule::param => "a parameter",
        Rule::body => "`{`",
        Rule::reference => "an input name",
        Rule::expr | Rule::operand | Rule::operator | Rule::inline_ws => "an expression",
        Rule::name_part | Rule::template => "a layer name",
        Rule::model_name => "a model name",
        Rule::layer | Rule::layer_name | Rule::kind => "a layer",
        Rule::args => "`(`",
        Rule::arg | Rule::key => "an argument `key=value`",
        Rule::list => "a list `(a, b)`",
        Rule::float | Rule::int | Rule::exponent => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::value | Rule::string | Rule::word | Rule::ident => "a value",
        Rule::segment | Rule::ident_char => "a layer name",
        Rule::file | Rule::WHITESPACE | Rule::COMMENT => return None,
    })
}

/// Turns a pest error into an `E0002` diagnostic covering the offending token.
fn syntax_error(err: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
    let reported = match err.location {
        InputLocation::Pos(at) => at,
        InputLocation::Span((start, _)) => start,
    };
    let attempts = err.parse_attempts();
    // The furthest point any rule reached is where the text stops making sense.
    let at = attempts
        .as_ref()
        .map_or(reported, |a| a.max_position.max(reported))
        .min(text.len());
    // At the end of the text, point just after the last token rather than past blank lines.
    let at = if text[at..].trim().is_empty() {
        text[..at].trim_end().len()
    } else {
        at
    };
    let rest = &text[at..];
    let token_len = match rest.chars().next() {
        None => 0,
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    };
    let found = match rest.chars().next() {
        None => Found::EndOfFile,
        Some(_) if rest.trim().is_empty() => Found::EndOfFile,
        Some('\n' | '\r') => Found::EndOfLine,
        Some(c) if invisible(c) => Found::Invisible(c),
        Some(_) => Found::Token(rest[..token_len].to_owned()),
    };
    let mut expected: Vec<String> = Vec::new();
    // Punctuation the grammar wanted; whitespace, comments and character classes say nothing.
    for token in attempts.iter().flat_map(|a| a.expected_tokens()) {
        let token = token.to_string();
        if !token.is_empty() && token.chars().all(|c| "()[]=,:".contains(c)) {
            let token = format!("`{token}`");
            if !expected.contains(&token) {
                expected.push(token);
            }
        }
    }
    if let (true, ErrorVariant::ParsingError { positives, .. }) =
        (expected.is_empty(), &err.variant)
    {
        for rule in positives {
            if let Some(name) = describe(rule)
                && !expected.iter().any(|e| e == name)
            {
                expected.push(name.to_owned());
            }
        }
    }
    let hint = match rest.chars().next() {
        Some(c) if invisible(c) => Some(SyntaxHint::Invisible {
            span: Span::new(at, at + c.len_utf8()),
            space: c.is_whitespace(),
        }),
        Some(':') => Some(SyntaxHint::Colon {
            span: Span::new(at, at + 1),
        }),
        Some('{') => Some(SyntaxHint::Brace),
        // `conv2d {out_channels=32}`: a YAML-style mapping read as a body of entries.
        Some('=')
            if text[..at]
                .rsplit('\n')
                .next()
                .is_some_and(|line| line.contains('{')) =>
        {
            Some(SyntaxHint::Brace)
        }
        _ => None,
    };
    FrontError::DslSyntax {
        span: Span::new(at, at + token_len),
        expected,
        found,
        hint,
    }
    .render()
}
