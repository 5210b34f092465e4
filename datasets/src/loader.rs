//! Mini-batches for training and evaluation: a fresh shuffle every epoch, optional augmentation,
//! and batches written into buffers the caller owns (nothing is allocated per batch).
//!
//! Randomness is ChaCha8 keyed by the seed. Epoch `e` shuffles with stream `2e` from its start and
//! augments with stream `2e + 1`, so the whole state is `(seed, epoch, position, words of the
//! augmentation stream used)`: [`LoaderState`] saves it and [`Loader::restore`] resumes the exact
//! sequence of batches an uninterrupted run would have produced.

use ndarray::ArrayView4;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use super::transform::{Augment, AugmentDraw, Transform, uniform_below};
use super::{DataError, Dataset, ImageShape};

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch; the last batch of an epoch may be smaller (PyTorch's `drop_last=False`).
    pub batch_size: usize,
    /// Whether to visit the images in a new random order every epoch (training) or in dataset
    /// order (evaluation).
    pub shuffle: bool,
    /// Random crop and flip, for training only.
    pub augment: Option<Augment>,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
}

impl LoaderConfig {
    /// Shuffled batches, without augmentation.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment: None,
            seed,
        }
    }

    /// The training batches of a run seeded `seed`, exactly as `cnnc train --seed` draws them:
    /// shuffled with `seed ^ RUN_SEED_SALT`, without augmentation.
    pub fn for_run(batch_size: usize, seed: u64) -> Self {
        LoaderConfig::train(batch_size, seed ^ RUN_SEED_SALT)
    }

    /// Batches in dataset order, without augmentation.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: None,
            seed: 0,
        }
    }
}

/// What a training run mixes into its seed to seed its loader (`cnnc train --seed S` shuffles with
/// `S ^ RUN_SEED_SALT`), so that shuffling does not replay the stream that initialised the weights.
pub const RUN_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Where a [`Loader`] stands, enough to resume it exactly; serialisable for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// The loader's seed.
    pub seed: u64,
    /// Current epoch, from 0.
    pub epoch: u64,
    /// Images of this epoch already handed out.
    pub position: usize,
    /// Size of the dataset, to refuse resuming over other data.
    pub dataset_len: usize,
    /// 32-bit words consumed from this epoch's augmentation stream.
    pub augment_words: u64,
}

/// One batch of images and labels as a [`Loader`] writes it: images in PyTorch's `[N, C, H, W]`
/// layout, the model input's shape, so [`Batch::images`] goes to a model's `predict` or
/// `train_step` with no conversion.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[capacity, C, H, W]`, the first `len` images filled.
    images: Vec<f32>,
    /// One class index per image, the first `len` filled.
    labels: Vec<usize>,
    len: usize,
    shape: ImageShape,
}

impl Batch {
    /// Images in the batch (the last batch of an epoch may hold fewer than the batch size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no image (before the first fill, or after the epoch's end).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The images, `[N, C, H, W]`.
    pub fn images(&self) -> ArrayView4<'_, f32> {
        let ImageShape {
            channels,
            height,
            width,
        } = self.shape;
        let values = &self.images[..self.len * self.shape.len()];
        // Not user data: `values` holds exactly `len * C * H * W` floats, by construction.
        ArrayView4::from_shape((self.len, channels, height, width), values)
            .expect("a batch holds len * C * H * W floats")
    }

    /// The images as one flat `[N, C, H, W]` slice.
    pub fn pixels(&self) -> &[f32] {
        &self.images[..self.len * self.shape.len()]
    }

    /// The labels, one class index per image.
    pub fn labels(&self) -> &[usize] {
        &self.labels[..self.len]
    }

    /// The shape of one image, `[C, H, W]` of the model input.
    pub fn image_shape(&self) -> ImageShape {
        self.shape
    }
}

/// Hands out batches of one dataset, transformed for the model.
#[derive(Clone, Debug)]
pub struct Loader<'a> {
    dataset: &'a Dataset,
    transform: Transform,
    config: LoaderConfig,
    epoch: u64,
    position: usize,
    order: Vec<usize>,
    augment_rng: ChaCha8Rng,
}

