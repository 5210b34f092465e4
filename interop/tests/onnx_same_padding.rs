//! `padding: same` with an odd total through ONNX: exported as a `Conv` with uneven `pads`
//! `[top, left, bottom, right]` (what `torch.onnx.export(dynamo=True)` writes), imported back to
//! the same layers and weights; `auto_pad: SAME_UPPER` (what the TorchScript exporter writes)
//! imported as `same` too, and the paddings PyTorch cannot write refused with a message.

use std::collections::BTreeMap;

use cnnc_interop::export::{ExportOptions, export_proto};
use cnnc_interop::import::import_proto;
use cnnc_interop::proto::attribute_proto::AttributeType;
use cnnc_interop::proto::{AttributeProto, ModelProto};
use cnnc_runtime::Network;
use cnnc_runtime::weights::{TensorData, state_dict};
use cnnc_spec::{Format, Source};

/// An even-kernel `same` network in zeros mode, as ONNX carries it in the `Conv` alone.
const SPEC: &str = "\
model: Even
input: [3, 7, 8]
layers:
  - conv2d: {name: a, out_channels: 4, kernel_size: 2, padding: same}
  - conv2d: {name: b, out_channels: 4, kernel_size: [4, 3], dilation: [1, 2], padding: same, groups: 2}
  - conv2d: {name: c, out_channels: 4, kernel_size: 3, padding: same}
  - flatten
  - linear: {name: fc, out_features: 3}
";

fn exported() -> (cnnc_spec::CheckedModel, ModelProto) {
    let source = Source::new("even.yaml", SPEC, Format::Yaml);
    let (model, _) = cnnc_spec::compile(&source).expect("the spec checks");
    let mut net = Network::from_model(&model, 3).expect("the network builds");
    let weights: BTreeMap<String, Vec<f32>> = state_dict(&mut net)
        .into_iter()
        .filter_map(|(name, t)| match t {
            TensorData::F32(a) => Some((name, a.iter().copied().collect())),
            _ => None,
        })
        .collect();
    let proto = export_proto(&model, &weights, &ExportOptions::default()).expect("exports");
    (model, proto)
}

/// The `Conv` node named `name`'s attributes.
fn conv_attributes<'a>(proto: &'a mut ModelProto, name: &str) -> &'a mut Vec<AttributeProto> {
    let graph = proto.graph.as_mut().expect("a graph");
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "Conv" && n.name == name)
        .unwrap_or_else(|| panic!("a Conv named {name}"));
    &mut node.attribute
}

fn ints<'a>(attributes: &'a [AttributeProto], name: &str) -> &'a [i64] {
    &attributes
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("attribute {name}"))
        .ints
}

fn set_ints(attributes: &mut [AttributeProto], name: &str, values: &[i64]) {
    let attribute = attributes
        .iter_mut()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("attribute {name}"));
    attribute.ints = values.to_vec();
}

#[test]
fn uneven_pads_are_exported_and_imported_back() {
    let (model, mut proto) = exported();
    // Kernel 2: one pixel in all, after the input. Kernel [4, 3] dilated [1, 2]: 3 rows (1 above,
    // 2 below) and 4 columns (2 each side). Kernel 3: one pixel on each side, as always.
    assert_eq!(ints(conv_attributes(&mut proto, "a"), "pads"), [0, 0, 1, 1]);
    assert_eq!(ints(conv_attributes(&mut proto, "b"), "pads"), [1, 2, 2, 2]);
    assert_eq!(ints(conv_attributes(&mut proto, "c"), "pads"), [1, 1, 1, 1]);
    let imported = import_proto(&proto, "Even").expect("imports");
    let configs = |m: &cnnc_core::Model| -> Vec<cnnc_core::LayerConfig> {
        m.layers().iter().map(|l| l.config().clone()).collect()
    };
    assert_eq!(configs(&imported.model), configs(&model));
    assert!(
        imported.yaml.contains("padding: same"),
        "the spec says same: {}",
        imported.yaml
    );
}

#[test]
fn auto_pad_same_upper_is_same_padding() {
    let (model, mut proto) = exported();
    let attributes = conv_attributes(&mut proto, "a");
    attributes.retain(|a| a.name != "pads");
    attributes.push(AttributeProto {
        name: "auto_pad".into(),
        r#type: AttributeType::String as i32,
        s: b"SAME_UPPER".to_vec(),
        ..AttributeProto::default()
    });
    let imported = import_proto(&proto, "Even").expect("imports");
    assert_eq!(
        imported.model.layers()[0].config(),
        model.layers()[0].config()
    );

    // SAME_LOWER pads the odd pixel before the input, which no PyTorch layer does.
    let attributes = conv_attributes(&mut proto, "a");
    attributes
        .iter_mut()
        .find(|a| a.name == "auto_pad")
        .expect("auto_pad")
        .s = b"SAME_LOWER".to_vec();
    let err = import_proto(&proto, "Even")
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("auto_pad SAME_LOWER") && err.contains("SAME_UPPER"),
        "{err}"
    );
}

#[test]
fn uneven_pads_other_than_sames_are_refused() {
    for pads in [[1, 0, 0, 0], [0, 0, 1, 2], [1, 1, 0, 0]] {
        let (_, mut proto) = exported();
        set_ints(conv_attributes(&mut proto, "a"), "pads", &pads);
        let err = import_proto(&proto, "Even")
            .expect_err("refused")
            .to_string();
        assert!(err.contains(&format!("pads {pads:?}")), "{pads:?}: {err}");
        assert!(err.contains("padding='same'"), "{err}");
    }
    // Uneven pads with a stride: PyTorch's `same` refuses strides.
    let (_, mut proto) = exported();
    set_ints(conv_attributes(&mut proto, "a"), "strides", &[1, 2]);
    let err = import_proto(&proto, "Even")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("pads [0, 0, 1, 1]"), "{err}");
}
