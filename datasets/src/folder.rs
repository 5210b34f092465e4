//! People's own images: one sub-folder per class holding PNG or JPEG files, the layout of
//! torchvision's `ImageFolder` (`root/<class>/**/*.png`). Classes are the sub-folder names sorted
//! by name and numbered from 0; files are visited like torchvision's sorted `os.walk`.
//!
//! All images must share one size (resizing belongs to `predict`, not to training data; the
//! decoder both use, [`decode_image`], and predict's conversion, [`image_to_chw`], live here). A
//! set of grey images stays one channel; if any image has colour, grey ones are repeated to RGB.
//! Alpha is dropped, as PIL's `convert("RGB")` does. Entries whose name starts with `.` are
//! ignored.
//!
//! Normalisation: the per-channel mean and std computed from the (training) images themselves,
//! since no published statistics exist for someone's own data; the test split reuses the training
//! split's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::error::{DecodingError, ImageError};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::transform::Normalization;
use super::{DataError, Dataset, ImageShape, MAX_DATA_BYTES, MAX_IMAGES, Splits};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Most values (`C * H * W`) an image converted for a model may have: the largest tensor a spec
/// may declare.
const MAX_IMAGE_VALUES: u64 = 1 << 31;

/// Loads `root/<class>/…` images into one [`Dataset`], normalised with its own statistics.
pub fn image_folder(root: &Path) -> Result<Dataset, DataError> {
    let mut first = None;
    let scanned = scan_folder(root, None, &mut first)?;
    let channels = if scanned.all_grey() { 1 } else { 3 };
    check_total(root, &[&scanned], channels)?;
    let (shape, images, labels) = scanned.decode(channels)?;
    let normalization = Normalization::compute(shape, &images);
    Dataset::new(shape, images, labels, scanned.classes, normalization)
}

/// Loads `root/train/<class>/…` as the training split and `root/test/<class>/…` (or
/// `root/val/<class>/…`) as the test split. Both must have the same classes and image size; both
/// are normalised with the training split's statistics.
pub fn image_folder_splits(root: &Path) -> Result<Splits, DataError> {
    splits(root, None)
}

/// [`image_folder_splits`] for a model whose input is `input`: an image taller or wider than the
/// input (which no transform would bridge) is refused from its header, before any image is
/// decoded.
pub fn image_folder_splits_for(root: &Path, input: ImageShape) -> Result<Splits, DataError> {
    splits(root, Some(input))
}

