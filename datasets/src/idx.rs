//! The IDX format of MNIST and Fashion-MNIST: a big-endian u32 magic (`0x00000803` images,
//! `0x00000801` labels, i.e. u8 data with 3 or 1 dimensions), one big-endian u32 per dimension,
//! then the raw u8 payload. Files may be gzip-compressed (detected from the content, not the name).
//!
//! Reading is strict and bounded: the payload must be exactly as long as the header says, and a
//! header claiming more than the file could hold is rejected before anything is allocated.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::transform::Normalization;
use super::{DataError, Dataset, ImageShape, MAX_DATA_BYTES, MAX_IMAGES, Splits, names};

/// Magic number of an IDX file of u8 images, `[N, rows, cols]`.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels, `[N]`.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// MNIST's class names, by label.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Where Fashion-MNIST's authors publish the four files.
pub const FASHION_MNIST_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `n` bytes decodes to
/// at most this many times `n` (plus a little for tiny files).
const MAX_GZIP_RATIO: u64 = 1032;

/// Images read from an IDX file.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Shape of each image (`1 x rows x cols`).
    pub shape: ImageShape,
    /// Pixels, `[count, rows, cols]`.
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (`magic 0x00000803`), raw or gzip-compressed.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    Ok(idx_images(read_idx(path, IdxKind::Images)?))
}

/// [`read_idx_images`] on the bytes of an IDX file already in memory (raw or gzip-compressed);
/// `path` is the file they came from, named in errors.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    Ok(idx_images(decode_idx(
        bytes,
        bytes.len() as u64,
        path,
        IdxKind::Images,
    )?))
}

fn idx_images((dims, pixels): (Vec<usize>, Vec<u8>)) -> IdxImages {
    let [count, rows, cols] = [dims[0], dims[1], dims[2]];
    IdxImages {
        count,
        shape: ImageShape::new(1, rows, cols),
        pixels,
    }
}

/// Reads an IDX label file (`magic 0x00000801`), raw or gzip-compressed, checking every label is
/// below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<usize>, DataError> {
    let (_, bytes) = read_idx(path, IdxKind::Labels)?;
    check_labels(&bytes, path, classes)
}

/// [`read_idx_labels`] on the bytes of an IDX file already in memory (raw or gzip-compressed);
/// `path` is the file they came from, named in errors.
pub fn parse_idx_labels(
    bytes: &[u8],
    path: &Path,
    classes: usize,
) -> Result<Vec<usize>, DataError> {
    let (_, labels) = decode_idx(bytes, bytes.len() as u64, path, IdxKind::Labels)?;
    check_labels(&labels, path, classes)
}

/// The labels of a decoded label file, each checked to be below `classes`.
fn check_labels(bytes: &[u8], path: &Path, classes: usize) -> Result<Vec<usize>, DataError> {
    let header = IdxKind::Labels.header_len();
    bytes
        .iter()
        .enumerate()
        .map(|(record, &label)| {
            let label = usize::from(label);
            if label < classes {
                Ok(label)
            } else {
                Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    record,
                    offset: header + record as u64,
                    label,
                    classes,
                })
            }
        })
        .collect()
}

/// Reads a pair of IDX files into a [`Dataset`], checking the image and label counts agree.
pub fn load_idx(
    images_path: &Path,
    labels_path: &Path,
    class_names: Vec<String>,
    normalization: Normalization,
) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path, class_names.len())?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Dataset::new(
        images.shape,
        images.pixels,
        labels,
        class_names,
        normalization,
    )
}

