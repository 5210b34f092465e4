//! PyTorch parity of the graph specs shipped in `models/`: torchvision's `resnet18`,
//! `mobilenet_v2`, `squeezenet1_1` and `densenet121` (all `num_classes=10`), He et al.'s CIFAR
//! ResNet-20 (`tools/resnet20_cifar.py`) and the squeeze-and-excitation and U-Net examples
//! (`tools/graph_examples.py`), against the fixtures `tools/make_graph_fixtures.py` wrote under
//! `tests/fixtures/graph/` (torch 2.15.0, torchvision 0.29.2; the script's docstring lists what each
//! file holds). For every model: the YAML spec and its DSL twin check without a warning and give
//! the same network; its state_dict has exactly PyTorch's names, shapes and dtypes and its
//! parameter count PyTorch's; it loads PyTorch's weights (the file `save_file(model.state_dict())`
//! wrote, or, for the models too big to ship, the same formula PyTorch filled them with, written
//! here through the safetensors writer and read back through the loader users call); its eval
//! logits match PyTorch's to 1e-5, and one training step (BatchNorm on batch statistics) gives
//! PyTorch's loss, logits, every parameter gradient to 1e-4 and BatchNorm's running statistics,
//! each also within ten times what rounding alone moves it (see [`ROUNDING`]).
//! Through the CLI, `cnnc run` with PyTorch's saved state_dict gives its logits, `cnnc run
//! --train --grads` writes its gradients, and `cnnc train models/resnet20_cifar.yaml`, as the
//! README shows it, runs.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnnc::runtime::config::{LayerConfig, NetworkDef};
use cnnc::runtime::weights::{self, TensorData, TensorFile};
use cnnc::runtime::{Entry, Mode, Network, Visit};
use cnnc::spec::{Format, Source};
use ndarray::{Array4, ArrayD, IxDyn};

/// `tests/fixtures/graph/<name>`.
fn fixture_path(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("tests/fixtures/graph")
        .join(name)
}

/// A model's fixture: its tensors and metadata.
struct Fixture {
    name: &'static str,
    file: TensorFile,
}

impl Fixture {
    fn load(name: &'static str) -> Fixture {
        let path = fixture_path(&format!("{name}.safetensors"));
        let file = weights::read_tensors(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; run tools/make_graph_fixtures.py", path.display())
        });
        Fixture { name, file }
    }

    fn meta(&self, key: &str) -> &str {
        self.file
            .metadata
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata `{key}`", self.name))
    }

    fn tensor(&self, key: &str) -> &TensorData {
        self.file
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor `{key}`", self.name))
    }

    fn f32(&self, key: &str) -> &ArrayD<f32> {
        match self.tensor(key) {
            TensorData::F32(a) => a,
            other => panic!("{}: `{key}` is {}", self.name, other.dtype()),
        }
    }

    fn f64(&self, key: &str) -> &ArrayD<f64> {
        match self.tensor(key) {
            TensorData::F64(a) => a,
            other => panic!("{}: `{key}` is {}", self.name, other.dtype()),
        }
    }

    fn i64(&self, key: &str) -> &ArrayD<i64> {
        match self.tensor(key) {
            TensorData::I64(a) => a,
            other => panic!("{}: `{key}` is {}", self.name, other.dtype()),
        }
    }

    /// PyTorch's state_dict: `(key, dtype, shape)` in its order.
    fn state_dict(&self) -> Vec<(String, String, Vec<usize>)> {
        serde_json::from_str(self.meta("state_dict")).expect("state_dict metadata is JSON")
    }

    fn input(&self) -> Array4<f32> {
        let x = self.f32("input");
        let s = x.shape();
        Array4::from_shape_vec((s[0], s[1], s[2], s[3]), x.iter().copied().collect())
            .expect("input is NCHW")
    }

    fn labels(&self) -> Vec<usize> {
        self.i64("labels")
            .iter()
            .map(|&l| usize::try_from(l).expect("a class index"))
            .collect()
    }
}

