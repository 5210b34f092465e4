//! The multi-node patterns `torch.onnx.export` (both exporters) and cnnc's own exporter write for
//! one layer: GELU's erf and tanh formulas, SiLU as `x * Sigmoid(x)`, group norm as Reshape → InstanceNormalization →
//! Reshape (→ Mul → Add), batch norm on batch statistics as cnnc exports it (reductions over
//! batch, height and width), a linear layer as MatMul (→ Add), a `Resize` to sizes built from
//! its input's `Shape`, and a `Pad` folded into the `Conv` after it. Matching is exact: every intermediate value is read once, by the next node of the
//! pattern, and every constant equals the formula's (up to float rounding of the same number).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cnnc_core::PaddingMode;
use cnnc_core::config::GeluApproximate;

use super::{
    Const, ImportError, attr, attr_float, attr_int, attr_ints, attr_string, node_error,
    reduced_axes,
};
use crate::proto::NodeProto;

/// What a matched pattern imports as.
#[derive(Debug)]
pub(super) enum Pattern<'a> {
    /// `nn.GELU(approximate)`.
    Gelu(GeluApproximate),
    /// `nn.SiLU`.
    Silu,
    /// `nn.GroupNorm`: weight and bias `[C]` when affine; the second Reshape's target shape.
    GroupNorm {
        groups: usize,
        eps: f32,
        affine: Option<(Const, Const)>,
        shape: GroupShape,
    },
    /// `nn.Linear`: the MatMul's weight `[in, out]` (named `name` in the file) and the bias.
    Linear {
        weight: Const,
        name: &'a str,
        bias: Option<Const>,
    },
    /// `nn.BatchNorm2d(track_running_stats=False)`: weight and bias `[C]` when affine.
    BatchStatistics {
        eps: f32,
        affine: Option<(Const, Const)>,
        weight: Option<&'a str>,
    },
    /// The `Resize` this pattern's root is, to output `[h, w]`: its sizes are the input's batch
    /// and channels (`Shape` sliced to `[0, 2)`) concatenated with constant `[h, w]`.
    ResizeTo { size: [usize; 2] },
    /// An adaptive pool whose windows do not divide its input, as cnnc exports it: each output
    /// row's window sliced and reduced over the height, concatenated, then the same for the
    /// columns. The windows (start, end) of the rows and of the columns, checked against
    /// PyTorch's when the input's shape is known.
    AdaptivePool {
        avg: bool,
        rows: Vec<(usize, usize)>,
        cols: Vec<(usize, usize)>,
    },
    /// An average pool with `divisor_override`, as cnnc exports it: the `AveragePool`
    /// (node `pool`, padding counted, no ceil mode) times `kh * kw / divisor`.
    DivisorPool { pool: usize, divisor: usize },
    /// A `Pad` before the `Conv` this pattern's root is: padding `[top, left]` and `[bottom,
    /// right]`, and its mode.
    PadConv {
        padding: [[usize; 2]; 2],
        mode: PaddingMode,
    },
}

/// Where group norm's second Reshape takes its shape from.
#[derive(Debug)]
pub(super) enum GroupShape {
    /// `Shape` of the pattern's input (legacy and dynamo exporters with a dynamic batch).
    OfInput,
    /// A constant `[batch or 0, C, H, W]` (cnnc's export; dynamo with a static batch).
    Constant(Vec<f32>),
}

/// A matched pattern: its root (last) node's index is the key it is stored under.
#[derive(Debug)]
pub(super) struct Fused<'a> {
    /// What it imports as.
    pub pattern: Pattern<'a>,
    /// The one value it reads.
    pub input: &'a str,
    /// Every node of the pattern, the root included.
    pub nodes: Vec<usize>,
}

/// The graph as the matchers see it.
pub(super) struct Graph<'g, 'c> {
    nodes: &'g [NodeProto],
    producer: HashMap<&'g str, usize>,
    uses: HashMap<&'g str, usize>,
    consts: &'c HashMap<&'g str, Rc<Const>>,
    taken: HashSet<usize>,
}

