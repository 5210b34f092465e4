//! Trains the seed model (`models/custom_cnn.yaml`, PyTorch's CustomCNN for CIFAR-10) for a few
//! steps on random data with Adam, then saves its weights as safetensors: the whole user-facing
//! API of a `cnn_model!` model in one page. Run with `cargo run --release --example train_seed`.

use cnnc::ndarray::Array4;
use cnnc::runtime::optim::{Adam, AdamConfig, Optimizer};
use cnnc::runtime::typed::Images;

cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");

/// Pseudo-random pixels in [-1, 1) and labels in 0..10, the same for every run.
fn random_batch(batch: usize, step: u64) -> (Array4<f32>, Vec<usize>) {
    let mut state = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*: good enough for test data, and no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as u32
    };
    let [c, h, w] = CustomCnn::INPUT_SHAPE;
    let pixels =
        Array4::from_shape_simple_fn((batch, c, h, w), || next() as f32 / (1 << 23) as f32 - 1.0);
    let labels = (0..batch)
        .map(|_| next() as usize % CustomCnn::CLASSES)
        .collect();
    (pixels, labels)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = CustomCnn::new(0);
    let mut adam = Adam::new(AdamConfig::adam(1e-3))?;
    println!(
        "{} ({} parameters) from {}",
        CustomCnn::NAME,
        CustomCnn::PARAM_COUNT,
        CustomCnn::SOURCE
    );

    // One fixed batch, so the loss must fall as the model memorises it.
    let (pixels, labels) = random_batch(32, 1);
    let images = Images::<3, 32, 32>::from_nchw(pixels.view())?;
    let mut losses = Vec::new();
    for step in 0..8 {
        let loss = model.train_step(&images, &labels)?;
        adam.step(&mut model)?;
        println!("step {step}: loss {loss:.4}");
        losses.push(loss);
    }
    if losses.last() >= losses.first() {
        return Err(format!("the loss did not fall: {losses:?}").into());
    }

    let logits = model.predict(pixels.view())?;
    let correct = logits
        .outer_iter()
        .zip(&labels)
        .filter(|(row, label)| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                == Some(**label)
        })
        .count();
    println!("train accuracy on the batch: {correct}/{}", labels.len());

    let path = std::env::temp_dir().join("cnnc_train_seed.safetensors");
    model.save(&path)?;
    println!("saved {}", path.display());
    Ok(())
}

#[test]
fn trains_and_saves() {
    main().expect("the example runs");
}
