//! Transforms (scaling, normalisation, bridging, augmentation) and the batch loader (order,
//! batching, determinism, exact resume).
//!
//! Expected values follow torchvision; for one pixel `v` of a Fashion-MNIST image, padded to 32x32
//! and repeated to 3 channels:
//! ```python
//! # torch 2.x, torchvision 0.2x
//! t = T.Compose([T.Pad(2), T.Grayscale(3), T.ToTensor(), T.Normalize([0.2860]*3, [0.3530]*3)])
//! # t(img)[c, y + 2, x + 2] == (img[y, x] / 255 - 0.2860) / 0.3530, t(img)[c, 0, 0] == -0.2860 / 0.3530
//! ```
//! which is computed here with the same f32 operations, so the comparison is exact.

use cnnc_data::{
    Augment, AugmentDraw, DataError, Dataset, ImageShape, Loader, LoaderConfig, LoaderState,
    Normalization, Transform,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn normalized(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

fn grey_28() -> Vec<u8> {
    (0..784u32).map(|i| (i * 37 % 256) as u8).collect()
}

#[test]
fn fashion_mnist_bridges_to_the_seed_input() {
    let from = ImageShape::new(1, 28, 28);
    let to = ImageShape::new(3, 32, 32);
    let t = Transform::new(from, &Normalization::fashion_mnist(), to).unwrap();
    let bridge = t.bridge().unwrap();
    assert_eq!(bridge.pad, [2, 2]);
    assert!(bridge.repeat_channels);
    assert_eq!(
        bridge.to_string(),
        "dataset images are 1x28x28, model input is 3x32x32: padding 2 zero pixels on every side \
         and repeating the grey channel 3 times"
    );
    let image = grey_28();
    let mut out = vec![f32::NAN; 3 * 32 * 32];
    t.apply(&image, &mut out).unwrap();
    let pad = normalized(0, 0.2860, 0.3530);
    assert!((pad - (-0.810_198_3)).abs() < 1e-6);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let got = out[c * 1024 + y * 32 + x];
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside {
                    normalized(image[(y - 2) * 28 + (x - 2)], 0.2860, 0.3530)
                } else {
                    pad
                };
                assert_eq!(got.to_bits(), want.to_bits(), "c {c} y {y} x {x}");
            }
        }
    }
}

#[test]
fn matching_shapes_only_normalise() {
    let shape = ImageShape::new(3, 2, 2);
    let t = Transform::new(shape, &Normalization::cifar10(), shape).unwrap();
    assert_eq!(t.bridge(), None);
    let image: Vec<u8> = (0..12).map(|i| i * 20).collect();
    let mut out = vec![0.0; 12];
    t.apply(&image, &mut out).unwrap();
    let n = Normalization::cifar10();
    for (i, (&v, &o)) in image.iter().zip(&out).enumerate() {
        assert_eq!(o, normalized(v, n.mean[i / 4], n.std[i / 4]), "value {i}");
    }
    assert!(matches!(
        t.apply(&image, &mut out[..11]),
        Err(DataError::Invalid { .. })
    ));
}

#[test]
fn unbridgeable_shapes_say_what_was_found() {
    let cases = [
        (
            (3, 32, 32),
            (1, 32, 32),
            "3 channels cannot be turned into 1",
        ),
        (
            (2, 28, 28),
            (3, 32, 32),
            "2 channels cannot be turned into 3",
        ),
        ((1, 32, 32), (1, 28, 28), "larger than the model input"),
        ((1, 28, 28), (1, 31, 32), "cannot be split evenly"),
    ];
    for (from, to, words) in cases {
        let from = ImageShape::new(from.0, from.1, from.2);
        let to = ImageShape::new(to.0, to.1, to.2);
        let norm = Normalization::new(vec![0.5; from.channels], vec![0.5; from.channels]);
        let err = Transform::new(from, &norm, to).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DataError::Shape { .. }), "{text}");
        assert!(text.contains(words), "{text}");
        assert!(text.contains(&format!("dataset images are {from}, model input is {to}")));
    }
    let err = Transform::new(
        ImageShape::new(3, 4, 4),
        &Normalization::fashion_mnist(),
        ImageShape::new(3, 4, 4),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 means and 1 stds given for images of 3 channels")
    );
    let zero_std = Normalization::new(vec![0.5], vec![0.0]);
    let shape = ImageShape::new(1, 4, 4);
    assert!(Transform::new(shape, &zero_std, shape).is_err());
}

