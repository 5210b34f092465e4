//! Diagnostics: stable codes, the [`Diagnostic`] value every stage produces, and its two
//! renderings — rustc-style text through annotate-snippets ([`render`]) and the JSON object of
//! `cnnc check --format json` ([`JsonDiagnostic`]). Spans become lines and columns only here.

use annotate_snippets::{AnnotationKind, Group, Level, Patch, Renderer, Snippet};
use serde::Serialize;

use crate::span::{LineCol, Source, Span};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The spec is rejected.
    Error,
    /// The spec is accepted, but PyTorch would do something surprising.
    Warning,
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// Stable diagnostic codes, documented in `docs/diagnostics.md`. `E` codes are errors,
        /// `W` codes warnings; a code never changes meaning.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The code as printed (`E0301`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The code's explanation, as `cnnc explain` prints it: Markdown, kept in
            /// `spec/src/error_codes/CODE.md` (a `# CODE: title` line, what the code means and
            /// how to fix it, and an example spec, whose fence names its corpus file).
            pub fn explanation(self) -> &'static str {
                match self {
                    $(Code::$variant => include_str!(concat!("error_codes/", $code, ".md")),)*
                }
            }
        }
    };
}

codes! {
    /// The YAML text is not valid YAML.
    YamlSyntax = "E0001",
    /// The DSL text does not follow the grammar.
    DslSyntax = "E0002",
    /// The spec file is larger than the 1 MiB limit.
    SourceTooLarge = "E0003",
    /// Lists are nested deeper than the limit.
    NestingTooDeep = "E0004",
    /// The document does not have the shape of a spec (layers not a list, ...).
    BadStructure = "E0005",
    /// A top-level key other than `model`, `input`, `layers`.
    UnknownTopLevelKey = "E0006",
    /// Arithmetic in a value that does not parse.
    BadExpression = "E0007",
    /// The spec has no `input`.
    MissingInput = "E0101",
    /// `input` is not three positive integers `[C, H, W]`.
    BadInput = "E0102",
    /// The spec has no layers.
    NoLayers = "E0103",
    /// More layers than the limit.
    TooManyLayers = "E0104",
    /// A layer kind cnnc does not know.
    UnknownLayer = "E0201",
    /// An argument the layer kind does not take.
    UnknownArgument = "E0202",
    /// A required argument is missing.
    MissingArgument = "E0203",
    /// An argument or value of the wrong type.
    WrongType = "E0204",
    /// The same argument or key given twice.
    DuplicateArgument = "E0205",
    /// A value out of its allowed range (zero sizes, stride 0, p outside [0, 1], ...).
    InvalidValue = "E0206",
    /// A layer name that is not a valid state_dict prefix.
    InvalidName = "E0207",
    /// Two layers with the same name.
    DuplicateName = "E0208",
    /// An explicit `in_channels` / `in_features` / `num_features` disagrees with the input.
    SizeMismatch = "E0301",
    /// A layer's output would have a size below 1.
    OutputTooSmall = "E0302",
    /// Pooling padding larger than half the kernel.
    PoolPaddingTooLarge = "E0303",
    /// A layer that needs `[C, H, W]` input gets a flat one.
    ExpectedImage = "E0304",
    /// `linear` gets a `[C, H, W]` input.
    ExpectedFlat = "E0305",
    /// A size, tensor or parameter count beyond the sane limits.
    TooLarge = "E0306",
    /// A `dim` that is not a per-sample dimension of the layer's batched input.
    BadDim = "E0307",
    /// A convolution's `groups` does not divide its input or output channels.
    GroupsMismatch = "E0308",
    /// A convolution's padding beyond what its `padding_mode` allows for the input.
    ModePaddingTooLarge = "E0309",
    /// A `flatten` of `start_dim..=end_dim` that gives neither `[C, H, W]` nor flat features.
    FlattenDims = "E0310",
    /// An `upsample` with neither or both of `size` and `scale_factor`, or `align_corners`
    /// with mode `nearest`.
    UpsampleArguments = "E0311",
    /// An input that names no earlier entry of its scope.
    UnknownReference = "E0401",
    /// An input that names the entry itself or a later one.
    ForwardReference = "E0402",
    /// The inputs of a merge layer (`add`, `concat`, `mul`) do not fit together.
    MergeMismatch = "E0403",
    /// An entry given more or fewer inputs than it takes.
    InputCount = "E0404",
    /// A block that instantiates itself, directly or through others.
    RecursiveBlock = "E0405",
    /// An expression without a value (division by zero, an unknown name, overflow).
    BadExpressionValue = "E0406",
    /// Blocks and groups nested too deep, or expanding to too many layers.
    ExpansionTooLarge = "E0407",
    /// Pooling or a strided convolution silently drops trailing rows or columns.
    DropsInput = "W0001",
    /// `flatten` of an input that is already flat.
    RedundantFlatten = "W0002",
    /// A convolution bias that the following `batchnorm2d` cancels.
    BiasBeforeBatchNorm = "W0003",
    /// An entry whose output nothing reads (and that is not the model's output).
    UnusedOutput = "W0004",
}

