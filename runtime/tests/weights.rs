//! Weights I/O: round trips, PyTorch-saved files, and every way a file can be wrong (each bad
//! file is built here).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use cnnc_runtime::fsio::write_atomic;
use cnnc_runtime::param::{Entry, Param, Visit};
use cnnc_runtime::weights::{
    LoadProblem, SaveError, TensorData, load, read_tensors, save, state_dict, write_tensors,
};
use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// A model with every kind of entry: parameters, float buffers and a counter, like a conv layer
/// followed by a batchnorm.
#[derive(Clone, Debug)]
struct Model {
    params: Vec<(String, Param)>,
    buffers: Vec<(String, ArrayD<f32>)>,
    counters: Vec<(String, i64)>,
}

impl Visit for Model {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        for (name, param) in &mut self.params {
            f(Entry::Param { name, param });
        }
        for (name, value) in &mut self.buffers {
            f(Entry::Buffer { name, value });
        }
        for (name, value) in &mut self.counters {
            f(Entry::Counter { name, value });
        }
    }
}

fn ramp(shape: &[usize], start: f32) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let values = (0..n).map(|i| start + i as f32 * 0.25).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("ramp fits its shape")
}

fn param(shape: &[usize], start: f32) -> Param {
    Param::new(ramp(shape, start))
}

fn small_model(start: f32) -> Model {
    Model {
        params: vec![
            ("0.weight".into(), param(&[2, 3, 3, 3], start)),
            ("0.bias".into(), param(&[2], start + 1.0)),
            ("1.weight".into(), param(&[2], start + 2.0)),
        ],
        buffers: vec![("1.running_mean".into(), ramp(&[2], start + 3.0))],
        counters: vec![("1.num_batches_tracked".into(), start as i64 + 7)],
    }
}

/// The CustomCNN's entries with PyTorch's names and shapes, all zero.
fn custom_cnn() -> Model {
    let shapes: [(&str, &[usize]); 10] = [
        ("layer1.0.weight", &[32, 3, 5, 5]),
        ("layer1.0.bias", &[32]),
        ("layer2.0.weight", &[32, 32, 5, 5]),
        ("layer2.0.bias", &[32]),
        ("layer3.0.weight", &[64, 32, 5, 5]),
        ("layer3.0.bias", &[64]),
        ("fc1.weight", &[64, 1024]),
        ("fc1.bias", &[64]),
        ("fc2.weight", &[10, 64]),
        ("fc2.bias", &[10]),
    ];
    let params = shapes
        .iter()
        .map(|(n, s)| (n.to_string(), param(s, 0.0)))
        .collect();
    Model {
        params,
        buffers: vec![],
        counters: vec![],
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Everything the model holds, comparable.
fn contents(model: &Model) -> Vec<(String, TensorData)> {
    state_dict(&mut model.clone())
}

fn problems(model: &mut Model, path: &Path) -> Vec<LoadProblem> {
    let before = contents(model);
    let error = load(model, path).expect_err("the file is bad");
    assert_eq!(error.path, path);
    assert_eq!(
        contents(model),
        before,
        "a failed load must leave the model untouched"
    );
    error.problems
}

/// Writes raw safetensors bytes with the reference implementation (which, unlike cnnc, writes
/// non-finite values and any dtype).
fn write_raw(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                *n,
                TensorView::new(*d, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).expect("serialize");
    fs::write(path, bytes).expect("write test file");
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn round_trip_restores_every_parameter_buffer_and_counter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.safetensors");
    let mut original = small_model(1.0);
    let metadata = BTreeMap::from([("spec".to_owned(), "tiny".to_owned())]);
    save(&mut original, &path, &metadata).expect("save");
    let mut other = small_model(-5.0);
    let read_back = load(&mut other, &path).expect("load");
    assert_eq!(contents(&other), contents(&original));
    assert_eq!(read_back, metadata);
    // Nothing but the file itself is left in the directory (no temporary files).
    assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 1);
}

#[test]
fn saved_files_are_valid_safetensors_in_pytorch_layout_and_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let metadata = BTreeMap::from([
        ("b".to_owned(), "2".to_owned()),
        ("a".to_owned(), "\"1\"".to_owned()),
    ]);
    save(&mut small_model(0.0), &a, &metadata).expect("save");
    save(&mut small_model(0.0), &b, &metadata).expect("save");
    let bytes = fs::read(&a).expect("read");
    assert_eq!(bytes, fs::read(&b).expect("read"), "same model, same bytes");
    let file =
        safetensors::SafeTensors::deserialize(&bytes).expect("the reference reader accepts it");
    let counter = file.tensor("1.num_batches_tracked").expect("counter saved");
    assert_eq!((counter.dtype(), counter.shape()), (Dtype::I64, &[][..]));
    assert_eq!(counter.data(), 7i64.to_le_bytes());
    let weight = file.tensor("0.weight").expect("weight saved");
    assert_eq!(
        (weight.dtype(), weight.shape()),
        (Dtype::F32, &[2, 3, 3, 3][..])
    );
    assert_eq!(weight.data()[4..8], 0.25f32.to_le_bytes());
    // The same form as PyTorch's own BatchNorm2d counter in the layer fixtures.
    let torch =
        read_tensors(&fixtures().join("layers/batch_norm2d_train.safetensors")).expect("fixture");
    let torch_counter = &torch.tensors["param.num_batches_tracked"];
    assert_eq!(
        (torch_counter.dtype(), torch_counter.shape()),
        ("I64", &[][..])
    );
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let stored = header.metadata().clone().expect("metadata present");
    assert_eq!(stored.get("a").map(String::as_str), Some("\"1\""));
}

