//! NumPy `.npy` files (format versions 1, 2 and 3): what `cnnc run` reads inputs from and writes
//! logits to. Arrays are read as `f32` in C order, converting from float64, int64, int32, uint8
//! and big-endian data only where every value survives the conversion exactly, and from Fortran
//! order. NaN and infinity are refused: no model input is meant to hold them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

use crate::fsio::{read_whole, write_atomic};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header accepted, in bytes: NumPy's own default limit (`max_header_size`), since a
/// header is a short Python literal and parsing a huge one is costly.
pub const MAX_HEADER_BYTES: usize = 10_000;

/// What went wrong reading or writing a `.npy` file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("cannot {action} `{}`: {error}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not a well-formed `.npy` file (bad magic, truncated, unreadable header, data
    /// of the wrong length).
    #[error("`{}` is not a valid .npy file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The array's element type cannot be read as `f32`.
    #[error(
        "`{}` holds `{descr}` elements; cnnc reads float32, float64, int64, int32 and uint8 arrays",
        path.display()
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// NumPy's dtype descriptor, e.g. `<c8`.
        descr: String,
    },
    /// A value does not survive conversion to `f32` exactly (an integer beyond 2^24, a float64
    /// with more precision than `f32` or beyond its range): it is never rounded silently.
    #[error(
        "`{}`: value {value} at index {index:?} cannot be represented exactly as f32 (the first \
         such value); cnnc converts only exact values: save the array as float32 (numpy: \
         `x.astype(np.float32)`) if rounding is what you want",
        path.display()
    )]
    Conversion {
        /// The file.
        path: PathBuf,
        /// The value, as written in the file.
        value: String,
        /// Its index (C order).
        index: Vec<usize>,
    },
    /// A value is NaN or infinite.
    #[error(
        "`{}`: value {value} at index {index:?} is not a finite number (the first such value); \
         replace NaN and infinities before saving the array",
        path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The value, as written in the file (`NaN`, `inf`, `-inf`).
        value: String,
        /// Its index (C order).
        index: Vec<usize>,
    },
}

/// Element types the reader understands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Element {
    F32,
    F64,
    I64,
    I32,
    U8,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Element::U8 => 1,
            Element::F32 | Element::I32 => 4,
            Element::F64 | Element::I64 => 8,
        }
    }
}

/// A parsed header: dtype, byte order, layout and shape.
#[derive(Debug, PartialEq)]
struct Header {
    element: Element,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Reads a `.npy` file as an `f32` array in C order.
///
/// The header is read and checked against the file's length first, so a file that is not as long
/// as its header says is refused without reading its data.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, NpyError> {
    let io = |error| NpyError::Io {
        action: "read",
        path: path.to_owned(),
        error,
    };
    let mut file = File::open(path).map_err(io)?;
    let info = file.metadata().map_err(io)?;
    if info.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory; pass a .npy file",
        )));
    }
    let mut prefix = Vec::new();
    (&mut file)
        .take(12 + MAX_HEADER_BYTES as u64)
        .read_to_end(&mut prefix)
        .map_err(io)?;
    let (header, start) = split_header(&prefix).map_err(|e| e.at(path))?;
    check_data_len(&header, info.len().saturating_sub(start as u64)).map_err(|e| e.at(path))?;
    let bytes = read_whole(path, info.len()).map_err(io)?;
    parse_f32(&bytes, path)
}

/// [`read_f32`] on the bytes of a `.npy` file already in memory; `path` is the file they came
/// from, named in the error.
pub fn parse_f32(bytes: &[u8], path: &Path) -> Result<ArrayD<f32>, NpyError> {
    decode(bytes).map_err(|e| e.at(path))
}

/// Writes `array` to `path` as a version 1.0 `.npy` file (`<f4`, C order), atomically.
pub fn write_f32(path: &Path, array: ArrayViewD<'_, f32>) -> Result<(), NpyError> {
    write_atomic(path, &encode(array)).map_err(|error| NpyError::Io {
        action: "write",
        path: path.to_owned(),
        error,
    })
}

/// A decoding error before the path is known.
#[derive(Debug, PartialEq)]
enum Problem {
    Format(String),
    Dtype(String),
    Conversion { value: String, index: Vec<usize> },
    NonFinite { value: String, index: Vec<usize> },
}

