//! Hostile and broken inputs, end to end: specs, weights, `.npy` arrays, datasets and images that
//! are huge, lie about their size, or are subtly malformed. Each must give one clear message that
//! names the file, the place and the fix, with the documented exit status (1: the input is wrong,
//! 2: a usage or I/O problem), and nothing written.
//!
//! Huge files are sparse (`File::set_len`): they take no disk space, and a reader that read or
//! allocated in proportion to their claimed size would abort or take minutes, so these tests pass
//! only because the readers check sizes before reading.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Output;

use cnnc_runtime::npy;
use ndarray::ArrayD;
use support::*;

/// One tebibyte: what sparse files claim to hold.
const TIB: u64 = 1 << 40;

/// `--> FILE:LINE:COL` as rustc-style diagnostics print it.
fn at(path: &Path, line: usize, column: usize) -> String {
    format!(" --> {}:{line}:{column}", path.display())
}

/// Asserts that standard error is exactly `expected` (one `error: ...` message).
fn assert_error(output: &Output, code: i32, expected: &str) {
    assert_status(output, code);
    assert_eq!(stderr(output).trim_end(), expected);
}

/// Asserts the first two lines of a rustc-style diagnostic, with the exit status.
fn assert_diagnostic(output: &Output, code: i32, message: &str, place: &str) {
    assert_status(output, code);
    let text = format!("{}{}", stdout(output), stderr(output));
    let mut lines = text.lines().skip_while(|l| !l.starts_with("error"));
    assert_eq!(lines.next(), Some(message), "{text}");
    assert_eq!(lines.next(), Some(place), "{text}");
}

/// A sparse file of `len` bytes that starts with `head`.
fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::write(path, head).expect("head written");
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
}

/// A safetensors file: `tensors` as (name, dtype, shape), F32 values all `fill`, others zero.
fn safetensors(tensors: &[(&str, &str, &[usize])], fill: f32) -> Vec<u8> {
    let mut header = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape) in tensors {
        let count: usize = shape.iter().product();
        let start = data.len();
        match *dtype {
            "F32" => data.extend((0..count).flat_map(|_| fill.to_le_bytes())),
            "F16" | "BF16" => data.resize(start + 2 * count, 0),
            "I32" => data.resize(start + 4 * count, 0),
            _ => data.resize(start + 8 * count, 0),
        }
        header.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    raw_safetensors(&format!("{{{}}}", header.join(",")), &data)
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

/// The tensors of [`tiny_spec`] over `[1, 4, 4]` inputs.
const TINY: [(&str, &str, &[usize]); 4] = [
    ("0.weight", "F32", &[4, 1, 3, 3]),
    ("0.bias", "F32", &[4]),
    ("4.weight", "F32", &[10, 16]),
    ("4.bias", "F32", &[10]),
];

/// A tiny spec over `[1, 4, 4]`, good weights for it and a one-sample input, in `dir`.
struct Tiny {
    spec: PathBuf,
    weights: PathBuf,
    input: PathBuf,
    output: PathBuf,
}

impl Tiny {
    fn new(dir: &Path) -> Tiny {
        let weights = dir.join("tiny.safetensors");
        std::fs::write(&weights, safetensors(&TINY, 0.5)).expect("weights");
        let input = dir.join("x.npy");
        npy::write_f32(&input, ArrayD::zeros(vec![1, 1, 4, 4]).view()).expect("input");
        Tiny {
            spec: tiny_spec(dir, "tiny.cnn", 1, 4),
            weights,
            input,
            output: dir.join("y.npy"),
        }
    }

    /// `cnnc run` with these weights (or `weights`) and input (or `input`); asserts that no
    /// output was written when it fails.
    fn run(&self, weights: Option<&Path>, input: Option<&Path>) -> Output {
        let output = cnnc(&[
            "run",
            arg(&self.spec),
            "--weights",
            arg(weights.unwrap_or(&self.weights)),
            "--input",
            arg(input.unwrap_or(&self.input)),
            "--output",
            arg(&self.output),
        ]);
        if !output.status.success() {
            assert!(!self.output.exists(), "nothing is written on failure");
        }
        output
    }

    /// `cnnc run` with weights made of `bytes`, checking the file is left as it was.
    fn run_weights(&self, name: &str, bytes: &[u8]) -> (Output, PathBuf) {
        let path = self.spec.with_file_name(name);
        std::fs::write(&path, bytes).expect("weights written");
        let output = self.run(Some(&path), None);
        assert_eq!(std::fs::read(&path).expect("still there"), bytes);
        (output, path)
    }
}

#[test]
fn spec_sizes_beyond_the_limits_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "channels.cnn",
            "input (3, 32, 32)\nconv2d(out_channels=2000000, kernel_size=3)\n".to_owned(),
            "error[E0306]: 2000000 is larger than the size limit of 1048576",
            (2, 21),
        ),
        (
            "digits.yaml",
            "input: [3, 32, 32]\nlayers:\n  - linear: {out_features: 99999999999999999999999}\n"
                .to_owned(),
            "error[E0306]: the number is larger than the size limit of 1048576",
            (3, 28),
        ),
        (
            "input.cnn",
            "input (1048576, 1048576, 1048576)\nflatten\n".to_owned(),
            "error[E0306]: the input has 1152921504606846976 elements per sample, more than the \
             limit of 2147483648",
            (1, 7),
        ),
        (
            "tensor.cnn",
            "input (1024, 1024, 1024)\nconv2d(out_channels=4096, kernel_size=1)\n".to_owned(),
            "error[E0306]: the output of layer 0 (conv2d) would have 4294967296 elements, more \
             than the limit of 2147483648",
            (2, 1),
        ),
        (
            "layers.cnn",
            format!("input (1, 1, 1)\n{}", "relu\n".repeat(10_001)),
            "error[E0104]: the model has 10001 layers, more than the limit of 10000",
            (10_002, 1),
        ),
    ];
    for (name, text, message, (line, column)) in cases {
        let path = write(dir.path(), name, &text);
        let place = at(&path, line, column);
        // Wide line numbers widen the gutter.
        let place = format!("{}{place}", " ".repeat(line.to_string().len() - 1));
        assert_diagnostic(&cnnc(&["check", arg(&path)]), 1, message, &place);
    }
    // Commands that build the network refuse the spec the same way, before allocating anything.
    let tiny = Tiny::new(dir.path());
    let spec = dir.path().join("tensor.cnn");
    let output = cnnc(&[
        "run",
        arg(&spec),
        "--input",
        arg(&tiny.input),
        "--output",
        arg(&tiny.output),
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).starts_with(&format!(
            "error: spec {} has 1 error(s):\nerror[E0306]: the output of layer 0 (conv2d) would \
             have 4294967296 elements",
            spec.display()
        )),
        "{}",
        stderr(&output)
    );
    assert!(!tiny.output.exists());
}

