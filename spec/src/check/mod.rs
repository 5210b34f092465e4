//! The checker's driver: validates the input, expands blocks, groups and repetition into flat
//! layers ([`expand`]), validates their names, then walks the layers, typing each one's arguments
//! against the layer table ([`args`]) and inferring its output from its inputs' with its kind's
//! rule ([`rules`]; merges by `LayerConfig::output_shape_of`). It reports every independent
//! problem in one run: a layer whose output shape cannot be known stops shape inference for the
//! layers that read it, but the arguments of every layer are still checked. The model it returns
//! is built by [`Model::new`], so its invariants hold.

mod args;
mod errors;
mod expand;
mod rules;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cnnc_core::config::ShapeError;
use cnnc_core::kind::Arity;
use cnnc_core::{LayerConfig, LayerDef, LayerKind, Model, NetworkDef, Source};

use crate::ast::{Layer, Model as Spec, ValueKind};
use crate::diag::Diagnostic;
use crate::resolved::CheckedModel;
use crate::span::Span;
use crate::{MAX_DIM, MAX_ELEMENTS, MAX_LAYERS};
use cnnc_core::Shape;
use expand::{Flat, Instance, Src};

use args::Args;
use errors::{Branch, CheckError, Culprit, FeatureChain, Origin, Step};

/// The result of [`check`]: the resolved model (complete when there are no errors) and every
/// diagnostic, warnings included.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The resolved model: all layers when checking succeeded; otherwise the layers before the
    /// first one with an error (so `summary` can show how far the shapes got). `None` when the
    /// input shape itself is unusable.
    pub model: Option<CheckedModel>,
    /// Errors and warnings, in source order per stage.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The complete model and its warnings, or every diagnostic when there are errors.
    pub fn into_result(self) -> Result<(CheckedModel, Vec<Diagnostic>), Vec<Diagnostic>> {
        match self.model {
            Some(model) if !self.has_errors() => Ok((model, self.diagnostics)),
            _ => Err(self.diagnostics),
        }
    }
}

/// Checks `model` and resolves it.
pub fn check(model: &Spec) -> Checked {
    let mut checker = Checker::default();
    let input = checker.input(model);
    if model.layers.is_empty() {
        let span = model.name.as_ref().map_or(Span::new(0, 0), |n| n.span);
        checker.report(CheckError::NoLayers { span });
    }
    if model.layers.len() > MAX_LAYERS {
        let span = model.layers[MAX_LAYERS].span;
        checker.report(CheckError::TooManyLayers {
            span,
            count: model.layers.len(),
        });
        return checker.finish(None);
    }
    let expansion = checker.expand(model);
    if expansion.stopped {
        return checker.finish(None);
    }
    let flat = expansion.layers;
    if flat.len() > MAX_LAYERS {
        let span = flat[MAX_LAYERS].layer.span;
        checker.report(CheckError::TooManyLayers {
            span,
            count: flat.len(),
        });
        return checker.finish(None);
    }
    checker.names(&flat);
    checker.unused(&flat);
    let model_input = model.input.as_ref().map_or(Span::default(), |v| v.span);
    // Each layer's output as checking left it: `None` when it cannot be known.
    let mut outputs: Vec<Option<Flow>> = Vec::with_capacity(flat.len());
    let mut resolved = Vec::new();
    let mut complete = true;
    for (index, entry) in flat.iter().enumerate() {
        checker.trail = entry.trail.clone();
        checker.given = entry.given.clone();
        let layer = &entry.layer;
        let name = &entry.name;
        let errors_before = checker.error_count();
        let arguments = if entry.broken {
            None
        } else {
            checker.arguments(layer, name)
        };
        let Some((kind, args)) = arguments else {
            outputs.push(None);
            complete = false;
            continue;
        };
        let next_kind = flat
            .get(index + 1)
            .filter(|next| next.inputs == [Src::Layer(index)])
            .and_then(|next| LayerKind::from_keyword(&next.layer.kind.text));
        let flows: Option<Vec<Flow>> = entry
            .inputs
            .iter()
            .map(|src| match (src, input) {
                (Src::Input, Some(input)) => Some(Flow::new(input, model_input)),
                (Src::Layer(j), _) => outputs.get(*j).cloned().flatten(),
                (Src::Input, None) => None,
            })
            .collect();
        let Some(flows) = flows else {
            outputs.push(None);
            complete = false;
            continue;
        };
        let context = LayerContext {
            layer,
            name,
            who: who(entry, index),
            kind,
            args: &args,
            next_kind,
        };
        let result = if kind.arity() == Arity::Exactly(1) && flows.len() == 1 {
            let mut state = flows[0].clone();
            checker.resolve(&context, &state).map(|(config, output)| {
                state.advance(kind, output, layer.span, &args, &context.who, index);
                (config, state)
            })
        } else {
            checker.merge(&context, &flat, &outputs, entry, &flows)
        };
        match result {
            Some((config, mut state)) => {
                state.after_error = checker.error_count() != errors_before;
                if complete && !state.after_error {
                    let inputs: Vec<Source> = entry.inputs.iter().map(|s| s.lowered()).collect();
                    let inputs = if inputs == [Source::previous(index)] {
                        Vec::new()
                    } else {
                        inputs
                    };
                    resolved.push((
                        LayerDef {
                            name: name.clone(),
                            config,
                            inputs,
                        },
                        layer.span,
                    ));
                } else {
                    complete = false;
                }
                outputs.push(Some(state));
            }
            None => {
                outputs.push(None);
                complete = false;
            }
        }
    }
    checker.trail.clear();
    checker.given.clear();
    let name = model.name.as_ref().map(|n| n.text.clone());
    let model = input.and_then(|input| checker.model(name, input, resolved));
    checker.finish(model)
}

