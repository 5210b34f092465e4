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
        Path::new(env!("CARGO_MANIFEST_DIR"))
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
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(STATE_DICT)).expect("fixture");
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