fn splits(root: &Path, input: Option<ImageShape>) -> Result<Splits, DataError> {
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
    let train = scan_folder(&train_root, input, &mut first)?;
    let test = scan_folder(&test_root, input, &mut first)?;
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
    check_total(root, &[&train, &test], channels)?;
    let (shape, train_images, train_labels) = train.decode(channels)?;
    let (_, test_images, test_labels) = test.decode(channels)?;
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

/// One image as its header describes it.
struct Header {
    path: PathBuf,
    label: usize,
    /// Whether it decodes to grey (no colour channel).
    grey: bool,
}

/// The images of one folder, known from their headers alone: nothing is decoded yet.
struct Scanned {
    classes: Vec<String>,
    width: u32,
    height: u32,
    images: Vec<Header>,
}

impl Scanned {
    fn all_grey(&self) -> bool {
        self.images.iter().all(|image| image.grey)
    }

    /// Pixel bytes of these images laid out with `channels` channels.
    fn bytes(&self, channels: usize) -> u128 {
        self.images.len() as u128
            * u128::from(self.width)
            * u128::from(self.height)
            * channels as u128
    }

    /// Decodes every image into one `[N, channels, H, W]` buffer, repeating grey images into RGB
    /// if needed; each must still be what its header said.
    fn decode(&self, channels: usize) -> Result<(ImageShape, Vec<u8>, Vec<usize>), DataError> {
        let (h, w) = (self.height as usize, self.width as usize);
        let shape = ImageShape::new(channels, h, w);
        let mut images = Vec::with_capacity(self.images.len() * shape.len());
        for header in &self.images {
            let image = decode(&header.path)?;
            let grey = !image.color().has_color();
            if (image.width(), image.height(), grey) != (self.width, self.height, header.grey) {
                return Err(DataError::Folder {
                    path: header.path.clone(),
                    reason: "the image changed while the dataset was being read; read it again"
                        .to_owned(),
                });
            }
            if grey {
                let pixels = image.into_luma8().into_raw();
                for _ in 0..channels {
                    images.extend_from_slice(&pixels);
                }
            } else {
                let pixels = image.into_rgb8().into_raw();
                for c in 0..3 {
                    images.extend(pixels.iter().skip(c).step_by(3));
                }
            }
        }
        let labels = self.images.iter().map(|image| image.label).collect();
        Ok((shape, images, labels))
    }
}

/// Reads the header of every image below `root`'s class folders, checking before anything is
/// decoded that all share the size of `first` (set by the first image seen) and, given the model
/// `input`, that none is taller or wider than it.
fn scan_folder(
    root: &Path,
    input: Option<ImageShape>,
    first: &mut First,
) -> Result<Scanned, DataError> {
    let classes = class_folders(root)?;
    let mut walk = Walk::new(root)?;
    let mut images = Vec::new();
    for (label, (name, dir)) in classes.iter().enumerate() {
        let files = walk.image_files(dir, label, name)?;
        if files.is_empty() {
            return Err(DataError::Folder {
                path: dir.clone(),
                reason: "class folder holds no PNG or JPEG image; add images or remove the folder"
                    .to_owned(),
            });
        }
        for path in files {
            let (width, height, grey) = read_header(&path)?;
            check_size(&path, width, height, first)?;
            if let Some(input) = input {
                check_fits(&path, width, height, input)?;
            }
            if images.len() as u64 >= MAX_IMAGES {
                return Err(DataError::Folder {
                    path: root.to_path_buf(),
                    reason: format!(
                        "more than {MAX_IMAGES} images, the limit for one dataset; use fewer"
                    ),
                });
            }
            images.push(Header { path, label, grey });
        }
    }
    let (width, height) = first.as_ref().map_or((0, 0), |(_, w, h)| (*w, *h));
    Ok(Scanned {
        classes: classes.into_iter().map(|(name, _)| name).collect(),
        width,
        height,
        images,
    })
}

/// Refuses, before decoding, image folders whose pixels would not fit in [`MAX_DATA_BYTES`].
fn check_total(root: &Path, parts: &[&Scanned], channels: usize) -> Result<(), DataError> {
    let bytes: u128 = parts.iter().map(|part| part.bytes(channels)).sum();
    if bytes > u128::from(MAX_DATA_BYTES) {
        let count: usize = parts.iter().map(|part| part.images.len()).sum();
        let (width, height) = (parts[0].width, parts[0].height);
        return Err(DataError::Folder {
            path: root.to_path_buf(),
            reason: format!(
                "{count} images of {width}x{height} pixels with {channels} channel(s) need \
                 {bytes} bytes in memory, more than the limit of {MAX_DATA_BYTES} (4 GiB) for \
                 one dataset; use fewer or smaller images"
            ),
        });
    }
    Ok(())
}

/// Refuses an image taller or wider than the model input: training neither crops nor resizes.
fn check_fits(path: &Path, width: u32, height: u32, input: ImageShape) -> Result<(), DataError> {
    if height as usize > input.height || width as usize > input.width {
        return Err(DataError::Folder {
            path: path.to_path_buf(),
            reason: format!(
                "image is {width}x{height} (width x height) but the model input is {input}; \
                 images larger than the model input are not cropped or resized for training: \
                 resize them beforehand (e.g. ImageMagick `mogrify -resize {}x{}! FILE`) or \
                 give the model a {height}x{width} input",
                input.width, input.height
            ),
        });
    }
    Ok(())
}

/// Width, height and whether the image at `path` is grey, from its header alone.
fn read_header(path: &Path) -> Result<(u32, u32, bool), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let decoder = open_decoder(BufReader::new(file), path)?;
    let (width, height) = decoder.dimensions();
    Ok((width, height, !decoder.color_type().has_color()))
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    decode_image(BufReader::new(file), path)
}

/// Decodes the PNG or JPEG image in `reader`, the contents of the file at `path`: the format is
/// told by the content, else by the file's extension (as [`ImageReader::open`] does), within the
/// decoder's default memory limits. An image larger than its file could possibly encode is refused
/// before anything is decoded: the JPEG decoder would otherwise fill a cut-off file in with grey,
/// turning a few hundred bytes into hundreds of megabytes of pixels.
pub fn decode_image(reader: impl BufRead + Seek, path: &Path) -> Result<DynamicImage, DataError> {
    let failed = |error| DataError::Decode {
        path: path.to_path_buf(),
        error,
    };
    let decoder = open_decoder(reader, path)?;
    DynamicImage::from_decoder(decoder).map_err(failed)
}