#[test]
fn a_huge_spec_file_is_refused_after_reading_one_mebibyte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.yaml");
    sparse(&path, b"layers: [[[[[[[[", TIB);
    let message = "error[E0003]: the spec is larger than the limit of 1048576 bytes (1 MiB)";
    assert_diagnostic(&cnnc(&["check", arg(&path)]), 1, message, &at(&path, 1, 1));
    let tiny = Tiny::new(dir.path());
    let output = cnnc(&[
        "run",
        arg(&path),
        "--input",
        arg(&tiny.input),
        "--output",
        arg(&tiny.output),
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).starts_with(&format!(
            "error: spec {} has 1 error(s):\n{message}\n{}\n",
            path.display(),
            at(&path, 1, 1)
        )),
        "{}",
        stderr(&output)
    );
    assert!(!tiny.output.exists());
}

#[test]
fn deep_nesting_and_long_lines_are_refused_with_their_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = 100_000;
    let flow = write(
        dir.path(),
        "flow.yaml",
        &format!(
            "input: [3, 32, 32]\nlayers: {}{}\n",
            "[".repeat(deep),
            "]".repeat(deep)
        ),
    );
    let block: String = (1..=40).map(|i| format!("{}-\n", "  ".repeat(i))).collect();
    let block = write(
        dir.path(),
        "block.yaml",
        &format!("input: [3, 32, 32]\nlayers:\n{block}"),
    );
    let dsl = write(
        dir.path(),
        "deep.cnn",
        &format!(
            "input (3, 32, 32)\nconv2d(out_channels=8, kernel_size={}3{})\n",
            "(".repeat(deep),
            ")".repeat(deep)
        ),
    );
    let yaml_message = "error[E0004]: lists and mappings are nested more than 16 deep";
    // The 17th bracket: `layers: ` is 8 columns.
    assert_diagnostic(
        &cnnc(&["check", arg(&flow)]),
        1,
        yaml_message,
        &at(&flow, 2, 25),
    );
    assert_diagnostic(
        &cnnc(&["check", arg(&block)]),
        1,
        yaml_message,
        &format!(" {}", at(&block, 18, 33)),
    );
    assert_diagnostic(
        &cnnc(&["check", arg(&dsl)]),
        1,
        "error[E0004]: brackets are nested more than 16 deep",
        &at(&dsl, 2, 51),
    );

    // A 500,000-column line: the place is exact and the excerpt stays short.
    let long = write(
        dir.path(),
        "long.cnn",
        &format!("input (3, 32, 32)\nrelu{}x\n", " ".repeat(500_000)),
    );
    let output = cnnc(&["check", arg(&long)]);
    assert_diagnostic(
        &output,
        1,
        "error[E0201]: unknown layer kind `x`",
        &at(&long, 2, 500_005),
    );
    // The excerpt is cut around the culprit; notes (the list of kinds) are not excerpts.
    assert!(
        stdout(&output)
            .lines()
            .filter(|l| !l.trim_start().starts_with("= "))
            .all(|l| l.chars().count() < 300)
    );
}

