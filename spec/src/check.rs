//! The checker: validates every layer's arguments against its PyTorch signature, infers shapes
//! layer by layer with PyTorch's formulas, and resolves the model. It reports every independent
//! problem in one run: a layer whose output shape cannot be known stops shape inference, but the
//! arguments of the layers after it are still checked.

use std::collections::HashMap;

use crate::ast::{Arg, Layer, Model, Value, ValueKind};
use crate::diag::{Code, Diagnostic, Label};
use crate::resolved::{
    BatchNorm2dArgs, CheckedLayer, CheckedModel, Conv2dArgs, LayerArgs, LayerKind, LinearArgs,
    Pair, Pool2dArgs, TensorInfo, TensorRole,
};
use crate::shape::{Shape, Window};
use crate::span::Span;
use crate::suggest;
use crate::{MAX_DIM, MAX_ELEMENTS, MAX_LAYERS, MAX_POOL_WINDOW};

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
pub fn check(model: &Model) -> Checked {
    let mut checker = Checker::default();
    let input = checker.input(model);
    if model.layers.is_empty() {
        let span = model.name.as_ref().map_or(Span::new(0, 0), |n| n.span);
        checker.push(
            Diagnostic::error(
                Code::NoLayers,
                "the model has no layers",
                span,
                "this model",
            )
            .help("add a `layers` list, e.g. `- conv2d: {out_channels: 32, kernel_size: 3}`"),
        );
    }
    if model.layers.len() > MAX_LAYERS {
        let span = model.layers[MAX_LAYERS].span;
        checker.push(Diagnostic::error(
            Code::TooManyLayers,
            format!(
                "the model has {} layers, more than the limit of {MAX_LAYERS}",
                model.layers.len()
            ),
            span,
            "the first layer past the limit",
        ));
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
            Some(checked) => {
                state.advance(&checked, &args, &context.who);
                if complete && checker.error_count() == errors_before {
                    resolved.push(checked);
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
    let model = input.map(|input| CheckedModel {
        name: model.name.as_ref().map(|n| n.text.clone()),
        input,
        layers: resolved,
    });
    checker.finish(model)
}

/// Where the shape flowing through the layers currently stands.
struct Flow {
    shape: Shape,
    /// The place that last set the channel or feature count, for secondary labels.
    origin: Label,
    /// Every layer so far with its output, for the size chain in notes.
    trail: Vec<(LayerKind, Shape)>,
    input: [usize; 3],
}

impl Flow {
    fn new(input: [usize; 3], span: Span) -> Self {
        Flow {
            shape: Shape::Chw(input),
            origin: Label {
                span,
                text: format!("the input is {}", Shape::Chw(input)),
            },
            trail: Vec::new(),
            input,
        }
    }

    fn advance(&mut self, layer: &CheckedLayer, args: &Args, who: &str) {
        self.shape = layer.output_shape;
        let origin = match layer.kind {
            LayerKind::Conv2d => Some((
                args.span("out_channels").unwrap_or(layer.span),
                format!("{who} outputs {} channels", layer.output_shape.dims()[0]),
            )),
            LayerKind::Linear => Some((
                args.span("out_features").unwrap_or(layer.span),
                format!("{who} outputs {} features", layer.output_shape.numel()),
            )),
            LayerKind::Flatten => Some((
                layer.span,
                format!(
                    "flattens {} into {} features",
                    layer.input_shape,
                    layer.output_shape.numel()
                ),
            )),
            _ => None,
        };
        if let Some((span, text)) = origin {
            self.origin = Label { span, text };
        }
        self.trail.push((layer.kind, layer.output_shape));
    }

    /// How the current flat size came about, e.g.
    /// `32 →conv→ 32 →pool→ 16 → … → [64, 4, 4] → 64*4*4 = 1024`; `None` when the size does not
    /// come from a `flatten` of the convolutional part.
    fn feature_chain(&self) -> Option<String> {
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
        let hw = |shape: &Shape| match *shape {
            Shape::Chw([_, h, w]) if h == w => h.to_string(),
            Shape::Chw([_, h, w]) => format!("{h}×{w}"),
            Shape::Flat(n) => n.to_string(),
        };
        let mut steps: Vec<String> = self.trail[..flatten]
            .iter()
            .filter_map(|(kind, shape)| {
                let op = match kind {
                    LayerKind::Conv2d => "conv",
                    LayerKind::Maxpool2d | LayerKind::Avgpool2d => "pool",
                    _ => return None,
                };
                Some(format!("→{op}→ {}", hw(shape)))
            })
            .collect();
        if steps.len() > 6 {
            steps.splice(2..steps.len() - 2, ["→ …".to_owned()]);
        }
        let before = if flatten == 0 {
            Shape::Chw(self.input)
        } else {
            self.trail[flatten - 1].1
        };
        let Shape::Chw([c, h, w]) = before else {
            return None;
        };
        if steps.is_empty() {
            return Some(format!(
                "flatten of {before} gives {c}*{h}*{w} = {}",
                c * h * w
            ));
        }
        let mut chain = hw(&Shape::Chw(self.input));
        for step in steps {
            chain.push(' ');
            chain.push_str(&step);
        }
        chain.push_str(&format!(" → {before} → {c}*{h}*{w} = {}", c * h * w));
        Some(chain)
    }
}

/// A checked argument value with where it was written.
#[derive(Clone, Copy, Debug)]
enum Typed {
    Int(usize),
    Pair(Pair),
    Float(f64),
    Bool(bool),
}

/// A layer's arguments after type and range checks, by key.
#[derive(Default)]
struct Args {
    values: HashMap<&'static str, (Typed, Span)>,
}

impl Args {
    fn span(&self, key: &str) -> Option<Span> {
        self.values.get(key).map(|&(_, span)| span)
    }

    fn int(&self, key: &str) -> Option<usize> {
        match self.values.get(key) {
            Some((Typed::Int(v), _)) => Some(*v),
            _ => None,
        }
    }

    fn pair(&self, key: &str) -> Option<Pair> {
        match self.values.get(key) {
            Some((Typed::Pair(v), _)) => Some(*v),
            _ => None,
        }
    }

    fn float(&self, key: &str, default: f64) -> f64 {
        match self.values.get(key) {
            Some((Typed::Float(v), _)) => *v,
            _ => default,
        }
    }

    fn bool(&self, key: &str, default: bool) -> bool {
        match self.values.get(key) {
            Some((Typed::Bool(v), _)) => *v,
            _ => default,
        }
    }
}

/// The type and allowed range of an argument.
#[derive(Clone, Copy)]
enum Ty {
    /// An integer size, at least `min`.
    Size { min: usize },
    /// An integer or `[h, w]` pair, each at least `min`.
    Pair { min: usize },
    /// A number within `min..=max`; `min_exclusive` excludes `min` itself.
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    /// `true` / `false`.
    Bool,
}

struct ArgSpec {
    key: &'static str,
    ty: Ty,
    required: bool,
}

const fn arg(key: &'static str, ty: Ty, required: bool) -> ArgSpec {
    ArgSpec { key, ty, required }
}

const UNBOUNDED: f64 = f64::MAX;

/// PyTorch's signature of each layer kind (`name` is handled separately).
fn signature(kind: LayerKind) -> &'static [ArgSpec] {
    const CONV2D: &[ArgSpec] = &[
        arg("in_channels", Ty::Size { min: 1 }, false),
        arg("out_channels", Ty::Size { min: 1 }, true),
        arg("kernel_size", Ty::Pair { min: 1 }, true),
        arg("stride", Ty::Pair { min: 1 }, false),
        arg("padding", Ty::Pair { min: 0 }, false),
        arg("dilation", Ty::Pair { min: 1 }, false),
        arg("bias", Ty::Bool, false),
    ];
    const POOL2D: &[ArgSpec] = &[
        arg("kernel_size", Ty::Pair { min: 1 }, true),
        arg("stride", Ty::Pair { min: 1 }, false),
        arg("padding", Ty::Pair { min: 0 }, false),
        arg("ceil_mode", Ty::Bool, false),
    ];
    const LINEAR: &[ArgSpec] = &[
        arg("in_features", Ty::Size { min: 1 }, false),
        arg("out_features", Ty::Size { min: 1 }, true),
        arg("bias", Ty::Bool, false),
    ];
    const LEAKY_RELU: &[ArgSpec] = &[arg(
        "negative_slope",
        Ty::Float {
            min: -UNBOUNDED,
            max: UNBOUNDED,
            min_exclusive: false,
        },
        false,
    )];
    const DROPOUT: &[ArgSpec] = &[arg(
        "p",
        Ty::Float {
            min: 0.0,
            max: 1.0,
            min_exclusive: false,
        },
        false,
    )];
    const BATCHNORM2D: &[ArgSpec] = &[
        arg("num_features", Ty::Size { min: 1 }, false),
        arg(
            "eps",
            Ty::Float {
                min: 0.0,
                max: UNBOUNDED,
                min_exclusive: true,
            },
            false,
        ),
        arg(
            "momentum",
            Ty::Float {
                min: 0.0,
                max: 1.0,
                min_exclusive: false,
            },
            false,
        ),
    ];
    match kind {
        LayerKind::Conv2d => CONV2D,
        LayerKind::Maxpool2d | LayerKind::Avgpool2d => POOL2D,
        LayerKind::Linear => LINEAR,
        LayerKind::LeakyRelu => LEAKY_RELU,
        LayerKind::Dropout => DROPOUT,
        LayerKind::Batchnorm2d => BATCHNORM2D,
        LayerKind::Relu | LayerKind::Sigmoid | LayerKind::Tanh | LayerKind::Flatten => &[],
    }
}

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

    fn error_count(&self) -> usize {
        self.errors
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
    fn input(&mut self, model: &Model) -> Option<[usize; 3]> {
        let Some(input) = &model.input else {
            let span = model.name.as_ref().map_or(Span::new(0, 0), |n| n.span);
            self.push(
                Diagnostic::error(Code::MissingInput, "the spec has no `input` shape", span, "this model")
                    .help("add the per-sample input shape [channels, height, width], e.g. `input: [3, 32, 32]`"),
            );
            return None;
        };
        let bad = |message: String| {
            Diagnostic::error(
                Code::BadInput,
                message,
                input.span,
                "expected [channels, height, width]",
            )
            .help("write the per-sample input shape as three positive integers, e.g. [3, 32, 32]")
        };
        let ValueKind::List(items) = &input.kind else {
            self.push(bad(format!(
                "`input` must be a list of three integers, found {}",
                input.kind.describe()
            )));
            return None;
        };
        if items.len() != 3 {
            self.push(bad(format!(
                "`input` must have three dimensions [C, H, W], found {}",
                items.len()
            )));
            return None;
        }
        let mut dims = [0usize; 3];
        for (dim, item) in dims.iter_mut().zip(items) {
            match item.kind {
                ValueKind::Int(v) if v >= 1 && v as u64 <= MAX_DIM as u64 => *dim = v as usize,
                ValueKind::Int(v) if v >= 1 => {
                    self.push(too_large_dim(v, item.span));
                    return None;
                }
                ValueKind::Int(v) => {
                    self.push(Diagnostic::error(
                        Code::BadInput,
                        format!("input dimensions must be at least 1, found {v}"),
                        item.span,
                        "must be at least 1",
                    ));
                    return None;
                }
                ref other => {
                    self.push(Diagnostic::error(
                        Code::BadInput,
                        format!(
                            "input dimensions must be integers, found {}",
                            other.describe()
                        ),
                        item.span,
                        "expected an integer",
                    ));
                    return None;
                }
            }
        }
        let numel = dims.iter().map(|&d| d as u64).product::<u64>();
        if numel > MAX_ELEMENTS {
            self.push(
                Diagnostic::error(
                    Code::TooLarge,
                    format!("the input has {numel} elements per sample, more than the limit of {MAX_ELEMENTS}"),
                    input.span,
                    "too large",
                )
                .note(format!("{} = {numel}", dims.map(|d| d.to_string()).join("*"))),
            );
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
                self.push(
                    Diagnostic::error(
                        Code::InvalidName,
                        format!("`{}` is not a valid layer name", name.text),
                        name.span,
                        "not a state_dict prefix",
                    )
                    .note("a name is one or more dot-separated parts of letters, digits and `_`, like `fc1` or `layer1.0`")
                    .layer(name.text.clone()),
                );
            }
        }
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let Some(&earlier) = first.get(name.as_str()) else {
                first.insert(name, i);
                continue;
            };
            let span_of = |j: usize| layers[j].name.as_ref().map_or(layers[j].span, |n| n.span);
            let how = |j: usize| {
                if layers[j].name.is_some() {
                    "first used here".to_owned()
                } else {
                    format!("layer {j} is unnamed, so it is named `{j}`")
                }
            };
            self.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("two layers are named `{name}`"),
                    span_of(i),
                    "used again here",
                )
                .secondary(span_of(earlier), how(earlier))
                .note(format!("parameters are saved as `{name}.weight`, `{name}.bias`, ..., so names must be unique"))
                .help("rename one of the layers")
                .layer(name.clone()),
            );
        }
        names
    }

    /// Resolves the layer kind and checks its arguments' names, types and ranges. `None` when
    /// the kind is unknown or an argument is unusable.
    fn arguments(&mut self, layer: &Layer, name: &str) -> Option<(LayerKind, Args)> {
        let Some(kind) = LayerKind::from_keyword(&layer.kind.text) else {
            let mut diagnostic = Diagnostic::error(
                Code::UnknownLayer,
                format!("unknown layer kind `{}`", layer.kind.text),
                layer.kind.span,
                "not a layer kind",
            )
            .layer(name);
            diagnostic = match suggest::closest(
                &layer.kind.text,
                LayerKind::ALL.iter().map(|k| k.keyword()),
            ) {
                Some(best) => {
                    diagnostic.suggest(format!("did you mean `{best}`?"), layer.kind.span, best)
                }
                None => diagnostic.note(format!(
                    "the layer kinds are {}",
                    LayerKind::ALL
                        .map(|k| format!("`{}`", k.keyword()))
                        .join(", ")
                )),
            };
            self.push(diagnostic);
            return None;
        };
        let spec = signature(kind);
        let mut args = Args::default();
        let mut usable = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        // Keys suggested for misspelt arguments: no need to also call them missing.
        let mut suggested: Vec<&str> = Vec::new();
        for Arg { key, value } in &layer.args {
            let Some(arg_spec) = spec.iter().find(|s| s.key == key.text) else {
                let mut diagnostic = Diagnostic::error(
                    Code::UnknownArgument,
                    format!("`{}` has no argument `{}`", kind.keyword(), key.text),
                    key.span,
                    "unknown argument",
                )
                .layer(name);
                let keys = spec.iter().map(|s| s.key).chain(["name"]);
                diagnostic = match suggest::closest(&key.text, keys) {
                    Some(best) => {
                        suggested.push(best);
                        diagnostic.suggest(format!("did you mean `{best}`?"), key.span, best)
                    }
                    None if spec.is_empty() => diagnostic.note(format!(
                        "`{}` takes no arguments other than `name`",
                        kind.keyword()
                    )),
                    None => diagnostic.note(format!(
                        "`{}` takes {}",
                        kind.keyword(),
                        spec.iter()
                            .map(|s| format!("`{}`", s.key))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.push(diagnostic);
                continue;
            };
            if let Some(&first) = seen.get(key.text.as_str()) {
                self.push(
                    Diagnostic::error(
                        Code::DuplicateArgument,
                        format!("argument `{}` is given twice", key.text),
                        key.span,
                        "given again here",
                    )
                    .secondary(first, "first given here")
                    .layer(name),
                );
                usable = false;
                continue;
            }
            seen.insert(arg_spec.key, key.span);
            match self.typed(arg_spec, value, kind, name) {
                Some(typed) => {
                    args.values.insert(arg_spec.key, (typed, value.span));
                }
                None => usable = false,
            }
        }
        for missing in spec
            .iter()
            .filter(|s| s.required && !seen.contains_key(s.key))
        {
            usable = false;
            if suggested.contains(&missing.key) {
                continue;
            }
            self.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!("`{}` needs `{}`", kind.keyword(), missing.key),
                    layer.kind.span,
                    format!("`{}` missing", missing.key),
                )
                .help(format!(
                    "add `{}`, e.g. `{}: {}`",
                    missing.key,
                    missing.key,
                    example(missing.key)
                ))
                .layer(name),
            );
        }
        usable.then_some((kind, args))
    }

    /// Type- and range-checks one argument value.
    fn typed(
        &mut self,
        spec: &ArgSpec,
        value: &Value,
        kind: LayerKind,
        name: &str,
    ) -> Option<Typed> {
        let wrong_type = |expected: &str| {
            Diagnostic::error(
                Code::WrongType,
                format!(
                    "`{}` of `{}` must be {expected}, found {}",
                    spec.key,
                    kind.keyword(),
                    value.kind.describe()
                ),
                value.span,
                format!("expected {expected}"),
            )
            .layer(name)
        };
        match spec.ty {
            Ty::Size { min } => match value.kind {
                ValueKind::Int(v) => self
                    .size(spec.key, v, min, value.span, name)
                    .map(Typed::Int),
                _ => {
                    self.push(wrong_type("an integer"));
                    None
                }
            },
            Ty::Pair { min } => {
                let expected = "an integer or a [height, width] pair";
                match &value.kind {
                    ValueKind::Int(v) => {
                        let v = self.size(spec.key, *v, min, value.span, name)?;
                        Some(Typed::Pair([v, v]))
                    }
                    ValueKind::List(items) if items.len() == 2 => {
                        let mut pair = [0; 2];
                        for (slot, item) in pair.iter_mut().zip(items) {
                            let ValueKind::Int(v) = item.kind else {
                                self.push(
                                    Diagnostic::error(
                                        Code::WrongType,
                                        format!(
                                            "`{}` of `{}` must hold integers, found {}",
                                            spec.key,
                                            kind.keyword(),
                                            item.kind.describe()
                                        ),
                                        item.span,
                                        "expected an integer",
                                    )
                                    .layer(name),
                                );
                                return None;
                            };
                            *slot = self.size(spec.key, v, min, item.span, name)?;
                        }
                        Some(Typed::Pair(pair))
                    }
                    ValueKind::List(items) => {
                        self.push(wrong_type(expected).note(format!(
                            "found a list of {} values; a pair has 2",
                            items.len()
                        )));
                        None
                    }
                    _ => {
                        self.push(wrong_type(expected));
                        None
                    }
                }
            }
            Ty::Float {
                min,
                max,
                min_exclusive,
            } => {
                let v = match value.kind {
                    ValueKind::Float(v) => v,
                    ValueKind::Int(v) => v as f64,
                    _ => {
                        self.push(wrong_type("a number"));
                        return None;
                    }
                };
                let below = if min_exclusive { v <= min } else { v < min };
                if !v.is_finite() || below || v > max {
                    let range = match (min_exclusive, max == UNBOUNDED, min == -UNBOUNDED) {
                        (_, true, true) => "a finite number".to_owned(),
                        (true, true, false) => format!("greater than {min}"),
                        (false, true, false) => format!("at least {min}"),
                        _ => format!("between {min} and {max}"),
                    };
                    self.push(
                        Diagnostic::error(
                            Code::InvalidValue,
                            format!(
                                "`{}` of `{}` must be {range}, found {v}",
                                spec.key,
                                kind.keyword()
                            ),
                            value.span,
                            format!("must be {range}"),
                        )
                        .layer(name),
                    );
                    return None;
                }
                Some(Typed::Float(v))
            }
            Ty::Bool => match value.kind {
                ValueKind::Bool(b) => Some(Typed::Bool(b)),
                _ => {
                    self.push(wrong_type("true or false"));
                    None
                }
            },
        }
    }

    /// Range-checks an integer size: at least `min`, at most [`MAX_DIM`].
    fn size(&mut self, key: &str, v: i64, min: usize, span: Span, name: &str) -> Option<usize> {
        if v < min as i64 {
            let mut diagnostic = Diagnostic::error(
                Code::InvalidValue,
                format!("`{key}` must be at least {min}, found {v}"),
                span,
                format!("must be at least {min}"),
            )
            .layer(name);
            if key == "stride" {
                diagnostic = diagnostic.note("a stride of 0 would never move the window");
            }
            self.push(diagnostic);
            return None;
        }
        if v as u64 > MAX_DIM as u64 {
            self.push(too_large_dim(v, span).layer(name));
            return None;
        }
        Some(v as usize)
    }

    /// Computes a layer's output from its input. `None` when the output cannot be known.
    fn resolve(&mut self, cx: &LayerContext<'_>, flow: &Flow) -> Option<CheckedLayer> {
        let input = flow.shape;
        let (args, output, tensors, macs) = match cx.kind {
            LayerKind::Conv2d => {
                let [c, h, w] = self.image_input(cx, input)?;
                let a = cx.args;
                let in_channels = self.explicit_size(cx, flow, "in_channels", c, "channels");
                let conv = Conv2dArgs {
                    in_channels,
                    out_channels: a.int("out_channels")?,
                    kernel_size: a.pair("kernel_size")?,
                    stride: a.pair("stride").unwrap_or([1, 1]),
                    padding: a.pair("padding").unwrap_or([0, 0]),
                    dilation: a.pair("dilation").unwrap_or([1, 1]),
                    bias: a.bool("bias", true),
                };
                let windows = [0, 1].map(|i| Window {
                    kernel: conv.kernel_size[i],
                    stride: conv.stride[i],
                    padding: conv.padding[i],
                    dilation: conv.dilation[i],
                    ceil_mode: false,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "stride")?;
                let [kh, kw] = conv.kernel_size;
                let mut tensors = vec![tensor(
                    cx.name,
                    TensorRole::Weight,
                    vec![conv.out_channels, conv.in_channels, kh, kw],
                )];
                if conv.bias {
                    tensors.push(tensor(cx.name, TensorRole::Bias, vec![conv.out_channels]));
                    if cx.next_kind == Some(LayerKind::Batchnorm2d) {
                        self.push(
                            Diagnostic::new(
                                Code::BiasBeforeBatchNorm,
                                format!("the bias of {} is cancelled by the batchnorm2d after it", cx.title()),
                                cx.span_of("bias"),
                                "this bias has no effect",
                            )
                            .note("batchnorm2d subtracts the per-channel mean, which removes any per-channel constant")
                            .help("set `bias: false` to save the parameters")
                            .layer(cx.name),
                        );
                    }
                }
                let output = Shape::Chw([conv.out_channels, oh, ow]);
                // torchinfo: every weight and bias element is used once per output position.
                let per_position: u64 = tensors.iter().map(|t| t.numel() as u64).sum();
                let macs = per_position.saturating_mul((oh * ow) as u64);
                (LayerArgs::Conv2d(conv), output, tensors, macs)
            }
            LayerKind::Maxpool2d | LayerKind::Avgpool2d => {
                let [c, h, w] = self.image_input(cx, input)?;
                let a = cx.args;
                let kernel_size = a.pair("kernel_size")?;
                let pool = Pool2dArgs {
                    kernel_size,
                    stride: a.pair("stride").unwrap_or(kernel_size),
                    padding: a.pair("padding").unwrap_or([0, 0]),
                    ceil_mode: a.bool("ceil_mode", false),
                };
                for i in 0..2 {
                    if pool.padding[i] > pool.kernel_size[i] / 2 {
                        self.push(
                            Diagnostic::error(
                                Code::PoolPaddingTooLarge,
                                format!("the padding of {} is more than half its kernel size", cx.title()),
                                cx.span_of("padding"),
                                format!("padding {} > {} / 2", pool.padding[i], pool.kernel_size[i]),
                            )
                            .note(format!(
                                "PyTorch requires padding <= kernel_size / 2 (rounded down), here {} / 2 = {}",
                                pool.kernel_size[i],
                                pool.kernel_size[i] / 2
                            ))
                            .help(format!("use at most `padding: {}`", pool.kernel_size[i] / 2))
                            .layer(cx.name),
                        );
                        break;
                    }
                }
                let [kh, kw] = pool.kernel_size;
                if cx.kind == LayerKind::Maxpool2d && kh * kw > MAX_POOL_WINDOW {
                    self.push(
                        Diagnostic::error(
                            Code::TooLarge,
                            format!(
                                "the window of {} has {} positions, more than the limit of {MAX_POOL_WINDOW}",
                                cx.title(),
                                kh * kw
                            ),
                            cx.span_of("kernel_size"),
                            format!("{kh}*{kw} = {}", kh * kw),
                        )
                        .note("max pooling records where each window's maximum lies, in 16 bits")
                        .help("use a smaller kernel_size, or avgpool2d")
                        .layer(cx.name),
                    );
                    return None;
                }
                let windows = [0, 1].map(|i| Window {
                    kernel: pool.kernel_size[i],
                    stride: pool.stride[i],
                    padding: pool.padding[i],
                    dilation: 1,
                    ceil_mode: pool.ceil_mode,
                });
                let [oh, ow] = self.slide(cx, &windows, [h, w], "kernel_size")?;
                let output = Shape::Chw([c, oh, ow]);
                let args = if cx.kind == LayerKind::Maxpool2d {
                    LayerArgs::Maxpool2d(pool)
                } else {
                    LayerArgs::Avgpool2d(pool)
                };
                (args, output, Vec::new(), 0)
            }
            LayerKind::Relu => (LayerArgs::Relu, input, Vec::new(), 0),
            LayerKind::Sigmoid => (LayerArgs::Sigmoid, input, Vec::new(), 0),
            LayerKind::Tanh => (LayerArgs::Tanh, input, Vec::new(), 0),
            LayerKind::LeakyRelu => {
                let negative_slope = cx.args.float("negative_slope", 0.01) as f32;
                (
                    LayerArgs::LeakyRelu { negative_slope },
                    input,
                    Vec::new(),
                    0,
                )
            }
            LayerKind::Dropout => {
                let p = cx.args.float("p", 0.5) as f32;
                (LayerArgs::Dropout { p }, input, Vec::new(), 0)
            }
            LayerKind::Flatten => {
                if let Shape::Flat(n) = input {
                    self.push(
                        Diagnostic::new(
                            Code::RedundantFlatten,
                            format!(
                                "{} does nothing: its input [{n}] is already flat",
                                cx.title()
                            ),
                            cx.layer.kind.span,
                            "already flat",
                        )
                        .help("remove this layer")
                        .layer(cx.name),
                    );
                }
                (
                    LayerArgs::Flatten,
                    Shape::Flat(input.numel()),
                    Vec::new(),
                    0,
                )
            }
            LayerKind::Linear => {
                let in_features = match input {
                    Shape::Flat(n) => self.explicit_size(cx, flow, "in_features", n, "features"),
                    Shape::Chw([c, h, w]) => {
                        self.push(
                            Diagnostic::error(
                                Code::ExpectedFlat,
                                format!(
                                    "{} needs a flat input, but its input is {input}",
                                    cx.title()
                                ),
                                cx.layer.kind.span,
                                format!("receives {input}"),
                            )
                            .secondary(flow.origin.span, flow.origin.text.clone())
                            .note(format!(
                                "flatten of {input} gives {c}*{h}*{w} = {}",
                                c * h * w
                            ))
                            .help("insert `flatten` before this layer")
                            .layer(cx.name),
                        );
                        cx.args.int("in_features").unwrap_or(c * h * w)
                    }
                };
                let linear = LinearArgs {
                    in_features,
                    out_features: cx.args.int("out_features")?,
                    bias: cx.args.bool("bias", true),
                };
                let mut tensors = vec![tensor(
                    cx.name,
                    TensorRole::Weight,
                    vec![linear.out_features, linear.in_features],
                )];
                if linear.bias {
                    tensors.push(tensor(cx.name, TensorRole::Bias, vec![linear.out_features]));
                }
                let macs = tensors.iter().map(|t| t.numel() as u64).sum();
                let output = Shape::Flat(linear.out_features);
                (LayerArgs::Linear(linear), output, tensors, macs)
            }
            LayerKind::Batchnorm2d => {
                let [c, _, _] = self.image_input(cx, input)?;
                let num_features = self.explicit_size(cx, flow, "num_features", c, "channels");
                let bn = BatchNorm2dArgs {
                    num_features,
                    eps: cx.args.float("eps", 1e-5) as f32,
                    momentum: cx.args.float("momentum", 0.1) as f32,
                };
                let tensors = vec![
                    tensor(cx.name, TensorRole::Weight, vec![num_features]),
                    tensor(cx.name, TensorRole::Bias, vec![num_features]),
                    tensor(cx.name, TensorRole::RunningMean, vec![num_features]),
                    tensor(cx.name, TensorRole::RunningVar, vec![num_features]),
                    tensor(cx.name, TensorRole::NumBatchesTracked, Vec::new()),
                ];
                // torchinfo counts each weight and bias element once per sample.
                let macs = 2 * num_features as u64;
                (LayerArgs::Batchnorm2d(bn), input, tensors, macs)
            }
        };
        self.limits(cx, &output, &tensors)?;
        let params = tensors
            .iter()
            .filter(|t| t.role.is_trainable())
            .map(|t| t.numel() as u64)
            .sum();
        Some(CheckedLayer {
            name: cx.name.to_owned(),
            kind: cx.kind,
            args,
            input_shape: input,
            output_shape: output,
            tensors,
            params,
            macs,
            span: cx.layer.span,
        })
    }

    /// The `[C, H, W]` input of a convolution, pooling or batchnorm layer.
    fn image_input(&mut self, cx: &LayerContext<'_>, input: Shape) -> Option<[usize; 3]> {
        match input {
            Shape::Chw(dims) => Some(dims),
            Shape::Flat(_) => {
                self.push(
                    Diagnostic::error(
                        Code::ExpectedImage,
                        format!("{} needs a [channels, height, width] input, but its input is {input}", cx.title()),
                        cx.layer.kind.span,
                        format!("receives {input}"),
                    )
                    .note(format!("after `flatten` or `linear` the data is a flat vector; `{}` works on images", cx.kind.keyword()))
                    .help("move this layer before the `flatten`")
                    .layer(cx.name),
                );
                None
            }
        }
    }

    /// An inferable size (`in_channels`, `in_features`, `num_features`): the actual one, after
    /// checking an explicit value against it. The explicit value is kept so later layers see
    /// what the spec says.
    fn explicit_size(
        &mut self,
        cx: &LayerContext<'_>,
        flow: &Flow,
        key: &str,
        actual: usize,
        unit: &str,
    ) -> usize {
        let Some(written) = cx.args.int(key) else {
            return actual;
        };
        if written == actual {
            return actual;
        }
        let mut diagnostic = Diagnostic::error(
            Code::SizeMismatch,
            format!(
                "`{key}` of {} is {written}, but its input has {actual} {unit}",
                cx.title()
            ),
            cx.span_of(key),
            format!("{key} is {written}"),
        )
        .secondary(flow.origin.span, flow.origin.text.clone());
        let chain = if unit == "features" {
            flow.feature_chain()
        } else {
            None
        };
        diagnostic = diagnostic.note(
            chain.unwrap_or_else(|| format!("the input of {} is {}", cx.title(), flow.shape)),
        );
        self.push(
            diagnostic
                .suggest(
                    format!("set `{key}: {actual}`, or remove `{key}` to have it inferred"),
                    cx.span_of(key),
                    actual.to_string(),
                )
                .layer(cx.name),
        );
        written
    }

    /// Slides the windows over `[h, w]`; reports an output below 1 (error) or input rows and
    /// columns that no window reaches (one warning, pointing at `blame`).
    fn slide(
        &mut self,
        cx: &LayerContext<'_>,
        windows: &[Window; 2],
        input: [usize; 2],
        blame: &str,
    ) -> Option<[usize; 2]> {
        let mut out = [0usize; 2];
        let mut lost = Vec::new();
        let mut notes = Vec::new();
        for (i, axis) in ["height", "width"].into_iter().enumerate() {
            let window = windows[i];
            let slide = window.slide(input[i]);
            let formula = formula(&window, input[i]);
            if slide.output < 1 {
                self.push(
                    Diagnostic::error(
                        Code::OutputTooSmall,
                        format!("{} would output a {axis} of {}", cx.title(), slide.output),
                        cx.span_of("kernel_size"),
                        format!(
                            "a window of {} does not fit in {}",
                            window.effective_kernel(),
                            input[i] + 2 * window.padding
                        ),
                    )
                    .note(format!("output {axis} = {formula} = {}", slide.output))
                    .help("use a smaller kernel, stride or dilation, or more padding")
                    .layer(cx.name),
                );
                return None;
            }
            out[i] = slide.output as usize;
            if slide.dropped > 0 && window.stride > 1 {
                let unit = if i == 0 { "row" } else { "column" };
                let plural = if slide.dropped == 1 { "" } else { "s" };
                lost.push(format!("{} {unit}{plural}", slide.dropped));
                let verb = if slide.dropped == 1 { "is" } else { "are" };
                notes.push(format!(
                    "output {axis} = {formula} = {}: the last {} {unit}{plural} of {} {verb} never covered",
                    out[i], slide.dropped, input[i]
                ));
            }
        }
        if !lost.is_empty() {
            let lost = lost.join(" and ");
            let mut diagnostic = Diagnostic::new(
                Code::DropsInput,
                format!(
                    "{} ignores the last {lost} of its {}×{} input",
                    cx.title(),
                    input[0],
                    input[1]
                ),
                cx.span_of(blame),
                format!("the last {lost} are dropped"),
            )
            .layer(cx.name);
            for note in notes {
                diagnostic = diagnostic.note(note);
            }
            diagnostic = if matches!(cx.kind, LayerKind::Maxpool2d | LayerKind::Avgpool2d) {
                diagnostic
                    .note("PyTorch rounds pooling output sizes down; Caffe rounds them up, a classic porting trap")
                    .help("set `ceil_mode: true` to keep the edge (as Caffe does), or pad the input")
            } else {
                diagnostic.help("add padding or change the input size so the windows cover it")
            };
            self.push(diagnostic);
        }
        Some(out)
    }

    /// Rejects outputs and tensors beyond [`MAX_ELEMENTS`].
    fn limits(
        &mut self,
        cx: &LayerContext<'_>,
        output: &Shape,
        tensors: &[TensorInfo],
    ) -> Option<()> {
        let output_numel = output.dims().iter().map(|&d| d as u64).product::<u64>();
        let (what, numel, dims) = if output_numel > MAX_ELEMENTS {
            ("output", output_numel, output.dims())
        } else if let Some(t) = tensors
            .iter()
            .find(|t| t.shape.iter().map(|&d| d as u64).product::<u64>() > MAX_ELEMENTS)
        {
            (
                "weight",
                t.shape.iter().map(|&d| d as u64).product(),
                t.shape.clone(),
            )
        } else {
            return Some(());
        };
        self.push(
            Diagnostic::error(
                Code::TooLarge,
                format!("the {what} of {} would have {numel} elements, more than the limit of {MAX_ELEMENTS}", cx.title()),
                cx.layer.span,
                "too large",
            )
            .note(format!("{} = {numel}", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("*")))
            .layer(cx.name),
        );
        None
    }
}

/// `floor((32 + 2*2 - 1*(5-1) - 1) / 1) + 1`, the PyTorch output-size formula with numbers.
fn formula(window: &Window, input: usize) -> String {
    let rounding = if window.ceil_mode { "ceil" } else { "floor" };
    format!(
        "{rounding}(({input} + 2*{} - {}*({}-1) - 1) / {}) + 1",
        window.padding, window.dilation, window.kernel, window.stride
    )
}

fn tensor(layer: &str, role: TensorRole, shape: Vec<usize>) -> TensorInfo {
    TensorInfo {
        name: format!("{layer}.{}", role.suffix()),
        role,
        shape,
    }
}

fn too_large_dim(v: i64, span: Span) -> Diagnostic {
    // Both front-ends saturate integers beyond 64 bits to i64::MAX; the label shows the literal.
    let value = if v == i64::MAX {
        "the number".to_owned()
    } else {
        v.to_string()
    };
    Diagnostic::error(
        Code::TooLarge,
        format!("{value} is larger than the size limit of {MAX_DIM}"),
        span,
        "too large",
    )
    .note(format!("every size must be at most 2^20 = {MAX_DIM}"))
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

/// A plausible value for a required argument, for help lines.
fn example(key: &str) -> &'static str {
    match key {
        "kernel_size" => "3",
        "out_channels" => "32",
        "out_features" => "10",
        _ => "1",
    }
}
