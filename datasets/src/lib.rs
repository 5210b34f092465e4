//! cnnc's datasets, apart from the numeric runtime: strict readers for CIFAR-10 binaries, MNIST/Fashion-MNIST IDX files and image folders,
//! the in-memory [`Dataset`] they all produce, transforms to normalised f32 model input, a
//! seeded, resumable batch loader, and classification [`metrics`] (accuracy, per-class precision
//! and recall, the confusion matrix).
//!
//! Readers never trust a header: sizes are checked against the file before anything is allocated,
//! and every error names the file, the record or byte offset, and what to do about it.
//!
//! Image decoding (`image`) and gzip (`flate2`) are this crate's own dependencies; downloads over
//! HTTPS (`ureq`, `rustls`) need the `download` feature. A model built with `cnn_model!` needs none
//! of them: `cnnc` re-exports this crate as `cnnc::data` only with its `data` feature.
//!
//! A dataset held in memory, transformed for a model with a 3x4x4 input (grey 2x2 images are
//! repeated to RGB and padded), in shuffled batches written into buffers the caller owns:
//!
//! ```
//! use cnnc_data::{Dataset, ImageShape, Loader, LoaderConfig, Normalization, Transform};
//!
//! let shape = ImageShape::new(1, 2, 2);
//! let pixels: Vec<u8> = (0..12).map(|v| v * 20).collect(); // three 1x2x2 images
//! let classes = vec!["dark".to_owned(), "light".to_owned()];
//! let norm = Normalization::new(vec![0.5], vec![0.25]);
//! let data = Dataset::new(shape, pixels, vec![0, 1, 1], classes, norm)?;
//!
//! let input = ImageShape::new(3, 4, 4);
//! let transform = Transform::new(data.shape(), data.normalization(), input)?;
//! assert!(transform.bridge().is_some(), "1 -> 3 channels, 2x2 padded to 4x4");
//! let mut loader = Loader::new(&data, transform, LoaderConfig::train(2, 7))?;
//!
//! // `[B, C, H, W]` floats, as a model's `predict` takes them.
//! let (mut images, mut labels) = (vec![0.0; 2 * input.len()], vec![0; 2]);
//! let mut seen = 0;
//! while let Some(n) = loader.next_batch(&mut images, &mut labels)? {
//!     seen += n;
//! }
//! assert_eq!(seen, 3);
//! # Ok::<(), cnnc_data::DataError>(())
//! ```

pub mod cifar;
#[cfg(feature = "download")]
pub mod download;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod metrics;
pub mod sample;
pub mod transform;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cifar::{CIFAR10_CLASSES, cifar10};
pub use folder::{image_folder, image_folder_splits, image_folder_splits_for};
pub use idx::{FASHION_MNIST_CLASSES, MNIST_CLASSES, fashion_mnist, mnist};
pub use loader::{Batch, Loader, LoaderConfig, LoaderState, RUN_SEED_SALT};
pub use metrics::Evaluation;
pub use sample::{SAMPLE_DIR, fashion_mnist_sample};
pub use transform::{Augment, AugmentDraw, Bridge, Normalization, Transform};

/// Most images (records) one dataset file may hold: 2^24, far above MNIST's 60,000 or a CIFAR-10
/// batch's 10,000, so that a header or a file size claiming more is refused before anything is
/// read.
pub const MAX_IMAGES: u64 = 1 << 24;

/// Most bytes of image data one dataset file may hold (4 GiB): datasets are held in memory, and
/// CIFAR-10 whole is 180 MB.
pub const MAX_DATA_BYTES: u64 = 1 << 32;