impl Src {
    /// The core's form.
    fn lowered(self) -> Source {
        match self {
            Src::Input => Source::Input,
            Src::Layer(i) => Source::Layer(i),
        }
    }
}

/// One step of a [`Flow`]'s history: a layer's kind, output and index, and the step before.
struct Trail {
    kind: LayerKind,
    shape: Shape,
    index: usize,
    previous: Option<Rc<Trail>>,
}

/// Where the shape flowing through the layers currently stands.
#[derive(Clone)]
struct Flow {
    shape: Shape,
    /// The place that last set the channel or feature count, for secondary labels.
    origin: (Span, Origin),
    /// The layers so far along first inputs, newest first, for the size chain in notes.
    trail: Option<Rc<Trail>>,
    input: [usize; 3],
    /// The layer that produced `shape` had errors: the shape is a guess that lets checking go
    /// on, so warnings about it would mislead.
    after_error: bool,
}

impl Flow {
    fn new(input: [usize; 3], span: Span) -> Self {
        Flow {
            shape: Shape::Chw(input),
            origin: (span, Origin::Input(input)),
            trail: None,
            input,
            after_error: false,
        }
    }

    /// The layers so far, oldest first.
    fn steps(&self) -> Vec<(LayerKind, Shape, usize)> {
        let mut steps = Vec::new();
        let mut at = self.trail.as_deref();
        while let Some(step) = at {
            steps.push((step.kind, step.shape, step.index));
            at = step.previous.as_deref();
        }
        steps.reverse();
        steps
    }

    /// Moves past layer `index` of `kind` (written at `span`) that outputs `output`.
    fn advance(
        &mut self,
        kind: LayerKind,
        output: Shape,
        span: Span,
        args: &Args,
        who: &str,
        index: usize,
    ) {
        let input = std::mem::replace(&mut self.shape, output);
        let origin = match kind {
            LayerKind::Conv2d => Some((
                args.span("out_channels").unwrap_or(span),
                Origin::Conv {
                    who: who.to_owned(),
                    channels: output.dims()[0],
                },
            )),
            LayerKind::Linear => Some((
                args.span("out_features").unwrap_or(span),
                Origin::Linear {
                    who: who.to_owned(),
                    features: output.numel(),
                },
            )),
            LayerKind::Flatten if matches!(output, Shape::Flat(_)) => Some((
                span,
                Origin::Flatten {
                    input,
                    features: output.numel(),
                },
            )),
            _ => None,
        };
        if let Some(origin) = origin {
            self.origin = origin;
        }
        self.trail = Some(Rc::new(Trail {
            kind,
            shape: output,
            index,
            previous: self.trail.take(),
        }));
    }

