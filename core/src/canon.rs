//! The canonical text form of a checked model, what checkpoints are keyed on: a version line,
//! the input, then one line per layer with its name, keyword and the arguments that differ from
//! their defaults, in the table's order (as PyTorch's module repr omits defaults), and its
//! inputs only where they are not the previous layer. A new argument with a default, and the
//! graph inputs, therefore leave every existing model's form, and every checkpoint, unchanged.

use std::fmt::Write;

use crate::config::Source;
use crate::kind::{ArgDefault, ArgInfo, ArgType, ArgValue};
use crate::model::Model;

/// The first line of the form; bumped only when the form itself changes.
pub const VERSION: &str = "cnnc-model v1";

/// The canonical form of `model` (its name is left out: renaming a model keeps its weights).
pub fn canonical(model: &Model) -> String {
    let [c, h, w] = model.input();
    let mut text = format!("{VERSION}\ninput {c} {h} {w}\n");
    for (index, layer) in model.layers().iter().enumerate() {
        let kind = layer.kind();
        let config = layer.config();
        text.push_str(&layer_line(
            layer.name(),
            kind.keyword(),
            kind.args(),
            |name| config.arg(name),
        ));
        if !layer.reads_previous(index) {
            text.push_str(&inputs_suffix(layer.inputs()));
        }
        text.push('\n');
    }
    text
}

/// ` inputs=[input, 3]`: where a layer reads, `input` for the model's input and a layer by its
/// index (names need not be unique; indices are).
fn inputs_suffix(inputs: &[Source]) -> String {
    let words: Vec<String> = inputs
        .iter()
        .map(|s| match s {
            Source::Input => "input".to_owned(),
            Source::Layer(i) => i.to_string(),
        })
        .collect();
    format!(" inputs=[{}]", words.join(", "))
}

