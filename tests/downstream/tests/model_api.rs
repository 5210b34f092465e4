//! The `cnnc::Model` contract as a user's crate meets it (issue 13): one `Arc` of a generated model
//! predicting from four threads at once, a generic function over two generated models and the
//! run-time executor, `Box<dyn Model>`, independent clones, named activations, and errors in the
//! user's terms. Run by the repository's `tests/downstream_api.rs` on a copy of this crate.

use std::sync::Arc;
use std::thread;

use cnnc::Model;
use cnnc::ndarray::{Array2, Array4, ArrayD, ArrayView4, Axis, s};
use cnnc::runtime::Network;
use cnnc::runtime::config::{LayerConfig, LayerDef, LinearConfig, NetworkDef};
use cnnc::runtime::optim::{Optimizer, Sgd, SgdConfig};
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(pub Seed, "model.cnn");
cnnc::cnn_model!(pub Tiny, "tiny.cnn");
cnnc::cnn_model!(pub SeedToFc1, "truncated.cnn");

/// Generated models and the executor are shareable and clonable: a compile-time check.
const _: () = {
    const fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Seed>();
    shareable::<Tiny>();
    shareable::<Network>();
};

/// A deterministic batch of `n` samples of `model`'s input shape, values in [-1, 1).
fn batch<M: Model + ?Sized>(model: &M, n: usize, salt: usize) -> Array4<f32> {
    let [c, h, w] = model.input_shape();
    Array4::from_shape_fn((n, c, h, w), |(i, ch, y, x)| {
        ((i * 131 + ch * 71 + y * 37 + x * 17 + salt * 7) % 97) as f32 / 48.5 - 1.0
    })
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Index of the largest logit of each row.
fn argmax(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .rows()
        .into_iter()
        .map(|row| {
            (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
        })
        .collect()
}

/// What a user writes once for every model: accuracy on a labelled batch, through the trait.
fn evaluate<M: Model + ?Sized>(model: &M, x: ArrayView4<f32>, labels: &[usize]) -> f32 {
    let logits = model.predict(x).expect("a batch of the model's input shape");
    assert_eq!(logits.dim(), (labels.len(), model.output_size()));
    let hits = argmax(&logits)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f32 / labels.len() as f32
}

/// A network built at run time (the executor): flatten, then one linear layer over `tiny.cnn`'s
/// input.
fn network(seed: u64) -> Network {
    let def = NetworkDef {
        input: [1, 8, 8],
        layers: vec![
            LayerDef {
                name: "flat".to_owned(),
                config: LayerConfig::FLATTEN,
                inputs: Vec::new(),
            },
            LayerDef {
                name: "head".to_owned(),
                config: LayerConfig::Linear(LinearConfig {
                    in_features: 64,
                    out_features: 3,
                    bias: true,
                }),
                inputs: Vec::new(),
            },
        ],
    };
    Network::new(&def, seed).expect("a valid network")
}

#[test]
fn one_model_predicts_from_four_threads_as_from_one() {
    let model = Arc::new(Seed::new(1));
    let batches: Vec<Array4<f32>> = (0..4).map(|salt| batch(&*model, 8, salt)).collect();
    let alone: Vec<Array2<f32>> = batches
        .iter()
        .map(|x| model.predict(x.view()).unwrap())
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (model, batches) = (Arc::clone(&model), batches.clone());
            thread::spawn(move || {
                // Each thread runs every batch, starting at its own, a few times over.
                (0..3 * batches.len())
                    .map(|i| {
                        let k = (t + i) % batches.len();
                        (k, model.predict(batches[k].view()).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for (k, logits) in thread.join().expect("no panic") {
            assert_eq!(bits(&logits), bits(&alone[k]), "batch {k}");
        }
    }
    // The typed `&self` inference gives the same values.
    let images = Images::<3, 32, 32>::from_nchw(batches[0].view()).unwrap();
    assert_eq!(model.infer(&images).unwrap().to_array(), alone[0]);
}

#[test]
fn a_generic_function_runs_over_two_generated_models_and_the_executor() {
    let (seed, tiny, net) = (Seed::new(0), Tiny::new(0), network(0));
    let labels = [0, 1, 2, 0];
    for accuracy in [
        evaluate(&seed, batch(&seed, 4, 1).view(), &labels),
        evaluate(&tiny, batch(&tiny, 4, 1).view(), &labels),
        evaluate(&net, batch(&net, 4, 1).view(), &labels),
    ] {
        assert!((0.0..=1.0).contains(&accuracy));
    }
    assert_eq!(Model::param_count(&seed), Seed::PARAM_COUNT);
    assert_eq!(Model::param_count(&seed), 145_578);
    assert_eq!(Model::param_count(&net), 64 * 3 + 3);
    assert_eq!((seed.name(), tiny.name(), net.name()), ("CustomCNN", "Tiny", "network"));
}

#[test]
fn models_work_as_trait_objects() {
    let mut models: Vec<Box<dyn Model>> = vec![
        Box::new(Seed::new(2)),
        Box::new(Tiny::new(2)),
        Box::new(network(2)),
    ];
    for model in &mut models {
        let x = batch(&**model, 3, 4);
        let labels = [0, 1, 2];
        let before = model.predict(x.view()).unwrap();
        let loss = model.train_step(x.view(), &labels).unwrap();
        assert!(loss.is_finite(), "{}", model.name());
        let mut sgd = Sgd::new(SgdConfig::new(0.1)).unwrap();
        sgd.step(&mut **model).unwrap();
        let after = model.predict(x.view()).unwrap();
        assert_ne!(bits(&before), bits(&after), "{}: a step changes the logits", model.name());
        // The explicit training forward and backward take and give plain arrays.
        let logits = model.forward_train(x.view()).unwrap();
        assert_eq!(logits.dim(), (3, model.output_size()));
        model.backward(Array2::zeros(logits.dim()).view()).unwrap();
    }
}

#[test]
fn a_clone_is_independent_of_the_original() {
    let mut trained = Tiny::new(3);
    let untouched = trained.clone();
    let x = batch(&trained, 4, 2);
    let mut sgd = Sgd::new(SgdConfig::new(0.5)).unwrap();
    for _ in 0..3 {
        Model::train_step(&mut trained, x.view(), &[0, 1, 2, 0]).unwrap();
        sgd.step(&mut trained).unwrap();
    }
    let fresh = Tiny::new(3).predict(x.view()).unwrap();
    assert_eq!(bits(&untouched.predict(x.view()).unwrap()), bits(&fresh));
    assert_ne!(bits(&trained.predict(x.view()).unwrap()), bits(&fresh));

    // The same for the executor, boxed layers and all.
    let mut net = network(3);
    let copy = net.clone();
    Model::train_step(&mut net, x.view(), &[0, 1, 2, 0]).unwrap();
    Sgd::new(SgdConfig::new(0.5)).unwrap().step(&mut net).unwrap();
    assert_ne!(
        bits(&net.predict(x.view()).unwrap()),
        bits(&copy.predict(x.view()).unwrap())
    );
    assert_eq!(
        bits(&copy.predict(x.view()).unwrap()),
        bits(&network(3).predict(x.view()).unwrap())
    );
}

#[test]
fn activations_equal_a_truncated_models_output() {
    let (model, truncated) = (Seed::new(4), SeedToFc1::new(4));
    let x = batch(&model, 2, 5);
    let names = ["layer1.0", "layer1.1", "layer1.2", "fc1", "fc2"];
    let acts = model.activations(x.view(), &names).unwrap();
    assert_eq!(acts.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = names.to_vec();
        sorted.sort();
        sorted
    });
    let fc1 = acts["fc1"].clone().into_dimensionality().unwrap();
    assert_eq!(bits(&fc1), bits(&truncated.predict(x.view()).unwrap()));
    let fc2 = acts["fc2"].clone().into_dimensionality().unwrap();
    assert_eq!(bits(&fc2), bits(&model.predict(x.view()).unwrap()));

    // The convolution's ReLU and max pool are fused into it, yet each reads as PyTorch's
    // modules give them, NCHW: the convolution before its ReLU, the ReLU, the pool.
    let conv = &acts["layer1.0"];
    assert_eq!(conv.shape(), &[2, 32, 32, 32]);
    assert!(conv.iter().any(|&v| v < 0.0), "before the ReLU");
    assert_eq!(acts["layer1.1"], conv.mapv(|v| v.max(0.0)));
    let relu = &acts["layer1.1"];
    let pooled = ArrayD::from_shape_fn(vec![2, 32, 16, 16], |i| {
        let window = relu.slice(s![i[0], i[1], 2 * i[2]..2 * i[2] + 2, 2 * i[3]..2 * i[3] + 2]);
        window.fold(f32::NEG_INFINITY, |m, &v| m.max(v))
    });
    assert_eq!(acts["layer1.2"], pooled);
    assert_eq!(acts["layer1.2"].len_of(Axis(0)), 2);
}

#[test]
fn mistakes_are_errors_in_the_users_terms() {
    let mut models: Vec<Box<dyn Model>> = vec![Box::new(Seed::new(0)), Box::new(network(0))];
    for model in &mut models {
        let [c, h, w] = model.input_shape();
        // Wrong per-sample dims: the expected and found shapes, in PyTorch's order.
        let err = model.predict(Array4::zeros((2, c + 1, h, w)).view()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("[{c}, {h}, {w}] per sample")), "{text}");
        assert!(text.contains(&format!("[2, {}, {h}, {w}]", c + 1)), "{text}");
        // A NaN: where it is, not `Ok(NaN)`.
        let mut x = Array4::zeros((2, c, h, w));
        x[[1, 0, 2, 3]] = f32::NAN;
        for err in [
            model.predict(x.view()).unwrap_err(),
            model.train_step(x.view(), &[0, 1]).unwrap_err(),
            model.activations(x.view(), &[]).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains("input sample 1 holds NaN at [0, 2, 3]"), "{text}");
        }
        // One label per sample.
        let x = Array4::zeros((2, c, h, w));
        let text = model.train_step(x.view(), &[0]).unwrap_err().to_string();
        assert_eq!(text, "1 labels for a batch of 2 samples; give one class index per sample");
    }
    // An unknown layer name lists the model's, the closest first.
    let text = Seed::new(0)
        .activations(Array4::zeros((1, 3, 32, 32)).view(), &["layer1.O"])
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("no layer named `layer1.O` in this model; its layers, closest first: `layer1.0`"),
        "{text}"
    );
}
