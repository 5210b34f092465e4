//! Every layer's `Layer::backward_reads` is true to its backward: a training network reuses the
//! memory of an input or output a layer says its backward does not read, so backward must give
//! the same bits when that buffer holds other values (NaN here) instead of the forward's.

use cnnc_runtime::config::{
    BatchNorm2dConfig, ConcatConfig, Conv2dConfig, GeluApproximate, LayerConfig, LinearConfig,
    Pool2dConfig,
};
use cnnc_runtime::layers::{Init, build, build_merge};
use cnnc_runtime::{Entry, Layer, Mode, Shape};

/// Deterministic values in about `[-1.5, 1.5]`, some of them exactly zero or past 6 (ReLU6's
/// kinks).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| match (i * 7 + seed) % 23 {
            0 => 0.0,
            1 => 6.5,
            k => (k as f32 - 11.0) / 7.0,
        })
        .collect()
}

/// Every parameter gradient of `layer`, as bits.
fn grads(layer: &mut dyn Layer) -> Vec<u32> {
    let mut bits = Vec::new();
    layer.visit(&mut |entry| {
        if let Entry::Param { param, .. } = entry {
            bits.extend(param.grad.iter().map(|v| v.to_bits()));
        }
    });
    bits
}

/// Runs `layer` forward on `x`, then backward twice: with the forward's input and output, and
/// with NaN in those it says it does not read. Both must give the same input and parameter
/// gradients.
fn check(what: &str, mut layer: Box<dyn Layer>, batch: usize) {
    let reads = layer.backward_reads();
    let (nx, ny) = (
        layer.input_shape().numel() * batch,
        layer.output_shape().numel() * batch,
    );
    let x = values(nx, 3);
    let mut y = vec![0.0; ny];
    layer.forward(&x, &mut y, batch, Mode::Train).unwrap();
    let dy = values(ny, 5);
    let run = |layer: &mut dyn Layer, x: &[f32], y: &[f32]| {
        let mut dx = vec![0.0; nx];
        layer.backward(x, y, &dy, Some(&mut dx), batch).unwrap();
        (
            dx.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(),
            grads(layer),
        )
    };
    let kept = run(&mut *layer, &x, &y);
    let nan_x = vec![f32::NAN; nx];
    let nan_y = vec![f32::NAN; ny];
    let x2 = if reads.inputs { &x } else { &nan_x };
    let y2 = if reads.output { &y } else { &nan_y };
    let reused = run(&mut *layer, x2, y2);
    assert!(
        kept == reused,
        "{what}: backward reads a buffer it says it does not ({reads:?})"
    );
}

fn conv(cin: usize, cout: usize, stride: usize) -> LayerConfig {
    LayerConfig::Conv2d(Conv2dConfig {
        stride: [stride, stride],
        padding: [1, 1],
        padding_end: [1, 1],
        ..Conv2dConfig::new(cin, cout, [3, 3])
    })
}

#[test]
fn layers_read_in_backward_only_what_they_say() {
    let image = Shape::Chw([4, 6, 6]);
    let mut init = Init::new(1);
    let mut layer = |config: &LayerConfig, input: Shape| {
        build("layer", config, input, 0, &mut init).expect("a valid layer")
    };
    let bn = LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(4));
    let pool = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
    let mut cases: Vec<(String, Box<dyn Layer>)> = vec![
        ("conv2d".into(), layer(&conv(4, 4, 1), image)),
        ("conv2d stride 2".into(), layer(&conv(4, 4, 2), image)),
        ("batchnorm2d".into(), layer(&bn, image)),
        (
            "linear".into(),
            layer(
                &LayerConfig::Linear(LinearConfig {
                    in_features: 12,
                    out_features: 5,
                    bias: true,
                }),
                Shape::Flat(12),
            ),
        ),
        ("flatten".into(), layer(&LayerConfig::FLATTEN, image)),
    ];
    for (name, config) in [
        ("relu", LayerConfig::Relu),
        ("relu6", LayerConfig::Relu6),
        ("sigmoid", LayerConfig::Sigmoid),
        ("tanh", LayerConfig::Tanh),
        ("silu", LayerConfig::Silu),
        ("hardswish", LayerConfig::Hardswish),
        (
            "gelu",
            LayerConfig::Gelu {
                approximate: GeluApproximate::None,
            },
        ),
    ] {
        cases.push((name.into(), layer(&config, image)));
    }
    // Fused: the convolution and the batch norm apply the ReLU (and the convolution the pool);
    // with `relu_grad_masked`, `dy` arrives masked.
    let mut fused = layer(&conv(4, 4, 1), image);
    assert!(fused.fuse_relu());
    cases.push(("conv2d + relu".into(), fused));
    let mut masked = layer(&conv(4, 4, 1), image);
    assert!(masked.fuse_relu());
    masked.relu_grad_masked();
    cases.push(("conv2d + relu, masked after".into(), masked));
    let mut pooled = layer(&conv(4, 4, 1), image);
    assert!(pooled.fuse_relu() && pooled.fuse_max_pool(&pool));
    cases.push(("conv2d + relu + maxpool2d".into(), pooled));
    let mut bn_relu = layer(&bn, image);
    assert!(bn_relu.fuse_relu());
    cases.push(("batchnorm2d + relu".into(), bn_relu));
    for (what, layer) in cases {
        check(&what, layer, 2);
    }
}

#[test]
fn merges_read_their_inputs_only_when_they_say() {
    let image = Shape::Chw([3, 4, 4]);
    // An add that applies the ReLU after it reads its output, to mask the gradient.
    for (config, relu) in [
        (LayerConfig::Add, false),
        (LayerConfig::Add, true),
        (LayerConfig::Concat(ConcatConfig { dim: 1 }), false),
        (LayerConfig::Mul, false),
    ] {
        let mut layer = build_merge("merge", &config, &[image, image]).unwrap();
        // Only an add applies a ReLU.
        if relu || config != LayerConfig::Add {
            assert_eq!(layer.fuse_relu(), relu, "{config:?}");
        }
        let reads = layer.backward_reads();
        assert_eq!(reads.output, relu, "{config:?}");
        let merge = layer.as_merge().unwrap();
        let batch = 2;
        let xs = [
            values(image.numel() * batch, 1),
            values(image.numel() * batch, 2),
        ];
        let views = [&xs[0][..], &xs[1][..]];
        let mut y = vec![0.0; merge.output_shape().numel() * batch];
        merge.forward_merge(&views, &mut y, batch).unwrap();
        let dy = values(y.len(), 4);
        let nan = vec![f32::NAN; xs[0].len()];
        let garbage = [&nan[..], &nan[..]];
        for (input, x) in xs.iter().enumerate() {
            let mut kept = vec![0.0; x.len()];
            merge
                .backward_merge(&views, [&y, &dy], input, &mut kept, false, batch)
                .unwrap();
            let mut reused = vec![0.0; x.len()];
            let xs2 = if reads.inputs { &views } else { &garbage };
            let y2 = if reads.output { &y[..] } else { &nan[..] };
            merge
                .backward_merge(xs2, [y2, &dy], input, &mut reused, false, batch)
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&kept), bits(&reused), "{config:?}, input {input}");
        }
    }
}