/// Checks `models/<name>.yaml` and `models/<name>.cnn`: both compile without a diagnostic and
/// describe the same network. Returns that network and its `total_params`.
fn spec_def(name: &str) -> (NetworkDef, u64) {
    let mut defs = Vec::new();
    let mut params = 0;
    for ext in ["yaml", "cnn"] {
        let file = format!("models/{name}.{ext}");
        let text = std::fs::read_to_string(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(&file),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let format = Format::from_path(Path::new(&file)).expect("a spec extension");
        let source = Source::new(file.clone(), text, format);
        let render = |diagnostics: &[cnnc::spec::Diagnostic]| {
            diagnostics
                .iter()
                .map(|d| cnnc::spec::render(d, &source, false))
                .collect::<String>()
        };
        let (checked, warnings) = cnnc::spec::compile(&source)
            .unwrap_or_else(|errors| panic!("{file} does not check:\n{}", render(&errors)));
        assert!(warnings.is_empty(), "{file}:\n{}", render(&warnings));
        defs.push(checked.def());
        params = checked.total_params();
    }
    assert_eq!(defs[0], defs[1], "models/{name}.yaml and .cnn differ");
    (defs.swap_remove(0), params)
}

/// The network of `def` with every dropout's `p` set to 0, as the fixture's training step ran
/// (PyTorch's masks and cnnc's come from different generators).
fn without_dropout(mut def: NetworkDef) -> NetworkDef {
    for layer in &mut def.layers {
        if let LayerConfig::Dropout { p } | LayerConfig::Dropout2d { p } = &mut layer.config {
            *p = 0.0;
        }
    }
    def
}

// The weights formula of `tools/make_graph_fixtures.py` (its docstring is the reference).

/// FNV-1a, 64 bits, of `text`'s UTF-8 bytes.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `u(k)`: SplitMix64's output for state `seed + (k + 1) * golden`, its top 24 bits in [0, 1).
fn unit(seed: u64, k: u64) -> f32 {
    let mut z = seed.wrapping_add((k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u32 << 24) as f32
}

/// The formula's values of state_dict entry `key` of `shape`, row-major; `gain2` scales the
/// weights' bound (`sqrt(gain2 / fan_in)`).
fn formula(key: &str, shape: &[usize], gain2: u32) -> Vec<f32> {
    let n = shape.iter().product::<usize>() as u64;
    let seed = fnv1a(key);
    let symmetric = |k| 2.0 * unit(seed, k) - 1.0;
    if key.ends_with("running_var") || (key.ends_with("weight") && shape.len() == 1) {
        (0..n).map(|k| 0.5 + unit(seed, k)).collect()
    } else if shape.len() == 1 {
        (0..n).map(|k| symmetric(k) * 0.1).collect()
    } else {
        let fan_in = shape.iter().skip(1).product::<usize>() as f32;
        let scale = (gain2 as f32 / fan_in).sqrt();
        (0..n).map(|k| symmetric(k) * scale).collect()
    }
}

/// `sum_k bits(v_k) * (2k + 1) mod 2^64`: the fixture's proof that the values are PyTorch's bits.
fn fill_check(values: &[f32]) -> u64 {
    values.iter().zip(0u64..).fold(0u64, |sum, (v, k)| {
        sum.wrapping_add(u64::from(v.to_bits()).wrapping_mul(2 * k + 1))
    })
}

/// The weights file to load: PyTorch's own for the small models, else the formula's values
/// (checked bit for bit against the fixture) written to `dir` as a user's safetensors file.
fn weights_file(f: &Fixture, dir: &Path) -> PathBuf {
    match f.meta("weights") {
        "pytorch" => fixture_path(&format!("{}_state_dict.safetensors", f.name)),
        "formula" => {
            let checks: BTreeMap<String, String> =
                serde_json::from_str(f.meta("fill_check")).expect("fill_check is JSON");
            let gain2: u32 = f
                .meta("fill_gain2")
                .parse()
                .expect("fill_gain2 is a number");
            let mut tensors = Vec::new();
            for (key, dtype, shape) in f.state_dict() {
                let tensor = match dtype.as_str() {
                    "F32" => {
                        let values = formula(&key, &shape, gain2);
                        assert_eq!(
                            fill_check(&values).to_string(),
                            checks[&key],
                            "{}: the formula's {key} differs from PyTorch's",
                            f.name
                        );
                        TensorData::F32(ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap())
                    }
                    // `num_batches_tracked`, left at PyTorch's 0.
                    "I64" => TensorData::I64(ArrayD::zeros(IxDyn(&shape))),
                    other => panic!("{}: {key} has dtype {other}", f.name),
                };
                tensors.push((key, tensor));
            }
            let path = dir.join(format!("{}.safetensors", f.name));
            weights::write_tensors(&path, &tensors, &BTreeMap::new()).expect("weights written");
            path
        }
        other => panic!("{}: unknown weights kind {other}", f.name),
    }
}

/// Asserts `|got - want| <= abs + rel * |want|` element-wise.
fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs();
        assert!(
            err <= abs + rel * f64::from(w).abs(),
            "{what}[{i}]: {g} vs PyTorch's {w} (error {err:.3e})"
        );
    }
}

