//! Weights as safetensors files keyed by PyTorch state_dict names: saving a [`Visit`] model
//! (written atomically), loading strictly like `load_state_dict(strict=True)` (every problem
//! reported at once, the model untouched unless all is well), and plain named-tensor files for
//! checkpoints and fixtures.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::param::{Entry, Visit};

/// A tensor as stored in a safetensors file: the element types cnnc reads and writes.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `F32`: parameters and float buffers.
    F32(ArrayD<f32>),
    /// `F64`: read only (fixtures); never written by cnnc's models.
    F64(ArrayD<f64>),
    /// `I64`: counters such as `num_batches_tracked` (0-d, as PyTorch saves them).
    I64(ArrayD<i64>),
}

impl TensorData {
    /// The safetensors dtype name (`F32`, `F64`, `I64`).
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F64(_) => "F64",
            TensorData::I64(_) => "I64",
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::F32(a) => a.shape(),
            TensorData::F64(a) => a.shape(),
            TensorData::I64(a) => a.shape(),
        }
    }

    fn element_size(&self) -> usize {
        match self {
            TensorData::F32(_) => 4,
            TensorData::F64(_) | TensorData::I64(_) => 8,
        }
    }

    /// Little-endian bytes in C order, whatever the array's memory layout.
    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorData::F64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorData::I64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Named tensors and string metadata, as read from a safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// The file's `__metadata__` strings (empty if it has none).
    pub metadata: BTreeMap<String, String>,
}

/// One thing wrong with a weights file, as [`LoadError`] lists them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadProblem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The file is not a well-formed safetensors file (truncated, bad header, bad offsets).
    #[error("not a valid safetensors file: {0}")]
    Corrupt(String),
    /// The model has an entry the file lacks.
    #[error("missing tensor `{name}` (the model expects {dtype} {shape:?})")]
    Missing {
        /// State-dict name.
        name: String,
        /// Expected dtype.
        dtype: &'static str,
        /// Expected shape.
        shape: Vec<usize>,
    },
    /// The file has a tensor the model does not.
    #[error("unexpected tensor `{name}` ({dtype} {shape:?}): the model has no such entry")]
    Unexpected {
        /// Name in the file.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        /// State-dict name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("tensor `{name}` has dtype {found}, the model expects {expected}")]
    Dtype {
        /// State-dict name.
        name: String,
        /// The dtype the model needs.
        expected: &'static str,
        /// The file's dtype.
        found: String,
    },
    /// A float tensor holds NaN or infinite values.
    #[error(
        "tensor `{name}` holds {count} non-finite value(s), the first ({value}) at index {index:?}"
    )]
    NonFinite {
        /// State-dict name.
        name: String,
        /// How many values are NaN or infinite.
        count: usize,
        /// The first of them.
        value: f32,
        /// Its index.
        index: Vec<usize>,
    },
    /// The model itself yields two entries under one name, so no file can load into it.
    #[error("the model has more than one entry named `{name}`")]
    DuplicateEntry {
        /// The repeated name.
        name: String,
    },
}

/// Why a weights or tensor file could not be loaded: every problem found, with the file's path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("cannot load `{}`: {}", path.display(), ProblemList(problems))]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found (at least one).
    pub problems: Vec<LoadProblem>,
}

struct ProblemList<'a>(&'a [LoadProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems", many.len())?;
                many.iter().try_for_each(|p| write!(f, "\n  - {p}"))
            }
        }
    }
}

/// Why a weights or tensor file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Creating, writing, syncing or renaming the file failed.
    #[error("cannot write `{}`: {error}", path.display())]
    Io {
        /// The destination.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// Some tensors hold NaN or infinite values; such a file would not load back.
    #[error("refusing to write `{}`: non-finite values in {}", path.display(), names.join(", "))]
    NonFinite {
        /// The destination.
        path: PathBuf,
        /// The tensors with non-finite values.
        names: Vec<String>,
    },
}

/// The model's state as named tensors, in visit order: PyTorch's `model.state_dict()`.
pub fn state_dict(model: &mut dyn Visit) -> Vec<(String, TensorData)> {
    let mut tensors = Vec::new();
    model.visit(&mut |entry| {
        let (name, tensor) = match entry {
            Entry::Param { name, param } => (name, TensorData::F32(param.value.clone())),
            Entry::Buffer { name, value } => (name, TensorData::F32(value.clone())),
            Entry::Counter { name, value } => {
                (name, TensorData::I64(ArrayD::from_elem(IxDyn(&[]), *value)))
            }
        };
        tensors.push((name.to_owned(), tensor));
    });
    tensors
}