impl Problem {
    fn at(self, path: &Path) -> NpyError {
        let path = path.to_owned();
        match self {
            Problem::Format(reason) => NpyError::Format { path, reason },
            Problem::Dtype(descr) => NpyError::Dtype { path, descr },
            Problem::Conversion { value, index } => NpyError::Conversion { path, value, index },
            Problem::NonFinite { value, index } => NpyError::NonFinite { path, value, index },
        }
    }
}

fn format(reason: impl Into<String>) -> Problem {
    Problem::Format(reason.into())
}

fn decode(bytes: &[u8]) -> Result<ArrayD<f32>, Problem> {
    let (header, start) = split_header(bytes)?;
    let data = &bytes[start..];
    // Checked before decoding, so that a header claiming a huge shape allocates nothing.
    check_data_len(&header, data.len() as u64)?;
    let values = convert(&header, data)?;
    let shape = IxDyn(&header.shape);
    let array = if header.fortran_order {
        ArrayD::from_shape_vec(shape.f(), values)
    } else {
        ArrayD::from_shape_vec(shape, values)
    };
    let array = array.map_err(|e| format(format!("data does not fit the shape: {e}")))?;
    Ok(if header.fortran_order {
        array.as_standard_layout().into_owned()
    } else {
        array
    })
}

/// Parses the magic string, version and header at the start of `bytes`: the header and the
/// offset of the data. Looks at no more than [`MAX_HEADER_BYTES`] + 12 bytes.
fn split_header(bytes: &[u8]) -> Result<(Header, usize), Problem> {
    if bytes.get(..6) != Some(MAGIC.as_slice()) {
        return Err(format("the file does not start with the .npy magic string"));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(format("the file ends inside the version field")),
    };
    let (len, start) = match major {
        1 => (
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
            10,
        ),
        2 | 3 => (
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            12,
        ),
        _ => {
            return Err(format(format!(
                "unsupported format version {major}.{minor}"
            )));
        }
    };
    let len = len.ok_or_else(|| format("the file ends inside the header length field"))?;
    if len > MAX_HEADER_BYTES {
        return Err(format(format!(
            "the header claims {len} bytes, more than the limit of {MAX_HEADER_BYTES} (NumPy's \
             own default)"
        )));
    }
    let available = bytes.len() - start.min(bytes.len());
    let text = bytes.get(start..start + len).ok_or_else(|| {
        format(format!(
            "the header claims {len} bytes but only {available} follow"
        ))
    })?;
    // Versions 1 and 2 are ASCII (a subset of UTF-8); version 3 allows UTF-8.
    let text = std::str::from_utf8(text).map_err(|_| format("the header is not valid text"))?;
    Ok((parse_header(text)?, start + len))
}

/// Checks that `present` bytes of data are exactly what the header's shape and dtype need.
fn check_data_len(header: &Header, present: u64) -> Result<(), Problem> {
    let needed = header
        .shape
        .iter()
        .try_fold(header.element.size() as u64, |n, &d| {
            n.checked_mul(d as u64)
        })
        .ok_or_else(|| format(format!("shape {:?} is too large", header.shape)))?;
    if present != needed {
        return Err(format(format!(
            "shape {:?} needs {needed} bytes of data but the file holds {present}",
            header.shape
        )));
    }
    Ok(())
}