#[test]
fn specs_that_are_not_utf8_text_or_not_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let latin1 = dir.path().join("latin1.cnn");
    std::fs::write(&latin1, b"input (1, 4, 4)\n# caf\xe9\nrelu\n").expect("written");
    let run = |spec: &Path| {
        cnnc(&[
            "run",
            arg(spec),
            "--input",
            arg(&tiny.input),
            "--output",
            arg(&tiny.output),
        ])
    };
    assert_error(
        &run(&latin1),
        2,
        &format!(
            "error: spec {} is not UTF-8 text: byte 0xe9 at line 2, column 6 is not valid UTF-8; \
             save the file as UTF-8",
            latin1.display()
        ),
    );
    let folder = dir.path().join("folder.yaml");
    std::fs::create_dir(&folder).expect("dir");
    assert_error(
        &run(&folder),
        2,
        &format!(
            "error: cannot read spec {}: it is a directory; pass a .yaml, .yml or .cnn file",
            folder.display()
        ),
    );
    assert!(!tiny.output.exists());
}

#[test]
fn weights_with_non_finite_values_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let mut bytes = safetensors(&TINY, 0.5);
    // The header is padded to no particular length, so find 0.bias's data by its offset.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let bias = 8 + header_len + 36 * 4;
    bytes[bias + 8..bias + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    bytes[bias + 12..bias + 16].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let (output, path) = tiny.run_weights("nan.safetensors", &bytes);
    assert_error(
        &output,
        1,
        &format!(
            "error: cannot load `{}`: tensor `0.bias` holds 2 non-finite value(s), the first \
             (NaN) at index [2]; the file is damaged or was saved from a diverged run: use an \
             earlier checkpoint",
            path.display()
        ),
    );
}

#[test]
fn weights_of_another_dtype_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    for dtype in ["F16", "BF16", "F64", "I32", "I64"] {
        let mut tensors = TINY.to_vec();
        tensors[2] = ("4.weight", dtype, &[10, 16]);
        let (output, path) = tiny.run_weights("typed.safetensors", &safetensors(&tensors, 0.5));
        assert_error(
            &output,
            1,
            &format!(
                "error: the weights in {path} do not fit the spec {spec}: cannot load `{path}`: \
                 tensor `4.weight` has dtype {dtype}, the model expects F32; convert the tensors \
                 to float32 before saving (PyTorch: `model.float()`)",
                path = path.display(),
                spec = tiny.spec.display()
            ),
        );
    }
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_listed_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let tensors: [(&str, &str, &[usize]); 4] = [
        ("0.weight", "F32", &[4, 1, 3, 3]),
        ("0.bias", "F32", &[5]),
        ("4.weight", "F32", &[10, 16]),
        ("head.bias", "F32", &[10]),
    ];
    let (output, path) = tiny.run_weights("mixed.safetensors", &safetensors(&tensors, 0.5));
    assert_error(
        &output,
        1,
        &format!(
            "error: the weights in {path} do not fit the spec {spec}: cannot load `{path}`: 3 \
             problems\n  - tensor `0.bias` has shape [5], the model expects [4]\n  - missing \
             tensor `4.bias` (the model expects F32 [10])\n  - unexpected tensor `head.bias` \
             (F32 [10]): the model has no such entry",
            path = path.display(),
            spec = tiny.spec.display()
        ),
    );
}

#[test]
fn duplicate_tensor_names_in_the_header_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let good = safetensors(&TINY, 0.5);
    let header_len = u64::from_le_bytes(good[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&good[8..8 + header_len]).expect("JSON");
    // A second `0.bias` over the first one's bytes: a JSON map would keep only this one.
    let duplicated = format!(
        "{},\"0.bias\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[144,160]}}}}",
        &header[..header.len() - 1]
    );
    let bytes = raw_safetensors(&duplicated, &good[8 + header_len..]);
    let (output, path) = tiny.run_weights("duplicate.safetensors", &bytes);
    assert_error(
        &output,
        1,
        &format!(
            "error: cannot load `{}`: not a valid safetensors file: the header names `0.bias` \
             twice, and a JSON reader keeps only one of them; the file is corrupt: save it again",
            path.display()
        ),
    );
}