impl Code {
    /// The code written `text` (`E0301`, any case), if there is one.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The code `text` was probably meant to be: a number without its letter (`301`, `0301`)
    /// or a near miss (`E301`, `E03001`).
    pub fn closest(text: &str) -> Option<Code> {
        let text = text.trim();
        if !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()) {
            let number = format!("{text:0>4}");
            return Code::ALL
                .iter()
                .copied()
                .find(|code| code.as_str()[1..] == number);
        }
        let best = crate::suggest::closest(text, Code::ALL.iter().map(|code| code.as_str()))?;
        Code::parse(best)
    }

    /// The title of the code's explanation (`size mismatch`).
    pub fn title(self) -> &'static str {
        let first = self.explanation().lines().next().unwrap_or_default();
        first.split_once(": ").map_or(first, |(_, title)| title)
    }

    /// Errors start with `E`, warnings with `W`.
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

/// A secondary label: a related place in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there.
    pub text: String,
}

/// One machine-applicable edit: the bytes `span` covers become `replacement` (an empty span
/// inserts, an empty replacement deletes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// The bytes replaced.
    pub span: Span,
    /// What replaces them.
    pub replacement: String,
}

/// A fix a tool may apply without asking (`cnnc check --fix`): what it does, in words, and the
/// edits that do it. Its edits never overlap one another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fix {
    /// What the fix does, shown as the diagnostic's `help`.
    pub message: String,
    /// The edits, in source order.
    pub edits: Vec<Edit>,
}

/// One finding about a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning (follows from `code`).
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// One-line summary.
    pub message: String,
    /// The culprit.
    pub span: Span,
    /// Text under the culprit.
    pub label: String,
    /// Related places.
    pub secondary: Vec<Label>,
    /// Explanations, typically the arithmetic behind a shape.
    pub notes: Vec<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// The same help as edits a tool can apply, when the fix is certain.
    pub fix: Option<Fix>,
    /// Name of the layer concerned, if any.
    pub layer: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with code `code` (its severity follows from the code). Over-long quoted
    /// text in `message` and `label` (a 100,000-character name) is shortened in the middle.
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: code.severity(),
            code,
            message: shorten(message.into()),
            span,
            label: shorten(label.into()),
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
            fix: None,
            layer: None,
        }
    }

    /// Same as [`Diagnostic::new`]; reads better where the code is an error.
    pub fn error(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Self::new(code, message, span, label)
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(shorten(note.into()));
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(shorten(help.into()));
        self
    }

    /// Sets the help line to `message` and carries it out as one edit: `span` becomes
    /// `replacement`.
    pub fn suggest(
        self,
        message: impl Into<String>,
        span: Span,
        replacement: impl Into<String>,
    ) -> Self {
        self.fix_with(
            message,
            vec![Edit {
                span,
                replacement: replacement.into(),
            }],
        )
    }

    /// Sets the help line to `message`, carried out by `edits` (which must not overlap).
    pub fn fix_with(mut self, message: impl Into<String>, mut edits: Vec<Edit>) -> Self {
        let message = shorten(message.into());
        edits.sort_by_key(|edit| (edit.span.start, edit.span.end));
        self.help = Some(message.clone());
        self.fix = Some(Fix { message, edits });
        self
    }

    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            text: shorten(text.into()),
        });
        self
    }

    /// Names the layer concerned.
    pub fn layer(mut self, name: impl Into<String>) -> Self {
        self.layer = Some(name.into());
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Moves every span `by` bytes to the right, for a spec embedded at that offset.
    pub fn shifted(mut self, by: usize) -> Self {
        self.span = self.span.shifted(by);
        for label in &mut self.secondary {
            label.span = label.span.shifted(by);
        }
        if let Some(fix) = &mut self.fix {
            for edit in &mut fix.edits {
                edit.span = edit.span.shifted(by);
            }
        }
        self
    }
}