/// One layer's line: `name keyword arg=value ...`, leaving out every argument whose value is
/// its default. Inferred arguments are always written.
pub fn layer_line(
    name: &str,
    keyword: &str,
    args: &[ArgInfo],
    value: impl Fn(&str) -> Option<ArgValue>,
) -> String {
    let mut line = format!("{name} {keyword}");
    for info in args {
        let Some(v) = value(info.name) else {
            continue;
        };
        let default = match info.default {
            ArgDefault::Required | ArgDefault::Inferred => None,
            ArgDefault::Int(d) => Some(match info.ty {
                ArgType::Pair { .. } => ArgValue::Pair([d, d]),
                _ => ArgValue::Int(d),
            }),
            ArgDefault::SameAs(other) => value(other),
            // Resolved numbers are f32: compare at that precision.
            ArgDefault::Float(d) => Some(ArgValue::Float(f64::from(d as f32))),
            ArgDefault::Bool(d) => Some(ArgValue::Bool(d)),
            ArgDefault::Dim(d) => Some(ArgValue::Dim(d)),
            ArgDefault::Word(d) => Some(ArgValue::Word(d)),
            ArgDefault::None => Some(ArgValue::None),
        };
        if default == Some(v) {
            continue;
        }
        let _ = match v {
            ArgValue::Int(n) => write!(line, " {}={n}", info.name),
            ArgValue::Pair([a, b]) if a == b => write!(line, " {}={a}", info.name),
            ArgValue::Pair([a, b]) => write!(line, " {}=[{a}, {b}]", info.name),
            ArgValue::Float(x) => write!(line, " {}={:?}", info.name, x as f32),
            ArgValue::Bool(b) => write!(line, " {}={b}", info.name),
            ArgValue::Dim(d) => write!(line, " {}={d}", info.name),
            ArgValue::Word(w) => write!(line, " {}={w}", info.name),
            ArgValue::None => write!(line, " {}=null", info.name),
        };
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Conv2dConfig, LayerConfig, LayerDef, NetworkDef, Pool2dConfig};
    use crate::kind::LayerKind;

    fn model() -> Model {
        let conv = LayerConfig::Conv2d(Conv2dConfig {
            padding: [2, 2],
            padding_end: [2, 2],
            ..Conv2dConfig::new(3, 8, [5, 5])
        });
        let pool = LayerConfig::MaxPool2d(Pool2dConfig::new([2, 2], [2, 2], [0, 0]));
        let layers = [("conv1", conv), ("1", LayerConfig::Relu), ("pool", pool)];
        let layers = layers
            .into_iter()
            .map(|(name, config)| LayerDef {
                name: name.to_owned(),
                config,
                inputs: vec![],
            })
            .collect();
        Model::new(
            Some("m".into()),
            NetworkDef {
                input: [3, 32, 32],
                layers,
            },
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_left_out() {
        assert_eq!(
            canonical(&model()),
            "cnnc-model v1\ninput 3 32 32\n\
             conv1 conv2d in_channels=3 out_channels=8 kernel_size=5 padding=2\n\
             1 relu\n\
             pool maxpool2d kernel_size=2\n"
        );
    }

    #[test]
    fn inputs_are_written_only_where_they_are_not_the_previous_layer() {
        let sequential = model();
        let mut def = sequential.def();
        // Writing the default inputs out keeps the form, so every checkpoint keeps its identity.
        def.layers[0].inputs = vec![Source::Input];
        def.layers[2].inputs = vec![Source::Layer(1)];
        let explicit = Model::new(None, def.clone()).unwrap();
        assert_eq!(canonical(&explicit), canonical(&sequential));
        def.layers.push(LayerDef {
            name: "cat".into(),
            config: LayerConfig::Concat(crate::config::ConcatConfig { dim: 1 }),
            inputs: vec![Source::Layer(2), Source::Layer(2)],
        });
        def.layers.push(LayerDef {
            name: "gate".into(),
            config: LayerConfig::Mul,
            inputs: vec![Source::Layer(3), Source::Layer(3)],
        });
        let graph = Model::new(None, def).unwrap();
        assert_eq!(
            canonical(&graph),
            format!(
                "{}cat concat inputs=[2, 2]\ngate mul inputs=[3, 3]\n",
                canonical(&sequential)
            )
        );
    }

    #[test]
    fn a_new_defaulted_argument_leaves_the_form_unchanged() {
        let model = model();
        let conv = &model.layers()[0];
        let before = layer_line("conv1", "conv2d", LayerKind::Conv2d.args(), |n| {
            conv.config().arg(n)
        });
        // The table as it would be with a new argument added, the layer using its default.
        let mut args = LayerKind::Conv2d.args().to_vec();
        args.push(ArgInfo {
            name: "future",
            ty: ArgType::Size { min: 1 },
            default: ArgDefault::Int(1),
            doc: "blocked connections from input to output channels",
        });
        let after = layer_line("conv1", "conv2d", &args, |n| {
            if n == "future" {
                Some(ArgValue::Int(1))
            } else {
                conv.config().arg(n)
            }
        });
        assert_eq!(before, after);
        let grouped = layer_line("conv1", "conv2d", &args, |n| {
            if n == "future" {
                Some(ArgValue::Int(2))
            } else {
                conv.config().arg(n)
            }
        });
        assert_eq!(grouped, format!("{before} future=2"));
    }

    #[test]
    fn same_padding_keeps_the_form_unless_it_is_uneven() {
        let line = |kernel: usize, padding: ArgValue| {
            let config = LayerConfig::from_args(LayerKind::Conv2d, |name| match name {
                "in_channels" => Some(ArgValue::Int(3)),
                "out_channels" => Some(ArgValue::Int(8)),
                "kernel_size" => Some(ArgValue::Int(kernel)),
                "padding" => Some(padding),
                _ => None,
            })
            .unwrap();
            layer_line("c", "conv2d", LayerKind::Conv2d.args(), |n| config.arg(n))
        };
        let head = "c conv2d in_channels=3 out_channels=8";
        // An odd kernel's `same` is the padding it always was: checkpoints keep their identity.
        assert_eq!(
            line(5, ArgValue::Word("same")),
            line(5, ArgValue::Pair([2, 2]))
        );
        assert_eq!(
            line(5, ArgValue::Word("same")),
            format!("{head} kernel_size=5 padding=2")
        );
        // An even kernel's pads one more pixel after the input: the word says so, and the form
        // differs from no padding and from a pixel on each side.
        let even = line(2, ArgValue::Word("same"));
        assert_eq!(even, format!("{head} kernel_size=2 padding=same"));
        assert_ne!(even, line(2, ArgValue::Pair([0, 0])));
        assert_ne!(even, line(2, ArgValue::Pair([1, 1])));
    }

    #[test]
    fn non_default_numbers_round_trip() {
        let line = layer_line("d", "dropout", LayerKind::Dropout.args(), |_| {
            Some(ArgValue::Float(f64::from(0.3f32)))
        });
        assert_eq!(line, "d dropout p=0.3");
        let line = layer_line("d", "dropout", LayerKind::Dropout.args(), |_| {
            Some(ArgValue::Float(f64::from(0.5f32)))
        });
        assert_eq!(line, "d dropout");
    }
}
