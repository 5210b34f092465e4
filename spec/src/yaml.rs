//! The YAML front-end: serde-saphyr reads the text into a small spanned node tree (every node
//! wrapped in its `Spanned<T>`), which is then lowered to the [`ast`](crate::ast) IR. Syntax errors
//! and structural errors (a layer that is neither a name nor a one-key mapping, ...) become
//! diagnostics here; argument names, types and values are left to the checker so that both
//! languages report them identically.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, Spanned};

use crate::MAX_NESTING;
use crate::ast::{
    Arg, Block, Expr, ExprKind, Ident, Layer, Model, ModelComments, Param, Value, ValueKind,
};
use crate::comments;
use crate::diag::{Code, Diagnostic};
use crate::expr;
use crate::front_errors::FrontError;
use crate::span::{Format, Source, Span};
use crate::suggest;

/// Top-level keys of a YAML spec.
const TOP_LEVEL_KEYS: &[&str] = &["model", "input", "blocks", "layers"];
/// Keys of a block declaration.
const BLOCK_KEYS: &[&str] = &["params", "layers"];

/// Parses a YAML spec into the IR. Spans are byte offsets into `text`.
pub fn parse_yaml(text: &str) -> Result<Model, Vec<Diagnostic>> {
    if let Some(diagnostic) = comments::lone_carriage_return(text, Code::YamlSyntax) {
        return Err(vec![diagnostic]);
    }
    let source = Source::new("", text, Format::Yaml);
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.budget = serde_saphyr::budget! {
        max_depth: MAX_NESTING,
        flow_nesting_limit: MAX_NESTING,
    };
    let root: Spanned<NodeKind> = match serde_saphyr::from_str_with_options(text, options) {
        Ok(root) => root,
        Err(err) => return Err(vec![syntax_error(&err, &source)]),
    };
    let root = Node::from_spanned(root, &source);
    let mut lower = Lower {
        source: &source,
        diagnostics: Vec::new(),
    };
    let mut model = lower.model(root);
    comments::attach(&mut model, &source, comments::Style::Yaml);
    if lower.diagnostics.is_empty() {
        Ok(model)
    } else {
        Err(lower.diagnostics)
    }
}

/// A YAML node with its byte span (for collections: from their first to their last byte).
#[derive(Debug)]
struct Node {
    kind: Kind,
    span: Span,
}

