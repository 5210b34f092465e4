//! Expansion: blocks, `sequential` groups and repetition unrolled into a flat, topologically
//! ordered list of layers with composed names (`layer1.0.conv1`) and resolved inputs. Each
//! layer remembers where it is written and every instantiation on the way to it, so that a
//! diagnostic inside a block points at both, as rustc does for macros. Expansion is bounded
//! before it grows: a step budget, a depth limit and the layer limit stop exponential nests
//! (a block of two blocks of two blocks ...) after a few thousand steps, not 2^n.

use std::collections::HashMap;

use super::Checker;
use super::errors::CheckError;
use crate::ast::{Arg, Block, ExprKind, Ident, Layer, Model as Spec, Value, ValueKind};
use crate::expr::{self, Binding};
use crate::span::Span;
use crate::suggest;
use crate::{MAX_LAYERS, MAX_NESTING};

/// Most entries (layers, instances, groups, copies) expansion visits: a little more than the
/// layer limit, since groups and instances are steps too.
pub(super) const MAX_STEPS: usize = 4 * MAX_LAYERS;
/// Deepest nesting of block instances and groups.
pub(super) const MAX_DEPTH: usize = MAX_NESTING;

/// Where an expanded layer reads one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    /// The model's input.
    Input,
    /// The output of expanded layer `i`.
    Layer(usize),
}

/// A block instance or group on the way to a layer.
#[derive(Clone, Debug)]
pub(super) struct Instance {
    /// The instantiating entry.
    pub span: Span,
    /// Its full name (`layer1.0`).
    pub name: String,
    /// The block's name, or `None` for a `sequential`.
    pub block: Option<String>,
}

/// One layer after expansion.
#[derive(Clone, Debug)]
pub(super) struct Flat {
    /// The layer as the checker reads it: its kind and arguments with parameters substituted
    /// and expressions evaluated; spans point at the written layer.
    pub layer: Layer,
    /// Its full name, the state_dict prefix.
    pub name: String,
    /// Whether its name was written (else it is its position).
    pub named: bool,
    /// What it reads, in order; never empty.
    pub inputs: Vec<Src>,
    /// Where each input is named (the layer's kind when it reads the previous entry).
    pub input_spans: Vec<Span>,
    /// The instances and groups it lies in, outermost first.
    pub trail: Vec<Instance>,
    /// An argument could not be evaluated (reported): the layer cannot be checked.
    pub broken: bool,
    /// Parameters its arguments use: where each is used, its name, and where its value was
    /// given (an instance's argument or the parameter's default).
    pub given: Vec<(Span, String, Span)>,
}

/// A value bound to a name in a scope: a block parameter or the repetition index `i`.
#[derive(Clone, Debug)]
struct Bound {
    name: String,
    value: Value,
}

/// An expanded entry, for references into it (`enc1`, `enc1.2`).
struct Node {
    /// Its name within its sequence.
    local: String,
    /// Its output.
    output: Src,
    /// Its own entries (a group's or an instance's).
    children: Nodes,
}

/// The entries of a sequence so far, found by name in constant time: a spec of 10,000 entries
/// each naming an earlier one must not compare every name with every other.
#[derive(Default)]
struct Nodes {
    list: Vec<Node>,
    by_name: HashMap<String, usize>,
}

impl Nodes {
    fn push(&mut self, node: Node) {
        // A later entry of the same name is a duplicate (reported with the names); the first
        // keeps the name.
        self.by_name
            .entry(node.local.clone())
            .or_insert(self.list.len());
        self.list.push(node);
    }

    fn get(&self, name: &str) -> Option<&Node> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }
}

/// The expansion of a whole spec.
pub(super) struct Expansion {
    /// The layers, in order.
    pub layers: Vec<Flat>,
    /// Expansion stopped at a limit (reported): the layers are incomplete.
    pub stopped: bool,
}

