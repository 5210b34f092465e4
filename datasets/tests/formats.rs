//! Dataset readers against small files written here in each exact format (IDX raw and gzip,
//! CIFAR-10 binary, PNG/JPEG folders): content round-trips, and every malformed input is refused
//! with an error naming the file and the problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use cnnc_data::idx::{load_idx, read_idx_images, read_idx_labels};
use cnnc_data::{
    CIFAR10_CLASSES, DataError, FASHION_MNIST_CLASSES, ImageShape, Normalization, cifar10,
    fashion_mnist, image_folder, image_folder_splits, mnist,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use image::{GrayImage, Rgb, RgbImage};

fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Three 2x3 images with distinct pixels, labels 7, 0, 9.
fn tiny_idx() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..18).map(|i| i * 13).collect();
    let images = idx_bytes(0x803, &[3, 2, 3], &pixels);
    let labels = idx_bytes(0x801, &[3], &[7, 0, 9]);
    (images, labels, pixels)
}

fn fashion_names() -> Vec<String> {
    FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn idx_raw_and_gzip_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, pixels) = tiny_idx();
    // Compression is detected from the content: the gzip file is deliberately named without .gz.
    for (name, im, lb) in [
        ("raw", images.clone(), labels.clone()),
        ("gz", gzip(&images), gzip(&labels)),
    ] {
        let im = write(dir.path(), &format!("{name}-images"), &im);
        let lb = write(dir.path(), &format!("{name}-labels"), &lb);
        let data = load_idx(&im, &lb, fashion_names(), Normalization::fashion_mnist()).unwrap();
        assert_eq!(data.shape(), ImageShape::new(1, 2, 3));
        assert_eq!(data.images(), pixels.as_slice());
        assert_eq!(data.labels(), &[7, 0, 9]);
        assert_eq!(data.image(1).unwrap(), &pixels[6..12]);
        assert_eq!(data.class_names()[9], "Ankle boot");
    }
}

#[test]
fn fashion_mnist_and_mnist_find_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, pixels) = tiny_idx();
    write(dir.path(), "train-images-idx3-ubyte.gz", &gzip(&images));
    write(dir.path(), "train-labels-idx1-ubyte.gz", &gzip(&labels));
    write(dir.path(), "t10k-images-idx3-ubyte", &images);
    write(dir.path(), "t10k-labels-idx1-ubyte", &labels);
    let splits = fashion_mnist(dir.path()).unwrap();
    assert_eq!(splits.train.images(), pixels.as_slice());
    assert_eq!(splits.test.labels(), &[7, 0, 9]);
    assert_eq!(
        splits.train.normalization(),
        &Normalization::fashion_mnist()
    );

    // torchvision's layout, with the dotted names some MNIST mirrors use.
    let tv = tempfile::tempdir().unwrap();
    write(tv.path(), "MNIST/raw/train-images.idx3-ubyte", &images);
    write(tv.path(), "MNIST/raw/train-labels.idx1-ubyte", &labels);
    write(tv.path(), "MNIST/raw/t10k-images.idx3-ubyte", &images);
    write(tv.path(), "MNIST/raw/t10k-labels.idx1-ubyte", &labels);
    let splits = mnist(tv.path()).unwrap();
    assert_eq!(splits.test.class_names()[7], "7");
    assert_eq!(splits.test.normalization(), &Normalization::mnist());
}

#[test]
fn a_raw_idx_file_and_its_gzip_twin_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, pixels) = tiny_idx();
    // torchvision keeps both side by side: identical twins load.
    for split in ["train", "t10k"] {
        for (name, bytes) in [("images-idx3", &images), ("labels-idx1", &labels)] {
            let stem = format!("FashionMNIST/raw/{split}-{name}-ubyte");
            write(dir.path(), &stem, bytes);
            write(dir.path(), &format!("{stem}.gz"), &gzip(bytes));
        }
    }
    let splits = fashion_mnist(dir.path()).unwrap();
    assert_eq!(splits.train.images(), pixels.as_slice());

    // Twins that differ are refused, naming both: neither is silently preferred.
    let mut other = pixels.clone();
    other[4] ^= 1;
    let stale = idx_bytes(0x803, &[3, 2, 3], &other);
    let gz = write(
        dir.path(),
        "FashionMNIST/raw/t10k-images-idx3-ubyte.gz",
        &gzip(&stale),
    );
    let raw = gz.with_extension("");
    let err = fashion_mnist(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict { path, other } if *path == raw && *other == gz),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{} and {} are both present but hold different data; cnnc cannot tell which one is \
             meant: remove the stale one (or fetch both again)",
            raw.display(),
            gz.display()
        )
    );
}