/// Everything that can go wrong while reading or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read (missing permission, I/O error).
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A gzip-compressed file does not decompress: its stream is corrupt or cut short.
    #[error(
        "{}: the gzip data is corrupt or cut short after {decoded} uncompressed bytes ({reason}); \
         the file is damaged or incomplete: fetch it again",
        path.display()
    )]
    Gzip {
        /// The file.
        path: PathBuf,
        /// Bytes decompressed before the failure.
        decoded: u64,
        /// The decoder's error.
        reason: String,
    },
    /// A file the dataset needs is absent.
    #[error("{} not found; {fix}", path.display())]
    NotFound {
        /// The first place looked.
        path: PathBuf,
        /// Where to get the file and where to put it.
        fix: String,
    },
    /// An IDX file starts with the wrong magic number.
    #[error(
        "{}: magic number 0x{found:08x} at byte 0, expected 0x{expected:08x} ({what}); {hint}",
        path.display()
    )]
    BadMagic {
        /// The IDX file.
        path: PathBuf,
        /// The magic number read.
        found: u32,
        /// The magic number required.
        expected: u32,
        /// What the expected magic number means.
        what: &'static str,
        /// A likely cause and fix.
        hint: &'static str,
    },
    /// A header field is impossible (a zero image side, a size that overflows).
    #[error("{}: bad header at byte {offset}: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Byte offset of the field, in the uncompressed data.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file holds fewer or more bytes than its header (or format) says.
    #[error(
        "{}: {what} is {found} bytes, expected {expected} ({}); the file is corrupt or incomplete: \
         fetch it again",
        path.display(),
        if found < expected { "truncated" } else { "trailing data" }
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Which part was measured (`header`, `image data`, `uncompressed data`).
        what: &'static str,
        /// Bytes the header or format requires.
        expected: u64,
        /// Bytes actually present.
        found: u64,
    },
    /// A header claims more data than the file can possibly hold; rejected before allocating.
    #[error(
        "{}: header claims {claimed} bytes of data but a {file_len}-byte file holds at most \
         {limit}; the file is corrupt or not an IDX file",
        path.display()
    )]
    ClaimTooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes the header claims.
        claimed: u128,
        /// Size of the file on disk.
        file_len: u64,
        /// Most bytes the file could decode to.
        limit: u64,
    },
    /// A file is larger than any dataset file may be; refused before it is read.
    #[error(
        "{}: {len} bytes, more than the limit of {limit} bytes (4 GiB) for one dataset file; \
         {hint}",
        path.display()
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// The limit, [`MAX_DATA_BYTES`].
        limit: u64,
        /// What the file should look like.
        hint: &'static str,
    },
    /// A dataset file is empty.
    #[error("{}: the file is empty (0 bytes); {hint}", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        hint: &'static str,
    },
    /// A binary file is not a whole number of fixed-size records.
    #[error(
        "{}: {len} bytes is not a whole number of {record}-byte records ({records} records and \
         {extra} extra bytes); the file is truncated or not a CIFAR-10 binary batch: fetch it again",
        path.display(),
        records = len / record,
        extra = len % record
    )]
    RecordLength {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// The record size the format requires.
        record: u64,
    },
    /// Two files that could each be the dataset's (a raw IDX file and its `.gz` twin) hold
    /// different data.
    #[error(
        "{} and {} are both present but hold different data; cnnc cannot tell which one is meant: \
         remove the stale one (or fetch both again)",
        path.display(),
        other.display()
    )]
    Conflict {
        /// The file read first.
        path: PathBuf,
        /// Its twin.
        other: PathBuf,
    },
    /// Image and label files of one split disagree on the number of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; use the image and label files of \
         the same split",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Number of images in it.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Number of labels in it.
        labels: usize,
    },
    /// A label is not a valid class index.
    #[error(
        "{}: record {record} (byte {offset}) has label {label}, expected 0..{classes}; the file is \
         corrupt or belongs to another dataset",
        path.display()
    )]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Index of the record, from 0.
        record: usize,
        /// Byte offset of the label, in the uncompressed data.
        offset: u64,
        /// The label read.
        label: usize,
        /// Number of classes of the dataset.
        classes: usize,
    },
    /// A class-name file is malformed.
    #[error("{}: {reason}", path.display())]
    ClassNames {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An image file cannot be decoded.
    #[error(
        "{}: cannot decode image: {error}; the file is damaged, too large or not a PNG or JPEG \
         image: replace or remove it",
        path.display()
    )]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        error: image::ImageError,
    },
    /// Images of one dataset differ in size.
    #[error(
        "{}: image is {found_width}x{found_height} but {} is {width}x{height}; all images of a \
         dataset must share one size: resize them beforehand (e.g. ImageMagick \
         `mogrify -resize {width}x{height}! FILE`)",
        path.display(),
        first.display()
    )]
    MixedSizes {
        /// The odd image.
        path: PathBuf,
        /// Its width.
        found_width: u32,
        /// Its height.
        found_height: u32,
        /// The image that set the dataset's size.
        first: PathBuf,
        /// The dataset's width.
        width: u32,
        /// The dataset's height.
        height: u32,
    },
    /// An image folder has no class sub-folders, a class folder has no image, a link inside it
    /// would label images twice, or its images' headers show they cannot fit (larger than the
    /// model input, or more pixels in total than [`MAX_DATA_BYTES`]).
    #[error("{}: {reason}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is missing and the expected layout.
        reason: String,
    },
    /// A file could not be fetched (offline, refused, HTTP error).
    #[error(
        "cannot download {url}: {reason}; without network access, fetch it elsewhere and put it \
         in {}",
        dir.display()
    )]
    Download {
        /// The address.
        url: String,
        /// What failed.
        reason: String,
        /// The cache folder the file belongs in.
        dir: PathBuf,
    },
    /// A downloaded file does not have its published checksum; it was not kept.
    #[error(
        "{url}: downloaded data has md5 {found}, expected {expected}; the transfer was corrupted or \
         the file changed upstream: try again, or fetch it by hand and put it in {}",
        dir.display()
    )]
    Checksum {
        /// The address.
        url: String,
        /// The published MD5.
        expected: String,
        /// The MD5 of what arrived.
        found: String,
        /// The cache folder the file belongs in.
        dir: PathBuf,
    },
    /// Dataset images cannot be bridged to the model's input shape.
    #[error("dataset images are {found}, model input is {expected}: {reason}")]
    Shape {
        /// The dataset's image shape.
        found: ImageShape,
        /// The model's input shape.
        expected: ImageShape,
        /// Why it cannot be bridged, and what would work.
        reason: String,
    },
    /// A dataset, transform, loader or buffer was built with inconsistent parts; `what` names it.
    #[error("{what}: {reason}")]
    Invalid {
        /// The object or argument.
        what: &'static str,
        /// What is inconsistent.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        DataError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// The shape of one image, `[channels, height, width]`; displayed as `CxHxW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageShape {
    /// Channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    /// A shape from `[channels, height, width]`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        ImageShape {
            channels,
            height,
            width,
        }
    }

    /// Values in one image, `C * H * W`.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when some side is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// A labelled image dataset held in memory as u8 pixels, `[N, C, H, W]` (channel-major like
