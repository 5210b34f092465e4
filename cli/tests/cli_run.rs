//! End-to-end tests of `cnnc run`: PyTorch parity of the seed model's logits through the CLI,
//! the seeded default initialisation, training mode, and refusals of inputs and weights that do
//! not fit (nothing is written then).

mod support;

use std::path::Path;

use cnnc::runtime::npy;
use cnnc::runtime::weights::{TensorData, read_tensors};
use ndarray::{ArrayD, IxDyn};
use support::*;

const FIXTURE: &str = "tests/fixtures/custom_cnn.safetensors";
const STATE_DICT: &str = "tests/fixtures/custom_cnn_state_dict.safetensors";

fn fixture_tensor(name: &str) -> ArrayD<f32> {
    let file = read_tensors(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join(FIXTURE)
            .as_path(),
    )
    .expect("fixture loads");
    match file.tensors.get(name) {
        Some(TensorData::F32(t)) => t.clone(),
        other => panic!("fixture tensor {name}: {other:?}"),
    }
}

fn random_input(dir: &Path, shape: &[usize], seed: u64) -> std::path::PathBuf {
    let mut rng = Lcg::new(seed);
    let values = (0..shape.iter().product())
        .map(|_| f32::from(rng.byte()) / 64.0 - 2.0)
        .collect();
    let path = dir.join(format!("x{seed}.npy"));
    let array = ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape");
    npy::write_f32(&path, array.view()).expect("npy written");
    path
}

#[test]
fn pytorch_weights_give_pytorch_logits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.npy");
    npy::write_f32(&input, fixture_tensor("input").view()).expect("npy written");
    let output = dir.path().join("logits.npy");
    let run = cnnc(&[
        "run",
        "models/custom_cnn.yaml",
        "--weights",
        STATE_DICT,
        "--input",
        arg(&input),
        "--output",
        arg(&output),
    ]);
    assert_status(&run, 0);
    let logits = npy::read_f32(&output).expect("logits written");
    let expected = fixture_tensor("logits");
    assert_eq!(logits.shape(), expected.shape());
    let worst = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "largest difference {worst}");
}

#[test]
fn default_init_is_seeded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 8);
    let input = random_input(dir.path(), &[3, 1, 8, 8], 1);
    let run = |seed: &str, name: &str| {
        let output = dir.path().join(name);
        let run = cnnc(&[
            "run",
            arg(&spec),
            "--input",
            arg(&input),
            "--output",
            arg(&output),
            "--seed",
            seed,
        ]);
        assert_status(&run, 0);
        npy::read_f32(&output).expect("logits")
    };
    let (a, b, c) = (run("7", "a.npy"), run("7", "b.npy"), run("8", "c.npy"));
    assert_eq!(a.shape(), &[3, 10]);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn train_mode_uses_dropout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "dropout.cnn",
        "input (1, 4, 4)\nflatten\ndropout(p=0.5)\nlinear(out_features=3)\n",
    );
    let input = random_input(dir.path(), &[2, 1, 4, 4], 2);
    let run = |extra: &[&str], name: &str| {
        let output = dir.path().join(name);
        let mut args = vec![
            "run",
            arg(&spec),
            "--input",
            arg(&input),
            "--output",
            arg(&output),
        ];
        args.extend_from_slice(extra);
        assert_status(&cnnc(&args), 0);
        npy::read_f32(&output).expect("logits")
    };
    let eval = run(&[], "eval.npy");
    assert_eq!(eval, run(&[], "eval2.npy"));
    assert_ne!(eval, run(&["--train"], "train.npy"));
}

#[test]
fn inputs_and_weights_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 8);
    let output = dir.path().join("y.npy");
    let run = |input: &Path, weights: Option<&Path>| {
        let mut args = vec![
            "run",
            arg(&spec),
            "--input",
            arg(input),
            "--output",
            arg(&output),
        ];
        if let Some(weights) = weights {
            args.extend(["--weights", arg(weights)]);
        }
        cnnc(&args)
    };

    let wrong = random_input(dir.path(), &[2, 3, 8, 8], 3);
    let refused = run(&wrong, None);
    assert_status(&refused, 1);
    assert!(
        stderr(&refused).contains("holds an array of shape [2, 3, 8, 8]")
            && stderr(&refused).contains("takes [N, 1, 8, 8]"),
        "{}",
        stderr(&refused)
    );

    let input = random_input(dir.path(), &[2, 1, 8, 8], 4);
    let refused = run(&input, Some(Path::new(STATE_DICT)));
    assert_status(&refused, 1);
    let message = stderr(&refused);
    assert!(
        message.contains("do not fit the spec")
            && message.contains("unexpected tensor `fc1.weight`"),
        "{message}"
    );

    let truncated = dir.path().join("truncated.safetensors");
    let full =
        std::fs::read(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(STATE_DICT))
            .expect("fixture");
    std::fs::write(&truncated, &full[..full.len() / 2]).expect("written");
    let refused = run(&input, Some(&truncated));
    assert_status(&refused, 1);
    assert!(
        stderr(&refused).contains("truncated.safetensors"),
        "{}",
        stderr(&refused)
    );

    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"not an array").expect("written");
    let refused = run(&garbage, None);
    assert_status(&refused, 1);
    assert!(stderr(&refused).contains("garbage.npy"));

    let missing = run(&dir.path().join("missing.npy"), None);
    assert_status(&missing, 2);
    assert!(!output.exists(), "nothing is written on failure");
}

