//! Argument typing: each written argument checked against its kind's entry in the layer table
//! (name, type, range), with suggestions for misspelt names and the required ones reported
//! missing.

use std::collections::HashMap;

use cnnc_core::{ArgInfo, ArgType, ArgValue, LayerKind};

use super::{Checker, too_large_dim};
use crate::MAX_DIM;
use crate::ast::{Arg, Layer, Value, ValueKind};
use crate::diag::{Code, Diagnostic};
use crate::span::Span;
use crate::suggest;

/// Bound of the table's unbounded numbers.
const UNBOUNDED: f64 = f64::MAX;

/// A layer's arguments after type and range checks, by key.
#[derive(Default)]
pub(super) struct Args {
    values: HashMap<&'static str, (ArgValue, Span)>,
}

impl Args {
    /// Where argument `key` is written.
    pub(super) fn span(&self, key: &str) -> Option<Span> {
        self.values.get(key).map(|&(_, span)| span)
    }

    /// The value written for `key`.
    pub(super) fn value(&self, key: &str) -> Option<ArgValue> {
        self.values.get(key).map(|&(value, _)| value)
    }

    /// The integer written for `key`.
    pub(super) fn int(&self, key: &str) -> Option<usize> {
        match self.value(key) {
            Some(ArgValue::Int(v)) => Some(v),
            _ => None,
        }
    }
}