/// PyTorch), with its class names and its default per-channel normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    shape: ImageShape,
    images: Vec<u8>,
    labels: Vec<usize>,
    class_names: Vec<String>,
    normalization: Normalization,
}

impl Dataset {
    /// Assembles a dataset, checking that `images` holds `labels.len()` images of `shape`, that
    /// every label indexes `class_names`, that it is not empty, and that `normalization` has one
    /// mean and std per channel.
    pub fn new(
        shape: ImageShape,
        images: Vec<u8>,
        labels: Vec<usize>,
        class_names: Vec<String>,
        normalization: Normalization,
    ) -> Result<Self, DataError> {
        if shape.is_empty() {
            return Err(DataError::invalid(
                "dataset",
                format!("image shape {shape} has a zero side"),
            ));
        }
        if labels.is_empty() {
            return Err(DataError::invalid("dataset", "it holds no image"));
        }
        let expected = labels.len().checked_mul(shape.len());
        if expected != Some(images.len()) {
            return Err(DataError::invalid(
                "dataset",
                format!(
                    "{} labels of {shape} images need {} pixel bytes, found {}",
                    labels.len(),
                    labels.len().saturating_mul(shape.len()),
                    images.len()
                ),
            ));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= class_names.len())
        {
            return Err(DataError::invalid(
                "dataset",
                format!(
                    "label {label} of image {i} is not below the number of classes ({})",
                    class_names.len()
                ),
            ));
        }
        normalization.check(shape.channels)?;
        Ok(Dataset {
            shape,
            images,
            labels,
            class_names,
            normalization,
        })
    }