#[test]
fn pytorch_saved_state_dict_loads_and_matches_the_fixture() {
    let mut model = custom_cnn();
    let metadata = load(
        &mut model,
        &fixtures().join("custom_cnn_state_dict.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        metadata.is_empty(),
        "save_file(model.state_dict()) writes no metadata"
    );
    let reference = read_tensors(&fixtures().join("custom_cnn.safetensors")).expect("fixture");
    let total: usize = model.params.iter().map(|(_, p)| p.value.len()).sum();
    assert_eq!(total, 145_578);
    for (name, param) in &model.params {
        let Some(TensorData::F32(expected)) = reference.tensors.get(&format!("state.{name}"))
        else {
            panic!("fixture lacks state.{name}");
        };
        assert_eq!(&param.value, expected, "{name}");
    }
}

#[test]
fn every_problem_is_reported_together_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.safetensors");
    let mut nan_bias = vec![1.0f32, 2.0];
    nan_bias[1] = f32::NAN;
    write_raw(
        &path,
        &[
            // 0.weight missing; 0.bias holds a NaN; 1.weight has the wrong shape;
            ("0.bias", Dtype::F32, vec![2], f32_bytes(&nan_bias)),
            ("1.weight", Dtype::F32, vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
            // 1.running_mean is f64; the counter is f32 with a shape; one name is unknown.
            ("1.running_mean", Dtype::F64, vec![2], vec![0; 16]),
            (
                "1.num_batches_tracked",
                Dtype::F32,
                vec![1],
                f32_bytes(&[3.0]),
            ),
            (
                "1.running_var",
                Dtype::F32,
                vec![2],
                f32_bytes(&[1.0, f32::INFINITY]),
            ),
        ],
    );
    let mut model = small_model(0.0);
    let found = problems(&mut model, &path);
    let expected = vec![
        LoadProblem::Missing {
            name: "0.weight".into(),
            dtype: "F32",
            shape: vec![2, 3, 3, 3],
        },
        LoadProblem::NonFinite {
            name: "0.bias".into(),
            count: 1,
            value: f32::NAN,
            index: vec![1],
        },
        LoadProblem::Shape {
            name: "1.weight".into(),
            expected: vec![2],
            found: vec![3],
        },
        LoadProblem::Dtype {
            name: "1.running_mean".into(),
            expected: "F32",
            found: "F64".into(),
        },
        LoadProblem::Dtype {
            name: "1.num_batches_tracked".into(),
            expected: "I64",
            found: "F32".into(),
        },
        LoadProblem::Unexpected {
            name: "1.running_var".into(),
            dtype: "F32".into(),
            shape: vec![2],
        },
    ];
    // NaN != NaN, so compare the rendered problems.
    let render = |ps: &[LoadProblem]| ps.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(render(&found), render(&expected));
    let message = load(&mut model, &path).expect_err("bad").to_string();
    assert!(message.starts_with(&format!("cannot load `{}`: 6 problems", path.display())));
    assert!(
        message.contains("\n  - missing tensor `0.weight` (the model expects F32 [2, 3, 3, 3])")
    );
    assert!(message.contains("tensor `1.weight` has shape [3], the model expects [2]"));
}

#[test]
fn a_counter_saved_with_a_shape_is_a_shape_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("counter.safetensors");
    let mut tensors = state_dict(&mut small_model(0.0));
    tensors.retain(|(n, _)| n != "1.num_batches_tracked");
    tensors.push((
        "1.num_batches_tracked".into(),
        TensorData::I64(ArrayD::zeros(IxDyn(&[1]))),
    ));
    write_tensors(&path, &tensors, &BTreeMap::new()).expect("write");
    let found = problems(&mut small_model(0.0), &path);
    assert_eq!(
        found,
        [LoadProblem::Shape {
            name: "1.num_batches_tracked".into(),
            expected: vec![],
            found: vec![1]
        }]
    );
}

