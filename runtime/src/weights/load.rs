//! Loading a file into a model strictly, as `load_state_dict(strict=True)` does, and reading a
//! file's tensors as they are.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;

use super::container::{RawFile, decode_f32, decode_f64, decode_i64, parse, read_header};
use super::problems::{LoadError, LoadProblem};
use super::{TensorData, TensorFile};
use crate::param::{Entry, Visit};

/// Element type a model entry needs.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F32,
    I64,
}

impl Kind {
    /// Bytes per element.
    fn size(self) -> u64 {
        match self {
            Kind::F32 => 4,
            Kind::I64 => 8,
        }
    }
}

/// A value staged for the model, decoded and checked before anything is modified.
enum Staged {
    F32(Vec<f32>),
    I64(i64),
}

/// Loads `model`'s parameters and buffers from the safetensors file at `path`, strictly: every
/// missing, unexpected, wrongly shaped, wrongly typed or non-finite tensor is reported at once,
/// and the model is modified only if there is none. Returns the file's metadata.
///
/// The header is read and checked first: a file whose length disagrees with its header, or that
/// holds more data than the model's tensors, is refused without reading its data.
pub fn load(model: &mut dyn Visit, path: &Path) -> Result<BTreeMap<String, String>, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let (header, opened) = read_header(path).map_err(|p| fail(vec![p]))?;
    let expected = entries(model);
    let model_bytes: u64 = expected
        .iter()
        .map(|(_, kind, shape)| kind.size() * shape.iter().product::<usize>() as u64)
        .sum();
    // Such a file can only be refused; its header alone says why.
    if header.layout.data_len() as u64 > model_bytes
        && let Err(problems) = stage_all(&expected, &header)
    {
        return Err(fail(problems));
    }
    let bytes = opened
        .read_all()
        .map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
    load_bytes(model, &bytes, path)
}

/// [`load`] on the bytes of a safetensors file already in memory; `path` is the file they came
/// from, named in the error.
pub fn load_bytes(
    model: &mut dyn Visit,
    bytes: &[u8],
    path: &Path,
) -> Result<BTreeMap<String, String>, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let file = parse(bytes).map_err(|p| fail(vec![p]))?;
    let staged = stage_all(&entries(model), &file).map_err(fail)?;

    let mut staged = staged.into_iter();
    model.visit(&mut |entry| match (entry, staged.next()) {
        (Entry::Param { param, .. }, Some(Staged::F32(data))) => {
            param.value.iter_mut().zip(data).for_each(|(v, d)| *v = d);
        }
        (Entry::Buffer { value, .. }, Some(Staged::F32(data))) => {
            value.iter_mut().zip(data).for_each(|(v, d)| *v = d);
        }
        (Entry::Counter { value, .. }, Some(Staged::I64(data))) => *value = data,
        // The second visit yields the entries the first did, so kinds always line up.
        _ => {}
    });
    Ok(file.metadata)
}

/// The model's entries: state_dict name, element type and shape, in visit order.
fn entries(model: &mut dyn Visit) -> Vec<(String, Kind, Vec<usize>)> {
    let mut expected = Vec::new();
    model.visit(&mut |entry| {
        expected.push(match entry {
            Entry::Param { name, param } => (name.into(), Kind::F32, param.value.shape().into()),
            Entry::Buffer { name, value } => (name.into(), Kind::F32, value.shape().into()),
            Entry::Counter { name, .. } => (name.into(), Kind::I64, Vec::new()),
        });
    });
    expected
}