/// The decoder of the image in `reader`, its header read and checked against the file's size and
/// the decoder's default memory limits.
fn open_decoder<'a>(
    mut reader: impl BufRead + Seek + 'a,
    path: &Path,
) -> Result<impl ImageDecoder + 'a, DataError> {
    let io = |e| DataError::io(path, e);
    let start = reader.stream_position().map_err(io)?;
    let file_len = reader
        .seek(SeekFrom::End(0))
        .map_err(io)?
        .saturating_sub(start);
    reader.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut reader = ImageReader::new(reader);
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader.with_guessed_format().map_err(io)?;
    let format = reader.format();
    let failed = |error| DataError::Decode {
        path: path.to_path_buf(),
        error,
    };
    let decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if let Some(format) = format
        && let Some(most) = most_pixels(format, file_len)
        && pixels > most
    {
        return Err(failed(ImageError::Decoding(DecodingError::new(
            format.into(),
            format!(
                "the header claims {width}x{height} pixels but a {file_len}-byte file holds at \
                 most {most}"
            ),
        ))));
    }
    // What `ImageReader::decode` checks before allocating the pixels.
    Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(failed)?;
    Ok(decoder)
}

/// Most pixels a `file_len`-byte file in `format` can encode, or `None` if unbounded. A PNG
/// inflates at most 1032:1 (deflate's limit) to at most 8 pixels per byte (1-bit grey); a JPEG
/// spends at least one bit on each 8x8 block (its DC code), 512 pixels per byte, doubled for
/// margin.
fn most_pixels(format: ImageFormat, file_len: u64) -> Option<u64> {
    let per_byte = match format {
        ImageFormat::Png => 8 * 1032,
        ImageFormat::Jpeg => 1024,
        _ => return None,
    };
    Some(file_len.saturating_mul(per_byte))
}

/// `image` as `[C, H, W]` pixels of `shape`, the way `cnnc predict` feeds an image to a model:
/// converted to grey (1 channel) or RGB (3) and resized (bilinear) when its size differs. Fails
/// when `shape` has another channel count, or a size no model input can have (a zero side, more
/// than 2^31 values).
pub fn image_to_chw(image: &DynamicImage, shape: ImageShape) -> Result<Vec<u8>, DataError> {
    let invalid = |reason: &str| DataError::invalid("image shape", format!("{shape}: {reason}"));
    if !matches!(shape.channels, 1 | 3) {
        return Err(invalid(
            "images convert to grey (1 channel) or RGB (3 channels) only",
        ));
    }
    let values = [shape.channels, shape.height, shape.width]
        .iter()
        .map(|&d| d as u64)
        .try_fold(1u64, u64::checked_mul);
    let (Ok(w), Ok(h), Some(1..=MAX_IMAGE_VALUES)) = (
        u32::try_from(shape.width),
        u32::try_from(shape.height),
        values,
    ) else {
        return Err(invalid("no model input has this size"));
    };
    let resized;
    let sized = if (image.width(), image.height()) == (w, h) {
        image
    } else {
        resized = image.resize_exact(w, h, FilterType::Triangle);
        &resized
    };
    if shape.channels == 1 {
        return Ok(sized.to_luma8().into_raw());
    }
    let rgb = sized.to_rgb8();
    let plane = rgb.pixels().len();
    let mut chw = vec![0u8; 3 * plane];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = pixel.0[c];
        }
    }
    Ok(chw)
}

