//! The analysis behind `cnnc lsp` and `cnnc check`: one spec parsed and checked once, and the
//! questions an editor asks of the result (which layer is here, its shapes and the arithmetic
//! behind them, what may be typed next, where a name is written). Byte offsets throughout; the
//! protocol's positions are the server's business.

use cnnc_spec::core::kind::{ArgDefault, ArgInfo, ArgType, ArgValue};
use cnnc_spec::{
    CheckedLayer, CheckedModel, Diagnostic, Format, Ident, Layer, LayerKind, Model, Shape, Source,
    Span,
};

/// Everything known about one spec text.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The parsed spec, when it parses.
    pub ast: Option<Model>,
    /// The checked model: complete when there are no errors, otherwise the layers before the
    /// first error.
    pub model: Option<CheckedModel>,
    /// Every diagnostic, as `cnnc check` reports it.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and checks `source`: the one analysis `cnnc check` and `cnnc lsp` share.
pub fn analyze(source: &Source) -> Analysis {
    match cnnc_spec::parse(source) {
        Ok(ast) => {
            let checked = cnnc_spec::check(&ast);
            Analysis {
                ast: Some(ast),
                model: checked.model,
                diagnostics: checked.diagnostics,
            }
        }
        Err(diagnostics) => Analysis {
            ast: None,
            model: None,
            diagnostics,
        },
    }
}

/// Whether the language server serves `text` in `format`: every DSL file, and YAML files with a
/// top-level `layers:` (other YAML is somebody else's).
pub fn is_spec(text: &str, format: Format) -> bool {
    match format {
        Format::Dsl => true,
        Format::Yaml => text
            .lines()
            .any(|line| line.starts_with("layers:") || line.starts_with("\u{feff}layers:")),
    }
}

/// One layer's shape hint: where its line ends and what it outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeHint {
    /// Byte offset of the end of the layer's last line (before any trailing newline).
    pub offset: usize,
    /// `→ [32, 16, 16]`.
    pub label: String,
}

impl Analysis {
    /// The output shape of every checked layer, at the end of its line. A layer of a block
    /// instantiated several times gets one hint with each distinct shape.
    pub fn shape_hints(&self, source: &Source) -> Vec<ShapeHint> {
        let Some(model) = &self.model else {
            return Vec::new();
        };
        let text = source.text();
        let mut hints: Vec<(Span, Vec<Shape>)> = Vec::new();
        let mut by_span: std::collections::HashMap<Span, usize> = Default::default();
        for (i, layer) in model.layers().iter().enumerate() {
            let span = model.span(i);
            let at = *by_span.entry(span).or_insert_with(|| {
                hints.push((span, Vec::new()));
                hints.len() - 1
            });
            let shapes = &mut hints[at].1;
            if !shapes.contains(&layer.output_shape()) {
                shapes.push(layer.output_shape());
            }
        }
        hints
            .into_iter()
            .map(|(span, shapes)| {
                let mut shown: Vec<String> = shapes.iter().take(3).map(Shape::to_string).collect();
                if shapes.len() > 3 {
                    shown.push("…".to_owned());
                }
                ShapeHint {
                    offset: line_end(text, last_char(text, span)),
                    label: format!("→ {}", shown.join(" | ")),
                }
            })
            .collect()
    }

    /// The innermost entry written at byte `offset` (in a block, a group or at the top level).
    pub fn entry_at(&self, offset: usize) -> Option<&Layer> {
        fn find(layers: &[Layer], offset: usize) -> Option<&Layer> {
            let layer = layers.iter().find(|layer| contains(layer.span, offset))?;
            match &layer.body {
                Some(body) => find(body, offset).or(Some(layer)),
                None => Some(layer),
            }
        }
        let ast = self.ast.as_ref()?;
        find(&ast.layers, offset).or_else(|| {
            ast.blocks
                .iter()
                .find_map(|block| find(&block.layers, offset))
        })
    }

