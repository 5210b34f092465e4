//! People's own images: one sub-folder per class holding PNG or JPEG files, the layout of
//! torchvision's `ImageFolder` (`root/<class>/**/*.png`). Classes are the sub-folder names sorted
//! by name and numbered from 0; files are visited like torchvision's sorted `os.walk`.
//!
//! All images must share one size (resizing belongs to `predict`, not to training data). A set of
//! grey images stays one channel; if any image has colour, grey ones are repeated to RGB. Alpha is
//! dropped, as PIL's `convert("RGB")` does. Entries whose name starts with `.` are ignored.
//!
//! Normalisation: the per-channel mean and std computed from the (training) images themselves,
//! since no published statistics exist for someone's own data; the test split reuses the training
//! split's.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

use super::transform::Normalization;
use super::{DataError, Dataset, ImageShape, Splits};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads `root/<class>/…` images into one [`Dataset`], normalised with its own statistics.
pub fn image_folder(root: &Path) -> Result<Dataset, DataError> {
    let mut first = None;
    let decoded = decode_folder(root, &mut first)?;
    let channels = if decoded.all_grey() { 1 } else { 3 };
    let (shape, images, labels) = decoded.assemble(channels);
    let normalization = Normalization::compute(shape, &images);
    Dataset::new(shape, images, labels, decoded.classes, normalization)
}

/// Loads `root/train/<class>/…` as the training split and `root/test/<class>/…` (or
/// `root/val/<class>/…`) as the test split. Both must have the same classes and image size; both
/// are normalised with the training split's statistics.
pub fn image_folder_splits(root: &Path) -> Result<Splits, DataError> {
    let train_root = root.join("train");
    let test_root = ["test", "val"]
        .iter()
        .map(|name| root.join(name))
        .find(|p| p.is_dir());
    let (true, Some(test_root)) = (train_root.is_dir(), test_root) else {
        return Err(DataError::Folder {
            path: root.to_path_buf(),
            reason: "expected a train/ and a test/ (or val/) folder, each with one sub-folder per \
                     class holding PNG or JPEG images (train/cat/1.png, test/cat/2.png, …)"
                .to_owned(),
        });
    };
    let mut first = None;
    let train = decode_folder(&train_root, &mut first)?;
    let test = decode_folder(&test_root, &mut first)?;
    if train.classes != test.classes {
        return Err(DataError::Folder {
            path: test_root,
            reason: format!(
                "classes {:?} differ from the training classes {:?}; both splits need the same \
                 class folders",
                test.classes, train.classes
            ),
        });
    }
    let channels = if train.all_grey() && test.all_grey() {
        1
    } else {
        3
    };
    let (shape, train_images, train_labels) = train.assemble(channels);
    let (_, test_images, test_labels) = test.assemble(channels);
    let normalization = Normalization::compute(shape, &train_images);
    Ok(Splits {
        train: Dataset::new(
            shape,
            train_images,
            train_labels,
            train.classes,
            normalization.clone(),
        )?,
        test: Dataset::new(shape, test_images, test_labels, test.classes, normalization)?,
    })
}

/// The image that fixed the dataset's size: its path, width and height.
type First = Option<(PathBuf, u32, u32)>;

/// Decoded images of one folder, before they are laid out as a dataset.
struct Decoded {
    classes: Vec<String>,
    width: u32,
    height: u32,
    /// Pixels (grey `[H, W]` or RGB `[H, W, 3]`), whether grey, and the label.
    images: Vec<(Vec<u8>, bool, usize)>,
}

impl Decoded {
    fn all_grey(&self) -> bool {
        self.images.iter().all(|(_, grey, _)| *grey)
    }

    /// Lays the images out as `[N, channels, H, W]`, repeating grey images into RGB if needed.
    fn assemble(&self, channels: usize) -> (ImageShape, Vec<u8>, Vec<usize>) {
        let (h, w) = (self.height as usize, self.width as usize);
        let shape = ImageShape::new(channels, h, w);
        let mut images = Vec::with_capacity(self.images.len() * shape.len());
        for (pixels, grey, _) in &self.images {
            if *grey {
                for _ in 0..channels {
                    images.extend_from_slice(pixels);
                }
            } else {
                for c in 0..3 {
                    images.extend(pixels.iter().skip(c).step_by(3));
                }
            }
        }
        let labels = self.images.iter().map(|(_, _, label)| *label).collect();
        (shape, images, labels)
    }
}

fn decode_folder(root: &Path, first: &mut First) -> Result<Decoded, DataError> {
    let classes = class_folders(root)?;
    let mut images = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let files = image_files(dir)?;
        if files.is_empty() {
            return Err(DataError::Folder {
                path: dir.clone(),
                reason: "class folder holds no PNG or JPEG image; add images or remove the folder"
                    .to_owned(),
            });
        }
        for path in files {
            let image = decode(&path)?;
            check_size(&path, &image, first)?;
            let grey = !image.color().has_color();
            let pixels = if grey {
                image.into_luma8().into_raw()
            } else {
                image.into_rgb8().into_raw()
            };
            images.push((pixels, grey, label));
        }
    }
    let (width, height) = first.as_ref().map_or((0, 0), |(_, w, h)| (*w, *h));
    Ok(Decoded {
        classes: classes.into_iter().map(|(name, _)| name).collect(),
        width,
        height,
        images,
    })
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| DataError::io(path, e))?;
    reader.decode().map_err(|error| DataError::Decode {
        path: path.to_path_buf(),
        error,
    })
}

fn check_size(path: &Path, image: &DynamicImage, first: &mut First) -> Result<(), DataError> {
    let (w, h) = (image.width(), image.height());
    match first {
        None => *first = Some((path.to_path_buf(), w, h)),
        Some((first_path, width, height)) if (w, h) != (*width, *height) => {
            return Err(DataError::MixedSizes {
                path: path.to_path_buf(),
                found_width: w,
                found_height: h,
                first: first_path.clone(),
                width: *width,
                height: *height,
            });
        }
        Some(_) => {}
    }
    Ok(())
}

/// Sub-folders of `root` as (class name, path), sorted by name.
fn class_folders(root: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut classes: Vec<(String, PathBuf)> = visible_entries(root)?
        .into_iter()
        .filter(|(_, path)| path.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::Folder {
            path: root.to_path_buf(),
            reason: "no class folders; expected one sub-folder per class holding PNG or JPEG \
                     images (cat/1.png, dog/2.jpg, …)"
                .to_owned(),
        });
    }
    classes.sort();
    Ok(classes)
}

/// PNG and JPEG files below `dir`, in torchvision's order: folders by path, files by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut folders = vec![dir.to_path_buf()];
    let mut found: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    while let Some(folder) = folders.pop() {
        let mut files = Vec::new();
        for (name, path) in visible_entries(&folder)? {
            if path.is_dir() {
                folders.push(path);
            } else if has_image_extension(&name) {
                files.push(path);
            }
        }
        files.sort();
        found.push((folder, files));
    }
    found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    Ok(found.into_iter().flat_map(|(_, files)| files).collect())
}

/// Entries of `dir` whose name does not start with `.`, as (name, path).
fn visible_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let io = |e| DataError::io(dir, e);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            entries.push((name, entry.path()));
        }
    }
    Ok(entries)
}

fn has_image_extension(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}