/// Checks and decodes a value for every expected entry, or lists every problem: duplicate
/// entries, missing, mistyped, misshapen and non-finite tensors, then unexpected ones.
fn stage_all(
    expected: &[(String, Kind, Vec<usize>)],
    file: &RawFile<'_>,
) -> Result<Vec<Staged>, Vec<LoadProblem>> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut staged = Vec::with_capacity(expected.len());
    for (name, kind, shape) in expected {
        if !seen.insert(name.as_str()) {
            problems.push(LoadProblem::DuplicateEntry { name: name.clone() });
            continue;
        }
        match stage(file, name, *kind, shape) {
            Ok(value) => staged.push(value),
            Err(problem) => problems.push(problem),
        }
    }
    for (name, info, _) in file.tensors() {
        if !seen.contains(name.as_str()) {
            problems.push(LoadProblem::Unexpected {
                name,
                dtype: info.dtype.to_string(),
                shape: info.shape.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(staged)
    } else {
        Err(problems)
    }
}

/// Finds, checks and decodes the tensor the model entry `name` needs.
fn stage(
    file: &RawFile<'_>,
    name: &str,
    kind: Kind,
    shape: &[usize],
) -> Result<Staged, LoadProblem> {
    let (expected_dtype, dtype) = match kind {
        Kind::F32 => ("F32", Dtype::F32),
        Kind::I64 => ("I64", Dtype::I64),
    };
    let Some((info, bytes)) = file.tensor(name) else {
        return Err(LoadProblem::Missing {
            name: name.to_owned(),
            dtype: expected_dtype,
            shape: shape.to_vec(),
        });
    };
    if info.dtype != dtype {
        return Err(LoadProblem::Dtype {
            name: name.to_owned(),
            expected: expected_dtype,
            found: info.dtype.to_string(),
        });
    }
    if info.shape != shape {
        return Err(LoadProblem::Shape {
            name: name.to_owned(),
            expected: shape.to_vec(),
            found: info.shape.clone(),
        });
    }
    match kind {
        Kind::I64 => Ok(Staged::I64(decode_i64(bytes).first().copied().unwrap_or(0))),
        Kind::F32 => {
            let data = decode_f32(bytes);
            let mut bad = data.iter().enumerate().filter(|(_, v)| !v.is_finite());
            if let Some((first, &value)) = bad.next() {
                return Err(LoadProblem::NonFinite {
                    name: name.to_owned(),
                    count: 1 + bad.count(),
                    value,
                    index: unravel(first, shape),
                });
            }
            Ok(Staged::F32(data))
        }
    }
}

/// The multi-dimensional index of flat C-order position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &dim) in shape.iter().enumerate().rev() {
        if dim > 0 {
            index[i] = flat % dim;
            flat /= dim;
        }
    }
    index
}

/// Reads every tensor of a safetensors file (F32, F64 or I64; any other dtype is a problem) with
/// its metadata.
///
/// The header is read and checked first, so a file whose length disagrees with it is refused
/// without reading its data.
pub fn read_tensors(path: &Path) -> Result<TensorFile, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let (_, opened) = read_header(path).map_err(|p| fail(vec![p]))?;
    let bytes = opened
        .read_all()
        .map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
    parse_tensors(&bytes, path)
}

/// [`read_tensors`] on the bytes of a safetensors file already in memory; `path` is the file they
/// came from, named in the error.
pub fn parse_tensors(bytes: &[u8], path: &Path) -> Result<TensorFile, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let file = parse(bytes).map_err(|p| fail(vec![p]))?;
    let mut tensors = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, info, bytes) in file.tensors() {
        let shape = IxDyn(&info.shape);
        let array = match info.dtype {
            Dtype::F32 => ArrayD::from_shape_vec(shape, decode_f32(bytes)).map(TensorData::F32),
            Dtype::F64 => ArrayD::from_shape_vec(shape, decode_f64(bytes)).map(TensorData::F64),
            Dtype::I64 => ArrayD::from_shape_vec(shape, decode_i64(bytes)).map(TensorData::I64),
            other => {
                problems.push(LoadProblem::Dtype {
                    name: name.clone(),
                    expected: "F32, F64 or I64",
                    found: other.to_string(),
                });
                continue;
            }
        };
        match array {
            Ok(array) => {
                tensors.insert(name, array);
            }
            Err(e) => problems.push(LoadProblem::Corrupt(format!("tensor `{name}`: {e}"))),
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    Ok(TensorFile {
        tensors,
        metadata: file.metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_gives_c_order_indices() {
        assert_eq!(unravel(0, &[2, 3]), [0, 0]);
        assert_eq!(unravel(5, &[2, 3]), [1, 2]);
        assert_eq!(unravel(7, &[2, 2, 2]), [1, 1, 1]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }
}
