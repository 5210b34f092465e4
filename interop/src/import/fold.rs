//! Constant folding for the small integer computations `torch.onnx.export` leaves in a graph (a
//! `Pad`'s pads built by `ConstantOfShape`, `Concat`, `Reshape`, `Slice`, `Transpose` and `Cast`;
//! a weight reshaped or unsqueezed for broadcasting): a node whose inputs are all constants
//! becomes a constant. Every folded tensor counts against one budget, so a hostile chain of
//! reshapes of a large initializer cannot multiply memory.

use cnnc_core::MAX_DIM;

use super::{Const, ImportError, attr, attr_int, attr_ints, node_error, read_tensor};
use crate::proto::NodeProto;

/// Most elements all folded constants of one graph may hold together.
pub(super) const FOLD_BUDGET: usize = 1 << 24;

/// Whether [`fold`] evaluates `op` when all its inputs are constants.
pub(super) fn foldable(op: &str) -> bool {
    matches!(
        op,
        "ConstantOfShape"
            | "Concat"
            | "Reshape"
            | "Slice"
            | "Transpose"
            | "Cast"
            | "Unsqueeze"
            | "Shape"
            | "Gather"
            | "Add"
            | "Sub"
            | "Mul"
    )
}

/// The constant `node` computes from `inputs` (one per input name; `None` for an omitted
/// optional input), charged to `budget`.
pub(super) fn fold(
    node: &NodeProto,
    inputs: &[Option<&Const>],
    budget: &mut usize,
) -> Result<Const, ImportError> {
    let input = |i: usize| -> Result<&Const, ImportError> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| node_error(node, format!("has no input {i}")))
    };
    let out = match node.op_type.as_str() {
        "ConstantOfShape" => {
            let dims = dims_of(node, input(0)?, "shape")?;
            let count = checked_count(node, &dims, budget)?;
            let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => match read_tensor(t)? {
                    Some(c) if c.values.len() == 1 => c.values[0],
                    _ => return Err(node_error(node, "`value` is not one number")),
                },
                None => 0.0,
            };
            Const {
                dims,
                values: vec![value; count],
            }
        }
        "Concat" => {
            let parts = inputs
                .iter()
                .map(|c| c.ok_or_else(|| node_error(node, "has an empty input")))
                .collect::<Result<Vec<_>, _>>()?;
            let first = parts
                .first()
                .ok_or_else(|| node_error(node, "has no input"))?;
            let rank = first.dims.len();
            let axis = axis_of(node, attr_int(node, "axis", 0), rank)?;
            let mut dims = first.dims.clone();
            dims[axis] = 0;
            for p in &parts {
                let same = p.dims.len() == rank
                    && p.dims
                        .iter()
                        .zip(&first.dims)
                        .enumerate()
                        .all(|(i, (a, b))| i == axis || a == b);
                if !same {
                    return Err(node_error(
                        node,
                        format!("cannot concatenate {:?} and {:?}", first.dims, p.dims),
                    ));
                }
                dims[axis] = dims[axis].saturating_add(p.dims[axis]);
            }
            let count = checked_count(node, &dims, budget)?;
            let outer: usize = dims[..axis].iter().product();
            let mut values = Vec::with_capacity(count);
            for o in 0..outer {
                for p in &parts {
                    let chunk: usize = p.dims[axis..].iter().product();
                    values.extend_from_slice(&p.values[o * chunk..(o + 1) * chunk]);
                }
            }
            Const { dims, values }
        }
        "Reshape" => {
            let data = input(0)?;
            let shape = input(1)?;
            let allow_zero = attr_int(node, "allowzero", 0) == 1;
            let mut dims = Vec::with_capacity(shape.values.len().min(8));
            let mut infer = None;
            for (i, &v) in shape.values.iter().enumerate() {
                let d = match v {
                    -1.0 if infer.is_none() => {
                        infer = Some(i);
                        1
                    }
                    0.0 if !allow_zero => *data.dims.get(i).ok_or_else(|| {
                        node_error(
                            node,
                            format!("shape {:?} copies a missing dim", shape.values),
                        )
                    })?,
                    v if v >= 0.0 && v.fract() == 0.0 && v <= MAX_DIM as f32 => v as usize,
                    _ => {
                        return Err(node_error(
                            node,
                            format!("shape {:?} is not a valid reshape", shape.values),
                        ));
                    }
                };
                dims.push(d);
            }
            let known = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let n = data.values.len();
            match (infer, known) {
                (Some(i), Some(k)) if k > 0 && n % k == 0 => dims[i] = n / k,
                (None, Some(k)) if k == n => {}
                _ => {
                    return Err(node_error(
                        node,
                        format!(
                            "cannot reshape a constant of {n} values to {:?}",
                            shape.values
                        ),
                    ));
                }
            }
            charge(node, n, budget)?;
            Const {
                dims,
                values: data.values.clone(),
            }
        }
        "Unsqueeze" => {
            let data = input(0)?;
            let axes: Vec<i64> = match inputs.get(1).copied().flatten() {
                Some(a) => a.values.iter().map(|&v| v as i64).collect(),
                None => attr_ints(node, "axes").unwrap_or_default(),
            };
            let rank = data.dims.len() + axes.len();
            let mut axes = axes
                .iter()
                .map(|&a| axis_of(node, a, rank))
                .collect::<Result<Vec<_>, _>>()?;
            axes.sort_unstable();
            let mut dims = data.dims.clone();
            for a in axes {
                if a > dims.len() {
                    return Err(node_error(node, "its axes are out of range"));
                }
                dims.insert(a, 1);
            }
            charge(node, data.values.len(), budget)?;
            Const {
                dims,
                values: data.values.clone(),
            }
        }
        "Cast" => {
            let data = input(0)?;
            // FLOAT, FLOAT16, DOUBLE and BFLOAT16 keep the values; integer types truncate.
            let float = matches!(attr_int(node, "to", 1), 1 | 10 | 11 | 16);
            charge(node, data.values.len(), budget)?;
            Const {
                dims: data.dims.clone(),
                values: data
                    .values
                    .iter()
                    .map(|&v| if float { v } else { v.trunc() })
                    .collect(),
            }
        }
        "Transpose" => {
            let data = input(0)?;
            let rank = data.dims.len();
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| usize::try_from(a).ok().filter(|&a| a < rank))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| node_error(node, "`perm` is out of range"))?,
                None => (0..rank).rev().collect(),
            };
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(node_error(node, "`perm` is not a permutation"));
            }
            let strides = strides(&data.dims);
            let lists = perm
                .iter()
                .map(|&a| (0..data.dims[a]).map(|i| i * strides[a]).collect())
                .collect::<Vec<Vec<usize>>>();
            charge(node, data.values.len(), budget)?;
            Const {
                dims: perm.iter().map(|&a| data.dims[a]).collect(),
                values: gather(&data.values, &lists),
            }
        }
        "Slice" => slice(node, inputs, budget)?,
        "Shape" => {
            let data = input(0)?;
            if attr(node, "start").is_some() || attr(node, "end").is_some() {
                return Err(node_error(node, "`start` and `end` are not supported"));
            }
            charge(node, data.dims.len(), budget)?;
            Const {
                dims: vec![data.dims.len()],
                values: data.dims.iter().map(|&d| d as f32).collect(),
            }
        }
        "Gather" => {
            let (data, indices) = (input(0)?, input(1)?);
            let rank = data.dims.len();
            let axis = axis_of(node, attr_int(node, "axis", 0), rank)?;
            let d = data.dims[axis];
            let strides = strides(&data.dims);
            let picked = indices
                .values
                .iter()
                .map(|&i| {
                    let i = if i < 0.0 { i + d as f32 } else { i };
                    (i >= 0.0 && i < d as f32 && i.fract() == 0.0)
                        .then_some(i as usize * strides[axis])
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| node_error(node, "an index is out of range"))?;
            let mut lists: Vec<Vec<usize>> = (0..rank)
                .map(|a| (0..data.dims[a]).map(|i| i * strides[a]).collect())
                .collect();
            lists[axis] = picked;
            let mut dims = data.dims[..axis].to_vec();
            dims.extend(&indices.dims);
            dims.extend(&data.dims[axis + 1..]);
            charge(node, lists.iter().map(Vec::len).product(), budget)?;
            Const {
                dims,
                values: gather(&data.values, &lists),
            }
        }
        "Add" | "Sub" | "Mul" => {
            let (a, b) = (input(0)?, input(1)?);
            let (dims, n) = match (a.values.len(), b.values.len()) {
                (x, y) if a.dims == b.dims => (a.dims.clone(), x.max(y)),
                (1, y) => (b.dims.clone(), y),
                (x, 1) => (a.dims.clone(), x),
                _ => {
                    return Err(node_error(
                        node,
                        format!("cannot broadcast {:?} with {:?}", a.dims, b.dims),
                    ));
                }
            };
            charge(node, n, budget)?;
            let at = |c: &Const, i: usize| c.values[if c.values.len() == 1 { 0 } else { i }];
            let values = (0..n)
                .map(|i| match node.op_type.as_str() {
                    "Add" => at(a, i) + at(b, i),
                    "Sub" => at(a, i) - at(b, i),
                    _ => at(a, i) * at(b, i),
                })
                .collect();
            Const { dims, values }
        }
        _ => return Err(node_error(node, "is not a constant computation cnnc folds")),
    };
    Ok(out)
}