const GRADS_CASE: &str = "tests/fixtures/grads/bn_cnn";

/// A named tensor of a fixture file, as f32 (int64 labels converted).
fn tensor(file: &str, name: &str) -> ArrayD<f32> {
    let file = read_tensors(&Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(file))
        .expect("fixture");
    match file.tensors.get(name) {
        Some(TensorData::F32(t)) => t.clone(),
        Some(TensorData::I64(t)) => t.mapv(|v| v as f32),
        other => panic!("fixture tensor {name}: {other:?}"),
    }
}

/// `values` as a version 1.0 `.npy` file of little-endian int64, as `np.save` writes
/// `torch.randint(...).numpy()`.
fn write_i64_npy(path: &Path, values: &[i64]) {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("labels written");
}

/// Every tensor of `expected` (`prefix.<name>`) matches `actual`'s `<name>` within 1e-4
/// relative (plus 1e-5 of the tensor's largest entry: near-zero gradients are sums of cancelling
/// terms; plus 1e-6 absolute: a bias before batch norm in training mode has a gradient of exactly
/// zero, which both sides get only up to rounding), and `actual` holds no other tensor.
fn assert_grads_match(actual: &Path, fixture: &str, prefix: &str) {
    let got = read_tensors(actual).expect("gradients written");
    let want = read_tensors(&Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(fixture))
        .expect("fixture");
    let expected: Vec<&String> = want
        .tensors
        .keys()
        .filter(|k| k.starts_with(prefix))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        got.tensors.len(),
        expected.len(),
        "one gradient per parameter"
    );
    for key in expected {
        let name = &key[prefix.len()..];
        let (Some(TensorData::F32(g)), Some(TensorData::F32(w))) =
            (got.tensors.get(name), want.tensors.get(key))
        else {
            panic!("gradient {name}: missing or not f32");
        };
        assert_eq!(g.shape(), w.shape(), "{name}");
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-6 + 1e-5 * scale + 1e-4 * b.abs(),
                "{name}: {a} against PyTorch's {b}"
            );
        }
    }
}

#[test]
fn gradients_match_pytorch_in_train_and_eval_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = format!("{GRADS_CASE}.safetensors");
    let input = dir.path().join("x.npy");
    npy::write_f32(&input, tensor(&fixture, "input").view()).expect("npy written");
    let labels = dir.path().join("t.npy");
    let values: Vec<i64> = tensor(&fixture, "labels")
        .iter()
        .map(|&v| v as i64)
        .collect();
    write_i64_npy(&labels, &values);
    let state = format!("{GRADS_CASE}_state_dict.safetensors");
    let spec = format!("{GRADS_CASE}.cnn");
    for mode in ["train", "eval"] {
        let grads = dir.path().join(format!("{mode}.safetensors"));
        let logits = dir.path().join(format!("{mode}.npy"));
        let mut args = vec![
            "run",
            &spec,
            "--weights",
            &state,
            "--input",
            arg(&input),
            "--labels",
            arg(&labels),
            "--grads",
            arg(&grads),
            "--output",
            arg(&logits),
        ];
        if mode == "train" {
            args.push("--train");
        }
        let run = cnnc(&args);
        assert_status(&run, 0);
        assert_grads_match(&grads, &fixture, &format!("{mode}.grad."));
        let want = tensor(&fixture, &format!("{mode}.logits"));
        let got = npy::read_f32(&logits).expect("logits written");
        assert_eq!(got.shape(), want.shape());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5, "{mode} logits: {a} against {b}");
        }
        let loss: f32 = stdout(&run)
            .strip_prefix("loss ")
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("loss printed: {}", stdout(&run)));
        let want = tensor(&fixture, &format!("{mode}.loss"))[[]];
        assert!(
            (loss - want).abs() <= 1e-5,
            "{mode} loss {loss} against {want}"
        );
    }
    // The two modes differ: batch norm on batch statistics against running statistics.
    assert_ne!(
        std::fs::read(dir.path().join("train.safetensors")).expect("written"),
        std::fs::read(dir.path().join("eval.safetensors")).expect("written")
    );
}

