//! The YAML front-end's structure diagnostics as data: one variant per distinct diagnostic,
//! carrying the facts (what was found, where, the key), and [`YamlError::render`], the one place
//! that words them. The lowering in `yaml.rs` constructs a variant; it writes no English.
//!
//! To add a diagnostic: add a variant with the facts it needs, then one arm in `render` that
//! picks its [`Code`] (explained in `error_codes/CODE.md`) and words it.

use crate::diag::{Code, Diagnostic};
use crate::span::Span;

/// One structure diagnostic of the YAML front-end. `found` fields describe what was written
/// instead ("a list", "an integer").
pub(crate) enum YamlError {
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
}

impl YamlError {
    /// The diagnostic: code, message, labels, notes, help and fix, all worded here.
    pub(crate) fn render(self) -> Diagnostic {
        const SPEC_HELP: &str = "a spec is a mapping with `model`, `input` and `layers`";
        match self {
            YamlError::EmptySpec { span } => {
                Diagnostic::error(Code::BadStructure, "the spec is empty", span, "").help(SPEC_HELP)
            }
            YamlError::SpecNotMapping { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a spec must be a mapping, found {found}"),
                span,
                "expected `model`, `input` and `layers` keys",
            )
            .help(SPEC_HELP),
            YamlError::KeyNotString { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a spec key must be a string, found {found}"),
                span,
                "expected `model`, `input` or `layers`",
            ),
            YamlError::DuplicateKey { span, first, key } => Diagnostic::error(
                Code::DuplicateArgument,
                format!("duplicate key `{key}`"),
                span,
                "given again here",
            )
            .secondary(first, "first given here"),
            YamlError::UnknownTopLevelKey { span, key, best } => {
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
            YamlError::ModelNameNotString { span, found } => Diagnostic::error(
                Code::WrongType,
                format!("`model` must be a name, found {found}"),
                span,
                "expected a string",
            ),
            YamlError::LayersNotList { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("`layers` must be a list, found {found}"),
                span,
                "expected a list of layers",
            )
            .help("write one layer per line: `- conv2d: {out_channels: 32, kernel_size: 5}`"),
            YamlError::LayerKindNotName { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a layer kind must be a name, found {found}"),
                span,
                "expected a layer kind such as `conv2d`",
            ),
            YamlError::LayerManyKeys {
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
            YamlError::LayerNotNameOrMap { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("a layer must be a name or a one-key mapping, found {found}"),
                span,
                "expected a layer",
            )
            .help("write `- relu` or `- conv2d: {out_channels: 32, kernel_size: 3}`"),
            YamlError::ArgumentsNotMapping { span, kind, found } => Diagnostic::error(
                Code::BadStructure,
                format!("the arguments of `{kind}` must be a mapping, found {found}"),
                span,
                "expected `{key: value, ...}`",
            )
            .help(format!(
                "write `{kind}: {{key: value}}`, or just `{kind}` for no arguments"
            )),
            YamlError::ArgumentNameNotString { span, found } => Diagnostic::error(
                Code::BadStructure,
                format!("an argument name must be a string, found {found}"),
                span,
                "expected an argument name",
            ),
            YamlError::LayerNameNotString { span, found } => Diagnostic::error(
                Code::WrongType,
                format!("a layer name must be a string, found {found}"),
                span,
                "expected a name such as `conv1` or `layer1.0`",
            )
            .help("quote the name: `name: \"layer1.0\"`"),
        }
    }
}