/// Longest quoted piece (between backquotes) kept whole in a message, in characters.
const MAX_QUOTED_CHARS: usize = 64;
/// Longest message, label, note or help kept whole, in characters.
const MAX_TEXT_CHARS: usize = 1024;

/// `text` with every backquoted piece longer than [`MAX_QUOTED_CHARS`] cut to its two ends
/// around `…`, and the whole cut the same way past [`MAX_TEXT_CHARS`]: a name can be as long as
/// the spec, but it is quoted once, not repeated whole, in each headline.
fn shorten(text: String) -> String {
    if text.len() <= MAX_QUOTED_CHARS {
        return text;
    }
    let pieces: Vec<&str> = text.split('`').collect();
    let quoted_too_long = pieces
        .iter()
        .skip(1)
        .step_by(2)
        .any(|piece| piece.chars().count() > MAX_QUOTED_CHARS);
    let text = if quoted_too_long {
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                if i % 2 == 1 {
                    elide(piece, MAX_QUOTED_CHARS)
                } else {
                    (*piece).to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("`")
    } else {
        text
    };
    elide(&text, MAX_TEXT_CHARS)
}

/// `text` if it has at most `max` characters, else its first and last `max / 2` around `…`.
fn elide(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let keep = max / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(count - keep).collect();
    format!("{head}…{tail}")
}

/// Why the fixes of a spec cannot be applied together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FixError {
    /// Two fixes change the same bytes: applying one would invalidate the other.
    #[error(
        "the fixes at lines {first_line} and {second_line} change the same text; fix one by hand \
         and run `--fix` again"
    )]
    Overlap {
        /// Line of the first edit.
        first_line: usize,
        /// Line of the edit that overlaps it.
        second_line: usize,
    },
    /// An edit reaches outside the text or splits a character.
    #[error("a fix at line {line} does not fit the text")]
    OutOfRange {
        /// Line of the edit.
        line: usize,
    },
}

/// The text of `source` with the fix of every diagnostic in `diagnostics` that has one applied,
/// and how many fixes that was. Refuses, changing nothing, when two edits overlap (touching
/// edits are fine, two insertions at one place are not).
pub fn apply_fixes(
    source: &Source,
    diagnostics: &[Diagnostic],
) -> Result<(String, usize), FixError> {
    let text = source.text();
    let mut edits: Vec<&Edit> = Vec::new();
    let mut fixes = 0;
    for fix in diagnostics.iter().filter_map(|d| d.fix.as_ref()) {
        fixes += 1;
        edits.extend(&fix.edits);
    }
    edits.sort_by_key(|edit| (edit.span.start, edit.span.end));
    for edit in &edits {
        let range = edit.span.range();
        if range.end > text.len()
            || !text.is_char_boundary(range.start)
            || !text.is_char_boundary(range.end)
        {
            return Err(FixError::OutOfRange {
                line: source.line_col(range.start).line,
            });
        }
    }
    for pair in edits.windows(2) {
        let (a, b) = (pair[0].span, pair[1].span);
        let overlap = b.start < a.end || (a.start == b.start && (a.is_empty() || b.is_empty()));
        if overlap {
            return Err(FixError::Overlap {
                first_line: source.line_col(a.start as usize).line,
                second_line: source.line_col(b.start as usize).line,
            });
        }
    }
    let mut fixed = String::with_capacity(text.len());
    let mut at = 0;
    for edit in edits {
        let range = edit.span.range();
        fixed.push_str(&text[at..range.start]);
        fixed.push_str(&edit.replacement);
        at = range.end;
    }
    fixed.push_str(&text[at..]);
    Ok((fixed, fixes))
}