/// ONNX `Slice` (opset 10+: starts, ends, axes and steps as inputs) with its clamping rules.
fn slice(
    node: &NodeProto,
    inputs: &[Option<&Const>],
    budget: &mut usize,
) -> Result<Const, ImportError> {
    let get = |i: usize| inputs.get(i).copied().flatten();
    let (Some(data), Some(starts), Some(ends)) = (get(0), get(1), get(2)) else {
        return Err(node_error(node, "needs constant data, starts and ends"));
    };
    let rank = data.dims.len();
    let n = starts.values.len();
    let axes: Vec<i64> = get(3).map_or_else(
        || (0..n as i64).collect(),
        |a| a.values.iter().map(|&v| v as i64).collect(),
    );
    let steps: Vec<i64> = get(4).map_or_else(
        || vec![1; n],
        |s| s.values.iter().map(|&v| v as i64).collect(),
    );
    if ends.values.len() != n || axes.len() != n || steps.len() != n {
        return Err(node_error(
            node,
            "starts, ends, axes and steps differ in length",
        ));
    }
    let strides = strides(&data.dims);
    let mut lists: Vec<Vec<usize>> = (0..rank)
        .map(|a| (0..data.dims[a]).map(|i| i * strides[a]).collect())
        .collect();
    for k in 0..n {
        let axis = axis_of(node, axes[k], rank)?;
        let d = data.dims[axis] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(node_error(node, "a step is 0"));
        }
        let at = |v: f32| {
            let v = v as i64;
            if v < 0 { v.saturating_add(d) } else { v }
        };
        let (start, end) = (at(starts.values[k]), at(ends.values[k]));
        let picked: Vec<i64> = if d == 0 {
            Vec::new()
        } else if step > 0 {
            let (s, e) = (start.clamp(0, d), end.clamp(0, d));
            (s..e).step_by(step as usize).collect()
        } else {
            let (s, e) = (start.clamp(0, d - 1), end.clamp(-1, d - 1));
            let mut v = Vec::new();
            let mut i = s;
            while i > e {
                v.push(i);
                i = i.saturating_add(step);
            }
            v
        };
        lists[axis] = picked
            .into_iter()
            .map(|i| i as usize * strides[axis])
            .collect();
    }
    let dims: Vec<usize> = lists.iter().map(Vec::len).collect();
    charge(node, dims.iter().product(), budget)?;
    Ok(Const {
        dims,
        values: gather(&data.values, &lists),
    })
}

