//! Weights as safetensors files keyed by PyTorch state_dict names: saving a [`Visit`] model
//! (written atomically), loading strictly like `load_state_dict(strict=True)` (every problem
//! reported at once, the model untouched unless all is well), and plain named-tensor files for
//! checkpoints and fixtures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

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

impl LoadProblem {
    /// What to do about this problem, where the problem itself does not say.
    pub fn fix(&self) -> Option<&'static str> {
        match self {
            LoadProblem::Dtype {
                expected: "F32", ..
            } => Some("convert the tensors to float32 before saving (PyTorch: `model.float()`)"),
            LoadProblem::Dtype {
                expected: "I64", ..
            } => Some("save counters such as `num_batches_tracked` as int64, as PyTorch does"),
            LoadProblem::NonFinite { .. } => Some(
                "the file is damaged or was saved from a diverged run: use an earlier checkpoint",
            ),
            _ => None,
        }
    }
}

struct ProblemList<'a>(&'a [LoadProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => {
                write!(f, "{one}")?;
                one.fix().map_or(Ok(()), |fix| write!(f, "; {fix}"))
            }
            many => {
                write!(f, "{} problems", many.len())?;
                many.iter().try_for_each(|p| write!(f, "\n  - {p}"))?;
                let mut fixes: Vec<&str> = many.iter().filter_map(LoadProblem::fix).collect();
                fixes.dedup();
                fixes
                    .iter()
                    .try_for_each(|fix| write!(f, "\n  help: {fix}"))
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
/// so that the same model always gives the same bytes. Non-finite values are kept as they are
/// ([`write_tensors`] refuses them).
pub fn serialize(tensors: &[(String, TensorData)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
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
/// partial write, even after a crash or a power cut: a temporary file in the same directory
/// (`.NAME.PID.N.tmp`), synced, renamed over `path`, then the directory synced so that the rename
/// is durable. On any failure (a full disk, a file-size limit, a bad directory) the temporary file
/// is removed and `path` is untouched. The error is the underlying one; callers name `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, file_name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path)
        });
    if let Err(error) = written {
        // Best effort: the temporary file is ours and useless now; the write error matters more.
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    sync_dir(dir)
}

/// Creates a new temporary file for `file_name` in `dir`, under a name no other write uses: a
/// stale one left by a killed process with a recycled id is skipped, never reused.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut temp_name = OsString::from(".");
        temp_name.push(file_name);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        temp_name.push(format!(".{}.{unique}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        match File::create_new(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `name` is the name of a temporary file [`write_atomic`] makes for the file `file_name`
/// (`.NAME.PID.N.tmp`): what a killed write leaves behind, for cleaning up.
pub fn is_temp_file_of(name: &str, file_name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(file_name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    let mut numbers = rest.split('.');
    let is_number = |part: Option<&str>| {
        part.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    is_number(numbers.next()) && is_number(numbers.next()) && numbers.next().is_none()
}

/// Makes the renames done in `dir` durable. Directories cannot be opened for syncing everywhere,
/// so this is a no-op off Unix.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Largest header accepted, in bytes: the safetensors crate's limit (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A validated safetensors file: its header, and its tensor data when it has been read.
struct RawFile<'a> {
    /// Tensor names, dtypes, shapes and data offsets.
    layout: Metadata,
    /// Everything after the header; `None` when only the header was read.
    data: Option<&'a [u8]>,
    /// The `__metadata__` strings.
    metadata: BTreeMap<String, String>,
}

impl RawFile<'_> {
    /// The tensor `name`: its description and bytes (empty when only the header was read).
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let info = self.layout.info(name)?;
        let (start, end) = info.data_offsets;
        let bytes = match self.data {
            Some(data) => data.get(start..end)?,
            None => &[],
        };
        Some((info, bytes))
    }

    /// Every tensor, in data order (stable, unlike the crate's hash order).
    fn tensors(&self) -> impl Iterator<Item = (String, &TensorInfo, &[u8])> {
        self.layout.offset_keys().into_iter().filter_map(|name| {
            let (info, bytes) = self.tensor(&name)?;
            Some((name, info, bytes))
        })
    }
}

/// Parses and checks a whole safetensors file held in memory.
fn parse(bytes: &[u8]) -> Result<RawFile<'_>, LoadProblem> {
    let prefix = bytes.get(..8).unwrap_or(bytes);
    let header_len = header_len(prefix, bytes.len() as u64)?;
    let data_start = 8 + header_len as usize;
    let (layout, metadata) = parse_header(&bytes[8..data_start])?;
    check_data_len(&layout, (bytes.len() - data_start) as u64)?;
    Ok(RawFile {
        layout,
        data: Some(&bytes[data_start..]),
        metadata,
    })
}

/// Reads and checks only the header of the safetensors file at `path`, and checks that the file
/// is exactly as long as the header says: at most 8 bytes plus [`MAX_HEADER_BYTES`] are read, so
/// a header claiming gigantic tensors costs nothing. Returns the header and the file's length.
fn read_header(path: &Path) -> Result<(RawFile<'static>, u64), LoadProblem> {
    let io = |e: io::Error| LoadProblem::Io(e.to_string());
    let mut file = File::open(path).map_err(io)?;
    let info = file.metadata().map_err(io)?;
    if info.is_dir() {
        return Err(LoadProblem::Io(
            "it is a directory; pass a .safetensors file".to_owned(),
        ));
    }
    let len = info.len();
    let mut prefix = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut prefix).map_err(io)?;
    let header_len = header_len(&prefix, len)?;
    let mut json = Vec::new();
    (&mut file)
        .take(header_len)
        .read_to_end(&mut json)
        .map_err(io)?;
    if json.len() as u64 != header_len {
        return Err(LoadProblem::Io(
            "the file changed while being read".to_owned(),
        ));
    }
    let (layout, metadata) = parse_header(&json)?;
    check_data_len(&layout, len.saturating_sub(8 + header_len))?;
    let header = RawFile {
        layout,
        data: None,
        metadata,
    };
    Ok((header, len))
}

/// The first `len` bytes of the file at `path` (its length when checked), with the memory for
/// them reserved up front: a file too large for memory is an error, not an abort.
pub(crate) fn read_whole(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    let too_large = || {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("its {len} bytes do not fit in memory"),
        )
    };
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).map_err(|_| too_large())?)
        .map_err(|_| too_large())?;
    File::open(path)?.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The header length from a file's first 8 bytes, checked against the limit and the file's