/// Most diagnostics printed for one spec, in either format; the rest are counted in one closing
/// line (see [`Shown`]), as rustc stops after its error limit. Keeps the output, and the time it
/// takes, bounded for a spec of many errors.
pub const MAX_SHOWN: usize = 100;

/// The diagnostics of one spec that are printed, and a count of those that are not.
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a> {
    /// The first [`MAX_SHOWN`] diagnostics.
    pub shown: &'a [Diagnostic],
    /// Errors left out.
    pub hidden_errors: usize,
    /// Warnings left out.
    pub hidden_warnings: usize,
}

impl<'a> Shown<'a> {
    /// The first [`MAX_SHOWN`] of `diagnostics`, counting the rest.
    pub fn of(diagnostics: &'a [Diagnostic]) -> Self {
        let (shown, hidden) = diagnostics.split_at(diagnostics.len().min(MAX_SHOWN));
        let hidden_errors = hidden.iter().filter(|d| d.is_error()).count();
        Shown {
            shown,
            hidden_errors,
            hidden_warnings: hidden.len() - hidden_errors,
        }
    }

    /// `note: 149900 more errors not shown (...)` when some were left out.
    pub fn omitted(&self, source: &Source) -> Option<String> {
        let plural =
            |n: usize, word: &str| format!("{n} more {word}{}", if n == 1 { "" } else { "s" });
        let what = match (self.hidden_errors, self.hidden_warnings) {
            (0, 0) => return None,
            (e, 0) => plural(e, "error"),
            (0, w) => plural(w, "warning"),
            (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
        };
        Some(format!(
            "note: {what} in {} not shown (only the first {MAX_SHOWN} diagnostics of a spec are \
             printed)",
            source.name()
        ))
    }
}

/// Every diagnostic of `source` as `cnnc check` prints them: the first [`MAX_SHOWN`] rendered,
/// separated by blank lines, then the count of the rest.
pub fn render_all(diagnostics: &[Diagnostic], source: &Source, color: bool) -> String {
    let shown = Shown::of(diagnostics);
    let mut blocks: Vec<String> = shown
        .shown
        .iter()
        .map(|d| render(d, source, color))
        .collect();
    blocks.extend(shown.omitted(source));
    blocks.join("\n\n")
}

/// Longest stretch of source a rendered diagnostic shows, in bytes: past it, only the culprit's
/// line is shown, cut around the culprit.
const MAX_EXCERPT_BYTES: usize = 16 * 1024;
/// Bytes kept either side of the culprit when its line is cut.
const CUT_CONTEXT_BYTES: usize = 512;

/// The part of a source a rendering shows: whole lines around the spans, so rendering costs
/// what is shown and not the size of the spec (annotate-snippets reads every byte it is given).
struct Excerpt<'s> {
    text: &'s str,
    /// Byte offset of `text` in the source.
    offset: usize,
    /// Line of `text`'s first byte, from 1.
    first_line: usize,
    /// Where the culprit is, when `text` is cut from inside a line (annotate-snippets counts
    /// columns from the cut).
    cut_at: Option<LineCol>,
}