#[test]
fn augmentation_crops_pads_and_flips_like_torchvision() {
    let shape = ImageShape::new(1, 4, 4);
    let norm = Normalization::new(vec![0.0], vec![1.0]);
    let t = Transform::new(shape, &norm, shape).unwrap();
    let image: Vec<u8> = (1..=16).collect();
    let mut out = vec![0.0; 16];
    let value = |v: u8| v as f32 / 255.0;
    // Window starting one row up and two columns right: row 0 is padding, columns 2 and 3 hold
    // source columns 2..4, the rest is padding.
    let draw = AugmentDraw {
        dy: -1,
        dx: 2,
        flip: false,
    };
    t.apply_augmented(&image, draw, &mut out).unwrap();
    let want: Vec<f32> = [
        0, 0, 0, 0, //
        3, 4, 0, 0, //
        7, 8, 0, 0, //
        11, 12, 0, 0,
    ]
    .into_iter()
    .map(value)
    .collect();
    assert_eq!(out, want);
    // Flipping mirrors the cropped window.
    t.apply_augmented(&image, AugmentDraw { flip: true, ..draw }, &mut out)
        .unwrap();
    let mirrored: Vec<f32> = want
        .chunks(4)
        .flat_map(|r| r.iter().rev().copied())
        .collect();
    assert_eq!(out, mirrored);
}

#[test]
fn augmentation_draws_are_seeded_and_cover_the_range() {
    let augment = Augment::cifar();
    let draws = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..2000)
            .map(|_| augment.draw(&mut rng))
            .collect::<Vec<_>>()
    };
    let a = draws(7);
    assert_eq!(a, draws(7));
    assert_ne!(a, draws(8));
    for offset in -4..=4 {
        assert!(a.iter().any(|d| d.dy == offset) && a.iter().any(|d| d.dx == offset));
    }
    assert!(
        a.iter()
            .all(|d| (-4..=4).contains(&d.dy) && (-4..=4).contains(&d.dx))
    );
    let flips = a.iter().filter(|d| d.flip).count();
    // Expect 1000; 5 sigma is about 112.
    assert!(flips.abs_diff(1000) < 112, "{flips} flips");
    let no_flip = Augment {
        padding: 0,
        horizontal_flip: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert!((0..100).all(|_| no_flip.draw(&mut rng) == AugmentDraw::default()));
}

/// `n` 1x2x2 images whose pixels all equal their index; label = index % 3.
fn indexed(n: usize) -> Dataset {
    let shape = ImageShape::new(1, 2, 2);
    let images = (0..n).flat_map(|i| [i as u8; 4]).collect();
    let labels = (0..n).map(|i| i % 3).collect();
    let names = vec!["a".into(), "b".into(), "c".into()];
    Dataset::new(
        shape,
        images,
        labels,
        names,
        Normalization::new(vec![0.0], vec![1.0]),
    )
    .unwrap()
}

fn loader(data: &Dataset, config: LoaderConfig) -> Loader<'_> {
    let t = Transform::new(data.shape(), data.normalization(), data.shape()).unwrap();
    Loader::new(data, t, config).unwrap()
}

/// Every batch of one epoch, as (pixels, labels).
fn epoch(l: &mut Loader<'_>) -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut images = vec![0.0; l.batch_size() * l.image_len()];
    let mut labels = vec![0; l.batch_size()];
    let mut batches = Vec::new();
    while let Some(n) = l.next_batch(&mut images, &mut labels).unwrap() {
        batches.push((images[..n * l.image_len()].to_vec(), labels[..n].to_vec()));
    }
    batches
}

/// The image indices of an epoch's batches (pixel value times 255).
fn indices(batches: &[(Vec<f32>, Vec<usize>)]) -> Vec<usize> {
    batches
        .iter()
        .flat_map(|(px, _)| px.chunks(4).map(|c| (c[0] * 255.0).round() as usize))
        .collect()
}