struct Expander<'a> {
    blocks: HashMap<&'a str, &'a Block>,
    layers: Vec<Flat>,
    steps: usize,
    stopped: bool,
    /// The blocks being instantiated, innermost last, for recursion.
    stack: Vec<&'a str>,
    trail: Vec<Instance>,
    /// The parameters used by the arguments being substituted, for [`Flat::given`].
    given: Vec<(Span, String, Span)>,
}

/// What a sequence expands to.
struct Sequence {
    nodes: Nodes,
    output: Option<Src>,
}

impl Checker {
    /// Expands `spec` into flat layers, reporting every problem of blocks, names and inputs.
    pub(super) fn expand(&mut self, spec: &Spec) -> Expansion {
        let mut blocks: HashMap<&str, &Block> = HashMap::new();
        for block in &spec.blocks {
            if !is_identifier(&block.name.text) {
                self.report(CheckError::InvalidBlockName {
                    span: block.name.span,
                    name: block.name.text.clone(),
                });
            }
            if let Some(first) = blocks.get(block.name.text.as_str()) {
                self.report(CheckError::DuplicateBlock {
                    span: block.name.span,
                    first: first.name.span,
                    name: block.name.text.clone(),
                });
                continue;
            }
            if cnnc_core::LayerKind::from_keyword(&block.name.text).is_some()
                || block.name.text == "sequential"
            {
                self.report(CheckError::BlockShadowsKind {
                    span: block.name.span,
                    name: block.name.text.clone(),
                });
            }
            if block.layers.is_empty() {
                self.report(CheckError::EmptyBody {
                    span: block.name.span,
                    what: format!("block `{}`", block.name.text),
                });
            }
            blocks.insert(&block.name.text, block);
            self.block_names.push(block.name.text.clone());
        }
        let mut expander = Expander {
            blocks,
            layers: Vec::new(),
            steps: 0,
            stopped: false,
            stack: Vec::new(),
            trail: Vec::new(),
            given: Vec::new(),
        };
        expander.sequence(self, &spec.layers, &[], "", Src::Input);
        Expansion {
            layers: expander.layers,
            stopped: expander.stopped,
        }
    }
}