    /// Shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: an empty dataset is rejected by [`Dataset::new`].
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All pixels, `[N, C, H, W]`.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// Pixels of image `index`, `[C, H, W]`; `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let len = self.shape.len();
        let start = index.checked_mul(len)?;
        self.images.get(start..start.checked_add(len)?)
    }

    /// Class index of every image, `[N]`.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Class names; a label indexes this list.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The dataset's default per-channel mean and std (of pixels scaled to [0, 1]).
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// Replaces the default normalisation, e.g. to apply a training split's statistics to its
    /// test split.
    pub fn with_normalization(mut self, normalization: Normalization) -> Result<Self, DataError> {
        normalization.check(self.shape.channels)?;
        self.normalization = normalization;
        Ok(self)
    }

    /// Number of images of each class, `[num_classes]`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }
}

/// A training split and the test split used for validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training images.
    pub train: Dataset,
    /// Test (validation) images.
    pub test: Dataset,
}

/// The datasets cnnc knows how to find in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-10 binary batches ([`cifar10`]).
    Cifar10,
    /// Fashion-MNIST IDX files ([`fashion_mnist`]).
    FashionMnist,
    /// MNIST IDX files ([`mnist`]).
    Mnist,
    /// `DIR/train/<class>/*` and `DIR/test/<class>/*` images ([`image_folder_splits`]).
    Folder,
    /// The Fashion-MNIST sample shipped in the repository ([`fashion_mnist_sample`]).
    Sample,
}

impl DatasetKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Cifar10,
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Folder,
        DatasetKind::Sample,
    ];

    /// The name used on the command line: `cifar10`, `fashion-mnist`, `mnist`, `folder`, `sample`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Folder => "folder",
            DatasetKind::Sample => "sample",
        }
    }

    /// The kind with this command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Loads both splits from `dir`.
    pub fn load(self, dir: &Path) -> Result<Splits, DataError> {
        match self {
            DatasetKind::Cifar10 => cifar10(dir),
            DatasetKind::FashionMnist => fashion_mnist(dir),
            DatasetKind::Mnist => mnist(dir),
            DatasetKind::Folder => image_folder_splits(dir),
            DatasetKind::Sample => fashion_mnist_sample(dir),
        }
    }

    /// Loads both splits from `dir` for a model whose input is `input`: as [`DatasetKind::load`],
    /// but image folders are refused from the images' headers, before anything is decoded, when
    /// an image is larger than the input ([`image_folder_splits_for`]).
    pub fn load_for(self, dir: &Path, input: ImageShape) -> Result<Splits, DataError> {
        match self {
            DatasetKind::Folder => image_folder_splits_for(dir, input),
            other => other.load(dir),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Class names as owned strings.
pub(crate) fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm1() -> Normalization {
        Normalization::new(vec![0.5], vec![0.5])
    }

    #[test]
    fn dataset_checks_lengths_and_labels() {
        let shape = ImageShape::new(1, 2, 2);
        let ok = Dataset::new(shape, vec![0; 8], vec![0, 1], names(&["a", "b"]), norm1());
        assert_eq!(ok.map(|d| d.class_counts()).ok(), Some(vec![1, 1]));
        let short = Dataset::new(shape, vec![0; 7], vec![0, 1], names(&["a", "b"]), norm1());
        assert!(matches!(short, Err(DataError::Invalid { .. })));
        let label = Dataset::new(shape, vec![0; 8], vec![0, 2], names(&["a", "b"]), norm1());
        assert!(
            label
                .unwrap_err()
                .to_string()
                .contains("label 2 of image 1")
        );
        let empty = Dataset::new(shape, vec![], vec![], names(&["a"]), norm1());
        assert!(empty.is_err());
        let channels = Dataset::new(
            ImageShape::new(3, 1, 1),
            vec![0; 3],
            vec![0],
            names(&["a"]),
            norm1(),
        );
        assert!(channels.unwrap_err().to_string().contains("3 channels"));
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in DatasetKind::ALL {
            assert_eq!(DatasetKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(DatasetKind::from_name("imagenet"), None);
    }
}