impl<'a> Loader<'a> {
    /// A loader at the start of epoch 0. `transform` must read the dataset's image shape.
    pub fn new(
        dataset: &'a Dataset,
        transform: Transform,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::invalid(
                "loader",
                "batch size must be at least 1",
            ));
        }
        if transform.input_shape() != dataset.shape() {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "the transform reads {} images but the dataset holds {} images",
                    transform.input_shape(),
                    dataset.shape()
                ),
            ));
        }
        let mut loader = Loader {
            dataset,
            transform,
            config,
            epoch: 0,
            position: 0,
            order: (0..dataset.len()).collect(),
            augment_rng: ChaCha8Rng::seed_from_u64(config.seed),
        };
        loader.start_epoch(0, 0);
        Ok(loader)
    }

    /// Floats in one transformed image, `C * H * W` of the model input.
    pub fn image_len(&self) -> usize {
        self.transform.output_shape().len()
    }

    /// Images per full batch.
    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// Batches per epoch, counting a smaller last one.
    pub fn batches_per_epoch(&self) -> usize {
        self.dataset.len().div_ceil(self.config.batch_size)
    }

    /// Images of the current epoch not yet handed out.
    pub fn remaining(&self) -> usize {
        self.dataset.len() - self.position
    }

    /// The epoch the next batch belongs to, from 0.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The dataset being loaded.
    pub fn dataset(&self) -> &'a Dataset {
        self.dataset
    }

    /// The transform applied to every image.
    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// Writes the next batch into `images` (at least `batch_size * image_len()` floats, `[B, C,
    /// H, W]`) and `labels` (at least `batch_size`), returning how many images it wrote; `None`
    /// once the epoch is exhausted, after which the loader has moved to the next epoch.
    ///
    /// `[B, C, H, W]` is PyTorch's layout: a generated model takes the batch through
    /// `Images::from_nchw_slice(&images, n)` (or `predict` on an `ArrayView4` of it), never
    /// through `Images::view_nhwc`, which reads the runtime's own pixel-major layout.
    pub fn next_batch(
        &mut self,
        images: &mut [f32],
        labels: &mut [usize],
    ) -> Result<Option<usize>, DataError> {
        let image_len = self.image_len();
        let batch = self.config.batch_size;
        if images.len() < batch * image_len || labels.len() < batch {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "batch buffers hold {} floats and {} labels, need {} and {batch}",
                    images.len(),
                    labels.len(),
                    batch * image_len
                ),
            ));
        }
        let remaining = self.dataset.len() - self.position;
        if remaining == 0 {
            self.start_epoch(self.epoch + 1, 0);
            return Ok(None);
        }
        let n = remaining.min(batch);
        let indices = &self.order[self.position..self.position + n];
        for ((&index, out), label) in indices
            .iter()
            .zip(images.chunks_exact_mut(image_len))
            .zip(labels.iter_mut())
        {
            let image = self.dataset.image(index).ok_or_else(|| {
                DataError::invalid("loader", format!("image {index} is out of range"))
            })?;
            let draw = match &self.config.augment {
                Some(augment) => augment.draw(&mut self.augment_rng),
                None => AugmentDraw::default(),
            };
            self.transform.apply_augmented(image, draw, out)?;
            *label = self.dataset.labels()[index];
        }
        self.position += n;
        Ok(Some(n))
    }

    /// Buffers for this loader's batches, to fill with [`Loader::next_into`]: allocated once,
    /// reused for every batch.
    pub fn batch(&self) -> Batch {
        let batch = self.config.batch_size;
        Batch {
            images: vec![0.0; batch * self.image_len()],
            labels: vec![0; batch],
            len: 0,
            shape: self.transform.output_shape(),
        }
    }

    /// Fills `batch` (made by [`Loader::batch`]) with the next batch; `false` once the epoch is
    /// exhausted, after which the loader has moved to the next epoch. The same batches as
    /// [`Loader::next_batch`], in a type that hands them to a model as they are:
    ///
    /// ```
    /// use cnnc_data::{Loader, LoaderConfig, SAMPLE_DIR, Transform, fashion_mnist_sample};
    ///
    /// let splits = fashion_mnist_sample(std::path::Path::new(SAMPLE_DIR))?;
    /// let test = &splits.test;
    /// let transform = Transform::new(test.shape(), test.normalization(), test.shape())?;
    /// let mut loader = Loader::new(test, transform, LoaderConfig::eval(256))?;
    /// let mut batch = loader.batch();
    /// let mut seen = 0;
    /// while loader.next_into(&mut batch)? {
    ///     // [N, C, H, W], PyTorch's layout: what `Model::predict` and `train_step` take.
    ///     let images = batch.images();
    ///     assert_eq!(images.dim(), (batch.len(), 1, 28, 28));
    ///     assert_eq!(batch.labels().len(), batch.len());
    ///     seen += batch.len();
    /// }
    /// assert_eq!(seen, test.len());
    /// # Ok::<(), cnnc_data::DataError>(())
    /// ```
    pub fn next_into(&mut self, batch: &mut Batch) -> Result<bool, DataError> {
        if batch.shape != self.transform.output_shape() {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "the batch holds {} images but this loader writes {} images; make it with \
                     this loader's `batch()`",
                    batch.shape,
                    self.transform.output_shape()
                ),
            ));
        }
        let n = self.next_batch(&mut batch.images, &mut batch.labels)?;
        batch.len = n.unwrap_or(0);
        Ok(n.is_some())
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            seed: self.config.seed,
            epoch: self.epoch,
            position: self.position,
            dataset_len: self.dataset.len(),
            augment_words: self.augment_rng.get_word_pos() as u64,
        }
    }

    /// Continues from a saved state, refusing one saved with another seed or dataset size.
    pub fn restore(&mut self, state: &LoaderState) -> Result<(), DataError> {
        if state.seed != self.config.seed || state.dataset_len != self.dataset.len() {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "the checkpoint was saved with seed {} over {} images, this run has seed {} \
                     over {} images; resume with the same seed and data",
                    state.seed,
                    state.dataset_len,
                    self.config.seed,
                    self.dataset.len()
                ),
            ));
        }
        if state.position > self.dataset.len() {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "the checkpoint's position {} is past the end of the {} images",
                    state.position,
                    self.dataset.len()
                ),
            ));
        }
        self.start_epoch(state.epoch, state.augment_words);
        self.position = state.position;
        Ok(())
    }

    /// Positions the loader at the start of `epoch`, with `augment_words` of its augmentation
    /// stream already consumed.
    fn start_epoch(&mut self, epoch: u64, augment_words: u64) {
        self.epoch = epoch;
        self.position = 0;
        for (i, slot) in self.order.iter_mut().enumerate() {
            *slot = i;
        }
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(epoch.wrapping_mul(2));
            // Fisher-Yates, from the back.
            for i in (1..self.order.len()).rev() {
                let j = uniform_below(&mut rng, i as u64 + 1) as usize;
                self.order.swap(i, j);
            }
        }
        self.augment_rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        self.augment_rng
            .set_stream(epoch.wrapping_mul(2).wrapping_add(1));
        self.augment_rng.set_word_pos(u128::from(augment_words));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Normalization;

    /// Five 1x2x2 images whose pixels are their index.
    fn five() -> Dataset {
        let shape = ImageShape::new(1, 2, 2);
        let images = (0..5u8).flat_map(|i| [i; 4]).collect();
        let norm = Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        };
        Dataset::new(
            shape,
            images,
            vec![0, 1, 0, 1, 0],
            vec!["a".into(), "b".into()],
            norm,
        )
        .expect("a dataset")
    }

    #[test]
    fn a_batch_holds_what_next_batch_writes_as_nchw() {
        let data = five();
        let transform =
            Transform::new(data.shape(), data.normalization(), data.shape()).expect("a transform");
        let config = LoaderConfig::train(2, 9);
        let mut flat = Loader::new(&data, transform.clone(), config).expect("a loader");
        let mut typed = Loader::new(&data, transform.clone(), config).expect("a loader");
        let mut batch = typed.batch();
        assert!(batch.is_empty());
        let (mut pixels, mut labels) = (vec![0.0; 8], vec![0; 2]);
        let mut sizes = Vec::new();
        while let Some(n) = flat.next_batch(&mut pixels, &mut labels).expect("a batch") {
            assert!(typed.next_into(&mut batch).expect("a batch"));
            assert_eq!(batch.images().dim(), (n, 1, 2, 2));
            assert_eq!(batch.pixels(), &pixels[..n * 4]);
            assert_eq!(batch.labels(), &labels[..n]);
            sizes.push(n);
        }
        assert_eq!(sizes, [2, 2, 1]);
        assert!(!typed.next_into(&mut batch).expect("the epoch's end"));
        assert!(batch.is_empty());
        assert_eq!(typed.epoch(), 1);

        // A batch of another shape is refused, not misread.
        let wider = Transform::new(data.shape(), data.normalization(), ImageShape::new(1, 4, 4))
            .expect("a padding transform");
        let mut other = Loader::new(&data, wider, config).expect("a loader").batch();
        let err = typed.next_into(&mut other).expect_err("another shape");
        assert!(err.to_string().contains("1x4x4"), "{err}");
    }
}