impl<'a> Expander<'a> {
    /// Expands `entries` (a sequence reading `input`) under name `prefix`, in a scope binding
    /// `scope`.
    fn sequence(
        &mut self,
        cx: &mut Checker,
        entries: &'a [Layer],
        scope: &[Bound],
        prefix: &str,
        input: Src,
    ) -> Sequence {
        let mut nodes = Nodes::default();
        // Positions name unnamed entries; an entry that fails to expand keeps its own.
        let mut positions = 0usize;
        let mut previous = input;
        let mut last = None;
        // The names written in this sequence, to tell a later entry from an unknown one.
        let mut written: HashMap<&str, usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            if let Some(name) = &entry.name
                && !name.text.contains('{')
            {
                written.entry(&name.text).or_insert(i);
            }
        }
        for (index, entry) in entries.iter().enumerate() {
            if self.stopped {
                break;
            }
            let mut copies = match &entry.repeat {
                None => None,
                Some(value) => match self.repeat(cx, value, scope) {
                    Some(n) => Some(n),
                    None => continue,
                },
            };
            if copies.is_some()
                && let Some(name) = &entry.name
                && !name.text.contains('{')
            {
                cx.report_at(
                    CheckError::RepeatedName {
                        span: name.span,
                        name: name.text.clone(),
                    },
                    &self.trail,
                );
                // One copy keeps the entries after it checkable without a duplicate per copy.
                copies = Some(1);
            }
            for copy in 0..copies.unwrap_or(1) {
                if self.stopped {
                    break;
                }
                self.steps += 1;
                if self.steps > MAX_STEPS || self.layers.len() > MAX_LAYERS {
                    // At the top-level entry that grew too large: the nest inside it is what
                    // multiplies.
                    cx.report_at(
                        CheckError::ExpansionTooLarge {
                            span: self.trail.first().map_or(entry.span, |i| i.span),
                            layers: self.layers.len(),
                        },
                        &[],
                    );
                    self.stopped = true;
                    break;
                }
                let mut inner: Vec<Bound> = scope.to_vec();
                if copies.is_some() {
                    inner.push(Bound {
                        name: "i".to_owned(),
                        value: Value {
                            kind: ValueKind::Int(copy as i64),
                            span: entry.repeat.as_ref().map_or(entry.span, |v| v.span),
                        },
                    });
                }
                let position = positions;
                positions += 1;
                let local = match &entry.name {
                    Some(name) => match self.template(cx, name, &inner) {
                        Some(local) => local,
                        None => continue,
                    },
                    None => position.to_string(),
                };
                let full = if prefix.is_empty() {
                    local.clone()
                } else {
                    format!("{prefix}.{local}")
                };
                let mut unresolved = false;
                let (sources, spans) = if entry.inputs.is_empty() {
                    (vec![previous], vec![entry.kind.span])
                } else {
                    let mut sources = Vec::new();
                    for reference in &entry.inputs {
                        if let Some(src) =
                            self.resolve(cx, reference, &nodes, input, &written, index, &local)
                        {
                            sources.push(src);
                        }
                    }
                    if sources.len() != entry.inputs.len() {
                        // Reported; the entry still expands, reading its previous entry, so
                        // that the layers in and after it are checked.
                        unresolved = true;
                        (vec![previous], vec![entry.kind.span])
                    } else {
                        (sources, entry.inputs.iter().map(|i| i.span).collect())
                    }
                };
                let node = if let Some(body) = &entry.body {
                    let Some(group_input) = self.single_input(cx, entry, &sources, "sequential")
                    else {
                        continue;
                    };
                    if !entry.args.is_empty() {
                        cx.report_at(
                            CheckError::GroupArguments {
                                span: entry.args[0].key.span,
                                key: entry.args[0].key.text.clone(),
                            },
                            &self.trail,
                        );
                    }
                    if body.is_empty() {
                        cx.report_at(
                            CheckError::EmptyBody {
                                span: entry.kind.span,
                                what: "this `sequential`".to_owned(),
                            },
                            &self.trail,
                        );
                        continue;
                    }
                    self.nested(cx, entry, &full, None, |this, cx| {
                        this.sequence(cx, body, &inner, &full, group_input)
                    })
                } else if let Some(&block) = self.blocks.get(entry.kind.text.as_str()) {
                    let Some(block_input) =
                        self.single_input(cx, entry, &sources, &block.name.text)
                    else {
                        continue;
                    };
                    if self.stack.contains(&block.name.text.as_str()) {
                        cx.report_at(
                            CheckError::RecursiveBlock {
                                span: entry.kind.span,
                                name: block.name.text.clone(),
                                definition: block.name.span,
                                chain: self.stack.iter().map(|s| (*s).to_owned()).collect(),
                            },
                            &self.trail,
                        );
                        continue;
                    }
                    let Some(params) = self.arguments(cx, entry, block, &inner) else {
                        continue;
                    };
                    if block.layers.is_empty() {
                        continue;
                    }
                    self.stack.push(&block.name.text);
                    let sequence =
                        self.nested(cx, entry, &full, Some(&block.name.text), |this, cx| {
                            this.sequence(cx, &block.layers, &params, &full, block_input)
                        });
                    self.stack.pop();
                    sequence
                } else {
                    self.given.clear();
                    let (args, broken) = self.substitute(cx, &entry.args, &inner);
                    let mut layer = entry.clone();
                    layer.args = args;
                    layer.repeat = None;
                    let index = self.layers.len();
                    self.layers.push(Flat {
                        layer,
                        name: full,
                        named: entry.name.is_some(),
                        inputs: sources,
                        input_spans: spans,
                        trail: self.trail.clone(),
                        broken: broken || unresolved,
                        given: std::mem::take(&mut self.given),
                    });
                    Some(Sequence {
                        nodes: Nodes::default(),
                        output: Some(Src::Layer(index)),
                    })
                };
                let Some(Sequence {
                    nodes: children,
                    output: Some(output),
                }) = node
                else {
                    continue;
                };
                previous = output;
                last = Some(output);
                nodes.push(Node {
                    local,
                    output,
                    children,
                });
            }
        }
        Sequence {
            nodes,
            output: last,
        }
    }

    /// Runs `f` one level deeper, inside instance `entry` named `full`.
    fn nested(
        &mut self,
        cx: &mut Checker,
        entry: &Layer,
        full: &str,
        block: Option<&str>,
        f: impl FnOnce(&mut Self, &mut Checker) -> Sequence,
    ) -> Option<Sequence> {
        if self.trail.len() >= MAX_DEPTH {
            cx.report_at(
                CheckError::NestingTooDeep {
                    span: entry.kind.span,
                },
                &self.trail,
            );
            self.stopped = true;
            return None;
        }
        self.trail.push(Instance {
            span: entry.span,
            name: full.to_owned(),
            block: block.map(str::to_owned),
        });
        let sequence = f(self, cx);
        self.trail.pop();
        Some(sequence)
    }

    /// A group or instance reads one input: the first of `sources`, reporting more.
    fn single_input(
        &mut self,
        cx: &mut Checker,
        entry: &Layer,
        sources: &[Src],
        what: &str,
    ) -> Option<Src> {
        if sources.len() > 1 {
            cx.report_at(
                CheckError::GroupInputs {
                    span: entry.inputs.get(1).map_or(entry.span, |i| i.span),
                    what: what.to_owned(),
                    count: sources.len(),
                },
                &self.trail,
            );
            return None;
        }
        sources.first().copied()
    }

    /// The repetition count: an integer from 1 to the layer limit.
    fn repeat(&mut self, cx: &mut Checker, value: &Value, scope: &[Bound]) -> Option<usize> {
        let value = self.value(cx, value, scope)?;
        match value.kind {
            ValueKind::Int(n) if n >= 1 && n as u64 <= MAX_LAYERS as u64 => Some(n as usize),
            ValueKind::Int(n) => {
                cx.report_at(
                    CheckError::BadRepeat {
                        span: value.span,
                        found: n.to_string(),
                    },
                    &self.trail,
                );
                None
            }
            ref other => {
                cx.report_at(
                    CheckError::BadRepeat {
                        span: value.span,
                        found: other.describe().to_owned(),
                    },
                    &self.trail,
                );
                None
            }
        }
    }

    /// A name with its `{expr}` templates evaluated.
    fn template(&mut self, cx: &mut Checker, name: &Ident, scope: &[Bound]) -> Option<String> {
        if !name.text.contains('{') {
            return Some(name.text.clone());
        }
        let mut out = String::new();
        let mut rest = name.text.as_str();
        let mut offset = name.span.start as usize;
        // A quoted YAML name starts one byte later than its span.
        let exact = name.span.range().len() == name.text.len();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                out.push_str(&rest[open..]);
                break;
            };
            let inner = &rest[open + 1..close];
            let base = if exact {
                offset + open + 1
            } else {
                name.span.start as usize
            };
            let parsed = match expr::parse(inner, base) {
                Ok(parsed) => parsed,
                Err(error) => {
                    cx.report_at(CheckError::TemplateSyntax { error }, &self.trail);
                    return None;
                }
            };
            match self.eval(cx, &parsed, scope) {
                Some(v) => out.push_str(&v.to_string()),
                None => return None,
            }
            offset += close + 1;
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    /// The output an input name refers to: `input`, an earlier entry's name (its output is
    /// its last layer's), or a dotted path into one.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        cx: &mut Checker,
        reference: &Ident,
        nodes: &Nodes,
        input: Src,
        written: &HashMap<&str, usize>,
        index: usize,
        own: &str,
    ) -> Option<Src> {
        if reference.text == "input" {
            return Some(input);
        }
        if let Some(src) = lookup(nodes, &reference.text) {
            return Some(src);
        }
        let later = written.get(reference.text.as_str()).copied();
        if reference.text == own || later == Some(index) {
            cx.report_at(
                CheckError::SelfReference {
                    span: reference.span,
                    name: reference.text.clone(),
                },
                &self.trail,
            );
        } else if let Some(later) = later.filter(|&i| i > index) {
            cx.report_at(
                CheckError::LaterReference {
                    span: reference.span,
                    name: reference.text.clone(),
                    position: later,
                },
                &self.trail,
            );
        } else {
            // The nearest entries only: many unknown names in a long sequence stay linear.
            let names = nodes
                .list
                .iter()
                .rev()
                .take(32)
                .map(|n| n.local.as_str())
                .chain(["input"]);
            let best = suggest::closest(&reference.text, names).map(str::to_owned);
            cx.report_at(
                CheckError::UnknownReference {
                    span: reference.span,
                    name: reference.text.clone(),
                    best,
                    known: nodes
                        .list
                        .iter()
                        .rev()
                        .take(8)
                        .map(|n| n.local.clone())
                        .collect(),
                },
                &self.trail,
            );
        }
        None
    }

    /// Binds a block's parameters from an instance's arguments (evaluated in the caller's
    /// `scope`) and its defaults. `None` when one is unknown, missing or given twice.
    fn arguments(
        &mut self,
        cx: &mut Checker,
        entry: &Layer,
        block: &Block,
        scope: &[Bound],
    ) -> Option<Vec<Bound>> {
        let mut bound: Vec<Bound> = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        // Parameters suggested for misspelt arguments: no need to also call them missing.
        let mut suggested: Vec<String> = Vec::new();
        for Arg { key, value } in &entry.args {
            let Some(param) = block.params.iter().find(|p| p.name.text == key.text) else {
                let best =
                    suggest::closest(&key.text, block.params.iter().map(|p| p.name.text.as_str()))
                        .map(str::to_owned);
                suggested.extend(best.clone());
                cx.report_at(
                    CheckError::UnknownParam {
                        span: key.span,
                        key: key.text.clone(),
                        block: block.name.text.clone(),
                        definition: block.name.span,
                        params: block.params.iter().map(|p| p.name.text.clone()).collect(),
                        best,
                    },
                    &self.trail,
                );
                ok = false;
                continue;
            };
            if let Some(&first) = seen.get(key.text.as_str()) {
                cx.report_at(
                    CheckError::DuplicateArgument {
                        span: key.span,
                        first,
                        key: key.text.clone(),
                        layer: entry.kind.text.clone(),
                    },
                    &self.trail,
                );
                ok = false;
                continue;
            }
            seen.insert(&param.name.text, key.span);
            match self.value(cx, value, scope) {
                Some(value) => bound.push(Bound {
                    name: param.name.text.clone(),
                    value,
                }),
                None => ok = false,
            }
        }
        for param in &block.params {
            if seen.contains_key(param.name.text.as_str()) {
                continue;
            }
            match &param.default {
                // A default may use the parameters given and those before it: `out=planes * 4`.
                Some(default) => match self.value(cx, default, &bound) {
                    Some(value) => bound.push(Bound {
                        name: param.name.text.clone(),
                        value,
                    }),
                    None => ok = false,
                },
                None if suggested.contains(&param.name.text) => ok = false,
                None => {
                    cx.report_at(
                        CheckError::MissingParam {
                            span: entry.kind.span,
                            key: param.name.text.clone(),
                            block: block.name.text.clone(),
                            definition: param.name.span,
                        },
                        &self.trail,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(bound)
    }

    /// Arguments with names bound in `scope` replaced by their values and expressions
    /// evaluated; whether one could not be.
    fn substitute(&mut self, cx: &mut Checker, args: &[Arg], scope: &[Bound]) -> (Vec<Arg>, bool) {
        let mut broken = false;
        let args = args
            .iter()
            .map(|arg| Arg {
                key: arg.key.clone(),
                value: self.value(cx, &arg.value, scope).unwrap_or_else(|| {
                    broken = true;
                    arg.value.clone()
                }),
            })
            .collect();
        (args, broken)
    }

    /// `value` in `scope`: a bound name's value (at the place it is used), an expression's
    /// integer, lists item by item.
    fn value(&mut self, cx: &mut Checker, value: &Value, scope: &[Bound]) -> Option<Value> {
        let kind = match &value.kind {
            ValueKind::Str(word) => match scope.iter().rev().find(|b| &b.name == word) {
                Some(bound) => {
                    self.given
                        .push((value.span, bound.name.clone(), bound.value.span));
                    bound.value.kind.clone()
                }
                None => return Some(value.clone()),
            },
            ValueKind::Expr(e) => {
                let v = self.eval(cx, e, scope)?;
                // Each parameter it uses, so that an error at the expression also points at
                // the arguments behind it.
                let mut names = Vec::new();
                names_in(e, &mut names);
                for name in names {
                    if let Some(bound) = scope.iter().rev().find(|b| b.name == name)
                        && !self.given.iter().any(|g| g.0 == e.span && g.1 == name)
                    {
                        self.given.push((e.span, name.to_owned(), bound.value.span));
                    }
                }
                ValueKind::Int(v)
            }
            ValueKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.value(cx, item, scope)?);
                }
                ValueKind::List(out)
            }
            _ => return Some(value.clone()),
        };
        Some(Value {
            kind,
            span: value.span,
        })
    }

    fn eval(&mut self, cx: &mut Checker, e: &crate::ast::Expr, scope: &[Bound]) -> Option<i64> {
        let lookup = |name: &str| {
            scope
                .iter()
                .rev()
                .find(|b| b.name == name)
                .map(|b| match b.value.kind {
                    ValueKind::Int(v) => Binding::Int(v),
                    ref other => Binding::Other(other.describe()),
                })
        };
        match expr::eval(e, &lookup) {
            Ok(v) => Some(v),
            Err(error) => {
                let names = scope.iter().map(|b| b.name.clone()).collect();
                cx.report_at(
                    CheckError::Eval {
                        error,
                        text: e.to_text(),
                        names,
                    },
                    &self.trail,
                );
                None
            }
        }
    }
}

/// The output `path` names among `nodes`: the longest run of its dotted parts that names a
/// node (names may contain dots: `layer1.0`), then the rest inside that node.
fn lookup(nodes: &Nodes, path: &str) -> Option<Src> {
    if let Some(node) = nodes.get(path) {
        return Some(node.output);
    }
    let mut split = path.len();
    while let Some(dot) = path[..split].rfind('.') {
        let (head, rest) = (&path[..dot], &path[dot + 1..]);
        if let Some(node) = nodes.get(head)
            && let Some(src) = lookup(&node.children, rest)
        {
            return Some(src);
        }
        split = dot;
    }
    None
}

/// The names `expr` uses, in order.
fn names_in<'e>(expr: &'e crate::ast::Expr, out: &mut Vec<&'e str>) {
    match &expr.kind {
        ExprKind::Name(name) => out.push(name),
        ExprKind::Neg(operand) => names_in(operand, out),
        ExprKind::Binary(_, left, right) => {
            names_in(left, out);
            names_in(right, out);
        }
        ExprKind::Int(_) => {}
    }
}

/// A block name: a letter or `_`, then letters, digits and `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