#[derive(Debug)]
enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`; reported by the checker as too large.
    BigInt,
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// What serde sees: the node without its location; children stay wrapped in `Spanned`.
enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    BigInt,
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<NodeKind>>),
    Map(Vec<(Spanned<NodeKind>, Spanned<NodeKind>)>),
}

impl Node {
    /// Converts serde-saphyr's locations to byte spans. serde-saphyr gives a scalar's exact byte
    /// range but only the first position of a collection (its start event), so a collection's
    /// span is extended to the end of its last child.
    fn from_spanned(spanned: Spanned<NodeKind>, source: &Source) -> Node {
        let start = location_offset(&spanned.referenced, source);
        let own_end = spanned
            .referenced
            .span()
            .byte_len()
            .map_or(start, |len| start + len as usize);
        let kind = match spanned.value {
            NodeKind::Null => Kind::Null,
            NodeKind::Bool(b) => Kind::Bool(b),
            NodeKind::Int(i) => Kind::Int(i),
            NodeKind::BigInt => Kind::BigInt,
            NodeKind::Float(f) => Kind::Float(f),
            NodeKind::Str(s) => Kind::Str(s),
            NodeKind::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .map(|item| Node::from_spanned(item, source))
                    .collect(),
            ),
            NodeKind::Map(entries) => Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Node::from_spanned(k, source), Node::from_spanned(v, source)))
                    .collect(),
            ),
        };
        let end = match &kind {
            Kind::Seq(items) => items.last().map_or(own_end, |n| n.span.end as usize),
            Kind::Map(entries) => entries.last().map_or(own_end, |(_, v)| v.span.end as usize),
            _ => own_end,
        };
        let end = closing_bracket_end(source.text(), end, &kind).max(own_end);
        Node {
            kind,
            span: Span::new(start, end),
        }
    }
}

/// Byte offset of a location: its byte offset when serde-saphyr has one, else its line/column.
fn location_offset(location: &Location, source: &Source) -> usize {
    match location.span().byte_offset() {
        Some(offset) => offset as usize,
        None => source.offset_of(location.line() as usize, location.column() as usize),
    }
}

/// A flow collection's span ends at its closing bracket, which follows its last child.
fn closing_bracket_end(text: &str, end: usize, kind: &Kind) -> usize {
    let close = match kind {
        Kind::Seq(_) => ']',
        Kind::Map(_) => '}',
        _ => return end,
    };
    let Some(rest) = text.get(end..) else {
        return end;
    };
    let trimmed = rest.trim_start_matches([' ', '\t', ',']);
    if trimmed.starts_with(close) {
        end + (rest.len() - trimmed.len()) + 1
    } else {
        end
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_none<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<NodeKind, E> {
        Ok(i64::try_from(v).map_or(NodeKind::BigInt, NodeKind::Int))
    }

    fn visit_i128<E>(self, v: i128) -> Result<NodeKind, E> {
        Ok(i64::try_from(v).map_or(NodeKind::BigInt, NodeKind::Int))
    }

    fn visit_u128<E>(self, v: u128) -> Result<NodeKind, E> {
        Ok(i64::try_from(v).map_or(NodeKind::BigInt, NodeKind::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(NodeKind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(NodeKind::Map(entries))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<NodeKind, E> {
        Err(E::custom("binary values are not allowed in a spec"))
    }
}

/// Turns a serde-saphyr error into an `E0001` diagnostic at its location.
fn syntax_error(err: &serde_saphyr::Error, source: &Source) -> Diagnostic {
    let err = err.without_snippet();
    let span = match err.location() {
        Some(location) if location != Location::UNKNOWN => {
            let start = location_offset(&location, source);
            let len = location.span().byte_len().unwrap_or(0) as usize;
            Span::new(start, start + len)
        }
        _ => Span::new(source.text().len(), source.text().len()),
    };
    if too_deep(err) {
        // On the bracket or dash that opens the collection too deep.
        let start = span.start as usize;
        let width = source
            .text()
            .get(start..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8);
        return FrontError::YamlTooDeep {
            span: Span::new(start, start + width),
        }
        .render();
    }
    if let Some(message) = budget_message(err) {
        return FrontError::YamlBudget { span, message }.render();
    }
    let message =
        serde_saphyr::MessageFormatter::format_message(&serde_saphyr::UserMessageFormatter, err);
    let text = source.text();
    if message.contains("found a tab") || message.contains("tabs disallowed") {
        // The parser reports where the scalar or block it was reading began, often the line
        // before; point at the tab itself.
        if let Some(tab) = indenting_tab(text, span.start as usize) {
            return FrontError::YamlTab {
                span: Span::new(tab, tab + 1),
                message: message.into_owned(),
            }
            .render();
        }
    }
    // Reported where the parser gave up, lines later; show where the bracket opened.
    let unclosed = if message.contains("flow mapping") || message.contains("flow sequence") {
        unclosed_bracket(text, span.start as usize)
            .map(|open| (Span::new(open, open + 1), text[open..open + 1].to_owned()))
    } else {
        None
    };
    FrontError::YamlSyntax {
        span,
        message: message.into_owned(),
        unclosed,
    }
    .render()
}

/// The first tab in the indentation of the line holding `from` or of the lines after it, up to
/// the first line with content after that one.
fn indenting_tab(text: &str, from: usize) -> Option<usize> {
    let from = text.floor_char_boundary(from.min(text.len()));
    let mut line_start = text[..from].rfind('\n').map_or(0, |i| i + 1);
    loop {
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i);
        let line = &text[line_start..line_end];
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if let Some(tab) = line[..indent].find('\t') {
            return Some(line_start + tab);
        }
        if (line_start > from && indent < line.len()) || line_end == text.len() {
            return None;
        }
        line_start = line_end + 1;
    }
}

/// The innermost flow bracket (`{` or `[`) still open at byte `before`, outside comments and
/// quoted strings.
fn unclosed_bracket(text: &str, before: usize) -> Option<usize> {
    let before = text.floor_char_boundary(before.min(text.len()));
    let mut open = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut previous = '\n';
    for (at, c) in text[..before].char_indices() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if q == '"' && c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '#' if previous.is_whitespace() => comment = true,
                '"' | '\'' if previous.is_whitespace() || "[{,:".contains(previous) => {
                    quote = Some(c);
                }
                '{' | '[' => open.push(at),
                '}' | ']' => {
                    open.pop();
                }
                _ => {}
            }
        }
        previous = c;
    }
    open.last().copied()
}

/// Whether the parser stopped at the nesting limit: block collections hit the depth budget, flow
/// collections (`[[[...`) the scanner's own limit.
fn too_deep(err: &serde_saphyr::Error) -> bool {
    match original(err) {
        serde_saphyr::Error::Budget { breach, .. } => {
            matches!(breach, serde_saphyr::budget::BudgetBreach::Depth { .. })
        }
        serde_saphyr::Error::ExternalMessage { source, .. } => matches!(
            source.as_ref(),
            serde_saphyr::ExternalMessageSource::Parser(scan)
                if matches!(scan.kind(), serde_saphyr::granit_parser::ErrorKind::RecursionLimitExceeded)
        ),
        _ => false,
    }
}

/// The error itself, out of the wrappers that say where an alias or snippet led to it.
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = err
    {
        err = error;
    }
    err
}

/// What a breached YAML size limit means, for the limits aliases reach first ("billion laughs":
/// a few lines of aliases that expand to millions of values).
fn budget_message(err: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    let serde_saphyr::Error::Budget { breach, .. } = original(err) else {
        return None;
    };
    let limits = serde_saphyr::Budget::default();
    Some(match breach {
        BudgetBreach::Nodes { .. } => format!(
            "the document holds more than {} values (counting each use of an alias)",
            limits.max_nodes
        ),
        BudgetBreach::Events { .. } => format!(
            "the document holds more than {} parts (counting each use of an alias)",
            limits.max_events
        ),
        BudgetBreach::Aliases { .. } | BudgetBreach::AliasAnchorRatio { .. } => {
            "the document uses aliases far more than a spec needs".to_owned()
        }
        BudgetBreach::Anchors { .. } => {
            format!(
                "the document defines more than {} anchors",
                limits.max_anchors
            )
        }
        _ => return None,
    })
}

/// Lowers the node tree, collecting structural diagnostics.
struct Lower<'a> {
    source: &'a Source,
    diagnostics: Vec<Diagnostic>,
}

impl Lower<'_> {
    /// Words `error` and records it.
    fn report(&mut self, error: FrontError) {
        self.diagnostics.push(error.render());
    }

    fn model(&mut self, root: Node) -> Model {
        let span = Span::new(0, self.source.text().len());
        let mut model = Model {
            name: None,
            input: None,
            blocks: Vec::new(),
            layers: Vec::new(),
            comments: ModelComments::default(),
            span,
        };
        let entries = match root.kind {
            Kind::Map(entries) => entries,
            Kind::Null => {
                self.report(FrontError::EmptySpec { span: root.span });
                return model;
            }
            other => {
                self.report(FrontError::SpecNotMapping {
                    span: root.span,
                    found: describe(&other),
                });
                return model;
            }
        };
        // A map, not a list: a spec of 60,000 keys must not compare each with every other.
        let mut seen: HashMap<String, Span> = HashMap::new();
        for (key, value) in entries {
            let Kind::Str(key_text) = &key.kind else {
                self.report(FrontError::KeyNotString {
                    span: key.span,
                    found: describe(&key.kind),
                });
                continue;
            };
            if let Some(first) = seen.get(key_text) {
                self.report(FrontError::DuplicateKey {
                    span: key.span,
                    first: *first,
                    key: key_text.clone(),
                });
                continue;
            }
            seen.insert(key_text.clone(), key.span);
            match key_text.as_str() {
                "model" => model.name = self.model_name(value),
                "input" => model.input = Some(self.value(value)),
                "layers" => model.layers = self.layers(value),
                "blocks" => model.blocks = self.blocks(value),
                other => {
                    self.report(FrontError::UnknownTopLevelKey {
                        span: key.span,
                        key: other.to_owned(),
                        best: suggest::closest(other, TOP_LEVEL_KEYS.iter().copied()),
                    });
                }
            }
        }
        model
    }

    fn model_name(&mut self, node: Node) -> Option<Ident> {
        match node.kind {
            Kind::Str(text) => Some(Ident {
                text,
                span: node.span,
            }),
            other => {
                self.report(FrontError::ModelNameNotString {
                    span: node.span,
                    found: describe(&other),
                });
                None
            }
        }
    }

    fn layers(&mut self, node: Node) -> Vec<Layer> {
        match node.kind {
            Kind::Seq(items) => items.into_iter().filter_map(|n| self.layer(n)).collect(),
            Kind::Null => Vec::new(),
            other => {
                self.report(FrontError::LayersNotList {
                    span: node.span,
                    found: describe(&other),
                });
                Vec::new()
            }
        }
    }

    fn layer(&mut self, node: Node) -> Option<Layer> {
        let span = node.span;
        match node.kind {
            Kind::Str(kind) => {
                let mut layer = Layer::new(Ident { text: kind, span }, span);
                if layer.kind.text == "sequential" {
                    self.report(FrontError::SequentialWithoutLayers { span });
                    layer.body = Some(Vec::new());
                }
                Some(layer)
            }
            Kind::Map(mut entries) if entries.len() == 1 => {
                let (key, value) = entries.pop()?;
                let Kind::Str(kind) = key.kind else {
                    self.report(FrontError::LayerKindNotName {
                        span: key.span,
                        found: describe(&key.kind),
                    });
                    return None;
                };
                let kind = Ident {
                    text: kind,
                    span: key.span,
                };
                let mut layer = Layer::new(kind, span);
                self.arguments(&mut layer, value)?;
                Some(layer)
            }
            Kind::Map(entries) => {
                let has_name = entries
                    .iter()
                    .any(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == "name"));
                self.report(FrontError::LayerManyKeys {
                    span,
                    count: entries.len(),
                    has_name,
                });
                None
            }
            other => {
                self.report(FrontError::LayerNotNameOrMap {
                    span,
                    found: describe(&other),
                });
                None
            }
        }
    }

    /// An entry's argument mapping: `name`, `inputs`, `repeat` and a sequential's `layers` are
    /// taken out, the rest become [`Arg`]s.
    fn arguments(&mut self, layer: &mut Layer, node: Node) -> Option<()> {
        let sequential = layer.kind.text == "sequential";
        let entries = match node.kind {
            Kind::Map(entries) => entries,
            Kind::Null if !sequential => return Some(()),
            Kind::Null => {
                self.report(FrontError::SequentialWithoutLayers { span: layer.span });
                layer.body = Some(Vec::new());
                return Some(());
            }
            other => {
                self.report(FrontError::ArgumentsNotMapping {
                    span: node.span,
                    kind: layer.kind.text.clone(),
                    found: describe(&other),
                });
                return None;
            }
        };
        let mut name = None;
        let mut args = Vec::new();
        for (key, value) in entries {
            let Kind::Str(key_text) = key.kind else {
                self.report(FrontError::ArgumentNameNotString {
                    span: key.span,
                    found: describe(&key.kind),
                });
                continue;
            };
            let key = Ident {
                text: key_text,
                span: key.span,
            };
            if key.text == "name" && name.is_none() {
                name = self.layer_name(value);
                continue;
            }
            if key.text == "inputs" && layer.inputs.is_empty() {
                layer.inputs = self.inputs(value);
                continue;
            }
            if key.text == "repeat" && layer.repeat.is_none() {
                layer.repeat = Some(self.value(value));
                continue;
            }
            if sequential && key.text == "layers" && layer.body.is_none() {
                layer.body = Some(self.layers(value));
                continue;
            }
            args.push(Arg {
                key,
                value: self.value(value),
            });
        }
        if sequential && layer.body.is_none() {
            self.report(FrontError::SequentialWithoutLayers { span: layer.span });
            layer.body = Some(Vec::new());
        }
        layer.name = name;
        layer.args = args;
        Some(())
    }

    /// `inputs`: a name, or a list of names (an unnamed entry's position is a name too).
    fn inputs(&mut self, node: Node) -> Vec<Ident> {
        let items = match node.kind {
            Kind::Seq(items) => items,
            kind => vec![Node {
                kind,
                span: node.span,
            }],
        };
        let mut inputs = Vec::new();
        for item in items {
            let text = match item.kind {
                Kind::Str(text) => text,
                Kind::Int(i) if i >= 0 => i.to_string(),
                other => {
                    self.report(FrontError::InputNotName {
                        span: item.span,
                        found: describe(&other),
                    });
                    continue;
                }
            };
            inputs.push(Ident {
                text,
                span: item.span,
            });
        }
        if inputs.is_empty() {
            self.report(FrontError::EmptyInputs { span: node.span });
        }
        inputs
    }

    /// `blocks`: a mapping from block names to `{params: {...}, layers: [...]}`.
    fn blocks(&mut self, node: Node) -> Vec<Block> {
        let entries = match node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Vec::new(),
            other => {
                self.report(FrontError::BlocksNotMapping {
                    span: node.span,
                    found: describe(&other),
                });
                return Vec::new();
            }
        };
        let mut blocks = Vec::new();
        for (key, value) in entries {
            let Kind::Str(name) = key.kind else {
                self.report(FrontError::BlockNameNotString {
                    span: key.span,
                    found: describe(&key.kind),
                });
                continue;
            };
            let span = Span::new(key.span.start as usize, value.span.end as usize);
            let mut block = Block {
                name: Ident {
                    text: name,
                    span: key.span,
                },
                params: Vec::new(),
                layers: Vec::new(),
                comments: Default::default(),
                span,
            };
            let parts = match value.kind {
                Kind::Map(parts) => parts,
                other => {
                    self.report(FrontError::BlockNotMapping {
                        span: value.span,
                        name: block.name.text.clone(),
                        found: describe(&other),
                    });
                    continue;
                }
            };
            let mut has_layers = false;
            for (part, part_value) in parts {
                match &part.kind {
                    Kind::Str(key) if key == "params" => block.params = self.params(part_value),
                    Kind::Str(key) if key == "layers" => {
                        has_layers = true;
                        block.layers = self.layers(part_value);
                    }
                    Kind::Str(key) => self.report(FrontError::UnknownBlockKey {
                        span: part.span,
                        key: key.clone(),
                        best: suggest::closest(key, BLOCK_KEYS.iter().copied()),
                    }),
                    other => self.report(FrontError::KeyNotString {
                        span: part.span,
                        found: describe(other),
                    }),
                }
            }
            if !has_layers {
                self.report(FrontError::BlockWithoutLayers {
                    span: block.name.span,
                    name: block.name.text.clone(),
                });
            }
            blocks.push(block);
        }
        blocks
    }

    /// A block's `params`: a mapping from names to defaults, `~` (null) for a required one.
    fn params(&mut self, node: Node) -> Vec<Param> {
        let entries = match node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Vec::new(),
            other => {
                self.report(FrontError::ParamsNotMapping {
                    span: node.span,
                    found: describe(&other),
                });
                return Vec::new();
            }
        };
        let mut params = Vec::new();
        for (key, value) in entries {
            let Kind::Str(name) = key.kind else {
                self.report(FrontError::ArgumentNameNotString {
                    span: key.span,
                    found: describe(&key.kind),
                });
                continue;
            };
            let default = match value.kind {
                Kind::Null => None,
                _ => Some(self.value(value)),
            };
            params.push(Param {
                name: Ident {
                    text: name,
                    span: key.span,
                },
                default,
            });
        }
        params
    }

    /// A plain (unquoted) scalar that reads as arithmetic, parsed; `None` for a string.
    fn expression(&mut self, text: &str, span: Span) -> Option<ValueKind> {
        if !expr::looks_like_expr(text) {
            return None;
        }
        // A plain scalar's span is its text; a quoted one's starts with the quote.
        let written = self
            .source
            .text()
            .get(span.start as usize..span.end as usize)
            .unwrap_or("");
        // A quoted scalar is a string, as a quoted DSL value is: only plain ones are arithmetic.
        if written.starts_with(['"', '\'']) {
            return None;
        }
        let (base, exact) = match written.find(text) {
            Some(at) => (span.start as usize + at, true),
            None => (span.start as usize, false),
        };
        match expr::parse(text, base) {
            Ok(mut parsed) => {
                if !exact {
                    set_spans(&mut parsed, span);
                }
                Some(expr::into_value(parsed))
            }
            Err(error) => {
                self.report(FrontError::BadExpression { error });
                Some(ValueKind::Str(text.to_owned()))
            }
        }
    }

    /// A layer name: a string, or an integer (`name: 3`) read as its digits.
    fn layer_name(&mut self, node: Node) -> Option<Ident> {
        let text = match node.kind {
            Kind::Str(text) => text,
            Kind::Int(i) if i >= 0 => i.to_string(),
            other => {
                self.report(FrontError::LayerNameNotString {
                    span: node.span,
                    found: describe(&other),
                });
                return None;
            }
        };
        Some(Ident {
            text,
            span: node.span,
        })
    }

    /// Whether the text at `span` is an integer literal: optional `+`, then decimal digits.
    fn is_digits(&self, span: Span) -> bool {
        let text = self
            .source
            .text()
            .get(span.start as usize..span.end as usize)
            .unwrap_or("");
        let digits = text.strip_prefix('+').unwrap_or(text);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    }

    fn value(&mut self, node: Node) -> Value {
        let kind = match node.kind {
            Kind::Null => ValueKind::Null,
            Kind::Bool(b) => ValueKind::Bool(b),
            Kind::Int(i) => ValueKind::Int(i),
            // Beyond every size limit; the checker reports it as too large.
            Kind::BigInt => ValueKind::Int(i64::MAX),
            // serde-saphyr reads integers beyond 64 bits as floats; they are still integers.
            Kind::Float(_) if self.is_digits(node.span) => ValueKind::Int(i64::MAX),
            Kind::Float(f) => ValueKind::Float(f),
            Kind::Str(s) => self.expression(&s, node.span).unwrap_or(ValueKind::Str(s)),
            Kind::Seq(items) => ValueKind::List(items.into_iter().map(|n| self.value(n)).collect()),
            Kind::Map(_) => ValueKind::Map,
        };
        Value {
            kind,
            span: node.span,
        }
    }
}

/// Points every part of `expr` at `span` (an expression whose text could not be located).
fn set_spans(expr: &mut Expr, span: Span) {
    expr.span = span;
    match &mut expr.kind {
        ExprKind::Neg(operand) => set_spans(operand, span),
        ExprKind::Binary(_, left, right) => {
            set_spans(left, span);
            set_spans(right, span);
        }
        ExprKind::Int(_) | ExprKind::Name(_) => {}
    }
}

fn describe(kind: &Kind) -> &'static str {
    match kind {
        Kind::Null => "null",
        Kind::Bool(_) => "a boolean",
        Kind::Int(_) | Kind::BigInt => "an integer",
        Kind::Float(_) => "a float",
        Kind::Str(_) => "a string",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}