/// Loads Fashion-MNIST's training and test splits from `dir`, which holds
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each raw or with `.gz` (torchvision's `FashionMNIST/raw/` below `dir`
/// is searched too). Normalised with mean 0.2860, std 0.3530.
pub fn fashion_mnist(dir: &Path) -> Result<Splits, DataError> {
    let fix = format!(
        "put the four Fashion-MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
         t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in {}: they are published at {} \
         and packaged by Debian as dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
        dir.display(),
        FASHION_MNIST_URL
    );
    load_idx_splits(
        dir,
        "FashionMNIST",
        &FASHION_MNIST_CLASSES,
        &Normalization::fashion_mnist(),
        &fix,
    )
}

/// Loads MNIST's training and test splits from `dir`, laid out like [`fashion_mnist`]'s
/// (torchvision's `MNIST/raw/` below `dir` is searched too). Normalised with mean 0.1307, std
/// 0.3081.
pub fn mnist(dir: &Path) -> Result<Splits, DataError> {
    let fix = format!(
        "put the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
         t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in {}",
        dir.display()
    );
    load_idx_splits(dir, "MNIST", &MNIST_CLASSES, &Normalization::mnist(), &fix)
}

fn load_idx_splits(
    dir: &Path,
    torchvision_name: &str,
    classes: &[&str],
    normalization: &Normalization,
    fix: &str,
) -> Result<Splits, DataError> {
    let find = |stem: &str| {
        let kind = if stem.contains("images") {
            IdxKind::Images
        } else {
            IdxKind::Labels
        };
        let (path, twin) = find_idx_file(dir, torchvision_name, stem, fix)?;
        if let Some(twin) = twin {
            check_twins(&path, &twin, kind)?;
        }
        Ok::<_, DataError>(path)
    };
    let train = load_idx(
        &find("train-images-idx3-ubyte")?,
        &find("train-labels-idx1-ubyte")?,
        names(classes),
        normalization.clone(),
    )?;
    let test = load_idx(
        &find("t10k-images-idx3-ubyte")?,
        &find("t10k-labels-idx1-ubyte")?,
        names(classes),
        normalization.clone(),
    )?;
    Ok(Splits { train, test })
}

/// The first existing file among `stem`, `stem.gz` and the variants with `.idx` (as some mirrors
/// name them), in `dir` then in `dir/<torchvision_name>/raw`; with it, its compressed or
/// uncompressed twin when that exists too (torchvision keeps both side by side).
fn find_idx_file(
    dir: &Path,
    torchvision_name: &str,
    stem: &str,
    fix: &str,
) -> Result<(PathBuf, Option<PathBuf>), DataError> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let torchvision = dir.join(torchvision_name).join("raw");
    for folder in [dir, torchvision.as_path()] {
        for name in [stem, dotted.as_str()] {
            let raw = folder.join(name);
            let gz = folder.join(format!("{name}.gz"));
            match (raw.is_file(), gz.is_file()) {
                (true, true) => return Ok((raw, Some(gz))),
                (true, false) => return Ok((raw, None)),
                (false, true) => return Ok((gz, None)),
                (false, false) => {}
            }
        }
    }
    Err(DataError::NotFound {
        path: dir.join(format!("{stem}.gz")),
        fix: fix.to_owned(),
    })
}

/// Refuses a raw IDX file and its `.gz` twin that hold different data: which one cnnc read would
/// otherwise decide, silently, what a model trains or is evaluated on.
fn check_twins(raw: &Path, gz: &Path, kind: IdxKind) -> Result<(), DataError> {
    if read_idx(raw, kind)? != read_idx(gz, kind)? {
        return Err(DataError::Conflict {
            path: raw.to_path_buf(),
            other: gz.to_path_buf(),
        });
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IdxKind {
    Images,
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    fn ndims(self) -> usize {
        match self {
            IdxKind::Images => 3,
            IdxKind::Labels => 1,
        }
    }

    /// What the first dimension counts.
    fn items(self) -> &'static str {
        match self {
            IdxKind::Images => "images",
            IdxKind::Labels => "labels",
        }
    }

    fn header_len(self) -> u64 {
        4 + 4 * self.ndims() as u64
    }
}

/// Reads and checks an IDX file: its dimensions and its exact payload.
fn read_idx(path: &Path, kind: IdxKind) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let io = |e| DataError::io(path, e);
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    decode_idx(BufReader::new(file), file_len, path, kind)
}