    /// The index of the checked layer written at byte `offset`, if any (the first instance's,
    /// for a layer of a block).
    pub fn layer_at(&self, offset: usize) -> Option<usize> {
        let entry = self.entry_at(offset)?;
        let model = self.model.as_ref()?;
        (0..model.layers().len()).find(|&i| model.span(i) == entry.span)
    }

    /// Hover text (Markdown) for byte `offset`: an argument's documentation on its key, else the
    /// layer: kind, PyTorch class, shapes, parameters, mult-adds, size arithmetic and arguments.
    pub fn hover(&self, offset: usize) -> Option<(Span, String)> {
        let layer = self.entry_at(offset)?;
        let index = self.layer_at(offset);
        let Some(kind) = LayerKind::from_keyword(&layer.kind.text) else {
            return self.block_hover(layer);
        };
        if let Some(arg) = layer.args.iter().find(|a| contains(a.key.span, offset))
            && let Some(info) = kind.arg(&arg.key.text)
        {
            return Some((
                arg.key.span,
                format!("`{}`: {}", info.name, describe_arg(info)),
            ));
        }
        let mut text = format!(
            "**{}** — `torch.nn.{}`\n\n{}\n",
            kind.keyword(),
            kind.torch_name(),
            kind.computes()
        );
        // The checked model holds the layers before the first error, in source order.
        if let Some(checked) = index.and_then(|i| self.model.as_ref()?.layers().get(i)) {
            let inputs = checked
                .input_shapes()
                .iter()
                .map(Shape::to_string)
                .collect::<Vec<_>>()
                .join(" + ");
            text.push_str(&format!(
                "\n`{}`: {} → {}\n\nparameters: {} · mult-adds: {}\n",
                checked.name(),
                inputs,
                checked.output_shape(),
                checked.params(),
                checked.macs(),
            ));
            text.push_str(&format!("\nsize: {}\n", arithmetic(checked)));
        }
        if !kind.args().is_empty() {
            text.push_str("\narguments:\n");
            for info in kind.args() {
                text.push_str(&format!("- `{}`: {}\n", info.name, describe_arg(info)));
            }
        }
        Some((layer.span, text))
    }

    /// Hover text for a block instance: the block's parameters and body.
    fn block_hover(&self, layer: &Layer) -> Option<(Span, String)> {
        let ast = self.ast.as_ref()?;
        let block = ast.blocks.iter().find(|b| b.name.text == layer.kind.text)?;
        let params = block
            .params
            .iter()
            .map(|p| match &p.default {
                Some(_) => format!("{}=…", p.name.text),
                None => p.name.text.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let body = block
            .layers
            .iter()
            .map(|l| format!("`{}`", l.kind.text))
            .collect::<Vec<_>>()
            .join(" → ");
        Some((
            layer.span,
            format!("**{}**({params}) — block\n\n{body}\n", block.name.text),
        ))
    }

    /// Every place the layer name at byte `offset` is written: where it is defined (first) and
    /// every input that names it.
    pub fn name_references(&self, offset: usize) -> Vec<Span> {
        let names = self.names();
        let Some(name) = names.iter().find(|n| contains(n.span, offset)) else {
            return Vec::new();
        };
        names
            .iter()
            .filter(|n| n.text == name.text)
            .map(|n| n.span)
            .collect()
    }

    /// The explicit entry names and the inputs that name entries, in source order.
    pub fn names(&self) -> Vec<&Ident> {
        fn collect<'a>(layers: &'a [Layer], out: &mut Vec<&'a Ident>) {
            for layer in layers {
                out.extend(layer.name.as_ref());
                out.extend(layer.inputs.iter().filter(|i| i.text != "input"));
                if let Some(body) = &layer.body {
                    collect(body, out);
                }
            }
        }
        let mut names = Vec::new();
        if let Some(ast) = &self.ast {
            for block in &ast.blocks {
                collect(&block.layers, &mut names);
            }
            collect(&ast.layers, &mut names);
        }
        names.sort_by_key(|n| n.span.start);
        names
    }

    /// The outline: each layer's display name, kind and output shape, span and name span.
    pub fn symbols(&self) -> Vec<Symbol> {
        let Some(ast) = &self.ast else {
            return Vec::new();
        };
        // Each written layer's first checked instance, by where it is written.
        let mut by_span = std::collections::HashMap::new();
        if let Some(model) = &self.model {
            for (i, layer) in model.layers().iter().enumerate() {
                by_span.entry(model.span(i)).or_insert(layer);
            }
        }
        ast.layers
            .iter()
            .map(|layer| {
                let checked = by_span.get(&layer.span).copied();
                let name = layer
                    .name
                    .as_ref()
                    .map(|n| n.text.clone())
                    .or_else(|| checked.map(|c| c.name().to_owned()))
                    .unwrap_or_else(|| layer.kind.text.clone());
                let detail = match checked {
                    Some(c) => format!("{} → {}", layer.kind.text, c.output_shape()),
                    None => layer.kind.text.clone(),
                };
                Symbol {
                    name,
                    detail,
                    span: layer.span,
                    name_span: layer.name.as_ref().map_or(layer.kind.span, |n| n.span),
                }
            })
            .collect()
    }
}

/// One entry of the outline.
#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    /// The layer's name (explicit, or the one the checker gave it).
    pub name: String,
    /// Its kind and output shape.
    pub detail: String,
    /// The whole layer.
    pub span: Span,
    /// Its name, or its kind when unnamed.
    pub name_span: Span,
}