/// length `len` before anything else is read.
fn header_len(prefix: &[u8], len: u64) -> Result<u64, LoadProblem> {
    let Ok(prefix) = <[u8; 8]>::try_from(prefix) else {
        return Err(LoadProblem::Corrupt(format!(
            "the file is {len} bytes, too short for the 8-byte header length"
        )));
    };
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(LoadProblem::Corrupt(format!(
            "the header length field claims {n} bytes, more than the 100 MB limit"
        )));
    }
    let after_prefix = len.saturating_sub(8);
    if n > after_prefix {
        return Err(LoadProblem::Corrupt(format!(
            "the header length field claims {n} bytes but only {after_prefix} bytes follow \
             (truncated file?)"
        )));
    }
    Ok(n)
}

/// One entry of a header's JSON object.
enum HeaderEntry {
    /// `__metadata__`: free-form strings.
    Metadata(HashMap<String, String>),
    /// A tensor's dtype, shape and data offsets.
    Tensor(TensorInfo),
}

/// A header's entries in file order, duplicates kept (a map would silently keep the last).
struct HeaderEntries(Vec<(String, HeaderEntry)>);

impl<'de> Deserialize<'de> for HeaderEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = HeaderEntries;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tensors")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    // Through a JSON value, so that an error names the entry and the position
                    // (which serde_json adds) appears once.
                    let value: serde_json::Value = map.next_value()?;
                    let entry = if key == "__metadata__" {
                        serde_json::from_value(value).map(HeaderEntry::Metadata)
                    } else {
                        serde_json::from_value(value).map(HeaderEntry::Tensor)
                    };
                    let entry = entry.map_err(|e| de::Error::custom(format!("`{key}`: {e}")))?;
                    entries.push((key, entry));
                }
                Ok(HeaderEntries(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// Parses a header's JSON: every tensor's extent checked by name, duplicate names refused.
fn parse_header(json: &[u8]) -> Result<(Metadata, BTreeMap<String, String>), LoadProblem> {
    let HeaderEntries(entries) = serde_json::from_slice(json).map_err(|e| {
        LoadProblem::Corrupt(format!("the header is not a safetensors JSON header: {e}"))
    })?;
    let mut names = HashSet::new();
    if let Some((name, _)) = entries
        .iter()
        .find(|(name, _)| !names.insert(name.as_str()))
    {
        return Err(LoadProblem::Corrupt(format!(
            "the header names `{name}` twice, and a JSON reader keeps only one of them; the file \
             is corrupt: save it again"
        )));
    }
    let mut metadata = None;
    let mut tensors = Vec::new();
    for (name, entry) in entries {
        match entry {
            HeaderEntry::Metadata(strings) => metadata = Some(strings),
            HeaderEntry::Tensor(info) => {
                check_extent(&name, &info)?;
                tensors.push((name, info));
            }
        }
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let layout = Metadata::new(metadata, tensors).map_err(|e| {
        LoadProblem::Corrupt(match e {
            SafeTensorError::InvalidOffset(name) => {
                format!("tensor `{name}`'s data offsets overlap or leave a gap")
            }
            other => other.to_string(),
        })
    })?;
    let metadata = layout.metadata().clone().unwrap_or_default();
    Ok((layout, metadata.into_iter().collect()))
}

/// Checks that a tensor's data offsets span exactly its shape and dtype.
fn check_extent(name: &str, info: &TensorInfo) -> Result<(), LoadProblem> {
    let (start, end) = info.data_offsets;
    let bits = info
        .shape
        .iter()
        .try_fold(info.dtype.bitsize(), |n, &d| n.checked_mul(d));
    let Some(bits) = bits else {
        return Err(LoadProblem::Corrupt(format!(
            "tensor `{name}` claims shape {:?} of {}, more bytes than can be addressed",
            info.shape, info.dtype
        )));
    };
    let bytes = bits.div_ceil(8);
    if end < start || end - start != bytes {
        return Err(LoadProblem::Corrupt(format!(
            "tensor `{name}`'s data offsets [{start}, {end}] do not span the {bytes} bytes of {} {:?}",
            info.dtype, info.shape
        )));
    }
    Ok(())
}

/// Checks that `present` bytes of data follow the header, as many as it describes.
fn check_data_len(layout: &Metadata, present: u64) -> Result<(), LoadProblem> {
    let described = layout.data_len() as u64;
    if described == present {
        return Ok(());
    }
    let why = if present < described {
        "truncated file?"
    } else {
        "trailing data?"
    };
    Err(LoadProblem::Corrupt(format!(
        "the header describes {described} bytes of tensor data but {present} bytes follow it \
         ({why})"
    )))
}

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
    let (header, len) = read_header(path).map_err(|p| fail(vec![p]))?;
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
    let bytes = read_whole(path, len).map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
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
///
/// The header is read and checked first, so a file whose length disagrees with it is refused
/// without reading its data.
pub fn read_tensors(path: &Path) -> Result<TensorFile, LoadError> {
    let fail = |problems| LoadError {
        path: path.to_owned(),
        problems,
    };
    let (_, len) = read_header(path).map_err(|p| fail(vec![p]))?;
    let bytes = read_whole(path, len).map_err(|e| fail(vec![LoadProblem::Io(e.to_string())]))?;
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
    use safetensors::SafeTensors;

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
