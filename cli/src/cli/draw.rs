//! `cnnc draw`: a spec's network as an SVG picture — a layered layout (`layout.rs`) of its
//! layers, each box naming the layer, its kind and the arguments that differ from their
//! defaults, the tensor shape on every edge, and the groups its dotted names make as boxes,
//! collapsed to one node beyond `--depth`. A branching network is hard to read as text.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc_spec::core::{ArgDefault, Model, Source as LayerSource, canon};
use cnnc_spec::{Diagnostic, Source};

use super::hierarchy;
use super::job::refuse;
use super::layout::{self, Graph, Node, PAD, Rect, TITLE};
use super::{ColorWhen, EXIT_INVALID, Lang, summary::thousands};

/// Most boxes a drawing holds, nodes and groups together; past it, groups are collapsed (or the
/// drawing refused).
pub const MAX_BOXES: usize = 600;
/// Most nodes the layout places, the dummies that carry long edges included.
pub const MAX_LAYOUT_NODES: usize = 4_000;

/// Width of a character at the drawing's 12 px monospace font.
const CHAR_WIDTH: f64 = 7.8;
/// A node's height: two lines of text.
const NODE_HEIGHT: f64 = 36.0;
/// Longest detail line, in characters, before it is cut.
const MAX_DETAIL: usize = 80;
/// Longest name shown, in characters; a longer one is cut in the middle.
const MAX_NAME: usize = 96;