fn contains(span: Span, offset: usize) -> bool {
    (span.start as usize) <= offset && offset <= span.end as usize
}

/// The offset of the last character of `span` (its start when empty).
fn last_char(text: &str, span: Span) -> usize {
    let end = (span.end as usize).min(text.len());
    let start = (span.start as usize).min(end);
    text[..end]
        .char_indices()
        .rev()
        .take_while(|&(i, _)| i >= start)
        .find(|&(_, c)| !c.is_whitespace())
        .map_or(start, |(i, _)| i)
}

/// The end of the line holding byte `offset`, before its newline.
fn line_end(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |i| offset + i)
}

/// `integer ≥ 1, required: output channels`.
pub fn describe_arg(info: &ArgInfo) -> String {
    fn describe_type(ty: ArgType) -> String {
        match ty {
            ArgType::Size { min } => format!("integer ≥ {min}"),
            ArgType::Pair { min } => format!("integer or [h, w], each ≥ {min}"),
            ArgType::Float { min, max, .. } if max == f64::MAX => format!("number > {min}"),
            ArgType::Float { min, max, .. } => format!("number in {min}..{max}"),
            ArgType::Bool => "true or false".to_owned(),
            ArgType::Dim => "integer dimension (negative counts from the end)".to_owned(),
            ArgType::Choice(words) => format!("one of {}", words.join(", ")),
            ArgType::Optional(inner) => format!("{} or null", describe_type(*inner)),
        }
    }
    let ty = describe_type(info.ty);
    let default = match info.default {
        ArgDefault::Required => "required".to_owned(),
        ArgDefault::Inferred => "inferred from the input".to_owned(),
        ArgDefault::Int(n) => format!("default {n}"),
        ArgDefault::SameAs(other) => format!("default: {other}"),
        ArgDefault::Float(x) => format!("default {x}"),
        ArgDefault::Bool(b) => format!("default {b}"),
        ArgDefault::Dim(d) => format!("default {d}"),
        ArgDefault::Word(w) => format!("default {w}"),
        ArgDefault::None => "default null".to_owned(),
    };
    format!("{ty}, {default}. {}", info.doc)
}