impl<'s> Excerpt<'s> {
    /// The lines `spans` touch; past [`MAX_EXCERPT_BYTES`], the first span's line cut around it.
    fn around(source: &'s Source, spans: &[Span]) -> Self {
        let text = source.text();
        let clamp = |at: u32| text.floor_char_boundary(at as usize);
        let lo = spans.iter().map(|s| clamp(s.start)).min().unwrap_or(0);
        let hi = spans
            .iter()
            .map(|s| clamp(s.end))
            .max()
            .unwrap_or(0)
            .max(lo);
        let first_line = source.line_col(lo).line;
        let start = source.line_start(first_line);
        let end = line_end(text, hi);
        if end - start <= MAX_EXCERPT_BYTES {
            return Excerpt {
                text: &text[start..end],
                offset: start,
                first_line,
                cut_at: None,
            };
        }
        let culprit = spans.first().copied().unwrap_or_default();
        let at = clamp(culprit.start);
        let position = source.line_col(at);
        let line_start = source.line_start(position.line);
        let cut_start =
            text.floor_char_boundary(at.saturating_sub(CUT_CONTEXT_BYTES).max(line_start));
        let cut_end = text.floor_char_boundary(
            (clamp(culprit.end).max(at) + CUT_CONTEXT_BYTES)
                .min(at + MAX_EXCERPT_BYTES / 2)
                .min(line_end(text, at)),
        );
        Excerpt {
            text: &text[cut_start..cut_end.max(cut_start)],
            offset: cut_start,
            first_line: position.line,
            cut_at: Some(position),
        }
    }

    /// `span` relative to the excerpt, clipped to it; `None` when it lies outside.
    fn local(&self, span: Span) -> Option<std::ops::Range<usize>> {
        let (start, end) = (span.start as usize, span.end as usize);
        let limit = self.offset + self.text.len();
        if start < self.offset || start > limit {
            return None;
        }
        let end = end.clamp(start, limit);
        let start = self.text.floor_char_boundary(start - self.offset);
        let end = self.text.floor_char_boundary(end - self.offset);
        Some(start..end.max(start))
    }

    /// The snippet of the excerpt, headed by `source`'s name.
    fn snippet<T: Clone>(&self, source: &'s Source) -> Snippet<'s, T> {
        Snippet::source(self.text)
            .line_start(self.first_line)
            .path(source.name())
            .fold(true)
    }

    /// `rendered` with the header's column made the true one when the excerpt is cut from
    /// inside a line: annotate-snippets counts columns from the start of the text it is given.
    fn fix_column(&self, rendered: String, culprit: Span) -> String {
        let Some(at) = self.cut_at else {
            return rendered;
        };
        let start = (culprit.start as usize).clamp(self.offset, self.offset + self.text.len());
        let shown = self.text[..self.text.floor_char_boundary(start - self.offset)]
            .chars()
            .count()
            + 1;
        let wrong = format!(":{}:{shown}", at.line);
        // The header is the first line after the title.
        let Some(title_end) = rendered.find('\n') else {
            return rendered;
        };
        match rendered[title_end..].find(&wrong) {
            Some(i) => {
                let i = title_end + i;
                format!(
                    "{}:{}:{}{}",
                    &rendered[..i],
                    at.line,
                    at.column,
                    &rendered[i + wrong.len()..]
                )
            }
            None => rendered,
        }
    }
}

/// The end of the line holding byte `at` (before its `\n`), or of the text.
fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i)
}

