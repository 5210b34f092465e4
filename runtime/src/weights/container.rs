//! The safetensors container: the 8-byte header length, the JSON header (every tensor's extent
//! checked, duplicate names refused) and the data's length, checked before the data is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use safetensors::SafeTensorError;
use safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::problems::{LoadProblem, dims, shown};

/// Largest header accepted, in bytes: the safetensors crate's limit (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Most tensors a header may list: twice the entries of the largest model a spec describes
/// (10,000 layers of at most five entries), so memory follows the model, not the header.
pub const MAX_TENSORS: usize = 100_000;

/// Most `__metadata__` entries a header may hold: cnnc writes eight, PyTorch one (`format`).
pub const MAX_METADATA_ENTRIES: usize = 1024;

/// Most bytes of `__metadata__` keys and values a header may hold (class names included).
pub const MAX_METADATA_BYTES: usize = 16 << 20;

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
    let header_len = header_len(prefix, Some(bytes.len() as u64))?;
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
/// a header claiming gigantic tensors costs nothing. Returns the header and the open file, for
/// [`Opened::read_all`].
///
/// A FIFO or a device (weights piped in) has no length to check beforehand: it is read as a
/// stream, its data checked against the header once read.
pub(super) fn read_header(path: &Path) -> Result<(RawFile<'static>, Opened), LoadProblem> {
    let io = |e: io::Error| LoadProblem::Io(e.to_string());
    let mut file = File::open(path).map_err(io)?;
    let info = file.metadata().map_err(io)?;
    if info.is_dir() {
        return Err(LoadProblem::Io(
            "it is a directory; pass a .safetensors file".to_owned(),
        ));
    }
    let len = info.is_file().then_some(info.len());
    let mut head = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut head).map_err(io)?;
    let header_len = header_len(&head, len)?;
    (&mut file)
        .take(header_len)
        .read_to_end(&mut head)
        .map_err(io)?;
    let read = head.len() as u64 - 8;
    if read != header_len {
        return Err(match len {
            Some(_) => LoadProblem::Io("the file changed while being read".to_owned()),
            None => truncated_header(header_len, read),
        });
    }
    let (layout, metadata) = parse_header(&head[8..])?;
    if let Some(len) = len {
        check_data_len(&layout, len.saturating_sub(8 + header_len))?;
    }
    let opened = Opened {
        file,
        data_len: layout.data_len() as u64,
        head,
        stream: len.is_none(),
    };
    let header = RawFile {
        layout,
        data: None,
        metadata,
    };
    Ok((header, opened))
}

/// A safetensors file whose header [`read_header`] has read and checked.
pub(super) struct Opened {
    /// The file, positioned after the header.
    file: File,
    /// The bytes read: the length prefix and the header.
    head: Vec<u8>,
    /// Bytes of tensor data the header describes.
    data_len: u64,
    /// Whether the file is a stream (a FIFO, a device), whose length was not known beforehand.
    stream: bool,
}

impl Opened {
    /// The whole file: the header read before and the data after it. A regular file's memory is
    /// reserved up front (its length was checked against the header; a file too large for memory
    /// is an error, not an abort); a stream's grows as its bytes arrive, at most the data the
    /// header describes and one byte more, which [`parse`] then refuses.
    pub(super) fn read_all(mut self) -> io::Result<Vec<u8>> {
        let total = self.head.len() as u64 + self.data_len;
        let mut bytes = Vec::new();
        if !self.stream {
            let too_large = || {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("its {total} bytes do not fit in memory"),
                )
            };
            bytes
                .try_reserve_exact(usize::try_from(total).map_err(|_| too_large())?)
                .map_err(|_| too_large())?;
        }
        bytes.extend_from_slice(&self.head);
        (&mut self.file)
            .take(self.data_len.saturating_add(1))
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// The header length from a file's first 8 bytes, checked against the limit and the file's
/// length `len` (`None`: a stream, whose length is unknown) before anything else is read.
fn header_len(prefix: &[u8], len: Option<u64>) -> Result<u64, LoadProblem> {
    let Ok(prefix) = <[u8; 8]>::try_from(prefix) else {
        return Err(LoadProblem::Corrupt(format!(
            "the file is {} bytes, too short for the 8-byte header length",
            prefix.len()
        )));
    };
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(LoadProblem::Corrupt(format!(
            "the header length field claims {n} bytes, more than the 100 MB limit"
        )));
    }
    match len {
        Some(len) if n > len.saturating_sub(8) => Err(truncated_header(n, len.saturating_sub(8))),
        _ => Ok(n),
    }
}

/// A header length field claiming `claimed` bytes where only `present` follow.
fn truncated_header(claimed: u64, present: u64) -> LoadProblem {
    LoadProblem::Corrupt(format!(
        "the header length field claims {claimed} bytes but only {present} bytes follow \
         (truncated file?)"
    ))
}

/// One entry of a header's JSON object.
enum HeaderEntry {
    /// `__metadata__`: free-form strings, in file order.
    Metadata(Vec<(String, String)>),
    /// A tensor's dtype, shape and data offsets.
    Tensor(TensorInfo),
}