/// Saves `model` to `path` as safetensors (f32 parameters and buffers, 0-d I64 counters) keyed by
/// state_dict names, with `metadata` as the file's string metadata. PyTorch loads the file with
/// `model.load_state_dict(safetensors.torch.load_file(path), strict=True)`.
pub fn save(
    model: &mut dyn Visit,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<(), SaveError> {
    write_tensors(path, &state_dict(model), metadata)
}

/// Writes named tensors to a safetensors file, atomically. Refuses non-finite floats.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, TensorData)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), SaveError> {
    let non_finite: Vec<String> = tensors
        .iter()
        .filter(|(_, t)| match t {
            TensorData::F32(a) => a.iter().any(|v| !v.is_finite()),
            TensorData::F64(a) => a.iter().any(|v| !v.is_finite()),
            TensorData::I64(_) => false,
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !non_finite.is_empty() {
        return Err(SaveError::NonFinite {
            path: path.to_owned(),
            names: non_finite,
        });
    }
    write_atomic(path, &serialize(tensors, metadata)).map_err(|error| SaveError::Io {
        path: path.to_owned(),
        error,
    })
}

/// The safetensors bytes for `tensors`. Laid out as the reference implementation does (8-byte
/// dtypes first, then by name, so every tensor is aligned), with the header keys in a fixed order
/// so that the same model always gives the same bytes.
fn serialize(tensors: &[(String, TensorData)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut order: Vec<&(String, TensorData)> = tensors.iter().collect();
    order.sort_by(|(a, x), (b, y)| y.element_size().cmp(&x.element_size()).then(a.cmp(b)));
    let json = |s: &str| serde_json::Value::from(s).to_string();
    let mut header = String::from("{");
    if !metadata.is_empty() {
        let entries: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}", entries.join(",")));
    }
    let mut offset = 0;
    for (i, (name, tensor)) in order.iter().enumerate() {
        let size = tensor.shape().iter().product::<usize>() * tensor.element_size();
        let shape: Vec<String> = tensor.shape().iter().map(usize::to_string).collect();
        let comma = if i > 0 || !metadata.is_empty() {
            ","
        } else {
            ""
        };
        header.push_str(&format!(
            "{comma}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            json(name),
            tensor.dtype(),
            shape.join(","),
            offset + size,
        ));
        offset += size;
    }
    header.push('}');
    // The data must start 8-byte aligned: pad the header with spaces, as the format allows.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for (_, tensor) in order {
        bytes.extend_from_slice(&tensor.to_le_bytes());
    }
    bytes
}

/// Writes `bytes` to `path` so that readers see the old file or the complete new one, never a
/// partial write: a temporary file in the same directory, synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    temp_name.push(format!(".{}.{unique}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = File::create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        // Best effort: the temporary file is ours and useless now; the write error matters more.
        let _ = fs::remove_file(&temp);
        return written;
    }
    // Make the rename itself durable; directories cannot be opened for syncing everywhere.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A validated safetensors file, borrowed from its bytes.
struct RawFile<'a> {
    /// Tensor names, dtypes, shapes and data offsets.
    layout: Metadata,
    /// Everything after the header.
    data: &'a [u8],
    /// The `__metadata__` strings.
    metadata: BTreeMap<String, String>,
}

impl RawFile<'_> {
    /// The tensor `name`: its description and bytes.
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let info = self.layout.info(name)?;
        let (start, end) = info.data_offsets;
        Some((info, self.data.get(start..end)?))
    }

    /// Every tensor, in data order (stable, unlike the crate's hash order).
    fn tensors(&self) -> impl Iterator<Item = (String, &TensorInfo, &[u8])> {
        self.layout.offset_keys().into_iter().filter_map(|name| {
            let (info, bytes) = self.tensor(&name)?;
            Some((name, info, bytes))
        })
    }
}

fn parse(bytes: &[u8]) -> Result<RawFile<'_>, LoadProblem> {
    let (header_len, layout) =
        SafeTensors::read_metadata(bytes).map_err(|e| LoadProblem::Corrupt(describe(bytes, e)))?;
    let metadata = layout
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    // read_metadata checked that the header and data exactly cover the file.
    let data = bytes.get(8 + header_len..).unwrap_or_default();
    Ok(RawFile {
        layout,
        data,
        metadata,
    })
}