    /// How the current flat size came about (worded by [`FeatureChain::text`]); `None` when
    /// the size does not come from a `flatten` of the convolutional part.
    fn feature_chain(&self) -> Option<FeatureChain> {
        let trail: Vec<(LayerKind, Shape)> =
            self.steps().into_iter().map(|(k, s, _)| (k, s)).collect();
        let flatten = trail
            .iter()
            .rposition(|(kind, _)| *kind == LayerKind::Flatten)?;
        if trail[flatten + 1..]
            .iter()
            .any(|(kind, _)| *kind == LayerKind::Linear)
        {
            return None;
        }
        let steps = trail[..flatten]
            .iter()
            .filter_map(|(kind, shape)| match kind {
                LayerKind::Conv2d => Some((Step::Conv, *shape)),
                LayerKind::MaxPool2d | LayerKind::AvgPool2d => Some((Step::Pool, *shape)),
                _ => None,
            })
            .collect();
        let before = if flatten == 0 {
            Shape::Chw(self.input)
        } else {
            trail[flatten - 1].1
        };
        let Shape::Chw(before) = before else {
            return None;
        };
        Some(FeatureChain {
            input: self.input,
            steps,
            before,
        })
    }
}

/// The layer being checked, as the rules see it.
struct LayerContext<'a> {
    layer: &'a Layer,
    name: &'a str,
    /// How messages refer to the layer: "`fc1`" or "layer 3".
    who: String,
    kind: LayerKind,
    args: &'a Args,
    next_kind: Option<LayerKind>,
}

impl LayerContext<'_> {
    /// "`fc1` (linear)" or "layer 3 (linear)".
    fn title(&self) -> String {
        format!("{} ({})", self.who, self.kind.keyword())
    }

    /// The layer as diagnostics name it.
    fn culprit(&self) -> Culprit {
        Culprit {
            title: self.title(),
            name: self.name.to_owned(),
        }
    }

    /// The span of argument `key` if written, else the layer kind.
    fn span_of(&self, key: &str) -> Span {
        self.args.span(key).unwrap_or(self.layer.kind.span)
    }
}

#[derive(Default)]
struct Checker {
    diagnostics: Vec<Diagnostic>,
    /// Errors among `diagnostics`, counted as they come: recounting them for every layer made
    /// a spec of many bad layers quadratic.
    errors: usize,
    /// The instances around the layer being checked, labelled on its diagnostics.
    trail: Vec<Instance>,
    /// The parameters the current layer's arguments use (see [`Flat::given`]), labelled where
    /// a diagnostic points at one.
    given: Vec<(Span, String, Span)>,
    /// The declared blocks' names, suggested for misspelt kinds.
    block_names: Vec<String>,
    /// What was reported where: a block instantiated many times reports each problem of its
    /// body once.
    seen: HashSet<(&'static str, u32, u32, String)>,
}

impl Checker {
    fn push(&mut self, diagnostic: Diagnostic) {
        let key = (
            diagnostic.code.as_str(),
            diagnostic.span.start,
            diagnostic.span.end,
            diagnostic.label.clone(),
        );
        if !self.trail.is_empty() && !self.seen.insert(key) {
            return;
        }
        self.errors += usize::from(diagnostic.is_error());
        self.diagnostics.push(diagnostic);
    }

    /// Words `error` and records it, with the instances around the current layer and the
    /// instance arguments behind a parameter it points at.
    fn report(&mut self, error: CheckError) {
        let trail = std::mem::take(&mut self.trail);
        let mut diagnostic = error.render();
        for (used, name, given) in &self.given {
            if *used == diagnostic.span && *given != diagnostic.span {
                diagnostic = diagnostic.secondary(*given, format!("`{name}` is given here"));
            }
        }
        self.report_rendered(diagnostic, &trail);
        self.trail = trail;
    }

    /// Words `error` and records it, labelling each instance of `trail` (innermost first) as
    /// rustc labels the macro invocations an error comes from.
    fn report_at(&mut self, error: CheckError, trail: &[Instance]) {
        self.report_rendered(error.render(), trail);
    }

    /// Records `diagnostic` with the labels of `trail`.
    fn report_rendered(&mut self, mut diagnostic: Diagnostic, trail: &[Instance]) {
        for instance in trail.iter().rev() {
            let text = match &instance.block {
                Some(block) => format!("in `{}`, an instance of `{block}`", instance.name),
                None => format!("in group `{}`", instance.name),
            };
            diagnostic = diagnostic.secondary(instance.span, text);
        }
        let saved = std::mem::replace(&mut self.trail, trail.to_vec());
        self.push(diagnostic);
        self.trail = saved;
    }

    fn error_count(&self) -> usize {
        self.errors
    }