#[test]
fn safetensors_headers_that_lie_are_refused_before_the_data_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let prefix = |path: &Path| {
        format!(
            "error: cannot load `{}`: not a valid safetensors file: ",
            path.display()
        )
    };

    let mut huge_header = (1u64 << 63).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    let (output, path) = tiny.run_weights("header.safetensors", &huge_header);
    let expected = "the header length field claims 9223372036854775808 bytes, more than the \
                    100 MB limit";
    assert_error(&output, 1, &format!("{}{expected}", prefix(&path)));

    let gigantic = raw_safetensors(
        r#"{"0.weight":{"dtype":"F32","shape":[1099511627776,1048576],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let (output, path) = tiny.run_weights("gigantic.safetensors", &gigantic);
    let expected = "tensor `0.weight` claims shape [1099511627776, 1048576] of F32, more bytes \
                    than can be addressed";
    assert_error(&output, 1, &format!("{}{expected}", prefix(&path)));

    let past_end = raw_safetensors(
        r#"{"0.bias":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#,
        &[0; 32],
    );
    let (output, path) = tiny.run_weights("past_end.safetensors", &past_end);
    let expected = "the header describes 4000000 bytes of tensor data but 32 bytes follow it \
                    (truncated file?)";
    assert_error(&output, 1, &format!("{}{expected}", prefix(&path)));

    // A tebibyte-sized tensor the model does not have, in a file of exactly that size.
    let head = safetensors(&TINY, 0.5);
    let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) as usize;
    let data_len = head.len() - 8 - header_len;
    let header = format!(
        "{},\"extra\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{data_len},{}]}}}}",
        std::str::from_utf8(&head[8..8 + header_len - 1]).expect("JSON"),
        TIB / 4,
        data_len as u64 + TIB
    );
    let path = dir.path().join("sparse.safetensors");
    let start = raw_safetensors(&header, &head[8 + header_len..]);
    sparse(&path, &start, (8 + header.len() + data_len) as u64 + TIB);
    let output = tiny.run(Some(&path), None);
    assert_error(
        &output,
        1,
        &format!(
            "error: the weights in {path} do not fit the spec {spec}: cannot load `{path}`: \
             unexpected tensor `extra` (F32 [274877906944]): the model has no such entry",
            path = path.display(),
            spec = tiny.spec.display()
        ),
    );

    let folder = dir.path().join("folder.safetensors");
    std::fs::create_dir(&folder).expect("dir");
    assert_error(
        &tiny.run(Some(&folder), None),
        2,
        &format!(
            "error: cannot load `{}`: cannot read the file: it is a directory; pass a \
             .safetensors file",
            folder.display()
        ),
    );
}

#[test]
fn npy_inputs_that_lie_are_refused_before_the_data_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let header = |shape: &str, pad: usize| {
        let text = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let text = format!("{text}{}\n", " ".repeat(pad));
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((text.len() as u16).to_le_bytes());
        bytes.extend(text.as_bytes());
        bytes
    };
    let prefix = |path: &Path| format!("error: `{}` is not a valid .npy file: ", path.display());

    let path = dir.path().join("huge.npy");
    std::fs::write(&path, header("(1152921504606846976, 1, 4, 4)", 0)).expect("written");
    assert_error(
        &tiny.run(None, Some(&path)),
        1,
        &format!(
            "{}shape [1152921504606846976, 1, 4, 4] is too large",
            prefix(&path)
        ),
    );

    let path = dir.path().join("long_header.npy");
    std::fs::write(&path, header("(1, 1, 4, 4)", 20_000)).expect("written");
    assert_error(
        &tiny.run(None, Some(&path)),
        1,
        &format!(
            "{}the header claims 20066 bytes, more than the limit of 10000 (NumPy's own default)",
            prefix(&path)
        ),
    );

    // A one-sample header on a tebibyte of data.
    let path = dir.path().join("sparse.npy");
    let head = header("(1, 1, 4, 4)", 0);
    sparse(&path, &head, TIB);
    assert_error(
        &tiny.run(None, Some(&path)),
        1,
        &format!(
            "{}shape [1, 1, 4, 4] needs 64 bytes of data but the file holds {}",
            prefix(&path),
            TIB - head.len() as u64
        ),
    );

    let folder = dir.path().join("folder.npy");
    std::fs::create_dir(&folder).expect("dir");
    assert_error(
        &tiny.run(None, Some(&folder)),
        2,
        &format!(
            "error: cannot read `{}`: it is a directory; pass a .npy file",
            folder.display()
        ),
    );
}

/// `cnnc eval` of the tiny model's weights on `dataset` in `data`.
fn eval(tiny: &Tiny, dataset: &str, data: &Path) -> Output {
    cnnc(&[
        "eval",
        arg(&tiny.spec),
        "--weights",
        arg(&tiny.weights),
        "--dataset",
        dataset,
        "--data",
        arg(data),
    ])
}