/// How many times PyTorch's own f32 rounding error (its distance from the same model in f64) a
/// number may be off, on top of the relative tolerance: cnnc rounds differently, and a number
/// that is badly conditioned (a gradient that is mathematically zero, or one that a ReLU input a
/// rounding away from 0 decides) differs by about that much in any f32 implementation.
const ROUNDING: f64 = 10.0;

/// Compares a tensor with the fixture's summary of PyTorch's (`<prefix>.stats`: f64 sum, sum of
/// magnitudes, L2 norm, then PyTorch's f32 rounding error elementwise, of the sum and of the norm;
/// `<prefix>.index`/`.sample`: elements at fixed places): the sum to `rel` of the sum of
/// magnitudes (it may cancel to nothing), the norm to `rel`, each sampled element to `rel` of
/// itself plus `rel` of the tensor's root mean square, each also to [`ROUNDING`] times PyTorch's
/// rounding error. Returns the largest error as a fraction of its tolerance.
fn assert_matches_summary(f: &Fixture, prefix: &str, got: &[f32], rel: f64) -> f64 {
    let stats = f.f64(&format!("{prefix}.stats"));
    let [sum, abs_sum, l2, noise, noise_sum, noise_l2] =
        <[f64; 6]>::try_from(stats.as_slice().expect("contiguous")).expect("6 stats");
    let got_sum: f64 = got.iter().map(|&v| f64::from(v)).sum();
    let got_l2 = got
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let name = format!("{}: {prefix}", f.name);
    let mut worst = 0.0f64;
    let mut check = |what: &str, got: f64, want: f64, tol: f64| {
        let err = (got - want).abs();
        assert!(
            err <= tol,
            "{name}: {what} {got:e} vs PyTorch's {want:e} (error {err:.3e}, tolerance {tol:.3e})"
        );
        worst = worst.max(err / tol);
    };
    check(
        "sum",
        got_sum,
        sum,
        rel * abs_sum + ROUNDING * noise_sum + 1e-30,
    );
    check(
        "L2 norm",
        got_l2,
        l2,
        rel * l2 + ROUNDING * noise_l2 + 1e-30,
    );
    let rms = l2 / (got.len() as f64).sqrt();
    let index = f.i64(&format!("{prefix}.index"));
    let sample = f.f32(&format!("{prefix}.sample"));
    for (&i, &want) in index.iter().zip(sample) {
        let i = usize::try_from(i).expect("an index");
        let want = f64::from(want);
        let tol = rel * (want.abs() + rms) + ROUNDING * noise + 1e-30;
        check(&format!("[{i}]"), f64::from(got[i]), want, tol);
    }
    worst
}

/// PyTorch's state_dict names, dtypes and shapes against the network's, as sorted lists (a
/// safetensors file has no order), and the parameter count.
fn assert_state_dict(f: &Fixture, net: &mut Network) {
    let mut ours: Vec<(String, String, Vec<usize>)> = weights::state_dict(net)
        .into_iter()
        .map(|(name, t)| (name, t.dtype().to_owned(), t.shape().to_vec()))
        .collect();
    let mut theirs = f.state_dict();
    ours.sort();
    theirs.sort();
    let missing: Vec<_> = theirs.iter().filter(|e| !ours.contains(e)).collect();
    let extra: Vec<_> = ours.iter().filter(|e| !theirs.contains(e)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: PyTorch's state_dict entries the spec lacks: {missing:?}; the spec's PyTorch lacks: {extra:?}",
        f.name
    );
    let params: usize = f.meta("params").parse().expect("a count");
    assert_eq!(net.param_count(), params, "{}: parameter count", f.name);
}

