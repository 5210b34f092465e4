//! End-to-end tests of `cnnc predict`: class names from the checkpoint metadata, resizing and
//! colour conversion with notices, `--dataset` for weights without metadata (PyTorch's), and
//! refusals of unreadable images.

mod support;

use std::path::Path;

use support::*;

#[test]
fn predicts_with_class_names_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("folder");
    write_folder(&folder, 8);
    let spec = tiny_spec(dir.path(), "rgb.cnn", 3, 8);
    let out = dir.path().join("run");
    let trained = cnnc(&[
        "train",
        arg(&spec),
        "--dataset",
        "folder",
        "--data",
        arg(&folder),
        "--out",
        arg(&out),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.05",
    ]);
    assert_status(&trained, 0);

    // A bright image twice the training size, and a dark grey one.
    let day = dir.path().join("day.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([200, 200, 180]))
        .save(&day)
        .expect("png");
    let night = dir.path().join("night.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([25]))
        .save(&night)
        .expect("png");
    let weights = out.join("model.safetensors");
    let output = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&weights),
        arg(&day),
        arg(&night),
        "--top-k",
        "2",
        "--format",
        "json",
    ]);
    assert_status(&output, 0);
    let notes = stderr(&output);
    assert!(
        notes.contains("day.png: resized from 16x16 to 8x8"),
        "{notes}"
    );
    assert!(notes.contains("night.png: converted to RGB"), "{notes}");
    let results: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(results[0]["top"][0]["class"], "day");
    assert_eq!(results[1]["top"][0]["class"], "night");
    for result in results.as_array().expect("results") {
        let top = result["top"].as_array().expect("top");
        assert_eq!(top.len(), 2);
        let p: Vec<f64> = top
            .iter()
            .map(|t| t["probability"].as_f64().expect("p"))
            .collect();
        assert!(p[0] >= p[1] && p[0] + p[1] <= 1.0 + 1e-9, "{p:?}");
    }

    let text = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&weights),
        arg(&night),
    ]);
    assert_status(&text, 0);
    let lines: Vec<String> = stdout(&text).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "the image, then the top 3 classes");
    assert!(lines[1].starts_with("  1. night"), "{lines:?}");
    assert!(lines[3].starts_with("  3. output "), "{lines:?}");
}

#[test]
fn pytorch_weights_take_names_and_preparation_from_dataset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let photo = dir.path().join("photo.jpg");
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .save(&photo)
    .expect("jpeg");
    let output = cnnc(&[
        "predict",
        "models/custom_cnn.yaml",
        "--weights",
        "tests/fixtures/custom_cnn_state_dict.safetensors",
        "--dataset",
        "cifar10",
        arg(&photo),
        "--format",
        "json",
    ]);
    assert_status(&output, 0);
    assert!(stderr(&output).contains("resized from 40x30 to 32x32"));
    let results: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let cifar = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    for t in results[0]["top"].as_array().expect("top") {
        let index = t["index"].as_u64().expect("index") as usize;
        assert_eq!(t["class"], cifar[index]);
    }
}

#[test]
fn unreadable_images_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "grey.cnn", 1, 8);
    let weights = dir.path().join("w.safetensors");
    // Weights of the right shapes, saved by the runtime itself.
    let checked = cnnc::spec::load(&spec).expect("spec");
    let mut net = cnnc::runtime::Network::from_model(&checked, 0).expect("net");
    cnnc::runtime::weights::save(&mut net, &weights, &Default::default()).expect("saved");

    let broken = write(dir.path(), "broken.png", "not a png");
    let output = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&weights),
        arg(&broken),
    ]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("broken.png"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("records no normalisation"));

    let missing = Path::new("no/such/image.png");
    let output = cnnc(&[
        "predict",
        arg(&spec),
        "--weights",
        arg(&weights),
        arg(missing),
    ]);
    assert_status(&output, 2);
    assert!(stderr(&output).contains("no/such/image.png"));
}