/// Decodes `data` to `f32` in file order, refusing values that would change.
fn convert(header: &Header, data: &[u8]) -> Result<Vec<f32>, Problem> {
    let size = header.element.size();
    let mut values = Vec::with_capacity(data.len() / size);
    for (i, chunk) in data.chunks_exact(size).enumerate() {
        let mut raw = [0u8; 8];
        raw[..size].copy_from_slice(chunk);
        if header.big_endian {
            raw[..size].reverse();
        }
        let exact = |ok: bool, value: String, converted: f32| {
            if ok {
                Ok(converted)
            } else {
                Err(Problem::Conversion {
                    value,
                    index: file_index(i, header),
                })
            }
        };
        let non_finite = |value: String| Problem::NonFinite {
            value,
            index: file_index(i, header),
        };
        let value = match header.element {
            Element::F32 => {
                let v = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                if !v.is_finite() {
                    return Err(non_finite(v.to_string()));
                }
                v
            }
            Element::U8 => f32::from(raw[0]),
            Element::F64 => {
                let v = f64::from_le_bytes(raw);
                if !v.is_finite() {
                    return Err(non_finite(v.to_string()));
                }
                let f = v as f32;
                exact(f64::from(f) == v, v.to_string(), f)?
            }
            Element::I64 => {
                let v = i64::from_le_bytes(raw);
                let f = v as f32;
                exact(f as i64 == v, v.to_string(), f)?
            }
            Element::I32 => {
                let v = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                let f = v as f32;
                exact(f as i32 == v, v.to_string(), f)?
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// The C-order index of the `i`-th element as stored in the file.
fn file_index(mut i: usize, header: &Header) -> Vec<usize> {
    let mut index = vec![0; header.shape.len()];
    let axes: Vec<usize> = if header.fortran_order {
        (0..header.shape.len()).collect()
    } else {
        (0..header.shape.len()).rev().collect()
    };
    for axis in axes {
        let dim = header.shape[axis].max(1);
        index[axis] = i % dim;
        i /= dim;
    }
    index
}

/// Parses the header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<Header, Problem> {
    let mut p = Literal { rest: text.trim() };
    let mut descr = None;
    let mut fortran_order = None;
    let mut shape = None;
    p.expect('{')?;
    while !p.eat('}') {
        let key = p.string()?;
        p.expect(':')?;
        match key.as_str() {
            "descr" if p.peek() == Some('[') => {
                return Err(Problem::Dtype("structured dtype".into()));
            }
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran_order = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format(format!("unknown header key `{other}`"))),
        }
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    let missing = |key: &str| format(format!("the header has no `{key}`"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let (element, big_endian) = parse_descr(&descr).ok_or(Problem::Dtype(descr))?;
    Ok(Header {
        element,
        big_endian,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// `<f4` → (F32, little-endian). `None` for anything the reader does not convert.
fn parse_descr(descr: &str) -> Option<(Element, bool)> {
    let mut chars = descr.chars();
    let order = chars.next()?;
    let element = match chars.as_str() {
        "f4" => Element::F32,
        "f8" => Element::F64,
        "i8" => Element::I64,
        "i4" => Element::I32,
        "u1" => Element::U8,
        _ => return None,
    };
    let big_endian = match order {
        '<' => false,
        '>' => true,
        '=' => cfg!(target_endian = "big"),
        // Byte order is irrelevant for single bytes.
        '|' if element == Element::U8 => false,
        _ => return None,
    };
    Some((element, big_endian))
}

/// A cursor over the Python literal subset `.npy` headers use.
struct Literal<'a> {
    rest: &'a str,
}

impl Literal<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), Problem> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format(format!(
                "malformed header: expected `{c}` at `{}`",
                self.excerpt()
            )))
        }
    }

    fn excerpt(&self) -> String {
        self.rest.chars().take(20).collect()
    }

    fn string(&mut self) -> Result<String, Problem> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => {
                return Err(format(format!(
                    "malformed header: expected a string at `{}`",
                    self.excerpt()
                )));
            }
        };
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| format("malformed header: unterminated string"))?;
        let value = body[..end].to_owned();
        self.rest = &body[end + 1..];
        Ok(value)
    }

    fn boolean(&mut self) -> Result<bool, Problem> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(value);
            }
        }
        Err(format(format!(
            "malformed header: expected True or False at `{}`",
            self.excerpt()
        )))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, Problem> {
        self.expect('(')?;
        let mut dims = Vec::new();
        while !self.eat(')') {
            self.skip_space();
            let digits = self
                .rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(self.rest.len());
            let dim = self.rest[..digits].parse::<usize>().map_err(|_| {
                format(format!(
                    "malformed header: expected a dimension at `{}`",
                    self.excerpt()
                ))
            })?;
            // Python 2 wrote long integers with an `L` suffix.
            self.rest = self.rest[digits..]
                .strip_prefix('L')
                .unwrap_or(&self.rest[digits..]);
            dims.push(dim);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(dims)
    }
}

