//! The checker's driver: validates the input and the layer names, then walks the layers,
//! typing each one's arguments against the layer table ([`args`]) and inferring its output with
//! its kind's rule ([`rules`]). It reports every independent problem in one run: a layer whose
//! output shape cannot be known stops shape inference, but the arguments of the layers after it
//! are still checked. The model it returns is built by [`Model::new`], so its invariants hold.

mod args;
mod errors;
mod rules;

use std::collections::HashMap;

use cnnc_core::{LayerDef, LayerKind, Model, NetworkDef};

use crate::ast::{Layer, Model as Spec, ValueKind};
use crate::diag::Diagnostic;
use crate::resolved::CheckedModel;
use crate::span::Span;
use crate::{MAX_DIM, MAX_ELEMENTS, MAX_LAYERS};
use cnnc_core::Shape;

use args::Args;
use errors::{CheckError, Culprit, FeatureChain, Origin, Step};

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
    let names = checker.names(&model.layers);
    let mut flow = input.map(|input| {
        Flow::new(
            input,
            model.input.as_ref().map_or(Span::default(), |v| v.span),
        )
    });
    let mut resolved = Vec::new();
    let mut complete = true;
    for (index, layer) in model.layers.iter().enumerate() {
        let name = &names[index];
        let errors_before = checker.error_count();
        let Some((kind, args)) = checker.arguments(layer, name) else {
            flow = None;
            complete = false;
            continue;
        };
        let next_kind = model
            .layers
            .get(index + 1)
            .and_then(|next| LayerKind::from_keyword(&next.kind.text));
        let Some(state) = flow.as_mut() else {
            continue;
        };
        let context = LayerContext {
            layer,
            name,
            who: who(layer, index),
            kind,
            args: &args,
            next_kind,
        };
        match checker.resolve(&context, state) {
            Some((config, output)) => {
                state.advance(kind, output, layer.span, &args, &context.who);
                state.after_error = checker.error_count() != errors_before;
                if complete && !state.after_error {
                    resolved.push((
                        LayerDef {
                            name: name.clone(),
                            config,
                            inputs: Vec::new(),
                        },
                        layer.span,
                    ));
                } else {
                    complete = false;
                }
            }
            None => {
                flow = None;
                complete = false;
            }
        }
    }
    let name = model.name.as_ref().map(|n| n.text.clone());
    let model = input.and_then(|input| checker.model(name, input, resolved));
    checker.finish(model)
}

/// Where the shape flowing through the layers currently stands.
struct Flow {
    shape: Shape,
    /// The place that last set the channel or feature count, for secondary labels.
    origin: (Span, Origin),
    /// Every layer so far with its output, for the size chain in notes.
    trail: Vec<(LayerKind, Shape)>,
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
            trail: Vec::new(),
            input,
            after_error: false,
        }
    }

    /// Moves past a layer of `kind` (written at `span`) that outputs `output`.
    fn advance(&mut self, kind: LayerKind, output: Shape, span: Span, args: &Args, who: &str) {
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
            LayerKind::Flatten => Some((
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
        self.trail.push((kind, output));
    }

    /// How the current flat size came about (worded by [`FeatureChain::text`]); `None` when
    /// the size does not come from a `flatten` of the convolutional part.
    fn feature_chain(&self) -> Option<FeatureChain> {
        let flatten = self
            .trail
            .iter()
            .rposition(|(kind, _)| *kind == LayerKind::Flatten)?;
        if self.trail[flatten + 1..]
            .iter()
            .any(|(kind, _)| *kind == LayerKind::Linear)
        {
            return None;
        }
        let steps = self.trail[..flatten]
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
            self.trail[flatten - 1].1
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
}

impl Checker {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.errors += usize::from(diagnostic.is_error());
        self.diagnostics.push(diagnostic);
    }

    /// Words `error` and records it.
    fn report(&mut self, error: CheckError) {
        self.push(error.render());
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

    /// Every layer's state_dict prefix: its explicit name or its index. Reports malformed and
    /// duplicate names.
    fn names(&mut self, layers: &[Layer]) -> Vec<String> {
        let names: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                layer
                    .name
                    .as_ref()
                    .map_or_else(|| i.to_string(), |n| n.text.clone())
            })
            .collect();
        for layer in layers {
            if let Some(name) = &layer.name
                && !is_valid_name(&name.text)
            {
                self.report(CheckError::InvalidName {
                    span: name.span,
                    name: name.text.clone(),
                });
            }
        }
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let Some(&earlier) = first.get(name.as_str()) else {
                first.insert(name, i);
                continue;
            };
            let span_of = |j: usize| layers[j].name.as_ref().map_or(layers[j].span, |n| n.span);
            self.report(CheckError::DuplicateName {
                span: span_of(i),
                name: name.clone(),
                earlier: span_of(earlier),
                earlier_unnamed: layers[earlier].name.is_none().then_some(earlier),
            });
        }
        names
    }
}

/// How messages refer to a layer: by its explicit name, else by its position.
fn who(layer: &Layer, index: usize) -> String {
    match &layer.name {
        Some(name) => format!("`{}`", name.text),
        None => format!("layer {index}"),
    }
}

/// A state_dict prefix: non-empty dot-separated parts of `[A-Za-z0-9_]`.
fn is_valid_name(name: &str) -> bool {
    name.split('.')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}
