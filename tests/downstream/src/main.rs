//! A user's crate: the model is generated from `model.cnn` at compile time and runs on a batch of
//! zeros. Prints the parameter count and the logits' shape.

cnnc::cnn_model!(pub Model, "model.cnn");

fn main() -> Result<(), cnnc::Error> {
    let model = Model::new(0);
    let [c, h, w] = Model::INPUT_SHAPE;
    let logits = model.predict(cnnc::ndarray::Array4::zeros((2, c, h, w)).view())?;
    println!("params {} logits {:?}", Model::PARAM_COUNT, logits.dim());
    Ok(())
}
