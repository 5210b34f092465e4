//! Inference folds an eval-mode batch norm, a residual add and a ReLU/ReLU6 into the store of
//! the convolution before them, and has the convolutions a concatenation reads store into its
//! channels (the plan's inference steps): the logits, the named activations
//! and a backward after an eval forward are bit for bit those of the same network with an
//! identity after every convolution (which keeps every layer a step of its own), on one thread
//! and on several, through `predict` and through `forward` in eval mode; and inference from
//! `&self` through the folded steps allocates nothing once warm. An eval forward sizes only the
//! inference steps' buffers, none of training's.

mod common;

use std::collections::BTreeMap;

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Source,
};
use cnnc_runtime::model::Planned;
use cnnc_runtime::{BufferBytes, Entry, Mode, Network, Visit};
use common::Rand;
use ndarray::{Array2, Array4};

/// Builds a network layer by layer, its inputs named; with `gap`, an identity follows every
/// convolution (and takes its name as a source), so that nothing folds into it.
struct Builder {
    layers: Vec<LayerDef>,
    index: BTreeMap<String, usize>,
    gap: bool,
}

impl Builder {
    fn push(&mut self, name: &str, config: LayerConfig, inputs: &[&str]) {
        let conv = matches!(config, LayerConfig::Conv2d(_));
        let inputs = inputs
            .iter()
            .map(|n| match *n {
                "input" => Source::Input,
                n => Source::Layer(self.index[n]),
            })
            .collect();
        self.layers.push(LayerDef {
            name: name.to_owned(),
            config,
            inputs,
        });
        self.index.insert(name.to_owned(), self.layers.len() - 1);
        if conv && self.gap {
            self.layers.push(LayerDef {
                name: format!("{name}_gap"),
                config: LayerConfig::Identity,
                inputs: Vec::new(),
            });
            self.index.insert(name.to_owned(), self.layers.len() - 1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        [cin, cout]: [usize; 2],
        k: usize,
        stride: usize,
        groups: usize,
        bias: bool,
        inputs: &[&str],
    ) {
        let p = k / 2;
        let config = LayerConfig::Conv2d(Conv2dConfig {
            stride: [stride, stride],
            padding: [p, p],
            padding_end: [p, p],
            groups,
            bias,
            ..Conv2dConfig::new(cin, cout, [k, k])
        });
        self.push(name, config, inputs);
    }

    fn bn(&mut self, name: &str, c: usize) {
        self.push(
            name,
            LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(c)),
            &[],
        );
    }
}

/// A residual network of every folding the plan knows: a stem (conv, BN, ReLU), a basic block
/// (the add reading the block's input), a strided block with a projection shortcut (the add
/// folded into the shortcut's convolution), a depthwise conv with BN and ReLU6, a convolution
/// with a bias and BN and no activation, a batch norm without running statistics (not folded)
/// and a plain add without BN.
fn network(gap: bool) -> NetworkDef {
    let mut b = Builder {
        layers: Vec::new(),
        index: BTreeMap::new(),
        gap,
    };
    b.conv("stem", [3, 20], 3, 1, 1, false, &[]);
    b.bn("stem_bn", 20);
    b.push("stem_relu", LayerConfig::Relu, &[]);
    b.conv("b1.conv1", [20, 20], 3, 1, 1, false, &[]);
    b.bn("b1.bn1", 20);
    b.push("b1.relu1", LayerConfig::Relu, &[]);
    b.conv("b1.conv2", [20, 20], 3, 1, 1, false, &[]);
    b.bn("b1.bn2", 20);
    b.push("b1.add", LayerConfig::Add, &["b1.bn2", "stem_relu"]);
    b.push("b1.relu2", LayerConfig::Relu, &[]);
    b.conv("b2.conv1", [20, 33], 3, 2, 1, false, &[]);
    b.bn("b2.bn1", 33);
    b.push("b2.relu1", LayerConfig::Relu, &[]);
    b.conv("b2.conv2", [33, 33], 3, 1, 1, false, &[]);
    b.bn("b2.bn2", 33);
    b.conv("b2.down", [20, 33], 1, 2, 1, false, &["b1.relu2"]);
    b.bn("b2.down_bn", 33);
    b.push("b2.add", LayerConfig::Add, &["b2.bn2", "b2.down_bn"]);
    b.push("b2.relu2", LayerConfig::Relu, &[]);
    b.conv("dw", [33, 33], 3, 1, 33, false, &[]);
    b.bn("dw_bn", 33);
    b.push("dw_relu6", LayerConfig::Relu6, &[]);
    b.conv("pw", [33, 17], 1, 1, 1, true, &[]);
    b.bn("pw_bn", 17);
    let mut untracked = BatchNorm2dConfig::new(17);
    untracked.track_running_stats = false;
    b.conv("tail", [17, 17], 3, 1, 1, false, &[]);
    b.push("tail_bn", LayerConfig::BatchNorm2d(untracked), &[]);
    b.conv("skip", [17, 17], 1, 1, 1, true, &[]);
    b.push("skip_add", LayerConfig::Add, &["skip", "pw_bn"]);
    b.push("skip_relu", LayerConfig::Relu, &[]);
    b.push(
        "pool",
        LayerConfig::AdaptiveAvgPool2d {
            output_size: [1, 1],
        },
        &[],
    );
    b.push("flatten", LayerConfig::FLATTEN, &[]);
    b.push(
        "fc",
        LayerConfig::Linear(LinearConfig {
            in_features: 17,
            out_features: 7,
            bias: true,
        }),
        &[],
    );
    NetworkDef {
        input: [3, 12, 12],
        layers: b.layers,
    }
}

/// The network, its batch norms' parameters and running statistics away from their initial
/// values (the same in both variants: identities have none).
fn built(gap: bool) -> Network {
    let mut net = Network::new(&network(gap), 3).unwrap();
    let mut rng = Rand(11);
    net.visit(&mut |entry| match entry {
        Entry::Param { param, .. } if param.value.ndim() == 1 => {
            param.value.mapv_inplace(|_| 0.5 + rng.unit());
        }
        Entry::Buffer { name, value } => {
            let var = name.ends_with("running_var");
            value.mapv_inplace(|_| {
                if var {
                    0.5 + rng.unit()
                } else {
                    rng.unit() - 0.5
                }
            });
        }
        _ => {}
    });
    net
}

fn input(batch: usize) -> Array4<f32> {
    let mut rng = Rand(batch as u64);
    Array4::from_shape_vec((batch, 3, 12, 12), rng.vec(batch * 3 * 144)).unwrap()
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Every parameter gradient of `net`, as bits.
fn grads(net: &mut Network) -> Vec<u32> {
    let mut out = Vec::new();
    net.visit(&mut |entry| {
        if let Entry::Param { param, .. } = entry {
            out.extend(param.grad.iter().map(|v| v.to_bits()));
        }
    });
    out
}

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(f)
}

#[test]
fn the_plan_folds_what_the_identities_keep_apart() {
    let (folded, kept) = (built(false), built(true));
    // Training steps an inference step replaces: the stem's BN (+ReLU) 1; block 1's 1 and 2
    // (BN, add + ReLU); block 2's 1, 1 and 2 (the add folded into the shortcut's convolution);
    // the depthwise's BN and ReLU6 2; `pw`'s BN 1; `skip`'s add (+ ReLU) 1. Not `tail`'s BN,
    // which has no running statistics.
    assert_eq!(folded.step_count() - folded.eval_step_count(), 12);
    assert_eq!(kept.step_count(), kept.eval_step_count());
}

#[test]
fn folded_inference_is_bit_identical_on_any_thread_count() {
    let x = input(5);
    let reference = on_threads(1, || built(true).predict(x.view()).unwrap());
    for threads in [1, 3] {
        on_threads(threads, || {
            let mut folded = built(false);
            let mut kept = built(true);
            assert_eq!(bits(&folded.predict(x.view()).unwrap()), bits(&reference));
            let eval = folded.forward(x.view(), Mode::Eval).unwrap();
            assert_eq!(bits(&eval), bits(&reference), "{threads} threads");
            let eval = kept.forward(x.view(), Mode::Eval).unwrap();
            assert_eq!(bits(&eval), bits(&reference), "{threads} threads");
        });
    }
}

#[test]
fn every_folded_layer_stays_readable_by_name() {
    use cnnc_runtime::Model;
    let x = input(3);
    let names = [
        "stem",
        "stem_bn",
        "b1.bn2",
        "b1.add",
        "b1.relu2",
        "b2.down_bn",
        "b2.add",
        "dw_bn",
        "dw_relu6",
        "pw_bn",
        "skip_add",
        "fc",
    ];
    let (folded, kept) = (built(false), built(true));
    let a = folded.activations(x.view(), &names).unwrap();
    let b = kept.activations(x.view(), &names).unwrap();
    assert_eq!(a.len(), names.len());
    for name in names {
        let (a, b) = (&a[name], &b[name]);
        assert_eq!(a.shape(), b.shape(), "{name}");
        let same = a
            .iter()
            .zip(b.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{name} differs");
    }
    // The add applies the ReLU after it in training: its own output, asked for by name, is the
    // sum of its inputs, and the ReLU's is that sum through the ReLU.
    let (sum, relu) = (&a["b1.add"], &a["b1.relu2"]);
    let inputs = folded
        .activations(x.view(), &["b1.bn2", "stem_relu"])
        .unwrap();
    let expected = &inputs["b1.bn2"] + &inputs["stem_relu"];
    assert_eq!(sum.shape(), expected.shape());
    assert!(
        sum.iter()
            .zip(&expected)
            .all(|(p, q)| p.to_bits() == q.to_bits())
    );
    assert!(sum.iter().any(|&v| v < 0.0));
    let through = sum.mapv(|v| if v < 0.0 { 0.0 } else { v });
    assert!(
        relu.iter()
            .zip(&through)
            .all(|(p, q)| p.to_bits() == q.to_bits())
    );
    let logits = folded.predict(x.view()).unwrap();
    let named: Vec<u32> = a["fc"].iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&logits), named);
}