fn check_size(path: &Path, w: u32, h: u32, first: &mut First) -> Result<(), DataError> {
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

/// The walk over one split's class folders: which real folders and image files each class has
/// taken, so that links cannot give one image two labels.
struct Walk {
    /// The split folder, resolved: a link to it or above it would reach every class.
    root: PathBuf,
    /// Real folder walked → (its class, the path it was reached by).
    folders: HashMap<PathBuf, (usize, Reached)>,
    /// Real image file → (its class, the path it was reached by).
    files: HashMap<PathBuf, (usize, Reached)>,
}

impl Walk {
    fn new(root: &Path) -> Result<Self, DataError> {
        Ok(Walk {
            root: std::fs::canonicalize(root).map_err(|e| DataError::io(root, e))?,
            folders: HashMap::new(),
            files: HashMap::new(),
        })
    }

    /// PNG and JPEG files below `dir`, the folder of class `label` (`class`), in torchvision's
    /// order: folders by path, files by name. Links are followed as torchvision does, but each
    /// real folder is read once, so that a link to a parent folder cannot make the walk endless.
    /// A link that leads out of the class, to the split folder or above it, to another class's
    /// folder or to one of its images, is refused: it would label the same images as two classes.
    fn image_files(
        &mut self,
        dir: &Path,
        label: usize,
        class: &str,
    ) -> Result<Vec<PathBuf>, DataError> {
        let mut folders = vec![dir.to_path_buf()];
        let mut found: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
        while let Some(folder) = folders.pop() {
            let real = std::fs::canonicalize(&folder).map_err(|e| DataError::io(&folder, e))?;
            if self.root.starts_with(&real) {
                return Err(DataError::Folder {
                    path: folder,
                    reason: format!(
                        "leads to {}, which holds the class folders themselves: its images would \
                         all be labelled `{class}`; remove the link",
                        real.display()
                    ),
                });
            }
            let here = Reached {
                path: folder.clone(),
                class: class.to_owned(),
            };
            match self.folders.get(&real) {
                Some((seen, _)) if *seen == label => continue,
                Some((_, other)) => return Err(twice(here, other)),
                None => {}
            }
            self.folders.insert(real, (label, here));
            let mut entries = visible_entries(&folder)?;
            // Sorted, and sub-folders stacked in reverse, so the walk and which of two paths to
            // one folder it keeps do not depend on the order the file system lists entries in.
            entries.sort();
            let mut files = Vec::new();
            for (name, path) in entries.into_iter().rev() {
                if path.is_dir() {
                    folders.push(path);
                } else if has_image_extension(&name) {
                    let real = std::fs::canonicalize(&path).map_err(|e| DataError::io(&path, e))?;
                    let here = Reached {
                        path: path.clone(),
                        class: class.to_owned(),
                    };
                    match self.files.get(&real) {
                        Some((seen, other)) if *seen != label => return Err(twice(here, other)),
                        Some(_) => {}
                        None => {
                            self.files.insert(real, (label, here));
                        }
                    }
                    files.push(path);
                }
            }
            files.sort();
            found.push((folder, files));
        }
        found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        Ok(found.into_iter().flat_map(|(_, files)| files).collect())
    }
}

/// A path the walk took, and the class it was taken for.
#[derive(Clone)]
struct Reached {
    path: PathBuf,
    class: String,
}

/// `a` and `b`, of two classes, are the same file or folder: one of them through a link, which
/// the error names first.
fn twice(a: Reached, b: &Reached) -> DataError {
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink());
    let (link, other) = if !is_link(&a.path) && is_link(&b.path) {
        (b, &a)
    } else {
        (&a, b)
    };
    DataError::Folder {
        path: link.path.clone(),
        reason: format!(
            "is the same as {} (through a link): its images would be labelled both `{}` and \
             `{}`; remove the link",
            other.path.display(),
            link.class,
            other.class
        ),
    }
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{GrayImage, Luma};

    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageLuma8(GrayImage::from_pixel(width, height, Luma([90])));
        let mut bytes = Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, ImageFormat::Jpeg)
            .expect("encoding to memory succeeds");
        bytes.into_inner()
    }

    #[test]
    fn decodes_images_the_file_can_hold() {
        let image = decode_image(Cursor::new(jpeg(40, 24)), Path::new("a.jpg"))
            .expect("a valid JPEG decodes");
        assert_eq!((image.width(), image.height()), (40, 24));
    }

    #[test]
    fn refuses_a_header_claiming_more_pixels_than_the_file_holds() {
        // A valid 16x16 JPEG whose frame header (SOF0) now claims 8192x8192: the decoder would
        // fill the missing 64 million pixels in with grey.
        let mut bytes = jpeg(16, 16);
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("a baseline JPEG has an SOF0 marker");
        bytes[sof + 5..sof + 9].copy_from_slice(&[0x20, 0x00, 0x20, 0x00]);
        // Not `expect_err`: on failure it would print 64 million pixels.
        let Err(error) = decode_image(Cursor::new(bytes), Path::new("cut.jpg")) else {
            panic!("8192x8192 pixels decoded from a few hundred bytes");
        };
        let message = error.to_string();
        assert!(
            message.starts_with("cut.jpg: cannot decode image")
                && message.contains("claims 8192x8192 pixels"),
            "{message}"
        );
    }
}