/// Everything the module docs list, for model `name`.
fn matches_pytorch(name: &'static str) {
    let f = Fixture::load(name);
    let (def, total_params) = spec_def(name);
    assert_eq!(
        total_params,
        f.meta("params").parse::<u64>().expect("a count"),
        "{name}: total_params"
    );
    let mut net = Network::new(&without_dropout(def), 0).expect("the network builds");
    assert_state_dict(&f, &mut net);

    let dir = tempfile::tempdir().expect("temp dir");
    weights::load(&mut net, &weights_file(&f, dir.path()))
        .unwrap_or_else(|e| panic!("{name}: PyTorch's weights do not load: {e}"));

    let x = f.input();
    let logits = net.forward(x.view(), Mode::Eval).expect("forward");
    let want: Vec<f32> = f.f32("logits_eval").iter().copied().collect();
    let got: Vec<f32> = logits.iter().copied().collect();
    assert_close(&format!("{name}: eval logits"), &got, &want, 1e-5, 0.0);

    let loss = net.train_step(x.view(), &f.labels()).expect("train step");
    let want: Vec<f32> = f.f32("loss").iter().copied().collect();
    assert_close(&format!("{name}: loss"), &[loss], &want, 1e-5, 1e-5);
    let want: Vec<f32> = f.f32("logits_train").iter().copied().collect();
    let got: Vec<f32> = net.logits().expect("logits").iter().copied().collect();
    let noise = f.f64("logits_train_f32_error").iter().sum::<f64>();
    assert_close(
        &format!("{name}: train logits"),
        &got,
        &want,
        1e-5 + ROUNDING * noise,
        0.0,
    );

    let (mut grads, mut buffers, mut worst) = (0, 0, 0.0f64);
    net.visit(&mut |e| match e {
        Entry::Param { name, param } => {
            let grad: Vec<f32> = param.grad.iter().copied().collect();
            worst = worst.max(assert_matches_summary(
                &f,
                &format!("grad.{name}"),
                &grad,
                1e-4,
            ));
            grads += 1;
        }
        Entry::Buffer { name, value } => {
            let value: Vec<f32> = value.iter().copied().collect();
            worst = worst.max(assert_matches_summary(
                &f,
                &format!("after.{name}"),
                &value,
                1e-5,
            ));
            buffers += 1;
        }
        Entry::Counter { .. } => {}
    });
    println!("{name}: the largest error is {worst:.3} of its tolerance");
    let keys = f.file.tensors.keys();
    let count = |prefix: &str| {
        keys.clone()
            .filter(|k| k.starts_with(prefix) && k.ends_with(".stats"))
            .count()
    };
    assert_eq!(grads, count("grad."), "{name}: gradients compared");
    assert_eq!(buffers, count("after."), "{name}: buffers compared");
}

#[test]
fn resnet20_cifar_matches_pytorch() {
    matches_pytorch("resnet20_cifar");
}

#[test]
fn resnet18_matches_torchvision() {
    matches_pytorch("resnet18");
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    matches_pytorch("mobilenet_v2");
}

#[test]
fn squeezenet1_1_matches_torchvision() {
    matches_pytorch("squeezenet1_1");
}

#[test]
fn densenet121_matches_torchvision() {
    matches_pytorch("densenet121");
}

#[test]
fn se_resnet_matches_pytorch() {
    matches_pytorch("se_resnet");
}

#[test]
fn unet_matches_pytorch() {
    matches_pytorch("unet");
}

/// The parameter counts the specs' comments and the issue quote.
#[test]
fn parameter_counts_are_the_published_ones() {
    for (name, params) in [
        ("resnet20_cifar", 272_474),
        ("resnet18", 11_181_642),
        ("mobilenet_v2", 2_236_682),
        ("squeezenet1_1", 727_626),
        ("densenet121", 6_964_106),
        ("se_resnet", 20_694),
        ("unet", 57_290),
    ] {
        assert_eq!(
            Fixture::load(name).meta("params"),
            params.to_string(),
            "{name}"
        );
        assert_eq!(spec_def(name).1, params, "{name}");
    }
}

/// The formula reproduces itself here as in numpy: a few values computed by hand from the
/// docstring of `tools/make_graph_fixtures.py`.
#[test]
fn the_weights_formula_is_the_documented_one() {
    assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    // SplitMix64 from state 0: its first output is 0xe220a8397b1dcdaf.
    assert_eq!(
        unit(0, 0),
        (0xe220_a839_7b1d_cdafu64 >> 40) as f32 / 16_777_216.0
    );
    for v in formula("bn.running_var", &[64], 1) {
        assert!((0.5..1.5).contains(&v));
    }
    for v in formula("bn.bias", &[64], 1) {
        assert!(v.abs() <= 0.1);
    }
    let bound = (6.0f32 / 27.0).sqrt();
    for v in formula("conv.weight", &[4, 3, 3, 3], 6) {
        assert!(v.abs() <= bound);
    }
    assert_eq!(fill_check(&[1.0, 2.0]), 0x3f80_0000 + 3 * 0x4000_0000);
}