#[test]
fn idx_files_that_lie_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let data = dir.path().join("mnist");
    write_idx(&data, 20, 10, 4);
    assert_status(&eval(&tiny, "mnist", &data), 0);
    let images = data.join("train-images-idx3-ubyte");
    let labels = data.join("train-labels-idx1-ubyte");
    let good_images = std::fs::read(&images).expect("images");
    let good_labels = std::fs::read(&labels).expect("labels");
    let prefix = format!("error: cannot load mnist from {}: ", data.display());
    let refused = |path: &Path, expected: String| {
        assert_error(
            &eval(&tiny, "mnist", &data),
            1,
            &format!("{prefix}{}: {expected}", path.display()),
        );
    };

    // 2^32 - 1 images of 4x4 in a sparse file of exactly the size that claims.
    let mut header = good_images[..16].to_vec();
    header[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    sparse(&images, &header, 16 + 16 * u64::from(u32::MAX));
    refused(
        &images,
        "bad header at byte 4: it claims 4294967295 images, more than the limit of 16777216; \
         the file is corrupt or not an IDX file"
            .to_owned(),
    );
    // The same claim gzip-compressed: more than any file of its size decompresses to.
    std::fs::remove_file(&images).expect("removed");
    let gz = data.join("train-images-idx3-ubyte.gz");
    let compressed = gzip(&header);
    std::fs::write(&gz, &compressed).expect("written");
    let len = compressed.len();
    refused(
        &gz,
        format!(
            "header claims 68719476720 bytes of data but a {len}-byte file holds at most {}; \
             the file is corrupt or not an IDX file",
            len * 1032 + 1024
        ),
    );

    // Truncated, raw and compressed.
    std::fs::write(&gz, gzip(&good_images[..good_images.len() - 5])).expect("written");
    refused(
        &gz,
        "uncompressed data after the header is 315 bytes, expected 320 (truncated); the file is \
         corrupt or incomplete: fetch it again"
            .to_owned(),
    );
    std::fs::remove_file(&gz).expect("removed");
    std::fs::write(&images, &good_images[..good_images.len() - 5]).expect("written");
    refused(
        &images,
        "data after the header is 315 bytes, expected 320 (truncated); the file is corrupt or \
         incomplete: fetch it again"
            .to_owned(),
    );
    // A compressed stream cut in the middle.
    std::fs::remove_file(&images).expect("removed");
    let compressed = gzip(&good_images);
    std::fs::write(&gz, &compressed[..compressed.len() / 2]).expect("written");
    let output = eval(&tiny, "mnist", &data);
    assert_status(&output, 1);
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "{prefix}{}: the gzip data is corrupt or cut short after ",
            gz.display()
        )) && message.ends_with(
            " uncompressed bytes (incomplete deflate stream); the file is damaged or \
             incomplete: fetch it again\n"
        ),
        "{message}"
    );
    std::fs::remove_file(&gz).expect("removed");
    std::fs::write(&images, &good_images).expect("written");

    // A label beyond the ten classes.
    let mut bad = good_labels.clone();
    bad[8 + 3] = 12;
    std::fs::write(&labels, &bad).expect("written");
    refused(
        &labels,
        "record 3 (byte 11) has label 12, expected 0..10; the file is corrupt or belongs to \
         another dataset"
            .to_owned(),
    );
}

#[test]
fn cifar_batches_that_lie_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "rgb.cnn", 3, 32);
    let weights = dir.path().join("rgb.safetensors");
    let tensors: [(&str, &str, &[usize]); 4] = [
        ("0.weight", "F32", &[4, 3, 3, 3]),
        ("0.bias", "F32", &[4]),
        ("4.weight", "F32", &[10, 1024]),
        ("4.bias", "F32", &[10]),
    ];
    std::fs::write(&weights, safetensors(&tensors, 0.01)).expect("weights");
    let data = dir.path().join("cifar");
    write_cifar(&data, 3);
    let eval = || {
        cnnc(&[
            "eval",
            arg(&spec),
            "--weights",
            arg(&weights),
            "--dataset",
            "cifar10",
            "--data",
            arg(&data),
        ])
    };
    assert_status(&eval(), 0);
    let batch = data.join("test_batch.bin");
    let good = std::fs::read(&batch).expect("batch");
    let refused = |expected: String| {
        assert_error(
            &eval(),
            1,
            &format!(
                "error: cannot load cifar10 from {}: {}: {expected}",
                data.display(),
                batch.display()
            ),
        );
    };

    std::fs::write(&batch, &good[..good.len() - 100]).expect("written");
    refused(
        "9119 bytes is not a whole number of 3073-byte records (2 records and 2973 extra bytes); \
         the file is truncated or not a CIFAR-10 binary batch: fetch it again"
            .to_owned(),
    );
    let mut bad = good.clone();
    bad[3073] = 200;
    std::fs::write(&batch, &bad).expect("written");
    refused(
        "record 1 (byte 3073) has label 200, expected 0..10; the file is corrupt or belongs to \
         another dataset"
            .to_owned(),
    );
    // A whole number of records, a tebibyte of them.
    let len = 3073 * (TIB / 3073);
    sparse(&batch, &good, len);
    refused(format!(
        "{len} bytes, more than the limit of 4294967296 bytes (4 GiB) for one dataset file; a \
         CIFAR-10 batch holds 10,000 records (30,730,000 bytes): is this the right file?"
    ));
}