#[test]
fn idx_missing_files_name_the_place_and_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let err = fashion_mnist(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::NotFound { .. }));
    assert!(
        text.contains("train-images-idx3-ubyte.gz not found"),
        "{text}"
    );
    assert!(text.contains("fashion-mnist.s3-website"), "{text}");
    assert!(text.contains("dataset-fashion-mnist"), "{text}");
}

#[test]
fn idx_truncated_and_trailing_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _, _) = tiny_idx();
    let cases = [
        ("short", images[..images.len() - 1].to_vec(), 18, 17),
        ("long", [images.as_slice(), &[0, 0]].concat(), 18, 20),
    ];
    for (name, bytes, expected, found) in cases {
        for compressed in [false, true] {
            let bytes = if compressed {
                gzip(&bytes)
            } else {
                bytes.clone()
            };
            let path = write(dir.path(), &format!("{name}-{compressed}"), &bytes);
            let err = read_idx_images(&path).unwrap_err();
            match &err {
                DataError::Length {
                    path: p,
                    expected: e,
                    found: f,
                    ..
                } => {
                    assert_eq!((p, *e, *f), (&path, expected, found), "{err}");
                }
                other => panic!("{name}: expected a length error, got {other}"),
            }
            let text = err.to_string();
            let word = if found < expected {
                "truncated"
            } else {
                "trailing data"
            };
            assert!(text.contains(word) && text.contains(name), "{text}");
        }
    }
}

#[test]
fn idx_short_header_and_zero_side_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "stub", &[0, 0, 8, 3, 0]);
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Length {
                what: "header",
                expected: 16,
                found: 5,
                ..
            }
        ),
        "{err}"
    );
    let path = write(dir.path(), "flat", &idx_bytes(0x803, &[2, 0, 3], &[]));
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(err, DataError::BadHeader { offset: 8, .. }),
        "{err}"
    );
}

#[test]
fn idx_wrong_magic_says_which_file_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, _) = tiny_idx();
    let im = write(dir.path(), "images", &images);
    let lb = write(dir.path(), "labels", &labels);
    let err = read_idx_images(&lb).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                found: 0x801,
                expected: 0x803,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("this is a label file"), "{err}");
    let err = read_idx_labels(&im, 10).unwrap_err();
    assert!(err.to_string().contains("this is an image file"), "{err}");
    let png = write(dir.path(), "x.png", b"\x89PNG\r\n\x1a\n0000000000000000");
    let err = read_idx_images(&png).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                found: 0x8950_4e47,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn idx_count_mismatch_and_label_range_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _, _) = tiny_idx();
    let im = write(dir.path(), "images", &images);
    let two = write(dir.path(), "two", &idx_bytes(0x801, &[2], &[1, 2]));
    let err = load_idx(&im, &two, fashion_names(), Normalization::fashion_mnist()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{err}"
    );
    let bad = write(
        dir.path(),
        "bad",
        &gzip(&idx_bytes(0x801, &[3], &[1, 2, 10])),
    );
    let err = read_idx_labels(&bad, 10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                record: 2,
                offset: 10,
                label: 10,
                classes: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("record 2 (byte 10)"), "{err}");
}

#[test]
fn idx_huge_header_claims_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 2^32 - 1 images of 28x28 claimed, a few bytes present.
    let header = idx_bytes(0x803, &[u32::MAX, 28, 28], &[1, 2, 3, 4]);
    let raw = write(dir.path(), "raw", &header);
    let err = read_idx_images(&raw).unwrap_err();
    assert!(matches!(err, DataError::Length { found: 4, .. }), "{err}");
    let gz = write(dir.path(), "gz", &gzip(&header));
    let err = read_idx_images(&gz).unwrap_err();
    match err {
        DataError::ClaimTooLarge { claimed, limit, .. } => {
            assert_eq!(claimed, u128::from(u32::MAX) * 784);
            assert!(limit < 1 << 20);
        }
        other => panic!("expected ClaimTooLarge, got {other}"),
    }
}

#[test]
fn idx_corrupt_gzip_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (images, _, _) = tiny_idx();
    let mut bytes = gzip(&images);
    let middle = bytes.len() / 2;
    bytes.truncate(middle);
    let path = write(dir.path(), "cut.gz", &bytes);
    let err = read_idx_images(&path).unwrap_err();
    assert!(err.to_string().contains("cut.gz"), "{err}");
}

/// One CIFAR-10 record: label then R, G, B planes; pixel values derived from `seed`.
fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
    let mut record = vec![label];
    record.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    record
}

