//! The Fashion-MNIST sample committed under `data/fashion-mnist-sample/` loads, is class-balanced
//! and holds the images `tools/make_sample.py` selected (pixel sums computed by that script's
//! output with Python's `sum()` over the decompressed payloads).

use std::path::Path;

use cnnc_data::{DataError, DatasetKind, ImageShape, SAMPLE_DIR, fashion_mnist_sample};

#[test]
fn the_shipped_sample_is_the_balanced_subset() {
    let splits = fashion_mnist_sample(Path::new(SAMPLE_DIR)).unwrap();
    assert_eq!(splits.train.shape(), ImageShape::new(1, 28, 28));
    assert_eq!((splits.train.len(), splits.test.len()), (6000, 1000));
    assert_eq!(splits.train.class_counts(), vec![600; 10]);
    assert_eq!(splits.test.class_counts(), vec![100; 10]);
    // The originals' first labels, kept in order.
    assert_eq!(
        &splits.train.labels()[..10],
        &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    );
    assert_eq!(&splits.test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    let sum = |p: &[u8]| p.iter().map(|&v| u64::from(v)).sum::<u64>();
    assert_eq!(sum(splits.train.images()), 344_160_204);
    assert_eq!(sum(splits.test.images()), 56_973_981);
    assert_eq!(
        DatasetKind::Sample.load(Path::new(SAMPLE_DIR)).unwrap(),
        splits
    );
}

#[test]
fn an_unbalanced_folder_is_not_taken_for_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        &[0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1][..],
        &[7],
    ]
    .concat();
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 1, 3];
    for split in ["train", "t10k"] {
        std::fs::write(
            dir.path().join(format!("{split}-images-idx3-ubyte")),
            &images,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{split}-labels-idx1-ubyte")),
            labels,
        )
        .unwrap();
    }
    let err = fashion_mnist_sample(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Invalid { .. }));
    assert!(err.to_string().contains("expected 600 of each"), "{err}");
}