/// Renders `diagnostic` the way rustc does, against the source it refers to; with `color`, ANSI
/// styles are included. A fix is shown as rustc shows a suggestion: the line as it would read.
pub fn render(diagnostic: &Diagnostic, source: &Source, color: bool) -> String {
    let level = match diagnostic.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let spans: Vec<Span> = std::iter::once(diagnostic.span)
        .chain(diagnostic.secondary.iter().map(|label| label.span))
        .collect();
    let excerpt = Excerpt::around(source, &spans);
    let mut snippet = excerpt.snippet(source).annotation(
        AnnotationKind::Primary
            .span(excerpt.local(diagnostic.span).unwrap_or(0..0))
            .label(&diagnostic.label),
    );
    for label in &diagnostic.secondary {
        if let Some(range) = excerpt.local(label.span) {
            snippet = snippet.annotation(AnnotationKind::Context.span(range).label(&label.text));
        }
    }
    let mut group = Group::with_title(
        level
            .primary_title(&diagnostic.message)
            .id(diagnostic.code.as_str()),
    );
    group = group.element(snippet);
    for note in &diagnostic.notes {
        group = group.element(Level::NOTE.message(note));
    }
    let suggestion = diagnostic
        .fix
        .as_ref()
        .and_then(|fix| suggestion(fix, source));
    if suggestion.is_none()
        && let Some(help) = &diagnostic.help
    {
        group = group.element(Level::HELP.message(help));
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut report = vec![group];
    report.extend(suggestion);
    excerpt.fix_column(renderer.render(&report), diagnostic.span)
}

/// A fix as a help group showing the patched lines; `None` when its lines are too long to show
/// (then the help is printed as text).
fn suggestion<'s>(fix: &'s Fix, source: &'s Source) -> Option<Group<'s>> {
    let spans: Vec<Span> = fix.edits.iter().map(|edit| edit.span).collect();
    let excerpt = Excerpt::around(source, &spans);
    if excerpt.cut_at.is_some() {
        return None;
    }
    let mut snippet = excerpt.snippet(source);
    for edit in &fix.edits {
        snippet = snippet.patch(Patch::new(
            excerpt.local(edit.span)?,
            edit.replacement.as_str(),
        ));
    }
    Some(Group::with_title(Level::HELP.secondary_title(fix.message.as_str())).element(snippet))
}

/// The JSON form of a diagnostic, as `cnnc check --format json` prints it. The key names are a
/// contract; lines and columns are 1-based, columns count characters, and `end_column` is one
/// past the last character.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonDiagnostic {
    /// `"error"` or `"warning"`.
    pub severity: Severity,
    /// Stable code, e.g. `"E0301"`.
    pub code: &'static str,
    /// One-line summary.
    pub message: String,
    /// The source's name (its path, or `<stdin>`).
    pub file: String,
    /// Line of the culprit's first character.
    pub line: usize,
    /// Column of the culprit's first character.
    pub column: usize,
    /// Line of the culprit's end.
    pub end_line: usize,
    /// Column one past the culprit's last character.
    pub end_column: usize,
    /// Name of the layer concerned.
    pub layer: Option<String>,
    /// Text under the culprit.
    pub label: String,
    /// Explanations.
    pub notes: Vec<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// The help as edits `cnnc check --fix` applies, or null.
    pub fix: Option<JsonFix>,
}

/// The JSON form of a [`Fix`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonFix {
    /// What the fix does (the same text as `help`).
    pub message: String,
    /// The edits, in source order.
    pub edits: Vec<JsonEdit>,
}

/// The JSON form of an [`Edit`]: the text from `line`:`column` up to `end_line`:`end_column`
/// (positions as for the diagnostic) and its byte range `byte_start..byte_end` become
/// `replacement`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonEdit {
    /// Line of the first replaced character.
    pub line: usize,
    /// Column of the first replaced character.
    pub column: usize,
    /// Line of the end.
    pub end_line: usize,
    /// Column one past the last replaced character.
    pub end_column: usize,
    /// Byte offset of the first replaced byte.
    pub byte_start: usize,
    /// Byte offset one past the last replaced byte.
    pub byte_end: usize,
    /// The new text.
    pub replacement: String,
}