fn write_cifar(dir: &Path, records_per_file: u8) {
    for b in 1..=5u8 {
        let bytes: Vec<u8> = (0..records_per_file)
            .flat_map(|r| cifar_record((b + r) % 10, b * 10 + r))
            .collect();
        write(dir, &format!("data_batch_{b}.bin"), &bytes);
    }
    let test: Vec<u8> = (0..3).flat_map(|r| cifar_record(r, 200 + r)).collect();
    write(dir, "test_batch.bin", &test);
}

#[test]
fn cifar_round_trips_from_the_archive_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("cifar-10-batches-bin");
    write_cifar(&inner, 2);
    let custom: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    write(
        &inner,
        "batches.meta.txt",
        format!("{}\n\n", custom.join("\n")).as_bytes(),
    );
    let splits = cifar10(dir.path()).unwrap();
    assert_eq!(splits.train.len(), 10);
    assert_eq!(splits.train.shape(), ImageShape::new(3, 32, 32));
    // Batch 3, record 1: label (3 + 1) % 10, pixels from seed 31; the R plane comes first.
    assert_eq!(splits.train.labels()[5], 4);
    assert_eq!(splits.train.image(5).unwrap(), &cifar_record(4, 31)[1..]);
    assert_eq!(splits.test.labels(), &[0, 1, 2]);
    assert_eq!(splits.test.class_names(), custom.as_slice());
    assert_eq!(splits.test.normalization(), &Normalization::cifar10());
}

#[test]
fn cifar_uses_standard_names_without_meta() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 1);
    let splits = cifar10(dir.path()).unwrap();
    assert_eq!(splits.train.class_names()[9], CIFAR10_CLASSES[9]);
    assert_eq!(splits.train.class_names()[0], "airplane");
}

#[test]
fn cifar_malformed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 1);
    // Truncated batch.
    let record = cifar_record(1, 1);
    write(
        dir.path(),
        "data_batch_2.bin",
        &[record.as_slice(), &record[..100]].concat(),
    );
    let err = cifar10(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::RecordLength {
                len: 3173,
                record: 3073,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("1 records and 100 extra bytes"),
        "{err}"
    );
    // Label out of range in the second record.
    write(
        dir.path(),
        "data_batch_2.bin",
        &[record.clone(), cifar_record(10, 0)].concat(),
    );
    let err = cifar10(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                record: 1,
                offset: 3073,
                label: 10,
                ..
            }
        ),
        "{err}"
    );
    // Missing batch.
    std::fs::remove_file(dir.path().join("data_batch_2.bin")).unwrap();
    let err = cifar10(dir.path()).unwrap_err();
    assert!(err.to_string().contains("cifar-10-binary.tar.gz"), "{err}");
    // Empty batch.
    let empty = write(dir.path(), "data_batch_2.bin", &[]);
    assert_eq!(
        cifar10(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: the file is empty (0 bytes); a CIFAR-10 batch holds 10,000 records of 3,073 \
             bytes; the file is incomplete: fetch it again",
            empty.display()
        )
    );
    // A directory where a batch belongs is named as one, not as missing.
    std::fs::remove_file(&empty).unwrap();
    std::fs::create_dir(&empty).unwrap();
    let err = cifar10(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if *path == empty),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("it is a directory; a CIFAR-10 batch is a file of 3073-byte records"),
        "{err}"
    );
    std::fs::remove_dir(&empty).unwrap();
    // Malformed class names.
    write(dir.path(), "data_batch_2.bin", &record);
    write(dir.path(), "batches.meta.txt", b"a\nb\n");
    let err = cifar10(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("2 class names, expected 10"),
        "{err}"
    );
}

fn rgb(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 3 + y * 11) as u8;
        Rgb([v.wrapping_add(seed), v.wrapping_mul(2), 255 - v])
    })
}

