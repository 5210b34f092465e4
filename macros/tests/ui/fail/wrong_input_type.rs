// Feeding a batch of the wrong shape to a generated model does not compile.
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(LeNet5, "models/lenet5.cnn");

fn main() {
    let mut model = LeNet5::new(0);
    let cifar = Images::<3, 32, 32>::zeros(1).unwrap();
    let _ = model.forward(&cifar);
}