/// Most leaves a product of single-use `Mul`s may have while matching (bounds the search).
const MAX_FACTORS: usize = 6;

/// Every pattern in `nodes`, keyed by its root node; `folded` nodes (already constants) take
/// part in none. Later roots are matched first, so a node belongs to the largest pattern.
pub(super) fn find<'g>(
    nodes: &'g [NodeProto],
    outputs: &[&'g str],
    consts: &HashMap<&'g str, Rc<Const>>,
    folded: &HashSet<usize>,
) -> Result<HashMap<usize, Fused<'g>>, ImportError> {
    let mut g = Graph {
        nodes,
        producer: HashMap::new(),
        uses: HashMap::new(),
        consts,
        taken: folded.clone(),
    };
    for (i, node) in nodes.iter().enumerate() {
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            g.producer.entry(output.as_str()).or_insert(i);
        }
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            *g.uses.entry(input.as_str()).or_default() += 1;
        }
    }
    for output in outputs {
        *g.uses.entry(output).or_default() += 1;
    }
    let mut found = HashMap::new();
    for root in (0..nodes.len()).rev() {
        if g.taken.contains(&root) {
            continue;
        }
        let fused = match nodes[root].op_type.as_str() {
            "Mul" => g
                .gelu(root)
                .or_else(|| g.silu(root))
                .or_else(|| g.divisor_pool(root)),
            "Add" => g
                .group_norm(root)
                .or_else(|| g.linear(root))
                .or_else(|| g.batch_statistics(root)),
            "Div" => g.batch_statistics(root),
            "Reshape" => g.group_norm(root),
            "Resize" => g.resize_to(root),
            "Concat" => g.adaptive_pool(root),
            "Conv" => g.pad_conv(root)?,
            _ => None,
        };
        if let Some(fused) = fused {
            g.taken.extend(fused.nodes.iter().copied());
            found.insert(root, fused);
        }
    }
    Ok(found)
}

fn close(value: f32, want: f64) -> bool {
    (f64::from(value) - want).abs() <= want.abs() * 1e-6
}

impl<'g, 'c> Graph<'g, 'c> {
    /// The node producing `name` when it is an intermediate of a pattern: read once, by one
    /// node not yet in a pattern, with one output.
    fn inner(&self, name: &str) -> Option<(usize, &'g NodeProto)> {
        let i = *self.producer.get(name)?;
        let node = &self.nodes[i];
        let one_output = node.output.iter().filter(|o| !o.is_empty()).count() == 1;
        (self.uses.get(name) == Some(&1) && !self.taken.contains(&i) && one_output)
            .then_some((i, node))
    }

    /// `inner`, of operator `op`.
    fn inner_op(&self, name: &str, op: &str) -> Option<(usize, &'g NodeProto)> {
        self.inner(name).filter(|(_, n)| n.op_type == op)
    }

