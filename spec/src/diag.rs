//! Diagnostics: stable codes, the [`Diagnostic`] value every stage produces, and its two
//! renderings — rustc-style text through annotate-snippets ([`render`]) and the JSON object of
//! `cnnc check --format json` ([`JsonDiagnostic`]). Spans become lines and columns only here.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use crate::span::{Source, Span};

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
    /// Pooling or a strided convolution silently drops trailing rows or columns.
    DropsInput = "W0001",
    /// `flatten` of an input that is already flat.
    RedundantFlatten = "W0002",
    /// A convolution bias that the following `batchnorm2d` cancels.
    BiasBeforeBatchNorm = "W0003",
}

impl Code {
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
    /// Name of the layer concerned, if any.
    pub layer: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with code `code` (its severity follows from the code).
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: code.severity(),
            code,
            message: message.into(),
            span,
            label: label.into(),
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
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
        self.notes.push(note.into());
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            text: text.into(),
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
        self
    }
}

/// Renders `diagnostic` the way rustc does, against the source it refers to; with `color`, ANSI
/// styles are included.
pub fn render(diagnostic: &Diagnostic, source: &Source, color: bool) -> String {
    let level = match diagnostic.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let clamp = |span: Span| {
        let len = source.text().len();
        let start = (span.start as usize).min(len);
        start..(span.end as usize).clamp(start, len)
    };
    let mut snippet = Snippet::source(source.text())
        .path(source.name())
        .fold(true)
        .annotation(
            AnnotationKind::Primary
                .span(clamp(diagnostic.span))
                .label(&diagnostic.label),
        );
    for label in &diagnostic.secondary {
        snippet = snippet.annotation(
            AnnotationKind::Context
                .span(clamp(label.span))
                .label(&label.text),
        );
    }
    let mut group: Group<'_> = level
        .primary_title(&diagnostic.message)
        .id(diagnostic.code.as_str())
        .element(snippet);
    for note in &diagnostic.notes {
        group = group.element(Level::NOTE.message(note));
    }
    if let Some(help) = &diagnostic.help {
        group = group.element(Level::HELP.message(help));
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    renderer.render(&[group])
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
        }
    }
}
