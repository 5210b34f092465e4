//! Bad input at the library boundary of a generated model is an error in the user's terms (the
//! model's input shape and the batch's, the sample holding a NaN, how many labels were given),
//! never a panic, a NaN loss or an internal buffer's name.

use cnnc::Error;
use cnnc::ndarray::Array4;
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(LeNet5, "models/lenet5.cnn");

#[test]
fn predict_names_both_shapes_per_sample() {
    let model = LeNet5::new(0);
    let err = model
        .predict(Array4::zeros((4, 3, 32, 32)).view())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model takes inputs of shape [1, 28, 28] per sample, but this batch has shape \
         [4, 3, 32, 32] (4 samples of [3, 32, 32])"
    );
}

#[test]
fn non_finite_inputs_are_errors_not_nan_results() {
    let model = LeNet5::new(0);
    let mut x = Array4::<f32>::zeros((2, 1, 28, 28));
    x[[1, 0, 5, 7]] = f32::NAN;
    let err = model.predict(x.view()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteInput {
                sample: 1,
                channel: 0,
                row: 5,
                column: 7,
                ..
            }
        ),
        "{err}"
    );
    x[[1, 0, 5, 7]] = f32::INFINITY;
    let err = Images::<1, 28, 28>::from_nchw(x.view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input sample 1 holds inf at [0, 5, 7] (channel, row, column); inputs must be finite \
         numbers"
    );
}

#[test]
fn label_counts_and_ranges_are_checked_in_the_users_terms() {
    let mut model = LeNet5::new(0);
    let x = Images::<1, 28, 28>::zeros(3).unwrap();
    let err = model.train_step(&x, &[0, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 labels for a batch of 3 samples; give one class index per sample"
    );
    assert!(!err.to_string().contains("dlogits"));
    let err = model.train_step(&x, &[0, 1, 10]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "label 10 at batch index 2 is out of range for 10 classes"
    );
}