#[test]
fn folder_rgb_png_round_trips_in_class_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a, b) = (rgb(3, 2, 1), rgb(3, 2, 50));
    std::fs::create_dir_all(root.join("zebra/nested")).unwrap();
    std::fs::create_dir_all(root.join("apple")).unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    a.save(root.join("zebra/nested/1.png")).unwrap();
    b.save(root.join("zebra/2.PNG")).unwrap();
    a.save(root.join("apple/x.png")).unwrap();
    std::fs::write(root.join("apple/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join(".hidden/junk.png"), "not an image").unwrap();
    let data = image_folder(root).unwrap();
    assert_eq!(
        data.class_names(),
        &["apple".to_string(), "zebra".to_string()]
    );
    assert_eq!(data.shape(), ImageShape::new(3, 2, 3));
    // torchvision order: apple/x, then zebra/ files before zebra/nested/ files.
    assert_eq!(data.labels(), &[0, 1, 1]);
    let chw = |img: &RgbImage| -> Vec<u8> {
        (0..3)
            .flat_map(|c| img.pixels().map(move |p| p.0[c]).collect::<Vec<_>>())
            .collect()
    };
    assert_eq!(data.image(0).unwrap(), chw(&a).as_slice());
    assert_eq!(data.image(1).unwrap(), chw(&b).as_slice());
    assert_eq!(data.image(2).unwrap(), chw(&a).as_slice());
    assert_eq!(
        data.normalization(),
        &Normalization::compute(data.shape(), data.images())
    );
}

#[test]
fn folder_grey_stays_one_channel_and_mixed_becomes_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let grey = GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 16 + y) as u8]));
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    grey.save(dir.path().join("a/g.png")).unwrap();
    let data = image_folder(dir.path()).unwrap();
    assert_eq!(data.shape(), ImageShape::new(1, 4, 4));
    assert_eq!(data.image(0).unwrap(), grey.as_raw().as_slice());

    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    rgb(4, 4, 0).save(dir.path().join("b/c.png")).unwrap();
    let data = image_folder(dir.path()).unwrap();
    assert_eq!(data.shape(), ImageShape::new(3, 4, 4));
    let repeated = [grey.as_raw().as_slice(); 3].concat();
    assert_eq!(data.image(0).unwrap(), repeated.as_slice());
}

#[test]
fn folder_reads_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("red")).unwrap();
    RgbImage::from_pixel(8, 8, Rgb([200, 30, 30]))
        .save(dir.path().join("red/r.jpg"))
        .unwrap();
    let data = image_folder(dir.path()).unwrap();
    assert_eq!(data.shape(), ImageShape::new(3, 8, 8));
    // JPEG is lossy: a flat colour comes back within a few levels.
    let image = data.image(0).unwrap();
    for (c, want) in [200i32, 30, 30].into_iter().enumerate() {
        assert!(
            image[c * 64..(c + 1) * 64]
                .iter()
                .all(|&v| (i32::from(v) - want).abs() <= 4),
            "channel {c}: {:?}",
            &image[c * 64..(c + 1) * 64]
        );
    }
}

#[test]
fn folder_errors_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let err = image_folder(root).unwrap_err();
    assert!(err.to_string().contains("no class folders"), "{err}");

    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    rgb(4, 4, 0).save(root.join("a/1.png")).unwrap();
    let err = image_folder(root).unwrap_err();
    assert!(
        matches!(&err, DataError::Folder { path, .. } if path.ends_with("b")),
        "{err}"
    );
    assert!(
        err.to_string().contains("holds no PNG or JPEG image"),
        "{err}"
    );

    rgb(5, 4, 0).save(root.join("b/odd.png")).unwrap();
    let err = image_folder(root).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            DataError::MixedSizes {
                found_width: 5,
                found_height: 4,
                width: 4,
                height: 4,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("odd.png") && text.contains("1.png") && text.contains("resize"),
        "{text}"
    );

    std::fs::write(root.join("b/odd.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
    let err = image_folder(root).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("odd.png"), "{err}");
}

#[test]
fn folder_splits_share_classes_and_training_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (split, class, seed) in [
        ("train", "cat", 0),
        ("train", "dog", 90),
        ("val", "cat", 30),
        ("val", "dog", 60),
    ] {
        std::fs::create_dir_all(root.join(split).join(class)).unwrap();
        rgb(2, 2, seed)
            .save(root.join(split).join(class).join("i.png"))
            .unwrap();
    }
    let splits = image_folder_splits(root).unwrap();
    assert_eq!(splits.train.len(), 2);
    assert_eq!(splits.test.len(), 2);
    let train_stats = Normalization::compute(splits.train.shape(), splits.train.images());
    assert_eq!(splits.test.normalization(), &train_stats);
    assert_ne!(
        Normalization::compute(splits.test.shape(), splits.test.images()),
        train_stats
    );

    std::fs::create_dir_all(root.join("val/emu")).unwrap();
    rgb(2, 2, 0).save(root.join("val/emu/e.png")).unwrap();
    let err = image_folder_splits(root).unwrap_err();
    assert!(
        err.to_string().contains("differ from the training classes"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = image_folder_splits(empty.path()).unwrap_err();
    assert!(
        err.to_string().contains("expected a train/ and a test/"),
        "{err}"
    );
}
