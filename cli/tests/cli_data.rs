//! End-to-end tests of how the commands choose and read data they are handed: what a weights
//! file's metadata may decide (which dataset, where it is read from; never where downloads go),
//! `.npy` inputs with values no model input should hold, and image folders refused from their
//! headers before anything is decoded.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cnnc::runtime::weights::{read_tensors, write_tensors};
use support::*;

/// A tiny model trained on MNIST-layout data: (spec, data dir, weights).
fn trained(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    write_idx(&data, 48, 16, 8);
    let spec = tiny_spec(dir, "tiny.cnn", 1, 8);
    let out = dir.join("run");
    let flags = [&FAST[..], &["--epochs", "1"]].concat();
    assert_status(&train(&spec, &data, &out, &flags), 0);
    (spec, data, out.join("model.safetensors"))
}

/// A copy of `weights` at `dir/name` whose metadata has `changes` applied.
fn with_metadata(weights: &Path, dir: &Path, name: &str, changes: &[(&str, &str)]) -> PathBuf {
    let file = read_tensors(weights).expect("weights read");
    let mut metadata: BTreeMap<String, String> = file.metadata;
    for (key, value) in changes {
        metadata.insert((*key).to_owned(), (*value).to_owned());
    }
    let tensors: Vec<_> = file.tensors.into_iter().collect();
    let path = dir.join(name);
    write_tensors(&path, &tensors, &metadata).expect("weights written");
    path
}

#[test]
fn metadata_chooses_neither_an_unknown_dataset_nor_where_downloads_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data, weights) = trained(dir.path());

    // An unknown name is an error, not the shipped sample; its control characters are escaped.
    let unknown = with_metadata(
        &weights,
        dir.path(),
        "unknown.safetensors",
        &[("cnnc.dataset", "imagenet\u{1b}[2J")],
    );
    let output = cnnc(&["eval", arg(&spec), "--weights", arg(&unknown)]);
    assert_status(&output, 2);
    let text = stderr(&output);
    assert!(
        text.contains(r#"were trained on the dataset "imagenet\u{1b}[2J" (their metadata `cnnc.dataset`), which cnnc does not know; pass --dataset (cifar10, fashion-mnist, mnist, folder, sample)"#),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text}");
    // The flags decide then.
    let flagged = cnnc(&[
        "eval",
        arg(&spec),
        "--weights",
        arg(&unknown),
        "--dataset",
        "mnist",
        "--data",
        arg(&data),
    ]);
    assert_status(&flagged, 0);

    // A folder named by the metadata is read from, never created or filled by --download.
    let planted = dir.path().join("planted");
    let elsewhere = with_metadata(
        &weights,
        dir.path(),
        "elsewhere.safetensors",
        &[
            ("cnnc.dataset", "fashion-mnist"),
            ("cnnc.data_dir", arg(&planted)),
        ],
    );
    let (base, requests) = serve(Vec::new());
    let cache = dir.path().join("cache");
    let output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["eval", arg(&spec), "--weights", arg(&elsewhere)])
        .args(["--download", "--mirror", &base])
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .expect("cnnc runs");
    assert_status(&output, 2);
    let text = stderr(&output);
    let default = cache.join("cnnc").join("fashion-mnist");
    assert!(
        text.contains(&format!(
            "notice: the weights were trained on fashion-mnist read from {:?}, which does not \
             hold it now; looking in the default folder",
            arg(&planted)
        )) && text.contains(&format!("into {} ...", default.display())),
        "{text}"
    );
    assert!(!planted.exists(), "{text}");
    assert!(!requests.lock().expect("request log").is_empty());

    // Where the folder still holds the dataset, it is read from as before.
    let recorded = with_metadata(
        &weights,
        dir.path(),
        "recorded.safetensors",
        &[("cnnc.data_dir", arg(&data))],
    );
    assert_status(&cnnc(&["eval", arg(&spec), "--weights", arg(&recorded)]), 0);
}

/// A `.npy` file of little-endian float32 `values` with `shape`.
fn npy_f32(path: &Path, shape: &str, values: &[f32]) {
    let mut text = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).expect("npy written");
}

#[test]
fn run_refuses_inputs_holding_nan_or_infinity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 4);
    let input = dir.path().join("x.npy");
    let mut values = vec![0.5f32; 16];
    values[5] = f32::INFINITY;
    npy_f32(&input, "(1, 1, 4, 4)", &values);
    let out = dir.path().join("y.npy");
    let output = cnnc(&[
        "run",
        arg(&spec),
        "--input",
        arg(&input),
        "--output",
        arg(&out),
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("value inf at index [0, 0, 1, 1] is not a finite number"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

#[test]
fn training_refuses_folder_images_larger_than_the_input_before_decoding_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 8);
    // A 1x1 grey PNG whose header claims 20000x20000 (400 MB decoded), padded so that its size
    // could hold that: 16 copies took 12 GB and 39 s to refuse when each was decoded first.
    let mut png = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png.resize(400_000, 0);
    let root = dir.path().join("images");
    for split in ["train", "test"] {
        let class = root.join(split).join("bomb");
        std::fs::create_dir_all(&class).expect("dir");
        for i in 0..16 {
            std::fs::write(class.join(format!("{i:02}.png")), &png).expect("png written");
        }
    }
    let started = Instant::now();
    let output = cnnc(&[
        "train",
        arg(&spec),
        "--dataset",
        "folder",
        "--data",
        arg(&root),
        "--out",
        arg(&dir.path().join("run")),
    ]);
    assert_status(&output, 1);
    let first = root.join("train/bomb/00.png");
    assert!(
        stderr(&output).contains(&format!(
            "{}: image is 20000x20000 (width x height) but the model input is 1x8x8",
            first.display()
        )),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
