//! The front-ends' diagnostics as data: one variant per distinct diagnostic, carrying the facts
//! (what was found, where, the key), and [`FrontError::render`], the one place that words them.
//! `yaml.rs`, `dsl.rs`, `comments.rs` and `parse` construct a variant; they write no English
//! (the parsers' own messages, quoted in YAML syntax errors, excepted).
//!
//! To add a diagnostic: add a variant with the facts it needs, then one arm in `render` that
//! picks its [`Code`] (explained in `error_codes/CODE.md`) and words it.

use crate::diag::{Code, Diagnostic};
use crate::expr::SyntaxError;
use crate::span::Span;
use crate::{MAX_NESTING, MAX_SOURCE_BYTES};

/// What a DSL syntax error found where the grammar stopped.
pub(crate) enum Found {
    /// The end of the text (or only blanks before it).
    EndOfFile,
    /// A line break.
    EndOfLine,
    /// A character that shows as nothing or as a space.
    Invisible(char),
    /// A token, as written.
    Token(String),
}

impl Found {
    fn text(&self) -> String {
        match self {
            Found::EndOfFile => "end of file".to_owned(),
            Found::EndOfLine => "end of line".to_owned(),
            Found::Invisible(c) => {
                // The common ones are named as well.
                let name = match c {
                    '\t' => " (a tab)",
                    '\u{a0}' => " (a no-break space)",
                    '\u{200b}' => " (a zero-width space)",
                    '\u{feff}' => " (a byte order mark)",
                    _ => "",
                };
                format!("the invisible character U+{:04X}{name}", u32::from(*c))
            }
            Found::Token(token) => format!("`{token}`"),
        }
    }
}

/// What a DSL syntax error suggests, from the character where the grammar stopped.
pub(crate) enum SyntaxHint {
    /// An invisible character, to replace with a space (`space`) or delete.
    Invisible {
        /// The character.
        span: Span,
        /// Whether it looks like a space.
        space: bool,
    },
    /// A YAML-style `key: value` in the DSL.
    Colon {
        /// The colon.
        span: Span,
    },
    /// A YAML-style `{...}` argument mapping.
    Brace,
}

