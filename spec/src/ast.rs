//! The spec IR both front-ends lower to: a model, its input, and layers as a kind plus keyword
//! arguments. Values are still untyped here; [`crate::check`] validates them. Two specs that say
//! the same thing compare equal after [`Model::clear_spans`], whichever language they came from.

use crate::span::Span;

/// A whole spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The `model:` name, if given.
    pub name: Option<Ident>,
    /// The `input:` shape as written (validated by the checker).
    pub input: Option<Value>,
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// Comments outside any layer.
    pub comments: ModelComments,
    /// The whole document.
    pub span: Span,
}

/// An identifier or name together with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The text.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

/// One layer: `kind` with arguments, and an optional explicit name.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Layer kind as written (`conv2d`, `relu`, ...; validated by the checker).
    pub kind: Ident,
    /// Explicit name (the state_dict prefix), if any.
    pub name: Option<Ident>,
    /// Keyword arguments in source order.
    pub args: Vec<Arg>,
    /// Comments attached to this layer.
    pub comments: Comments,
    /// The whole layer.
    pub span: Span,
}

/// A `key: value` (YAML) or `key=value` (DSL) argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Argument name.
    pub key: Ident,
    /// Argument value.
    pub value: Value,
}

/// A literal value with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// What was written.
    pub kind: ValueKind,
    /// Where.
    pub span: Span,
}

/// The literal forms a spec can contain.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A string (YAML) or bare word (DSL).
    Str(String),
    /// `[a, b, ...]`.
    List(Vec<Value>),
    /// A YAML mapping where a value was expected (kept only to report it).
    Map,
    /// YAML `null` / `~`.
    Null,
}

impl ValueKind {
    /// How the value's type is named in messages ("an integer", "a list", ...).
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Int(_) => "an integer",
            ValueKind::Float(_) => "a float",
            ValueKind::Bool(_) => "a boolean",
            ValueKind::Str(_) => "a string",
            ValueKind::List(_) => "a list",
            ValueKind::Map => "a mapping",
            ValueKind::Null => "null",
        }
    }
}

/// Comments attached to a layer, kept so `cnnc fmt` can carry them across languages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comments {
    /// Whole-line comments directly above the layer, without the `#`.
    pub leading: Vec<String>,
    /// A comment at the end of the layer's last line, without the `#`.
    pub trailing: Option<String>,
}

/// Comments that belong to the model rather than to one layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelComments {
    /// Whole-line comments before the first layer.
    pub header: Vec<String>,
    /// A comment at the end of the `model` line.
    pub name: Option<String>,
    /// A comment at the end of the `input` line.
    pub input: Option<String>,
    /// Whole-line comments after the last layer.
    pub footer: Vec<String>,
}

impl Model {
    /// Resets every span to the empty default, so that IRs from different sources (or
    /// languages) can be compared for meaning alone.
    pub fn clear_spans(&mut self) {
        self.span = Span::default();
        if let Some(name) = &mut self.name {
            name.span = Span::default();
        }
        if let Some(input) = &mut self.input {
            input.clear_spans();
        }
        for layer in &mut self.layers {
            layer.span = Span::default();
            layer.kind.span = Span::default();
            if let Some(name) = &mut layer.name {
                name.span = Span::default();
            }
            for arg in &mut layer.args {
                arg.key.span = Span::default();
                arg.value.clear_spans();
            }
        }
    }
}

impl Value {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        if let ValueKind::List(items) = &mut self.kind {
            items.iter_mut().for_each(Value::clear_spans);
        }
    }
}
