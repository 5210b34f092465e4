//! The safetensors container: the 8-byte header length, the JSON header (every tensor's extent
//! checked, duplicate names refused) and the data's length, checked before the data is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use safetensors::SafeTensorError;
use safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::problems::LoadProblem;

/// Largest header accepted, in bytes: the safetensors crate's limit (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A validated safetensors file: its header, and its tensor data when it has been read.
pub(super) struct RawFile<'a> {
    /// Tensor names, dtypes, shapes and data offsets.
    pub(super) layout: Metadata,
    /// Everything after the header; `None` when only the header was read.
    pub(super) data: Option<&'a [u8]>,
    /// The `__metadata__` strings.
    pub(super) metadata: BTreeMap<String, String>,
}

impl RawFile<'_> {
    /// The tensor `name`: its description and bytes (empty when only the header was read).
    pub(super) fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let info = self.layout.info(name)?;
        let (start, end) = info.data_offsets;
        let bytes = match self.data {
            Some(data) => data.get(start..end)?,
            None => &[],
        };
        Some((info, bytes))
    }

    /// Every tensor, in data order (stable, unlike the crate's hash order).
    pub(super) fn tensors(&self) -> impl Iterator<Item = (String, &TensorInfo, &[u8])> {
        self.layout.offset_keys().into_iter().filter_map(|name| {
            let (info, bytes) = self.tensor(&name)?;
            Some((name, info, bytes))
        })
    }
}

/// Parses and checks a whole safetensors file held in memory.
pub(super) fn parse(bytes: &[u8]) -> Result<RawFile<'_>, LoadProblem> {
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
pub(super) fn read_header(path: &Path) -> Result<(RawFile<'static>, u64), LoadProblem> {
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

pub(super) fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(super) fn decode_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

pub(super) fn decode_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}
