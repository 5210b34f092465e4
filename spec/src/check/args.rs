//! Argument typing: each written argument checked against its kind's entry in the layer table
//! (name, type, range), with suggestions for misspelt names and the required ones reported
//! missing.

use std::collections::HashMap;

use cnnc_core::{ArgInfo, ArgType, ArgValue, LayerKind};

use super::Checker;
use super::errors::CheckError;
use crate::MAX_DIM;
use crate::ast::{Arg, Layer, Value, ValueKind};
use crate::span::Span;
use crate::suggest;

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
            let keywords = LayerKind::ALL.iter().map(|k| k.keyword());
            let blocks = self.block_names.iter().map(String::as_str);
            let closest =
                suggest::closest(&layer.kind.text, keywords.chain(blocks)).map(str::to_owned);
            self.report(CheckError::UnknownLayer {
                span: layer.kind.span,
                kind: layer.kind.text.clone(),
                layer: name.to_owned(),
                closest,
                unsupported: unsupported_module(&layer.kind.text),
            });
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
                let keys = spec.iter().map(|s| s.name).chain(["name"]);
                let best = suggest::closest(&key.text, keys);
                suggested.extend(best);
                self.report(CheckError::UnknownArgument {
                    span: key.span,
                    kind,
                    key: key.text.clone(),
                    layer: name.to_owned(),
                    best,
                });
                continue;
            };
            if let Some(&first) = seen.get(key.text.as_str()) {
                self.report(CheckError::DuplicateArgument {
                    span: key.span,
                    first,
                    key: key.text.clone(),
                    layer: name.to_owned(),
                });
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
            self.report(CheckError::MissingArgument {
                span: layer.kind.span,
                kind,
                key: missing.name,
                layer: name.to_owned(),
            });
        }
        if kind == LayerKind::Upsample && usable && !self.upsample_arguments(&args, layer, name) {
            usable = false;
        }
        if let Some(span) = same_padding {
            if self.same_padding(&args, span, name) {
                // Resolved to pixels with the rest (`LayerConfig::from_args`).
                args.values
                    .insert("padding", (ArgValue::Word("same"), span));
            } else {
                usable = false;
            }
        }
        usable.then_some((kind, args))
    }

    /// Whether a convolution's `padding: same` is one PyTorch takes: stride 1 (PyTorch refuses
    /// it for strided convolutions, whose output could not keep the input's size). Any kernel
    /// and dilation will do: an odd total `dilation * (kernel_size - 1)` pads the extra pixel
    /// on the bottom or right, as PyTorch does.
    fn same_padding(&mut self, args: &Args, span: Span, name: &str) -> bool {
        let pair = |key: &str, default: usize| match args.value(key) {
            Some(ArgValue::Pair(p)) => Some(p),
            Some(ArgValue::Int(v)) => Some([v, v]),
            None => Some([default, default]),
            _ => None,
        };
        // A missing or mistyped kernel_size or stride is reported on its own.
        let (Some(kernel), Some(stride), Some(dilation)) = (
            pair("kernel_size", 1),
            pair("stride", 1),
            pair("dilation", 1),
        ) else {
            return false;
        };
        if stride == [1, 1] {
            return true;
        }
        let total = [0, 1].map(|i| dilation[i].saturating_mul(kernel[i].saturating_sub(1)));
        self.report(CheckError::SamePaddingStrided {
            span,
            stride: args.span("stride").unwrap_or(span),
            total,
            layer: name.to_owned(),
        });
        false
    }

    /// An upsample's `size` and `scale_factor` (exactly one, as PyTorch requires) and its
    /// `align_corners` (only with `bilinear`); reports a conflict and returns whether there was
    /// none. A `null` counts as not written.
    fn upsample_arguments(&mut self, args: &Args, layer: &Layer, name: &str) -> bool {
        let given = |key: &str| !matches!(args.value(key), None | Some(ArgValue::None));
        let nearest = !matches!(args.value("mode"), Some(ArgValue::Word("bilinear")));
        let span = |key: &str| args.span(key).unwrap_or(layer.kind.span);
        let (span, both, align_corners) = if nearest && given("align_corners") {
            (span("align_corners"), None, true)
        } else {
            match (given("size"), given("scale_factor")) {
                (true, true) => (span("size"), Some(span("scale_factor")), false),
                (false, false) => (layer.kind.span, None, false),
                _ => return true,
            }
        };
        self.report(CheckError::UpsampleArguments {
            layer: name.to_owned(),
            span,
            both,
            align_corners,
        });
        false
    }

    /// Type- and range-checks one argument value.
    fn typed(
        &mut self,
        spec: &ArgInfo,
        value: &Value,
        kind: LayerKind,
        name: &str,
    ) -> Option<ArgValue> {
        let wrong_list = |expected: &'static str, list_len| CheckError::WrongType {
            span: value.span,
            kind,
            key: spec.name,
            expected,
            found: value.kind.describe(),
            list_len,
            layer: name.to_owned(),
        };
        let wrong_type = |expected| wrong_list(expected, None);
        match spec.ty {
            ArgType::Optional(inner) => match (&value.kind, *inner) {
                (ValueKind::Null, _) => Some(ArgValue::None),
                (ValueKind::Int(_) | ValueKind::Float(_), ArgType::Float { .. })
                | (ValueKind::Int(_), ArgType::Size { .. }) => self.typed(
                    &ArgInfo {
                        ty: *inner,
                        ..*spec
                    },
                    value,
                    kind,
                    name,
                ),
                (_, ArgType::Float { .. }) => {
                    self.report(wrong_type("a number or null"));
                    None
                }
                (_, ArgType::Size { .. }) => {
                    self.report(wrong_type("an integer or null"));
                    None
                }
                _ => self.typed(
                    &ArgInfo {
                        ty: *inner,
                        ..*spec
                    },
                    value,
                    kind,
                    name,
                ),
            },
            ArgType::Size { min } => match value.kind {
                ValueKind::Int(v) => self
                    .size(spec.name, v, min, value.span, name)
                    .map(ArgValue::Int),
                _ => {
                    self.report(wrong_type("an integer"));
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
                        self.report(CheckError::PaddingWord {
                            span: value.span,
                            found: value.kind.describe(),
                            layer: name.to_owned(),
                        });
                        None
                    }
                    ValueKind::List(items) if items.len() == 2 => {
                        let mut pair = [0; 2];
                        for (slot, item) in pair.iter_mut().zip(items) {
                            let ValueKind::Int(v) = item.kind else {
                                self.report(CheckError::PairItemNotInt {
                                    span: item.span,
                                    kind,
                                    key: spec.name,
                                    found: item.kind.describe(),
                                    layer: name.to_owned(),
                                });
                                return None;
                            };
                            *slot = self.size(spec.name, v, min, item.span, name)?;
                        }
                        Some(ArgValue::Pair(pair))
                    }
                    ValueKind::List(items) => {
                        self.report(wrong_list(expected, Some(items.len())));
                        None
                    }
                    _ => {
                        self.report(wrong_type(expected));
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
                        self.report(wrong_type("a number"));
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
                    self.report(CheckError::OutOfRange {
                        span: value.span,
                        kind,
                        key: spec.name,
                        min,
                        max,
                        min_exclusive,
                        value: v,
                        stored: (!outside(v)).then_some(f64::from(stored)),
                        layer: name.to_owned(),
                    });
                    return None;
                }
                Some(ArgValue::Float(v))
            }
            ArgType::Dim => match value.kind {
                // Its range depends on the input's rank: the shape rule checks it.
                ValueKind::Int(v) => Some(ArgValue::Dim(v)),
                _ => {
                    self.report(wrong_type("an integer"));
                    None
                }
            },
            ArgType::Choice(words) => {
                let found = match &value.kind {
                    ValueKind::Str(word) => match words.iter().find(|w| **w == word.as_str()) {
                        Some(w) => return Some(ArgValue::Word(w)),
                        None => Ok(word.clone()),
                    },
                    other => Err(other.describe()),
                };
                self.report(CheckError::BadChoice {
                    span: value.span,
                    kind,
                    key: spec.name,
                    words,
                    found,
                    layer: name.to_owned(),
                });
                None
            }
            ArgType::Bool => match value.kind {
                ValueKind::Bool(b) => Some(ArgValue::Bool(b)),
                _ => {
                    self.report(wrong_type("true or false"));
                    None
                }
            },
        }
    }

    /// Range-checks an integer size: at least `min`, at most [`MAX_DIM`].
    fn size(&mut self, key: &str, v: i64, min: usize, span: Span, name: &str) -> Option<usize> {
        if v < min as i64 {
            self.report(CheckError::BelowMin {
                span,
                key: key.to_owned(),
                min,
                value: v,
                layer: name.to_owned(),
            });
            return None;
        }
        if v as u64 > MAX_DIM as u64 {
            self.report(CheckError::DimTooLarge {
                span,
                value: v,
                layer: Some(name.to_owned()),
            });
            return None;
        }
        Some(v as usize)
    }
}

/// PyTorch modules that cnnc does not have, by their name lower-cased without underscores,
/// with their class and what they compute: a spec naming one gets no suggestion of a kind that
/// is spelt alike but computes something else (`dropout3d` is not `dropout`).
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    ("dropout1d", "Dropout1d", "zeroes whole channels"),
    ("dropout3d", "Dropout3d", "zeroes whole channels"),
    (
        "alphadropout",
        "AlphaDropout",
        "keeps the mean and variance of SELU activations",
    ),
    ("conv1d", "Conv1d", "convolves over one dimension"),
    ("conv3d", "Conv3d", "convolves over three dimensions"),
    ("maxpool1d", "MaxPool1d", "pools over one dimension"),
    ("maxpool3d", "MaxPool3d", "pools over three dimensions"),
    ("avgpool1d", "AvgPool1d", "pools over one dimension"),
    ("avgpool3d", "AvgPool3d", "pools over three dimensions"),
    (
        "batchnorm1d",
        "BatchNorm1d",
        "normalises flat or 1-D inputs",
    ),
    ("batchnorm3d", "BatchNorm3d", "normalises 3-D inputs"),
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
