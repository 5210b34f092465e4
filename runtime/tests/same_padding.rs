//! `padding: same` with an odd total (an even kernel, or an odd dilation times an odd
//! `kernel_size - 1`) beyond the PyTorch fixtures: the same numbers as a convolution without
//! padding over the input zero-padded by hand (the extra row and column after it), forward and
//! backward, and a network of such layers bit-identical whatever the thread count.

mod common;

use cnnc_runtime::config::{
    Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, PaddingMode,
};
use cnnc_runtime::init::init_rng;
use cnnc_runtime::layers::Conv2d;
use cnnc_runtime::{Entry, Layer, Mode};
use common::Rand;

/// A stride-1 convolution with `padding: same` for `kernel` and `dilation`.
fn same(
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Conv2dConfig {
    let [padding, padding_end] = Conv2dConfig::same_padding(kernel, dilation);
    Conv2dConfig {
        padding,
        padding_end,
        dilation,
        groups,
        ..Conv2dConfig::new(cin, cout, kernel)
    }
}

/// `x` (`[batch][h][w][c]`, the runtime's pixel-major layout) with `before` zero rows and columns
/// on the top and left and `after` on the bottom and right.
fn zero_pad(
    x: &[f32],
    [batch, h, w, c]: [usize; 4],
    before: [usize; 2],
    after: [usize; 2],
) -> Vec<f32> {
    let (hp, wp) = (before[0] + h + after[0], before[1] + w + after[1]);
    let mut padded = vec![0.0; batch * hp * wp * c];
    for n in 0..batch {
        for y in 0..h {
            for x_ in 0..w {
                let from = ((n * h + y) * w + x_) * c;
                let to = ((n * hp + y + before[0]) * wp + x_ + before[1]) * c;
                padded[to..to + c].copy_from_slice(&x[from..from + c]);
            }
        }
    }
    padded
}

#[test]
fn same_padding_is_an_unpadded_convolution_of_the_input_padded_by_hand() {
    let (batch, [h, w]) = (2, [5, 6]);
    for (kernel, dilation, groups) in [
        ([2, 2], [1, 1], 1),
        ([4, 3], [1, 2], 1),
        ([2, 4], [3, 1], 2),
        ([4, 4], [1, 1], 4),
    ] {
        let config = same(4, 4, kernel, dilation, groups);
        let unpadded = Conv2dConfig {
            padding: [0, 0],
            padding_end: [0, 0],
            ..config.clone()
        };
        let (before, after) = (config.padding, config.padding_end);
        let padded_hw = [0, 1].map(|i| before[i] + [h, w][i] + after[i]);
        let mut layer = Conv2d::new("same", &config, [h, w], &mut init_rng(3)).unwrap();
        let mut reference = Conv2d::new("ref", &unpadded, padded_hw, &mut init_rng(3)).unwrap();
        let case = format!("kernel {kernel:?}, dilation {dilation:?}, groups {groups}");
        assert_eq!(layer.output_shape(), layer.input_shape(), "{case}");
        assert_eq!(layer.output_shape(), reference.output_shape(), "{case}");

        let mut rng = Rand(7);
        let x = rng.vec(batch * 4 * h * w);
        let xp = zero_pad(&x, [batch, h, w, 4], before, after);
        let n_out = batch * layer.output_shape().numel();
        let (mut y, mut y_ref) = (vec![0.0; n_out], vec![0.0; n_out]);
        layer.forward(&x, &mut y, batch, Mode::Train).unwrap();
        reference
            .forward(&xp, &mut y_ref, batch, Mode::Train)
            .unwrap();
        common::fixture::assert_close(&format!("{case} output"), &y, &y_ref, 1e-6, 1e-6);

        let dy = rng.vec(n_out);
        let mut dx = vec![0.0; x.len()];
        let mut dx_padded = vec![0.0; xp.len()];
        layer.backward(&x, &y, &dy, Some(&mut dx), batch).unwrap();
        reference
            .backward(&xp, &y_ref, &dy, Some(&mut dx_padded), batch)
            .unwrap();
        // The input's gradient is the padded input's, less the padding.
        let (hp, wp) = (padded_hw[0], padded_hw[1]);
        let inner: Vec<f32> = (0..batch * h * w)
            .flat_map(|p| {
                let (n, y_, x_) = (p / (h * w), p / w % h, p % w);
                let at = ((n * hp + y_ + before[0]) * wp + x_ + before[1]) * 4;
                dx_padded[at..at + 4].to_vec()
            })
            .collect();
        common::fixture::assert_close(&format!("{case} input grad"), &dx, &inner, 1e-5, 1e-5);
        let grads = |l: &mut Conv2d| {
            let mut all = Vec::new();
            l.visit(&mut |e| {
                if let Entry::Param { param, .. } = e {
                    all.extend(param.grad.iter().copied());
                }
            });
            all
        };
        common::fixture::assert_close(
            &format!("{case} parameter grads"),
            &grads(&mut layer),
            &grads(&mut reference),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn a_padded_input_past_the_limit_is_refused_before_allocating() {
    // The output keeps the 4x4 input's size; the padded copy would be (4 + 2^20)^2 pixels.
    let huge = same(1, 1, [2, 2], [1 << 20, 1 << 20], 1);
    let err = Conv2d::new("huge", &huge, [4, 4], &mut init_rng(0)).expect_err("refused");
    assert!(err.to_string().contains("padded input"), "{err}");
}

/// Even-kernel `same` convolutions, dense, depthwise and reflect-padded, then a classifier.
fn network() -> NetworkDef {
    let layer = |name: &str, config| LayerDef {
        name: name.to_owned(),
        config,
        inputs: Vec::new(),
    };
    let reflect = Conv2dConfig {
        padding_mode: PaddingMode::Reflect,
        ..same(8, 6, [2, 4], [3, 1], 2)
    };
    NetworkDef {
        input: [3, 9, 10],
        layers: vec![
            layer("stem", LayerConfig::Conv2d(same(3, 8, [2, 2], [1, 1], 1))),
            layer("r0", LayerConfig::Relu),
            layer("dw", LayerConfig::Conv2d(same(8, 8, [4, 4], [1, 1], 8))),
            layer("grouped", LayerConfig::Conv2d(reflect)),
            layer("r1", LayerConfig::Relu),
            layer("flat", LayerConfig::FLATTEN),
            layer(
                "fc",
                LayerConfig::Linear(LinearConfig {
                    in_features: 6 * 9 * 10,
                    out_features: 5,
                    bias: true,
                }),
            ),
        ],
    }
}

fn train(threads: usize, batch: usize) -> Vec<u32> {
    common::train_bits(&network(), [3, 9, 10], 5, threads, batch)
}

#[test]
fn bit_identical_whatever_the_thread_count() {
    for batch in [1, 6, 17] {
        let one = train(1, batch);
        assert_eq!(one, train(2, batch), "batch {batch}: 1 vs 2 threads");
        assert_eq!(one, train(3, batch), "batch {batch}: 1 vs 3 threads");
    }
}