/// `cnnc eval` of an 8x8 RGB model on the image folder `data`.
fn eval_folder(dir: &Path, data: &Path) -> Output {
    let spec = tiny_spec(dir, "folder.cnn", 3, 8);
    let weights = dir.join("folder.safetensors");
    let tensors: [(&str, &str, &[usize]); 4] = [
        ("0.weight", "F32", &[4, 3, 3, 3]),
        ("0.bias", "F32", &[4]),
        ("4.weight", "F32", &[10, 64]),
        ("4.bias", "F32", &[10]),
    ];
    std::fs::write(&weights, safetensors(&tensors, 0.01)).expect("weights");
    cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&weights),
        "--dataset",
        "folder",
        "--data",
        arg(data),
    ])
}

/// A PNG whose header claims `width` x `height` pixels but holds one row of data.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    // IHDR's data is bytes 16..29, its CRC (over type and data) 29..33.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn image_folders_with_bad_images_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("images");
    write_folder(&data, 2);
    assert_status(&eval_folder(dir.path(), &data), 0);
    let prefix = format!("error: cannot load folder from {}: ", data.display());
    let day = data.join("train/day");

    let odd = day.join("odd.png");
    image::RgbImage::new(9, 7).save(&odd).expect("png");
    assert_error(
        &eval_folder(dir.path(), &data),
        1,
        &format!(
            "{prefix}{}: image is 9x7 but {} is 8x8; all images of a dataset must share one \
             size: resize them beforehand (e.g. ImageMagick `mogrify -resize 8x8! FILE`)",
            odd.display(),
            day.join("0.png").display()
        ),
    );
    std::fs::remove_file(&odd).expect("removed");

    let broken = day.join("broken.png");
    std::fs::write(&broken, b"not a png").expect("written");
    assert_error(
        &eval_folder(dir.path(), &data),
        1,
        &format!(
            "{prefix}{}: cannot decode image: Format error decoding Png: Invalid PNG signature.; \
             the file is damaged, too large or not a PNG or JPEG image: replace or remove it",
            broken.display()
        ),
    );
    // A 100000x100000 image in a few bytes: refused from its header.
    let bomb = png_bomb(100_000, 100_000);
    std::fs::write(&broken, &bomb).expect("written");
    assert_error(
        &eval_folder(dir.path(), &data),
        1,
        &format!(
            "{prefix}{}: cannot decode image: Format error decoding Png: the header claims \
             100000x100000 pixels but a {}-byte file holds at most {}; the file is damaged, too \
             large or not a PNG or JPEG image: replace or remove it",
            broken.display(),
            bomb.len(),
            bomb.len() * 8 * 1032
        ),
    );
    std::fs::remove_file(&broken).expect("removed");

    let empty = data.join("train/dusk");
    std::fs::create_dir(&empty).expect("dir");
    assert_error(
        &eval_folder(dir.path(), &data),
        1,
        &format!(
            "{prefix}{}: class folder holds no PNG or JPEG image; add images or remove the folder",
            empty.display()
        ),
    );

    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").expect("written");
    assert_error(
        &eval_folder(dir.path(), &file),
        2,
        &format!(
            "error: {} is a file, not a folder; pass --data DIR, the folder that holds the \
             dataset",
            file.display()
        ),
    );
}

#[test]
fn predict_refuses_unreadable_images_and_folders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let predict = |image: &Path| {
        cnnc(&[
            "predict",
            arg(&tiny.spec),
            "--weights",
            arg(&tiny.weights),
            arg(image),
        ])
    };
    // Weights without metadata: a notice says how images are prepared, then the error.
    let last_line = |output: &Output, code: i32, expected: String| {
        assert_status(output, code);
        assert_eq!(stderr(output).lines().last(), Some(expected.as_str()));
    };
    let bomb = dir.path().join("bomb.png");
    let bytes = png_bomb(100_000, 100_000);
    std::fs::write(&bomb, &bytes).expect("written");
    last_line(
        &predict(&bomb),
        1,
        format!(
            "error: {}: cannot decode image: Format error decoding Png: the header claims \
             100000x100000 pixels but a {}-byte file holds at most {}; the file is damaged, too \
             large or not a PNG or JPEG image: replace or remove it",
            bomb.display(),
            bytes.len(),
            bytes.len() * 8 * 1032
        ),
    );
    last_line(
        &predict(dir.path()),
        2,
        format!(
            "error: {} is a directory; pass PNG or JPEG files (e.g. {}/*.png)",
            dir.path().display(),
            dir.path().display()
        ),
    );
}