/// Checks and decodes the IDX stream `buffered`, `file_len` bytes as stored (before any gzip
/// decompression), read from `path`: its dimensions and its exact payload.
fn decode_idx(
    mut buffered: impl BufRead,
    file_len: u64,
    path: &Path,
    kind: IdxKind,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let io = |e| DataError::io(path, e);
    let gzipped = buffered.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn Read + '_> = if gzipped {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut reader = Counted { inner, count: 0 };
    // Reading a gzip file fails this way when the compressed stream is corrupt or cut short.
    let failed = |error: std::io::Error, decoded: u64| {
        use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        if gzipped && matches!(error.kind(), InvalidData | InvalidInput | UnexpectedEof) {
            DataError::Gzip {
                path: path.to_path_buf(),
                decoded,
                reason: error.to_string(),
            }
        } else {
            io(error)
        }
    };

    // The magic first, so that a wrong kind of file is named as such even when it is short.
    let header_len = kind.header_len();
    let mut header = vec![0u8; header_len as usize];
    let magic_len =
        read_up_to(&mut reader, &mut header[..4]).map_err(|e| failed(e, reader.count))?;
    if magic_len == 4 {
        check_magic(
            path,
            u32::from_be_bytes([header[0], header[1], header[2], header[3]]),
            kind,
        )?;
    }
    let got = magic_len
        + read_up_to(&mut reader, &mut header[magic_len..]).map_err(|e| failed(e, reader.count))?;
    if got < header.len() {
        return Err(DataError::Length {
            path: path.to_path_buf(),
            what: "header",
            expected: header_len,
            found: got as u64,
        });
    }
    let words: Vec<u32> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dims: Vec<usize> = words[1..].iter().map(|&d| d as usize).collect();
    if let Some(i) = dims.iter().skip(1).position(|&d| d == 0) {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            offset: 8 + 4 * i as u64,
            reason: "an image side is 0".to_owned(),
        });
    }
    let claimed: u128 = dims.iter().map(|&d| d as u128).product();
    // Checked once the file is known to be as large as the header says, so that a short file
    // is called truncated.
    let within_limits = || {
        let claim = if dims[0] as u64 > MAX_IMAGES {
            format!(
                "{} {}, more than the limit of {MAX_IMAGES}",
                dims[0],
                kind.items()
            )
        } else if claimed > u128::from(MAX_DATA_BYTES) {
            format!("{claimed} bytes of data, more than the limit of {MAX_DATA_BYTES} (4 GiB)")
        } else {
            return Ok(());
        };
        Err(DataError::BadHeader {
            path: path.to_path_buf(),
            offset: 4,
            reason: format!("it claims {claim}; the file is corrupt or not an IDX file"),
        })
    };

    let payload = if gzipped {
        let limit = file_len.saturating_mul(MAX_GZIP_RATIO).saturating_add(1024);
        if claimed > u128::from(limit) {
            return Err(DataError::ClaimTooLarge {
                path: path.to_path_buf(),
                claimed,
                file_len,
                limit,
            });
        }
        within_limits()?;
        // At most `claimed + 1` bytes: the extra one reveals trailing data without reading it all.
        let mut payload = Vec::with_capacity((claimed as usize).min(1 << 26));
        (&mut reader)
            .take(claimed as u64 + 1)
            .read_to_end(&mut payload)
            .map_err(|e| failed(e, reader.count))?;
        if payload.len() as u128 != claimed {
            let found = if payload.len() as u128 > claimed {
                // Count the rest only to report the true size; it is read in bounded chunks.
                payload.len() as u64
                    + std::io::copy(&mut reader, &mut std::io::sink())
                        .map_err(|e| failed(e, reader.count))?
            } else {
                payload.len() as u64
            };
            return Err(DataError::Length {
                path: path.to_path_buf(),
                what: "uncompressed data after the header",
                expected: claimed as u64,
                found,
            });
        }
        payload
    } else {
        let found = file_len.saturating_sub(header_len);
        if claimed != u128::from(found) {
            return Err(DataError::Length {
                path: path.to_path_buf(),
                what: "data after the header",
                expected: u64::try_from(claimed).unwrap_or(u64::MAX),
                found,
            });
        }
        within_limits()?;
        let mut payload = vec![0u8; found as usize];
        reader
            .read_exact(&mut payload)
            .map_err(|e| failed(e, reader.count))?;
        payload
    };
    Ok((dims, payload))
}

fn check_magic(path: &Path, found: u32, kind: IdxKind) -> Result<(), DataError> {
    if found == kind.magic() {
        return Ok(());
    }
    let (what, hint) = match kind {
        IdxKind::Images => ("u8 images with 3 dimensions", "not an IDX image file"),
        IdxKind::Labels => ("u8 labels with 1 dimension", "not an IDX label file"),
    };
    let hint = match (kind, found) {
        (IdxKind::Images, LABELS_MAGIC) => {
            "this is a label file: pass the *-images-idx3-ubyte file here"
        }
        (IdxKind::Labels, IMAGES_MAGIC) => {
            "this is an image file: pass the *-labels-idx1-ubyte file here"
        }
        _ => hint,
    };
    Err(DataError::BadMagic {
        path: path.to_path_buf(),
        found,
        expected: kind.magic(),
        what,
        hint,
    })
}

/// A reader that counts the bytes it has delivered, to say where a stream broke.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Fills `buf` as far as the stream allows, returning how many bytes were read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
