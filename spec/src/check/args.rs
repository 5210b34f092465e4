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
            diagnostic = match suggest::closest(
                &layer.kind.text,
                LayerKind::ALL.iter().map(|k| k.keyword()),
            ) {
                Some(best) => diagnostic.help(format!("did you mean `{best}`?")),
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
        let spec = kind.args();
        let mut args = Args::default();
        let mut usable = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        // Keys suggested for misspelt arguments: no need to also call them missing.
        let mut suggested: Vec<&str> = Vec::new();
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
                        diagnostic.help(format!("did you mean `{best}`?"))
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
        usable.then_some((kind, args))
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
                                spec.name,
                                kind.keyword()
                            ),
                            value.span,
                            format!("must be {range}"),
                        )
                        .layer(name),
                    );
                    return None;
                }
                Some(ArgValue::Float(v))
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

/// A plausible value for a required argument, for help lines.
fn example(key: &str) -> &'static str {
    match key {
        "kernel_size" => "3",
        "out_channels" => "32",
        "out_features" => "10",
        _ => "1",
    }
}