/// How a layer's output size follows from its input: PyTorch's formula with the numbers in.
pub fn arithmetic(layer: &CheckedLayer) -> String {
    let config = layer.config();
    let pair = |name: &str, default: usize| match config.arg(name) {
        Some(ArgValue::Pair(p)) => p,
        Some(ArgValue::Int(n)) => [n, n],
        _ => [default, default],
    };
    match (layer.input_shape(), layer.output_shape()) {
        (Shape::Chw([_, h, w]), Shape::Chw([c, oh, ow])) if config.arg("kernel_size").is_some() => {
            let kernel = pair("kernel_size", 1);
            let stride = pair("stride", 1);
            let padding = pair("padding", 0);
            let dilation = pair("dilation", 1);
            let round = match config.arg("ceil_mode") {
                Some(ArgValue::Bool(true)) => "ceil",
                _ => "floor",
            };
            let axis = |i: usize, input: usize, output: usize| {
                format!(
                    "{round}(({input} + 2*{} - {}*({}-1) - 1) / {}) + 1 = {output}",
                    padding[i], dilation[i], kernel[i], stride[i]
                )
            };
            format!(
                "channels {c}; height {}; width {}",
                axis(0, h, oh),
                axis(1, w, ow)
            )
        }
        (Shape::Chw([c, h, w]), Shape::Flat(n)) => format!("{c}*{h}*{w} = {n}"),
        (Shape::Flat(_), Shape::Flat(n)) if layer.kind() == LayerKind::Linear => {
            format!("out_features = {n}")
        }
        (input, output) if input == output => "the same as its input".to_owned(),
        (_, output) => format!("{output}"),
    }
}

/// What completion offers at a cursor.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// Layer kinds.
    Kinds,
    /// The arguments of this kind not yet written on its line.
    Args(LayerKind, Vec<String>),
    /// Values of this argument, where they are an enumeration.
    Values(&'static ArgInfo),
    /// Nothing.
    Nothing,
}

