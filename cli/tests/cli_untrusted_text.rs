//! Text from a weights file reaches the terminal shown, not obeyed: escape sequences in tensor
//! names (`run`'s errors) and in `cnnc.classes` (`predict`'s and `eval`'s tables) are printed as
//! visible characters, never as the raw bytes a terminal would act on.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnnc_runtime::weights::{TensorData, write_tensors};
use ndarray::{ArrayD, IxDyn};
use support::*;

/// An escape that retitles the terminal window, one that clears the screen, and a C1 control
/// that starts a sequence on terminals that honour C1 codes.
const TITLE: &str = "\x1b]0;owned\x07";
const CLEAR: &str = "\x1b[2J";
const C1: &str = "\u{9b}31m";

/// Zero weights for [`tiny_spec`] over `[1, 4, 4]` inputs, plus `extra` tensors, with `metadata`.
fn weights(dir: &Path, extra: &[&str], metadata: BTreeMap<String, String>) -> PathBuf {
    let zeros = |shape: &[usize]| TensorData::F32(ArrayD::zeros(IxDyn(shape)));
    let mut tensors = vec![
        ("0.weight".to_owned(), zeros(&[4, 1, 3, 3])),
        ("0.bias".to_owned(), zeros(&[4])),
        ("4.weight".to_owned(), zeros(&[10, 16])),
        ("4.bias".to_owned(), zeros(&[10])),
    ];
    tensors.extend(extra.iter().map(|name| ((*name).to_owned(), zeros(&[1]))));
    let path = dir.join("w.safetensors");
    write_tensors(&path, &tensors, &metadata).expect("weights written");
    path
}

/// Asserts that `text` holds no escape character, raw C1 control or bell.
fn assert_inert(text: &str) {
    for bad in ['\x1b', '\x07', '\u{9b}'] {
        assert!(!text.contains(bad), "raw {bad:?} in:\n{text}");
    }
}

#[test]
fn tensor_names_in_errors_are_shown_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 4);
    let name = format!("evil{TITLE}{C1}");
    let w = weights(dir.path(), &[&name], BTreeMap::new());
    let input = dir.path().join("x.npy");
    let x = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 4, 4]));
    cnnc_runtime::npy::write_f32(&input, x.view()).expect("input");
    let out = dir.path().join("y.npy");
    let output = cnnc(&[
        "run",
        arg(&spec),
        "--weights",
        arg(&w),
        "--input",
        arg(&input),
        "--output",
        arg(&out),
    ]);
    assert_status(&output, 1);
    let text = stderr(&output);
    assert_inert(&text);
    assert!(
        text.contains("unexpected tensor `evil␛]0;owned␇\\u{9b}31m` (F32 [1])"),
        "{text}"
    );
}

#[test]
fn class_names_from_metadata_are_shown_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 4);
    let mut classes: Vec<String> = (0..10).map(|k| format!("class{k}")).collect();
    classes[0] = format!("cat{CLEAR}");
    classes[1] = format!("dog{TITLE}");
    let metadata = BTreeMap::from([(
        "cnnc.classes".to_owned(),
        serde_json::to_string(&classes).expect("JSON"),
    )]);
    let w = weights(dir.path(), &[], metadata);
    let image = dir.path().join("grey.png");
    image::GrayImage::from_pixel(4, 4, image::Luma([90]))
        .save(&image)
        .expect("png");
    let output = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&w),
        arg(&image),
        "--top-k",
        "2",
    ]);
    assert_status(&output, 0);
    let text = stdout(&output);
    assert_inert(&text);
    // Zero weights tie every class: the lowest indices come first.
    assert!(text.contains("  1. cat␛[2J"), "{text}");
    assert!(text.contains("  2. dog␛]0;owned␇"), "{text}");
    // JSON keeps the names as they are, escaped the JSON way.
    let json = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&w),
        arg(&image),
        "--format",
        "json",
    ]);
    assert_status(&json, 0);
    assert_inert(&stdout(&json));
    let results: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("JSON");
    assert_eq!(results[0]["top"][0]["class"], classes[0]);
}