#[test]
fn eval_loader_keeps_order_and_a_smaller_last_batch() {
    let data = indexed(10);
    let mut l = loader(&data, LoaderConfig::eval(4));
    assert_eq!(l.batches_per_epoch(), 3);
    let batches = epoch(&mut l);
    let sizes: Vec<usize> = batches.iter().map(|b| b.1.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(indices(&batches), (0..10).collect::<Vec<_>>());
    assert_eq!(batches[2].1, [2, 0]);
    assert_eq!(l.epoch(), 1);
    assert_eq!(indices(&epoch(&mut l)), (0..10).collect::<Vec<_>>());
}

#[test]
fn shuffling_is_a_fresh_seeded_permutation_each_epoch() {
    let data = indexed(50);
    let mut a = loader(&data, LoaderConfig::train(8, 42));
    let mut b = loader(&data, LoaderConfig::train(8, 42));
    let mut c = loader(&data, LoaderConfig::train(8, 43));
    let (a0, a1) = (indices(&epoch(&mut a)), indices(&epoch(&mut a)));
    let mut sorted = a0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(a0, a1);
    assert_ne!(a0, (0..50).collect::<Vec<_>>());
    assert_eq!(a0, indices(&epoch(&mut b)));
    assert_eq!(a1, indices(&epoch(&mut b)));
    assert_ne!(a0, indices(&epoch(&mut c)));
}

#[test]
fn restoring_a_saved_state_continues_bit_identically() {
    let data = indexed(23);
    let config = LoaderConfig {
        augment: Some(Augment {
            padding: 1,
            horizontal_flip: true,
        }),
        ..LoaderConfig::train(5, 9)
    };
    let mut whole = loader(&data, config);
    let reference: Vec<_> = (0..3).flat_map(|_| epoch(&mut whole)).collect();

    // Stop after one epoch and two batches, save through JSON, resume in a new loader.
    let mut first = loader(&data, config);
    let mut got = epoch(&mut first);
    let mut images = vec![0.0; 5 * 4];
    let mut labels = vec![0; 5];
    for _ in 0..2 {
        let n = first.next_batch(&mut images, &mut labels).unwrap().unwrap();
        got.push((images[..n * 4].to_vec(), labels[..n].to_vec()));
    }
    let saved = serde_json::to_string(&first.state()).unwrap();
    let state: LoaderState = serde_json::from_str(&saved).unwrap();
    assert_eq!((state.epoch, state.position), (1, 10));
    let mut resumed = loader(&data, config);
    resumed.restore(&state).unwrap();
    got.extend((0..2).flat_map(|_| epoch(&mut resumed)));
    let bits = |b: &[(Vec<f32>, Vec<usize>)]| -> Vec<(Vec<u32>, Vec<usize>)> {
        b.iter()
            .map(|(p, l)| (p.iter().map(|v| v.to_bits()).collect(), l.clone()))
            .collect()
    };
    assert_eq!(bits(&got), bits(&reference));
    // Augmentation really happened: some padded (zero) pixels appear.
    assert!(reference.iter().any(|(p, _)| p.contains(&0.0)));
}

#[test]
fn loader_refuses_bad_arguments() {
    let data = indexed(6);
    let t = Transform::new(data.shape(), data.normalization(), data.shape()).unwrap();
    let err = Loader::new(&data, t.clone(), LoaderConfig::eval(0)).unwrap_err();
    assert!(err.to_string().contains("batch size must be at least 1"));
    let other = Transform::new(
        ImageShape::new(1, 3, 3),
        data.normalization(),
        ImageShape::new(1, 3, 3),
    )
    .unwrap();
    assert!(Loader::new(&data, other, LoaderConfig::eval(2)).is_err());

    let mut l = Loader::new(&data, t, LoaderConfig::train(4, 1)).unwrap();
    let mut small = vec![0.0; 15];
    let err = l.next_batch(&mut small, &mut [0; 4]).unwrap_err();
    assert!(err.to_string().contains("need 16 and 4"), "{err}");
    let mut state = l.state();
    state.seed = 2;
    assert!(
        l.restore(&state)
            .unwrap_err()
            .to_string()
            .contains("same seed")
    );
    state.seed = 1;
    state.position = 7;
    assert!(l.restore(&state).is_err());
}