/// Arguments of `cnnc draw`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn), or `-` for standard input.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Where to write the SVG (atomically), or `-` for standard output.
    #[arg(short, long, value_name = "FILE.svg")]
    pub output: PathBuf,
    /// How deep to open the groups the dotted names make (`layer1.0.conv1` is at depth 3); a
    /// group at this depth is drawn as one node [default: every group open, or the deepest depth
    /// that fits in 600 boxes].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub depth: Option<u16>,
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Language of standard input (guessed when absent).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// Runs `cnnc draw`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let source = super::read_source(&args.spec, args.lang)?;
    let color = args.color.enabled();
    let model = match cnnc_spec::compile(&source) {
        Ok((model, warnings)) => {
            report(&warnings, &source, color);
            model
        }
        Err(diagnostics) => {
            report(&diagnostics, &source, color);
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let depth = match args.depth {
        Some(depth) => usize::from(depth),
        None => {
            let deepest = deepest(&model);
            let fits = (1..=deepest)
                .rev()
                .find(|&d| fits(&Drawing::new(&model, d)).is_ok());
            match fits {
                Some(d) if d < deepest => {
                    eprintln!(
                        "notice: {} drawn with its groups open to depth {d} (--depth {d}): \
                         deeper, it takes more than {MAX_BOXES} boxes",
                        source.name()
                    );
                    d
                }
                _ => deepest,
            }
        }
    };
    let drawing = Drawing::new(&model, depth);
    fits(&drawing)
        .map_err(|(nodes, placed)| too_big(&model, source.name(), depth, nodes, placed))?;
    let svg = drawing.svg(&model);
    if args.output == Path::new("-") {
        std::io::stdout()
            .lock()
            .write_all(svg.as_bytes())
            .context("cannot write to standard output")?;
    } else {
        cnnc_runtime::fsio::write_atomic(&args.output, svg.as_bytes())
            .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints diagnostics to standard error, as `cnnc check` renders them.
fn report(diagnostics: &[Diagnostic], source: &Source, color: bool) {
    let shown = cnnc_spec::Shown::of(diagnostics);
    for diagnostic in shown.shown {
        eprintln!("{}", cnnc_spec::render(diagnostic, source, color));
    }
    if let Some(omitted) = shown.omitted(source) {
        eprintln!("{omitted}");
    }
}

/// The deepest level of the model's groups and layers.
fn deepest(model: &Model) -> usize {
    let names: Vec<&str> = model.layers().iter().map(|l| l.name()).collect();
    hierarchy::rows(&names)
        .iter()
        .map(|r| r.depth)
        .max()
        .unwrap_or(1)
}

/// Whether `drawing` is within the limits; else its box count and layout size.
fn fits(drawing: &Drawing) -> Result<(), (usize, usize)> {
    let boxes = drawing.graph.nodes.len() + drawing.groups.len();
    if boxes > MAX_BOXES {
        return Err((boxes, boxes));
    }
    let placed = layout::size(&drawing.graph);
    if placed > MAX_LAYOUT_NODES {
        return Err((boxes, placed));
    }
    Ok(())
}

/// The refusal of a drawing over the limits, naming the depth that fits if one does.
fn too_big(model: &Model, name: &str, depth: usize, boxes: usize, placed: usize) -> anyhow::Error {
    let what = if boxes > MAX_BOXES {
        format!("{boxes} boxes, layers and groups (cnnc draws at most {MAX_BOXES})")
    } else {
        format!("{placed} places with its long edges (cnnc lays out at most {MAX_LAYOUT_NODES})")
    };
    let fix = (1..depth)
        .rev()
        .find(|&d| fits(&Drawing::new(model, d)).is_ok())
        .map_or_else(
            || {
                "no depth makes it small enough: its top level alone is too large; `cnnc \
                 summary` lists it"
                    .to_owned()
            },
            |d| format!("pass --depth {d} to collapse the deeper groups"),
        );
    refuse(format!("{name} at --depth {depth} takes {what}; {fix}"))
}

/// What a node shows and how.
struct Label {
    title: String,
    detail: String,
    style: Style,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// The model's input or output.
    Terminal,
    /// A layer, by what it does (its fill colour).
    Layer(&'static str),
    /// A group collapsed into one node.
    Collapsed,
}

/// The model as a graph to lay out, with what each part shows.
struct Drawing {
    graph: Graph,
    labels: Vec<Label>,
    /// The shape on each edge.
    edge_labels: Vec<String>,
    /// Each group's full name and depth.
    groups: Vec<(String, usize)>,
}

impl Drawing {
    /// The drawing of `model` with groups open to `depth`: an input node, a node per layer or
    /// collapsed group, an output node.
    fn new(model: &Model, depth: usize) -> Drawing {
        let layers = model.layers();
        let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
        let rows = hierarchy::rows(&names);
        let mut graph = Graph::default();
        let mut labels = Vec::new();
        let mut groups: Vec<(String, usize)> = Vec::new();
        let terminal = |title: &str, shape: String| Label {
            title: title.to_owned(),
            detail: shape,
            style: Style::Terminal,
        };
        labels.push(terminal("input", model.input_shape().to_string()));
        graph.nodes.push(Node {
            width: 0.0,
            height: NODE_HEIGHT,
            groups: Vec::new(),
        });
        let mut node_of = vec![0usize; layers.len()];
        // The open groups, outermost first.
        let mut open: Vec<usize> = Vec::new();
        for row in &rows {
            if row.depth > depth {
                continue;
            }
            open.truncate(row.depth - 1);
            if row.group && row.depth < depth {
                groups.push((shorten(&row.full_name(&names)), row.depth));
                open.push(groups.len() - 1);
                continue;
            }
            let members = &layers[row.layers.clone()];
            let label = if row.group {
                let params: u64 = members.iter().map(|l| l.params()).sum();
                Label {
                    title: shorten(&row.label),
                    detail: format!("{} layers, {} params", members.len(), thousands(params)),
                    style: Style::Collapsed,
                }
            } else {
                let layer = &members[0];
                Label {
                    title: shorten(&row.label),
                    detail: detail(layer),
                    style: Style::Layer(fill(layer.kind().keyword())),
                }
            };
            for index in row.layers.clone() {
                node_of[index] = graph.nodes.len();
            }
            labels.push(label);
            graph.nodes.push(Node {
                width: 0.0,
                height: NODE_HEIGHT,
                groups: open.clone(),
            });
        }
        labels.push(terminal("output", model.output_shape().to_string()));
        graph.nodes.push(Node {
            width: 0.0,
            height: NODE_HEIGHT,
            groups: Vec::new(),
        });
        for (node, label) in graph.nodes.iter_mut().zip(&labels) {
            let chars = label
                .title
                .chars()
                .count()
                .max(label.detail.chars().count());
            node.width = (chars as f64 * CHAR_WIDTH + 16.0).max(48.0);
        }
        graph.groups = groups.len();
        let mut edge_labels = Vec::new();
        let mut seen = HashSet::new();
        let mut connect = |from: usize, to: usize, shape: String, graph: &mut Graph| {
            if from != to && seen.insert((from, to)) {
                graph.edges.push((from, to));
                edge_labels.push(shape);
            }
        };
        for (index, layer) in layers.iter().enumerate() {
            for &source in layer.inputs() {
                let (from, shape) = match source {
                    LayerSource::Input => (0, model.input_shape()),
                    LayerSource::Layer(i) => (node_of[i], layers[i].output_shape()),
                };
                connect(from, node_of[index], shape.to_string(), &mut graph);
            }
        }
        if let Some(last) = node_of.last() {
            let output = graph.nodes.len() - 1;
            connect(*last, output, model.output_shape().to_string(), &mut graph);
        }
        Drawing {
            graph,
            labels,
            edge_labels,
            groups,
        }
    }

    /// The SVG document.
    fn svg(&self, model: &Model) -> String {
        let placed = layout::layout(&self.graph);
        let mut svg = String::new();
        let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="monospace" font-size="12">"#,
            w = placed.width.ceil(),
            h = placed.height.ceil()
        );
        let _ = writeln!(
            svg,
            "<title>{}</title>",
            escape(model.name().unwrap_or("model"))
        );
        svg.push_str(concat!(
            r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##,
            "\n"
        ));
        // Outer groups first, so that inner ones are drawn over them.
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        order.sort_by_key(|&g| (self.groups[g].1, g));
        for g in order {
            let rect = placed.groups[g];
            if rect.width <= 0.0 {
                continue;
            }
            let _ = writeln!(
                svg,
                r##"<g class="group"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="#7f7f7f" fill-opacity="0.07" stroke="#999"/><text x="{:.1}" y="{:.1}" fill="#444">{}</text></g>"##,
                rect.x,
                rect.y,
                rect.width,
                rect.height,
                rect.x + PAD / 2.0,
                rect.y + TITLE - 2.0,
                escape(&self.groups[g].0)
            );
        }
        for (path, label) in placed.edges.iter().zip(&self.edge_labels) {
            let points: Vec<String> = path.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let (x0, y0) = path[0];
            let (x1, y1) = path[1];
            let _ = writeln!(
                svg,
                r##"<g class="edge"><polyline points="{}" fill="none" stroke="#555" marker-end="url(#arrow)"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#666">{}</text></g>"##,
                points.join(" "),
                (x0 + x1) / 2.0 + 4.0,
                (y0 + y1) / 2.0 + 3.0,
                escape(label)
            );
        }
        for (rect, label) in placed.nodes.iter().zip(&self.labels) {
            node(&mut svg, rect, label);
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// One node: a box, its title and its detail line.
fn node(svg: &mut String, rect: &Rect, label: &Label) {
    let (fill, extra) = match label.style {
        Style::Terminal => ("#ffffff", r#" rx="18""#),
        Style::Layer(fill) => (fill, r#" rx="4""#),
        Style::Collapsed => ("#fff3c4", r#" rx="4" stroke-dasharray="4 2""#),
    };
    let centre = rect.x + rect.width / 2.0;
    let _ = writeln!(
        svg,
        r##"<g class="node"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"{extra} fill="{fill}" stroke="#333"/><text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text><text x="{centre:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text></g>"##,
        rect.x,
        rect.y,
        rect.width,
        rect.height,
        rect.y + 15.0,
        escape(&label.title),
        rect.y + 29.0,
        escape(&label.detail)
    );
}

/// A layer's kind and the arguments it sets (those inferred from its input are on the edge).
fn detail(layer: &cnnc_spec::core::CheckedLayer) -> String {
    let kind = layer.kind();
    let config = layer.config();
    let args: Vec<String> = kind
        .args()
        .iter()
        .filter(|info| !matches!(info.default, ArgDefault::Inferred))
        .map(|info| canon::layer_line("", "", std::slice::from_ref(info), |n| config.arg(n)))
        .map(|line| line.trim().to_owned())
        .filter(|arg| !arg.is_empty())
        .collect();
    let text = if args.is_empty() {
        kind.keyword().to_owned()
    } else {
        format!("{}({})", kind.keyword(), args.join(", "))
    };
    if text.chars().count() > MAX_DETAIL {
        let cut: String = text.chars().take(MAX_DETAIL - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// `name` cut in the middle to [`MAX_NAME`] characters: a name may be as long as a spec.
fn shorten(name: &str) -> String {
    let count = name.chars().count();
    if count <= MAX_NAME {
        return name.to_owned();
    }
    let keep = (MAX_NAME - 1) / 2;
    let head: String = name.chars().take(keep).collect();
    let tail: String = name.chars().skip(count - keep).collect();
    format!("{head}…{tail}")
}

/// A layer's fill colour, by what its kind does.
fn fill(keyword: &str) -> &'static str {
    match keyword {
        k if k.starts_with("conv") => "#dbe9f6",
        k if k.starts_with("batchnorm") => "#e3f1df",
        k if k.contains("pool") || k == "upsample" => "#fde9d3",
        "linear" => "#e8def3",
        "add" | "concat" | "mul" => "#f9dcdc",
        _ => "#f0f0f0",
    }
}

/// `text` as XML character data: markup characters escaped, characters XML forbids replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 || matches!(c, '\u{fffe}' | '\u{ffff}') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "../../tests/support/xml.rs"]
mod xml;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_models::tiny_resnet;

    #[test]
    fn long_names_are_cut_in_the_middle() {
        let name = format!("a{}z", "m".repeat(500));
        let short = shorten(&name);
        assert!(short.chars().count() <= MAX_NAME);
        assert!(short.starts_with("am") && short.ends_with("mz") && short.contains('…'));
        assert_eq!(shorten("conv1"), "conv1");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("a<b>&\"'\u{7}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}"
        );
    }

    fn count(svg: &str, class: &str) -> usize {
        svg.matches(&format!("<g class=\"{class}\">")).count()
    }

    #[test]
    fn a_residual_block_is_drawn_with_its_boxes_and_shortcut() {
        let model = tiny_resnet();
        let svg = Drawing::new(&model, 9).svg(&model);
        let elements = xml::elements(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(elements[0], "svg");
        // input, 15 layers, output; layer1, layer1.0 and layer1.0.downsample as boxes.
        assert_eq!(count(&svg, "node"), 17);
        assert_eq!(count(&svg, "group"), 3);
        // One edge per layer input (the add has two) and the output's.
        assert_eq!(count(&svg, "edge"), 17);
        assert!(svg.contains(">layer1.0.downsample</text>"));
        assert!(svg.contains(
            ">conv2d(out_channels=8, kernel_size=3, stride=2, padding=1, bias=false)</text>"
        ));
        insta::assert_snapshot!(svg);
        // The same model at depth 2: the block is one dashed node, the stem and head unchanged.
        let svg = Drawing::new(&model, 2).svg(&model);
        xml::elements(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(count(&svg, "node"), 9);
        assert_eq!(count(&svg, "group"), 1);
        assert!(svg.contains(">9 layers, 944 params</text>"));
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn drawings_are_deterministic() {
        let model = tiny_resnet();
        assert_eq!(
            Drawing::new(&model, 9).svg(&model),
            Drawing::new(&model, 9).svg(&model)
        );
    }
}