/// A header's entries in file order, duplicates kept (a map would silently keep the last), or
/// the limit the header is beyond.
struct HeaderEntries(Result<Vec<(String, HeaderEntry)>, String>);

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
                let mut tensors = 0;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        match map.next_value::<MetadataEntries>()?.0 {
                            Ok(strings) => entries.push((key, HeaderEntry::Metadata(strings))),
                            Err(limit) => return beyond(map, limit),
                        }
                        continue;
                    }
                    tensors += 1;
                    if tensors > MAX_TENSORS {
                        map.next_value::<IgnoredAny>()?;
                        return beyond(
                            map,
                            format!(
                                "it lists more than {MAX_TENSORS} tensors (the limit; no model \
                                 cnnc builds has half as many): is this the right file?"
                            ),
                        );
                    }
                    // Through a JSON value, so that an error names the entry and the position
                    // (which serde_json adds) appears once.
                    let value: serde_json::Value = map.next_value()?;
                    let info = serde_json::from_value(value)
                        .map_err(|e| de::Error::custom(format!("`{}`: {e}", shown(&key))))?;
                    entries.push((key, HeaderEntry::Tensor(info)));
                }
                Ok(HeaderEntries(Ok(entries)))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A header's `__metadata__` strings, read only up to [`MAX_METADATA_ENTRIES`] entries and
/// [`MAX_METADATA_BYTES`] bytes: past either, the limit broken.
struct MetadataEntries(Result<Vec<(String, String)>, String>);

impl<'de> Deserialize<'de> for MetadataEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings;
        impl<'de> Visitor<'de> for Strings {
            type Value = MetadataEntries;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataEntries, A::Error> {
                let (mut entries, mut bytes) = (Vec::new(), 0);
                while let Some(key) = map.next_key::<String>()? {
                    if entries.len() == MAX_METADATA_ENTRIES {
                        map.next_value::<IgnoredAny>()?;
                        let limit = format!(
                            "its `__metadata__` holds more than {MAX_METADATA_ENTRIES} entries \
                             (the limit; cnnc writes eight, PyTorch one): is this the right file?"
                        );
                        return skip_rest(map).map(|()| MetadataEntries(Err(limit)));
                    }
                    let value: serde_json::Value = map.next_value()?;
                    let value: String = serde_json::from_value(value).map_err(|e| {
                        de::Error::custom(format!("`__metadata__`: `{}`: {e}", shown(&key)))
                    })?;
                    bytes += key.len() + value.len();
                    if bytes > MAX_METADATA_BYTES {
                        let limit = format!(
                            "its `__metadata__` holds more than {MAX_METADATA_BYTES} bytes of \
                             keys and values (the limit): is this the right file?"
                        );
                        return skip_rest(map).map(|()| MetadataEntries(Err(limit)));
                    }
                    entries.push((key, value));
                }
                Ok(MetadataEntries(Ok(entries)))
            }
        }
        deserializer.deserialize_map(Strings)
    }
}

/// Reads past the rest of a map without keeping anything.
fn skip_rest<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The header's entries, beyond `limit`: the rest read past, nothing more kept.
fn beyond<'de, A: MapAccess<'de>>(map: A, limit: String) -> Result<HeaderEntries, A::Error> {
    skip_rest(map).map(|()| HeaderEntries(Err(limit)))
}

/// Parses a header's JSON: every tensor's extent checked by name, duplicate names refused.
fn parse_header(json: &[u8]) -> Result<(Metadata, BTreeMap<String, String>), LoadProblem> {
    let HeaderEntries(entries) = serde_json::from_slice(json).map_err(|e| {
        LoadProblem::Corrupt(format!("the header is not a safetensors JSON header: {e}"))
    })?;
    let entries = entries.map_err(LoadProblem::Limit)?;
    let mut names = HashSet::new();
    if let Some((name, _)) = entries
        .iter()
        .find(|(name, _)| !names.insert(name.as_str()))
    {
        return Err(LoadProblem::Corrupt(format!(
            "the header names `{}` twice, and a JSON reader keeps only one of them; the file \
             is corrupt: save it again",
            shown(name)
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
    let strings: Option<HashMap<String, String>> = metadata
        .as_ref()
        .map(|strings| strings.iter().cloned().collect());
    let layout = Metadata::new(strings, tensors).map_err(|e| {
        LoadProblem::Corrupt(match e {
            SafeTensorError::InvalidOffset(name) => {
                format!(
                    "tensor `{}`'s data offsets overlap or leave a gap",
                    shown(&name)
                )
            }
            other => other.to_string(),
        })
    })?;
    Ok((layout, metadata.unwrap_or_default().into_iter().collect()))
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
            "tensor `{}` claims shape {} of {}, more bytes than can be addressed",
            shown(name),
            dims(&info.shape),
            info.dtype
        )));
    };
    let bytes = bits.div_ceil(8);
    if end < start || end - start != bytes {
        return Err(LoadProblem::Corrupt(format!(
            "tensor `{}`'s data offsets [{start}, {end}] do not span the {bytes} bytes of {} {}",
            shown(name),
            info.dtype,
            dims(&info.shape)
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