/// The formula reproduces PyTorch's filled state_dicts bit for bit, and the file written from it
/// holds exactly PyTorch's entries.
#[test]
fn formula_weights_are_pytorchs_bit_for_bit() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["resnet18", "mobilenet_v2", "squeezenet1_1", "densenet121"] {
        let f = Fixture::load(name);
        assert_eq!(f.meta("weights"), "formula", "{name}");
        let written = weights::read_tensors(&weights_file(&f, dir.path())).expect("written");
        let mut ours: Vec<(String, String, Vec<usize>)> = written
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dtype().to_owned(), t.shape().to_vec()))
            .collect();
        let mut theirs = f.state_dict();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}");
    }
}

/// `cnnc run` with the state_dict file PyTorch saved gives PyTorch's eval logits: the CLI path
/// users take, for the models whose PyTorch weights are shipped.
#[test]
fn cnnc_run_with_pytorchs_state_dict_gives_its_logits() {
    use support::*;
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["resnet20_cifar", "se_resnet", "unet"] {
        let f = Fixture::load(name);
        let input = dir.path().join(format!("{name}_input.npy"));
        cnnc::runtime::npy::write_f32(&input, f.f32("input").view()).expect("npy written");
        let output = dir.path().join(format!("{name}_logits.npy"));
        let weights = fixture_path(&format!("{name}_state_dict.safetensors"));
        let run = cnnc(&[
            "run",
            &format!("models/{name}.cnn"),
            "--weights",
            arg(&weights),
            "--input",
            arg(&input),
            "--output",
            arg(&output),
        ]);
        assert_status(&run, 0);
        let logits = cnnc::runtime::npy::read_f32(&output).expect("logits written");
        assert_eq!(logits.shape(), f.f32("logits_eval").shape(), "{name}");
        let got: Vec<f32> = logits.iter().copied().collect();
        let want: Vec<f32> = f.f32("logits_eval").iter().copied().collect();
        assert_close(&format!("{name}: cnnc run"), &got, &want, 1e-5, 0.0);
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

/// `cnnc run --train --grads` (how parity is checked from outside) writes PyTorch's gradients
/// under its state_dict names, for a real and a formula-filled state_dict.
#[test]
fn cnnc_run_grads_are_pytorchs() {
    use support::*;
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["resnet20_cifar", "densenet121"] {
        let f = Fixture::load(name);
        let input = dir.path().join(format!("{name}_input.npy"));
        cnnc::runtime::npy::write_f32(&input, f.f32("input").view()).expect("npy written");
        let labels = dir.path().join(format!("{name}_labels.npy"));
        write_i64_npy(&labels, f.i64("labels").as_slice().expect("contiguous"));
        let weights = weights_file(&f, dir.path());
        let grads = dir.path().join(format!("{name}_grads.safetensors"));
        let run = cnnc(&[
            "run",
            &format!("models/{name}.yaml"),
            "--weights",
            arg(&weights),
            "--input",
            arg(&input),
            "--train",
            "--labels",
            arg(&labels),
            "--grads",
            arg(&grads),
        ]);
        assert_status(&run, 0);
        let written = weights::read_tensors(&grads).expect("gradients written");
        let mut expected: Vec<&str> = f
            .file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("grad.")?.strip_suffix(".stats"))
            .collect();
        let mut got: Vec<&str> = written.tensors.keys().map(String::as_str).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "{name}: the gradients --grads names");
        for key in expected {
            let TensorData::F32(grad) = &written.tensors[key] else {
                panic!("{name}: {key} is not f32");
            };
            let grad: Vec<f32> = grad.iter().copied().collect();
            assert_matches_summary(&f, &format!("grad.{key}"), &grad, 1e-4);
        }
    }
}

/// README: `cnnc train models/resnet20_cifar.yaml` trains on Fashion-MNIST-shaped data (1x28x28,
/// bridged to the spec's 3x32x32), here a tiny generated set for one epoch, and writes a
/// checkpoint with torchvision's names.
#[test]
fn cnnc_train_runs_resnet20_cifar() {
    use support::*;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    write_idx(&data, 32, 16, 28);
    let out = dir.path().join("run");
    let spec = Path::new("models/resnet20_cifar.yaml");
    let output = train(spec, &data, &out, &["--epochs", "1", "--batch-size", "16"]);
    assert_status(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("epoch 1/1"), "{text}");
    assert!(
        stderr(&output).contains("dataset images are 1x28x28, model input is 3x32x32"),
        "{}",
        stderr(&output)
    );
    let saved = weights::read_tensors(&out.join("model.safetensors")).expect("weights load");
    let mut ours: Vec<&String> = saved.tensors.keys().collect();
    ours.sort();
    let theirs = Fixture::load("resnet20_cifar").state_dict();
    let mut theirs: Vec<&String> = theirs.iter().map(|(k, _, _)| k).collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}
