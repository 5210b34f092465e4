//! Inference from `&self` allocates nothing but its result once warm: the activation buffers and
//! each layer's scratch (the convolutions' padded inputs, the fused pools' bands) come from the
//! thread's scratch pool, grown by the first call and reused after. Counted with a global
//! allocator that tallies the allocations of the current thread, on a one-thread pool so that
//! every layer runs on that thread.

mod common;

use cnnc_runtime::Network;
use common::counting::{Counting, allocations};
use common::seed::custom_cnn;
use ndarray::Array4;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_warm_predict_allocates_only_its_result() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let net = Network::new(&custom_cnn(), 0).unwrap();
        let x = Array4::from_shape_fn((16, 3, 32, 32), |(n, c, h, w)| {
            ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
        });
        let mut first = None;
        let cold = allocations(|| first = Some(net.predict(x.view()).unwrap()));
        let mut second = None;
        let warm = allocations(|| second = Some(net.predict(x.view()).unwrap()));
        assert_eq!(first, second);
        // The logits, the buffers' lengths and the list of borrowed buffers.
        assert!(
            warm <= 3,
            "{warm} allocations once warm (the first call made {cold})"
        );
        assert!(
            cold > warm,
            "the first call fills the pool: {cold} vs {warm}"
        );
    });
}

#[test]
fn batch_norm_without_running_statistics_infers_from_scratch_memory() {
    use cnnc_runtime::Mode;
    use cnnc_runtime::config::{BatchNorm2dConfig, LayerConfig, LayerDef};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        // The seed model with a batch norm on the batch's statistics after its first convolution
        // (fused with the ReLU that follows): PyTorch normalises by the batch in eval mode too.
        let mut def = custom_cnn();
        let config = BatchNorm2dConfig {
            track_running_stats: false,
            ..BatchNorm2dConfig::new(32)
        };
        def.layers.insert(
            1,
            LayerDef {
                name: "layer1.bn".to_owned(),
                config: LayerConfig::BatchNorm2d(config),
                inputs: Vec::new(),
            },
        );
        let mut net = Network::new(&def, 0).unwrap();
        let x = Array4::from_shape_fn((4, 3, 32, 32), |(n, c, h, w)| {
            ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
        });
        let mut first = None;
        let cold = allocations(|| first = Some(net.predict(x.view()).unwrap()));
        let mut second = None;
        let warm = allocations(|| second = Some(net.predict(x.view()).unwrap()));
        assert_eq!(first, second);
        assert!(
            warm <= 3,
            "{warm} allocations once warm (the first call made {cold})"
        );
        // The same numbers as the training forward in eval mode, bit for bit.
        let eval = net.forward(x.view(), Mode::Eval).unwrap();
        assert_eq!(first.unwrap(), eval);
    });
}

/// A block of `c`-channel 3 x 3 convolutions over 8 x 8 images whose inference steps fold the
/// batch norms, the residual add and the ReLUs into the convolutions' stores (their factors in
/// scratch memory too); at 64 channels the convolutions take Winograd's path.
fn folded_block(c: usize) -> cnnc_runtime::config::NetworkDef {
    use cnnc_runtime::config::{
        BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Source,
    };
    let conv = LayerConfig::Conv2d(Conv2dConfig {
        padding: [1, 1],
        padding_end: [1, 1],
        bias: false,
        ..Conv2dConfig::new(c, c, [3, 3])
    });
    let bn = LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(c));
    let layers = [
        (conv.clone(), vec![]),
        (bn.clone(), vec![]),
        (LayerConfig::Relu, vec![]),
        (conv, vec![]),
        (bn, vec![]),
        (LayerConfig::Add, vec![Source::Layer(4), Source::Input]),
        (LayerConfig::Relu, vec![]),
        (LayerConfig::FLATTEN, vec![]),
        (
            LayerConfig::Linear(LinearConfig {
                in_features: c * 8 * 8,
                out_features: 4,
                bias: true,
            }),
            vec![],
        ),
    ];
    NetworkDef {
        input: [c, 8, 8],
        layers: layers
            .into_iter()
            .enumerate()
            .map(|(i, (config, inputs))| LayerDef {
                name: format!("l{i}"),
                config,
                inputs,
            })
            .collect(),
    }
}

#[test]
fn a_warm_folded_predict_allocates_only_its_result() {
    use cnnc_runtime::model::Planned;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for channels in [8, 64] {
            let net = Network::new(&folded_block(channels), 0).unwrap();
            assert!(net.eval_step_count() < net.step_count());
            let x = Array4::from_shape_fn((4, channels, 8, 8), |(n, c, h, w)| {
                ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
            });
            let mut first = None;
            let cold = allocations(|| first = Some(net.predict(x.view()).unwrap()));
            let mut second = None;
            let warm = allocations(|| second = Some(net.predict(x.view()).unwrap()));
            assert_eq!(first, second);
            assert!(
                warm <= 3,
                "{channels} channels: {warm} allocations once warm (the first call made {cold})"
            );
        }
    });
}
