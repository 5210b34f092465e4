//! PyTorch export: a checked model as `model.py`, a self-contained `nn.Module` whose
//! `state_dict()` keys are cnnc's weight names (so cnnc's safetensors files load with
//! `strict=True`), and `train.py`, a torchrun + DistributedDataParallel training script reading
//! cnnc's datasets with cnnc's recipe flags and writing cnnc-loadable checkpoints.

use std::fmt::Write as _;

use cnnc_core::{LayerConfig, Model, Shape, Source};

/// What [`export`] needs besides the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PytorchOptions {
    /// The spec's `model:` name (made a Python class name by [`class_name`]).
    pub model_name: String,
    /// The spec file, named in the files' headers.
    pub spec_file: String,
    /// The model's spec hash, recorded in checkpoints as `cnnc train` records it.
    pub spec_hash: String,
}

/// `name` as a Python class name: letters, digits and `_` kept, anything else dropped, and a
/// leading digit (or nothing at all) prefixed with `Model`.
pub fn class_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    match kept.chars().next() {
        Some(c) if !c.is_ascii_digit() => kept,
        _ => format!("Model{kept}"),
    }
}

/// A Python string literal of `text` (ASCII, escaped).
fn py_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            ' '..='~' => out.push(c),
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn pair(p: [usize; 2]) -> String {
    format!("({}, {})", p[0], p[1])
}

/// A float as Python reads it back to the same `f32` (Rust's shortest round-trip form).
fn py_float(v: f32) -> String {
    format!("{v:?}")
}

/// The `torch.nn` constructor of one layer, or for the merge kinds, which PyTorch writes as
/// expressions in `forward` rather than modules, the word `forward` acts on.
pub fn module_expr(config: &LayerConfig) -> String {
    match config {
        LayerConfig::Add => py_str("add"),
        LayerConfig::Concat(_) => py_str("cat"),
        LayerConfig::Mul => py_str("mul"),
        LayerConfig::Conv2d(c) => format!(
            "nn.Conv2d({}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, \
             bias={}, padding_mode={})",
            c.in_channels,
            c.out_channels,
            pair(c.kernel_size),
            pair(c.stride),
            // Uneven padding is only ever `same`'s, which PyTorch spells so.
            if c.is_symmetric() {
                pair(c.padding)
            } else {
                py_str("same")
            },
            pair(c.dilation),
            c.groups,
            py_bool(c.bias),
            py_str(c.padding_mode.word())
        ),
        LayerConfig::ConvTranspose2d(c) => format!(
            "nn.ConvTranspose2d({}, {}, kernel_size={}, stride={}, padding={}, \
             output_padding={}, groups={}, bias={}, dilation={})",
            c.in_channels,
            c.out_channels,
            pair(c.kernel_size),
            pair(c.stride),
            pair(c.padding),
            pair(c.output_padding),
            c.groups,
            py_bool(c.bias),
            pair(c.dilation)
        ),
        LayerConfig::MaxPool2d(c) => format!(
            "nn.MaxPool2d(kernel_size={}, stride={}, padding={}, dilation={}, ceil_mode={})",
            pair(c.kernel_size),
            pair(c.stride),
            pair(c.padding),
            pair(c.dilation),
            py_bool(c.ceil_mode)
        ),
        LayerConfig::AvgPool2d(c) => format!(
            "nn.AvgPool2d(kernel_size={}, stride={}, padding={}, ceil_mode={}, \
             count_include_pad={}, divisor_override={})",
            pair(c.kernel_size),
            pair(c.stride),
            pair(c.padding),
            py_bool(c.ceil_mode),
            py_bool(c.count_include_pad),
            c.divisor_override
                .map_or_else(|| "None".to_owned(), |d| d.to_string())
        ),
        LayerConfig::Linear(c) => format!(
            "nn.Linear({}, {}, bias={})",
            c.in_features,
            c.out_features,
            py_bool(c.bias)
        ),
        LayerConfig::BatchNorm2d(c) => format!(
            "nn.BatchNorm2d({}, eps={}, momentum={}, affine={}, track_running_stats={})",
            c.num_features,
            py_float(c.eps),
            c.momentum.map_or_else(|| "None".to_owned(), py_float),
            py_bool(c.affine),
            py_bool(c.track_running_stats)
        ),
        LayerConfig::GroupNorm(c) => format!(
            "nn.GroupNorm({}, {}, eps={}, affine={})",
            c.num_groups,
            c.num_channels,
            py_float(c.eps),
            py_bool(c.affine)
        ),
        LayerConfig::Flatten { start_dim, end_dim } => {
            format!("nn.Flatten(start_dim={start_dim}, end_dim={end_dim})")
        }
        LayerConfig::LeakyRelu { negative_slope } => {
            format!("nn.LeakyReLU(negative_slope={})", py_float(*negative_slope))
        }
        LayerConfig::Dropout { p } => format!("nn.Dropout(p={})", py_float(*p)),
        LayerConfig::Dropout2d { p } => format!("nn.Dropout2d(p={})", py_float(*p)),
        LayerConfig::AdaptiveAvgPool2d { output_size } => {
            format!("nn.AdaptiveAvgPool2d({})", pair(*output_size))
        }
        LayerConfig::AdaptiveMaxPool2d { output_size } => {
            format!("nn.AdaptiveMaxPool2d({})", pair(*output_size))
        }
        LayerConfig::Upsample(up) => {
            let size =
                |v: Option<[usize; 2]>| v.map_or("None".to_owned(), |[h, w]| format!("({h}, {w})"));
            let factor = up
                .scale_factor
                .map_or("None".to_owned(), |[h, w]| format!("({h}.0, {w}.0)"));
            let align = up
                .align_corners
                .map_or("None", |a| if a { "True" } else { "False" });
            format!(
                "nn.Upsample(size={}, scale_factor={factor}, mode=\"{}\", align_corners={align})",
                size(up.size),
                up.mode.word()
            )
        }
        LayerConfig::Gelu { approximate } => {
            format!("nn.GELU(approximate={})", py_str(approximate.word()))
        }
        LayerConfig::Elu { alpha } => format!("nn.ELU(alpha={})", py_float(*alpha)),
        LayerConfig::Softmax { dim } => format!("nn.Softmax(dim={dim})"),
        LayerConfig::LogSoftmax { dim } => format!("nn.LogSoftmax(dim={dim})"),
        LayerConfig::Prelu { num_parameters } => {
            format!("nn.PReLU(num_parameters={num_parameters})")
        }
        LayerConfig::Relu
        | LayerConfig::Sigmoid
        | LayerConfig::Tanh
        | LayerConfig::Relu6
        | LayerConfig::Silu
        | LayerConfig::Hardswish
        | LayerConfig::Hardsigmoid
        | LayerConfig::Identity => format!("nn.{}()", config.kind().torch_name()),
    }
}