#[test]
fn seed_model_gradients_match_pytorch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("x.npy");
    npy::write_f32(&input, fixture_tensor("input").view()).expect("npy written");
    let labels = dir.path().join("t.npy");
    npy::write_f32(&labels, tensor(FIXTURE, "labels").view()).expect("npy written");
    let grads = dir.path().join("g.safetensors");
    let run = cnnc(&[
        "run",
        "models/custom_cnn.yaml",
        "--weights",
        STATE_DICT,
        "--input",
        arg(&input),
        "--labels",
        arg(&labels),
        "--grads",
        arg(&grads),
        "--train",
    ]);
    assert_status(&run, 0);
    assert_grads_match(&grads, FIXTURE, "grad.");
}

#[test]
fn labels_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 8);
    let input = random_input(dir.path(), &[3, 1, 8, 8], 5);
    let grads = dir.path().join("g.safetensors");
    let run = |labels: &Path| {
        cnnc(&[
            "run",
            arg(&spec),
            "--input",
            arg(&input),
            "--labels",
            arg(labels),
            "--grads",
            arg(&grads),
            "--train",
        ])
    };
    let cases: [(&str, &[i64], &str); 3] = [
        (
            "count.npy",
            &[1, 2],
            "holds an array of shape [2]; the 3 samples",
        ),
        (
            "range.npy",
            &[1, 10, 2],
            "label 10 at index 1 is not a class index",
        ),
        ("negative.npy", &[0, 1, -1], "label -1 at index 2"),
    ];
    for (name, values, message) in cases {
        let labels = dir.path().join(name);
        write_i64_npy(&labels, values);
        let refused = run(&labels);
        assert_status(&refused, 1);
        let err = stderr(&refused);
        assert!(err.contains(message) && err.contains(name), "{err}");
    }
    let fractional = dir.path().join("fraction.npy");
    let values = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.0, 0.5, 1.0]).expect("shape");
    npy::write_f32(&fractional, values.view()).expect("npy written");
    let refused = run(&fractional);
    assert_status(&refused, 1);
    assert!(stderr(&refused).contains("label 0.5 at index 1"));
    let complex = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("tests/fixtures/npy/complex64.npy");
    let refused = run(&complex);
    assert_status(&refused, 1);
    assert!(stderr(&refused).contains("complex64.npy"));
    assert!(!grads.exists(), "nothing is written on failure");

    // --grads and --labels go together; --output is needed without --grads.
    let usage = cnnc(&[
        "run",
        arg(&spec),
        "--input",
        arg(&input),
        "--grads",
        arg(&grads),
    ]);
    assert_status(&usage, 2);
    assert!(stderr(&usage).contains("--labels"), "{}", stderr(&usage));
    let usage = cnnc(&["run", arg(&spec), "--input", arg(&input)]);
    assert_status(&usage, 2);
    assert!(stderr(&usage).contains("--output"), "{}", stderr(&usage));
}

#[test]
fn graph_gradients_match_pytorch() {
    // SmallGraph (tools/make_fixtures.py): shortcut adds, a concat, a squeeze-and-excitation mul,
    // its parameters under composed names (`down.downsample.0.weight`).
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = "tests/fixtures/graph.safetensors";
    let input = dir.path().join("x.npy");
    npy::write_f32(&input, tensor(fixture, "input").view()).expect("npy written");
    let labels = dir.path().join("t.npy");
    let values: Vec<i64> = tensor(fixture, "labels")
        .iter()
        .map(|&v| v as i64)
        .collect();
    write_i64_npy(&labels, &values);
    let grads = dir.path().join("g.safetensors");
    let logits = dir.path().join("y.npy");
    let run = cnnc(&[
        "run",
        "tests/fixtures/grads/small_graph.cnn",
        "--weights",
        "tests/fixtures/graph_state_dict.safetensors",
        "--input",
        arg(&input),
        "--labels",
        arg(&labels),
        "--grads",
        arg(&grads),
        "--output",
        arg(&logits),
        "--train",
    ]);
    assert_status(&run, 0);
    assert_grads_match(&grads, fixture, "grad.");
    let want = tensor(fixture, "logits");
    let got = npy::read_f32(&logits).expect("logits written");
    assert_eq!(got.shape(), want.shape());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5, "train logits: {a} against {b}");
    }
}
