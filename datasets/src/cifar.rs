//! The CIFAR-10 binary format: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each a
//! sequence of 3073-byte records (one label byte, then 1024 red, 1024 green and 1024 blue pixel
//! bytes, row-major), which is already the `[C, H, W]` layout of a [`Dataset`] image.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::transform::Normalization;
use super::{DataError, Dataset, ImageShape, MAX_DATA_BYTES, Splits, names};

/// CIFAR-10's class names, by label (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
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

/// Where CIFAR-10's authors publish the binary version.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

/// The folder the archive extracts to.
pub const CIFAR10_FOLDER: &str = "cifar-10-batches-bin";

/// Shape of a CIFAR-10 image.
pub const CIFAR10_SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

const RECORD: usize = 1 + 3 * 32 * 32;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";

/// What an empty batch should have held.
const BATCH_HINT: &str =
    "a CIFAR-10 batch holds 10,000 records of 3,073 bytes; the file is incomplete: fetch it again";

/// Loads CIFAR-10's training (the five data batches) and test splits from `dir` or from
/// `dir/cifar-10-batches-bin`. Class names come from `batches.meta.txt` when present. Normalised
/// with CIFAR-10's standard statistics.
pub fn cifar10(dir: &Path) -> Result<Splits, DataError> {
    let nested = dir.join(CIFAR10_FOLDER);
    let root = if !dir.join(TEST_FILE).is_file() && nested.join(TEST_FILE).is_file() {
        nested
    } else {
        dir.to_path_buf()
    };
    let class_names = read_class_names(&root.join("batches.meta.txt"))?;
    let train_paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| root.join(f)).collect();
    let train = read_batches(&train_paths, &class_names, dir)?;
    let test = read_batches(&[root.join(TEST_FILE)], &class_names, dir)?;
    Ok(Splits { train, test })
}

/// Reads CIFAR-10 binary batch files, in order, into one [`Dataset`]; `dir` is named in the fix
/// when a file is missing.
fn read_batches(
    paths: &[PathBuf],
    class_names: &[String],
    dir: &Path,
) -> Result<Dataset, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        if !path.exists() {
            return Err(DataError::NotFound {
                path: path.clone(),
                fix: format!(
                    "extract {CIFAR10_URL} into {} (it holds {CIFAR10_FOLDER}/ with \
                     data_batch_1.bin … data_batch_5.bin and test_batch.bin)",
                    dir.display()
                ),
            });
        }
        read_cifar_batch(path, class_names.len(), &mut images, &mut labels)?;
    }
    Dataset::new(
        CIFAR10_SHAPE,
        images,
        labels,
        class_names.to_vec(),
        Normalization::cifar10(),
    )
}

/// Appends the records of one CIFAR-10 binary batch to `images` (`[N, 3, 32, 32]`) and `labels`,
/// checking the file is a non-empty whole number of records and every label is below `classes`.
/// A directory or an empty file is named as such.
pub fn read_cifar_batch(
    path: &Path,
    classes: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let io = |e| DataError::io(path, e);
    let file = File::open(path).map_err(io)?;
    let info = file.metadata().map_err(io)?;
    if info.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory; a CIFAR-10 batch is a file of 3073-byte records",
        )));
    }
    let len = info.len();
    if len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            hint: BATCH_HINT,
        });
    }
    if len % RECORD as u64 != 0 {
        return Err(DataError::RecordLength {
            path: path.to_path_buf(),
            len,
            record: RECORD as u64,
        });
    }
    if len > MAX_DATA_BYTES {
        return Err(DataError::FileTooLarge {
            path: path.to_path_buf(),
            len,
            limit: MAX_DATA_BYTES,
            hint: "a CIFAR-10 batch holds 10,000 records (30,730,000 bytes): is this the right file?",
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // No more than the length checked, even if the file grows meanwhile.
    file.take(len).read_to_end(&mut bytes).map_err(io)?;
    // Checked again on the bytes: the file may have changed while being read.
    parse_cifar_batch(&bytes, path, classes, images, labels)
}

/// [`read_cifar_batch`] on the bytes of a batch file already in memory; `path` is the file they
/// came from, named in errors.
pub fn parse_cifar_batch(
    bytes: &[u8],
    path: &Path,
    classes: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            hint: BATCH_HINT,
        });
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::RecordLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record: RECORD as u64,
        });
    }
    images.reserve(bytes.len() / RECORD * (RECORD - 1));
    for (record, chunk) in bytes.chunks_exact(RECORD).enumerate() {
        let label = usize::from(chunk[0]);
        if label >= classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                record,
                offset: (record * RECORD) as u64,
                label,
                classes,
            });
        }
        labels.push(label);
        images.extend_from_slice(&chunk[1..]);
    }
    Ok(())
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored), or the standard
/// names when the file is absent.
fn read_class_names(path: &Path) -> Result<Vec<String>, DataError> {
    if !path.is_file() {
        return Ok(names(&CIFAR10_CLASSES));
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let found: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if found.len() != CIFAR10_CLASSES.len() {
        return Err(DataError::ClassNames {
            path: path.to_path_buf(),
            reason: format!(
                "{} class names, expected {} (one per line); fix or delete the file to use the \
                 standard names",
                found.len(),
                CIFAR10_CLASSES.len()
            ),
        });
    }
    Ok(found)
}
