//! `.npy` I/O against files numpy wrote (tests/fixtures/npy, made by tools/make_fixtures.py) and
//! against crafted bad files.

use std::fs;
use std::path::PathBuf;

use cnnc_runtime::npy::{NpyError, read_f32, write_f32};
use ndarray::{ArrayD, IxDyn};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/npy")
        .join(name)
}

/// `np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1`, the array most fixtures hold.
fn ramp() -> ArrayD<f32> {
    let values = (0..24).map(|i| i as f32 / 8.0 - 1.0).collect();
    ArrayD::from_shape_vec(IxDyn(&[2, 3, 4]), values).expect("24 values fit [2, 3, 4]")
}

fn read(name: &str) -> ArrayD<f32> {
    read_f32(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reads_float32_in_every_version_layout_and_byte_order() {
    for name in [
        "f32_c.npy",
        "f32_v2.npy",
        "f32_v3.npy",
        "f32_fortran.npy",
        "f32_big_endian.npy",
    ] {
        let array = read(name);
        assert!(array.is_standard_layout(), "{name}");
        assert_eq!(array, ramp(), "{name}");
    }
    assert_eq!(read("f32_scalar.npy"), ArrayD::from_elem(IxDyn(&[]), 2.5));
    assert_eq!(read("f32_empty.npy").shape(), &[0, 3]);
}

/// A version 1.0 `.npy` file of `descr` elements with `shape`, holding `data`.
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(data);
    bytes
}

fn f64_npy(values: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_bytes("<f8", &format!("(1, {})", values.len()), &data)
}

#[test]
fn converts_other_dtypes_when_every_value_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f64.npy");
    fs::write(&path, f64_npy(&[0.5, -1.25, 1.0 / 1024.0, 16_777_216.0])).expect("write");
    let f64 = read_f32(&path).expect("exact values convert");
    assert_eq!(f64.shape(), &[1, 4]);
    assert_eq!(
        f64.iter().copied().collect::<Vec<_>>(),
        [0.5, -1.25, 1.0 / 1024.0, 16_777_216.0]
    );
    let i64 = read("i64.npy");
    assert_eq!(
        i64.iter().copied().collect::<Vec<_>>(),
        [3.0, -7.0, 0.0, 16_777_216.0]
    );
    assert_eq!(
        read("u8.npy").iter().copied().collect::<Vec<_>>(),
        [0.0, 1.0, 255.0]
    );
}

#[test]
fn refuses_lossy_and_unsupported_dtypes_with_the_file_name() {
    let error = read_f32(&fixture("i64_inexact.npy")).expect_err("2^24 + 1 is not an f32");
    assert!(
        matches!(&error, NpyError::Conversion { value, index, .. } if value == "16777217" && index == &[0])
    );
    // numpy's float64 [[0.5, -1.25, 1e-3]]: 1e-3 has no exact f32, and is not rounded silently.
    let path = fixture("f64.npy");
    let error = read_f32(&path).expect_err("1e-3 is not an f32");
    assert_eq!(
        error.to_string(),
        format!(
            "`{}`: value 0.001 at index [0, 2] cannot be represented exactly as f32 (the first \
             such value); cnnc converts only exact values: save the array as float32 (numpy: \
             `x.astype(np.float32)`) if rounding is what you want",
            path.display()
        )
    );
    let error = read_f32(&fixture("complex64.npy")).expect_err("complex");
    assert!(matches!(&error, NpyError::Dtype { descr, .. } if descr == "<c8"));
    assert!(error.to_string().contains("complex64.npy"), "{error}");
}

#[test]
fn writes_exactly_what_numpy_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.npy");
    write_f32(&path, ramp().view()).expect("write");
    // np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1), byte for byte.
    assert_eq!(
        fs::read(&path).expect("read"),
        fs::read(fixture("f32_c.npy")).expect("fixture")
    );
    let scalar = dir.path().join("scalar.npy");
    write_f32(&scalar, ArrayD::from_elem(IxDyn(&[]), 2.5f32).view()).expect("write");
    assert_eq!(
        fs::read(&scalar).expect("read"),
        fs::read(fixture("f32_scalar.npy")).expect("fixture")
    );
    // A transposed view is written in its logical order.
    let transposed = ramp().permuted_axes(IxDyn(&[2, 0, 1]));
    write_f32(&path, transposed.view()).expect("write");
    assert_eq!(read_f32(&path).expect("read back"), transposed);
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = fs::read(fixture("f32_c.npy")).expect("fixture");
    let cases: [(&str, Vec<u8>); 4] = [
        ("magic", b"\x93NUMPX\x01\x00".to_vec()),
        ("truncated data", good[..good.len() - 1].to_vec()),
        ("truncated header", good[..40].to_vec()),
        ("empty", vec![]),
    ];
    for (what, bytes) in cases {
        let path = dir.path().join(format!("{}.npy", what.replace(' ', "_")));
        fs::write(&path, bytes).expect("write test file");
        let error = read_f32(&path).expect_err(what);
        assert!(matches!(error, NpyError::Format { .. }), "{what}: {error}");
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "{what}: {error}"
        );
    }
    let missing = read_f32(&dir.path().join("absent.npy")).expect_err("no such file");
    assert!(matches!(missing, NpyError::Io { action: "read", .. }));
}

#[test]
fn nan_and_infinity_are_refused_with_their_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.npy");
    let f32_data: Vec<u8> = [1.0f32, 2.0, f32::NAN, f32::INFINITY]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    fs::write(&path, npy_bytes("<f4", "(2, 2)", &f32_data)).expect("write");
    let error = read_f32(&path).expect_err("NaN refused");
    assert_eq!(
        error.to_string(),
        format!(
            "`{}`: value NaN at index [1, 0] is not a finite number (the first such value); \
             replace NaN and infinities before saving the array",
            path.display()
        )
    );
    fs::write(&path, f64_npy(&[0.5, f64::NEG_INFINITY])).expect("write");
    let error = read_f32(&path).expect_err("infinity refused");
    assert!(
        matches!(&error, NpyError::NonFinite { value, index, .. } if value == "-inf" && index == &[0, 1]),
        "{error}"
    );
}
