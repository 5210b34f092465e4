//! Saving a model's state as safetensors: the bytes laid out as the reference implementation
//! does (so the same model always gives the same file), written atomically.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::TensorData;
use crate::fsio::write_atomic;
use crate::param::{Entry, EntryRef, Visit, VisitRef};

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

/// [`state_dict`] read through [`VisitRef`], so a model shared between threads can be saved.
pub fn state_dict_ref(model: &dyn VisitRef) -> Vec<(String, TensorData)> {
    let mut tensors = Vec::new();
    model.visit_ref(&mut |entry| {
        let tensor = match entry {
            EntryRef::Param { param, .. } => TensorData::F32(param.value.clone()),
            EntryRef::Buffer { value, .. } => TensorData::F32(value.clone()),
            EntryRef::Counter { value, .. } => {
                TensorData::I64(ArrayD::from_elem(IxDyn(&[]), value))
            }
        };
        tensors.push((entry.name().to_owned(), tensor));
    });
    tensors
}

/// [`save`] through [`VisitRef`]: the same file, from `&model`.
pub fn save_ref(
    model: &dyn VisitRef,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<(), SaveError> {
    write_tensors(path, &state_dict_ref(model), metadata)
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

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

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
}
