//! Every model in `models/`, expanded by `cnn_model!` from its YAML and its DSL spec, agrees bit for
//! bit with the dynamic executor built from the same spec and seed
//! (`Network::from_model(&model, seed)`): initial parameters, logits, the loss,
//! every gradient, and batch norm's buffers after training steps (dropout masks included). That
//! these expansions compile is the compile-pass test of every model.

use std::path::Path;

use cnnc::Model;
use cnnc::ndarray::{Array2, Array4};
use cnnc::runtime::typed::{Features, Images};
use cnnc::runtime::{Entry, Mode, Network, Visit};

cnnc::cnn_model!(CustomCnnYaml, "models/custom_cnn.yaml");
cnnc::cnn_model!(CustomCnnDsl, "models/custom_cnn.cnn");
cnnc::cnn_model!(LeNet5Yaml, "models/lenet5.yaml");
cnnc::cnn_model!(LeNet5Dsl, "models/lenet5.cnn");
cnnc::cnn_model!(StridedYaml, "models/strided.yaml");
cnnc::cnn_model!(StridedDsl, "models/strided.cnn");
cnnc::cnn_model!(ActivationsYaml, "models/activations.yaml");
cnnc::cnn_model!(ActivationsDsl, "models/activations.cnn");
cnnc::cnn_model!(VggSmallYaml, "models/vgg_small.yaml");
cnnc::cnn_model!(VggSmallDsl, "models/vgg_small.cnn");
cnnc::cnn_model!(MobileNetStyleYaml, "models/mobilenet_style.yaml");
cnnc::cnn_model!(MobileNetStyleDsl, "models/mobilenet_style.cnn");
cnnc::cnn_model!(UNetSmallYaml, "models/unet_small.yaml");
cnnc::cnn_model!(UNetSmallDsl, "models/unet_small.cnn");
cnnc::cnn_model!(ModernActivationsYaml, "models/modern_activations.yaml");
cnnc::cnn_model!(ModernActivationsDsl, "models/modern_activations.cnn");
// Residual blocks whose batch norms the plan joins to the add after them and to the
// convolution before them (in backward): generated code runs the same joins as the executor.
cnnc::cnn_model!(ResNet20Dsl, "models/resnet20_cifar.cnn");
// A graph: a residual add, a concat and a squeeze-and-excitation mul; one tensor read thrice.
cnnc::cnn_model!(GraphMixYaml, "tests/generated/graph_mix.yaml");
cnnc::cnn_model!(GraphMixDsl, "tests/generated/graph_mix.cnn");
// A graph with a branch that reaches no output: its parameters get zero gradients. The spec
// warns (W0004, a deprecation warning in cargo's output), which this test means to allow.
#[allow(deprecated)]
mod dead_branch {
    cnnc::cnn_model!(pub DeadBranch, "tests/generated/graph_dead_branch.cnn");
}
use dead_branch::DeadBranch;

/// A model's state as exact bits: `(name, value bits, gradient bits)` per entry, in visit order.
fn state(model: &mut dyn Visit) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let bits = |a: &cnnc::ndarray::ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut entries = Vec::new();
    model.visit(&mut |entry| {
        entries.push(match entry {
            Entry::Param { name, param } => {
                (name.to_owned(), bits(&param.value), bits(&param.grad))
            }
            Entry::Buffer { name, value } => (name.to_owned(), bits(value), Vec::new()),
            Entry::Counter { name, value } => (name.to_owned(), vec![*value as u32], Vec::new()),
        });
    });
    entries
}

fn array_bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// A deterministic batch with values in [-1, 1).
fn batch(n: usize, [c, h, w]: [usize; 3], salt: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, c, h, w), |(i, ch, y, x)| {
        let k = (i * 131 + ch * 71 + y * 37 + x * 17 + salt * 7) % 97;
        k as f32 / 48.5 - 1.0
    })
}

/// `n` class labels below `classes`, varying with `step`.
fn labels(n: usize, step: usize, classes: usize) -> Vec<usize> {
    (0..n).map(|i| (i + step) % classes).collect()
}

fn network(spec: &str, seed: u64) -> Network {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
    let model = cnnc::spec::load(&path).unwrap();
    Network::from_model(&model, seed).unwrap()
}

