//! Property tests: no input makes the parsers, the checker or the renderer panic, and generated
//! valid models round-trip between YAML and the DSL with identical IR and resolved models.

use cnnc_spec::{Format, Model, Source};
use proptest::prelude::*;

/// Parses, checks and renders `text` as `format`; only a panic can fail this.
fn exercise(text: &str, format: Format) {
    let source = Source::new("fuzz", text, format);
    let diagnostics = match cnnc_spec::parse(&source) {
        Ok(model) => {
            let _ = cnnc_spec::to_yaml(&model);
            let _ = cnnc_spec::to_dsl(&model);
            cnnc_spec::check(&model).diagnostics
        }
        Err(diagnostics) => diagnostics,
    };
    for diagnostic in &diagnostics {
        let _ = cnnc_spec::render(diagnostic, &source, false);
        let _ = cnnc_spec::JsonDiagnostic::new(diagnostic, &source);
    }
    // Fixes apply (or are refused) without a panic, and what they make parses or is reported.
    if let Ok((fixed, _)) = cnnc_spec::apply_fixes(&source, &diagnostics) {
        let fixed = Source::new("fixed", fixed, format);
        let _ = cnnc_spec::parse(&fixed).map(|model| cnnc_spec::check(&model));
    }
}

/// Fragments of real specs, so random sequences reach past the first token.
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "model",
        "input",
        "layers",
        ":",
        " ",
        "\n",
        "  - ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ",",
        "=",
        "#",
        "\"",
        "conv2d",
        "maxpool2d",
        "avgpool2d",
        "relu",
        "linear",
        "flatten",
        "batchnorm2d",
        "dropout",
        "leaky_relu",
        "name",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "out_channels",
        "in_features",
        "kernal_size",
        "conv",
        "\u{feff}",
        "\u{200b}",
        "\t",
        "out_features",
        "num_features",
        "ceil_mode",
        "bias",
        "p",
        "eps",
        "0",
        "1",
        "3",
        "-1",
        "1048577",
        "99999999999999999999",
        "0.5",
        "1e-5",
        "true",
        "False",
        "null",
        "~",
        "&a",
        "*a",
        "layer1.0",
        "block",
        "blocks",
        "params",
        "sequential",
        "repeat",
        "inputs",
        "input",
        "add",
        "concat",
        "mul",
        "B",
        "B(planes=2)",
        "{i}",
        "{i + 1}",
        "planes",
        " * ",
        " // ",
        " + ",
        "-",
        "%",
        "é",
        "\t",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text, Format::Yaml);
        exercise(&text, Format::Dsl);
    }

    #[test]
    fn spec_like_text_never_panics(parts in prop::collection::vec(fragment(), 0..80)) {
        let text = parts.concat();
        exercise(&text, Format::Yaml);
        exercise(&text, Format::Dsl);
    }

    #[test]
    fn generated_models_round_trip(model in valid_model()) {
        let source = Source::new("gen.cnn", model.as_str(), Format::Dsl);
        let parsed = cnnc_spec::parse(&source).expect("generated DSL parses");
        let checked = cnnc_spec::check(&parsed);
        prop_assert!(checked.diagnostics.iter().all(|d| !d.is_error()), "{model}");
        let yaml = cnnc_spec::to_yaml(&parsed);
        let from_yaml = cnnc_spec::parse(&Source::new("gen.yaml", yaml.as_str(), Format::Yaml))
            .expect("printed YAML parses");
        let back = cnnc_spec::to_dsl(&from_yaml);
        let from_dsl = cnnc_spec::parse(&Source::new("back.cnn", back.as_str(), Format::Dsl))
            .expect("printed DSL parses");
        prop_assert_eq!(cleared(&from_yaml), cleared(&parsed));
        prop_assert_eq!(cleared(&from_dsl), cleared(&parsed));
        let a = checked.model.expect("resolved");
        let b = cnnc_spec::check(&from_yaml).model.expect("resolved");
        prop_assert_eq!(
            a.layers().iter().map(|l| (l.config(), l.output_shape())).collect::<Vec<_>>(),
            b.layers().iter().map(|l| (l.config(), l.output_shape())).collect::<Vec<_>>()
        );
    }
}