/// The bytes of a version 1.0 `.npy` file (2.0 if the header outgrows 64 KiB), as `np.save`
/// writes them: the header padded with spaces to a 64-byte boundary and ended by a newline.
fn encode(array: ArrayViewD<'_, f32>) -> Vec<u8> {
    let dims: Vec<String> = array.shape().iter().map(usize::to_string).collect();
    let shape = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let (version, prefix) = if header.len() + 11 <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2, 12)
    };
    let padding = (64 - (prefix + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(padding));
    header.push('\n');
    let mut bytes = Vec::with_capacity(prefix + header.len() + array.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[version, 0]);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    // `iter` walks the logical C order whatever the view's strides.
    bytes.extend(array.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Result<Header, Problem> {
        parse_header(text)
    }

    #[test]
    fn parses_headers_as_numpy_writes_them() {
        let h = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n");
        assert_eq!(
            h,
            Ok(Header {
                element: Element::F32,
                big_endian: false,
                fortran_order: false,
                shape: vec![2, 3]
            })
        );
        let h = header("{\"shape\": (5,), \"fortran_order\": True, \"descr\": \">f8\"}");
        assert_eq!(
            h.map(|h| (h.shape, h.fortran_order, h.big_endian)),
            Ok((vec![5], true, true))
        );
        assert_eq!(
            header("{'descr': '|u1', 'fortran_order': False, 'shape': ()}").map(|h| h.shape),
            Ok(vec![])
        );
        assert_eq!(
            header("{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 4L)}").map(|h| h.shape),
            Ok(vec![3, 4])
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}",
            "{'descr': '<f4, 'fortran_order': False, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'extra': 1}",
            "{'descr': '<f4' 'fortran_order': False, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
        ] {
            assert!(
                matches!(header(bad), Err(Problem::Format(_))),
                "accepted {bad:?}"
            );
        }
        for descr in ["<c8", "<f2", "|b1", "<u4", "|O", "<U3", "f4"] {
            let text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ()}}");
            assert_eq!(header(&text), Err(Problem::Dtype(descr.into())), "{descr}");
        }
        let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}";
        assert!(matches!(header(structured), Err(Problem::Dtype(_))));
    }

    #[test]
    fn encoded_header_is_aligned_to_64_bytes() {
        for shape in [vec![], vec![3], vec![2, 3, 32, 32]] {
            let array = ArrayD::<f32>::zeros(IxDyn(&shape));
            let bytes = encode(array.view());
            let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + len) % 64, 0);
            assert_eq!(bytes[10 + len - 1], b'\n');
            assert_eq!(bytes.len(), 10 + len + 4 * array.len());
        }
    }

    #[test]
    fn round_trips_through_bytes_including_non_standard_layouts() {
        let mut array =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.5, 3.0, -0.0, 0.0, 7.0])
                .expect("6 values fit [2, 3]");
        let transposed = array.t();
        let back = decode(&encode(transposed.view())).expect("our own encoding decodes");
        assert_eq!(back.shape(), &[3, 2]);
        for (a, b) in back.iter().zip(transposed.iter()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        // NaN is written (logits can be NaN) but not read back as an input.
        array[[1, 0]] = f32::NAN;
        assert_eq!(
            decode(&encode(array.t())).map_err(|p| p.at(Path::new("x.npy")).to_string()),
            Err(
                "`x.npy`: value NaN at index [0, 1] is not a finite number (the first such \
                 value); replace NaN and infinities before saving the array"
                    .to_owned()
            )
        );
    }

    #[test]
    fn rejects_truncated_and_oversized_claims_without_allocating() {
        let good = encode(ArrayD::<f32>::zeros(IxDyn(&[4])).view());
        for cut in [0, 5, 7, 9, 20, good.len() - 1] {
            assert!(
                matches!(decode(&good[..cut]), Err(Problem::Format(_))),
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(Problem::Format(_))));
        // A header claiming 2^60 elements must fail on the length check, not on an allocation.
        let mut huge = good[..10].to_vec();
        let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (1152921504606846976,), }";
        huge[8..10].copy_from_slice(&(text.len() as u16).to_le_bytes());
        huge.extend_from_slice(text.as_bytes());
        assert!(matches!(decode(&huge), Err(Problem::Format(m)) if m.contains("needs")));
        let overflow =
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        let mut huge = good[..10].to_vec();
        huge[8..10].copy_from_slice(&(overflow.len() as u16).to_le_bytes());
        huge.extend_from_slice(overflow.as_bytes());
        assert!(matches!(decode(&huge), Err(Problem::Format(m)) if m.contains("too large")));
        let mut version = good.clone();
        version[6] = 4;
        assert!(matches!(decode(&version), Err(Problem::Format(m)) if m.contains("version 4.0")));
    }
}