macro_rules! agrees_with_the_executor {
    ($test:ident, $model:ident) => {
        #[test]
        fn $test() {
            type Input = Images<
                { $model::INPUT_SHAPE[0] },
                { $model::INPUT_SHAPE[1] },
                { $model::INPUT_SHAPE[2] },
            >;
            for seed in [0, 7] {
                let mut net = network($model::SOURCE, seed);
                let mut model = $model::new(seed);
                assert_eq!(
                    state(&mut model),
                    state(&mut net),
                    "initial parameters, seed {seed}"
                );
                let mut count = 0;
                model.visit(&mut |e| {
                    if let Entry::Param { param, .. } = e {
                        count += param.value.len();
                    }
                });
                assert_eq!(count, $model::PARAM_COUNT);

                // Two training steps, the second on a smaller batch (buffers are reused).
                for (step, n) in [3usize, 2].into_iter().enumerate() {
                    let x = batch(n, $model::INPUT_SHAPE, step);
                    let labels = labels(n, step, $model::OUTPUT_SIZE);
                    let want = net.train_step(x.view(), &labels).unwrap();
                    let got = model
                        .train_step(&Input::from_nchw(x.view()).unwrap(), &labels)
                        .unwrap();
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "loss, seed {seed}, step {step}"
                    );
                    assert_eq!(
                        state(&mut model),
                        state(&mut net),
                        "gradients, seed {seed}, step {step}"
                    );
                }

                // Inference, through both entry points.
                let x = batch(4, $model::INPUT_SHAPE, 9);
                let want = net.forward(x.view(), Mode::Eval).unwrap();
                let got = model.predict(x.view()).unwrap();
                assert_eq!(array_bits(&got), array_bits(&want), "logits, seed {seed}");
                let typed = model
                    .forward(&Input::from_nchw(x.view()).unwrap())
                    .unwrap()
                    .to_array();
                assert_eq!(array_bits(&typed), array_bits(&want));
                // ... and from `&self`: the executor's, the typed one, and every layer's
                // activation by name (fused layers included), the same from both.
                assert_eq!(
                    array_bits(&net.predict(x.view()).unwrap()),
                    array_bits(&want)
                );
                let shared = model.infer(&Input::from_nchw(x.view()).unwrap()).unwrap();
                assert_eq!(array_bits(&shared.to_array()), array_bits(&want));
                let names: Vec<String> = net.layers().iter().map(|l| l.name().to_owned()).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let (ours, theirs) = (
                    Model::activations(&model, x.view(), &names).unwrap(),
                    Model::activations(&net, x.view(), &names).unwrap(),
                );
                assert_eq!(ours.len(), names.len());
                for (name, act) in &ours {
                    let bits = |a: &cnnc::ndarray::ArrayD<f32>| {
                        (
                            a.shape().to_vec(),
                            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        )
                    };
                    assert_eq!(bits(act), bits(&theirs[name]), "activation `{name}`");
                }
                let last = &ours[*names.last().unwrap()];
                assert_eq!(
                    last.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    array_bits(&want)
                );

                // The explicit training forward and backward with an arbitrary upstream gradient
                // (a one-output model's cross-entropy gradient is zero, which would test little).
                let want = net.forward(x.view(), Mode::Train).unwrap();
                let (logits, tape) = model
                    .forward_train(&Input::from_nchw(x.view()).unwrap())
                    .unwrap();
                assert_eq!(array_bits(&logits.to_array()), array_bits(&want));
                let dlogits = Array2::from_shape_fn(want.dim(), |(n, k)| {
                    ((n * 5 + k * 3) % 7) as f32 / 7.0 - 0.4
                });
                net.backward(dlogits.view()).unwrap();
                model
                    .backward(tape, &Features::from_array(dlogits.view()).unwrap())
                    .unwrap();
                assert_eq!(
                    state(&mut model),
                    state(&mut net),
                    "explicit backward, seed {seed}"
                );
            }
        }
    };
}