    /// The checked model of the layers resolved so far. The checker has reported everything
    /// [`Model::new`] refuses, so a refusal here is a bug in cnnc, reported as an error.
    fn model(
        &mut self,
        name: Option<String>,
        input: [usize; 3],
        resolved: Vec<(LayerDef, Span)>,
    ) -> Option<CheckedModel> {
        let (layers, spans): (Vec<LayerDef>, Vec<Span>) = resolved.into_iter().unzip();
        match Model::new(name, NetworkDef { input, layers }) {
            Ok(model) => Some(CheckedModel::new(model, spans)),
            Err(err) => {
                let span = spans.first().copied().unwrap_or_default();
                self.report(CheckError::ModelBug {
                    span,
                    error: err.to_string(),
                    layer: err.layer().to_string(),
                });
                None
            }
        }
    }

    fn finish(mut self, model: Option<CheckedModel>) -> Checked {
        // Report in source order; stable, so one place's diagnostics keep their order.
        self.diagnostics.sort_by_key(|d| d.span.start);
        Checked {
            model,
            diagnostics: self.diagnostics,
        }
    }

    /// Validates `input`: three integers `[C, H, W]`, each within the size limit.
    fn input(&mut self, model: &Spec) -> Option<[usize; 3]> {
        let Some(input) = &model.input else {
            let span = model.name.as_ref().map_or(Span::new(0, 0), |n| n.span);
            self.report(CheckError::MissingInput { span });
            return None;
        };
        let ValueKind::List(items) = &input.kind else {
            self.report(CheckError::InputNotList {
                span: input.span,
                found: input.kind.describe(),
            });
            return None;
        };
        if items.len() != 3 {
            self.report(CheckError::InputRank {
                span: input.span,
                rank: items.len(),
            });
            return None;
        }
        let mut dims = [0usize; 3];
        for (dim, item) in dims.iter_mut().zip(items) {
            match item.kind {
                ValueKind::Int(v) if v >= 1 && v as u64 <= MAX_DIM as u64 => *dim = v as usize,
                ValueKind::Int(v) if v >= 1 => {
                    self.report(CheckError::DimTooLarge {
                        span: item.span,
                        value: v,
                        layer: None,
                    });
                    return None;
                }
                ValueKind::Int(v) => {
                    self.report(CheckError::InputDimBelowOne {
                        span: item.span,
                        value: v,
                    });
                    return None;
                }
                ref other => {
                    self.report(CheckError::InputDimNotInt {
                        span: item.span,
                        found: other.describe(),
                    });
                    return None;
                }
            }
        }
        let numel = dims.iter().map(|&d| d as u64).product::<u64>();
        if numel > MAX_ELEMENTS {
            self.report(CheckError::InputTooLarge {
                span: input.span,
                dims,
                numel,
            });
            return None;
        }
        Some(dims)
    }

    /// Reports malformed and duplicate layer names (full names, after expansion).
    fn names(&mut self, layers: &[Flat]) {
        let mut instances = HashSet::new();
        for layer in layers {
            // A block instance or group named badly gives every layer in it a bad prefix:
            // reported once, at the outermost such instance.
            let bad = layer
                .trail
                .iter()
                .position(|instance| !is_valid_name(&instance.name));
            if let Some(depth) = bad {
                let instance = &layer.trail[depth];
                if instances.insert(instance.span) {
                    self.report_at(
                        CheckError::InvalidName {
                            span: instance.span,
                            name: instance.name.clone(),
                        },
                        &layer.trail[..depth],
                    );
                }
                continue;
            }
            if let Some(name) = &layer.layer.name
                && !is_valid_name(&layer.name)
            {
                self.report_at(
                    CheckError::InvalidName {
                        span: name.span,
                        name: layer.name.clone(),
                    },
                    &layer.trail,
                );
            }
        }
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, layer) in layers.iter().enumerate() {
            let Some(&earlier) = first.get(layer.name.as_str()) else {
                first.insert(&layer.name, i);
                continue;
            };
            let span_of = |j: usize| {
                let l = &layers[j].layer;
                l.name.as_ref().map_or(l.span, |n| n.span)
            };
            let before = &layers[earlier];
            let position = before.name.rsplit('.').next().and_then(|p| p.parse().ok());
            self.report_at(
                CheckError::DuplicateName {
                    span: span_of(i),
                    name: layer.name.clone(),
                    earlier: span_of(earlier),
                    earlier_unnamed: if before.named { None } else { position },
                },
                &layer.trail,
            );
        }
    }