/// `cnnc train` of the tiny model on 40 IDX images in `data`, into `out`.
fn train_tiny(tiny: &Tiny, data: &Path, out: &Path, flags: &[&str]) -> Output {
    let mut args = vec![
        "train",
        arg(&tiny.spec),
        "--dataset",
        "mnist",
        "--data",
        arg(data),
        "--out",
        arg(out),
    ];
    args.extend(flags);
    cnnc(&args)
}

#[test]
fn batch_sizes_beyond_the_dataset_hold_the_dataset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let data = dir.path().join("data");
    write_idx(&data, 40, 20, 4);
    let huge = u64::MAX.to_string();
    for batch in ["10000000", "10000000000", huge.as_str()] {
        let out = dir.path().join(format!("run-{batch}"));
        let output = train_tiny(
            &tiny,
            &data,
            &out,
            &["--batch-size", batch, "--epochs", "1"],
        );
        assert_status(&output, 0);
        let notice = format!(
            "notice: the batch size {batch} is larger than the 40 training images: each epoch is \
             one batch of 40"
        );
        assert!(stderr(&output).contains(&notice), "{}", stderr(&output));
        // The checkpoint records the batch size asked for, and resumes with it.
        let state = std::fs::read_to_string(out.join("checkpoint.json")).expect("a checkpoint");
        assert!(
            state.contains(&format!("\"batch_size\": {batch}")),
            "{state}"
        );
        let resumed = cnnc(&[
            "train",
            arg(&tiny.spec),
            "--resume",
            arg(&out),
            "--epochs",
            "2",
        ]);
        assert_status(&resumed, 0);
        assert!(
            stdout(&resumed).contains("epoch 2/2"),
            "{}",
            stdout(&resumed)
        );
    }

    let eval_with = |batch: &str| {
        cnnc(&[
            "eval",
            arg(&tiny.spec),
            "--weights",
            arg(&tiny.weights),
            "--dataset",
            "mnist",
            "--data",
            arg(&data),
            "--batch-size",
            batch,
        ])
    };
    let expected = eval_with("20");
    assert_status(&expected, 0);
    for batch in ["10000000", huge.as_str()] {
        let output = eval_with(batch);
        assert_status(&output, 0);
        assert_eq!(stdout(&output), stdout(&expected), "--batch-size {batch}");
    }
}

#[test]
fn numeric_training_flags_are_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let data = dir.path().join("data");
    write_idx(&data, 40, 20, 4);
    let out = dir.path().join("run");
    let step = ["--schedule", "step"];
    let cases: [(&[&str], &str); 8] = [
        (
            &["--gamma", "NaN"],
            "invalid value 'NaN' for '--gamma <GAMMA>': must be a finite number > 0, got NaN",
        ),
        (
            &["--gamma", "inf"],
            "invalid value 'inf' for '--gamma <GAMMA>': must be a finite number > 0, got inf",
        ),
        (
            &["--gamma=-1"],
            "invalid value '-1' for '--gamma <GAMMA>': must be a finite number > 0, got -1",
        ),
        (
            &["--gamma", "-1"],
            "invalid value '-1' for '--gamma <GAMMA>': must be a finite number > 0, got -1",
        ),
        (
            &["--gamma", "0"],
            "invalid value '0' for '--gamma <GAMMA>': must be a finite number > 0, got 0",
        ),
        (
            &["--lr", "inf"],
            "invalid value 'inf' for '--lr <LR>': must be a finite number >= 0, got inf",
        ),
        (
            &["--momentum", "-0.5"],
            "invalid value '-0.5' for '--momentum <MOMENTUM>': must be a finite number >= 0, got -0.5",
        ),
        (
            &["--weight-decay", "nan"],
            "invalid value 'nan' for '--weight-decay <WEIGHT_DECAY>': must be a finite number >= 0, got NaN",
        ),
    ];
    for (flags, message) in cases {
        let output = train_tiny(&tiny, &data, &out, &[&step[..], flags].concat());
        assert_status(&output, 2);
        assert!(
            stderr(&output).starts_with(&format!("error: {message}")),
            "{flags:?}: {}",
            stderr(&output)
        );
        assert!(!out.exists(), "{flags:?}: the run started");
    }

    // Adam moves every weight by about the learning rate each step: the loss grows huge but
    // stays finite, so the run ends, with a notice that it diverged.
    let output = train_tiny(
        &tiny,
        &data,
        &out,
        &[
            "--optimizer",
            "adam",
            "--lr",
            "1e10",
            "--batch-size",
            "4",
            "--epochs",
            "1",
        ],
    );
    assert_status(&output, 0);
    let message = stderr(&output);
    let notice = message
        .lines()
        .find(|l| l.starts_with("notice: epoch 1's training loss"))
        .unwrap_or_default();
    assert!(
        notice.ends_with(
            "is more than 10 times that of a uniform guess (2.30 for 10 classes): training is \
             diverging without overflowing; lower --lr"
        ),
        "{message}"
    );
}

