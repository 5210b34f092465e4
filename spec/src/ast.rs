//! The spec IR both front-ends lower to: a model, its input, its blocks and its entries (a layer
//! kind, a block instance or a `sequential` group, each with keyword arguments, the names it reads
//! from and a repetition count). Values are still untyped here; [`crate::expand`] unrolls blocks
//! and repetition and [`crate::check`] validates the result. Two specs that say
//! the same thing compare equal after [`Model::clear_spans`], whichever language they came from.

use crate::span::Span;

/// A whole spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The `model:` name, if given.
    pub name: Option<Ident>,
    /// The `input:` shape as written (validated by the checker).
    pub input: Option<Value>,
    /// The block declarations (`blocks:` / `block Name(...) { ... }`), in source order.
    pub blocks: Vec<Block>,
    /// The entries, in order.
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

/// A reusable sub-network, like an `nn.Module` class: parameters and a body of entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// The block's name, used as a kind by its instances.
    pub name: Ident,
    /// Its parameters, in order.
    pub params: Vec<Param>,
    /// Its body; its output is the last entry's.
    pub layers: Vec<Layer>,
    /// Comments attached to the block's first line.
    pub comments: Comments,
    /// The whole declaration.
    pub span: Span,
}

/// A block parameter: required, or with a default value.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The parameter's name.
    pub name: Ident,
    /// Its default, if it has one (`None`: the instance must give it).
    pub default: Option<Value>,
}

/// One entry of a sequence: a layer kind, a block instance (`kind` names a block) or a
/// `sequential` group (`body` holds its entries), with arguments, inputs, repetition and an
/// optional explicit name.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Layer kind, block name or `sequential`, as written (validated by the checker).
    pub kind: Ident,
    /// Explicit name (the state_dict prefix), if any; may hold `{expr}` templates.
    pub name: Option<Ident>,
    /// The entries it reads, as written (`inputs:` / positional names); empty: the previous
    /// entry of the same sequence.
    pub inputs: Vec<Ident>,
    /// `repeat: N`, if given.
    pub repeat: Option<Value>,
    /// Keyword arguments in source order.
    pub args: Vec<Arg>,
    /// The entries of a `sequential` group; `None` for a layer or block instance.
    pub body: Option<Vec<Layer>>,
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
    /// Integer arithmetic over names (`planes * 4`), evaluated when blocks are expanded.
    Expr(Expr),
}

/// An integer expression: `+ - * // %`, parentheses, integers and names (block parameters,
/// the repetition index `i`).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is written.
    pub span: Span,
}

/// The forms of an [`Expr`].
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A name.
    Name(String),
    /// `-operand`.
    Neg(Box<Expr>),
    /// `left op right`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

/// A binary operator of an [`Expr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `//`, rounding down as Python does.
    FloorDiv,
    /// `%`, with the divisor's sign as Python's.
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength: `* // %` bind tighter than `+ -`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::FloorDiv | BinOp::Rem => 2,
        }
    }
}

impl Expr {
    /// The expression in canonical form: single spaces around operators, parentheses only
    /// where needed.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, min_precedence: u8) {
        match &self.kind {
            ExprKind::Int(v) => out.push_str(&v.to_string()),
            ExprKind::Name(name) => out.push_str(name),
            ExprKind::Neg(operand) => {
                out.push('-');
                // `-3` alone would read back as a negative literal, not an expression.
                if matches!(operand.kind, ExprKind::Int(_)) {
                    out.push('(');
                    operand.write(out, 0);
                    out.push(')');
                } else {
                    operand.write(out, 3);
                }
            }
            ExprKind::Binary(op, left, right) => {
                let own = op.precedence();
                let parens = own < min_precedence;
                if parens {
                    out.push('(');
                }
                left.write(out, own);
                out.push(' ');
                out.push_str(op.symbol());
                out.push(' ');
                // Left-associative: a right operand of the same strength needs parentheses.
                right.write(out, own + 1);
                if parens {
                    out.push(')');
                }
            }
        }
    }

    fn clear_spans(&mut self) {
        self.span = Span::default();
        match &mut self.kind {
            ExprKind::Neg(operand) => operand.clear_spans(),
            ExprKind::Binary(_, left, right) => {
                left.clear_spans();
                right.clear_spans();
            }
            ExprKind::Int(_) | ExprKind::Name(_) => {}
        }
    }
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
            ValueKind::Expr(_) => "an expression",
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
        for block in &mut self.blocks {
            block.span = Span::default();
            block.name.span = Span::default();
            for param in &mut block.params {
                param.name.span = Span::default();
                if let Some(default) = &mut param.default {
                    default.clear_spans();
                }
            }
            block.layers.iter_mut().for_each(Layer::clear_spans);
        }
        self.layers.iter_mut().for_each(Layer::clear_spans);
    }
}

impl Layer {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        self.kind.span = Span::default();
        if let Some(name) = &mut self.name {
            name.span = Span::default();
        }
        for input in &mut self.inputs {
            input.span = Span::default();
        }
        if let Some(repeat) = &mut self.repeat {
            repeat.clear_spans();
        }
        for arg in &mut self.args {
            arg.key.span = Span::default();
            arg.value.clear_spans();
        }
        if let Some(body) = &mut self.body {
            body.iter_mut().for_each(Layer::clear_spans);
        }
    }

    /// A plain layer of `kind` with nothing else written (for front-ends and tests).
    pub fn new(kind: Ident, span: Span) -> Self {
        Layer {
            kind,
            name: None,
            inputs: Vec::new(),
            repeat: None,
            args: Vec::new(),
            body: None,
            comments: Comments::default(),
            span,
        }
    }
}

impl Value {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        match &mut self.kind {
            ValueKind::List(items) => items.iter_mut().for_each(Value::clear_spans),
            ValueKind::Expr(expr) => expr.clear_spans(),
            _ => {}
        }
    }
}