impl JsonDiagnostic {
    /// The JSON form of `diagnostic`, positions resolved against `source`.
    pub fn new(diagnostic: &Diagnostic, source: &Source) -> Self {
        let start = source.line_col(diagnostic.span.start as usize);
        let end = source.line_col(diagnostic.span.end as usize);
        JsonDiagnostic {
            severity: diagnostic.severity,
            code: diagnostic.code.as_str(),
            message: diagnostic.message.clone(),
            file: source.name().to_owned(),
            line: start.line,
            column: start.column,
            end_line: end.line,
            end_column: end.column,
            layer: diagnostic.layer.clone(),
            label: diagnostic.label.clone(),
            notes: diagnostic.notes.clone(),
            help: diagnostic.help.clone(),
            fix: diagnostic.fix.as_ref().map(|fix| JsonFix {
                message: fix.message.clone(),
                edits: fix
                    .edits
                    .iter()
                    .map(|edit| {
                        let start = source.line_col(edit.span.start as usize);
                        let end = source.line_col(edit.span.end as usize);
                        JsonEdit {
                            line: start.line,
                            column: start.column,
                            end_line: end.line,
                            end_column: end.column,
                            byte_start: edit.span.start as usize,
                            byte_end: edit.span.end as usize,
                            replacement: edit.replacement.clone(),
                        }
                    })
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Format;

    fn fixing(span: Span, with: &str) -> Diagnostic {
        Diagnostic::error(Code::UnknownArgument, "m", span, "l").suggest("s", span, with)
    }

    #[test]
    fn fixes_apply_together_unless_they_overlap() {
        let source = Source::new("t.yaml", "abcdef", Format::Yaml);
        let touching = [fixing(Span::new(3, 5), "Y"), fixing(Span::new(1, 3), "X")];
        assert_eq!(apply_fixes(&source, &touching), Ok(("aXYf".to_owned(), 2)));
        let overlapping = [fixing(Span::new(1, 4), "X"), fixing(Span::new(3, 5), "Y")];
        assert_eq!(
            apply_fixes(&source, &overlapping),
            Err(FixError::Overlap {
                first_line: 1,
                second_line: 1
            })
        );
        let same_place = [fixing(Span::new(2, 2), "X"), fixing(Span::new(2, 2), "Y")];
        assert!(apply_fixes(&source, &same_place).is_err());
        let outside = [fixing(Span::new(4, 9), "X")];
        assert_eq!(
            apply_fixes(&source, &outside),
            Err(FixError::OutOfRange { line: 1 })
        );
        let split = Source::new("t.yaml", "é", Format::Yaml);
        assert!(apply_fixes(&split, &[fixing(Span::new(1, 2), "e")]).is_err());
    }

    #[test]
    fn long_quoted_text_is_cut_in_the_middle() {
        let name = "a".repeat(100_000);
        let d = Diagnostic::error(
            Code::InvalidName,
            format!("`{name}` is not a valid layer name"),
            Span::new(0, 1),
            "l",
        );
        let half = "a".repeat(MAX_QUOTED_CHARS / 2);
        assert_eq!(
            d.message,
            format!("`{half}…{half}` is not a valid layer name")
        );
        // Short quotes and long prose stay whole; long prose past the limit is cut too.
        let prose = format!("`ok` {}", "word ".repeat(100));
        assert_eq!(shorten(prose.clone()), prose);
        let endless = "x ".repeat(10_000);
        assert_eq!(shorten(endless).chars().count(), MAX_TEXT_CHARS + 1);
    }

    #[test]
    fn spans_inside_a_character_render_without_a_panic() {
        let text = format!("input (1, 8, 8)\nrelu({})\n", "é".repeat(20_000));
        let source = Source::new("odd.cnn", text, Format::Dsl);
        for (start, end) in [(24, 25), (30_001, 30_004), (99_999, 99_999)] {
            let d = Diagnostic::error(Code::DslSyntax, "m", Span::new(start, end), "here")
                .secondary(Span::new(end, start + 7), "there");
            let _ = render(&d, &source, false);
        }
    }

    #[test]
    fn a_culprit_deep_in_a_long_line_keeps_its_column() {
        let text = format!("input (1, 8, 8)\nrelu({}x=1)\n", "y=1, ".repeat(20_000));
        let at = text.find("x=1").expect("culprit");
        let source = Source::new("long.cnn", text, Format::Dsl);
        let d = Diagnostic::error(Code::UnknownArgument, "m", Span::new(at, at + 1), "here");
        let rendered = render(&d, &source, false);
        let header = rendered.lines().nth(1).expect("a header");
        assert_eq!(header, format!(" --> long.cnn:2:{}", 6 + 5 * 20_000));
        assert!(rendered.len() < 2_000, "{rendered}");
        assert!(rendered.contains("^ here"), "{rendered}");
    }
}