/// One diagnostic of the front-ends. `found` fields describe what was written
/// instead ("a list", "an integer").
pub(crate) enum FrontError {
    /// YAML the parser refuses, in the parser's words.
    YamlSyntax {
        /// Where the parser stopped.
        span: Span,
        /// The parser's message.
        message: String,
        /// The bracket left open, when the parser stopped lines after it.
        unclosed: Option<(Span, String)>,
    },
    /// DSL text the grammar does not accept.
    DslSyntax {
        /// The token where parsing stopped.
        span: Span,
        /// What the grammar wanted there, described.
        expected: Vec<String>,
        /// What is there.
        found: Found,
        /// A suggestion from the character there.
        hint: Option<SyntaxHint>,
    },
    /// A spec over [`MAX_SOURCE_BYTES`].
    SourceTooLarge,
    /// A `\r` not followed by `\n`.
    LoneCarriageReturn {
        /// The language's syntax code.
        code: Code,
        /// The character.
        span: Span,
    },
    /// A control character or noncharacter in a DSL spec.
    ControlCharacter {
        /// The character.
        span: Span,
        /// Which one.
        c: char,
    },
    /// DSL brackets nested beyond [`MAX_NESTING`].
    BracketsTooDeep {
        /// The bracket that opens one level too many.
        span: Span,
    },
    /// YAML collections nested beyond [`MAX_NESTING`].
    YamlTooDeep {
        /// The bracket or dash that opens one level too many.
        span: Span,
    },
    /// The YAML parser's budget (aliases, events) exhausted.
    YamlBudget {
        /// Where the limit was reached.
        span: Span,
        /// The parser's message.
        message: String,
    },
    /// A tab indenting YAML.
    YamlTab {
        /// The tab.
        span: Span,
        /// The parser's message.
        message: String,
    },
    /// A file with no content.
    EmptySpec {
        /// The whole file.
        span: Span,
    },
    /// A top level that is not a mapping.
    SpecNotMapping {
        /// The top level.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A top-level key that is not a string.
    KeyNotString {
        /// The key.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A top-level key given twice.
    DuplicateKey {
        /// The second key.
        span: Span,
        /// The first key.
        first: Span,
        /// The key.
        key: String,
    },
    /// A top-level key other than `model`, `input` and `layers`.
    UnknownTopLevelKey {
        /// The key.
        span: Span,
        /// The key's text.
        key: String,
        /// The nearest spec key, if any is near.
        best: Option<&'static str>,
    },
    /// A `model` that is not a name.
    ModelNameNotString {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A `layers` that is not a list.
    LayersNotList {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A layer kind that is not a name.
    LayerKindNotName {
        /// The key.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A layer mapping with more than one key.
    LayerManyKeys {
        /// The layer.
        span: Span,
        /// How many keys it has.
        count: usize,
        /// Whether one of them is `name`.
        has_name: bool,
    },
    /// A layer that is neither a name nor a one-key mapping.
    LayerNotNameOrMap {
        /// The layer.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A layer's arguments that are not a mapping.
    ArgumentsNotMapping {
        /// The arguments.
        span: Span,
        /// The layer kind as written.
        kind: String,
        /// What they are.
        found: &'static str,
    },
    /// An argument name that is not a string.
    ArgumentNameNotString {
        /// The key.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A layer `name` that is neither a string nor a non-negative integer.
    LayerNameNotString {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A `sequential` without its `layers` (YAML) or `{ ... }` body (DSL).
    SequentialWithoutLayers {
        /// The entry.
        span: Span,
    },
    /// A body `{ ... }` on an entry other than `sequential`.
    BodyNotSequential {
        /// The body.
        span: Span,
        /// The entry's kind.
        kind: String,
    },
    /// An `inputs` item that is not a name.
    InputNotName {
        /// The item.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// `inputs: []`.
    EmptyInputs {
        /// The value.
        span: Span,
    },
    /// A DSL input name after a keyword argument.
    PositionalAfterKeyword {
        /// The input name.
        span: Span,
        /// The first keyword argument.
        keyword: Span,
    },
    /// `blocks` that is not a mapping.
    BlocksNotMapping {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A block name that is not a string.
    BlockNameNotString {
        /// The key.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// A block declaration that is not a mapping.
    BlockNotMapping {
        /// The value.
        span: Span,
        /// The block.
        name: String,
        /// What it is.
        found: &'static str,
    },
    /// A key of a block declaration other than `params` and `layers`.
    UnknownBlockKey {
        /// The key.
        span: Span,
        /// Its text.
        key: String,
        /// The nearest block key, if any is near.
        best: Option<&'static str>,
    },
    /// A block declaration without `layers`.
    BlockWithoutLayers {
        /// The block's name.
        span: Span,
        /// The block.
        name: String,
    },
    /// A block's `params` that is not a mapping.
    ParamsNotMapping {
        /// The value.
        span: Span,
        /// What it is.
        found: &'static str,
    },
    /// Arithmetic that does not parse.
    BadExpression {
        /// What is wrong, and where.
        error: SyntaxError,
    },
}

impl FrontError {
    /// The diagnostic: code, message, labels, notes, help and fix, all worded here.
    pub(crate) fn render(self) -> Diagnostic {
        const SPEC_HELP: &str = "a spec is a mapping with `model`, `input` and `layers`";
        match self {
            FrontError::YamlSyntax {
                span,
                message,
                unclosed,
            } => {
                let diagnostic = Diagnostic::error(
                    Code::YamlSyntax,
                    format!("invalid YAML: {message}"),
                    span,
                    message,
                );
                match unclosed {
                    Some((open, bracket)) => {
                        diagnostic.secondary(open, format!("this `{bracket}` is not closed"))
                    }
                    None => diagnostic,
                }
            }
            FrontError::DslSyntax { span, expected, found, hint } => {
                let expected = match expected.as_slice() {
                    [] => "valid syntax".to_owned(),
                    [one] => one.clone(),
                    [init @ .., last] => format!("{} or {last}", init.join(", ")),
                };
                let diagnostic = Diagnostic::error(
                    Code::DslSyntax,
                    format!("expected {expected}, found {}", found.text()),
                    span,
                    format!("expected {expected}"),
                );
                match hint {
                    // A look-alike space becomes a space; anything else that shows as nothing
                    // goes.
                    Some(SyntaxHint::Invisible { span, space: true }) => {
                        diagnostic.suggest("replace it with a plain space", span, " ")
                    }
                    Some(SyntaxHint::Invisible { span, space: false }) => diagnostic.suggest(
                        "delete it: it cannot be seen in most editors",
                        span,
                        "",
                    ),
                    Some(SyntaxHint::Colon { span }) => diagnostic.suggest(
                        "arguments are written `key=value`, e.g. `conv2d(out_channels=32, kernel_size=3)`",
                        span,
                        "=",
                    ),
                    Some(SyntaxHint::Brace) => diagnostic
                        .help("arguments go in parentheses: `conv2d(out_channels=32, kernel_size=3)`"),
                    None => diagnostic,
                }
            }
            FrontError::SourceTooLarge => Diagnostic::error(
                Code::SourceTooLarge,
                format!("the spec is larger than the limit of {MAX_SOURCE_BYTES} bytes (1 MiB)"),
                Span::new(0, 0),
                "this file",
            )
            .help("a model spec is a few kilobytes; is this the right file?"),
            FrontError::LoneCarriageReturn { code, span } => Diagnostic::error(
                code,
                "carriage return without a line feed",
                span,
                "lone carriage return",
            )
            .help("save the file with LF (Unix) or CRLF (Windows) line endings"),
            FrontError::ControlCharacter { span, c } => Diagnostic::error(
                Code::DslSyntax,
                format!(
                    "{} U+{:04X} in the spec",
                    if c.is_control() {
                        "control character"
                    } else {
                        "noncharacter"
                    },
                    u32::from(c)
                ),
                span,
                "not allowed here",
            )
            .help("a spec is plain text: remove the character (tabs and line breaks are allowed)"),
            FrontError::BracketsTooDeep { span } => Diagnostic::error(
                Code::NestingTooDeep,
                format!("brackets are nested more than {MAX_NESTING} deep"),
                span,
                "too deep",
            )
            .help("a spec needs at most two levels: `layer(kernel_size=(3, 3))`"),
            FrontError::YamlTooDeep { span } => Diagnostic::error(
                Code::NestingTooDeep,
                format!("lists and mappings are nested more than {MAX_NESTING} deep"),
                span,
                "too deep",
            )
            .help(
                "a spec nests at most five deep: the spec, `layers`, a layer, its arguments and a \
                 `[height, width]` pair",
            ),
            FrontError::YamlBudget { span, message } => Diagnostic::error(
                Code::YamlSyntax,
                format!("invalid YAML: {message}"),
                span,
                "the limit is reached here",
            )
            .help(
                "a spec has a few hundred values; write repeated parts out instead of aliasing them",
            ),
            FrontError::YamlTab { span, message } => Diagnostic::error(
                Code::YamlSyntax,
                "invalid YAML: a tab is used as indentation",
                span,
                "this tab",
            )
            .note(format!("the parser says: {message}"))
            .help("YAML indents with spaces only: replace the tab with spaces"),
            FrontError::EmptySpec { span } => {
                Diagnostic::error(Code::BadStructure, "the spec is empty", span, "").help(SPEC_HELP)
            }
            FrontError::SpecNotMapping { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a spec must be a mapping, found {found}"),
                span,
                "expected `model`, `input` and `layers` keys",
            )
            .help(SPEC_HELP),
            FrontError::KeyNotString { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a spec key must be a string, found {found}"),
                span,
                "expected `model`, `input` or `layers`",
            ),
            FrontError::DuplicateKey { span, first, key } => Diagnostic::error(
                Code::DuplicateArgument,
                format!("duplicate key `{key}`"),
                span,
                "given again here",
            )
            .secondary(first, "first given here"),
            FrontError::UnknownTopLevelKey { span, key, best } => {
                let diagnostic = Diagnostic::error(
                    Code::UnknownTopLevelKey,
                    format!("unknown key `{key}`"),
                    span,
                    "not a spec key",
                )
                .note("a spec has the keys `model`, `input` and `layers`");
                match best {
                    Some(best) => diagnostic.suggest(format!("did you mean `{best}`?"), span, best),
                    None => diagnostic,
                }
            }
            FrontError::ModelNameNotString { span, found } => Diagnostic::error(
                Code::WrongType,
                format!("`model` must be a name, found {found}"),
                span,
                "expected a string",
            ),
            FrontError::LayersNotList { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("`layers` must be a list, found {found}"),
                span,
                "expected a list of layers",
            )
            .help("write one layer per line: `- conv2d: {out_channels: 32, kernel_size: 5}`"),
            FrontError::LayerKindNotName { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a layer kind must be a name, found {found}"),
                span,
                "expected a layer kind such as `conv2d`",
            ),
            FrontError::LayerManyKeys {
                span,
                count,
                has_name,
            } => {
                let diagnostic = Diagnostic::error(
                    Code::BadStructure,
                    format!("a layer must have exactly one kind, found {count} keys"),
                    span,
                    "expected `kind: {arguments}`",
                );
                if has_name {
                    diagnostic.help("put `name` among the layer's arguments: `- conv2d: {name: conv1, out_channels: 32, kernel_size: 3}`")
                } else {
                    diagnostic.help("write each layer as its own list item")
                }
            }
            FrontError::LayerNotNameOrMap { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a layer must be a name or a one-key mapping, found {found}"),
                span,
                "expected a layer",
            )
            .help("write `- relu` or `- conv2d: {out_channels: 32, kernel_size: 3}`"),
            FrontError::ArgumentsNotMapping { span, kind, found } => Diagnostic::error(
                Code::BadStructure,
                format!("the arguments of `{kind}` must be a mapping, found {found}"),
                span,
                "expected `{key: value, ...}`",
            )
            .help(format!(
                "write `{kind}: {{key: value}}`, or just `{kind}` for no arguments"
            )),
            FrontError::ArgumentNameNotString { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("an argument name must be a string, found {found}"),
                span,
                "expected an argument name",
            ),
            FrontError::LayerNameNotString { span, found } => Diagnostic::error(
                Code::WrongType,
                format!("a layer name must be a string, found {found}"),
                span,
                "expected a name such as `conv1` or `layer1.0`",
            )
            .help("quote the name: `name: \"layer1.0\"`"),
            FrontError::SequentialWithoutLayers { span } => Diagnostic::error(
                Code::BadStructure,
                "a `sequential` needs its layers",
                span,
                "no layers",
            )
            .help("YAML: `- sequential: {name: stage1, layers: [relu]}`; DSL: `stage1: sequential { relu }`"),
            FrontError::BodyNotSequential { span, kind } => Diagnostic::error(
                Code::BadStructure,
                format!("`{kind}` cannot have a body: only `sequential` groups entries in braces"),
                span,
                "a body of entries",
            )
            .help(format!("write `name: sequential {{ ... }}`, or declare a block: `block {kind}(...) {{ ... }}`")),
            FrontError::InputNotName { span, found } => Diagnostic::error(
                Code::WrongType,
                format!("an input must be the name of an earlier entry, found {found}"),
                span,
                "expected a name",
            )
            .help("write `inputs: conv1` or `inputs: [bn2, input]`; `input` is the model's (or the block's) input"),
            FrontError::EmptyInputs { span } => Diagnostic::error(
                Code::BadStructure,
                "`inputs` names no entry",
                span,
                "empty",
            )
            .help("leave `inputs` out to read the previous entry, or name what this entry reads"),
            FrontError::PositionalAfterKeyword { span, keyword } => Diagnostic::error(
                Code::DslSyntax,
                "an input name follows a keyword argument",
                span,
                "input name",
            )
            .secondary(keyword, "first keyword argument")
            .help("put the inputs first: `conv2d(enc1, out_channels=8, kernel_size=3)`"),
            FrontError::BlocksNotMapping { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("`blocks` must be a mapping from block names to blocks, found {found}"),
                span,
                "expected `Name: {params: ..., layers: [...]}`",
            ),
            FrontError::BlockNameNotString { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a block name must be a string, found {found}"),
                span,
                "expected a name such as `BasicBlock`",
            ),
            FrontError::BlockNotMapping { span, name, found } => Diagnostic::error(
                Code::BadStructure,
                format!("block `{name}` must be a mapping with `params` and `layers`, found {found}"),
                span,
                "expected `{params: {...}, layers: [...]}`",
            ),
            FrontError::UnknownBlockKey { span, key, best } => {
                let diagnostic = Diagnostic::error(
                    Code::BadStructure,
                    format!("unknown block key `{key}`"),
                    span,
                    "not a block key",
                )
                .note("a block has `params` (a mapping from names to defaults, `~` when required) and `layers`");
                match best {
                    Some(best) => diagnostic.suggest(format!("did you mean `{best}`?"), span, best),
                    None => diagnostic,
                }
            }
            FrontError::BlockWithoutLayers { span, name } => Diagnostic::error(
                Code::BadStructure,
                format!("block `{name}` has no `layers`"),
                span,
                "no layers",
            )
            .help("a block's output is its last layer: give it `layers: [...]`"),
            FrontError::ParamsNotMapping { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("`params` must be a mapping from names to defaults, found {found}"),
                span,
                "expected `{planes: ~, stride: 1}`",
            )
            .help("write `~` for a parameter every instance must give"),
            FrontError::BadExpression { error } => match error {
                SyntaxError::Unexpected { span, found } => Diagnostic::error(
                    Code::BadExpression,
                    format!("invalid expression: unexpected {}", if found == "end of text" { found } else { format!("`{found}`") }),
                    span,
                    "expected an integer, a name or `(`",
                )
                .help("arithmetic is integers and names with `+ - * // %` and parentheses: `(i + 1) * 32`"),
                SyntaxError::Slash { span } => Diagnostic::error(
                    Code::BadExpression,
                    "invalid expression: `/` divides into fractions",
                    span,
                    "true division",
                )
                .suggest("sizes are integers: use `//`, which rounds down as in Python", span, "//"),
                SyntaxError::TooDeep { span } => Diagnostic::error(
                    Code::BadExpression,
                    format!("invalid expression: nested more than {MAX_NESTING} deep"),
                    span,
                    "too deep",
                ),
            },
        }
    }
}