#[test]
fn backward_after_a_folded_eval_forward_sees_every_layers_output() {
    let x = input(4);
    let dlogits = Array2::from_shape_fn((4, 7), |(n, c)| (n as f32 - 1.5) * 0.1 + c as f32 * 0.01);
    let mut results = Vec::new();
    for gap in [false, true] {
        let mut net = built(gap);
        net.forward(x.view(), Mode::Eval).unwrap();
        net.backward(dlogits.view()).unwrap();
        let g = grads(&mut net);
        // Replayed backward lands on the same values.
        net.backward(dlogits.view()).unwrap();
        assert_eq!(grads(&mut net), g);
        results.push(g);
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0].iter().any(|&v| f32::from_bits(v) != 0.0));
}

/// Bytes of the inference storage of `def` for `batch` samples.
fn eval_storage_bytes(def: &NetworkDef, batch: usize) -> usize {
    let model = cnnc_core::Model::new(None, def.clone()).unwrap();
    let storage = cnnc_core::Plan::new(&model).eval_storage();
    storage.len.iter().sum::<usize>() * batch * size_of::<f32>()
}

#[test]
fn an_eval_forward_sizes_the_inference_storage_and_backward_the_training_buffers() {
    let x = input(4);
    let dlogits = Array2::from_shape_fn((4, 7), |(n, c)| (n as f32 - 1.5) * 0.1 - c as f32 * 0.02);
    for gap in [false, true] {
        let mut net = built(gap);
        net.forward(x.view(), Mode::Eval).unwrap();
        let eval = BufferBytes {
            training: 0,
            gradients: 0,
            inference: eval_storage_bytes(&network(gap), 4),
        };
        assert_eq!(net.buffer_bytes(), eval, "gap {gap}");
        // Backward replays the forward through the training steps: their buffers now.
        net.backward(dlogits.view()).unwrap();
        let trained = net.buffer_bytes();
        assert!(trained.training > eval.inference, "gap {gap}: {trained:?}");
        assert!(trained.gradients > 0, "gap {gap}: {trained:?}");
        assert_eq!(trained.inference, eval.inference);
        // A smaller eval batch reuses what the larger one sized.
        net.forward(x.slice(ndarray::s![..2, .., .., ..]), Mode::Eval)
            .unwrap();
        assert_eq!(net.buffer_bytes(), trained);
    }
}