/// What may be typed at byte `offset` of `text`, read from the line up to the cursor (so that it
/// works on a spec typed halfway, which does not parse).
pub fn completion_at(text: &str, format: Format, offset: usize) -> Completion {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &text[line_start..offset];
    let (open, assign) = match format {
        Format::Dsl => ('(', '='),
        Format::Yaml => ('{', ':'),
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    };
    if let Some(paren) = prefix.rfind(open) {
        let head = prefix[..paren].trim_end();
        let head = head.trim_end_matches(':').trim_end();
        let keyword = head.rsplit([' ', ':', '-', '\t']).next().unwrap_or("");
        let Some(kind) = LayerKind::from_keyword(keyword) else {
            return Completion::Nothing;
        };
        let inside = &prefix[paren + 1..];
        if inside.contains([')', '}']) {
            return Completion::Nothing;
        }
        let current = inside.rsplit(',').next().unwrap_or("");
        if let Some((key, _)) = current.split_once(assign) {
            return match kind.arg(key.trim()) {
                Some(info) if matches!(info.ty, ArgType::Bool | ArgType::Choice(_)) => {
                    Completion::Values(info)
                }
                _ => Completion::Nothing,
            };
        }
        let written = inside
            .split(',')
            .filter_map(|a| a.split_once(assign).map(|(k, _)| k.trim().to_owned()))
            .collect();
        return Completion::Args(kind, written);
    }
    let trimmed = prefix.trim_start();
    match format {
        Format::Dsl => {
            if trimmed.starts_with('#')
                || trimmed.starts_with("model")
                || trimmed.starts_with("input")
            {
                return Completion::Nothing;
            }
            // `kind` or `name: kind` at the start of a line.
            let last = trimmed.rsplit(':').next().unwrap_or(trimmed).trim();
            if last.is_empty() || word(last) {
                Completion::Kinds
            } else {
                Completion::Nothing
            }
        }
        Format::Yaml => {
            if let Some(item) = trimmed.strip_prefix('-') {
                let item = item.trim();
                return if item.is_empty() || word(item) {
                    Completion::Kinds
                } else {
                    Completion::Nothing
                };
            }
            let indent = prefix.len() - trimmed.len();
            if indent == 0 || !(trimmed.is_empty() || word(trimmed)) {
                return Completion::Nothing;
            }
            // An argument line of a block-style layer: the nearest `- kind:` above, less indented.
            for line in text[..line_start].lines().rev() {
                let content = line.trim_start();
                if content.is_empty() || content.starts_with('#') {
                    continue;
                }
                if line.len() - content.len() >= indent {
                    continue;
                }
                let kind = content
                    .strip_prefix('-')
                    .and_then(|item| item.trim().strip_suffix(':'))
                    .and_then(LayerKind::from_keyword);
                return match kind {
                    Some(kind) => Completion::Args(kind, Vec::new()),
                    None => Completion::Nothing,
                };
            }
            Completion::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The shipped models, each with its language.
    fn models() -> Vec<(String, Format)> {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("models");
        let mut models: Vec<_> = std::fs::read_dir(&dir)
            .expect("models/")
            .map(|entry| entry.expect("entry").path())
            .filter_map(|path| {
                let format = Format::from_path(&path)?;
                Some((std::fs::read_to_string(&path).expect("model text"), format))
            })
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(models.len() >= 10, "{}", dir.display());
        models
    }

    /// Everything an editor asks of a text, at `offset`: none of it may panic.
    fn exercise(text: &str, format: Format, offset: usize) {
        let source = Source::new("typed.cnn", text, format);
        let analysis = analyze(&source);
        for hint in analysis.shape_hints(&source) {
            assert!(hint.offset <= text.len());
        }
        let _ = analysis.hover(offset);
        let _ = analysis.name_references(offset);
        let _ = analysis.symbols();
        let _ = completion_at(text, format, offset);
        let _ = is_spec(text, format);
    }

    #[test]
    fn every_prefix_of_every_shipped_model_is_analysed_without_panic() {
        for (text, format) in models() {
            // Every prefix of a small file; of a large one (the graph models run to thousands of
            // characters, and each prefix is a full analysis), about 600 cuts spread evenly,
            // an odd stride apart so they fall at every column and inside every kind of token.
            let stride = (text.len() / 600).max(1) | 1;
            for (end, _) in text.char_indices().filter(|(end, _)| end % stride == 0) {
                exercise(&text[..end], format, end);
            }
            // The complete model: one hint per layer, and no diagnostics.
            let source = Source::new("model", text.as_str(), format);
            let analysis = analyze(&source);
            assert!(analysis.diagnostics.is_empty(), "{text}");
            let ast = analysis.ast.as_ref().expect("parsed");
            let hints = analysis.shape_hints(&source);
            if ast.blocks.is_empty() && ast.layers.iter().all(|l| l.body.is_none()) {
                assert_eq!(hints.len(), ast.layers.len(), "{text}");
            } else {
                assert!(!hints.is_empty(), "{text}");
            }
        }
    }

    #[test]
    fn hints_sit_at_the_end_of_each_layers_line() {
        let text = "input (1, 4, 4)\nconv2d(out_channels=2, kernel_size=3)  # c\nflatten\n";
        let source = Source::new("t.cnn", text, Format::Dsl);
        let hints = analyze(&source).shape_hints(&source);
        let ends: Vec<_> = hints
            .iter()
            .map(|h| (&text[..h.offset], h.label.as_str()))
            .collect();
        assert_eq!(
            ends,
            [
                (
                    "input (1, 4, 4)\nconv2d(out_channels=2, kernel_size=3)  # c",
                    "→ [2, 2, 2]"
                ),
                (
                    "input (1, 4, 4)\nconv2d(out_channels=2, kernel_size=3)  # c\nflatten",
                    "→ [8]"
                ),
            ]
        );
    }

    #[test]
    fn completion_reads_the_line_being_typed() {
        let dsl = |text: &str| completion_at(text, Format::Dsl, text.len());
        let yaml = |text: &str| completion_at(text, Format::Yaml, text.len());
        assert_eq!(dsl("input (3, 8, 8)\n"), Completion::Kinds);
        assert_eq!(dsl("input (3, 8, 8)\nfc: li"), Completion::Kinds);
        assert_eq!(
            dsl("conv2d(kernel_size=3, "),
            Completion::Args(LayerKind::Conv2d, vec!["kernel_size".to_owned()])
        );
        assert!(matches!(dsl("conv2d(bias="), Completion::Values(info) if info.name == "bias"));
        assert_eq!(dsl("conv2d(kernel_size="), Completion::Nothing);
        assert_eq!(dsl("# a comment "), Completion::Nothing);
        assert_eq!(dsl("nosuch("), Completion::Nothing);
        assert_eq!(yaml("layers:\n  - "), Completion::Kinds);
        assert_eq!(
            yaml("layers:\n  - maxpool2d: {kernel_size: 2, "),
            Completion::Args(LayerKind::MaxPool2d, vec!["kernel_size".to_owned()])
        );
        assert_eq!(
            yaml("layers:\n  - linear:\n      out_features: 3\n      "),
            Completion::Args(LayerKind::Linear, Vec::new())
        );
        assert_eq!(yaml("model: x\n"), Completion::Nothing);
    }

    #[test]
    fn graph_specs_hover_hint_and_find_references_inside_blocks() {
        let text = "input (4, 8, 8)\n\
                    block Res(planes) {\n\
                    \x20 conv: conv2d(out_channels=planes, kernel_size=3, padding=1)\n\
                    \x20 add(conv, input)\n\
                    }\n\
                    stage: sequential {\n\
                    \x20 Res(planes=4, repeat=2)\n\
                    }\n\
                    flatten\n";
        let source = Source::new("g.cnn", text, Format::Dsl);
        let analysis = analyze(&source);
        assert!(
            analysis.diagnostics.is_empty(),
            "{:?}",
            analysis.diagnostics
        );
        // The block's convolution: one hint for its two instances, a hover with its shapes.
        let conv = text.find("conv2d").expect("conv2d");
        let (_, hover) = analysis.hover(conv).expect("hover");
        assert!(
            hover.contains("`stage.0.conv`: [4, 8, 8] → [4, 8, 8]"),
            "{hover}"
        );
        let add = text.find("add(").expect("add");
        let (_, hover) = analysis.hover(add).expect("hover on add");
        assert!(
            hover.contains("[4, 8, 8] + [4, 8, 8] → [4, 8, 8]"),
            "{hover}"
        );
        let hints = analysis.shape_hints(&source);
        assert_eq!(hints.len(), 3, "{hints:?}");
        // `conv` is defined once and read once.
        let references = analysis.name_references(text.find("conv:").expect("name"));
        assert_eq!(references.len(), 2, "{references:?}");
        let instance = text.find("Res(planes=4").expect("instance");
        let (_, hover) = analysis.hover(instance).expect("hover on an instance");
        assert!(hover.starts_with("**Res**(planes) — block"), "{hover}");
    }

    #[test]
    fn yaml_is_served_only_with_top_level_layers() {
        assert!(is_spec(
            "input: [1, 2, 2]\nlayers:\n  - relu\n",
            Format::Yaml
        ));
        assert!(!is_spec("jobs:\n  layers: 3\n", Format::Yaml));
        assert!(is_spec("anything", Format::Dsl));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A shipped model with a run of characters deleted and a few typed in, as an edit in
        /// progress leaves it.
        #[test]
        fn edits_in_progress_never_panic(
            model in 0usize..10,
            at in 0usize..4096,
            cut in 0usize..64,
            typed in "[a-z0-9_(),=:{}\\[\\] \n-]{0,8}",
        ) {
            let models = models();
            let (text, format) = &models[model % models.len()];
            let mut start = at % (text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let edited = format!("{}{typed}{}", &text[..start], &text[end..]);
            exercise(&edited, *format, start + typed.len());
        }
    }
}