    /// Warns of layers whose output nothing reads, the last (the network's output) aside.
    fn unused(&mut self, layers: &[Flat]) {
        let mut read = vec![false; layers.len()];
        for layer in layers {
            for src in &layer.inputs {
                if let Src::Layer(j) = src {
                    read[*j] = true;
                }
            }
        }
        for (i, layer) in layers.iter().enumerate() {
            if !read[i] && i + 1 < layers.len() {
                self.report_at(
                    CheckError::UnusedOutput {
                        span: layer.layer.span,
                        name: layer.name.clone(),
                    },
                    &layer.trail,
                );
            }
        }
    }

    /// A merge layer (or a layer given several inputs): its output from its inputs' shapes by
    /// its kind's rule, with each branch's history when they do not fit.
    fn merge(
        &mut self,
        cx: &LayerContext<'_>,
        layers: &[Flat],
        outputs: &[Option<Flow>],
        entry: &Flat,
        flows: &[Flow],
    ) -> Option<(LayerConfig, Flow)> {
        let expected = cx.kind.arity();
        if !expected.accepts(flows.len()) {
            let expected = match expected {
                Arity::Exactly(1) => "exactly 1 input".to_owned(),
                Arity::Exactly(n) => format!("exactly {n} inputs"),
                Arity::AtLeast(n) => format!("at least {n} inputs"),
            };
            self.report(CheckError::InputCount {
                at: cx.culprit(),
                span: cx.layer.kind.span,
                expected,
                found: flows.len(),
            });
            return None;
        }
        let config = LayerConfig::from_args(cx.kind, |key| cx.args.value(key))?;
        let shapes: Vec<Shape> = flows.iter().map(|f| f.shape).collect();
        match config.output_shape_of(&shapes) {
            Ok(output) => {
                let mut flow = flows[0].clone();
                flow.shape = output;
                flow.origin = (
                    cx.layer.kind.span,
                    Origin::Merge {
                        who: cx.who.clone(),
                        shape: output,
                    },
                );
                flow.trail = Some(Rc::new(Trail {
                    kind: cx.kind,
                    shape: output,
                    index: outputs.len(),
                    previous: flow.trail.take(),
                }));
                Some((config, flow))
            }
            Err(ShapeError::BadDim { dim, .. }) => {
                self.report(CheckError::BadDim {
                    at: cx.culprit(),
                    span: cx.span_of("dim"),
                    dim,
                    input: shapes[0],
                });
                None
            }
            Err(_) => {
                let name_of = |src: &Src| match src {
                    Src::Input => "input".to_owned(),
                    Src::Layer(j) => layers[*j].name.clone(),
                };
                let inputs = entry
                    .inputs
                    .iter()
                    .zip(&entry.input_spans)
                    .zip(&shapes)
                    .map(|((src, span), shape)| (*span, name_of(src), *shape))
                    .collect();
                let branches = branches(layers, flows);
                self.report(CheckError::MergeMismatch {
                    at: cx.culprit(),
                    span: cx.layer.kind.span,
                    kind: cx.kind,
                    inputs,
                    branches,
                });
                None
            }
        }
    }
}

/// Each flow's layers after the last one all of them share (their common ancestor along first
/// inputs), for the notes of a merge that does not fit.
fn branches(layers: &[Flat], flows: &[Flow]) -> Vec<Branch> {
    let histories: Vec<Vec<(LayerKind, Shape, usize)>> = flows.iter().map(Flow::steps).collect();
    let shared = |index: usize| {
        histories
            .iter()
            .all(|h| h.iter().any(|&(_, _, i)| i == index))
    };
    histories
        .iter()
        .zip(flows)
        .map(|(history, flow)| {
            let start = history
                .iter()
                .rposition(|&(_, _, i)| shared(i))
                .map_or(0, |p| p + 1);
            let from = match start.checked_sub(1).map(|p| history[p]) {
                Some((_, shape, i)) => (format!("`{}`", layers[i].name), shape),
                None => ("input".to_owned(), Shape::Chw(flow.input)),
            };
            Branch {
                from,
                steps: history[start..]
                    .iter()
                    .map(|&(_, shape, i)| (layers[i].name.clone(), shape))
                    .collect(),
            }
        })
        .collect()
}

/// How messages refer to a layer: by its name when written or nested, else by its position.
fn who(layer: &Flat, index: usize) -> String {
    if layer.named || !layer.trail.is_empty() {
        format!("`{}`", layer.name)
    } else {
        format!("layer {index}")
    }
}

/// A state_dict prefix: non-empty dot-separated parts of `[A-Za-z0-9_]`.
fn is_valid_name(name: &str) -> bool {
    name.split('.')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}