/// A residual block on running statistics alone (no batch norm normalises by the batch), so
/// that large eval batches run in groups of images.
fn block() -> NetworkDef {
    let mut b = Builder {
        layers: Vec::new(),
        index: BTreeMap::new(),
        gap: false,
    };
    b.conv("stem", [3, 20], 3, 1, 1, false, &[]);
    b.bn("stem_bn", 20);
    b.push("stem_relu", LayerConfig::Relu, &[]);
    b.conv("conv1", [20, 20], 3, 1, 1, false, &[]);
    b.bn("bn1", 20);
    b.push("relu1", LayerConfig::Relu, &[]);
    b.conv("conv2", [20, 20], 3, 1, 1, false, &[]);
    b.bn("bn2", 20);
    b.push("add", LayerConfig::Add, &["bn2", "stem_relu"]);
    b.push("relu2", LayerConfig::Relu, &[]);
    let pool = LayerConfig::AdaptiveAvgPool2d {
        output_size: [1, 1],
    };
    b.push("pool", pool, &[]);
    b.push("flatten", LayerConfig::FLATTEN, &[]);
    let fc = LayerConfig::Linear(LinearConfig {
        in_features: 20,
        out_features: 7,
        bias: true,
    });
    b.push("fc", fc, &[]);
    NetworkDef {
        input: [3, 12, 12],
        layers: b.layers,
    }
}