/// `model.py`: the module class, built without arguments.
pub fn model_py(model: &Model, options: &PytorchOptions) -> String {
    let class = class_name(&options.model_name);
    let [c, h, w] = model.input();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\"\"\"{class}: written by `cnnc export --to pytorch` from {}; edit the spec, not this file.\n\n\
         state_dict() keys are cnnc's weight names, so a cnnc safetensors file loads with\n\
         `model.load_state_dict(safetensors.torch.load_file(path), strict=True)`.\n\"\"\"\n\n\
         import torch\n\
         from torch import nn\n\n\
         INPUT_SHAPE = ({c}, {h}, {w})\n\
         \"\"\"Per-sample input, [channels, height, width].\"\"\"\n\n\n\
         def _put(root, path, module):\n    \
             \"\"\"Registers `module` at the dotted `path`, making plain containers on the way.\"\"\"\n    \
             *parents, leaf = path.split(\".\")\n    \
             for part in parents:\n        \
                 if part not in root._modules:\n            \
                     root.add_module(part, nn.Module())\n        \
                 root = root._modules[part]\n    \
             root.add_module(leaf, module)\n\n\n\
         class {class}(nn.Module):\n    \
             \"\"\"The spec's network; forward takes [N, {c}, {h}, {w}] and returns [N, {}].\"\"\"\n\n    \
             # (state_dict prefix, the layers it reads (-1: the model input), its module, or the\n    \
             # merge `forward` computes: add (left to right), cat (channels) or mul).\n    \
             LAYERS = [",
        py_str(&options.spec_file),
        model.output_shape().numel()
    );
    for layer in model.layers() {
        let inputs: Vec<String> = layer
            .inputs()
            .iter()
            .map(|source| match source {
                Source::Input => "-1".to_owned(),
                Source::Layer(i) => i.to_string(),
            })
            .collect();
        let make = match layer.config() {
            LayerConfig::Add | LayerConfig::Concat(_) | LayerConfig::Mul => {
                module_expr(layer.config())
            }
            config => format!("lambda: {}", module_expr(config)),
        };
        let _ = writeln!(
            out,
            "        ({}, [{}], {make}),  # -> {}",
            py_str(layer.name()),
            inputs.join(", "),
            shape_text(layer.output_shape())
        );
    }
    out.push_str(MODEL_TAIL);
    out
}