/// The graph specs of the tests, each with its language.
fn graph_specs() -> Vec<(String, Format)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph");
    let mut specs: Vec<(String, Format)> = std::fs::read_dir(&dir)
        .expect("tests/graph")
        .filter_map(|entry| {
            let path = entry.expect("entry").path();
            let format = Format::from_path(&path)?;
            Some((std::fs::read_to_string(&path).expect("spec"), format))
        })
        .collect();
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    specs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A graph spec with a run of characters cut and a few fragments typed in.
    #[test]
    fn mutated_graph_specs_never_panic(
        which in 0usize..4,
        at in 0usize..4096,
        cut in 0usize..48,
        typed in prop::collection::vec(fragment(), 0..4),
    ) {
        let specs = graph_specs();
        let (text, format) = &specs[which % specs.len()];
        let mut start = at % (text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let edited = format!("{}{}{}", &text[..start], typed.concat(), &text[end..]);
        exercise(&edited, *format);
    }

    #[test]
    fn block_nests_expand_like_their_hand_unrolled_spec(levels in nest(), start in 1i64..4) {
        let (nested, unrolled) = nest_texts(&levels, start);
        let layers = |text: &str| {
            let source = Source::new("nest.cnn", text, Format::Dsl);
            let (model, _) = cnnc_spec::compile(&source).unwrap_or_else(|d| {
                panic!("{text}\n{}", cnnc_spec::render_all(&d, &source, false))
            });
            model
                .layers()
                .iter()
                .map(|l| (l.name().to_owned(), l.config().clone(), l.output_shape(), l.inputs().to_vec()))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(layers(&nested), layers(&unrolled), "{}\n---\n{}", nested, unrolled);
    }
}

/// An entry of a generated block body.
#[derive(Clone, Debug)]
enum Item {
    /// `c{n}: conv2d(out_channels=w + j, kernel_size=1)`, `n` its place in the body.
    Conv(i64),
    /// An unnamed `relu`.
    Relu,
    /// The block one level down, `repeat` times, with `w=w * 2 + i`.
    Sub(usize),
}

/// Block bodies from the innermost (level 0, no sub-blocks) out; each non-empty.
fn nest() -> impl Strategy<Value = Vec<Vec<Item>>> {
    let leaf = prop_oneof![(0i64..3).prop_map(Item::Conv), Just(Item::Relu)];
    let any = prop_oneof![
        (0i64..3).prop_map(Item::Conv),
        Just(Item::Relu),
        (1usize..3).prop_map(Item::Sub)
    ];
    (
        prop::collection::vec(leaf, 1..4),
        prop::collection::vec(prop::collection::vec(any, 1..4), 0..3),
    )
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

/// The nest as blocks, and the same network written out layer by layer with full names.
fn nest_texts(levels: &[Vec<Item>], start: i64) -> (String, String) {
    let mut nested = String::from("input (1, 4, 4)\n");
    for (k, body) in levels.iter().enumerate() {
        nested.push_str(&format!("block B{k}(w) {{\n"));
        for (n, item) in body.iter().enumerate() {
            match item {
                Item::Conv(j) => nested.push_str(&format!(
                    "  c{n}: conv2d(out_channels=w + {j}, kernel_size=1)\n"
                )),
                Item::Relu => nested.push_str("  relu\n"),
                Item::Sub(r) if k > 0 => {
                    nested.push_str(&format!("  B{}(w=w * 2 + i, repeat={r})\n", k - 1))
                }
                Item::Sub(_) => nested.push_str("  relu\n"),
            }
        }
        nested.push_str("}\n");
    }
    nested.push_str(&format!(
        "top: B{}(w={start})\nout: flatten\n",
        levels.len() - 1
    ));
    let mut unrolled = String::from("input (1, 4, 4)\n");
    unroll(levels, levels.len() - 1, "top", start, &mut unrolled);
    unrolled.push_str("out: flatten\n");
    (nested, unrolled)
}

fn unroll(levels: &[Vec<Item>], k: usize, prefix: &str, w: i64, out: &mut String) {
    let mut position = 0;
    for (n, item) in levels[k].iter().enumerate() {
        match item {
            Item::Conv(j) => {
                out.push_str(&format!(
                    "{prefix}.c{n}: conv2d(out_channels={}, kernel_size=1)\n",
                    w + j
                ));
                position += 1;
            }
            Item::Sub(r) if k > 0 => {
                for i in 0..*r as i64 {
                    unroll(
                        levels,
                        k - 1,
                        &format!("{prefix}.{position}"),
                        w * 2 + i,
                        out,
                    );
                    position += 1;
                }
            }
            Item::Relu | Item::Sub(_) => {
                out.push_str(&format!("{prefix}.{position}: relu\n"));
                position += 1;
            }
        }
    }
}

fn cleared(model: &Model) -> Model {
    let mut model = model.clone();
    model.clear_spans();
    model
}

/// A random valid DSL model: convolution blocks that keep the size or halve it while it is
/// even, then a classifier.
fn valid_model() -> impl Strategy<Value = String> {
    let block = (
        1usize..=16,
        prop::bool::ANY,
        prop::bool::ANY,
        0usize..4,
        prop::bool::ANY,
    );
    (
        1usize..=4,
        prop::sample::select(vec![8usize, 16, 32]),
        prop::collection::vec(block, 1..4),
        prop::collection::vec(1usize..=64, 0..3),
        prop::bool::ANY,
    )
        .prop_map(|(channels, size, blocks, hidden, comment)| {
            let mut text = String::new();
            if comment {
                text.push_str("# generated\n");
            }
            text.push_str(&format!("model Gen\ninput ({channels}, {size}, {size})\n"));
            let mut size = size;
            for (i, (out, pool, bn, act, named)) in blocks.into_iter().enumerate() {
                if named {
                    text.push_str(&format!("block{i}.conv: "));
                }
                text.push_str(&format!(
                    "conv2d(out_channels={out}, kernel_size=3, padding=1, bias={})\n",
                    !bn
                ));
                if bn {
                    text.push_str("batchnorm2d(momentum=0.2)  # normalise\n");
                }
                text.push_str(
                    [
                        "relu\n",
                        "tanh\n",
                        "sigmoid\n",
                        "leaky_relu(negative_slope=0.1)\n",
                    ][act],
                );
                if pool && size % 2 == 0 {
                    text.push_str("maxpool2d(kernel_size=2)\n");
                    size /= 2;
                }
            }
            text.push_str("flatten\ndropout(p=0.25)\n");
            for (i, width) in hidden.into_iter().enumerate() {
                text.push_str(&format!("hidden{i}: linear(out_features={width})\nrelu\n"));
            }
            text.push_str("head: linear(out_features=10, bias=false)\n");
            text
        })
}