#[test]
fn a_grouped_eval_forward_holds_only_the_input_and_the_logits() {
    // 96 images on one thread run in groups (of 22: a quarter MiB of the largest buffer) from
    // `&self`, which leaves the network only the input and the logits to hold.
    let def = block();
    let batch = 96;
    let x = input(batch);
    let dlogits = Array2::from_shape_fn((batch, 7), |(n, c)| ((n + c) % 5) as f32 * 0.1 - 0.2);
    let inference = (3 * 12 * 12 + 7) * batch * size_of::<f32>();
    assert!(inference < eval_storage_bytes(&def, batch));
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut net = Network::new(&def, 0).unwrap();
            let logits = net.forward(x.view(), Mode::Eval).unwrap();
            let held = net.buffer_bytes();
            assert_eq!(bits(&logits), bits(&net.predict(x.view()).unwrap()));
            // Backward replays the forward from the input the inference storage keeps.
            net.backward(dlogits.view()).unwrap();
            (held, bits(&logits), grads(&mut net))
        })
    };
    let (grouped, logits, gradients) = run(1);
    let only = BufferBytes {
        training: 0,
        gradients: 0,
        inference,
    };
    assert_eq!(grouped, only);
    assert!(gradients.iter().any(|&v| f32::from_bits(v) != 0.0));
    // On two threads the groups would be too few: a step at a time over the whole batch, in
    // the inference storage, to the same values.
    let (whole, logits_whole, gradients_whole) = run(2);
    assert_eq!(whole.inference, eval_storage_bytes(&def, batch));
    assert_eq!((logits_whole, gradients_whole), (logits, gradients));
}

#[test]
fn training_is_untouched_by_the_inference_steps() {
    let x = input(4);
    let labels = [0, 3, 6, 2];
    let mut losses = Vec::new();
    for gap in [false, true] {
        let mut net = built(gap);
        let loss = net.train_step(x.view(), &labels).unwrap();
        losses.push((loss.to_bits(), grads(&mut net)));
    }
    assert_eq!(losses[0], losses[1]);
}