fn shape_text(shape: Shape) -> String {
    let dims: Vec<String> = shape.dims().iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// `train.py`: torchrun training of `model.py`'s class.
pub fn train_py(model: &Model, options: &PytorchOptions) -> String {
    let class = class_name(&options.model_name);
    TRAIN_PY
        .replace("{class}", &class)
        .replace("{spec_file}", &py_str(&options.spec_file))
        .replace("{spec_hash}", &py_str(&options.spec_hash))
        .replace("{classes}", &model.output_shape().numel().to_string())
}

/// Both files, `(file name, text)`.
pub fn export(model: &Model, options: &PytorchOptions) -> Vec<(&'static str, String)> {
    vec![
        ("model.py", model_py(model, options)),
        ("train.py", train_py(model, options)),
    ]
}

const TRAIN_PY: &str = include_str!("train.py.in");

/// The end of `model.py`'s class: building the module tree, and `forward` over `LAYERS`.
const MODEL_TAIL: &str = r#"    ]

    def __init__(self):
        super().__init__()
        for name, _, make in self.LAYERS:
            if callable(make):
                _put(self, name, make())
        # A plain list is not registered again: the modules live in the tree above.
        self._run = [
            self.get_submodule(name) if callable(make) else make for name, _, make in self.LAYERS
        ]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        outputs = []
        for (_, sources, _), layer in zip(self.LAYERS, self._run):
            xs = [input if i < 0 else outputs[i] for i in sources]
            if layer == "add":
                y = xs[0]
                for x in xs[1:]:
                    y = y + x
            elif layer == "cat":
                y = torch.cat(xs, dim=1)
            elif layer == "mul":
                y = xs[0] * xs[1]
            else:
                y = layer(xs[0])
            outputs.append(y)
        return outputs[-1]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_core::{Conv2dConfig, PaddingMode};

    #[test]
    fn class_names_are_python_identifiers() {
        assert_eq!(class_name("ResNet20"), "ResNet20");
        assert_eq!(class_name("my-net v2"), "mynetv2");
        assert_eq!(class_name("3d"), "Model3d");
        assert_eq!(class_name("ü"), "Model");
        assert_eq!(py_str("a\"b\\c\u{e9}"), "\"a\\\"b\\\\c\\U000000e9\"");
    }

    #[test]
    fn uneven_padding_is_written_as_same() {
        let conv = |kernel| {
            let [padding, padding_end] = Conv2dConfig::same_padding([kernel, kernel], [1, 1]);
            module_expr(&LayerConfig::Conv2d(Conv2dConfig {
                padding,
                padding_end,
                padding_mode: PaddingMode::Reflect,
                ..Conv2dConfig::new(3, 4, [kernel, kernel])
            }))
        };
        assert_eq!(
            conv(4),
            "nn.Conv2d(3, 4, kernel_size=(4, 4), stride=(1, 1), padding=\"same\", \
             dilation=(1, 1), groups=1, bias=True, padding_mode=\"reflect\")"
        );
        // An even total is the pixels it always was.
        assert!(conv(3).contains("padding=(1, 1)"), "{}", conv(3));
    }

    #[test]
    fn a_graph_model_py() {
        let options = PytorchOptions {
            model_name: "G".into(),
            spec_file: "g.yaml".into(),
            spec_hash: "0".into(),
        };
        insta::assert_snapshot!(model_py(&crate::export::graph_tests::graph(), &options));
    }
}