impl Checker {
    /// Resolves the layer kind and checks its arguments' names, types and ranges. `None` when
    /// the kind is unknown or an argument is unusable.
    pub(super) fn arguments(&mut self, layer: &Layer, name: &str) -> Option<(LayerKind, Args)> {
        let Some(kind) = LayerKind::from_keyword(&layer.kind.text) else {
            let mut diagnostic = Diagnostic::error(
                Code::UnknownLayer,
                format!("unknown layer kind `{}`", layer.kind.text),
                layer.kind.span,
                "not a layer kind",
            )
            .layer(name);
            let closest =
                suggest::closest(&layer.kind.text, LayerKind::ALL.iter().map(|k| k.keyword()));
            diagnostic = match (closest, unsupported_module(&layer.kind.text)) {
                // A PyTorch module cnnc lacks: the nearest spelling computes something else.
                (closest, Some((class, what))) => {
                    diagnostic = diagnostic.note(format!(
                        "`{}` is PyTorch's `{class}`, which {what}; cnnc does not support it yet",
                        layer.kind.text
                    ));
                    match closest.and_then(LayerKind::from_keyword) {
                        Some(near) => diagnostic.note(format!(
                            "`{}` is not a substitute: it computes {}",
                            near.keyword(),
                            near.computes()
                        )),
                        None => diagnostic,
                    }
                }
                (Some(best), None) => {
                    diagnostic.suggest(format!("did you mean `{best}`?"), layer.kind.span, best)
                }
                (None, None) => diagnostic.note(format!(
                    "the layer kinds are {}",
                    LayerKind::ALL
                        .map(|k| format!("`{}`", k.keyword()))
                        .join(", ")
                )),
            };
            self.push(diagnostic);
            return None;
        };
        let spec = kind.args();
        let mut args = Args::default();
        let mut usable = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        // Keys suggested for misspelt arguments: no need to also call them missing.
        let mut suggested: Vec<&str> = Vec::new();
        let mut same_padding = None;
        for Arg { key, value } in &layer.args {
            let Some(arg_spec) = spec.iter().find(|s| s.name == key.text) else {
                let mut diagnostic = Diagnostic::error(
                    Code::UnknownArgument,
                    format!("`{}` has no argument `{}`", kind.keyword(), key.text),
                    key.span,
                    "unknown argument",
                )
                .layer(name);
                let keys = spec.iter().map(|s| s.name).chain(["name"]);
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
                            .map(|s| format!("`{}`", s.name))
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
            seen.insert(arg_spec.name, key.span);
            if kind == LayerKind::Conv2d
                && arg_spec.name == "padding"
                && matches!(&value.kind, ValueKind::Str(word) if word == "same")
            {
                // Resolved once the kernel, stride and dilation are known.
                same_padding = Some(value.span);
                continue;
            }
            match self.typed(arg_spec, value, kind, name) {
                Some(typed) => {
                    args.values.insert(arg_spec.name, (typed, value.span));
                }
                None => usable = false,
            }
        }
        for missing in spec
            .iter()
            .filter(|s| s.is_required() && !seen.contains_key(s.name))
        {
            usable = false;
            if suggested.contains(&missing.name) {
                continue;
            }
            self.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!("`{}` needs `{}`", kind.keyword(), missing.name),
                    layer.kind.span,
                    format!("`{}` missing", missing.name),
                )
                .help(format!(
                    "add `{}`, e.g. `{}: {}`",
                    missing.name,
                    missing.name,
                    example(missing.name)
                ))
                .layer(name),
            );
        }
        if let Some(span) = same_padding {
            match self.same_padding(&args, span, name) {
                Some(padding) => {
                    args.values
                        .insert("padding", (ArgValue::Pair(padding), span));
                }
                None => usable = false,
            }
        }
        usable.then_some((kind, args))
    }

    /// `padding: same` of a convolution as pixels per side, PyTorch's rule: total padding
    /// `dilation * (kernel_size - 1)` per axis, refused with a stride above 1 as PyTorch refuses
    /// it. An odd total (an even kernel) would pad one pixel more on the bottom or right, which
    /// cnnc's symmetric padding cannot express yet: an error that says so.
    fn same_padding(&mut self, args: &Args, span: Span, name: &str) -> Option<[usize; 2]> {
        let pair = |key: &str, default: usize| match args.value(key) {
            Some(ArgValue::Pair(p)) => Some(p),
            Some(ArgValue::Int(v)) => Some([v, v]),
            None => Some([default, default]),
            _ => None,
        };
        // A missing kernel_size is reported on its own.
        let kernel = pair("kernel_size", 1)?;
        let [stride, dilation] = [pair("stride", 1)?, pair("dilation", 1)?];
        let total = [0, 1].map(|i| dilation[i].saturating_mul(kernel[i].saturating_sub(1)));
        if stride != [1, 1] {
            self.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    "`padding: same` of `conv2d` needs stride 1",
                    span,
                    "not supported for strided convolutions",
                )
                .secondary(args.span("stride").unwrap_or(span), "stride above 1")
                .note("PyTorch refuses padding='same' for strided convolutions: the output could not keep the input's size")
                .help(format!(
                    "write the padding in pixels, e.g. `padding: [{}, {}]`",
                    total[0] / 2,
                    total[1] / 2
                ))
                .layer(name),
            );
            return None;
        }
        if total.iter().any(|t| t % 2 == 1) {
            self.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    "`padding: same` of `conv2d` would pad unevenly, which is not supported yet",
                    span,
                    format!(
                        "needs {} rows and {} columns of padding in all",
                        total[0], total[1]
                    ),
                )
                .note("with an even kernel_size PyTorch pads one pixel more on the bottom or right; cnnc pads both sides equally")
                .help("use an odd kernel_size, or write the padding in pixels")
                .layer(name),
            );
            return None;
        }
        Some(total.map(|t| t / 2))
    }

    /// Type- and range-checks one argument value.
    fn typed(
        &mut self,
        spec: &ArgInfo,
        value: &Value,
        kind: LayerKind,
        name: &str,
    ) -> Option<ArgValue> {
        let wrong_type = |expected: &str| {
            Diagnostic::error(
                Code::WrongType,
                format!(
                    "`{}` of `{}` must be {expected}, found {}",
                    spec.name,
                    kind.keyword(),
                    value.kind.describe()
                ),
                value.span,
                format!("expected {expected}"),
            )
            .layer(name)
        };
        match spec.ty {
            ArgType::Size { min } => match value.kind {
                ValueKind::Int(v) => self
                    .size(spec.name, v, min, value.span, name)
                    .map(ArgValue::Int),
                _ => {
                    self.push(wrong_type("an integer"));
                    None
                }
            },
            ArgType::Pair { min } => {
                let expected = "an integer or a [height, width] pair";
                match &value.kind {
                    ValueKind::Int(v) => {
                        let v = self.size(spec.name, *v, min, value.span, name)?;
                        Some(ArgValue::Pair([v, v]))
                    }
                    ValueKind::Str(word) if kind == LayerKind::Conv2d && spec.name == "padding" => {
                        if word == "valid" {
                            return Some(ArgValue::Pair([0, 0]));
                        }
                        self.push(
                            wrong_type(expected)
                                .note("PyTorch's padding modes `same` and `valid` are the words it also takes"),
                        );
                        None
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
                                            spec.name,
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
                            *slot = self.size(spec.name, v, min, item.span, name)?;
                        }
                        Some(ArgValue::Pair(pair))
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
            ArgType::Float {
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
                let outside = |v: f64| {
                    let below = if min_exclusive { v <= min } else { v < min };
                    !v.is_finite() || below || v > max
                };
                // Resolved numbers are f32, as PyTorch stores them: the rounded value must be in
                // range too (1e-50 rounds to 0, 1e300 to infinity).
                let stored = v as f32;
                if outside(v) || outside(f64::from(stored)) {
                    let range = match (min_exclusive, max == UNBOUNDED, min == -UNBOUNDED) {
                        (_, true, true) => "a finite number".to_owned(),
                        (true, true, false) => format!("greater than {min}"),
                        (false, true, false) => format!("at least {min}"),
                        _ => format!("between {min} and {max}"),
                    };
                    let mut diagnostic = Diagnostic::error(
                        Code::InvalidValue,
                        format!(
                            "`{}` of `{}` must be {range}, found {}",
                            spec.name,
                            kind.keyword(),
                            number(v)
                        ),
                        value.span,
                        format!("must be {range}"),
                    )
                    .layer(name);
                    if !outside(v) {
                        diagnostic = diagnostic.note(format!(
                            "cnnc computes in 32-bit floats, where {} is {}",
                            number(v),
                            number(f64::from(stored))
                        ));
                    }
                    self.push(diagnostic);
                    return None;
                }
                Some(ArgValue::Float(v))
            }
            ArgType::Word { options } => {
                let expected = options
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                match &value.kind {
                    ValueKind::Str(word) => match options.iter().find(|o| **o == word.as_str()) {
                        Some(option) => Some(ArgValue::Word(option)),
                        None => {
                            let mut diagnostic = Diagnostic::error(
                                Code::InvalidValue,
                                format!(
                                    "`{}` of `{}` must be one of {expected}, found `{word}`",
                                    spec.name,
                                    kind.keyword()
                                ),
                                value.span,
                                "not one of its words",
                            )
                            .layer(name);
                            if let Some(best) = suggest::closest(word, options.iter().copied()) {
                                diagnostic = diagnostic.suggest(
                                    format!("did you mean `{best}`?"),
                                    value.span,
                                    best,
                                );
                            }
                            self.push(diagnostic);
                            None
                        }
                    },
                    _ => {
                        self.push(wrong_type(&format!("one of {expected}")));
                        None
                    }
                }
            }
            ArgType::Bool => match value.kind {
                ValueKind::Bool(b) => Some(ArgValue::Bool(b)),
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
}

/// PyTorch modules that cnnc does not have, by their name lower-cased without underscores,
/// with their class and what they compute: a spec naming one gets no suggestion of a kind that
/// is spelt alike but computes something else (`dropout2d` is not `dropout`).
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    ("dropout1d", "Dropout1d", "zeroes whole channels"),
    ("dropout2d", "Dropout2d", "zeroes whole channels"),
    ("dropout3d", "Dropout3d", "zeroes whole channels"),
    (
        "alphadropout",
        "AlphaDropout",
        "keeps the mean and variance of SELU activations",
    ),
    ("conv1d", "Conv1d", "convolves over one dimension"),
    ("conv3d", "Conv3d", "convolves over three dimensions"),
    (
        "convtranspose2d",
        "ConvTranspose2d",
        "upsamples by a transposed convolution",
    ),
    ("maxpool1d", "MaxPool1d", "pools over one dimension"),
    ("maxpool3d", "MaxPool3d", "pools over three dimensions"),
    ("avgpool1d", "AvgPool1d", "pools over one dimension"),
    ("avgpool3d", "AvgPool3d", "pools over three dimensions"),
    (
        "adaptiveavgpool2d",
        "AdaptiveAvgPool2d",
        "pools to a fixed output size",
    ),
    (
        "adaptivemaxpool2d",
        "AdaptiveMaxPool2d",
        "pools to a fixed output size",
    ),
    (
        "batchnorm1d",
        "BatchNorm1d",
        "normalises flat or 1-D inputs",
    ),
    ("batchnorm3d", "BatchNorm3d", "normalises 3-D inputs"),
    ("relu6", "ReLU6", "clamps at 0 and 6"),
    ("prelu", "PReLU", "learns its negative slope"),
];

/// The PyTorch module `kind` names, if it is one cnnc lacks ([`UNSUPPORTED`]).
fn unsupported_module(kind: &str) -> Option<(&'static str, &'static str)> {
    let key: String = kind
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    UNSUPPORTED
        .iter()
        .find(|(name, _, _)| *name == key)
        .map(|&(_, class, what)| (class, what))
}

/// A number as messages show it: as written when short, else in exponent form (`1e300`).
fn number(v: f64) -> String {
    let plain = v.to_string();
    if plain.len() > 16 {
        format!("{v:e}")
    } else {
        plain
    }
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