agrees_with_the_executor!(custom_cnn_yaml, CustomCnnYaml);
agrees_with_the_executor!(custom_cnn_dsl, CustomCnnDsl);
agrees_with_the_executor!(lenet5_yaml, LeNet5Yaml);
agrees_with_the_executor!(lenet5_dsl, LeNet5Dsl);
agrees_with_the_executor!(strided_yaml, StridedYaml);
agrees_with_the_executor!(strided_dsl, StridedDsl);
agrees_with_the_executor!(activations_yaml, ActivationsYaml);
agrees_with_the_executor!(activations_dsl, ActivationsDsl);
agrees_with_the_executor!(vgg_small_yaml, VggSmallYaml);
agrees_with_the_executor!(vgg_small_dsl, VggSmallDsl);
agrees_with_the_executor!(mobilenet_style_yaml, MobileNetStyleYaml);
agrees_with_the_executor!(mobilenet_style_dsl, MobileNetStyleDsl);
agrees_with_the_executor!(unet_small_yaml, UNetSmallYaml);
agrees_with_the_executor!(unet_small_dsl, UNetSmallDsl);
agrees_with_the_executor!(modern_activations_yaml, ModernActivationsYaml);
agrees_with_the_executor!(modern_activations_dsl, ModernActivationsDsl);
agrees_with_the_executor!(resnet20_dsl, ResNet20Dsl);
agrees_with_the_executor!(graph_mix_yaml, GraphMixYaml);
agrees_with_the_executor!(graph_mix_dsl, GraphMixDsl);
agrees_with_the_executor!(graph_dead_branch, DeadBranch);

#[test]
fn constants_describe_the_seed_model() {
    assert_eq!(CustomCnnYaml::INPUT_SHAPE, [3, 32, 32]);
    assert_eq!(CustomCnnYaml::OUTPUT_SIZE, 10);
    assert_eq!(CustomCnnYaml::CLASSES, 10);
    assert_eq!(CustomCnnYaml::PARAM_COUNT, 145_578);
    assert_eq!(CustomCnnYaml::SOURCE, "models/custom_cnn.yaml");
    assert_eq!(CustomCnnYaml::NAME, "CustomCNN");
    let mut model = CustomCnnYaml::new(0);
    let mut names = Vec::new();
    model.visit(&mut |e| {
        if let Entry::Param { name, .. } = e {
            names.push(name.to_owned());
        }
    });
    assert_eq!(
        names,
        [
            "layer1.0.weight",
            "layer1.0.bias",
            "layer2.0.weight",
            "layer2.0.bias",
            "layer3.0.weight",
            "layer3.0.bias"
        ]
        .into_iter()
        .chain(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        .collect::<Vec<_>>()
    );
}

#[test]
fn predict_checks_the_input_dims_once() {
    let model = CustomCnnYaml::new(0);
    let err = model
        .predict(Array4::zeros((2, 1, 28, 28)).view())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model takes inputs of shape [3, 32, 32] per sample, but this batch has shape \
         [2, 1, 28, 28] (2 samples of [1, 28, 28])"
    );
}

#[test]
fn backward_needs_the_latest_training_tape() {
    let mut model = LeNet5Dsl::new(1);
    let x = Images::<1, 28, 28>::zeros(2).unwrap();
    let (_, tape) = model.forward_train(&x).unwrap();
    model.forward(&x).unwrap();
    let dlogits = Features::<10>::zeros(2).unwrap();
    assert!(
        model.backward(tape, &dlogits).is_err(),
        "an inference forward ran in between"
    );
    let (_, tape) = model.forward_train(&x).unwrap();
    let wrong_batch = Features::<10>::zeros(3).unwrap();
    assert!(model.backward(tape, &wrong_batch).is_err());
}

#[test]
fn weights_round_trip_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg.safetensors");
    let mut trained = VggSmallYaml::new(3);
    let x = Images::<3, 32, 32>::from_nchw(batch(2, [3, 32, 32], 1).view()).unwrap();
    trained.train_step(&x, &[1, 2]).unwrap();
    trained.save(&path).unwrap();
    let mut fresh = VggSmallYaml::new(4);
    let metadata = fresh.load(&path).unwrap();
    assert_eq!(metadata.get("model").map(String::as_str), Some("VGGSmall"));
    let values = |m: &mut VggSmallYaml| {
        state(m)
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&mut fresh), values(&mut trained));
}