/// The values at every combination of one offset from each list (row-major).
fn gather(values: &[f32], lists: &[Vec<usize>]) -> Vec<f32> {
    let count: usize = lists.iter().map(Vec::len).product();
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return out;
    }
    let mut at = vec![0usize; lists.len()];
    loop {
        let offset: usize = at.iter().zip(lists).map(|(&i, l)| l[i]).sum();
        out.push(values.get(offset).copied().unwrap_or_default());
        let mut axis = lists.len();
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            at[axis] += 1;
            if at[axis] < lists[axis].len() {
                break;
            }
            at[axis] = 0;
        }
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    strides
}

fn axis_of(node: &NodeProto, axis: i64, rank: usize) -> Result<usize, ImportError> {
    let a = if axis < 0 {
        axis.saturating_add(rank as i64)
    } else {
        axis
    };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| node_error(node, format!("axis {axis} is out of range for rank {rank}")))
}

/// A 1-D constant read as dimensions, each in `0..=MAX_DIM`.
fn dims_of(node: &NodeProto, c: &Const, what: &str) -> Result<Vec<usize>, ImportError> {
    c.values
        .iter()
        .map(|&v| (v >= 0.0 && v.fract() == 0.0 && v <= MAX_DIM as f32).then_some(v as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| node_error(node, format!("`{what}` {:?} is not dimensions", c.values)))
}

fn checked_count(
    node: &NodeProto,
    dims: &[usize],
    budget: &mut usize,
) -> Result<usize, ImportError> {
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX);
    charge(node, count, budget)?;
    Ok(count)
}

