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

#[test]
fn converts_other_dtypes_when_every_value_survives() {
    let f64 = read("f64.npy");
    assert_eq!(f64.shape(), &[1, 3]);
    assert_eq!(
        f64.iter().copied().collect::<Vec<_>>(),
        [0.5, -1.25, 1e-3f64 as f32]
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