#[test]
fn dropout_streams_resume_bit_identically_from_a_checkpoint() {
    let seed = 5;
    let mut net = network(VggSmallYaml::SOURCE, seed);
    let mut trained = VggSmallYaml::new(seed);
    let step = |n: usize, step: usize| {
        let x = batch(n, VggSmallYaml::INPUT_SHAPE, step);
        (x, labels(n, step, VggSmallYaml::OUTPUT_SIZE))
    };
    let (x, y) = step(3, 0);
    net.train_step(x.view(), &y).unwrap();
    trained
        .train_step(&Images::<3, 32, 32>::from_nchw(x.view()).unwrap(), &y)
        .unwrap();
    let states = trained.rng_states();
    assert_eq!(states, net.rng_states());
    assert_eq!(states.len(), 2, "vgg_small has two dropout layers");
    assert!(
        states.iter().all(|(_, position)| *position > 0),
        "the training step drew masks: {states:?}"
    );

    // A checkpoint: weights and buffers through safetensors, stream positions by name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg.safetensors");
    trained.save(&path).unwrap();
    let mut resumed = VggSmallYaml::new(seed);
    resumed.load(&path).unwrap();
    assert_ne!(
        resumed.rng_states(),
        states,
        "a fresh model restarts its streams"
    );

    // Wrong names are refused before any stream moves.
    let mut wrong = states.clone();
    wrong.push(("classifier.7".to_owned(), states[0].1));
    let err = resumed.restore_rng_states(&wrong).unwrap_err().to_string();
    assert!(err.contains("`classifier.7`"), "{err}");
    assert!(resumed.restore_rng_states(&states[..1]).is_err());
    assert_ne!(resumed.rng_states(), states);

    resumed.restore_rng_states(&states).unwrap();
    assert_eq!(resumed.rng_states(), states);
    for (i, n) in [2usize, 3].into_iter().enumerate() {
        let (x, y) = step(n, i + 1);
        let want = net.train_step(x.view(), &y).unwrap();
        let got = resumed
            .train_step(&Images::<3, 32, 32>::from_nchw(x.view()).unwrap(), &y)
            .unwrap();
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "loss after resuming, step {i}"
        );
        assert_eq!(
            state(&mut resumed),
            state(&mut net),
            "after resuming, step {i}"
        );
        assert_eq!(resumed.rng_states(), net.rng_states());
    }
}

#[test]
fn inference_after_a_change_through_weight_mut_reads_the_new_weights() {
    let mut model = CustomCnnYaml::new(3);
    let x = batch(2, CustomCnnYaml::INPUT_SHAPE, 1);
    let before = model.predict(x.view()).unwrap();
    // Changed without `visit`, the packed copies are stale: `&self` inference packs in scratch
    // memory until a forward repacks; the values are those of the repacked layers.
    model.layer1_0.weight_mut().value.mapv_inplace(|v| v * 0.5);
    model.fc2.bias_mut().unwrap().value.fill(0.25);
    let stale = model.predict(x.view()).unwrap();
    assert_ne!(array_bits(&stale), array_bits(&before));
    let typed = Images::<3, 32, 32>::from_nchw(x.view()).unwrap();
    let repacked = model.forward(&typed).unwrap().to_array();
    assert_eq!(array_bits(&stale), array_bits(&repacked));
    assert_eq!(
        array_bits(&model.predict(x.view()).unwrap()),
        array_bits(&repacked)
    );
}

#[test]
fn a_clone_trains_apart_from_its_original() {
    let original = VggSmallYaml::new(5);
    let mut clone = original.clone();
    let x = batch(2, VggSmallYaml::INPUT_SHAPE, 2);
    let want = original.predict(x.view()).unwrap();
    Model::train_step(&mut clone, x.view(), &[1, 2]).unwrap();
    // Batch norm's running statistics moved in the clone only.
    assert_eq!(
        array_bits(&original.predict(x.view()).unwrap()),
        array_bits(&want)
    );
    assert_ne!(
        array_bits(&clone.predict(x.view()).unwrap()),
        array_bits(&want)
    );
}