#[test]
fn truncated_and_corrupt_files_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.safetensors");
    save(&mut small_model(0.0), &good, &BTreeMap::new()).expect("save");
    let bytes = fs::read(&good).expect("read");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let bad = dir.path().join("bad.safetensors");
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "too short for the 8-byte header length"),
        (bytes[..5].to_vec(), "too short"),
        (bytes[..8 + header_len / 2].to_vec(), "truncated file?"),
        (
            bytes[..bytes.len() - 3].to_vec(),
            "bytes of tensor data but",
        ),
        (
            [&bytes[..], &[0u8; 4][..]].concat(),
            "bytes of tensor data but",
        ),
        (
            b"not a safetensors file at all".to_vec(),
            "more than the 100 MB limit",
        ),
    ];
    // A header length that points past the end of the file.
    let mut past_end = bytes.clone();
    past_end[..8].copy_from_slice(&(bytes.len() as u64 * 2).to_le_bytes());
    cases.push((past_end, "only"));
    // A header that is not JSON.
    let mut garbage = bytes.clone();
    garbage[8] = b'[';
    cases.push((garbage, "JSON"));
    // Offsets that overlap.
    let text = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let overlapping = [
        &(text.len() as u64).to_le_bytes()[..],
        text.as_bytes(),
        &[0; 8],
    ]
    .concat();
    cases.push((overlapping, "offsets"));
    for (content, needle) in cases {
        fs::write(&bad, &content).expect("write test file");
        let found = problems(&mut small_model(0.0), &bad);
        let [LoadProblem::Corrupt(reason)] = found.as_slice() else {
            panic!("expected one corruption problem, got {found:?}");
        };
        assert!(
            reason.contains(needle),
            "{reason:?} should mention {needle:?}"
        );
    }
    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(
        problems(&mut small_model(0.0), &missing).as_slice(),
        [LoadProblem::Io(_)]
    ));
}

#[test]
fn non_finite_weights_are_not_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nan.safetensors");
    let mut model = small_model(0.0);
    model.params[1].1.value[[0]] = f32::NAN;
    let error = save(&mut model, &path, &BTreeMap::new()).expect_err("NaN weights");
    assert!(matches!(&error, SaveError::NonFinite { names, .. } if names == &["0.bias"]));
    assert!(!path.exists());
}

#[test]
fn atomic_writes_replace_whole_files_and_report_bad_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.bin");
    write_atomic(&path, b"first version, longer").expect("write");
    write_atomic(&path, b"second").expect("overwrite");
    assert_eq!(fs::read(&path).expect("read"), b"second");
    assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 1);
    assert!(write_atomic(&dir.path().join("no/such/dir/out.bin"), b"x").is_err());
    let error = save(
        &mut small_model(0.0),
        &dir.path().join("no/such.safetensors"),
        &BTreeMap::new(),
    )
    .expect_err("missing directory");
    assert!(error.to_string().starts_with("cannot write `"));
}

#[test]
fn duplicate_model_entries_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.safetensors");
    save(&mut small_model(0.0), &path, &BTreeMap::new()).expect("save");
    let mut model = small_model(0.0);
    model.buffers[0].0 = "0.bias".into();
    let found = problems(&mut model, &path);
    assert!(
        found.contains(&LoadProblem::DuplicateEntry {
            name: "0.bias".into()
        }),
        "{found:?}"
    );
}
