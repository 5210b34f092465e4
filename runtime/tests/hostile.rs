//! Readers against files that lie: headers claiming gigantic tensors or arrays, files far longer
//! than their header says, duplicate names (the dataset readers' twin is cnnc-data's
//! `tests/hostile.rs`). Each is refused with
//! a message naming the file and the place, before anything is read or allocated in proportion to
//! the claim.
//!
//! The huge files are sparse (`File::set_len`): they take no disk space, and reading one whole
//! would need a tebibyte of memory, so these tests pass only because every reader compares sizes
//! before it reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use cnnc_runtime::npy::{self, NpyError};
use cnnc_runtime::param::{Entry, Param, Visit};
use cnnc_runtime::weights::{LoadProblem, TensorData, load, read_tensors, write_tensors};
use ndarray::{ArrayD, IxDyn};

/// One tebibyte: what sparse files claim to hold.
const TIB: u64 = 1 << 40;

/// A sparse file of `len` bytes that starts with `head`.
fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).expect("head written");
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
}

/// A model with one parameter `w` of shape `[2]`.
struct Tiny(Param);

impl Tiny {
    fn new() -> Tiny {
        Tiny(Param::new(ArrayD::zeros(IxDyn(&[2]))))
    }
}

impl Visit for Tiny {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        f(Entry::Param {
            name: "w",
            param: &mut self.0,
        });
    }
}

/// Tiny's weights, `[1, 2]`, as a safetensors file.
fn tiny_weights(path: &Path) -> Vec<u8> {
    let w = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f32, 2.0]).expect("2 values");
    write_tensors(path, &[("w".into(), TensorData::F32(w))], &BTreeMap::new()).expect("written");
    std::fs::read(path).expect("read back")
}

/// A safetensors file from its header text and data.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    [
        &(header.len() as u64).to_le_bytes()[..],
        header.as_bytes(),
        data,
    ]
    .concat()
}

/// The problems `load` finds in `path`, checking that the model is left untouched.
fn problems(path: &Path) -> Vec<LoadProblem> {
    let mut model = Tiny::new();
    let error = load(&mut model, path).expect_err("refused");
    assert_eq!(error.path, path);
    assert!(model.0.value.iter().all(|&v| v == 0.0), "model untouched");
    error.problems
}

#[test]
fn safetensors_files_longer_than_their_header_are_refused_unread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    let good = tiny_weights(&path);
    sparse(&path, &good, TIB);
    let header_len = u64::from_le_bytes(good[..8].try_into().expect("8 bytes"));
    let corrupt = LoadProblem::Corrupt(format!(
        "the header describes 8 bytes of tensor data but {} bytes follow it (trailing data?)",
        TIB - 8 - header_len
    ));
    assert_eq!(problems(&path), std::slice::from_ref(&corrupt));
    let error = read_tensors(&path).expect_err("refused");
    assert_eq!(error.problems, [corrupt]);
}

#[test]
fn a_gigantic_tensor_the_model_lacks_is_refused_from_the_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    // `w` has the wrong shape, and a tebibyte tensor follows it, in a file of exactly that size.
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[3],"data_offsets":[0,12]}},"huge":{{"dtype":"F32","shape":[{}],"data_offsets":[12,{}]}}}}"#,
        TIB / 4,
        12 + TIB
    );
    let head = raw_safetensors(&header, &[0; 12]);
    sparse(&path, &head, head.len() as u64 + TIB);
    assert_eq!(
        problems(&path),
        [
            LoadProblem::Shape {
                name: "w".into(),
                expected: vec![2],
                found: vec![3],
            },
            LoadProblem::Unexpected {
                name: "huge".into(),
                dtype: "F32".into(),
                shape: vec![TIB as usize / 4],
            },
        ]
    );
}

#[test]
fn safetensors_headers_are_checked_tensor_by_tensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    let corrupt = |header: &str, data_len: usize| {
        std::fs::write(&path, raw_safetensors(header, &vec![0; data_len])).expect("written");
        match problems(&path).as_slice() {
            [LoadProblem::Corrupt(reason)] => reason.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        corrupt(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8
        ),
        "the header names `w` twice, and a JSON reader keeps only one of them; the file is \
         corrupt: save it again"
    );
    assert_eq!(
        corrupt(
            r#"{"__metadata__":{"a":"1"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"a":"2"}}"#,
            8
        ),
        "the header names `__metadata__` twice, and a JSON reader keeps only one of them; the \
         file is corrupt: save it again"
    );
    assert_eq!(
        corrupt(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#,
            12
        ),
        "tensor `w`'s data offsets [0, 12] do not span the 8 bytes of F32 [2]"
    );
    assert_eq!(
        corrupt(
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            8
        ),
        "tensor `w` claims shape [4294967296, 4294967296] of F32, more bytes than can be addressed"
    );
    assert_eq!(
        corrupt(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12
        ),
        "tensor `v`'s data offsets overlap or leave a gap"
    );
    assert!(
        corrupt(r#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, 8)
            .starts_with("the header is not a safetensors JSON header: `w`: missing field `dtype`")
    );
    let mut huge_header = (u64::MAX).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    std::fs::write(&path, &huge_header).expect("written");
    assert_eq!(
        problems(&path),
        [LoadProblem::Corrupt(
            "the header length field claims 18446744073709551615 bytes, more than the 100 MB \
             limit"
                .into()
        )]
    );
}

#[test]
fn safetensors_directories_are_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        problems(dir.path()),
        [LoadProblem::Io(
            "it is a directory; pass a .safetensors file".into()
        )]
    );
}

/// A version `major` `.npy` file holding only a header (claimed length `len`) and `text`.
fn npy_head(major: u8, len: u32, text: &str) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend([major, 0]);
    match major {
        1 => bytes.extend((len as u16).to_le_bytes()),
        _ => bytes.extend(len.to_le_bytes()),
    }
    bytes.extend(text.as_bytes());
    bytes
}

fn npy_format(path: &Path) -> String {
    match npy::read_f32(path).expect_err("refused") {
        NpyError::Format { path: p, reason } if p == path => reason,
        other => panic!("{other}"),
    }
}

#[test]
fn npy_headers_are_checked_against_the_file_before_reading() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.npy");
    let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    let head = npy_head(1, text.len() as u32, text);
    sparse(&path, &head, TIB);
    assert_eq!(
        npy_format(&path),
        format!(
            "shape [2, 3] needs 24 bytes of data but the file holds {}",
            TIB - head.len() as u64
        )
    );
    // A version 2 header claiming 4 GiB of header text.
    sparse(&path, &npy_head(2, u32::MAX, "{"), TIB);
    assert_eq!(
        npy_format(&path),
        "the header claims 4294967295 bytes, more than the limit of 10000 (NumPy's own default)"
    );
}