/// Two fire modules (SqueezeNet's: a squeeze convolution feeding a 1x1 and a 3x3 expand
/// convolution, concatenated), the second with batch norms, then a head reading the
/// concatenation.
fn fire(gap: bool) -> NetworkDef {
    let mut b = Builder {
        layers: Vec::new(),
        index: BTreeMap::new(),
        gap,
    };
    b.conv("f1.squeeze", [3, 6], 1, 1, 1, true, &[]);
    b.push("f1.squeeze_relu", LayerConfig::Relu, &[]);
    b.conv("f1.e1", [6, 5], 1, 1, 1, true, &["f1.squeeze_relu"]);
    b.push("f1.e1_relu", LayerConfig::Relu, &[]);
    b.conv("f1.e3", [6, 19], 3, 1, 1, true, &["f1.squeeze_relu"]);
    b.push("f1.e3_relu", LayerConfig::Relu, &[]);
    let cat = LayerConfig::Concat(cnnc_runtime::config::ConcatConfig { dim: 1 });
    b.push("f1.cat", cat.clone(), &["f1.e1_relu", "f1.e3_relu"]);
    b.conv("f2.squeeze", [24, 8], 1, 1, 1, false, &[]);
    b.bn("f2.squeeze_bn", 8);
    b.push("f2.squeeze_relu", LayerConfig::Relu, &[]);
    b.conv("f2.e1", [8, 17], 1, 1, 1, false, &["f2.squeeze_relu"]);
    b.bn("f2.e1_bn", 17);
    b.conv("f2.e3", [8, 16], 3, 2, 1, false, &["f2.squeeze_relu"]);
    b.push("f2.e3_relu", LayerConfig::Relu, &[]);
    b.conv("f2.e1s", [17, 17], 1, 2, 1, false, &["f2.e1_bn"]);
    b.push("f2.cat", cat, &["f2.e3_relu", "f2.e1s"]);
    b.push(
        "pool",
        LayerConfig::AdaptiveAvgPool2d {
            output_size: [1, 1],
        },
        &[],
    );
    b.push("flatten", LayerConfig::FLATTEN, &[]);
    b.push(
        "fc",
        LayerConfig::Linear(LinearConfig {
            in_features: 33,
            out_features: 7,
            bias: true,
        }),
        &[],
    );
    NetworkDef {
        input: [3, 12, 12],
        layers: b.layers,
    }
}

#[test]
fn convolutions_store_into_the_concatenation_bit_for_bit() {
    let built = |gap| {
        let mut net = Network::new(&fire(gap), 4).unwrap();
        let mut rng = Rand(12);
        net.visit(&mut |entry| {
            if let Entry::Buffer { name, value } = entry {
                let var = name.ends_with("running_var");
                value.mapv_inplace(|_| {
                    if var {
                        0.5 + rng.unit()
                    } else {
                        rng.unit() - 0.5
                    }
                });
            }
        });
        net
    };
    let x = input(3);
    let mut kept = built(true);
    let reference = kept.forward(x.view(), Mode::Eval).unwrap();
    // Both concatenations are written in place: their two steps go.
    let folded = built(false);
    assert_eq!(folded.step_count() - folded.eval_step_count(), 4);
    for threads in [1, 3] {
        on_threads(threads, || {
            let mut folded = built(false);
            assert_eq!(bits(&folded.predict(x.view()).unwrap()), bits(&reference));
            let eval = folded.forward(x.view(), Mode::Eval).unwrap();
            assert_eq!(bits(&eval), bits(&reference), "{threads} threads");
        });
    }
    let dlogits = Array2::from_shape_fn((3, 7), |(n, c)| (n as f32 - 1.0) * 0.2 + c as f32 * 0.03);
    let mut folded = built(false);
    folded.forward(x.view(), Mode::Eval).unwrap();
    folded.backward(dlogits.view()).unwrap();
    kept.backward(dlogits.view()).unwrap();
    assert_eq!(grads(&mut folded), grads(&mut kept));
}