#[test]
fn hand_edited_checkpoints_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let data = dir.path().join("data");
    write_idx(&data, 40, 20, 4);
    let out = dir.path().join("run");
    let flags = ["--batch-size", "8", "--epochs", "1", "--schedule", "step"];
    assert_status(&train_tiny(&tiny, &data, &out, &flags), 0);
    let path = out.join("checkpoint.json");
    let original = std::fs::read_to_string(&path).expect("a checkpoint");
    let state: serde_json::Value = serde_json::from_str(&original).expect("JSON");

    let cases = [
        (
            "/loader/position",
            serde_json::json!(999),
            "`loader.position` is 999, past the end of the 40 training images",
        ),
        (
            "/progress/seen",
            serde_json::json!(u64::MAX),
            "`progress.seen` is 18446744073709551615, but the loader has handed out 0 images of \
             this epoch (`loader.position`)",
        ),
        (
            "/recipe/schedule/step_size",
            serde_json::json!(0),
            "`recipe.schedule.step_size` is 0, must be at least 1",
        ),
        (
            "/recipe/schedule/gamma",
            serde_json::json!(-1.0),
            "`recipe.schedule.gamma` must be a finite number > 0, got -1",
        ),
        (
            "/recipe/lr",
            serde_json::json!(-0.5),
            "`recipe.lr` must be a finite number >= 0, got -0.5",
        ),
        (
            "/recipe/batch_size",
            serde_json::json!(0),
            "`recipe.batch_size` is 0, must be at least 1",
        ),
        (
            "/step",
            serde_json::json!(7),
            "`step` is 7, but 1 finished epochs of 5 batches and 0 batches of the epoch in \
             progress make 5",
        ),
    ];
    for (pointer, value, problem) in cases {
        let mut edited = state.clone();
        *edited.pointer_mut(pointer).expect("the field") = value;
        std::fs::write(&path, serde_json::to_string_pretty(&edited).expect("JSON"))
            .expect("written");
        let output = cnnc(&[
            "train",
            arg(&tiny.spec),
            "--resume",
            arg(&out),
            "--epochs",
            "2",
        ]);
        assert_error(
            &output,
            1,
            &format!(
                "error: {} does not describe a run cnnc could have saved (was it edited by hand?): \
                 {problem}; restore the file from a copy, or start a new run",
                path.display()
            ),
        );
    }
    std::fs::write(&path, &original).expect("restored");
    let resumed = cnnc(&[
        "train",
        arg(&tiny.spec),
        "--resume",
        arg(&out),
        "--epochs",
        "2",
    ]);
    assert_status(&resumed, 0);
}

#[test]
fn out_and_resume_naming_a_file_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Tiny::new(dir.path());
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").expect("written");
    for flag in ["--out", "--resume"] {
        let output = cnnc(&["train", arg(&tiny.spec), flag, arg(&file)]);
        assert_error(
            &output,
            2,
            &format!(
                "error: {flag} {} is a file, not a folder; name the folder that holds (or will \
                 hold) the checkpoint",
                file.display()
            ),
        );
        assert_eq!(
            std::fs::read_to_string(&file).expect("still there"),
            "keep me"
        );
    }
}

#[test]
fn fmt_never_writes_a_spec_over_the_size_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A spec of exactly the limit, in canonical layout but for its last line, a comment without
    // the newline that `fmt` adds.
    let head = "input (1, 4, 4)\n\nflatten\nlinear(out_features=10)\n# ";
    let mut text = head.to_owned();
    text.push_str(&"x".repeat(cnnc_spec::MAX_SOURCE_BYTES - head.len()));
    let spec = write(dir.path(), "big.cnn", &text);
    assert_status(&cnnc(&["check", arg(&spec)]), 0);
    let target = dir.path().join("out.cnn");
    for output in [
        cnnc(&["fmt", arg(&spec)]),
        cnnc(&["fmt", arg(&spec), "-o", arg(&target)]),
    ] {
        assert_error(
            &output,
            1,
            &format!(
                "error: {} formatted is 1048577 bytes, more than the limit of 1048576 bytes \
                 (1 MiB) on a spec; nothing was written: shorten the spec (its comments, names \
                 or layers) first",
                spec.display()
            ),
        );
        assert!(output.stdout.is_empty());
    }
    assert!(!target.exists());
}
