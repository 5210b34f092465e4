//! Data files: `.npy` arrays, IDX images and labels (raw or gzip), CIFAR-10 batches and PNG/JPEG
//! images. Whatever parses has exactly the size its header claims; whatever fails names the file.

use std::io::Cursor;
use std::path::Path;

use cnnc_data::{ImageShape, cifar, folder, idx};
use cnnc_runtime::npy as npy_format;

/// Bytes as a `.npy` file, as `cnnc run` reads inputs.
pub fn npy(data: &[u8]) {
    let path = Path::new("fuzz.npy");
    let array = match npy_format::parse_f32(data, path) {
        Ok(array) => array,
        Err(error) => return names(&error, path),
    };
    assert!(array.is_standard_layout(), "not in C order");
    // The data must be exactly as long as the header says: one byte more or less is refused.
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        npy_format::parse_f32(&longer, path).is_err(),
        "trailing byte accepted"
    );
    if !array.is_empty() {
        assert!(
            npy_format::parse_f32(&data[..data.len() - 1], path).is_err(),
            "truncated data accepted"
        );
    }
}

/// Bytes as an IDX image file and as an IDX label file (raw or gzip, told by the content).
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz-idx-ubyte");
    match idx::parse_idx_images(data, path) {
        Ok(images) => {
            let shape = images.shape;
            assert!(shape.channels == 1 && shape.height > 0 && shape.width > 0);
            let claimed = images
                .count
                .checked_mul(shape.height)
                .and_then(|n| n.checked_mul(shape.width));
            assert_eq!(
                claimed,
                Some(images.pixels.len()),
                "{} images of {shape} but {} pixels",
                images.count,
                images.pixels.len()
            );
        }
        Err(error) => names(&error, path),
    }
    match idx::parse_idx_labels(data, path, 10) {
        Ok(labels) => {
            assert!(labels.iter().all(|&l| l < 10), "a label out of range");
            let all =
                idx::parse_idx_labels(data, path, 256).expect("any byte is one of 256 labels");
            assert_eq!(all, labels);
        }
        Err(error) => names(&error, path),
    }
}

/// Bytes as a CIFAR-10 binary batch.
pub fn cifar(data: &[u8]) {
    let path = Path::new("fuzz_batch.bin");
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    match cifar::parse_cifar_batch(data, path, 10, &mut images, &mut labels) {
        Ok(()) => {
            assert_eq!(labels.len() * 3073, data.len(), "records miscounted");
            assert_eq!(images.len(), labels.len() * 3072, "pixels miscounted");
            assert!(labels.iter().all(|&l| l < 10), "a label out of range");
        }
        Err(error) => names(&error, path),
    }
}

/// Bytes as an image file, decoded as the image-folder dataset and `cnnc predict` do, then
/// converted to model inputs as `cnnc predict` does: resized to CIFAR-10's and MNIST's shapes,
/// and kept at its own size (the image-folder layout).
pub fn image(data: &[u8]) {
    let path = Path::new("fuzz.png");
    let image = match folder::decode_image(Cursor::new(data), path) {
        Ok(image) => image,
        Err(error) => return names(&error, path),
    };
    let (height, width) = (image.height() as usize, image.width() as usize);
    let own = [
        ImageShape::new(1, height, width),
        ImageShape::new(3, height, width),
    ];
    let small = [
        ImageShape::new(3, 32, 32),
        ImageShape::new(1, 28, 28),
        ImageShape::new(3, 5, 7),
    ];
    for shape in small.into_iter().chain(own) {
        match folder::image_to_chw(&image, shape) {
            Ok(pixels) => assert_eq!(
                pixels.len(),
                shape.len(),
                "{shape} converted to {} values",
                pixels.len()
            ),
            // Only an image too large for any model input is refused.
            Err(error) => assert!(
                shape.len() as u64 > 1 << 31 && own.contains(&shape),
                "{error}"
            ),
        }
    }
}

/// Asserts that an error message names the file it is about.
fn names(error: &dyn std::error::Error, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message does not name the file: {message}"
    );
}