fn charge(node: &NodeProto, count: usize, budget: &mut usize) -> Result<(), ImportError> {
    *budget = budget.checked_sub(count).ok_or_else(|| {
        node_error(
            node,
            format!(
                "folding its constant of {count} values exceeds cnnc's {FOLD_BUDGET} folded \
                 values per model"
            ),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(dims: &[usize], values: &[f32]) -> Const {
        Const {
            dims: dims.to_vec(),
            values: values.to_vec(),
        }
    }

    fn run(op: &str, inputs: &[Option<&Const>]) -> Const {
        let node = NodeProto {
            op_type: op.into(),
            name: "n".into(),
            ..NodeProto::default()
        };
        fold(&node, inputs, &mut FOLD_BUDGET.clone()).expect("folds")
    }

    #[test]
    fn torch_legacy_pads_fold_to_onnx_order() {
        // What torch.onnx.export (dynamo=False) writes for F.pad(x, [1, 1, 2, 2]) on a 4-D
        // input: [w_begin, w_end, h_begin, h_end] padded with zeros for N and C, reshaped to
        // pairs, rows reversed, transposed and flattened, as ONNX's [begins..., ends...].
        let torch = c(&[4], &[1.0, 1.0, 2.0, 2.0]);
        let zeros = run("ConstantOfShape", &[Some(&c(&[1], &[4.0]))]);
        let cat = run("Concat", &[Some(&torch), Some(&zeros)]);
        let pairs = run("Reshape", &[Some(&cat), Some(&c(&[2], &[-1.0, 2.0]))]);
        let reversed = run(
            "Slice",
            &[
                Some(&pairs),
                Some(&c(&[1], &[-1.0])),
                Some(&c(&[1], &[-9.223_372e18])),
                Some(&c(&[1], &[0.0])),
                Some(&c(&[1], &[-1.0])),
            ],
        );
        let t = run("Transpose", &[Some(&reversed)]);
        let flat = run("Reshape", &[Some(&t), Some(&c(&[1], &[-1.0]))]);
        let pads = run("Cast", &[Some(&flat)]);
        assert_eq!(pads.dims, [8]);
        assert_eq!(pads.values, [0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 2.0, 1.0]);
    }

    #[test]
    fn scalars_have_no_axis() {
        let scalar = c(&[], &[1.0]);
        for op in ["Concat", "Gather"] {
            let node = NodeProto {
                op_type: op.into(),
                ..NodeProto::default()
            };
            let err = fold(
                &node,
                &[Some(&scalar), Some(&scalar)],
                &mut FOLD_BUDGET.clone(),
            );
            assert!(
                err.is_err_and(|e| e.to_string().contains("out of range for rank 0")),
                "{op}"
            );
        }
    }

    #[test]
    fn hostile_axes_and_empty_slices_are_handled() {
        // An empty axis sliced backwards picks nothing (no clamp to [0, -1]).
        let empty = c(&[0], &[]);
        let sliced = run(
            "Slice",
            &[
                Some(&empty),
                Some(&c(&[1], &[-1.0])),
                Some(&c(&[1], &[-9.223_372e18])),
                Some(&c(&[1], &[0.0])),
                Some(&c(&[1], &[-1.0])),
            ],
        );
        assert_eq!(sliced.dims, [0]);
        // An axis of i64::MIN saturates instead of overflowing.
        let node = NodeProto {
            op_type: "Concat".into(),
            attribute: vec![crate::proto::AttributeProto {
                name: "axis".into(),
                r#type: crate::proto::attribute_proto::AttributeType::Int as i32,
                i: i64::MIN,
                ..Default::default()
            }],
            ..NodeProto::default()
        };
        let one = c(&[1], &[1.0]);
        let err = fold(&node, &[Some(&one), Some(&one)], &mut FOLD_BUDGET.clone());
        assert!(err.is_err_and(|e| e.to_string().contains("out of range")));
    }

    #[test]
    fn folding_is_bounded() {
        let node = NodeProto {
            op_type: "ConstantOfShape".into(),
            ..NodeProto::default()
        };
        let huge = c(&[2], &[1_048_576.0, 1_048_576.0]);
        let err = fold(&node, &[Some(&huge)], &mut FOLD_BUDGET.clone()).expect_err("too big");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