    fn constant(&self, name: &str) -> Option<&'c Const> {
        self.consts.get(name).map(|c| &**c)
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.constant(name)
            .filter(|c| c.values.len() == 1)
            .map(|c| c.values[0])
    }

    fn is_value(&self, name: &str) -> bool {
        !name.is_empty() && !self.consts.contains_key(name)
    }

    /// The two inputs of a binary node.
    fn pair(node: &'g NodeProto) -> Option<(&'g str, &'g str)> {
        match node.input.as_slice() {
            [a, b] => Some((a.as_str(), b.as_str())),
            _ => None,
        }
    }

    /// The factors of the product rooted at node `root` (a `Mul`): the leaves of its tree of
    /// single-use `Mul`s, and those `Mul`s.
    fn factors(&self, root: usize) -> Option<(Vec<&'g str>, Vec<usize>)> {
        let (a, b) = Self::pair(&self.nodes[root])?;
        let mut stack = vec![a, b];
        let mut leaves = Vec::new();
        let mut muls = vec![root];
        while let Some(name) = stack.pop() {
            if leaves.len() + stack.len() >= MAX_FACTORS {
                return None;
            }
            match self
                .inner_op(name, "Mul")
                .and_then(|(i, n)| Some((i, Self::pair(n)?)))
            {
                Some((i, (x, y))) => {
                    muls.push(i);
                    stack.extend([x, y]);
                }
                None => leaves.push(name),
            }
        }
        Some((leaves, muls))
    }

    /// Splits `leaves` into one constant equal to `want` and the rest (values).
    fn one_constant(&self, leaves: &[&'g str], want: f64) -> Option<Vec<&'g str>> {
        let (consts, values): (Vec<&str>, Vec<&str>) =
            leaves.iter().partition(|l| !self.is_value(l));
        match consts.as_slice() {
            [c] if self.scalar(c).is_some_and(|v| close(v, want)) => Some(values),
            _ => None,
        }
    }

    /// `x + c` (either order) with scalar `c == want`: `x` and the node.
    fn add_constant(&self, name: &str, want: f64) -> Option<(&'g str, usize)> {
        let (i, node) = self.inner_op(name, "Add")?;
        let (other, v) = self.with_scalar(node)?;
        (close(v, want) && self.is_value(other)).then_some((other, i))
    }

    /// A binary node's other input and its scalar constant input (either order).
    fn with_scalar(&self, node: &'g NodeProto) -> Option<(&'g str, f32)> {
        let (a, b) = Self::pair(node)?;
        match (self.scalar(a), self.scalar(b)) {
            (None, Some(v)) => Some((a, v)),
            (Some(v), None) => Some((b, v)),
            _ => None,
        }
    }

    /// GELU: `x * 0.5 * (1 + inner)` as any tree of multiplications, where `inner` is
    /// `erf(x / sqrt(2))` (or `x * (1 / sqrt(2))`) or
    /// `tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))` (`x^3` as `Pow(x, 3)` or two `Mul`s).
    fn gelu(&self, root: usize) -> Option<Fused<'g>> {
        let (leaves, mut nodes) = self.factors(root)?;
        let values = self.one_constant(&leaves, 0.5)?;
        let [p, q] = values.as_slice() else {
            return None;
        };
        let (x, plus) = if self.inner_op(p, "Add").is_some() {
            (*q, *p)
        } else {
            (*p, *q)
        };
        let (t, add) = self.add_constant(plus, 1.0)?;
        nodes.push(add);
        let (i, f) = self.inner(t)?;
        nodes.push(i);
        let approximate = match f.op_type.as_str() {
            "Erf" => {
                let (j, d) = self.inner(f.input.first()?)?;
                nodes.push(j);
                let (a, b) = Self::pair(d)?;
                let ok = match d.op_type.as_str() {
                    "Div" => a == x && self.scalar(b).is_some_and(|v| close(v, 2f64.sqrt())),
                    "Mul" => {
                        let (leaves, muls) = self.factors(j)?;
                        nodes.extend(&muls[1..]);
                        self.one_constant(&leaves, 0.5f64.sqrt())? == [x]
                    }
                    _ => false,
                };
                ok.then_some(GeluApproximate::None)?
            }
            "Tanh" => {
                let (j, _) = self.inner_op(f.input.first()?, "Mul")?;
                let (leaves, muls) = self.factors(j)?;
                nodes.extend(muls);
                let [sum] = self
                    .one_constant(&leaves, (2.0 / std::f64::consts::PI).sqrt())?
                    .try_into()
                    .ok()?;
                let (k, add) = self.inner_op(sum, "Add")?;
                nodes.push(k);
                let (a, b) = Self::pair(add)?;
                let cubic = match (a == x, b == x) {
                    (true, false) => b,
                    (false, true) => a,
                    _ => return None,
                };
                let (m, _) = self.inner_op(cubic, "Mul")?;
                let (leaves, muls) = self.factors(m)?;
                nodes.extend(muls);
                let rest = self.one_constant(&leaves, 0.044715)?;
                match rest.as_slice() {
                    [a, b, c] if [a, b, c].iter().all(|v| **v == x) => {}
                    [cube] => {
                        let (p, pow) = self.inner_op(cube, "Pow")?;
                        let (base, e) = Self::pair(pow)?;
                        if base != x || self.scalar(e) != Some(3.0) {
                            return None;
                        }
                        nodes.push(p);
                    }
                    _ => return None,
                }
                GeluApproximate::Tanh
            }
            _ => return None,
        };
        self.is_value(x).then_some(Fused {
            pattern: Pattern::Gelu(approximate),
            input: x,
            nodes,
        })
    }

    /// The initializer a constant was reshaped or unsqueezed from (itself when none).
    fn origin(&self, name: &'g str) -> &'g str {
        let mut name = name;
        for _ in 0..8 {
            let Some(&i) = self.producer.get(name) else {
                break;
            };
            let node = &self.nodes[i];
            if !matches!(node.op_type.as_str(), "Unsqueeze" | "Reshape" | "Identity") {
                break;
            }
            match node.input.first() {
                Some(input) => name = input,
                None => break,
            }
        }
        name
    }

    /// SiLU: `x * Sigmoid(x)` (either order).
    fn silu(&self, root: usize) -> Option<Fused<'g>> {
        let (a, b) = Self::pair(&self.nodes[root])?;
        [(a, b), (b, a)].into_iter().find_map(|(x, s)| {
            let (i, sigmoid) = self.inner_op(s, "Sigmoid")?;
            (sigmoid.input.first().map(String::as_str) == Some(x) && self.is_value(x)).then(|| {
                Fused {
                    pattern: Pattern::Silu,
                    input: x,
                    nodes: vec![root, i],
                }
            })
        })
    }

    /// A `[C, 1, 1]` constant's values as `[C]`.
    fn per_channel(&self, name: &str) -> Option<Const> {
        let c = self.constant(name)?;
        matches!(c.dims.as_slice(), [_, 1, 1]).then(|| Const {
            dims: vec![c.values.len()],
            values: c.values.clone(),
        })
    }

    /// `Add(Mul(y, weight), bias)` at `root` (either order in each), the weight and bias
    /// `[C, 1, 1]` constants, `y` computed by an `op` node: the `Mul`'s and that node's indices,
    /// the weight and bias as `[C]`, and the initializer the weight was reshaped from.
    fn channel_affine(
        &self,
        root: usize,
        op: &str,
    ) -> Option<(usize, usize, Const, Const, &'g str)> {
        let (a, b) = Self::pair(&self.nodes[root])?;
        let (scaled, bias) = if self.is_value(a) { (a, b) } else { (b, a) };
        let bias = self.per_channel(bias)?;
        let (i, mul) = self.inner_op(scaled, "Mul")?;
        let (a, b) = Self::pair(mul)?;
        let (y, weight) = if self.is_value(a) { (a, b) } else { (b, a) };
        let weight_name = self.origin(weight);
        let weight = self.per_channel(weight)?;
        if weight.values.len() != bias.values.len() {
            return None;
        }
        let (j, _) = self.inner_op(y, op)?;
        Some((i, j, weight, bias, weight_name))
    }

    /// Group norm: `Reshape(x, [0, G, -1])` → `InstanceNormalization` with scale 1 and bias 0
    /// (`[G]`) → `Reshape` to `Shape(x)` or `[N, C, H, W]` → `Mul` by the weight `[C, 1, 1]`
    /// → `Add` of the bias `[C, 1, 1]` (the last two when affine).
    fn group_norm(&self, root: usize) -> Option<Fused<'g>> {
        let node = &self.nodes[root];
        let mut nodes = vec![root];
        let (back, affine) = if node.op_type == "Add" {
            let (mul, j, weight, bias, weight_name) = self.channel_affine(root, "Reshape")?;
            nodes.extend([mul, j]);
            // Without affine, the legacy exporter still multiplies by ones and adds zeros.
            let identity = weight.values.iter().all(|&v| v == 1.0)
                && bias.values.iter().all(|&v| v == 0.0)
                && !weight_name.ends_with(".weight");
            (&self.nodes[j], (!identity).then_some((weight, bias)))
        } else {
            (node, None)
        };
        let (normalized, target) = Self::pair(back)?;
        let (i, norm) = self.inner_op(normalized, "InstanceNormalization")?;
        nodes.push(i);
        let [grouped, scale, bias] = norm.input.as_slice() else {
            return None;
        };
        let (scale, bias) = (self.constant(scale)?, self.constant(bias)?);
        let groups = scale.values.len();
        let ones = scale.values.iter().all(|&v| v == 1.0) && scale.dims == [groups];
        let zeros = bias.values.iter().all(|&v| v == 0.0) && bias.dims == [groups];
        if !ones || !zeros || groups == 0 {
            return None;
        }
        let (j, regroup) = self.inner_op(grouped, "Reshape")?;
        nodes.push(j);
        let (x, grouping) = Self::pair(regroup)?;
        let grouping = self.constant(grouping)?;
        if grouping.values != [0.0, groups as f32, -1.0] || !self.is_value(x) {
            return None;
        }
        let shape = match self.inner_op(target, "Shape") {
            Some((k, shape)) => {
                let whole = attr_int(shape, "start", 0) == 0 && attr(shape, "end").is_none();
                if shape.input.first().map(String::as_str) != Some(x) || !whole {
                    return None;
                }
                nodes.push(k);
                GroupShape::OfInput
            }
            None => GroupShape::Constant(self.constant(target)?.values.clone()),
        };
        Some(Fused {
            pattern: Pattern::GroupNorm {
                groups,
                eps: attr_float(norm, "epsilon", 1e-5),
                affine,
                shape,
            },
            input: x,
            nodes,
        })
    }

    /// A linear layer: `MatMul(x, W)` with a constant `W` `[in, out]`, then `Add` of a constant
    /// bias `[out]` (either order).
    fn linear(&self, root: usize) -> Option<Fused<'g>> {
        let (a, b) = Self::pair(&self.nodes[root])?;
        let (product, bias) = if self.is_value(a) { (a, b) } else { (b, a) };
        let bias = self.constant(bias)?;
        let (i, matmul) = self.inner_op(product, "MatMul")?;
        let (x, w) = Self::pair(matmul)?;
        let weight = self.constant(w)?;
        let [_, out] = weight.dims.as_slice() else {
            return None;
        };
        (bias.dims == [*out] && self.is_value(x)).then(|| Fused {
            pattern: Pattern::Linear {
                weight: weight.clone(),
                name: w,
                bias: Some(bias.clone()),
            },
            input: x,
            nodes: vec![root, i],
        })
    }

    /// A `ReduceMean` over batch, height and width keeping them (the axes an attribute or a
    /// constant input): the node's index and its input.
    fn batch_mean(&self, name: &str, uses: usize) -> Option<(usize, &'g str)> {
        let i = *self.producer.get(name)?;
        let node = &self.nodes[i];
        let fits = node.op_type == "ReduceMean"
            && self.uses.get(name) == Some(&uses)
            && !self.taken.contains(&i)
            && attr_int(node, "keepdims", 1) == 1
            && reduced_axes(node, |a| self.constant(a)).as_deref() == Some(&[0, 2, 3][..]);
        let x = node.input.first().map(String::as_str)?;
        fits.then_some((i, x))
    }

    /// Batch norm on batch statistics as cnnc exports it: `mean = ReduceMean(x)`,
    /// `centered = x - mean`, `var = ReduceMean(centered * centered)`,
    /// `Div(centered, Sqrt(var + eps))` (reductions over batch, height and width), then, when
    /// affine, `Mul` by the weight and `Add` of the bias `[C, 1, 1]`. The root is the `Add`, or
    /// the `Div` without affine.
    fn batch_statistics(&self, root: usize) -> Option<Fused<'g>> {
        let node = &self.nodes[root];
        let mut nodes = vec![root];
        let (div, affine, weight_name) = if node.op_type == "Add" {
            let (mul, j, weight, bias, weight_name) = self.channel_affine(root, "Div")?;
            nodes.extend([mul, j]);
            (&self.nodes[j], Some((weight, bias)), Some(weight_name))
        } else {
            (node, None, None)
        };
        let (centered, std) = Self::pair(div)?;
        let (i, sqrt) = self.inner_op(std, "Sqrt")?;
        nodes.push(i);
        let (j, _) = self.inner_op(sqrt.input.first()?, "Add")?;
        let (var, eps) = self.with_scalar(&self.nodes[j])?;
        nodes.push(j);
        let (k, squared) = self.batch_mean(var, 1)?;
        nodes.push(k);
        let (m, square) = self.inner_op(squared, "Mul")?;
        if Self::pair(square)? != (centered, centered) {
            return None;
        }
        nodes.push(m);
        // `centered` is read three times: twice by the square, once by the division.
        let s = *self.producer.get(centered)?;
        let sub = &self.nodes[s];
        if sub.op_type != "Sub" || self.uses.get(centered) != Some(&3) || self.taken.contains(&s) {
            return None;
        }
        nodes.push(s);
        let (x, mean) = Self::pair(sub)?;
        let (n, of) = self.batch_mean(mean, 1)?;
        if of != x || !self.is_value(x) || eps.is_nan() || eps <= 0.0 {
            return None;
        }
        nodes.push(n);
        Some(Fused {
            pattern: Pattern::BatchStatistics {
                eps,
                affine,
                weight: weight_name,
            },
            input: x,
            nodes,
        })
    }

    /// A `Resize` of `x` to `Concat(Shape(x)[0..2], [h, w])`, the batch and channels sliced by a
    /// `Slice` (starts 0, ends 2) or by `Shape`'s own `start` and `end`, as both torch exporters
    /// and cnnc write an interpolation to a size with a symbolic batch.
    fn resize_to(&self, root: usize) -> Option<Fused<'g>> {
        let node = &self.nodes[root];
        let x = node.input.first().map(String::as_str)?;
        let sizes = node.input.get(3).map(String::as_str)?;
        if !self.is_value(x) || !self.is_value(sizes) {
            return None;
        }
        let (c, concat) = self.inner_op(sizes, "Concat")?;
        if attr_int(concat, "axis", 0) != 0 {
            return None;
        }
        let (nc, hw) = Self::pair(concat)?;
        let whole = |v: f32| v >= 1.0 && v.fract() == 0.0 && v <= cnnc_core::MAX_DIM as f32;
        let [h, w] = self.constant(hw)?.values[..] else {
            return None;
        };
        if !whole(h) || !whole(w) {
            return None;
        }
        let mut nodes = vec![root, c];
        let shape_of = match self.inner_op(nc, "Slice") {
            Some((s, slice)) => {
                let [data, bounds @ ..] = slice.input.as_slice() else {
                    return None;
                };
                // starts, ends, then optional axes and steps.
                let want: [&[f32]; 4] = [&[0.0], &[2.0], &[0.0], &[1.0]];
                if !(2..=4).contains(&bounds.len()) {
                    return None;
                }
                for (name, want) in bounds.iter().zip(want) {
                    if self.constant(name)?.values != want {
                        return None;
                    }
                }
                nodes.push(s);
                let (k, shape) = self.inner_op(data, "Shape")?;
                if attr(shape, "start").is_some() || attr(shape, "end").is_some() {
                    return None;
                }
                nodes.push(k);
                shape
            }
            None => {
                let (k, shape) = self.inner_op(nc, "Shape")?;
                if attr_int(shape, "start", 0) != 0 || attr_int(shape, "end", i64::MAX) != 2 {
                    return None;
                }
                nodes.push(k);
                shape
            }
        };
        (shape_of.input.first().map(String::as_str) == Some(x)).then_some(Fused {
            pattern: Pattern::ResizeTo {
                size: [h as usize, w as usize],
            },
            input: x,
            nodes,
        })
    }

    /// One window of an uneven adaptive pool: `part` is `op(Slice(data, [start], [end],
    /// [axis]))` reduced over `axis` and kept. The window, the slice's `data` and the two nodes.
    fn window(
        &self,
        part: &str,
        op: &str,
        axis: i64,
    ) -> Option<((usize, usize), &'g str, [usize; 2])> {
        let (r, reduce) = self.inner_op(part, op)?;
        let axes = reduced_axes(reduce, |a| self.constant(a))?;
        if axes != [axis] || attr_int(reduce, "keepdims", 1) != 1 {
            return None;
        }
        let (s, slice) = self.inner_op(reduce.input.first()?, "Slice")?;
        let [data, starts, ends, axes, steps @ ..] = slice.input.as_slice() else {
            return None;
        };
        let one = |name: &str| match self.constant(name)?.values[..] {
            [v] if v >= 0.0 && v.fract() == 0.0 && v <= cnnc_core::MAX_DIM as f32 => {
                Some(v as usize)
            }
            _ => None,
        };
        let (start, end) = (one(starts)?, one(ends)?);
        let steps_ok = match steps {
            [] => true,
            [step] => one(step) == Some(1),
            _ => false,
        };
        (one(axes)? == axis as usize && steps_ok && start < end).then_some((
            (start, end),
            data.as_str(),
            [r, s],
        ))
    }

    /// An uneven adaptive pool as cnnc exports it (`export::adaptive_pool`): the root
    /// `Concat` on axis 3 of one window per output column of `rows`, itself a `Concat` on axis
    /// 2 of one window per output row of `x`, every window a `Slice` reduced by the same
    /// `ReduceMean` or `ReduceMax`.
    fn adaptive_pool(&self, root: usize) -> Option<Fused<'g>> {
        let node = &self.nodes[root];
        if attr_int(node, "axis", 0) != 3 {
            return None;
        }
        let first = node.input.first()?;
        let op = self.inner(first)?.1.op_type.as_str();
        if !matches!(op, "ReduceMean" | "ReduceMax") {
            return None;
        }
        let mut nodes = vec![root];
        let mut cols = Vec::with_capacity(node.input.len());
        let mut rows_value = None;
        for part in &node.input {
            let (window, data, pair) = self.window(part, op, 3)?;
            if rows_value.is_some_and(|r| r != data) {
                return None;
            }
            rows_value = Some(data);
            cols.push(window);
            nodes.extend(pair);
        }
        let rows_value = rows_value?;
        let r = *self.producer.get(rows_value)?;
        let concat = &self.nodes[r];
        let read_by_columns = self.uses.get(rows_value) == Some(&cols.len());
        if concat.op_type != "Concat"
            || attr_int(concat, "axis", 0) != 2
            || !read_by_columns
            || self.taken.contains(&r)
        {
            return None;
        }
        nodes.push(r);
        let mut rows = Vec::with_capacity(concat.input.len());
        let mut x = None;
        for part in &concat.input {
            let (window, data, pair) = self.window(part, op, 2)?;
            if x.is_some_and(|x| x != data) {
                return None;
            }
            x = Some(data);
            rows.push(window);
            nodes.extend(pair);
        }
        let x = x.filter(|x| self.is_value(x))?;
        Some(Fused {
            pattern: Pattern::AdaptivePool {
                avg: op == "ReduceMean",
                rows,
                cols,
            },
            input: x,
            nodes,
        })
    }

    /// An average pool with a `divisor_override`: `Mul(AveragePool(x), kh * kw / divisor)`
    /// (either order), the pool counting padding and without ceil mode, the factor exactly
    /// what cnnc's export writes for a whole divisor.
    fn divisor_pool(&self, root: usize) -> Option<Fused<'g>> {
        let (mean, factor) = self.with_scalar(&self.nodes[root])?;
        let (i, pool) = self.inner_op(mean, "AveragePool")?;
        let kernel = attr_ints(pool, "kernel_shape")?;
        let [kh, kw] = kernel[..] else {
            return None;
        };
        let whole =
            attr_int(pool, "count_include_pad", 0) == 1 && attr_int(pool, "ceil_mode", 0) == 0;
        let window = (kh.checked_mul(kw)?) as f32;
        if !whole || factor.is_nan() || factor <= 0.0 || window < 1.0 {
            return None;
        }
        let divisor = (window / factor).round();
        if !(1.0..=cnnc_core::MAX_DIM as f32).contains(&divisor) || window / divisor != factor {
            return None;
        }
        let x = pool
            .input
            .first()
            .map(String::as_str)
            .filter(|x| self.is_value(x))?;
        Some(Fused {
            pattern: Pattern::DivisorPool {
                pool: i,
                divisor: divisor as usize,
            },
            input: x,
            nodes: vec![root, i],
        })
    }

    /// A `Pad` read only by the `Conv` at `root`: zero padding joins the convolution's own,
    /// `reflect`, `edge` and `wrap` become its `padding_mode`. Anything else is an error naming
    /// the `Pad`.
    fn pad_conv(&self, root: usize) -> Result<Option<Fused<'g>>, ImportError> {
        let Some(input) = self.nodes[root].input.first() else {
            return Ok(None);
        };
        let Some((i, pad)) = self.inner_op(input, "Pad") else {
            return Ok(None);
        };
        let refuse = |why: String| {
            node_error(
                pad,
                format!(
                    "{why}; cnnc imports a Pad before a Conv when it pads only height and \
                     width, the same on both sides (or padding='same''s extra pixel on the \
                     bottom and right, stride 1), with zeros, reflect, edge or wrap"
                ),
            )
        };
        let x = pad
            .input
            .first()
            .filter(|x| self.is_value(x))
            .ok_or_else(|| refuse("it pads no computed tensor".to_owned()))?;
        let pads: Vec<f32> = match pad.input.get(1).filter(|p| !p.is_empty()) {
            Some(p) => self
                .constant(p)
                .ok_or_else(|| refuse(format!("its pads `{p}` are not constant")))?
                .values
                .clone(),
            None => attr_ints(pad, "pads")
                .unwrap_or_default()
                .iter()
                .map(|&v| v as f32)
                .collect(),
        };
        let axes: Vec<i64> = match pad.input.get(3).filter(|a| !a.is_empty()) {
            Some(a) => self
                .constant(a)
                .ok_or_else(|| refuse(format!("its axes `{a}` are not constant")))?
                .values
                .iter()
                .map(|&v| (v as i64).saturating_add(if v < 0.0 { 4 } else { 0 }))
                .collect(),
            None => (0..4).collect(),
        };
        if pads.len() != 2 * axes.len() || axes.iter().any(|a| !(0..4).contains(a)) {
            return Err(refuse(format!(
                "its pads {pads:?} (axes {axes:?}) are not for a 4-D tensor"
            )));
        }
        let mut full = [0f32; 8];
        for (k, &a) in axes.iter().enumerate() {
            full[a as usize] = pads[k];
            full[a as usize + 4] = pads[k + axes.len()];
        }
        let [n0, c0, top, left, n1, c1, bottom, right] = full;
        let whole = |v: f32| v >= 0.0 && v.fract() == 0.0 && v <= cnnc_core::MAX_DIM as f32;
        // Uneven pads are checked against the convolution's `padding='same'` when it is lowered.
        if [n0, c0, n1, c1] != [0.0; 4] || ![top, left, bottom, right].into_iter().all(whole) {
            return Err(refuse(format!("its pads are {full:?}")));
        }
        let mode = match attr_string(pad, "mode", "constant").as_str() {
            "constant" => {
                let value = match pad.input.get(2).filter(|v| !v.is_empty()) {
                    Some(v) => self.scalar(v),
                    None => Some(attr_float(pad, "value", 0.0)),
                };
                if value != Some(0.0) {
                    return Err(refuse(format!("it pads with {value:?}, not zeros")));
                }
                PaddingMode::Zeros
            }
            "reflect" => PaddingMode::Reflect,
            "edge" => PaddingMode::Replicate,
            "wrap" => PaddingMode::Circular,
            other => return Err(refuse(format!("mode `{other}`"))),
        };
        Ok(Some(Fused {
            pattern: Pattern::PadConv {
                padding: [
                    [top as usize, left as usize],
                    [bottom as usize, right as usize],
                ],
                mode,
            },
            input: x,
            nodes: vec![root, i],
        }))
    }
}
