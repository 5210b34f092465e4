//! The data loader's batches feed a generated model without a layout trap: the loader writes
//! PyTorch's `[N, C, H, W]`, `Images::from_nchw_slice` reads exactly that, and the result equals
//! `predict` on the same buffer viewed as an NCHW array. Reading the buffer as the runtime's own
//! layout takes a constructor that says so (`view_nhwc`) and gives other logits: the trap
//! that scored 10 % on Fashion-MNIST with no error when the only constructor was `from_slice`.
#![cfg(feature = "data")]

use std::path::Path;

use cnnc::data::{Loader, LoaderConfig, Transform, fashion_mnist_sample};
use cnnc::ndarray::ArrayView4;
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(CustomCnn, "models/custom_cnn.yaml");

#[test]
fn loader_batches_feed_the_model_in_their_own_layout() -> Result<(), Box<dyn std::error::Error>> {
    let splits = fashion_mnist_sample(Path::new(cnnc::data::SAMPLE_DIR))?;
    let test = &splits.test;
    let [c, h, w] = CustomCnn::INPUT_SHAPE;
    let transform = Transform::new(
        test.shape(),
        test.normalization(),
        cnnc::data::ImageShape::new(c, h, w),
    )?;
    let mut loader = Loader::new(test, transform, LoaderConfig::eval(16))?;
    let mut pixels = vec![0f32; 16 * loader.image_len()];
    let mut labels = vec![0usize; 16];
    let n = loader
        .next_batch(&mut pixels, &mut labels)?
        .ok_or("the sample's test split has images")?;
    assert_eq!(n, 16);

    let mut model = CustomCnn::new(7);
    let nchw = ArrayView4::from_shape((n, c, h, w), &pixels[..n * c * h * w])?;
    let expected = model.predict(nchw)?;

    let images = Images::<3, 32, 32>::from_nchw_slice(&pixels, n)?;
    assert_eq!(images.to_nchw(), nchw, "the layout is kept");
    let typed = model.forward(&images)?.to_array();
    assert_eq!(
        typed, expected,
        "typed and untyped entry points agree bit for bit"
    );

    // The same floats read as the runtime's layout are other images: it takes a constructor
    // that names that layout to get there.
    let scrambled = Images::<3, 32, 32, &[f32]>::view_nhwc(&pixels, n)?;
    let wrong = model.forward(&scrambled)?.to_array();
    assert_ne!(wrong, expected);

    // A buffer too short for the batch is an error naming both lengths, not a partial read.
    let err = Images::<3, 32, 32>::from_nchw_slice(&pixels[..100], 1)
        .expect_err("100 floats are not one 3x32x32 image");
    assert_eq!(
        err.to_string(),
        "the buffer holds 100 values, but 1 samples of shape [3, 32, 32] need 3072"
    );
    Ok(())
}