/// A precise message for a file the safetensors crate rejected.
fn describe(bytes: &[u8], error: SafeTensorError) -> String {
    let claimed = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let after_prefix = bytes.len().saturating_sub(8);
    match (error, claimed) {
        (SafeTensorError::HeaderTooSmall, _) => {
            format!(
                "the file is {} bytes, too short for the 8-byte header length",
                bytes.len()
            )
        }
        (SafeTensorError::HeaderTooLarge, Some(n)) => {
            format!("the header length field claims {n} bytes, more than the 100 MB limit")
        }
        (SafeTensorError::InvalidHeaderLength, Some(n)) => format!(
            "the header length field claims {n} bytes but only {after_prefix} bytes follow \
             (truncated file?)"
        ),
        (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => {
            let header = usize::try_from(n).ok().and_then(|n| bytes.get(8..8 + n));
            let described = header
                .and_then(|h| serde_json::from_slice::<Metadata>(h).ok())
                .map(|m| m.data_len());
            let present = after_prefix.saturating_sub(n as usize);
            match described {
                Some(len) => format!(
                    "the header describes {len} bytes of tensor data but {present} bytes follow \
                     it (truncated file?)"
                ),
                None => "the tensor data does not match the header".to_owned(),
            }
        }
        (SafeTensorError::InvalidOffset(name), _) => {
            format!("tensor `{name}`'s data offsets overlap, leave a gap or run backwards")
        }
        (SafeTensorError::TensorInvalidInfo, _) => {
            "a tensor's data range does not match its shape and dtype".to_owned()
        }
        (other, _) => other.to_string(),
    }
}

/// Element type a model entry needs.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F32,
    I64,
}

/// A value staged for the model, decoded and checked before anything is modified.
enum Staged {
    F32(Vec<f32>),
    I64(i64),
}

/// Loads `model`'s parameters and buffers from the safetensors file at `path`, strictly: every
/// missing, unexpected, wrongly shaped, wrongly typed or non-finite tensor is reported at once,
/// and the model is modified only if there is none. Returns the file's metadata.
pub fn load(model: &mut dyn Visit, path: &Path) -> Result<BTreeMap<String, String>, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let bytes = fs::read(path).map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
    let file = parse(&bytes).map_err(|p| fail(vec![p]))?;

    let mut expected: Vec<(String, Kind, Vec<usize>)> = Vec::new();
    model.visit(&mut |entry| {
        expected.push(match entry {
            Entry::Param { name, param } => (name.into(), Kind::F32, param.value.shape().into()),
            Entry::Buffer { name, value } => (name.into(), Kind::F32, value.shape().into()),
            Entry::Counter { name, .. } => (name.into(), Kind::I64, Vec::new()),
        });
    });

    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut staged = Vec::with_capacity(expected.len());
    for (name, kind, shape) in &expected {
        if !seen.insert(name.as_str()) {
            problems.push(LoadProblem::DuplicateEntry { name: name.clone() });
            continue;
        }
        match stage(&file, name, *kind, shape) {
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
    if !problems.is_empty() {
        return Err(fail(problems));
    }

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

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn decode_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn decode_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Reads every tensor of a safetensors file (F32, F64 or I64; any other dtype is a problem) with
/// its metadata.
pub fn read_tensors(path: &Path) -> Result<TensorFile, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let bytes = fs::read(path).map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
    let file = parse(&bytes).map_err(|p| fail(vec![p]))?;
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

    #[test]
    fn serialized_headers_are_padded_and_data_aligned() {
        let tensors = vec![
            ("w".to_owned(), TensorData::F32(ArrayD::zeros(IxDyn(&[3])))),
            ("n".to_owned(), TensorData::I64(ArrayD::zeros(IxDyn(&[])))),
        ];
        let bytes = serialize(&tensors, &BTreeMap::new());
        let (header_len, layout) = SafeTensors::read_metadata(&bytes).expect("valid file");
        assert_eq!(header_len % 8, 0);
        // The 8-byte counter comes first so that every tensor starts on its own alignment.
        assert_eq!(layout.info("n").map(|i| i.data_offsets), Some((0, 8)));
        assert_eq!(layout.info("w").map(|i| i.data_offsets), Some((8, 20)));
    }

    #[test]
    fn one_problem_reads_as_one_sentence() {
        let error = LoadError {
            path: PathBuf::from("w.safetensors"),
            problems: vec![LoadProblem::Corrupt("bad header".into())],
        };
        assert_eq!(
            error.to_string(),
            "cannot load `w.safetensors`: not a valid safetensors file: bad header"
        );
    }
}
