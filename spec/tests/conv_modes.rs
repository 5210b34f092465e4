//! PyTorch's convolution modes as the checker resolves them: `padding: same|valid` to pixels
//! and `groups` to the weight's shape and the mult-adds, both languages alike.
//!
//! Expected values from PyTorch 2.15 (tools/.venv):
//!   nn.Conv2d(3, 16, 3, padding='same')._reversed_padding_repeated_twice                 # [1, 1, 1, 1]
//!   nn.Conv2d(3, 16, (5, 3), dilation=(1, 2), padding='same')._reversed_padding_repeated_twice  # [2, 2, 2, 2]
//!   nn.Conv2d(16, 32, 3, groups=16).weight.shape                                          # [32, 1, 3, 3]
//!   torchinfo counts that layer at 32x32 as (weight + bias elements) * output positions: (288 + 32) * 1024

use cnnc_spec::{Format, LayerConfig, Source};

fn conv_padding(text: &str, format: Format) -> Vec<[usize; 2]> {
    let (model, _) = cnnc_spec::compile(&Source::new("t", text.to_owned(), format))
        .unwrap_or_else(|d| panic!("{d:?}"));
    model
        .layers()
        .iter()
        .filter_map(|l| match l.config() {
            LayerConfig::Conv2d(c) => Some(c.padding),
            _ => None,
        })
        .collect()
}

#[test]
fn padding_words_resolve_to_pytorchs_pixels() {
    let yaml = "input: [3, 32, 32]\nlayers:\n  - conv2d: {out_channels: 16, kernel_size: 3, padding: same}\n  - conv2d: {out_channels: 16, kernel_size: [5, 3], dilation: [1, 2], padding: same}\n  - conv2d: {out_channels: 16, kernel_size: 3, padding: valid}\n";
    let dsl = "input (3, 32, 32)\nconv2d(out_channels=16, kernel_size=3, padding=same)\nconv2d(out_channels=16, kernel_size=(5, 3), dilation=(1, 2), padding=same)\nconv2d(out_channels=16, kernel_size=3, padding=valid)\n";
    let expected = vec![[1, 1], [2, 2], [0, 0]];
    assert_eq!(conv_padding(yaml, Format::Yaml), expected);
    assert_eq!(conv_padding(dsl, Format::Dsl), expected);
}

#[test]
fn depthwise_weight_and_mult_adds_follow_torchinfo() {
    let text = "input: [16, 32, 32]\nlayers:\n  - conv2d: {name: dw, out_channels: 32, kernel_size: 3, padding: 1, groups: 16}\n";
    let (model, _) = cnnc_spec::compile(&Source::new("t", text.to_owned(), Format::Yaml)).unwrap();
    let shapes: Vec<&[usize]> = model.tensors().map(|t| t.shape.as_slice()).collect();
    assert_eq!(shapes, [&[32, 1, 3, 3][..], &[32][..]]);
    assert_eq!(model.total_macs(), (32 * 9 + 32) * 32 * 32);
}
