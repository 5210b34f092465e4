//! `cnnc codegen`'s output builds as a standalone module (the seed model's and a graph model's
//! source, committed in `tests/generated/` and kept current by `codegen_cli.rs`) and behaves
//! exactly like the `cnn_model!` expansion of the same spec.

mod generated {
    include!("generated/custom_cnn.rs");
}

mod generated_graph {
    include!("generated/graph_mix.rs");
}

use cnnc::ndarray::Array4;
use cnnc::runtime::typed::Images;
use generated::CustomCNN;

cnnc::cnn_model!(FromMacro, "models/custom_cnn.yaml");
cnnc::cnn_model!(GraphFromMacro, "tests/generated/graph_mix.cnn");

#[test]
fn the_generated_module_matches_the_macro() {
    assert_eq!(CustomCNN::PARAM_COUNT, FromMacro::PARAM_COUNT);
    assert_eq!(CustomCNN::SOURCE, FromMacro::SOURCE);
    let (mut module, mut expanded) = (CustomCNN::new(5), FromMacro::new(5));
    let x = Array4::from_shape_fn((3, 3, 32, 32), |(n, c, h, w)| {
        ((n + c * 3 + h * 5 + w * 7) % 11) as f32 - 5.0
    });
    let images = Images::<3, 32, 32>::from_nchw(x.view()).unwrap();
    let a = module.train_step(&images, &[1, 2, 3]).unwrap();
    let b = expanded.train_step(&images, &[1, 2, 3]).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    let (a, b) = (
        module.predict(x.view()).unwrap(),
        expanded.predict(x.view()).unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn the_generated_graph_module_matches_the_macro() {
    use generated_graph::GraphMix;
    assert_eq!(GraphMix::PARAM_COUNT, GraphFromMacro::PARAM_COUNT);
    let (mut module, mut expanded) = (GraphMix::new(3), GraphFromMacro::new(3));
    let x = Array4::from_shape_fn((2, 3, 8, 8), |(n, c, h, w)| {
        ((n * 2 + c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    let images = Images::<3, 8, 8>::from_nchw(x.view()).unwrap();
    let a = module.train_step(&images, &[4, 0]).unwrap();
    let b = expanded.train_step(&images, &[4, 0]).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(
        module.predict(x.view()).unwrap(),
        expanded.predict(x.view()).unwrap()
    );
}
