//! `cnnc codegen`'s output builds as a standalone module (the seed model's source, committed in
//! `tests/generated/` and kept current by `codegen_cli.rs`) and behaves exactly like the
//! `cnn_model!` expansion of the same spec.

mod generated {
    include!("generated/custom_cnn.rs");
}

use cnnc::ndarray::Array4;
use cnnc::runtime::typed::Images;
use generated::CustomCNN;

cnnc::cnn_model!(FromMacro, "models/custom_cnn.yaml");

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
